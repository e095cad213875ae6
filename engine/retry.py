"""Retry policy as an immutable value.

``increment(error)`` returns the policy for the next attempt, or re-raises
``error`` (with the attempt history attached) when it must not be retried or
the attempts are spent. The delay uses exponential backoff with full jitter,
capped; a server's ``Retry-After`` is honoured up to its own cap. Randomness
is injected so tests are exact; nothing here sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from engine.errors import (
    CertificateError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    RateLimitError,
    ServerError,
)

__all__ = ["RetryPolicy"]

#: 5xx answers that say "try again"; 501 and 507 (storage full) do not.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one request."""

    attempts: int = 5
    backoff: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 120.0
    history: tuple[ClientError, ...] = ()
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.cap < 0 or self.retry_after_cap < 0:
            raise ValueError("attempts must be >= 1 and delays must not be negative")

    @staticmethod
    def is_retryable(error: ClientError) -> bool:
        if isinstance(error, CertificateError):
            return False
        if isinstance(error, (ClientConnectionError, ClientTimeoutError, RateLimitError)):
            return True
        return isinstance(error, ServerError) and error.status_code in RETRY_STATUSES

    def increment(self, error: ClientError) -> RetryPolicy:
        """The policy after ``error``; raises ``error`` if it is final."""
        history = (*self.history, error)
        if not self.is_retryable(error) or len(history) >= self.attempts:
            error.retry_history = history
            raise error
        return replace(self, history=history)

    @property
    def delay(self) -> float:
        """Seconds to wait before the next attempt."""
        if not self.history:
            return 0.0
        last = self.history[-1]
        retry_after = getattr(last, "retry_after", None)
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        ceiling = min(self.cap, self.backoff * 2 ** (len(self.history) - 1))
        return ceiling * self.jitter()

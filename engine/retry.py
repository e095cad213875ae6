"""Retry policy as an immutable value, and the one loop that applies it.

``increment(error)`` returns the policy for the next attempt, or re-raises
``error`` (with the attempt history attached) when it must not be retried or
the budget is spent. The budget is a **deadline of time without progress**
(five minutes by default), as in the resumable clients of cloud storage: a
backend that is down for a rolling restart is waited for, a backend that
stays down is given up on. Callers start from a fresh policy whenever they
make progress (a chunk lands), so only a stall counts. The delay is
exponential backoff with full jitter, capped; a server's ``Retry-After`` is
honoured up to its own cap. The clock and the randomness are injected, so
tests are exact and never wait; nothing here sleeps but ``call``'s injected
``sleep``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from engine.errors import (
    CertificateError,
    ClientConnectionError,
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    RateLimitError,
    ServerError,
    UnknownHostError,
)

__all__ = ["RETRY_STATUSES", "RetryPolicy", "call"]

log = logging.getLogger("synapse_sdk.retry")

#: 5xx answers that say "try again"; 501 and 507 (storage full) do not.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
#: Of those, the ones a request that must not run twice may see retried: a
#: gateway or the server saying it did not process the request (as
#: synapse-sdk retries them). A 500 may come after the work was done.
UNPROCESSED_STATUSES = frozenset({502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how patiently to retry one request.

    ``deadline``: seconds since the first failure of a streak after which the
    error is final (``None``: no limit). ``attempts``: an optional cap on the
    attempts of one streak besides. ``backoff``, ``cap``: the exponential
    backoff's base and ceiling in seconds; ``retry_after_cap`` bounds the
    wait a server's ``Retry-After`` can ask for.
    """

    deadline: float | None = 300.0
    attempts: int | None = None
    backoff: float = 0.5
    cap: float = 10.0
    retry_after_cap: float = 120.0
    history: tuple[ClientError, ...] = ()
    #: Clock reading at the first failure of this streak.
    since: float | None = None
    #: Seconds to wait before the next attempt.
    delay: float = 0.0
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (or None for no cap), not {self.attempts}")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError(f"deadline must not be negative (None for no deadline), not {self.deadline}")
        if self.backoff < 0 or self.cap < 0 or self.retry_after_cap < 0:
            raise ValueError("backoff, cap and retry_after_cap must not be negative")

    @staticmethod
    def is_retryable(error: ClientError, *, idempotent: bool = True) -> bool:
        """Whether another attempt may succeed, and may be made.

        A request that must not run twice (``idempotent=False``: a POST that
        creates) is retried only when it cannot have been processed: it never
        reached the server, or the answer says it was not processed.
        """
        if isinstance(error, (CertificateError, UnknownHostError)):
            return False
        if isinstance(error, ClientResponseIncompleteError):
            return idempotent
        if isinstance(error, (ClientConnectionError, ClientTimeoutError, RateLimitError)):
            return True
        statuses = RETRY_STATUSES if idempotent else UNPROCESSED_STATUSES
        return isinstance(error, ServerError) and error.status_code in statuses

    def increment(self, error: ClientError, *, idempotent: bool = True) -> RetryPolicy:
        """The policy after ``error``; raises ``error`` if it is final."""
        history = (*self.history, error)
        now = self.clock()
        since = now if self.since is None else self.since
        waited = now - since
        if (
            not self.is_retryable(error, idempotent=idempotent)
            or (self.attempts is not None and len(history) >= self.attempts)
            or (self.deadline is not None and waited >= self.deadline)
        ):
            error.retry_history = history
            raise error
        delay = self._backoff(error, len(history))
        if self.deadline is not None:
            # The last attempt is made at the deadline, not after it.
            delay = min(delay, self.deadline - waited)
        return replace(self, history=history, since=since, delay=delay)

    @property
    def remaining(self) -> float | None:
        """Seconds left before the streak's error becomes final (None: no deadline)."""
        if self.deadline is None:
            return None
        since = self.clock() if self.since is None else self.since
        return max(0.0, since + self.deadline - self.clock())

    def _backoff(self, error: ClientError, failures: int) -> float:
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        # The exponent is clamped: 2.0 ** 1024 overflows, and an outage can outlast a thousand tries.
        return min(self.cap, self.backoff * 2.0 ** min(failures - 1, 64)) * self.jitter()


def call(
    send: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    idempotent: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    passthrough: tuple[type[ClientError], ...] = (),
) -> T:
    """``send()`` until it returns, retrying its ``ClientError``s as ``policy`` allows.

    ``what`` names the request in the warning logged before each wait
    (``synapse_sdk.retry``), which says what failed, how long the wait is and
    how long until the error is final: what a person watching wants to know.
    Errors of the ``passthrough`` types are the caller's to handle: they are
    raised at once.
    """
    while True:
        try:
            return send()
        except passthrough:
            raise
        except ClientError as error:
            policy = policy.increment(error, idempotent=idempotent)
            announce_wait(what, error, policy)
            sleep(policy.delay)


def announce_wait(what: str, error: ClientError, policy: RetryPolicy) -> None:
    """Log that ``what`` failed with ``error`` and is retried after ``policy.delay``."""
    remaining = policy.remaining
    until = "" if remaining is None else f"; gives up after {_duration(remaining)} more without progress"
    reason = _reason(error)
    log.warning(
        "%s: %s; retrying in %.1f s (attempt %d%s)",
        what,
        reason,
        policy.delay,
        len(policy.history) + 1,
        until,
        extra={
            "retry_what": what,
            "retry_reason": reason,
            "retry_error": error,
            "retry_delay": policy.delay,
            "retry_remaining": remaining,
        },
    )


def _reason(error: ClientError) -> str:
    if isinstance(error, (ServerError, RateLimitError)):
        return f"the server answered {error.status_code}"
    return str(error.detail or type(error).__name__)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"

"""Per-token request rate limits for the reference server, and the command line's limit values.

``RateLimiter`` keeps one token bucket per access token: a request takes a
token, tokens come back at a steady rate up to a burst. The clock is injected
so that tests advance time instead of sleeping. ``parse_rate`` and
``parse_duration`` turn the command line's ``20/s`` and ``1d`` into values.

It does no I/O and knows nothing of HTTP: the application decides what a
refusal looks like (``429`` with ``Retry-After``). Every call is O(1).
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Final

__all__ = ["RateLimiter", "parse_duration", "parse_rate"]

_SECONDS: Final = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


class RateLimiter:
    """Token buckets, one per key: ``per_second`` requests on average, ``burst`` at once."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs a positive rate and a burst of at least 1, not {per_second}/{burst}")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        # key -> (tokens left, when they were counted); a new key starts full.
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: Hashable) -> float:
        """Take a token for ``key``: 0.0 if one was there, else the seconds until one will be."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            # A refused request takes nothing, so a client that waits the
            # answered time is served then.
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.per_second


def parse_rate(text: str) -> float:
    """``"20/s"``, ``"600/min"``, ``"5"`` (per second) → requests per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|m|min|h|d))?\s*", text)
    if match is None or float(match.group(1)) == 0:
        # argparse shows this message as it is.
        raise argparse.ArgumentTypeError(f"not a positive rate: {text!r} (try 20/s or 600/min)")
    return float(match.group(1)) / _SECONDS[match.group(2) or "s"]


def parse_duration(text: str) -> timedelta:
    """``"1d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"3600"`` (seconds) → a duration."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 1d, 12h, 30m or 90s)")
    return timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2) or "s"])

"""The retry policy: which errors, how many times, how long to wait."""

from __future__ import annotations

import pytest

from engine.errors import (
    AuthenticationError,
    AuthorizationError,
    CertificateError,
    ClientConnectionError,
    ClientTimeoutError,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from engine.retry import RetryPolicy


@pytest.mark.parametrize(
    "error",
    [ClientConnectionError("reset"), ClientTimeoutError("slow"), RateLimitError("busy"), ServerError(503, "x")]
    + [ServerError(s, "x") for s in (500, 502, 504)],
)
def test_transient_errors_are_retried(error) -> None:
    policy = RetryPolicy(attempts=3, jitter=lambda: 1.0).increment(error)
    assert policy.history == (error,)


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("x"),
        AuthorizationError("x"),
        NotFoundError("x"),
        PayloadTooLargeError("x"),
        InsufficientStorageError("x"),
        ValidationError(400, "x"),
        ServerError(501, "x"),
        CertificateError("CERTIFICATE_VERIFY_FAILED"),
    ],
)
def test_final_errors_raise_at_once(error) -> None:
    with pytest.raises(type(error)) as raised:
        RetryPolicy(attempts=5).increment(error)
    assert raised.value.retry_history == (error,)


def test_attempts_are_bounded_and_history_kept() -> None:
    policy = RetryPolicy(attempts=3)
    errors = [ClientConnectionError(f"e{i}") for i in range(3)]
    policy = policy.increment(errors[0]).increment(errors[1])
    with pytest.raises(ClientConnectionError) as raised:
        policy.increment(errors[2])
    assert raised.value.retry_history == tuple(errors)


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    policy.increment(ClientConnectionError("x"))
    assert policy.history == ()
    with pytest.raises(AttributeError):
        policy.attempts = 9  # type: ignore[misc]


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff=1.0, cap=5.0, jitter=lambda: 1.0)
    delays = []
    for _ in range(5):
        policy = policy.increment(ServerError(503, "x"))
        delays.append(policy.delay)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    half = RetryPolicy(attempts=3, backoff=1.0, jitter=lambda: 0.5).increment(ServerError(503, "x"))
    assert half.delay == 0.5
    assert RetryPolicy().delay == 0.0


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(attempts=3, retry_after_cap=10.0)
    assert policy.increment(RateLimitError("x", retry_after=3.0)).delay == 3.0
    assert policy.increment(RateLimitError("x", retry_after=3600.0)).delay == 10.0


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)

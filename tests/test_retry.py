"""The retry policy: which errors, for how long, how long to wait; and the loop that applies it."""

from __future__ import annotations

import pytest

from engine.errors import (
    AuthenticationError,
    AuthorizationError,
    CertificateError,
    ClientConnectionError,
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    UnknownHostError,
    ValidationError,
)
from engine.retry import RetryPolicy, call
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit


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
        UnknownHostError("no such host"),
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
    policy = RetryPolicy(backoff=1.0, cap=5.0, jitter=lambda: 1.0)
    delays = []
    for _ in range(5):
        policy = policy.increment(ServerError(503, "x"))
        delays.append(policy.delay)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    half = RetryPolicy(attempts=3, backoff=1.0, jitter=lambda: 0.5).increment(ServerError(503, "x"))
    assert half.delay == 0.5
    assert RetryPolicy().delay == 0.0


def test_an_outage_of_thousands_of_tries_keeps_the_capped_wait() -> None:
    """No deadline, no attempt cap: the exponent must not overflow however long the outage lasts."""
    policy = RetryPolicy(deadline=None, backoff=0.5, cap=10.0, jitter=lambda: 1.0)
    for _ in range(1100):
        policy = policy.increment(ClientConnectionError("refused"))
    assert policy.delay == 10.0


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(attempts=3, retry_after_cap=10.0)
    assert policy.increment(RateLimitError("x", retry_after=3.0)).delay == 3.0
    assert policy.increment(RateLimitError("x", retry_after=3600.0)).delay == 10.0


def test_bad_policy_is_refused() -> None:
    for bad in ({"attempts": 0}, {"deadline": -1.0}, {"backoff": -1.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_the_budget_is_a_deadline_without_progress() -> None:
    clock = FakeClock()
    policy = RetryPolicy(deadline=60.0, cap=7.0, clock=clock.now, jitter=lambda: 1.0)
    waits = []
    with pytest.raises(ServerError) as raised:
        while True:
            policy = policy.increment(ServerError(503, "restarting"))
            waits.append(policy.delay)
            clock.sleep(policy.delay)
    # 0.5, 1, 2, 4, then the cap, and the last wait ends exactly at the deadline.
    assert waits[:5] == [0.5, 1.0, 2.0, 4.0, 7.0] and clock.now() == 60.0
    assert set(waits[5:-1]) == {7.0} and 0 < waits[-1] <= 7.0
    assert len(raised.value.retry_history) == len(waits) + 1


def test_a_fresh_policy_starts_a_fresh_deadline() -> None:
    """Callers take the policy anew after progress (a chunk landed): only a stall counts."""
    clock = FakeClock()
    fresh = RetryPolicy(deadline=10.0, clock=clock.now)
    clock.sleep(1000.0)
    streak = fresh.increment(ClientConnectionError("refused"))
    assert streak.since == 1000.0 and streak.remaining == 10.0
    clock.sleep(4.0)
    assert streak.remaining == 6.0 and fresh.remaining == 10.0


def test_no_deadline_and_an_attempt_cap_together() -> None:
    clock = FakeClock()
    policy = RetryPolicy(deadline=None, attempts=3, clock=clock.now)
    policy = policy.increment(ClientConnectionError("a"))
    clock.sleep(10_000.0)
    policy = policy.increment(ClientConnectionError("b"))
    assert policy.remaining is None
    with pytest.raises(ClientConnectionError):
        policy.increment(ClientConnectionError("c"))


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ClientConnectionError("refused: it never arrived"), True),
        (ClientTimeoutError("connecting timed out"), True),
        (RateLimitError("busy"), True),
        (ServerError(502, "bad gateway"), True),
        (ServerError(503, "unavailable"), True),
        (ServerError(504, "gateway timeout"), True),
        (ServerError(500, "may have done the work"), False),
        (ClientResponseIncompleteError("the answer was lost"), False),
    ],
)
def test_a_request_that_must_not_run_twice(error: ClientError, retried: bool) -> None:
    """A POST that creates is retried only when it cannot have been processed."""
    policy = RetryPolicy()
    if retried:
        assert policy.increment(error, idempotent=False).history == (error,)
        return
    with pytest.raises(type(error)):
        policy.increment(error, idempotent=False)
    assert policy.increment(error, idempotent=True).history == (error,)


def test_call_retries_until_it_succeeds_and_says_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    answers = iter([ServerError(503, "restarting"), ClientConnectionError("refused"), "done"])

    def send() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    policy = RetryPolicy(deadline=300.0, clock=clock.now, jitter=lambda: 1.0)
    with caplog.at_level("WARNING", logger="synapse_sdk.retry"):
        assert call(send, policy, what="PUT chunk 3", sleep=clock.sleep) == "done"
    assert clock.slept == [0.5, 1.0]
    first, second = (r.getMessage() for r in caplog.records)
    assert first.startswith("PUT chunk 3: the server answered 503; retrying in 0.5 s (attempt 2")
    assert "gives up after 5 min 0 s more without progress" in first
    assert second.startswith("PUT chunk 3: refused; retrying in 1.0 s (attempt 3")


def test_call_leaves_passthrough_errors_to_the_caller() -> None:
    def send() -> None:
        raise ClientResponseIncompleteError("lost")

    with pytest.raises(ClientResponseIncompleteError):
        call(send, RetryPolicy(), what="x", sleep=pytest.fail, passthrough=(ClientResponseIncompleteError,))

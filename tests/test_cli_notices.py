"""The CLI's "waiting:" lines: what a retry waits for, said once per request and reason every few seconds."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from engine.errors import ClientConnectionError, ServerError
from engine.retry import RetryPolicy, announce_wait
from synapse_sdk.cli.progress import ProgressDisplay
from synapse_sdk.cli.upload import NOTICE_INTERVAL, RetryNotices
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit

CHUNK_PUT = "PUT http://backend/chunked_upload/7/ (big.bin)"


@pytest.fixture
def notices() -> Iterator[tuple[io.StringIO, FakeClock]]:
    """The retry log shown through a display on a pipe; a clock that moves when told."""
    stream, clock = io.StringIO(), FakeClock()
    handler = RetryNotices(ProgressDisplay(stream, tty=False), clock=clock.now)
    retry_log = logging.getLogger("synapse_sdk.retry")
    retry_log.addHandler(handler)
    try:
        yield stream, clock
    finally:
        retry_log.removeHandler(handler)


def wait(what: str, error: Exception, attempts: int = 1) -> None:
    """Log a retry wait as the engine does: ``attempts`` failures of ``what`` so far."""
    policy = RetryPolicy(deadline=300.0, jitter=lambda: 1.0)
    for _ in range(attempts):
        policy = policy.increment(error)
    announce_wait(what, error, policy)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_parallel_chunks_waiting_for_one_server_make_one_line(notices) -> None:
    stream, clock = notices
    down = ClientConnectionError("cannot connect to http://backend: Connection refused")
    for attempt in (1, 2, 3):
        for _connection in range(4):
            wait(CHUNK_PUT, down, attempt)
        clock.sleep(1.0)
    (line,) = lines(stream)
    assert line.startswith(f"waiting: {CHUNK_PUT}: cannot connect to http://backend: Connection refused; retrying in")
    assert "gives up after" in line and "without progress" in line


def test_a_long_wait_is_said_again_every_interval(notices) -> None:
    stream, clock = notices
    down = ServerError(503, "restarting")
    for attempt in range(1, 13):
        wait(CHUNK_PUT, down, attempt)
        clock.sleep(NOTICE_INTERVAL / 2)
    # 12 waits over 6 intervals: a line at the first, then one each time an interval has passed.
    assert len(lines(stream)) == 6
    assert all("the server answered 503" in line for line in lines(stream))
    # The message counts the attempt about to be made: the 1st, 3rd, ... wait precede attempts 2, 4, ...
    assert [line.split("(attempt ")[1].split(";")[0] for line in lines(stream)] == ["2", "4", "6", "8", "10", "12"]


def test_a_new_reason_or_another_request_is_said_at_once(notices) -> None:
    stream, _clock = notices
    wait(CHUNK_PUT, ClientConnectionError("Connection refused"))
    wait(CHUNK_PUT, ServerError(503, "restarting"))
    wait("POST http://backend/chunked_upload/ (small.bin)", ServerError(503, "restarting"))
    wait(CHUNK_PUT, ServerError(503, "restarting"))  # said a moment ago
    shown = lines(stream)
    assert len(shown) == 3
    assert "Connection refused" in shown[0] and "503" in shown[1] and "small.bin" in shown[2]

"""The shaping relay used by the network benchmarks: bytes intact, delay added, window and rate kept."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from tests.conftest import ALICE, make_file
from tests.faults.shaper import Shaper

pytestmark = pytest.mark.integration

KIB, MIB = 1024, 1024 * 1024


class EchoServer:
    """A TCP server on loopback that sends back what it receives, until EOF."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(64 * KIB):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def _exchange(url_port: int, payload: bytes) -> bytes:
    """Send everything, half-close, read everything back (reading in parallel so no side blocks)."""
    with socket.create_connection(("127.0.0.1", url_port)) as sock:
        sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray()
        while data := sock.recv(256 * KIB):
            received += data
        sender.join()
    return bytes(received)


def test_bytes_pass_unchanged_both_ways_and_the_window_is_kept(echo) -> None:
    payload = bytes(range(256)) * (12 * KIB)  # 3 MiB
    with Shaper(("127.0.0.1", echo.port), delay=0.002, window=128 * KIB) as shaper:
        assert _exchange(shaper.port, payload) == payload
        stats = shaper.stats
    assert stats.connections == 1 and stats.bytes_up == stats.bytes_down == len(payload)
    assert 0 < stats.max_in_flight <= 128 * KIB


def test_a_round_trip_costs_at_least_twice_the_delay(echo) -> None:
    """A lower bound: the relay never delivers early (an upper bound would depend on the machine)."""
    with Shaper(("127.0.0.1", echo.port), delay=0.05) as shaper:
        started = time.monotonic()
        assert _exchange(shaper.port, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.1


def test_the_rate_cap_is_never_exceeded(echo) -> None:
    size, rate = 2 * MIB, 8 * MIB
    with Shaper(("127.0.0.1", echo.port), delay=0.0, rate=rate) as shaper:
        started = time.monotonic()
        assert _exchange(shaper.port, b"x" * size) == b"x" * size
        # Each direction serialises the bytes at `rate`; only the first piece may pass before the clock runs.
        assert time.monotonic() - started >= (size - 256 * KIB) / rate


def test_an_upload_through_the_shaper_is_intact(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "f.bin", 3 * MIB + 5)
    with Shaper(reference_server.base_url, delay=0.005, rate=200 * MIB) as shaper:
        with BackendClient(shaper.url, access_token=ALICE) as client:
            result = client.create_chunked_upload(path, chunk_size=MIB)
        assert shaper.stats.bytes_up > len(data)
    assert result["checksum"] == hashlib.md5(data).hexdigest()


def test_a_dead_upstream_closes_the_connection_and_stop_leaves_nothing(echo) -> None:
    before = {t.name for t in threading.enumerate()}
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with (
        Shaper(("127.0.0.1", port), delay=0.001) as shaper,
        socket.create_connection(("127.0.0.1", shaper.port)) as sock,
    ):
        assert sock.recv(1) == b""
    after = {t.name for t in threading.enumerate() if t.name.startswith("shaper-")}
    assert not after - before


def test_bad_settings_and_non_loopback_upstreams_are_refused() -> None:
    with pytest.raises(ValueError, match=r"only relays to 127\.0\.0\.1"):
        Shaper("http://example.com:80")
    with pytest.raises(ValueError, match="delay must be"):
        Shaper(("127.0.0.1", 1), delay=-1)

"""The fault proxy itself: each fault kind, faithful forwarding, restarts, clean shutdown.

The proxy is only worth trusting as a test tool if every fault does exactly
what it says, so each one is checked here with plain ``requests`` against a
tiny recording upstream (it notes what bytes it really received) and against
the reference server (what it stored).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults import Proxy, corrupt, cut_request, drop_response, stall, status

pytestmark = pytest.mark.integration

KIB = 1024
TIMEOUT = 5.0


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    length: int  # what the headers announced (-1: chunked)
    received: int
    sha256: str
    complete: bool
    peer_port: int


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real server speaks
    server: RecordingServer

    def _handle(self) -> None:
        digest = hashlib.sha256()
        received, complete = 0, True
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            length = -1
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass  # trailers
                    break
                data = self.rfile.read(size + 2)[:size]
                digest.update(data)
                received += len(data)
        else:
            length = int(self.headers.get("Content-Length", "0"))
            while received < length:
                data = self.rfile.read(min(64 * KIB, length - received))
                if not data:
                    complete = False  # torn: the connection ended inside the body
                    break
                digest.update(data)
                received += len(data)
        seen = Seen(self.command, self.path, length, received, digest.hexdigest(), complete, self.client_address[1])
        self.server.seen.append(seen)
        if not complete:
            self.close_connection = True
            return
        body = json.dumps({"received": received, "sha256": seen.sha256}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _handle

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output for failures


class RecordingServer(ThreadingHTTPServer):
    """An HTTP/1.1 server on loopback that records every request's bytes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Recorder)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client the proxy cut away is expected here

    def stop(self) -> None:
        """Stop like a killed server: the listener and every open connection go away."""
        self.shutdown()
        self.server_close()
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(TIMEOUT)


@pytest.fixture
def upstream() -> Iterator[RecordingServer]:
    server = RecordingServer()
    try:
        yield server
    finally:
        server.stop()


def wait_for(condition: Any, timeout: float = TIMEOUT) -> None:
    # The upstream records a request on its own thread, after the client's answer may be settled.
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_forwards_faithfully_over_one_keep_alive_connection(upstream: RecordingServer) -> None:
    bodies = [b"", b"x" * 10, bytes(range(256)) * 1200]  # the last one spans several relay blocks
    with Proxy(upstream.url) as proxy, requests.Session() as session:
        for body in bodies:
            answer = session.post(proxy.url + "/echo/?q=1", data=body, timeout=TIMEOUT)
            assert answer.status_code == 200
            assert answer.json() == {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    # Read once the proxy has stopped: its threads count a relay after the client has the answer.
    stats = proxy.stats
    assert [s.path for s in upstream.seen] == ["/echo/?q=1"] * 3
    assert len({s.peer_port for s in upstream.seen}) == 1, "keep-alive requests share one upstream connection"
    assert (stats.requests, stats.forwarded, stats.relayed) == (3, 3, 3)
    assert stats.body_bytes == sum(map(len, bodies))
    assert stats.injected == {} and stats.faults == 0
    assert stats.answers == {200: 3}


def test_chunked_request_bodies_are_relayed(upstream: RecordingServer) -> None:
    pieces = [b"a" * 5000, b"b" * 70000, b"c"]
    with Proxy(upstream.url) as proxy:
        answer = requests.put(proxy.url + "/c/", data=iter(pieces), timeout=TIMEOUT)
    assert answer.json()["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert upstream.seen[0].length == -1


def test_plan_sees_index_method_path_and_headers(upstream: RecordingServer) -> None:
    calls: list[tuple[int, str, str, str]] = []

    def plan(index: int, method: str, path: str, headers: Any) -> None:
        calls.append((index, method, path, headers.get("x-probe", "")))

    with Proxy(upstream.url, plan) as proxy, requests.Session() as session:
        session.get(proxy.url + "/a/", headers={"X-Probe": "one"}, timeout=TIMEOUT)
        session.put(proxy.url + "/b/", data=b"123", timeout=TIMEOUT)
    assert calls == [(0, "GET", "/a/", "one"), (1, "PUT", "/b/", "")]


def test_cut_request_tears_the_body_for_both_sides(upstream: RecordingServer) -> None:
    body = b"z" * (200 * KIB)
    with Proxy(upstream.url, lambda i, *_: cut_request(1000) if i == 0 else None) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.put(proxy.url + "/up/", data=body, timeout=TIMEOUT)
        wait_for(lambda: len(upstream.seen) == 1)
        # The next request goes through on a fresh connection.
        assert requests.put(proxy.url + "/up/", data=body, timeout=TIMEOUT).json()["received"] == len(body)
    # Read once the proxy has stopped: its threads count a relay after the client has the answer.
    stats = proxy.stats
    torn = upstream.seen[0]
    assert (torn.length, torn.received, torn.complete) == (len(body), 1000, False)
    assert stats.injected == {"cut_request": 1}
    assert stats.forwarded == 1 and stats.body_bytes == 1000 + len(body)


def test_corrupt_flips_one_byte_and_relays_the_answer(upstream: RecordingServer) -> None:
    body = bytes(range(256)) * 800  # several pieces of the relay loop
    with Proxy(upstream.url, lambda i, *_: corrupt(150_000) if i == 0 else None) as proxy:
        assert requests.put(proxy.url + "/up/", data=body, timeout=TIMEOUT).json()["received"] == len(body)
    flipped = bytearray(body)
    flipped[150_000] ^= 0xFF
    wait_for(lambda: len(upstream.seen) == 1)
    assert upstream.seen[0].sha256 == hashlib.sha256(flipped).hexdigest()
    assert proxy.stats.injected == {"corrupt": 1}


def test_cut_with_linger_breaks_the_client_before_the_server(upstream: RecordingServer) -> None:
    with Proxy(upstream.url, lambda *_: cut_request(10, linger=1.0)) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.put(proxy.url + "/up/", data=b"x" * 1000, timeout=TIMEOUT)
        assert upstream.seen == []  # the server still waits for the rest of the body
        wait_for(lambda: len(upstream.seen) == 1)
    assert (upstream.seen[0].received, upstream.seen[0].complete) == (10, False)


def test_a_client_gone_mid_body_closes_the_upstream_connection_too(upstream: RecordingServer) -> None:
    # No fault planned: the client itself breaks off, and the proxy must not keep
    # (nor leak) the upstream connection it opened for that request.
    with Proxy(upstream.url) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as raw:
            raw.sendall(b"PUT /up/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"y" * 10)
            wait_for(lambda: proxy.stats.body_bytes == 10)
        wait_for(lambda: len(upstream.seen) == 1)  # the server saw the tear while the proxy still runs
    assert (upstream.seen[0].received, upstream.seen[0].complete) == (10, False)


def test_cut_at_zero_bytes_forwards_only_the_head(upstream: RecordingServer) -> None:
    with Proxy(upstream.url, lambda *_: cut_request(0)) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.put(proxy.url + "/up/", data=b"abc", timeout=TIMEOUT)
        wait_for(lambda: len(upstream.seen) == 1)
    assert (upstream.seen[0].received, upstream.seen[0].complete) == (0, False)


def test_drop_response_lets_the_server_act_but_loses_the_answer(upstream: RecordingServer) -> None:
    body = b"q" * (150 * KIB)
    with Proxy(upstream.url, lambda i, *_: drop_response() if i == 0 else None) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.put(proxy.url + "/up/", data=body, timeout=TIMEOUT)
        # The upstream had answered before the client's connection was closed.
        assert len(upstream.seen) == 1
    # Read once the proxy has stopped: its threads count a relay after the client has the answer.
    stats = proxy.stats
    assert (upstream.seen[0].received, upstream.seen[0].complete) == (len(body), True)
    assert stats.injected == {"drop_response": 1} and stats.forwarded == 1 and stats.relayed == 0


@pytest.mark.parametrize(("code", "retry_after"), [(503, 1), (429, 0.5), (500, None), (502, None), (504, None)])
def test_status_answers_without_forwarding(upstream: RecordingServer, code: int, retry_after: float | None) -> None:
    faults = {0: status(code, retry_after)}
    # 2 MiB: far more than socket buffers hold, so an answer sent before the
    # body was read would reach the client as a reset, not as the status.
    body = b"s" * (2048 * KIB)
    with Proxy(upstream.url, lambda i, *_: faults.get(i)) as proxy, requests.Session() as session:
        answer = session.put(proxy.url + "/up/", data=body, timeout=TIMEOUT)
        assert answer.status_code == code
        assert answer.json()["detail"] == f"injected {code} by the fault proxy"
        assert answer.headers.get("Retry-After") == (None if retry_after is None else f"{retry_after:g}")
        assert upstream.seen == []
        # The connection survives the injected answer and carries the next request.
        assert session.put(proxy.url + "/up/", data=b"ok", timeout=TIMEOUT).status_code == 200
    # Read once the proxy has stopped: its threads count a relay after the client has the answer.
    stats = proxy.stats
    assert stats.injected == {f"status_{code}": 1}
    assert stats.forwarded == 1 and stats.body_bytes == 2


def test_stall_outlasts_the_read_timeout(upstream: RecordingServer) -> None:
    with Proxy(upstream.url, lambda i, *_: stall(1.5) if i == 0 else None) as proxy:
        with pytest.raises(requests.ReadTimeout):
            requests.put(proxy.url + "/up/", data=b"x" * 5000, timeout=(TIMEOUT, 0.3))
        assert len(upstream.seen) == 1 and upstream.seen[0].complete  # the server got it and acted
        assert requests.get(proxy.url + "/next/", timeout=TIMEOUT).status_code == 200
    # Read once the proxy has stopped: its threads count a relay after the client has the answer.
    stats = proxy.stats
    assert stats.injected == {"stall": 1}


def test_stall_with_relay_answers_late(upstream: RecordingServer) -> None:
    with Proxy(upstream.url, lambda *_: stall(0.3, relay=True)) as proxy:
        started = time.monotonic()
        answer = requests.put(proxy.url + "/up/", data=b"late", timeout=TIMEOUT)
    assert answer.json()["received"] == 4
    assert time.monotonic() - started >= 0.3


def test_dead_upstream_gives_502_until_it_comes_back_on_the_same_port() -> None:
    first = RecordingServer()
    port = first.server_address[1]
    # The fault planned for the request that finds the server gone cannot happen: it is not counted.
    with Proxy(first.url, lambda i, *_: drop_response() if i == 1 else None) as proxy, requests.Session() as session:
        assert session.get(proxy.url + "/a/", timeout=TIMEOUT).status_code == 200
        first.stop()
        # The proxy's pooled upstream connection died with the server; the request is not lost silently.
        answer = session.put(proxy.url + "/b/", data=b"x" * (300 * KIB), timeout=TIMEOUT)
        assert answer.status_code == 502
        assert "upstream unreachable" in answer.json()["detail"]
        second = RecordingServer(port)
        try:
            assert session.get(proxy.url + "/c/", timeout=TIMEOUT).status_code == 200
            assert [s.path for s in second.seen] == ["/c/"]
        finally:
            second.stop()
        assert proxy.stats.upstream_errors == 1 and proxy.stats.injected == {}


def test_restart_keeps_the_port(upstream: RecordingServer) -> None:
    proxy = Proxy(upstream.url).start()
    try:
        url = proxy.url
        assert requests.get(url + "/1/", timeout=TIMEOUT).status_code == 200
        proxy.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/2/", timeout=TIMEOUT)
        proxy.start()
        assert proxy.url == url
        assert requests.get(url + "/3/", timeout=TIMEOUT).status_code == 200
    finally:
        proxy.stop()


def test_stop_interrupts_stalls_and_leaves_no_thread(upstream: RecordingServer) -> None:
    proxy = Proxy(upstream.url, lambda *_: stall(60)).start()
    idle = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)  # an open, silent connection
    errors: list[BaseException] = []

    def stalled() -> None:
        try:
            requests.get(proxy.url + "/slow/", timeout=TIMEOUT)
        except requests.RequestException as error:
            errors.append(error)

    caller = threading.Thread(target=stalled)
    try:
        caller.start()
        wait_for(lambda: len(upstream.seen) == 1)
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 2.0
        caller.join(TIMEOUT)
        assert len(errors) == 1 and isinstance(errors[0], requests.ConnectionError)
        assert [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy")] == []
        assert idle.recv(1) == b""  # the silent connection was closed too
    finally:
        idle.close()
        proxy.stop()


def test_only_loopback_upstreams() -> None:
    with pytest.raises(ValueError, match=r"only relays to 127\.0\.0\.1"):
        Proxy("http://10.1.2.3:80")
    with pytest.raises(ValueError):
        status(418)


def test_against_the_reference_server(tmp_path: Path) -> None:
    """A torn create leaves no record; a create whose answer is dropped leaves one."""
    from synapse_sdk.server import ReferenceServer

    token = "proxy-test"
    headers = {"Synapse-Access-Token": f"Token {token}", "Content-Range": "bytes 0-99999/200000"}
    chunk = b"r" * 100000

    def create(url: str, name: str) -> requests.Response:
        files = {"file": ("chunk", chunk)}
        return requests.put(
            url + "/chunked_upload/", files=files, data={"filename": name}, headers=headers, timeout=TIMEOUT
        )

    faults = {0: cut_request(40000), 1: drop_response()}
    with ReferenceServer(tmp_path, tokens={token: "u"}) as server:
        with Proxy(server.base_url, lambda i, *_: faults.get(i)) as proxy:
            for name in ("torn.bin", "dropped.bin"):
                with pytest.raises(requests.ConnectionError):
                    create(proxy.url, name)
            record = create(proxy.url, "ok.bin").json()
        assert record["offset"] == 100000 and record["url"].startswith(proxy.url)
        database = sqlite3.connect(tmp_path / "uploads.sqlite3")
        try:
            wait_for(lambda: database.execute("SELECT count(*) FROM uploads WHERE status = 0").fetchone()[0] == 0)
            rows = database.execute("SELECT filename, offset FROM uploads ORDER BY id").fetchall()
        finally:
            database.close()
    assert rows == [("dropped.bin", 100000), ("ok.bin", 100000)]

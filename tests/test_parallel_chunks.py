"""Chunks of one file on several connections at once, against servers that take them, refuse them, or restart.

The reference server advertises ``Synapse-Parallel-Chunks``; the client then
sends the chunks after the create out of order, several at a time, and the
finalize MD5 still covers the whole file. Plain drf-chunked-upload says
nothing, and gets the sequential protocol exactly as before; a server that
advertises it but stores nothing out of order gets the chunks one at a time
from the offset it names.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi

from engine import wire
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.server import ReferenceServer
from synapse_sdk.server.app import UploadApp
from synapse_sdk.server.store import Store
from synapse_sdk.server.wire import Connection, with_readinto
from tests.conftest import ALICE, alice_uploader, make_file
from tests.faults import Fault, Proxy, corrupt, cut_request
from tests.faults.shaper import Shaper

pytestmark = pytest.mark.integration

KIB = 1024
CHUNK = 64 * KIB


class Seen:
    """A proxy plan that forwards everything and notes each request's method and out-of-order mark."""

    def __init__(self, fault: Callable[[int, str], Fault | None] = lambda index, method: None) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self._fault = fault
        self._lock = threading.Lock()

    def __call__(self, index: int, method: str, target: str, headers: Mapping[str, str]) -> Fault | None:
        with self._lock:
            self.requests.append((method, headers.get(wire.OUT_OF_ORDER.lower())))
        return self._fault(index, method)

    @property
    def out_of_order(self) -> int:
        return sum(mark == "1" for _, mark in self.requests)


def held(record: Mapping[str, Any]) -> int:
    return record["offset"] + sum(end - start for start, end in record.get(wire.RECEIVED, []))


def test_chunks_travel_several_at_once_and_the_file_is_whole(reference_server, tmp_path: Path, twin) -> None:
    path, data = make_file(tmp_path, "data.bin", 20 * CHUNK + 5)
    seen = Seen()
    with Proxy(reference_server.base_url, seen) as proxy:
        uploader = alice_uploader(type("S", (), {"base_url": proxy.url})(), chunk_size=CHUNK, twin=twin)
        result = uploader.upload(path)
    assert result["checksum"] == hashlib.md5(data).hexdigest() and Path(result["file"]).read_bytes() == data
    # The create goes alone (it names the upload); the 20 chunks after it are marked out of order.
    assert seen.requests[0] == ("PUT", None) and seen.out_of_order == 20 and seen.requests[-1] == ("POST", None)


def test_several_connections_carry_one_file_over_a_long_link(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 12 * CHUNK)
    with (
        Shaper(reference_server.base_url, delay=0.01) as shaper,
        BackendClient(shaper.url, access_token=ALICE, journal=False) as client,
    ):
        result = client.create_chunked_upload(path, chunk_size=CHUNK)
    assert Path(result["file"]).read_bytes() == data
    assert shaper.stats.connections >= 2  # one TCP connection per chunk in flight


def test_drf_and_a_server_that_does_not_advertise_get_the_sequential_protocol(drf_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 6 * CHUNK + 1)
    with ReferenceServer(tmp_path / "srv", tokens={ALICE: "alice"}, parallel_chunks=1) as sequential:
        for base_url, token in [(drf_server.base_url, drf_server.token), (sequential.base_url, ALICE)]:
            seen = Seen()
            with Proxy(base_url, seen) as proxy, BackendClient(proxy.url, access_token=token, journal=False) as c:
                result = c.create_chunked_upload(path, chunk_size=CHUNK)
            assert result["completed_at"] and seen.out_of_order == 0
            assert [method for method, _ in seen.requests] == ["PUT"] * 7 + ["POST"]
    assert Path(sequential.data_dir, "uploads", f"{result['id']}.done").read_bytes() == data


class Advertising:
    """WSGI middleware: says ``Synapse-Parallel-Chunks: 4`` on every answer, whatever the app behind it does."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        def advertise(status: str, headers: list, *rest: Any) -> Any:
            return start_response(status, [*headers, (wire.PARALLEL_CHUNKS, "4")], *rest)

        return self.app(environ, advertise)


def test_a_server_that_advertises_but_stores_nothing_out_of_order_gets_one_chunk_at_a_time(tmp_path: Path) -> None:
    """Out-of-order chunks answered "Offsets do not match": the upload goes on from the offset named."""
    path, data = make_file(tmp_path, "data.bin", 8 * CHUNK + 3)
    store = Store(tmp_path / "srv")
    app = UploadApp(store, {ALICE: "alice"}, parallel_chunks=1)
    server = wsgi.Server(("127.0.0.1", 0), with_readinto(Advertising(app)), numthreads=8)
    server.ConnectionClass = Connection
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        host, port = server.bind_addr[:2]
        puts = itertools.count()

        # The first chunk after the create breaks off: the ones beside it find the offset unmoved.
        def cut_the_second_put(index: int, method: str) -> Fault | None:
            return cut_request(CHUNK // 2) if method == "PUT" and next(puts) == 1 else None

        seen = Seen(cut_the_second_put)
        with Proxy(f"http://{host}:{port}", seen) as proxy:
            with BackendClient(proxy.url, access_token=ALICE, journal=False) as client:
                result = client.create_chunked_upload(path, chunk_size=CHUNK)
            assert proxy.stats.answers[400] >= 1  # "Offsets do not match" to the chunks out of order
    finally:
        server.stop()
        thread.join(10)
        store.close()
    assert result["checksum"] == hashlib.md5(data).hexdigest()
    assert Path(store.completed_path(result["id"])).read_bytes() == data
    assert seen.requests[-2:] == [("PUT", None), ("POST", None)]  # the tail went one at a time


def test_a_chunk_corrupted_on_the_way_is_refused_and_sent_again(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 9 * CHUNK)
    puts = itertools.count()

    def flip_the_third_put(index: int, method: str) -> Fault | None:
        return corrupt(CHUNK // 2) if method == "PUT" and next(puts) == 2 else None

    seen = Seen(flip_the_third_put)
    with Proxy(reference_server.base_url, seen) as proxy:
        with BackendClient(proxy.url, access_token=ALICE, journal=False) as client:
            result = client.create_chunked_upload(path, chunk_size=CHUNK)
        assert proxy.stats.injected == {"corrupt": 1} and proxy.stats.answers[400] == 1
    assert Path(result["file"]).read_bytes() == data and seen.out_of_order == 8 + 1


class Interrupted(Exception):
    pass


def test_an_interrupted_upload_resumes_with_only_the_missing_chunks_even_across_a_restart(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 16 * CHUNK + 9)
    calls = itertools.count()

    def interrupt_at_the_fourth(done: int, total: int) -> None:
        if next(calls) == 3:
            raise Interrupted

    journal = tmp_path / "journal"
    with (
        ReferenceServer(tmp_path / "srv", tokens={ALICE: "alice"}) as server,
        BackendClient(server.base_url, access_token=ALICE, journal=journal) as client,
        pytest.raises(Interrupted),
    ):
        port = int(server.base_url.rsplit(":", 1)[1])
        client.create_chunked_upload(path, chunk_size=CHUNK, on_progress=interrupt_at_the_fourth)
    # The server restarts (on the same port: the journal knows uploads by server URL); what it
    # holds, past its offset too, is in its database.
    with (
        ReferenceServer(tmp_path / "srv", port=port, tokens={ALICE: "alice"}) as server,
        BackendClient(server.base_url, access_token=ALICE, journal=journal) as client,
    ):
        [upload_id] = [p.stem for p in (tmp_path / "srv" / "uploads").glob("*.part")]
        before = client.get_chunked_upload(upload_id)
        assert 4 * CHUNK <= held(before) < len(data)
        result = client.create_chunked_upload(path, chunk_size=CHUNK)
        sent = server.stats()["bytes_received"]
    assert result["id"] == int(upload_id) and result["checksum"] == hashlib.md5(data).hexdigest()
    assert Path(result["file"]).read_bytes() == data
    assert sent == len(data) - held(before)  # nothing the server held went again

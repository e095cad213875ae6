"""An upload outlives its server being down for minutes, as in a rolling restart.

The reference server runs in its own process behind the fault proxy. Mid-upload
the backend goes away for 90 s in the three ways users meet: a gateway
answering 503 while backends restart, then 502 because the backend process is
gone, then no gateway at all (connections refused). Then both come back on
the same port and the upload finishes, verified, with the default retry
policy: nothing in the test shortens the client's patience.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from tests.conftest import make_file
from tests.faults import Proxy, status
from tests.test_fault_suite import TOKEN, ServerProcess, free_port

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
#: Seconds of each way of being down; 90 s in all.
STAGE = 30.0


@pytest.mark.slow
def test_an_upload_outlives_a_backend_down_for_90_seconds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = ServerProcess(tmp_path / "data", free_port())
    server.start()
    proxy = Proxy(server.url).start()
    path, data = make_file(tmp_path, "big.bin", 8 * MIB)
    outage_started, back = threading.Event(), threading.Event()

    def outage() -> None:
        outage_started.wait()
        stop = threading.Event()
        stop.wait(STAGE)  # answering 503 (the plan was set before the upload went on)
        server.kill()
        proxy.plan = None  # the gateway forwards again, and answers 502: no backend
        stop.wait(STAGE)
        proxy.stop()  # no gateway: connections are refused
        stop.wait(STAGE)
        server.start()
        proxy.start()
        back.set()

    def on_progress(done: int, total: int) -> None:
        if done >= 2 * MIB and not outage_started.is_set():
            proxy.plan = lambda *_: status(503)
            outage_started.set()

    orchestrator = threading.Thread(target=outage, daemon=True)
    orchestrator.start()
    try:
        with (
            caplog.at_level(logging.WARNING, logger="synapse_sdk.retry"),
            BackendClient(proxy.url, access_token=TOKEN, journal=False) as client,
        ):
            result = client.create_chunked_upload(path, chunk_size=MIB, on_progress=on_progress)
    finally:
        orchestrator.join(4 * STAGE)
        proxy.stop()
        server.stop()
    assert back.is_set()
    assert result["checksum"] == hashlib.md5(data).hexdigest() and result["size"] == len(data)
    assert Path(result["file"]).read_bytes() == data
    waits = [record.getMessage() for record in caplog.records]
    for seen in ("the server answered 503", "the server answered 502", "Connection refused"):
        assert any(seen in wait for wait in waits), f"no retry after {seen!r}: {waits}"

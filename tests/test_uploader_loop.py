"""The uploader's loop (hash, send, feed) against an in-memory server: no sockets, faults by request number.

The same behaviours are tested against real servers in test_upload.py,
test_resume.py and test_fault_suite.py; here each is pinned to the exact
requests it takes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from engine import wire
from engine.errors import AuthorizationError, ClientTimeoutError, ValidationError
from engine.retry import RetryPolicy
from engine.transport import Response
from engine.uploader import ChunkedUploader
from tests.conftest import FakeClock
from tests.fake_transport import BASE, COLLECTION, MemoryTransport

pytestmark = pytest.mark.unit

URL = f"{COLLECTION}1/"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, bytes]:
    content = os.urandom(25)
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    return path, content


def uploader(transport: MemoryTransport, clock: FakeClock, twin: ModuleType, **options) -> ChunkedUploader:
    retry = options.pop("retry", RetryPolicy(jitter=lambda: 1.0, clock=clock.now))
    return ChunkedUploader(transport, BASE, chunk_size=10, retry=retry, sleep=clock.sleep, twin=twin, **options)


def requests(transport: MemoryTransport) -> list[str]:
    """What was sent, as ``METHOD what``: the collection, or the chunk's Content-Range, or the upload."""
    out = []
    for sent in transport.sent:
        content_range = sent.headers.get(wire.CONTENT_RANGE)
        target = "collection" if sent.url == COLLECTION else "upload"
        out.append(f"{sent.method} {target}" + (f" {content_range}" if content_range else ""))
    return out


def test_a_file_goes_up_in_chunks_then_is_finalized(transport, clock, twin, data) -> None:
    path, content = data
    progress: list[tuple[int, int]] = []
    record = uploader(transport, clock, twin).upload(path, lambda done, total: progress.append((done, total)))
    assert requests(transport) == [
        "PUT collection bytes 0-9/25",
        "PUT upload bytes 10-19/25",
        "PUT upload bytes 20-24/25",
        "POST upload",
    ]
    assert transport.uploads[1].data == content
    assert record[wire.CHECKSUM] == hashlib.md5(content).hexdigest()
    assert progress == [(10, 25), (20, 25), (25, 25)]
    create = transport.sent[0]
    assert create.fields == {wire.FILENAME: "f.bin"}
    assert create.headers[wire.CONTENT_MD5] and create.headers[wire.IDEMPOTENCY_KEY]
    assert wire.IDEMPOTENCY_KEY not in transport.sent[1].headers
    assert transport.sent[3].fields == {wire.MD5: hashlib.md5(content).hexdigest()}
    assert clock.slept == []


def test_an_empty_file_is_sent_whole(transport, clock, twin, tmp_path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    record = uploader(transport, clock, twin).upload(path)
    assert requests(transport) == ["POST collection"]
    assert transport.sent[0].fields == {wire.FILENAME: "empty", wire.MD5: hashlib.md5(b"").hexdigest()}
    assert transport.sent[0].file == b"" and record[wire.SIZE] == 0


def lose_bytes(upload_id: int, keep: int):
    def act(server: MemoryTransport) -> None:
        del server.uploads[upload_id].data[keep:]

    return act


def test_a_chunk_realigns_backwards_on_expected_offset(transport, clock, twin, data) -> None:
    path, content = data
    transport.before[2] = lose_bytes(1, 5)  # the server lost acknowledged bytes (a restart after a power cut)
    uploader(transport, clock, twin).upload(path)
    assert requests(transport) == [
        "PUT collection bytes 0-9/25",
        "PUT upload bytes 10-19/25",
        "PUT upload bytes 20-24/25",  # 400: expected_offset 5
        "PUT upload bytes 5-14/25",
        "PUT upload bytes 15-24/25",
        "POST upload",
    ]
    assert transport.uploads[1].data == content and clock.slept == []


def test_a_chunk_realigns_forwards_on_expected_offset(transport, clock, twin, data) -> None:
    path, content = data

    def others_sent_the_rest(server: MemoryTransport) -> None:
        server.uploads[1].data += content[20:]

    transport.before[2] = others_sent_the_rest
    uploader(transport, clock, twin).upload(path)
    assert requests(transport)[2:] == ["PUT upload bytes 20-24/25", "POST upload"]


def test_a_finalize_realigns_when_the_server_lost_bytes(transport, clock, twin, data) -> None:
    path, content = data
    transport.before[3] = lose_bytes(1, 10)
    uploader(transport, clock, twin).upload(path)
    assert requests(transport)[3:] == [
        "POST upload",  # 400: the upload is incomplete, expected_offset 10
        "PUT upload bytes 10-19/25",
        "PUT upload bytes 20-24/25",
        "POST upload",
    ]
    assert transport.uploads[1].data == content


def test_a_lost_append_answer_is_checked_not_resent(transport, clock, twin, data) -> None:
    path, content = data
    transport.lose_after.add(1)
    uploader(transport, clock, twin).upload(path)
    assert requests(transport) == [
        "PUT collection bytes 0-9/25",
        "PUT upload bytes 10-19/25",  # stored, answer lost
        "GET upload",  # offset 20
        "PUT upload bytes 20-24/25",
        "POST upload",
    ]
    assert transport.uploads[1].data == content
    assert clock.slept == [0.5]  # one wait before asking


def test_an_append_lost_before_the_server_acted_is_sent_again(transport, clock, twin, data) -> None:
    path, content = data
    transport.lose_before.add(1)
    uploader(transport, clock, twin).upload(path)
    assert requests(transport)[1:4] == ["PUT upload bytes 10-19/25", "GET upload", "PUT upload bytes 10-19/25"]
    assert transport.uploads[1].data == content


def test_a_lost_finalize_answer_is_rechecked_not_repeated(transport, clock, twin, data) -> None:
    path, content = data
    transport.lose_after.add(3)
    record = uploader(transport, clock, twin).upload(path)
    assert requests(transport)[3:] == ["POST upload", "GET upload"]
    assert record[wire.COMPLETED_AT] and record[wire.CHECKSUM] == hashlib.md5(content).hexdigest()


def test_a_finalize_lost_before_the_server_acted_is_repeated(transport, clock, twin, data) -> None:
    path, _ = data
    transport.lose_before.add(3)
    record = uploader(transport, clock, twin).upload(path)
    assert requests(transport)[3:] == ["POST upload", "GET upload", "POST upload"]
    assert record[wire.COMPLETED_AT]


def test_a_lost_create_is_repeated_with_its_key_and_makes_no_twin(transport, clock, twin, data) -> None:
    path, content = data
    transport.lose_after.add(0)
    uploader(transport, clock, twin).upload(path)
    assert requests(transport)[:3] == [
        "PUT collection bytes 0-9/25",
        "PUT collection bytes 0-9/25",  # answered with the upload the first one made
        "PUT upload bytes 10-19/25",
    ]
    first, second = transport.sent[0].headers, transport.sent[1].headers
    assert first[wire.IDEMPOTENCY_KEY] == second[wire.IDEMPOTENCY_KEY]
    assert list(transport.uploads) == [1] and transport.uploads[1].data == content


def test_lost_answers_in_a_row_are_given_up_on(transport, clock, twin, data) -> None:
    path, _ = data
    transport.lose_before.update({1, 3, 5})
    up = uploader(transport, clock, twin, retry=RetryPolicy(attempts=3, jitter=lambda: 1.0, clock=clock.now))
    with pytest.raises(ClientTimeoutError) as raised:
        up.upload(path)
    assert requests(transport) == ["PUT collection bytes 0-9/25"] + ["PUT upload bytes 10-19/25", "GET upload"] * 2 + [
        "PUT upload bytes 10-19/25"
    ]
    assert (raised.value.url, raised.value.offset) == (URL, 10)
    assert len(raised.value.retry_history) == 3


def test_a_rejected_chunk_checksum_is_sent_again(transport, clock, twin, data) -> None:
    path, content = data
    rejected = {wire.DETAIL: wire.CHUNK_CHECKSUM_MISMATCH}
    transport.answer[1] = Response(400, json.dumps(rejected).encode())
    uploader(transport, clock, twin).upload(path)
    assert requests(transport)[1:3] == ["PUT upload bytes 10-19/25"] * 2
    assert transport.uploads[1].data == content


@pytest.mark.parametrize("digest", ["md5", "xxh3", "none"])
def test_the_chunk_digest_header_follows_the_setting(transport, clock, twin, data, digest) -> None:
    path, content = data
    uploader(transport, clock, twin, chunk_digest=digest).upload(path)
    names = {wire.CONTENT_MD5: "md5", wire.CONTENT_XXH3: "xxh3"}
    for sent in transport.sent[:3]:
        assert [names[name] for name in sent.headers if name in names] == ([] if digest == "none" else [digest])
    assert transport.uploads[1].data == content


def test_a_4xx_answer_raises_at_once_with_where_the_upload_stands(transport, clock, twin, data) -> None:
    path, _ = data
    transport.answer[1] = Response(403, json.dumps({wire.DETAIL: "You do not have permission."}).encode())
    with pytest.raises(AuthorizationError) as raised:
        uploader(transport, clock, twin).upload(path)
    assert len(transport.sent) == 2 and clock.slept == []
    assert (raised.value.status_code, raised.value.url, raised.value.offset) == (403, URL, 10)


def test_a_finalize_the_server_refuses_raises_its_validation_error(transport, clock, twin, data) -> None:
    path, _ = data

    def corrupt(server: MemoryTransport) -> None:
        server.uploads[1].data[0] ^= 0xFF

    transport.before[3] = corrupt
    with pytest.raises(ValidationError, match=wire.CHECKSUM_DOES_NOT_MATCH) as raised:
        uploader(transport, clock, twin).upload(path)
    assert len(transport.sent) == 4
    assert (raised.value.url, raised.value.offset) == (URL, 25)


def test_an_upload_passes_through_a_handful_of_frames(transport, clock, twin, data) -> None:
    path, _ = data
    depths: list[list[str]] = []
    request = transport.request

    def counting(*args, **kwargs):
        frames = [f for f in inspect.stack()[1:] if "/engine/" in f.filename or "/synapse_sdk/" in f.filename]
        depths.append([f.function for f in frames])
        return request(*args, **kwargs)

    transport.request = counting
    uploader(transport, clock, twin).upload(path)
    # upload, run, _exchange (feed the machine), _send (the request's body and headers), retry.call, attempt.
    assert max(len(d) for d in depths) <= 6, depths

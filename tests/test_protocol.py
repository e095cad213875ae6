"""Every transition of the upload state machine; illegal events leave it unchanged."""

from __future__ import annotations

import copy

import pytest

from engine.errors import ProtocolError
from engine.plan import Chunk
from engine.protocol import CheckState, ChunkedUploadProtocol, Done, Finalize, Phase, PutChunk, SendWhole

pytestmark = pytest.mark.unit

URL = "http://h/chunked_upload/7/"


def record(offset: int, **extra) -> dict:
    return {"id": 7, "url": URL, "offset": offset, **extra}


def test_happy_path_in_three_chunks() -> None:
    p = ChunkedUploadProtocol(25, 10)
    assert p.next_action() == PutChunk(None, Chunk(0, 10, 25))
    p.chunk_stored(record(10))
    assert p.next_action() == PutChunk(URL, Chunk(10, 20, 25))
    assert p.upload_id == 7
    p.chunk_stored(record(20))
    assert p.next_action() == PutChunk(URL, Chunk(20, 25, 25))
    p.chunk_stored(record(25))
    assert p.next_action() == Finalize(URL)
    p.finalized({"id": 7, "checksum": "x"})
    assert p.next_action() == Done({"id": 7, "checksum": "x"})


def test_uuid_ids_are_accepted() -> None:
    p = ChunkedUploadProtocol(5, 10, send_whole=False)
    p.chunk_stored({"id": "0b7e-uuid", "url": URL, "offset": 5})
    assert p.upload_id == "0b7e-uuid" and p.phase is Phase.FINALIZE


def test_empty_file_is_sent_whole() -> None:
    p = ChunkedUploadProtocol(0, 10)
    assert p.next_action() == SendWhole()
    p.finalized({"id": 3})
    assert p.next_action() == Done({"id": 3}) and p.upload_id == 3


def test_realigns_on_expected_offset_backwards_and_forwards() -> None:
    p = ChunkedUploadProtocol(100, 10)
    p.chunk_stored(record(10))
    p.offset_mismatch(40)
    assert p.next_action() == PutChunk(URL, Chunk(40, 50, 100))
    p.offset_mismatch(5)
    assert p.next_action() == PutChunk(URL, Chunk(5, 15, 100))
    p.offset_mismatch(100)
    assert p.next_action() == Finalize(URL)


def test_finalize_realigns_when_the_server_lost_bytes() -> None:
    p = ChunkedUploadProtocol(30, 10)
    p.chunk_stored(record(30))
    assert p.next_action() == Finalize(URL)
    p.offset_mismatch(20)
    assert p.next_action() == PutChunk(URL, Chunk(20, 30, 30))


def test_lost_chunk_answer_is_checked_then_continued() -> None:
    p = ChunkedUploadProtocol(30, 10)
    p.chunk_stored(record(10))
    p.answer_lost()
    assert p.next_action() == CheckState(URL)
    p.state_received(record(20, completed_at=None))
    assert p.next_action() == PutChunk(URL, Chunk(20, 30, 30))


def test_lost_finalize_answer_accepts_a_completed_upload() -> None:
    p = ChunkedUploadProtocol(10, 10, send_whole=False)
    p.chunk_stored(record(10))
    p.answer_lost()
    done = record(10, completed_at="2026-01-01T00:00:00Z")
    p.state_received(done)
    assert p.next_action() == Done(done)


def test_lost_finalize_answer_of_an_incomplete_upload_finalizes_again() -> None:
    p = ChunkedUploadProtocol(10, 10, send_whole=False)
    p.chunk_stored(record(10))
    p.answer_lost()
    p.state_received(record(10, completed_at=None))
    assert p.next_action() == Finalize(URL)


def test_resume_starts_by_asking() -> None:
    p = ChunkedUploadProtocol(30, 10, url=URL)
    assert p.next_action() == CheckState(URL)
    p.state_received(record(20))
    assert p.next_action() == PutChunk(URL, Chunk(20, 30, 30))


def _machines() -> dict[str, ChunkedUploadProtocol]:
    create = ChunkedUploadProtocol(30, 10)
    append = ChunkedUploadProtocol(30, 10)
    append.chunk_stored(record(10))
    finalize = ChunkedUploadProtocol(10, 10, send_whole=False)
    finalize.chunk_stored(record(10))
    check = ChunkedUploadProtocol(30, 10, url=URL)
    done = ChunkedUploadProtocol(10, 10, send_whole=False)
    done.chunk_stored(record(10))
    done.finalized({"id": 7})
    return {"create": create, "append": append, "finalize": finalize, "check": check, "done": done}


ILLEGAL = [
    ("create", "offset_mismatch", (5,)),
    ("create", "answer_lost", ()),
    ("create", "finalized", ({"id": 1},)),
    ("create", "state_received", (record(0),)),
    ("append", "finalized", ({"id": 1},)),
    ("append", "state_received", (record(0),)),
    ("finalize", "chunk_stored", (record(10),)),
    ("finalize", "offset_mismatch", (31,)),
    ("check", "chunk_stored", (record(10),)),
    ("check", "answer_lost", ()),
    ("done", "chunk_stored", (record(10),)),
    ("done", "answer_lost", ()),
    ("done", "finalized", ({"id": 1},)),
    # answers that do not fit the protocol, in a phase that expects the event
    ("create", "chunk_stored", ({"offset": 10},)),  # no url
    ("append", "chunk_stored", (record(31),)),  # past the end
    ("append", "chunk_stored", (record(-1),)),
    ("append", "chunk_stored", ({"url": URL, "offset": "10"},)),
    ("append", "offset_mismatch", (None,)),
    ("append", "offset_mismatch", (True,)),
    ("finalize", "finalized", (["not", "a", "record"],)),
    ("check", "state_received", (record(5, url="http://h/chunked_upload/8/"),)),
    ("check", "state_received", (record(10, completed_at="2026"),)),  # complete but short
]


@pytest.mark.parametrize(("phase", "event", "args"), ILLEGAL)
def test_illegal_event_raises_and_changes_nothing(phase: str, event: str, args: tuple) -> None:
    machine = _machines()[phase]
    before = copy.deepcopy(vars(machine))
    with pytest.raises(ProtocolError):
        getattr(machine, event)(*args)
    assert vars(machine) == before


def test_bad_start_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkedUploadProtocol(10, 10, offset=11)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedUploadProtocol(10, 0)

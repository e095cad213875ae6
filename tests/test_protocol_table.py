"""The machine against its own transition table: every (phase, event) pair, and the requests it builds.

Pairs the table allows must land in a phase the table names; every other pair
must raise ``ProtocolError`` and leave the machine exactly as it was (as
h11's tests/test_state.py walks its table). No sockets: the machine has none.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from engine import wire
from engine.errors import (
    AuthorizationError,
    ClientTimeoutError,
    GoneError,
    HTTPError,
    NotFoundError,
    ProtocolError,
    ValidationError,
)
from engine.plan import Chunk
from engine.protocol import (
    CHUNK_CHECKSUM_RETRIES,
    TRANSITIONS,
    ChunkedUploadProtocol,
    Event,
    FilePart,
    Phase,
    PutChunk,
    Request,
)
from engine.retry import RetryPolicy
from engine.source import ChunkDigest

pytestmark = pytest.mark.unit

BASE = "http://h/chunked_upload/"
URL = BASE + "7/"
SIZE, CHUNK = 30, 10


def machine(**options: Any) -> ChunkedUploadProtocol:
    return ChunkedUploadProtocol(SIZE, CHUNK, collection_url=BASE, filename="f.bin", **options)


def record(offset: int, **extra: Any) -> dict[str, Any]:
    return {"id": 7, "url": URL, "offset": offset, **extra}


def in_phase(phase: Phase) -> ChunkedUploadProtocol:
    """A machine in ``phase``, reached by legal events only."""
    if phase is Phase.WHOLE:
        return ChunkedUploadProtocol(CHUNK, CHUNK, collection_url=BASE)  # one chunk: sent whole
    if phase is Phase.CHECK:
        return machine(url=URL)
    m = machine()
    if phase is Phase.CREATE:
        return m
    m.chunk_stored(record(10))
    if phase is Phase.APPEND:
        return m
    m.chunk_stored(record(SIZE))
    if phase is Phase.FINALIZE:
        return m
    m.finalized({"id": 7})
    assert phase is Phase.DONE
    return m


#: For each event, a call with content that fits the protocol (so only the phase decides).
FIRE: dict[Event, Callable[[ChunkedUploadProtocol], None]] = {
    Event.CHUNK_STORED: lambda m: m.chunk_stored(record(20)),
    Event.CHUNK_REJECTED: lambda m: m.chunk_rejected(),
    Event.OFFSET_MISMATCH: lambda m: m.offset_mismatch(10),
    Event.FINALIZED: lambda m: m.finalized({"id": 7}),
    Event.ANSWER_LOST: lambda m: m.answer_lost(),
    Event.STATE_RECEIVED: lambda m: m.state_received(record(20)),
    Event.WHOLE_REFUSED: lambda m: m.whole_refused(),
}

PAIRS = list(itertools.product(Phase, Event))


def test_every_phase_and_event_is_covered() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert set(FIRE) == set(Event)
    assert all(set(events) <= set(Event) for events in TRANSITIONS.values())


@pytest.mark.parametrize(("phase", "event"), PAIRS, ids=[f"{p.value}-{e.value}" for p, e in PAIRS])
def test_each_pair_follows_the_table(phase: Phase, event: Event) -> None:
    m = in_phase(phase)
    assert m.phase is phase
    allowed = TRANSITIONS[phase].get(event)
    if allowed is None:
        before = copy.deepcopy(vars(m))
        with pytest.raises(ProtocolError, match="not expected"):
            FIRE[event](m)
        assert vars(m) == before
    else:
        FIRE[event](m)
        assert m.phase in allowed


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_illegal_answers_leave_the_machine_unchanged(phase: Phase) -> None:
    m = in_phase(phase)
    before = copy.deepcopy(vars(m))
    for status, body in [(200, ["not", "a", "record"]), (200, "text"), (404, {"detail": "Not found."})]:
        with pytest.raises((ProtocolError, NotFoundError)):
            m.receive(status, body)
        assert vars(m) == before


# -- requests --------------------------------------------------------------------


def digest_of(chunk: Chunk) -> ChunkDigest:
    return ChunkDigest(chunk.start, chunk.end, bytes(range(16)), bytes(range(16, 32)))


def test_create_request_references_the_bytes_and_carries_the_key() -> None:
    m = machine(idempotency_key="k1")
    chunk = Chunk(0, 10, SIZE)
    request = m.next_request(chunk_digest=digest_of(chunk))
    assert request == Request(
        "PUT",
        BASE,
        headers=(
            (wire.CONTENT_RANGE, "bytes 0-9/30"),
            (wire.CONTENT_MD5, digest_of(chunk).content_md5),
            (wire.IDEMPOTENCY_KEY, "k1"),
        ),
        fields=((wire.FILENAME, "f.bin"),),
        file=FilePart(0, 10),
        signals=frozenset({400}),
        lost_is_event=False,
    )


def test_append_request_is_sent_to_the_upload_and_a_lost_answer_is_an_event() -> None:
    m = machine(chunk_digest="xxh3")
    m.chunk_stored(record(10))
    chunk = Chunk(10, 20, SIZE)
    request = m.next_request(chunk_digest=digest_of(chunk))
    assert request.method == "PUT" and request.url == URL
    assert dict(request.headers) == {
        wire.CONTENT_RANGE: "bytes 10-19/30",
        wire.CONTENT_XXH3: bytes(range(16, 32)).hex(),
    }
    assert request.file == FilePart(10, 10) and request.lost_is_event


def test_no_chunk_digest_sends_no_digest_header() -> None:
    request = machine(chunk_digest="none").next_request()
    assert [name for name, _ in request.headers] == [wire.CONTENT_RANGE, wire.IDEMPOTENCY_KEY]


def test_finalize_check_and_whole_requests() -> None:
    m = machine()
    m.chunk_stored(record(SIZE))
    assert m.next_request(file_md5="ab" * 16) == Request(
        "POST", URL, fields=((wire.MD5, "ab" * 16),), signals=frozenset({400}), lost_is_event=True
    )
    m.answer_lost()
    assert m.next_request() == Request("GET", URL)
    empty = ChunkedUploadProtocol(0, CHUNK, collection_url=BASE, filename="e", idempotency_key="k0")
    assert empty.next_request(file_md5="cd" * 16) == Request(
        "POST",
        BASE,
        headers=((wire.IDEMPOTENCY_KEY, "k0"),),
        fields=((wire.FILENAME, "e"), (wire.MD5, "cd" * 16)),
        file=FilePart(0, 0),
        signals=frozenset({400}),
    )


def test_a_file_of_one_chunk_is_one_post_and_a_bigger_one_is_not() -> None:
    one = ChunkedUploadProtocol(CHUNK, CHUNK, collection_url=BASE, filename="o", idempotency_key="k1")
    assert one.next_request(file_md5="ef" * 16) == Request(
        "POST",
        BASE,
        headers=((wire.IDEMPOTENCY_KEY, "k1"),),
        fields=((wire.FILENAME, "o"), (wire.MD5, "ef" * 16)),
        file=FilePart(0, CHUNK),
        signals=frozenset({400, 405}),  # 405: the server takes no whole file, 400: maybe its MD5 was wrong
    )
    assert machine().phase is Phase.CREATE  # three chunks
    assert ChunkedUploadProtocol(CHUNK, CHUNK, send_whole=False).phase is Phase.CREATE


def test_a_whole_file_whose_md5_did_not_match_is_sent_again_then_refused() -> None:
    m = in_phase(Phase.WHOLE)
    mismatch = {wire.DETAIL: wire.CHECKSUM_DOES_NOT_MATCH}
    for _ in range(CHUNK_CHECKSUM_RETRIES):
        assert m.receive(400, mismatch) is Event.CHUNK_REJECTED and m.phase is Phase.WHOLE
    with pytest.raises(ProtocolError, match="rejected the file's MD5 repeatedly"):
        m.receive(400, mismatch)
    with pytest.raises(ValidationError):  # any other 400 is the server refusing the file
        in_phase(Phase.WHOLE).receive(400, {wire.DETAIL: "Size of file exceeds the limit"})


def test_a_server_without_whole_posts_gets_the_chunked_protocol() -> None:
    m = in_phase(Phase.WHOLE)
    assert m.receive(405, {wire.DETAIL: 'Method "POST" not allowed.'}) is Event.WHOLE_REFUSED
    assert m.next_action() == PutChunk(None, Chunk(0, CHUNK, CHUNK))
    empty = ChunkedUploadProtocol(0, CHUNK, collection_url=BASE)
    with pytest.raises(HTTPError) as raised:  # an empty file has no chunk to send instead
        empty.receive(405, {wire.DETAIL: "no"})
    assert raised.value.status_code == 405


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (machine, {}, "digest of bytes 0-10"),
        (machine, {"chunk_digest": ChunkDigest(10, 20, b"x" * 16, None)}, "digest of bytes 0-10"),
        (lambda: machine(chunk_digest="xxh3"), {"chunk_digest": ChunkDigest(0, 10, None, None)}, "xxh3-128"),
        (lambda: in_phase(Phase.FINALIZE), {}, "whole file's MD5"),
        (lambda: ChunkedUploadProtocol(SIZE, CHUNK), {"chunk_digest": digest_of(Chunk(0, 10, SIZE))}, "collection_url"),
    ],
)
def test_a_request_without_what_it_needs_is_refused(make, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make().next_request(**kwargs)


def test_nothing_to_send_once_done() -> None:
    with pytest.raises(ProtocolError, match="nothing left"):
        in_phase(Phase.DONE).next_request()


def test_bad_chunk_digest_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_digest must be one of md5, xxh3, none"):
        machine(chunk_digest="sha1")


# -- answers ---------------------------------------------------------------------


def test_receive_walks_a_whole_upload() -> None:
    m = machine()
    assert m.receive(200, record(10)) is Event.CHUNK_STORED and m.phase is Phase.APPEND
    assert m.receive(200, record(20)) is Event.CHUNK_STORED
    assert m.receive(200, record(SIZE)) is Event.CHUNK_STORED and m.phase is Phase.FINALIZE
    done = record(SIZE, checksum="x")
    assert m.receive(200, done) is Event.FINALIZED and m.next_action().record == done


def test_expected_offset_realigns_a_chunk_and_a_finalize() -> None:
    m = in_phase(Phase.APPEND)
    body = {wire.DETAIL: wire.OFFSETS_DO_NOT_MATCH, wire.EXPECTED_OFFSET: 20, wire.PROVIDED_OFFSET: 10}
    assert m.receive(400, body) is Event.OFFSET_MISMATCH
    assert m.next_action() == PutChunk(URL, Chunk(20, 30, SIZE))
    f = in_phase(Phase.FINALIZE)
    assert f.receive(400, {wire.DETAIL: "the upload is incomplete", wire.EXPECTED_OFFSET: 0}) is Event.OFFSET_MISMATCH
    assert f.phase is Phase.APPEND and f.offset == 0


def test_expected_offset_on_a_create_is_an_error() -> None:
    # A create has no offset to re-align: a 400 there is the server refusing it.
    with pytest.raises(ValidationError):
        machine().receive(400, {wire.DETAIL: wire.OFFSETS_DO_NOT_MATCH, wire.EXPECTED_OFFSET: 0})


def test_checksum_rejections_are_resent_then_refused() -> None:
    m = in_phase(Phase.APPEND)
    rejected = {wire.DETAIL: wire.CHUNK_CHECKSUM_MISMATCH}
    for _ in range(CHUNK_CHECKSUM_RETRIES):
        assert m.receive(400, rejected) is Event.CHUNK_REJECTED
        assert m.next_action() == PutChunk(URL, Chunk(10, 20, SIZE))
    before = copy.deepcopy(vars(m))
    with pytest.raises(ProtocolError, match="rejected the checksum of bytes 10-20 repeatedly"):
        m.receive(400, rejected)
    assert vars(m) == before
    m.chunk_stored(record(20))
    assert m.rejections == 0  # a landed chunk renews the allowance


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {wire.DETAIL: wire.CHECKSUM_DOES_NOT_MATCH}, ValidationError),
        (400, "plain text", ValidationError),
        (403, {wire.DETAIL: "no"}, AuthorizationError),
        (404, {wire.DETAIL: "Not found."}, NotFoundError),
        (410, {wire.DETAIL: "Upload has expired"}, GoneError),
        (302, "", HTTPError),
    ],
)
def test_other_answers_raise_the_error_they_mean(status: int, body: Any, error: type) -> None:
    m = in_phase(Phase.FINALIZE)
    before = copy.deepcopy(vars(m))
    with pytest.raises(error) as raised:
        m.receive(status, body)
    assert raised.value.status_code == status
    assert vars(m) == before


def test_retry_after_reaches_a_rate_limit_error() -> None:
    with pytest.raises(HTTPError) as raised:
        machine().receive(429, {wire.DETAIL: "slow down"}, {wire.RETRY_AFTER: "7"})
    assert raised.value.retry_after == 7.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lost_answers_in_a_row_are_bounded_and_renewed_by_progress() -> None:
    clock = Clock()
    m = machine(retry=RetryPolicy(attempts=3, jitter=lambda: 1.0, clock=clock))
    m.chunk_stored(record(10))
    for lost in range(2):
        m.answer_lost(ClientTimeoutError("read timed out"))
        assert m.lost_answers.delay == 0.5 * 2**lost  # the wait before asking
        m.state_received(record(10))
    before = dict(vars(m))  # errors compare by identity: no deep copy here
    error = ClientTimeoutError("read timed out")
    with pytest.raises(ClientTimeoutError) as raised:
        m.answer_lost(error)
    assert raised.value is error and len(error.retry_history) == 3
    assert vars(m) == before
    m.chunk_stored(record(20))
    m.answer_lost(ClientTimeoutError("read timed out"))  # progress renewed the budget
    assert len(m.lost_answers.history) == 1


# -- the wire module ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-9/30", (0, 9, 30)),
        ("bytes 20-29/30", (20, 29, 30)),
        ("bytes 0-9/30 ", None),
        ("bytes 0-9", None),
        ("bytes -1-9/30", None),
        ("items 0-9/30", None),
        ("bytes 0-9/" + "9" * 19, None),
        ("", None),
    ],
)
def test_content_range_parse(value: str, parsed: tuple[int, int, int] | None) -> None:
    assert wire.parse_content_range(value) == parsed


@pytest.mark.parametrize(("start", "end", "total"), [(0, 1, 1), (0, 10, 30), (29, 30, 30)])
def test_content_range_format_round_trips(start: int, end: int, total: int) -> None:
    assert wire.parse_content_range(wire.format_content_range(start, end, total)) == (start, end - 1, total)


@pytest.mark.parametrize(("start", "end", "total"), [(0, 0, 0), (5, 5, 10), (6, 5, 10), (0, 11, 10), (-1, 2, 10)])
def test_content_range_format_refuses_empty_or_outside_ranges(start: int, end: int, total: int) -> None:
    with pytest.raises(ValueError, match="not a non-empty range"):
        wire.format_content_range(start, end, total)


def test_environ_key() -> None:
    assert wire.environ_key(wire.IDEMPOTENCY_KEY) == "HTTP_IDEMPOTENCY_KEY"

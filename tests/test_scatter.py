"""Chunks of one upload several at once, as values: ``engine.scatter.ChunkScatter`` and the machine's part in it.

No sockets: answers are fed by hand, in the orders a real network delivers
them (overtaking each other), with the faults it has (lost answers, refused
checksums, a server that lost bytes or takes no chunk out of order).
"""

from __future__ import annotations

import pytest

from engine import wire
from engine.errors import ClientTimeoutError, NotFoundError, ProtocolError
from engine.plan import Chunk, join_ranges
from engine.protocol import CHUNK_CHECKSUM_RETRIES, ChunkedUploadProtocol, Event, Phase, PutChunk, Scatter
from engine.retry import RetryPolicy
from engine.scatter import ChunkScatter
from engine.source import ChunkDigest

pytestmark = pytest.mark.unit

BASE = "http://h/chunked_upload/"
URL = BASE + "7/"
SIZE, CHUNK = 100, 10
PARALLEL = {wire.PARALLEL_CHUNKS: "8"}


def record(offset: int, *received: tuple[int, int], **extra) -> dict:
    body = {"id": 7, "url": URL, "offset": offset, **extra}
    if received:
        body[wire.RECEIVED] = [list(r) for r in received]
    return body


def created(parallel_chunks: int = 4, headers: dict | None = None) -> ChunkedUploadProtocol:
    """A machine whose create landed, on a server that said ``headers``."""
    m = ChunkedUploadProtocol(
        SIZE, CHUNK, collection_url=BASE, filename="f", parallel_chunks=parallel_chunks, retry=RetryPolicy(attempts=3)
    )
    assert m.receive(200, record(CHUNK), PARALLEL if headers is None else headers) is Event.CHUNK_STORED
    return m


def digest(chunk: Chunk) -> ChunkDigest:
    return ChunkDigest(chunk.start, chunk.end, bytes(16), None)


def send_all(scatter: ChunkScatter) -> list[Chunk]:
    chunks = []
    while (chunk := scatter.next_chunk()) is not None:
        chunks.append(chunk)
    return chunks


# -- when the machine scatters -------------------------------------------------------


def test_the_machine_scatters_where_the_server_says_it_can_and_the_client_lets_it() -> None:
    assert created().next_action() == Scatter(URL, 4)
    assert created(parallel_chunks=16).next_action() == Scatter(URL, 8)  # the server's bound
    # Plain drf-chunked-upload says nothing: the sequential protocol, exactly as it was.
    assert created(headers={}).next_action() == PutChunk(URL, Chunk(10, 20, SIZE))
    assert created(parallel_chunks=1).next_action() == PutChunk(URL, Chunk(10, 20, SIZE))
    assert created(headers={wire.PARALLEL_CHUNKS: "x"}).next_action() == PutChunk(URL, Chunk(10, 20, SIZE))


def test_one_chunk_left_goes_alone_and_stops_where_received_bytes_begin() -> None:
    m = created()
    m.chunk_stored(record(85, (90, 100)))
    assert m.next_action() == PutChunk(URL, Chunk(85, 90, SIZE))  # not 85-95: 90-100 is held


def test_a_scattered_chunk_is_marked_out_of_order_and_not_a_create() -> None:
    scatter = ChunkScatter(created(), 4)
    chunk = scatter.next_chunk()
    assert chunk == Chunk(10, 20, SIZE)
    request = scatter.request(chunk, digest(chunk))
    assert request.method == "PUT" and request.url == URL
    headers = dict(request.headers)
    assert headers[wire.OUT_OF_ORDER] == "1" and headers[wire.CONTENT_RANGE] == "bytes 10-19/100"
    assert wire.IDEMPOTENCY_KEY not in headers and request.lost_is_event and 409 in request.signals


def test_received_ranges_are_checked() -> None:
    m = created()
    for bad in ([[5, 20]], [[20, 30], [25, 40]], [[20, 30], [30, 40]], [[50, 101]], [["a", 3]], "x", [[30, 30]]):
        with pytest.raises(ProtocolError, match="received ranges"):
            m.receive(200, {**record(10), wire.RECEIVED: bad})
    assert m.received == () and m.offset == CHUNK


# -- the scatter -----------------------------------------------------------------------


def test_at_most_width_in_flight_and_answers_in_any_order() -> None:
    scatter = ChunkScatter(created(), 3)
    first = send_all(scatter)
    assert [c.start for c in first] == [10, 20, 30] and scatter.check_request() is None
    # The third lands first: the server holds it past its offset.
    assert scatter.receive(first[2], 200, record(10, (30, 40))) is Event.CHUNK_STORED
    assert scatter.held == [(0, 10), (30, 40)] and scatter.offset == 10
    [fourth] = send_all(scatter)
    assert fourth.start == 40
    scatter.receive(fourth, 200, record(10, (30, 50)))
    scatter.receive(first[1], 200, record(50))
    assert scatter.held == [(0, 50)] and scatter.offset == 50
    # An answer overtaken by a later one: what the server holds only grows.
    scatter.receive(first[0], 200, record(20, (30, 40)))
    assert scatter.held == [(0, 50)] and scatter.record == record(50)
    while not scatter.finished:
        for chunk in send_all(scatter):
            scatter.receive(chunk, 200, record(chunk.end))
    assert scatter.held == [(0, SIZE)] and scatter.bytes_held == SIZE and scatter.record == record(SIZE)


def test_a_refused_checksum_is_sent_again_then_refused() -> None:
    scatter = ChunkScatter(created(), 2)
    chunk, _ = send_all(scatter)
    rejected = {wire.DETAIL: wire.CHUNK_CHECKSUM_MISMATCH}
    for _ in range(CHUNK_CHECKSUM_RETRIES):
        assert scatter.receive(chunk, 400, rejected) is Event.CHUNK_REJECTED
        assert scatter.next_chunk() == chunk  # first in line again
    with pytest.raises(ProtocolError, match="rejected the checksum of bytes 10-20 repeatedly"):
        scatter.receive(chunk, 400, rejected)


def test_a_lost_answer_asks_the_server_once_the_rest_settled() -> None:
    scatter = ChunkScatter(created(), 2)
    a, b = send_all(scatter)
    scatter.answer_lost(a, ClientTimeoutError("read timed out"))
    assert scatter.next_chunk() is None and scatter.check_request() is None  # b is still in flight
    scatter.receive(b, 200, record(10, (20, 30)))
    assert scatter.check_request().method == "GET"
    scatter.state_received(record(10, (20, 30)))  # a never arrived
    assert scatter.next_chunk() == a


def test_a_state_after_a_crash_replaces_what_earlier_answers_said() -> None:
    scatter = ChunkScatter(created(), 2)
    a, b = send_all(scatter)
    scatter.receive(a, 200, record(20))
    scatter.receive(b, 409, {wire.DETAIL: "bytes 20-29 overlap bytes the upload holds"})  # held: ask
    scatter.state_received(record(15))  # a power cut took bytes the server had acknowledged
    assert scatter.held == [(0, 15)] and scatter.next_chunk() == Chunk(15, 25, SIZE)


def test_lost_answers_in_a_row_are_bounded() -> None:
    scatter = ChunkScatter(created(), 1)
    for _ in range(2):
        [chunk] = send_all(scatter)
        scatter.answer_lost(chunk, ClientTimeoutError("read timed out"))
        scatter.state_received(record(10))
    [chunk] = send_all(scatter)
    error = ClientTimeoutError("read timed out")
    with pytest.raises(ClientTimeoutError) as raised:
        scatter.answer_lost(chunk, error)
    assert raised.value is error


def test_a_server_that_stores_nothing_out_of_order_ends_the_scatter() -> None:
    m = created()
    scatter = ChunkScatter(m, 2)
    a, b = send_all(scatter)
    mismatch = {wire.DETAIL: wire.OFFSETS_DO_NOT_MATCH, wire.EXPECTED_OFFSET: 20, wire.PROVIDED_OFFSET: 20}
    scatter.receive(a, 200, record(20))
    assert scatter.receive(b, 400, mismatch) is Event.OFFSET_MISMATCH
    assert scatter.finished and scatter.refused_at == 20 and scatter.next_chunk() is None
    m.scatter_refused(scatter.refused_at)
    assert m.phase is Phase.APPEND and m.next_action() == PutChunk(URL, Chunk(20, 30, SIZE))


def test_other_answers_raise_what_they_mean() -> None:
    scatter = ChunkScatter(created(), 2)
    a, _ = send_all(scatter)
    with pytest.raises(NotFoundError):
        scatter.receive(a, 404, {wire.DETAIL: "Not found."})
    with pytest.raises(ValueError, match="not in flight"):
        scatter.receive(Chunk(70, 80, SIZE), 200, record(10))
    with pytest.raises(ProtocolError, match="offset of 200"):
        scatter.receive(a, 200, record(200))


def test_an_offset_mismatch_forgets_what_lay_past_the_old_offset() -> None:
    m = created()
    m.chunk_stored(record(20, (40, 60)))
    m.offset_mismatch(10)
    assert m.received == () and m.offset == 10


def test_join_ranges() -> None:
    assert join_ranges([(5, 7), (0, 5), (9, 12), (10, 11)]) == [(0, 7), (9, 12)]
    assert join_ranges([]) == []

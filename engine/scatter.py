"""Chunks of one upload on several connections at once, out of order, where the server allows it (no I/O).

One TCP connection and one request at a time leave a long, fat link idle: a
connection carries at most its window per round trip, and between two chunks
the sender waits for the answer. A server that answers ``chunked_upload/``
with ``Synapse-Parallel-Chunks: N`` (docs/PROTOCOL.md) stores chunks marked
``Synapse-Out-Of-Order`` where their ``Content-Range`` says, up to ``N`` at a
time; its record's ``offset`` stays the contiguous prefix and ``received``
lists the ranges stored past it. ``ChunkScatter`` is the client's side of
that, as values: it says which chunk to send next (at most ``width`` in
flight), builds each request through the upload's ``ChunkedUploadProtocol``,
and is told what came of each one, in whatever order the answers arrive.

- A stored chunk: the record says what the server holds now.
- A chunk whose checksum the server refused: sent again, a bounded number of times.
- A lost answer, or a range the server says it holds already (``409``: an
  earlier try whose answer was lost landed): once the chunks in flight have
  settled, the scatter asks the server where things stand
  (``check_request``) and sends what it lacks; lost answers in a row are
  bounded by the retry policy, renewed whenever a chunk lands. (A range the
  server is still receiving is ``429``, retried as any rate limit is.)
- ``Offsets do not match`` to an out-of-order chunk: the server does not
  store chunks out of order after all. The scatter ends (``refused_at``) and
  the upload goes on one chunk at a time from the offset the server named.

The whole file's MD5 is still computed in file order by the uploader and
checked at the finalize, which the sequential machine sends once every byte
is held (``finished``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine import wire
from engine.errors import ClientError, HTTPError, ProtocolError, error_for_status
from engine.plan import Chunk, join_ranges
from engine.protocol import CHUNK_CHECKSUM_RETRIES, ChunkedUploadProtocol, Event, Request, held_ranges

if TYPE_CHECKING:
    from engine.source import ChunkDigest

__all__ = ["DEFAULT_PARALLEL_CHUNKS", "ChunkScatter"]

#: Chunks of one file a client sends at once by default, where the server takes them out of order:
#: enough connections to fill a long, fat link (one carries about its window per round trip).
DEFAULT_PARALLEL_CHUNKS = 4

#: The answer to a chunk whose bytes the server holds already (an earlier try landed, its answer lost).
HELD = 409


class ChunkScatter:
    """The chunks ``protocol``'s upload still lacks, at most ``width`` in flight (see the module docstring)."""

    def __init__(self, protocol: ChunkedUploadProtocol, width: int) -> None:
        if protocol.url is None:
            raise ValueError("chunks can be scattered only once the server has created the upload")
        if width < 1:
            raise ValueError(f"width must be at least 1, not {width}")
        self.protocol = protocol
        self.url: str = protocol.url
        self.width = width
        self.size = protocol.size
        #: What the server holds: ``[start, end)`` ranges in order, the prefix ``[0, offset)`` first.
        self.held: list[tuple[int, int]] = held_ranges(protocol.offset, protocol.received)
        self.in_flight: dict[int, Chunk] = {}
        self.pending: list[Chunk] = self._missing()
        self.rejections: dict[int, int] = {}
        #: The server's last record (its ``offset`` is the prefix it holds).
        self.record: dict[str, Any] | None = None
        #: Whether to ask the server where things stand before sending more.
        self.checking = False
        self.lost_answers = protocol.retry
        #: The offset the server named when it refused a chunk out of order; the scatter is over.
        self.refused_at: int | None = None

    # -- what to send -----------------------------------------------------------

    def next_chunk(self) -> Chunk | None:
        """The next chunk to send, now in flight; None while ``width`` are, or while checking."""
        if self.checking or self.refused_at is not None or len(self.in_flight) >= self.width or not self.pending:
            return None
        chunk = self.pending.pop(0)
        self.in_flight[chunk.start] = chunk
        return chunk

    def request(self, chunk: Chunk, digest: ChunkDigest | None) -> Request:
        """The PUT of ``chunk`` (in flight), with its digest header and ``Synapse-Out-Of-Order``."""
        if self.in_flight.get(chunk.start) != chunk:
            raise ValueError(f"bytes {chunk.start}-{chunk.end} are not in flight")
        return self.protocol.chunk_request(self.url, chunk, digest, out_of_order=True)

    def check_request(self) -> Request | None:
        """The GET of the upload's state, once it is needed and the chunks in flight have settled."""
        return Request("GET", self.url) if self.checking and not self.in_flight else None

    @property
    def finished(self) -> bool:
        """Every byte is held (or the server refused the scatter) and nothing is in flight."""
        return not self.in_flight and (self.refused_at is not None or self.held == [(0, self.size)])

    @property
    def offset(self) -> int:
        """The prefix ``[0, offset)`` the server holds."""
        return self.held[0][1] if self.held and self.held[0][0] == 0 else 0

    @property
    def bytes_held(self) -> int:
        return _total(self.held)

    # -- what came back -----------------------------------------------------------

    def receive(self, chunk: Chunk, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Event:
        """Feed the answer to ``chunk``'s PUT; returns the event it was, or raises the error it means."""
        self._landed(chunk)
        if 200 <= status < 300:
            self._hold(body)
            self.in_flight.pop(chunk.start)
            self.rejections.pop(chunk.start, None)
            self.lost_answers = self.protocol.retry
            return Event.CHUNK_STORED
        if status == 400 and isinstance(body, dict):
            expected = body.get(wire.EXPECTED_OFFSET)
            if expected is not None:
                if isinstance(expected, bool) or not isinstance(expected, int) or not 0 <= expected <= self.size:
                    raise ProtocolError(f"server answered an expected offset of {expected!r}: {body!r}")
                self.in_flight.pop(chunk.start)
                self.refused_at = expected
                return Event.OFFSET_MISMATCH
            if str(body.get(wire.DETAIL, "")).lower() == wire.CHUNK_CHECKSUM_MISMATCH:
                rejections = self.rejections.get(chunk.start, 0)
                if rejections >= CHUNK_CHECKSUM_RETRIES:
                    raise ProtocolError(
                        f"the server rejected the checksum of bytes {chunk.start}-{chunk.end} repeatedly"
                    )
                self.rejections[chunk.start] = rejections + 1
                self.in_flight.pop(chunk.start)
                self.pending.insert(0, chunk)
                return Event.CHUNK_REJECTED
        if status == HELD:
            return self.answer_lost(chunk, None)
        if status >= 400:
            raise error_for_status(status, body, None)
        raise HTTPError(status, f"the server answered {status}, not a result")

    def answer_lost(self, chunk: Chunk, error: ClientError | None) -> Event:
        """``chunk``'s answer never came (or the range was busy): ask where things stand before resending.

        With ``error``, it counts against the lost answers allowed in a row;
        once those are spent, ``error`` is raised. ``lost_answers.delay`` is
        then the wait before asking.
        """
        self._landed(chunk)
        if error is not None:
            self.lost_answers = self.lost_answers.increment(error)
        self.in_flight.pop(chunk.start)
        self.checking = True
        return Event.ANSWER_LOST

    def state_received(self, record: Any) -> None:
        """The answer to ``check_request``: hold what the server holds, send what it lacks.

        Nothing is in flight then, so the record is the whole truth: it
        replaces what earlier answers said (a server that lost bytes in a
        crash holds less than it did).
        """
        if not isinstance(record, dict):
            raise ProtocolError(f"server answered the upload's state with {record!r}, not a record")
        if record.get(wire.URL) not in (None, self.url):
            raise ProtocolError(f"server answered the state of another upload: {record!r}")
        offset, received = self.protocol.held_by(record)
        self.held, self.record = held_ranges(offset, received), record
        self.pending = self._missing()
        self.checking = False

    def _landed(self, chunk: Chunk) -> None:
        if self.in_flight.get(chunk.start) != chunk:
            raise ValueError(f"bytes {chunk.start}-{chunk.end} are not in flight")

    def _hold(self, record: Any) -> None:
        offset, received = self.protocol.held_by(record)
        # Answers overtake each other: a record may be older than one already
        # seen. What the server holds only grows, so what it holds is the union.
        held = join_ranges(self.held + held_ranges(offset, received))
        if self.record is None or offset >= self.record[wire.OFFSET]:
            self.record = record
        self.held = held

    def _missing(self) -> list[Chunk]:
        """The chunks to send for the gaps in ``held``: ``chunk_size`` each, fewer at a gap's end."""
        chunks, position = [], 0
        for start, end in [*self.held, (self.size, self.size)]:
            for begin in range(position, start, self.protocol.chunk_size):
                chunks.append(Chunk(begin, min(begin + self.protocol.chunk_size, start), self.size))
            position = end
        return chunks


def _total(ranges: list[tuple[int, int]]) -> int:
    return sum(end - start for start, end in ranges)

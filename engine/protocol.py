"""The chunked-upload conversation as a state machine, without I/O.

The machine says what to send next and is told what came back. It opens no
socket, reads no file and never sleeps, so every transition is tested
directly (tests/test_protocol*.py), and it is the one place that knows the
wire: ``next_request()`` builds the request (method, URL, headers, form
fields, and a *reference* to the file's bytes, never the bytes), and
``receive(status, body, headers)`` turns an answer into an event, or into the
error it means. ``answer_lost(error)`` is the event of a request whose answer
never came.

Events (``Event``) drive the machine through ``TRANSITIONS``, the one table
of which event may come in which phase and where it may lead. An event the
table does not allow, or one whose content does not fit the protocol (an
offset past the end, a record without a URL), raises ``ProtocolError`` and
leaves the machine unchanged: every event computes its changes first and
applies them only once they are all known to be valid.

Phases::

    CREATE --chunk_stored--> APPEND --chunk_stored (offset == size)--> FINALIZE --finalized--> DONE
    WHOLE (a file of at most one chunk, sent with its MD5 in one POST) --finalized--> DONE
    WHOLE --chunk_rejected (its MD5 did not match)--> WHOLE (sent again, a bounded number of times)
    WHOLE --whole_refused (405: the server takes no file in one POST)--> CREATE
    CREATE/APPEND --chunk_rejected--> the same phase (the chunk is sent again, a bounded number of times)
    APPEND/FINALIZE --offset_mismatch--> APPEND/FINALIZE      (re-align on expected_offset)
    APPEND/FINALIZE --answer_lost--> CHECK --state_received--> APPEND/FINALIZE/DONE

Where the server stores chunks out of order (``Synapse-Parallel-Chunks``)
and the machine may use it (``parallel_chunks``), APPEND's action is
``Scatter``: the chunks the server lacks go on several connections at once
(``engine.scatter``), and what comes of them is fed back as the events above
(the last stored chunk's record, or the offset of a server that refused).

A lost answer to a create is not an event: the create is sent again with the
same ``Idempotency-Key`` (``Request.lost_is_event`` says which requests are
which). Lost answers in a row are bounded by a ``RetryPolicy`` the machine
keeps (``lost_answers``), renewed whenever a chunk lands.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from engine import wire
from engine.errors import ClientError, HTTPError, ProtocolError, error_for_status
from engine.plan import Chunk, chunk_at
from engine.retry import RetryPolicy

if TYPE_CHECKING:
    from engine.source import ChunkDigest

__all__ = [
    "CHUNK_CHECKSUM_RETRIES",
    "CHUNK_DIGESTS",
    "TRANSITIONS",
    "Action",
    "CheckState",
    "ChunkedUploadProtocol",
    "Done",
    "Event",
    "FilePart",
    "Finalize",
    "Phase",
    "PutChunk",
    "Request",
    "Scatter",
    "SendWhole",
    "held_ranges",
]

#: How each chunk is vouched for: ``Content-MD5`` (RFC 1864, the default),
#: ``Content-XXH3`` (an extension of the reference server, far cheaper), or
#: nothing (the finalize MD5 still checks the whole file).
CHUNK_DIGESTS: Final = ("md5", "xxh3", "none")

#: How often one chunk is sent again after the server found its checksum wrong.
CHUNK_CHECKSUM_RETRIES: Final = 2


class Phase(enum.Enum):
    CREATE = "create"
    WHOLE = "whole"
    APPEND = "append"
    FINALIZE = "finalize"
    CHECK = "check"
    DONE = "done"


class Event(enum.Enum):
    CHUNK_STORED = "chunk_stored"
    CHUNK_REJECTED = "chunk_rejected"
    OFFSET_MISMATCH = "offset_mismatch"
    FINALIZED = "finalized"
    ANSWER_LOST = "answer_lost"
    STATE_RECEIVED = "state_received"
    WHOLE_REFUSED = "whole_refused"


_P, _E = Phase, Event
#: For each phase, the events it takes and the phases each may lead to. Anything else is illegal.
TRANSITIONS: Final[Mapping[Phase, Mapping[Event, frozenset[Phase]]]] = {
    _P.CREATE: {
        _E.CHUNK_STORED: frozenset({_P.APPEND, _P.FINALIZE}),
        _E.CHUNK_REJECTED: frozenset({_P.CREATE}),
    },
    _P.WHOLE: {
        _E.FINALIZED: frozenset({_P.DONE}),
        _E.CHUNK_REJECTED: frozenset({_P.WHOLE}),
        _E.WHOLE_REFUSED: frozenset({_P.CREATE}),
    },
    _P.APPEND: {
        _E.CHUNK_STORED: frozenset({_P.APPEND, _P.FINALIZE}),
        _E.CHUNK_REJECTED: frozenset({_P.APPEND}),
        _E.OFFSET_MISMATCH: frozenset({_P.APPEND, _P.FINALIZE}),
        _E.ANSWER_LOST: frozenset({_P.CHECK}),
    },
    _P.FINALIZE: {
        _E.FINALIZED: frozenset({_P.DONE}),
        _E.OFFSET_MISMATCH: frozenset({_P.APPEND, _P.FINALIZE}),
        _E.ANSWER_LOST: frozenset({_P.CHECK}),
    },
    _P.CHECK: {
        _E.STATE_RECEIVED: frozenset({_P.APPEND, _P.FINALIZE, _P.DONE}),
    },
    _P.DONE: {},
}


# -- what to do next ------------------------------------------------------------


@dataclass(frozen=True)
class PutChunk:
    """PUT this chunk to ``url`` (``None``: the collection URL, which creates the upload)."""

    url: str | None
    chunk: Chunk


@dataclass(frozen=True)
class SendWhole:
    """POST the whole file (at most one chunk) with its MD5 to the collection URL: one round trip."""


@dataclass(frozen=True)
class Finalize:
    """POST the whole file's MD5 to ``url``."""

    url: str


@dataclass(frozen=True)
class CheckState:
    """GET ``url`` to learn what the server holds."""

    url: str


@dataclass(frozen=True)
class Scatter:
    """Send the chunks the upload at ``url`` lacks, ``width`` at once, out of order (``engine.scatter``)."""

    url: str
    width: int


@dataclass(frozen=True)
class Done:
    """The upload is complete; ``record`` is the server's final answer."""

    record: dict[str, Any]


Action = PutChunk | Scatter | SendWhole | Finalize | CheckState | Done


# -- what goes on the wire --------------------------------------------------------


@dataclass(frozen=True)
class FilePart:
    """The multipart ``file`` part: bytes ``[offset, offset + length)`` of the file being uploaded."""

    offset: int
    length: int


@dataclass(frozen=True)
class Request:
    """One HTTP request of the conversation, as values.

    With ``file``, the body is ``multipart/form-data``: the text ``fields``,
    then the file part. Without it, the ``fields`` (if any) are sent as a
    JSON object, as synapse-sdk sends a body without files.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    file: FilePart | None = None
    #: Statuses above 2xx whose answers are the machine's to read (``receive``),
    #: not errors to raise or retry: a 400 may be a re-alignment signal.
    signals: frozenset[int] = frozenset()
    #: Whether a lost answer is the machine's event (``answer_lost``: it asks
    #: the server where things stand) rather than a reason to send again.
    lost_is_event: bool = False


def _offset_of(record: Any, size: int) -> int:
    offset = record.get(wire.OFFSET) if isinstance(record, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= size:
        raise ProtocolError(f"server answered an offset of {offset!r} for a {size}-byte file: {record!r}")
    return offset


def _received_of(record: dict[str, Any], offset: int, size: int) -> tuple[tuple[int, int], ...]:
    """The record's ``received`` ranges past ``offset``: in order, apart, inside the file (absent: none)."""
    value = record.get(wire.RECEIVED) or []
    ranges: list[tuple[int, int]] = []
    for item in value if isinstance(value, list) else [value]:
        if not (isinstance(item, list) and len(item) == 2 and all(type(n) is int for n in item)):
            raise ProtocolError(f"server answered received ranges {value!r}, not [[start, end], ...]: {record!r}")
        start, end = item
        if not (ranges[-1][1] if ranges else offset) < start < end <= size:
            raise ProtocolError(f"server answered received ranges {value!r} for bytes {offset}-{size}: {record!r}")
        ranges.append((start, end))
    return tuple(ranges)


def held_ranges(offset: int, received: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
    """The byte ranges a server holds: the prefix ``[0, offset)`` (if any), then ``received``."""
    return [*([(0, offset)] if offset else []), *received]


def _parallel_chunks(headers: Mapping[str, str]) -> int:
    """How many chunks the server takes at once, out of order (``Synapse-Parallel-Chunks``; absent: 1)."""
    value = headers.get(wire.PARALLEL_CHUNKS, "")
    return int(value) if value.isdigit() and 0 < len(value) < 4 else 1


def _says(body: Any, detail: str) -> bool:
    return isinstance(body, dict) and str(body.get(wire.DETAIL, "")).lower() == detail


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get(wire.RETRY_AFTER)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: let the backoff decide


class ChunkedUploadProtocol:
    """Where one upload stands, what to send next, and what an answer means.

    ``size``, ``chunk_size``: the file's and each chunk's bytes. ``url``: an
    upload the server already holds part of (the machine starts by asking it
    where it stands). The rest shapes the requests: ``collection_url``
    (``{base}/chunked_upload/``), the file's ``filename``, ``chunk_digest``
    (one of ``CHUNK_DIGESTS``), the create's ``idempotency_key`` (new for
    each upload; by default a random UUID), and ``retry``, the policy that
    bounds lost answers in a row. With ``send_whole`` (the default), a file
    of at most one chunk goes in one POST with its MD5, as drf-chunked-upload
    allows, instead of a chunk PUT and a finalize: one round trip, not two.
    An empty file always does (a chunk cannot be empty). ``parallel_chunks``:
    at most how many chunks to send at once where the server takes them out
    of order (1: one at a time, as plain drf-chunked-upload needs anyway).
    """

    def __init__(
        self,
        size: int,
        chunk_size: int,
        *,
        url: str | None = None,
        offset: int = 0,
        collection_url: str = "",
        filename: str = "",
        chunk_digest: str = "md5",
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        send_whole: bool = True,
        parallel_chunks: int = 1,
    ) -> None:
        chunk_at(0, max(size, 1), chunk_size)  # validates chunk_size
        if size < 0 or not 0 <= offset <= size:
            raise ValueError(f"cannot start at byte {offset} of a {size}-byte file")
        if chunk_digest not in CHUNK_DIGESTS:
            raise ValueError(f"chunk_digest must be one of {', '.join(CHUNK_DIGESTS)}, not {chunk_digest!r}")
        if isinstance(parallel_chunks, bool) or not isinstance(parallel_chunks, int) or parallel_chunks < 1:
            raise ValueError(f"parallel_chunks must be a whole number of at least 1, not {parallel_chunks!r}")
        self.size = size
        self.chunk_size = chunk_size
        self.collection_url = collection_url
        self.filename = filename
        self.chunk_digest = chunk_digest
        self.idempotency_key = idempotency_key or uuid.uuid4().hex
        self.retry = retry or RetryPolicy()
        self.url = url
        self.upload_id: Any = None
        self.offset = offset
        #: Ranges ``[start, end)`` past ``offset`` the server holds (chunks it stored out of order).
        self.received: tuple[tuple[int, int], ...] = ()
        self.parallel_chunks = parallel_chunks
        #: What the server's last answer said it takes at once (``Synapse-Parallel-Chunks``).
        self.server_parallel = 1
        self.record: dict[str, Any] | None = None
        #: Checksum rejections of the chunk being sent, in a row.
        self.rejections = 0
        #: The policy bounding lost answers in a row: renewed when a chunk lands.
        self.lost_answers = self.retry
        if url is not None:
            # Resuming a known upload: ask the server where it stands first.
            self.phase = Phase.CHECK
        else:
            self.phase = Phase.WHOLE if size == 0 or (send_whole and size <= chunk_size) else Phase.CREATE

    # -- what to send -------------------------------------------------------------

    def next_action(self) -> Action:
        """What the conversation needs next, before it is put into a request."""
        if self.phase is Phase.CREATE:
            return PutChunk(None, chunk_at(0, self.size, self.chunk_size))
        if self.phase is Phase.WHOLE:
            return SendWhole()
        if self.phase is Phase.APPEND:
            assert self.url is not None
            width = min(self.parallel_chunks, self.server_parallel)
            missing = self.size - self.offset - sum(end - start for start, end in self.received)
            if width > 1 and missing > self.chunk_size:
                return Scatter(self.url, width)
            # The next chunk stops where bytes stored out of order begin.
            chunk = chunk_at(self.offset, self.received[0][0] if self.received else self.size, self.chunk_size)
            return PutChunk(self.url, Chunk(chunk.start, chunk.end, self.size))
        # Past CREATE the server has named the upload (and in DONE answered its record).
        if self.phase is Phase.FINALIZE:
            assert self.url is not None
            return Finalize(self.url)
        if self.phase is Phase.CHECK:
            assert self.url is not None
            return CheckState(self.url)
        assert self.record is not None
        return Done(self.record)

    def next_request(self, *, chunk_digest: ChunkDigest | None = None, file_md5: str | None = None) -> Request:
        """The request ``next_action()`` calls for.

        A chunk's request needs the chunk's ``chunk_digest`` (unless the
        machine sends none), a finalize or a whole file the file's
        ``file_md5`` (hex): the caller hashes, the machine puts it on the wire.
        """
        action = self.next_action()
        if isinstance(action, PutChunk):
            return self._chunk_request(action, chunk_digest)
        if isinstance(action, CheckState):
            return Request("GET", action.url)
        if isinstance(action, Done):
            raise ProtocolError("the upload is complete: there is nothing left to send")
        if isinstance(action, Scatter):
            raise ProtocolError("scattered chunks are sent by engine.scatter.ChunkScatter, not one request here")
        if not file_md5:
            raise ValueError(f"a {type(action).__name__} request needs the whole file's MD5")
        if isinstance(action, Finalize):
            return Request(
                "POST", action.url, fields=((wire.MD5, file_md5),), signals=frozenset({400}), lost_is_event=True
            )
        # Sent again when its answer is lost: the key makes the server answer the upload it made.
        return Request(
            "POST",
            self._collection(),
            headers=((wire.IDEMPOTENCY_KEY, self.idempotency_key),),
            fields=((wire.FILENAME, self.filename), (wire.MD5, file_md5)),
            file=FilePart(0, self.size),
            signals=frozenset({400, 405}) if self.size else frozenset({400}),
        )

    def _chunk_request(self, action: PutChunk, digest: ChunkDigest | None) -> Request:
        return self.chunk_request(action.url, action.chunk, digest)

    def chunk_request(
        self, url: str | None, chunk: Chunk, digest: ChunkDigest | None, *, out_of_order: bool = False
    ) -> Request:
        """The PUT of ``chunk`` to ``url`` (None: the create); ``out_of_order`` marks one of a scatter."""
        headers = [(wire.CONTENT_RANGE, chunk.content_range)]
        if self.chunk_digest != "none":
            if digest is None or (digest.start, digest.end) != (chunk.start, chunk.end):
                raise ValueError(f"a chunk request needs the digest of bytes {chunk.start}-{chunk.end}, not {digest}")
            if self.chunk_digest == "md5":
                headers.append((wire.CONTENT_MD5, digest.content_md5))
            elif digest.xxh3_128 is not None:
                headers.append((wire.CONTENT_XXH3, digest.xxh3_128.hex()))
            else:
                raise ValueError(f"a chunk request needs the xxh3-128 of bytes {chunk.start}-{chunk.end}")
        if url is None:
            # A create whose answer is lost is sent again; the key lets the
            # server answer with the upload it already made instead of a twin.
            headers.append((wire.IDEMPOTENCY_KEY, self.idempotency_key))
        if out_of_order:
            headers.append((wire.OUT_OF_ORDER, "1"))
        return Request(
            "PUT",
            url or self._collection(),
            headers=tuple(headers),
            fields=((wire.FILENAME, self.filename),),
            file=FilePart(chunk.start, chunk.length),
            signals=frozenset({400, 409}) if out_of_order else frozenset({400}),
            lost_is_event=url is not None,
        )

    def _collection(self) -> str:
        if not self.collection_url:
            raise ValueError("the machine was made without a collection_url: it cannot create an upload")
        return self.collection_url

    # -- what came back ---------------------------------------------------------------

    def receive(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Event:
        """Feed the answer to the last request: its status, its parsed JSON body (else its text), its headers.

        Returns the event the answer was. An answer that is no event of this
        phase raises the error it means (``ValidationError`` for a 400 that
        is no signal, ``NotFoundError``...), or ``ProtocolError``; the machine
        is then unchanged.
        """
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise ProtocolError(f"server answered {status} without a JSON record: {str(body)[:200]!r}")
            event = _ANSWERS.get(self.phase)
            if event is None:
                raise ProtocolError(f"an answer is not expected while the upload is in phase {self.phase.value}")
            self._fire(event, body)
            self.server_parallel = _parallel_chunks(headers or {})
            return event
        if status == 400 and isinstance(body, dict):
            expected = body.get(wire.EXPECTED_OFFSET)
            if expected is not None and Event.OFFSET_MISMATCH in TRANSITIONS[self.phase]:
                self.offset_mismatch(expected)
                return Event.OFFSET_MISMATCH
            # A whole file's bytes are vouched for by its MD5: a mismatch there is the chunk's.
            rejected = wire.CHECKSUM_DOES_NOT_MATCH if self.phase is Phase.WHOLE else wire.CHUNK_CHECKSUM_MISMATCH
            if _says(body, rejected) and Event.CHUNK_REJECTED in TRANSITIONS[self.phase]:
                self.chunk_rejected()
                return Event.CHUNK_REJECTED
        if status == 405 and self.phase is Phase.WHOLE and self.size:
            self.whole_refused()
            return Event.WHOLE_REFUSED
        if status >= 400:
            raise error_for_status(status, body, _retry_after(headers or {}))
        raise HTTPError(status, f"the server answered {status}, not a result")

    # -- the events ---------------------------------------------------------------

    def chunk_stored(self, record: dict[str, Any]) -> None:
        """The server accepted a chunk and answered with the upload's record."""
        self._fire(Event.CHUNK_STORED, record)

    def chunk_rejected(self) -> None:
        """The server found the chunk's checksum wrong and stored nothing: send it again."""
        self._fire(Event.CHUNK_REJECTED)

    def offset_mismatch(self, expected_offset: Any) -> None:
        """The server holds ``expected_offset`` bytes, not what we assumed: re-align.

        Said of a chunk, or of a finalize when the server lost bytes it had
        acknowledged (a restart after a power cut).
        """
        self._fire(Event.OFFSET_MISMATCH, expected_offset)

    def finalized(self, record: dict[str, Any]) -> None:
        """The server completed the upload."""
        self._fire(Event.FINALIZED, record)

    def answer_lost(self, error: ClientError | None = None) -> None:
        """The last request went out but no answer came: ask the server where things stand.

        With ``error`` (what was lost), it counts against ``lost_answers``;
        once those are spent, ``error`` is raised and nothing changes.
        ``lost_answers.delay`` is then the wait before asking.
        """
        self._fire(Event.ANSWER_LOST, error)

    def state_received(self, record: dict[str, Any]) -> None:
        """Answer to ``CheckState``: continue from what the server holds."""
        self._fire(Event.STATE_RECEIVED, record)

    def whole_refused(self) -> None:
        """The server takes no file in one POST (405): send it as a chunk and a finalize instead."""
        self._fire(Event.WHOLE_REFUSED)

    def scatter_refused(self, expected_offset: Any) -> None:
        """The server stores no chunk out of order after all: re-align, then go on one chunk at a time.

        Whatever its answers go on saying, this upload sends no more chunks out of order.
        """
        self.offset_mismatch(expected_offset)
        self.parallel_chunks = 1

    def held_by(self, record: Any) -> tuple[int, tuple[tuple[int, int], ...]]:
        """A record's ``offset`` and ``received`` ranges, checked against the file (``ProtocolError`` if off)."""
        offset = _offset_of(record, self.size)
        return offset, _received_of(record, offset, self.size)

    def _fire(self, event: Event, *args: Any) -> None:
        allowed = TRANSITIONS[self.phase].get(event)
        if allowed is None:
            raise ProtocolError(f"{event.value} is not expected while the upload is in phase {self.phase.value}")
        changes = _HANDLERS[event](self, *args)
        if changes["phase"] not in allowed:  # a handler that disagrees with the table is a bug here
            raise ProtocolError(f"{event.value} in phase {self.phase.value} led to {changes['phase'].value}")
        vars(self).update(changes)

    # Handlers: compute the changes an event makes, raise if it does not fit; change nothing.

    def _on_chunk_stored(self, record: Any) -> dict[str, Any]:
        offset, received = self.held_by(record)
        url = record.get(wire.URL) or self.url
        if not isinstance(url, str) or not url:
            raise ProtocolError(f"server answered the first chunk without the upload's url: {record!r}")
        return {
            "url": url,
            "offset": offset,
            "received": received,
            "upload_id": record.get(wire.ID, self.upload_id),
            "phase": self._sending(offset),
            "rejections": 0,
            "lost_answers": self.retry,
        }

    def _on_chunk_rejected(self) -> dict[str, Any]:
        if self.rejections >= CHUNK_CHECKSUM_RETRIES:
            chunk = chunk_at(self.offset, self.size, self.chunk_size)
            what = "the file's MD5" if self.phase is Phase.WHOLE else f"the checksum of bytes {chunk.start}-{chunk.end}"
            raise ProtocolError(f"the server rejected {what} repeatedly")
        return {"phase": self.phase, "rejections": self.rejections + 1}

    def _on_whole_refused(self) -> dict[str, Any]:
        if not self.size:
            raise ProtocolError("an empty file cannot be sent as a chunk: the server must take it whole")
        return {"phase": Phase.CREATE, "rejections": 0}

    def _on_offset_mismatch(self, expected_offset: Any) -> dict[str, Any]:
        offset = _offset_of({wire.OFFSET: expected_offset}, self.size)
        # What lay past the old offset is unknown now (the server may have lost it): the next record tells.
        return {"offset": offset, "received": (), "phase": self._sending(offset), "rejections": 0}

    def _on_finalized(self, record: Any) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise ProtocolError(f"server answered finalize with {record!r}, not a record")
        return {"upload_id": record.get(wire.ID, self.upload_id), "record": record, "phase": Phase.DONE}

    def _on_answer_lost(self, error: ClientError | None) -> dict[str, Any]:
        # ``increment`` raises ``error`` once lost answers in a row are too many.
        lost_answers = self.lost_answers if error is None else self.lost_answers.increment(error)
        return {"phase": Phase.CHECK, "lost_answers": lost_answers}

    def _on_state_received(self, record: Any) -> dict[str, Any]:
        offset, received = self.held_by(record)
        if record.get(wire.URL) not in (None, self.url):
            raise ProtocolError(f"server answered the state of another upload: {record!r}")
        if record.get(wire.COMPLETED_AT):
            if offset != self.size:
                raise ProtocolError(f"server completed the upload at {offset} of {self.size} bytes")
            return {"record": record, "offset": offset, "phase": Phase.DONE}
        upload_id = record.get(wire.ID, self.upload_id)
        phase = self._sending(offset)
        return {"upload_id": upload_id, "offset": offset, "received": received, "phase": phase, "rejections": 0}

    def _sending(self, offset: int) -> Phase:
        return Phase.FINALIZE if offset == self.size else Phase.APPEND


_HANDLERS: Final[Mapping[Event, Callable[..., dict[str, Any]]]] = {
    Event.CHUNK_STORED: ChunkedUploadProtocol._on_chunk_stored,
    Event.CHUNK_REJECTED: ChunkedUploadProtocol._on_chunk_rejected,
    Event.OFFSET_MISMATCH: ChunkedUploadProtocol._on_offset_mismatch,
    Event.FINALIZED: ChunkedUploadProtocol._on_finalized,
    Event.ANSWER_LOST: ChunkedUploadProtocol._on_answer_lost,
    Event.STATE_RECEIVED: ChunkedUploadProtocol._on_state_received,
    Event.WHOLE_REFUSED: ChunkedUploadProtocol._on_whole_refused,
}

#: The event a 2xx answer is, by the phase whose request it answers.
_ANSWERS: Final[Mapping[Phase, Event]] = {
    Phase.CREATE: Event.CHUNK_STORED,
    Phase.APPEND: Event.CHUNK_STORED,
    Phase.WHOLE: Event.FINALIZED,
    Phase.FINALIZE: Event.FINALIZED,
    Phase.CHECK: Event.STATE_RECEIVED,
}

"""The chunked-upload conversation as a state machine, without I/O.

The machine says what to send next (``next_action()``) and is told what the
server answered (``chunk_stored``, ``offset_mismatch``, ``finalized``,
``answer_lost``, ``state_received``). It opens no socket and reads no file,
so every transition is tested directly. An event that does not fit the
current phase raises ``ProtocolError`` and leaves the machine unchanged.

Phases::

    CREATE --chunk_stored--> APPEND --chunk_stored (offset == size)--> FINALIZE --finalized--> DONE
      |  (empty file: SendWhole --finalized--> DONE)
      APPEND/FINALIZE --offset_mismatch--> APPEND/FINALIZE      (re-align on expected_offset)
      APPEND/FINALIZE --answer_lost--> CHECK --state_received--> APPEND/FINALIZE/DONE
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from engine.errors import ProtocolError
from engine.plan import Chunk, chunk_at

__all__ = [
    "Action",
    "CheckState",
    "ChunkedUploadProtocol",
    "Done",
    "Finalize",
    "Phase",
    "PutChunk",
    "SendWhole",
]


class Phase(enum.Enum):
    CREATE = "create"
    APPEND = "append"
    FINALIZE = "finalize"
    CHECK = "check"
    DONE = "done"


@dataclass(frozen=True)
class PutChunk:
    """PUT this chunk to ``url`` (``None``: the collection URL, which creates the upload)."""

    url: str | None
    chunk: Chunk


@dataclass(frozen=True)
class SendWhole:
    """POST the whole (empty) file with its MD5 to the collection URL."""


@dataclass(frozen=True)
class Finalize:
    """POST the whole file's MD5 to ``url``."""

    url: str


@dataclass(frozen=True)
class CheckState:
    """GET ``url`` to learn what the server holds."""

    url: str


@dataclass(frozen=True)
class Done:
    """The upload is complete; ``record`` is the server's final answer."""

    record: dict[str, Any]


Action = PutChunk | SendWhole | Finalize | CheckState | Done


def _offset_of(record: Any, size: int) -> int:
    offset = record.get("offset") if isinstance(record, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= size:
        raise ProtocolError(f"server answered an offset of {offset!r} for a {size}-byte file: {record!r}")
    return offset


class ChunkedUploadProtocol:
    """Where one upload stands, and what to send next."""

    def __init__(self, size: int, chunk_size: int, *, url: str | None = None, offset: int = 0) -> None:
        chunk_at(0, max(size, 1), chunk_size)  # validates chunk_size
        if size < 0 or not 0 <= offset <= size:
            raise ValueError(f"cannot start at byte {offset} of a {size}-byte file")
        self.size = size
        self.chunk_size = chunk_size
        self.url = url
        self.upload_id: Any = None
        self.offset = offset
        self.record: dict[str, Any] | None = None
        if url is None:
            self.phase = Phase.CREATE
        else:
            # Resuming a known upload: ask the server where it stands first.
            self.phase = Phase.CHECK

    def next_action(self) -> Action:
        if self.phase is Phase.CREATE:
            return SendWhole() if self.size == 0 else PutChunk(None, chunk_at(0, self.size, self.chunk_size))
        if self.phase is Phase.APPEND:
            return PutChunk(self.url, chunk_at(self.offset, self.size, self.chunk_size))
        if self.phase is Phase.FINALIZE:
            return Finalize(self.url)
        if self.phase is Phase.CHECK:
            return CheckState(self.url)
        return Done(self.record)

    def _expect(self, *phases: Phase, event: str) -> None:
        if self.phase not in phases:
            raise ProtocolError(f"{event} is not expected while the upload is in phase {self.phase.value}")

    def chunk_stored(self, record: dict[str, Any]) -> None:
        """The server accepted a chunk and answered with the upload's record."""
        self._expect(Phase.CREATE, Phase.APPEND, event="a stored chunk")
        offset = _offset_of(record, self.size)
        url = record.get("url") or self.url
        if not isinstance(url, str) or not url:
            raise ProtocolError(f"server answered the first chunk without the upload's url: {record!r}")
        self.url, self.offset = url, offset
        self.upload_id = record.get("id", self.upload_id)
        self.phase = Phase.FINALIZE if offset == self.size else Phase.APPEND

    def offset_mismatch(self, expected_offset: Any) -> None:
        """The server holds ``expected_offset`` bytes, not what we assumed: re-align.

        Said of a chunk, or of a finalize when the server lost bytes it had
        acknowledged (a restart after a power cut).
        """
        self._expect(Phase.APPEND, Phase.FINALIZE, event="an offset mismatch")
        self.offset = _offset_of({"offset": expected_offset}, self.size)
        self.phase = Phase.FINALIZE if self.offset == self.size else Phase.APPEND

    def finalized(self, record: dict[str, Any]) -> None:
        """The server completed the upload."""
        if not (self.phase is Phase.CREATE and self.size == 0):
            self._expect(Phase.FINALIZE, event="a finalize answer")
        if not isinstance(record, dict):
            raise ProtocolError(f"server answered finalize with {record!r}, not a record")
        self.upload_id = record.get("id", self.upload_id)
        self.record = record
        self.phase = Phase.DONE

    def answer_lost(self) -> None:
        """The last request went out but no answer came: ask the server where things stand."""
        self._expect(Phase.APPEND, Phase.FINALIZE, event="a lost answer")
        self.phase = Phase.CHECK

    def state_received(self, record: dict[str, Any]) -> None:
        """Answer to ``CheckState``: continue from what the server holds."""
        self._expect(Phase.CHECK, event="an upload state")
        offset = _offset_of(record, self.size)
        if record.get("url") not in (None, self.url):
            raise ProtocolError(f"server answered the state of another upload: {record!r}")
        if record.get("completed_at"):
            if offset != self.size:
                raise ProtocolError(f"server completed the upload at {offset} of {self.size} bytes")
            self.record, self.offset, self.phase = record, offset, Phase.DONE
            return
        self.upload_id = record.get("id", self.upload_id)
        self.offset = offset
        self.phase = Phase.FINALIZE if offset == self.size else Phase.APPEND

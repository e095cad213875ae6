"""The reference server's store interface: upload records, and what the server may ask of a store.

The app, the catalog and the runner use a store through ``UploadStore``.
Two stores implement it: ``store.Store`` keeps every upload's record and
bytes, ``discard.DiscardStore`` (the benchmark server's) keeps the records
and drops the bytes, through ``Store``'s public methods only. Nothing reaches
into another module's insides, so a store can be swapped. This module only describes: it stores nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    import engine

__all__ = ["COMPLETE", "UPLOADING", "ChunkWriter", "Owner", "RangeConflict", "Upload", "UploadStore"]

#: An upload's ``status``: open (taking chunks), or complete.
UPLOADING: Final = 1
COMPLETE: Final = 2


@dataclass(frozen=True, slots=True)
class Owner:
    """Who an upload belongs to: a user within a tenant (``""`` when none is named)."""

    user: str
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload's record, as stored when it was read."""

    id: int
    owner: Owner
    filename: str
    offset: int
    total: int
    status: int
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime
    checksum: str | None
    path: Path
    #: Ranges ``[start, end)`` stored past ``offset`` (chunks placed out of order), in order and apart.
    received: tuple[tuple[int, int], ...] = ()

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    def expired(self, now: datetime) -> bool:
        """Open past its expiry time (a complete upload never expires)."""
        return self.status == UPLOADING and now >= self.expires_at


class RangeConflict(Exception):
    """A chunk's bytes overlap bytes the upload holds, or (``busy``) is receiving, or too many are in flight."""

    def __init__(self, message: str, *, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


@runtime_checkable
class ChunkWriter(Protocol):
    """One chunk being stored at its upload's offset (``UploadStore.append``); a context manager.

    Leaving it without ``UploadStore.commit`` undoes the chunk.
    """

    upload: Upload
    #: Bytes of the part received, including any past the limit.
    received: int
    #: The upload's running MD5 with this chunk's bytes in it; None when the store hashes nothing.
    running: engine.Md5 | None
    #: The chunk's own digests, when asked for (``verify``) and settled.
    chunk_md5: bytes | None
    chunk_xxh3: bytes | None
    committed: bool

    @property
    def size(self) -> int:
        """Bytes of the chunk kept (at most the limit)."""
        ...

    def write(self, view: memoryview) -> None: ...

    def settle(self) -> None:
        """Wait until the digests are final."""
        ...

    def __enter__(self) -> ChunkWriter: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class UploadStore(Protocol):
    """Uploads' records (and, for a store that keeps them, their bytes); safe to share between threads."""

    def close(self) -> None: ...

    def reserve(self, owner: Owner, total: int, idempotency_key: str | None = None) -> Upload:
        """A new, still invisible upload for a create; ``commit`` publishes it."""
        ...

    def get(self, upload_id: int, owner: Owner) -> Upload | None: ...

    def find_key(self, owner: Owner, idempotency_key: str) -> Upload | None: ...

    def check_quota(self, owner: Owner, size: int) -> None: ...

    def stats(self) -> dict[str, int]: ...

    def creating(self, owner: Owner, idempotency_key: str | None) -> AbstractContextManager[None]: ...

    def locked(self, upload_id: int) -> AbstractContextManager[None]: ...

    def append(self, upload: Upload, limit: int | None, verify: Collection[str] = ()) -> ChunkWriter: ...

    def place(self, upload: Upload, start: int, size: int, verify: Collection[str], width: int) -> ChunkWriter:
        """Start writing ``size`` bytes at ``start``, past the offset if need be (hold ``locked`` to call it).

        The chunk is received without the lock; at most ``width`` of one
        upload at once. ``RangeConflict`` if its bytes overlap what the upload
        holds or another chunk is receiving, or ``width`` are in flight.
        """
        ...

    def commit_placed(self, chunk: ChunkWriter) -> Upload:
        """Accept a placed chunk (hold ``locked``): ``received`` gains it, the offset moves over what joins up."""
        ...

    def commit(self, chunk: ChunkWriter, filename: str | None = None, total: int | None = None) -> Upload: ...

    def discard(self, upload: Upload) -> None: ...

    def running_md5(self, upload: Upload) -> str | None:
        """Hex MD5 of the bytes stored so far; ``None`` when the store hashes nothing."""
        ...

    def complete(self, upload: Upload, checksum: str) -> Upload: ...

    def completed_path(self, upload_id: int) -> Path: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def cleanup_expired(self, now: datetime) -> list[Upload]: ...

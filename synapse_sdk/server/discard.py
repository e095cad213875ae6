"""A store that keeps records but throws the bytes away: the benchmark server's discard mode.

It checks what the protocol checks (tokens, ranges, offsets, totals, part
lengths) and counts the bytes, but writes no file and hashes nothing, so a
benchmark measures the client rather than the server's disk and MD5. It
verifies no checksum: never use it to store data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from synapse_sdk.server.storage import Upload
from synapse_sdk.server.store import Store, Usage

__all__ = ["DiscardStore"]


class _CountedChunk:
    """A ``storage.ChunkWriter`` that counts bytes and nothing else."""

    chunk_md5 = None
    chunk_xxh3 = None

    def __init__(
        self,
        upload: Upload,
        limit: int | None,
        usage: Usage,
        at: int | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.upload = upload
        self.at = upload.offset if at is None else at
        self._on_exit = on_exit
        self._usage = usage
        self.limit = limit
        self.received = 0
        self.running = None  # nothing is hashed
        self.committed = False

    def write(self, view: memoryview) -> None:
        self.received += len(view)

    def settle(self) -> None:
        pass  # nothing is hashed, so nothing is left to wait for

    @property
    def size(self) -> int:
        return self.received if self.limit is None else min(self.received, self.limit)

    def __enter__(self) -> _CountedChunk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._usage.received(self.received)
        if self._on_exit is not None:
            self._on_exit()


class DiscardStore(Store):
    """``Store`` whose uploads keep their records and lose their bytes (a ``storage.UploadStore``).

    It replaces what a store does with bytes (``append``, ``place``,
    ``running_md5``, ``complete``) and keeps the records through ``Store``'s
    public methods.
    """

    hashes_bytes = False

    def append(self, upload: Upload, limit: int | None, verify: Collection[str] = ()) -> _CountedChunk:
        return _CountedChunk(upload, limit, self.usage)

    def place(self, upload: Upload, start: int, size: int, verify: Collection[str], width: int) -> _CountedChunk:
        return _CountedChunk(upload, size, self.usage, at=start, on_exit=self.reserve_range(upload, start, size, width))

    def running_md5(self, upload: Upload) -> None:
        """Nothing was hashed: the finalize MD5 cannot be checked."""
        return None

    def complete(self, upload: Upload, checksum: str) -> Upload:
        """No bytes to make durable: only the record changes."""
        return self.record_complete(upload, checksum)

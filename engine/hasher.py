"""Digests of an upload's chunks, ahead of the sender, and the whole file's running MD5.

``ChunkHasher`` computes, on a worker thread, the whole file's running MD5
together with each chunk's own digests (the one its header carries, and its
xxh3 when the resume journal keeps it), while the chunks before are on the
wire. It reads the file through ``MappedFile`` windows (page cache, no
copies) and never touches the network.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any

import engine
from engine import Md5
from engine.errors import FileChangedError
from engine.hashing_service import HashingService
from engine.plan import Chunk, chunk_at
from engine.source import ChunkDigest, MappedFile

__all__ = ["ChunkHasher"]


class ChunkHasher:
    """Digests chunks ahead of the sender (one, or as many as go out at once), and tracks the whole file's MD5.

    The whole-file MD5 is kept as snapshots at chunk boundaries, so a server
    that re-aligns the upload to an earlier offset costs no re-hash from zero.
    A chunk asked for twice in a row (the server saw other bytes than we
    hashed, or never got them) is hashed again from disk; if its digests
    moved, the file changed under the upload: ``FileChangedError``.
    """

    def __init__(
        self,
        source: MappedFile,
        twin: ModuleType = engine,
        *,
        chunk_md5: bool = True,
        chunk_xxh3: bool = True,
        hashing: HashingService | None = None,
    ) -> None:
        if hashing is not None and hashing.twin.Md5 is not twin.Md5:
            raise ValueError("the hashing service must hash with the uploader's engine twin")
        self._source = source
        self._twin = twin
        # A batch's uploads share one service, which packs their MD5s into SIMD lanes.
        self._digest_windows = hashing.digest_windows if hashing is not None else twin.digest_windows
        self._chunk_md5 = chunk_md5
        self._chunk_xxh3 = chunk_xxh3
        self._lock = threading.Lock()
        self._states: dict[int, Md5] = {0: twin.Md5()}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chunk-hasher")
        # The chunks being hashed ahead, in file order.
        self._ahead: deque[tuple[Chunk, Future[ChunkDigest]]] = deque()
        self._last: ChunkDigest | None = None

    def digest(self, chunk: Chunk, *, chunk_size: int, ahead: int = 1) -> ChunkDigest:
        """The digests of ``chunk``; starts hashing the ``ahead`` chunks after it.

        Several ahead serve a sender that sends that many at once: each is
        ready when a connection frees, and not hashed only then.
        """
        if self._ahead and self._ahead[0][0] == chunk:
            digest = self._ahead.popleft()[1].result()
        else:
            self._drop_ahead()  # another chunk than foreseen: a re-send, or a jump over held bytes
            digest = self._executor.submit(self._hash, chunk).result()
        last, self._last = self._last, digest
        if last is not None and (last.start, last.end) == (digest.start, digest.end) and last != digest:
            raise FileChangedError(f"{self._source.path} changed while it was being uploaded")
        end = self._ahead[-1][0].end if self._ahead else chunk.end
        while len(self._ahead) < ahead and end < chunk.total:
            following = chunk_at(end, chunk.total, chunk_size)
            self._ahead.append((following, self._executor.submit(self._hash, following)))
            end = following.end
        return digest

    def md5_at(self, offset: int) -> Md5:
        """The whole file's MD5 state over bytes ``[0, offset)``."""
        with self._lock:
            known = max((k for k in self._states if k <= offset), default=0)
            # Snapshots below the server's offset are dropped; a fresh start needs none.
            running = self._states[known].copy() if known in self._states else self._twin.Md5()
        if known < offset:
            with self._source.reading():
                # Through the batch's hashing service, if any: its lanes take this stream too.
                self._digest_windows(self._source.windows(known, offset), running, False, False)
            with self._lock:
                self._states[offset] = running.copy()
        return running

    def seed(self, offset: int, running: Md5) -> None:
        """Adopt a saved MD5 state over ``[0, offset)`` (a resumed upload's)."""
        with self._lock:
            self._states[offset] = running

    def forget_below(self, offset: int) -> None:
        """Drop snapshots the server can no longer ask us to return to."""
        with self._lock:
            keep = max(k for k in self._states if k <= offset)
            for k in [k for k in self._states if k < keep]:
                del self._states[k]

    def _hash(self, chunk: Chunk) -> ChunkDigest:
        running = self.md5_at(chunk.start)
        with self._source.reading():
            windows = self._source.windows(chunk.start, chunk.end)
            md5, xxh3 = self._digest_windows(windows, running, self._chunk_md5, self._chunk_xxh3)
        digest = ChunkDigest(chunk.start, chunk.end, md5, xxh3)
        with self._lock:
            self._states[chunk.end] = running
        return digest

    def close(self) -> None:
        for _, future in self._ahead:
            future.cancel()
        self._executor.shutdown(wait=True)

    def _drop_ahead(self) -> None:
        while self._ahead:
            future = self._ahead.pop()[1]  # the last first: cancelled before the worker reaches it
            future.cancel()
            _wait_quietly(future)


def _wait_quietly(future: Future[Any]) -> None:
    # A discarded look-ahead may have failed; only the chunk we send matters.
    if not future.cancelled():
        future.exception()

"""Reading a regular file through bounded mmap windows.

Memory stays flat whatever the file size: at most one window per reader is
mapped at a time, and it is unmapped as soon as the consumer moves on. The
kernel is told to read the next window ahead while this one is consumed.
This module hashes and sends nothing itself.
"""

from __future__ import annotations

import base64
import contextlib
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import xxhash

from engine.errors import FileChangedError

__all__ = ["WINDOW", "ChunkDigest", "FileIdentity", "FileRange", "MappedFile"]

#: Bytes mapped at once. Small enough to keep RSS flat, large enough that
#: mapping costs nothing next to hashing and sending.
WINDOW = 8 * 1024 * 1024

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
#: Slices of a window copied out (``MappedFile.copies``): with their copy, they fit in L2.
COPY_SLICE = 256 * 1024


@dataclass(frozen=True)
class FileIdentity:
    """What tells two versions of a file apart without reading it."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class ChunkDigest:
    """Digests of bytes ``[start, end)``: their MD5 and xxh3-128, each None unless asked for."""

    start: int
    end: int
    md5: bytes | None
    xxh3_128: bytes | None

    @property
    def content_md5(self) -> str:
        """RFC 1864 ``Content-MD5`` header value."""
        assert self.md5 is not None
        return base64.b64encode(self.md5).decode("ascii")


class FileRange:
    """Bytes ``[offset, offset + count)`` of an open file, for ``socket.sendfile``.

    A multipart body yields these instead of mapped windows when the socket
    can take the bytes straight from the page cache (plain HTTP): no user-space
    copy and no mapping at all on the sending side.
    """

    __slots__ = ("count", "offset", "source")

    def __init__(self, source: MappedFile, offset: int, count: int) -> None:
        self.source, self.offset, self.count = source, offset, count

    def fileno(self) -> int:
        return self.source.fileno()

    def __len__(self) -> int:
        return self.count


class MappedFile:
    """A regular file opened for mapped, windowed reads."""

    def __init__(self, path: str | os.PathLike[str], *, window: int = WINDOW) -> None:
        if window <= 0 or window % mmap.ALLOCATIONGRANULARITY:
            raise ValueError(f"window must be a positive multiple of {mmap.ALLOCATIONGRANULARITY}")
        self.path = os.fspath(path)
        self.window = window
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"not a regular file: {self.path}")
        except BaseException:
            os.close(self._fd)
            raise
        self.identity = FileIdentity.of(st)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    @property
    def size(self) -> int:
        return self.identity.size

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_unchanged(self) -> None:
        """Raise ``FileChangedError`` if the file's size or mtime moved since it was opened."""
        now = FileIdentity.of(os.fstat(self._fd))
        if (now.size, now.mtime_ns) != (self.identity.size, self.identity.mtime_ns):
            raise FileChangedError(
                f"{self.path} changed while it was being uploaded "
                f"(size {self.identity.size} -> {now.size}); nothing was finalized"
            )

    def xxh3_128(self, start: int, end: int) -> bytes:
        """xxh3-128 of ``[start, end)``: the cheap check that bytes did not change.

        xxhash cannot survive its read of a mapping faulting (the file shrank),
        so each slice is copied by the engine's guarded read first.
        """
        digest = xxhash.xxh3_128()
        for piece in self.copies(start, end):
            digest.update(piece)
        return digest.digest()

    def copies(self, start: int, end: int) -> Iterator[memoryview]:
        """Bytes ``[start, end)`` copied out of the mapping a slice at a time, each valid until the next is taken.

        For readers that cannot survive a mapping's fault (xxhash, OpenSSL
        encrypting a TLS body): the engine's guarded copy turns a file that
        shrank into ``FileChangedError``, and what they see cannot change.
        """
        import engine  # the selected twin; engine imports nothing of this module

        staging = memoryview(bytearray(min(COPY_SLICE, end - start)))
        with self.reading():
            for window in self.windows(start, end):
                for pos in range(0, len(window), len(staging)):
                    piece = window[pos : pos + len(staging)]
                    engine.read_into(staging, piece)
                    yield staging[: len(piece)]

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Reads of this file's windows: a fault of the engine's guarded reads names the file and its new size."""
        try:
            yield
        except FileChangedError:
            self.check_unchanged()  # the file did shrink: this says which and how
            raise

    def ranges(self, start: int, end: int) -> Iterator[FileRange]:
        """Bytes ``[start, end)`` as window-sized ``FileRange`` pieces, for ``socket.sendfile``."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range {start}-{end} is outside the {self.size}-byte file {self.path}")
        for pos in range(start, end, self.window):
            self.check_unchanged()
            yield FileRange(self, pos, min(self.window, end - pos))

    def windows(self, start: int, end: int) -> Iterator[memoryview]:
        """Bytes ``[start, end)`` as successive memoryviews, each valid until the next is taken."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range {start}-{end} is outside the {self.size}-byte file {self.path}")
        pos = start
        while pos < end:
            # A mapping past the end of a file that shrank would fault with
            # SIGBUS when touched: check before every window.
            self.check_unchanged()
            base = pos - pos % mmap.ALLOCATIONGRANULARITY
            length = min(self.window, end - pos)
            try:
                mapped = mmap.mmap(
                    self._fd, pos - base + length, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ, offset=base
                )
            except ValueError:  # "mmap length is greater than file size": it shrank since the check
                self.check_unchanged()
                raise
            ahead = pos + length
            if ahead < end and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fd, ahead, min(self.window, end - ahead), os.POSIX_FADV_WILLNEED)
            view = memoryview(mapped)[pos - base : pos - base + length]
            try:
                yield view
            finally:
                view.release()
                # If the consumer kept a view, the mapping goes with its last reference.
                with contextlib.suppress(BufferError):
                    mapped.close()
            pos += length

"""Pure-Python twin of ``engine._native``: same names, same results.

Used where the extension is not built, or when ``SYNAPSE_ENGINE=python``.
hashlib and xxhash release the GIL for large buffers, so this twin still
overlaps hashing with sending; it only costs a second MD5 pass per chunk.
``md5_many`` hashes its streams one after another (no SIMD lanes here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import xxhash

NATIVE = False

#: What md5_many accepts: anything with the buffer protocol, C-contiguous (bytes, mmap windows, arrays).
Buffer = bytes | bytearray | memoryview

# Slices handed to xxh3 right after MD5 saw them, while still in cache.
SLICE = 1 << 20


class Md5:
    """hashlib's MD5 behind the twin's interface."""

    name = "md5"
    digest_size = 16
    block_size = 64

    def __init__(self, data: bytes | memoryview | None = None) -> None:
        self._hash = hashlib.md5()
        self.length = 0
        if data is not None:
            self.update(data)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.length += memoryview(data).nbytes

    def digest(self) -> bytes:
        return self._hash.digest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def copy(self) -> Md5:
        other = Md5.__new__(Md5)
        other._hash = self._hash.copy()
        other.length = self.length
        return other

    def restore(self, saved: Md5) -> None:
        """Go back to the state of ``saved`` (a ``copy()`` taken earlier), in place."""
        if not isinstance(saved, Md5):
            raise TypeError(f"restore takes an engine._pure.Md5, not {type(saved).__name__}")
        self._hash = saved._hash.copy()
        self.length = saved.length

    def state(self) -> None:
        """hashlib hides its state: nothing to save (a resume re-hashes the prefix)."""
        return None

    @staticmethod
    def from_state(state: bytes) -> Md5:
        raise ValueError("the pure-Python engine cannot restore a saved MD5 state")

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("the pure-Python MD5 state cannot be saved (hashlib hides it)")


def md5_simd() -> str:
    """No SIMD kernel here: ``"none"``."""
    return "none"


def md5_lanes() -> int:
    """One stream at a time."""
    return 1


def md5_many(states: Iterable[Md5], buffers: Iterable[Buffer]) -> None:
    """Update ``states[i]`` with ``buffers[i]`` for every i: hashlib, one stream after another.

    Checks its arguments as the compiled twin does, and all of them before
    any state changes.
    """
    hashes = list(states)
    seen: set[int] = set()
    for md5 in hashes:
        if not isinstance(md5, Md5):
            raise TypeError(f"md5_many takes engine._pure.Md5 states, not {type(md5).__name__}")
        if id(md5) in seen:
            raise ValueError("md5_many got the same Md5 twice: each stream needs its own state")
        seen.add(id(md5))
    datas = list(buffers)
    if len(datas) != len(hashes):
        raise ValueError(f"md5_many got {len(hashes)} states and {len(datas)} buffers: it needs one buffer per state")
    views = [memoryview(data) for data in datas]
    for view in views:
        if not view.c_contiguous:
            raise BufferError("md5_many needs C-contiguous buffers")
    for md5, view in zip(hashes, views, strict=True):
        md5.update(view)


def update_pair(running: Md5, chunk: Md5, data: bytes | memoryview) -> None:
    """Feed the same bytes to two MD5s."""
    running.update(data)
    chunk.update(data)


def read_into(buffer: bytearray | memoryview, data: bytes | memoryview) -> None:
    """Copy ``data`` to the start of ``buffer`` (unguarded here: a mapping that faults kills the process)."""
    view = memoryview(data).cast("B")
    if len(view) > len(buffer):
        raise ValueError(f"{len(view)} bytes do not fit a buffer of {len(buffer)}")
    memoryview(buffer)[: len(view)] = view


def digest_windows(
    windows: Iterable[memoryview], running: Md5, chunk_md5: bool = True, xxh3: bool = True
) -> tuple[bytes | None, bytes | None]:
    """Hash a chunk given as buffers: returns ``(md5 or None, xxh3_128 or None)``.

    ``running`` absorbs the same bytes; the chunk's own MD5 is skipped when
    ``chunk_md5`` is false, its xxh3-128 when ``xxh3`` is false.
    """
    chunk = Md5() if chunk_md5 else None
    xxh = xxhash.xxh3_128() if xxh3 else None
    for window in windows:
        view = memoryview(window).cast("B")
        for start in range(0, len(view), SLICE):
            piece = view[start : start + SLICE]
            if chunk is not None:
                update_pair(running, chunk, piece)
            else:
                running.update(piece)
            if xxh is not None:
                xxh.update(piece)
    return (chunk.digest() if chunk is not None else None), (xxh.digest() if xxh is not None else None)

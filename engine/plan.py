"""Chunk plans: which byte ranges an upload sends. Pure arithmetic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from engine.wire import format_content_range

__all__ = ["DEFAULT_CHUNK_SIZE", "Chunk", "chunk_at", "join_ranges", "plan_chunks"]

#: The published SDK's chunk size, and the default here.
DEFAULT_CHUNK_SIZE = 50 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """Bytes ``[start, end)`` of a file of ``total`` bytes."""

    start: int
    end: int
    total: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header value (its end is inclusive)."""
        return format_content_range(self.start, self.end, self.total)


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of bytes, not {chunk_size!r}")


def chunk_at(start: int, total: int, chunk_size: int) -> Chunk:
    """The chunk that begins at ``start``: ``chunk_size`` bytes, fewer at the end of the file."""
    _check_chunk_size(chunk_size)
    if not 0 <= start < total:
        raise ValueError(f"a chunk cannot start at byte {start} of a {total}-byte file")
    return Chunk(start, min(start + chunk_size, total), total)


def plan_chunks(total: int, chunk_size: int, start: int = 0) -> list[Chunk]:
    """Every chunk from ``start`` to the end of a ``total``-byte file (none for an empty file)."""
    _check_chunk_size(chunk_size)
    if total < 0 or not 0 <= start <= total:
        raise ValueError(f"cannot plan from byte {start} of a {total}-byte file")
    return [Chunk(s, min(s + chunk_size, total), total) for s in range(start, total, chunk_size)]


def join_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` in order, those that overlap or touch joined into one."""
    joined: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined

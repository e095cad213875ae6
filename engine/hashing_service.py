"""A hashing service: the MD5 streams of many uploads, hashed side by side in the SIMD lanes of ``md5_many``.

One file's MD5 is sequential, but the MD5s of the files a batch has in flight
are independent streams, and ``md5_many`` runs up to 16 of them at once
(AVX-512, or AVX2 in two groups of 8). Each upload's hashing thread hands
the service its work — a window of bytes and the MD5 states that must absorb
it (the running file MD5, and the chunk's own for ``Content-MD5``) — and
blocks until it is done. The service packs whatever work is waiting into one
``md5_many`` call per slice, with the GIL released.

There is no service thread: the first waiting caller combines (it runs the
rounds for everyone, its own work included) until its own work is done, then
hands the role on ("flat combining").

Combining pays only when rounds fill the lanes: a round costs the same
however few lanes it fills, and runs on one core. So while the callers
inside the service hold at most half as many streams as there are lanes,
each hashes its own work in its own thread, with the scalar kernels
``md5_many`` picks for one or two streams, on as many cores as there are
callers: one file is not slower than with ``digest_windows``, and two or
four files in flight are not held to one core (measured, 8 x 256 MiB to the
discard server on 2 cores of an AVX-512 AMD EPYC: 2 files at once 600 MB/s
combined, 1 012 each in its own thread; 4 files 879 against 1 017; 8 files
1 567 combined against 1 018).

A window that faults (a file shrinking under its mapping) fails only the
work it belongs to: the round is undone and each piece of work retried
alone. This module sends nothing and knows nothing of uploads.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import xxhash

from engine import twin as selected_twin
from engine.errors import FileChangedError

__all__ = ["SLICE", "HashingService"]

#: Bytes of one stream per round: small enough that new work joins the lanes soon, big enough to amortise a call.
SLICE = 1 << 20

Buffer = bytes | bytearray | memoryview


@dataclass(eq=False)
class _Work:
    states: Sequence[selected_twin.Md5]
    data: memoryview
    position: int = 0
    error: BaseException | None = None
    done: bool = False

    def piece(self) -> memoryview:
        return self.data[self.position : self.position + SLICE]


@dataclass(eq=False)
class _Round:
    works: list[_Work] = field(default_factory=list)
    streams: int = 0


class HashingService:
    """Hashes many uploads' MD5 streams at once; share one between the uploads of a batch.

    ``update(states, data)`` feeds ``data`` to every state in ``states``;
    ``digest_windows`` is ``engine.digest_windows`` on the service. Both
    block until done and may be called from any number of threads. ``twin``
    is the engine twin whose ``Md5``/``md5_many`` to use (default: the one
    ``engine`` selected). ``combine_above``: the streams in the service
    above which work is combined (default: half the SIMD lanes; 0 always
    combines).
    """

    def __init__(self, twin: ModuleType | None = None, *, combine_above: int | None = None) -> None:
        self.twin = twin if twin is not None else selected_twin
        self.lanes: int = self.twin.md5_lanes()
        if combine_above is None:
            # Without SIMD lanes (the scalar kernel, the pure twin) a round gains nothing: never combine.
            combine_above = self.lanes // 2 if self.lanes > 2 else sys.maxsize
        #: Above this many streams held by the callers inside the service, their work is combined into
        #: rounds; at or below it, each caller hashes its own.
        self.combine_above = combine_above
        self._waiting: deque[_Work] = deque()
        self._changed = threading.Condition()
        self._combining = False
        self._streams_inside = 0
        #: Rounds run and streams hashed in them, to see how full the lanes were (``streams / rounds``).
        self.rounds = 0
        self.streams = 0
        #: Streams of slices hashed by their callers alone, the service holding too few to combine.
        self.alone = 0

    def update(self, states: Sequence[selected_twin.Md5], data: Buffer) -> None:
        """Feed ``data`` to each of ``states`` (distinct states, none in use elsewhere meanwhile)."""
        view = memoryview(data).cast("B")
        for state in states:
            if not isinstance(state, self.twin.Md5):
                raise TypeError(f"the hashing service takes this engine's Md5 states, not {type(state).__name__}")
        if not states or not len(view):
            return
        with self._changed:
            self._streams_inside += len(states)
        try:
            position = 0
            while position < len(view):
                # Decided slice by slice: a caller hashing alone joins the rounds as soon as others arrive.
                with self._changed:
                    alone = self._streams_inside <= self.combine_above
                    if alone:
                        self.alone += len(states)
                if not alone:
                    self._combined(_Work(states, view[position:]))
                    return
                piece = view[position : position + SLICE]
                self.twin.md5_many(states, [piece] * len(states))
                position += len(piece)
        finally:
            with self._changed:
                self._streams_inside -= len(states)

    def _combined(self, work: _Work) -> None:
        """Queue ``work`` for a round; combine the rounds while no one else does; return when it is done."""
        with self._changed:
            self._waiting.append(work)
            self._changed.notify_all()
            while not work.done and self._combining:
                self._changed.wait()
            if not work.done:
                self._combining = True
        if not work.done:
            self._combine(work)
        if work.error is not None:
            raise work.error

    def digest_windows(
        self, windows: Iterable[Buffer], running: selected_twin.Md5, chunk_md5: bool = True, xxh3: bool = True
    ) -> tuple[bytes | None, bytes | None]:
        """As ``engine.digest_windows``: ``running`` absorbs the windows; returns (chunk MD5, chunk xxh3-128)."""
        chunk = self.twin.Md5() if chunk_md5 else None
        states = [running] if chunk is None else [running, chunk]
        xxh = xxhash.xxh3_128() if xxh3 else None
        staging = memoryview(bytearray(SLICE)) if xxh3 else None
        for window in windows:
            view = memoryview(window).cast("B")
            if staging is None:
                self.update(states, view)  # the whole window at once: its slices stay in the lanes, round after round
                continue
            for start in range(0, len(view), SLICE):
                piece = view[start : start + SLICE]
                self.update(states, piece)
                if xxh is not None and staging is not None:
                    # xxhash cannot guard its reads of a mapping: it hashes a copy the engine took, guarded.
                    self.twin.read_into(staging, piece)
                    xxh.update(staging[: len(piece)])
        return (chunk.digest() if chunk is not None else None), (xxh.digest() if xxh is not None else None)

    # -- combining

    def _combine(self, mine: _Work) -> None:
        try:
            while not mine.done:
                with self._changed:
                    batch = self._next_round()
                self._run(batch)
                with self._changed:
                    for work in batch.works:
                        if not work.done:
                            self._waiting.append(work)  # to the back: every upload gets its turn
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._combining = False
                self._changed.notify_all()  # a waiter whose work is not done takes over

    def _next_round(self) -> _Round:
        """Waiting work, oldest first, as many streams as the lanes hold (always at least one piece of work)."""
        batch = _Round()
        while self._waiting:
            width = len(self._waiting[0].states)
            if batch.works and batch.streams + width > self.lanes:
                break
            batch.works.append(self._waiting.popleft())
            batch.streams += width
        return batch

    def _run(self, batch: _Round) -> None:
        pieces = [(work, work.piece()) for work in batch.works]
        states = [state for work in batch.works for state in work.states]
        try:
            saved = [state.copy() for state in states]
            self.twin.md5_many(states, [piece for work, piece in pieces for _ in work.states])
        except FileChangedError:
            # Some window faulted, but which? Undo the round and give each its own.
            for state, copy in zip(states, saved, strict=True):
                state.restore(copy)
            for work, piece in pieces:
                try:
                    self.twin.md5_many(work.states, [piece] * len(work.states))
                except FileChangedError as error:
                    work.error, work.done = error, True
                else:
                    self._advance(work, len(piece))
        except BaseException as error:
            for work, _ in pieces:
                work.error, work.done = error, True
            raise
        else:
            for work, piece in pieces:
                self._advance(work, len(piece))
        self.rounds += 1
        self.streams += len(states)

    @staticmethod
    def _advance(work: _Work, size: int) -> None:
        work.position += size
        work.done = work.position >= len(work.data)

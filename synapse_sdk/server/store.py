"""Upload records in SQLite and upload bytes on disk, for the reference server.

``data_dir/uploads.sqlite3`` holds one row per upload (and, in tables of their
own, the records of ``catalog``, through ``transaction``); ``data_dir/uploads/<id>.part``
holds an upload's bytes while it is open, ``<id>.done`` once it is complete.
Files are named by id only: a client's filename lives in SQLite and never
reaches the file system. Each open upload's running whole-file MD5 is kept in
memory so finalizing never re-reads the file (after a restart it is rebuilt
once from the file). Bytes per user are counted as they are written, for the
storage quota; ``data_dir/lock`` keeps a second process off the same data.

This module knows nothing of HTTP: it takes and gives plain values and the
application decides the answers. It must never hold a chunk in memory: bytes
go from the caller's buffers straight to the file, and the hashers read them
back from the page cache a block at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Final

import xxhash

import engine
from engine.durable import fsync_dir
from engine.plan import join_ranges
from synapse_sdk.server.storage import COMPLETE, UPLOADING, Owner, RangeConflict, Upload

__all__ = [
    "COMPLETE",
    "UPLOADING",
    "Chunk",
    "DataDirInUse",
    "Owner",
    "QuotaExceeded",
    "Store",
    "Upload",
    "Usage",
]

# A create whose first chunk is still streaming: the row reserves the id but
# stays invisible until the chunk is accepted, so a failed create leaves nothing.
_CREATING: Final = 0

_READ_BLOCK: Final = 1 << 20
#: How long a chunk placed out of order waits for an overlapping one (or a free slot) before a 429.
PLACING_WAIT: Final = 60.0
#: How long, at most, a chunk received out of order waits for the chunks before it to land, to hash its
#: MD5 and the running one in one pass: its answer waits too, so well under a client's read timeout (15 s).
PAIRING_WAIT: Final = 2.0
# Stored bytes are read back for hashing in blocks this size: they stay in the L2 cache.
_HASH_BLOCK: Final = 1 << 20
# Hashing is handed to a pool thread once this much is waiting: fewer, longer
# tasks, so the two threads rarely wait on each other (or on the GIL).
_HASH_BATCH: Final = 2 << 20

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    offset INTEGER NOT NULL,
    total INTEGER NOT NULL,
    status INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    checksum TEXT,
    idempotency_key TEXT,
    received TEXT
)
"""
# NULLs are distinct in a SQLite unique index: uploads without a key never clash.
_KEY_INDEX: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS uploads_idempotency_key ON uploads (user, tenant, idempotency_key)"
)
_COLUMNS: Final = "id, user, tenant, filename, offset, total, status, created_at, completed_at, checksum, received"
# sqlite3.SQLITE_FULL, which Python names only from 3.11 on.
_SQLITE_FULL: Final = 13


class QuotaExceeded(OSError):
    """A chunk would take its user past the storage quota: ``EDQUOT``, like a file system's quota."""

    def __init__(self) -> None:
        super().__init__(errno.EDQUOT, "storage quota exceeded")


class DataDirInUse(OSError):
    """Another process (a running server?) holds the data directory."""


@dataclass(slots=True)
class _Live:
    # Serializes requests on one upload and holds its running MD5 between them.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The running MD5 covers bytes [0, md5_at); it catches up with the offset
    # lazily, since chunks placed out of order join the prefix all at once.
    md5: engine.Md5 | None = None
    md5_at: int = 0
    hashing: threading.Lock = field(default_factory=threading.Lock)
    # Chunks placed out of order being received: start -> end; ``changed`` tells when one ends.
    placing: dict[int, int] = field(default_factory=dict)
    changed: threading.Condition = field(init=False)
    # Tells the placed chunks waiting for the running MD5 that it (or what is held) moved.
    # Its own lock: taken after ``lock`` where both are, never while holding ``hashing``.
    progress: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def moved(self) -> None:
        with self.progress:
            self.progress.notify_all()


@dataclass(slots=True)
class _KeyLock:
    # Serializes the creates that carry one owner's idempotency key.
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # requests holding it or waiting for it


class Chunk:
    """One chunk being written at an upload's offset (or placed past it), hashed as it is stored.

    The request thread writes each piece as it arrives; a pool thread follows
    behind, reading the stored bytes back from the page cache and hashing
    them, so receiving and hashing (the server's two big costs) overlap, and
    what is verified is exactly what was stored. ``settle`` waits for the
    hashing to catch up: the digests are final only after it.

    A chunk placed past the offset (``at``) with ``running_from`` holds its
    hashing back until the upload's running MD5 reaches its first byte
    (``running_from(wait)`` gives a copy then, else None), and then hashes
    the running MD5 and its own in one pass (``update_pair``): chunks of one
    upload received side by side are each read and hashed once, in order,
    instead of once for the chunk and again for the running MD5. Where the
    bytes before it are not coming, or have not landed ``PAIRING_WAIT``
    seconds after its own, it hashes its own digests alone.

    Bytes past ``limit`` are counted in ``received`` but neither written nor
    hashed, so an oversized part cannot grow the file. Leaving the ``with``
    block without ``Store.commit`` (an error, a bad checksum) truncates the
    file back to where the chunk started and gives its bytes back to the
    user's quota; the upload's running MD5 is only replaced on commit, so it
    needs no restoring. A chunk placed past the offset (``at``) hashes only
    its own digests (unless it joins the running MD5, above), and is not
    truncated away if refused when bytes beyond it are held (``truncate``):
    its stray bytes lie in a gap, overwritten by the chunk that fills it.
    """

    def __init__(
        self,
        upload: Upload,
        running: engine.Md5 | None,
        limit: int | None,
        verify: Collection[str],
        fresh: bool,
        pool: Executor,
        usage: Usage,
        *,
        at: int | None = None,
        truncate: bool = True,
        on_exit: Callable[[], None] | None = None,
        running_from: Callable[[float], engine.Md5 | None] | None = None,
    ) -> None:
        self.upload = upload
        #: Where the chunk's first byte goes in the file.
        self.at = upload.offset if at is None else at
        self._truncate = truncate
        self._on_exit = on_exit
        self.limit = limit
        self.received = 0
        self._claimed = 0  # bytes counted against the quota, all written
        # Hashed on a copy: the upload's own MD5 stays as it was until commit.
        self.running = None if running is None else running.copy()
        self._running_from = running_from  # set while hashing waits for the running MD5
        # The chunk's own digests, for the checks its request asked for.
        self.chunk_md5 = engine.Md5() if "md5" in verify else None
        self.chunk_xxh3 = xxhash.xxh3_128() if "xxh3" in verify else None
        self.committed = False
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        self._fd = os.open(upload.path, flags, 0o644)
        self._pool = pool
        self._usage = usage
        # Hashing follows writing: bytes [0, _written) of the chunk are stored,
        # [0, _hashed) hashed; one pool task at a time catches up.
        self._progress = threading.Lock()
        self._written = self._hashed = 0
        self._catching_up = False
        self._hashing: Future[None] | None = None
        self._buffer: bytearray | None = None  # the read-back block, reused by every catch-up

    def write(self, view: memoryview) -> None:
        """Append ``view`` (the part's next bytes) to the file; hashing follows."""
        start = self.received
        self.received += len(view)
        if self.limit is not None and self.received > self.limit:
            view = view[: max(0, self.limit - start)]
        if not view:
            return
        # Counted before it is written, so concurrent chunks cannot jointly
        # cross the quota; a refused chunk is truncated away on exit.
        self._usage.claim(self.upload.owner.user, len(view))
        self._claimed += len(view)
        _write_at(self._fd, view, self.at + start)
        with self._progress:
            self._written = start + len(view)
            due = not self._catching_up and self._written - self._hashed >= _HASH_BATCH
            if due and self._may_hash(wait=0.0):
                self._catching_up = True
                self._hashing = self._pool.submit(self._catch_up)

    def settle(self) -> None:
        """Hash what is left and wait until every stored byte is hashed.

        Called by the thread that writes, after its last write; raises what
        hashing raised.
        """
        self._wait_for_hashing()
        self._may_hash(wait=PAIRING_WAIT)  # hashing begins now, paired or not
        with self._progress:
            self._catching_up = True
        self._catch_up()

    def _may_hash(self, wait: float) -> bool:
        """Whether hashing may begin; a chunk that waits to join the running MD5 asks for it first."""
        if self._running_from is None:
            return True
        running = self._running_from(wait)
        if running is None and wait == 0.0:
            return False  # not yet: the bytes wait in the page cache
        self.running, self._running_from = running, None
        return True

    def _wait_for_hashing(self) -> None:
        if self._hashing is not None:
            self._hashing.result()

    def _catch_up(self) -> None:
        # A task that failed stays failed (its digests are partial): settle raises its error.
        if self._buffer is None:
            self._buffer = bytearray(_HASH_BLOCK)
        buffer = self._buffer
        while True:
            with self._progress:
                start, end = self._hashed, self._written
                if start == end:
                    self._catching_up = False
                    return
            for position in range(start, end, _HASH_BLOCK):
                count = min(_HASH_BLOCK, end - position)
                view = memoryview(buffer)[:count]
                if os.preadv(self._fd, [view], self.at + position) != count:
                    raise OSError(errno.EIO, f"short read of the chunk just written to {self.upload.path}")
                self._hash(view)
            with self._progress:
                self._hashed = end

    def _hash(self, view: memoryview) -> None:
        if self.running is None:
            if self.chunk_md5 is not None:
                self.chunk_md5.update(view)
        elif self.chunk_md5 is not None:
            engine.update_pair(self.running, self.chunk_md5, view)
        else:
            self.running.update(view)
        if self.chunk_xxh3 is not None:
            self.chunk_xxh3.update(view)

    @property
    def size(self) -> int:
        """Bytes of the chunk that reached the file."""
        return self.received if self.limit is None else min(self.received, self.limit)

    def __enter__(self) -> Chunk:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._usage.received(self.received)
        try:
            # The hashing task reads through the descriptor: it must be done before it closes.
            with contextlib.suppress(Exception):
                self._wait_for_hashing()
            if not self.committed:
                self._usage.release(self.upload.owner.user, self._claimed)
                if self._truncate:
                    os.ftruncate(self._fd, self.at)
        finally:
            os.close(self._fd)
            if self._on_exit is not None:
                self._on_exit()


class Usage:
    """Bytes on disk per user (open and complete uploads, chunks in flight) and the counters of ``stats``.

    Bytes are counted only when there is a quota to hold them to. Every call
    is O(1) under one lock: it runs once per block of a chunk.
    """

    def __init__(self, quota: int | None, used: dict[str, int]) -> None:
        self.quota = quota
        self._used = used
        self._lock = threading.Lock()
        self.bytes_received = 0
        self.chunks_stored = 0
        self.uploads_created = 0

    def check(self, user: str, size: int) -> None:
        """Refuse a chunk of ``size`` announced bytes up front if it cannot fit."""
        if self.quota is not None and self._used.get(user, 0) + size > self.quota:
            raise QuotaExceeded

    def claim(self, user: str, size: int) -> None:
        if self.quota is None:
            return
        with self._lock:
            used = self._used.get(user, 0) + size
            if used > self.quota:
                raise QuotaExceeded
            self._used[user] = used

    def release(self, user: str, size: int) -> None:
        if self.quota is None:
            return
        with self._lock:
            self._used[user] = self._used.get(user, 0) - size

    def received(self, size: int) -> None:
        with self._lock:
            self.bytes_received += size

    def stored(self, created: bool) -> None:
        with self._lock:
            self.chunks_stored += 1
            self.uploads_created += created

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "bytes_received": self.bytes_received,
                "chunks_stored": self.chunks_stored,
                "uploads_created": self.uploads_created,
            }


class Store:
    """Records and files of all uploads under ``data_dir``; safe to share between threads.

    Implements ``storage.UploadStore``; ``record_complete`` and ``usage``
    are public for stores built on this one (``DiscardStore``).

    ``quota`` caps the bytes of each user's uploads, open and complete (None:
    no cap). One process at a time may hold a data directory.
    """

    #: Whether the store hashes what it stores (a finalize's MD5 is checked against it).
    hashes_bytes = True

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        expire_after: timedelta = timedelta(days=1),
        io_threads: int = 16,
        quota: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.uploads_dir = self.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.expire_after = expire_after
        # Two processes on one directory would truncate each other's chunks
        # in _reconcile; the kernel drops the lock when its holder dies, even by SIGKILL.
        self._lock_fd = os.open(self.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            message = f"{self.data_dir} is in use by another process (a running server?)"
            raise DataDirInUse(errno.EBUSY, message) from None
        # One connection behind a lock: every statement is tiny next to the
        # chunk I/O around it, so per-thread connections would buy nothing.
        self._db_lock = threading.Lock()
        self._live: dict[int, _Live] = {}
        self._live_lock = threading.Lock()
        self._key_locks: dict[tuple[Owner, str], _KeyLock] = {}
        # A failed open releases what it took, the lock above all: held on, it
        # would keep this very process out of the directory.
        with ExitStack() as undo:
            undo.callback(os.close, self._lock_fd)
            self._db = sqlite3.connect(self.data_dir / "uploads.sqlite3", isolation_level=None, check_same_thread=False)
            undo.callback(self._db.close)
            used = self._prepare()
            undo.pop_all()  # opened: close() releases them from now on
        #: Bytes per user and the ``stats`` counters; a store's chunks report to it.
        self.usage = Usage(quota, used)
        self._pool = ThreadPoolExecutor(io_threads, thread_name_prefix="synapse-store-write")

    def close(self) -> None:
        self._pool.shutdown()
        with self._db_lock:
            self._db.close()
        os.close(self._lock_fd)

    def reserve(self, owner: Owner, total: int, idempotency_key: str | None = None) -> Upload:
        """A new, still invisible upload for a create; ``commit`` publishes it.

        With ``idempotency_key``, hold ``creating`` for it and check ``find_key`` first.
        """
        now = _now()
        with self._database() as db:
            cursor = db.execute(
                "INSERT INTO uploads (user, tenant, filename, offset, total, status, created_at, idempotency_key)"
                " VALUES (?, ?, '', 0, ?, ?, ?, ?)",
                (owner.user, owner.tenant, total, _CREATING, now.isoformat(), idempotency_key),
            )
            upload_id = cursor.lastrowid
        assert upload_id is not None
        row = (upload_id, owner.user, owner.tenant, "", 0, total, _CREATING, now.isoformat(), None, None, None)
        return self._upload(row)

    def get(self, upload_id: int, owner: Owner) -> Upload | None:
        """The upload if it exists and belongs to ``owner``, else None."""
        with self._database() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM uploads WHERE id = ? AND user = ? AND tenant = ? AND status > ?",
                (upload_id, owner.user, owner.tenant, _CREATING),
            ).fetchone()
        return None if row is None else self._upload(row)

    def find_key(self, owner: Owner, idempotency_key: str) -> Upload | None:
        """The owner's published upload created with ``idempotency_key``, else None."""
        with self._database() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM uploads WHERE user = ? AND tenant = ? AND idempotency_key = ? AND status > ?",
                (owner.user, owner.tenant, idempotency_key, _CREATING),
            ).fetchone()
        return None if row is None else self._upload(row)

    def check_quota(self, owner: Owner, size: int) -> None:
        """Raise ``QuotaExceeded`` if ``size`` more bytes would take the owner's user past the quota."""
        self.usage.check(owner.user, size)

    def stats(self) -> dict[str, int]:
        """Since this store opened: file-part bytes received, chunks stored, uploads created."""
        return self.usage.snapshot()

    @contextmanager
    def creating(self, owner: Owner, idempotency_key: str | None) -> Iterator[None]:
        """Hold the lock of the owner's ``idempotency_key`` (None: no lock): its creates run one at a time.

        A repeated create thus waits for the first one to end (published, or
        discarded because its client gave up on it) instead of racing it.
        """
        if idempotency_key is None:
            yield
            return
        with self._live_lock:
            entry = self._key_locks.setdefault((owner, idempotency_key), _KeyLock())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._live_lock:
                entry.users -= 1
                if not entry.users:  # keys are one-off: keep no lock nobody needs
                    del self._key_locks[(owner, idempotency_key)]

    @contextmanager
    def locked(self, upload_id: int) -> Iterator[None]:
        """Hold the upload's lock: its chunks and finalize run one at a time (placed chunks only start so).

        Callers re-read the record inside, since another request may have
        changed it while this one waited.
        """
        with self._live_of(upload_id).lock:
            yield

    def _live_of(self, upload_id: int) -> _Live:
        with self._live_lock:
            return self._live.setdefault(upload_id, _Live())

    def append(self, upload: Upload, limit: int | None, verify: Collection[str] = ()) -> Chunk:
        """Start writing a chunk at ``upload.offset`` (hold ``locked`` for a visible upload).

        ``verify`` names the chunk digests to compute as it passes: ``"md5"``,
        ``"xxh3"``. ``RangeConflict`` if its bytes (``limit`` of them) reach
        into bytes placed out of order, held or being received.
        """
        fresh = upload.status == _CREATING
        running = engine.Md5() if fresh else self._running(upload)
        live = self._live_of(upload.id)
        if limit is not None:
            self._check_free(upload, upload.offset, upload.offset + limit)
            if _overlaps(live.placing.items(), upload.offset, upload.offset + limit):
                raise RangeConflict(f"bytes from {upload.offset} on are being received by another request", busy=True)
        beyond = bool(upload.received or live.placing)
        return Chunk(upload, running, limit, verify, fresh, self._pool, self.usage, truncate=not beyond)

    def place(self, upload: Upload, start: int, size: int, verify: Collection[str], width: int) -> Chunk:
        """Start writing ``size`` bytes at ``start``, past the offset if need be (hold ``locked`` to call it).

        The chunk is then received without the lock, beside up to ``width - 1``
        others of the upload. Once the running MD5 reaches ``start``, the
        chunk hashes it on with its own digests (``Chunk``); a chunk past a
        gap computes only its own, and the running MD5 reads it back later.
        """
        done = self.reserve_range(upload, start, size, width)

        def running_from(wait: float) -> engine.Md5 | None:
            return self._running_at(upload.id, start, wait)

        return Chunk(
            upload,
            None,
            size,
            verify,
            False,
            self._pool,
            self.usage,
            at=start,
            truncate=False,
            on_exit=done,
            running_from=running_from,
        )

    def reserve_range(self, upload: Upload, start: int, size: int, width: int) -> Callable[[], None]:
        """Mark ``size`` bytes at ``start`` as being received (hold ``locked``); returns what unmarks them.

        While ``width`` chunks are being received, or one of them overlaps
        these bytes (a resend whose first try the server is still reading),
        it waits for them to end, as a sequential chunk waits for the lock;
        ``RangeConflict`` if they overlap what the upload holds, or
        (``busy``) if the wait lasts ``PLACING_WAIT`` seconds.
        """
        live = self._live_of(upload.id)
        end = start + size

        def free() -> bool:
            return len(live.placing) < width and not _overlaps(live.placing.items(), start, end)

        if not live.changed.wait_for(free, timeout=PLACING_WAIT):
            raise RangeConflict(
                f"bytes {start}-{end - 1} of this upload stayed busy for {PLACING_WAIT:.0f} s", busy=True
            )
        upload = self._reload(upload.id)  # chunks that ended meanwhile may hold these bytes now
        self._check_free(upload, start, end)
        live.placing[start] = end

        def release() -> None:
            with live.lock:
                live.placing.pop(start, None)
                live.changed.notify_all()
                live.moved()  # a chunk waiting on these bytes no longer can, if they were not stored

        return release

    def commit_placed(self, chunk: Chunk) -> Upload:
        """Accept a placed chunk (hold ``locked``): ``received`` gains it, the offset moves over what joins up."""
        upload = self._reload(chunk.upload.id)
        ranges = sorted([*upload.received, (chunk.at, chunk.at + chunk.size)])
        offset, received = _join(upload.offset, ranges)
        self._save_offset(upload, offset, received)
        chunk.committed = True
        self.usage.stored(created=False)
        live = self._live_of(upload.id)
        with live.hashing:
            if chunk.running is not None and live.md5_at == chunk.at:  # hashed on from the chunk's start
                live.md5, live.md5_at = chunk.running, chunk.at + chunk.size
            lagging = live.md5_at < offset
        if self.hashes_bytes and lagging:
            # The running MD5 follows the prefix in the background, so a finalize finds it near done.
            self._pool.submit(self._follow_prefix, upload.id)
        live.moved()
        return self._reload(upload.id)

    def _running_at(self, upload_id: int, at: int, wait: float) -> engine.Md5 | None:
        """A copy of the running MD5 if it covers exactly ``[0, at)``, else None.

        With ``wait`` (seconds), waits for it as long as every byte before
        ``at`` is held or being received by another request (``Chunk``'s
        paired hashing); hashes what is held before ``at`` itself rather than
        wait for the pool to.
        """
        live = self._live_of(upload_id)
        deadline = time.monotonic() + wait
        while True:
            with live.progress:
                # Never blocks on ``hashing``: whoever holds it tells ``progress`` when done.
                running = _running_if_at(live, at)
                if running is not None or wait <= 0.0:
                    return running
                upload = self._reload(upload_id)
                if upload.offset > at:  # not while a chunk is placed at ``at``; never loop on it
                    return None
                if upload.offset < at:
                    # Copied in one C call: the upload's lock cannot be taken here (it is taken before ``progress``).
                    placing = live.placing.copy()
                    coming = join_ranges([(0, upload.offset), *upload.received, *placing.items()])[0][1] >= at
                    remaining = deadline - time.monotonic()
                    if not coming or remaining <= 0.0 or not live.progress.wait(remaining):
                        return None
                    continue
            self._running(upload)  # every byte before ``at`` is held: bring the running MD5 over them

    def _follow_prefix(self, upload_id: int) -> None:
        """Bring an open upload's running MD5 up to its offset (a pool task; the upload may be gone by then)."""
        with self._live_lock:
            if upload_id not in self._live:  # completed or removed: nothing left to follow
                return
        with self._database() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM uploads WHERE id = ? AND status = ?", (upload_id, UPLOADING))
            found = row.fetchone()
        if found is not None:
            with contextlib.suppress(OSError):  # completed (renamed) or removed meanwhile
                self._running(self._upload(found))

    def _check_free(self, upload: Upload, start: int, end: int) -> None:
        if start < upload.offset or _overlaps(upload.received, start, end):
            raise RangeConflict(f"bytes {start}-{end - 1} overlap bytes the upload holds")

    def commit(self, chunk: Chunk, filename: str | None = None, total: int | None = None) -> Upload:
        """Accept the chunk: advance the offset and keep its running MD5.

        ``filename`` and ``total`` are set for a create (``total`` when only
        the received size tells it); committing publishes a reserved upload.
        """
        upload = chunk.upload
        end = upload.offset + chunk.size
        # Chunks placed beyond may join up with this one.
        offset, received = _join(end, list(upload.received))
        with self._database() as db:
            db.execute(
                "UPDATE uploads SET offset = ?, received = ?, status = ?, filename = COALESCE(?, filename),"
                " total = COALESCE(?, total) WHERE id = ?",
                (offset, _ranges_text(received), UPLOADING, filename, total, upload.id),
            )
        chunk.committed = True
        self.usage.stored(created=upload.status == _CREATING)
        live = self._live_of(upload.id)
        with live.hashing:
            live.md5, live.md5_at = chunk.running, end
        live.moved()
        return self._reload(upload.id)

    def discard(self, upload: Upload) -> None:
        """Forget a reserved upload whose create failed, file and all."""
        with self._database() as db:
            db.execute("DELETE FROM uploads WHERE id = ? AND status = ?", (upload.id, _CREATING))
        upload.path.unlink(missing_ok=True)
        with self._live_lock:
            self._live.pop(upload.id, None)

    def running_md5(self, upload: Upload) -> str:
        """Hex MD5 of the bytes stored so far, ``[0, offset)`` (hold ``locked``)."""
        return self._running(upload).hexdigest()

    def complete(self, upload: Upload, checksum: str) -> Upload:
        """Make the upload durable and mark it complete (hold ``locked``)."""
        fd = os.open(upload.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # Renamed before the record changes: a crash in between leaves an open
        # upload with a .done file, which _reconcile renames back.
        os.rename(upload.path, self._path(upload.id, COMPLETE))
        fsync_dir(self.uploads_dir)
        return self.record_complete(upload, checksum)

    def record_complete(self, upload: Upload, checksum: str) -> Upload:
        """Mark the upload's record complete, with ``checksum`` (hold ``locked``); its bytes are the caller's care.

        ``complete`` calls it once the bytes are durable; a store that keeps
        no bytes calls it alone.
        """
        with self._database() as db:
            db.execute(
                "UPDATE uploads SET status = ?, completed_at = ?, checksum = ? WHERE id = ?",
                (COMPLETE, _now().isoformat(), checksum, upload.id),
            )
        with self._live_lock:
            # No request changes a complete upload, so its lock can go too.
            self._live.pop(upload.id, None)
        return self._reload(upload.id)

    def completed_path(self, upload_id: int) -> Path:
        """Where a complete upload's bytes are (for records that refer to the upload)."""
        return self._path(upload_id, COMPLETE)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The database connection, held alone, inside one transaction: committed on exit, rolled back on error.

        For the records kept beside the uploads (``catalog``); uploads themselves never need one.
        """
        with self._database() as db:
            db.execute("BEGIN")
            try:
                yield db
                db.execute("COMMIT")
            finally:
                # An error, or a COMMIT that failed (a full disk): leave no
                # transaction open for the next user of the connection.
                if db.in_transaction:
                    db.execute("ROLLBACK")

    def cleanup_expired(self, now: datetime) -> list[Upload]:
        """Delete the open uploads expired at ``now``, file and record; return them as they were."""
        with self._database() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM uploads WHERE status = ?", (UPLOADING,)).fetchall()
        removed = []
        for candidate in map(self._upload, rows):
            if not candidate.expired(now):
                continue
            with self.locked(candidate.id):
                # Re-read under the lock: a chunk may have landed in between.
                upload = self.get(candidate.id, candidate.owner)
                if upload is None or not upload.expired(now):
                    continue
                # File first: a crash in between leaves a record whose file
                # _reconcile recreates empty, still expired, removed next time.
                upload.path.unlink(missing_ok=True)
                with self._database() as db:
                    db.execute("DELETE FROM uploads WHERE id = ?", (upload.id,))
            with self._live_lock:
                self._live.pop(upload.id, None)
            self.usage.release(upload.owner.user, upload.offset)
            removed.append(upload)
        return removed

    def _prepare(self) -> dict[str, int]:
        """Create or migrate the schema, repair what a crash left, and count each user's bytes."""
        with self._database() as db:
            db.execute("PRAGMA journal_mode=WAL")
            # A finalize answered 200 must survive a power cut.
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(uploads)")}
            if "idempotency_key" not in columns:  # a database from before the extension
                db.execute("ALTER TABLE uploads ADD COLUMN idempotency_key TEXT")
            if "received" not in columns:  # nor chunks out of order
                db.execute("ALTER TABLE uploads ADD COLUMN received TEXT")
            db.execute(_KEY_INDEX)
        self._reconcile()
        with self._database() as db:
            query = "SELECT user, SUM(offset) FROM uploads WHERE status > ? GROUP BY user"
            return dict(db.execute(query, (_CREATING,)).fetchall())

    def _running(self, upload: Upload) -> engine.Md5:
        """The running MD5 over ``[0, upload.offset)``, read up from the file where it lags."""
        live = self._live_of(upload.id)
        with live.hashing:
            if live.md5 is None:
                live.md5, live.md5_at = engine.Md5(), 0
            if live.md5_at < upload.offset:
                _hash_file_into(live.md5, upload.path, live.md5_at, upload.offset)
                live.md5_at = upload.offset
            running = live.md5.copy()
        live.moved()  # a chunk may wait for it, or have found it busy
        return running

    def _save_offset(self, upload: Upload, offset: int, received: list[tuple[int, int]]) -> None:
        with self._database() as db:
            db.execute(
                "UPDATE uploads SET offset = ?, received = ? WHERE id = ?",
                (offset, _ranges_text(received), upload.id),
            )

    def _reload(self, upload_id: int) -> Upload:
        with self._database() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        return self._upload(row)

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """The connection, held alone; a full disk surfaces as ``ENOSPC``, as for a chunk."""
        with self._db_lock:
            try:
                yield self._db
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
                    raise OSError(errno.ENOSPC, f"database: {error}") from error
                raise

    def _upload(self, row: tuple) -> Upload:
        upload_id, user, tenant, filename, offset, total, status, created, completed, checksum, received = row
        created_at = datetime.fromisoformat(created)
        return Upload(
            id=upload_id,
            owner=Owner(user, tenant),
            filename=filename,
            offset=offset,
            total=total,
            status=status,
            created_at=created_at,
            completed_at=None if completed is None else datetime.fromisoformat(completed),
            expires_at=created_at + self.expire_after,
            checksum=checksum,
            path=self._path(upload_id, status),
            received=tuple((start, end) for start, end in json.loads(received or "[]")),
        )

    def _path(self, upload_id: int, status: int) -> Path:
        return self.uploads_dir / f"{upload_id}{'.done' if status == COMPLETE else '.part'}"

    def _reconcile(self) -> None:
        # Make every record agree with its file after a crash, before serving.
        with self._database() as db:
            reserved = db.execute("SELECT id FROM uploads WHERE status = ?", (_CREATING,)).fetchall()
            db.execute("DELETE FROM uploads WHERE status = ?", (_CREATING,))
            query = "SELECT id, offset, received FROM uploads WHERE status = ?"
            open_uploads = db.execute(query, (UPLOADING,)).fetchall()
        for (upload_id,) in reserved:
            self._path(upload_id, UPLOADING).unlink(missing_ok=True)
        for upload_id, offset, received_text in open_uploads:
            part, done = self._path(upload_id, UPLOADING), self._path(upload_id, COMPLETE)
            if not part.exists() and done.exists():
                done.rename(part)  # a finalize died between its rename and its commit
            received = [(start, end) for start, end in json.loads(received_text or "[]")]
            held = max([offset, *(end for _, end in received)])
            with open(part, "ab") as file:
                size = file.seek(0, os.SEEK_END)
                if size > held:
                    # A torn chunk: its bytes landed but the record never moved.
                    file.truncate(held)
            if size < held:
                # The file lost bytes the record counted (a power cut before the
                # page cache was flushed); the client resumes from what is there.
                kept = [(start, end) for start, end in received if end <= size]
                with self._database() as db:
                    db.execute(
                        "UPDATE uploads SET offset = ?, received = ? WHERE id = ?",
                        (min(offset, size), _ranges_text(kept), upload_id),
                    )


def _running_if_at(live: _Live, at: int) -> engine.Md5 | None:
    """A copy of ``live``'s running MD5 if it covers exactly ``[0, at)``; None while another thread holds it."""
    if not live.hashing.acquire(blocking=False):
        return None
    try:
        if live.md5_at != at:
            return None
        return engine.Md5() if live.md5 is None else live.md5.copy()
    finally:
        live.hashing.release()


def _write_at(fd: int, view: memoryview, position: int) -> None:
    while view:
        count = os.pwrite(fd, view, position)
        view = view[count:]
        position += count


def _hash_file_into(md5: engine.Md5, path: Path, start: int, end: int) -> None:
    """Hash bytes ``[start, end)`` of ``path`` into ``md5``."""
    buffer = bytearray(_READ_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        file.seek(start)
        length = end - start
        while length > 0:
            count = file.readinto(view[: min(length, _READ_BLOCK)])
            if not count:
                raise OSError(errno.EIO, f"{path} ends before byte {end}: stored bytes are missing")
            md5.update(view[:count])
            length -= count


def _overlaps(ranges: Iterable[tuple[int, int]], start: int, end: int) -> bool:
    """Whether any of the byte ranges ``[a, b)`` shares a byte with ``[start, end)``."""
    return any(a < end and start < b for a, b in ranges)


def _join(offset: int, ranges: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """The prefix ``[0, offset)`` grown over the ranges that touch it, and the rest joined where they touch."""
    joined = join_ranges([(0, offset), *ranges])
    return joined[0][1], joined[1:]


def _ranges_text(ranges: list[tuple[int, int]]) -> str | None:
    return json.dumps([list(r) for r in ranges]) if ranges else None


def _now() -> datetime:
    return datetime.now(timezone.utc)

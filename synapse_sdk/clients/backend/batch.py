"""Many files at once: listing, deduplication and progress, then an executor uploads.

This module decides *what* to upload and reports it; an executor decides
*where*: ``LocalExecutor`` (the default) runs the uploads on threads of this
process over the client's connection pool, ``RayExecutor`` (in
``ray_executor``, which builds on this module, never the reverse) on actors
across a Ray cluster. Both upload each file with ``uploads.upload_file`` and
report a typed ``FileOutcome``; the batch returns them as a ``BatchResult``. Concurrency is a
number of files in flight, fixed, or ``"auto"``: ``LocalExecutor`` then
adapts it to the time files take (``engine.concurrency``: more while it stays
near the fastest seen, fewer when it climbs). Memory is bounded with it,
whatever the file sizes, because each upload maps at most two 8 MiB windows
at a time, and "auto" admits files only within a memory budget.
Identical files (same size and xxh3-128) in one batch are uploaded once; with
``skip_existing``, files whose MD5 the server already holds are not uploaded
at all. One file's failure never stops the others; Ctrl-C cancels the uploads
in flight at their next request and leaves them resumable.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import engine
from engine.concurrency import INITIAL_LIMIT, MAX_IN_FLIGHT, MEMORY_BUDGET, AdaptiveLimit, Flight
from engine.hashing_service import HashingService
from engine.source import MappedFile
from synapse_sdk.clients.backend.outcomes import BatchResult, FileOutcome
from synapse_sdk.clients.backend.uploads import upload_file

__all__ = [
    "Batch",
    "BatchProgress",
    "Concurrency",
    "Executor",
    "FileJob",
    "LocalExecutor",
    "attempt",
    "check_concurrency",
    "collect_files",
    "upload_files",
]


#: Files in flight at once: a fixed number, or ``"auto"`` (the executor adapts it).
Concurrency = int | Literal["auto"]


def check_concurrency(concurrency: object) -> Concurrency:
    """``concurrency`` if it is a positive whole number or ``"auto"``; else a ``ValueError`` that says so."""
    if concurrency == "auto":
        return "auto"
    if not isinstance(concurrency, int) or isinstance(concurrency, bool):
        raise ValueError(f"concurrency must be a positive whole number or 'auto', not {concurrency!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1 (or 'auto'), not {concurrency}")
    return concurrency


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: bytes and files, never moving backwards.

    ``active`` lists the files in flight as ``(path, bytes done, size)``.
    """

    bytes_done: int
    bytes_total: int
    files_done: int
    files_failed: int
    files_total: int
    active: tuple[tuple[Path, int, int], ...] = ()


def collect_files(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> list[Path]:
    """Files named, and files under directories named (sorted); missing paths are kept to be reported."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            if not recursive:
                raise IsADirectoryError(f"{path} is a directory (upload its files recursively, or name them)")
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


def _md5_of(path: Path) -> str:
    md5 = engine.Md5()
    with MappedFile(path) as source, source.reading():
        for window in source.windows(0, source.size):
            md5.update(window)
    return md5.hexdigest()


def _xxh3_of(path: Path) -> bytes:
    with MappedFile(path) as source:
        return source.xxh3_128(0, source.size)


#: Bytes at each end of a file that tell most same-size files apart without reading them whole.
ENDS = 64 * 1024


def _ends_of(path: Path) -> bytes:
    with MappedFile(path) as source:
        return source.xxh3_128(0, min(ENDS, source.size)) + source.xxh3_128(max(0, source.size - ENDS), source.size)


def _same_files(files: list[Path], sizes: dict[int, int]) -> dict[int, int]:
    """Files identical to an earlier one (index -> that one's index): same size, ends, then whole xxh3-128.

    Datasets often hold many files of one size (shards, frames): their ends
    tell them apart, so only files alike at both ends are read whole.
    """
    duplicate_of: dict[int, int] = {}
    groups: list[list[int]] = [list(g) for g in _grouped(sizes, sizes.get).values() if len(g) > 1]
    for key in (lambda i: _ends_of(files[i]), lambda i: _xxh3_of(files[i])):
        groups = [list(g) for group in groups for g in _grouped(group, key).values() if len(g) > 1]
    for group in groups:
        duplicate_of.update((index, group[0]) for index in group[1:])
    return duplicate_of


def _grouped(indexes: Iterable[int], key: Callable[[int], Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = defaultdict(list)
    for index in indexes:
        groups[key(index)].append(index)
    return groups


class _Progress:
    """Sums every file's progress into one monotonic ``BatchProgress``."""

    def __init__(self, callback: Callable[[BatchProgress], None] | None, sizes: dict[Path, int], files_total: int):
        self._callback = callback
        self._lock = threading.Lock()
        self._sizes = sizes
        self._done: dict[Path, int] = {}
        self._active: dict[Path, None] = {}  # insertion-ordered set
        self.bytes_total, self.files_total = sum(sizes.values()), files_total
        self.files_done = self.files_failed = 0

    def file_started(self, path: Path) -> Callable[[int, int], None]:
        """Mark ``path`` in flight; returns its ``on_progress`` callback."""
        with self._lock:
            self._active[path] = None

        def on_progress(done: int, total: int) -> None:
            with self._lock:
                self._done[path] = max(self._done.get(path, 0), done)
            self._report()

        self._report()
        return on_progress

    def file_finished(self, path: Path | None, failed: bool) -> None:
        with self._lock:
            self._active.pop(path, None)
            self.files_done += 1
            self.files_failed += failed
        self._report()

    def _report(self) -> None:
        if self._callback is None:
            return
        with self._lock:
            active = tuple((p, self._done.get(p, 0), self._sizes[p]) for p in self._active)
            state = BatchProgress(
                sum(self._done.values()),
                self.bytes_total,
                self.files_done,
                self.files_failed,
                self.files_total,
                active,
            )
        self._callback(state)


@dataclass(frozen=True)
class FileJob:
    """One file for an executor: its place in the batch, its path as given, and its size and mtime when listed."""

    index: int
    path: Path
    size: int
    mtime: float


class Batch:
    """What an executor reports to: a file started, a file finished."""

    def __init__(self, progress: _Progress) -> None:
        self.outcome: dict[int, FileOutcome] = {}
        self._progress = progress

    def started(self, job: FileJob) -> Callable[[int, int], None]:
        """``job`` is in flight; returns its ``on_progress(bytes_done, total)``."""
        return self._progress.file_started(job.path)

    def finished(self, job: FileJob, outcome: FileOutcome) -> None:
        """``job`` is done: ``outcome`` says how (see ``attempt``)."""
        self.outcome[job.index] = outcome
        self._progress.file_finished(job.path, failed=outcome.status == "failed")


class Executor(Protocol):
    """Uploads ``jobs`` with ``client``'s settings, reporting each to ``batch``; never raises for one file.

    ``concurrency`` is files in flight (a positive int), or ``"auto"``: as
    many as the executor finds best.
    """

    def run(
        self, client: Any, jobs: list[FileJob], batch: Batch, *, concurrency: Concurrency, chunk_size: int
    ) -> None: ...


def attempt(path: Path | str, upload: Callable[[], dict[str, Any]]) -> FileOutcome:
    """The outcome of ``upload()`` for ``path``: its record, or the exception it raised."""
    try:
        return FileOutcome.success(Path(path), upload())
    except Exception as error:  # one file's failure is reported, never raised
        return FileOutcome.failure(Path(path), error)


class LocalExecutor:
    """Threads of this process, over the client's connection pool.

    With a number for ``concurrency``, that many files are in flight at a
    time. With ``"auto"``, an ``engine.concurrency.AdaptiveLimit`` starts at
    8 (``INITIAL_LIMIT``) and follows the time files take: up while it stays near the fastest
    seen (round trips, not the link, limit the batch), down when it climbs
    (the link, the server or this machine is saturated). ``max_in_flight``
    caps it; a file starts only while the files in flight map at most
    ``memory_budget`` bytes (two 8 MiB windows each, at most). The client's
    connection pool is grown to keep a connection for each file in flight.
    ``peak_in_flight`` says how many files were in flight at once in the
    last batch.

    The files in flight share one ``HashingService``: their MD5s (each
    file's and each chunk's) run side by side in the SIMD lanes of one core
    instead of one stream per core, once they are enough to fill more than
    half the lanes (fewer hash each in its own thread).
    ``LocalExecutor(shared_hashing=False)`` hashes each file on its own, as
    ``create_chunked_upload`` does.
    """

    def __init__(
        self,
        *,
        shared_hashing: bool = True,
        max_in_flight: int = MAX_IN_FLIGHT,
        memory_budget: int = MEMORY_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        if memory_budget < 1:
            raise ValueError(f"memory_budget must be a positive number of bytes, not {memory_budget}")
        self.shared_hashing = shared_hashing
        self.max_in_flight = max_in_flight
        self.memory_budget = memory_budget
        self.clock = clock
        self.peak_in_flight = 0

    def run(self, client: Any, jobs: list[FileJob], batch: Batch, *, concurrency: Concurrency, chunk_size: int) -> None:
        concurrency = check_concurrency(concurrency)
        most = self.max_in_flight if concurrency == "auto" else concurrency
        transport = getattr(client, "transport", None)
        if transport is not None and callable(getattr(transport, "reserve", None)):
            transport.reserve(min(most, max(len(jobs), 1)))
        cancel = threading.Event()
        hashing = HashingService() if self.shared_hashing and most > 1 else None
        self.peak_in_flight = 0
        in_flight = 0
        counting = threading.Lock()

        def upload_one(job: FileJob) -> FileOutcome:
            nonlocal in_flight
            with counting:
                in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, in_flight)
            try:
                return attempt(
                    job.path,
                    lambda: upload_file(
                        client,
                        job.path,
                        chunk_size=chunk_size,
                        on_progress=batch.started(job),
                        cancel=cancel,
                        hashing=hashing,
                    ),
                )
            finally:
                with counting:
                    in_flight -= 1

        with ThreadPoolExecutor(most, thread_name_prefix="upload") as pool:
            try:
                if concurrency == "auto":
                    self._adapt(
                        pool,
                        upload_one,
                        jobs,
                        batch,
                        AdaptiveLimit(initial=min(INITIAL_LIMIT, most), maximum=most, memory_budget=self.memory_budget),
                    )
                else:
                    futures = {pool.submit(upload_one, job): job for job in jobs}
                    for future in as_completed(futures):
                        batch.finished(futures[future], future.result())
            except KeyboardInterrupt:
                # Stop cleanly: no new files, uploads in flight stop at their next
                # request with their journal intact, then Ctrl-C goes on up.
                cancel.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _adapt(
        self,
        pool: ThreadPoolExecutor,
        upload_one: Callable[[FileJob], FileOutcome],
        jobs: list[FileJob],
        batch: Batch,
        limit: AdaptiveLimit,
    ) -> None:
        """Start files in order as the limit and the memory budget admit them; feed it each file's time."""
        waiting = deque(jobs)
        flying: dict[Future[FileOutcome], tuple[FileJob, Flight]] = {}
        while waiting or flying:
            while waiting and limit.can_start(waiting[0].size):
                job = waiting.popleft()
                flying[pool.submit(upload_one, job)] = (job, limit.started(job.size, self.clock()))
            done, _ = wait(flying, return_when=FIRST_COMPLETED)
            for future in done:
                job, flight = flying.pop(future)
                outcome = future.result()
                limit.finished(flight, self.clock(), ok=outcome.status != "failed")
                batch.finished(job, outcome)


def upload_files(
    client: Any,
    paths: Iterable[str | os.PathLike[str]],
    *,
    concurrency: Concurrency = "auto",
    chunk_size: int,
    recursive: bool = True,
    skip_existing: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
    executor: Executor | None = None,
) -> BatchResult:
    """Upload files concurrently with ``client``'s settings, on ``executor`` (default: local threads).

    Returns a ``BatchResult``: the documented ``{"successful", "failed",
    "skipped", "total"}`` dict (lists of ``{"file_path", "status", ...}`` in
    the order the files were given), with each file's typed ``FileOutcome``
    in ``.outcomes``.

    ``concurrency`` is the number of files in flight at once, or ``"auto"``
    (the executor adapts it; ``LocalExecutor`` to the time files take).
    """
    concurrency = check_concurrency(concurrency)
    if executor is None:
        executor = LocalExecutor()
    elif not callable(getattr(executor, "run", None)):
        raise ValueError(f"executor must be an executor object (LocalExecutor(), RayExecutor(...)), not {executor!r}")
    files = collect_files(paths, recursive=recursive)
    outcome: dict[int, FileOutcome] = {}
    stats: dict[int, os.stat_result] = {}
    for index, path in enumerate(files):
        try:
            stats[index] = path.stat()
            if not path.is_file():
                raise IsADirectoryError(f"not a regular file: {path}")
        except OSError as error:
            outcome[index] = FileOutcome.failure(path, error)

    # Identical files upload once.
    duplicate_of = _same_files(files, {i: stat.st_size for i, stat in stats.items() if i not in outcome})
    todo = [i for i in stats if i not in outcome and i not in duplicate_of]

    if skip_existing and todo:
        # Reading files to hash them: a few threads, whatever the uploads' concurrency.
        with ThreadPoolExecutor(INITIAL_LIMIT if concurrency == "auto" else concurrency) as pool:
            checksums = dict(zip(todo, pool.map(lambda i: _md5_of(files[i]), todo), strict=True))
        held = set(client.verify_data_files_checksums(sorted(set(checksums.values()))).get("checksums", []))
        for index in [i for i in todo if checksums[i] in held]:
            outcome[index] = FileOutcome.skipped(files[index], checksums[index])
        todo = [i for i in todo if i not in outcome]

    progress = _Progress(on_progress, {files[i]: stats[i].st_size for i in todo}, len(files))
    for early in outcome.values():
        progress.file_finished(None, failed=early.status == "failed")
    batch = Batch(progress)
    jobs = [FileJob(i, files[i], stats[i].st_size, stats[i].st_mtime) for i in todo]
    executor.run(client, jobs, batch, concurrency=concurrency, chunk_size=chunk_size)
    outcome.update(batch.outcome)

    for index, first in duplicate_of.items():
        source = outcome[first]
        outcome[index] = source.as_copy_of(files[index], files[first])
        progress.file_finished(None, failed=source.status == "failed")

    return BatchResult(outcome[i] for i in range(len(files)))

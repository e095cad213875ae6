"""Bulk upload across a Ray cluster: files dealt by bytes to worker actors, each with its own client.

The driver (the process calling ``upload_files``) lists, deduplicates and
reports as with the local executor; ``RayExecutor`` only deals the files to
upload over worker actors, largest first onto the least-loaded worker, and
polls the workers for progress and results. Each worker builds its own
``BackendClient`` from the driver client's ``settings()`` (the live client and
its pool never travel) and uploads its files whole with the native engine,
``concurrency`` at a time (``"auto"``: ``AUTO_PER_WORKER``). Workers report each file's upload URL as soon as
the server has created it, so when a worker dies its unfinished files
continue on another worker from the server's offset (``upload(url=...)``),
not from zero; a file whose workers died ``max_worker_deaths`` times fails.

Workers open files by the driver's absolute paths: they must be on a
filesystem every node mounts at the same place. A worker that does not see
the file the driver listed (missing, or another size or mtime) reports that
file as failed, naming its node. Ray itself is imported only when a
``RayExecutor`` is made, so the package works without it.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.errors import FileChangedError, WorkerDiedError, WorkerStartError
from engine.hashing_service import HashingService
from synapse_sdk.clients.backend.batch import Batch, Concurrency, FileJob, attempt, check_concurrency
from synapse_sdk.clients.backend.outcomes import FileOutcome
from synapse_sdk.clients.backend.uploads import upload_file

__all__ = ["RAY_MISSING", "RayExecutor", "WorkerDiedError", "WorkerStartError", "deal"]

RAY_MISSING = "the Ray executor needs Ray: pip install 'synapse-upload[ray]'"

#: What one file weighs in dealing besides its bytes: a few round trips whatever
#: its size, so that a thousand empty files are not all dealt to one worker.
FILE_COST = 256 * 1024
#: How often the driver asks the workers how they stand (progress bars redraw at 10/s).
POLL_INTERVAL = 0.1
#: How long workers may take to start, and to stop after Ctrl-C.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
#: Filesystems keep mtimes at different resolutions (NFS, FAT: 1-2 s).
MTIME_SLACK = 2.0
#: Memory a worker reserves with Ray's scheduler: the interpreter, Ray and the
#: package, plus per file in flight two 8 MiB mapped windows with room to spare.
WORKER_MEMORY = 256 * 1024 * 1024
MEMORY_PER_UPLOAD = 32 * 1024 * 1024
#: Files in flight on each worker for ``concurrency="auto"``: the fixed default batches had (workers do not adapt).
AUTO_PER_WORKER = 4


def _gist(error: BaseException) -> str:
    """``Type: what happened`` in one line: Ray's messages end with the cause, after the actor's particulars."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING, name="ray") from None
    return ray


def deal(sizes: dict[int, int], loads: Sequence[int]) -> list[list[int]]:
    """Files (index → bytes) per worker: largest first, each onto the least-loaded worker.

    ``loads`` are the workers' bytes already to do. Each file weighs its size
    plus ``FILE_COST``; ties go to the earlier worker and keep the files' order.
    """
    heap = [(load, worker) for worker, load in enumerate(loads)]
    heapq.heapify(heap)
    hands: list[list[int]] = [[] for _ in loads]
    for index in sorted(sizes, key=lambda i: (-sizes[i], i)):
        load, worker = heapq.heappop(heap)
        hands[worker].append(index)
        heapq.heappush(heap, (load + sizes[index] + FILE_COST, worker))
    return hands


@dataclass(frozen=True)
class _RemoteJob:
    """A file as a worker gets it: the driver's absolute path, what the driver saw, and its upload URL if any."""

    index: int
    path: str
    size: int
    mtime: float
    url: str | None = None


class RayExecutor:
    """Runs a batch's uploads on Ray worker actors (``upload_files(..., executor=RayExecutor(...))``).

    ``address`` is passed to ``ray.init`` unless this process is already
    connected (``None``: ``$RAY_ADDRESS``, a cluster started on this machine
    with ``ray start``, or else a new local Ray; ``"auto"``: an existing
    cluster or an error). ``workers`` actors (default: one per alive node
    with a CPU, at most one per file) each take one CPU and upload
    ``concurrency`` files at a time, so each holds at most ``concurrency``
    files' mapped windows (two 8 MiB windows apiece) in memory; each reserves
    ``WORKER_MEMORY + concurrency * MEMORY_PER_UPLOAD`` bytes with Ray's
    scheduler, so a node runs no more workers than its memory holds. A file whose
    worker died is retried on another worker, ``max_worker_deaths`` times at
    most; then it fails with ``WorkerDiedError``.

    ``actors`` lists the live worker actors while a batch runs.
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None, max_worker_deaths: int = 3) -> None:
        self._ray = _import_ray()
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if max_worker_deaths < 1:
            raise ValueError(f"max_worker_deaths must be at least 1, not {max_worker_deaths}")
        self.address = address
        self.workers = workers
        self.max_worker_deaths = max_worker_deaths
        self._run: _Driver | None = None

    @property
    def actors(self) -> list[Any]:
        return [] if self._run is None else [seat.actor for seat in self._run.seats]

    def connect(self) -> None:
        """``ray.init(address)``, unless this process is connected already (``run`` calls it)."""
        if not self._ray.is_initialized():
            self._ray.init(address=self.address)

    def run(self, client: Any, jobs: list[FileJob], batch: Batch, *, concurrency: Concurrency, chunk_size: int) -> None:
        concurrency = check_concurrency(concurrency)
        if concurrency == "auto":
            concurrency = AUTO_PER_WORKER
        if not jobs:
            return
        if not callable(getattr(client, "settings", None)):
            raise TypeError(f"the Ray executor rebuilds the client on each worker: a BackendClient, not {client!r}")
        settings = client.settings()
        self.connect()
        ray = self._ray
        workers = self.workers
        if workers is None:
            workers = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1) or 1
        # Reserved, not enforced: Ray places no more workers on a node than its memory holds.
        memory = WORKER_MEMORY + concurrency * MEMORY_PER_UPLOAD
        actor = ray.remote(_Worker).options(num_cpus=1, memory=memory, scheduling_strategy="SPREAD")

        # The client's class travels by name (or by value, if local): this module need not import it.
        client_class = type(client)

        def start(count: int) -> list[Any]:
            return [actor.remote(client_class, settings, chunk_size, concurrency) for _ in range(count)]

        self._run = _Driver(ray, batch, jobs, start, self.max_worker_deaths)
        try:
            self._run.drive(min(workers, len(jobs)))
        finally:
            self._run = None


@dataclass(eq=False)
class _Seat:
    """A live worker actor, where it runs, and the files it holds."""

    actor: Any
    where: str
    indexes: set[int] = field(default_factory=set)
    outbox: list[_RemoteJob] = field(default_factory=list)


class _Driver:
    """One batch on Ray, as the driver sees it: deal, poll, re-deal a dead worker's files."""

    def __init__(
        self, ray: ModuleType, batch: Batch, jobs: list[FileJob], start: Callable[[int], list[Any]], max_deaths: int
    ) -> None:
        self.ray = ray
        self.batch = batch
        self.jobs = {job.index: job for job in jobs}
        self.start = start
        self.max_deaths = max_deaths
        self.seats: list[_Seat] = []
        self.urls: dict[int, str] = {}
        self.offsets: dict[int, int] = {}  # bytes the server acknowledged, as last reported
        self.deaths: Counter[int] = Counter()
        self.callbacks: dict[int, Callable[[int, int], None]] = {}

    def drive(self, workers: int) -> None:
        try:
            self.seats = self._started(workers)
            self._deal(list(self.jobs))
            while any(seat.indexes for seat in self.seats):
                self._poll()
                time.sleep(POLL_INTERVAL)
        except BaseException:
            # Ctrl-C, or a progress callback that raised: uploads in flight stop
            # at their next request, resumable, before the workers go.
            self._stop()
            raise
        finally:
            for seat in self.seats:
                with contextlib.suppress(Exception):
                    self.ray.kill(seat.actor)

    def _started(self, count: int) -> list[_Seat]:
        """``count`` new workers, those that are up within ``START_TIMEOUT``; raises if none is."""
        actors = self.start(count)
        refs = {actor.where.remote(): actor for actor in actors}
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=START_TIMEOUT)
        seats, errors = [], []
        for ref, actor in refs.items():
            try:
                if ref not in ready:
                    raise TimeoutError(f"not started within {START_TIMEOUT:.0f} s (no free CPU in the cluster?)")
                seats.append(_Seat(actor, self.ray.get(ref)))
            except Exception as error:
                errors.append(_gist(error))
                with contextlib.suppress(Exception):
                    self.ray.kill(actor)
        if not seats:
            raise WorkerStartError(f"no Ray upload worker started: {errors[0]}")
        return seats

    def _deal(self, indexes: list[int]) -> None:
        """Give ``indexes`` to the live workers, least-loaded first, each with its upload URL if known."""
        loads = [sum(self.jobs[i].size + FILE_COST for i in seat.indexes) for seat in self.seats]
        hands = deal({i: self.jobs[i].size for i in indexes}, loads)
        for seat, hand in zip(self.seats, hands, strict=True):
            for index in hand:
                job = self.jobs[index]
                seat.indexes.add(index)
                seat.outbox.append(
                    _RemoteJob(index, os.path.abspath(job.path), job.size, job.mtime, self.urls.get(index))
                )

    def _poll(self) -> None:
        """Send each worker its new files and take its news; a worker that does not answer is dead."""
        asked = []
        for seat in self.seats:
            asked.append((seat, seat.actor.step.remote(seat.outbox)))
            seat.outbox = []
        for seat, ref in asked:
            try:
                active, finished = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as error:
                self._lost(seat, error)
                continue
            for index, (done, url) in active.items():
                if url is not None:
                    self.urls[index] = url
                self.offsets[index] = done
                self._progress(index)(done, self.jobs[index].size)
            for index, outcome in finished:
                job = self.jobs[index]
                seat.indexes.discard(index)
                if outcome.status == "success":
                    self._progress(index)(job.size, job.size)
                # The path as the caller gave it, not the absolute one the worker opened.
                self.batch.finished(job, replace(outcome, path=job.path))

    def _progress(self, index: int) -> Callable[[int, int], None]:
        if index not in self.callbacks:
            self.callbacks[index] = self.batch.started(self.jobs[index])
        return self.callbacks[index]

    def _lost(self, seat: _Seat, error: Exception) -> None:
        """A dead worker's files go to the others, with their URLs; once too often, they fail."""
        self.seats.remove(seat)
        with contextlib.suppress(Exception):
            self.ray.kill(seat.actor)  # "unavailable" may come back: it must not upload alongside its successor
        again = []
        for index in sorted(seat.indexes):
            self.deaths[index] += 1
            if self.deaths[index] < self.max_deaths:
                again.append(index)
                continue
            deaths = self.deaths[index]
            reason = WorkerDiedError(
                f"the Ray worker uploading it died {deaths} time{'s' if deaths > 1 else ''}"
                f" (max_worker_deaths={self.max_deaths}), the last on {seat.where}: {_gist(error)}"
            ).with_upload(self.urls.get(index), self.offsets.get(index))
            self.batch.finished(self.jobs[index], FileOutcome.failure(self.jobs[index].path, reason))
        if again and not self.seats:
            try:
                self.seats = self._started(1)
            except WorkerStartError as start_error:
                for index in again:
                    self.batch.finished(self.jobs[index], FileOutcome.failure(self.jobs[index].path, start_error))
                return
        if again:
            self._deal(again)

    def _stop(self) -> None:
        refs = [seat.actor.stop.remote() for seat in self.seats]
        with contextlib.suppress(Exception):
            self.ray.wait(refs, num_returns=len(refs), timeout=STOP_TIMEOUT)


class _Worker:
    """A Ray actor: uploads the files dealt to it, ``concurrency`` at a time, and says how they stand."""

    def __init__(self, client_class: type, settings: dict[str, Any], chunk_size: int, concurrency: int) -> None:
        ray = _import_ray()
        self.client = client_class(**settings)
        self.chunk_size = chunk_size
        self.place = f"node {socket.gethostname()} ({ray.util.get_node_ip_address()})"
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="upload")
        # The worker's uploads share one hashing service, as a local batch's do: their MD5s in SIMD lanes.
        self.hashing = HashingService() if concurrency > 1 else None
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.active: dict[int, list[Any]] = {}  # index -> [bytes done, upload URL]
        self.finished: list[tuple[int, FileOutcome]] = []

    def where(self) -> str:
        return self.place

    def step(self, jobs: list[_RemoteJob]) -> tuple[dict[int, tuple[int, str | None]], list[tuple[int, FileOutcome]]]:
        """Queue ``jobs``; return the files in flight (bytes done, URL) and those finished since the last step."""
        for job in jobs:
            self.pool.submit(self._upload, job)
        with self.lock:
            finished, self.finished = self.finished, []
            return {index: (done, url) for index, (done, url) in self.active.items()}, finished

    def stop(self) -> None:
        """Ctrl-C on the driver: uploads in flight stop at their next request, resumable; queued ones never start."""
        self.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _upload(self, job: _RemoteJob) -> None:
        state = [0, job.url]
        with self.lock:
            self.active[job.index] = state

        def on_progress(done: int, total: int) -> None:
            state[0] = done

        def on_url(url: str) -> None:
            state[1] = url

        outcome = _unseen(job, self.place) or attempt(
            job.path,
            lambda: upload_file(
                self.client,
                job.path,
                chunk_size=self.chunk_size,
                url=job.url,
                on_progress=on_progress,
                on_url=on_url,
                cancel=self.cancel,
                hashing=self.hashing,
            ),
        )
        with self.lock:
            del self.active[job.index]
            # It crosses to the driver: an error that cannot be pickled goes as its text.
            self.finished.append((job.index, outcome.portable()))


def _unseen(job: _RemoteJob, place: str) -> FileOutcome | None:
    """The failure of a file this node does not see as the driver listed it, else None."""
    advice = "workers open the driver's paths, which must be on a filesystem every node mounts at the same place"
    try:
        seen = os.stat(job.path)
    except OSError as error:
        return FileOutcome.failure(
            Path(job.path), type(error)(f"the Ray worker on {place} cannot see {job.path} ({error.strerror}): {advice}")
        )
    if not stat.S_ISREG(seen.st_mode) or seen.st_size != job.size or abs(seen.st_mtime - job.mtime) > MTIME_SLACK:
        return FileOutcome.failure(
            Path(job.path),
            FileChangedError(
                f"{job.path} on {place} is not the file the driver listed ({_described(seen.st_size, seen.st_mtime)};"
                f" the driver saw {_described(job.size, job.mtime)}): {advice}"
            ),
        )
    return None


def _described(size: int, mtime: float) -> str:
    return f"{size} bytes, modified {datetime.fromtimestamp(mtime, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"

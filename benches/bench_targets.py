"""The performance targets 1-5, 7, 8, 9, 11 and 12, each measured against a reference taken in the same run.

Target 6 (1 GiB to the full, verifying server, against the published
algorithm) is ``benches/bench_upload.py``; target 10 (the multi-buffer MD5
kernel alone) is ``benches/bench_md5_many.py``.

- Throughput (targets 1, 2 and 5) is timed in this process with
  pytest-benchmark, uploading to the reference server in discard mode (the
  protocol is checked, the bytes are counted and dropped: what is measured is
  the client), against one core's ``hashlib.md5`` over the same bytes (1, 2)
  or the same files sent one at a time (5). The reference runs in the untimed
  setup of every round, so it and the upload alternate (A B A B ...).
- CPU and peak RSS (targets 3, 4 and 7) are read in a subprocess that does
  only the upload, or only the hashing (a module of ``benches/workloads``, run
  with ``python -m``), and prints them as JSON, so pytest's
  own memory and threads never count. The CPU is ``getrusage(RUSAGE_SELF)``
  after the work minus before it (interpreter start-up and imports are not the
  upload's). The peak RSS is the process's ``VmHWM`` (/proc/self/status),
  which includes start-up and imports. Not ``ru_maxrss``: Linux carries it
  across ``exec``, so a child started from a pytest process larger than itself
  reports pytest's peak (it is printed alongside, to show it).
- Issue 11's batch (targets 8 and 9) is 8 x 256 MiB through
  ``upload_files(paths)`` with its defaults, in a subprocess, against one
  core's ``hashlib.md5`` over the same files in another (``.md5``), the two in
  turn: the upload's throughput from its wall time around the work, one
  core's MD5 rate from the pass's CPU seconds (a lone thread's wall time
  counts the moments a shared machine deschedules it), CPU as above.
- Over a network (targets 11 and 12), the clients run in subprocesses and
  talk to the full server through ``tests/faults/shaper.py``'s relay, run in
  this process (idle meanwhile: the relay has its GIL to itself), 25 ms each
  way (50 ms RTT), with a 2 Gbit/s cap for 12. Target 11 sets the
  documentation's batch example over the published algorithm
  (``.published``) against ``upload_files(paths)``, in turn; target 12 divides
  ``create_chunked_upload``'s throughput by the cap. The relay's count of
  connections says how many each upload opened.
- One more upload of each kind runs with a sampler of per-thread CPU
  (``/proc/self/task/*/stat``), the server's and the machine's CPU read around
  it: the "where the CPU goes" section, which says what bounds each target.

Run it whole (``python -m pytest benches/bench_targets.py``), not with
``--benchmark-only``, which would skip the CPU and RSS tests: they time
subprocesses, not the ``benchmark`` fixture. About eight minutes on two cores;
``-k`` picks targets (``-k "defaults or small_files or shaped"`` for 8-12),
and ``SYNAPSE_BENCH_BYTES`` a smaller big file (targets 1-3, 7 and 12).

Benchmarks report, they do not judge: nothing here asserts a timing or a
ratio, only that every upload completed with the right size and checksum.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benches.conftest import THROUGHPUT, Target, record_note, record_target
from benches.workloads.hashing import MODES as HASH_MODES
from engine.source import WINDOW
from synapse_sdk.cli.benchmark import ServerProcess, md5_file, write_random_file
from synapse_sdk.clients.backend import BackendClient
from tests.faults.shaper import Shaper

REPO = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024**2
GIB = 1024**3
#: Timed rounds per throughput case (after one warm-up round), and per CPU or RSS case.
ROUNDS = 5
CPU_ROUNDS = 3
#: Target 5's files, and the sparse files of target 4.
FILE_SET = (8, 256 * MIB)
SPARSE_SIZES = {"1 GiB": GIB, "8 GiB": 8 * GIB}
#: Target 11's files: each one chunk, so round trips, not bytes, take the time.
SMALL_SET = (500, 256 * KIB)
#: Issue 11's network: 25 ms each way (a 50 ms RTT); target 12's link cap, 2 Gbit/s in bytes per second.
DELAY = 0.025
CAP = 250e6
#: Target 11's baseline: the documentation's batch example runs this many threads.
PUBLISHED_THREADS = 4
WHERE = "where the CPU goes (one more upload of each kind, per-thread CPU sampled every 20 ms)"

#: The programs the CPU and RSS cases run in a fresh interpreter (see ``benches/workloads``).
UPLOAD = "benches.workloads.upload"
MD5 = "benches.workloads.md5"
HASHING = "benches.workloads.hashing"
PUBLISHED = "benches.workloads.published"


def _child(module: str, *args: object) -> dict[str, Any]:
    """Run ``python -m module args...`` in a fresh interpreter on this source tree; its last line of output, as JSON."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": pythonpath},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:g} MiB"


def _cpu(report: dict[str, Any]) -> float:
    """User + system seconds of the measured work (after minus before)."""
    before, after = report["before"], report["after"]
    return after["user"] + after["sys"] - before["user"] - before["sys"]


def _checked(report: dict[str, Any], paths: list[Path]) -> dict[str, Any]:
    """``report``, once every file of ``paths`` is in it, uploaded with its size."""
    assert not report["failed"], report["failed"][:3]
    assert sorted(r["size"] for r in report["records"]) == sorted(p.stat().st_size for p in paths)
    return report


def _upload_child(
    server: ServerProcess,
    digest: str,
    paths: list[Path],
    *,
    concurrency: int | str = 0,
    pid: int = 0,
    via: Shaper | None = None,
) -> dict[str, Any]:
    """``benches.workloads.upload`` to ``server`` (through the relay ``via``, if any); its checked report."""
    url = server.base_url if via is None else via.url
    return _checked(_child(UPLOAD, url, server.token, digest, concurrency, pid, *paths), paths)


def _through(shaper: Shaper, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s report, with the number of connections it opened through ``shaper``."""
    before = shaper.stats.connections
    report = run()
    report["connections"] = shaper.stats.connections - before
    return report


def _server_pid(server: ServerProcess) -> int:
    """The pid of the server's process: our child whose command line names its data directory."""
    me, marker = os.getpid(), str(server.data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == me and marker in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    raise LookupError(f"no child process serves {server.data_dir}")


def _interleaved(cases: dict[str, Callable[[], dict[str, Any]]], rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Run each case's callable ``rounds`` times, the cases in turn (A B C A B C ...); the reports by case."""
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            reports[name].append(run())
    return reports


class _InTurn:
    """A reference timed in the untimed setup of every round, so reference and measured case alternate.

    Handed to ``benchmark.pedantic(setup=...)``: pytest-benchmark calls it
    before each warm-up and each timed round, so on a noisy machine a slow
    minute hurts both sides of the ratio alike. ``then`` runs after the
    reference, untimed (e.g. clearing the server's uploads).
    """

    def __init__(self, reference: Callable[[], object], then: Callable[[], object], warmup: int = 1) -> None:
        self.reference, self.then, self.warmup = reference, then, warmup
        self.seconds: list[float] = []

    def __call__(self) -> None:
        started = time.perf_counter()
        self.reference()
        self.seconds.append(time.perf_counter() - started)
        self.then()

    @property
    def median(self) -> float:
        # The first ones went with the benchmark's warm-up rounds.
        return statistics.median(self.seconds[self.warmup :])


@pytest.fixture(scope="module")
def file_md5(big_file: Path) -> str:
    """``big_file``'s MD5; reading it also pulls it into the page cache."""
    return md5_file(big_file)


def _random_files(directory: Path, name: str, count: int, size: int) -> Iterator[list[Path]]:
    """``count`` files of ``size`` random bytes named ``name.format(i)``, removed after use."""
    paths = [write_random_file(directory / name.format(i), size) for i in range(count)]
    yield paths
    for path in paths:
        path.unlink()


@pytest.fixture(scope="module")
def file_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    yield from _random_files(tmp_path_factory.mktemp("targets-set"), "f{}.bin", *FILE_SET)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    yield from _random_files(tmp_path_factory.mktemp("targets-small"), "s{:03d}.bin", *SMALL_SET)


@pytest.fixture(scope="module")
def sparse_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    directory = tmp_path_factory.mktemp("targets-sparse")
    paths = {}
    for name, size in SPARSE_SIZES.items():
        paths[name] = directory / f"sparse-{size}.bin"
        with open(paths[name], "wb") as f:
            f.truncate(size)  # sparse: read like any file, costs no disk
    yield paths
    for path in paths.values():
        path.unlink()


@pytest.mark.parametrize("digest", ["md5", "xxh3", "none"])
def test_one_file_to_discard_server(benchmark, big_file, discard_server, file_md5, digest: str) -> None:
    """Targets 1 and 2: 1 GiB to the discarding server, against one core's MD5 over the same bytes, in turn."""
    size = big_file.stat().st_size
    reference = _InTurn(lambda: md5_file(big_file), discard_server.clear_uploads)
    with BackendClient(
        discard_server.base_url, access_token=discard_server.token, journal=False, chunk_digest=digest
    ) as client:
        result = benchmark.pedantic(
            client.create_chunked_upload,
            args=(big_file,),
            setup=reference,
            rounds=ROUNDS,
            iterations=1,
            warmup_rounds=1,
        )
    assert result["size"] == size and result.get("checksum") in (None, file_md5)
    rate, md5_rate = size / benchmark.stats.stats.median / 1e6, size / reference.median / 1e6
    THROUGHPUT[f"{_size(size)} to the discard server: chunk digest {digest}"] = rate
    THROUGHPUT[f"  hashlib.md5 of the same file, in turn with digest {digest}"] = md5_rate
    number, limit = ("1", 0.90) if digest == "md5" else (f"2 ({digest})", 0.95)
    what = "default (Content-MD5 per chunk)" if digest == "md5" else f"chunk digest {digest}"
    detail = f"{rate:.0f} MB/s / hashlib.md5 {md5_rate:.0f} MB/s, each the median of {ROUNDS} rounds taken in turn"
    record_target(
        Target(number, f"{_size(size)} -> discard server, {what}", rate / md5_rate, limit, True, detail=detail)
    )


def test_client_cpu(big_file, discard_server, file_md5: str) -> None:
    """Target 3: the uploading process's CPU (xxh3 or no chunk digest) against hashing the file once."""
    md5 = file_md5
    cases = {
        "hashlib.md5 of the file": lambda: _child(MD5, big_file),
        **{
            digest: (lambda digest=digest: _upload_child(discard_server, digest, [big_file]))
            for digest in ("xxh3", "none", "md5")
        },
    }
    _child(MD5, big_file)  # warm-up: the page cache, the interpreter's files
    reports = _interleaved(cases, CPU_ROUNDS)
    assert all(r["digests"] == [md5] for r in reports["hashlib.md5 of the file"])
    cpu = {name: statistics.median(_cpu(r) for r in runs) for name, runs in reports.items()}
    reference = cpu["hashlib.md5 of the file"]
    split = {
        name: "user {:.2f} + sys {:.2f} s".format(
            statistics.median(r["after"]["user"] - r["before"]["user"] for r in runs),
            statistics.median(r["after"]["sys"] - r["before"]["sys"] for r in runs),
        )
        for name, runs in reports.items()
    }
    for digest in ("xxh3", "none"):
        record_target(
            Target(
                f"3 ({digest})",
                f"{_size(big_file.stat().st_size)}, chunk digest {digest}: client CPU / one hashlib.md5",
                cpu[digest] / reference,
                1.15,
                False,
                detail=f"upload {cpu[digest]:.2f} s ({split[digest]}) / hashlib.md5 {reference:.2f} s"
                f" ({split['hashlib.md5 of the file']}); median of {CPU_ROUNDS}",
            )
        )
    for name, seconds in cpu.items():
        label = name if name.startswith("hashlib") else f"upload, chunk digest {name}"
        record_note(
            "client CPU, one file to the discard server (subprocess, median of rounds)",
            f"{label:<28} {seconds:5.2f} s  ({split[name]})  {seconds / reference:5.2f}x hashlib.md5 of the file",
        )


def test_peak_rss(discard_server, sparse_files) -> None:
    """Target 4: the uploading process's peak RSS for a sparse 8 GiB file, and for a 1 GiB one."""
    cases = {
        name: (lambda path=path: _upload_child(discard_server, "md5", [path])) for name, path in sparse_files.items()
    }
    reports = _interleaved(cases, CPU_ROUNDS)
    peak = {name: [r["after"]["hwm"] / 1e6 for r in runs] for name, runs in reports.items()}
    maxrss = {name: max(r["after"]["maxrss"] for r in runs) / 1e6 for name, runs in reports.items()}
    big, small = statistics.median(peak["8 GiB"]), statistics.median(peak["1 GiB"])
    imported = statistics.median(r["before"]["hwm"] / 1e6 for runs in reports.values() for r in runs)
    rates = {
        name: statistics.median(SPARSE_SIZES[name] / r["wall"] / 1e6 for r in runs) for name, runs in reports.items()
    }
    record_target(
        Target(
            "4 (peak)",
            "8 GiB sparse file: peak RSS of the uploading process",
            big,
            80.0,
            False,
            unit="MB",
            detail=f"VmHWM 8 GiB: {', '.join(f'{p:.1f}' for p in peak['8 GiB'])} MB at {rates['8 GiB']:.0f} MB/s;"
            f" 1 GiB: {', '.join(f'{p:.1f}' for p in peak['1 GiB'])} MB at {rates['1 GiB']:.0f} MB/s;"
            f" {imported:.1f} MB of it before the upload began (interpreter and imports);"
            f" ru_maxrss said {maxrss['8 GiB']:.1f} / {maxrss['1 GiB']:.1f} MB (the parent's peak, see above)",
        )
    )
    record_target(
        Target(
            "4 (flat)",
            "peak RSS, 8 GiB minus 1 GiB (same = within one 8 MiB window)",
            big - small,
            WINDOW / 1e6,
            False,
            unit="MB",
            detail=f"median peaks {big:.1f} MB - {small:.1f} MB",
        )
    )


def test_many_files(benchmark, file_set, discard_server) -> None:
    """Target 5: 8 x 256 MiB at concurrency 2, against the same files one at a time, in turn."""
    total = sum(p.stat().st_size for p in file_set)
    with BackendClient(discard_server.base_url, access_token=discard_server.token, journal=False) as client:

        def upload(concurrency: int) -> dict[str, Any]:
            results = client.upload_files(file_set, concurrency=concurrency)
            assert not results["failed"], results["failed"][:3]
            assert sum(r["result"]["size"] for r in results["successful"]) == total
            return results

        def one_at_a_time() -> None:
            discard_server.clear_uploads()
            upload(1)

        reference = _InTurn(one_at_a_time, discard_server.clear_uploads)
        benchmark.pedantic(upload, args=(2,), setup=reference, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    two, one = total / benchmark.stats.stats.median / 1e6, total / reference.median / 1e6
    THROUGHPUT["8 x 256 MiB to the discard server: concurrency 2"] = two
    THROUGHPUT["  the same files, concurrency 1, in turn with it"] = one
    record_target(
        Target(
            "5",
            "8 x 256 MiB, concurrency 2: aggregate / one file at a time",
            two / one,
            1.7,
            True,
            detail=f"{two:.0f} MB/s / {one:.0f} MB/s at concurrency 1, same files, each the median of {ROUNDS}"
            " rounds taken in turn",
        )
    )


def test_hashing_cpu(big_file, file_md5: str) -> None:
    """Target 7: the CPU of both MD5s (whole file and every chunk) against one hashlib.md5 pass."""
    md5 = file_md5
    size = big_file.stat().st_size
    cases = {mode: (lambda mode=mode: _child(HASHING, mode, big_file)) for mode in HASH_MODES}
    reports = _interleaved(cases, CPU_ROUNDS)
    for mode, runs in reports.items():
        assert all(r["digest"] == (None if mode.startswith("xxhash") else md5) for r in runs), mode
    cpu = {mode: statistics.median(_cpu(r) for r in runs) for mode, runs in reports.items()}
    reference = cpu["hashlib.md5"]
    record_target(
        Target(
            "7",
            "CPU of both MD5s (update_pair) / one hashlib.md5 pass",
            cpu["engine.update_pair (two lanes)"] / reference,
            1.3,
            False,
            detail=f"update_pair {cpu['engine.update_pair (two lanes)']:.2f} s / hashlib.md5 {reference:.2f} s"
            f" over {_size(size)} in memory, median of {CPU_ROUNDS}",
        )
    )
    section = f"hashing on one core, {_size(size)} in memory (CPU only, median of rounds)"
    for mode, seconds in cpu.items():
        record_note(
            section,
            f"{mode:<44} {size / seconds / 1e6:7.0f} MB/s  {seconds:5.2f} s  {seconds / reference:5.2f}x hashlib.md5",
        )


def _median(runs: list[dict[str, Any]], of: Callable[[dict[str, Any]], float]) -> float:
    return statistics.median(of(r) for r in runs)


def _split(runs: list[dict[str, Any]]) -> str:
    """The median user and system seconds of ``runs``, as a note says them."""
    user = _median(runs, lambda r: r["after"]["user"] - r["before"]["user"])
    system = _median(runs, lambda r: r["after"]["sys"] - r["before"]["sys"])
    return f"user {user:.2f} + sys {system:.2f} s"


def test_batch_with_defaults(file_set, discard_server) -> None:
    """Targets 8 and 9: 8 x 256 MiB, ``upload_files`` with its defaults, against one hashlib.md5 pass, in turn."""
    total = sum(p.stat().st_size for p in file_set)
    cases = {
        "hashlib.md5": lambda: _child(MD5, *file_set),
        "upload_files": lambda: _upload_child(discard_server, "md5", file_set, concurrency="default"),
    }
    _interleaved(cases, 1)  # warm-up: the page cache, the interpreter's files, the server's first uploads
    reports = _interleaved(cases, CPU_ROUNDS)
    assert len({tuple(r["digests"]) for r in reports["hashlib.md5"]}) == 1
    wall = {name: _median(runs, lambda r: r["wall"]) for name, runs in reports.items()}
    cpu = {name: _median(runs, _cpu) for name, runs in reports.items()}
    rate = total / wall["upload_files"] / 1e6
    # One core's rate is the bytes over the pass's CPU seconds: on a shared machine a lone thread is
    # descheduled now and then, which its wall time would count and a batch of threads hides.
    md5_rate, md5_wall_rate = total / cpu["hashlib.md5"] / 1e6, total / wall["hashlib.md5"] / 1e6
    workload = f"{FILE_SET[0]} x {_size(FILE_SET[1])}, upload_files defaults"
    record_target(
        Target(
            "8",
            f"{workload}: MB/s / one hashlib.md5",
            rate / md5_rate,
            2.0,
            True,
            detail=f"{rate:.0f} MB/s (wall) / hashlib.md5 {md5_rate:.0f} MB/s (bytes / its CPU seconds;"
            f" {md5_wall_rate:.0f} by its wall time) over the same files, each the median of {CPU_ROUNDS}"
            " subprocess runs taken in turn",
        )
    )
    record_target(
        Target(
            "9",
            "same batch: client CPU / one hashlib.md5 pass",
            cpu["upload_files"] / cpu["hashlib.md5"],
            0.6,
            False,
            detail=f"upload {cpu['upload_files']:.2f} s ({_split(reports['upload_files'])}) / hashlib.md5"
            f" {cpu['hashlib.md5']:.2f} s ({_split(reports['hashlib.md5'])}); median of {CPU_ROUNDS}",
        )
    )


def test_small_files_at_50ms_rtt(small_files, verifying_server) -> None:
    """Target 11: 500 x 256 KiB at 50 ms RTT, ``upload_files`` against the documentation's batch example, in turn."""
    server = verifying_server
    with Shaper(server.base_url, delay=DELAY) as shaper:

        def published() -> dict[str, Any]:
            server.clear_uploads()
            report = _child(PUBLISHED, shaper.url, server.token, PUBLISHED_THREADS, *small_files)
            return _checked(report, small_files)

        def engine() -> dict[str, Any]:
            server.clear_uploads()
            return _upload_child(server, "md5", small_files, concurrency="default", via=shaper)

        cases = {"published": lambda: _through(shaper, published), "upload_files": lambda: _through(shaper, engine)}
        reports = _interleaved(cases, CPU_ROUNDS)
    count = len(small_files)
    rates = {name: _median(runs, lambda r: count / r["wall"]) for name, runs in reports.items()}
    connections = {name: "/".join(str(r["connections"]) for r in runs) for name, runs in reports.items()}
    record_target(
        Target(
            "11",
            f"{count} x {SMALL_SET[1] // KIB} KiB, 50 ms RTT: upload_files / published x{PUBLISHED_THREADS}",
            rates["upload_files"] / rates["published"],
            8.0,
            True,
            detail=f"{rates['upload_files']:.1f} files/s / published {rates['published']:.1f} files/s"
            f" (the documentation's batch example, ThreadPoolExecutor({PUBLISHED_THREADS})), full server"
            f" through the relay, each the median of {CPU_ROUNDS} subprocess runs taken in turn; connections opened"
            f" per run: upload_files {connections['upload_files']}, published {connections['published']}",
        )
    )


def test_big_file_shaped(big_file, verifying_server, file_md5: str) -> None:
    """Target 12: one big file at 50 ms RTT, capped at 2 Gbit/s, to the full server: throughput / the cap."""
    size, server = big_file.stat().st_size, verifying_server
    with Shaper(server.base_url, delay=DELAY, rate=CAP) as shaper:

        def upload() -> dict[str, Any]:
            server.clear_uploads()
            return _through(shaper, lambda: _upload_child(server, "md5", [big_file], via=shaper))

        upload()  # warm-up: the server's first touch of its tmpfs pages
        reports = [upload() for _ in range(CPU_ROUNDS)]
    assert all(r["records"][0]["checksum"] == file_md5 for r in reports)
    rates = [size / r["wall"] / 1e6 for r in reports]
    rate = statistics.median(rates)
    record_target(
        Target(
            "12",
            f"{_size(size)}, 50 ms RTT, 2 Gbit/s cap, full server: MB/s / cap",
            rate / (CAP / 1e6),
            0.85,
            True,
            detail=f"{rate:.0f} MB/s / the cap {CAP / 1e6:.0f} MB/s, median of {CPU_ROUNDS}"
            f" ({', '.join(f'{r:.0f}' for r in rates)} MB/s); connections opened per upload:"
            f" {'/'.join(str(r['connections']) for r in reports)}",
        )
    )


def test_where_the_cpu_goes(big_file, file_set, discard_server) -> None:
    """No target: one more upload of each kind, with per-thread CPU, to say what bounds the targets above."""
    pid = _server_pid(discard_server)
    cores = len(os.sched_getaffinity(0))
    record_note(
        WHERE,
        f"{'upload (discard server)':<34} {'MB/s':>5} {'wall s':>6} | in cores (CPU s / wall s):"
        f" {'hasher':>6} {'its sys':>7} {'sender':>6} {'main':>6} {'client':>6} {'server':>6} {'machine':>7}"
        f" {'steal':>5}",
    )
    size = _size(big_file.stat().st_size)
    kinds = [(f"{size}, chunk digest {d}", d, [big_file], 0) for d in ("md5", "xxh3", "none")]
    kinds += [(f"8 x 256 MiB, concurrency {c}, {d}", d, file_set, c) for c, d in ((1, "md5"), (2, "md5"), (2, "xxh3"))]
    kinds.append(("8 x 256 MiB, upload_files defaults", "md5", file_set, "default"))
    for label, digest, paths, concurrency in kinds:
        report = _upload_child(discard_server, digest, paths, concurrency=concurrency, pid=pid)
        wall = report["wall"]
        threads = {role: sum(split) for role, split in report["threads"].items() if role != "cpu-sampler"}
        hasher = threads.get("chunk-hasher", 0.0)
        hasher_sys = report["threads"].get("chunk-hasher", [0.0, 0.0])[1]
        # The threads that send: the caller's own for one file, the pool's for a batch (whose
        # main thread only hashes the files with xxh3 first, to send identical ones once),
        # and those that carry a file's parallel chunks.
        sender = threads.get("upload", 0.0) if concurrency else threads.get("MainThread", 0.0)
        sender += threads.get("chunk-sender", 0.0)
        main = threads.get("MainThread", 0.0) if concurrency else 0.0
        rate = sum(p.stat().st_size for p in paths) / wall / 1e6
        record_note(
            WHERE,
            f"{label:<34} {rate:5.0f} {wall:6.2f} | {'':>26}"
            f" {hasher / wall:6.2f} {hasher_sys / wall:7.2f} {sender / wall:6.2f} {main / wall:6.2f}"
            f" {sum(threads.values()) / wall:6.2f} {report['server'] / wall:6.2f}"
            f" {report['machine']['busy'] / wall:7.2f} {report['machine']['steal'] / wall:5.2f}",
        )
    record_note(
        WHERE,
        f"(client: all its threads but the sampler's; machine: busy cores of the {cores} this process may use,"
        " whoever used them; ticks of 10 ms)",
    )

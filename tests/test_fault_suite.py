"""Randomized fault injection: ``create_chunked_upload`` through a breaking network and a crashing server.

Every run plays at least 20 seeded scenarios. Each uploads a fresh random file
with a small chunk size through ``tests.faults.Proxy`` to the reference server,
which runs in a subprocess on a fixed port with its own data directory. The
proxy tears request bodies, loses answers (of the create, of chunks, of
finalize), answers 503/429/5xx bursts and stalls past the client's read
timeout; the server adds its own 429s when it has a rate limit. Every fifth
scenario also ``kill -9``s the server mid-upload and restarts it on the same
port and data directory, in turn: during a chunk, before a chunk, before and
during finalize (these three also losing the unsynced tail of the open
upload's file, as a power cut would), during the create. Every kind of fault
is forced at least once per run; more are drawn at random within the client's
retry budgets, so a failure means a bug, not bad luck. Every scenario must end
with the upload returned normally, the stored file byte-identical to the
source, one completed record for it (and no twin left open, when the server
deduplicates creates) and progress that never went backwards nor past the
file's size.

The seed comes from ``FAULT_SEED`` or is drawn and printed; every failure
message names it with the scenario number, so a failure replays with
``FAULT_SEED=<seed> [FAULT_ONLY=<n,...>] pytest tests/test_fault_suite.py -s``.
Scenarios never stop at the first failure: all run, then the test fails with
every failure listed. This module only drives and observes: it must not
change the client or the server.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import math
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from engine.retry import RetryPolicy
from synapse_sdk.clients.backend import BackendClient
from tests.faults import Fault, Proxy, cut_request, drop_response, stall, status

pytestmark = pytest.mark.integration

KIB = 1024
MIB = 1024 * KIB
REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "fault-suite-token"

SCENARIOS = max(20, int(os.environ.get("FAULT_SCENARIOS") or 24))
ONLY = {int(n) for n in re.findall(r"\d+", os.environ.get("FAULT_ONLY", ""))}
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 1.0
# Past the read timeout, so the client gives up on the answer before it comes.
STALL_SECONDS = READ_TIMEOUT + 0.5
# How long the server may still hold a torn request after the client saw the
# cut: under the read timeout (a retry waits on the torn request's lock that
# long), or past it (the retry times out too; costs as much as a stall).
CUT_LINGER = 0.3
LONG_LINGER = READ_TIMEOUT + 0.5
MAX_FILE = 4 * MIB
CHUNK_SIZES = (16 * KIB, 512 * KIB)
# Each scenario is bounded by the client's own timeouts and retry budget; this
# is the backstop should one of them be wrong.
SCENARIO_DEADLINE = 60.0
SERVER_READY_DEADLINE = 20.0
KILL_EVERY = 5  # scenarios 3, 8, 13, ... kill the server
# Kills in turn, so that every run has each: (step, when, power cut). "before":
# the request finds the server dead (502), so the client's retries meet the
# restarted server; "during": the server dies a moment after the request reached it.
KILLS: tuple[tuple[str, str, bool], ...] = (
    ("chunk", "during", False),
    ("chunk", "before", True),
    ("finalize", "before", True),
    ("create", "during", False),
    ("finalize", "during", True),
)
RATE_LIMIT = 150  # requests per second per token, when the server can limit
RATE_BURST = 15

# The faults stay inside the client's budgets, so that a failure means a bug,
# not an exhausted retry policy: at most this many faults in a row (the policy
# allows 8 attempts), lost answers between two stored chunks (the client allows
# 8), stalls per scenario (each costs a read timeout), and random extras.
MAX_CONSECUTIVE = 4
MAX_LOST_SINCE_PROGRESS = 3
MAX_STALLS = 2
MAX_RANDOM = 6


def fast_retry() -> RetryPolicy:
    return RetryPolicy(attempts=8, backoff=0.01, cap=0.05, retry_after_cap=0.1)


def restart_retry(jitter: Callable[[], float]) -> RetryPolicy:
    # Covers a restart: with the jitter kept in [0.5, 1), 40 attempts wait at
    # least ~3.8 s in all; the server is back after its pause (at most 0.3 s)
    # and its start (about 0.1 s here, SERVER_READY_DEADLINE at worst).
    return RetryPolicy(attempts=40, backoff=0.05, cap=0.2, retry_after_cap=0.1, jitter=jitter)


# -- the reference server in a subprocess -------------------------------------


def server_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def rate_limit_options() -> tuple[str, ...]:
    """``serve`` options for a per-token rate limit, if this server has them: real 429s on top of injected ones."""
    command = [sys.executable, "-m", "synapse_sdk.cli", "serve", "--help"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, env=server_env())
    if "--rate-limit" not in shown.stdout or "--rate-burst" not in shown.stdout:
        return ()
    # Below the client's pace with small chunks, so it is throttled now and
    # then; a throttled client waits 0.1 s, by when the bucket holds 15 again.
    return ("--rate-limit", f"{RATE_LIMIT}/s", "--rate-burst", str(RATE_BURST))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``python -m synapse_sdk.cli serve`` on a fixed port and data directory, killable and restartable."""

    def __init__(self, data_dir: Path, port: int, options: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = port
        self.options = options
        self.url = f"http://127.0.0.1:{port}"
        self.starts = 0
        self.restart_seconds: list[float] = []
        self.stats_total: Counter[str] = Counter()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        started = time.monotonic()
        self.starts += 1
        log_path = self.data_dir.parent / f"server-{self.starts}.log"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in kill()/stop()
        env = server_env()
        command = [sys.executable, "-m", "synapse_sdk.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir), "--token", TOKEN, *self.options]
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env
        )
        deadline = started + SERVER_READY_DEADLINE
        while b"Serving chunked uploads on" not in log_path.read_bytes():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._reap(signal.SIGKILL)
                raise RuntimeError(f"the reference server did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.02)
        self.restart_seconds.append(time.monotonic() - started)

    def kill(self) -> None:
        """``kill -9``; returns once the process is gone."""
        self.collect_stats()  # its counters die with it
        with self._lock:
            self._reap(signal.SIGKILL)

    def collect_stats(self) -> None:
        """Add the server's ``/_stats/`` counters (kept since its start) to ``stats_total``, if it has them."""
        stats = server_stats(self.url)
        if stats is not None:
            self.stats_total.update({k: v for k, v in stats.items() if isinstance(v, int)})

    def restart(self, pause: float, before_restart: Callable[[], None] = lambda: None) -> None:
        """Wait ``pause``, run ``before_restart`` (the server is down), start again on the same port."""
        with self._lock:
            time.sleep(pause)
            before_restart()
            self._start()

    def stop(self) -> None:
        with self._lock:
            self._reap(signal.SIGTERM)

    def _reap(self, sig: int) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(sig)
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True)
class Row:
    id: int
    filename: str
    offset: int
    total: int
    status: int


def rows_for(data_dir: Path, filename: str) -> list[Row]:
    database = sqlite3.connect(data_dir / "uploads.sqlite3", timeout=10)
    try:
        found = database.execute(
            "SELECT id, filename, offset, total, status FROM uploads WHERE filename = ? ORDER BY id", (filename,)
        ).fetchall()
    finally:
        database.close()
    return [Row(*row) for row in found]


def auth() -> dict[str, str]:
    return {"Synapse-Access-Token": f"Token {TOKEN}"}


def server_deduplicates_creates(url: str) -> bool:
    """Whether a repeated create with the same ``Idempotency-Key`` answers the same upload."""
    headers = {**auth(), "Content-Range": "bytes 0-0/2", "Idempotency-Key": f"probe-{os.urandom(8).hex()}"}
    ids = []
    for _ in range(2):
        answer = requests.put(
            url + "/chunked_upload/",
            files={"file": ("chunk", b"p")},
            data={"filename": "idempotency-probe.bin"},
            headers=headers,
            timeout=10,
        )
        if answer.status_code != 200:
            return False
        ids.append(answer.json().get("id"))
    return ids[0] == ids[1]


def server_stats(url: str) -> dict[str, Any] | None:
    """The server's ``/_stats/`` counters (since its last start), if it has them."""
    try:
        answer = requests.get(url + "/_stats/", headers=auth(), timeout=2)
    except requests.RequestException:
        return None
    if answer.status_code != 200:
        return None
    try:
        stats = answer.json()
    except ValueError:
        return None
    return stats if isinstance(stats, dict) else None


# -- scenarios ----------------------------------------------------------------

_UPLOAD_PATH = re.compile(r"/chunked_upload/[^/?]+/?")

# Forced faults, in pairs, so every kind is injected in every run. A pair
# with a fault on "state" (the GET after a lost answer) also loses an answer.
FORCED_PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("create", "drop"), ("chunk", "cut")),
    (("finalize", "drop"), ("state", "stall")),
    (("create", "cut"), ("chunk", "burst")),
    (("chunk", "drop"), ("state", "burst")),
    (("create", "burst"), ("finalize", "cut")),
    (("chunk", "stall"), ("finalize", "burst")),
    (("create", "stall"), ("finalize", "stall")),
)
LOST_KINDS = frozenset({"drop", "cut", "stall"})


def target_of(method: str, path: str) -> str:
    """Which protocol step a request is: create, chunk, finalize, state or other."""
    path = path.split("?", 1)[0]
    if path.rstrip("/") == "/chunked_upload":
        return "create" if method == "PUT" else "other"
    if _UPLOAD_PATH.fullmatch(path):
        return {"PUT": "chunk", "POST": "finalize", "GET": "state"}.get(method, "other")
    return "other"


@dataclass
class Scenario:
    number: int
    seed: int
    size: int
    chunk_size: int
    fault_rate: float
    forced: dict[tuple[str, int], str]
    kill_at: tuple[str, int] | None
    kill_mode: str
    kill_delay: float
    restart_pause: float
    power_cut: bool

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    @property
    def filename(self) -> str:
        return f"fault-{self.seed}-{self.number:03d}.bin"

    def describe(self) -> str:
        kill = "no kill"
        if self.kill_at is not None:
            kill = f"kill -9 {self.kill_mode} {self.kill_at[0]} #{self.kill_at[1]}"
        if self.power_cut:
            kill += " with power cut"
        forced = ", ".join(f"{kind} on {target} #{n}" for (target, n), kind in self.forced.items())
        return (
            f"size={self.size} chunk_size={self.chunk_size} chunks={self.chunks} "
            f"fault_rate={self.fault_rate:.2f} forced=[{forced}] {kill}"
        )


def make_scenario(seed: int, number: int) -> Scenario:
    rng = random.Random(f"scenario-{seed}-{number}")
    chunk_size = int(math.exp(rng.uniform(math.log(CHUNK_SIZES[0]), math.log(CHUNK_SIZES[1]))))
    if rng.random() < 0.15:
        size = rng.randint(1, chunk_size)  # one chunk: the create is the only data request
    elif rng.random() < 0.2:
        size = min(MAX_FILE, rng.randint(2, 8) * chunk_size + rng.choice((-1, 0, 1)))  # chunk boundaries
    else:
        size = int(math.exp(rng.uniform(math.log(chunk_size + 1), math.log(MAX_FILE))))
    chunk_puts = -(-size // chunk_size) - 1
    forced: dict[tuple[str, int], str] = {}
    for target, kind in FORCED_PAIRS[number % len(FORCED_PAIRS)]:
        if target == "chunk" and chunk_puts == 0:
            target = "create"  # a one-chunk file has no chunk PUT after the create
        occurrence = rng.randint(1, chunk_puts) if target == "chunk" else 1
        forced.setdefault((target, occurrence), kind)
    kill_at, kill_mode, power_cut = None, "", False
    if number % KILL_EVERY == KILL_EVERY - 2:
        where, kill_mode, power_cut = KILLS[(number // KILL_EVERY) % len(KILLS)]
        if where == "chunk" and chunk_puts == 0:
            where = "finalize"  # a one-chunk file: the next request that finds the upload open
        kill_at = (where, rng.randint(1, chunk_puts) if where == "chunk" else 1)
    return Scenario(
        number=number,
        seed=seed,
        size=size,
        chunk_size=chunk_size,
        fault_rate=rng.uniform(0.02, 0.25),
        forced=forced,
        kill_at=kill_at,
        kill_mode=kill_mode,
        kill_delay=rng.uniform(0.0, 0.03),
        restart_pause=rng.uniform(0.05, 0.3),
        power_cut=power_cut,
    )


class FaultPlan:
    """The proxy's plan for one scenario: forced faults, seeded random ones, and the kill.

    Called from proxy threads; the client sends one request at a time, so the
    order of calls (and so the faults) follows from the seed.
    """

    def __init__(self, scenario: Scenario, on_kill: Callable[[], None]) -> None:
        self.scenario = scenario
        self.rng = random.Random(f"faults-{scenario.seed}-{scenario.number}")
        self.forced = dict(scenario.forced)
        self.on_kill = on_kill
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.burst: deque[Fault] = deque()
        self.consecutive = 0
        self.lost_since_progress = 0
        self.stalls = 0
        self.random_faults = 0
        self.killed = False
        self.injected: list[tuple[int, str, str]] = []

    def __call__(self, index: int, method: str, path: str, headers: Mapping[str, str]) -> Fault | None:
        with self.lock:
            target = target_of(method, path)
            self.seen[target] += 1
            occurrence = self.seen[target]
            fault = self._decide(target, occurrence, headers)
            if fault is None:
                self.consecutive = 0
                if target == "chunk":
                    self.lost_since_progress = 0
            else:
                self.consecutive += 1
                if not fault.kind.startswith("status"):
                    self.lost_since_progress += 1
                if fault.kind == "stall":
                    self.stalls += 1
                self.injected.append((index, f"{method} {target}", fault.kind))
            if not self.killed and (target, occurrence) == self.scenario.kill_at:
                self.killed = True
                self.on_kill()
            return fault

    def _allowed(self, kind: str, *, forced: bool = False) -> bool:
        if self.consecutive >= MAX_CONSECUTIVE:
            return False
        if kind in LOST_KINDS and self.lost_since_progress >= MAX_LOST_SINCE_PROGRESS:
            return False
        # Forced stalls are at most two and always happen; random ones fill the rest of the budget.
        return forced or not (kind == "stall" and self.stalls >= MAX_STALLS)

    def _decide(self, target: str, occurrence: int, headers: Mapping[str, str]) -> Fault | None:
        if self.burst:
            if self._allowed("burst"):
                return self.burst.popleft()
            self.burst.clear()
        kind = self.forced.pop((target, occurrence), None)
        if kind is not None and not self._allowed(kind, forced=True):
            # Over a budget right now: the same fault on the next such request.
            self.forced[(target, occurrence + 1)] = kind
            kind = None
        drawn = target != "other" and self.random_faults < MAX_RANDOM
        if kind is None and drawn and self.rng.random() < self.scenario.fault_rate:
            kind = self.rng.choices(("drop", "cut", "burst", "stall"), (3, 3, 3, 1))[0]
            if self._allowed(kind):
                self.random_faults += 1
            else:
                kind = None
        if kind is None:
            return None
        if kind == "drop":
            return drop_response()
        if kind == "cut":
            length = int(headers.get("content-length", "0") or 0)
            # Half the cuts reach the server late, as when a client vanishes mid-body:
            # the server then still holds the torn request when the client retries.
            linger = self.rng.choice((0.0, CUT_LINGER, LONG_LINGER))
            if linger == LONG_LINGER:
                if self.stalls < MAX_STALLS:
                    self.stalls += 1
                else:
                    linger = CUT_LINGER
            return cut_request(self.rng.randrange(length) if length > 0 else 0, linger=linger)
        if kind == "stall":
            return stall(STALL_SECONDS)
        count = self.rng.randint(2, MAX_CONSECUTIVE - self.consecutive) if self.consecutive < 3 else 1
        faults = [self._status() for _ in range(count)]
        self.burst.extend(faults[1:])
        return faults[0]

    def _status(self) -> Fault:
        code = self.rng.choice((503, 503, 429, 429, 500, 502, 504))
        retry_after = self.rng.choice((None, 0, 0.05, 1)) if code in (429, 503) else None
        return status(code, retry_after)


@dataclass
class Outcome:
    """What one scenario did, for the summary."""

    completed: bool = False
    bytes_lost: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    killed: bool = False
    power_cut: bool = False
    forwarded_bytes: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    answers: Counter[int] = field(default_factory=Counter)


class ScenarioFailure(AssertionError):
    pass


def bytes_differing(source: Path, stored: Path) -> int:
    """Source bytes that are not stored identically (missing or different)."""
    if not stored.exists():
        return source.stat().st_size
    lost = abs(source.stat().st_size - stored.stat().st_size)
    with open(source, "rb") as a, open(stored, "rb") as b:
        while True:
            left, right = a.read(MIB), b.read(MIB)
            if not left or not right:
                return lost
            if left != right:
                lost += sum(x != y for x, y in zip(left, right, strict=False))


def run_upload(client: BackendClient, path: Path, scenario: Scenario, progress: list[tuple[int, int]]) -> Any:
    """The upload on a worker thread with a deadline, so a hang becomes a failure, not a stuck run."""
    result: dict[str, Any] = {}

    def upload() -> None:
        try:
            result["record"] = client.create_chunked_upload(
                path, chunk_size=scenario.chunk_size, on_progress=lambda done, total: progress.append((done, total))
            )
        except BaseException as error:  # reported with its traceback by the caller
            result["error"] = error

    worker = threading.Thread(target=upload, name=f"fault-upload-{scenario.number}", daemon=True)
    worker.start()
    worker.join(SCENARIO_DEADLINE)
    if worker.is_alive():
        raise ScenarioFailure(f"create_chunked_upload did not return within {SCENARIO_DEADLINE} s")
    if "error" in result:
        raise result["error"]
    return result["record"]


def play(scenario: Scenario, server: ServerProcess, work: Path, idempotent: bool) -> tuple[Outcome, list[str]]:
    """Run one scenario; returns its outcome and the problems found (empty: passed)."""
    outcome = Outcome()
    problems: list[str] = []
    data = random.Random(f"data-{scenario.seed}-{scenario.number}").randbytes(scenario.size)
    path = work / scenario.filename
    path.write_bytes(data)
    killer_errors: list[BaseException] = []
    killers: list[threading.Thread] = []

    def power_cut() -> None:
        # A power cut loses page-cache bytes the database already counted; the
        # server's restart notices (file shorter than the record) and resumes there.
        for row in rows_for(server.data_dir, scenario.filename):
            part = server.data_dir / "uploads" / f"{row.id}.part"
            if row.status == 1 and part.exists() and part.stat().st_size > 0:
                keep = random.Random(f"cut-{scenario.seed}-{scenario.number}").randrange(part.stat().st_size)
                os.truncate(part, keep)
                outcome.power_cut = True

    def kill() -> None:
        # Called by the plan on a proxy thread, before the request is forwarded.
        def run(already_dead: bool) -> None:
            try:
                if not already_dead:
                    time.sleep(scenario.kill_delay)
                    server.kill()
                server.restart(scenario.restart_pause, power_cut if scenario.power_cut else lambda: None)
            except Exception as error:
                killer_errors.append(error)

        outcome.killed = True
        before = scenario.kill_mode == "before"
        if before:
            server.kill()  # so this very request finds the server gone
        killer = threading.Thread(target=run, args=(before,), name=f"fault-killer-{scenario.number}", daemon=True)
        killers.append(killer)
        killer.start()

    plan = FaultPlan(scenario, kill)
    jitter_rng = random.Random(f"jitter-{scenario.seed}-{scenario.number}")
    retry = fast_retry() if scenario.kill_at is None else restart_retry(lambda: 0.5 + jitter_rng.random() / 2)
    progress: list[tuple[int, int]] = []
    record: Any = None
    # A log long enough for every request of the scenario: the summary counts faults per step from it.
    with Proxy(server.url, plan, log_size=100_000) as proxy:
        try:
            options: dict[str, Any] = {}
            if "journal" in inspect.signature(BackendClient).parameters:
                # The client's resume journal is kept, but under the test's folder, not the user's cache.
                options["journal"] = work / "journal"
            client = BackendClient(
                proxy.url, TOKEN, timeout={"connect": CONNECT_TIMEOUT, "read": READ_TIMEOUT}, retry=retry, **options
            )
            with client:
                record = run_upload(client, path, scenario, progress)
        except Exception as error:
            problems.append("create_chunked_upload raised:\n" + "".join(traceback.format_exception(error)))
        finally:
            for killer in killers:
                killer.join(SERVER_READY_DEADLINE + 15)
    # Read once the proxy stopped: a stall still running has counted and noted its fault by then.
    stats, log = proxy.stats, proxy.log
    outcome.injected = Counter(stats.injected)
    outcome.forwarded_bytes = stats.body_bytes
    outcome.answers = Counter(stats.answers)
    outcome.by_target = Counter(
        f"{entry.fault}@{target_of(entry.method, entry.path)}"
        for entry in log
        if entry.fault is not None and "upstream unreachable" not in entry.outcome
    )
    for error in killer_errors:
        problems.append("the kill/restart failed:\n" + "".join(traceback.format_exception(error)))
    if not server.running:
        server.start()  # so the next scenarios still have a server

    md5 = hashlib.md5(data).hexdigest()
    if record is not None and (
        not isinstance(record, dict) or record.get("checksum") != md5 or record.get("size") != scenario.size
    ):
        problems.append(f"the returned record does not describe the file (md5 {md5}): {record!r}")
    rows = rows_for(server.data_dir, scenario.filename)
    complete = [row for row in rows if row.status == 2]
    if len(complete) != 1:
        problems.append(f"expected exactly one completed record for {scenario.filename}, found {rows}")
    if idempotent:
        still_open = [row for row in rows if row.status != 2]
        if still_open:
            problems.append(f"records left open (the server deduplicates creates): {still_open}")
    if complete:
        stored = server.data_dir / "uploads" / f"{complete[0].id}.done"
        outcome.bytes_lost = bytes_differing(path, stored)
        if outcome.bytes_lost:
            problems.append(f"{stored} differs from the source in {outcome.bytes_lost} bytes")
        if isinstance(record, dict) and record.get("id") != complete[0].id:
            problems.append(f"the client returned upload {record.get('id')}, the completed one is {complete[0].id}")
    else:
        outcome.bytes_lost = scenario.size
    done = [d for d, _ in progress]
    if any(b < a for a, b in itertools.pairwise(done)):
        problems.append(f"progress went backwards: {done}")
    if any(d > scenario.size or t != scenario.size for d, t in progress):
        problems.append(f"progress passed the file size {scenario.size}: {progress}")
    if record is not None and done[-1:] != [scenario.size]:
        problems.append(f"progress did not end at the file size {scenario.size}: {done}")
    outcome.completed = record is not None and not problems
    if problems:
        problems.append(
            "plan injected: "
            + ", ".join(f"#{i} {what}: {kind}" for i, what, kind in plan.injected)
            + "\nproxy log (last 40):\n"
            + "\n".join(f"  #{e.index} {e.method} {e.path} fault={e.fault} -> {e.outcome}" for e in log[-40:])
        )
    path.unlink()
    return outcome, problems


# -- the test -------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> int:
    chosen = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nfault suite seed: {chosen}")
    return chosen


@pytest.fixture(scope="module")
def reference_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("fault-server")
    server = ServerProcess(base / "data", free_port(), rate_limit_options())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_uploads_survive_random_faults(seed: int, reference_process: ServerProcess, tmp_path: Path) -> None:
    server = reference_process
    idempotent = server_deduplicates_creates(server.url)
    started = time.monotonic()
    numbers = [n for n in range(SCENARIOS) if not ONLY or n in ONLY]
    failures: list[str] = []
    faults: Counter[str] = Counter()
    by_target: Counter[str] = Counter()
    answers: Counter[int] = Counter()
    completed = lost = uploaded = forwarded = kills = power_cuts = 0
    for number in numbers:
        scenario = make_scenario(seed, number)
        try:
            outcome, problems = play(scenario, server, tmp_path, idempotent)
        except Exception:  # a broken harness is reported like a failed scenario, and the run goes on
            outcome, problems = Outcome(bytes_lost=scenario.size), [traceback.format_exc()]
        faults.update(outcome.injected)
        by_target.update(outcome.by_target)
        answers.update(outcome.answers)
        completed += outcome.completed
        lost += outcome.bytes_lost
        uploaded += scenario.size if outcome.completed else 0
        forwarded += outcome.forwarded_bytes
        kills += outcome.killed
        power_cuts += outcome.power_cut
        if problems:
            failures.append(f"[seed {seed} scenario {number}] {scenario.describe()}\n" + "\n".join(problems))
    restarts = ", ".join(f"{seconds:.2f}" for seconds in server.restart_seconds)
    server.collect_stats()
    received = server.stats_total.get("bytes_received")
    print(
        f"fault suite summary: seed={seed} scenarios={len(numbers)} failed={len(failures)} "
        f"uploads_completed={completed} bytes_uploaded={uploaded} bytes_lost={lost} "
        f"seconds={time.monotonic() - started:.1f}\n"
        f"  faults injected={sum(faults.values())} by kind {dict(sorted(faults.items()))}\n"
        f"  by kind@step {dict(sorted(by_target.items()))}\n"
        f"  server kill -9={kills} (power cuts {power_cuts}), starts took [{restarts}] s; "
        f"server answers {dict(sorted(answers.items()))} (its own rate limit: {' '.join(server.options) or 'none'})\n"
        f"  request body bytes through the proxy={forwarded}; idempotent create={idempotent}; "
        f"server /_stats/ summed over its lives={dict(server.stats_total) or 'not served'}"
    )
    for failure in failures:
        print(failure)
    assert not failures, f"fault suite seed {seed}: {len(failures)} of {len(numbers)} scenarios failed:\n\n" + (
        "\n\n".join(failures)
    )
    if received is not None:
        # Cross-checks the proxy's accounting: every file byte the server got
        # came through the proxy inside a request body (bar the 1-byte probes).
        assert received <= forwarded + 2, (
            f"fault suite seed {seed}: server got {received} bytes, proxy sent {forwarded}"
        )
    if not ONLY:
        # The suite tests what it claims only if every kind of fault happened.
        missing = {"cut_request", "drop_response", "stall"} - set(faults)
        missing |= set() if any(kind.startswith("status_") for kind in faults) else {"status"}
        missing |= set() if kills else {"kill -9"}
        assert not missing, f"fault suite seed {seed}: no {sorted(missing)} injected in {len(numbers)} scenarios"

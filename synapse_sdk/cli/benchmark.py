"""What ``synapse-upload bench`` and ``benches/`` measure the engine against, and how they time it.

- ``baseline_upload``: the published synapse-sdk's upload algorithm,
  reproduced as the baseline. Strictly sequential, as synapse-sdk's
  ``create_chunked_upload`` is: read 50 MiB into ``bytes``,
  ``hashlib.md5().update`` it, PUT it as a multipart body built by requests,
  wait for the answer, repeat; then POST the MD5.
- ``md5_file``: one core's ``hashlib.md5`` over a file in 8 MiB blocks. An
  upload that verifies the file's MD5 cannot beat it on one file: it is the
  physical floor the engine is compared with.
- ``run_rounds`` and ``CaseResult``: warm-up rounds, then timed rounds
  interleaved across the cases; median, min and max MB/s.
- ``write_random_file``, ``scratch_dir``, ``ServerProcess``, ``clear_uploads``:
  the data and the reference server (in its own process) a benchmark needs.

It must not print, parse arguments or draw (that is ``synapse_sdk.cli.bench``,
its one user in the package; ``benches/`` is the other), nor import the rest of
the command line, and it judges no number: it measures and reports, so nothing
here may assert a timing.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "CHUNK_SIZE",
    "MD5_BLOCK",
    "CaseResult",
    "ServerProcess",
    "TimedCase",
    "baseline_upload",
    "clear_uploads",
    "md5_file",
    "run_rounds",
    "scratch_dir",
    "write_random_file",
]

#: The published SDK's chunk size.
CHUNK_SIZE = 50 * 1024 * 1024
#: Reads large enough that the Python loop costs nothing next to the hashing (as benches/bench_upload.py reads).
MD5_BLOCK = 8 * 1024 * 1024
_WRITE_BLOCK = 16 * 1024 * 1024


def baseline_upload(session: requests.Session, base_url: str, token: str, path: Path) -> dict[str, Any]:
    """Upload ``path`` as the published synapse-sdk does, and return the server's final record."""
    headers = {"Synapse-Access-Token": f"Token {token}"}
    total = os.path.getsize(path)
    md5 = hashlib.md5()
    url = f"{base_url}/chunked_upload/"
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            md5.update(chunk)
            answer = session.put(
                url,
                data={"filename": path.name},
                files={"file": chunk},
                headers={**headers, "Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{total}"},
                timeout=(5, 60),
            )
            answer.raise_for_status()
            record = answer.json()
            offset, url = record["offset"], record["url"]
    answer = session.post(url, data={"md5": md5.hexdigest()}, headers=headers, timeout=(5, 60))
    answer.raise_for_status()
    return answer.json()


def md5_file(path: str | os.PathLike[str], block: int = MD5_BLOCK) -> str:
    """The file's MD5 (hex) with ``hashlib`` on one core, read in ``block``-sized pieces."""
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        while data := f.read(block):
            md5.update(data)
    return md5.hexdigest()


def write_random_file(path: str | os.PathLike[str], size: int, block: int = _WRITE_BLOCK) -> Path:
    """Write ``size`` random bytes to ``path`` a block at a time (never the whole file in memory)."""
    path = Path(path)
    with open(path, "wb") as f:
        left = size
        while left:
            # Fresh bytes per block: nothing along the way can recognise a repeated block.
            data = os.urandom(min(block, left))
            f.write(data)
            left -= len(data)
    return path


def scratch_dir(needed: int, *, prefix: str = "synapse-bench-") -> tuple[Path, bool]:
    """A new directory on tmpfs (``/dev/shm``) when it has ``needed`` bytes free, else in the temp dir.

    Returns the directory and whether it is on tmpfs. On tmpfs the server's
    writes cost what memory costs, so the disk's speed does not drown the
    difference between clients. The caller removes the directory.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > needed:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=shm)), True
    return Path(tempfile.mkdtemp(prefix=prefix)), False


def clear_uploads(data_dir: str | os.PathLike[str]) -> None:
    """Drop the reference server's stored uploads, so rounds do not fill its disk (or tmpfs)."""
    for part in (Path(data_dir) / "uploads").glob("*"):
        part.unlink(missing_ok=True)


class ServerProcess:
    """The reference server in a subprocess: ``python -m synapse_sdk.cli serve --port 0``.

    In its own process the server has its own GIL (and, on two cores or more,
    its own core), so the client measured is not slowed by the server it talks
    to. ``start()`` returns once the server prints the URL it listens on;
    ``base_url`` and ``token`` are then set.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        token: str | None = None,
        timeout: float = 60.0,
        discard: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.discard = discard
        self.token = token or secrets.token_urlsafe(16)
        self.timeout = timeout
        self.base_url: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        # The server's last lines of output, to say why it did not start.
        self._output: collections.deque[str] = collections.deque(maxlen=20)
        self._listening = threading.Event()

    def start(self) -> ServerProcess:
        if self._process is not None:
            raise RuntimeError("the server process is already running")
        command = [sys.executable, "-m", "synapse_sdk.cli", "serve", "--port", "0"]
        # "--token=T", not "--token T": a random token may start with "-",
        # which argparse would take for an option.
        command += ["--data-dir", str(self.data_dir), f"--token={self.token}"]
        if self.discard:
            command.append("--discard")
        # The server runs this very package, wherever it was imported from (an
        # installed copy, a source tree on sys.path), not whatever the new
        # interpreter's path would find first.
        root = str(Path(__file__).resolve().parents[2])  # the directory holding synapse_sdk/
        pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": pythonpath},
        )
        # A thread drains the output for the whole run: a server that logs a lot
        # must never block on a full pipe while it is being measured.
        self._reader = threading.Thread(target=self._read, name="synapse-bench-server-output", daemon=True)
        self._reader.start()
        self._listening.wait(self.timeout)
        if self.base_url is None:
            returncode = self._process.poll()
            self.stop()
            said = " | ".join(line.strip() for line in self._output if line.strip()) or "nothing"
            how = f"exited with code {returncode}" if returncode is not None else f"did not listen in {self.timeout} s"
            raise ChildProcessError(f"the reference server {how}; it said: {said}")
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._output.append(line)
            if self.base_url is None:
                match = re.search(r"(https?://[^\s/]+)/", line)
                if match:
                    self.base_url = match.group(1)
                    self._listening.set()
        self._listening.set()  # the server exited: wake start() up

    def clear_uploads(self) -> None:
        clear_uploads(self.data_dir)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class TimedCase:
    """One thing to time: ``run()`` after ``setup()`` (untimed), over ``size`` bytes."""

    name: str
    label: str
    run: Callable[[], object]
    setup: Callable[[], object] | None = None


@dataclass(frozen=True)
class CaseResult:
    """The seconds of a case's timed rounds over ``size`` bytes; rates in MB/s (10^6 bytes)."""

    name: str
    label: str
    size: int
    seconds: tuple[float, ...]

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_mbps(self) -> float:
        # Bytes over the median time, as pytest-benchmark's median is used in benches/.
        return self.size / self.median_seconds / 1e6

    @property
    def min_mbps(self) -> float:
        return self.size / max(self.seconds) / 1e6

    @property
    def max_mbps(self) -> float:
        return self.size / min(self.seconds) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "median_mbps": round(self.median_mbps, 1),
            "min_mbps": round(self.min_mbps, 1),
            "max_mbps": round(self.max_mbps, 1),
            "seconds": [round(s, 4) for s in self.seconds],
        }


def run_rounds(
    cases: Sequence[TimedCase],
    size: int,
    *,
    rounds: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    on_round: Callable[[int, TimedCase, float], object] | None = None,
) -> dict[str, CaseResult]:
    """Time each case ``rounds`` times after ``warmup`` untimed rounds; results by case name.

    Warm-up first, for every case: on a VM the first touch of fresh memory
    (the server's tmpfs, the client's buffers) costs more than an upload.
    Then the timed rounds go case by case in turn (A B C A B C ...), not all
    of A then all of B: on a shared, noisy machine a slow minute then hurts
    every case alike, and the ratios stay honest. ``on_round(round, case,
    seconds)`` is told of each timed round (``round`` counts from 1).
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, not {rounds} and {warmup}")
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must differ: {names}")
    for case in cases:
        for _ in range(warmup):
            _once(case, clock)
    seconds: dict[str, list[float]] = {case.name: [] for case in cases}
    for number in range(1, rounds + 1):
        for case in cases:
            taken = _once(case, clock)
            seconds[case.name].append(taken)
            if on_round is not None:
                on_round(number, case, taken)
    return {case.name: CaseResult(case.name, case.label, size, tuple(seconds[case.name])) for case in cases}


def _once(case: TimedCase, clock: Callable[[], float]) -> float:
    if case.setup is not None:
        case.setup()
    started = clock()
    case.run()
    return clock() - started

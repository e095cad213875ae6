"""Benchmark fixtures: a 1 GiB file and the reference server in its own process.

The server keeps its data on tmpfs (/dev/shm) when there is room, so the
disk's fsync speed does not drown the difference between clients. Every
benchmark records its throughput; the summary prints MB/s and the ratio of
each to the baseline measured in the same run.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

GIB = 1024**3
THROUGHPUT: dict[str, float] = {}
#: Extra lines for the summary: name -> (seconds, note); divided by the fresh upload's time.
RATIOS: dict[str, tuple[float, str]] = {}
_SECONDS: dict[str, float] = {}


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 6 * GIB:
        return Path(tempfile.mkdtemp(prefix="synapse-bench-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="synapse-bench-"))


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    size = int(os.environ.get("SYNAPSE_BENCH_BYTES", GIB))
    path = tmp_path_factory.mktemp("bench") / "big.bin"
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[: size % len(block)])
    return path


@pytest.fixture(scope="session")
def bench_server():
    """The reference server in a subprocess (its own GIL and core), data on tmpfs."""
    data_dir = _scratch_dir()
    token = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synapse_sdk.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--token",
            token,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:
            match = re.search(r"(http://[\d.]+:\d+)/", line)
            if match:
                break
        else:
            raise RuntimeError("the reference server exited before it listened")
        yield match.group(1), token, data_dir
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def clear_uploads(data_dir: Path) -> None:
    """Drop stored uploads between rounds so tmpfs does not fill up."""
    for part in (data_dir / "uploads").glob("*"):
        part.unlink()


def record_throughput(name: str, benchmark, size: int) -> None:
    THROUGHPUT[name] = size / benchmark.stats.stats.median / 1e6
    _SECONDS[name] = benchmark.stats.stats.median


def pytest_terminal_summary(terminalreporter) -> None:
    if not THROUGHPUT:
        return
    terminalreporter.section("upload throughput (median of rounds)")
    terminalreporter.write_line(f"{'case':<56} {'MB/s':>8} {'x baseline':>11}")
    for name, rate in THROUGHPUT.items():
        # The baseline of a case is the one with the same prefix ("200 x 1 MiB: ...").
        prefix = name.split(": ")[0] + ": " if ": " in name else ""
        base = THROUGHPUT.get(f"{prefix}baseline (published SDK algorithm)")
        ratio = f"{rate / base:.2f}" if base else "-"
        terminalreporter.write_line(f"{name:<56} {rate:8.0f} {ratio:>11}")
    fresh = _SECONDS.get("fresh upload (for resume)")
    for name, (seconds, note) in RATIOS.items():
        if fresh:
            terminalreporter.write_line(f"{name}: {seconds:.2f} s / {fresh:.2f} s = {seconds / fresh:.3f} ({note})")

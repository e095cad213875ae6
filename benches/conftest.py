"""Benchmark fixtures: a 1 GiB file, the reference server in its own process, and the summary.

The server keeps its data on tmpfs (/dev/shm) when there is room, so the
disk's fsync speed does not drown the difference between clients. It comes
in two kinds: ``verifying_server`` (or ``bench_server``, its URL, token and
data directory) stores and verifies as a real server does,
``discard_server`` checks the protocol and throws the bytes away, so what is
measured is the client alone. Both are ``synapse_sdk.cli.benchmark.ServerProcess``.

Every benchmark records what it measured; the summary prints MB/s and the
ratio of each to the baseline measured in the same run, and the performance
targets with the ratio measured against each. Nothing here judges a number:
a target missed is reported, never failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from synapse_sdk.cli.benchmark import ServerProcess, scratch_dir, write_random_file

# A local Ray binds its services to the machine's address unless told it is no
# cluster (Ray reads this when imported; it ignores ray.init(_node_ip_address=
# "127.0.0.1")). The tests' Ray then stays on loopback, as all their traffic must.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Nothing but this process reaches a loopback Ray: no token, and none written to ~/.ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

GIB = 1024**3
THROUGHPUT: dict[str, float] = {}
#: Extra lines for the summary: name -> (seconds, note); divided by the fresh upload's time.
RATIOS: dict[str, tuple[float, str]] = {}
_SECONDS: dict[str, float] = {}
#: Room the stored uploads of one round may take on the server (bench_batch's 8 x 256 MiB, with margin).
_SERVER_ROOM = 6 * GIB


@dataclass(frozen=True)
class Target:
    """One row of the performance targets: what was measured against what was asked.

    ``at_least`` says which way is good: ``measured >= limit`` (a throughput
    ratio) or ``measured <= limit`` (a CPU ratio, a memory peak).
    """

    number: str
    workload: str
    measured: float
    limit: float
    at_least: bool
    unit: str = "x"
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    def _value(self, value: float) -> str:
        return f"{value:.2f}x" if self.unit == "x" else f"{value:.1f} {self.unit}"

    @property
    def shown(self) -> str:
        return self._value(self.measured)

    @property
    def wanted(self) -> str:
        return ("≥ " if self.at_least else "≤ ") + self._value(self.limit)

    @property
    def margin(self) -> str:
        """How far from the target, signed so that positive is on the good side."""
        ahead = self.measured - self.limit if self.at_least else self.limit - self.measured
        return ("+" if ahead >= 0 else "-") + self._value(abs(ahead))


#: The targets measured in this run, by number ("1", "2 (xxh3)", ...), in the order recorded.
TARGETS: dict[str, Target] = {}
#: Lines explaining where the time and the CPU went, by section title.
NOTES: dict[str, list[str]] = {}


def record_target(target: Target) -> None:
    TARGETS[target.number] = target


def record_note(section: str, line: str) -> None:
    NOTES.setdefault(section, []).append(line)


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    size = int(os.environ.get("SYNAPSE_BENCH_BYTES", GIB))
    return write_random_file(tmp_path_factory.mktemp("bench") / "big.bin", size)


@contextlib.contextmanager
def _server(discard: bool) -> Iterator[ServerProcess]:
    data_dir, _ = scratch_dir(_SERVER_ROOM)
    try:
        with ServerProcess(data_dir, discard=discard) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def verifying_server() -> Iterator[ServerProcess]:
    """The full reference server (stores, verifies, fsyncs) in a subprocess (its own GIL and core), data on tmpfs."""
    with _server(discard=False) as server:
        yield server


@pytest.fixture(scope="session")
def bench_server(verifying_server: ServerProcess) -> tuple[str, str, Path]:
    """``(url, token, data_dir)`` of ``verifying_server``."""
    assert verifying_server.base_url is not None
    return verifying_server.base_url, verifying_server.token, verifying_server.data_dir


@pytest.fixture(scope="session")
def discard_server() -> Iterator[ServerProcess]:
    """The reference server in discard mode: protocol checked, bytes counted and dropped, nothing verified."""
    with _server(discard=True) as server:
        yield server


def record_throughput(name: str, benchmark, size: int) -> None:
    THROUGHPUT[name] = size / benchmark.stats.stats.median / 1e6
    _SECONDS[name] = benchmark.stats.stats.median


def _throughput_section(terminalreporter) -> None:
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


def _targets_section(terminalreporter) -> None:
    terminalreporter.section("targets (measured in this run against a reference from the same run)")
    terminalreporter.write_line(f"{'#':<10} {'workload':<58} {'measured':>9} {'target':>10} {'met?':>5} {'by':>9}")
    for t in TARGETS.values():
        terminalreporter.write_line(
            f"{t.number:<10} {t.workload:<58} {t.shown:>9} {t.wanted:>10} {'yes' if t.met else 'NO':>5} {t.margin:>9}"
        )
    for t in TARGETS.values():
        if t.detail:
            terminalreporter.write_line(f"  {t.number}: {t.detail}")


def pytest_terminal_summary(terminalreporter) -> None:
    if THROUGHPUT:
        _throughput_section(terminalreporter)
    if TARGETS:
        _targets_section(terminalreporter)
    for section, lines in NOTES.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)

"""Upload files to a server and print the uploading process's CPU, peak RSS and per-thread CPU, as JSON.

``python -m benches.workloads.upload URL TOKEN DIGEST CONCURRENCY SERVER_PID PATH...``

- ``DIGEST``: the client's ``chunk_digest`` (``md5``, ``xxh3``, ``none``).
- ``CONCURRENCY``: 0 sends ``PATH`` (one) with ``create_chunked_upload``;
  a number sends every ``PATH`` with ``upload_files(concurrency=...)``, and
  ``default`` with ``upload_files(paths)``, its defaults (whatever they are).
- ``SERVER_PID``: 0 measures only the process's usage; a pid also samples
  the CPU of each of this process's threads every 20 ms, and reads that
  server's and the machine's CPU around the upload ("where the CPU goes").

Targets 3, 4, 8, 9, 11 and 12 of ``benches/bench_targets.py`` read its usage
and wall time; the upload is all it does between the two readings. ``URL``
may be a shaping relay's (``tests/faults/shaper.py``) in front of the server.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from benches.workloads.usage import usage
from synapse_sdk.clients.backend import BackendClient

__all__ = ["Sampler", "main", "report"]

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(stat_path: str, split: bool = False) -> float | tuple[float, float]:
    """utime + stime of a ``/proc/.../stat`` file, in seconds (or the pair, with ``split``)."""
    # Fields 14 and 15 of a stat line, counted after the command, which may hold spaces.
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
    return (user, system) if split else user + system


def machine() -> dict[str, float]:
    """The whole machine's busy and stolen CPU seconds so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return {"busy": (user + nice + system + irq + softirq) / TICK, "steal": steal / TICK}


class Sampler(threading.Thread):
    """Per-thread CPU of this process; a thread's last sample stands after it ends."""

    def __init__(self, server_pid: int) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self.server_pid, self.done, self.seen, self.names = server_pid, threading.Event(), {}, {}

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            try:
                self.seen[int(tid)] = cpu_of(f"/proc/self/task/{tid}/stat", split=True)
            except OSError:
                continue  # the thread ended meanwhile
            self.names.setdefault(int(tid), names.get(int(tid), "other"))

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self.before = dict(self.seen)
        self.server_before, self.machine_before = cpu_of(f"/proc/{self.server_pid}/stat"), machine()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()
        self.sample()
        self.server = cpu_of(f"/proc/{self.server_pid}/stat") - self.server_before
        after = machine()
        self.machine = {k: after[k] - self.machine_before[k] for k in after}

    def roles(self) -> dict[str, list[float]]:
        """``{role: [user, sys]}``: the threads of one pool ("chunk-hasher_0", ...) add up."""
        roles = {}
        for tid, (user, system) in self.seen.items():
            role = re.sub(r"_\d+$", "", self.names[tid])
            was = self.before.get(tid, (0.0, 0.0))
            total = roles.setdefault(role, [0.0, 0.0])
            total[0] += user - was[0]
            total[1] += system - was[1]
        return roles


def report(before: dict[str, float], started: float, batch: Mapping[str, Any]) -> dict[str, Any]:
    """What a workload prints: usage before and now, seconds since ``started``, and each file's record or error.

    ``batch`` is a batch answer as ``upload_files`` and the documentation's
    batch example return it (``successful`` entries with a ``result``,
    ``failed`` ones with an ``error``); read it after the measured work.
    """
    wall = time.perf_counter() - started
    after = usage()
    records = [{"size": e["result"].get("size"), "checksum": e["result"].get("checksum")} for e in batch["successful"]]
    return {
        "before": before,
        "after": after,
        "wall": wall,
        "failed": [e["error"] for e in batch["failed"]],
        "records": records,
    }


def main(argv: list[str]) -> dict[str, Any]:
    """Do the upload ``argv`` describes; the report to print."""
    if len(argv) < 6:
        raise SystemExit(f"usage: python -m {__spec__.name} URL TOKEN DIGEST CONCURRENCY SERVER_PID PATH...")
    url, token, digest, concurrency, server_pid, *paths = argv
    client = BackendClient(url, access_token=token, journal=False, chunk_digest=digest)
    sampler = Sampler(int(server_pid)) if int(server_pid) else None
    before = usage()
    started = time.perf_counter()
    if sampler is not None:
        sampler.__enter__()
    if concurrency == "default":
        batch: Mapping[str, Any] = client.upload_files(paths)
    elif int(concurrency) == 0:
        batch = {"successful": [{"result": client.create_chunked_upload(paths[0])}], "failed": []}
    else:
        batch = client.upload_files(paths, concurrency=int(concurrency))
    if sampler is not None:
        sampler.__exit__()
    done = report(before, started, batch)
    if sampler is not None:
        done.update(threads=sampler.roles(), server=sampler.server, machine=sampler.machine)
    return done


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

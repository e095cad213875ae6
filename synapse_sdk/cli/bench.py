"""``synapse-upload bench``: what the engine gains on this machine, measured in one run.

It writes a file of random bytes, starts the reference server in its own
process (or uses ``--host``/``--token``), and times, round by round, the
engine's ``create_chunked_upload``, the published SDK's algorithm and one
core's ``hashlib.md5`` over the same file (the floor). It prints a table (or
JSON) of median MB/s and the engine's ratios, and with ``--plot`` draws them.

It must not leave anything behind (the file, the server's data, the server
process) nor clear anything on a server it did not start. What is measured
and how lives in ``synapse_sdk.cli.benchmark``; this module only wires it to the
command line. matplotlib is imported only for ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

import engine
from synapse_sdk.cli.arguments import parse_size, positive_int
from synapse_sdk.cli.benchmark import (
    CaseResult,
    ServerProcess,
    TimedCase,
    baseline_upload,
    md5_file,
    run_rounds,
    scratch_dir,
    write_random_file,
)
from synapse_sdk.cli.progress import human_bytes
from synapse_sdk.cli.upload import UsageError, check_server

__all__ = ["run_bench"]

WARMUP = 1
#: Room to leave beside the file and the server's one stored upload (SQLite, a chunk in flight).
_MARGIN = 256 * 1024 * 1024
_PLOT_HINT = "pip install 'synapse-upload[plot]'"


def _argument(text: str, parse: Callable[[str], int], flag: str) -> int:
    # Parsed here rather than by argparse, whose error is a usage block plus a
    # line: a bad value is one line and exit code 2, as every UsageError is.
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"{flag}: {error}") from None


def _binary_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return human_bytes(size)


def _rounds(count: int) -> str:
    return f"{count} timed round{'s' if count != 1 else ''}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                # x86 says "model name"; some ARM kernels say "Model" or only "Hardware".
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
    # The cores this process may run on (a container or taskset may allow fewer than the machine has).
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _require_matplotlib(plot: Path) -> None:
    # Checked before measuring: a missing library should not cost minutes of rounds first.
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"--plot needs matplotlib: {_PLOT_HINT}") from None
    if not plot.parent.is_dir():
        raise UsageError(f"--plot: no such directory: {plot.parent}")


def _check_room(directory: str, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise UsageError(
            f"not enough room in {directory} for {what}: {human_bytes(free)} free, {human_bytes(needed)} needed"
            " (pass a smaller --size, or set TMPDIR to a roomier place)"
        )


def _checked(result: dict[str, Any], size: int, md5: str, who: str) -> None:
    # A benchmark of an upload that stored the wrong bytes would measure nothing.
    if result.get("size") not in (None, size):
        raise ValueError(f"{who}: the server stored {result.get('size')} bytes, not {size}")
    if result.get("checksum") not in (None, md5):
        raise ValueError(f"{who}: the server's checksum {result.get('checksum')} is not the file's {md5}")


def _report(results: dict[str, CaseResult], size: int, rounds: int, server: dict[str, Any]) -> dict[str, Any]:
    engine_rate = results["engine"].median_mbps
    return {
        "size": size,
        "rounds": rounds,
        "warmup_rounds": WARMUP,
        "server": server,
        "machine": {
            "cpu": _cpu_model(),
            "cores": _cores(),
            "python": platform.python_version(),
            "engine_native": bool(engine.NATIVE),
        },
        "cases": {name: result.as_dict() for name, result in results.items()},
        "ratios": {
            "engine_to_baseline": round(engine_rate / results["baseline"].median_mbps, 3),
            "engine_to_md5": round(engine_rate / results["md5"].median_mbps, 3),
        },
    }


def _table(report: dict[str, Any]) -> str:
    machine, server, cases, ratios = report["machine"], report["server"], report["cases"], report["ratios"]
    if server["embedded"]:
        where = "on tmpfs" if server["data_on_tmpfs"] else "in a temporary directory"
        server_line = f"reference server in its own process at {server['url']}, data {where}"
        if server["discard"]:
            server_line += ", discarding (protocol checked, nothing stored or verified)"
    else:
        server_line = f"{server['url']} (given with --host)"
    size, rounds = report["size"], report["rounds"]
    lines = [
        f"synapse-upload bench: one {_binary_size(size)} file ({size} bytes), {_rounds(rounds)} per case"
        f" after {report['warmup_rounds']} warm-up",
        f"server:  {server_line}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']},"
        f" engine.NATIVE={machine['engine_native']}",
        "",
        f"{'case':<40} {'median MB/s':>11} {'min':>8} {'max':>8}",
    ]
    for case in cases.values():
        lines.append(
            f"{case['label']:<40} {case['median_mbps']:>11.0f} {case['min_mbps']:>8.0f} {case['max_mbps']:>8.0f}"
        )
    lines += [
        "",
        f"engine / baseline:            {ratios['engine_to_baseline']:.2f}x",
        f"engine / one core's MD5:      {ratios['engine_to_md5']:.2f}x"
        "  (no verified upload of one file can take less time than its MD5)",
    ]
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    # Figure without pyplot: no GUI backend is chosen, no global state is touched.
    from matplotlib.figure import Figure

    cases, ratios, machine = report["cases"], report["ratios"], report["machine"]
    uploads = [cases["engine"], cases["baseline"]]
    md5 = cases["md5"]
    figure = Figure(figsize=(7.5, 4.8), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    positions = range(len(uploads))
    medians = [case["median_mbps"] for case in uploads]
    spread = [
        [case["median_mbps"] - case["min_mbps"] for case in uploads],
        [case["max_mbps"] - case["median_mbps"] for case in uploads],
    ]
    bars = axes.bar(
        positions, medians, width=0.55, color=["#2a7ab9", "#b0b0b0"], yerr=spread, capsize=6, ecolor="#444444"
    )
    axes.set_xticks(list(positions), [case["label"] for case in uploads])
    axes.axhline(md5["median_mbps"], color="#c0392b", linestyle="--", linewidth=1.5)
    axes.annotate(
        f"{md5['label']}: {md5['median_mbps']:.0f} MB/s",
        xy=(1, md5["median_mbps"]),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 4),
        textcoords="offset points",
        ha="right",
        va="bottom",
        color="#c0392b",
    )
    for bar, case in zip(bars, uploads, strict=True):
        axes.annotate(
            f"{case['median_mbps']:.0f} MB/s",
            xy=(bar.get_x() + bar.get_width() / 2, bar.get_height() / 2),
            ha="center",
            va="center",
            color="white",
            fontweight="bold",
        )
    axes.annotate(
        f"{ratios['engine_to_baseline']:.2f}x the baseline\n{ratios['engine_to_md5']:.2f}x one core's MD5",
        xy=(bars[0].get_x() + bars[0].get_width(), medians[0]),
        xytext=(8, -6),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=10,
    )
    top = max([case["max_mbps"] for case in uploads] + [md5["median_mbps"]])
    axes.set_ylim(0, top * 1.18)
    rounds = report["rounds"]
    axes.set_ylabel(f"MB/s (median of {_rounds(rounds)}; whiskers: min to max)")
    figure.suptitle(f"Uploading one {_binary_size(report['size'])} file: engine vs the published SDK's algorithm")
    where = "embedded reference server" if report["server"]["embedded"] else "server given with --host"
    axes.set_title(
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']},"
        f" engine.NATIVE={machine['engine_native']}; {where}",
        fontsize=8,
        color="#555555",
    )
    axes.spines[["top", "right"]].set_visible(False)
    figure.savefig(path)


def run_bench(args: argparse.Namespace) -> int:
    from synapse_sdk.clients.backend import BackendClient

    size = _argument(args.size, parse_size, "--size")
    rounds = _argument(args.rounds, positive_int, "--rounds")
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        _require_matplotlib(plot)
    if args.host and not args.token:
        raise UsageError("--token (or SYNAPSE_ACCESS_TOKEN) is required with --host")

    def say(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    with ExitStack() as stack:
        # The server keeps one upload at a time (cleared between rounds); when
        # tmpfs has no room for it, it shares the temp dir with the file.
        data_dir: Path | None = None
        on_tmpfs = False
        if not args.host:
            data_dir, on_tmpfs = scratch_dir(size + _MARGIN)
            stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        temp = tempfile.gettempdir()
        _check_room(temp, size + _MARGIN + (size if data_dir is not None and not on_tmpfs else 0), "the data")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="synapse-bench-")))
        say(f"writing {_binary_size(size)} of random bytes to {workdir}")
        path = write_random_file(workdir / "bench.bin", size)
        # Also pulls the file into the page cache, so the first case timed does not pay for the disk.
        md5 = md5_file(path)

        if data_dir is not None:
            server = stack.enter_context(ServerProcess(data_dir, discard=args.discard))
            host, token = server.base_url, server.token
            assert host is not None
            clear: Callable[[], object] | None = server.clear_uploads
            say(f"reference server at {host} in its own process, data in {data_dir}")
        else:
            host, token, clear = args.host.rstrip("/"), args.token, None
        client = stack.enter_context(
            BackendClient(host, access_token=token, journal=False, chunk_digest=args.chunk_digest)
        )
        check_server(client, host)
        session = stack.enter_context(requests.Session())

        def engine_once() -> None:
            _checked(client.create_chunked_upload(path), size, md5, "engine")

        def baseline_once() -> None:
            _checked(baseline_upload(session, host, token, path), size, md5, "baseline")

        def md5_once() -> None:
            if md5_file(path) != md5:
                raise ValueError(f"{path} changed while it was measured")

        engine_label = f"engine ({'native' if engine.NATIVE else 'pure Python'}, chunk digest {args.chunk_digest})"
        cases = [
            TimedCase("engine", engine_label, engine_once, clear),
            TimedCase("baseline", "baseline (published SDK algorithm)", baseline_once, clear),
            TimedCase("md5", "hashlib.md5, one core (the floor)", md5_once),
        ]
        say(f"{WARMUP} warm-up round per case, then {_rounds(rounds)}, the cases in turn")

        def on_round(number: int, case: TimedCase, seconds: float) -> None:
            say(f"round {number}/{rounds}: {case.label}: {size / seconds / 1e6:.0f} MB/s")

        results = run_rounds(cases, size, rounds=rounds, warmup=WARMUP, on_round=on_round)
        if clear is not None:
            clear()
        embedded = data_dir is not None
        server_info = {
            "url": host,
            "embedded": embedded,
            "data_on_tmpfs": on_tmpfs if embedded else None,
            "discard": bool(args.discard and embedded),
        }
        report = _report(results, size, rounds, server_info)
        print(json.dumps(report, indent=2) if args.json else _table(report), flush=True)
        if plot is not None:
            _plot(report, plot)
            say(f"plot written to {plot}")
    return 0

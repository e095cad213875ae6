"""Resuming a 90 %-done 1 GiB upload against uploading it fresh, same server, same run."""

from __future__ import annotations

import tempfile

from benches.conftest import RATIOS, record_throughput
from synapse_sdk.cli.benchmark import clear_uploads
from synapse_sdk.clients.backend import BackendClient

ROUNDS = 3


class _Stop(Exception):
    pass


def _stop_at(fraction: float):
    def on_progress(done: int, total: int) -> None:
        if done >= fraction * total:
            raise _Stop(done)

    return on_progress


def test_fresh_upload(benchmark, big_file, bench_server) -> None:
    url, token, data_dir = bench_server
    with BackendClient(url, access_token=token, journal=False) as client:
        benchmark.pedantic(
            client.create_chunked_upload,
            args=(big_file,),
            setup=lambda: clear_uploads(data_dir),
            rounds=ROUNDS,
            iterations=1,
            warmup_rounds=1,
        )
    record_throughput("fresh upload (for resume)", benchmark, big_file.stat().st_size)


def test_resume_at_90_percent(benchmark, big_file, bench_server) -> None:
    url, token, data_dir = bench_server
    journal = tempfile.mkdtemp(prefix="synapse-bench-journal-")
    done = []
    with BackendClient(url, access_token=token, journal=journal) as client:

        def interrupted_upload() -> None:
            clear_uploads(data_dir)
            try:
                client.create_chunked_upload(big_file, on_progress=_stop_at(0.9))
            except _Stop as stop:
                done.append(stop.args[0])

        result = benchmark.pedantic(
            client.create_chunked_upload, args=(big_file,), setup=interrupted_upload, rounds=ROUNDS, iterations=1
        )
    assert result["size"] == big_file.stat().st_size
    record_throughput("resume at 90 % (whole file / time)", benchmark, big_file.stat().st_size)
    RATIOS["resume time / fresh time"] = (
        benchmark.stats.stats.median,
        f"resumed at {done[-1] / big_file.stat().st_size:.1%} of the file",
    )

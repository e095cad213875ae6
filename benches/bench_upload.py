"""1 GiB upload: the engine against the published SDK's algorithm, same server, same run."""

from __future__ import annotations

import hashlib

import requests

import engine
from benches.conftest import record_throughput
from synapse_sdk.cli.benchmark import baseline_upload, clear_uploads
from synapse_sdk.clients.backend import BackendClient

# One unmeasured round first: on a VM, the first touch of fresh memory pages
# (the server's tmpfs, the client's buffers) costs more than the upload itself.
WARMUP = 1
ROUNDS = 5


def test_baseline(benchmark, big_file, bench_server) -> None:
    url, token, data_dir = bench_server
    with requests.Session() as session:
        result = benchmark.pedantic(
            baseline_upload,
            args=(session, url, token, big_file),
            setup=lambda: clear_uploads(data_dir),
            rounds=ROUNDS,
            iterations=1,
            warmup_rounds=WARMUP,
        )
    assert result["size"] == big_file.stat().st_size
    record_throughput("baseline (published SDK algorithm)", benchmark, big_file.stat().st_size)


def test_engine(benchmark, big_file, bench_server) -> None:
    url, token, data_dir = bench_server
    with BackendClient(url, access_token=token) as client:
        result = benchmark.pedantic(
            client.create_chunked_upload,
            args=(big_file,),
            setup=lambda: clear_uploads(data_dir),
            rounds=ROUNDS,
            iterations=1,
            warmup_rounds=WARMUP,
        )
    assert result["size"] == big_file.stat().st_size
    name = f"engine ({'native' if engine.NATIVE else 'pure Python'})"
    record_throughput(name, benchmark, big_file.stat().st_size)


def test_md5_single_core(benchmark, big_file) -> None:
    """The floor: one core's hashlib MD5 over the same bytes, read from the page cache."""

    def md5_file() -> str:
        md5 = hashlib.md5()
        with open(big_file, "rb") as f:
            while block := f.read(8 * 1024 * 1024):
                md5.update(block)
        return md5.hexdigest()

    benchmark.pedantic(md5_file, rounds=ROUNDS, iterations=1)
    record_throughput("hashlib.md5, one core (reference)", benchmark, big_file.stat().st_size)

"""Bulk upload across Ray: a real local Ray (2 CPUs) uploading to the reference server on loopback.

Ray starts once for the module. Worker deaths are real: ``ray.kill`` on a
worker actor while it is inside a multi-chunk file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from hypothesis import given
from hypothesis import strategies as st

from synapse_sdk.cli import _parser, _resolve_ray_option
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.clients.backend.batch import BatchProgress
from synapse_sdk.clients.backend.ray_executor import (
    FILE_COST,
    MEMORY_PER_UPLOAD,
    WORKER_MEMORY,
    RayExecutor,
    WorkerDiedError,
    WorkerStartError,
    _RemoteJob,
    _unseen,
    deal,
)
from synapse_sdk.clients.exceptions import ClientError
from tests.conftest import ALICE, make_file
from tests.faults import Proxy, stall

pytestmark = pytest.mark.integration

KIB = 1024
MIB = 1024 * KIB
CHUNK = 64 * KIB
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray of 2 CPUs whose workers journal under a temporary folder; yields its address."""
    journal = tmp_path_factory.mktemp("ray-journal")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * MIB,
        runtime_env={"env_vars": {"SYNAPSE_UPLOAD_JOURNAL": str(journal)}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def alice(reference_server):
    with BackendClient(reference_server.base_url, access_token=ALICE) as client:
        yield client


@pytest.fixture(scope="module")
def slow_server(reference_server):
    """The reference server behind a proxy that holds every chunk's answer 30 ms: a 40-chunk file takes a while."""
    with Proxy(reference_server.base_url, lambda i, method, path, headers: stall(0.03, relay=True)) as proxy:
        yield proxy


def mixed(root: Path) -> dict[Path, bytes]:
    """Multi-chunk, one-chunk, small and empty files, and duplicates of two of them."""
    files = {}
    for name, size in [("a/big.bin", 9 * CHUNK + 5), ("a/mid.bin", 4 * CHUNK), ("b/odd.bin", 2 * CHUNK + 1)]:
        path, data = make_file(root, name, size)
        files[path] = data
    for i in range(12):
        path, data = make_file(root / "small", f"s{i:02d}.bin", 1 + i * 1777)
        files[path] = data
    (root / "empty.bin").write_bytes(b"")
    files[root / "empty.bin"] = b""
    for copy, original in [("b/big-copy.bin", "a/big.bin"), ("small/s05-copy.bin", "small/s05.bin")]:
        (root / copy).write_bytes(files[root / original])
        files[root / copy] = files[root / original]
    return files


def shape(results: dict) -> dict:
    """What must be the same whichever executor ran: everything but the server's ids, URLs and times."""

    def entry(r: dict) -> tuple:
        record = r.get("result", {})
        return (r["file_path"], r["status"], r.get("duplicate_of"), record.get("checksum"), record.get("size"))

    keys = {tuple(sorted(r["result"])) for r in results["successful"]}
    return {k: [entry(r) for r in results[k]] for k in ("successful", "failed", "skipped")} | {
        "total": results["total"],
        "record keys": keys,
    }


def check_stored(results: dict, files: dict[Path, bytes]) -> None:
    assert not results["failed"] and {r["file_path"] for r in results["successful"]} == set(files)
    for r in results["successful"]:
        data = files[r["file_path"]]
        assert r["result"]["checksum"] == hashlib.md5(data).hexdigest()
        assert Path(r["result"]["file"]).read_bytes() == data


def test_a_mixed_directory_matches_the_local_executor(ray_cluster, alice, tmp_path: Path) -> None:
    files = mixed(tmp_path / "data")
    seen: list[BatchProgress] = []
    through_ray = alice.upload_files(
        [tmp_path / "data"], chunk_size=CHUNK, concurrency=2, executor=RayExecutor(workers=2), on_progress=seen.append
    )
    check_stored(through_ray, files)
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert [p.files_done for p in seen] == sorted(p.files_done for p in seen)
    unique = sum(len(d) for p, d in files.items() if "copy" not in p.name)
    assert seen[-1].bytes_done == seen[-1].bytes_total == unique and seen[-1].files_done == len(files)

    local = alice.upload_files([tmp_path / "data"], chunk_size=CHUNK, concurrency=2)
    assert shape(through_ray) == shape(local)


def test_workers_reserve_their_memory_with_rays_scheduler(ray_cluster, alice, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "big.bin", 40 * CHUNK)
    executor = RayExecutor(workers=1)
    free = ray.available_resources()["memory"]
    reserved: list[float] = []

    def on_progress(progress: BatchProgress) -> None:
        if progress.active and not reserved:
            reserved.append(free - ray.available_resources()["memory"])

    results = alice.upload_files([path], chunk_size=CHUNK, concurrency=3, executor=executor, on_progress=on_progress)
    check_stored(results, {path: data})
    assert reserved == [WORKER_MEMORY + 3 * MEMORY_PER_UPLOAD]


def test_executor_ray_uses_the_connection_there_is(ray_cluster, alice, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "one.bin", 3 * CHUNK)
    results = alice.upload_files([path], chunk_size=CHUNK, executor="ray")
    check_stored(results, {path: data})


def kill_first_worker_inside(executor: RayExecutor, name: str, killed: list[int]):
    """A progress callback that kills worker 0 (largest file first: it holds ``name``) a few chunks into ``name``."""

    def on_progress(progress: BatchProgress) -> None:
        for path, done, size in progress.active:
            if path.name == name and not killed and 3 * CHUNK <= done < size:
                killed.append(done)
                ray.kill(executor.actors[0])

    return on_progress


def test_a_worker_killed_mid_file_its_files_finish_elsewhere_from_the_servers_offset(
    ray_cluster, reference_server, slow_server, tmp_path: Path
) -> None:
    files = {}
    for name, size in [("big.bin", 40 * CHUNK + 3), ("mid1.bin", 6 * CHUNK), ("mid2.bin", 5 * CHUNK + 9)]:
        files.update([make_file(tmp_path / "data", name, size)])
    for i in range(6):
        files.update([make_file(tmp_path / "data", f"small{i}.bin", 100 + i)])
    client = BackendClient(slow_server.url, access_token=ALICE)
    executor = RayExecutor(workers=2)
    killed: list[int] = []
    before = reference_server.stats()
    results = client.upload_files(
        [tmp_path / "data"],
        chunk_size=CHUNK,
        concurrency=1,
        executor=executor,
        on_progress=kill_first_worker_inside(executor, "big.bin", killed),
    )
    after = reference_server.stats()
    # Progress is live: the driver saw big.bin part done while a worker was inside it.
    assert killed, "the worker was never killed: big.bin went too fast"
    check_stored(results, files)
    # Nothing started over: one upload per file, and at most the chunk torn by the kill sent twice.
    assert after["uploads_created"] - before["uploads_created"] == len(files)
    assert after["bytes_received"] - before["bytes_received"] <= sum(map(len, files.values())) + CHUNK
    assert executor.actors == []


def test_a_file_whose_workers_keep_dying_fails_and_says_why(
    ray_cluster, reference_server, slow_server, tmp_path: Path
) -> None:
    big, _ = make_file(tmp_path, "big.bin", 40 * CHUNK)
    small, _ = make_file(tmp_path, "small.bin", 1000)
    executor = RayExecutor(workers=2, max_worker_deaths=1)
    killed: list[int] = []
    results = BackendClient(slow_server.url, access_token=ALICE).upload_files(
        [big, small],
        chunk_size=CHUNK,
        executor=executor,
        on_progress=kill_first_worker_inside(executor, "big.bin", killed),
    )
    assert [r["file_path"] for r in results["successful"]] == [small]
    [failed] = results["failed"]
    assert failed["file_path"] == big and failed["error"].startswith("WorkerDiedError: ")
    assert "died 1 time (max_worker_deaths=1), the last on node " in failed["error"]
    assert failed["error"].endswith("ActorDiedError: The actor is dead because it was killed by `ray.kill`.")
    # Typed: the error itself, with where the upload stood when its last worker died.
    [outcome] = results.failures
    assert isinstance(outcome.error, WorkerDiedError) and isinstance(outcome.error, ClientError)
    assert outcome.url is not None and "/chunked_upload/" in outcome.url and outcome.offset is not None


def test_workers_that_cannot_start_are_one_clear_error(ray_cluster, reference_server, tmp_path: Path) -> None:
    class Misconfigured(BackendClient):
        def settings(self) -> dict:
            return super().settings() | {"base_url": "nope"}  # what a worker would refuse

    path, _ = make_file(tmp_path, "data.bin", 10)
    client = Misconfigured(reference_server.base_url, access_token=ALICE)
    with pytest.raises(
        WorkerStartError, match="no Ray upload worker started: ActorDiedError: ValueError: base_url must"
    ):
        client.upload_files([path], executor=RayExecutor(workers=1))


def test_ctrl_c_stops_the_workers_and_a_rerun_resumes(
    ray_cluster, reference_server, slow_server, tmp_path: Path
) -> None:
    files = dict(make_file(tmp_path / "data", f"f{i}.bin", 12 * CHUNK) for i in range(4))
    client = BackendClient(slow_server.url, access_token=ALICE)
    executor = RayExecutor(workers=2)

    def interrupt(progress: BatchProgress) -> None:
        if progress.bytes_done >= 8 * CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.upload_files(list(files), chunk_size=CHUNK, concurrency=2, executor=executor, on_progress=interrupt)
    assert executor.actors == []
    stopped = reference_server.stats()["bytes_received"]
    time.sleep(0.5)
    assert reference_server.stats()["bytes_received"] == stopped  # no worker goes on uploading

    # The workers' journals (one folder on this machine) know the uploads: a rerun sends only the rest.
    results = client.upload_files(list(files), chunk_size=CHUNK, concurrency=2, executor=RayExecutor(workers=2))
    check_stored(results, files)
    assert reference_server.stats()["bytes_received"] - stopped <= sum(map(len, files.values())) - 8 * CHUNK


def test_a_path_the_workers_cannot_see_is_that_files_failure(ray_cluster, alice, tmp_path: Path) -> None:
    seen, seen_data = make_file(tmp_path, "seen.bin", 2000)
    hidden, _ = make_file(tmp_path, "hidden.bin", 3000)
    # /proc/self/fd/N names an open file only in the process that opened it: here, not in a worker.
    fd = os.open(hidden, os.O_RDONLY)
    private = 999
    os.dup2(fd, private)
    os.close(fd)
    try:
        results = alice.upload_files([seen, f"/proc/self/fd/{private}"], executor=RayExecutor(workers=1))
    finally:
        os.close(private)
    check_stored({"successful": results["successful"], "failed": []}, {seen: seen_data})
    [failed] = results["failed"]
    assert failed["file_path"] == Path(f"/proc/self/fd/{private}")
    assert failed["error"].startswith(f"FileNotFoundError: the Ray worker on node {os.uname().nodename} (")
    assert f"cannot see /proc/self/fd/{private}" in failed["error"] and "every node mounts" in failed["error"]


def test_a_worker_seeing_another_file_at_the_path_says_so(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "data.bin", 100)
    mtime = path.stat().st_mtime
    assert _unseen(_RemoteJob(0, str(path), 100, mtime), "node n1 (10.0.0.1)") is None
    other = _unseen(_RemoteJob(0, str(path), 120, mtime), "node n1 (10.0.0.1)")
    assert other["status"] == "failed" and other["error"].startswith(
        f"FileChangedError: {path} on node n1 (10.0.0.1) is not the file the driver listed (100 bytes, modified "
    )
    assert "the driver saw 120 bytes" in other["error"]
    assert _unseen(_RemoteJob(0, str(path), 100, mtime - 60), "n")["error"].startswith("FileChangedError: ")


@given(st.lists(st.integers(0, 10 * MIB), max_size=60), st.integers(1, 6))
def test_deal_balances_bytes_largest_first(sizes: list[int], workers: int) -> None:
    hands = deal(dict(enumerate(sizes)), [0] * workers)
    assert sorted(i for hand in hands for i in hand) == list(range(len(sizes)))
    for hand in hands:
        assert [sizes[i] for i in hand] == sorted((sizes[i] for i in hand), reverse=True)
    loads = [sum(sizes[i] + FILE_COST for i in hand) for hand in hands]
    if sizes:
        assert max(loads) - min(loads) <= max(sizes) + FILE_COST


def test_deal_spreads_empty_files_and_counts_work_in_hand() -> None:
    assert deal(dict.fromkeys(range(6), 0), [0, 0]) == [[0, 2, 4], [1, 3, 5]]
    assert deal({7: 100, 8: 10}, [5 * MIB, 0]) == [[], [7, 8]]


def test_ray_address_or_first_path() -> None:
    def parsed(*argv: str):
        args = _parser().parse_args(["upload", *argv])
        _resolve_ray_option(args)
        return args.ray, args.paths

    assert parsed("--ray", "README.md") == (True, ["README.md"])
    assert parsed("--ray", "auto", "README.md") == ("auto", ["README.md"])
    assert parsed("--ray", "10.0.0.1:6379", "a", "b") == ("10.0.0.1:6379", ["a", "b"])
    assert parsed("--ray", "ray://head:10001", "a") == ("ray://head:10001", ["a"])
    assert parsed("a", "--ray") == (True, ["a"])
    assert parsed("a") == (None, ["a"])
    with pytest.raises(SystemExit):
        parsed("--ray")


def run_python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SYNAPSE_", "RAY_ADDRESS"))} | env
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )


def test_the_command_line_on_ray(ray_cluster, reference_server, tmp_path: Path) -> None:
    files = mixed(tmp_path / "data")
    done = run_python(
        "-m",
        "synapse_sdk.cli",
        "upload",
        "--ray",
        ray_cluster,
        "-r",
        str(tmp_path / "data"),
        "--json",
        "--chunk-size",
        "64KiB",
        env={"SYNAPSE_HOST": reference_server.base_url, "SYNAPSE_ACCESS_TOKEN": ALICE},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"] == len(files) and not report["failed"]
    assert {r["path"]: r["checksum"] for r in report["successful"]} == {
        str(p): hashlib.md5(d).hexdigest() for p, d in files.items()
    }
    assert "progress: " in done.stderr and f"{len(files)} of {len(files)} files uploaded" in done.stderr


WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # as if Ray were not installed
from synapse_sdk.cli import main
from synapse_sdk.clients.backend import BackendClient
try:
    BackendClient("http://127.0.0.1:9").upload_files([], executor="ray")
except ImportError as error:
    print("library:", error)
print("cli ray:", main(["upload", "--ray", "README.md"]))
print("cli local:", main(["upload", "README.md", "--json"]))
"""


def test_without_ray_the_package_works_and_the_ray_option_says_how_to_install_it() -> None:
    done = run_python("-c", WITHOUT_RAY, env={})
    assert "library: the Ray executor needs Ray: pip install 'synapse-upload[ray]'" in done.stdout
    assert "synapse-upload: the Ray executor needs Ray: pip install 'synapse-upload[ray]'" in done.stderr
    assert "cli ray: 2" in done.stdout and "cli local: 0" in done.stdout, done.stderr

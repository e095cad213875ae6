"""Many files at once: concurrency, failures, duplicates, progress, Ctrl-C."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.clients.backend.batch import BatchProgress, collect_files
from tests.conftest import ALICE, make_file

pytestmark = pytest.mark.integration

KIB = 1024


def dataset(root: Path) -> dict[Path, bytes]:
    files = {}
    for i in range(30):
        path, data = make_file(root / f"part{i % 3}", f"small{i}.bin", 1 + i * 997)
        files[path] = data
    for i in range(3):
        path, data = make_file(root, f"large{i}.bin", 5 * 64 * KIB + i)
        files[path] = data
    return files


def test_a_directory_of_files(client, server, tmp_path: Path) -> None:
    files = dataset(tmp_path)
    seen: list[BatchProgress] = []
    results = client.upload_files([tmp_path], concurrency=4, chunk_size=64 * KIB, on_progress=seen.append)
    assert results["total"] == len(files) and not results["failed"]
    assert {r["file_path"] for r in results["successful"]} == set(files)
    if server.kind == "reference":
        for entry in results["successful"]:
            assert Path(entry["result"]["file"]).read_bytes() == files[entry["file_path"]]
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert [p.files_done for p in seen] == sorted(p.files_done for p in seen)
    assert seen[-1].bytes_done == seen[-1].bytes_total == sum(len(d) for d in files.values())
    assert seen[-1].files_done == len(files)


def test_one_failure_does_not_stop_the_others(client, tmp_path: Path) -> None:
    good = [make_file(tmp_path, f"g{i}.bin", 1000 + i)[0] for i in range(5)]
    results = client.upload_files([good[0], tmp_path / "missing.bin", *good[1:]], chunk_size=64 * KIB)
    assert [r["file_path"] for r in results["successful"]] == good
    assert results["failed"][0]["file_path"] == tmp_path / "missing.bin"
    assert "FileNotFoundError" in results["failed"][0]["error"] and results["total"] == 6


def test_identical_files_are_sent_once(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "a.bin", 200 * KIB)
    (tmp_path / "b.bin").write_bytes(data)
    (tmp_path / "c.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other last byte
    middle = 100 * KIB
    (tmp_path / "d.bin").write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])  # same ends
    (tmp_path / "e.bin").write_bytes(data)
    client = BackendClient(reference_server.base_url, access_token=ALICE)
    before = reference_server.stats()["uploads_created"]
    results = client.upload_files([tmp_path], chunk_size=64 * KIB)
    assert reference_server.stats()["uploads_created"] - before == 3
    by_name = {r["file_path"].name: r for r in results["successful"]}
    assert by_name["b.bin"]["duplicate_of"] == path and by_name["b.bin"]["result"] == by_name["a.bin"]["result"]
    assert by_name["e.bin"]["duplicate_of"] == path
    assert "duplicate_of" not in by_name["c.bin"] and "duplicate_of" not in by_name["d.bin"]
    assert by_name["c.bin"]["result"]["checksum"] != hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("concurrency", [2, "auto"])
def test_ctrl_c_stops_cleanly_and_leaves_uploads_resumable(reference_server, tmp_path: Path, concurrency) -> None:
    files = [make_file(tmp_path / "data", f"f{i}.bin", 8 * 64 * KIB)[0] for i in range(6)]
    journal = tmp_path / "journal"
    client = BackendClient(reference_server.base_url, access_token=ALICE, journal=journal)

    def interrupt(progress: BatchProgress) -> None:
        if progress.bytes_done >= 10 * 64 * KIB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.upload_files(files, concurrency=concurrency, chunk_size=64 * KIB, on_progress=interrupt)
    assert list(journal.glob("*.json"))  # unfinished uploads are journaled
    before = reference_server.stats()["bytes_received"]
    results = client.upload_files(files, concurrency=concurrency, chunk_size=64 * KIB)
    assert len(results["successful"]) == 6
    # Resumed files send only what the server does not hold yet.
    assert reference_server.stats()["bytes_received"] - before <= 6 * 8 * 64 * KIB - 10 * 64 * KIB
    assert not list(journal.glob("*.json"))


def test_directories_need_recursion(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory"):
        collect_files([tmp_path], recursive=False)


def test_bad_concurrency(client) -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        client.upload_files([], concurrency=0)


@pytest.mark.parametrize("value", ["fast", "4", 2.5, True, None])
def test_concurrency_is_a_positive_int_or_auto(client, value) -> None:
    with pytest.raises(ValueError, match=f"concurrency must be a positive whole number or 'auto', not {value!r}"):
        client.upload_files([], concurrency=value)


def test_unknown_executor(client) -> None:
    with pytest.raises(ValueError, match="executor must be 'local', 'ray' or an executor object"):
        client.upload_files([], executor="dask")


@pytest.mark.parametrize("shared", [True, False])
def test_a_batch_hashes_through_one_shared_service(client, tmp_path: Path, monkeypatch, shared: bool) -> None:
    """By default the files in flight hand their MD5 work to one HashingService; shared_hashing=False opts out."""
    from engine.hashing_service import HashingService
    from synapse_sdk.clients.backend import LocalExecutor

    services: list[HashingService] = []
    real_init = HashingService.__init__

    def remembered(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        services.append(self)

    monkeypatch.setattr(HashingService, "__init__", remembered)
    files = {}
    for i in range(6):
        path, data = make_file(tmp_path, f"f{i}.bin", 3 * 64 * KIB + i * 1000)
        files[path] = data
    results = client.upload_files(
        [tmp_path], concurrency=4, chunk_size=64 * KIB, executor=LocalExecutor(shared_hashing=shared)
    )
    assert not results["failed"]
    assert len(results["successful"]) == len(files)
    for entry in results["successful"]:
        # The finalize MD5 was the file's (the server checked it); the reference server also answers it.
        assert entry["result"].get("checksum", hashlib.md5(files[entry["file_path"]]).hexdigest()) == (
            hashlib.md5(files[entry["file_path"]]).hexdigest()
        )
    if shared:
        # One service for the batch, and every chunk's two MD5 streams (at least 3 chunks a file) went through it,
        # in rounds or (few files hashing at once) by their callers alone.
        assert len(services) == 1 and services[0].streams + services[0].alone >= 2 * 3 * len(files)
    else:
        assert services == []

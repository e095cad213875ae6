"""Data-collection and model workflows against the reference server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from tests import doc_examples
from tests.conftest import ALICE, make_file
from tests.test_cli import against, run

pytestmark = pytest.mark.integration

KIB = 1024


@pytest.fixture
def alice(reference_server):
    with BackendClient(reference_server.base_url, access_token=ALICE) as client:
        yield client


def test_the_documented_upload_and_process_workflow(alice, tmp_path: Path, capsys) -> None:
    """The API documentation's "Upload and Process Workflow", unchanged, with collection 1."""
    path, data = make_file(tmp_path, "data.zip", 300 * KIB)
    doc_examples.client = alice
    try:
        outcome = doc_examples.upload_and_process_workflow(path, collection_id=1)
    finally:
        doc_examples.client = None
    md5 = hashlib.md5(data).hexdigest()
    assert outcome["data_file"]["checksum"] == md5
    assert outcome["collection_result"]["files"] == {"primary": {"checksum": md5, "path": str(path)}}
    unit = alice.get_data_unit(outcome["data_unit"]["id"])
    assert unit["data_collection"] == 1 and unit["meta"]["uploaded_file_id"] == outcome["file_id"]
    assert "Data unit created" in capsys.readouterr().out


@pytest.mark.parametrize("chunked", [False, True])
def test_create_data_file_small_and_chunked(alice, tmp_path: Path, chunked: bool) -> None:
    path, data = make_file(tmp_path, "f.bin", 200 * KIB)
    record = alice.create_data_file(path, use_chunked_upload=chunked)
    assert record["checksum"] == hashlib.md5(data).hexdigest() and record["size"] == len(data)
    assert Path(record["file"]).read_bytes() == data


def test_verify_checksums_and_skip_existing(alice, reference_server, tmp_path: Path) -> None:
    held, held_data = make_file(tmp_path / "set", "held.bin", 1000)
    alice.create_data_file(held)
    fresh, _ = make_file(tmp_path / "set", "fresh.bin", 1000)
    answer = alice.verify_data_files_checksums([hashlib.md5(held_data).hexdigest(), "0" * 32])
    assert answer["checksums"] == [hashlib.md5(held_data).hexdigest()]
    before = reference_server.stats()["uploads_created"]
    results = alice.upload_files([tmp_path / "set"], skip_existing=True)
    assert [r["file_path"] for r in results["skipped"]] == [held]
    assert [r["file_path"] for r in results["successful"]] == [fresh]
    assert reference_server.stats()["uploads_created"] - before == 1


def test_upload_data_collection(alice, tmp_path: Path) -> None:
    data = [
        {"files": {"primary": make_file(tmp_path, f"img{i}.jpg", 500 + i)[0]}, "meta": {"label": i}} for i in range(12)
    ]
    progress: list[tuple[int, int]] = []
    units = alice.upload_data_collection(
        1, data, batch_size=5, max_workers=4, on_progress=lambda *p: progress.append(p)
    )
    assert len(units) == 12 and sorted(u["meta"]["label"] for u in units) == list(range(12))
    assert progress[-1] == (12, 12)


def test_create_model_with_its_file(alice, tmp_path: Path) -> None:
    weights, data = make_file(tmp_path, "model.pt", 3 * 64 * KIB)
    request = {"name": "My Model", "plugin": 123}
    model = alice.create_model(request, file=weights)
    assert model["name"] == "My Model" and model["checksum"] == hashlib.md5(data).hexdigest()
    assert "chunked_upload" in request  # as synapse-sdk: the upload's id is added to the request
    assert alice.get_model(model["id"])["id"] == model["id"]


def test_cli_binds_uploads_to_a_collection(reference_server, tmp_path: Path) -> None:
    for i in range(4):
        make_file(tmp_path / "data", f"scan{i}.png", 2000 + i)
    done = run(
        "upload", "-r", str(tmp_path / "data"), "--data-collection", "1", "--json", env=against(reference_server)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["data_units"]) == 4 and all(r["data_file"] for r in report["successful"])
    client = BackendClient(reference_server.base_url, access_token=ALICE)
    unit = client.get_data_unit(report["data_units"][0])
    assert unit["data_collection"] == 1 and unit["meta"]["origin_file_stem"] == "scan0"

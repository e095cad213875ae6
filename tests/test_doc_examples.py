"""The API documentation's examples, run unchanged against real servers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.clients.exceptions import ClientError
from tests import doc_examples
from tests.conftest import ALICE, make_file

pytestmark = pytest.mark.integration


@pytest.fixture
def examples(client):
    doc_examples.client = client
    yield doc_examples
    doc_examples.client = None


def test_upload_with_progress(examples, tmp_path: Path, capsys) -> None:
    path, data = make_file(tmp_path, "large_file.zip", 3 * 1024 * 1024 + 5)
    result = examples.upload_with_progress(path)
    assert result["id"]
    out = capsys.readouterr().out
    assert f"MD5 checksum: {hashlib.md5(data).hexdigest()}" in out and "Upload successful!" in out


def test_batch_upload_reports_successes_and_failures(examples, tmp_path: Path) -> None:
    paths = [make_file(tmp_path, f"file{i}.zip", 200_000 * (i + 1))[0] for i in range(4)]
    paths.append(tmp_path / "missing.zip")
    results = examples.batch_chunked_upload(paths, max_concurrent=2)
    assert results["total"] == 5
    assert sorted(r["file_path"] for r in results["successful"]) == sorted(paths[:4])
    assert [r["file_path"] for r in results["failed"]] == [paths[4]]
    assert "File not found" in results["failed"][0]["error"]
    assert len({r["result"]["id"] for r in results["successful"]}) == 4


def test_robust_upload_succeeds_first_time(examples, tmp_path: Path, capsys) -> None:
    path, _ = make_file(tmp_path, "file.zip", 1000)
    assert examples.robust_chunked_upload(path, retry_delay=0)["id"]
    assert "Upload successful on attempt 1" in capsys.readouterr().out


def test_robust_upload_gives_up_on_413(tmp_path: Path, capsys) -> None:
    from synapse_sdk.server import ReferenceServer

    path, _ = make_file(tmp_path, "huge.zip", 5000)
    with ReferenceServer(tmp_path / "small-server", tokens={ALICE: "alice"}, max_upload_size=4096) as server:
        doc_examples.client = BackendClient(server.base_url, access_token=ALICE)
        try:
            with pytest.raises(ClientError) as raised:
                doc_examples.robust_chunked_upload(path, retry_delay=0)
        finally:
            doc_examples.client = None
    assert raised.value.status_code == 413
    assert f"File {path} is too large for upload" in capsys.readouterr().out


def test_progress_bar_example(examples, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "large_file.zip", 2_000_000)
    assert examples.upload_with_progress_bar(path)["id"]


def test_pre_upload_validation(examples, tmp_path: Path, capsys) -> None:
    path, _ = make_file(tmp_path, "file.zip", 10_000)
    assert examples.safe_chunked_upload(path)["id"]
    assert examples.safe_chunked_upload(tmp_path / "nope.zip") is None
    assert "Validation failed: File not found" in capsys.readouterr().out
    assert examples.safe_chunked_upload(tmp_path) is None
    assert "Path is not a file" in capsys.readouterr().out


def test_optimized_strategy_small_file(examples, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "any_size_file.zip", 100_000)
    assert examples.optimized_upload_strategy(path)["id"]


def test_error_handling_example(examples, capsys) -> None:
    assert examples.handle_upload_errors() is None
    assert "Error: File not found" in capsys.readouterr().out

"""The benchmark server's discard mode: protocol checked, bytes counted, nothing stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.server import ReferenceServer
from tests.conftest import ALICE, make_file

pytestmark = pytest.mark.integration

KIB = 1024


@pytest.fixture(scope="module")
def discarding(tmp_path_factory: pytest.TempPathFactory):
    with ReferenceServer(tmp_path_factory.mktemp("discard"), tokens={ALICE: "alice"}, discard=True) as server:
        yield server


@pytest.mark.parametrize("chunk_digest", ["md5", "xxh3", "none"])
def test_an_upload_completes_and_nothing_is_stored(discarding, tmp_path: Path, chunk_digest: str) -> None:
    path, data = make_file(tmp_path, "data.bin", 5 * 64 * KIB + 1)
    before = discarding.stats()["bytes_received"]
    client = BackendClient(discarding.base_url, access_token=ALICE, journal=False, chunk_digest=chunk_digest)
    result = client.create_chunked_upload(path, chunk_size=64 * KIB)
    assert result["checksum"] == hashlib.md5(data).hexdigest() and result["size"] == len(data)
    assert discarding.stats()["bytes_received"] - before == len(data)
    assert not any((discarding.data_dir / "uploads").iterdir())


def test_the_protocol_is_still_checked(discarding, tmp_path: Path) -> None:
    import requests

    headers = {"Synapse-Access-Token": f"Token {ALICE}", "Content-Range": "bytes 0-9/20"}
    base = f"{discarding.base_url}/chunked_upload/"
    first = requests.put(base, data={"filename": "f"}, files={"file": ("c", b"x" * 10)}, headers=headers, timeout=10)
    assert first.status_code == 200 and first.json()["offset"] == 10
    wrong = {**headers, "Content-Range": "bytes 5-14/20"}
    answer = requests.put(first.json()["url"], data={}, files={"file": ("c", b"x" * 10)}, headers=wrong, timeout=10)
    assert answer.status_code == 400 and answer.json()["expected_offset"] == 10
    short = {**headers, "Content-Range": "bytes 10-19/20"}
    answer = requests.put(first.json()["url"], data={}, files={"file": ("c", b"x" * 3)}, headers=short, timeout=10)
    assert answer.status_code == 400 and "File size doesn't match" in answer.json()["detail"]
    assert (
        requests.get(first.json()["url"], headers={"Synapse-Access-Token": "Token nope"}, timeout=10).status_code == 401
    )

"""Smoke test of the drf-chunked-upload test server (``tests.drf_fixture``).

Checks the behaviour our upload client relies on, against the real package
served by a real WSGI server on loopback, using plain ``requests``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.drf_fixture import DrfServer, start_drf_server

pytestmark = [pytest.mark.integration, pytest.mark.drf]

OTHER_USER = "intruder"
OTHER_TOKEN = "other-user-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrfServer]:
    # One server for the module keeps the test fast; each test makes its own
    # uploads, so they do not interfere.
    directory: Path = tmp_path_factory.mktemp("drf_server")
    with start_drf_server(directory, extra_users={OTHER_USER: OTHER_TOKEN}) as srv:
        yield srv


@pytest.fixture
def session(server: DrfServer) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["Synapse-Access-Token"] = f"Token {server.token}"
        yield s


def _put_chunk(session: requests.Session, url: str, data: bytes, start: int, total: int) -> requests.Response:
    return session.put(
        url,
        headers={"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"},
        data={"filename": "payload.bin"},
        files={"file": ("payload.bin", data, "application/octet-stream")},
        timeout=30,
    )


def test_requires_authentication(server: DrfServer) -> None:
    response = requests.get(f"{server.base_url}/chunked_upload/", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    # DRF's standard header works too.
    response = requests.get(
        f"{server.base_url}/chunked_upload/",
        headers={"Authorization": f"Token {server.token}"},
        timeout=10,
    )
    assert response.status_code == 200


def test_chunked_upload_round_trip(server: DrfServer, session: requests.Session) -> None:
    payload = os.urandom(3 * 64 * 1024 + 123)
    chunks = [payload[:65536], payload[65536:131072], payload[131072:]]
    total = len(payload)

    first = _put_chunk(session, f"{server.base_url}/chunked_upload/", chunks[0], 0, total)
    assert first.status_code == 200, first.text
    record = first.json()
    uuid.UUID(record["id"])
    url = record["url"]
    assert url == f"{server.base_url}/chunked_upload/{record['id']}/"
    assert record["offset"] == len(chunks[0])
    assert record["filename"] == "payload.bin"
    assert record["completed_at"] is None

    second = _put_chunk(session, url, chunks[1], len(chunks[0]), total)
    assert second.status_code == 200, second.text
    offset = second.json()["offset"]
    assert offset == len(chunks[0]) + len(chunks[1])

    # Re-sending the first chunk is refused with the offset the server wants.
    wrong = _put_chunk(session, url, chunks[0], 0, total)
    assert wrong.status_code == 400
    assert wrong.json() == {
        "detail": "Offsets do not match",
        "expected_offset": offset,
        "provided_offset": 0,
    }

    third = _put_chunk(session, url, chunks[2], offset, total)
    assert third.status_code == 200, third.text
    assert third.json()["offset"] == total
    assert session.get(url, timeout=10).json()["offset"] == total

    bad = session.post(url, data={"md5": hashlib.md5(b"other").hexdigest()}, timeout=30)
    assert bad.status_code == 400
    assert bad.json() == {"detail": "checksum does not match"}

    done = session.post(url, data={"md5": hashlib.md5(payload).hexdigest()}, timeout=30)
    assert done.status_code == 200, done.text
    final = done.json()
    assert final["id"] == record["id"]
    assert final["offset"] == total
    assert final["completed_at"]


def test_other_users_upload_is_not_found(server: DrfServer, session: requests.Session) -> None:
    created = _put_chunk(session, f"{server.base_url}/chunked_upload/", b"secret", 0, 12)
    assert created.status_code == 200, created.text
    url = created.json()["url"]

    with requests.Session() as other:
        other.headers["Synapse-Access-Token"] = f"Token {OTHER_TOKEN}"
        assert other.get(url, timeout=10).status_code == 404
        assert _put_chunk(other, url, b"stolen", 6, 12).status_code == 404
        finalize = other.post(url, data={"md5": hashlib.md5(b"x").hexdigest()}, timeout=10)
        assert finalize.status_code == 404

    # The owner still sees it, untouched by the other user.
    assert session.get(url, timeout=10).json()["offset"] == 6

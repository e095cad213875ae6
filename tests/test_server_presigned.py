"""The reference server's presigned endpoints over HTTP, against moto's S3 server on loopback.

What the server hands out (real presigned URLs that work), what it refuses
(malformed requests, with a ``detail`` that says what was wrong), and what
its confirmation checks by reading the object back: size, SHA1, the
multipart upload's parts, the owner of the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
import urllib3

from tests.conftest import ALICE, BOB
from tests.s3_fixture import start_moto

pytestmark = pytest.mark.integration

pytest.importorskip("boto3")

BUCKET = "server-tests"
PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def moto():
    with start_moto() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, moto):
    from synapse_sdk.server import ReferenceServer
    from synapse_sdk.server.presigned import S3Config

    config = S3Config(
        moto.url,
        BUCKET,
        access_key_id="testing",
        secret_access_key="testing",
        multipart_threshold=PART + 1,
        part_size=PART,
        create_bucket=True,
    )
    tokens = {ALICE: "alice", BOB: "bob"}
    with ReferenceServer(tmp_path_factory.mktemp("srv"), tokens=tokens, s3=config, max_upload_size=1 << 30) as server:
        yield server


http = urllib3.PoolManager(retries=False)


def call(server, path: str, body: object = None, token: str = ALICE, method: str | None = None):
    headers = {"Synapse-Access-Token": f"Token {token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    answer = http.request(
        method or ("POST" if body is not None else "GET"), server.base_url + path, body=data, headers=headers
    )
    return answer.status, json.loads(answer.data)


def presign(server, files, token=ALICE, **extra):
    status, answer = call(server, "/data_files/presigned_upload/upload/", {"files": files, **extra}, token)
    assert status == 200, answer
    return answer


def put(url: str, data: bytes, **headers: str):
    return http.request("PUT", url, body=data, headers={"Content-MD5": _md5_b64(data), **headers})


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def confirm(server, files, token=ALICE):
    status, answer = call(server, "/data_files/presigned_upload/confirm_upload/", {"files": files}, token)
    assert status == 200, answer
    return answer


def test_storages_lists_the_default_s3_storage(server, moto):
    status, answer = call(server, "/storages/?category=internal")
    assert status == 200
    assert answer["count"] == 1
    storage = answer["results"][0]
    assert storage["provider"] == "amazon_s3" and storage["is_default"] is True
    assert storage["configuration"] == {"bucket_name": BUCKET, "endpoint_url": moto.url}
    status, _ = call(server, "/storages/", token="nobody")
    assert status == 401


def test_a_presigned_url_works_and_confirm_records_a_data_file(server):
    data = os.urandom(10_000)
    answer = presign(server, [{"filename": "a b/../c.txt", "size": len(data), "content_type": "text/plain"}])
    (info,) = answer["files"]
    assert info["filename"] == "a b/../c.txt" and info["multipart"] is None
    assert info["file_key"].startswith("uploads/") and "/../" not in info["file_key"]
    assert answer["expires_at"].endswith("Z")
    assert put(info["presigned_url"], data, **{"Content-Type": "text/plain"}).status == 200

    sha1 = hashlib.sha1(data).hexdigest()
    result = confirm(server, [{"file_key": info["file_key"], "checksum": sha1, "size": len(data)}])
    assert (result["created_count"], result["failed_count"]) == (1, 0)
    (entry,) = result["results"]
    assert entry["success"] and entry["checksum"] == sha1 and entry["error"] is None
    status, record = call(server, f"/data_files/{entry['data_file_id']}/")
    assert status == 200
    assert record["file"] == f"s3://{BUCKET}/{info['file_key']}"
    assert (record["checksum"], record["size"]) == (hashlib.md5(data).hexdigest(), len(data))
    # Data units bind it by its MD5, like any data file (its bytes are in the storage: no media URL).
    unit = {"data_collection": 1, "files": {"primary": {"checksum": record["checksum"], "path": "c.txt"}}}
    status, units = call(server, "/data_units/", unit)
    assert status == 201 and units[0]["files"]["primary"]["checksum"] == record["checksum"]
    assert "url" not in units[0]["files"]["primary"]
    # A confirmation repeated (its answer was lost) answers the same data file.
    again = confirm(server, [{"file_key": info["file_key"], "checksum": sha1, "size": len(data)}])
    assert again["results"][0]["data_file_id"] == entry["data_file_id"]
    # Another user cannot confirm, nor learn that the key exists.
    theirs = confirm(server, [{"file_key": info["file_key"], "checksum": sha1, "size": len(data)}], token=BOB)
    assert theirs["failed_count"] == 1 and "unknown file_key" in theirs["results"][0]["error"]


def test_confirm_reads_the_object_back_and_refuses_what_differs(server):
    data = os.urandom(5000)
    files = presign(server, [{"filename": f"f{i}", "size": len(data)} for i in range(4)])["files"]
    for info in files[:3]:
        assert put(info["presigned_url"], data).status == 200
    sha1 = hashlib.sha1(data).hexdigest()
    result = confirm(
        server,
        [
            {"file_key": files[0]["file_key"], "checksum": hashlib.sha1(b"other").hexdigest(), "size": len(data)},
            {"file_key": files[1]["file_key"], "checksum": sha1, "size": len(data) + 1},
            {"file_key": files[2]["file_key"], "checksum": sha1, "size": len(data)},
            {"file_key": files[3]["file_key"], "checksum": sha1, "size": len(data)},  # never uploaded
            {"file_key": "uploads/made-up", "checksum": sha1, "size": 1},
            {"file_key": files[2]["file_key"], "checksum": "not-a-sha1", "size": len(data)},
            "not an object",
        ],
    )
    errors = [entry["error"] for entry in result["results"]]
    assert (result["created_count"], result["failed_count"]) == (1, 6)
    assert "checksum does not match" in errors[0]
    assert "differs from the 5000 bytes announced" in errors[1]
    assert errors[2] is None and result["results"][2]["success"]
    assert "NoSuchKey" in errors[3]
    assert "unknown file_key" in errors[4]
    assert "40 hexadecimal digits" in errors[5]
    assert "must be an object" in errors[6]


def test_a_multipart_upload_is_completed_by_confirm(server):
    data = os.urandom(2 * PART + 123)
    (info,) = presign(server, [{"filename": "big.bin", "size": len(data)}])["files"]
    multipart = info["multipart"]
    assert info["presigned_url"] is None and multipart["part_size"] == PART
    assert [part["part_number"] for part in multipart["parts"]] == [1, 2, 3]
    etags = []
    for part in multipart["parts"]:
        start = (part["part_number"] - 1) * PART
        answer = put(part["presigned_url"], data[start : start + PART])
        assert answer.status == 200
        etags.append({"part_number": part["part_number"], "etag": answer.headers["ETag"]})
    sha1 = hashlib.sha1(data).hexdigest()
    base = {"file_key": info["file_key"], "checksum": sha1, "size": len(data)}

    refused = confirm(server, [base, {**base, "multipart": {"upload_id": "other", "parts": etags}}])
    assert "multipart must name the upload_id" in refused["results"][0]["error"]
    assert "multipart must name the upload_id" in refused["results"][1]["error"]
    wrong = [{**etags[0], "etag": '"' + "0" * 32 + '"'}, *etags[1:]]
    refused = confirm(server, [{**base, "multipart": {"upload_id": multipart["upload_id"], "parts": wrong}}])
    assert "the storage refused to complete the multipart upload" in refused["results"][0]["error"]

    done = confirm(server, [{**base, "multipart": {"upload_id": multipart["upload_id"], "parts": etags}}])
    assert done["created_count"] == 1, done
    status, record = call(server, f"/data_files/{done['results'][0]['data_file_id']}/")
    assert status == 200 and record["checksum"] == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({}, 400, "files must be a list of 1 to 1000 entries"),
        ({"files": []}, 400, "files must be a list of 1 to 1000 entries"),
        ({"files": [{"filename": "", "size": 1}]}, 400, "files[0]: filename must be non-empty text"),
        ({"files": [{"filename": "x", "size": -1}]}, 400, "files[0]: size must be a whole number"),
        ({"files": [{"filename": "x", "size": True}]}, 400, "files[0]: size must be a whole number"),
        ({"files": [{"filename": "x", "size": 1, "content_type": "a\nb"}]}, 400, "content_type must be a MIME type"),
        ({"files": [{"filename": "x", "size": 1}], "expiration": 5}, 400, "expiration must be a whole number"),
        ({"files": [{"filename": "x", "size": 2 << 30}]}, 413, "exceed the limit"),
        ({"files": ["x"]}, 400, "files[0] must be an object"),
    ],
)
def test_presign_refuses_malformed_requests(server, body, status, detail):
    got, answer = call(server, "/data_files/presigned_upload/upload/", body)
    assert got == status and detail in answer["detail"]


def test_the_endpoints_need_a_token_and_json(server):
    assert call(server, "/data_files/presigned_upload/upload/", {"files": []}, token="nobody")[0] == 401
    answer = http.request(
        "POST",
        server.base_url + "/data_files/presigned_upload/confirm_upload/",
        body=b"files=1",
        headers={"Synapse-Access-Token": f"Token {ALICE}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 415
    status, answer = call(server, "/data_files/presigned_upload/upload/", method="GET")
    assert status == 405 and "not allowed" in answer["detail"]


def test_a_server_without_storage_says_how_to_configure_one(reference_server):
    status, answer = call(reference_server, "/storages/")
    assert (status, answer) == (200, {"count": 0, "results": []})
    status, answer = call(
        reference_server, "/data_files/presigned_upload/upload/", {"files": [{"filename": "x", "size": 1}]}
    )
    assert status == 404 and "--s3-endpoint" in answer["detail"]


def test_serve_takes_s3_options_together():
    result = subprocess.run(
        [sys.executable, "-m", "synapse_sdk.cli", "serve", "--s3-endpoint", "http://127.0.0.1:1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "--s3-endpoint and --s3-bucket go together" in result.stderr

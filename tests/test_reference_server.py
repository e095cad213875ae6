"""The reference server against PROTOCOL.md: real server on loopback, real files, ``requests``.

Every refusal is checked for what it must leave behind: nothing (the offset
and the stored file's length unchanged), and a working upload afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
import xxhash
from requests import Session

from synapse_sdk.server import ReferenceServer, UploadApp
from synapse_sdk.server.store import Owner, QuotaExceeded, Store

pytestmark = pytest.mark.integration

TOKENS = {"alice-token": "alice", "bob-token": "bob"}
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    with ReferenceServer(tmp_path_factory.mktemp("reference"), tokens=TOKENS) as running:
        yield running


def session_for(token: str | None, header: str = "Synapse-Access-Token", tenant: str | None = None):
    session = requests.Session()
    if token is not None:
        session.headers[header] = f"Token {token}"
    if tenant is not None:
        session.headers["Synapse-Tenant"] = f"Token {tenant}"
    return session


@pytest.fixture
def alice() -> Iterator[Session]:
    with session_for("alice-token") as session:
        yield session


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def put_chunk(
    session: Session,
    url: str,
    chunk: bytes,
    start: int,
    total: int,
    *,
    filename: str | None = "data.bin",
    content_md5: str | None = None,
    content_xxh3: str | None = None,
    content_range: str | None = None,
) -> requests.Response:
    headers = {"Content-Range": content_range or f"bytes {start}-{start + len(chunk) - 1}/{total}"}
    if content_md5 is not None:
        headers["Content-MD5"] = content_md5
    if content_xxh3 is not None:
        headers["Content-XXH3"] = content_xxh3
    fields = {} if filename is None else {"filename": filename}
    return session.put(url, data=fields, files={"file": ("chunk", chunk)}, headers=headers)


def create(session: Session, server: ReferenceServer, first: bytes, total: int) -> dict:
    answer = put_chunk(session, f"{server.base_url}/chunked_upload/", first, 0, total)
    assert answer.status_code == 200, answer.text
    return answer.json()


def part_size(server: ReferenceServer, upload_id: int) -> int:
    return (server.data_dir / "uploads" / f"{upload_id}.part").stat().st_size


def assert_unchanged(session: Session, server: ReferenceServer, record: dict) -> None:
    state = session.get(record["url"]).json()
    assert (state["offset"], state["status"]) == (record["offset"], 1)
    assert part_size(server, record["id"]) == record["offset"]


# -- authentication and routing ----------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (None, None),
        ("Synapse-Access-Token", "Token wrong"),
        ("Authorization", "Token wrong"),
        ("Authorization", "Bearer alice-token"),
        ("Synapse-Access-Token", "alice-token"),
    ],
)
def test_requests_without_a_valid_token_get_401(server: ReferenceServer, header, value) -> None:
    headers = {} if header is None else {header: value}
    for method, path in [("GET", "/chunked_upload/1/"), ("PUT", "/chunked_upload/"), ("GET", "/nowhere")]:
        answer = requests.request(method, server.base_url + path, headers=headers, data=b"x" * 100_000)
        assert answer.status_code == 401
        assert answer.json()["detail"]


def test_legacy_authorization_header_is_accepted(server: ReferenceServer) -> None:
    with session_for("alice-token", header="Authorization") as session:
        record = create(session, server, b"abc", 6)
        assert session.get(record["url"]).json()["offset"] == 3


def test_unknown_routes_methods_and_ids(server: ReferenceServer, alice: Session) -> None:
    assert alice.get(server.base_url + "/elsewhere/").status_code == 404
    for garbage in ("abc", "-1", "1.5", "9" * 30):
        answer = alice.get(f"{server.base_url}/chunked_upload/{garbage}/")
        assert answer.status_code == 400 and "malformed upload id" in answer.json()["detail"]
    # A well-formed id that names no upload (of this owner) is simply not found.
    assert alice.get(f"{server.base_url}/chunked_upload/{'9' * 18}/").status_code == 404
    answer = alice.delete(server.base_url + "/chunked_upload/1/")
    assert answer.status_code == 405 and "GET" in answer.headers["Allow"]
    assert alice.get(server.base_url + "/chunked_upload/").status_code == 405


# -- the happy path ----------------------------------------------------------


def test_create_append_finalize_stores_the_exact_file(server: ReferenceServer, alice: Session) -> None:
    data = os.urandom(3 * 256 * 1024 + 1234)
    first, second, third = data[:262144], data[262144:524288], data[524288:]
    record = create(alice, server, first, len(data))
    assert record["url"] == f"{server.base_url}/chunked_upload/{record['id']}/"
    assert (record["offset"], record["status"], record["filename"]) == (len(first), 1, "data.bin")
    assert record["completed_at"] is None and record["created_at"] < record["expires_at"]

    answer = put_chunk(alice, record["url"], second, len(first), len(data), content_md5=md5_b64(second))
    assert answer.status_code == 200 and answer.json()["offset"] == len(first) + len(second)
    # Routes work without the trailing slash too.
    answer = put_chunk(alice, record["url"].rstrip("/"), third, len(first) + len(second), len(data))
    assert answer.status_code == 200 and answer.json()["offset"] == len(data)

    answer = alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()})
    assert answer.status_code == 200, answer.text
    done = answer.json()
    assert done["status"] == 2 and done["completed_at"]
    assert (done["checksum"], done["size"]) == (hashlib.md5(data).hexdigest(), len(data))
    assert Path(done["file"]).read_bytes() == data
    assert alice.get(record["url"]).json() == done


@pytest.mark.parametrize("encoding", ["form", "multipart", "json"])
def test_finalize_accepts_every_body_encoding(server: ReferenceServer, alice: Session, encoding) -> None:
    data = os.urandom(1000)
    record = create(alice, server, data, len(data))
    md5 = hashlib.md5(data).hexdigest().upper()  # hex digits in either case
    if encoding == "form":
        answer = alice.post(record["url"], data={"md5": md5})
    elif encoding == "multipart":
        answer = alice.post(record["url"], files={"md5": (None, md5)})
    else:
        answer = alice.post(record["url"], json={"md5": md5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["checksum"] == md5.lower()


@pytest.mark.parametrize("data", [b"", b"small file", os.urandom(300_000)], ids=["empty", "small", "300k"])
def test_whole_file_post(server: ReferenceServer, alice: Session, data: bytes) -> None:
    answer = alice.post(
        f"{server.base_url}/chunked_upload/",
        data={"md5": hashlib.md5(data).hexdigest()},
        files={"file": ("whole.txt", data)},
    )
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert (record["status"], record["size"], record["offset"], record["filename"]) == (
        2,
        len(data),
        len(data),
        "whole.txt",
    )
    assert record["checksum"] == hashlib.md5(data).hexdigest()
    assert Path(record["file"]).read_bytes() == data


def test_whole_file_post_with_a_wrong_md5_stores_nothing(server: ReferenceServer, alice: Session) -> None:
    before = sorted((server.data_dir / "uploads").iterdir())
    whole = {"md5": "0" * 32}, {"file": ("w", b"data")}
    answer = alice.post(f"{server.base_url}/chunked_upload/", data=whole[0], files=whole[1])
    assert answer.status_code == 400 and answer.json()["detail"] == "checksum does not match"
    assert sorted((server.data_dir / "uploads").iterdir()) == before


# -- refusals of section 2, each leaving nothing behind ----------------------


def test_offset_mismatch_names_the_expected_offset(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server, b"a" * 100, 300)
    answer = put_chunk(alice, record["url"], b"b" * 100, 150, 300)
    assert answer.status_code == 400
    assert answer.json() == {"detail": "Offsets do not match", "expected_offset": 100, "provided_offset": 150}
    assert_unchanged(alice, server, record)


# 600 kB is hashed inline at the end of the body; 7 MiB mostly by the store's hashing thread, behind the writes.
@pytest.mark.parametrize("size", [600_000, 7 * 1024 * 1024 + 3])
def test_a_wrong_content_md5_stores_nothing(server: ReferenceServer, alice: Session, size: int) -> None:
    data = os.urandom(size)
    record = create(alice, server, data[:200_000], len(data))
    rest = data[200_000:]
    answer = put_chunk(alice, record["url"], rest, 200_000, len(data), content_md5=md5_b64(b"other bytes"))
    assert answer.status_code == 400 and answer.json()["detail"] == "chunk checksum mismatch"
    assert_unchanged(alice, server, record)
    # The running MD5 must not have absorbed the refused chunk.
    answer = put_chunk(alice, record["url"], rest, 200_000, len(data), content_md5=md5_b64(rest))
    assert answer.status_code == 200
    answer = alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()})
    assert answer.status_code == 200, answer.text


def test_content_xxh3_is_verified_too(server: ReferenceServer, alice: Session) -> None:
    data = os.urandom(600_000)
    record = create(alice, server, data[:200_000], len(data))
    rest = data[200_000:]
    wrong = xxhash.xxh3_128(b"other bytes").hexdigest()
    answer = put_chunk(alice, record["url"], rest, 200_000, len(data), content_xxh3=wrong)
    assert answer.status_code == 400 and answer.json()["detail"] == "chunk checksum mismatch"
    assert_unchanged(alice, server, record)
    both = {"content_xxh3": xxhash.xxh3_128(rest).hexdigest(), "content_md5": md5_b64(b"other bytes")}
    answer = put_chunk(alice, record["url"], rest, 200_000, len(data), **both)
    assert answer.status_code == 400  # every digest announced must match
    answer = put_chunk(alice, record["url"], rest, 200_000, len(data), content_xxh3=both["content_xxh3"])
    assert answer.status_code == 200
    assert alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()}).status_code == 200


@pytest.mark.parametrize("value", ["abc", "g" * 32, "0" * 31])
def test_malformed_content_xxh3_is_400(server: ReferenceServer, alice: Session, value: str) -> None:
    record = create(alice, server, b"abc", 6)
    answer = put_chunk(alice, record["url"], b"def", 3, 6, content_xxh3=value)
    assert answer.status_code == 400 and "Content-XXH3" in answer.json()["detail"]
    assert_unchanged(alice, server, record)


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode(), "é"])
def test_malformed_content_md5_is_400(server: ReferenceServer, alice: Session, value: str) -> None:
    record = create(alice, server, b"abc", 6)
    answer = put_chunk(alice, record["url"], b"def", 3, 6, content_md5=value)
    assert answer.status_code == 400 and "Content-MD5" in answer.json()["detail"]
    assert_unchanged(alice, server, record)


def test_wrong_finalize_md5_leaves_the_upload_open(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server, b"hello", 5)
    answer = alice.post(record["url"], data={"md5": hashlib.md5(b"other").hexdigest()})
    assert answer.status_code == 400 and answer.json()["detail"] == "checksum does not match"
    assert alice.get(record["url"]).json()["status"] == 1
    for bad in ({}, {"md5": "xyz"}):
        assert alice.post(record["url"], data=bad).status_code == 400
    assert alice.post(record["url"], data={"md5": hashlib.md5(b"hello").hexdigest()}).status_code == 200
    # Complete now: a second finalize or another chunk is refused.
    assert alice.post(record["url"], data={"md5": hashlib.md5(b"hello").hexdigest()}).status_code == 400
    assert put_chunk(alice, record["url"], b"!", 4, 5).status_code == 400


def test_finalize_before_the_last_byte_is_refused(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server, b"half", 8)
    answer = alice.post(record["url"], data={"md5": hashlib.md5(b"half").hexdigest()})
    assert answer.status_code == 400 and answer.json()["expected_offset"] == 4


def test_another_owners_upload_is_invisible(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server, b"secret", 12)
    for other in (session_for("bob-token"), session_for("alice-token", tenant="acme")):
        with other:
            assert other.get(record["url"]).status_code == 404
            assert put_chunk(other, record["url"], b"sneaky", 6, 12).status_code == 404
            assert other.post(record["url"], data={"md5": "0" * 32}).status_code == 404
    assert_unchanged(alice, server, record)


def test_a_tenants_upload_belongs_to_that_tenant(server: ReferenceServer) -> None:
    with session_for("alice-token", tenant="acme") as acme, session_for("alice-token") as plain:
        record = create(acme, server, b"tenant data", 20)
        assert acme.get(record["url"]).status_code == 200
        assert plain.get(record["url"]).status_code == 404


def test_part_length_mismatch_stores_nothing(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server, b"x" * 1000, 3000)
    for chunk in (b"y" * 999, b"y" * 1001, b"y" * 600_000):
        answer = put_chunk(alice, record["url"], chunk, 1000, 3000, content_range="bytes 1000-1999/3000")
        assert answer.status_code == 400 and "doesn't match" in answer.json()["detail"]
        assert_unchanged(alice, server, record)
    before = sorted((server.data_dir / "uploads").iterdir())
    create_url = f"{server.base_url}/chunked_upload/"
    answer = put_chunk(alice, create_url, b"z" * 10, 0, 20, content_range="bytes 0-4/20")
    assert answer.status_code == 400
    assert sorted((server.data_dir / "uploads").iterdir()) == before


@pytest.mark.parametrize(
    "content_range",
    [
        None,
        "",
        "bytes=0-1/10",
        "bytes 0-1",
        "bytes a-b/c",
        "0-1/10",
        "bytes -1-1/10",
        "bytes  0-1/10",
        "bytes 0-1/*",
    ],
)
def test_malformed_content_range_is_400(server: ReferenceServer, alice: Session, content_range) -> None:
    record = create(alice, server, b"ab", 4)
    headers = {} if content_range is None else {"Content-Range": content_range}
    for url in (record["url"], f"{server.base_url}/chunked_upload/"):
        answer = alice.put(url, data={"filename": "f"}, files={"file": ("chunk", b"cd")}, headers=headers)
        assert answer.status_code == 400
        assert answer.json() == {"detail": "Error in request headers"}
    assert_unchanged(alice, server, record)


@pytest.mark.parametrize(
    ("content_range", "detail"),
    [
        ("bytes 3-2/4", "after its end"),
        ("bytes 2-4/4", "past the file"),
        ("bytes 2-3/5", "differs"),
    ],
)
def test_inconsistent_content_range_is_400(server: ReferenceServer, alice, content_range, detail) -> None:
    record = create(alice, server, b"ab", 4)
    answer = put_chunk(alice, record["url"], b"cd", 2, 4, content_range=content_range)
    assert answer.status_code == 400 and detail in answer.json()["detail"]
    assert_unchanged(alice, server, record)


def test_a_first_chunk_must_start_at_zero(server: ReferenceServer, alice: Session) -> None:
    answer = put_chunk(alice, f"{server.base_url}/chunked_upload/", b"cd", 2, 4)
    assert answer.status_code == 400 and "byte 0" in answer.json()["detail"]


def test_bad_bodies_are_400_never_500(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server, b"ab", 4)
    range_header = {"Content-Range": "bytes 2-3/4"}
    bad = [
        alice.put(record["url"], data={"filename": "f"}, headers=range_header),  # no file part
        alice.put(record["url"], data=b"cd", headers=range_header),  # not multipart
        alice.put(
            record["url"],
            data=b"--xx\r\nContent-Disposition: form-data; name=file\r\n\r\ncd",  # truncated
            headers={**range_header, "Content-Type": "multipart/form-data; boundary=xx"},
        ),
        alice.post(record["url"], data=b"{not json", headers={"Content-Type": "application/json"}),
        alice.post(record["url"], json=["md5"]),
        alice.post(record["url"], json={"md5": 12}),
        alice.post(record["url"], data=b"\xff\xfe", headers={"Content-Type": FORM}),
        alice.post(f"{server.base_url}/chunked_upload/", data={"md5": hashlib.md5(b"").hexdigest()}),
        put_chunk(alice, f"{server.base_url}/chunked_upload/", b"ab", 0, 2, filename=None),
    ]
    for answer in bad:
        assert 400 <= answer.status_code < 500 and answer.json()["detail"], answer.text
    assert alice.post(record["url"], data=b"md5", headers={"Content-Type": "text/plain"}).status_code == 415
    assert_unchanged(alice, server, record)


# -- limits, expiry, restart, concurrency -------------------------------------


def test_total_over_the_limit_is_413(tmp_path: Path) -> None:
    with (
        ReferenceServer(tmp_path, tokens=TOKENS, max_upload_size=1000) as limited,
        session_for("alice-token") as s,
    ):
        create_url = f"{limited.base_url}/chunked_upload/"
        assert put_chunk(s, create_url, b"x" * 10, 0, 1001).status_code == 413
        assert put_chunk(s, create_url, b"x" * 10, 0, 1000).status_code == 200
        answer = s.post(create_url, data={"md5": "0" * 32}, files={"file": ("big", b"y" * 1001)})
        assert answer.status_code == 413
        assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["1.part"]


def test_an_expired_upload_is_410(tmp_path: Path) -> None:
    expiring = ReferenceServer(tmp_path, tokens=TOKENS, expire_after=timedelta(0))
    with expiring, session_for("alice-token") as s:
        record = create(s, expiring, b"ab", 4)
        assert put_chunk(s, record["url"], b"cd", 2, 4).status_code == 410
        assert s.post(record["url"], data={"md5": "0" * 32}).status_code == 410


def test_an_upload_survives_a_restart(tmp_path: Path) -> None:
    data = os.urandom(700_000)
    with ReferenceServer(tmp_path, tokens=TOKENS) as first, session_for("alice-token") as s:
        record = create(s, first, data[:300_000], len(data))
    # A torn chunk: bytes that landed after the last recorded offset.
    with open(tmp_path / "uploads" / f"{record['id']}.part", "ab") as part:
        part.write(b"torn" * 1000)
    with ReferenceServer(tmp_path, tokens=TOKENS) as second, session_for("alice-token") as s:
        assert part_size(second, record["id"]) == 300_000
        url = f"{second.base_url}/chunked_upload/{record['id']}/"
        assert s.get(url).json()["offset"] == 300_000
        assert put_chunk(s, url, data[300_000:], 300_000, len(data), content_md5=md5_b64(data[300_000:])).ok
        answer = s.post(url, data={"md5": hashlib.md5(data).hexdigest()})
        assert answer.status_code == 200, answer.text
        assert Path(answer.json()["file"]).read_bytes() == data


def test_many_uploads_at_once(server: ReferenceServer) -> None:
    files = [os.urandom(300_000 + i) for i in range(8)]
    errors: list[BaseException] = []

    def upload(data: bytes) -> None:
        try:
            with session_for("alice-token") as s:
                step = 100_000
                record = create(s, server, data[:step], len(data))
                for start in range(step, len(data), step):
                    chunk = data[start : start + step]
                    assert put_chunk(s, record["url"], chunk, start, len(data), content_md5=md5_b64(chunk)).ok
                done = s.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()}).json()
                assert Path(done["file"]).read_bytes() == data
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(data,)) for data in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_one_uploads_chunks_are_serialized(server: ReferenceServer) -> None:
    data = os.urandom(400_000)
    with session_for("alice-token") as s:
        record = create(s, server, data[:100_000], len(data))
    answers: list[int] = []

    def send_same_chunk() -> None:
        with session_for("alice-token") as s:
            answers.append(put_chunk(s, record["url"], data[100_000:], 100_000, len(data)).status_code)

    threads = [threading.Thread(target=send_same_chunk) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 400, 400, 400]
    with session_for("alice-token") as s:
        assert s.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()}).status_code == 200


def test_the_app_under_another_wsgi_server_whose_input_has_readinto(tmp_path: Path) -> None:
    # wsgiref hands the socket's buffered reader to the app: the readinto path.
    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    store = Store(tmp_path)
    httpd = make_server("127.0.0.1", 0, UploadApp(store, TOKENS), handler_class=QuietHandler)
    serving = threading.Thread(target=httpd.serve_forever)
    serving.start()
    try:
        data = os.urandom(3 * 1024 * 1024 + 17)
        base = f"http://127.0.0.1:{httpd.server_port}"
        with session_for("alice-token") as s:
            answer = put_chunk(s, f"{base}/chunked_upload/", data[:1000], 0, len(data))
            url = answer.json()["url"]
            assert put_chunk(s, url, data[1000:], 1000, len(data), content_md5=md5_b64(data[1000:])).ok
            assert put_chunk(s, url, b"x", 0, len(data)).json()["expected_offset"] == len(data)
            done = s.post(url, data={"md5": hashlib.md5(data).hexdigest()}).json()
        assert Path(done["file"]).read_bytes() == data
    finally:
        httpd.shutdown()
        serving.join()
        httpd.server_close()
        store.close()


# -- byte counters and cleanup -------------------------------------------------


def test_stats_count_file_bytes_chunks_and_uploads_since_start(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS) as counted, session_for("alice-token") as s:
        stats_url = f"{counted.base_url}/_stats/"
        zero = {"bytes_received": 0, "chunks_stored": 0, "uploads_created": 0}
        assert counted.stats() == zero and s.get(stats_url).json() == zero
        assert requests.get(stats_url).status_code == 401
        assert s.post(stats_url).status_code == 405
        record = create(s, counted, b"a" * 1000, 3000)
        assert put_chunk(s, record["url"], b"b" * 500, 1000, 3000, content_md5=md5_b64(b"other")).status_code == 400
        assert put_chunk(s, record["url"], b"b" * 500, 1000, 3000).status_code == 200
        assert put_chunk(s, record["url"], b"c" * 10, 0, 3000).status_code == 400  # offset: never read into a chunk
        whole = {"md5": hashlib.md5(b"w" * 200).hexdigest()}
        assert s.post(f"{counted.base_url}/chunked_upload/", data=whole, files={"file": ("w", b"w" * 200)}).ok
        expected = {"bytes_received": 1000 + 500 + 500 + 200, "chunks_stored": 3, "uploads_created": 2}
        assert counted.stats() == expected and s.get(stats_url).json() == expected
    with ReferenceServer(tmp_path, tokens=TOKENS) as restarted:
        assert restarted.stats() == zero
    with pytest.raises(RuntimeError, match="not running"):
        restarted.stats()


def test_cleanup_expired_deletes_open_uploads_only_and_frees_quota(tmp_path: Path) -> None:
    alice = Owner("alice")
    store = Store(tmp_path, quota=1000)
    try:
        uploads = []
        for size in (300, 400):
            reserved = store.reserve(alice, 1000)
            with store.append(reserved, limit=size) as chunk:
                chunk.write(memoryview(os.urandom(size)))
                uploads.append(store.commit(chunk, filename="f"))
        done = store.complete(uploads[1], "0" * 32)
        with pytest.raises(QuotaExceeded):
            store.check_quota(alice, 301)
        now = datetime.now(timezone.utc)
        assert store.cleanup_expired(now) == []
        removed = store.cleanup_expired(now + timedelta(days=2))
        assert [upload.id for upload in removed] == [uploads[0].id]
        assert not uploads[0].path.exists() and done.path.exists()
        assert store.get(uploads[0].id, alice) is None and store.get(done.id, alice) is not None
        store.check_quota(alice, 600)  # the removed upload's 300 bytes are free again
    finally:
        store.close()


def test_the_cleanup_command_prints_what_it_removed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with ReferenceServer(data_dir, tokens=TOKENS) as running, session_for("alice-token") as s:
        stale = create(s, running, b"x" * 100, 200)
        finished = s.post(
            f"{running.base_url}/chunked_upload/",
            data={"md5": hashlib.md5(b"done").hexdigest()},
            files={"file": ("kept.bin", b"done")},
        ).json()
    command = [sys.executable, "-m", "synapse_sdk.cli", "cleanup", "--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed 0 expired upload(s), 0 bytes\n"
    done = subprocess.run([*command, "--expire-after", "0s"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"removed upload {stale['id']} of alice: 'data.bin', 100 of 200 bytes" in done.stdout
    assert done.stdout.endswith("removed 1 expired upload(s), 100 bytes\n")
    assert sorted(p.name for p in (data_dir / "uploads").iterdir()) == [f"{finished['id']}.done"]
    missing = subprocess.run([*command[:-1], str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no data directory" in missing.stderr and "Traceback" not in missing.stderr


def test_serve_flags_set_the_limits(tmp_path: Path) -> None:
    from tests.test_server_crash import TOKEN, serving

    flags = ("--max-size", "1KiB", "--quota", "1500", "--rate-limit", "1/h", "--rate-burst", "3")
    with serving(tmp_path / "data", *flags) as server, session_for(TOKEN) as s:
        create_url = f"{server.base_url}/chunked_upload/"
        assert put_chunk(s, create_url, b"x", 0, 1025).status_code == 413
        assert put_chunk(s, create_url, b"x" * 1000, 0, 1000).status_code == 200
        assert put_chunk(s, create_url, b"x" * 1000, 0, 1000).status_code == 507
        # Three requests so far: the burst is spent, and 1/h takes an hour to refill one.
        answer = s.get(f"{server.base_url}/_stats/")
        assert answer.status_code == 429 and 3590 <= int(answer.headers["Retry-After"]) <= 3600


def test_a_head_answer_has_no_body_so_the_connection_stays_in_step(server: ReferenceServer) -> None:
    # Found by the fuzz tests: a body after a HEAD answer was read as the next answer.
    connection = http.client.HTTPConnection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]), timeout=10)
    try:
        for headers in ({}, {"Synapse-Access-Token": "Token alice-token"}):
            connection.request("HEAD", "/chunked_upload/", headers=headers)
            answer = connection.getresponse()
            assert answer.status in (401, 405) and answer.read() == b""
        connection.request("GET", "/_stats/", headers={"Synapse-Access-Token": "Token alice-token"})
        answer = connection.getresponse()
        assert answer.status == 200 and "bytes_received" in json.loads(answer.read())
    finally:
        connection.close()


def test_bodies_read_from_cheroots_buffer_and_the_socket_on_one_connection(server: ReferenceServer) -> None:
    """A request sent in one piece leaves its body's start in cheroot's buffer and the rest in the socket;
    both, then a second request on the same connection, must arrive byte for byte (wire.py's readinto)."""
    import socket
    from urllib.parse import urlsplit

    data = os.urandom(700_000)
    address = (urlsplit(server.base_url).hostname, urlsplit(server.base_url).port)

    def exchange(sock: socket.socket, method: str, url: str, chunk: bytes, start: int) -> dict:
        headers = {"Synapse-Access-Token": "Token alice-token", "Content-MD5": md5_b64(chunk)}
        headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"
        request = requests.Request(method, url, headers=headers, files={"file": ("c", chunk)}, data={"filename": "f"})
        prepared = request.prepare()
        head = f"{method} {prepared.path_url} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in prepared.headers.items()) + "\r\n"
        sock.sendall(head.encode() + prepared.body)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 200 and not answer.will_close
        return json.loads(answer.read())

    with socket.create_connection(address) as sock:
        record = exchange(sock, "PUT", f"{server.base_url}/chunked_upload/", data[:300_000], 0)
        record = exchange(sock, "PUT", record["url"], data[300_000:], 300_000)
    assert record["offset"] == len(data)
    with session_for("alice-token") as alice:
        done = alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()})
    assert done.status_code == 200 and Path(done.json()["file"]).read_bytes() == data

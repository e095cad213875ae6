"""The reference server's routes around the upload (PROTOCOL.md, "Around the upload"), on loopback.

Data files (from a chunked upload, or a small file posted whole), checksum
verification, data collections (each owner's own collection 1), data units
(all or nothing), models and tasks: each route's answer, its refusals (401,
another owner's record 404, a malformed body 400 with a ``detail``), and what
a refusal leaves behind (nothing). Then the records across a restart, and a
data directory from before these routes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from requests import Session

from synapse_sdk.server import ReferenceServer
from tests.test_reference_server import TOKENS, put_chunk, session_for

DEFAULT_SPECS = [{"name": "primary", "is_required": False, "file_type": "any"}]
TIMESTAMP_END = "Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    with ReferenceServer(tmp_path_factory.mktemp("catalog"), tokens=TOKENS) as running:
        yield running


@pytest.fixture
def alice() -> Iterator[Session]:
    with session_for("alice-token") as session:
        yield session


@pytest.fixture
def bob() -> Iterator[Session]:
    with session_for("bob-token") as session:
        yield session


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def chunked_upload(session: Session, base_url: str, data: bytes, chunk: int = 100_000, finalize: bool = True) -> dict:
    """An upload made chunk by chunk, finalized unless told otherwise; its record."""
    url = f"{base_url}/chunked_upload/"
    for start in range(0, max(len(data), 1), chunk):
        answer = put_chunk(session, url, data[start : start + chunk], start, len(data))
        assert answer.status_code == 200, answer.text
        url = answer.json()["url"]
    if not finalize:
        return answer.json()
    answer = session.post(url, data={"md5": md5(data)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def post_file(
    session: Session, base_url: str, data: bytes, name: str = "small.bin", **fields: str
) -> requests.Response:
    return session.post(f"{base_url}/data_files/", data=fields, files={"file": (name, data)})


def data_file(session: Session, base_url: str, data: bytes) -> dict:
    answer = post_file(session, base_url, data)
    assert answer.status_code == 201, answer.text
    return answer.json()


def stored_files(server: ReferenceServer) -> list[str]:
    return sorted(path.name for path in (server.data_dir / "uploads").iterdir())


def unsigned(record: object) -> object:
    """``record`` with each signed media URL cut to its path: the signature and expiry change with every answer."""
    if isinstance(record, dict):
        return {key: unsigned(value) for key, value in record.items()}
    if isinstance(record, list):
        return [unsigned(value) for value in record]
    if isinstance(record, str) and "/media/" in record and "signature=" in record:
        return "/media/" + record.split("/media/", 1)[1].split("?", 1)[0]
    return record


def unit_body(checksum: str, collection: int = 1, **extra: object) -> dict:
    return {"data_collection": collection, "files": {"primary": {"checksum": checksum, "path": "a/b.jpg"}}, **extra}


# -- authentication and routing ----------------------------------------------

ROUTES = [
    ("POST", "/data_files/"),
    ("GET", "/data_files/1/"),
    ("POST", "/data_files/verify_checksums/"),
    ("GET", "/data_collections/"),
    ("POST", "/data_collections/"),
    ("GET", "/data_collections/1/"),
    ("POST", "/data_units/"),
    ("GET", "/data_units/1/"),
    ("GET", "/models/"),
    ("POST", "/models/"),
    ("GET", "/models/1/"),
    ("POST", "/tasks/"),
    ("GET", "/tasks/1/"),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Synapse-Access-Token": "Token wrong"}, {"Authorization": "Bearer alice-token"}],
    ids=["none", "wrong", "not-a-token"],
)
def test_every_route_needs_a_valid_token(server: ReferenceServer, headers: dict[str, str]) -> None:
    before = stored_files(server)
    for method, path in ROUTES:
        answer = requests.request(method, server.base_url + path, headers=headers, json={"name": "x"})
        assert answer.status_code == 401, (method, path)
        assert answer.json()["detail"] and answer.headers["WWW-Authenticate"] == "Token"
    assert stored_files(server) == before


def test_methods_ids_and_slashes_route_like_the_upload_routes(server: ReferenceServer, alice: Session) -> None:
    base = server.base_url
    # Another method: 405 naming the allowed ones; HEAD is not GET here either.
    for method, path, allowed in [
        ("DELETE", "/data_files/", "POST"),
        ("GET", "/data_files/", "POST"),
        ("HEAD", "/data_collections/1/", "GET"),
        ("PUT", "/data_collections/", "GET, POST"),
        ("GET", "/data_files/verify_checksums/", "POST"),
        ("PATCH", "/models/1/", "GET"),
        ("GET", "/tasks/", "POST"),
    ]:
        answer = alice.request(method, base + path)
        assert answer.status_code == 405 and answer.headers["Allow"] == allowed, (method, path)
    assert alice.head(base + "/models/").content == b""
    for path, noun in [("/data_units/abc/", "data unit"), ("/models/-1/", "model"), ("/tasks/1.5/", "task")]:
        answer = alice.get(base + path)
        assert answer.status_code == 400 and f"malformed {noun} id" in answer.json()["detail"]
    for path in ("/data_units/999999/", "/models/999999/", "/tasks/999999/", "/data_files/999999/"):
        assert alice.get(base + path).status_code == 404
    for path in ("/data_collection/", "/models/1/x/", "/data_files/verify_checksums/1/"):
        assert alice.get(base + path).status_code == 404, path
    # Without the trailing slash too.
    assert alice.get(base + "/data_collections/1").json()["name"] == "default"
    assert alice.get(base + "/data_collections").status_code == 200


# -- data files ----------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "form", "multipart"])
def test_a_data_file_from_a_chunked_upload_is_that_upload_s_file(
    server: ReferenceServer, alice: Session, encoding: str
) -> None:
    data = os.urandom(250_000)
    upload = chunked_upload(alice, server.base_url, data)
    before = stored_files(server)
    url = f"{server.base_url}/data_files/"
    if encoding == "json":
        answer = alice.post(url, json={"chunked_upload": upload["id"]})
    elif encoding == "form":
        answer = alice.post(url, data={"chunked_upload": str(upload["id"])})
    else:
        answer = alice.post(url, files={"chunked_upload": (None, str(upload["id"]))})
    assert answer.status_code == 201, answer.text
    record = answer.json()
    assert set(record) == {"id", "file", "checksum", "size", "created_at"}
    assert (record["file"], record["checksum"], record["size"]) == (upload["file"], md5(data), len(data))
    assert record["created_at"].endswith(TIMESTAMP_END)
    assert Path(record["file"]).read_bytes() == data
    assert stored_files(server) == before  # no copy
    assert alice.get(f"{url}{record['id']}/").json() == record


@pytest.mark.parametrize("data", [b"", b"hello", os.urandom(300_000)], ids=["empty", "small", "300k"])
def test_a_small_file_posted_whole_is_stored_with_its_md5(server: ReferenceServer, alice: Session, data: bytes) -> None:
    record = data_file(alice, server.base_url, data)
    assert set(record) == {"id", "file", "checksum", "size", "created_at"}
    assert (record["checksum"], record["size"]) == (md5(data), len(data))
    assert Path(record["file"]).read_bytes() == data
    assert Path(record["file"]).is_relative_to(server.data_dir)
    # An md5 field is optional, and checked when given.
    assert post_file(alice, server.base_url, data, md5=md5(data).upper()).status_code == 201


def test_the_same_bytes_twice_are_two_data_files_with_one_checksum(server: ReferenceServer, alice: Session) -> None:
    data = os.urandom(5000)
    first, second = data_file(alice, server.base_url, data), data_file(alice, server.base_url, data)
    assert first["id"] != second["id"] and first["checksum"] == second["checksum"] == md5(data)
    upload = chunked_upload(alice, server.base_url, data)
    url = f"{server.base_url}/data_files/"
    third, fourth = (alice.post(url, json={"chunked_upload": upload["id"]}).json() for _ in range(2))
    assert len({first["id"], second["id"], third["id"], fourth["id"]}) == 4
    assert third["file"] == fourth["file"] == upload["file"]


def test_a_chunked_upload_that_is_not_the_owner_s_or_not_complete_is_400(
    server: ReferenceServer, alice: Session, bob: Session
) -> None:
    url = f"{server.base_url}/data_files/"
    bobs = chunked_upload(bob, server.base_url, b"bob's bytes")
    open_one = chunked_upload(alice, server.base_url, os.urandom(300_000), finalize=False)
    for upload_id in (999_999_999, bobs["id"]):
        answer = alice.post(url, json={"chunked_upload": upload_id})
        # Bob's upload is answered exactly like one that does not exist.
        assert answer.status_code == 400
        assert answer.json() == {"detail": f"chunked upload {upload_id} not found or not complete"}
    answer = alice.post(url, json={"chunked_upload": open_one["id"]})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(f"chunked upload {open_one['id']} not found or not complete")
    with session_for("bob-token", tenant="acme") as bob_in_acme:
        assert bob_in_acme.post(url, json={"chunked_upload": bobs["id"]}).status_code == 400


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "give 'chunked_upload'"),
        ({"chunked_upload": "abc"}, "chunked_upload must be an id"),
        ({"chunked_upload": -1}, "chunked_upload must be an id"),
        ({"chunked_upload": 1.5}, "chunked_upload must be an id"),
        ({"chunked_upload": True}, "chunked_upload must be an id"),
        ({"chunked_upload": None}, "chunked_upload must be an id"),
        ({"chunked_upload": 10**18}, "chunked_upload must be an id"),
        ([1], "the JSON body must be an object"),
    ],
)
def test_a_malformed_data_file_request_is_400(server: ReferenceServer, alice: Session, body, detail: str) -> None:
    answer = alice.post(f"{server.base_url}/data_files/", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"]


def test_a_refused_whole_file_leaves_nothing(server: ReferenceServer, alice: Session) -> None:
    url = f"{server.base_url}/data_files/"
    upload = chunked_upload(alice, server.base_url, b"complete")
    before = stored_files(server)
    answer = post_file(alice, server.base_url, b"data", md5="0" * 32)
    assert answer.status_code == 400 and answer.json()["detail"] == "checksum does not match"
    answer = post_file(alice, server.base_url, b"data", chunked_upload=str(upload["id"]))
    assert answer.status_code == 400 and "not both" in answer.json()["detail"]
    answer = alice.post(url, files={"other": ("x", b"data")})
    assert answer.status_code == 400 and "give 'chunked_upload'" in answer.json()["detail"]
    answer = alice.post(url, data=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 400 and "multipart" in answer.json()["detail"]
    assert alice.post(url, data=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert stored_files(server) == before


def test_a_whole_file_over_max_size_is_413(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS, max_upload_size=1000) as limited, session_for("alice-token") as s:
        answer = post_file(s, limited.base_url, b"y" * 1001)
        assert answer.status_code == 413 and "limit" in answer.json()["detail"]
        assert post_file(s, limited.base_url, b"y" * 1000).status_code == 201
        [stored] = stored_files(limited)  # the refused file left nothing
        assert stored.endswith(".done")


def test_a_whole_file_counts_against_the_quota(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS, quota=1000) as limited, session_for("alice-token") as s:
        assert post_file(s, limited.base_url, b"y" * 600).status_code == 201
        answer = post_file(s, limited.base_url, b"z" * 600)
        assert answer.status_code == 507 and answer.json()["detail"] == "storage quota exceeded"
        assert len(stored_files(limited)) == 1


# -- verify_checksums ----------------------------------------------------------


def test_verify_checksums_answers_the_owner_s_subset_in_order(
    server: ReferenceServer, alice: Session, bob: Session
) -> None:
    url = f"{server.base_url}/data_files/verify_checksums/"
    held = [data_file(alice, server.base_url, os.urandom(100))["checksum"] for _ in range(3)]
    bobs = data_file(bob, server.base_url, os.urandom(100))["checksum"]
    unknown = md5(os.urandom(16))
    asked = [unknown, held[2], bobs, held[0].upper(), held[2], held[1]]
    answer = alice.post(url, json={"checksums": asked})
    assert answer.status_code == 200
    # As given (case and repeats kept), each in one of the two lists.
    assert answer.json() == {"checksums": [held[2], held[0].upper(), held[2], held[1]], "missing": [unknown, bobs]}
    assert alice.post(url, json={"checksums": []}).json() == {"checksums": [], "missing": []}
    with session_for("alice-token", tenant="acme") as other_tenant:
        assert other_tenant.post(url, json={"checksums": held}).json() == {"checksums": [], "missing": held}


def test_verify_checksums_takes_10000_and_no_more(server: ReferenceServer, alice: Session) -> None:
    url = f"{server.base_url}/data_files/verify_checksums/"
    held = data_file(alice, server.base_url, b"one of many")["checksum"]
    many = [f"{n:032x}" for n in range(9_999)] + [held]
    answer = alice.post(url, json={"checksums": many})
    assert answer.status_code == 200 and answer.json()["checksums"] == [held]
    assert len(answer.json()["missing"]) == 9_999
    answer = alice.post(url, json={"checksums": [*many, held]})
    assert answer.status_code == 400 and "at most 10000" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "checksums is required"),
        ({"checksums": "d41d8cd98f00b204e9800998ecf8427e"}, "checksums must be a list"),
        ({"checksums": ["d41d8cd98f00b204e9800998ecf8427"]}, "checksums[0] must be an MD5 checksum"),
        ({"checksums": ["0" * 32, "g" * 32]}, "checksums[1] must be an MD5 checksum"),
        ({"checksums": [None]}, "checksums[0] must be an MD5 checksum"),
        ({"checksums": [12345678901234567890123456789012]}, "checksums[0] must be an MD5 checksum"),
        ([], "the body must be a JSON object"),
    ],
)
def test_malformed_checksums_are_400(server: ReferenceServer, alice: Session, body, detail: str) -> None:
    answer = alice.post(f"{server.base_url}/data_files/verify_checksums/", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"{", "malformed JSON body"),
        (b'{"checksums": NaN}', "malformed JSON body"),
        (b'{"checksums": [1e400]}', "malformed JSON body"),
        (b"\xff\xfe", "malformed JSON body"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON body"),
        (b"[" * 65 + b"]" * 65, "nests deeper than 64"),
    ],
)
def test_bodies_that_are_not_json_are_400(server: ReferenceServer, alice: Session, raw: bytes, detail: str) -> None:
    for path in ("/data_files/verify_checksums/", "/data_units/", "/data_collections/", "/tasks/", "/models/"):
        answer = alice.post(server.base_url + path, data=raw, headers={"Content-Type": "application/json"})
        if path == "/models/" and detail.startswith("nests"):
            assert answer.status_code == 400  # a list, where a model wants an object
            continue
        assert answer.status_code == 400 and detail in answer.json()["detail"], path


def test_json_routes_want_json_and_a_bounded_body(server: ReferenceServer, alice: Session) -> None:
    url = f"{server.base_url}/data_files/verify_checksums/"
    answer = alice.post(url, data={"checksums": "0" * 32})
    assert answer.status_code == 415 and "application/json" in answer.json()["detail"]
    huge = json.dumps({"checksums": [], "padding": "x" * (1 << 20)})
    answer = alice.post(url, data=huge, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "limited" in answer.json()["detail"]


# -- data collections --------------------------------------------------------


def test_a_brand_new_owner_has_collection_1(server: ReferenceServer) -> None:
    with session_for("bob-token", tenant="brand-new") as newcomer:
        url = f"{server.base_url}/data_collections/1/"
        answer = newcomer.get(url, params={"expand": "file_specifications"})
        assert answer.status_code == 200
        collection = answer.json()
        assert set(collection) == {"id", "name", "file_specifications", "created_at"}
        assert (collection["id"], collection["name"], collection["file_specifications"]) == (
            1,
            "default",
            DEFAULT_SPECS,
        )
        # Without expand: the names only.
        assert newcomer.get(url).json()["file_specifications"] == ["primary"]
        assert newcomer.get(url, params={"expand": "owner,file_specifications"}).json() == collection
        listing = newcomer.get(f"{server.base_url}/data_collections/").json()
        assert listing == {"count": 1, "results": [{**collection, "file_specifications": ["primary"]}]}
        assert newcomer.get(f"{server.base_url}/data_collections/2/").status_code == 404


def test_collections_are_created_and_numbered_per_owner(server: ReferenceServer) -> None:
    base = server.base_url
    with (
        session_for("alice-token", tenant="collections") as mine,
        session_for("bob-token", tenant="collections") as his,
    ):
        specs = [
            {"name": "image", "is_required": True, "file_type": "image"},
            {"name": "label"},  # is_required and file_type default
        ]
        answer = mine.post(f"{base}/data_collections/", json={"name": "cats", "file_specifications": specs})
        assert answer.status_code == 201, answer.text
        created = answer.json()
        expected = [specs[0], {"name": "label", "is_required": False, "file_type": "any"}]
        assert (created["id"], created["name"], created["file_specifications"]) == (2, "cats", expected)
        assert mine.get(f"{base}/data_collections/2/", params={"expand": "file_specifications"}).json() == created
        assert mine.get(f"{base}/data_collections/2/").json()["file_specifications"] == ["image", "label"]
        bare = mine.post(f"{base}/data_collections/", json={"name": "bare"}).json()
        assert (bare["id"], bare["file_specifications"]) == (3, [])
        assert [each["id"] for each in mine.get(f"{base}/data_collections/").json()["results"]] == [1, 2, 3]
        # Bob (same tenant) has his own collection 1 and none of alice's.
        assert his.get(f"{base}/data_collections/2/").status_code == 404
        assert his.get(f"{base}/data_collections/").json()["count"] == 1
        assert his.post(f"{base}/data_collections/", json={"name": "dogs"}).json()["id"] == 2


def test_concurrent_creates_get_distinct_numbers(server: ReferenceServer) -> None:
    url = f"{server.base_url}/data_collections/"

    def create(name: str) -> int:
        with session_for("alice-token", tenant="concurrent") as s:
            answer = s.post(url, json={"name": name})
            assert answer.status_code == 201, answer.text
            return answer.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(create, [f"c{n}" for n in range(16)]))
    assert sorted(numbers) == list(range(2, 18))


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "name is required"),
        ({"name": ""}, "name must be a non-empty text"),
        ({"name": 5}, "name must be a non-empty text"),
        ({"name": "\ud800"}, "not valid Unicode"),
        ({"name": "c", "file_specifications": {}}, "file_specifications must be a list"),
        ({"name": "c", "file_specifications": ["image"]}, "file_specifications[0] must be a JSON object"),
        ({"name": "c", "file_specifications": [{}]}, "file_specifications[0]: name is required"),
        ({"name": "c", "file_specifications": [{"name": "a"}, {"name": "a"}]}, "specified twice"),
        ({"name": "c", "file_specifications": [{"name": "a", "is_required": "yes"}]}, "is_required must be"),
        ({"name": "c", "file_specifications": [{"name": "a", "file_type": ""}]}, "file_type must be"),
        (["c"], "the body must be a JSON object"),
    ],
)
def test_a_malformed_collection_is_400(server: ReferenceServer, alice: Session, body, detail: str) -> None:
    answer = alice.post(f"{server.base_url}/data_collections/", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"]


# -- data units ----------------------------------------------------------------


def test_data_units_one_or_many_are_created_and_read_back(server: ReferenceServer, alice: Session) -> None:
    url = f"{server.base_url}/data_units/"
    first, second = (data_file(alice, server.base_url, os.urandom(64))["checksum"] for _ in range(2))
    answer = alice.post(url, json=unit_body(first, meta={"label": "cat", "deep": {"a": [1, 2.5, None]}}))
    assert answer.status_code == 201, answer.text
    [unit] = answer.json()  # one object in, still a list out
    assert set(unit) == {"id", "data_collection", "files", "meta", "groups", "created_at"}
    assert unit["data_collection"] == 1 and unit["groups"] == []
    url_path = unsigned(unit["files"]["primary"]["url"])  # a signed URL to the file's bytes (test_downloads)
    assert isinstance(url_path, str) and re.fullmatch(r"/media/[0-9]+/b\.jpg", url_path), url_path
    assert unsigned(unit["files"]) == {"primary": {"checksum": first, "path": "a/b.jpg", "url": url_path}}
    assert unit["meta"] == {"label": "cat", "deep": {"a": [1, 2.5, None]}}
    assert unsigned(alice.get(f"{url}{unit['id']}/").json()) == unsigned(unit)

    two_files = {
        "data_collection": 1,
        "files": {"image": {"checksum": first.upper(), "path": "x.jpg"}, "label": {"checksum": second, "path": "y"}},
        "groups": ["train", 7],
    }
    answer = alice.post(url, json=[two_files, unit_body(second)])
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert len(made) == 2 and made[0]["id"] < made[1]["id"]
    assert made[0]["files"]["image"]["checksum"] == first  # stored lower-case, as data files are
    assert (made[0]["groups"], made[0]["meta"]) == (["train", 7], {})
    for each in made:
        assert unsigned(alice.get(f"{url}{each['id']}/").json()) == unsigned(each)


def test_another_owner_s_unit_is_404(server: ReferenceServer, alice: Session, bob: Session) -> None:
    checksum = data_file(alice, server.base_url, b"alice's unit")["checksum"]
    [unit] = alice.post(f"{server.base_url}/data_units/", json=[unit_body(checksum)]).json()
    assert bob.get(f"{server.base_url}/data_units/{unit['id']}/").status_code == 404
    assert (
        bob.get(f"{server.base_url}/data_units/{unit['id']}/").json()
        == bob.get(f"{server.base_url}/data_units/999999999/").json()
    )
    # Bob cannot bind alice's file: he holds no data file with its checksum.
    answer = bob.post(f"{server.base_url}/data_units/", json=unit_body(checksum))
    assert answer.status_code == 400 and checksum in answer.json()["detail"]


def test_data_units_are_all_or_nothing(server: ReferenceServer, alice: Session) -> None:
    url = f"{server.base_url}/data_units/"
    checksum = data_file(alice, server.base_url, os.urandom(64))["checksum"]
    [before] = alice.post(url, json=unit_body(checksum)).json()
    unknown = md5(b"never uploaded")
    for refused, detail in [
        (
            [unit_body(checksum), unit_body(checksum), unit_body(unknown)],
            f"unit 2: file 'primary': no data file with checksum {unknown}",
        ),
        ([unit_body(checksum), unit_body(checksum, collection=999)], "unit 1: data collection 999 not found"),
        ([unit_body(checksum), {"files": {}}], "unit 1: data_collection is required"),
    ]:
        answer = alice.post(url, json=refused)
        assert answer.status_code == 400 and answer.json()["detail"].startswith(detail), answer.text
    # Nothing of the refused requests was kept: the next unit follows the last one made.
    [after] = alice.post(url, json=unit_body(checksum)).json()
    assert after["id"] == before["id"] + 1
    assert unsigned(alice.get(f"{url}{before['id'] + 1}/").json()) == unsigned(after)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ([], "lists no data units"),
        ("unit", "the body must be a JSON object"),
        ([1, 2], "unit 0 must be a JSON object"),
        ({"files": {}}, "data_collection is required"),
        (unit_body("0" * 32, collection="one"), "data_collection must be an id"),
        ({"data_collection": 1}, "files is required"),
        ({"data_collection": 1, "files": {}}, "files is empty"),
        ({"data_collection": 1, "files": []}, "files must be an object"),
        ({"data_collection": 1, "files": {"": {"checksum": "0" * 32, "path": ""}}}, "a file name is empty"),
        ({"data_collection": 1, "files": {"p": "0" * 32}}, "files['p'] must be a JSON object"),
        ({"data_collection": 1, "files": {"p": {"path": "x"}}}, "files['p']: checksum is required"),
        ({"data_collection": 1, "files": {"p": {"checksum": "xyz", "path": "x"}}}, "checksum must be an MD5"),
        ({"data_collection": 1, "files": {"p": {"checksum": "0" * 32}}}, "files['p']: path is required"),
        ({"data_collection": 1, "files": {"p": {"checksum": "0" * 32, "path": 3}}}, "path must be a text"),
        (unit_body("0" * 32, meta=[1]), "meta must be an object"),
        (unit_body("0" * 32, groups="train"), "groups must be a list"),
        (unit_body("0" * 32, groups=[{"a": 1}]), "groups must be a list"),
        (unit_body("0" * 32, collection=999), "data collection 999 not found"),
        (unit_body("0" * 32), "no data file with checksum 00000000000000000000000000000000"),
        ([{"data_collection": 1}] * 10_001, "at most 10000"),
    ],
)
def test_a_malformed_unit_is_400(server: ReferenceServer, alice: Session, body, detail: str) -> None:
    answer = alice.post(f"{server.base_url}/data_units/", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"], answer.text


# -- models --------------------------------------------------------------------


def test_a_model_from_a_chunked_upload(server: ReferenceServer) -> None:
    weights = os.urandom(300_000)
    with session_for("alice-token", tenant="models") as mine, session_for("bob-token", tenant="models") as his:
        upload = chunked_upload(mine, server.base_url, weights)
        fields = {"name": "resnet", "chunked_upload": upload["id"], "plugin": 3, "parameters": {"lr": 0.1}}
        answer = mine.post(f"{server.base_url}/models/", json=fields)
        assert answer.status_code == 201, answer.text
        model = answer.json()
        assert set(model) == {
            "id",
            "name",
            "file",
            "checksum",
            "size",
            "created_at",
            "chunked_upload",
            "plugin",
            "parameters",
        }
        assert (model["name"], model["plugin"], model["parameters"]) == ("resnet", 3, {"lr": 0.1})
        assert (model["checksum"], model["size"]) == (md5(weights), len(weights))
        assert unsigned(model["file"]) == f"/media/{upload['id']}/{upload['filename']}"  # a signed URL
        assert model["chunked_upload"] == upload["id"]
        assert unsigned(mine.get(f"{server.base_url}/models/{model['id']}/").json()) == unsigned(model)
        listed = {"count": 1, "next": None, "previous": None, "results": [unsigned(model)]}
        assert unsigned(mine.get(f"{server.base_url}/models/").json()) == listed
        # A form works too; its fields are text.
        form = mine.post(f"{server.base_url}/models/", data={"name": "again", "chunked_upload": str(upload["id"])})
        assert form.status_code == 201 and form.json()["chunked_upload"] == upload["id"]
        assert mine.get(f"{server.base_url}/models/").json()["count"] == 2
        # Bob sees none of it, and cannot use alice's upload.
        assert his.get(f"{server.base_url}/models/{model['id']}/").status_code == 404
        assert his.get(f"{server.base_url}/models/").json() == {
            "count": 0,
            "next": None,
            "previous": None,
            "results": [],
        }
        answer = his.post(f"{server.base_url}/models/", json={"name": "stolen", "chunked_upload": upload["id"]})
        assert answer.status_code == 400 and "not found or not complete" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"chunked_upload": 1}, "name is required"),
        ({"name": "", "chunked_upload": 1}, "name must be a non-empty text"),
        ({"name": ["m"], "chunked_upload": 1}, "name must be a non-empty text"),
        ({"name": "m"}, "chunked_upload is required"),
        ({"name": "m", "chunked_upload": "x"}, "chunked_upload must be an id"),
        ({"name": "m", "chunked_upload": 999_999_999}, "chunked upload 999999999 not found or not complete"),
        ({"name": "m", "chunked_upload": 1, "checksum": "0" * 32}, "'checksum' is set by the server"),
        ({"name": "m", "chunked_upload": 1, "id": 5}, "'id' is set by the server"),
        ([{"name": "m"}], "the JSON body must be an object"),
    ],
)
def test_a_malformed_model_is_400(server: ReferenceServer, alice: Session, body, detail: str) -> None:
    answer = alice.post(f"{server.base_url}/models/", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"], answer.text


def test_a_model_needs_a_complete_upload(server: ReferenceServer, alice: Session) -> None:
    open_one = chunked_upload(alice, server.base_url, os.urandom(300_000), finalize=False)
    answer = alice.post(f"{server.base_url}/models/", json={"name": "m", "chunked_upload": open_one["id"]})
    assert answer.status_code == 400 and "not finalized" in answer.json()["detail"]


# -- tasks ---------------------------------------------------------------------


def test_tasks_for_the_owner_s_units(server: ReferenceServer, alice: Session, bob: Session) -> None:
    base = server.base_url
    checksum = data_file(alice, base, os.urandom(64))["checksum"]
    units = alice.post(f"{base}/data_units/", json=[unit_body(checksum), unit_body(checksum)]).json()
    body = {"project": 7, "data": [{"data_unit": unit["id"]} for unit in units]}
    answer = alice.post(f"{base}/tasks/", json=body)
    assert answer.status_code == 201, answer.text
    tasks = answer.json()
    assert [(task["project"], task["data_unit"]) for task in tasks] == [(7, unit["id"]) for unit in units]
    assert all(set(task) == {"id", "project", "data_unit"} for task in tasks)
    assert alice.get(f"{base}/tasks/{tasks[0]['id']}/").json() == tasks[0]
    assert bob.get(f"{base}/tasks/{tasks[0]['id']}/").status_code == 404
    # Bob cannot make tasks of alice's units; nothing is made when one unit is not his.
    bobs = data_file(bob, base, b"bob")["checksum"]
    [his] = bob.post(f"{base}/data_units/", json=unit_body(bobs)).json()
    answer = bob.post(f"{base}/tasks/", json={"project": 7, "data": [{"data_unit": his["id"]}, *body["data"]]})
    assert answer.status_code == 400 and answer.json()["detail"] == f"data unit {units[0]['id']} not found"
    [made] = bob.post(f"{base}/tasks/", json={"project": 1, "data": [{"data_unit": his["id"]}]}).json()
    assert made["id"] == tasks[-1]["id"] + 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"data": [{"data_unit": 1}]}, "project is required"),
        ({"project": "p", "data": [{"data_unit": 1}]}, "project must be an id"),
        ({"project": 1}, "data is required"),
        ({"project": 1, "data": []}, "data is empty"),
        ({"project": 1, "data": {"data_unit": 1}}, "data must be a list"),
        ({"project": 1, "data": [1]}, "data[0] must be a JSON object"),
        ({"project": 1, "data": [{"unit": 1}]}, "data[0]: data_unit is required"),
        ({"project": 1, "data": [{"data_unit": False}]}, "data[0].data_unit must be an id"),
        ({"project": 1, "data": [{"data_unit": 999_999_999}]}, "data unit 999999999 not found"),
    ],
)
def test_a_malformed_task_request_is_400(server: ReferenceServer, alice: Session, body, detail: str) -> None:
    answer = alice.post(f"{server.base_url}/tasks/", json=body)
    assert answer.status_code == 400 and detail in answer.json()["detail"], answer.text


# -- persistence -----------------------------------------------------------------


def test_every_record_survives_a_restart(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS) as first, session_for("alice-token") as s:
        base = first.base_url
        whole = data_file(s, base, b"whole file")
        upload = chunked_upload(s, base, os.urandom(200_000))
        from_upload = s.post(f"{base}/data_files/", json={"chunked_upload": upload["id"]}).json()
        collection = s.post(f"{base}/data_collections/", json={"name": "kept", "file_specifications": [{"name": "a"}]})
        units = s.post(f"{base}/data_units/", json=[unit_body(whole["checksum"], collection=2)]).json()
        tasks = s.post(f"{base}/tasks/", json={"project": 3, "data": [{"data_unit": units[0]["id"]}]}).json()
        model = s.post(f"{base}/models/", json={"name": "m", "chunked_upload": upload["id"], "v": [1]}).json()
        records = {
            f"/data_files/{whole['id']}/": whole,
            f"/data_files/{from_upload['id']}/": from_upload,
            "/data_collections/1/?expand=file_specifications": s.get(
                f"{base}/data_collections/1/?expand=file_specifications"
            ).json(),
            "/data_collections/2/?expand=file_specifications": collection.json(),
            f"/data_units/{units[0]['id']}/": units[0],
            f"/tasks/{tasks[0]['id']}/": tasks[0],
            f"/models/{model['id']}/": model,
            "/models/": {"count": 1, "next": None, "previous": None, "results": [model]},
        }
    with ReferenceServer(tmp_path, tokens=TOKENS) as second, session_for("alice-token") as s:
        for path, record in records.items():
            assert unsigned(s.get(second.base_url + path).json()) == unsigned(record), path
        checksums = [whole["checksum"], from_upload["checksum"]]
        answer = s.post(f"{second.base_url}/data_files/verify_checksums/", json={"checksums": checksums})
        assert answer.json() == {"checksums": checksums, "missing": []}
        # Ids go on from where they were.
        again = data_file(s, second.base_url, b"whole file")
        assert again["id"] == from_upload["id"] + 1 and Path(again["file"]).read_bytes() == b"whole file"
        assert s.post(f"{second.base_url}/data_collections/", json={"name": "next"}).json()["id"] == 3


def test_a_data_dir_from_before_the_catalog_gains_its_tables(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS) as first, session_for("alice-token") as s:
        upload = chunked_upload(s, first.base_url, b"made before")
    with sqlite3.connect(tmp_path / "uploads.sqlite3") as db:
        for table in ("data_files", "data_collections", "data_units", "models", "tasks"):
            db.execute(f"DROP TABLE {table}")
    db.close()
    with ReferenceServer(tmp_path, tokens=TOKENS) as second, session_for("alice-token") as s:
        answer = s.post(f"{second.base_url}/data_files/", json={"chunked_upload": upload["id"]})
        assert answer.status_code == 201 and answer.json()["checksum"] == md5(b"made before")
        assert s.get(f"{second.base_url}/data_collections/1/").json()["name"] == "default"

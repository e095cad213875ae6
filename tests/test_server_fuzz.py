"""Hypothesis against the reference server's request handling, over one pooled socket.

Random and malformed ``Content-Range``, ``Content-MD5``, ``Content-Type`` and
boundaries, multipart bodies (truncated, parts missing or extra, huge field
names), ids in the URL, tokens, methods, JSON/urlencoded/multipart
finalize bodies, and near-valid bodies for the routes around the upload
(data files, collections, units, models, tasks). The properties: every
answer is a 2xx or a 4xx (never a 5xx, never a dropped connection), and two
uploads in progress made before the fuzzing, one by the fuzzing user and one
by another, are untouched: same offset, same bytes on disk, and each still
completes to the right MD5.

The victims' sizes lie outside every number the strategies draw, so no fuzzed
chunk can be a valid next chunk of theirs by chance.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synapse_sdk.server import ReferenceServer

pytestmark = pytest.mark.integration

TOKENS = {"alice-token": "alice", "bob-token": "bob"}
VICTIM_TOTAL = 10_012_345
VICTIM_OFFSET = 1_234_567
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BOUNDARY = "fuzz-boundary"


class Wire:
    """One keep-alive connection; a new one only when the server said it closes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: http.client.HTTPConnection | None = None

    def send(self, method: str, path: str, headers: dict[str, bytes], body: bytes) -> tuple[int, bytes]:
        fresh = self.connection is None
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionError) as error:
            self.close()
            if fresh:
                raise AssertionError(f"the server dropped the connection: {method} {path!r}") from error
            # A kept-alive connection may have timed out idle between examples.
            return self.send(method, path, headers, body)
        except BaseException:
            self.close()  # a broken exchange must not leak into the next example
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Victim:
    token: str
    data: bytes
    record: dict

    @property
    def path(self) -> str:
        return f"/chunked_upload/{self.record['id']}/"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    with ReferenceServer(tmp_path_factory.mktemp("fuzz"), tokens=TOKENS, max_upload_size=1 << 30) as running:
        yield running


@pytest.fixture(scope="module")
def wire(server: ReferenceServer) -> Iterator[Wire]:
    connection = Wire(int(server.base_url.rsplit(":", 1)[1]))
    yield connection
    connection.close()


def put(session: requests.Session, url: str, data: bytes, start: int, total: int) -> requests.Response:
    headers = {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"}
    return session.put(url, data={"filename": "victim.bin"}, files={"file": ("chunk", data)}, headers=headers)


@pytest.fixture
def victims(server: ReferenceServer) -> list[Victim]:
    """An upload in progress of the fuzzing user (alice) and one of bob's."""
    made = []
    for token in ("alice-token", "bob-token"):
        data = os.urandom(VICTIM_TOTAL)
        with requests.Session() as s:
            s.headers["Synapse-Access-Token"] = f"Token {token}"
            answer = put(s, f"{server.base_url}/chunked_upload/", data[:VICTIM_OFFSET], 0, VICTIM_TOTAL)
            assert answer.status_code == 200, answer.text
        made.append(Victim(token, data, answer.json()))
    return made


def assert_untouched_and_finish(server: ReferenceServer, victims: list[Victim]) -> None:
    """Each victim as it was left: same offset, same bytes; it still completes to the right MD5."""
    for victim in victims:
        with requests.Session() as s:
            s.headers["Synapse-Access-Token"] = f"Token {victim.token}"
            url = f"{server.base_url}{victim.path}"
            state = s.get(url).json()
            assert (state["offset"], state["status"], state["filename"]) == (VICTIM_OFFSET, 1, "victim.bin")
            part = server.data_dir / "uploads" / f"{victim.record['id']}.part"
            assert part.read_bytes() == victim.data[:VICTIM_OFFSET]
            assert put(s, url, victim.data[VICTIM_OFFSET:], VICTIM_OFFSET, VICTIM_TOTAL).status_code == 200
            done = s.post(url, data={"md5": hashlib.md5(victim.data).hexdigest()})
            assert done.status_code == 200, done.text
            assert Path(done.json()["file"]).read_bytes() == victim.data


def check(status: int, body: bytes) -> None:
    assert 200 <= status < 500, (status, body[:300])


# -- strategies ----------------------------------------------------------------

# Header values go out as UTF-8 bytes: anything but CR and LF, which would
# end the header (http.client refuses them, and they are not a value's anyway).
header_text = st.text(st.characters(max_codepoint=0xFF, blacklist_characters="\r\n"), max_size=60)
numbers = st.integers(0, 10**6) | st.integers(0, 10**30) | st.sampled_from([0, 1, 2**63 - 1, 2**63, 10**18 - 1])
content_ranges = st.one_of(
    st.none(),
    st.builds("bytes {}-{}/{}".format, numbers, numbers, numbers),
    st.builds("bytes {}-{}/*".format, numbers, numbers),
    st.builds(lambda a, b, c: f"bytes {a}-{b}/{c}", header_text, header_text, header_text),
    st.sampled_from(
        ["", "bytes", "bytes */10", "bytes 0-0/0", "bytes 1-2/3, 4-5/6", "bytes=0-1/2", "bytes \u0660-1/2"]
    ),
    header_text,
)
content_md5s = st.one_of(
    st.none(),
    st.binary(max_size=20).map(lambda raw: base64.b64encode(raw).decode()),
    header_text,
)
boundaries = st.one_of(
    st.just(BOUNDARY),
    st.text("abcXYZ0123-_'()+,./:=? ", min_size=1, max_size=75),
    st.text(st.characters(max_codepoint=0xFF, blacklist_characters='\r\n"'), max_size=80),
)
content_types = st.one_of(
    st.builds("multipart/form-data; boundary={}".format, boundaries),
    st.builds('multipart/form-data; boundary="{}"'.format, boundaries),
    st.sampled_from(["multipart/form-data", "application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
    header_text,
)
field_names = st.one_of(
    st.sampled_from(["file", "filename", "md5", "chunked_upload", ""]),
    st.text(max_size=30),
    st.integers(1, 100_000).map(lambda n: "n" * n),  # huge field names, past the header limit too
)


@st.composite
def multipart_bodies(draw: st.DrawFn, boundary: str = BOUNDARY) -> bytes:
    """A form body, well-formed or not: parts drawn, then maybe cut or corrupted."""
    body = bytearray()
    for _ in range(draw(st.integers(0, 5))):
        name = draw(field_names)
        filename = draw(st.none() | st.text(max_size=20))
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        headers = f"Content-Disposition: {disposition}\r\n"
        if draw(st.booleans()):
            headers = draw(st.sampled_from(["", "garbage\r\n", "Content-Disposition: attachment\r\n", headers * 2]))
        content = draw(st.binary(max_size=3000) | st.sampled_from([b"", f"\r\n--{boundary}".encode()]))
        body += f"--{boundary}\r\n{headers}\r\n".encode("utf-8", "replace") + content + b"\r\n"
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode("utf-8", "replace")
    if body and draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]  # truncated
    if draw(st.integers(0, 4)) == 0:
        body += draw(st.binary(max_size=200))  # trailing garbage, or a body that is all garbage
    return bytes(body)


def good_chunk_body(data: bytes, filename: str = "f.bin") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="filename"\r\n\r\n{filename}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="chunk"\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def auth(token: str = "alice-token") -> dict[str, bytes]:
    return {"Synapse-Access-Token": f"Token {token}".encode()}


def targets(victims: list[Victim]) -> st.SearchStrategy[str]:
    """Where a chunk goes: a create, either victim (the other one is bob's: 404), or some other id."""
    return st.one_of(
        st.just("/chunked_upload/"),
        st.sampled_from([victim.path for victim in victims]),
        st.integers(0, 10**20).map("/chunked_upload/{}/".format),
    )


# -- the fuzz tests ----------------------------------------------------------------


def test_chunk_headers(server: ReferenceServer, wire: Wire, victims: list[Victim]) -> None:
    @settings(FUZZ, max_examples=300)
    @given(
        path=targets(victims),
        content_range=content_ranges,
        content_md5=content_md5s,
        content_type=st.just(f"multipart/form-data; boundary={BOUNDARY}") | content_types,
        data=st.binary(max_size=2000),
        key=st.none() | header_text,
    )
    def run(path, content_range, content_md5, content_type, data, key) -> None:
        headers = {**auth(), "Content-Type": content_type.encode()}
        for name, value in (("Content-Range", content_range), ("Content-MD5", content_md5), ("Idempotency-Key", key)):
            if value is not None:
                headers[name] = value.encode()
        check(*wire.send("PUT", path, headers, good_chunk_body(data)))

    run()
    assert_untouched_and_finish(server, victims)


def test_multipart_bodies(server: ReferenceServer, wire: Wire, victims: list[Victim]) -> None:
    # A well-formed Content-Range, so that creates and whole-file POSTs reach
    # the parser; finalize POSTs to the victims parse the body as a form too
    # (their chunk PUTs are refused unparsed: the range is not their offset).
    @settings(FUZZ, max_examples=300)
    @given(
        method_path=st.sampled_from([("PUT", "/chunked_upload/"), ("POST", "/chunked_upload/")])
        | st.sampled_from([("PUT", victim.path) for victim in victims] + [("POST", victim.path) for victim in victims]),
        boundary=st.just(BOUNDARY) | boundaries,
        data=st.data(),
        size=st.integers(1, 4000),
    )
    def run(method_path, boundary, data, size) -> None:
        method, path = method_path
        body = data.draw(multipart_bodies(boundary))
        headers = {
            **auth(),
            "Content-Type": f"multipart/form-data; boundary={boundary}".encode(),
            "Content-Range": f"bytes 0-{size - 1}/{size}".encode(),
        }
        check(*wire.send(method, path, headers, body))

    run()
    assert_untouched_and_finish(server, victims)


def test_request_lines_tokens_and_ids(server: ReferenceServer, wire: Wire, victims: list[Victim]) -> None:
    segment = st.one_of(
        st.sampled_from([str(victim.record["id"]) for victim in victims]),
        st.integers(-(10**20), 10**20).map(str),
        st.text(max_size=30).map(lambda text: quote(text, safe="")),
        st.sampled_from(["", "..", ".", "%00", "%2F", "%ff", "1;x", "1?x=1", "1#f"]),
    )
    paths = st.one_of(
        st.builds("/chunked_upload/{}/".format, segment),
        st.builds("/chunked_upload/{}".format, segment),
        st.sampled_from(["/chunked_upload/", "/chunked_upload", "/_stats/", "/_stats", "/", "/chunked_upload//"]),
        st.text(max_size=40).map(lambda text: "/" + quote(text, safe="/")),
    )
    tokens = st.one_of(
        st.sampled_from(["Token alice-token", "Token bob-token", "Token", "token alice-token", "alice-token"]),
        st.builds("Token {}".format, header_text),
        header_text,
    )

    @settings(FUZZ, max_examples=250)
    @given(
        method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"])
        | st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
        path=paths,
        token_header=st.sampled_from(["Synapse-Access-Token", "Authorization"]),
        token=st.none() | tokens,
        tenant=st.none() | header_text,
        body=st.binary(max_size=500),
    )
    def run(method, path, token_header, token, tenant, body) -> None:
        headers = {}
        if token is not None:
            headers[token_header] = token.encode()
        if tenant is not None:
            headers["Synapse-Tenant"] = tenant.encode()
        check(*wire.send(method, path, headers, body))

    run()
    assert_untouched_and_finish(server, victims)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
md5_values = st.one_of(
    st.text("0123456789abcdefABCDEF", max_size=40),
    st.just("d41d8cd98f00b204e9800998ecf8427e"),
    json_values,
)


def test_finalize_bodies(server: ReferenceServer, wire: Wire, victims: list[Victim]) -> None:
    @st.composite
    def finalize_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
        kind = draw(st.sampled_from(["json", "urlencoded", "multipart", "raw", "deep"]))
        if kind == "json":
            value = draw(st.dictionaries(st.sampled_from(["md5", "file", "x"]), md5_values) | json_values)
            return "application/json", json.dumps(value).encode()
        if kind == "urlencoded":
            pairs = draw(
                st.lists(st.tuples(st.sampled_from(["md5", "x", ""]) | st.text(max_size=5), st.text(max_size=40)))
            )
            return "application/x-www-form-urlencoded", urlencode(pairs).encode()
        if kind == "multipart":
            return f"multipart/form-data; boundary={BOUNDARY}", draw(multipart_bodies())
        if kind == "deep":  # nesting past the JSON parser's recursion limit
            depth = draw(st.integers(1, 100_000))
            return "application/json", b"[" * depth + b"]" * depth
        return draw(content_types), draw(st.binary(max_size=3000))

    @settings(FUZZ, max_examples=200)
    @given(path=targets(victims), content=finalize_bodies())
    def run(path, content) -> None:
        content_type, body = content
        headers = {**auth(), "Content-Type": content_type.encode()}
        check(*wire.send("POST", path, headers, body))

    run()
    assert_untouched_and_finish(server, victims)


# -- the routes around the upload ------------------------------------------------------

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"  # alice holds a data file with it (see below)
catalog_keys = st.sampled_from(
    [
        *("checksums", "name", "file_specifications", "data_collection", "files", "meta", "groups", "chunked_upload"),
        *("project", "data", "data_unit", "checksum", "path", "is_required", "file_type", "id", "file"),
    ]
)
catalog_leaves = st.one_of(
    json_values,
    st.integers(-2, 5),
    st.sampled_from([10**18 - 1, 10**18, 2**63, -(2**63), "1", "01", EMPTY_MD5, EMPTY_MD5.upper(), "\ud800", ""]),
    st.text("0123456789abcdef", min_size=31, max_size=33),
)
catalog_json = st.recursive(
    catalog_leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(catalog_keys | st.text(max_size=6), children),
    max_leaves=25,
)


def near(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a valid value, sometimes anything: bodies that get past some checks and trip a later one."""
    # one_of would draw each branch about as often, whatever the repeats: weigh by hand.
    return st.integers(0, 9).flatmap(lambda n: valid if n < 8 else catalog_leaves if n == 8 else catalog_json)


def shaped(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """An object of ``fields`` (each value near-valid): mostly all of them, else some and maybe an extra key."""
    near_fields = {key: near(value) for key, value in fields.items()}
    every = st.fixed_dictionaries(near_fields)
    some = st.fixed_dictionaries({}, optional={**near_fields, "id": catalog_leaves})
    return st.integers(0, 3).flatmap(lambda n: every if n else some)


def catalog_requests(upload_id: int) -> st.SearchStrategy[tuple[str, object]]:
    """A create's path and JSON body, near-valid; ``upload_id`` is a complete upload of alice's."""
    ids = st.integers(0, 6)
    uploads = st.sampled_from([upload_id, upload_id, 1])
    unit = shaped(
        {
            "data_collection": ids,
            "files": st.dictionaries(
                st.text(max_size=6),
                shaped({"checksum": st.sampled_from([EMPTY_MD5, EMPTY_MD5.upper()]), "path": st.text(max_size=10)}),
                min_size=1,
                max_size=3,
            ),
            "meta": st.dictionaries(st.text(max_size=6), catalog_json, max_size=3),
            "groups": st.lists(st.text(max_size=5) | st.integers(), max_size=3),
        }
    )
    spec = shaped({"name": st.text(max_size=5), "is_required": st.booleans(), "file_type": st.text()})
    return st.one_of(
        st.tuples(st.just("/data_files/"), shaped({"chunked_upload": uploads})),
        st.tuples(
            st.just("/data_files/verify_checksums/"),
            shaped({"checksums": st.lists(st.sampled_from([EMPTY_MD5, "0" * 32]) | catalog_leaves, max_size=5)}),
        ),
        st.tuples(
            st.just("/data_collections/"),
            shaped({"name": st.text(max_size=10), "file_specifications": st.lists(spec, max_size=3)}),
        ),
        st.tuples(st.just("/data_units/"), unit | st.lists(unit, max_size=4)),
        st.tuples(
            st.just("/models/"),
            shaped({"name": st.text(max_size=10), "chunked_upload": uploads, "extra": catalog_json}),
        ),
        st.tuples(
            st.just("/tasks/"),
            shaped({"project": ids, "data": st.lists(shaped({"data_unit": ids}), min_size=1, max_size=3)}),
        ),
        st.tuples(st.sampled_from(["/data_units/", "/tasks/", "/data_collections/"]), catalog_json),
    )


def test_catalog_routes(server: ReferenceServer, wire: Wire, victims: list[Victim]) -> None:
    # A data file to refer to (the empty file), so that drawn units and tasks can get past the checks.
    with requests.Session() as s:
        s.headers["Synapse-Access-Token"] = "Token alice-token"
        answer = s.post(f"{server.base_url}/data_files/", files={"file": ("f", b"")})
        assert answer.status_code == 201, answer.text
    creates = catalog_requests(int(Path(answer.json()["file"]).stem))
    segment = st.one_of(
        st.integers(0, 6).map(str), st.sampled_from(["verify_checksums", "", "abc", "-1", "9" * 19, "%00"])
    )
    kinds = st.sampled_from(["data_files", "data_collections", "data_units", "models", "tasks"])
    queries = st.lists(st.tuples(st.just("expand") | st.text(max_size=5), header_text), max_size=3).map(urlencode)
    reads = st.tuples(
        st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST"]), st.builds("/{}/{}".format, kinds, segment)
    )

    @st.composite
    def exchanges(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
        """A request: a near-valid JSON create, a read (with a query, maybe), or a form or garbage body."""
        kind = draw(st.sampled_from(["create", "create", "create", "read", "form"]))
        if kind == "create":
            path, value = draw(creates)
            return "POST", path, "application/json", json.dumps(value).encode()
        if kind == "read":
            method, path = draw(reads)
            return method, f"{path}?{draw(queries)}", "", b""
        path = draw(st.sampled_from(["/data_files/", "/models/", "/data_units/"]))
        body = draw(st.sampled_from(["multipart", "urlencoded", "raw"]))
        if body == "multipart":
            return "POST", path, f"multipart/form-data; boundary={BOUNDARY}", draw(multipart_bodies())
        if body == "urlencoded":
            pairs = draw(st.lists(st.tuples(catalog_keys | st.text(max_size=5), st.text(max_size=20)), max_size=4))
            return "POST", path, "application/x-www-form-urlencoded", urlencode(pairs).encode()
        return "POST", path, draw(content_types), draw(st.binary(max_size=500))

    @settings(FUZZ, max_examples=300)
    @given(exchange=exchanges(), token=st.sampled_from(["alice-token", "alice-token", "bob-token"]))
    def run(exchange, token) -> None:
        method, path, content_type, body = exchange
        headers = {**auth(token), "Content-Type": content_type.encode()}
        check(*wire.send(method, path, headers, body))

    run()
    assert_untouched_and_finish(server, victims)

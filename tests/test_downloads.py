"""Downloads as synapse-sdk users make them: ``get_model``, ``list_data_units``, ``synapse_sdk.utils.file``.

Against the reference server on loopback, which hands out model and
data-unit files as signed, expiring URLs; the download helpers are called
the way the published SDK's docstrings show. The cache folder
(``/tmp/datamaker`` in use) is a temporary folder here.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi

import synapse_sdk.utils.file.io as cache_io
from engine.errors import AuthorizationError, ClientConnectionError, NotFoundError, ServerError
from engine.retry import RetryPolicy
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.server import ReferenceServer
from synapse_sdk.server.app import UploadApp
from synapse_sdk.server.store import Store
from synapse_sdk.utils.file import (
    adownload_file,
    afiles_url_to_path_from_objs,
    download_file,
    files_url_to_path,
    files_url_to_path_from_objs,
    get_temp_path,
)
from tests.conftest import ALICE, make_file

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(backoff=0.01, cap=0.05, deadline=30)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The SDK's temporary folder, in the test's temporary folder."""
    root = tmp_path / "datamaker"
    monkeypatch.setattr(cache_io, "TEMP_ROOT", root)
    return root / "media"


@pytest.fixture
def alice(reference_server: ReferenceServer) -> Iterator[BackendClient]:
    with BackendClient(reference_server.base_url, access_token=ALICE, journal=False) as client:
        yield client


def new_model(client: BackendClient, directory: Path, size: int, name: str = "weights.pt") -> tuple[dict, bytes]:
    path, data = make_file(directory, name, size)
    return client.create_model({"name": "resnet", "plugin": 3}, file=path), data


def new_units(client: BackendClient, directory: Path, count: int, collection: int) -> list[bytes]:
    """``count`` units in ``collection``, each with one image of distinct bytes."""
    contents = []
    for index in range(count):
        path, data = make_file(directory, f"unit{index}.jpg", 1000 + index)
        checksum = client.create_data_file(path)["checksum"]
        client.create_data_units(
            {"data_collection": collection, "files": {"image": {"checksum": checksum, "path": str(path)}}}
        )
        contents.append(data)
    return contents


def new_collection(client: BackendClient) -> int:
    return client._post("data_collections/", data={"name": "downloads"})["id"]


# -- get_model -------------------------------------------------------------------


def test_get_model_downloads_its_file_into_the_published_cache(
    alice: BackendClient, tmp_path: Path, cache: Path
) -> None:
    created, data = new_model(alice, tmp_path, 3 * MIB + 17)
    assert created["file"].startswith(f"{alice.base_url}/media/")

    model = alice.get_model(created["id"])

    path = model["file"]
    assert isinstance(path, Path) and path.read_bytes() == data
    assert path.parent == cache == get_temp_path("media")
    # Named as synapse-sdk names it: MD5 of the URL without its query, and the suffix.
    clean = created["file"].split("?")[0]
    assert path.name == hashlib.md5(clean.encode()).hexdigest() + ".pt"
    assert {key: value for key, value in model.items() if key != "file"} == {
        key: value for key, value in created.items() if key != "file"
    }
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no .part left behind
    # Asked again (a fresh signature), the cached file is the answer.
    assert alice.get_model(created["id"])["file"] == path


def test_get_model_url_conversion_as_given(alice: BackendClient, tmp_path: Path, cache: Path) -> None:
    created, data = new_model(alice, tmp_path, 5000, "model.onnx")
    as_text = alice.get_model(created["id"], url_conversion={"files_fields": ["file"], "coerce": str})
    assert isinstance(as_text["file"], str) and Path(as_text["file"]).read_bytes() == data
    as_bytes = alice.get_model(
        created["id"], url_conversion={"files_fields": ["file"], "is_list": False, "coerce": lambda p: p.read_bytes()}
    )
    assert as_bytes["file"] == data
    # An empty conversion keeps the URL, as in synapse-sdk.
    assert alice.get_model(created["id"], url_conversion={})["file"].startswith("http://")


def test_list_models_is_a_page(alice: BackendClient, tmp_path: Path) -> None:
    created, _ = new_model(alice, tmp_path, 100)
    page = alice.list_models(params={"page_size": 1})
    assert set(page) == {"count", "next", "previous", "results"} and page["count"] >= 1
    assert page["previous"] is None and len(page["results"]) == 1
    assert alice.exists("list_models")
    ids = [model["id"] for model in alice._list_all("models/", params={"page_size": 1})]
    assert created["id"] in ids and len(ids) == page["count"] == len(set(ids))


# -- list_data_units ----------------------------------------------------------------


def test_list_data_units_list_all_walks_every_page(alice: BackendClient, tmp_path: Path) -> None:
    collection = new_collection(alice)
    contents = new_units(alice, tmp_path, 7, collection)

    units, count = alice.list_data_units(params={"data_collection": collection}, list_all=True, page_size=3)

    assert count == 7
    units = list(units)
    assert [unit["files"]["image"]["path"].read_bytes() for unit in units] == contents
    assert all("url" not in unit["files"]["image"] for unit in units)  # replaced, as in synapse-sdk


def test_list_data_units_one_page_and_its_links(alice: BackendClient, tmp_path: Path) -> None:
    collection = new_collection(alice)
    contents = new_units(alice, tmp_path, 5, collection)
    params = {"data_collection": collection}

    first = alice.list_data_units(params=params, page_size=2)

    assert params == {"data_collection": collection}  # the caller's dict is not changed
    assert first["count"] == 5 and first["previous"] is None
    assert [unit["files"]["image"]["path"].read_bytes() for unit in first["results"]] == contents[:2]
    last = alice._get(alice._get(first["next"])["next"], url_conversion={"files_fields": ["files"], "is_list": True})
    assert last["next"] is None and last["previous"] is not None
    assert [unit["files"]["image"]["path"].read_bytes() for unit in last["results"]] == contents[4:]
    kept = alice.list_data_units(params=params, page_size=2, url_conversion={})
    assert kept["results"][0]["files"]["image"]["url"].startswith("http://")


def test_a_page_past_the_last_or_a_bad_page_size_is_refused(alice: BackendClient) -> None:
    with pytest.raises(NotFoundError):
        alice.list_data_units(params={"page": 999_999})
    with pytest.raises(Exception, match="page_size must be a number from 1 to 1000"):
        alice.list_data_units(page_size=0)


# -- the published helpers, as their docstrings use them ----------------------------------


def test_download_helpers_as_the_published_docstrings_show(alice: BackendClient, tmp_path: Path) -> None:
    created, data = new_model(alice, tmp_path, 2048, "img.jpg")
    url = created["file"]

    path = download_file(url, tmp_path / "downloads")
    assert path.read_bytes() == data and path.suffix == ".jpg"
    path = download_file(url, tmp_path, name="my_file")  # Custom name
    assert path == tmp_path / "my_file.jpg" and path.read_bytes() == data
    path_str = download_file(url, tmp_path, coerce=str)  # As string
    assert isinstance(path_str, str) and Path(path_str).read_bytes() == data

    files = {"image": url}
    files_url_to_path(files)
    assert files["image"].read_bytes() == data
    files = {"image": "data:image/png;base64,aGVsbG8="}
    files_url_to_path(files)
    assert files["image"].suffix == ".png" and files["image"].read_bytes() == b"hello"
    files = {"video": {"url": url, "size": 1024}}
    files_url_to_path(files)
    assert set(files["video"]) == {"path", "size"} and files["video"]["path"].read_bytes() == data

    obj = {"files": {"image": url}}
    files_url_to_path_from_objs(obj, files_fields=["files"])
    assert obj["files"]["image"].read_bytes() == data
    objs = [{"data": {"files": {"a": url}}}, {"data": {"files": {"b": url}}}, {"other": 1}]
    files_url_to_path_from_objs(objs, ["data.files"], is_list=True, is_async=True)
    assert objs[0]["data"]["files"]["a"] == objs[1]["data"]["files"]["b"] and objs[2] == {"other": 1}


def test_a_bad_url_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        download_file("ftp://example.com/x.bin", tmp_path)
    with pytest.raises(ValueError, match="not a base64 data URI"):
        files_url_to_path({"x": "data:nothing"})


# -- expiry and signatures -------------------------------------------------------------


def test_an_expired_url_is_a_clear_error(tmp_path: Path, cache: Path) -> None:
    with (
        ReferenceServer(tmp_path / "server", tokens={ALICE: "alice"}, media_ttl=0) as server,
        BackendClient(server.base_url, access_token=ALICE, journal=False) as client,
    ):
        created, _ = new_model(client, tmp_path, 1000)
        with pytest.raises(AuthorizationError, match=r"expired at .*fetch the record again") as caught:
            client.get_model(created["id"])
    assert caught.value.status_code == 403
    assert "signature=" not in str(caught.value)  # the URL's secret part is not repeated in errors
    assert created["file"].split("?")[0] in str(caught.value)
    assert not any(cache.iterdir())  # nothing half-made in the cache


def test_a_changed_signature_is_refused(alice: BackendClient, tmp_path: Path) -> None:
    created, _ = new_model(alice, tmp_path, 1000)
    forged = created["file"].replace("expires=", "expires=9")
    with pytest.raises(AuthorizationError, match="signature does not match"):
        download_file(forged, tmp_path)
    unsigned = created["file"].split("?")[0]
    with pytest.raises(AuthorizationError, match="not a signed URL"):
        download_file(unsigned, tmp_path)


# -- broken downloads resume by Range ---------------------------------------------------


class CutFirstMediaAnswer:
    """WSGI middleware: the first media answer breaks off after ``after`` bytes; every media request is noted."""

    def __init__(self, app: Callable[..., Any], after: int) -> None:
        self.app = app
        self.after = after
        self.cut = False
        self.requests: list[dict[str, str | None]] = []
        self.sent = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        answer = self.app(environ, start_response)
        if not environ.get("PATH_INFO", "").startswith("/media/"):
            return answer
        self.requests.append({"range": environ.get("HTTP_RANGE"), "if_range": environ.get("HTTP_IF_RANGE")})
        limit = None if self.cut else self.after
        self.cut = True
        return self._relay(answer, limit)

    def _relay(self, answer: Any, limit: int | None) -> Iterator[bytes]:
        try:
            for block in answer:
                if limit is not None and self.sent + len(block) >= limit:
                    yield block[: limit - self.sent]
                    self.sent = limit
                    raise ConnectionAbortedError("cut on purpose")  # cheroot closes the connection
                self.sent += len(block)
                yield block
        finally:
            getattr(answer, "close", lambda: None)()


@pytest.fixture
def cutting_server(tmp_path: Path) -> Iterator[tuple[str, CutFirstMediaAnswer]]:
    store = Store(tmp_path / "cutting", timedelta(days=1), io_threads=4)
    middleware = CutFirstMediaAnswer(UploadApp(store, {ALICE: "alice"}), after=3 * MIB + 5)
    server = wsgi.Server(("127.0.0.1", 0), middleware, numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.bind_addr[1]}", middleware
    finally:
        server.stop()
        thread.join()
        store.close()


def test_a_download_that_breaks_off_resumes_with_range(cutting_server, tmp_path: Path) -> None:
    base_url, middleware = cutting_server
    with BackendClient(base_url, access_token=ALICE, journal=False, retry=FAST) as client:
        created, data = new_model(client, tmp_path, 8 * MIB + 3)
        model = client.get_model(created["id"])
    assert model["file"].read_bytes() == data
    first, second = middleware.requests
    assert first == {"range": None, "if_range": None}
    assert second["range"] == f"bytes={3 * MIB + 5}-" and second["if_range"]
    # The bytes that had arrived were not sent again.
    assert middleware.sent == len(data)


def test_a_part_file_left_by_another_process_is_resumed(cutting_server, tmp_path: Path, cache: Path) -> None:
    base_url, middleware = cutting_server
    middleware.cut = True  # no faults: the earlier process's leftovers are the point
    with BackendClient(base_url, access_token=ALICE, journal=False) as client:
        created, data = new_model(client, tmp_path, 2 * MIB)
        url = created["file"]
        etag = client.transport.request("HEAD", url).headers["ETag"]
        target = cache / (hashlib.md5(url.split("?")[0].encode()).hexdigest() + ".pt")
        cache.mkdir(parents=True)
        Path(f"{target}.part").write_bytes(data[:MIB])
        Path(f"{target}.part.tag").write_text(etag)
        assert client.get_model(created["id"])["file"] == target
    assert target.read_bytes() == data
    assert middleware.requests[-1]["range"] == f"bytes={MIB}-"
    assert middleware.sent == len(data) - MIB
    assert sorted(p.name for p in cache.iterdir()) == [target.name]


def test_a_part_file_of_another_version_starts_over(cutting_server, tmp_path: Path, cache: Path) -> None:
    base_url, middleware = cutting_server
    middleware.cut = True
    with BackendClient(base_url, access_token=ALICE, journal=False) as client:
        created, data = new_model(client, tmp_path, MIB)
        url = created["file"]
        target = cache / (hashlib.md5(url.split("?")[0].encode()).hexdigest() + ".pt")
        cache.mkdir(parents=True)
        Path(f"{target}.part").write_bytes(b"x" * 1000)
        Path(f"{target}.part.tag").write_text('"an-older-version"')
        assert client.get_model(created["id"])["file"].read_bytes() == data
    # Asked with If-Range of the old version, the server sent the whole file.
    assert middleware.requests[-1]["if_range"] == '"an-older-version"' and middleware.sent == len(data)


# -- memory ------------------------------------------------------------------------------

GET_MODEL_AND_REPORT_PEAK_RSS = """
import re, sys
from pathlib import Path
import synapse_sdk.utils.file.io as cache_io
from synapse_sdk.clients.backend import BackendClient
cache_io.TEMP_ROOT = Path(sys.argv[4])
model = BackendClient(sys.argv[1], access_token=sys.argv[2], journal=False).get_model(int(sys.argv[3]))
assert model["file"].stat().st_size > 0
with open("/proc/self/status") as status:
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024)
"""


def test_peak_rss_of_get_model_is_flat_in_file_size(alice: BackendClient, tmp_path: Path) -> None:
    peaks = {}
    for size in (8 * MIB, 300 * MIB):
        path = tmp_path / f"{size}.bin"
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: cheap to make
        model = alice.create_model({"name": f"big {size}"}, file=path)
        path.unlink()
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                GET_MODEL_AND_REPORT_PEAK_RSS,
                alice.base_url,
                ALICE,
                str(model["id"]),
                str(tmp_path / f"c{size}"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
            check=True,
        )
        peaks[size] = int(done.stdout)
        for cached in (tmp_path / f"c{size}").rglob("*"):
            if cached.is_file():
                cached.unlink()
    # Pieces of 1 MiB go from the socket to the file: the peak does not follow the size.
    assert peaks[300 * MIB] - peaks[8 * MIB] < 16 * MIB, peaks


# -- the media route itself ----------------------------------------------------------------


def test_media_answers_ranges_as_rfc_9110_says(alice: BackendClient, tmp_path: Path) -> None:
    created, data = new_model(alice, tmp_path, 10_000)
    url = created["file"]
    get = alice.transport.request

    whole = get("GET", url)
    assert (whole.status, whole.data, whole.headers["Accept-Ranges"]) == (200, data, "bytes")
    etag = whole.headers["ETag"]
    for asked, first, last in [("bytes=0-99", 0, 99), ("bytes=9990-", 9990, 9999), ("bytes=-10", 9990, 9999)]:
        part = get("GET", url, headers={"Range": asked})
        assert (part.status, part.data) == (206, data[first : last + 1]), asked
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/10000"
    past = get("GET", url, headers={"Range": "bytes=10000-"})
    assert (past.status, past.headers["Content-Range"]) == (416, "bytes */10000")
    assert get("GET", url, headers={"Range": "bytes=0-1,5-6"}).data == data  # several ranges: the whole file
    assert get("GET", url, headers={"Range": "bytes=5-", "If-Range": '"other"'}).status == 200
    assert get("GET", url, headers={"Range": "bytes=5-", "If-Range": etag}).data == data[5:]
    head = get("HEAD", url)
    assert (head.status, head.data, head.headers["Content-Length"]) == (200, b"", "10000")
    refused = get("PUT", url, body=b"x")
    assert refused.status == 405 and refused.headers["Allow"] == "GET, HEAD"


def test_the_cache_keeps_what_a_batch_returns_and_evicts_the_oldest(
    alice: BackendClient, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_MAX_TEMP_FILES", "2")
    urls = [new_model(alice, tmp_path, 100 + i, f"m{i}.bin")[0]["file"] for i in range(4)]
    first = download_file(urls[0], cache)
    files = {"a": urls[1], "b": urls[2], "c": urls[3]}
    files_url_to_path(files, coerce=str)  # three files in a folder that keeps two: the batch's stay
    assert all(Path(value).is_file() for value in files.values())
    assert not first.exists()


def test_async_variants_give_the_same_files(alice: BackendClient, tmp_path: Path, cache: Path) -> None:
    created, data = new_model(alice, tmp_path, 4000, "a.bin")
    path = asyncio.run(adownload_file(created["file"], cache))
    assert path.read_bytes() == data
    objs = [{"files": {"x": created["file"]}}]
    asyncio.run(afiles_url_to_path_from_objs(objs, ["files"], is_list=True))
    assert objs[0]["files"]["x"] == path


def test_list_all_with_page_failures_goes_on_past_a_lost_page(reference_server, tmp_path: Path) -> None:
    from tests.faults.proxy import Proxy, status

    def plan(index: int, method: str, path: str, headers: Any) -> Any:
        return status(500) if path.startswith("/data_units/") and "page=2" in path else None

    with Proxy(reference_server.base_url, plan) as proxy:
        once = RetryPolicy(attempts=1)
        with BackendClient(proxy.url, access_token=ALICE, journal=False, retry=once) as client:
            collection = new_collection(client)
            contents = new_units(client, tmp_path, 5, collection)
            lost: list[dict] = []
            params = {"data_collection": collection, "page_size": 2}
            conversion = {"files_fields": ["files"], "is_list": True}
            units, count = client._list("data_units/", conversion, list_all=True, params=params, page_failures=lost)
            kept = [unit["files"]["image"]["path"].read_bytes() for unit in units]
            # Without page_failures the lost page is an error, as in synapse-sdk.
            strict, _ = client._list("data_units/", list_all=True, params=params)
            with pytest.raises(ServerError):
                list(strict)
    assert count == 5 and kept == contents[:2] + contents[4:]
    assert [(entry["page"], entry["error"].split(":")[0]) for entry in lost] == [(2, "ServerError")]


class ModelRecord:
    """A validator in pydantic's shape (``model_validate``), as ``response_model`` takes."""

    @classmethod
    def model_validate(cls, value: Any) -> ModelRecord:
        if not isinstance(value, dict) or not isinstance(value.get("id"), int):
            raise ValueError(f"not a model record: {value!r}")
        return cls()


def test_get_validates_with_a_response_model_and_returns_the_answer(alice: BackendClient, tmp_path: Path) -> None:
    created, _ = new_model(alice, tmp_path, 100)
    record = alice._get(f"models/{created['id']}/", response_model=ModelRecord)
    assert record["id"] == created["id"] and isinstance(record, dict)
    with pytest.raises(ValueError, match="not a model record"):
        alice._get("models/", response_model=ModelRecord)  # a page, not a record
    with pytest.raises(TypeError, match="not a pydantic model"):
        alice._get("models/", response_model=dict)
    alice.reset_connection()
    assert alice.list_models()["count"] >= 1  # a new connection after the reset


def test_synapse_sdk_download_variables_are_honoured(
    cutting_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, middleware = cutting_server
    with BackendClient(base_url, access_token=ALICE, journal=False) as client:
        created, data = new_model(client, tmp_path, 4 * MIB)
    monkeypatch.setenv("SYNAPSE_DOWNLOAD_MAX_RETRIES", "1")
    with pytest.raises(ClientConnectionError, match=r"connection (broke|closed)"):
        download_file(created["file"], tmp_path / "one-try")
    middleware.cut, middleware.sent = False, 0
    monkeypatch.setenv("SYNAPSE_DOWNLOAD_MAX_RETRIES", "3")
    monkeypatch.setenv("SYNAPSE_DOWNLOAD_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("SYNAPSE_DOWNLOAD_RANGE_RESUME", "false")
    assert download_file(created["file"], tmp_path / "no-resume").read_bytes() == data
    assert [request["range"] for request in middleware.requests[-2:]] == [None, None]
    assert middleware.sent == 3 * MIB + 5 + len(data)  # started over

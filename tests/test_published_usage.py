"""The published synapse-sdk's own usage patterns (its docstrings and examples), run unchanged against this package.

Each test writes user code as synapse-sdk 2026.2.17 documents it; only the
paths and ids are real ones here. What differs from the published client is
listed in docs/COMPATIBILITY.md.
"""

from __future__ import annotations

import hashlib
import pickle
import socket
from pathlib import Path

import pytest
import requests

from engine.retry import RetryPolicy
from tests import doc_examples
from tests.conftest import ALICE, make_file

pytestmark = pytest.mark.integration

KIB = 1024


@pytest.fixture
def client(reference_server):
    from synapse_sdk.clients.backend import BackendClient

    with BackendClient(reference_server.base_url, access_token=ALICE, tenant="acme") as client:
        yield client


def test_the_import_paths_of_the_published_sdk() -> None:
    import synapse_sdk
    from synapse_sdk.clients import BaseClient, ClientError
    from synapse_sdk.clients.backend import BackendClient
    from synapse_sdk.clients.backend.core import CoreClientMixin
    from synapse_sdk.clients.backend.data_collection import DataCollectionClientMixin
    from synapse_sdk.clients.backend.ml import MLClientMixin
    from synapse_sdk.clients.base import BaseClient as SameBaseClient
    from synapse_sdk.clients.exceptions import (
        AuthenticationError,
        AuthorizationError,
        ClientConnectionError,
        ClientTimeoutError,
        HTTPError,
        NotFoundError,
        RateLimitError,
        ServerError,
        StreamError,
        StreamLimitExceededError,
        ValidationError,
        WebSocketError,
        raise_for_status,
    )
    from synapse_sdk.exceptions import ClientResponseIncompleteError, GpuUnavailableError

    assert BaseClient is SameBaseClient and isinstance(synapse_sdk.__version__, str)
    for mixin in (CoreClientMixin, DataCollectionClientMixin, MLClientMixin, BaseClient):
        assert issubclass(BackendClient, mixin)
    for error in (
        AuthenticationError,
        AuthorizationError,
        ClientConnectionError,
        ClientTimeoutError,
        HTTPError,
        NotFoundError,
        RateLimitError,
        ServerError,
        StreamError,
        StreamLimitExceededError,
        ValidationError,
        WebSocketError,
        ClientResponseIncompleteError,
        GpuUnavailableError,
    ):
        assert issubclass(error, ClientError)
    with pytest.raises(NotFoundError) as raised:
        raise_for_status(404, "no such model")
    assert raised.value.status_code == 404


def test_the_published_constructor_and_its_defaults(reference_server) -> None:
    from synapse_sdk.clients.backend import BackendClient

    client = BackendClient(
        reference_server.base_url,
        access_token=ALICE,
        authorization_token="legacy",
        tenant="acme",
        agent_token="agent",
        timeout={"connect": 5, "read": 15},
        url_host="internal",
    )
    assert client.base_url == reference_server.base_url.rstrip("/")
    assert client.timeout == {"connect": 5, "read": 15} and client.page_size == 100
    assert client.default_params == {"url_host": "internal"}
    assert client._get_headers() == {
        "Synapse-Access-Token": f"Token {ALICE}",
        "Authorization": "Token legacy",
        "Synapse-Tenant": "Token acme",
        "SYNAPSE-Agent": "Token agent",
    }
    client.close()


def test_create_chunked_upload_with_the_docstrings_progress(client, tmp_path: Path, capsys) -> None:
    path, data = make_file(tmp_path, "file.zip", 300 * KIB)

    def progress(uploaded, total):
        print(f"{uploaded}/{total} bytes")

    result = client.create_chunked_upload(str(path), on_progress=progress)
    assert result["id"] and result["checksum"] == hashlib.md5(data).hexdigest()
    assert f"{len(data)}/{len(data)} bytes" in capsys.readouterr().out
    assert client.get_chunked_upload(result["id"])["id"] == result["id"]


def test_upload_data_file_then_units_as_the_docstring(client, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "img.jpg", 20 * KIB)
    result = client.upload_data_file({"files": {"image": str(path)}, "meta": {"label": 1}}, collection_id=1)
    # result['files']['image']['checksum'] is populated
    assert result["files"]["image"]["checksum"] == hashlib.md5(data).hexdigest()
    units = client.create_data_units(result)
    unit = units[0] if isinstance(units, list) else units  # the reference server answers a list (docs/PROTOCOL.md)
    assert client.get_data_unit(unit["id"])["meta"] == {"label": 1}


def test_upload_data_collection_as_the_docstring(client, tmp_path: Path) -> None:
    one, _ = make_file(tmp_path, "1.jpg", 4 * KIB)
    two, _ = make_file(tmp_path, "2.jpg", 5 * KIB)
    data = [
        {"files": {"image": str(one)}, "meta": {"label": "cat"}},
        {"files": {"image": str(two)}, "meta": {"label": "dog"}},
    ]
    client.upload_data_collection(1, data, project_id=456)
    checksums = [hashlib.md5(p.read_bytes()).hexdigest() for p in (one, two)]
    assert sorted(client.verify_data_files_checksums(checksums)["checksums"]) == sorted(checksums)


def test_create_model_as_the_docstring(client, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "model.pt", 100 * KIB)
    model = client.create_model({"name": "My Model", "plugin": 123}, file=str(path))
    assert model["name"] == "My Model"
    with pytest.raises(FileNotFoundError):
        client.create_model({"name": "Missing"}, file=str(tmp_path / "absent.pt"))


def test_the_requests_session_and_reset_connection(client, reference_server) -> None:
    """``client.requests_session`` is a requests session, for calls the client does not wrap."""
    session = client.requests_session
    assert isinstance(session, requests.Session) and client.requests_session is session
    answer = session.get(f"{reference_server.base_url}/data_collections/", headers=client._get_headers(), timeout=5)
    assert answer.status_code == 200
    client.reset_connection()
    assert client.requests_session is not session
    assert client.list_data_collections() is not None  # the pool is rebuilt on the next request


def test_status_code_comparisons_of_the_docs_hold_for_every_error(tmp_path: Path, capsys) -> None:
    """The documentation's ``e.status_code >= 500`` against a server that is not there: no TypeError."""
    from synapse_sdk.clients.backend import BackendClient

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    path, _ = make_file(tmp_path, "f.bin", KIB)
    client = BackendClient(
        f"http://127.0.0.1:{port}", access_token=ALICE, retry=RetryPolicy(deadline=0.2, backoff=0.01)
    )
    doc_examples.client = client
    try:
        from synapse_sdk.clients.exceptions import ClientConnectionError

        with pytest.raises(ClientConnectionError) as raised:
            doc_examples.robust_chunked_upload(path, retry_delay=0)
    finally:
        doc_examples.client = None
        client.close()
    error = raised.value
    # Published: ``status_code`` is None for an error without an HTTP status; ours compares equal to None.
    assert error.status_code == None and not error.status_code  # noqa: E711
    assert "Upload failed with error" in capsys.readouterr().out
    assert pickle.loads(pickle.dumps(error)).status_code == error.status_code


def test_request_and_response_models_as_published_subclasses_use_them(reference_server, tmp_path: Path) -> None:
    """A subclass of the published client validates with pydantic models through ``_post``/``_get``."""
    from pydantic import BaseModel, ConfigDict
    from pydantic import ValidationError as PydanticValidationError

    from synapse_sdk.clients.backend import BackendClient

    class ModelCreate(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        chunked_upload: int | str | None = None
        description: str | None = None

    class Created(BaseModel):
        id: int
        name: str

    class MyClient(BackendClient):
        def create(self, data):
            return self._post("models/", request_model=ModelCreate, response_model=Created, data=data)

    path, _ = make_file(tmp_path, "m.bin", KIB)
    with MyClient(reference_server.base_url, access_token=ALICE) as client:
        upload = client.create_chunked_upload(path)
        model = client.create({"name": "m", "chunked_upload": upload["id"], "description": None})
        assert model["name"] == "m" and "description" not in model  # None fields are not sent
        with pytest.raises(PydanticValidationError):
            client.create({"name": "m", "chunked_upload": upload["id"], "unknown": 1})


def test_create_data_file_from_a_path_object_that_is_not_local(client, tmp_path: Path) -> None:
    """synapse-sdk reads a non-local path object (here a file inside a zip) and posts it whole."""
    import zipfile

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("inner/label.json", b'{"label": 1}')
    record = client.create_data_file(zipfile.Path(archive, "inner/label.json"))
    assert record["checksum"] == hashlib.md5(b'{"label": 1}').hexdigest() and record["size"] == 12
    with pytest.raises(FileNotFoundError):
        client.create_data_file(zipfile.Path(archive, "inner/absent.json"))

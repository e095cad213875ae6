"""Typed batch results and errors: ``BatchResult``/``FileOutcome`` beside the documented dict, ``Timeout``, pickling."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest

from engine.errors import (
    NO_STATUS,
    ClientConnectionError,
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    FileChangedError,
    ProtocolError,
    ServerError,
    UploadCancelled,
    WorkerDiedError,
    WorkerStartError,
    error_for_status,
)
from synapse_sdk.clients.backend import (
    BackendClient,
    BatchResult,
    FileOutcome,
    RetryPolicy,
    Timeout,
    upload_file,
)
from synapse_sdk.clients.exceptions import ClientError as PublishedClientError
from tests.conftest import ALICE, make_file
from tests.faults import Proxy, status

pytestmark = pytest.mark.integration

KIB = 1024
CHUNK = 64 * KIB


def refuse_appends_after(count: int):
    """A proxy plan: the first ``count`` chunks appended to an upload pass, every later one gets 503.

    (A create is ``PUT chunked_upload/``; an append names its upload: ``PUT chunked_upload/<id>/``.)
    """
    seen = []

    def plan(index: int, method: str, path: str, headers) -> object:
        if method == "PUT" and re.search(r"/chunked_upload/\d+/", path):
            seen.append(path)
            if len(seen) > count:
                return status(503)
        return None

    return plan


def test_a_failed_file_keeps_its_error_url_and_offset_and_resumes_from_them(reference_server, tmp_path: Path) -> None:
    big, data = make_file(tmp_path, "big.bin", 10 * CHUNK)
    small, _ = make_file(tmp_path, "small.bin", 1000)
    with Proxy(reference_server.base_url, refuse_appends_after(3)) as proxy:
        # One attempt: the 503 is the file's failure, not a retry.
        # One chunk at a time, so "three appends" is the prefix the server holds.
        client = BackendClient(
            proxy.url, access_token=ALICE, journal=False, retry=RetryPolicy(attempts=1), parallel_chunks=1
        )
        results = client.upload_files([big, small], chunk_size=CHUNK, concurrency=1)

    # The documented dict, exactly as before...
    assert isinstance(results, dict) and isinstance(results, BatchResult)
    assert [r["file_path"] for r in results["successful"]] == [small] and results["total"] == 2
    [entry] = results["failed"]
    assert set(entry) == {"file_path", "status", "error"} and entry["error"].startswith("ServerError: 503")
    # ...and the typed outcome behind it: the exception itself, where the upload stands.
    assert [o.path for o in results.outcomes] == [big, small] and not results.ok
    [outcome] = results.failures
    assert isinstance(outcome, FileOutcome) and outcome.status == "failed" and outcome.path == big
    assert isinstance(outcome.error, ServerError) and outcome.error.status_code == 503
    assert outcome.url is not None and outcome.url.startswith(proxy.url) and "/chunked_upload/" in outcome.url
    assert outcome.offset == 4 * CHUNK == outcome.error.offset  # the create's chunk and three appends
    assert outcome["error"] == entry["error"] and "result" not in outcome

    # Resume from the outcome, straight to the server: only the rest is sent, and the file is whole.
    upload_path = outcome.url.removeprefix(proxy.url)
    before = reference_server.stats()["bytes_received"]
    direct = BackendClient(reference_server.base_url, access_token=ALICE, journal=False)
    record = upload_file(direct, big, chunk_size=CHUNK, url=reference_server.base_url + upload_path)
    assert record["checksum"] == hashlib.md5(data).hexdigest()
    assert Path(record["file"]).read_bytes() == data
    assert reference_server.stats()["bytes_received"] - before == len(data) - outcome.offset


def test_outcomes_of_every_kind_read_as_the_documented_entries(client, tmp_path: Path) -> None:
    a, _ = make_file(tmp_path, "a.bin", 3000)
    copy = tmp_path / "copy.bin"
    copy.write_bytes(a.read_bytes())
    results = client.upload_files([a, tmp_path / "missing.bin", copy], chunk_size=CHUNK)
    uploaded, missing, duplicate = results.outcomes
    assert uploaded.ok and uploaded.result == results["successful"][0]["result"]
    assert isinstance(missing.error, FileNotFoundError) and missing.url is None and missing.offset is None
    assert duplicate.duplicate_of == a and duplicate.result == uploaded.result
    assert [o.as_dict() for o in results.outcomes if o.status == "success"] == results["successful"]
    assert results.as_dict() == dict(results) and type(results.as_dict()) is dict
    # The dict's entries are plain and keep what callers write into them (the CLI notes data files there).
    results["successful"][0]["data_file"] = {"id": 1}
    assert results["successful"][0]["data_file"] == {"id": 1}
    json.dumps(results, default=str)


def test_a_batch_result_pickles_with_its_outcomes(tmp_path: Path) -> None:
    error = ServerError(503, "down").with_upload("http://s/chunked_upload/3/", 128)
    results = BatchResult([FileOutcome.failure(tmp_path / "x", error), FileOutcome.skipped(tmp_path / "y", "ab" * 16)])
    copy = pickle.loads(pickle.dumps(results))
    assert copy == results and copy.outcomes[0].error.offset == 128 and copy.outcomes[0].url == error.url
    assert type(copy.outcomes[0].error) is ServerError and copy["skipped"][0]["checksum"] == "ab" * 16


def test_an_error_that_cannot_pickle_crosses_as_its_text(tmp_path: Path) -> None:
    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    outcome = FileOutcome.failure(tmp_path / "x", Local("what happened"))
    portable = outcome.portable()
    assert type(portable.error) is RuntimeError and str(portable.error) == "Local: what happened"
    assert portable["error"] == "RuntimeError: Local: what happened"
    assert pickle.loads(pickle.dumps(portable)).error.args == portable.error.args
    fine = FileOutcome.failure(tmp_path / "x", ServerError(500, "x"))
    assert fine.portable() is fine


WITHOUT_AN_ANSWER = [
    ClientConnectionError,
    ClientResponseIncompleteError,
    ProtocolError,
    FileChangedError,
    UploadCancelled,
    WorkerDiedError,
    WorkerStartError,
]


@pytest.mark.parametrize("cls", WITHOUT_AN_ANSWER)
def test_worker_errors_are_client_errors_with_no_status_and_pickle(cls: type[ClientError]) -> None:
    error = cls("gone").with_upload("http://s/chunked_upload/9/", 2048)
    assert isinstance(error, PublishedClientError) and error.status_code == NO_STATUS and error.status_code is not None
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and (copy.url, copy.offset, str(copy)) == (error.url, 2048, "gone")


def test_worker_start_error_is_still_a_runtime_error() -> None:
    assert isinstance(WorkerStartError("no CPU"), RuntimeError)
    from synapse_sdk.clients.backend.ray_executor import WorkerDiedError as Died
    from synapse_sdk.clients.backend.ray_executor import WorkerStartError as Start

    assert (Died, Start) == (WorkerDiedError, WorkerStartError)  # one class, wherever it is imported from


def test_status_codes_follow_the_stated_rule() -> None:
    # An answer: its status. A timeout: 408. Anything else: NO_STATUS.
    assert error_for_status(418, "teapot").status_code == 418 and error_for_status(408).status_code == 408
    timeout = pickle.loads(pickle.dumps(ClientTimeoutError("slow").with_upload("u", 1)))
    assert timeout.status_code == 408 and type(timeout.status_code) is int and timeout.offset == 1
    assert all(cls("x").status_code is NO_STATUS for cls in WITHOUT_AN_ANSWER)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, (5, 15)),
        (7, (7, 7)),
        (2.5, (2.5, 2.5)),
        ((3, 30), (3, 30)),
        ([3, 30], (3, 30)),
        ({"connect": 1, "read": 60}, (1, 60)),
        (Timeout(2, 20), (2, 20)),
    ],
)
def test_timeout_takes_every_form_users_pass(given, expected: tuple[float, float]) -> None:
    timeout = Timeout.of(given)
    assert timeout.as_tuple() == expected and (timeout.connect, timeout.read) == expected
    # It still reads as the published client's dict.
    assert timeout == {"connect": expected[0], "read": expected[1]} and timeout["read"] == expected[1]
    assert dict(timeout) == {"connect": expected[0], "read": expected[1]}
    assert pickle.loads(pickle.dumps(timeout)) == timeout and hash(timeout) == hash(Timeout(*expected))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"connect": 1}, "exactly the keys 'connect' and 'read'"),
        ((1, 2, 3), r"a timeout pair is \(connect, read\)"),
        (0, "the connect timeout must be a positive number of seconds, not 0"),
        ((1, -2), "the read timeout must be a positive number of seconds, not -2"),
        ((1, float("inf")), "the read timeout must be a positive number"),
        (True, "timeout must be seconds, a \\(connect, read\\) pair"),
        ("5", "timeout must be seconds"),
    ],
)
def test_a_bad_timeout_says_what_is_wrong(given, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Timeout.of(given)


def test_the_client_takes_and_keeps_one_timeout(reference_server, tmp_path: Path) -> None:
    for given in (9, (2, 9), {"connect": 2, "read": 9}, Timeout(2, 9)):
        client = BackendClient(reference_server.base_url, access_token=ALICE, timeout=given)
        assert isinstance(client.timeout, Timeout) and client.timeout.read == 9
        assert client.transport.timeout == client.timeout
        again = BackendClient(**client.settings())  # as a Ray worker rebuilds it
        assert again.timeout == client.timeout
    client = BackendClient(reference_server.base_url, access_token=ALICE, timeout=(2, 9))
    path, data = make_file(tmp_path, "t.bin", 1000)
    assert client.create_chunked_upload(path, read_timeout=30)["checksum"] == hashlib.md5(data).hexdigest()
    # A request's own timeout, in any form, becomes the one type; none means the client's.
    assert client._timeout(3) == Timeout(3, 3) and client._timeout((1, 4)) == Timeout(1, 4)
    assert client._timeout(None) is client.timeout
    with pytest.raises(ValueError, match="exactly the keys"):
        BackendClient(reference_server.base_url, timeout={"read": 1})


def test_retry_policy_and_timeout_are_exported_where_users_import_the_client() -> None:
    import engine.retry
    import engine.timeouts
    import synapse_sdk.clients.backend as backend

    assert backend.RetryPolicy is engine.retry.RetryPolicy and backend.Timeout is engine.timeouts.Timeout
    assert {"RetryPolicy", "Timeout", "BatchResult", "FileOutcome", "upload_file"} <= set(backend.__all__)
    assert isinstance(RetryPolicy(), engine.retry.RetryPolicy)

"""``upload_files_bulk`` end to end: the client, the reference server and a real S3-compatible server.

moto's server mode runs in a subprocess on loopback; the reference server
hands out presigned URLs of it, signed for a fault-injecting proxy in front
of it, so tests can corrupt, refuse or count the PUTs the client sends. Every
object is read back with boto3 and compared with the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest

from engine.retry import RetryPolicy
from synapse_sdk.clients.backend import BackendClient
from tests.conftest import ALICE, make_file
from tests.faults import Proxy, corrupt, status
from tests.s3_fixture import start_moto

pytestmark = pytest.mark.integration

pytest.importorskip("boto3")

BUCKET = "bulk-tests"
PART = 5 * 1024 * 1024  # S3's smallest part
THRESHOLD = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def moto():
    with start_moto() as server:
        yield server


@pytest.fixture(scope="module")
def storage_proxy(moto):
    with Proxy(moto.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory, moto, storage_proxy):
    from synapse_sdk.server import ReferenceServer
    from synapse_sdk.server.presigned import S3Config

    config = S3Config(
        moto.url,
        BUCKET,
        access_key_id="testing",
        secret_access_key="testing",
        public_endpoint_url=storage_proxy.url,
        multipart_threshold=THRESHOLD,
        part_size=PART,
        create_bucket=True,
    )
    with ReferenceServer(tmp_path_factory.mktemp("presigned"), tokens={ALICE: "alice"}, s3=config) as server:
        yield server


@pytest.fixture
def s3(moto):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def proxy(storage_proxy):
    storage_proxy.plan = None
    yield storage_proxy
    storage_proxy.plan = None


@pytest.fixture
def client(s3_server, tmp_path):
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=tmp_path / "journal") as client:
        client.sleep = lambda seconds: None  # retries do not wait
        yield client


def stored(client, s3, result) -> bytes:
    """The bytes the storage holds for a successful result, found through its data file."""
    record = client._get(f"data_files/{result.data_file_id}/")
    match = re.fullmatch(rf"s3://{BUCKET}/(.+)", record["file"])
    assert match, record
    return s3.get_object(Bucket=BUCKET, Key=match.group(1))["Body"].read()


def puts(proxy, since: int) -> list[str]:
    return [entry.path for entry in proxy.log[since:] if entry.method == "PUT"]


def test_the_published_docstring_usage_runs_unchanged(client, s3, tmp_path):
    for index in range(5):
        make_file(tmp_path / "images", f"{index}.jpg", 1000 + index)
    files = list(Path(tmp_path / "images").glob("*.jpg"))
    result = client.upload_files_bulk(files, max_workers=16)
    print(f"Uploaded {result.created_count} files")

    assert (result.created_count, result.failed_count) == (5, 0)
    for path, entry in zip(files, result.results, strict=True):
        assert entry.file_key == str(path) and entry.success and entry.error is None
        assert entry.checksum == hashlib.sha1(path.read_bytes()).hexdigest()
        assert stored(client, s3, entry) == path.read_bytes()
        # The data file is a data file like any other: its MD5 is known to the server.
        assert client.verify_data_files_checksums([hashlib.md5(path.read_bytes()).hexdigest()])["missing"] == []


def test_parallel_files_with_single_puts_and_multipart(client, s3, proxy, tmp_path):
    sizes = [0, 1, 70_000, 3 * 1024 * 1024, 13 * 1024 * 1024, 2 * PART]
    files = [make_file(tmp_path, f"file{index}.bin", size)[0] for index, size in enumerate(sizes)]
    seen: list[tuple[int, int]] = []
    before = len(proxy.log)

    result = client.upload_files_bulk(files, max_workers=4, batch_size=4, on_progress=lambda *a: seen.append(a))

    assert (result.created_count, result.failed_count) == (len(files), 0), result.results
    assert [entry.file_key for entry in result.results] == [str(path) for path in files]
    for path, entry in zip(files, result.results, strict=True):
        assert stored(client, s3, entry) == path.read_bytes()
    assert sorted(seen) == [(done, len(files)) for done in range(1, len(files) + 1)]
    part_puts = [path for path in puts(proxy, before) if "partNumber=" in path]
    assert len(part_puts) == 3 + 2  # 13 MiB in 5 MiB parts, and two whole parts


def test_a_file_that_fails_is_a_failed_result_and_the_others_land(client, s3, proxy, tmp_path):
    good = make_file(tmp_path, "good.bin", 10_000)[0]
    doomed = make_file(tmp_path, "doomed.bin", 20_000)[0]
    directory = tmp_path / "a-directory"
    directory.mkdir()
    missing = tmp_path / "missing.bin"
    # Every PUT of doomed.bin arrives with a byte flipped, as through a broken middlebox.
    proxy.plan = lambda index, method, path, headers: corrupt(100) if "doomed.bin" in path else None

    result = client.upload_files_bulk([good, missing, doomed, directory], max_upload_retries=1)

    assert (result.created_count, result.failed_count) == (1, 3)
    by_path = {entry.file_key: entry for entry in result.results}
    assert by_path[str(good)].success and stored(client, s3, by_path[str(good)]) == good.read_bytes()
    assert by_path[str(missing)].error == f"File not found: {missing}"
    assert "not a regular file" in by_path[str(directory)].error
    assert "PartChecksumError" in by_path[str(doomed)].error and "MD5" in by_path[str(doomed)].error
    assert [entry.checksum for entry in result.results if not entry.success] == ["", "", ""]


def test_a_corrupted_part_is_refused_and_sent_again(client, s3, proxy, tmp_path):
    path, data = make_file(tmp_path, "big.bin", 13 * 1024 * 1024)
    corrupted: list[str] = []

    def plan(index, method, target, headers):
        if method == "PUT" and "partNumber=2&" in target + "&" and not corrupted:
            corrupted.append(target)
            return corrupt(12345)
        return None

    proxy.plan = plan
    before = len(proxy.log)
    result = client.upload_files_bulk([path])

    assert result.created_count == 1, result.results
    assert stored(client, s3, result.results[0]) == data
    sent = puts(proxy, before)
    assert sum("partNumber=2&" in target + "&" for target in sent) == 2
    assert len(sent) == 4


def test_a_503_from_the_storage_is_retried(client, s3, proxy, tmp_path):
    path, data = make_file(tmp_path, "once.bin", 5000)
    answered: list[int] = []

    def plan(index, method, target, headers):
        if method == "PUT" and not answered:
            answered.append(index)
            return status(503)
        return None

    proxy.plan = plan
    result = client.upload_files_bulk([path])
    assert result.created_count == 1 and answered
    assert stored(client, s3, result.results[0]) == data


def test_an_interrupted_multipart_upload_resumes_with_the_missing_parts(s3_server, s3, proxy, tmp_path):
    path, data = make_file(tmp_path, "resumed.bin", 3 * PART + 1000)
    journal = tmp_path / "journal"
    proxy.plan = lambda index, method, target, headers: status(503) if "partNumber=3&" in target + "&" else None
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=journal, retry=RetryPolicy(attempts=1)) as c:
        first = c.upload_files_bulk([path])
    assert first.failed_count == 1 and "503" in first.results[0].error

    entries = list(journal.glob("*.json"))
    assert len(entries) == 1
    assert stat.S_IMODE(entries[0].stat().st_mode) == 0o600  # its URLs carry signatures
    # Parts travel in parallel: part 4 may or may not have landed before part 3's failure ended the upload.
    landed = set(json.loads(entries[0].read_text())["done"])
    assert {"1", "2"} <= landed and "3" not in landed
    proxy.plan = None
    before = len(proxy.log)
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=journal) as c:
        second = c.upload_files_bulk([path])

        assert second.created_count == 1, second.results
        assert stored(c, s3, second.results[0]) == data
    # Only the parts that never landed were sent again, to the same multipart upload.
    resent = sorted(re.search(r"partNumber=(\d+)", target).group(1) for target in puts(proxy, before))
    assert resent == sorted({"1", "2", "3", "4"} - landed)
    assert list(journal.glob("*.json")) == []


def test_a_journaled_upload_the_storage_no_longer_takes_starts_afresh(s3_server, s3, proxy, tmp_path):
    path, data = make_file(tmp_path, "aborted.bin", 2 * PART + 10)
    journal = tmp_path / "journal"
    proxy.plan = lambda index, method, target, headers: status(503) if "partNumber=2&" in target + "&" else None
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=journal, retry=RetryPolicy(attempts=1)) as c:
        assert c.upload_files_bulk([path]).failed_count == 1
    # Its URLs stop working, as when the upload was aborted or the URLs expired early: the storage answers 404.
    (entry,) = journal.glob("*.json")
    entry.write_text(entry.read_text().replace(f"/{BUCKET}/", "/no-such-bucket/"))
    proxy.plan = None
    before = len(proxy.log)
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=journal) as c:
        c.sleep = lambda seconds: None
        result = c.upload_files_bulk([path])
        assert result.created_count == 1, result.results
        assert stored(c, s3, result.results[0]) == data
    # The resumed parts were refused (404): part 2, and part 3 unless the first run had sent it
    # beside part 2 before that failed. Then the three parts of a new upload.
    sent = [re.sub(r"\?.*partNumber=(\d+).*", r" part \1", target) for target in puts(proxy, before)]
    resumed = len(sent) - 3
    assert resumed in (1, 2), sent
    assert [target.startswith("/no-such-bucket/") for target in sent] == [True] * resumed + [False] * 3, sent
    assert sorted(target.rsplit(" ", 1)[1] for target in sent[resumed:]) == ["1", "2", "3"]
    assert list(journal.glob("*.json")) == []


def test_a_changed_file_is_not_resumed(s3_server, s3, proxy, tmp_path):
    path, _ = make_file(tmp_path, "changing.bin", 2 * PART + 10)
    journal = tmp_path / "journal"
    proxy.plan = lambda index, method, target, headers: status(503) if "partNumber=2&" in target + "&" else None
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=journal, retry=RetryPolicy(attempts=1)) as c:
        assert c.upload_files_bulk([path]).failed_count == 1
    data = os.urandom(2 * PART + 10)
    path.write_bytes(data)
    proxy.plan = None
    before = len(proxy.log)
    with BackendClient(s3_server.base_url, access_token=ALICE, journal=journal) as c:
        result = c.upload_files_bulk([path])
        assert result.created_count == 1
        assert stored(c, s3, result.results[0]) == data
    assert len(puts(proxy, before)) == 3  # every part of a fresh upload


def test_the_deprecated_steps_work_as_published(client, s3, tmp_path):
    path, data = make_file(tmp_path, "step.txt", 4096)
    with pytest.warns(DeprecationWarning, match="request_presigned_upload is deprecated"):
        presigned = client.request_presigned_upload(
            [{"filename": path.name, "size": len(data), "content_type": "text/plain"}]
        )
    info = presigned.files[0]
    assert info.presigned_url and info.multipart is None and presigned.expires_at
    with pytest.warns(DeprecationWarning, match="upload_file_to_presigned_url is deprecated"):
        sent = client.upload_file_to_presigned_url(info.presigned_url, path, "text/plain")
    assert (sent.checksum, sent.size) == (hashlib.sha1(data).hexdigest(), len(data))
    with pytest.warns(DeprecationWarning, match="confirm_presigned_upload is deprecated"):
        confirmed = client.confirm_presigned_upload(
            [{"file_key": info.file_key, "checksum": sent.checksum, "size": sent.size}]
        )
    assert confirmed.created_count == 1 and confirmed.results[0].data_file_id is not None
    assert s3.get_object(Bucket=BUCKET, Key=info.file_key)["Body"].read() == data


def test_a_storage_refusal_is_final_and_names_its_code_not_the_signature(client, tmp_path):
    from engine.errors import NotFoundError

    path, _ = make_file(tmp_path, "nowhere.txt", 100)
    with pytest.warns(DeprecationWarning):
        presigned = client.request_presigned_upload([{"filename": path.name, "size": 100}])
    # The same signed URL, for a bucket that does not exist.
    url = presigned.files[0].presigned_url.replace(f"/{BUCKET}/", "/no-such-bucket/")
    with pytest.warns(DeprecationWarning), pytest.raises(NotFoundError) as caught:
        client.upload_file_to_presigned_url(url, path)
    assert caught.value.status_code == 404 and "NoSuchBucket" in str(caught.value)
    assert "Signature" not in str(caught.value) and "?" not in str(caught.value)


def test_strategy_choice_and_bad_settings(client, reference_server, tmp_path):
    path = make_file(tmp_path, "x.bin", 10)[0]
    assert client.get_default_storage()["provider"] == "amazon_s3"
    with pytest.raises(ValueError, match="Strategy 'nope' not found"):
        client.upload_files_bulk([path], strategy="nope")
    with pytest.raises(ValueError, match="max_workers must be 1-100"):
        client.upload_files_bulk([path], max_workers=0)
    with pytest.raises(ValueError, match="batch_size must be 1-1000"):
        client.upload_files_bulk([path], batch_size=5000)
    with pytest.raises(TypeError, match="a list of paths"):
        client.upload_files_bulk(path)
    assert client.upload_files_bulk([]).model_dump() == {"results": [], "created_count": 0, "failed_count": 0}
    # A server without object storage has no default storage, as a tenant without one.
    with (
        BackendClient(reference_server.base_url, access_token=ALICE) as plain,
        pytest.raises(ValueError, match="No default storage configured"),
    ):
        plain.upload_files_bulk([path])


def test_the_client_imports_pydantic_only_for_a_bulk_upload():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from synapse_sdk.clients.backend import BackendClient\n"
        "from synapse_sdk.clients.backend.bulk_upload import BulkUploadConfig\n"
        "print('pydantic' in sys.modules)\n"
        "from synapse_sdk.clients.backend.bulk_upload import ConfirmUploadResponse, get_strategy_registry\n"
        "print('pydantic' in sys.modules, get_strategy_registry().list_strategies())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split("\n")[:2] == ["False", "True ['presigned']"]


@pytest.fixture(scope="module")
def tls_storage(tmp_path_factory):
    """moto over HTTPS with a certificate of a test CA, and a reference server handing out its URLs."""
    import trustme

    from synapse_sdk.server import ReferenceServer
    from synapse_sdk.server.presigned import S3Config

    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    paths = [str(folder / name) for name in ("cert.pem", "key.pem", "ca.pem")]
    issued.cert_chain_pems[0].write_to_path(paths[0])
    issued.private_key_pem.write_to_path(paths[1])
    authority.cert_pem.write_to_path(paths[2])
    with start_moto(tls=tuple(paths)) as moto_tls:
        config = S3Config(
            moto_tls.url,
            BUCKET,
            access_key_id="testing",
            secret_access_key="testing",
            multipart_threshold=THRESHOLD,
            part_size=PART,
            create_bucket=True,
            verify=paths[2],
        )
        with ReferenceServer(folder / "srv", tokens={ALICE: "alice"}, s3=config) as server:
            yield server, paths[2]


def test_over_tls_the_client_verifies_the_storage_with_its_ca_settings(tls_storage, tmp_path):
    server, ca = tls_storage
    small, small_data = make_file(tmp_path, "small.bin", 100_000)
    big, big_data = make_file(tmp_path, "big.bin", PART + 4321)
    with BackendClient(server.base_url, access_token=ALICE, verify=ca, journal=False) as client:
        result = client.upload_files_bulk([small, big])
        assert (result.created_count, result.failed_count) == (2, 0), result.results
        for entry, data in zip(result.results, (small_data, big_data), strict=True):
            record = client._get(f"data_files/{entry.data_file_id}/")
            assert (record["checksum"], record["size"]) == (hashlib.md5(data).hexdigest(), len(data))
    # Without the CA the storage's certificate is refused, at once, file by file.
    with BackendClient(server.base_url, access_token=ALICE, journal=False) as client:
        result = client.upload_files_bulk([small])
        assert result.failed_count == 1 and "CertificateError" in result.results[0].error


def test_a_transport_failure_names_the_url_without_its_signature(s3_server, proxy, tmp_path):
    from engine.errors import ClientResponseIncompleteError
    from tests.faults import stall

    path = make_file(tmp_path, "unanswered.bin", 10)[0]
    with BackendClient(s3_server.base_url, access_token=ALICE, retry=RetryPolicy(attempts=1)) as client:
        with pytest.warns(DeprecationWarning):
            presigned = client.request_presigned_upload([{"filename": path.name, "size": 10}])
        url = presigned.files[0].presigned_url
        assert "Signature=" in url
        proxy.plan = lambda index, method, target, headers: stall(2.0) if method == "PUT" else None
        strategy = client._get_strategy_instance("presigned")
        with pytest.raises(ClientResponseIncompleteError) as caught:
            strategy.upload_file_to_presigned_url(url, path, timeout=0.3)
    signature = url.split("Signature=")[1][:20]
    assert "no answer within 0.3s" in str(caught.value)
    assert signature not in str(caught.value) and signature not in str(caught.value.detail)
    assert caught.value.__cause__ is None

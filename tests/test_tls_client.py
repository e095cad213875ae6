"""The client over HTTPS: verified by default, a CA bundle or verify=False as with requests."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from engine.errors import CertificateError, ClientConnectionError
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.server import ReferenceServer
from tests.conftest import ALICE, make_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ReferenceServer]:
    directory = tmp_path_factory.mktemp("https")
    certificate = ca.issue_cert("127.0.0.1")
    certfile, keyfile = directory / "server.pem", directory / "server.key"
    certificate.cert_chain_pems[0].write_to_path(str(certfile))
    certificate.private_key_pem.write_to_path(str(keyfile))
    with ReferenceServer(directory / "data", tokens={ALICE: "alice"}, certfile=certfile, keyfile=keyfile) as server:
        yield server


def test_upload_with_the_ca_bundle(https_server, ca, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    path, data = make_file(tmp_path, "data.bin", 700_000)
    with BackendClient(https_server.base_url, access_token=ALICE, verify=str(bundle), journal=False) as client:
        result = client.create_chunked_upload(path, chunk_size=256 * 1024)
    assert result["url"].startswith("https://") and result["checksum"] == hashlib.md5(data).hexdigest()
    assert Path(result["file"]).read_bytes() == data


def test_an_unknown_ca_fails_clearly(https_server, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "data.bin", 10)
    wrong = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    for verify in (True, str(wrong)):  # the system's CAs, and a bundle of another CA
        client = BackendClient(https_server.base_url, access_token=ALICE, verify=verify, journal=False)
        with pytest.raises(ClientConnectionError, match=r"TLS failed for https://127\.0\.0\.1") as raised:
            client.create_chunked_upload(path)
        assert isinstance(raised.value, CertificateError) and "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
        assert len(raised.value.retry_history) == 1  # a certificate does not get better by retrying


def test_verify_false_skips_the_check_with_a_warning(https_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with BackendClient(https_server.base_url, access_token=ALICE, verify=False, journal=False) as client:
            result = client.create_chunked_upload(path)
    assert Path(result["file"]).read_bytes() == data
    assert any("Unverified HTTPS request" in str(w.message) for w in caught)

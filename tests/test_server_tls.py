"""The reference server over HTTPS: a ``trustme`` CA and a certificate for 127.0.0.1.

The server serves TLS with cheroot's builtin adapter; clients that trust the
CA upload through it, clients that do not are refused by their own
verification, and a plain-HTTP client on the TLS port does not hurt it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

trustme = pytest.importorskip("trustme")

from synapse_sdk.server import ReferenceServer  # noqa: E402
from tests.test_reference_server import TOKENS, put_chunk, session_for  # noqa: E402
from tests.test_server_crash import TOKEN, serving  # noqa: E402


class Pki:
    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        certificate = ca.issue_cert("127.0.0.1")
        self.ca = directory / "ca.pem"
        self.certfile = directory / "server.pem"
        self.keyfile = directory / "server.key"
        ca.cert_pem.write_to_path(str(self.ca))
        certificate.cert_chain_pems[0].write_to_path(str(self.certfile))
        certificate.private_key_pem.write_to_path(str(self.keyfile))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ReferenceServer]:
    data_dir = tmp_path_factory.mktemp("tls")
    with ReferenceServer(data_dir, tokens=TOKENS, certfile=pki.certfile, keyfile=pki.keyfile) as running:
        yield running


def test_base_url_is_https_and_an_upload_goes_through(server: ReferenceServer, pki: Pki) -> None:
    assert server.base_url.startswith("https://127.0.0.1:")
    data = os.urandom(600_000)
    with session_for("alice-token") as s:
        s.verify = str(pki.ca)
        s.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, overrides s.verify
        answer = put_chunk(s, f"{server.base_url}/chunked_upload/", data[:300_000], 0, len(data))
        assert answer.status_code == 200, answer.text
        record = answer.json()
        assert record["url"].startswith("https://")
        assert put_chunk(s, record["url"], data[300_000:], 300_000, len(data)).status_code == 200
        done = s.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()})
        assert done.status_code == 200 and Path(done.json()["file"]).read_bytes() == data


def test_the_sdk_client_uploads_over_tls(server: ReferenceServer, pki: Pki, tmp_path: Path) -> None:
    from synapse_sdk.clients.backend import BackendClient

    path = tmp_path / "file.bin"
    data = os.urandom(200_000)
    path.write_bytes(data)
    with BackendClient(server.base_url, access_token="alice-token", verify=str(pki.ca)) as client:
        record = client.create_chunked_upload(path, chunk_size=64 * 1024)
    assert record["checksum"] == hashlib.md5(data).hexdigest()


def test_a_client_without_the_ca_is_refused_by_its_own_check(server: ReferenceServer) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.base_url}/_stats/", headers={"Synapse-Access-Token": "Token alice-token"})


def test_plain_http_on_the_tls_port_does_not_hurt_the_server(server: ReferenceServer, pki: Pki) -> None:
    host, port = server.base_url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET /_stats/ HTTP/1.1\r\nHost: x\r\nSynapse-Access-Token: Token alice-token\r\n\r\n")
        with contextlib.suppress(OSError):
            raw.recv(1024)  # whatever the server makes of it: an error page or a closed socket
    with session_for("alice-token") as s:
        s.verify = str(pki.ca)
        s.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, overrides s.verify
        assert s.get(f"{server.base_url}/_stats/").status_code == 200


def test_certfile_without_keyfile_is_refused(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError, match="both certfile and keyfile"):
        ReferenceServer(tmp_path, tokens=TOKENS, certfile=pki.certfile)


def test_serve_with_certfile_and_keyfile_prints_an_https_url(tmp_path: Path, pki: Pki) -> None:
    flags = ("--certfile", str(pki.certfile), "--keyfile", str(pki.keyfile))
    with serving(tmp_path / "data", *flags) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        answer = requests.get(
            f"{server.base_url}/_stats/", headers={"Synapse-Access-Token": f"Token {TOKEN}"}, verify=str(pki.ca)
        )
        assert answer.status_code == 200 and answer.json()["bytes_received"] == 0

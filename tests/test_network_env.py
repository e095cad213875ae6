"""The network a requests user has: proxies and CA bundles from the environment, redirects, DNS failing.

Real servers on loopback: the reference server (plain and HTTPS), the fault
proxy in forward mode (absolute-form requests and CONNECT tunnels, with or
without credentials), and a small server that answers every request with a
redirect.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from engine.errors import (
    AuthenticationError,
    CertificateError,
    HTTPError,
    NotFoundError,
    ProtocolError,
    UnknownHostError,
)
from engine.transport import Transport
from synapse_sdk.clients.backend import BackendClient
from synapse_sdk.server import ReferenceServer
from tests.conftest import ALICE, make_file
from tests.faults import Proxy

pytestmark = pytest.mark.integration

KIB = 1024
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_CA_BUNDLE")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment, with no proxy or CA variable but those a test sets."""
    for name in (*PROXY_VARIABLES, "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
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


@pytest.fixture
def bundle(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def upload(base_url: str, tmp_path: Path, **options) -> tuple[dict, bytes]:
    path, data = make_file(tmp_path, "data.bin", 300 * KIB)
    with BackendClient(base_url, access_token=ALICE, journal=False, **options) as client:
        return client.create_chunked_upload(path, chunk_size=64 * KIB), data


# -- proxies ------------------------------------------------------------------


def test_http_proxy_from_the_environment(reference_server, env, tmp_path: Path) -> None:
    with Proxy(None) as proxy:
        env.setenv("HTTP_PROXY", proxy.url)
        result, data = upload(reference_server.base_url, tmp_path)
    assert result["checksum"] == hashlib.md5(data).hexdigest()
    # Create, four more chunks, finalize: every one through the proxy, in absolute form.
    assert [entry.method for entry in proxy.log] == ["PUT"] * 5 + ["POST"]
    assert all(entry.path.startswith(reference_server.base_url) for entry in proxy.log)


def test_no_proxy_bypasses_it(reference_server, env, tmp_path: Path) -> None:
    with Proxy(None) as proxy:
        env.setenv("http_proxy", proxy.url)
        env.setenv("no_proxy", "localhost,127.0.0.1")
        result, data = upload(reference_server.base_url, tmp_path)
    assert result["checksum"] == hashlib.md5(data).hexdigest() and proxy.log == []


def test_proxy_credentials_in_the_proxy_url(reference_server, env, tmp_path: Path) -> None:
    with Proxy(None, proxy_auth=("ana", "s3cret")) as proxy:
        env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://ana:s3cret@"))
        result, data = upload(reference_server.base_url, tmp_path)
        assert result["checksum"] == hashlib.md5(data).hexdigest()
        env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://ana:wrong@"))
        with pytest.raises(HTTPError) as raised:
            upload(reference_server.base_url, tmp_path)
    assert raised.value.status_code == 407 and "proxy credentials required" in str(raised.value)


def test_https_through_a_connect_tunnel_with_the_ca_bundle_from_the_environment(
    https_server, env, bundle: Path, tmp_path: Path
) -> None:
    with Proxy(None) as proxy:
        env.setenv("HTTPS_PROXY", proxy.url)
        env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        result, data = upload(https_server.base_url, tmp_path)
    assert result["url"].startswith("https://") and result["checksum"] == hashlib.md5(data).hexdigest()
    tunnels = [entry for entry in proxy.log if entry.method == "CONNECT"]
    assert tunnels and tunnels[0].path == https_server.base_url.removeprefix("https://")


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
def test_each_ca_variable_is_honoured(https_server, env, bundle: Path, tmp_path: Path, variable: str) -> None:
    env.setenv(variable, str(bundle))
    result, data = upload(https_server.base_url, tmp_path)
    assert result["checksum"] == hashlib.md5(data).hexdigest()


def test_without_a_bundle_certifi_decides_and_the_error_is_final(https_server, env, tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as raised:
        upload(https_server.base_url, tmp_path)
    assert len(raised.value.retry_history) == 1


def test_trust_env_false_ignores_the_environment(reference_server, env) -> None:
    env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert Transport().proxy_for(reference_server.base_url) == "http://127.0.0.1:9"
    assert Transport(trust_env=False).proxy_for(reference_server.base_url) is None


def test_a_missing_ca_bundle_is_a_clear_error(env, tmp_path: Path) -> None:
    env.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"no CA bundle at .*missing\.pem"):
        BackendClient("https://example.test", access_token=ALICE)


# -- names that stop resolving ------------------------------------------------


class Resolver:
    """``socket.getaddrinfo`` with one name of its own, ``backend.test``: loopback while up, no such host while down.

    Other names go to the real resolver. No test here sends a lookup off this machine.
    """

    NAME = "backend.test"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.up = True
        self.failed = 0
        self.restore_after: int | None = None  # failed lookups after which the name resolves again
        real = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if host != self.NAME:
                return real(host, *args, **kwargs)
            if not self.up:
                self.failed += 1
                if self.restore_after is not None and self.failed >= self.restore_after:
                    self.up = True
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real("127.0.0.1", *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def url(self, server: ReferenceServer) -> str:
        return server.base_url.replace("127.0.0.1", self.NAME)


def test_a_name_that_never_resolved_is_final_at_once(reference_server, monkeypatch, tmp_path: Path) -> None:
    resolver = Resolver(monkeypatch)
    resolver.up = False
    with pytest.raises(UnknownHostError, match=r"backend\.test.*Name or service not known"):
        upload(resolver.url(reference_server), tmp_path)
    assert resolver.failed == 1  # a typo in the host is one quick error, not minutes of retries


def test_a_name_that_answered_before_and_stops_resolving_is_an_outage(reference_server, monkeypatch, tmp_path) -> None:
    """As a headless Kubernetes service with no ready pods: NXDOMAIN for a while, mid-session."""
    resolver = Resolver(monkeypatch)
    path, data = make_file(tmp_path, "data.bin", 300 * KIB)
    with BackendClient(resolver.url(reference_server), access_token=ALICE, journal=False) as client:
        with pytest.raises(NotFoundError):
            client._get("chunked_upload/0/")  # the server answered: the name resolved
        resolver.up, resolver.restore_after = False, 3
        client.reset_connection()  # the next request must look the name up again
        result = client.create_chunked_upload(path, chunk_size=64 * KIB)
    assert resolver.failed == 3
    assert result["checksum"] == hashlib.md5(data).hexdigest()


# -- redirects ----------------------------------------------------------------


class Redirector:
    """Answers every request with ``status`` to the same path on ``target``, after reading its body."""

    def __init__(self, status: int, target: str) -> None:
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            def _redirect(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                redirector.seen.append((self.command, self.path))
                self.send_response(redirector.status)
                self.send_header("Location", redirector.target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = _redirect

            def log_message(self, *args: object) -> None:
                pass

        self.status, self.target = status, target
        self.seen: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Redirector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_get_follows_every_redirect(reference_server, status: int) -> None:
    with Redirector(status, reference_server.base_url) as redirector:
        client = BackendClient(redirector.url, access_token=ALICE)
        assert client.get_data_collection(1)["name"] == "default"
    assert redirector.seen == [("GET", "/data_collections/1/?expand=file_specifications")]


@pytest.mark.parametrize("status", [307, 308])
def test_an_upload_follows_307_and_308_with_its_body(reference_server, tmp_path: Path, status: int) -> None:
    with Redirector(status, reference_server.base_url) as redirector:
        result, data = upload(redirector.url, tmp_path)
    assert result["checksum"] == hashlib.md5(data).hexdigest()
    # Only the create went to the redirector: later requests go to the upload's own URL.
    assert redirector.seen == [("PUT", "/chunked_upload/")]


@pytest.mark.parametrize("status", [301, 302])
def test_an_upload_is_never_turned_into_a_get(reference_server, tmp_path: Path, status: int) -> None:
    with Redirector(status, reference_server.base_url) as redirector, pytest.raises(ProtocolError) as raised:
        upload(redirector.url, tmp_path)
    assert f"use {reference_server.base_url}/chunked_upload/" in str(raised.value)
    assert len(raised.value.retry_history) == 1  # a redirect does not change by asking again


def test_credentials_do_not_follow_a_redirect_to_another_host(reference_server) -> None:
    other_host = reference_server.base_url.replace("127.0.0.1", "localhost")
    with Redirector(302, other_host) as redirector:
        client = BackendClient(redirector.url, access_token=ALICE)
        with pytest.raises(AuthenticationError):
            client.get_data_collection(1)


def test_too_many_redirects(reference_server) -> None:
    with Redirector(302, "") as loop:
        loop.target = loop.url  # every answer points back at itself
        with pytest.raises(ProtocolError, match="more than 10 redirects"):
            BackendClient(loop.url, access_token=ALICE).get_data_collection(1)

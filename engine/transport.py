"""One pooled, thread-safe HTTP transport per client, on urllib3.

It sends requests and returns answers; it maps network failures to the
``ClientError`` hierarchy but leaves HTTP statuses to the caller, which knows
(the protocol machine) which 400s are signals (``expected_offset``) rather than errors.
It does not retry: retry policy belongs to the caller.

It honours the environment a requests user relies on: ``HTTP(S)_PROXY``,
``ALL_PROXY`` and ``NO_PROXY`` (``http://``, ``https://`` and, with PySocks,
``socks5://`` proxies, credentials in the proxy URL); CA bundles from
``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``SSL_CERT_FILE`` or
``SSL_CERT_DIR``, else certifi's, as requests verifies. Redirects are followed
where that cannot lose a body (see ``Transport.request``); any other 3xx
reaches the caller as an answer its ``raise_for_status`` refuses.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from requests.utils import get_auth_from_url, get_environ_proxies, select_proxy
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from engine.errors import (
    CertificateError,
    ClientConnectionError,
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    FileChangedError,
    ProtocolError,
    UnknownHostError,
    error_for_status,
)
from engine.errors import HTTPError as ClientHTTPError
from engine.source import FileRange
from engine.timeouts import DEFAULT_TIMEOUT, Timeout, TimeoutLike
from engine.wire import RETRY_AFTER

__all__ = ["MAX_REDIRECTS", "Response", "Transport", "read_body"]

#: Requests that change state: when their answer is lost, the server may have acted.
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
#: Headers that carry credentials: never sent on to another host, or from https to http.
_CREDENTIALS = frozenset({"authorization", "synapse-access-token", "synapse-tenant", "synapse-agent", "cookie"})
#: Environment variables naming a CA bundle (file), in the order requests and OpenSSL read them.
_CA_FILE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


@dataclass(frozen=True)
class Response:
    """An HTTP answer, fully read."""

    status: int
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def detail(self) -> Any:
        """The parsed JSON body when there is one, else the text."""
        try:
            return self.json()
        except ValueError:
            return self.data.decode("utf-8", "replace")

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get(RETRY_AFTER)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None  # an HTTP date: let the backoff decide

    def raise_for_status(self) -> Response:
        """This answer, if it is a success; else the error it means (a 3xx left unfollowed is one)."""
        if self.status >= 400:
            raise error_for_status(self.status, self.detail, self.retry_after)
        if self.status >= 300:
            raise ClientHTTPError(
                self.status, f"the server answered {self.status} (to {self.headers.get('Location')}), not a result"
            )
        return self


class _SendfileConnection(HTTPConnection):
    """Plain-HTTP connection that sends ``FileRange`` body parts with ``socket.sendfile``."""

    def send(self, data: Any) -> None:
        if not isinstance(data, FileRange):
            super().send(data)
            return
        if self.sock is None:
            self.connect()
        sent = _send_range(self.sock, data)
        if sent != data.count:
            # The file ended early: it shrank while it was being sent.
            raise FileChangedError(f"{data.source.path} changed while it was being uploaded")


def _send_range(sock: socket.socket, data: FileRange) -> int:
    """Send ``data`` with ``os.sendfile``, honouring the socket's timeout; returns the bytes sent.

    Not ``socket.sendfile``: when ``os.sendfile`` fails before its first byte
    (the server closed the connection, e.g. having answered 403 early), it
    falls back to ``read()``/``seek()``, which a ``FileRange`` has not, and an
    ``AttributeError`` would hide the server's answer. Here the ``OSError``
    itself goes up: urllib3 takes ``EPIPE`` as "read the answer that came".
    """
    timeout = sock.gettimeout()
    out, source = sock.fileno(), data.fileno()
    offset, left = data.offset, data.count
    with selectors.DefaultSelector() as selector:
        selector.register(out, selectors.EVENT_WRITE)
        while left:
            if timeout is not None and not selector.select(timeout):
                raise TimeoutError("timed out")
            try:
                sent = os.sendfile(out, source, offset, left)
            except BlockingIOError:
                continue  # a socket with a timeout is non-blocking underneath: wait again
            if sent == 0:
                break  # the file ended early
            offset += sent
            left -= sent
    return data.count - left


class _SendfilePool(HTTPConnectionPool):
    ConnectionCls = _SendfileConnection


class Transport:
    """A urllib3 pool shared by every thread of one client.

    ``verify``: as requests: ``True`` checks certificates against the CA
    bundle the environment names (see the module), else certifi's; a path
    names a CA bundle (or a folder of them); ``False`` checks nothing.
    ``proxies``: as requests' ``{"https": "http://proxy:3128", ...}``,
    merged over the environment's; ``trust_env=False`` ignores the
    environment (proxies and CA variables), as ``requests.Session.trust_env``.
    """

    def __init__(
        self,
        *,
        timeout: TimeoutLike = DEFAULT_TIMEOUT,
        pool_size: int = 16,
        verify: bool | str | os.PathLike[str] = True,
        proxies: Mapping[str, str] | None = None,
        trust_env: bool = True,
    ) -> None:
        self.timeout = Timeout.of(timeout)
        self.proxies = dict(proxies or {})
        self.trust_env = trust_env
        # block=False: a burst of threads opens extra connections instead of waiting.
        self._pool_options: dict[str, Any] = {
            "num_pools": 8,
            "maxsize": pool_size,
            "block": False,
            **_tls_options(verify, trust_env),
        }
        self._direct = _with_sendfile(urllib3.PoolManager(**self._pool_options))
        self._by_proxy: dict[str, urllib3.PoolManager] = {}
        # Origins that have answered this client: their names resolved, so a lookup
        # failing now is an outage (a headless service with no ready pods is NXDOMAIN).
        self._answered: set[str] = set()

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to ``url`` goes through, or None (``NO_PROXY``, or none set)."""
        proxies = self.proxies
        if self.trust_env:
            proxies = {**get_environ_proxies(url, no_proxy=self.proxies.get("no_proxy")), **proxies}
        return select_proxy(url, proxies) if proxies else None

    def can_sendfile(self, url: str) -> bool:
        """Whether a body to ``url`` may carry ``FileRange`` parts: plain HTTP all the way, where sendfile exists.

        TLS, to the server or to a proxy, encrypts in user space.
        """
        if not url.startswith("http://") or not hasattr(os, "sendfile"):
            return False
        proxy = self.proxy_for(url)
        return proxy is None or proxy.startswith("http://")

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes | memoryview | FileRange] | None = None,
        timeout: TimeoutLike = None,
    ) -> Response:
        """Send one request, following redirects where no body can be lost.

        GET and HEAD follow every redirect; 303 ("see other") is followed
        with a GET; 307 and 308 repeat the method and body when the body can
        be sent again (bytes, or a sized body such as ``MultipartBody``). A
        301 or 302 of a request with a body would turn it into a GET and
        lose the body (as browsers and requests do), so it is a
        ``ProtocolError`` that names the URL to use instead. Credentials are
        not carried to another host, nor from https to http.
        """
        headers = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            answer = self._send(method, url, headers, body, timeout)
            location = answer.headers.get("Location")
            if answer.status not in _REDIRECTS or not location:
                return answer
            target = urljoin(url, location)
            if answer.status == 303 and method != "HEAD":
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
            elif method not in ("GET", "HEAD") and not (answer.status in (307, 308) and _replayable(body)):
                raise ProtocolError(
                    f"the server redirected {method} {url} to {target} ({answer.status}), which would drop the "
                    f"request's body: use {target} (or its base URL) instead"
                )
            if _crosses(url, target):
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
            url = target
        raise ProtocolError(f"more than {MAX_REDIRECTS} redirects, the last to {url}")

    def stream(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutLike = None,
    ) -> urllib3.BaseHTTPResponse:
        """GET ``url`` and return the answer with its body unread, to be read in pieces.

        For downloads: the caller reads the body with ``read_body`` (which maps
        a broken or stalled body to the ``ClientError`` hierarchy) and must
        ``release_conn()`` it. Redirects are followed as ``request`` follows a
        GET's; credentials are not carried to another host.
        """
        headers = dict(headers or {})
        connect, read = Timeout.of(timeout, self.timeout).as_tuple()
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = self._manager(url).request(
                    "GET",
                    url,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=connect, read=read),
                    retries=False,
                    redirect=False,
                    preload_content=False,
                    decode_content=False,
                )
            except NewConnectionError as error:
                raise self._cannot_connect(error, url) from error
            except HTTPError as error:
                raise _network_error(error, url, connect, read) from error
            self._answered.add(_origin(url))
            location = answer.headers.get("Location")
            if answer.status not in _REDIRECTS or not location:
                return answer
            answer.drain_conn()
            answer.release_conn()
            target = urljoin(url, location)
            if _crosses(url, target):
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
            url = target
        raise ProtocolError(f"more than {MAX_REDIRECTS} redirects, the last to {url}")

    def _manager(self, url: str) -> urllib3.PoolManager:
        proxy = self.proxy_for(url)
        if proxy is None:
            return self._direct
        manager = self._by_proxy.get(proxy)
        if manager is None:
            manager = self._by_proxy.setdefault(proxy, _proxy_manager(proxy, self._pool_options))
        return manager

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes | memoryview | FileRange] | None,
        timeout: TimeoutLike,
    ) -> Response:
        connect, read = Timeout.of(timeout, self.timeout).as_tuple()
        try:
            answer = self._manager(url).request(
                method,
                url,
                body=body,  # type: ignore[arg-type]  # urllib3 sends memoryviews too; its hint says bytes/str
                headers=headers,
                timeout=urllib3.Timeout(connect=connect, read=read),
                retries=False,
                redirect=False,
            )
        except ProxyError as error:
            raise ClientConnectionError(f"the proxy for {url} failed: {error}") from error
        except NewConnectionError as error:
            # Checked first: urllib3 makes it a subclass of ConnectTimeoutError.
            raise self._cannot_connect(error, url) from error
        except ConnectTimeoutError as error:
            raise ClientTimeoutError(f"connecting to {url} timed out (>{connect}s)") from error
        except ReadTimeoutError as error:
            lost: type[ClientConnectionError | ClientTimeoutError] = (
                ClientResponseIncompleteError if method in _MUTATING else ClientTimeoutError
            )
            raise lost(f"{method} {url}: no answer within {read}s") from error
        except SSLError as error:
            failed = CertificateError if "CERTIFICATE_VERIFY_FAILED" in str(error) else ClientConnectionError
            raise failed(f"TLS failed for {url}: {error}") from error
        except HTTPError as error:
            lost = ClientResponseIncompleteError if method in _MUTATING else ClientConnectionError
            raise lost(f"{method} {url}: connection broke: {error}") from error
        self._answered.add(_origin(url))
        return Response(answer.status, answer.data, answer.headers)

    def _cannot_connect(self, error: NewConnectionError, url: str) -> ClientConnectionError:
        """A name that does not resolve is final (``UnknownHostError``), unless it answered this client before."""
        origin = _origin(url)
        reason = _os_reason(error)
        if not _no_such_host(error):
            return ClientConnectionError(f"cannot connect to {origin}: {reason}")
        if origin in self._answered:
            return ClientConnectionError(f"cannot connect to {origin}: {reason} (it resolved before: an outage?)")
        return UnknownHostError(f"cannot connect to {origin}: {reason}")

    @property
    def pool_size(self) -> int:
        """Connections kept open per host for reuse (more may be open at once; the extra ones close after use)."""
        return int(self._pool_options["maxsize"])

    def reserve(self, connections: int) -> None:
        """Keep at least ``connections`` per host for reuse: one for each request a caller will have in flight.

        A batch with more files in flight than the pool holds would otherwise
        open a connection per request (``block=False`` lets the extras open,
        then closes them). Growing starts new pools at the new size (urllib3
        keys its pools by their size) and drops the idle connections of the
        old ones; requests in flight finish on theirs. Never shrinks.
        """
        if connections <= self.pool_size:
            return
        self._pool_options["maxsize"] = connections
        for manager in (self._direct, *self._by_proxy.values()):
            manager.connection_pool_kw["maxsize"] = connections
        self.close()

    def close(self) -> None:
        self._direct.clear()
        for manager in self._by_proxy.values():
            manager.clear()


def read_body(answer: urllib3.BaseHTTPResponse, url: str, size: int) -> Iterator[bytes]:
    """The body of a ``Transport.stream`` answer in pieces of at most ``size`` bytes.

    A body that breaks off, or stalls past the read timeout, raises
    ``ClientConnectionError`` / ``ClientTimeoutError`` (both retryable).
    """
    try:
        yield from answer.stream(size, decode_content=False)
    except HTTPError as error:
        raise _network_error(error, url, None, None) from error


def _network_error(error: HTTPError, url: str, connect: float | None, read: float | None) -> ClientError:
    """The ``ClientError`` a GET's network failure means (a GET may always be sent again)."""
    if isinstance(error, ProxyError):
        return ClientConnectionError(f"the proxy for {url} failed: {error}")
    if isinstance(error, ConnectTimeoutError):
        return ClientTimeoutError(f"connecting to {_origin(url)} timed out (>{connect}s)")
    if isinstance(error, ReadTimeoutError):
        within = f" within {read}s" if read is not None else " in time"
        return ClientTimeoutError(f"GET {_origin(url)}: no data{within}")
    if isinstance(error, SSLError):
        failed = CertificateError if "CERTIFICATE_VERIFY_FAILED" in str(error) else ClientConnectionError
        return failed(f"TLS failed for {_origin(url)}: {error}")
    return ClientConnectionError(f"GET {_origin(url)}: connection broke: {error}")


def _with_sendfile(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    manager.pool_classes_by_scheme = {**manager.pool_classes_by_scheme, "http": _SendfilePool}
    return manager


def _tls_options(verify: bool | str | os.PathLike[str], trust_env: bool) -> dict[str, Any]:
    """urllib3's certificate options for requests' meaning of ``verify``."""
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    location = os.fspath(verify) if isinstance(verify, (str, os.PathLike)) else None
    if location is None and trust_env:
        named = [os.environ.get(v) for v in (*_CA_FILE_VARIABLES, "SSL_CERT_DIR")]
        location = next((value for value in named if value), None)
    location = location or certifi.where()
    if not os.path.exists(location):
        raise ValueError(f"no CA bundle at {location} (named by verify= or the environment)")
    return {"cert_reqs": "CERT_REQUIRED", ("ca_cert_dir" if os.path.isdir(location) else "ca_certs"): location}


def _proxy_manager(proxy: str, options: dict[str, Any]) -> urllib3.PoolManager:
    scheme = urlsplit(proxy).scheme.lower()
    username, password = get_auth_from_url(proxy)
    if scheme.startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:  # urllib3 needs PySocks for SOCKS
            raise ClientConnectionError(f"{proxy} is a SOCKS proxy, which needs PySocks: pip install pysocks") from None
        return SOCKSProxyManager(proxy, username=username or None, password=password or None, **options)
    if scheme not in ("http", "https"):
        raise ClientConnectionError(f"unsupported proxy URL {proxy!r}: use http://, https:// or socks5://")
    proxy_headers = urllib3.make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
    return _with_sendfile(urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **options))


def _replayable(body: object) -> bool:
    """Whether ``body`` can be sent again: bytes, or a sized iterable that is not a one-shot iterator."""
    if body is None or isinstance(body, (bytes, bytearray, memoryview)):
        return True
    return hasattr(body, "__len__") and not isinstance(body, Iterator)


def _crosses(url: str, target: str) -> bool:
    """Whether a redirect leaves the host, or goes from https to http."""
    before, after = urlsplit(url), urlsplit(target)
    return before.hostname != after.hostname or (before.scheme == "https" and after.scheme != "https")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _os_reason(error: BaseException) -> str:
    """The operating system's words for what failed under ``error`` ("Connection refused"), else its text."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return text.split("]", 1)[1].strip() if text.count("[Errno") == 1 and "]" in text else text


def _no_such_host(error: BaseException) -> bool:
    """Whether the name lookup behind ``error`` found no such host (not a passing DNS failure)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return seen.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
        seen = seen.__cause__ or seen.__context__
    return False

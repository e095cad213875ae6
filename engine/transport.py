"""One pooled, thread-safe HTTP transport per client, on urllib3.

It sends requests and returns answers; it maps network failures to the
``ClientError`` hierarchy but leaves HTTP statuses to the caller, which knows
which 400s are protocol signals (``expected_offset``) rather than errors.
It does not retry: retry policy belongs to the caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from engine.errors import (
    CertificateError,
    ClientConnectionError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    FileChangedError,
    error_for_status,
)
from engine.source import FileRange

__all__ = ["Response", "Transport"]

#: Requests that change state: when their answer is lost, the server may have acted.
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
        value = self.headers.get("Retry-After")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None  # an HTTP date: let the backoff decide

    def raise_for_status(self) -> Response:
        if self.status >= 400:
            raise error_for_status(self.status, self.detail, self.retry_after)
        return self


class _SendfileConnection(HTTPConnection):
    """Plain-HTTP connection that sends ``FileRange`` body parts with ``socket.sendfile``."""

    def send(self, data: Any) -> None:
        if not isinstance(data, FileRange):
            super().send(data)
            return
        if self.sock is None:
            self.connect()
        sent = self.sock.sendfile(data, data.offset, data.count)
        if sent != data.count:
            # The file ended early: it shrank while it was being sent.
            raise FileChangedError(f"{data.source.path} changed while it was being uploaded")


class _SendfilePool(HTTPConnectionPool):
    ConnectionCls = _SendfileConnection


class Transport:
    """A urllib3 pool shared by every thread of one client."""

    def __init__(
        self,
        *,
        timeout: tuple[float, float] = (5.0, 15.0),
        pool_size: int = 16,
        verify: bool | str | os.PathLike[str] = True,
    ) -> None:
        self.timeout = timeout
        # As requests: True checks against the system's CAs, a path names a CA
        # bundle (or a folder of them), False checks nothing.
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
        if isinstance(verify, (str, os.PathLike)):
            tls["ca_cert_dir" if os.path.isdir(verify) else "ca_certs"] = os.fspath(verify)
        # block=False: a burst of threads opens extra connections instead of waiting.
        self._pool = urllib3.PoolManager(num_pools=8, maxsize=pool_size, block=False, **tls)
        self._pool.pool_classes_by_scheme = {**self._pool.pool_classes_by_scheme, "http": _SendfilePool}

    @staticmethod
    def can_sendfile(url: str) -> bool:
        """Whether a body to ``url`` may carry ``FileRange`` parts (plain HTTP: TLS must encrypt in user space)."""
        return url.startswith("http://")

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes | memoryview] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> Response:
        connect, read = timeout or self.timeout
        try:
            answer = self._pool.request(
                method,
                url,
                body=body,
                headers=dict(headers or {}),
                timeout=urllib3.Timeout(connect=connect, read=read),
                retries=False,
                redirect=False,
            )
        except NewConnectionError as error:
            # Checked first: urllib3 makes it a subclass of ConnectTimeoutError.
            raise ClientConnectionError(f"cannot connect to {url}: {error}") from error
        except ConnectTimeoutError as error:
            raise ClientTimeoutError(f"connecting to {url} timed out (>{connect}s)") from error
        except ReadTimeoutError as error:
            lost = ClientResponseIncompleteError if method in _MUTATING else ClientTimeoutError
            raise lost(f"{method} {url}: no answer within {read}s") from error
        except SSLError as error:
            failed = CertificateError if "CERTIFICATE_VERIFY_FAILED" in str(error) else ClientConnectionError
            raise failed(f"TLS failed for {url}: {error}") from error
        except HTTPError as error:
            lost = ClientResponseIncompleteError if method in _MUTATING else ClientConnectionError
            raise lost(f"{method} {url}: connection broke: {error}") from error
        return Response(answer.status, answer.data, answer.headers)

    def close(self) -> None:
        self._pool.clear()

"""One exception hierarchy for every failure a caller can act on.

``ClientError`` is the root, as in the published synapse-sdk; it carries
``status_code`` and ``detail``. The rule for ``status_code``:

- the HTTP status of the server's answer, when the error is an answer;
- 408 for a timeout (``ClientTimeoutError``), as synapse-sdk has it: no
  answer came in time, and 408 is the status that says so;
- otherwise (nothing answered, or the failure is not the server's answer:
  a connection that broke, a certificate, a changed file, a cancelled
  upload, an answer that breaks the protocol) ``NO_STATUS``. It stands where
  synapse-sdk has ``None``: it equals ``None``, is false and prints as
  ``None``, but it is an int below every HTTP status, so the documentation's
  ``e.status_code >= 500`` is simply false instead of a ``TypeError``.

Upload failures also carry the upload's ``url`` and ``offset`` (bytes the
server holds) so a caller can resume or report. Every error pickles, so it
survives crossing a process boundary. ``synapse_sdk.clients.exceptions``
re-exports these classes under their published names.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NO_STATUS",
    "AuthenticationError",
    "AuthorizationError",
    "CertificateError",
    "ClientConnectionError",
    "ClientError",
    "ClientResponseIncompleteError",
    "ClientTimeoutError",
    "FileChangedError",
    "GoneError",
    "GpuUnavailableError",
    "HTTPError",
    "InsufficientStorageError",
    "NoStatus",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "StreamLimitExceededError",
    "UnknownHostError",
    "UploadCancelled",
    "UploadIntegrityError",
    "ValidationError",
    "WebSocketError",
    "WorkerDiedError",
    "WorkerStartError",
    "error_for_status",
    "raise_for_status",
]


class NoStatus(int):
    """The ``status_code`` of an error that no HTTP answer gave (see the module's rule).

    Equal to ``None`` (and to itself) and to nothing else, false, printed as
    ``None``; as an int it is 0, so it orders below every status and a JSON
    encoder writes 0.
    """

    _instance: NoStatus | None = None

    def __new__(cls) -> NoStatus:
        if cls._instance is None:
            cls._instance = super().__new__(cls, 0)
        return cls._instance

    def __eq__(self, other: object) -> bool:
        return other is None or other is self

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(None)

    def __repr__(self) -> str:
        return "None"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[NoStatus], tuple[()]]:
        return (NoStatus, ())


NO_STATUS = NoStatus()


def _rebuild(cls: type[ClientError], args: tuple[Any, ...]) -> ClientError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    return error


class ClientError(Exception):
    """Root of all client errors: ``status_code`` and ``detail``, plus upload context."""

    #: The errors of the streak a ``RetryPolicy`` gave up on, this one last (set when it gives up).
    retry_history: tuple[ClientError, ...]

    def __init__(self, status_code: int | None = None, detail: Any = None) -> None:
        self.status_code: int = NO_STATUS if status_code is None else status_code
        self.detail = detail
        self.url: str | None = None
        self.offset: int | None = None
        if status_code is not None and status_code is not NO_STATUS:
            super().__init__(f"{status_code}: {detail}")
        else:
            super().__init__(str(detail) if detail else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, detail={self.detail!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take different constructor arguments: rebuild, then set the
        # state (pickle sets it after creation, so an error in its own
        # retry_history round-trips).
        return (_rebuild, (type(self), self.args), self.__dict__)

    def with_upload(self, url: str | None, offset: int | None) -> ClientError:
        """Attach where the upload stands, so the caller can resume or report it."""
        self.url = url
        self.offset = offset
        return self


class ClientConnectionError(ClientError):
    """The server could not be reached, or the connection broke."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


class CertificateError(ClientConnectionError):
    """The server's TLS certificate failed verification: retrying will not help."""


class UnknownHostError(ClientConnectionError):
    """The server's host name does not resolve (no such name): retrying will not help."""


class ClientResponseIncompleteError(ClientConnectionError):
    """The request went out but its answer was lost: the server may have acted on it."""


class ClientTimeoutError(ClientError):
    """The server did not answer in time."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=408, detail=detail)


class HTTPError(ClientError):
    """The server answered with an error status."""


class ValidationError(HTTPError):
    """400/422: the server rejected the request as malformed.

    A FastAPI-style list of field errors reads as one line per field, as in synapse-sdk.
    """

    def __init__(self, status_code: int = 400, detail: Any = None) -> None:
        super().__init__(status_code=status_code, detail=detail)
        errors = _field_errors(detail)
        if errors:
            self.args = ("\n".join([f"{status_code} Validation Error:", *map(_field_error_line, errors)]),)


def _field_errors(detail: Any) -> list[dict[str, Any]]:
    inner = detail.get("detail") if isinstance(detail, dict) else detail
    return [e for e in inner if isinstance(e, dict)] if isinstance(inner, list) else []


def _field_error_line(error: dict[str, Any]) -> str:
    where = " -> ".join(str(part) for part in error.get("loc", []))
    line = f"  {where}: {error.get('msg', 'Unknown error')}"
    if error.get("type"):
        line += f" (type={error['type']})"
    if error.get("input") is not None:
        shown = repr(error["input"])
        line += f" [input={shown[:50] + '...' if len(shown) > 50 else shown}]"
    return line


class AuthenticationError(HTTPError):
    """401: no valid token."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=401, detail=detail)


class AuthorizationError(HTTPError):
    """403: the token may not do this."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=403, detail=detail)


class NotFoundError(HTTPError):
    """404: no such resource (or it belongs to someone else)."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=404, detail=detail)


class GoneError(HTTPError):
    """410: the upload expired on the server."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=410, detail=detail)


class PayloadTooLargeError(HTTPError):
    """413: the file is larger than the server accepts."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=413, detail=detail)


class RateLimitError(HTTPError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if it gave one."""

    def __init__(self, detail: Any = None, retry_after: float | None = None) -> None:
        super().__init__(status_code=429, detail=detail)
        self.retry_after = retry_after


class ServerError(HTTPError):
    """5xx: the server failed."""

    def __init__(self, status_code: int = 500, detail: Any = None) -> None:
        super().__init__(status_code=status_code, detail=detail)


class GpuUnavailableError(ServerError):
    """503 whose detail says ``"error_type": "gpu_unavailable"`` (kept for import compatibility with synapse-sdk)."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=503, detail=detail)

    @property
    def message(self) -> str:
        if isinstance(self.detail, dict):
            return str(self.detail.get("message", self.detail))
        return str(self.detail) if self.detail else ""

    @property
    def error_details(self) -> dict[str, Any]:
        if isinstance(self.detail, dict):
            return {k: v for k, v in self.detail.items() if k not in ("message", "error_type")}
        return {}


class InsufficientStorageError(ServerError):
    """507: the server's storage is full."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=507, detail=detail)


class ProtocolError(ClientError):
    """The server's answer does not fit the chunked-upload protocol."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


class UploadIntegrityError(ClientError):
    """The server stored bytes whose checksum differs from the file's."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


class UploadCancelled(ClientError):
    """The caller stopped the upload; what the server holds stays resumable."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


class FileChangedError(ClientError):
    """The local file changed while it was being uploaded; nothing was finalized."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


class StreamError(ClientError):
    """Streaming error (kept for import compatibility with synapse-sdk)."""


class StreamLimitExceededError(StreamError):
    """Stream limit exceeded (kept for import compatibility with synapse-sdk)."""


class WebSocketError(StreamError):
    """WebSocket error (kept for import compatibility with synapse-sdk)."""


class WorkerDiedError(ClientError):
    """The workers uploading a file (Ray actors) died too often; ``url`` and ``offset`` say where it stood."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


class WorkerStartError(ClientError, RuntimeError):
    """No upload worker could be started (no free CPU, or the package missing on the nodes).

    Also a ``RuntimeError``, as it was before it joined this hierarchy.
    """

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=None, detail=detail)


_BY_STATUS: dict[int, type[HTTPError]] = {
    401: AuthenticationError,
    403: AuthorizationError,
    404: NotFoundError,
    410: GoneError,
    413: PayloadTooLargeError,
    507: InsufficientStorageError,
}


def error_for_status(status_code: int, detail: Any = None, retry_after: float | None = None) -> HTTPError:
    """The error class a given HTTP status maps to."""
    if status_code in (400, 422):
        return ValidationError(status_code, detail)
    if status_code == 429:
        return RateLimitError(detail, retry_after)
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code](detail)
    if status_code == 503 and isinstance(detail, dict) and detail.get("error_type") == "gpu_unavailable":
        return GpuUnavailableError(detail)
    if status_code >= 500:
        return ServerError(status_code, detail)
    return HTTPError(status_code, detail)


def raise_for_status(status_code: int, detail: Any = None) -> None:
    """Raise the matching error for a status of 400 or more; do nothing below."""
    if status_code >= 400:
        raise error_for_status(status_code, detail)

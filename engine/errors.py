"""One exception hierarchy for every failure a caller can act on.

``ClientError`` is the root, as in the published synapse-sdk; it carries
``status_code`` (``None`` when no HTTP answer was involved) and ``detail``.
Upload failures also carry the upload's ``url`` and ``offset`` (bytes the
server holds) so a caller can resume or report. Every error pickles, so it
survives crossing a process boundary. ``synapse_sdk.clients.exceptions``
re-exports these classes under their published names.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "CertificateError",
    "ClientConnectionError",
    "ClientError",
    "ClientResponseIncompleteError",
    "ClientTimeoutError",
    "FileChangedError",
    "GoneError",
    "HTTPError",
    "InsufficientStorageError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "StreamLimitExceededError",
    "UploadCancelled",
    "UploadIntegrityError",
    "ValidationError",
    "WebSocketError",
    "error_for_status",
    "raise_for_status",
]


def _rebuild(cls: type[ClientError], args: tuple) -> ClientError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    return error


class ClientError(Exception):
    """Root of all client errors: ``status_code`` and ``detail``, plus upload context."""

    def __init__(self, status_code: int | None = None, detail: Any = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.url: str | None = None
        self.offset: int | None = None
        if status_code is not None:
            super().__init__(f"{status_code}: {detail}")
        else:
            super().__init__(str(detail) if detail else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, detail={self.detail!r})"

    def __reduce__(self):
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


class ClientResponseIncompleteError(ClientConnectionError):
    """The request went out but its answer was lost: the server may have acted on it."""


class ClientTimeoutError(ClientError):
    """The server did not answer in time."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(status_code=408, detail=detail)


class HTTPError(ClientError):
    """The server answered with an error status."""


class ValidationError(HTTPError):
    """400/422: the server rejected the request as malformed."""

    def __init__(self, status_code: int = 400, detail: Any = None) -> None:
        super().__init__(status_code=status_code, detail=detail)


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
    if status_code >= 500:
        return ServerError(status_code, detail)
    return HTTPError(status_code, detail)


def raise_for_status(status_code: int, detail: Any = None) -> None:
    """Raise the matching error for a status of 400 or more; do nothing below."""
    if status_code >= 400:
        raise error_for_status(status_code, detail)

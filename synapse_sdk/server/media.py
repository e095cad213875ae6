"""Signed, expiring URLs to the bytes of complete uploads, and the WSGI handler that serves them.

Records that name a file (a model's ``file``, a data unit's ``files[*].url``)
carry a URL ``/media/<upload id>/<file name>?expires=<unix time>&signature=<hex>``,
as a storage backend's presigned URLs: whoever holds it may GET the file
until it expires, with no token (the published SDK sends none to such URLs).
The signature is an HMAC-SHA256 of the upload id and the expiry under the
server's secret; the file name is for the client's eyes (and its cache
file's suffix) only.

Answers stream the file in blocks (never the whole file in memory), carry a
strong ``ETag`` and ``Accept-Ranges: bytes``, and honour a single
``Range`` (``206``, or ``416`` with the size) and ``If-Range``. A URL that
expired or whose signature does not match is ``403`` with a ``detail`` that
says which; a file that is gone is ``404``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote

from engine import wire

__all__ = ["MEDIA_PREFIX", "MediaFiles", "MediaSigner"]

MEDIA_PREFIX: Final = "/media/"
_ROUTE: Final = re.compile(r"/media/([0-9]{1,18})/[^/]*")
_RANGE: Final = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
_BLOCK: Final = 1 << 20

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class MediaSigner:
    """Makes and checks the signed URLs; ``ttl`` seconds of validity, ``clock`` the Unix time."""

    def __init__(self, secret: bytes | None = None, ttl: float = 3600.0, clock: Callable[[], float] = time.time):
        if ttl < 0:
            raise ValueError(f"media URL lifetime must not be negative, not {ttl}")
        self._secret = secret or secrets.token_bytes(32)
        self.ttl = ttl
        self.clock = clock

    def url(self, base_url: str, upload_id: int, filename: str) -> str:
        expires = int(self.clock() + self.ttl)
        name = quote(os.path.basename(filename) or "file", safe="")
        signature = self._sign(upload_id, expires)
        return f"{base_url}{MEDIA_PREFIX}{upload_id}/{name}?expires={expires}&signature={signature}"

    def check(self, upload_id: int, query: str) -> str | None:
        """None when ``query`` signs ``upload_id`` and has not expired; else what is wrong."""
        fields = dict(parse_qsl(query))
        expires, signature = fields.get("expires", ""), fields.get("signature", "")
        if not expires.isdigit() or not signature:
            return "not a signed URL: it needs the 'expires' and 'signature' query parameters the API handed out"
        if not hmac.compare_digest(signature, self._sign(upload_id, int(expires))):
            return "the URL's signature does not match (was it changed, or made by another server?)"
        if self.clock() >= int(expires):
            moment = datetime.fromtimestamp(int(expires), timezone.utc).isoformat().replace("+00:00", "Z")
            return f"this signed URL expired at {moment}; fetch the record again for a fresh URL"
        return None

    def _sign(self, upload_id: int, expires: int) -> str:
        return hmac.new(self._secret, f"{upload_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


class MediaFiles:
    """WSGI handler of ``/media/``: ``resolve(upload_id)`` names a complete upload's file, or None."""

    def __init__(self, signer: MediaSigner, resolve: Callable[[int], Path | None]) -> None:
        self.signer = signer
        self.resolve = resolve

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes] | list[bytes]:
        answer = self._answer(environ, start_response)
        # No body after a HEAD answer: on a kept-alive connection it would be read as the next answer.
        return [] if environ.get("REQUEST_METHOD") == "HEAD" and isinstance(answer, list) else answer

    def _answer(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes] | list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _json(start_response, 405, f'Method "{method}" not allowed.', [("Allow", "GET, HEAD")])
        route = _ROUTE.fullmatch(environ.get("PATH_INFO", ""))
        if route is None:
            return _json(start_response, 404, "Not found.")
        upload_id = int(route.group(1))
        problem = self.signer.check(upload_id, environ.get("QUERY_STRING", ""))
        if problem is not None:
            return _json(start_response, 403, problem)
        path = self.resolve(upload_id)
        try:
            handle = open(path, "rb") if path is not None else None  # noqa: SIM115 (closed by _blocks)
        except FileNotFoundError:
            handle = None
        if handle is None:
            return _json(start_response, 404, "Not found.")
        stat = os.fstat(handle.fileno())
        size = stat.st_size
        etag = f'"{upload_id}-{size}-{stat.st_mtime_ns}"'
        headers = [("Accept-Ranges", "bytes"), ("ETag", etag), ("Content-Type", "application/octet-stream")]
        first, last = 0, size - 1
        status = 200
        wanted = environ.get("HTTP_RANGE")
        if_range = environ.get("HTTP_IF_RANGE")
        if wanted is not None and (if_range is None or if_range.strip() == etag):
            span = _parse_range(wanted, size)
            if span is None:
                handle.close()
                return _json(start_response, 416, f"no byte of {wanted!r} is in the file ({size} bytes)",
                             [(wire.CONTENT_RANGE, f"bytes */{size}")])  # fmt: skip
            if span != (-1, -1):  # (-1, -1): a range header we do not serve (several ranges): the whole file
                first, last = span
                status = 206
                headers.append((wire.CONTENT_RANGE, f"bytes {first}-{last}/{size}"))
        length = max(0, last - first + 1)
        headers.append(("Content-Length", str(length)))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        if method == "HEAD":
            handle.close()
            return []
        return _blocks(handle, first, length)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(first, last) of a single ``bytes=`` range in a file of ``size``; None if unsatisfiable.

    (-1, -1) for a header this server does not serve as a range (several
    ranges, another unit, malformed): the whole file is sent instead, as
    RFC 9110 allows.
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return (-1, -1)
    start, end = match.groups()
    if not start and not end:
        return (-1, -1)
    if not start:  # the last N bytes
        count = int(end)
        return (max(0, size - count), size - 1) if count and size else None
    first = int(start)
    last = min(int(end), size - 1) if end else size - 1
    if first >= size or last < first:
        return None
    return first, last


def _blocks(handle: Any, first: int, length: int) -> Iterator[bytes]:
    with handle:
        handle.seek(first)
        while length > 0:
            block = handle.read(min(_BLOCK, length))
            if not block:
                return  # the file shrank: the client sees a short body and retries
            length -= len(block)
            yield block


def _json(start_response: StartResponse, status: int, detail: str, headers: list[tuple[str, str]] = ()) -> list[bytes]:
    data = json.dumps({wire.DETAIL: detail}).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
    )
    return [data]

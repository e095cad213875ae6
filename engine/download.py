"""Download of one URL to one file: streamed, atomic, resumed by ``Range``, retried by policy.

The body goes to ``<dest>.part`` in pieces (memory stays flat whatever the
size), is flushed to disk, then renamed over ``dest``: a reader never sees a
half-written file. A download that breaks off continues from the bytes the
``.part`` file holds with ``Range: bytes=N-``; the answer's validator
(``ETag``, else ``Last-Modified``) is kept beside it in ``<dest>.part.tag`` and
sent as ``If-Range``, so a file that changed on the server starts afresh
instead of being stitched from two versions. That holds across processes: a
download killed halfway resumes on the next call. Failures are retried by an
``engine.retry.RetryPolicy`` whose budget is time without progress: any bytes
received reset it.

It does not know the SDK's cache folder or its record shapes; see
``synapse_sdk.utils.file.download`` for those. Query strings (signatures of
presigned URLs) are never logged or put in error messages.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engine import retry as retrying
from engine import wire
from engine.errors import ClientConnectionError, ClientError, ProtocolError, error_for_status
from engine.retry import RetryPolicy
from engine.transport import Transport, read_body

__all__ = ["PIECE_SIZE", "download", "public_url"]

#: Bytes read from the socket and written per step.
PIECE_SIZE = 1 << 20

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

# One download per destination at a time in this process: two threads asking
# for the same cached file must not write one ``.part`` file together.
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def public_url(url: str) -> str:
    """``url`` without its query and fragment: what may be logged of a presigned URL."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def download(
    transport: Transport,
    url: str,
    dest: str | os.PathLike[str],
    *,
    retry: RetryPolicy | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: tuple[float, float] | None = None,
    resume: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetch ``url`` into ``dest`` and return ``dest`` as a ``Path``.

    ``resume=False`` never continues a ``.part`` file (an earlier call's or
    attempt's): every attempt starts from the first byte. HTTP
    errors raise the ``ClientError`` subclass of their status (403 of an
    expired presigned URL: ``AuthorizationError``) with the server's detail
    and the URL without its query; 429 and 5xx, dropped connections and
    timeouts are retried by ``retry`` (default ``RetryPolicy()``).
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"can only download http:// or https:// URLs, not {url!r}")
    target = Path(dest)
    if target.is_dir():
        raise IsADirectoryError(f"download destination is a directory: {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock_for(target):
        return _Download(transport, url, target, headers or {}, timeout, resume).run(retry or RetryPolicy(), sleep)


def _lock_for(path: Path) -> threading.Lock:
    key = os.path.abspath(path)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


class _Download:
    def __init__(
        self,
        transport: Transport,
        url: str,
        dest: Path,
        headers: Mapping[str, str],
        timeout: tuple[float, float] | None,
        resume: bool,
    ) -> None:
        self.transport = transport
        self.url = url
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.tag_file = dest.with_name(dest.name + ".part.tag")
        self.headers = {"Accept-Encoding": "identity", **headers}
        self.timeout = timeout
        self.shown = public_url(url)
        self.resume = resume

    def run(self, fresh: RetryPolicy, sleep: Callable[[float], None]) -> Path:
        policy = fresh
        while True:
            before = self._held()
            try:
                if self._attempt():
                    break
                continue  # the server refused the range: start over at once
            except ClientError as error:
                if self._held() > before:
                    policy = fresh  # bytes arrived: only a stall counts against the budget
                policy = policy.increment(error, idempotent=True)
                retrying.announce_wait(f"GET {self.shown}", error, policy)
                sleep(policy.delay)
        with open(self.part, "rb+") as written:
            os.fsync(written.fileno())  # on disk before it takes the final name
        os.replace(self.part, self.dest)
        self.tag_file.unlink(missing_ok=True)
        return self.dest

    def _held(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def _tag(self) -> str | None:
        try:
            return self.tag_file.read_text("utf-8").strip() or None
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.tag_file.unlink(missing_ok=True)

    def _attempt(self) -> bool:
        """One GET; True when the ``.part`` file holds the whole body, False to start over."""
        offset = self._held()
        tag = self._tag()
        headers = dict(self.headers)
        if offset and tag is not None and self.resume:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = tag
        elif offset:
            # Resume off, or no validator to prove the bytes held are of this file: start over.
            self._discard()
            offset = 0
        answer = self.transport.stream(self.url, headers=headers, timeout=self.timeout)
        try:
            if answer.status == 416:
                total = _parse_content_range(answer.headers.get(wire.CONTENT_RANGE))[2]
                if total is not None and total == offset:
                    return True  # everything was already here
                if not offset:  # refused without a Range asked: starting over would loop
                    raise ProtocolError(f"GET {self.shown}: the server answered 416 to a request for the whole file")
                self._discard()
                return False
            if answer.status >= 300:
                body = answer.read(64 * 1024, decode_content=True)
                raise _http_error(answer.status, body, self.shown, answer.headers.get(wire.RETRY_AFTER))
            if answer.status == 206:
                start, end, total = _parse_content_range(answer.headers.get(wire.CONTENT_RANGE))
                if start != offset:
                    raise ProtocolError(
                        f"GET {self.shown}: asked for the bytes from {offset}, the server sent from {start}"
                    )
                expected = None if end is None else end + 1
                mode = "ab"
            else:  # 200: the whole file (a server may ignore Range)
                offset, mode = 0, "wb"
                length = answer.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
            validator = answer.headers.get("ETag") or answer.headers.get("Last-Modified")
            if mode == "wb":
                if validator and not validator.startswith("W/"):
                    self.tag_file.write_text(validator, "utf-8")
                else:
                    self.tag_file.unlink(missing_ok=True)
            received = offset
            with open(self.part, mode) as out:
                try:
                    for piece in read_body(answer, self.shown, PIECE_SIZE):
                        out.write(piece)
                        received += len(piece)
                finally:
                    out.flush()
            if expected is not None and received != expected:
                raise ClientConnectionError(f"GET {self.shown}: connection closed after {received} of {expected} bytes")
            return True
        finally:
            answer.release_conn()


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of a ``Content-Range`` value; None where it says ``*`` or is absent."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None, None
    first, last, total = match.groups()
    return (
        None if first is None else int(first),
        None if last is None else int(last),
        None if total == "*" else int(total),
    )


def _http_error(status: int, body: bytes, shown: str, retry_after: str | None) -> ClientError:
    """The error a download's HTTP status means, saying which URL (without its signature) failed."""
    try:
        parsed = json.loads(body)
        detail = parsed.get(wire.DETAIL, parsed) if isinstance(parsed, dict) else parsed
    except ValueError:
        detail = body.decode("utf-8", "replace").strip()[:500]
    wait = float(retry_after) if retry_after and retry_after.isdigit() else None
    if 300 <= status < 400:
        return ProtocolError(f"GET {shown}: the server answered {status} without a usable Location")
    return error_for_status(status, f"GET {shown}: {detail}", wait)

"""Uploads of a file's bytes to presigned object-storage URLs (S3 and S3-compatible), verified part by part.

The backend hands out the URLs (one for a whole file, or one per part of a
multipart upload); this module sends the bytes. Each body is a ``RangeBody``
over the file: ``socket.sendfile`` pieces over plain HTTP, 256 KiB guarded
copies of mmap windows over TLS, never a part read into ``bytes``. Before a
part goes out, one pass in file order computes its MD5 (sent as
``Content-MD5``, so the storage refuses bytes that changed on the way) and,
from the same bytes, the whole file's SHA1 (what the backend's confirm
wants). The ETag the storage answers must be that MD5 where it is one.

Transient failures (connection errors, timeouts, 5xx, ``SlowDown``, S3's
``RequestTimeout``) are retried by the caller's ``RetryPolicy`` through
``engine.retry.call``; a part the storage found corrupt (``BadDigest``, or
an ETag that is not its MD5) and a refusal without a storage error code (a
gateway in front of the storage) are resent a bounded number of times.
Parts of one file travel in parallel. A multipart upload is recorded in the
journal as its parts land, so a later run sends only the missing parts, as
long as the URLs have not expired.

This module knows neither the backend's endpoints nor its JSON: that is
``synapse_sdk.clients.backend.bulk_upload``. It never logs a presigned URL's
query (its signature).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import engine
from engine import retry as retrying
from engine import wire
from engine.errors import (
    ClientError,
    ClientTimeoutError,
    FileChangedError,
    HTTPError,
    ProtocolError,
    ServerError,
    UploadIntegrityError,
    error_for_status,
)
from engine.hashing_service import HashingService
from engine.journal import Journal, PresignedEntry
from engine.retry import RetryPolicy
from engine.source import FileRange, MappedFile
from engine.transport import Response, Transport

__all__ = [
    "DEFAULT_RESENDS",
    "FileDigest",
    "GatewayRefusalError",
    "Part",
    "PartChecksumError",
    "PresignedUploader",
    "RangeBody",
    "digest_parts",
    "parse_storage_error",
    "plan_parts",
    "put_range",
    "redact",
    "storage_error",
]

log = logging.getLogger("synapse_sdk.upload")

#: Resends of a part the storage found corrupt or a gateway refused (synapse-sdk's ``max_upload_retries``).
DEFAULT_RESENDS = 2
#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000
#: A journaled multipart upload is resumed only if its URLs stay valid this long yet.
RESUME_MARGIN = timedelta(minutes=5)
#: Parts of one file hashed ahead of the ones on the wire.
PARTS_AHEAD = 4
#: Seconds between two saves of a multipart upload's journal entry.
SAVE_EVERY = 1.0

_ERROR_BYTES = 8192
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")


class PartChecksumError(UploadIntegrityError):
    """The storage holds other bytes than were sent (``BadDigest``, or an ETag that is not the part's MD5)."""


class GatewayRefusalError(HTTPError):
    """A 4xx without a storage error code: a proxy or gateway in front of the storage refused, often for a moment."""


@dataclass(frozen=True)
class Part:
    """Bytes ``[start, end)`` of a file, sent as part ``number`` to ``url``."""

    number: int
    start: int
    end: int
    url: str = ""

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FileDigest:
    """What the storage and the backend check of one file: its size, SHA1 and MD5 (hex)."""

    size: int
    sha1: str
    md5: str


def plan_parts(size: int, part_size: int, urls: Sequence[tuple[int, str]]) -> list[Part]:
    """The parts a file of ``size`` bytes is sent in: ``part_size`` bytes each, in the order of ``urls``.

    ``urls`` are the server's ``(part_number, presigned URL)``. It must give
    at least as many as the file needs (an empty file is one empty part);
    extra ones are left unused, as synapse-sdk leaves them.
    """
    if size < 0:
        raise ValueError(f"a file cannot have {size} bytes")
    if not isinstance(part_size, int) or part_size < 1:
        raise ProtocolError(f"the server gave a part size of {part_size!r}: it must be a positive number of bytes")
    needed = max(1, math.ceil(size / part_size))
    if needed > len(urls):
        raise ProtocolError(
            f"the server gave {len(urls)} part URL(s) for a file of {size} bytes in parts of {part_size}:"
            f" it needs {needed}"
        )
    numbers = [number for number, _ in urls[:needed]]
    if len(set(numbers)) != len(numbers) or not all(isinstance(n, int) and 1 <= n <= MAX_PARTS for n in numbers):
        raise ProtocolError(f"the server's part numbers must be distinct, from 1 to {MAX_PARTS}: {numbers[:20]}")
    return [
        Part(number, index * part_size, min(size, (index + 1) * part_size), url)
        for index, (number, url) in enumerate(urls[:needed])
    ]


class RangeBody:
    """Bytes ``[start, end)`` of an open file as a request body: sized, and sendable again.

    Over plain HTTP (``sendfile=True``) it yields ``FileRange`` pieces that
    the transport hands to ``socket.sendfile``: the kernel sends from the page
    cache. Otherwise (TLS) it yields guarded copies of mmap windows, 256 KiB
    at a time, each valid until the next is taken. A file that shrinks is a
    ``FileChangedError``, never fewer bytes than announced.
    """

    def __init__(self, source: MappedFile, start: int, end: int, *, sendfile: bool = False) -> None:
        if not 0 <= start <= end <= source.size:
            raise ValueError(f"range {start}-{end} is outside the {source.size}-byte file {source.path}")
        self.source, self.start, self.end, self.sendfile = source, start, end, sendfile

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[memoryview | FileRange]:
        pieces = self.source.ranges if self.sendfile else self.source.copies
        sent = 0
        for piece in pieces(self.start, self.end):
            sent += len(piece)
            yield piece
        if sent != len(self):
            raise FileChangedError(f"{self.source.path} gave {sent} bytes of the {len(self)} announced")


def digest_parts(
    source: MappedFile,
    parts: Sequence[Part],
    sha1: Any | None = None,
    twin: ModuleType = engine,
    hashing: HashingService | None = None,
) -> Iterator[tuple[Part, bytes]]:
    """``(part, its MD5)`` for each part, in order; ``sha1`` (a hashlib object) absorbs the same bytes.

    One pass: each 256 KiB slice is copied out of the mapping by the
    engine's guarded read (a file that shrank is ``FileChangedError``, not
    SIGBUS in hashlib) and fed, still in cache, to both digests. With
    ``hashing`` (shared by the files of a batch), the MD5 goes through the
    hashing service, side by side with the other files' in SIMD lanes.
    """
    for part in parts:
        md5 = (hashing.twin if hashing is not None else twin).Md5()
        for piece in source.copies(part.start, part.end):
            if hashing is not None:
                hashing.update([md5], piece)
            else:
                md5.update(piece)
            if sha1 is not None:
                sha1.update(piece)
        yield part, md5.digest()


def parse_storage_error(body: bytes) -> dict[str, str]:
    """``Code`` and ``Message`` of an S3-style XML error body (only those: others may carry credentials).

    Never raises: whatever the body is, the answer is what could be found.
    """
    text = bytes(body[:_ERROR_BYTES]).decode("utf-8", "replace")
    found = {}
    for name in ("Code", "Message"):
        match = re.search(rf"<{name}>([^<]{{0,300}})</{name}>", text)
        if match:
            found[name] = match.group(1).strip()
    return found


def redact(url: str) -> str:
    """``url`` without its query: a presigned URL's query is its signature."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def storage_error(answer: Response, url: str) -> ClientError:
    """The error an object storage's non-2xx answer means, for the retry policy to judge.

    ``RequestTimeout`` (the storage gave up reading a slow body) is a timeout
    and ``SlowDown`` a 503: both are retried. ``BadDigest`` means the bytes
    arrived changed: ``PartChecksumError``, resent. A 4xx without an error
    code comes from a gateway, not the storage: ``GatewayRefusalError``,
    resent too. Everything else (``AccessDenied``, an expired URL,
    ``SignatureDoesNotMatch``, ``NoSuchUpload``...) is final.
    """
    error = parse_storage_error(answer.data)
    code = error.get("Code", "")
    detail = f"{answer.status} {code or 'without an error code'} from {redact(url)}"
    if error.get("Message"):
        detail += f": {error['Message']}"
    if code == "RequestTimeout":
        return ClientTimeoutError(detail)
    if code == "BadDigest":
        return PartChecksumError(detail)
    if code == "SlowDown":
        return ServerError(503, detail)
    if 300 <= answer.status < 400:
        return ProtocolError(f"the storage redirected a PUT ({detail}); presigned URLs must name the bucket's endpoint")
    if 400 <= answer.status < 500 and not code and answer.status not in (401, 403, 404, 429):
        return GatewayRefusalError(answer.status, detail)
    return error_for_status(answer.status, detail, answer.retry_after)


def put_range(
    transport: Transport,
    url: str,
    source: MappedFile,
    start: int,
    end: int,
    md5: bytes,
    *,
    content_type: str | None = None,
    timeout: tuple[float, float] | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    resends: int = DEFAULT_RESENDS,
    check_etag: bool = True,
) -> str:
    """PUT bytes ``[start, end)`` of ``source`` to ``url`` with ``Content-MD5``; returns the storage's ETag.

    ``md5`` is those bytes' MD5. Transient failures are retried by
    ``retry``; a ``PartChecksumError`` or ``GatewayRefusalError`` is sent
    again up to ``resends`` times. With ``check_etag``, an ETag that looks
    like an MD5 (32 hex digits: not a multipart or KMS-encrypted object's)
    must be ``md5``.
    """
    expected = md5.hex()
    headers = {wire.CONTENT_MD5: base64.b64encode(md5).decode("ascii"), "Content-Length": str(end - start)}
    if content_type:
        # A URL signed for a content type works only with that header.
        headers["Content-Type"] = content_type
    body = RangeBody(source, start, end, sendfile=transport.can_sendfile(url))
    shown = redact(url)

    def attempt() -> str:
        try:
            answer = transport.request("PUT", url, headers=headers, body=body, timeout=timeout)
        except ClientError as error:
            raise _without_signature(error, url) from None
        if not 200 <= answer.status < 300:
            raise storage_error(answer, url)
        etag = str(answer.headers.get("ETag", "")).strip().strip('"')
        if check_etag and _MD5_ETAG.fullmatch(etag) and etag.lower() != expected:
            raise PartChecksumError(
                f"{shown} stored bytes with MD5 {etag.lower()}, the {end - start} sent hash to {expected}"
            )
        return etag or expected

    for sent in range(resends + 1):
        try:
            return retrying.call(
                attempt,
                retry or RetryPolicy(),
                what=f"PUT {shown}",
                sleep=sleep,
                passthrough=(PartChecksumError, GatewayRefusalError),
            )
        except (PartChecksumError, GatewayRefusalError) as error:
            if sent == resends:
                raise
            log.warning("PUT %s: %s; sending it again (%d of %d)", shown, error.detail, sent + 1, resends)
    raise AssertionError("unreachable")


class PresignedUploader:
    """Sends files to presigned URLs over one ``Transport``; safe to share between threads.

    ``journal`` (None: no resume) records multipart uploads as their parts
    land, under ``server`` (the backend's URL). ``part_threads`` parts travel
    at once across all files (each file also holds at most ``PARTS_AHEAD``
    parts hashed ahead).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        server: str,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        journal: Journal | None = None,
        resends: int = DEFAULT_RESENDS,
        part_threads: int = 8,
        check_etag: bool = True,
        twin: ModuleType = engine,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        hashing: HashingService | None = None,
    ) -> None:
        if resends < 0:
            raise ValueError(f"resends must not be negative, not {resends}")
        self.transport = transport
        self.server = "presigned " + server  # its own journal slots: never a chunked upload's
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        self.journal = journal
        self.resends = resends
        self.check_etag = check_etag
        self.twin = twin
        self.clock = clock
        #: Where the parts' MD5s are computed: shared SIMD lanes when several files hash at once.
        self.hashing = hashing
        self._parts = ThreadPoolExecutor(max(1, part_threads), thread_name_prefix="presigned-part")

    def close(self) -> None:
        self._parts.shutdown(wait=True)

    def __enter__(self) -> PresignedUploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one PUT -----------------------------------------------------------------

    def put_file(self, url: str, path: str | os.PathLike[str], content_type: str | None = None) -> FileDigest:
        """Send a whole file with one PUT; returns its digests once the storage holds exactly its bytes."""
        with MappedFile(path) as source:
            sha1 = hashlib.sha1()
            ((part, md5),) = digest_parts(source, [Part(1, 0, source.size, url)], sha1, self.twin, self.hashing)
            self._put(source, part, md5, content_type)
            source.check_unchanged()
            return FileDigest(source.size, sha1.hexdigest(), md5.hex())

    # -- multipart ---------------------------------------------------------------

    def resumable(self, path: str | os.PathLike[str]) -> PresignedEntry | None:
        """The journaled multipart upload of this very file (same identity), if its URLs are still good."""
        # A look first: most files (all those sent whole) never had an entry, and need no lock file.
        if self.journal is None or not self.journal.has_entry(self.server, path):
            return None
        slot = self.journal.slot(self.server, path)
        if slot is None:
            return None
        try:
            entry = slot.load()
            if not isinstance(entry, PresignedEntry):
                return None
            with MappedFile(path) as source:
                identity = source.identity
            if entry.identity != identity:
                log.warning("%s changed since its upload began: starting a fresh upload", path)
                slot.remove()
                return None
            if entry.expires_at is not None and _when(entry.expires_at) < self.clock() + RESUME_MARGIN:
                log.info("the part URLs of %s's unfinished upload have expired: starting a fresh upload", path)
                slot.remove()
                return None
            return entry
        except OSError:
            return None
        finally:
            slot.release()

    def forget(self, path: str | os.PathLike[str]) -> None:
        """Drop the journal entry of ``path`` (its upload was confirmed, or refused for good)."""
        if self.journal is None:
            return
        slot = self.journal.slot(self.server, path)
        if slot is not None:
            slot.remove()
            slot.release()

    def put_multipart(
        self,
        path: str | os.PathLike[str],
        *,
        file_key: str,
        upload_id: str,
        part_size: int,
        parts: Sequence[tuple[int, str]],
        expires_at: str | None = None,
        content_type: str | None = None,
        done: dict[str, str] | None = None,
    ) -> tuple[FileDigest, list[dict[str, Any]]]:
        """Send a file's parts, several at once; returns its digests and ``[{"part_number", "etag"}, ...]``.

        ``done`` (``{part_number: etag}``, from the journal) names parts
        already stored: they are hashed for the SHA1, not sent. The journal
        records every part as it lands. The storage does not get
        ``content_type`` per part: a multipart upload's type is set when it
        is created.
        """
        del content_type  # parts carry no Content-Type; kept for a symmetric call
        landed: dict[str, str] = dict(done or {})
        slot = None if self.journal is None else self.journal.slot(self.server, path)
        save_lock = threading.Lock()
        try:
            with MappedFile(path) as source:
                plan = plan_parts(source.size, part_size, parts)
                entry = PresignedEntry(
                    self.server,
                    os.path.abspath(path),
                    source.identity,
                    file_key,
                    upload_id,
                    part_size,
                    [[number, url] for number, url in parts],
                    expires_at,
                    landed,
                )
                if slot is not None:
                    slot.save(entry)

                saved = [time.monotonic(), len(landed)]  # when, and with how many parts

                def stored(part: Part, etag: str) -> None:
                    with save_lock:
                        landed[str(part.number)] = etag
                        # At most one save a second: an entry lists every part's URL (up to
                        # 10,000), and a crash costs only the parts since, sent again.
                        if slot is not None and time.monotonic() - saved[0] >= SAVE_EVERY:
                            slot.save(entry)
                            saved[:] = [time.monotonic(), len(landed)]

                sha1 = hashlib.sha1()
                try:
                    self._send_parts(source, plan, sha1, landed, stored)
                finally:
                    with save_lock:
                        if slot is not None and saved[1] != len(landed):
                            slot.save(entry)  # what landed before a failure is what the next run skips
                source.check_unchanged()
                digest = FileDigest(source.size, sha1.hexdigest(), "")
        finally:
            if slot is not None:
                slot.release()
        etags = [{"part_number": part.number, "etag": _quoted(landed[str(part.number)])} for part in plan]
        return digest, etags

    def _send_parts(
        self,
        source: MappedFile,
        plan: Sequence[Part],
        sha1: Any,
        landed: dict[str, str],
        stored: Callable[[Part, str], None],
    ) -> None:
        ahead = threading.BoundedSemaphore(PARTS_AHEAD)
        futures: list[Future[None]] = []
        failed = threading.Event()

        def send(part: Part, md5: bytes) -> None:
            try:
                stored(part, self._put(source, part, md5, None))
            except BaseException:
                failed.set()
                raise
            finally:
                ahead.release()

        try:
            for part, md5 in digest_parts(source, plan, sha1, self.twin, self.hashing):
                if str(part.number) in landed:
                    continue  # stored by an earlier run: only its bytes' SHA1 was needed
                ahead.acquire()
                if failed.is_set():
                    ahead.release()
                    break
                futures.append(self._parts.submit(send, part, md5))
        finally:
            errors = [future.exception() for future in futures]
        error = next((e for e in errors if e is not None), None)
        if error is not None:
            raise error

    def _put(self, source: MappedFile, part: Part, md5: bytes, content_type: str | None) -> str:
        return put_range(
            self.transport,
            part.url,
            source,
            part.start,
            part.end,
            md5,
            content_type=content_type,
            timeout=self.timeout,
            retry=self.retry,
            sleep=self.sleep,
            resends=self.resends,
            check_etag=self.check_etag,
        )


def _without_signature(error: ClientError, url: str) -> ClientError:
    """``error`` with ``url`` shown without its query: a transport's message names the URL it failed on."""
    shown = redact(url)
    if isinstance(error.detail, str):
        error.detail = error.detail.replace(url, shown)
    error.args = tuple(arg.replace(url, shown) if isinstance(arg, str) else arg for arg in error.args)
    # The underlying urllib3 error may name the URL too; it stays out of tracebacks and logs.
    error.__cause__ = None
    error.__suppress_context__ = True
    return error


def _quoted(etag: str) -> str:
    # S3's CompleteMultipartUpload takes the ETags as the PUTs answered them: quoted.
    return etag if etag.startswith('"') else f'"{etag}"'


def _when(text: str) -> datetime:
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return datetime.min.replace(tzinfo=timezone.utc)  # unreadable: treat as expired

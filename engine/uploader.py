"""Pipelined chunked upload of one file: hash chunk N+1 while chunk N is on the wire.

``ChunkedUploader`` runs the protocol machine (``engine.protocol``) against a
``Transport``: it sends what the machine asks for, retries what the policy
allows, and feeds every answer back. ``ChunkHasher`` computes, on a worker
thread, the whole file's running MD5 together with each chunk's own digests
(the one its header carries, and its xxh3 when the resume journal keeps it),
one chunk ahead of the sender. Bytes travel as mmap windows from the page
cache to the hasher and to the socket (over TLS as 256 KiB copies); no chunk
is ever copied into ``bytes``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import engine
from engine import Md5
from engine import retry as retrying
from engine.errors import (
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    FileChangedError,
    GoneError,
    NotFoundError,
    ProtocolError,
    UploadCancelled,
    UploadIntegrityError,
    ValidationError,
)
from engine.journal import Journal, JournalEntry, JournalSlot, PresignedEntry
from engine.multipart import MultipartBody
from engine.plan import DEFAULT_CHUNK_SIZE, Chunk, chunk_at
from engine.protocol import CheckState, ChunkedUploadProtocol, Done, Finalize, PutChunk, SendWhole
from engine.retry import RetryPolicy
from engine.source import ChunkDigest, MappedFile
from engine.transport import Response, Transport

__all__ = ["ChunkHasher", "ChunkedUploader"]

log = logging.getLogger("synapse_sdk.upload")

ProgressCallback = Callable[[int, int], None]

#: How each chunk is vouched for: ``Content-MD5`` (RFC 1864, the default, costs a
#: second MD5 lane), ``Content-XXH3`` (an extension of the reference server, far
#: cheaper), or nothing (the finalize MD5 still checks the whole file).
CHUNK_DIGESTS = ("md5", "xxh3", "none")

#: How often one chunk is re-sent after the server found its checksum wrong.
CHUNK_CHECKSUM_RETRIES = 2

#: Errors that mean a request went out and its answer never came.
_LOST = (ClientResponseIncompleteError, ClientTimeoutError)


class ChunkHasher:
    """Digests chunks one ahead of the sender, and tracks the whole file's MD5.

    The whole-file MD5 is kept as snapshots at chunk boundaries, so a server
    that re-aligns the upload to an earlier offset costs no re-hash from zero.
    """

    def __init__(
        self, source: MappedFile, twin: ModuleType = engine, *, chunk_md5: bool = True, chunk_xxh3: bool = True
    ) -> None:
        self._source = source
        self._twin = twin
        self._chunk_md5 = chunk_md5
        self._chunk_xxh3 = chunk_xxh3
        self._lock = threading.Lock()
        self._states: dict[int, Md5] = {0: twin.Md5()}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chunk-hasher")
        self._ahead: tuple[Chunk, Future[ChunkDigest]] | None = None

    def digest(self, chunk: Chunk, *, chunk_size: int) -> ChunkDigest:
        """The digests of ``chunk``; starts hashing the chunk after it."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == chunk:
            digest = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()
                _wait_quietly(ahead[1])
            digest = self._executor.submit(self._hash, chunk).result()
        if chunk.end < chunk.total:
            following = chunk_at(chunk.end, chunk.total, chunk_size)
            self._ahead = (following, self._executor.submit(self._hash, following))
        return digest

    def rehash(self, chunk: Chunk) -> ChunkDigest:
        """Hash ``chunk`` again from disk, e.g. after the server saw other bytes."""
        return self._executor.submit(self._hash, chunk).result()

    def md5_at(self, offset: int) -> Md5:
        """The whole file's MD5 state over bytes ``[0, offset)``."""
        with self._lock:
            known = max((k for k in self._states if k <= offset), default=0)
            # Snapshots below the server's offset are dropped; a fresh start needs none.
            running = self._states[known].copy() if known in self._states else self._twin.Md5()
        if known < offset:
            with self._source.reading():
                for window in self._source.windows(known, offset):
                    running.update(window)
            with self._lock:
                self._states[offset] = running.copy()
        return running

    def seed(self, offset: int, running: Md5) -> None:
        """Adopt a saved MD5 state over ``[0, offset)`` (a resumed upload's)."""
        with self._lock:
            self._states[offset] = running

    def forget_below(self, offset: int) -> None:
        """Drop snapshots the server can no longer ask us to return to."""
        with self._lock:
            keep = max(k for k in self._states if k <= offset)
            for k in [k for k in self._states if k < keep]:
                del self._states[k]

    def _hash(self, chunk: Chunk) -> ChunkDigest:
        running = self.md5_at(chunk.start)
        with self._source.reading():
            windows = self._source.windows(chunk.start, chunk.end)
            md5, xxh3 = self._twin.digest_windows(windows, running, self._chunk_md5, self._chunk_xxh3)
        digest = ChunkDigest(chunk.start, chunk.end, md5, xxh3)
        with self._lock:
            self._states[chunk.end] = running
        return digest

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
        self._executor.shutdown(wait=True)


def _wait_quietly(future: Future) -> None:
    # A discarded look-ahead may have failed; only the chunk we send matters.
    if not future.cancelled():
        future.exception()


class ChunkedUploader:
    """Uploads files over one ``Transport`` to a server's ``chunked_upload/`` endpoint."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        *,
        headers: Callable[[], Mapping[str, str]] = dict,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        twin: ModuleType = engine,
        journal: Journal | None = None,
        chunk_digest: str = "md5",
        query: Mapping[str, str] | None = None,
    ) -> None:
        chunk_at(0, 1, chunk_size)  # validates chunk_size
        if chunk_digest not in CHUNK_DIGESTS:
            raise ValueError(f"chunk_digest must be one of {', '.join(CHUNK_DIGESTS)}, not {chunk_digest!r}")
        self.chunk_digest = chunk_digest
        self.transport = transport
        self.collection_url = base_url.rstrip("/") + "/chunked_upload/"
        self.headers = headers
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.twin = twin
        self.journal = journal
        #: Query parameters every request carries (the client's ``default_params``, e.g. ``url_host``).
        self.query = dict(query or {})

    def upload(
        self,
        path: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
        *,
        url: str | None = None,
        cancel: threading.Event | None = None,
        on_url: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Upload one file; returns the server's final record.

        With ``url`` (an upload the server already holds part of), the upload
        continues from the server's offset instead of starting anew. With a
        journal, an upload of the same file that an earlier run left
        unfinished is resumed the same way. Setting ``cancel`` stops the
        upload before its next request with ``UploadCancelled``; the journal
        keeps it resumable. ``on_url(url)`` is told the upload's URL as soon
        as the server has created it (again if a fresh upload replaces it),
        so that another process can resume it with ``url=``.
        """
        with MappedFile(path) as source:
            # A one-chunk file has nothing to resume: spare it the journal's fsyncs.
            journaled = self.journal is not None and source.size > self.chunk_size
            slot = self.journal.slot(self.collection_url, source.path) if journaled else None
            try:
                return _Upload(self, source, on_progress, url, slot, cancel, on_url).run()
            finally:
                if slot is not None:
                    slot.release()


class _Upload:
    """One file's conversation with the server."""

    def __init__(
        self,
        uploader: ChunkedUploader,
        source: MappedFile,
        on_progress: ProgressCallback | None,
        url: str | None,
        slot: JournalSlot | None,
        cancel: threading.Event | None = None,
        on_url: Callable[[str], None] | None = None,
    ):
        self.up = uploader
        self.source = source
        self.on_progress = on_progress
        self.on_url = on_url
        self.announced_url = url
        self.filename = os.path.basename(source.path)
        self.slot = slot
        self.cancel = cancel
        # The journal entry being kept, and the one being resumed (until its prefix is checked).
        self.entry: JournalEntry | None = None
        self.resuming: JournalEntry | None = None
        if url is None and slot is not None:
            url = self._resumable_url(slot.load())
        self.restarted = False
        self.protocol = ChunkedUploadProtocol(source.size, uploader.chunk_size, url=url)
        # The hasher is the upload's critical path: it computes what a header
        # or the journal needs, no more. xxh3 costs it about 1 %: it hashes a
        # copy of each slice that MD5 just pulled into cache.
        self.hasher = ChunkHasher(
            source,
            uploader.twin,
            chunk_md5=uploader.chunk_digest == "md5",
            chunk_xxh3=uploader.chunk_digest == "xxh3" or slot is not None,
        )
        self.reported = 0
        self.idempotency_key = uuid.uuid4().hex
        # Lost answers are retried by asking the server; this bounds how often in a row.
        self.lost_answers = uploader.retry

    def run(self) -> dict[str, Any]:
        try:
            while True:
                action = self.protocol.next_action()
                if self.cancel is not None and self.cancel.is_set() and not isinstance(action, Done):
                    raise UploadCancelled(f"upload of {self.source.path} cancelled").with_upload(
                        self.protocol.url, self.protocol.offset
                    )
                if isinstance(action, Done):
                    record = self._verified(action.record)
                    if self.slot is not None:
                        self.slot.remove()
                    return record
                try:
                    self._perform(action)
                except (NotFoundError, GoneError) as error:
                    if self.resuming is not None:
                        self._start_fresh(f"the server no longer has the upload to resume ({error})")
                    elif isinstance(error, GoneError) and not self.restarted and self.protocol.url is not None:
                        self.restarted = True
                        self._start_fresh("the server expired the upload (410)")
                    else:
                        raise error.with_upload(self.protocol.url, self.protocol.offset) from error.__cause__
                except ClientError as error:
                    raise error.with_upload(self.protocol.url, self.protocol.offset) from error.__cause__
        finally:
            self.hasher.close()

    def _perform(self, action: PutChunk | SendWhole | Finalize | CheckState) -> None:
        if isinstance(action, PutChunk):
            self._put_chunk(action)
        elif isinstance(action, Finalize):
            md5 = self.hasher.md5_at(self.source.size).hexdigest()
            self.source.check_unchanged()
            answer = self._send("POST", action.url, form={"md5": md5}, lost_ok=True, signals=True)
            if answer is None:
                self.protocol.answer_lost()
            elif _expected_offset(answer) is not None:
                self.protocol.offset_mismatch(_expected_offset(answer))
            else:
                self.protocol.finalized(self._record(answer.raise_for_status()))
        elif isinstance(action, CheckState):
            answer = self._send("GET", action.url)
            self.protocol.state_received(self._record(answer))
            if self.resuming is not None:
                self._adopt_resumed()
        else:
            self._send_whole()

    def _put_chunk(self, action: PutChunk) -> None:
        chunk = action.chunk
        digest = self.hasher.digest(chunk, chunk_size=self.up.chunk_size)
        headers = {"Content-Range": chunk.content_range}
        if self.up.chunk_digest == "md5":
            headers["Content-MD5"] = digest.content_md5
        elif self.up.chunk_digest == "xxh3":
            headers["Content-XXH3"] = digest.xxh3_128.hex()
        if action.url is None:
            # A create whose answer is lost is sent again; the key lets the
            # server answer with the upload it already made instead of a twin.
            headers["Idempotency-Key"] = self.idempotency_key
        for attempt in range(CHUNK_CHECKSUM_RETRIES + 1):
            url = action.url or self.up.collection_url
            answer = self._send(
                "PUT",
                url,
                body=self._chunk_body(chunk, url),
                headers=headers,
                lost_ok=action.url is not None,
                signals=True,
            )
            if answer is None:  # the answer was lost: ask the server where it stands
                self.protocol.answer_lost()
                return
            if answer.status < 400:
                self.protocol.chunk_stored(self._record(answer))
                self.lost_answers = self.up.retry
                self._announce_url()
                self._journal(digest)
                self.hasher.forget_below(self.protocol.offset)
                self._progress(self.protocol.offset)
                return
            if _expected_offset(answer) is not None and action.url is not None:
                self.protocol.offset_mismatch(_expected_offset(answer))
                return
            if _says(answer.detail, "chunk checksum mismatch") and attempt < CHUNK_CHECKSUM_RETRIES:
                # The server saw other bytes than we hashed: the wire or the file.
                if self.hasher.rehash(chunk) != digest:
                    raise FileChangedError(f"{self.source.path} changed while it was being uploaded")
                continue
            answer.raise_for_status()
            raise ProtocolError(f"unexpected answer {answer.status} to a chunk: {answer.detail!r}")
        raise ProtocolError(f"the server rejected the checksum of bytes {chunk.start}-{chunk.end} repeatedly")

    def _announce_url(self) -> None:
        if self.on_url is not None and self.protocol.url != self.announced_url:
            self.announced_url = self.protocol.url
            self.on_url(self.protocol.url)

    def _resumable_url(self, entry: JournalEntry | PresignedEntry | None) -> str | None:
        if not isinstance(entry, JournalEntry):  # none, or a presigned upload's (another slot's kind)
            return None
        if entry.identity != self.source.identity:
            log.warning(
                "%s changed since its upload to %s began: starting a fresh upload", self.source.path, entry.server
            )
            self.slot.remove()
            return None
        log.info("resuming the upload of %s at %s", self.source.path, entry.url)
        self.resuming = entry
        return entry.url

    def _adopt_resumed(self) -> None:
        """Check the bytes the server holds are still ours; take the saved MD5 state."""
        entry, self.resuming = self.resuming, None
        offset = self.protocol.offset
        entry.chunks = [c for c in entry.chunks if c[1] <= offset]
        for start, end, xxh3 in entry.chunks:
            if self.source.xxh3_128(start, end).hex() != xxh3:
                self._start_fresh(f"bytes {start}-{end} changed since the upload began")
                return
        state = entry.md5_bytes()
        if state is not None and entry.md5_offset <= offset:
            # A state saved by another engine build is refused: the prefix is re-hashed instead.
            with contextlib.suppress(ValueError):
                self.hasher.seed(entry.md5_offset, self.up.twin.Md5.from_state(state))
        entry.offset = offset
        self.entry = entry
        self._progress(offset)

    def _start_fresh(self, reason: str) -> None:
        log.warning("%s: %s; starting a fresh upload", self.source.path, reason)
        if self.slot is not None:
            self.slot.remove()
        self.resuming = self.entry = None
        self.protocol = ChunkedUploadProtocol(self.source.size, self.up.chunk_size)
        self.idempotency_key = uuid.uuid4().hex

    def _journal(self, digest: ChunkDigest) -> None:
        """Record the acknowledged offset, so a later run can resume from it."""
        if self.slot is None:
            return
        offset = self.protocol.offset
        if self.entry is None or self.entry.url != self.protocol.url:
            self.entry = JournalEntry(
                server=self.up.collection_url,
                path=self.source.path,
                identity=self.source.identity,
                url=self.protocol.url,
                upload_id=self.protocol.upload_id,
                chunk_size=self.up.chunk_size,
            )
        entry = self.entry
        entry.offset = offset
        if digest.end <= offset:
            entry.chunks.append([digest.start, digest.end, digest.xxh3_128.hex()])
        state = self.hasher.md5_at(offset).state()
        if state is not None:
            entry.md5_state, entry.md5_offset = base64.b64encode(state).decode("ascii"), offset
        self.slot.save(entry)

    def _send_whole(self) -> None:
        md5 = self.hasher.md5_at(0).hexdigest()
        body = MultipartBody(
            {"filename": self.filename, "md5": md5},
            file_field="file",
            file_name=self.filename,
            file_length=0,
            file_parts=tuple,
        )
        try:
            answer = self._send("POST", self.up.collection_url, body=body)
        except ValidationError as error:
            # Plain drf-chunked-upload refuses empty files outright.
            raise ValidationError(
                error.status_code, f"the server refused {self.source.path}, an empty file: {error.detail}"
            ) from error
        self.protocol.finalized(self._record(answer))

    def _chunk_body(self, chunk: Chunk, url: str) -> MultipartBody:
        # Over plain HTTP the kernel sends straight from the page cache; TLS
        # encrypts in user space, from copies (a mapping that faults would kill it).
        parts = self.source.ranges if self.up.transport.can_sendfile(url) else self.source.copies
        return MultipartBody(
            {"filename": self.filename},
            file_field="file",
            file_name=self.filename,
            file_length=chunk.length,
            file_parts=lambda: parts(chunk.start, chunk.end),
        )

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: MultipartBody | None = None,
        form: dict[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        lost_ok: bool = False,
        signals: bool = False,
    ) -> Response | None:
        """Send with retries. Returns the answer, or ``None`` when it was lost and ``lost_ok``.

        With ``signals``, 400 answers come back to the caller: they may be
        protocol signals (``expected_offset``, a chunk checksum mismatch).
        A lost answer with ``lost_ok`` is not sent again: the caller asks the
        server where things stand. Lost answers in a row are bounded by a
        policy of their own, renewed when a chunk lands.
        """
        all_headers = {**self.up.headers(), **(headers or {})}
        payload: Any = body
        if body is not None:
            all_headers["Content-Type"] = body.content_type
            all_headers["Content-Length"] = str(len(body))
        elif form is not None:
            # As synapse-sdk sends a body without files: JSON.
            payload = json.dumps(form).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        what = f"{method} {url} ({self.filename})"
        if self.up.query:
            url += ("&" if "?" in url else "?") + urlencode(self.up.query)

        def attempt() -> Response:
            answer = self.up.transport.request(method, url, headers=all_headers, body=payload, timeout=self.up.timeout)
            return answer if signals and answer.status == 400 else answer.raise_for_status()

        try:
            return retrying.call(
                attempt, self.up.retry, what=what, sleep=self.up.sleep, passthrough=_LOST if lost_ok else ()
            )
        except _LOST as error:
            if not lost_ok:
                raise
            self.lost_answers = self.lost_answers.increment(error)
            retrying.announce_wait(what, error, self.lost_answers)
            self.up.sleep(self.lost_answers.delay)
            return None

    def _record(self, answer: Response) -> dict[str, Any]:
        try:
            record = answer.json()
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise ProtocolError(f"server answered {answer.status} without a JSON record: {answer.data[:200]!r}")
        return record

    def _progress(self, offset: int) -> None:
        # Re-alignment may move the offset back; progress never does.
        if offset > self.reported:
            self.reported = offset
            if self.on_progress is not None:
                self.on_progress(offset, self.source.size)

    def _verified(self, record: dict[str, Any]) -> dict[str, Any]:
        md5 = self.hasher.md5_at(self.source.size).hexdigest()
        checksum = record.get("checksum")
        if isinstance(checksum, str) and checksum.lower() != md5:
            raise UploadIntegrityError(
                f"server stored {self.source.path} with MD5 {checksum}, the file's is {md5}"
            ).with_upload(self.protocol.url, self.protocol.offset)
        size = record.get("size")
        if isinstance(size, int) and size != self.source.size:
            raise UploadIntegrityError(
                f"server stored {size} bytes of {self.source.path}, the file has {self.source.size}"
            ).with_upload(self.protocol.url, self.protocol.offset)
        self._progress(self.source.size)
        return record


def _expected_offset(answer: Response) -> Any:
    """The offset a 400 says the server holds (the re-alignment signal), or None."""
    detail = answer.detail if answer.status == 400 else None
    return detail.get("expected_offset") if isinstance(detail, dict) else None


def _says(detail: Any, message: str) -> bool:
    return isinstance(detail, dict) and str(detail.get("detail", "")).lower() == message

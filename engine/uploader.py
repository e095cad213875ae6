"""Pipelined chunked upload of one file: hash chunk N+1 while chunk N is on the wire.

``ChunkedUploader`` runs the protocol machine (``engine.protocol``) against a
``Transport`` in a short loop: hash what the next request needs
(``engine.hasher``), send the request the machine builds (retrying what the
policy allows, ``engine.retry``), feed the answer back. The machine knows the
wire; this module knows the file, the journal, progress and cancellation.
Bytes travel as mmap windows from the page cache to the hasher and to the
socket (over TLS as 256 KiB copies); no chunk is ever copied into ``bytes``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import engine
from engine import retry as retrying
from engine import wire
from engine.errors import (
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    GoneError,
    NotFoundError,
    UploadCancelled,
    UploadIntegrityError,
    ValidationError,
)
from engine.hasher import ChunkHasher
from engine.hashing_service import HashingService
from engine.journal import Journal, JournalEntry, JournalSlot, PresignedEntry
from engine.multipart import MultipartBody
from engine.plan import DEFAULT_CHUNK_SIZE, Chunk, chunk_at
from engine.protocol import (
    CHUNK_CHECKSUM_RETRIES,
    CHUNK_DIGESTS,
    CheckState,
    ChunkedUploadProtocol,
    Done,
    Event,
    Finalize,
    PutChunk,
    Request,
    Scatter,
    SendWhole,
)
from engine.retry import RetryPolicy
from engine.scatter import DEFAULT_PARALLEL_CHUNKS, ChunkScatter
from engine.source import ChunkDigest, MappedFile
from engine.transport import Response, Transport

__all__ = ["CHUNK_CHECKSUM_RETRIES", "CHUNK_DIGESTS", "ChunkHasher", "ChunkedUploader"]

log = logging.getLogger("synapse_sdk.upload")

ProgressCallback = Callable[[int, int], None]

#: Errors that mean a request went out and its answer never came.
_LOST = (ClientResponseIncompleteError, ClientTimeoutError)


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
        hashing: HashingService | None = None,
        send_whole: bool = True,
        parallel_chunks: int = DEFAULT_PARALLEL_CHUNKS,
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
        #: Shared by the uploads of a batch: their MD5s run side by side in SIMD lanes.
        self.hashing = hashing
        #: Whether a file of at most one chunk goes in one POST with its MD5 (one round trip, not two).
        self.send_whole = send_whole
        #: At most how many chunks of one file travel at once, where the server takes them out of order.
        self.parallel_chunks = parallel_chunks

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
            slot = self.journal.slot(self.collection_url, source.path) if self.journal and journaled else None
            try:
                return _Upload(self, source, on_progress, url, slot, cancel, on_url).run()
            finally:
                if slot is not None:
                    slot.release()


class _Upload:
    """One file's conversation with the server: hash, send, feed."""

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
        self.protocol = self._machine(url)
        # The hasher is the upload's critical path: it computes what a header
        # or the journal needs, no more. xxh3 costs it about 1 %: it hashes a
        # copy of each slice that MD5 just pulled into cache.
        self.hasher = ChunkHasher(
            source,
            uploader.twin,
            chunk_md5=uploader.chunk_digest == "md5",
            chunk_xxh3=uploader.chunk_digest == "xxh3" or slot is not None,
            hashing=uploader.hashing,
        )
        self.digest: ChunkDigest | None = None  # of the chunk last sent
        self.scatter: ChunkScatter | None = None  # while chunks travel several at once
        self.reported = 0

    def _machine(self, url: str | None) -> ChunkedUploadProtocol:
        return ChunkedUploadProtocol(
            self.source.size,
            self.up.chunk_size,
            url=url,
            collection_url=self.up.collection_url,
            filename=self.filename,
            chunk_digest=self.up.chunk_digest,
            retry=self.up.retry,
            send_whole=self.up.send_whole,
            parallel_chunks=self.up.parallel_chunks,
        )

    def run(self) -> dict[str, Any]:
        try:
            while True:
                action = self.protocol.next_action()
                if isinstance(action, Done):
                    return self._finish(action.record)
                self._check_cancel()
                try:
                    if isinstance(action, Scatter):
                        self._scatter(action)
                    else:
                        self._exchange(self._request(action))
                except (NotFoundError, GoneError) as error:
                    if self.resuming is not None:
                        self._start_fresh(f"the server no longer has the upload to resume ({error})")
                    elif isinstance(error, GoneError) and not self.restarted and self.protocol.url is not None:
                        self.restarted = True
                        self._start_fresh("the server expired the upload (410)")
                    else:
                        raise error.with_upload(*self._where()) from error.__cause__
                except ValidationError as error:
                    if isinstance(action, SendWhole) and not self.source.size:  # drf-chunked-upload refuses them
                        detail = f"the server refused {self.source.path}, an empty file: {error.detail}"
                        refused = ValidationError(error.status_code, detail)
                        raise refused.with_upload(*self._where()) from error
                    raise error.with_upload(*self._where()) from error.__cause__
                except ClientError as error:
                    raise error.with_upload(*self._where()) from error.__cause__
        finally:
            self.hasher.close()

    def _where(self) -> tuple[str | None, int]:
        """The upload's URL and the offset the server holds, for errors to carry (a scatter knows it best)."""
        offset = self.protocol.offset if self.scatter is None else self.scatter.offset
        return self.protocol.url, offset

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise UploadCancelled(f"upload of {self.source.path} cancelled").with_upload(*self._where())

    def _request(self, action: PutChunk | SendWhole | Finalize | CheckState) -> Request:
        """Hash what the machine's next request needs, and have it build the request."""
        if isinstance(action, PutChunk):
            # While the create is out, the chunks that may follow it at once are hashed too.
            ahead = self.protocol.parallel_chunks if self.protocol.url is None else 1
            self.digest = self.hasher.digest(action.chunk, chunk_size=self.up.chunk_size, ahead=ahead)
            return self.protocol.next_request(chunk_digest=self.digest)
        if isinstance(action, (Finalize, SendWhole)):
            md5 = self.hasher.md5_at(self.source.size).hexdigest()
            self.source.check_unchanged()
            return self.protocol.next_request(file_md5=md5)
        return self.protocol.next_request()

    def _exchange(self, request: Request) -> None:
        """Send ``request``, retrying as the policy allows, and feed the machine what came of it."""
        try:
            answer = self._send(request)
        except _LOST as error:
            if not request.lost_is_event:
                raise
            self.protocol.answer_lost(error)  # raises it once lost answers in a row are too many
            self._wait_after_loss(request, error, self.protocol.lost_answers)
            return
        event = self.protocol.receive(answer.status, answer.detail, answer.headers)
        if event is Event.CHUNK_STORED:
            assert self.digest is not None  # a stored chunk was hashed before it was sent
            self._stored(self.digest, self.protocol.offset)
        elif event is Event.STATE_RECEIVED and self.resuming is not None:
            self._adopt_resumed()

    def _scatter(self, action: Scatter) -> None:
        """Send the chunks the server lacks ``action.width`` at a time, each on its own pooled connection.

        This thread hashes them in file order (the whole file's MD5 runs on)
        while up to ``width`` are on the wire; answers are fed to the scatter
        as they come. It ends with the machine told what the server holds.
        """
        scatter = self.scatter = ChunkScatter(self.protocol, action.width)
        sending: dict[Future[Response], tuple[Chunk, ChunkDigest]] = {}
        senders = ThreadPoolExecutor(action.width, thread_name_prefix="chunk-sender")
        try:
            while not scatter.finished:
                self._check_cancel()
                while (chunk := scatter.next_chunk()) is not None:
                    digest = self.hasher.digest(chunk, chunk_size=self.up.chunk_size, ahead=scatter.width)
                    sending[senders.submit(self._send, scatter.request(chunk, digest))] = (chunk, digest)
                check = scatter.check_request()
                if check is not None:
                    self.up.sleep(scatter.lost_answers.delay)
                    scatter.state_received(self._send(check).raise_for_status().detail)
                    continue
                done, _ = wait(sending, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk, digest = sending.pop(future)
                    try:
                        answer = future.result()
                    except _LOST as error:
                        scatter.answer_lost(chunk, error)  # raises it once lost answers in a row are too many
                        retrying.announce_wait(f"PUT {scatter.url} ({self.filename})", error, scatter.lost_answers)
                        continue
                    if scatter.receive(chunk, answer.status, answer.detail, answer.headers) is Event.CHUNK_STORED:
                        self._stored(digest, scatter.offset, scatter.bytes_held)
        finally:
            # On an error, the chunks in flight end first (their answers no longer matter).
            for future in sending:
                future.cancel()
            senders.shutdown(wait=True)
        self.scatter = None
        if scatter.refused_at is not None:
            log.info("%s: the server stores no chunk out of order; sending one at a time", self.filename)
            self.protocol.scatter_refused(scatter.refused_at)
        else:
            assert scatter.record is not None  # every byte is held: a chunk was stored
            self.protocol.chunk_stored(scatter.record)

    def _stored(self, digest: ChunkDigest, offset: int, done: int | None = None) -> None:
        """A chunk landed: the server holds ``[0, offset)`` (and ``done`` bytes in all)."""
        self._announce_url()
        self._journal(digest, offset)
        self.hasher.forget_below(offset)
        self._progress(offset if done is None else done)

    def _wait_after_loss(self, request: Request, error: ClientError, policy: RetryPolicy) -> None:
        retrying.announce_wait(f"{request.method} {request.url} ({self.filename})", error, policy)
        self.up.sleep(policy.delay)

    def _send(self, request: Request) -> Response:
        """Send ``request``, retrying as the policy allows; a lost answer the machine handles is raised."""
        url = request.url
        if self.up.query:
            url += ("&" if "?" in url else "?") + urlencode(self.up.query)
        headers = {**self.up.headers(), **dict(request.headers)}
        body: Any = None
        if request.file is not None:
            # Over plain HTTP the kernel sends straight from the page cache; TLS
            # encrypts in user space, from copies (a mapping that faults would kill it).
            parts = self.source.ranges if self.up.transport.can_sendfile(request.url) else self.source.copies
            start, end = request.file.offset, request.file.offset + request.file.length
            body = MultipartBody(
                dict(request.fields),
                file_field=wire.FILE,
                file_name=self.filename,
                file_length=request.file.length,
                file_parts=lambda: parts(start, end),
            )
            headers["Content-Type"], headers["Content-Length"] = body.content_type, str(len(body))
        elif request.fields:
            # As synapse-sdk sends a body without files: JSON.
            body = json.dumps(dict(request.fields)).encode("utf-8")
            headers["Content-Type"] = "application/json"
        what = f"{request.method} {request.url} ({self.filename})"

        def attempt() -> Any:
            answer = self.up.transport.request(request.method, url, headers=headers, body=body, timeout=self.up.timeout)
            return answer if answer.status in request.signals else answer.raise_for_status()

        passthrough = _LOST if request.lost_is_event else ()
        policy = self.up.retry
        answer: Response = retrying.call(attempt, policy, what=what, sleep=self.up.sleep, passthrough=passthrough)
        return answer

    def _announce_url(self) -> None:
        url = self.protocol.url
        if self.on_url is not None and url is not None and url != self.announced_url:
            self.announced_url = url
            self.on_url(url)

    def _resumable_url(self, entry: JournalEntry | PresignedEntry | None) -> str | None:
        if not isinstance(entry, JournalEntry):  # none, or a presigned upload's (another slot's kind)
            return None
        if entry.identity != self.source.identity:
            log.warning(
                "%s changed since its upload to %s began: starting a fresh upload", self.source.path, entry.server
            )
            if self.slot is not None:
                self.slot.remove()
            return None
        log.info("resuming the upload of %s at %s", self.source.path, entry.url)
        self.resuming = entry
        return entry.url

    def _adopt_resumed(self) -> None:
        """Check the bytes the server holds are still ours; take the saved MD5 state."""
        entry, self.resuming = self.resuming, None
        assert entry is not None  # called only while resuming
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
        self.protocol = self._machine(None)  # with a new Idempotency-Key

    def _journal(self, digest: ChunkDigest, offset: int) -> None:
        """Record the stored chunk and the acknowledged offset, so a later run can resume from it."""
        if self.slot is None:
            return
        assert self.protocol.url is not None  # a chunk was stored: the server named the upload
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
        if digest.xxh3_128 is not None:  # journaled uploads hash xxh3; a resume checks those below its offset
            entry.chunks.append([digest.start, digest.end, digest.xxh3_128.hex()])
        state = self.hasher.md5_at(offset).state()
        if state is not None:
            entry.md5_state, entry.md5_offset = base64.b64encode(state).decode("ascii"), offset
        self.slot.save(entry)

    def _progress(self, offset: int) -> None:
        # Re-alignment may move the offset back; progress never does.
        if offset > self.reported:
            self.reported = offset
            if self.on_progress is not None:
                self.on_progress(offset, self.source.size)

    def _finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Check the server's final record against the file; the journal forgets the upload."""
        md5 = self.hasher.md5_at(self.source.size).hexdigest()
        checksum = record.get(wire.CHECKSUM)
        if isinstance(checksum, str) and checksum.lower() != md5:
            raise UploadIntegrityError(
                f"server stored {self.source.path} with MD5 {checksum}, the file's is {md5}"
            ).with_upload(*self._where())
        size = record.get(wire.SIZE)
        if isinstance(size, int) and size != self.source.size:
            raise UploadIntegrityError(
                f"server stored {size} bytes of {self.source.path}, the file has {self.source.size}"
            ).with_upload(*self._where())
        self._progress(self.source.size)
        if self.slot is not None:
            self.slot.remove()
        return record

"""The chunked-upload endpoint's handlers: create, append, state, finalize, a whole file in one POST.

``UploadHandlers`` makes the checks of PROTOCOL.md's section 2 in their
order, with the idempotent create (``Idempotency-Key``), and streams each
chunk from the request body into the store, checking its size and announced
digests before it is committed. A chunk refused on the way is dropped, and
an upload that an error stopped before its first commit is discarded.
``store_whole`` and ``complete_upload`` serve the catalog's handlers too (a
data file or model posted whole, or naming a complete upload).

It never reads a whole chunk into memory, and never reveals another owner's
upload (``404``, never ``403``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone

from engine import wire
from synapse_sdk.server.catalog_input import parse_id
from synapse_sdk.server.records import upload_record
from synapse_sdk.server.request import Form, HttpError, Request, read_fields, receive
from synapse_sdk.server.storage import ChunkWriter, RangeConflict, Upload, UploadStore
from synapse_sdk.server.upload_input import chunk_checks, content_range, filename_field, idempotency_key, md5_field

__all__ = ["UploadHandlers"]


class UploadHandlers:
    """The handlers of ``chunked_upload/`` over ``store``; ``max_upload_size`` caps a file's bytes (None: no cap).

    With ``parallel_chunks`` above 1, a chunk marked ``Synapse-Out-Of-Order``
    is stored where its ``Content-Range`` says, beside up to that many others
    of its upload (docs/PROTOCOL.md, "Extension: parallel chunks").
    """

    def __init__(self, store: UploadStore, max_upload_size: int | None = None, parallel_chunks: int = 1) -> None:
        self._store = store
        self._max_upload_size = max_upload_size
        self._parallel_chunks = parallel_chunks

    # -- handlers, one per route and method ---------------------------------

    def create(self, request: Request) -> tuple[int, dict[str, object]]:
        start, end, total = content_range(request.environ)
        checks = chunk_checks(request.environ)
        key = idempotency_key(request.environ)
        if start != 0:
            raise HttpError(400, f"the first chunk must start at byte 0, not {start}")
        self.check_limit(total)
        with self._store.creating(request.owner, key):
            existing = None if key is None else self._store.find_key(request.owner, key)
            if existing is not None:
                # A repeated create (its first answer was lost): store nothing,
                # answer the upload it made; the client continues from its offset.
                if existing.total != total:
                    detail = f"{wire.IDEMPOTENCY_KEY} was used for an upload of {existing.total} bytes, not {total}"
                    raise HttpError(422, detail)
                return 200, upload_record(request.environ, existing)
            size = end - start + 1
            self._store.check_quota(request.owner, size)
            reserved = self._store.reserve(request.owner, total, key)
            upload = None
            try:
                with self._store.append(reserved, limit=size, verify=checks) as chunk:
                    form = receive(request, chunk)
                    _check_chunk(form, chunk, size, checks)
                    upload = self._store.commit(chunk, filename=filename_field(form.fields.get(wire.FILENAME)))
            finally:
                if upload is None:
                    self._store.discard(reserved)
        return 200, upload_record(request.environ, upload)

    def append(self, request: Request) -> tuple[int, dict[str, object]]:
        start, end, total = content_range(request.environ)
        checks = chunk_checks(request.environ)
        if self._parallel_chunks > 1 and request.environ.get(wire.environ_key(wire.OUT_OF_ORDER)) == "1":
            return self._place(request, start, end, total, checks)
        upload = self.find(request)
        with self._store.locked(upload.id):
            upload = self.find(request)  # it may have moved while this request waited
            if total != upload.total:
                raise HttpError(400, f"Content-Range total {total} differs from the upload's {upload.total}")
            self.check_limit(total)
            _check_open(upload)
            if start != upload.offset:
                # The resume signal: the client re-aligns to expected_offset.
                mismatch = {wire.EXPECTED_OFFSET: upload.offset, wire.PROVIDED_OFFSET: start}
                raise HttpError(400, wire.OFFSETS_DO_NOT_MATCH, **mismatch)
            size = end - start + 1
            self._store.check_quota(upload.owner, size)
            with _conflicts_are_409(upload), self._store.append(upload, limit=size, verify=checks) as chunk:
                form = receive(request, chunk)
                _check_chunk(form, chunk, size, checks)
                upload = self._store.commit(chunk)
        return 200, upload_record(request.environ, upload)

    def _place(
        self, request: Request, start: int, end: int, total: int, checks: Mapping[str, bytes]
    ) -> tuple[int, dict[str, object]]:
        """Store a chunk at ``start``, past the offset if need be; it is received without the upload's lock."""
        size = end - start + 1
        with self._store.locked(self.find(request).id):
            upload = self.find(request)  # it may have moved while this request waited
            if total != upload.total:
                raise HttpError(400, f"Content-Range total {total} differs from the upload's {upload.total}")
            self.check_limit(total)
            _check_open(upload)
            self._store.check_quota(upload.owner, size)
            with _conflicts_are_409(upload):
                placed = self._store.place(upload, start, size, checks, self._parallel_chunks)
        with placed as chunk:
            form = receive(request, chunk)
            _check_chunk(form, chunk, size, checks)
            with self._store.locked(upload.id):
                upload = self._store.commit_placed(chunk)
        return 200, upload_record(request.environ, upload)

    def state(self, request: Request) -> tuple[int, dict[str, object]]:
        return 200, upload_record(request.environ, self.find(request))

    def stats(self, request: Request) -> tuple[int, dict[str, object]]:
        """The store's counters (``/_stats/``)."""
        return 200, dict(self._store.stats())

    def finalize(self, request: Request) -> tuple[int, dict[str, object]]:
        md5 = md5_field(read_fields(request))
        upload = self.find(request)
        with self._store.locked(upload.id):
            upload = self.find(request)
            _check_open(upload)
            if upload.offset != upload.total:
                raise HttpError(
                    400,
                    f"the upload is incomplete: {upload.offset} of {upload.total} bytes received",
                    **{wire.EXPECTED_OFFSET: upload.offset},
                )
            stored = self._store.running_md5(upload)
            if stored is not None and stored != md5:  # None: a discarding store hashed nothing
                raise HttpError(400, wire.CHECKSUM_DOES_NOT_MATCH)
            upload = self._store.complete(upload, md5)
        return 200, upload_record(request.environ, upload)

    def upload_whole(self, request: Request) -> tuple[int, dict[str, object]]:
        key = idempotency_key(request.environ)
        with self._store.creating(request.owner, key):
            existing = None if key is None else self._store.find_key(request.owner, key)
            if existing is not None:
                # A repeated POST (its first answer was lost): store nothing, answer the upload it made.
                request.body.drain()
                return 200, upload_record(request.environ, existing)
            _, upload = self.store_whole(request, _check_whole_upload, key)
        if upload is None:
            raise HttpError(400, "No file was submitted (the form needs a 'file' part)")
        return 200, upload_record(request.environ, upload)

    # -- shared with the catalog's handlers -----------------------------------

    def find(self, request: Request) -> Upload:
        """The owner's upload the URL names, or a 404."""
        assert request.id is not None
        upload = self._store.get(request.id, request.owner)
        if upload is None:
            raise HttpError(404, "Not found.")
        return upload

    def store_whole(
        self, request: Request, check: Callable[[Form, str], None], key: str | None = None
    ) -> tuple[Form, Upload | None]:
        """Stream a multipart body's ``file`` part into a new upload and complete it.

        ``check(form, md5)`` may refuse the file (raise) before it is kept.
        Without a ``file`` part nothing is kept and the upload is None. The
        upload keeps the ``Idempotency-Key`` ``key``, if any.
        """
        reserved = self._store.reserve(request.owner, 0, key)
        upload = None
        # Held so that no request can touch the upload between commit and complete.
        with self._store.locked(reserved.id):
            try:
                with self._store.append(reserved, limit=self._max_upload_size) as chunk:
                    form = receive(request, chunk)
                    if form.file is None:
                        return form, None
                    self.check_limit(chunk.received)
                    # A store that hashes nothing (discard) takes the client's word for it.
                    claimed = str(form.fields.get(wire.MD5, "")).lower()
                    md5 = claimed if chunk.running is None else chunk.running.hexdigest()
                    check(form, md5)
                    filename = form.fields.get(wire.FILENAME) or form.file.filename or ""
                    upload = self._store.commit(chunk, filename=filename_field(filename), total=chunk.size)
            finally:
                if upload is None:
                    self._store.discard(reserved)
            return form, self._store.complete(upload, md5)

    def complete_upload(self, request: Request, value: object) -> Upload:
        """The owner's complete upload named by a ``chunked_upload`` field, or a 400."""
        upload_id = parse_id("chunked_upload", value)
        upload = self._store.get(upload_id, request.owner)
        if upload is None:
            raise HttpError(400, f"chunked upload {upload_id} not found or not complete")
        if not upload.complete:
            detail = (
                f"chunked upload {upload_id} not found or not complete: {upload.offset} of {upload.total} bytes"
                " received and not finalized"
            )
            raise HttpError(400, detail)
        return upload

    def check_limit(self, total: int) -> None:
        """A 413 if a file of ``total`` bytes is over the server's limit."""
        if self._max_upload_size is not None and total > self._max_upload_size:
            raise HttpError(413, f"Size of file exceeds the limit ({self._max_upload_size} bytes)")


def _check_whole_upload(form: Form, md5: str) -> None:
    if md5_field(form.fields) != md5:
        raise HttpError(400, wire.CHECKSUM_DOES_NOT_MATCH)


def _check_chunk(form: Form, chunk: ChunkWriter, size: int, checks: Mapping[str, bytes]) -> None:
    if form.file is None:
        raise HttpError(400, "No chunk file was submitted (the form needs a 'file' part)")
    if chunk.received != size:
        raise HttpError(400, f"File size doesn't match headers: file size is {chunk.received}, not {size}")
    computed = {"md5": chunk.chunk_md5, "xxh3": chunk.chunk_xxh3}
    # A digest not computed (a discarding store) is not checked.
    if any(computed[kind] is not None and computed[kind].digest() != digest for kind, digest in checks.items()):
        raise HttpError(400, wire.CHUNK_CHECKSUM_MISMATCH)


@contextmanager
def _conflicts_are_409(upload: Upload) -> Iterator[None]:
    """A chunk whose bytes the upload holds: ``409`` (the client asks the state); that it is receiving: ``429``.

    Bytes being received are busy until that request ends (a client that
    gave up on it ends it only when the server's read times out): the
    client sends again after ``Retry-After``. Nothing is stored either way.
    """
    try:
        yield
    except RangeConflict as conflict:
        if conflict.busy:
            raise HttpError(429, str(conflict), [(wire.RETRY_AFTER, "1")]) from None
        raise HttpError(409, str(conflict), **{wire.OFFSET: upload.offset}) from None


def _check_open(upload: Upload) -> None:
    if upload.expired(datetime.now(timezone.utc)):
        raise HttpError(410, "Upload has expired")
    if upload.complete:
        raise HttpError(400, 'Upload has already been marked as "complete"')

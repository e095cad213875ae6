"""The reference server's WSGI application: the chunked-upload protocol of PROTOCOL.md.

Routing, authentication, per-token rate limits, the checks of the
protocol's section 2 in their order, the idempotent-create extension, the
``/_stats/`` counters, the routes around the upload (data files,
collections, units, models, tasks: "Around the upload" in PROTOCOL.md), and
JSON answers. Upload records and bytes go through ``store``, the records
around them through ``catalog``; request bodies go through the streaming
``multipart`` parser block by block.

It must never read a whole chunk into memory, never answer 500 to a malformed
request (every bad input gets a 4xx whose ``detail`` says what was wrong), and
never reveal another owner's upload or record (``404``, never ``403``).
"""

from __future__ import annotations

import base64
import errno
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode

from engine import wire
from synapse_sdk.server.catalog import (
    Catalog,
    Collection,
    DataFile,
    DataUnit,
    Invalid,
    Model,
    Task,
    check_depth,
    parse_checksums,
    parse_collection,
    parse_id,
    parse_model,
    parse_tasks,
    parse_units,
)
from synapse_sdk.server.limits import RateLimiter
from synapse_sdk.server.media import MEDIA_PREFIX, MediaFiles, MediaSigner
from synapse_sdk.server.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_options_header,
)
from synapse_sdk.server.presigned import PresignedApi, PresignError, S3Config
from synapse_sdk.server.storage import ChunkWriter, Owner, Upload, UploadStore

__all__ = ["BLOCK_SIZE", "HttpError", "UploadApp"]

# Bytes read from the socket per step: large enough that per-block Python
# work is noise next to hashing and writing, small enough to stay in cache.
BLOCK_SIZE: Final = 1 << 20
# Text fields (filename, md5) are short; bodies that are not a chunk are small.
# A filename may use all of it: it is only ever stored in SQLite, never on disk.
MAX_FIELD_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 64
MAX_FORM_BYTES: Final = 1 << 20

_ROUTE: Final = re.compile(rf"/{wire.COLLECTION}(?:/([^/]+))?/?")
_STATS_ROUTE: Final = re.compile(r"/_stats/?")
_CATALOG_ROUTE: Final = re.compile(r"/(data_files|data_collections|data_units|models|tasks)(?:/([^/]+))?/?")
_NOUNS: Final = {
    "data_files": "data file",
    "data_collections": "data collection",
    "data_units": "data unit",
    "models": "model",
    "tasks": "task",
}
# 18 digits keep every number inside SQLite's 64-bit integers.
_UPLOAD_ID: Final = re.compile(r"[0-9]{1,18}")
# The extension's key is opaque to the server: any printable ASCII.
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,200}")
_HEX_MD5: Final = re.compile(r"[0-9a-fA-F]{32}")
_HEX_XXH3: Final = _HEX_MD5  # xxh3-128 is 16 bytes too

Header = tuple[str, str]
StartResponse = Callable[[str, list[Header]], Any]
# A JSON answer: an object, or a list (the created data units and tasks).
Payload = dict[str, object] | list[object]
Handler = Callable[["_Request"], tuple[int, Payload]]
_Record = TypeVar("_Record")


class HttpError(Exception):
    """An answer other than 200: ``status``, a JSON body with ``detail`` (and extras)."""

    def __init__(self, status: int, detail: str, headers: Iterable[Header] = (), **extra: object) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, object] = {wire.DETAIL: detail, **extra}
        self.headers = list(headers)


class _Body:
    """The request body, read once, block by block, never past its length."""

    def __init__(self, environ: Mapping[str, Any], block_size: int) -> None:
        self._stream = environ["wsgi.input"]
        self._block_size = block_size
        self._buffer: bytearray | None = None
        if environ.get("wsgi.input_terminated"):
            self._remaining: int | None = None  # the server ends the stream (chunked encoding)
        else:
            length = environ.get("CONTENT_LENGTH") or "0"
            self._remaining = int(length) if length.isdigit() else 0

    def blocks(self) -> Iterator[tuple[bytes | bytearray, int]]:
        """``(data, count)`` pairs: ``data[:count]`` is the next block, valid until the next one."""
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None and self._buffer is None:
            self._buffer = bytearray(self._block_size)
        while self._remaining is None or self._remaining > 0:
            want = self._block_size if self._remaining is None else min(self._block_size, self._remaining)
            if self._buffer is not None:
                # Refill one buffer instead of allocating a block per read.
                data: bytes | bytearray = self._buffer
                count = readinto(memoryview(self._buffer)[:want]) or 0
            else:
                data = self._stream.read(want)
                count = len(data)
            if not count:
                self._remaining = 0
                return
            if self._remaining is not None:
                self._remaining -= count
            yield data, count

    def drain(self) -> None:
        """Read and drop what is left, so the client (still sending) gets the answer."""
        try:
            for _ in self.blocks():
                pass
        except OSError:
            pass  # the client is gone; there is nothing left to read for


@dataclass(frozen=True, slots=True)
class _Request:
    environ: Mapping[str, Any]
    body: _Body
    owner: Owner
    id: int | None  # the id in the URL: an upload's, or a record's of the route's kind


@dataclass(slots=True)
class _Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: PartStart | None = None


class UploadApp:
    """WSGI application serving ``/chunked_upload/`` from ``store``.

    ``tokens`` maps access tokens to user names; ``max_upload_size`` caps a
    file's ``total`` in bytes (None: no cap); ``rate_limiter`` (None: no
    limit) is asked once per authenticated request, keyed by its token.
    """

    def __init__(
        self,
        store: UploadStore,
        tokens: Mapping[str, str],
        max_upload_size: int | None = None,
        block_size: int = BLOCK_SIZE,
        rate_limiter: RateLimiter | None = None,
        media_signer: MediaSigner | None = None,
        s3: S3Config | None = None,
    ) -> None:
        self._store = store
        self._tokens = dict(tokens)
        self._max_upload_size = max_upload_size
        self._block_size = block_size
        self._rate_limiter = rate_limiter
        self._catalog = Catalog(store)  # creates its tables when missing
        # Files of models and data units are handed out as signed, expiring URLs (media.py).
        self._signer = media_signer or MediaSigner()
        self._media = MediaFiles(self._signer, lambda upload_id: store.completed_path(upload_id))
        # Per kind of record: the handlers of its list URL and of an item's URL.
        self._catalog_routes: dict[str, tuple[dict[str, Handler], dict[str, Handler]]] = {
            "data_files": ({"POST": self._create_data_file}, {"GET": self._get_data_file}),
            "data_collections": (
                {"GET": self._list_collections, "POST": self._create_collection},
                {"GET": self._get_collection},
            ),
            "data_units": (
                {"GET": self._list_data_units, "POST": self._create_data_units},
                {"GET": self._get_data_unit},
            ),
            "models": ({"GET": self._list_models, "POST": self._create_model}, {"GET": self._get_model}),
            "tasks": ({"POST": self._create_tasks}, {"GET": self._get_task}),
        }
        # Presigned uploads to object storage (``s3`` None: storages/ lists none, the rest is 404).
        presigned = PresignedApi(
            store,
            self._catalog,
            s3,
            read_json=self._read_json,
            owner_of=lambda r: r.owner,
            max_upload_size=max_upload_size,
        )
        self._presigned_routes = presigned.routes()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(MEDIA_PREFIX):
            return self._media(environ, start_response)  # signed URLs: no token, bytes not JSON
        body = _Body(environ, self._block_size)
        headers: list[Header] = []
        payload: Payload
        try:
            status, payload = self._dispatch(environ, body)
        except HttpError as error:
            status, payload, headers = error.status, error.body, error.headers
        except Invalid as error:  # a record's content, refused by catalog
            status, payload = 400, {"detail": str(error)}
        except PresignError as error:
            status, payload = error.status, {"detail": error.detail}
        except OSError as error:
            # The chunk was truncated away on the way out; the client may retry later.
            if error.errno == errno.EDQUOT:  # the user's quota here, or the file system's
                status, payload = 507, {"detail": "storage quota exceeded"}
            elif error.errno == errno.ENOSPC:
                status, payload = 507, {"detail": "storage full"}
            else:
                raise
        # Answer only once the body is read: a client still sending would see a
        # reset instead of the answer. cheroot would drain it too, but in one
        # read of the whole remainder, i.e. a whole chunk in memory.
        body.drain()
        data = json.dumps(payload).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
        )
        # cheroot sends whatever is returned, and a body after a HEAD answer
        # would be read as the next answer on a kept-alive connection.
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    def _dispatch(self, environ: Mapping[str, Any], body: _Body) -> tuple[int, Payload]:
        owner = self._authenticate(environ)
        path = environ.get("PATH_INFO", "")
        route = _ROUTE.fullmatch(path)
        raw_id = None if route is None else route.group(1)
        noun = "upload"
        handlers: Mapping[str, Handler]
        if route is not None and raw_id is None:
            handlers = {"PUT": self._create, "POST": self._upload_whole}
        elif route is not None:
            handlers = {"GET": self._state, "PUT": self._append, "POST": self._finalize}
        elif _STATS_ROUTE.fullmatch(path):
            handlers = {"GET": self._stats}
        elif (catalog := _CATALOG_ROUTE.fullmatch(path)) is not None:
            kind, raw_id = catalog.groups()
            noun = _NOUNS[kind]
            if kind == "data_files" and raw_id == "verify_checksums":
                handlers, raw_id = {"POST": self._verify_checksums}, None
            else:
                handlers = self._catalog_routes[kind][raw_id is not None]
        elif (presigned := self._presigned_routes.get(path.strip("/"))) is not None:
            handlers = presigned
        else:
            raise HttpError(404, "Not found.")
        method = environ.get("REQUEST_METHOD", "GET")
        handler = handlers.get(method)
        if handler is None:
            raise HttpError(405, f'Method "{method}" not allowed.', [("Allow", ", ".join(handlers))])
        if raw_id is not None and not _UPLOAD_ID.fullmatch(raw_id):
            raise HttpError(400, f"malformed {noun} id {raw_id[:40]!r}: expected a decimal number of 1 to 18 digits")
        return handler(_Request(environ, body, owner, None if raw_id is None else int(raw_id)))

    def _authenticate(self, environ: Mapping[str, Any]) -> Owner:
        challenge = [("WWW-Authenticate", "Token")]
        # The first token header present decides; a bad primary token is not
        # rescued by a legacy one.
        for header in ("HTTP_SYNAPSE_ACCESS_TOKEN", "HTTP_AUTHORIZATION"):
            value = environ.get(header)
            if value is not None:
                token = _token(value) or ""
                user = self._tokens.get(token)
                if user is None:
                    raise HttpError(401, "Invalid token.", challenge)
                break
        else:
            raise HttpError(401, "Authentication credentials were not provided.", challenge)
        if self._rate_limiter is not None:
            wait = self._rate_limiter.acquire(token)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                detail = f"Request was throttled. Expected available in {retry_after} seconds."
                raise HttpError(429, detail, [(wire.RETRY_AFTER, str(retry_after))])
        tenant = environ.get("HTTP_SYNAPSE_TENANT")
        if tenant is None:
            return Owner(user)
        code = _token(tenant)
        if code is None:
            raise HttpError(400, "malformed Synapse-Tenant header: expected 'Token <tenant code>'")
        return Owner(user, code)

    # -- handlers, one per route and method ---------------------------------

    def _create(self, request: _Request) -> tuple[int, dict[str, object]]:
        start, end, total = _content_range(request.environ)
        checks = _chunk_checks(request.environ)
        key = _idempotency_key(request.environ)
        if start != 0:
            raise HttpError(400, f"the first chunk must start at byte 0, not {start}")
        self._check_limit(total)
        with self._store.creating(request.owner, key):
            existing = None if key is None else self._store.find_key(request.owner, key)
            if existing is not None:
                # A repeated create (its first answer was lost): store nothing,
                # answer the upload it made; the client continues from its offset.
                if existing.total != total:
                    detail = f"{wire.IDEMPOTENCY_KEY} was used for an upload of {existing.total} bytes, not {total}"
                    raise HttpError(422, detail)
                return 200, self._record(request, existing)
            size = end - start + 1
            self._store.check_quota(request.owner, size)
            reserved = self._store.reserve(request.owner, total, key)
            upload = None
            try:
                with self._store.append(reserved, limit=size, verify=checks) as chunk:
                    form = self._receive(request, chunk)
                    _check_chunk(form, chunk, size, checks)
                    upload = self._store.commit(chunk, filename=_filename(form.fields.get(wire.FILENAME)))
            finally:
                if upload is None:
                    self._store.discard(reserved)
        return 200, self._record(request, upload)

    def _append(self, request: _Request) -> tuple[int, dict[str, object]]:
        start, end, total = _content_range(request.environ)
        checks = _chunk_checks(request.environ)
        upload = self._find(request)
        with self._store.locked(upload.id):
            upload = self._find(request)  # it may have moved while this request waited
            if total != upload.total:
                raise HttpError(400, f"Content-Range total {total} differs from the upload's {upload.total}")
            self._check_limit(total)
            _check_open(upload)
            if start != upload.offset:
                # The resume signal: the client re-aligns to expected_offset.
                mismatch = {wire.EXPECTED_OFFSET: upload.offset, wire.PROVIDED_OFFSET: start}
                raise HttpError(400, wire.OFFSETS_DO_NOT_MATCH, **mismatch)
            size = end - start + 1
            self._store.check_quota(upload.owner, size)
            with self._store.append(upload, limit=size, verify=checks) as chunk:
                form = self._receive(request, chunk)
                _check_chunk(form, chunk, size, checks)
                upload = self._store.commit(chunk)
        return 200, self._record(request, upload)

    def _state(self, request: _Request) -> tuple[int, dict[str, object]]:
        return 200, self._record(request, self._find(request))

    def _stats(self, request: _Request) -> tuple[int, dict[str, object]]:
        return 200, dict(self._store.stats())

    def _finalize(self, request: _Request) -> tuple[int, dict[str, object]]:
        md5 = _md5_field(self._read_fields(request))
        upload = self._find(request)
        with self._store.locked(upload.id):
            upload = self._find(request)
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
        return 200, self._record(request, upload)

    def _upload_whole(self, request: _Request) -> tuple[int, dict[str, object]]:
        key = _idempotency_key(request.environ)
        with self._store.creating(request.owner, key):
            existing = None if key is None else self._store.find_key(request.owner, key)
            if existing is not None:
                # A repeated POST (its first answer was lost): store nothing, answer the upload it made.
                request.body.drain()
                return 200, self._record(request, existing)
            _, upload = self._store_whole(request, _check_whole_upload, key)
        if upload is None:
            raise HttpError(400, "No file was submitted (the form needs a 'file' part)")
        return 200, self._record(request, upload)

    # -- handlers around the upload (catalog) -----------------------------------

    def _create_data_file(self, request: _Request) -> tuple[int, Payload]:
        kind, _ = parse_options_header(request.environ.get("CONTENT_TYPE", ""))
        if kind == "multipart/form-data":
            # A small file posted whole is stored as a complete upload of its own.
            form, upload = self._store_whole(request, _check_whole_data_file)
            fields: Mapping[str, object] = form.fields
        else:
            upload, fields = None, self._read_fields(request)
        if upload is None:
            if "chunked_upload" not in fields:
                detail = "give 'chunked_upload' (the id of a complete chunked upload) or a multipart 'file' part"
                raise HttpError(400, detail)
            upload = self._complete_upload(request, fields["chunked_upload"])
        return 201, _data_file_record(self._catalog.add_data_file(request.owner, upload))

    def _get_data_file(self, request: _Request) -> tuple[int, Payload]:
        return 200, _data_file_record(_found(self._catalog.data_file(request.owner, _item(request))))

    def _verify_checksums(self, request: _Request) -> tuple[int, Payload]:
        checksums = parse_checksums(self._read_json(request))
        held = self._catalog.held_checksums(request.owner, {checksum.lower() for checksum in checksums})
        return 200, {
            "checksums": [checksum for checksum in checksums if checksum.lower() in held],
            "missing": [checksum for checksum in checksums if checksum.lower() not in held],
        }

    def _list_collections(self, request: _Request) -> tuple[int, Payload]:
        expand = _expanded(request.environ)
        results: list[object] = [_collection_record(each, expand) for each in self._catalog.collections(request.owner)]
        return 200, {"count": len(results), "results": results}

    def _get_collection(self, request: _Request) -> tuple[int, Payload]:
        collection = _found(self._catalog.collection(request.owner, _item(request)))
        return 200, _collection_record(collection, _expanded(request.environ))

    def _create_collection(self, request: _Request) -> tuple[int, Payload]:
        name, specs = parse_collection(self._read_json(request))
        return 201, _collection_record(self._catalog.add_collection(request.owner, name, specs), expand=True)

    def _create_data_units(self, request: _Request) -> tuple[int, Payload]:
        units = self._catalog.add_data_units(request.owner, parse_units(self._read_json(request)))
        return 201, self._with_urls(request, units)

    def _get_data_unit(self, request: _Request) -> tuple[int, Payload]:
        unit = _found(self._catalog.data_unit(request.owner, _item(request)))
        return 200, self._with_urls(request, [unit])[0]

    def _list_data_units(self, request: _Request) -> tuple[int, Payload]:
        page, size, query = _paging(request.environ)
        collection = query.get("data_collection")
        if collection is not None and not _UPLOAD_ID.fullmatch(collection):
            raise HttpError(400, f"data_collection must be a collection id (a decimal number), not {collection[:40]!r}")
        number = None if collection is None else int(collection)
        count, units = self._catalog.data_units(request.owner, (page - 1) * size, size, number)
        return 200, _page(request.environ, page, size, count, self._with_urls(request, units))

    def _with_urls(self, request: _Request, units: list[DataUnit]) -> list[object]:
        """The units' records, each file with a signed ``url`` to its bytes."""
        checksums = [entry["checksum"] for unit in units for entry in unit.files.values()]
        uploads = self._catalog.uploads_by_checksum(request.owner, checksums)
        base = _base_url(request.environ)
        records: list[object] = []
        for unit in units:
            record = _unit_record(unit)
            record["files"] = {
                name: {**entry, "url": self._signer.url(base, uploads[entry["checksum"]], str(entry.get("path", name)))}
                if entry["checksum"] in uploads
                else entry
                for name, entry in unit.files.items()
            }
            records.append(record)
        return records

    def _create_model(self, request: _Request) -> tuple[int, Payload]:
        fields = self._read_fields(request)
        check_depth(fields)  # the fields are echoed in every answer about the model
        name, upload_id, kept = parse_model(fields)
        upload = self._complete_upload(request, upload_id)
        return 201, self._model_record(request, self._catalog.add_model(request.owner, name, upload, kept))

    def _get_model(self, request: _Request) -> tuple[int, Payload]:
        return 200, self._model_record(request, _found(self._catalog.model(request.owner, _item(request))))

    def _list_models(self, request: _Request) -> tuple[int, Payload]:
        page, size, _ = _paging(request.environ)
        count = self._catalog.model_count(request.owner)
        models = self._catalog.models(request.owner, (page - 1) * size, size)
        return 200, _page(request.environ, page, size, count, [self._model_record(request, m) for m in models])

    def _model_record(self, request: _Request, model: Model) -> dict[str, object]:
        """The model's record, its ``file`` a signed URL to the bytes (as a backend hands out)."""
        upload = self._store.get(model.upload_id, request.owner)
        filename = upload.filename if upload is not None and upload.filename else model.name
        return {**_model_record(model), "file": self._signer.url(_base_url(request.environ), model.upload_id, filename)}

    def _create_tasks(self, request: _Request) -> tuple[int, Payload]:
        project, unit_ids = parse_tasks(self._read_json(request))
        return 201, [_task_record(task) for task in self._catalog.add_tasks(request.owner, project, unit_ids)]

    def _get_task(self, request: _Request) -> tuple[int, Payload]:
        return 200, _task_record(_found(self._catalog.task(request.owner, _item(request))))

    # -- helpers -------------------------------------------------------------

    def _find(self, request: _Request) -> Upload:
        assert request.id is not None
        upload = self._store.get(request.id, request.owner)
        if upload is None:
            raise HttpError(404, "Not found.")
        return upload

    def _store_whole(
        self, request: _Request, check: Callable[[_Form, str], None], key: str | None = None
    ) -> tuple[_Form, Upload | None]:
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
                    form = self._receive(request, chunk)
                    if form.file is None:
                        return form, None
                    self._check_limit(chunk.received)
                    # A store that hashes nothing (discard) takes the client's word for it.
                    claimed = str(form.fields.get(wire.MD5, "")).lower()
                    md5 = claimed if chunk.running is None else chunk.running.hexdigest()
                    check(form, md5)
                    filename = form.fields.get(wire.FILENAME) or form.file.filename or ""
                    upload = self._store.commit(chunk, filename=_filename(filename), total=chunk.size)
            finally:
                if upload is None:
                    self._store.discard(reserved)
            return form, self._store.complete(upload, md5)

    def _complete_upload(self, request: _Request, value: object) -> Upload:
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

    def _check_limit(self, total: int) -> None:
        if self._max_upload_size is not None and total > self._max_upload_size:
            raise HttpError(413, f"Size of file exceeds the limit ({self._max_upload_size} bytes)")

    def _receive(self, request: _Request, chunk: ChunkWriter | None) -> _Form:
        """Stream a multipart body: the ``file`` part into ``chunk``, text fields into the form."""
        form = _Form()
        name = ""
        text: bytearray | None = None  # the text field being read, if any
        sink: Callable[[memoryview], None] | None = None  # where the file part's bytes go
        try:
            parser = MultipartParser(boundary_from_content_type(request.environ.get("CONTENT_TYPE", "")))
            for data, count in request.body.blocks():
                for event in parser.feed(data, count):
                    match event:
                        case PartData(data=view):
                            if sink is not None:
                                sink(view)
                            elif text is not None:
                                if len(text) + len(view) > MAX_FIELD_BYTES:
                                    raise HttpError(400, f"field {name[:80]!r} is over {MAX_FIELD_BYTES} bytes")
                                text += view
                        case PartStart(name=wire.FILE):
                            if form.file is not None:
                                raise HttpError(400, "the form has more than one 'file' part")
                            form.file = event
                            sink = None if chunk is None else chunk.write
                        case PartStart():
                            if len(form.fields) >= MAX_FIELDS:
                                raise HttpError(400, f"the form has more than {MAX_FIELDS} fields")
                            name, text = event.name, bytearray()
                        case PartEnd():
                            if text is not None:
                                form.fields[name] = _decode_field(name, text)
                            text, sink = None, None
            parser.close()
            if chunk is not None:
                chunk.settle()  # its digests are final from here on
        except MultipartError as error:
            raise HttpError(400, f"malformed multipart/form-data body: {error}") from None
        return form

    def _read_fields(self, request: _Request) -> dict[str, object]:
        """The fields of a small form body: multipart, urlencoded or a JSON object."""
        kind, _ = parse_options_header(request.environ.get("CONTENT_TYPE", ""))
        if kind == "multipart/form-data":
            return dict(self._receive(request, None).fields)
        if kind not in ("", "application/x-www-form-urlencoded", "application/json"):
            raise HttpError(415, f'Unsupported media type "{kind}" in request.')
        raw = self._read_small(request)
        if kind == "application/json":
            value = _parse_json(raw)
            if not isinstance(value, dict):
                raise HttpError(400, "the JSON body must be an object")
            return value
        return dict(parse_qsl(_decode_field("body", raw), keep_blank_values=True))

    def _read_json(self, request: _Request) -> object:
        """A small JSON body (object or list), not nested past ``catalog.MAX_JSON_DEPTH``."""
        kind, _ = parse_options_header(request.environ.get("CONTENT_TYPE", ""))
        if kind != "application/json":
            raise HttpError(415, f'Unsupported media type "{kind}" in request: send JSON (application/json).')
        value = _parse_json(self._read_small(request))
        check_depth(value)
        return value

    def _read_small(self, request: _Request) -> bytearray:
        raw = bytearray()
        for data, count in request.body.blocks():
            if len(raw) + count > MAX_FORM_BYTES:
                raise HttpError(413, f"a form or JSON body is limited to {MAX_FORM_BYTES} bytes")
            raw += memoryview(data)[:count]
        return raw

    def _record(self, request: _Request, upload: Upload) -> dict[str, object]:
        record: dict[str, object] = {
            wire.ID: upload.id,
            wire.URL: f"{_base_url(request.environ)}/{wire.COLLECTION}/{upload.id}/",
            wire.OFFSET: upload.offset,
            wire.FILENAME: upload.filename,
            "status": upload.status,
            "created_at": _timestamp(upload.created_at),
            wire.COMPLETED_AT: _timestamp(upload.completed_at),
            "expires_at": _timestamp(upload.expires_at),
        }
        if upload.complete:
            record.update(file=str(upload.path), checksum=upload.checksum, size=upload.total)
        return record


def _check_whole_upload(form: _Form, md5: str) -> None:
    if _md5_field(form.fields) != md5:
        raise HttpError(400, wire.CHECKSUM_DOES_NOT_MATCH)


def _check_whole_data_file(form: _Form, md5: str) -> None:
    if "chunked_upload" in form.fields:
        raise HttpError(400, "give either a 'file' part or a 'chunked_upload' field, not both")
    # The md5 field is optional here; given, it is checked.
    if form.fields.get(wire.MD5) and _md5_field(form.fields) != md5:
        raise HttpError(400, wire.CHECKSUM_DOES_NOT_MATCH)


def _parse_json(raw: bytes | bytearray) -> object:
    try:
        # NaN, Infinity and overflowing numbers are not JSON: answers echo values.
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite_float)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise HttpError(400, "malformed JSON body") from None


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _item(request: _Request) -> int:
    assert request.id is not None
    return request.id


def _found(record: _Record | None) -> _Record:
    if record is None:
        raise HttpError(404, "Not found.")
    return record


def _expanded(environ: Mapping[str, Any]) -> bool:
    """Whether ``?expand=`` (comma-separated, repeatable) names ``file_specifications``."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return any("file_specifications" in value.split(",") for key, value in query if key == "expand")


def _data_file_record(data_file: DataFile) -> dict[str, object]:
    return {
        "id": data_file.id,
        "file": str(data_file.path),
        "checksum": data_file.checksum,
        "size": data_file.size,
        "created_at": _timestamp(data_file.created_at),
    }


def _collection_record(collection: Collection, expand: bool) -> dict[str, object]:
    specs = collection.file_specifications
    return {
        "id": collection.id,
        "name": collection.name,
        "file_specifications": [
            {"name": spec.name, "is_required": spec.is_required, "file_type": spec.file_type} if expand else spec.name
            for spec in specs
        ],
        "created_at": _timestamp(collection.created_at),
    }


def _unit_record(unit: DataUnit) -> dict[str, object]:
    return {
        "id": unit.id,
        "data_collection": unit.data_collection,
        "files": unit.files,
        "meta": unit.meta,
        "groups": unit.groups,
        "created_at": _timestamp(unit.created_at),
    }


#: Page sizes of the paginated lists: the default, and the most a request may ask for.
PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000


def _paging(environ: Mapping[str, Any]) -> tuple[int, int, dict[str, str]]:
    """``?page=`` (from 1) and ``?page_size=`` of a list request, and its whole query."""
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    page_text, size_text = query.get("page", "1"), query.get("page_size", str(PAGE_SIZE))
    if not page_text.isdigit() or not 1 <= int(page_text) <= 10**9:
        raise HttpError(400, f"page must be a page number from 1, not {page_text[:40]!r}")
    if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
        raise HttpError(400, f"page_size must be a number from 1 to {MAX_PAGE_SIZE}, not {size_text[:40]!r}")
    return int(page_text), int(size_text), query


def _page(environ: Mapping[str, Any], page: int, size: int, count: int, results: list[object]) -> dict[str, object]:
    """One page as Django REST framework's page-number pagination answers it: count, next, previous, results."""
    last = max(1, math.ceil(count / size))
    if page > last:
        raise HttpError(404, "Invalid page.")
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    here = _base_url(environ) + environ.get("PATH_INFO", "")

    def link(number: int) -> str:
        rest = [(key, value) for key, value in query if key != "page"]
        return f"{here}?{urlencode([*rest, ('page', str(number))])}"

    return {
        "count": count,
        "next": link(page + 1) if page < last else None,
        "previous": link(page - 1) if page > 1 else None,
        "results": results,
    }


def _model_record(model: Model) -> dict[str, object]:
    return {
        "id": model.id,
        "name": model.name,
        **model.fields,
        "file": str(model.path),
        "checksum": model.checksum,
        "size": model.size,
        "created_at": _timestamp(model.created_at),
    }


def _task_record(task: Task) -> dict[str, object]:
    return {"id": task.id, "project": task.project, "data_unit": task.data_unit}


def _token(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "token" and token else None


def _content_range(environ: Mapping[str, Any]) -> tuple[int, int, int]:
    parsed = wire.parse_content_range(environ.get(wire.environ_key(wire.CONTENT_RANGE), ""))
    if parsed is None:
        raise HttpError(400, wire.BAD_HEADERS)
    start, end, total = parsed
    if start > end:
        raise HttpError(400, f"Content-Range start {start} is after its end {end}")
    if end >= total:
        raise HttpError(400, f"Content-Range end {end} is past the file's last byte ({total - 1})")
    return start, end, total


def _chunk_checks(environ: Mapping[str, Any]) -> dict[str, bytes]:
    """The digests a chunk PUT announces: ``Content-MD5`` (RFC 1864) and/or ``Content-XXH3`` (extension)."""
    checks = {}
    md5 = environ.get(wire.environ_key(wire.CONTENT_MD5))
    if md5 is not None:
        try:
            checks["md5"] = base64.b64decode(md5.strip(), validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            checks["md5"] = b""
        if len(checks["md5"]) != 16:
            raise HttpError(400, "malformed Content-MD5 header: expected base64 of the chunk's 16-byte MD5")
    xxh3 = environ.get(wire.environ_key(wire.CONTENT_XXH3))
    if xxh3 is not None:
        if not _HEX_XXH3.fullmatch(xxh3.strip()):
            raise HttpError(400, "malformed Content-XXH3 header: expected the chunk's xxh3-128 as 32 hex digits")
        checks["xxh3"] = bytes.fromhex(xxh3.strip())
    return checks


def _check_chunk(form: _Form, chunk: ChunkWriter, size: int, checks: Mapping[str, bytes]) -> None:
    if form.file is None:
        raise HttpError(400, "No chunk file was submitted (the form needs a 'file' part)")
    if chunk.received != size:
        raise HttpError(400, f"File size doesn't match headers: file size is {chunk.received}, not {size}")
    computed = {"md5": chunk.chunk_md5, "xxh3": chunk.chunk_xxh3}
    # A digest not computed (a discarding store) is not checked.
    if any(computed[kind] is not None and computed[kind].digest() != digest for kind, digest in checks.items()):
        raise HttpError(400, wire.CHUNK_CHECKSUM_MISMATCH)


def _check_open(upload: Upload) -> None:
    if upload.expired(datetime.now(timezone.utc)):
        raise HttpError(410, "Upload has expired")
    if upload.complete:
        raise HttpError(400, 'Upload has already been marked as "complete"')


def _filename(value: str | None) -> str:
    # Any text is a valid name (``../``, NUL, control characters): it is kept
    # in SQLite and echoed in JSON, never used as a path.
    if value is None:
        raise HttpError(400, "the form needs a 'filename' field (the file's base name)")
    return value


def _idempotency_key(environ: Mapping[str, Any]) -> str | None:
    value = environ.get(wire.environ_key(wire.IDEMPOTENCY_KEY))
    if value is None:
        return None
    value = value.strip()
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise HttpError(400, "malformed Idempotency-Key header: expected 1 to 200 printable ASCII characters")
    return value


def _md5_field(fields: Mapping[str, object]) -> str:
    value = fields.get(wire.MD5)
    if value is None or value == "":
        raise HttpError(400, "Checksum of type 'md5' is required")
    if not isinstance(value, str) or not _HEX_MD5.fullmatch(value):
        raise HttpError(400, "md5 must be the file's MD5 as 32 hexadecimal digits")
    return value.lower()


def _decode_field(name: str, raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, f"{name!r} is not UTF-8 text") from None


def _base_url(environ: Mapping[str, Any]) -> str:
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    return f"{environ['wsgi.url_scheme']}://{host}{environ.get('SCRIPT_NAME', '')}"


def _timestamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

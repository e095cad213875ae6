"""The reference server's WSGI application: the routing table, dispatch, and JSON answers.

``UploadApp`` authenticates each request (``auth``), finds its route and
method, checks the id in its URL, and hands it to a handler:
``chunked_upload/`` (PROTOCOL.md) to ``upload_handlers``, the routes around
the upload (data files, collections, units, models, tasks) to
``catalog_handlers``, the presigned endpoints to ``presigned``, signed
``/media/`` URLs to ``media``. It turns what a handler raises into an
answer: an ``HttpError`` as it says, a catalog's ``Invalid`` as 400, a full
disk or quota as 507. Only then, with the request body read to its end,
does it answer in JSON.

It must never answer 500 to a malformed request (every bad input gets a 4xx
whose ``detail`` says what was wrong), and never reveal another owner's
upload or record (``404``, never ``403``).
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from engine import wire
from synapse_sdk.server.auth import Authenticator
from synapse_sdk.server.catalog import Catalog
from synapse_sdk.server.catalog_handlers import CatalogHandlers
from synapse_sdk.server.catalog_input import Invalid
from synapse_sdk.server.limits import RateLimiter
from synapse_sdk.server.media import MEDIA_PREFIX, MediaFiles, MediaSigner
from synapse_sdk.server.presigned import PresignedApi, PresignError, S3Config
from synapse_sdk.server.request import (
    BLOCK_SIZE,
    DECIMAL_ID,
    Body,
    Handler,
    Header,
    HttpError,
    Payload,
    Request,
    read_json,
)
from synapse_sdk.server.storage import UploadStore
from synapse_sdk.server.upload_handlers import UploadHandlers

# BLOCK_SIZE and HttpError live in ``request``; they are named here too, where they always were.
__all__ = ["BLOCK_SIZE", "HttpError", "UploadApp"]

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

StartResponse = Callable[[str, list[Header]], Any]


class UploadApp:
    """WSGI application serving ``/chunked_upload/`` from ``store``.

    ``tokens`` maps access tokens to user names; ``max_upload_size`` caps a
    file's ``total`` in bytes (None: no cap); ``rate_limiter`` (None: no
    limit) is asked once per authenticated request, keyed by its token.
    ``parallel_chunks`` above 1 takes that many chunks of one upload at once,
    out of order, and says so on every ``chunked_upload/`` answer.
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
        parallel_chunks: int = 1,
    ) -> None:
        self._auth = Authenticator(tokens, rate_limiter)
        # The capability rides on every answer of the upload routes: the client learns it from the create's.
        self._upload_headers = [(wire.PARALLEL_CHUNKS, str(parallel_chunks))] if parallel_chunks > 1 else []
        self._block_size = block_size
        catalog = Catalog(store)  # creates its tables when missing
        # Files of models and data units are handed out as signed, expiring URLs (media.py).
        signer = media_signer or MediaSigner()
        self._media = MediaFiles(signer, lambda upload_id: store.completed_path(upload_id))
        uploads = UploadHandlers(store, max_upload_size, parallel_chunks)
        self._upload_routes: tuple[dict[str, Handler], dict[str, Handler]] = (
            {"PUT": uploads.create, "POST": uploads.upload_whole},
            {"GET": uploads.state, "PUT": uploads.append, "POST": uploads.finalize},
        )
        self._stats_routes: dict[str, Handler] = {"GET": uploads.stats}
        catalog_handlers = CatalogHandlers(store, catalog, signer, uploads)
        self._verify_checksums: dict[str, Handler] = {"POST": catalog_handlers.verify_checksums}
        # Per kind of record: the handlers of its list URL and of an item's URL.
        self._catalog_routes = catalog_handlers.routes()
        # Presigned uploads to object storage (``s3`` None: storages/ lists none, the rest is 404).
        presigned = PresignedApi(
            store,
            catalog,
            s3,
            read_json=read_json,
            owner_of=lambda r: r.owner,
            max_upload_size=max_upload_size,
        )
        self._presigned_routes = presigned.routes()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(MEDIA_PREFIX):
            return self._media(environ, start_response)  # signed URLs: no token, bytes not JSON
        body = Body(environ, self._block_size)
        headers: list[Header] = []
        payload: Payload
        try:
            status, payload = self._dispatch(environ, body)
        except HttpError as error:
            status, payload, headers = error.status, error.body, error.headers
        except Invalid as error:  # a record's content, refused by catalog
            status, payload = 400, {wire.DETAIL: str(error)}
        except PresignError as error:
            status, payload = error.status, {wire.DETAIL: error.detail}
        except OSError as error:
            # The chunk was truncated away on the way out; the client may retry later.
            if error.errno == errno.EDQUOT:  # the user's quota here, or the file system's
                status, payload = 507, {wire.DETAIL: "storage quota exceeded"}
            elif error.errno == errno.ENOSPC:
                status, payload = 507, {wire.DETAIL: "storage full"}
            else:
                raise
        # Answer only once the body is read: a client still sending would see a
        # reset instead of the answer. cheroot would drain it too, but in one
        # read of the whole remainder, i.e. a whole chunk in memory.
        body.drain()
        if _ROUTE.fullmatch(environ.get("PATH_INFO", "")):
            headers = [*headers, *self._upload_headers]
        data = json.dumps(payload).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
        )
        # cheroot sends whatever is returned, and a body after a HEAD answer
        # would be read as the next answer on a kept-alive connection.
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    def _dispatch(self, environ: Mapping[str, Any], body: Body) -> tuple[int, Payload]:
        owner = self._auth.authenticate(environ)
        path = environ.get("PATH_INFO", "")
        route = _ROUTE.fullmatch(path)
        raw_id = None if route is None else route.group(1)
        noun = "upload"
        handlers: Mapping[str, Handler]
        if route is not None:
            handlers = self._upload_routes[raw_id is not None]
        elif _STATS_ROUTE.fullmatch(path):
            handlers = self._stats_routes
        elif (catalog := _CATALOG_ROUTE.fullmatch(path)) is not None:
            kind, raw_id = catalog.groups()
            noun = _NOUNS[kind]
            if kind == "data_files" and raw_id == "verify_checksums":
                handlers, raw_id = self._verify_checksums, None
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
        if raw_id is not None and not DECIMAL_ID.fullmatch(raw_id):
            raise HttpError(400, f"malformed {noun} id {raw_id[:40]!r}: expected a decimal number of 1 to 18 digits")
        return handler(Request(environ, body, owner, None if raw_id is None else int(raw_id)))

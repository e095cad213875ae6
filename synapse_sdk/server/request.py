"""A request as the reference server's handlers see it: its body, its form, and the error that answers it.

``Body`` reads the WSGI input once, block by block, never past its length;
``receive`` streams a multipart body (the ``file`` part into a chunk
writer, text fields into a ``Form``); ``read_fields`` and ``read_json``
read the small bodies that are not chunks. Whatever is malformed raises
``HttpError`` with a 4xx whose ``detail`` says what was wrong.

It knows no route, no store and no record, and never reads a whole chunk
into memory.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from engine import wire
from synapse_sdk.server.catalog_input import check_depth
from synapse_sdk.server.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_options_header,
)
from synapse_sdk.server.storage import ChunkWriter, Owner

__all__ = [
    "BLOCK_SIZE",
    "DECIMAL_ID",
    "MAX_FIELDS",
    "MAX_FIELD_BYTES",
    "MAX_FORM_BYTES",
    "Body",
    "Form",
    "Handler",
    "Header",
    "HttpError",
    "Payload",
    "Request",
    "base_url",
    "decode_field",
    "read_fields",
    "read_json",
    "receive",
]

# Bytes read from the socket per step: large enough that per-block Python
# work is noise next to hashing and writing, small enough to stay in cache.
BLOCK_SIZE: Final = 1 << 20
# Text fields (filename, md5) are short; bodies that are not a chunk are small.
# A filename may use all of it: it is only ever stored in SQLite, never on disk.
MAX_FIELD_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 64
MAX_FORM_BYTES: Final = 1 << 20
#: An id in a URL or a query: 18 digits keep every number inside SQLite's 64-bit integers.
DECIMAL_ID: Final = re.compile(r"[0-9]{1,18}")

Header = tuple[str, str]
# A JSON answer: an object, or a list (the created data units and tasks).
Payload = dict[str, object] | list[object]


class HttpError(Exception):
    """An answer other than 200: ``status``, a JSON body with ``detail`` (and extras)."""

    def __init__(self, status: int, detail: str, headers: Iterable[Header] = (), **extra: object) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, object] = {wire.DETAIL: detail, **extra}
        self.headers = list(headers)


class Body:
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
class Request:
    environ: Mapping[str, Any]
    body: Body
    owner: Owner
    id: int | None  # the id in the URL: an upload's, or a record's of the route's kind


#: A route's handler for one method: the request in, ``(status, payload)`` out (or an ``HttpError``).
Handler = Callable[[Request], tuple[int, Payload]]


@dataclass(slots=True)
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: PartStart | None = None


def receive(request: Request, chunk: ChunkWriter | None) -> Form:
    """Stream a multipart body: the ``file`` part into ``chunk``, text fields into the form."""
    form = Form()
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
                            form.fields[name] = decode_field(name, text)
                        text, sink = None, None
        parser.close()
        if chunk is not None:
            chunk.settle()  # its digests are final from here on
    except MultipartError as error:
        raise HttpError(400, f"malformed multipart/form-data body: {error}") from None
    return form


def read_fields(request: Request) -> dict[str, object]:
    """The fields of a small form body: multipart, urlencoded or a JSON object."""
    kind, _ = parse_options_header(request.environ.get("CONTENT_TYPE", ""))
    if kind == "multipart/form-data":
        return dict(receive(request, None).fields)
    if kind not in ("", "application/x-www-form-urlencoded", "application/json"):
        raise HttpError(415, f'Unsupported media type "{kind}" in request.')
    raw = _read_small(request)
    if kind == "application/json":
        value = _parse_json(raw)
        if not isinstance(value, dict):
            raise HttpError(400, "the JSON body must be an object")
        return value
    return dict(parse_qsl(decode_field("body", raw), keep_blank_values=True))


def read_json(request: Request) -> object:
    """A small JSON body (object or list), not nested past ``catalog_input.MAX_JSON_DEPTH``."""
    kind, _ = parse_options_header(request.environ.get("CONTENT_TYPE", ""))
    if kind != "application/json":
        raise HttpError(415, f'Unsupported media type "{kind}" in request: send JSON (application/json).')
    value = _parse_json(_read_small(request))
    check_depth(value)
    return value


def decode_field(name: str, raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, f"{name!r} is not UTF-8 text") from None


def base_url(environ: Mapping[str, Any]) -> str:
    """The URL the client reached the application at, without a trailing slash."""
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    return f"{environ['wsgi.url_scheme']}://{host}{environ.get('SCRIPT_NAME', '')}"


def _read_small(request: Request) -> bytearray:
    raw = bytearray()
    for data, count in request.body.blocks():
        if len(raw) + count > MAX_FORM_BYTES:
            raise HttpError(413, f"a form or JSON body is limited to {MAX_FORM_BYTES} bytes")
        raw += memoryview(data)[:count]
    return raw


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

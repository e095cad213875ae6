"""Streaming parser for ``multipart/form-data`` request bodies (RFC 7578).

The reference server feeds it a request body block by block as the bytes come
off the socket; it answers each block with events: a part starts, a slice of
a part's content, a part ends. Content slices are memoryviews into the block
it was given, so a 50 MiB file part passes through without a copy.

It does no I/O and must never accumulate a part's content: all it carries from
one block to the next is a tail shorter than the delimiter (bytes that may be
the start of one) and, while reading them, a part's small header block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_HEADER_BYTES",
    "Event",
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "boundary_from_content_type",
    "parse_options_header",
]

# A part's headers are a few short lines, but the file part's Content-Disposition
# may carry a filename as long as a text field may be (64 KiB); longer is not a form.
MAX_HEADER_BYTES: Final = 80 * 1024

# `; key=value` or `; key="quoted \" value"` after a header's main value.
_PARAM: Final = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_ESCAPE: Final = re.compile(r"\\(.)")

_PREAMBLE: Final = 0
_BODY: Final = 1
_AFTER_DELIMITER: Final = 2
_HEADERS: Final = 3
_EPILOGUE: Final = 4


class MultipartError(ValueError):
    """The body is not well-formed ``multipart/form-data``; the message says where."""


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins: its form field ``name`` and, for a file part, its ``filename``."""

    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    """A slice of the current part's content.

    ``data`` points into the block passed to ``feed``: use it before the next
    ``feed`` call, since a caller may refill that block's buffer.
    """

    data: memoryview


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part's content is complete."""


Event = PartStart | PartData | PartEnd


def parse_options_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``'form-data; name="file"'`` into ``('form-data', {'name': 'file'})``.

    The main value is lower-cased, as are parameter names; quoted parameter
    values are unquoted.
    """
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = _ESCAPE.sub(r"\1", raw[1:-1])
        params[key] = raw
    return main.strip().lower(), params


def boundary_from_content_type(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header value."""
    kind, params = parse_options_header(content_type)
    if kind != "multipart/form-data":
        raise MultipartError(f"expected a multipart/form-data body, got Content-Type {content_type!r}")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise MultipartError("the multipart Content-Type needs a boundary of 1 to 70 ASCII characters")
    return boundary.encode("ascii")


class MultipartParser:
    """Push parser: ``feed`` blocks of the body in order, then ``close``.

    >>> parser = MultipartParser(b"xyz")
    >>> body = b'--xyz\\r\\nContent-Disposition: form-data; name="a"\\r\\n\\r\\nhi\\r\\n--xyz--'
    >>> events = parser.feed(body)
    >>> [type(event).__name__ for event in events]
    ['PartStart', 'PartData', 'PartEnd']
    >>> parser.close()
    """

    def __init__(self, boundary: bytes) -> None:
        if not 1 <= len(boundary) <= 70:
            raise MultipartError("a multipart boundary has 1 to 70 characters")
        self._delimiter = b"\r\n--" + boundary
        # Later delimiters follow a CRLF, the first one starts the body: a
        # virtual CRLF in front lets one search find both.
        self._tail = b"\r\n"
        self._head = bytearray()
        self._state = _PREAMBLE

    @property
    def done(self) -> bool:
        """The closing delimiter has been seen; anything after it is ignored."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes | bytearray, end: int | None = None) -> list[Event]:
        """Parse ``data[:end]`` (all of ``data`` by default), the body's next block."""
        end = len(data) if end is None else end
        events: list[Event] = []
        pos = 0
        while pos < end and self._state != _EPILOGUE:
            if self._state == _HEADERS:
                pos = self._read_headers(data, pos, end, events)
            elif self._state == _AFTER_DELIMITER:
                pos = self._read_delimiter_end(data, pos, end)
            else:
                pos = self._scan(data, pos, end, events)
        return events

    def close(self) -> None:
        """Check that the body ended with its closing delimiter."""
        if self._state != _EPILOGUE:
            raise MultipartError("the multipart body ended before its closing boundary (truncated request?)")

    def _scan(self, data: bytes | bytearray, pos: int, end: int, events: list[Event]) -> int:
        # Content (or preamble) up to the next delimiter. Only the junction of
        # the carried tail and this block is copied; the block itself is
        # searched in place, with one find per block.
        tail = self._tail
        if tail:
            self._tail = b""
            joined = tail + bytes(data[pos : min(end, pos + len(self._delimiter) - 1)])
            # A delimiter that starts in the tail ends within `joined`; when the
            # block is too short to tell, `joined` holds all of it anyway.
            if end - pos < len(self._delimiter) - 1 or self._delimiter in joined:
                return pos + self._search(joined, 0, len(joined), events) - len(tail)
            self._emit(tail, 0, len(tail), events)
        return self._search(data, pos, end, events)

    def _search(self, buf: bytes | bytearray, start: int, stop: int, events: list[Event]) -> int:
        found = buf.find(self._delimiter, start, stop)
        if found != -1:
            self._emit(buf, start, found, events)
            if self._state == _BODY:
                events.append(PartEnd())
            self._state = _AFTER_DELIMITER
            return found + len(self._delimiter)
        # The block may end inside a delimiter: hold back from the first CR
        # that could start one, so the next block can complete it.
        keep = buf.find(b"\r", max(start, stop - len(self._delimiter) + 1), stop)
        if keep == -1:
            keep = stop
        self._emit(buf, start, keep, events)
        self._tail = bytes(buf[keep:stop])
        return stop

    def _emit(self, buf: bytes | bytearray, start: int, stop: int, events: list[Event]) -> None:
        if stop > start and self._state == _BODY:
            events.append(PartData(memoryview(buf)[start:stop]))

    def _read_delimiter_end(self, data: bytes | bytearray, pos: int, end: int) -> int:
        # A delimiter is followed by CRLF (another part) or "--" (the last one).
        taken = data[pos : min(end, pos + 2 - len(self._head))]
        self._head += taken
        if len(self._head) < 2:
            return pos + len(taken)
        mark = bytes(self._head)
        self._head.clear()
        if mark == b"--":
            self._state = _EPILOGUE
        elif mark == b"\r\n":
            # Keep the CRLF: a part without headers is then "\r\n\r\n" too.
            self._head += mark
            self._state = _HEADERS
        else:
            raise MultipartError("malformed multipart body: a boundary line must end in CRLF or '--'")
        return pos + len(taken)

    def _read_headers(self, data: bytes | bytearray, pos: int, end: int, events: list[Event]) -> int:
        head = self._head
        before = len(head)
        taken = min(end - pos, MAX_HEADER_BYTES - before)
        head += data[pos : pos + taken]
        found = head.find(b"\r\n\r\n", max(0, before - 3))
        if found == -1:
            if len(head) >= MAX_HEADER_BYTES:
                raise MultipartError(f"a multipart part's headers exceed {MAX_HEADER_BYTES} bytes")
            return pos + taken
        block = bytes(head[2:found])
        head.clear()
        events.append(_part_start(block))
        self._state = _BODY
        return pos + found + 4 - before


def _part_start(block: bytes) -> PartStart:
    headers: dict[str, str] = {}
    # RFC 7578 leaves the charset to the form; UTF-8 is what clients send.
    lines = block.decode("utf-8", "replace").split("\r\n") if block else []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise MultipartError(f"malformed multipart part header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    kind, params = parse_options_header(headers.get("content-disposition", ""))
    if kind != "form-data" or "name" not in params:
        raise MultipartError('every multipart part needs "Content-Disposition: form-data; name=..."')
    return PartStart(params["name"], params.get("filename"), headers.get("content-type"))

"""An in-memory chunked-upload server behind the ``Transport`` interface: the uploader's unit tests need no socket.

It keeps uploads as byte strings and answers as docs/PROTOCOL.md says (the
re-alignment 400, the checksum checks, the idempotent create), parsing each
body with the reference server's own multipart parser. Tests script faults by
request number: an answer lost after the server acted (``lose_after``) or
before it did (``lose_before``), or a canned answer instead (``answer``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine import wire
from engine.errors import ClientTimeoutError
from engine.source import FileRange
from engine.transport import Response
from synapse_sdk.server.multipart import MultipartParser, PartData, PartEnd, PartStart, boundary_from_content_type

__all__ = ["MemoryTransport", "Sent"]

BASE = "http://memory"
COLLECTION = f"{BASE}/{wire.COLLECTION}/"


@dataclass
class _Upload:
    id: int
    total: int
    data: bytearray = field(default_factory=bytearray)
    checksum: str | None = None


@dataclass(frozen=True)
class Sent:
    """A request as the server saw it."""

    method: str
    url: str
    headers: dict[str, str]
    fields: dict[str, str]
    file: bytes | None


class MemoryTransport:
    """Answers the uploader's requests from memory; every request is kept in ``sent``."""

    def __init__(self) -> None:
        self.uploads: dict[int, _Upload] = {}
        self.keys: dict[str, int] = {}
        self.sent: list[Sent] = []
        self.lose_after: set[int] = set()
        self.lose_before: set[int] = set()
        self.answer: dict[int, Response] = {}
        #: Called with the server before request number n is handled (e.g. to lose stored bytes).
        self.before: dict[int, Callable[[MemoryTransport], None]] = {}

    def can_sendfile(self, url: str) -> bool:
        return False  # no socket to send a file to

    def request(
        self, method: str, url: str, *, headers: dict[str, str], body: Any = None, timeout: Any = None
    ) -> Response:
        n = len(self.sent)
        sent = _parse(method, url, headers, body)
        self.sent.append(sent)
        if n in self.before:
            self.before[n](self)
        if n in self.lose_before:
            raise ClientTimeoutError("read timed out (before the server acted)")
        answer = self.answer[n] if n in self.answer else self._handle(sent)
        if n in self.lose_after:
            raise ClientTimeoutError("read timed out (after the server acted)")
        return answer

    # -- the server -------------------------------------------------------------------

    def _handle(self, sent: Sent) -> Response:
        if sent.url == COLLECTION:
            return self._create(sent) if sent.method == "PUT" else self._whole(sent)
        upload = self.uploads.get(int(sent.url.rstrip("/").rsplit("/", 1)[1]))
        if upload is None:
            return _json(404, {wire.DETAIL: "Not found."})
        if sent.method == "GET":
            return _json(200, self._record(upload))
        if sent.method == "PUT":
            return self._append(upload, sent)
        return self._finalize(upload, sent)

    def _create(self, sent: Sent) -> Response:
        key = sent.headers.get(wire.IDEMPOTENCY_KEY)
        if key in self.keys:
            return _json(200, self._record(self.uploads[self.keys[key]]))
        parsed = wire.parse_content_range(sent.headers.get(wire.CONTENT_RANGE, ""))
        if parsed is None or parsed[0] != 0:
            return _json(400, {wire.DETAIL: wire.BAD_HEADERS})
        upload = _Upload(len(self.uploads) + 1, parsed[2])
        refused = self._store(upload, sent, parsed)
        if refused is not None:
            return refused
        self.uploads[upload.id] = upload
        if key is not None:
            self.keys[key] = upload.id
        return _json(200, self._record(upload))

    def _append(self, upload: _Upload, sent: Sent) -> Response:
        parsed = wire.parse_content_range(sent.headers.get(wire.CONTENT_RANGE, ""))
        if parsed is None:
            return _json(400, {wire.DETAIL: wire.BAD_HEADERS})
        if parsed[0] != len(upload.data):
            mismatch = {wire.EXPECTED_OFFSET: len(upload.data), wire.PROVIDED_OFFSET: parsed[0]}
            return _json(400, {wire.DETAIL: wire.OFFSETS_DO_NOT_MATCH, **mismatch})
        return self._store(upload, sent, parsed) or _json(200, self._record(upload))

    def _store(self, upload: _Upload, sent: Sent, parsed: tuple[int, int, int]) -> Response | None:
        data = sent.file or b""
        if len(data) != parsed[1] - parsed[0] + 1:
            return _json(400, {wire.DETAIL: "File size doesn't match headers"})
        md5 = sent.headers.get(wire.CONTENT_MD5)
        if md5 is not None and base64.b64decode(md5) != hashlib.md5(data).digest():
            return _json(400, {wire.DETAIL: wire.CHUNK_CHECKSUM_MISMATCH})
        upload.data += data
        return None

    def _finalize(self, upload: _Upload, sent: Sent) -> Response:
        if len(upload.data) != upload.total:
            return _json(400, {wire.DETAIL: "the upload is incomplete", wire.EXPECTED_OFFSET: len(upload.data)})
        if sent.fields.get(wire.MD5) != hashlib.md5(upload.data).hexdigest():
            return _json(400, {wire.DETAIL: wire.CHECKSUM_DOES_NOT_MATCH})
        upload.checksum = sent.fields[wire.MD5]
        return _json(200, self._record(upload))

    def _whole(self, sent: Sent) -> Response:
        upload = _Upload(len(self.uploads) + 1, len(sent.file or b""), bytearray(sent.file or b""))
        upload.checksum = hashlib.md5(upload.data).hexdigest()
        self.uploads[upload.id] = upload
        return _json(200, self._record(upload))

    def _record(self, upload: _Upload) -> dict[str, Any]:
        record: dict[str, Any] = {
            wire.ID: upload.id,
            wire.URL: f"{COLLECTION}{upload.id}/",
            wire.OFFSET: len(upload.data),
            wire.COMPLETED_AT: "2026-01-01T00:00:00Z" if upload.checksum else None,
        }
        if upload.checksum:
            record.update({wire.CHECKSUM: upload.checksum, wire.SIZE: upload.total})
        return record


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode())


def _parse(method: str, url: str, headers: dict[str, str], body: Any) -> Sent:
    content_type = headers.get("Content-Type", "")
    if body is None:
        return Sent(method, url, dict(headers), {}, None)
    if content_type == "application/json":
        return Sent(method, url, dict(headers), json.loads(body), None)
    fields: dict[str, str] = {}
    file: bytearray | None = None
    name, text = "", bytearray()
    parser = MultipartParser(boundary_from_content_type(content_type))
    for piece in _bytes_of(body):
        for event in parser.feed(piece):
            if isinstance(event, PartStart):
                name, text = event.name, bytearray()
                if name == wire.FILE:
                    file = bytearray()
            elif isinstance(event, PartData):
                (file if name == wire.FILE else text).extend(event.data)
            elif isinstance(event, PartEnd) and name != wire.FILE:
                fields[name] = text.decode()
    parser.close()
    return Sent(method, url, dict(headers), fields, None if file is None else bytes(file))


def _bytes_of(body: Iterable[Any]) -> Iterable[bytes]:
    for piece in body:
        # A memoryview of the file is valid only until the next is taken: copy it now.
        assert not isinstance(piece, FileRange), "the uploader was told it cannot sendfile"
        yield bytes(piece)

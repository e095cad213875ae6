"""What a chunked-upload request says, checked: its headers and its text fields.

``Content-Range``, the chunk digests (``Content-MD5``, ``Content-XXH3``),
``Idempotency-Key``, and the ``md5`` and ``filename`` form fields, each
parsed into a value or refused with an ``HttpError`` 400 whose ``detail``
says what was wrong and what was expected. The header names and the
messages clients act on come from ``engine.wire``. It reads no body and
knows no store.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Final

from engine import wire
from synapse_sdk.server.request import HttpError

__all__ = ["chunk_checks", "content_range", "filename_field", "idempotency_key", "md5_field"]

# The extension's key is opaque to the server: any printable ASCII.
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,200}")
_HEX_MD5: Final = re.compile(r"[0-9a-fA-F]{32}")
_HEX_XXH3: Final = _HEX_MD5  # xxh3-128 is 16 bytes too


def content_range(environ: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(start, end, total)`` of the request's ``Content-Range``, ``end`` inclusive and inside the file."""
    parsed = wire.parse_content_range(environ.get(wire.environ_key(wire.CONTENT_RANGE), ""))
    if parsed is None:
        raise HttpError(400, wire.BAD_HEADERS)
    start, end, total = parsed
    if start > end:
        raise HttpError(400, f"Content-Range start {start} is after its end {end}")
    if end >= total:
        raise HttpError(400, f"Content-Range end {end} is past the file's last byte ({total - 1})")
    return start, end, total


def chunk_checks(environ: Mapping[str, Any]) -> dict[str, bytes]:
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


def idempotency_key(environ: Mapping[str, Any]) -> str | None:
    """The create's ``Idempotency-Key`` (extension), stripped; None when the request has none."""
    value = environ.get(wire.environ_key(wire.IDEMPOTENCY_KEY))
    if value is None:
        return None
    value = value.strip()
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise HttpError(400, "malformed Idempotency-Key header: expected 1 to 200 printable ASCII characters")
    return value


def md5_field(fields: Mapping[str, object]) -> str:
    """The form's ``md5`` field: the whole file's MD5 as 32 hex digits, lower-cased."""
    value = fields.get(wire.MD5)
    if value is None or value == "":
        raise HttpError(400, "Checksum of type 'md5' is required")
    if not isinstance(value, str) or not _HEX_MD5.fullmatch(value):
        raise HttpError(400, "md5 must be the file's MD5 as 32 hexadecimal digits")
    return value.lower()


def filename_field(value: str | None) -> str:
    """The form's ``filename`` field, which must be there."""
    # Any text is a valid name (``../``, NUL, control characters): it is kept
    # in SQLite and echoed in JSON, never used as a path.
    if value is None:
        raise HttpError(400, "the form needs a 'filename' field (the file's base name)")
    return value

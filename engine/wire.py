"""The chunked-upload protocol's names and strings, in one place.

Header names, form fields, record keys, the ``detail`` texts that carry
meaning, and ``Content-Range``'s format: everything docs/PROTOCOL.md spells
out that both ends must spell the same. The client (``engine.protocol``,
``engine.uploader``) and the reference server (``synapse_sdk.server``) import
them from here instead of repeating literals. No I/O, no logic beyond
formatting and parsing one header.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BAD_HEADERS",
    "CHECKSUM",
    "CHECKSUM_DOES_NOT_MATCH",
    "CHUNK_CHECKSUM_MISMATCH",
    "COLLECTION",
    "COMPLETED_AT",
    "CONTENT_MD5",
    "CONTENT_RANGE",
    "CONTENT_XXH3",
    "DETAIL",
    "EXPECTED_OFFSET",
    "FILE",
    "FILENAME",
    "ID",
    "IDEMPOTENCY_KEY",
    "MD5",
    "OFFSET",
    "OFFSETS_DO_NOT_MATCH",
    "OUT_OF_ORDER",
    "PARALLEL_CHUNKS",
    "PROVIDED_OFFSET",
    "RECEIVED",
    "RETRY_AFTER",
    "SIZE",
    "URL",
    "environ_key",
    "format_content_range",
    "parse_content_range",
]

#: The endpoint's path segment: ``{base}/chunked_upload/`` creates, ``{base}/chunked_upload/{id}/`` is one upload.
COLLECTION: Final = "chunked_upload"

# -- request headers ---------------------------------------------------------
CONTENT_RANGE: Final = "Content-Range"
#: RFC 1864: base64 of the chunk's MD5 (extension on chunk PUTs).
CONTENT_MD5: Final = "Content-MD5"
#: The chunk's xxh3-128 as 32 hex digits (extension of the reference server).
CONTENT_XXH3: Final = "Content-XXH3"
#: Opaque token that makes a repeated create answer the upload the first one made (extension).
IDEMPOTENCY_KEY: Final = "Idempotency-Key"
#: On a chunk PUT: store the chunk at its ``Content-Range`` even if that is past the
#: upload's offset (one of several chunks in flight; extension of the reference server).
OUT_OF_ORDER: Final = "Synapse-Out-Of-Order"
# -- answer headers ----------------------------------------------------------
RETRY_AFTER: Final = "Retry-After"
#: On ``chunked_upload/`` answers: how many chunks of one upload the server takes at
#: once, out of order (extension of the reference server; absent: one, in order).
PARALLEL_CHUNKS: Final = "Synapse-Parallel-Chunks"

# -- form fields -------------------------------------------------------------
FILE: Final = "file"
FILENAME: Final = "filename"
MD5: Final = "md5"

# -- keys of the upload's record and of error answers --------------------------
ID: Final = "id"
URL: Final = "url"
OFFSET: Final = "offset"
COMPLETED_AT: Final = "completed_at"
CHECKSUM: Final = "checksum"
SIZE: Final = "size"
DETAIL: Final = "detail"
#: In a 400: the bytes the server holds, the client's signal to re-align.
EXPECTED_OFFSET: Final = "expected_offset"
PROVIDED_OFFSET: Final = "provided_offset"
#: In a record: the byte ranges ``[start, end)`` stored past ``offset`` (out-of-order chunks), in order.
RECEIVED: Final = "received"

# -- detail texts that are signals, not just messages ------------------------
OFFSETS_DO_NOT_MATCH: Final = "Offsets do not match"
CHUNK_CHECKSUM_MISMATCH: Final = "chunk checksum mismatch"
CHECKSUM_DOES_NOT_MATCH: Final = "checksum does not match"
#: drf-chunked-upload's answer to a missing or malformed ``Content-Range``.
BAD_HEADERS: Final = "Error in request headers"

# 18 digits keep every number inside SQLite's (and most servers') 64-bit integers.
_CONTENT_RANGE: Final = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})")


def format_content_range(start: int, end: int, total: int) -> str:
    """``Content-Range`` of bytes ``[start, end)`` of ``total``: the header's end is inclusive."""
    if not 0 <= start < end <= total:
        raise ValueError(f"bytes [{start}, {end}) are not a non-empty range of a {total}-byte file")
    return f"bytes {start}-{end - 1}/{total}"


def parse_content_range(value: str) -> tuple[int, int, int] | None:
    """``(start, end, total)`` of a ``Content-Range`` value, ``end`` inclusive as written; None if malformed.

    Only the syntax is checked: whether ``start <= end < total`` is the caller's
    to judge (and to say in its own words).
    """
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        return None
    start, end, total = (int(group) for group in match.groups())
    return start, end, total


def environ_key(header: str) -> str:
    """The WSGI ``environ`` key that holds request header ``header`` (``HTTP_CONTENT_RANGE``)."""
    return "HTTP_" + header.upper().replace("-", "_")

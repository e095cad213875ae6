"""The reference server's streaming multipart parser, on crafted bodies cut every which way.

Whatever the split points, the parser must give the same parts as when fed
the body whole; it must pass large content through as views of the blocks it
was fed (no accumulation); and a malformed body must fail with a message.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from synapse_sdk.server.multipart import (
    MAX_HEADER_BYTES,
    MultipartError,
    MultipartParser,
    PartData,
    PartStart,
    boundary_from_content_type,
    parse_options_header,
)

pytestmark = pytest.mark.unit

BOUNDARY = b"b0undary-x"


def encode(parts: list[tuple[str, str | None, bytes]], boundary: bytes = BOUNDARY) -> bytes:
    """A multipart/form-data body as clients write it: (name, filename, content) parts."""
    body = bytearray()
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += b"--" + boundary + b"\r\n"
        body += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return bytes(body)


def parse(pieces: list[bytes], boundary: bytes = BOUNDARY) -> list[tuple[str, str | None, bytes]]:
    """Feed ``pieces`` in order; the parts found as (name, filename, content)."""
    parser = MultipartParser(boundary)
    parts: list[tuple[str, str | None, bytes]] = []
    content = bytearray()
    for piece in pieces:
        for event in parser.feed(piece):
            if isinstance(event, PartStart):
                parts.append((event.name, event.filename, b""))
                content.clear()
            elif isinstance(event, PartData):
                content += event.data
            else:
                parts[-1] = (*parts[-1][:2], bytes(content))
    parser.close()
    return parts


def split_every(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points)]


# Content that looks like a delimiter without being one, at the edges too.
TRICKY = (
    b"\r\n--b0undary-"
    + b"\r\r\n\r\n--"
    + b"\r\n--b0undary-y middle \r\n-- b0undary-x"
    + os.urandom(300)
    + b"\r\n--b0undar"
)
PARTS = [
    ("filename", None, "données.bin".encode()),
    ("empty", None, b""),
    ("file", "chunk", TRICKY),
    ("md5", None, b"0123456789abcdef0123456789abcdef"),
]


def test_parts_of_a_body_fed_whole() -> None:
    assert parse([encode(PARTS)]) == PARTS


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 11, 13, 14, 15, 16, 31, 64, 100, 1000])
def test_any_block_size_gives_the_same_parts(size: int) -> None:
    assert parse(split_every(encode(PARTS), size)) == PARTS


def test_a_delimiter_cut_at_every_position() -> None:
    body = encode(PARTS)
    for cut in range(1, len(body)):
        assert parse(split_at(body, [cut])) == PARTS, cut


def test_a_delimiter_cut_twice_at_every_pair_of_positions() -> None:
    # Blocks shorter than a delimiter, starting anywhere in or just before one.
    body = encode(PARTS)
    span = len(BOUNDARY) + 4
    starts = [i for i in range(len(body)) if body.startswith(b"--" + BOUNDARY, i)]
    for start in starts:
        for first in range(max(1, start - 3), start + span):
            for second in range(first + 1, first + span + 2):
                assert parse(split_at(body, [first, second])) == PARTS, (first, second)


def test_preamble_and_epilogue_are_ignored() -> None:
    body = b"preamble, not a part\r\n" + encode(PARTS) + b"epilogue --b0undary-x\r\n"
    assert parse(split_every(body, 9)) == PARTS


def test_a_reused_buffer_and_end_are_honoured() -> None:
    # Like a server that reads into one buffer: the parser must keep nothing
    # that points into it, and must ignore the stale bytes past `end`.
    parser = MultipartParser(BOUNDARY)
    buffer = bytearray(10)
    parts: list[tuple[str, str | None, bytes]] = []
    for piece in split_every(encode(PARTS), 7):
        buffer[: len(piece)] = piece
        for event in parser.feed(buffer, len(piece)):
            if isinstance(event, PartStart):
                parts.append((event.name, event.filename, b""))
            elif isinstance(event, PartData):
                parts[-1] = (*parts[-1][:2], parts[-1][2] + bytes(event.data))
        buffer[:] = b"\xff" * len(buffer)
    parser.close()
    assert parts == PARTS


def test_large_content_passes_as_views_of_the_fed_blocks() -> None:
    payload = os.urandom(4 << 20)
    body = encode([("file", "chunk", payload)])
    blocks = split_every(body, 1 << 20)
    parser = MultipartParser(BOUNDARY)
    received = 0
    for block in blocks:
        for event in parser.feed(block):
            if isinstance(event, PartData):
                received += len(event.data)
                if len(event.data) > 1000:
                    assert event.data.obj is block  # not a copy
    parser.close()
    assert received == len(payload)


@settings(max_examples=200, deadline=None)
@given(
    boundary=st.text(alphabet="abcdefghij0123456789-'()+_,./:=?", min_size=1, max_size=70),
    data=st.data(),
)
def test_random_parts_survive_random_splits(boundary: str, data: st.DataObject) -> None:
    marker = boundary.encode()
    delimiter = b"\r\n--" + marker
    # Contents built from pieces of the delimiter (and CRs, dashes, random
    # bytes), so near-misses and cut delimiters are common.
    piece = st.sampled_from([delimiter[:k] for k in range(1, len(delimiter))] + [b"\r", b"-"]) | st.binary()
    contents = data.draw(st.lists(st.lists(piece, max_size=10).map(b"".join), min_size=1, max_size=4))
    # A content holding the whole delimiter cannot be sent with this boundary.
    assume(not any(delimiter in b"\r\n" + content + b"\r\n" for content in contents))
    parts = [(f"field{i}", "f" if i % 2 else None, content) for i, content in enumerate(contents)]
    body = encode(parts, marker)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    assert parse(split_at(body, cuts), marker) == parts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--b0undary-x\r\nContent-Disposition: form-data; name=a\r\n\r\nhalf", "ended before"),
        (b"", "ended before"),
        (b"no boundary here at all", "ended before"),
        (b"--b0undary-xZZContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b0undary-x--", "CRLF or '--'"),
        (b"--b0undary-x\r\n\r\nno headers\r\n--b0undary-x--", "Content-Disposition"),
        (b"--b0undary-x\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--b0undary-x--", "form-data"),
        (b"--b0undary-x\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b0undary-x--", "name="),
        (b"--b0undary-x\r\nno colon on this line\r\n\r\nx\r\n--b0undary-x--", "header line"),
        (b"--b0undary-x\r\n" + b"X-Pad: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n", "exceed"),
    ],
)
def test_malformed_bodies_fail_with_a_message(body: bytes, message: str) -> None:
    for size in (1, 5, len(body) or 1):
        with pytest.raises(MultipartError, match=message):
            parse(split_every(body, size) or [b""])


def test_boundary_from_content_type() -> None:
    assert boundary_from_content_type("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_from_content_type('Multipart/Form-Data; charset=utf-8; boundary="a b:c"') == b"a b:c"
    with pytest.raises(MultipartError, match="expected a multipart/form-data body"):
        boundary_from_content_type("application/json")
    with pytest.raises(MultipartError, match="boundary"):
        boundary_from_content_type("multipart/form-data")
    with pytest.raises(MultipartError, match="boundary"):
        boundary_from_content_type("multipart/form-data; boundary=" + "x" * 71)
    with pytest.raises(MultipartError, match="1 to 70"):
        MultipartParser(b"")


def test_parse_options_header_unquotes() -> None:
    assert parse_options_header('form-data; NAME="file"; filename="a \\"b\\"; c.txt"') == (
        "form-data",
        {"name": "file", "filename": 'a "b"; c.txt'},
    )
    assert parse_options_header("text/plain") == ("text/plain", {})

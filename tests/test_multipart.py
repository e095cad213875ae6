"""The streamed multipart body, byte for byte."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from engine.errors import FileChangedError
from engine.multipart import MultipartBody

pytestmark = pytest.mark.unit


def test_exact_bytes() -> None:
    body = MultipartBody(
        {"filename": "data.zip"},
        file_field="file",
        file_name="data.zip",
        file_length=5,
        file_parts=lambda: [memoryview(b"he"), b"llo"],
        boundary="XyZ",
    )
    expected = (
        b'--XyZ\r\nContent-Disposition: form-data; name="filename"\r\n\r\ndata.zip\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="data.zip"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"hello"
        b"\r\n--XyZ--\r\n"
    )
    assert b"".join(bytes(p) for p in body) == expected
    assert len(body) == len(expected)
    assert body.content_type == "multipart/form-data; boundary=XyZ"


def test_file_bytes_pass_through_uncopied() -> None:
    window = memoryview(bytearray(b"x" * 1000))
    body = MultipartBody({}, file_field="file", file_name="f", file_length=1000, file_parts=lambda: [window])
    assert any(part is window for part in body)


def test_standard_parser_reads_it_back() -> None:
    payload = bytes(range(256)) * 4
    body = MultipartBody(
        {"filename": 'we"ird\nname.bin'},
        file_field="file",
        file_name='we"ird\nname.bin',
        file_length=len(payload),
        file_parts=lambda: [payload],
    )
    raw = f"Content-Type: {body.content_type}\r\n\r\n".encode() + b"".join(bytes(p) for p in body)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = list(message.iter_parts())
    assert parts[0].get_content() == 'we"ird\nname.bin'
    assert parts[1].get_payload(decode=True) == payload


@pytest.mark.parametrize("parts", [[b"abc"], [b"abcdefgh"]])
def test_wrong_file_length_is_an_error_not_a_hang(parts) -> None:
    body = MultipartBody({}, file_field="file", file_name="f", file_length=5, file_parts=lambda: parts)
    with pytest.raises(FileChangedError, match="5 were announced"):
        list(body)

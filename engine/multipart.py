"""multipart/form-data bodies whose file part streams from buffers.

The body is a sized iterable: ``len()`` gives ``Content-Length`` up front and
iteration yields the small head, the file's buffers as they are (mmap
windows, never joined into one 50 MiB ``bytes``, or ``FileRange`` pieces the
transport hands to ``sendfile``), then the tail. requests and
urllib3 both send such a body with ``Content-Length`` and no chunked
transfer encoding.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping

from engine.errors import FileChangedError
from engine.source import FileRange

__all__ = ["MultipartBody"]


def _quote(value: str) -> str:
    # Header parameters cannot carry raw quotes or line breaks.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


class MultipartBody:
    """Text fields first, then one file part whose bytes come from ``file_parts()``."""

    def __init__(
        self,
        fields: Mapping[str, str],
        *,
        file_field: str,
        file_name: str,
        file_length: int,
        file_parts: Callable[[], Iterable[memoryview | bytes | FileRange]],
        boundary: str | None = None,
    ) -> None:
        self.boundary = boundary or uuid.uuid4().hex
        head = []
        for name, value in fields.items():
            head.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'
            )
        head.append(
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quote(file_field)}"; filename="{_quote(file_name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        self._head = "".join(head).encode("utf-8")
        self._tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self._file_length = file_length
        self._file_parts = file_parts

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._file_length + len(self._tail)

    def __iter__(self) -> Iterator[memoryview | bytes | FileRange]:
        yield self._head
        sent = 0
        for part in self._file_parts():
            sent += len(part)
            if sent > self._file_length:
                break
            yield part
        if sent != self._file_length:
            # Sending fewer bytes than announced would hang the server's read.
            raise FileChangedError(f"file part has {sent} bytes, {self._file_length} were announced")
        yield self._tail

"""``upload_file``: one file's chunked upload with a client's settings, the entry point every executor uses.

``create_chunked_upload``, the batch's local threads and the Ray workers all
upload through this function, so none of them needs the client's insides
and the engine's uploader is configured in one place. It knows nothing of
batches or executors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from engine.hashing_service import HashingService
from engine.journal import Journal
from engine.plan import DEFAULT_CHUNK_SIZE
from engine.retry import RetryPolicy
from engine.timeouts import Timeout
from engine.transport import Transport
from engine.uploader import ChunkedUploader

__all__ = ["UploadClient", "upload_file"]


class UploadClient(Protocol):
    """What ``upload_file`` uses of a client (a ``BackendClient`` has it all)."""

    base_url: str
    transport: Transport
    timeout: Timeout
    retry: RetryPolicy
    journal: Journal | None
    chunk_digest: str
    send_whole: bool
    parallel_chunks: int
    default_params: Mapping[str, str]

    # The published clients' hook for authentication headers (subclasses override it).
    def _get_headers(self) -> dict[str, str]: ...


def upload_file(
    client: UploadClient,
    path: str | os.PathLike[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    url: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_url: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    read_timeout: float | None = None,
    hashing: HashingService | None = None,
) -> dict[str, Any]:
    """Upload ``path`` in chunks with ``client``'s pool, headers, timeouts, retries and journal.

    Returns the server's final record. ``url`` continues an upload the
    server already holds part of (a failure's ``error.url``) from the
    server's offset; without it, the client's journal resumes an upload an
    earlier run left unfinished. ``on_progress(bytes_done, total)`` follows
    every stored chunk; ``on_url(url)`` is told the upload's URL once the
    server has created it; setting ``cancel`` stops it (``UploadCancelled``)
    before its next request, resumable. ``read_timeout`` overrides the
    client's read timeout for this upload. ``hashing`` is a service shared
    by the uploads of a batch, hashing their MD5s together in SIMD lanes.

    Raises ``FileNotFoundError``/``IsADirectoryError`` for a bad path and the
    ``ClientError`` hierarchy (with ``url`` and ``offset``) otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"File not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"Path is a directory, not a file: {path}")
    uploader = ChunkedUploader(
        client.transport,
        client.base_url,
        headers=client._get_headers,
        chunk_size=chunk_size,
        timeout=Timeout.of(client.timeout).with_read(read_timeout).as_tuple(),
        retry=client.retry,
        journal=client.journal,
        chunk_digest=client.chunk_digest,
        query=client.default_params,
        hashing=hashing,
        send_whole=client.send_whole,
        parallel_chunks=client.parallel_chunks,
    )
    return uploader.upload(path, on_progress, url=url, cancel=cancel, on_url=on_url)

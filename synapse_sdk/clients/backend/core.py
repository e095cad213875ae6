"""``CoreClientMixin``: chunked upload of one file, on the ``engine`` pipeline."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.plan import DEFAULT_CHUNK_SIZE
from engine.uploader import ChunkedUploader
from synapse_sdk.clients.backend.batch import BatchProgress, Executor, upload_files

__all__ = ["CoreClientMixin"]


class CoreClientMixin:
    """Chunked upload: 50 MiB chunks, per-chunk and whole-file MD5, progress and retries."""

    def create_chunked_upload(
        self,
        file_path: str | os.PathLike[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_progress: Callable[[int, int], None] | None = None,
        read_timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Upload a file in chunks and return the server's final record.

        Each chunk carries its MD5 (``Content-MD5``) and the finalize request
        the whole file's; the server's ``checksum``, when it returns one, is
        compared with the file's. ``on_progress(bytes_done, total)`` is called
        after every stored chunk. An upload of the same file that an earlier
        run left unfinished is resumed (see ``BackendClient(journal=...)``).
        ``read_timeout`` overrides the client's read timeout for this upload's
        requests. Setting ``cancel`` stops the upload (``UploadCancelled``)
        before its next request, leaving it resumable.

        Raises ``FileNotFoundError``/``IsADirectoryError``/``PermissionError``
        for a bad path, ``ValueError`` for a bad ``chunk_size``, and
        ``ClientError`` subclasses (carrying the upload's ``url`` and
        ``offset``) when the server refuses or cannot be reached.
        """
        path = Path(file_path)
        if not path.exists():
            raise FileNotFoundError(f"File not found: {path}")
        if path.is_dir():
            raise IsADirectoryError(f"Path is a directory, not a file: {path}")
        return self._chunked_uploader(chunk_size, read_timeout).upload(path, on_progress, cancel=cancel)

    def _chunked_uploader(self, chunk_size: int, read_timeout: float | None = None) -> ChunkedUploader:
        """The engine uploader behind ``create_chunked_upload``, with this client's pool, headers and policies."""
        read = self.timeout["read"] if read_timeout is None else read_timeout
        return ChunkedUploader(
            self.transport,
            self.base_url,
            headers=self._get_headers,
            chunk_size=chunk_size,
            timeout=(self.timeout["connect"], read),
            retry=self.retry,
            journal=self.journal,
            chunk_digest=self.chunk_digest,
            query=self.default_params,
        )

    def upload_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        concurrency: int = 4,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        recursive: bool = True,
        skip_existing: bool = False,
        on_progress: Callable[[BatchProgress], None] | None = None,
        executor: Executor | str | None = None,
    ) -> dict[str, Any]:
        """Upload many files (and the files under directories) concurrently.

        Returns ``{"successful": [...], "failed": [...], "skipped": [...],
        "total": n}``, each entry ``{"file_path", "status", "result" | "error"
        | "checksum"}``; one file's failure never stops the others. Identical
        files are sent once (``duplicate_of`` names the one that was); with
        ``skip_existing``, files whose MD5 the server already holds as data
        files are skipped. ``on_progress`` receives a ``BatchProgress``.

        ``executor`` says where the uploads run: ``None`` or ``"local"``
        (threads of this process, ``concurrency`` files at a time), ``"ray"``
        or a ``RayExecutor(...)`` (actors across a Ray cluster, ``concurrency``
        files at a time on each; needs ``pip install 'synapse-upload[ray]'``).
        The results are the same either way.
        """
        return upload_files(
            self,
            paths,
            concurrency=concurrency,
            chunk_size=chunk_size,
            recursive=recursive,
            skip_existing=skip_existing,
            on_progress=on_progress,
            executor=executor,
        )

    def get_chunked_upload(self, upload_id: str | int) -> dict[str, Any]:
        """The state of a chunked upload (``offset``, ``completed_at``, ...)."""
        return self._get(f"chunked_upload/{upload_id}/")

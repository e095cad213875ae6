"""``CoreClientMixin``: chunked upload of one file, and of many, on the ``engine`` pipeline.

The top of the client's layers: it picks the executor (``"local"``,
``"ray"``) and hands the batch to ``batch``; one file goes through
``uploads.upload_file``, as the executors' files do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from engine.plan import DEFAULT_CHUNK_SIZE
from synapse_sdk.clients.backend.batch import BatchProgress, Concurrency, Executor, LocalExecutor, upload_files
from synapse_sdk.clients.backend.outcomes import BatchResult
from synapse_sdk.clients.backend.ray_executor import RayExecutor
from synapse_sdk.clients.backend.uploads import upload_file

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
        return upload_file(
            self, file_path, chunk_size=chunk_size, on_progress=on_progress, cancel=cancel, read_timeout=read_timeout
        )  # type: ignore[arg-type]

    def upload_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        concurrency: Concurrency = "auto",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        recursive: bool = True,
        skip_existing: bool = False,
        on_progress: Callable[[BatchProgress], None] | None = None,
        executor: Executor | str | None = None,
    ) -> BatchResult:
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

        ``concurrency="auto"`` (the default) lets the local executor adapt the
        files in flight to the time they take: from 4 up to 64 while that time
        stays near the fastest seen (many small files over a long round trip),
        back down when it climbs, within a memory budget of 256 MiB of mapped
        windows. A number (``concurrency=4``, as before) fixes it. On Ray,
        ``"auto"`` is 4 files per worker. Anything else is a ``ValueError``.

        The result is a ``BatchResult``: that dict, with every file's typed
        ``FileOutcome`` (the exception object, its ``url`` and ``offset``) in
        ``.outcomes``.
        """
        return upload_files(
            self,
            paths,
            concurrency=concurrency,
            chunk_size=chunk_size,
            recursive=recursive,
            skip_existing=skip_existing,
            on_progress=on_progress,
            executor=_executor(executor),
        )

    def get_chunked_upload(self, upload_id: str | int) -> dict[str, Any]:
        """The state of a chunked upload (``offset``, ``completed_at``, ...)."""
        return self._get(f"chunked_upload/{upload_id}/")


def _executor(executor: Executor | str | None) -> Executor:
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor()
    if isinstance(executor, str) or not callable(getattr(executor, "run", None)):
        raise ValueError(f"executor must be 'local', 'ray' or an executor object (RayExecutor(...)), not {executor!r}")
    return executor

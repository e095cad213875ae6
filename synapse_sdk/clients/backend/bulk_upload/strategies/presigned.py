"""``PresignedUploadStrategy``: files straight to object storage by presigned URLs, then confirmed.

Per batch of files: ask the backend for URLs (``data_files/presigned_upload/
upload/``), send every file on the engine's ``PresignedUploader`` (one PUT, or
the parts of a multipart upload when the backend opened one), several files
at once, then confirm the files that landed (``data_files/presigned_upload/
confirm_upload/``) so the backend creates their data files. A file that
fails is a failed entry of the result, never an exception that loses the
others. A multipart upload an earlier run left unfinished, whose URLs still
work, is continued from its journal instead of asked for again.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import (
    AuthenticationError,
    AuthorizationError,
    ClientError,
    GoneError,
    NotFoundError,
    ProtocolError,
)
from engine.hashing_service import HashingService
from engine.journal import PresignedEntry
from engine.presigned import PresignedUploader
from synapse_sdk.clients.backend.bulk_upload.base import BulkUploadStrategy
from synapse_sdk.clients.backend.bulk_upload.models import (
    PRESIGNED_UPLOAD_PROVIDERS,
    ConfirmFileResult,
    ConfirmUploadResponse,
    PresignedFileInfo,
    PresignedUploadResponse,
)

if TYPE_CHECKING:
    from synapse_sdk.clients.backend.bulk_upload.config import BulkUploadConfig

__all__ = ["PresignedUploadResult", "PresignedUploadStrategy"]

log = logging.getLogger("synapse_sdk.upload")

#: What the storage answers a journaled multipart upload it no longer takes (aborted: NoSuchUpload; expired URLs).
_STALE = (NotFoundError, AuthorizationError, AuthenticationError, GoneError)

PRESIGN_PATH = "data_files/presigned_upload/upload/"
CONFIRM_PATH = "data_files/presigned_upload/confirm_upload/"


@dataclass
class PresignedUploadResult:
    """A file sent to a presigned URL: its SHA1 (hex) and size."""

    checksum: str
    size: int


class PresignedUploadStrategy(BulkUploadStrategy):
    """Uploads to S3, MinIO, GCS or Azure storage through the backend's presigned URLs."""

    strategy_name = "presigned"
    supported_providers = PRESIGNED_UPLOAD_PROVIDERS

    def supports_storage(self, storage: dict[str, Any]) -> bool:
        return str(storage.get("provider") or "").lower() in self.supported_providers

    # -- the whole workflow --------------------------------------------------------

    def upload_files(
        self,
        file_paths: list[Path],
        config: BulkUploadConfig,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ConfirmUploadResponse:
        """Upload ``file_paths`` in batches of ``config.batch_size``, ``config.max_workers`` files at a time.

        ``on_progress(completed, total)`` is called (on this thread) after
        each file, whether it succeeded or failed. Results come in the order
        of ``file_paths``, each ``file_key`` the local path as given.
        """
        paths = [Path(p) for p in file_paths]
        if not paths:
            return ConfirmUploadResponse(results=[], created_count=0, failed_count=0)
        progress = _Progress(len(paths), on_progress)
        results: list[ConfirmFileResult] = []
        with (
            self._uploader(config) as uploader,
            ThreadPoolExecutor(config.max_workers, thread_name_prefix="presigned-file") as pool,
        ):
            for start in range(0, len(paths), config.batch_size):
                batch = paths[start : start + config.batch_size]
                results.extend(self._upload_batch(batch, config, uploader, pool, progress))
        created = sum(1 for result in results if result.success)
        return ConfirmUploadResponse(results=results, created_count=created, failed_count=len(results) - created)

    def _uploader(self, config: BulkUploadConfig) -> PresignedUploader:
        client = self.client
        return PresignedUploader(
            client.transport,
            server=client.base_url,
            retry=client.retry,
            timeout=(client.timeout["connect"], config.timeout),
            sleep=client.sleep,
            journal=getattr(client, "journal", None),
            resends=config.max_upload_retries,
            part_threads=config.max_workers,
            # The files in flight hash their parts' MD5s side by side in md5_many's lanes.
            hashing=HashingService() if config.max_workers > 1 else None,
        )

    def _upload_batch(
        self,
        batch: list[Path],
        config: BulkUploadConfig,
        uploader: PresignedUploader,
        pool: ThreadPoolExecutor,
        progress: _Progress,
    ) -> list[ConfirmFileResult]:
        outcome: dict[int, ConfirmFileResult] = {}
        fresh: list[tuple[int, dict[str, Any]]] = []
        resumed: dict[int, PresignedEntry] = {}
        for index, path in enumerate(batch):
            try:
                size = _regular_size(path)
            except OSError as error:
                outcome[index] = _failed(path, _reason(error, path))
                progress.step()
                continue
            entry = uploader.resumable(path)
            if entry is not None:
                resumed[index] = entry
            else:
                fresh.append((index, _file_info(path, size)))

        futures: dict[Future[dict[str, Any]], int] = {}
        self._submit_fresh(fresh, batch, config, uploader, pool, futures)
        for index, entry in resumed.items():
            futures[pool.submit(self._resume, uploader, batch[index], entry)] = index
        uploaded: dict[int, dict[str, Any]] = {}
        stale = self._collect(futures, batch, uploaded, outcome, progress, resumed=set(resumed))
        if stale:
            # Their journaled uploads are gone (aborted, expired): once more, afresh.
            again = []
            for index in stale:
                try:
                    again.append((index, _file_info(batch[index])))
                except OSError as error:
                    outcome[index] = _failed(batch[index], _reason(error, batch[index]))
                    progress.step()
            futures = {}
            self._submit_fresh(again, batch, config, uploader, pool, futures)
            self._collect(futures, batch, uploaded, outcome, progress)

        if uploaded:
            outcome.update(self._confirm(batch, uploaded, config, uploader))
        return [outcome[index] for index in range(len(batch))]

    def _submit_fresh(
        self,
        fresh: list[tuple[int, dict[str, Any]]],
        batch: list[Path],
        config: BulkUploadConfig,
        uploader: PresignedUploader,
        pool: ThreadPoolExecutor,
        futures: dict[Future[dict[str, Any]], int],
    ) -> None:
        """Ask for URLs for ``fresh`` (``(index in batch, file info)``) and start sending them."""
        if not fresh:
            return
        presigned = self.request_presigned_upload(
            [info for _, info in fresh], expiration=config.url_expiration, timeout=config.api_timeout
        )
        if len(presigned.files) != len(fresh):
            raise ProtocolError(
                f"asked for presigned URLs for {len(fresh)} files, the server answered {len(presigned.files)}"
            )
        for (index, info), file_info in zip(fresh, presigned.files, strict=True):
            send = self._sender(uploader, batch[index], file_info, presigned.expires_at, info["content_type"])
            futures[pool.submit(send)] = index

    @staticmethod
    def _collect(
        futures: dict[Future[dict[str, Any]], int],
        batch: list[Path],
        uploaded: dict[int, dict[str, Any]],
        outcome: dict[int, ConfirmFileResult],
        progress: _Progress,
        resumed: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> list[int]:
        """Wait for ``futures``; returns the resumed files whose journaled upload the storage no longer has."""
        stale = []
        for future in as_completed(futures):
            index = futures[future]
            try:
                uploaded[index] = future.result()
            except _STALE as error:
                if index not in resumed:
                    outcome[index] = _failed(batch[index], _reason(error, batch[index]))
                else:
                    log.warning("the unfinished upload of %s cannot go on (%s): starting afresh", batch[index], error)
                    stale.append(index)
                    continue
            except (ClientError, OSError, ValueError) as error:
                outcome[index] = _failed(batch[index], _reason(error, batch[index]))
            progress.step()
        return stale

    def _sender(
        self,
        uploader: PresignedUploader,
        path: Path,
        info: PresignedFileInfo,
        expires_at: str,
        content_type: str | None,
    ) -> Callable[[], dict[str, Any]]:
        if info.multipart is not None:
            multipart = info.multipart

            def send_parts() -> dict[str, Any]:
                digest, parts = uploader.put_multipart(
                    path,
                    file_key=info.file_key,
                    upload_id=multipart.upload_id,
                    part_size=multipart.part_size,
                    parts=[(part.part_number, part.presigned_url) for part in multipart.parts],
                    expires_at=expires_at,
                )
                return {
                    "file_key": info.file_key,
                    "checksum": digest.sha1,
                    "size": digest.size,
                    "multipart": {"upload_id": multipart.upload_id, "parts": parts},
                }

            return send_parts
        if info.presigned_url:
            url = info.presigned_url

            def send_whole() -> dict[str, Any]:
                digest = uploader.put_file(url, path, content_type)
                return {"file_key": info.file_key, "checksum": digest.sha1, "size": digest.size}

            return send_whole

        def refuse() -> dict[str, Any]:
            raise ProtocolError(f"the server gave {path.name} neither a presigned_url nor a multipart upload")

        return refuse

    @staticmethod
    def _resume(uploader: PresignedUploader, path: Path, entry: PresignedEntry) -> dict[str, Any]:
        digest, parts = uploader.put_multipart(
            path,
            file_key=entry.file_key,
            upload_id=entry.upload_id,
            part_size=entry.part_size,
            parts=[(int(number), str(url)) for number, url in entry.parts],
            expires_at=entry.expires_at,
            done=entry.done,
        )
        return {
            "file_key": entry.file_key,
            "checksum": digest.sha1,
            "size": digest.size,
            "multipart": {"upload_id": entry.upload_id, "parts": parts},
        }

    def _confirm(
        self,
        batch: list[Path],
        uploaded: dict[int, dict[str, Any]],
        config: BulkUploadConfig,
        uploader: PresignedUploader,
    ) -> dict[int, ConfirmFileResult]:
        order = sorted(uploaded)
        answer = self.confirm_presigned_upload([uploaded[index] for index in order], timeout=config.api_timeout)
        by_key = {result.file_key: result for result in answer.results}
        outcome = {}
        for index in order:
            path, sent = batch[index], uploaded[index]
            result = by_key.get(sent["file_key"])
            if result is None:
                outcome[index] = _failed(path, f"the server's confirmation did not mention {sent['file_key']}")
                continue
            # Confirmed, or refused after the server read it back: either way this upload is over.
            if "multipart" in sent:
                uploader.forget(path)
            outcome[index] = ConfirmFileResult(
                file_key=str(path),
                checksum=result.checksum or sent["checksum"],
                data_file_id=result.data_file_id,
                success=result.success,
                error=result.error,
            )
        return outcome

    # -- the steps, as synapse-sdk offers them -----------------------------------

    def request_presigned_upload(
        self, files: list[dict[str, Any]], expiration: int = 3600, timeout: float | None = None
    ) -> PresignedUploadResponse:
        """Ask the backend for URLs: ``files`` is ``[{"filename", "size", "content_type"?}, ...]``."""
        answer = self.client._post(
            PRESIGN_PATH, data={"files": files, "expiration": expiration}, timeout=self._api_timeout(timeout)
        )
        return PresignedUploadResponse.model_validate(answer)

    def confirm_presigned_upload(
        self, files: list[dict[str, Any]], timeout: float | None = None
    ) -> ConfirmUploadResponse:
        """Tell the backend which files landed: ``[{"file_key", "checksum" (SHA1), "size", "multipart"?}, ...]``."""
        answer = self.client._post(CONFIRM_PATH, data={"files": files}, timeout=self._api_timeout(timeout))
        return ConfirmUploadResponse.model_validate(answer)

    def upload_file_to_presigned_url(
        self,
        presigned_url: str,
        file_path: Path,
        content_type: str | None = None,
        timeout: float = 300.0,
        client: Any = None,
        max_retries: int = 0,
    ) -> PresignedUploadResult:
        """PUT one file to ``presigned_url``; returns its SHA1 and size once the storage holds its bytes.

        ``client`` (synapse-sdk's shared ``httpx.Client``) is accepted and
        not used: the engine pools connections itself. ``max_retries`` bounds
        the resends of a corrupt or gateway-refused PUT; connection errors,
        timeouts and 5xx are retried by the client's ``RetryPolicy``.
        """
        del client
        path = Path(file_path)
        _regular_size(path)
        with PresignedUploader(
            self.client.transport,
            server=self.client.base_url,
            retry=self.client.retry,
            timeout=(self.client.timeout["connect"], timeout),
            sleep=self.client.sleep,
            resends=max_retries,
            part_threads=1,
        ) as uploader:
            digest = uploader.put_file(presigned_url, path, content_type)
        return PresignedUploadResult(checksum=digest.sha1, size=digest.size)

    def _api_timeout(self, timeout: float | None) -> tuple[float, float] | None:
        return None if timeout is None else (self.client.timeout["connect"], timeout)


class _Progress:
    """Files done so far, told to the caller's callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        if self.callback is not None:
            self.callback(done, self.total)


def _file_info(path: Path, size: int | None = None) -> dict[str, Any]:
    """What a presign request says of a file: its name, size and (guessed) content type."""
    size = _regular_size(path) if size is None else size
    return {"filename": path.name, "size": size, "content_type": mimetypes.guess_type(str(path))[0]}


def _regular_size(path: Path) -> int:
    """``path``'s size; ``FileNotFoundError``/``IsADirectoryError`` if it is not a regular file."""
    if not path.exists():
        raise FileNotFoundError(f"File not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"not a regular file: {path}")
    return os.stat(path).st_size


def _reason(error: BaseException, path: Path) -> str:
    if isinstance(error, FileNotFoundError):
        return f"File not found: {path}"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _failed(path: Path, error: str) -> ConfirmFileResult:
    return ConfirmFileResult(file_key=str(path), checksum="", success=False, error=error)

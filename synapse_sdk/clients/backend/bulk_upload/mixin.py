"""``BulkUploadClientMixin``: ``upload_files_bulk`` and its steps on ``BackendClient``, as synapse-sdk has them.

It picks a strategy for the tenant's default storage (or the one asked
for) and hands it the files. Strategies and their pydantic models load on
first use, so a client that never bulk-uploads never imports pydantic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synapse_sdk.clients.backend.bulk_upload.base import BulkUploadStrategy
    from synapse_sdk.clients.backend.bulk_upload.models import ConfirmUploadResponse, PresignedUploadResponse
    from synapse_sdk.clients.backend.bulk_upload.strategies.presigned import PresignedUploadResult

__all__ = ["BulkUploadClientMixin"]


class BulkUploadClientMixin:
    """Bulk uploads through the backend's storage: ``upload_files_bulk`` and its steps."""

    _strategy_instances: dict[str, BulkUploadStrategy] | None = None

    def _get_strategy_instance(self, name: str) -> BulkUploadStrategy:
        """This client's instance of the strategy ``name`` (``ValueError`` if none is registered)."""
        from synapse_sdk.clients.backend.bulk_upload.registry import get_strategy_registry

        if self._strategy_instances is None:
            self._strategy_instances = {}
        if name not in self._strategy_instances:
            self._strategy_instances[name] = get_strategy_registry().create(name, self)
        return self._strategy_instances[name]

    def _select_upload_strategy(self, storage: dict[str, Any], preferred: str | None = None) -> BulkUploadStrategy:
        from synapse_sdk.clients.backend.bulk_upload.registry import get_strategy_registry

        cls = get_strategy_registry().select_for_storage_or_raise(storage, preferred)
        return self._get_strategy_instance(cls.strategy_name)

    def get_default_storage(self) -> dict[str, Any]:
        """The tenant's default internal storage (``provider``, ``id``, ...); ``ValueError`` if it has none."""
        answer = self._get("storages/", params={"category": "internal"})
        results = answer if isinstance(answer, list) else (answer or {}).get("results", [])
        for storage in results:
            if storage.get("is_default"):
                return storage
        if results:
            return results[0]
        raise ValueError("No default storage configured for tenant")

    def upload_files_bulk(
        self,
        file_paths: list[Path],
        *,
        max_workers: int = 10,
        on_progress: Callable[[int, int], None] | None = None,
        batch_size: int = 200,
        max_upload_retries: int = 2,
        strategy: str | None = None,
    ) -> ConfirmUploadResponse:
        """Upload many files straight to the backend's storage and create their data files.

        ``max_workers`` files travel at once (1-100), ``batch_size`` files
        per presign request (1-1000); ``on_progress(completed, total)`` after
        each file; ``max_upload_retries`` resends of a PUT the storage found
        corrupt or a gateway refused; ``strategy`` (e.g. ``"presigned"``) or
        None to pick by the default storage's provider. Returns a
        ``ConfirmUploadResponse``: ``created_count``, ``failed_count`` and a
        result per file (``file_key`` = its path, ``success``, ``error``,
        ``data_file_id``). One file's failure is its result, not an exception.

        Example:
            >>> files = list(Path('/data/images').glob('*.jpg'))
            >>> result = client.upload_files_bulk(files, max_workers=16)
            >>> print(f"Uploaded {result.created_count} files")
        """
        from synapse_sdk.clients.backend.bulk_upload.config import BulkUploadConfig
        from synapse_sdk.clients.backend.bulk_upload.models import ConfirmUploadResponse

        config = BulkUploadConfig(
            max_workers=max_workers,
            batch_size=batch_size,
            max_upload_retries=max_upload_retries,
            preferred_strategy=strategy,
        )
        if not file_paths:
            return ConfirmUploadResponse(results=[], created_count=0, failed_count=0)
        if isinstance(file_paths, (str, Path)):
            raise TypeError("file_paths must be a list of paths, not one path: upload_files_bulk([path])")
        if strategy is not None:
            selected = self._get_strategy_instance(strategy)
        else:
            selected = self._select_upload_strategy(self.get_default_storage())
        return selected.upload_files(list(file_paths), config, on_progress=on_progress)

    # -- the steps: deprecated in synapse-sdk in favour of upload_files_bulk ------------

    def _storage_supports_presigned_upload(self, storage: dict[str, Any]) -> bool:
        warnings.warn(
            "_storage_supports_presigned_upload is deprecated. "
            "Use get_strategy_registry().select_for_storage() instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        from synapse_sdk.clients.backend.bulk_upload.registry import get_strategy_registry

        return get_strategy_registry().select_for_storage(storage, preferred="presigned") is not None

    def request_presigned_upload(
        self, files: list[dict[str, Any]], *, expiration: int = 3600
    ) -> PresignedUploadResponse:
        """Presigned URLs for ``files`` (``[{"filename", "size", "content_type"?}, ...]``). Deprecated, as published."""
        warnings.warn(
            "request_presigned_upload is deprecated. Use upload_files_bulk() for the full upload workflow.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._get_strategy_instance("presigned").request_presigned_upload(files, expiration)

    def confirm_presigned_upload(self, files: list[dict[str, Any]]) -> ConfirmUploadResponse:
        """Confirm uploaded files (``[{"file_key", "checksum", "size", "multipart"?}]``). Deprecated, as published."""
        warnings.warn(
            "confirm_presigned_upload is deprecated. Use upload_files_bulk() for the full upload workflow.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._get_strategy_instance("presigned").confirm_presigned_upload(files)

    def upload_file_to_presigned_url(
        self, presigned_url: str, file_path: Path, content_type: str | None = None
    ) -> PresignedUploadResult:
        """PUT one file to a presigned URL; its SHA1 and size. Deprecated, as published."""
        warnings.warn(
            "upload_file_to_presigned_url is deprecated. Use upload_files_bulk() for the full upload workflow.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._get_strategy_instance("presigned").upload_file_to_presigned_url(
            presigned_url, file_path, content_type
        )

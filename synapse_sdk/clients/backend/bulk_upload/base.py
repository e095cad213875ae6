"""``BulkUploadStrategy``: what a way of uploading many files must offer the client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from synapse_sdk.clients.backend.bulk_upload.config import BulkUploadConfig
    from synapse_sdk.clients.backend.bulk_upload.models import ConfirmUploadResponse

__all__ = ["BulkUploadStrategy"]


class BulkUploadStrategy(ABC):
    """A way to upload many files, for the storage providers it names; it uses ``client`` for API calls.

    Subclasses set ``strategy_name`` and ``supported_providers`` and are
    registered with ``get_strategy_registry().register(cls)``.
    """

    strategy_name: ClassVar[str]
    supported_providers: ClassVar[frozenset[str]]

    def __init__(self, client: Any) -> None:
        self.client = client

    @abstractmethod
    def supports_storage(self, storage: dict[str, Any]) -> bool:
        """Whether this strategy can upload to ``storage`` (a storage record with ``provider``)."""

    @abstractmethod
    def upload_files(
        self,
        file_paths: list[Path],
        config: BulkUploadConfig,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ConfirmUploadResponse:
        """Upload ``file_paths``; ``on_progress(completed, total)`` after each file."""

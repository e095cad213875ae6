"""Bulk uploads straight to the backend's object storage, as synapse-sdk has them.

``BackendClient.upload_files_bulk(files)`` asks the backend for presigned
URLs, sends the files to the storage on the ``engine`` (mmap bodies,
``Content-MD5`` per part, parallel parts, retries, resume), then confirms them
so the backend creates their data files. Strategies are kept in a registry
(``get_strategy_registry()``), so others can be added.

The names below load on first use (PEP 562): the models need pydantic, which
a client that never bulk-uploads does not import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DEFAULT_PART_SIZE",
    "PRESIGNED_UPLOAD_PROVIDERS",
    "BulkUploadClientMixin",
    "BulkUploadConfig",
    "BulkUploadStrategy",
    "ConfirmFileResult",
    "ConfirmUploadResponse",
    "MultipartUploadInfo",
    "PresignedFileInfo",
    "PresignedUploadPart",
    "PresignedUploadResponse",
    "PresignedUploadResult",
    "PresignedUploadStrategy",
    "UploadStrategyRegistry",
    "get_strategy_registry",
]

_WHERE = {
    "BulkUploadStrategy": "base",
    "BulkUploadConfig": "config",
    "BulkUploadClientMixin": "mixin",
    "UploadStrategyRegistry": "registry",
    "get_strategy_registry": "registry",
    "PresignedUploadResult": "strategies.presigned",
    "PresignedUploadStrategy": "strategies.presigned",
    **dict.fromkeys(
        (
            "DEFAULT_PART_SIZE",
            "PRESIGNED_UPLOAD_PROVIDERS",
            "ConfirmFileResult",
            "ConfirmUploadResponse",
            "MultipartUploadInfo",
            "PresignedFileInfo",
            "PresignedUploadPart",
            "PresignedUploadResponse",
        ),
        "models",
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

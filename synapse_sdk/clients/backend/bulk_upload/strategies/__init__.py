"""Bulk upload strategies: ``PresignedUploadStrategy`` (straight to object storage by presigned URLs)."""

from __future__ import annotations

from synapse_sdk.clients.backend.bulk_upload.strategies.presigned import PresignedUploadResult, PresignedUploadStrategy

__all__ = ["PresignedUploadResult", "PresignedUploadStrategy"]

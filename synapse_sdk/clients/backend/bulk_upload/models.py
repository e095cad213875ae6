"""The presigned bulk upload's request and answer shapes, as synapse-sdk's pydantic models.

Unknown fields in the server's answers are ignored, as the published models
ignore them. Importing this module imports pydantic: the client imports it
only when a bulk upload runs, so ``import synapse_sdk`` stays light.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_PART_SIZE",
    "PRESIGNED_UPLOAD_PROVIDERS",
    "ConfirmFileResult",
    "ConfirmUploadResponse",
    "MultipartUploadInfo",
    "PresignedFileInfo",
    "PresignedUploadPart",
    "PresignedUploadResponse",
]


class PresignedUploadPart(BaseModel):
    """One part of a multipart upload: its number (from 1) and the URL to PUT it to."""

    model_config = ConfigDict(extra="ignore")

    part_number: int
    presigned_url: str


class MultipartUploadInfo(BaseModel):
    """A multipart upload the server opened for a large file: its id, part size and part URLs."""

    model_config = ConfigDict(extra="ignore")

    upload_id: str
    part_size: int
    parts: list[PresignedUploadPart]


class PresignedFileInfo(BaseModel):
    """Where one file goes: its storage key, and either one URL or a multipart upload (the server decides)."""

    model_config = ConfigDict(extra="ignore")

    filename: str
    file_key: str
    presigned_url: str | None = None
    multipart: MultipartUploadInfo | None = None


class PresignedUploadResponse(BaseModel):
    """The answer to a presign request: one entry per requested file, in order, and when the URLs expire."""

    model_config = ConfigDict(extra="ignore")

    files: list[PresignedFileInfo]
    expires_at: str


class ConfirmFileResult(BaseModel):
    """One file's outcome: its key (the local path, in ``upload_files_bulk``'s result), SHA1, data file id."""

    model_config = ConfigDict(extra="ignore")

    file_key: str
    checksum: str
    data_file_id: int | None = None
    success: bool
    error: str | None = None


class ConfirmUploadResponse(BaseModel):
    """Every file's outcome, and how many data files were created and how many files failed."""

    model_config = ConfigDict(extra="ignore")

    results: list[ConfirmFileResult]
    created_count: int
    failed_count: int


#: Storage providers whose default storage the presigned strategy serves.
PRESIGNED_UPLOAD_PROVIDERS = frozenset({"amazon_s3", "s3", "minio", "gcp", "gcs", "azure"})

#: The part size synapse-sdk documents for multipart uploads (the server chooses it).
DEFAULT_PART_SIZE = 100 * 1024 * 1024

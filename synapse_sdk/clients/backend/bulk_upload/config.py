"""``BulkUploadConfig``: the settings of one bulk upload, checked when made."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BulkUploadConfig"]


@dataclass
class BulkUploadConfig:
    """Settings of a bulk upload, with synapse-sdk's defaults and ranges.

    ``max_workers`` files at once (1-100); ``batch_size`` files per presign
    request (1-1000); ``url_expiration`` seconds the URLs live (60-86400);
    ``timeout`` seconds a PUT may wait for its answer; ``api_timeout`` the
    same for the backend's presign and confirm; ``max_upload_retries`` resends
    of a PUT the storage found corrupt or a gateway refused (0-10; transient
    failures are retried by the client's ``RetryPolicy`` besides);
    ``preferred_strategy`` a strategy name, or None to pick by provider.
    """

    max_workers: int = 10
    batch_size: int = 200
    url_expiration: int = 3600
    timeout: float = 300.0
    api_timeout: float = 120.0
    max_upload_retries: int = 2
    preferred_strategy: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_workers <= 100:
            raise ValueError(f"max_workers must be 1-100, got {self.max_workers}")
        if not 1 <= self.batch_size <= 1000:
            raise ValueError(f"batch_size must be 1-1000, got {self.batch_size}")
        if not 0 <= self.max_upload_retries <= 10:
            raise ValueError(f"max_upload_retries must be 0-10, got {self.max_upload_retries}")
        if not 60 <= self.url_expiration <= 86400:
            raise ValueError(f"url_expiration must be 60-86400, got {self.url_expiration}")
        if not self.timeout > 0 or not self.api_timeout > 0:
            raise ValueError(f"timeout and api_timeout must be positive, got {self.timeout} and {self.api_timeout}")

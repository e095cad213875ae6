"""Presigned uploads for the reference server: URLs of an S3-compatible storage, and their confirmation.

``S3Config`` names the storage (endpoint, bucket, region, credentials) and
the server's multipart threshold and part size. ``PresignedApi`` serves the
endpoints of "Presigned uploads" in docs/PROTOCOL.md:

- ``GET storages/``: the owner's storages, one default S3 storage when one is configured;
- ``POST data_files/presigned_upload/upload/``: a storage key and presigned
  PUT URL(s) per file (a multipart upload with a URL per part above the threshold);
- ``POST data_files/presigned_upload/confirm_upload/``: completes each
  multipart upload, reads the object back to check its size and SHA1 (and
  to learn its MD5, the data file's checksum), and only then records a data
  file; each file succeeds or fails on its own.

The keys handed out are kept in the server's SQLite database (table
``presigned_files``), so only the owner who asked for a key can confirm it,
and a confirmation repeated (its answer was lost) answers the same data file.
boto3 is imported only when a storage is configured (``pip install
'synapse-upload[s3]'``). This module never serves the stored bytes.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from synapse_sdk.server.catalog import Catalog
from synapse_sdk.server.store import Owner, Store

__all__ = ["MAX_FILES", "PresignError", "PresignedApi", "S3Config"]

#: Files per presign or confirm request (synapse-sdk's largest batch).
MAX_FILES: Final = 1000
#: S3's limits: parts of a multipart upload, bytes of an object.
MAX_PARTS: Final = 10_000
MAX_OBJECT: Final = 5 * 1024**4
MIN_PART: Final = 5 * 1024**2
_READ_BLOCK: Final = 1 << 20
_HEX_SHA1: Final = re.compile(r"[0-9a-fA-F]{40}")
_UNSAFE_NAME: Final = re.compile(r"[\x00-\x1f\x7f/\\]")

_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS presigned_files (
    file_key TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT,
    upload_id TEXT,
    expires_at TEXT NOT NULL,
    checksum TEXT,
    data_file_id INTEGER
)"""


class PresignError(Exception):
    """A request the presigned endpoints refuse: ``status`` and a message saying what was wrong."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class S3Config:
    """An S3-compatible storage the reference server hands out presigned URLs of.

    ``endpoint_url`` is where the server reaches it; ``public_endpoint_url``
    (default: the same) is the one signed into the URLs clients get.
    Credentials default to boto3's (``AWS_ACCESS_KEY_ID``...). Files above
    ``multipart_threshold`` bytes get a multipart upload in parts of
    ``part_size`` (raised so no file needs more than 10,000 parts).
    """

    endpoint_url: str
    bucket: str
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    public_endpoint_url: str | None = None
    prefix: str = "uploads/"
    provider: str = "amazon_s3"
    multipart_threshold: int = 100 * 1024**2
    part_size: int = 100 * 1024**2
    create_bucket: bool = False
    #: TLS verification of the server's own requests to the storage: True, False or a CA bundle path.
    verify: bool | str = True

    def __post_init__(self) -> None:
        for name in ("endpoint_url", "public_endpoint_url"):
            value = getattr(self, name)
            if value is not None and not re.match(r"https?://[^/]", value):
                raise ValueError(f"{name} must be an http:// or https:// URL, not {value!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", self.bucket):
            raise ValueError(f"{self.bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.', '-')")
        if self.part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's smallest part), not {self.part_size}")
        if self.multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive, not {self.multipart_threshold}")


class PresignedApi:
    """The presigned endpoints over ``store``'s database and ``catalog``; ``s3`` None: no storage configured.

    ``read_json(request)`` is the application's reader of a small JSON
    body; ``owner_of(request)`` says whose request it is. Handlers return
    ``(status, payload)`` and raise ``PresignError``.
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        s3: S3Config | None,
        *,
        read_json: Callable[[Any], object],
        owner_of: Callable[[Any], Owner],
        max_upload_size: int | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._config = s3
        self._read_json = read_json
        self._owner_of = owner_of
        self._max_upload_size = max_upload_size
        self._key_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        with store.transaction() as db:
            db.execute(_SCHEMA)
        self._client = self._signer = None
        if s3 is not None:
            self._client = _s3_client(s3, s3.endpoint_url)
            self._signer = self._client if s3.public_endpoint_url is None else _s3_client(s3, s3.public_endpoint_url)
            if s3.create_bucket:
                _ensure_bucket(self._client, s3.bucket)

    def routes(self) -> dict[str, dict[str, Callable[[Any], tuple[int, Any]]]]:
        """Handlers by path (without slashes at the ends) and method."""
        return {
            "storages": {"GET": self.storages},
            "data_files/presigned_upload/upload": {"POST": self.presign},
            "data_files/presigned_upload/confirm_upload": {"POST": self.confirm},
        }

    # -- handlers ----------------------------------------------------------------

    def storages(self, request: Any) -> tuple[int, Any]:
        config = self._config
        if config is None:
            return 200, {"count": 0, "results": []}
        storage = {
            "id": 1,
            "name": "default",
            "category": "internal",
            "provider": config.provider,
            "is_default": True,
            "configuration": {
                "bucket_name": config.bucket,
                "endpoint_url": config.public_endpoint_url or config.endpoint_url,
            },
        }
        return 200, {"count": 1, "results": [storage]}

    def presign(self, request: Any) -> tuple[int, Any]:
        config = self._configured()
        owner = self._owner_of(request)
        body = _object(self._read_json(request), "the body")
        files = _files(body)
        expiration = body.get("expiration", 3600)
        if not isinstance(expiration, int) or isinstance(expiration, bool) or not 60 <= expiration <= 604800:
            raise PresignError(
                400, f"expiration must be a whole number of seconds from 60 to 604800, not {expiration!r}"
            )
        wanted = [_presign_request(item, f"files[{index}]") for index, item in enumerate(files)]
        for filename, size, _ in wanted:
            if self._max_upload_size is not None and size > self._max_upload_size:
                raise PresignError(413, f"{filename!r}: {size} bytes exceed the limit ({self._max_upload_size} bytes)")
        expires = datetime.now(timezone.utc) + timedelta(seconds=expiration)
        answers, rows = [], []
        for filename, size, content_type in wanted:
            key = f"{config.prefix}{uuid.uuid4().hex}/{_UNSAFE_NAME.sub('_', filename)[:200]}"
            if size > config.multipart_threshold:
                part_size = max(config.part_size, math.ceil(size / MAX_PARTS))
                upload_id = self._storage(
                    "create a multipart upload",
                    lambda key=key, content_type=content_type: self._client.create_multipart_upload(
                        Bucket=config.bucket, Key=key, **({"ContentType": content_type} if content_type else {})
                    )["UploadId"],
                )
                parts = [
                    {
                        "part_number": number,
                        "presigned_url": self._sign(
                            "upload_part",
                            {"Bucket": config.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number},
                            expiration,
                        ),
                    }
                    for number in range(1, max(1, math.ceil(size / part_size)) + 1)
                ]
                multipart = {"upload_id": upload_id, "part_size": part_size, "parts": parts}
                answers.append({"filename": filename, "file_key": key, "presigned_url": None, "multipart": multipart})
            else:
                upload_id = None
                params = {"Bucket": config.bucket, "Key": key}
                if content_type:
                    params["ContentType"] = content_type  # signed: the PUT must say the same
                url = self._sign("put_object", params, expiration)
                answers.append({"filename": filename, "file_key": key, "presigned_url": url, "multipart": None})
            rows.append((key, owner.user, owner.tenant, filename, size, content_type, upload_id, expires.isoformat()))
        with self._store.transaction() as db:
            db.executemany(
                "INSERT INTO presigned_files (file_key, user, tenant, filename, size, content_type, upload_id,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return 200, {"files": answers, "expires_at": _timestamp(expires)}

    def confirm(self, request: Any) -> tuple[int, Any]:
        self._configured()
        owner = self._owner_of(request)
        files = _files(_object(self._read_json(request), "the body"))
        results = [self._confirm_one(owner, item, f"files[{index}]") for index, item in enumerate(files)]
        created = sum(1 for result in results if result["success"])
        return 200, {"results": results, "created_count": created, "failed_count": len(results) - created}

    # -- one file's confirmation ---------------------------------------------------

    def _confirm_one(self, owner: Owner, item: object, where: str) -> dict[str, Any]:
        key = item.get("file_key") if isinstance(item, dict) else None
        checksum = item.get("checksum") if isinstance(item, dict) else None
        result: dict[str, Any] = {
            "file_key": key if isinstance(key, str) else "",
            "checksum": checksum if isinstance(checksum, str) else "",
            "data_file_id": None,
            "success": False,
            "error": None,
        }
        try:
            if not isinstance(item, dict):
                raise PresignError(400, f"{where} must be an object with file_key, checksum and size")
            if not isinstance(key, str) or not key:
                raise PresignError(400, f"{where}: file_key must be the key presigned_upload/upload/ gave")
            with self._key_lock(key):
                result["data_file_id"] = self._confirm_locked(owner, item, key, where)
            result["success"] = True
        except PresignError as error:
            result["error"] = error.detail
        return result

    def _confirm_locked(self, owner: Owner, item: dict[str, Any], key: str, where: str) -> int:
        config = self._configured()
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT size, upload_id, checksum, data_file_id FROM presigned_files"
                " WHERE file_key = ? AND user = ? AND tenant = ?",
                (key, owner.user, owner.tenant),
            ).fetchone()
        if row is None:
            raise PresignError(
                404, f"{where}: unknown file_key {key[:200]!r} (not one presigned_upload/upload/ gave you)"
            )
        announced, upload_id, confirmed_sha1, data_file_id = row
        checksum, size = item.get("checksum"), item.get("size")
        if not isinstance(checksum, str) or not _HEX_SHA1.fullmatch(checksum):
            raise PresignError(400, f"{where}: checksum must be the file's SHA1 as 40 hexadecimal digits")
        checksum = checksum.lower()
        if data_file_id is not None:
            # A repeated confirmation (its answer was lost): the same data file, if it is the same file.
            if checksum != confirmed_sha1:
                raise PresignError(400, f"{where}: {key!r} was already confirmed with another checksum")
            return int(data_file_id)
        if not isinstance(size, int) or isinstance(size, bool) or size != announced:
            raise PresignError(400, f"{where}: size {size!r} differs from the {announced} bytes announced for {key!r}")
        multipart = item.get("multipart")
        if upload_id is not None:
            self._complete(config, key, upload_id, multipart, where)
        elif multipart is not None:
            raise PresignError(400, f"{where}: {key!r} was given one presigned URL, not a multipart upload")
        stored, sha1, md5 = self._read_back(config, key, where)
        if stored != announced:
            raise PresignError(400, f"{where}: the storage holds {stored} bytes at {key!r}, {announced} were announced")
        if sha1 != checksum:
            raise PresignError(400, f"{where}: checksum does not match: the storage holds bytes with SHA1 {sha1}")
        data_file = self._catalog.add_stored_file(owner, f"s3://{config.bucket}/{key}", md5, stored)
        with self._store.transaction() as db:
            db.execute(
                "UPDATE presigned_files SET checksum = ?, data_file_id = ? WHERE file_key = ?",
                (checksum, data_file.id, key),
            )
        return data_file.id

    def _complete(self, config: S3Config, key: str, upload_id: str, multipart: object, where: str) -> None:
        if not isinstance(multipart, dict) or multipart.get("upload_id") != upload_id:
            raise PresignError(400, f"{where}: multipart must name the upload_id {upload_id!r} and its parts")
        parts = multipart.get("parts")
        if not isinstance(parts, list) or not parts or len(parts) > MAX_PARTS:
            raise PresignError(400, f"{where}: multipart.parts must list 1 to {MAX_PARTS} parts")
        listed = []
        for index, part in enumerate(parts):
            number = part.get("part_number") if isinstance(part, dict) else None
            etag = part.get("etag") if isinstance(part, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or not isinstance(etag, str) or not etag:
                raise PresignError(400, f"{where}: multipart.parts[{index}] must be {{part_number, etag}}")
            listed.append({"PartNumber": number, "ETag": etag})
        listed.sort(key=lambda part: part["PartNumber"])
        self._storage(
            "complete the multipart upload",
            lambda: self._client.complete_multipart_upload(
                Bucket=config.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            ),
            where=where,
        )

    def _read_back(self, config: S3Config, key: str, where: str) -> tuple[int, str, str]:
        """Size, SHA1 and MD5 of the object at ``key``, streamed from the storage a MiB at a time."""

        def read() -> tuple[int, str, str]:
            body = self._client.get_object(Bucket=config.bucket, Key=key)["Body"]
            sha1, md5, size = hashlib.sha1(), hashlib.md5(), 0
            try:
                for block in body.iter_chunks(_READ_BLOCK):
                    sha1.update(block)
                    md5.update(block)
                    size += len(block)
            finally:
                body.close()
            return size, sha1.hexdigest(), md5.hexdigest()

        return self._storage("read the object back", read, where=where)

    # -- helpers -------------------------------------------------------------------

    def _configured(self) -> S3Config:
        if self._config is None:
            raise PresignError(
                404,
                "this server has no object storage: start it with --s3-endpoint and --s3-bucket for presigned uploads",
            )
        return self._config

    def _sign(self, operation: str, params: Mapping[str, Any], expiration: int) -> str:
        return self._storage(
            "sign a URL",
            lambda: self._signer.generate_presigned_url(operation, Params=dict(params), ExpiresIn=expiration),
        )

    def _storage(self, what: str, call: Callable[[], Any], *, where: str | None = None) -> Any:
        """``call()``; a storage that refuses is a 400 naming its error code, one that fails a 502."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as error:
            info = error.response.get("Error", {})
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 502
            detail = f"the storage refused to {what}: {info.get('Code', '?')}: {info.get('Message', '')}".rstrip(": ")
            if where is not None:
                detail = f"{where}: {detail}"
            raise PresignError(400 if 400 <= status < 500 else 502, detail) from None
        except BotoCoreError as error:
            raise PresignError(502, f"the object storage could not {what}: {error}") from None

    def _key_lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._key_locks.setdefault(key, threading.Lock())


def _s3_client(config: S3Config, endpoint: str) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise RuntimeError("presigned uploads need boto3: pip install 'synapse-upload[s3]'") from None
    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        verify=config.verify,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )


def _ensure_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PresignError(400, f"{where} must be a JSON object")
    return value


def _files(body: Mapping[str, Any]) -> list[Any]:
    files = body.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise PresignError(400, f"files must be a list of 1 to {MAX_FILES} entries")
    return files


def _presign_request(item: object, where: str) -> tuple[str, int, str | None]:
    if not isinstance(item, dict):
        raise PresignError(400, f"{where} must be an object with filename and size")
    filename, size, content_type = item.get("filename"), item.get("size"), item.get("content_type")
    if not isinstance(filename, str) or not filename.strip() or len(filename) > 1024:
        raise PresignError(400, f"{where}: filename must be non-empty text of at most 1024 characters")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_OBJECT:
        raise PresignError(400, f"{where}: size must be a whole number of bytes from 0 to {MAX_OBJECT}, not {size!r}")
    if content_type is not None and (
        not isinstance(content_type, str) or not re.fullmatch(r"[\x21-\x7e][\x20-\x7e]{0,254}", content_type)
    ):
        raise PresignError(400, f"{where}: content_type must be a MIME type (printable ASCII) or null")
    return filename, size, content_type or None


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

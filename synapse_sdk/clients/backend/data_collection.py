"""``DataCollectionClientMixin``: data files, data units and whole collections, as synapse-sdk has them.

Files above ``CHUNKED_UPLOAD_THRESHOLD`` go through ``create_chunked_upload``
and are registered by the upload's id; smaller ones are posted whole, their
bytes streamed from mmap windows rather than read into memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import engine
from engine.errors import UploadIntegrityError
from engine.multipart import MultipartBody
from engine.source import MappedFile

__all__ = ["CHUNKED_UPLOAD_THRESHOLD", "DataCollectionClientMixin"]

#: Files larger than this use chunked upload (as in synapse-sdk).
CHUNKED_UPLOAD_THRESHOLD = 50 * 1024 * 1024


class DataCollectionClientMixin:
    """Data collections, data files and data units."""

    def list_data_collections(self) -> Any:
        return self._get("data_collections/")

    def get_data_collection(self, collection_id: int) -> dict[str, Any]:
        """The collection, with its file specifications expanded."""
        return self._get(f"data_collections/{collection_id}/", params={"expand": "file_specifications"})

    def create_data_file(
        self,
        file_path: str | os.PathLike[str],
        *,
        use_chunked_upload: bool | None = None,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Upload a file and register it as a data file: ``{"id", "file", "checksum", "size"}``.

        ``use_chunked_upload``: True or False to force the method; None picks
        chunked upload above ``CHUNKED_UPLOAD_THRESHOLD`` bytes. A path-like
        object that is not a local path (``zipfile.Path``, a remote path with
        ``exists()``, ``read_bytes()`` and ``name``) is read into memory and
        posted whole, as synapse-sdk does.
        """
        timeout = self.timeout.with_read(read_timeout)
        if not isinstance(file_path, (str, os.PathLike)):
            if not file_path.exists():
                raise FileNotFoundError(f"File not found: {file_path}")
            content = file_path.read_bytes()
            record = self._post("data_files/", files={"file": (file_path.name, content)}, timeout=timeout)
            _check_checksum(record, hashlib.md5(content).hexdigest(), file_path)
            return record
        path = Path(file_path)
        if not path.exists():
            raise FileNotFoundError(f"File not found: {path}")
        if use_chunked_upload is None:
            use_chunked_upload = path.stat().st_size > CHUNKED_UPLOAD_THRESHOLD
        if use_chunked_upload:
            upload = self.create_chunked_upload(path, read_timeout=read_timeout)
            return self._post("data_files/", data={"chunked_upload": upload["id"]}, timeout=timeout)
        return self._post_file("data_files/", path, timeout=timeout)

    def _post_file(self, url: str, path: Path, *, timeout: Any = None) -> Any:
        """POST one file as multipart ``file``, streamed from the page cache.

        The bytes are hashed as they are sent, and the server's ``checksum``
        (when it answers one) must match.
        """
        sent: list[engine.Md5] = []

        def hashed_pieces(source: MappedFile):
            md5 = engine.Md5()  # per attempt: a retried request hashes from the start again
            sent.append(md5)
            # Copies: the bytes hashed are the bytes sent, and a file that shrinks is an error, not SIGBUS.
            for piece in source.copies(0, source.size):
                md5.update(piece)
                yield piece

        with MappedFile(path) as source:
            body = MultipartBody(
                {},
                file_field="file",
                file_name=path.name,
                file_length=source.size,
                file_parts=lambda: hashed_pieces(source),
            )
            headers = {"Content-Type": body.content_type, "Content-Length": str(len(body))}
            record = self._request("POST", url, body=body, headers=headers, timeout=timeout)
            source.check_unchanged()
        if sent:
            _check_checksum(record, sent[-1].hexdigest(), path)
        return record

    def get_data_unit(self, unit_id: int, *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._get(f"data_units/{unit_id}/", params=params)

    def list_data_units(
        self,
        params: dict[str, Any] | None = None,
        *,
        url_conversion: dict[str, Any] | None = None,
        list_all: bool = False,
        page_size: int = 100,
        timeout: int = 60,
    ) -> Any:
        """Data units, their ``files`` downloaded (each file's ``url`` becomes a local ``path``).

        As in synapse-sdk: one page (``{"count", "next", "previous",
        "results"}``), or with ``list_all`` a ``(generator, count)`` pair that
        walks every page. ``url_conversion`` defaults to ``{"files_fields":
        ["files"], "is_list": True}`` (``{}`` to keep the URLs); ``timeout``
        is the read timeout of each page, whose files download concurrently.
        ``params`` filter (e.g. ``{"data_collection": 1}``); it is not changed.
        """
        if url_conversion is None:
            url_conversion = {"files_fields": ["files"], "is_list": True}
        query = {"page_size": page_size, **(params or {})}
        return self._list(
            "data_units/",
            params=query,
            url_conversion=url_conversion,
            list_all=list_all,
            timeout=(self.timeout["connect"], timeout),
        )

    def create_data_units(self, data: dict[str, Any] | list[dict[str, Any]]) -> Any:
        """Bind uploaded files to a collection: one unit or a list of them."""
        return self._post("data_units/", data=data)

    def verify_data_files_checksums(self, checksums: list[str]) -> dict[str, Any]:
        """Which of these MD5 checksums the server already holds."""
        # A question, not a create: safe to ask again when an answer is lost.
        return self._post("data_files/verify_checksums/", data={"checksums": checksums}, idempotent=True)

    def upload_data_file(
        self,
        data: dict[str, Any],
        collection_id: int,
        *,
        use_chunked_upload: bool | None = None,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Upload a unit's files; returns the unit's definition for ``create_data_units``.

        ``data`` is ``{"files": {name: path}, "meta": {...}, "groups": ...}``.
        """
        files: dict[str, dict[str, str]] = {}
        for name, file_path in data.get("files", {}).items():
            path = Path(file_path)
            uploaded = self.create_data_file(path, use_chunked_upload=use_chunked_upload, read_timeout=read_timeout)
            files[name] = {"checksum": uploaded["checksum"], "path": str(path)}
        payload: dict[str, Any] = {"files": files, "data_collection": collection_id, "meta": data.get("meta", {})}
        groups = data.get("groups")
        if groups:
            # A single name is one group, not a list of its letters.
            payload["groups"] = [groups] if isinstance(groups, str) else list(groups)
        return payload

    def upload_data_collection(
        self,
        collection_id: int,
        data: list[dict[str, Any]],
        *,
        project_id: int | None = None,
        batch_size: int = 1000,
        max_workers: int = 10,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        """Upload every unit's files in parallel, then create the units in batches.

        Returns the created units. With ``project_id``, a task is created for each.
        """
        if batch_size < 1 or max_workers < 1:
            raise ValueError("batch_size and max_workers must be at least 1")
        prepared: list[dict[str, Any]] = []
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="data-file") as pool:
            futures = [pool.submit(self.upload_data_file, item, collection_id) for item in data]
            for done, future in enumerate(as_completed(futures), 1):
                prepared.append(future.result())
                if on_progress is not None:
                    on_progress(done, len(data))
        created: list[Any] = []
        for start in range(0, len(prepared), batch_size):
            units = self.create_data_units(prepared[start : start + batch_size])
            units = units.get("results", [units]) if isinstance(units, dict) else units
            created.extend(units)
            if project_id is not None and units:
                self._post("tasks/", data={"project": project_id, "data": [{"data_unit": u["id"]} for u in units]})
        return created


def _check_checksum(record: Any, md5: str, path: object) -> None:
    """The server's ``checksum`` (when it answers one) must be the MD5 of the bytes sent."""
    checksum = record.get("checksum") if isinstance(record, dict) else None
    if isinstance(checksum, str) and checksum.lower() != md5:
        raise UploadIntegrityError(f"server stored {path} with MD5 {checksum}, the bytes sent hash to another")

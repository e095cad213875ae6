"""The JSON records the reference server answers with, and the pages of its lists.

One function per kind (an upload, a data file, a collection, a unit, a
model, a task) turns the stored value into the record clients read, with
timestamps in UTC ISO 8601 (``Z``). ``paging`` reads a list request's
``?page=`` and ``?page_size=``; ``paginated`` wraps one page of records as
Django REST framework's page-number pagination does. Records that need a
signed URL to a file (a model's, a unit's files) are finished by the
catalog's handlers, which hold the signer; nothing here reads a store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from engine import wire
from synapse_sdk.server.catalog import Collection, DataFile, DataUnit, Model, Task
from synapse_sdk.server.request import HttpError, base_url
from synapse_sdk.server.storage import Upload

__all__ = [
    "MAX_PAGE_SIZE",
    "PAGE_SIZE",
    "collection_record",
    "data_file_record",
    "expanded",
    "model_record",
    "paginated",
    "paging",
    "task_record",
    "timestamp",
    "unit_record",
    "upload_record",
]

#: Page sizes of the paginated lists: the default, and the most a request may ask for.
PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000


def upload_record(environ: Mapping[str, Any], upload: Upload) -> dict[str, object]:
    """A chunked upload as PROTOCOL.md answers it; a complete one also names its file, checksum and size."""
    record: dict[str, object] = {
        wire.ID: upload.id,
        wire.URL: f"{base_url(environ)}/{wire.COLLECTION}/{upload.id}/",
        wire.OFFSET: upload.offset,
        wire.FILENAME: upload.filename,
        "status": upload.status,
        "created_at": timestamp(upload.created_at),
        wire.COMPLETED_AT: timestamp(upload.completed_at),
        "expires_at": timestamp(upload.expires_at),
    }
    if upload.received:  # chunks stored out of order, past the offset (an extension: absent when none)
        record[wire.RECEIVED] = [list(byte_range) for byte_range in upload.received]
    if upload.complete:
        record.update(file=str(upload.path), checksum=upload.checksum, size=upload.total)
    return record


def data_file_record(data_file: DataFile) -> dict[str, object]:
    return {
        "id": data_file.id,
        "file": str(data_file.path),
        "checksum": data_file.checksum,
        "size": data_file.size,
        "created_at": timestamp(data_file.created_at),
    }


def collection_record(collection: Collection, expand: bool) -> dict[str, object]:
    """The collection; its file specifications as names, or (``expand``) as whole objects."""
    specs = collection.file_specifications
    return {
        "id": collection.id,
        "name": collection.name,
        "file_specifications": [
            {"name": spec.name, "is_required": spec.is_required, "file_type": spec.file_type} if expand else spec.name
            for spec in specs
        ],
        "created_at": timestamp(collection.created_at),
    }


def expanded(environ: Mapping[str, Any]) -> bool:
    """Whether ``?expand=`` (comma-separated, repeatable) names ``file_specifications``."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return any("file_specifications" in value.split(",") for key, value in query if key == "expand")


def unit_record(unit: DataUnit) -> dict[str, object]:
    return {
        "id": unit.id,
        "data_collection": unit.data_collection,
        "files": unit.files,
        "meta": unit.meta,
        "groups": unit.groups,
        "created_at": timestamp(unit.created_at),
    }


def model_record(model: Model) -> dict[str, object]:
    """The model with its fields; its ``file`` is the stored path (the handlers sign a URL in its place)."""
    return {
        "id": model.id,
        "name": model.name,
        **model.fields,
        "file": str(model.path),
        "checksum": model.checksum,
        "size": model.size,
        "created_at": timestamp(model.created_at),
    }


def task_record(task: Task) -> dict[str, object]:
    return {"id": task.id, "project": task.project, "data_unit": task.data_unit}


def paging(environ: Mapping[str, Any]) -> tuple[int, int, dict[str, str]]:
    """``?page=`` (from 1) and ``?page_size=`` of a list request, and its whole query."""
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    page_text, size_text = query.get("page", "1"), query.get("page_size", str(PAGE_SIZE))
    if not page_text.isdigit() or not 1 <= int(page_text) <= 10**9:
        raise HttpError(400, f"page must be a page number from 1, not {page_text[:40]!r}")
    if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
        raise HttpError(400, f"page_size must be a number from 1 to {MAX_PAGE_SIZE}, not {size_text[:40]!r}")
    return int(page_text), int(size_text), query


def paginated(environ: Mapping[str, Any], page: int, size: int, count: int, results: list[object]) -> dict[str, object]:
    """One page as Django REST framework's page-number pagination answers it: count, next, previous, results."""
    last = max(1, math.ceil(count / size))
    if page > last:
        raise HttpError(404, "Invalid page.")
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    here = base_url(environ) + environ.get("PATH_INFO", "")

    def link(number: int) -> str:
        rest = [(key, value) for key, value in query if key != "page"]
        return f"{here}?{urlencode([*rest, ('page', str(number))])}"

    return {
        "count": count,
        "next": link(page + 1) if page < last else None,
        "previous": link(page - 1) if page > 1 else None,
        "results": results,
    }


def timestamp(moment: datetime | None) -> str | None:
    """``moment`` in UTC as ISO 8601 with ``Z``; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

"""The handlers of the routes around the upload: data files, data collections, data units, models, tasks.

``CatalogHandlers`` reads each request (``catalog_input`` checks its form),
asks the ``Catalog`` to read or write the owner's records, and answers them
as ``records`` shapes them, a file's bytes as a signed URL (``media``). A
file posted whole, or a ``chunked_upload`` id, goes through the upload
handlers. ("Around the upload" in PROTOCOL.md.)

It never reveals another owner's record: one the owner lacks is ``404``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from engine import wire
from synapse_sdk.server.catalog import Catalog, DataUnit, Model
from synapse_sdk.server.catalog_input import (
    check_depth,
    parse_checksums,
    parse_collection,
    parse_model,
    parse_tasks,
    parse_units,
)
from synapse_sdk.server.media import MediaSigner
from synapse_sdk.server.multipart import parse_options_header
from synapse_sdk.server.records import (
    collection_record,
    data_file_record,
    expanded,
    model_record,
    paginated,
    paging,
    task_record,
    unit_record,
)
from synapse_sdk.server.request import (
    DECIMAL_ID,
    Form,
    Handler,
    HttpError,
    Payload,
    Request,
    base_url,
    read_fields,
    read_json,
)
from synapse_sdk.server.storage import UploadStore
from synapse_sdk.server.upload_handlers import UploadHandlers
from synapse_sdk.server.upload_input import md5_field

__all__ = ["CatalogHandlers"]

_Record = TypeVar("_Record")


class CatalogHandlers:
    """The catalog's routes over ``catalog``; files of models and units are handed out signed by ``signer``."""

    def __init__(self, store: UploadStore, catalog: Catalog, signer: MediaSigner, uploads: UploadHandlers) -> None:
        self._store = store
        self._catalog = catalog
        self._signer = signer
        self._uploads = uploads

    def routes(self) -> dict[str, tuple[dict[str, Handler], dict[str, Handler]]]:
        """Per kind of record (its path segment): the handlers of its list URL and of an item's URL."""
        return {
            "data_files": ({"POST": self.create_data_file}, {"GET": self.get_data_file}),
            "data_collections": (
                {"GET": self.list_collections, "POST": self.create_collection},
                {"GET": self.get_collection},
            ),
            "data_units": (
                {"GET": self.list_data_units, "POST": self.create_data_units},
                {"GET": self.get_data_unit},
            ),
            "models": ({"GET": self.list_models, "POST": self.create_model}, {"GET": self.get_model}),
            "tasks": ({"POST": self.create_tasks}, {"GET": self.get_task}),
        }

    # -- data files --------------------------------------------------------------

    def create_data_file(self, request: Request) -> tuple[int, Payload]:
        kind, _ = parse_options_header(request.environ.get("CONTENT_TYPE", ""))
        if kind == "multipart/form-data":
            # A small file posted whole is stored as a complete upload of its own.
            form, upload = self._uploads.store_whole(request, _check_whole_data_file)
            fields: Mapping[str, object] = form.fields
        else:
            upload, fields = None, read_fields(request)
        if upload is None:
            if "chunked_upload" not in fields:
                detail = "give 'chunked_upload' (the id of a complete chunked upload) or a multipart 'file' part"
                raise HttpError(400, detail)
            upload = self._uploads.complete_upload(request, fields["chunked_upload"])
        return 201, data_file_record(self._catalog.add_data_file(request.owner, upload))

    def get_data_file(self, request: Request) -> tuple[int, Payload]:
        return 200, data_file_record(_found(self._catalog.data_file(request.owner, _item(request))))

    def verify_checksums(self, request: Request) -> tuple[int, Payload]:
        checksums = parse_checksums(read_json(request))
        held = self._catalog.held_checksums(request.owner, {checksum.lower() for checksum in checksums})
        return 200, {
            "checksums": [checksum for checksum in checksums if checksum.lower() in held],
            "missing": [checksum for checksum in checksums if checksum.lower() not in held],
        }

    # -- data collections ----------------------------------------------------------

    def list_collections(self, request: Request) -> tuple[int, Payload]:
        expand = expanded(request.environ)
        results: list[object] = [collection_record(each, expand) for each in self._catalog.collections(request.owner)]
        return 200, {"count": len(results), "results": results}

    def get_collection(self, request: Request) -> tuple[int, Payload]:
        collection = _found(self._catalog.collection(request.owner, _item(request)))
        return 200, collection_record(collection, expanded(request.environ))

    def create_collection(self, request: Request) -> tuple[int, Payload]:
        name, specs = parse_collection(read_json(request))
        return 201, collection_record(self._catalog.add_collection(request.owner, name, specs), expand=True)

    # -- data units ----------------------------------------------------------------

    def create_data_units(self, request: Request) -> tuple[int, Payload]:
        units = self._catalog.add_data_units(request.owner, parse_units(read_json(request)))
        return 201, self._with_urls(request, units)

    def get_data_unit(self, request: Request) -> tuple[int, Payload]:
        unit = _found(self._catalog.data_unit(request.owner, _item(request)))
        return 200, self._with_urls(request, [unit])[0]

    def list_data_units(self, request: Request) -> tuple[int, Payload]:
        page, size, query = paging(request.environ)
        collection = query.get("data_collection")
        if collection is not None and not DECIMAL_ID.fullmatch(collection):
            raise HttpError(400, f"data_collection must be a collection id (a decimal number), not {collection[:40]!r}")
        number = None if collection is None else int(collection)
        count, units = self._catalog.data_units(request.owner, (page - 1) * size, size, number)
        return 200, paginated(request.environ, page, size, count, self._with_urls(request, units))

    def _with_urls(self, request: Request, units: list[DataUnit]) -> list[object]:
        """The units' records, each file with a signed ``url`` to its bytes."""
        checksums = [entry["checksum"] for unit in units for entry in unit.files.values()]
        uploads = self._catalog.uploads_by_checksum(request.owner, checksums)
        base = base_url(request.environ)
        records: list[object] = []
        for unit in units:
            record = unit_record(unit)
            record["files"] = {
                name: {**entry, "url": self._signer.url(base, uploads[entry["checksum"]], str(entry.get("path", name)))}
                if entry["checksum"] in uploads
                else entry
                for name, entry in unit.files.items()
            }
            records.append(record)
        return records

    # -- models ------------------------------------------------------------------

    def create_model(self, request: Request) -> tuple[int, Payload]:
        fields = read_fields(request)
        check_depth(fields)  # the fields are echoed in every answer about the model
        name, upload_id, kept = parse_model(fields)
        upload = self._uploads.complete_upload(request, upload_id)
        return 201, self._model_record(request, self._catalog.add_model(request.owner, name, upload, kept))

    def get_model(self, request: Request) -> tuple[int, Payload]:
        return 200, self._model_record(request, _found(self._catalog.model(request.owner, _item(request))))

    def list_models(self, request: Request) -> tuple[int, Payload]:
        page, size, _ = paging(request.environ)
        count = self._catalog.model_count(request.owner)
        models = self._catalog.models(request.owner, (page - 1) * size, size)
        return 200, paginated(request.environ, page, size, count, [self._model_record(request, m) for m in models])

    def _model_record(self, request: Request, model: Model) -> dict[str, object]:
        """The model's record, its ``file`` a signed URL to the bytes (as a backend hands out)."""
        upload = self._store.get(model.upload_id, request.owner)
        filename = upload.filename if upload is not None and upload.filename else model.name
        return {**model_record(model), "file": self._signer.url(base_url(request.environ), model.upload_id, filename)}

    # -- tasks -------------------------------------------------------------------

    def create_tasks(self, request: Request) -> tuple[int, Payload]:
        project, unit_ids = parse_tasks(read_json(request))
        return 201, [task_record(task) for task in self._catalog.add_tasks(request.owner, project, unit_ids)]

    def get_task(self, request: Request) -> tuple[int, Payload]:
        return 200, task_record(_found(self._catalog.task(request.owner, _item(request))))


def _check_whole_data_file(form: Form, md5: str) -> None:
    if "chunked_upload" in form.fields:
        raise HttpError(400, "give either a 'file' part or a 'chunked_upload' field, not both")
    # The md5 field is optional here; given, it is checked.
    if form.fields.get(wire.MD5) and md5_field(form.fields) != md5:
        raise HttpError(400, wire.CHECKSUM_DOES_NOT_MATCH)


def _item(request: Request) -> int:
    assert request.id is not None
    return request.id


def _found(record: _Record | None) -> _Record:
    if record is None:
        raise HttpError(404, "Not found.")
    return record

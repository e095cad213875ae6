"""The records around the upload, for the reference server: data files, collections, units, models, tasks.

They are tables in the store's SQLite database, created at start when
missing (a data directory from before them just gains them), and every
record belongs to one owner (user and tenant) like an upload. Data files and
models never hold bytes of their own: each refers to a complete upload, whose
file is theirs (a small file posted whole is stored as an upload first).

Ids are global and never reused, except for data collections: those are
numbered per owner, so that every owner has their own collection ``1``
("default"), made on the owner's first use of collections or units.

``Catalog`` takes the values ``catalog_input``'s parsers make of a request
(and raises its ``Invalid`` for a bad reference). It knows no HTTP, and a
request's references (a collection, a checksum, a unit) are checked inside
the transaction that writes, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

# The request-side names stay importable from here, as they were before catalog_input held them.
from synapse_sdk.server.catalog_input import (
    MAX_ITEMS,
    MAX_JSON_DEPTH,
    SERVER_MODEL_FIELDS,
    FileSpec,
    Invalid,
    NewUnit,
    check_depth,
    parse_checksums,
    parse_collection,
    parse_id,
    parse_model,
    parse_tasks,
    parse_units,
)
from synapse_sdk.server.storage import Owner, Upload, UploadStore

__all__ = [
    "DEFAULT_COLLECTION",
    "MAX_ITEMS",
    "MAX_JSON_DEPTH",
    "SERVER_MODEL_FIELDS",
    "Catalog",
    "Collection",
    "DataFile",
    "DataUnit",
    "FileSpec",
    "Invalid",
    "Model",
    "NewUnit",
    "Task",
    "check_depth",
    "parse_checksums",
    "parse_collection",
    "parse_id",
    "parse_model",
    "parse_tasks",
    "parse_units",
]

#: The number every owner's default collection has.
DEFAULT_COLLECTION: Final = 1

_DEFAULT_SPECS: Final = '[{"name": "primary", "is_required": false, "file_type": "any"}]'

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS data_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        tenant TEXT NOT NULL,
        upload_id INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS data_files_checksum ON data_files (user, tenant, checksum)",
    """CREATE TABLE IF NOT EXISTS data_collections (
        user TEXT NOT NULL,
        tenant TEXT NOT NULL,
        number INTEGER NOT NULL,
        name TEXT NOT NULL,
        file_specifications TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (user, tenant, number)
    )""",
    """CREATE TABLE IF NOT EXISTS data_units (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        tenant TEXT NOT NULL,
        collection INTEGER NOT NULL,
        files TEXT NOT NULL,
        meta TEXT NOT NULL,
        groups TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS models (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        upload_id INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        size INTEGER NOT NULL,
        fields TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        tenant TEXT NOT NULL,
        project INTEGER NOT NULL,
        data_unit INTEGER NOT NULL,
        created_at TEXT NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class Collection:
    """A data collection; ``id`` is its number among its owner's collections."""

    id: int
    name: str
    file_specifications: tuple[FileSpec, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DataFile:
    id: int
    path: Path | str  # a stored upload's file, or an object storage's URL (``s3://bucket/key``)
    checksum: str
    size: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DataUnit:
    id: int
    data_collection: int
    files: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    groups: list[Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Model:
    id: int
    name: str
    path: Path
    checksum: str
    size: int
    fields: dict[str, Any]  # the other fields the request gave, ``chunked_upload`` among them
    created_at: datetime
    upload_id: int = 0  # the complete upload whose file is the model's


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    project: int
    data_unit: int
    created_at: datetime


class Catalog:
    """The records of ``store``'s database; safe to share between threads (it uses the store's connection)."""

    def __init__(self, store: UploadStore) -> None:
        self._store = store
        with store.transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            # Data files confirmed in object storage (presigned uploads) have a location instead of an upload.
            if "location" not in {row[1] for row in db.execute("PRAGMA table_info(data_files)")}:
                db.execute("ALTER TABLE data_files ADD COLUMN location TEXT")

    # -- data files ----------------------------------------------------------

    def add_data_file(self, owner: Owner, upload: Upload) -> DataFile:
        """A new data file of ``owner`` whose bytes are the complete ``upload``'s file."""
        assert upload.complete and upload.checksum is not None
        now = _now()
        with self._store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO data_files (user, tenant, upload_id, checksum, size, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (owner.user, owner.tenant, upload.id, upload.checksum, upload.total, now.isoformat()),
            )
        assert cursor.lastrowid is not None
        return DataFile(cursor.lastrowid, upload.path, upload.checksum, upload.total, now)

    def add_stored_file(self, owner: Owner, location: str, checksum: str, size: int) -> DataFile:
        """A new data file of ``owner`` whose bytes are elsewhere (``location``: an object storage URL)."""
        now = _now()
        with self._store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO data_files (user, tenant, upload_id, checksum, size, created_at, location)"
                " VALUES (?, ?, 0, ?, ?, ?, ?)",
                (owner.user, owner.tenant, checksum, size, now.isoformat(), location),
            )
        assert cursor.lastrowid is not None
        return DataFile(cursor.lastrowid, location, checksum, size, now)

    def data_file(self, owner: Owner, file_id: int) -> DataFile | None:
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT id, upload_id, checksum, size, created_at, location FROM data_files"
                " WHERE id = ? AND user = ? AND tenant = ?",
                (file_id, owner.user, owner.tenant),
            ).fetchone()
        if row is None:
            return None
        file_id, upload_id, checksum, size, created, location = row
        path = location if location is not None else self._store.completed_path(upload_id)
        return DataFile(file_id, path, checksum, size, _time(created))

    def held_checksums(self, owner: Owner, checksums: Iterable[str]) -> set[str]:
        """Those of ``checksums`` (lower-case hex) that ``owner`` holds as data files."""
        with self._store.transaction() as db:
            return _held(db, owner, list(checksums))

    # -- data collections ------------------------------------------------------

    def collections(self, owner: Owner) -> list[Collection]:
        with self._store.transaction() as db:
            _ensure_default(db, owner)
            rows = db.execute(
                "SELECT number, name, file_specifications, created_at FROM data_collections"
                " WHERE user = ? AND tenant = ? ORDER BY number",
                (owner.user, owner.tenant),
            ).fetchall()
        return [_collection(row) for row in rows]

    def collection(self, owner: Owner, number: int) -> Collection | None:
        with self._store.transaction() as db:
            _ensure_default(db, owner)
            row = db.execute(
                "SELECT number, name, file_specifications, created_at FROM data_collections"
                " WHERE user = ? AND tenant = ? AND number = ?",
                (owner.user, owner.tenant, number),
            ).fetchone()
        return None if row is None else _collection(row)

    def add_collection(self, owner: Owner, name: str, specs: Iterable[FileSpec]) -> Collection:
        specs = tuple(specs)
        encoded = json.dumps([_spec_record(spec) for spec in specs])
        now = _now()
        with self._store.transaction() as db:
            _ensure_default(db, owner)
            query = "SELECT MAX(number) FROM data_collections WHERE user = ? AND tenant = ?"
            (number,) = db.execute(query, (owner.user, owner.tenant)).fetchone()
            number += 1
            db.execute(
                "INSERT INTO data_collections (user, tenant, number, name, file_specifications, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (owner.user, owner.tenant, number, name, encoded, now.isoformat()),
            )
        return Collection(number, name, specs, now)

    # -- data units ----------------------------------------------------------

    def add_data_units(self, owner: Owner, units: list[NewUnit]) -> list[DataUnit]:
        """Create all of ``units`` or, raising ``Invalid`` for the first bad reference, none."""
        now = _now()
        created = []
        with self._store.transaction() as db:
            _ensure_default(db, owner)
            query = "SELECT number FROM data_collections WHERE user = ? AND tenant = ?"
            collections = {number for (number,) in db.execute(query, (owner.user, owner.tenant))}
            wanted = [entry["checksum"] for unit in units for entry in unit.files.values()]
            held = _held(db, owner, wanted)
            for index, unit in enumerate(units):
                where = "" if len(units) == 1 else f"unit {index}: "
                if unit.data_collection not in collections:
                    raise Invalid(f"{where}data collection {unit.data_collection} not found")
                for name, entry in unit.files.items():
                    if entry["checksum"] not in held:
                        raise Invalid(
                            f"{where}file {name[:80]!r}: no data file with checksum {entry['checksum']}"
                            " (create it with POST data_files/ first)"
                        )
                files, meta, groups = json.dumps(unit.files), json.dumps(unit.meta), json.dumps(unit.groups)
                cursor = db.execute(
                    "INSERT INTO data_units (user, tenant, collection, files, meta, groups, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (owner.user, owner.tenant, unit.data_collection, files, meta, groups, now.isoformat()),
                )
                unit_id = cursor.lastrowid
                assert unit_id is not None
                created.append(DataUnit(unit_id, unit.data_collection, unit.files, unit.meta, unit.groups, now))
        return created

    def data_unit(self, owner: Owner, unit_id: int) -> DataUnit | None:
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT id, collection, files, meta, groups, created_at FROM data_units"
                " WHERE id = ? AND user = ? AND tenant = ?",
                (unit_id, owner.user, owner.tenant),
            ).fetchone()
        if row is None:
            return None
        unit_id, collection, files, meta, groups, created = row
        return DataUnit(unit_id, collection, json.loads(files), json.loads(meta), json.loads(groups), _time(created))

    def data_units(
        self, owner: Owner, offset: int = 0, limit: int | None = None, collection: int | None = None
    ) -> tuple[int, list[DataUnit]]:
        """How many units the owner has (in ``collection``, if given), and those of one page, in id order."""
        where = "user = ? AND tenant = ?" + ("" if collection is None else " AND collection = ?")
        args: tuple[Any, ...] = (owner.user, owner.tenant) + (() if collection is None else (collection,))
        with self._store.transaction() as db:
            (count,) = db.execute(f"SELECT COUNT(*) FROM data_units WHERE {where}", args).fetchone()
            rows = db.execute(
                f"SELECT id, collection, files, meta, groups, created_at FROM data_units WHERE {where}"
                " ORDER BY id LIMIT ? OFFSET ?",
                (*args, -1 if limit is None else limit, offset),
            ).fetchall()
        units = [
            DataUnit(unit_id, number, json.loads(files), json.loads(meta), json.loads(groups), _time(created))
            for unit_id, number, files, meta, groups, created in rows
        ]
        return count, units

    def uploads_by_checksum(self, owner: Owner, checksums: Iterable[str]) -> dict[str, int]:
        """For each of ``checksums`` the owner holds as a data file, the upload holding its bytes (the latest)."""
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT checksum, MAX(upload_id) FROM data_files WHERE user = ? AND tenant = ? AND location IS NULL"
                " AND checksum IN (SELECT value FROM json_each(?)) GROUP BY checksum",
                (owner.user, owner.tenant, json.dumps(sorted(set(checksums)))),
            ).fetchall()
        return dict(rows)

    # -- models --------------------------------------------------------------

    def add_model(self, owner: Owner, name: str, upload: Upload, fields: Mapping[str, Any]) -> Model:
        """A new model of ``owner`` whose file is the complete ``upload``'s; ``fields`` are kept as given."""
        assert upload.complete and upload.checksum is not None
        fields = dict(fields)
        now = _now()
        with self._store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO models (user, tenant, name, upload_id, checksum, size, fields, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner.user,
                    owner.tenant,
                    name,
                    upload.id,
                    upload.checksum,
                    upload.total,
                    json.dumps(fields),
                    now.isoformat(),
                ),
            )
        assert cursor.lastrowid is not None
        return Model(cursor.lastrowid, name, upload.path, upload.checksum, upload.total, fields, now, upload.id)

    def model(self, owner: Owner, model_id: int) -> Model | None:
        with self._store.transaction() as db:
            row = db.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = ? AND user = ? AND tenant = ?",
                (model_id, owner.user, owner.tenant),
            ).fetchone()
        return None if row is None else self._model(row)

    def models(self, owner: Owner, offset: int = 0, limit: int | None = None) -> list[Model]:
        """The owner's models in id order; ``offset``/``limit`` for one page."""
        with self._store.transaction() as db:
            rows = db.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE user = ? AND tenant = ? ORDER BY id LIMIT ? OFFSET ?",
                (owner.user, owner.tenant, -1 if limit is None else limit, offset),
            ).fetchall()
        return [self._model(row) for row in rows]

    def model_count(self, owner: Owner) -> int:
        with self._store.transaction() as db:
            query = "SELECT COUNT(*) FROM models WHERE user = ? AND tenant = ?"
            (count,) = db.execute(query, (owner.user, owner.tenant)).fetchone()
        return count

    def _model(self, row: tuple) -> Model:
        model_id, name, upload_id, checksum, size, fields, created = row
        path = self._store.completed_path(upload_id)
        return Model(model_id, name, path, checksum, size, json.loads(fields), _time(created), upload_id)

    # -- tasks ---------------------------------------------------------------

    def add_tasks(self, owner: Owner, project: int, unit_ids: list[int]) -> list[Task]:
        """One task per unit, all or (raising ``Invalid`` for a unit the owner lacks) none."""
        now = _now()
        created = []
        with self._store.transaction() as db:
            held = {
                unit_id
                for (unit_id,) in db.execute(
                    "SELECT id FROM data_units WHERE user = ? AND tenant = ?"
                    " AND id IN (SELECT value FROM json_each(?))",
                    (owner.user, owner.tenant, json.dumps(unit_ids)),
                )
            }
            for unit_id in unit_ids:
                if unit_id not in held:
                    raise Invalid(f"data unit {unit_id} not found")
                cursor = db.execute(
                    "INSERT INTO tasks (user, tenant, project, data_unit, created_at) VALUES (?, ?, ?, ?, ?)",
                    (owner.user, owner.tenant, project, unit_id, now.isoformat()),
                )
                assert cursor.lastrowid is not None
                created.append(Task(cursor.lastrowid, project, unit_id, now))
        return created

    def task(self, owner: Owner, task_id: int) -> Task | None:
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT id, project, data_unit, created_at FROM tasks WHERE id = ? AND user = ? AND tenant = ?",
                (task_id, owner.user, owner.tenant),
            ).fetchone()
        return None if row is None else Task(*row[:3], _time(row[3]))


_MODEL_COLUMNS: Final = "id, name, upload_id, checksum, size, fields, created_at"


def _ensure_default(db: sqlite3.Connection, owner: Owner) -> None:
    db.execute(
        "INSERT OR IGNORE INTO data_collections (user, tenant, number, name, file_specifications, created_at)"
        " VALUES (?, ?, ?, 'default', ?, ?)",
        (owner.user, owner.tenant, DEFAULT_COLLECTION, _DEFAULT_SPECS, _now().isoformat()),
    )


def _held(db: sqlite3.Connection, owner: Owner, checksums: list[str]) -> set[str]:
    # One parameter however many checksums: SQLite caps the number of parameters.
    rows = db.execute(
        "SELECT DISTINCT checksum FROM data_files WHERE user = ? AND tenant = ?"
        " AND checksum IN (SELECT value FROM json_each(?))",
        (owner.user, owner.tenant, json.dumps(checksums)),
    )
    return {checksum for (checksum,) in rows}


def _collection(row: tuple) -> Collection:
    number, name, specs, created = row
    return Collection(number, name, tuple(FileSpec(**spec) for spec in json.loads(specs)), _time(created))


def _spec_record(spec: FileSpec) -> dict[str, Any]:
    return {"name": spec.name, "is_required": spec.is_required, "file_type": spec.file_type}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)

"""What a request may ask of the catalog, checked: the ``parse_*`` functions and the values they make.

Each ``parse_*`` turns a request's decoded JSON (or form fields) into plain
values (``FileSpec``, ``NewUnit``, ids, checksums) or raises ``Invalid``
with a message that says what was wrong and what was expected. They check
form only: whether a referenced collection, checksum or unit exists is the
catalog's to check, inside the transaction that writes. No HTTP, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "MAX_ITEMS",
    "MAX_JSON_DEPTH",
    "SERVER_MODEL_FIELDS",
    "FileSpec",
    "Invalid",
    "NewUnit",
    "check_depth",
    "parse_checksums",
    "parse_collection",
    "parse_id",
    "parse_model",
    "parse_tasks",
    "parse_units",
]

#: Checksums per verify request, units and tasks per create request.
MAX_ITEMS: Final = 10_000
#: Nesting of a request's JSON (a unit's ``meta``, a model's fields): answers
#: echo it, and json.dumps recurses, so depth must stay far below the recursion limit.
MAX_JSON_DEPTH: Final = 64
#: Model fields the server sets; a request may not give them.
SERVER_MODEL_FIELDS: Final = frozenset({"id", "file", "checksum", "size", "created_at"})

# Ids stay inside SQLite's 64-bit integers, as the upload ids in URLs do.
_MAX_ID: Final = 10**18 - 1
_DIGITS: Final = re.compile(r"[0-9]{1,18}")
_HEX_MD5: Final = re.compile(r"[0-9a-fA-F]{32}")


class Invalid(ValueError):
    """A request's content is not acceptable; the message says what was wrong (a 400)."""


@dataclass(frozen=True, slots=True)
class FileSpec:
    name: str
    is_required: bool
    file_type: str


@dataclass(frozen=True, slots=True)
class NewUnit:
    """A unit as a request describes it, validated in form but not yet against the owner's records."""

    data_collection: int
    files: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    groups: list[Any]


def check_depth(value: object, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ``Invalid`` if decoded JSON nests lists and objects deeper than ``limit``."""
    # Iterative: a recursive walk would itself hit the recursion limit.
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise Invalid(f"the JSON body nests deeper than {limit} levels")
        pending.extend((child, depth + 1) for child in children)


def parse_id(name: str, value: object) -> int:
    """An id given as a JSON integer or a decimal string (as form fields are) of at most 18 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise Invalid(f"{name} must be an id: a whole number from 0 to {_MAX_ID}, not {_show(value)}")


def parse_checksums(body: object) -> list[str]:
    """``{"checksums": [md5 hex, ...]}`` → the checksums as given (at most ``MAX_ITEMS``)."""
    checksums = _field(_object(body, "the body"), "checksums", list, "a list of MD5 checksums")
    if len(checksums) > MAX_ITEMS:
        raise Invalid(f"checksums lists {len(checksums)} checksums; at most {MAX_ITEMS} per request")
    for index, checksum in enumerate(checksums):
        _checksum(f"checksums[{index}]", checksum)
    return checksums


def parse_collection(body: object) -> tuple[str, list[FileSpec]]:
    """``{"name", "file_specifications"?: [{"name", "is_required"?, "file_type"?}, ...]}``."""
    body = _object(body, "the body")
    name = _text("name", _field(body, "name", str, "a non-empty text"))
    raw_specs = body.get("file_specifications", [])
    if not isinstance(raw_specs, list):
        raise Invalid(f"file_specifications must be a list of objects, not {_show(raw_specs)}")
    if len(raw_specs) > MAX_ITEMS:
        raise Invalid(f"file_specifications lists more than {MAX_ITEMS} files")
    specs: list[FileSpec] = []
    for index, raw in enumerate(raw_specs):
        where = f"file_specifications[{index}]"
        raw = _object(raw, where)
        spec_name = _field(raw, "name", str, "a non-empty text", where)
        if any(spec.name == spec_name for spec in specs):
            raise Invalid(f"{where}: the file name {spec_name[:80]!r} is specified twice")
        required = raw.get("is_required", False)
        if not isinstance(required, bool):
            raise Invalid(f"{where}.is_required must be true or false, not {_show(required)}")
        file_type = raw.get("file_type", "any")
        if not isinstance(file_type, str) or not file_type:
            raise Invalid(f"{where}.file_type must be a non-empty text, not {_show(file_type)}")
        specs.append(FileSpec(spec_name, required, file_type))
    return name, specs


def parse_units(body: object) -> list[NewUnit]:
    """One unit object or a list of them (at most ``MAX_ITEMS``), each checked in form."""
    many = isinstance(body, list) and len(body) > 1  # name units by index only among several
    raw_units = body if isinstance(body, list) else [body]
    if not raw_units:
        raise Invalid("the body lists no data units")
    if len(raw_units) > MAX_ITEMS:
        raise Invalid(f"the body lists {len(raw_units)} data units; at most {MAX_ITEMS} per request")
    units = []
    for index, raw in enumerate(raw_units):
        where = f"unit {index}" if many else ""
        prefix = f"{where}: " if many else ""
        raw = _object(raw, where or "the body")
        collection = parse_id(f"{prefix}data_collection", _field(raw, "data_collection", object, "an id", where))
        raw_files = _field(raw, "files", dict, "an object of {name: {checksum, path}}", where)
        if not raw_files:
            raise Invalid(f"{prefix}files is empty; a unit needs at least one file")
        files = {}
        for name, entry in raw_files.items():
            if not name:
                raise Invalid(f"{prefix}a file name is empty")
            label = f"{prefix}files[{name[:80]!r}]"
            entry = _object(entry, label)
            checksum = _checksum(f"{label}.checksum", _field(entry, "checksum", str, "an MD5 checksum", label))
            _field(entry, "path", str, "a text", label)
            files[name] = {**entry, "checksum": checksum.lower()}
        meta = raw.get("meta", {})
        if not isinstance(meta, dict):
            raise Invalid(f"{prefix}meta must be an object, not {_show(meta)}")
        groups = raw.get("groups", [])
        if not isinstance(groups, list) or not all(_is_group(group) for group in groups):
            raise Invalid(f"{prefix}groups must be a list of names or ids, not {_show(groups)}")
        units.append(NewUnit(collection, files, meta, groups))
    return units


def parse_model(fields: Mapping[str, object]) -> tuple[str, int, dict[str, Any]]:
    """A model's ``name``, its ``chunked_upload`` id and the fields to keep (``chunked_upload`` among them)."""
    name = _text("name", _field(fields, "name", str, "a non-empty text"))
    if "chunked_upload" not in fields:
        raise Invalid("chunked_upload is required: the id of a complete chunked upload holding the model's file")
    upload_id = parse_id("chunked_upload", fields["chunked_upload"])
    for key in fields:
        if key in SERVER_MODEL_FIELDS:
            raise Invalid(f"{key!r} is set by the server; leave it out")
    kept = {key: value for key, value in fields.items() if key != "name"}
    kept["chunked_upload"] = upload_id
    return name, upload_id, kept


def parse_tasks(body: object) -> tuple[int, list[int]]:
    """``{"project": id, "data": [{"data_unit": id}, ...]}`` → the project and the unit ids."""
    body = _object(body, "the body")
    project = parse_id("project", _field(body, "project", object, "an id"))
    data = _field(body, "data", list, 'a list of {"data_unit": id}')
    if not data:
        raise Invalid("data is empty; give at least one data unit")
    if len(data) > MAX_ITEMS:
        raise Invalid(f"data lists {len(data)} data units; at most {MAX_ITEMS} per request")
    units = []
    for index, item in enumerate(data):
        where = f"data[{index}]"
        units.append(parse_id(f"{where}.data_unit", _field(_object(item, where), "data_unit", object, "an id", where)))
    return project, units


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be a JSON object, not {_show(value)}")
    return value


def _field(body: Mapping[str, Any], name: str, kind: type, expected: str, where: str = "") -> Any:
    prefix = f"{where}: " if where else ""
    if name not in body:
        raise Invalid(f"{prefix}{name} is required ({expected})")
    value = body[name]
    if not isinstance(value, kind) or (kind is str and not value and expected.startswith("a non-empty")):
        raise Invalid(f"{prefix}{name} must be {expected}, not {_show(value)}")
    return value


def _checksum(name: str, value: object) -> str:
    if not isinstance(value, str) or not _HEX_MD5.fullmatch(value):
        raise Invalid(f"{name} must be an MD5 checksum (32 hexadecimal digits), not {_show(value)}")
    return value


def _text(name: str, value: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which SQLite cannot store as
    # text; values stored inside JSON need no check (json.dumps escapes them).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{name} is not valid Unicode text (it holds a lone surrogate)") from None
    return value


def _is_group(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _show(value: object) -> str:
    """A short description of a value a request gave, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."

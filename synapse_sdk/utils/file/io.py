"""The SDK's temporary folder and its LRU cache of downloaded files, as synapse-sdk has them.

Downloads land in ``get_temp_path("media")`` (``/tmp/datamaker/media``, the
published SDK's folder, so both share one cache), named by the URL. When a
folder holds more than ``SYNAPSE_MAX_TEMP_FILES`` (default 2000) files, the
least recently used go, except files in use (``protect_temp_files``) and
unfinished downloads (``*.part``), which a later call resumes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import os
import threading
import time
from collections.abc import Container, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = [
    "DEFAULT_MAX_TEMP_FILES",
    "TEMP_ROOT",
    "decode_base64_data",
    "evict_temp_files",
    "get_temp_path",
    "is_base64_data",
    "protect_temp_file",
    "protect_temp_files",
    "touch",
    "unprotect_temp_file",
]

#: Where the SDK keeps temporary files (the published SDK's folder).
TEMP_ROOT = Path("/tmp/datamaker")
#: Files a cache folder keeps before the least recently used are removed.
DEFAULT_MAX_TEMP_FILES = 2000
#: Endings of an unfinished download's files (see ``engine.download``): never evicted.
_UNFINISHED = (".part", ".part.tag")

_active: set[Path] = set()
_active_lock = threading.Lock()


def get_temp_path(sub_path: str | None = None) -> Path:
    """``/tmp/datamaker``, or the folder ``sub_path`` under it (not created)."""
    return TEMP_ROOT / sub_path if sub_path else TEMP_ROOT


@contextmanager
def protect_temp_files(*paths: Path | str) -> Iterator[None]:
    """Keep ``paths`` from eviction while the block runs."""
    resolved = {Path(p).resolve() for p in paths if p}
    with _active_lock:
        _active.update(resolved)
    try:
        yield
    finally:
        with _active_lock:
            _active.difference_update(resolved)


def protect_temp_file(path: Path | str) -> None:
    """Keep ``path`` from eviction until ``unprotect_temp_file``."""
    if path:
        with _active_lock:
            _active.add(Path(path).resolve())


def unprotect_temp_file(path: Path | str) -> None:
    if path:
        with _active_lock:
            _active.discard(Path(path).resolve())


def _max_files() -> int:
    value = os.environ.get("SYNAPSE_MAX_TEMP_FILES", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_TEMP_FILES


def evict_temp_files(
    directory: Path | str, max_files: int | None = None, *, exclude: Container[Path | str] | None = None
) -> int:
    """Remove the least recently used files of ``directory`` beyond ``max_files``; returns how many went."""
    folder = Path(directory)
    limit = _max_files() if max_files is None else max_files
    try:
        entries = [entry for entry in folder.iterdir() if entry.is_file() and not entry.name.endswith(_UNFINISHED)]
    except OSError:
        return 0
    if len(entries) <= limit:
        return 0
    with _active_lock:
        active = set(_active)
    candidates: list[tuple[float, Path]] = []
    for entry in entries:
        if exclude is not None and (entry in exclude or entry.name in exclude or str(entry) in exclude):
            continue
        try:
            if entry.resolve() in active or (exclude is not None and entry.resolve() in exclude):
                continue
            stat = entry.stat()
        except OSError:
            continue  # removed meanwhile
        # atime where the mount keeps it; touch() sets it on every use either way.
        candidates.append((stat.st_atime, entry))
    candidates.sort(key=lambda item: item[0])
    evicted = 0
    # The folder goes down to the limit where it can: files in use count, but stay.
    for _, entry in candidates[: len(entries) - limit]:
        try:
            entry.unlink()
            evicted += 1
        except OSError:
            pass
    return evicted


def touch(path: Path) -> None:
    """Mark ``path`` as just used (its access time), for the LRU eviction."""
    with suppress(OSError):
        os.utime(path, (time.time(), path.stat().st_mtime))


def is_base64_data(data: object) -> bool:
    """Whether ``data`` is a ``data:`` URI rather than a URL."""
    return isinstance(data, str) and data.startswith("data:")


def decode_base64_data(data_uri: str, path_download: str | Path, name: str | None = None) -> Path:
    """Write a ``data:<mime>;base64,...`` URI's bytes to ``path_download`` and return the file.

    Named by ``name`` or the content's MD5, with the extension of its MIME
    type; a file of the same name already there is reused.
    """
    if not is_base64_data(data_uri) or "," not in data_uri:
        raise ValueError(f"not a base64 data URI (expected 'data:<mime>;base64,<data>'): {data_uri[:50]!r}")
    header, encoded = data_uri.split(",", 1)
    mime = header[len("data:") :].split(";")[0]
    try:
        content = base64.b64decode(encoded, validate=False)
    except binascii.Error as error:
        raise ValueError(f"the data URI's payload is not valid base64: {error}") from None
    stem = name or hashlib.md5(content).hexdigest()
    path = Path(path_download) / f"{stem}{mimetypes.guess_extension(mime) or ''}"
    if path.is_file():
        touch(path)
    else:
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(content)
        os.replace(partial, path)
    return path

"""Download helpers of synapse-sdk: ``download_file`` and the ``files_url_to_path*`` family.

Same names, parameters and cache as the published ones (a URL's file is
``/tmp/datamaker/media/<md5 of the URL without its query><suffix>``, so a
presigned URL whose signature changes still hits the cache), on
``engine.download``: the body is streamed to a ``.part`` file and renamed
when complete, a broken download resumes with ``Range``, failures are
retried by a ``RetryPolicy``, and connections come from a pool (the
client's, when a client asks). The ``a*`` variants run the same code in a
worker thread; ``is_async=True`` downloads a batch's files concurrently.

Additions: ``transport=`` and ``retry=`` (keyword-only) choose the pool and
the policy; by default a module-wide pool that honours the environment's
proxies and CA bundles, and ``RetryPolicy()`` shaped by synapse-sdk's
``SYNAPSE_DOWNLOAD_*`` variables where they are set.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from engine import retry as retrying
from engine.download import download, public_url
from engine.retry import RetryPolicy
from engine.transport import Transport
from synapse_sdk.utils.file.io import (
    decode_base64_data,
    evict_temp_files,
    get_temp_path,
    is_base64_data,
    protect_temp_files,
    touch,
)

__all__ = [
    "adownload_file",
    "afiles_url_to_path",
    "afiles_url_to_path_from_objs",
    "download_file",
    "download_json",
    "files_url_to_path",
    "files_url_to_path_from_objs",
]

T = TypeVar("T")

#: Files of one ``is_async`` batch downloaded at a time.
CONCURRENT_DOWNLOADS = 8

_shared: Transport | None = None
_shared_lock = threading.Lock()


def _default_transport() -> Transport:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Transport(timeout=(5.0, 30.0))
        return _shared


def _env_policy() -> tuple[RetryPolicy, bool]:
    """The retry policy and resume switch synapse-sdk's download environment variables ask for, where set.

    ``SYNAPSE_DOWNLOAD_MAX_RETRIES`` caps the attempts of a stall,
    ``SYNAPSE_DOWNLOAD_RECOVERY_CAP_SECONDS`` is the deadline without progress,
    ``SYNAPSE_DOWNLOAD_BACKOFF_BASE``/``_CAP`` the backoff, and
    ``SYNAPSE_DOWNLOAD_RANGE_RESUME=false`` turns resume off. Malformed values
    are ignored, as synapse-sdk ignores them.
    """
    options: dict[str, Any] = {}
    for variable, option, kind in (
        ("SYNAPSE_DOWNLOAD_MAX_RETRIES", "attempts", int),
        ("SYNAPSE_DOWNLOAD_RECOVERY_CAP_SECONDS", "deadline", float),
        ("SYNAPSE_DOWNLOAD_BACKOFF_BASE", "backoff", float),
        ("SYNAPSE_DOWNLOAD_BACKOFF_CAP", "cap", float),
    ):
        try:
            value = kind(os.environ[variable])
        except (KeyError, ValueError):
            continue
        if value > 0:
            options[option] = value
    resume = os.environ.get("SYNAPSE_DOWNLOAD_RANGE_RESUME", "").strip().lower() not in {"0", "false", "no", "off"}
    return RetryPolicy(**options), resume


def _cache_name(url: str) -> str:
    """The published cache key: MD5 of the URL without query and fragment, plus the path's suffix."""
    clean = public_url(url)
    return hashlib.md5(clean.encode("utf-8")).hexdigest() + Path(urlsplit(clean).path).suffix


def download_file(
    url: str,
    path_download: str | Path,
    *,
    name: str | None = None,
    coerce: Callable[[Path], T] | None = None,
    use_cached: bool = True,
    evict: bool = True,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
) -> Path | T:
    """Download ``url`` into the folder ``path_download`` and return the file's ``Path`` (or ``coerce(path)``).

    The file is named by the URL (``name``, without extension, names it
    instead and turns the cache off); with ``use_cached`` an existing file
    is returned without a request. ``evict`` trims the folder to its LRU
    limit afterwards. Raises the ``ClientError`` of a failed request (e.g.
    ``AuthorizationError`` for an expired presigned URL) once the retry
    policy gives up on it.

    >>> path = download_file('https://example.com/image.jpg', '/tmp/downloads')
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, not {type(url).__name__}")
    suffix = Path(urlsplit(public_url(url)).path).suffix
    if name:
        use_cached = False
        file_name = name + suffix
    else:
        file_name = _cache_name(url)
    folder = Path(path_download)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    with protect_temp_files(path):
        if use_cached and path.is_file():
            touch(path)
        else:
            policy, resume = _env_policy()
            download(transport or _default_transport(), url, path, retry=retry or policy, resume=resume)
            touch(path)
        if evict:
            evict_temp_files(folder, exclude={path})
    return coerce(path) if coerce else path


async def adownload_file(
    url: str,
    path_download: str | Path,
    *,
    name: str | None = None,
    coerce: Callable[[Path], T] | None = None,
    use_cached: bool = True,
    evict: bool = True,
) -> Path | T:
    """``download_file`` for asyncio code: the download runs in a worker thread."""
    return await asyncio.to_thread(
        download_file, url, path_download, name=name, coerce=coerce, use_cached=use_cached, evict=evict
    )


def download_json(url: str, *, timeout: int = 30) -> Any:
    """GET ``url`` (e.g. a presigned link to a JSON payload) and return it parsed."""
    answer = retrying.call(
        lambda: _default_transport().request("GET", url, timeout=(5.0, float(timeout))).raise_for_status(),
        RetryPolicy(),
        what=f"GET {public_url(url)}",
    )
    return answer.json()


def files_url_to_path(
    files: dict[str, Any],
    *,
    coerce: Callable[[Path], Any] | None = None,
    file_field: str | None = None,
    evict: bool = True,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
) -> None:
    """Replace, in place, each URL (or ``data:`` URI) of ``files`` with the downloaded file's ``Path``.

    A value that is a string becomes the path; a value that is a dict has
    its ``url`` replaced with ``path``. ``file_field`` limits the work to
    that key.
    """
    folder = get_temp_path("media")
    folder.mkdir(parents=True, exist_ok=True)
    slots = [(files, file_field)] if file_field else [(files, key) for key in list(files)]
    made = _resolve(_sources(slots), folder, coerce, transport, retry, concurrent=False)
    if evict:
        evict_temp_files(folder, exclude=made)


async def afiles_url_to_path(
    files: dict[str, Any], *, coerce: Callable[[Path], Any] | None = None, evict: bool = True
) -> None:
    """``files_url_to_path`` for asyncio code, the files downloaded concurrently in worker threads."""
    folder = get_temp_path("media")
    folder.mkdir(parents=True, exist_ok=True)
    sources = _sources([(files, key) for key in list(files)])
    made = await asyncio.to_thread(_resolve, sources, folder, coerce, None, None, concurrent=True)
    if evict:
        evict_temp_files(folder, exclude=made)


def files_url_to_path_from_objs(
    objs: dict[str, Any] | list[dict[str, Any]],
    files_fields: list[str],
    *,
    coerce: Callable[[Path], Any] | None = None,
    is_list: bool = False,
    is_async: bool = False,
    transport: Transport | None = None,
    retry: RetryPolicy | None = None,
) -> None:
    """For each object (``is_list``: each of a list), download the files named by ``files_fields``, in place.

    A field is a key or a dotted path (``"data.files"``) to either a URL
    (replaced with its ``Path``) or a dict of them (see
    ``files_url_to_path``); a field an object lacks is skipped.
    ``is_async`` downloads the files concurrently.
    """
    items = objs if is_list else [objs]
    folder = get_temp_path("media")
    folder.mkdir(parents=True, exist_ok=True)
    slots: list[tuple[dict[str, Any], str]] = []
    for obj in items:
        for files_field in files_fields:
            *parents, last = files_field.split(".")
            try:
                holder = reduce(operator.getitem, parents, obj)
                files = holder[last]
            except (KeyError, TypeError, IndexError):
                continue
            if isinstance(files, (str, dict)) and isinstance(holder, dict):
                slots.extend([(holder, last)] if isinstance(files, str) else [(files, key) for key in list(files)])
    made = _resolve(_sources(slots), folder, coerce, transport, retry, concurrent=is_async)
    evict_temp_files(folder, exclude=made)


async def afiles_url_to_path_from_objs(
    objs: dict[str, Any] | list[dict[str, Any]],
    files_fields: list[str],
    *,
    coerce: Callable[[Path], Any] | None = None,
    is_list: bool = False,
) -> None:
    """``files_url_to_path_from_objs`` for asyncio code (concurrent, in worker threads)."""
    await asyncio.to_thread(
        files_url_to_path_from_objs, objs, files_fields, coerce=coerce, is_list=is_list, is_async=True
    )


# A place to put a downloaded file: (the dict, its key, the URL, whether the value is a {url: ...} dict).
_Slot = tuple[dict[str, Any], str, str, bool]


def _sources(slots: Iterable[tuple[dict[str, Any], str]]) -> list[_Slot]:
    found: list[_Slot] = []
    for holder, key in slots:
        value = holder.get(key)
        if isinstance(value, str):
            found.append((holder, key, value, False))
        elif isinstance(value, dict) and isinstance(value.get("url"), str):
            found.append((holder, key, value["url"], True))
        # anything else (no URL, or already a Path) is left as it is
    return found


def _resolve(
    slots: list[_Slot],
    folder: Path,
    coerce: Callable[[Path], Any] | None,
    transport: Transport | None,
    retry: RetryPolicy | None,
    *,
    concurrent: bool,
) -> set[Path]:
    """Download (or decode) every slot's source once, put the results in place; returns the files made."""
    made: set[Path] = set()

    def fetch(source: str) -> Any:
        if is_base64_data(source):
            path = decode_base64_data(source, folder)
        else:
            path = download_file(source, folder, evict=False, transport=transport, retry=retry)
        made.add(path)  # the files this batch returns are kept from eviction, coerced or not
        return coerce(path) if coerce else path

    unique = list(dict.fromkeys(source for _, _, source, _ in slots))
    if concurrent and len(unique) > 1:
        with ThreadPoolExecutor(min(CONCURRENT_DOWNLOADS, len(unique)), thread_name_prefix="download") as pool:
            fetched = dict(zip(unique, pool.map(fetch, unique), strict=True))
    else:
        fetched = {source: fetch(source) for source in unique}
    for holder, key, source, is_entry in slots:
        if is_entry:
            entry = holder[key]
            entry.pop("url", None)
            entry["path"] = fetched[source]
        else:
            holder[key] = fetched[source]
    return made

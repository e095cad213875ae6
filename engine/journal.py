"""A durable local record of uploads in progress, so a later run can resume them.

One JSON entry per (server, file): the file's identity, the upload's ``url``,
the chunk size, the offset the server acknowledged, each sent chunk's xxh3-128
and, where the MD5 state can be saved (native engine), the whole file's MD5
state at that offset. Entries are written atomically (temp file, fsync,
rename, fsync of the folder), so a ``kill -9`` at any instant leaves either
the old entry or the new one; an entry that cannot be read is treated as
absent. A lock file keeps two processes from driving the same entry.

A second kind of entry, ``PresignedEntry``, records a multipart upload to
presigned object-storage URLs: the storage key, the multipart upload's id,
the part URLs and when they expire, and the ETag of every part that landed.
Those URLs carry signatures, so entries are written readable by their owner
only (mode 0600).

A journal is a convenience, never a reason to fail an upload: a folder that
cannot be written (a read-only home, a full disk) is said once in a warning
and the upload goes on without resume, and so does every upload on a
platform without ``fcntl`` (Windows). This module sends nothing and reads no
file contents.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.durable import fsync_dir
from engine.source import FileIdentity

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no journal
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "JournalEntry", "PresignedEntry", "default_journal_dir", "entry_from_json"]

log = logging.getLogger("synapse_sdk.upload")

VERSION = 1
_DISABLED = {"", "0", "off", "no", "false", "none"}

UNWRITABLE = "cannot write the resume journal (%s): uploads go on, not resumable"
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    """Log ``message`` the first time ``key`` comes up in this process."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def default_journal_dir() -> Path | None:
    """``$SYNAPSE_UPLOAD_JOURNAL`` (``off`` disables), else the user's cache folder."""
    configured = os.environ.get("SYNAPSE_UPLOAD_JOURNAL")
    if configured is not None:
        return None if configured.strip().lower() in _DISABLED else Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "synapse-upload" / "journal"


@dataclass
class JournalEntry:
    """Where one upload of one file stands."""

    server: str
    path: str
    identity: FileIdentity
    url: str
    upload_id: Any
    chunk_size: int
    offset: int = 0
    #: ``[start, end, xxh3-128 hex]`` of every chunk the server acknowledged.
    chunks: list[list[Any]] = field(default_factory=list)
    #: The whole file's MD5 state over ``[0, md5_offset)``, base64; None where it cannot be saved.
    md5_state: str | None = None
    md5_offset: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = VERSION
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JournalEntry:
        data = json.loads(text)
        if data.pop("version", None) != VERSION:
            raise ValueError("journal entry of another version")
        data["identity"] = FileIdentity(**data["identity"])
        return cls(**data)

    def md5_bytes(self) -> bytes | None:
        return None if self.md5_state is None else base64.b64decode(self.md5_state)


@dataclass
class PresignedEntry:
    """Where one multipart upload of one file to presigned object-storage URLs stands."""

    server: str
    path: str
    identity: FileIdentity
    file_key: str
    upload_id: str
    part_size: int
    #: ``[part_number, presigned URL]`` of every part, in the server's order.
    parts: list[list[Any]]
    #: When the part URLs stop working (ISO 8601, as the server said), or None if it did not say.
    expires_at: str | None = None
    #: ``{part_number (as text): ETag}`` of every part the storage acknowledged with the right MD5.
    done: dict[str, str] = field(default_factory=dict)

    KIND = "presigned"

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = VERSION
        data["kind"] = self.KIND
        return json.dumps(data, separators=(",", ":"))


def entry_from_json(text: str) -> JournalEntry | PresignedEntry:
    """The entry ``text`` holds, of whichever kind; ``ValueError``/``TypeError``/``KeyError`` if malformed."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("journal entry is not an object")
    kind = data.pop("kind", None)
    if kind is None:
        return JournalEntry.from_json(text)
    if kind != PresignedEntry.KIND or data.pop("version", None) != VERSION:
        raise ValueError(f"journal entry of another kind or version ({kind!r})")
    data["identity"] = FileIdentity(**data["identity"])
    return PresignedEntry(**data)


class Journal:
    """Journal entries under one folder."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def slot(self, server: str, path: str | os.PathLike[str]) -> JournalSlot | None:
        """The entry for ``path`` on ``server``, locked for this upload.

        None, and the upload goes on without resume, if another process holds
        it, if the folder cannot be written, or if the platform cannot lock.
        """
        if fcntl is None:
            _warn_once("fcntl", "no fcntl (file locks) here, so no resume journal: uploads are not resumable")
            return None
        absolute = os.path.abspath(path)
        key = _key(server, absolute)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.directory / f"{key}.lock", "a+b")  # noqa: SIM115 - held until release()
        except OSError as error:
            _warn_once(str(self.directory), UNWRITABLE, error)
            return None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            log.info("%s is being uploaded to %s by another process: not journaling this upload", absolute, server)
            return None
        # Holding the lock, no one else writes this entry: temp files left by a
        # writer that was killed mid-save are garbage.
        for stale in self.directory.glob(f"{key}.tmp*"):
            stale.unlink(missing_ok=True)
        return JournalSlot(self.directory / f"{key}.json", lock, server, absolute)

    def has_entry(self, server: str, path: str | os.PathLike[str]) -> bool:
        """Whether an entry for ``path`` on ``server`` exists: a look, no lock, no file made."""
        return fcntl is not None and (self.directory / f"{_key(server, os.path.abspath(path))}.json").exists()


def _key(server: str, absolute: str) -> str:
    return hashlib.sha256(f"{server}\0{absolute}".encode()).hexdigest()[:40]


class JournalSlot:
    """One locked entry: load it, save it, remove it."""

    def __init__(self, path: Path, lock: Any, server: str, file_path: str) -> None:
        self.path = path
        self.server = server
        self.file_path = file_path
        self._lock = lock
        #: False once a save failed: this upload goes on without resume.
        self.writable = True

    def load(self) -> JournalEntry | PresignedEntry | None:
        try:
            return entry_from_json(self.path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError, OSError) as error:
            log.warning("ignoring an unreadable journal entry %s: %s", self.path, error)
            self.remove()
            return None

    def save(self, entry: JournalEntry | PresignedEntry) -> None:
        """Record ``entry`` durably; if that fails (full disk...), warn once and stop journaling this upload."""
        if not self.writable:
            return
        temporary = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            # Owner-only: a presigned entry's URLs are credentials until they expire.
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w") as f:
                f.write(entry.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
            fsync_dir(self.path.parent)
        except OSError as error:
            self.writable = False
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            _warn_once(str(self.path.parent), UNWRITABLE, error)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

"""Secrets the reference server keeps in its data directory, so a restart voids nothing it handed out.

The access token ``serve`` makes when given none, and the key that signs media
URLs: after a restart on the same data directory, a client resuming its
upload still presents a valid token, and a signed URL stays good until it
expires. Each is a file readable by its owner only.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from engine.durable import fsync_dir

__all__ = ["kept_secret"]


def kept_secret(data_dir: str | os.PathLike[str], name: str, make: Callable[[], str]) -> str:
    """The secret in ``data_dir/name``; on first use ``make()`` makes it and it is written there.

    Two servers starting at once on a new directory agree: the first file
    linked into place wins, and the other reads it.
    """
    path = Path(data_dir) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(make() + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another server made it first: use theirs
                os.link(temp, path)
            fsync_dir(path.parent)
        finally:
            temp.unlink(missing_ok=True)
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise ValueError(f"{path} is empty: delete it, and the next start makes a new one")
    return secret

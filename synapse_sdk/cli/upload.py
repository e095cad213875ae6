"""``synapse-upload upload``: files, directories and globs, concurrently, with a summary.

With no ``--host`` it starts the reference server on loopback and uploads
there; with ``--ray [ADDRESS]`` the uploads run on Ray workers. Everything
a person can get wrong (a missing file, a directory without ``-r``, an
unreadable file, a server that cannot be reached, a bad token, Ray not
installed or not reachable) is one line on stderr and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from engine.errors import (
    AuthenticationError,
    ClientConnectionError,
    ClientError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from engine.retry import RetryPolicy
from synapse_sdk.cli.progress import ProgressDisplay, human_bytes

__all__ = ["UsageError", "check_server", "expand_paths", "ray_executor", "run_upload"]

#: Data units created per request when binding files to a collection.
UNIT_BATCH = 1000
#: Seconds the first request waits for a server that does not answer: a mistyped
#: host should be one quick line, while a long upload rides out long outages.
FIRST_CONTACT_PATIENCE = 10.0
#: Seconds between two "waiting:" lines for the same request and reason, as the progress lines go.
NOTICE_INTERVAL = 5.0


class UsageError(Exception):
    """Something on the command line that the user must fix."""


def expand_paths(arguments: list[str], *, recursive: bool) -> list[Path]:
    """Files named, matched by globs, or (with ``recursive``) found under directories."""
    files: list[Path] = []
    for text in arguments:
        if not os.path.exists(text) and glob.has_magic(text):
            candidates = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not candidates:
                raise UsageError(f"no file matches {text}")
        else:
            candidates = [Path(text)]
        for path in candidates:
            if not path.exists():
                raise UsageError(f"no such file: {path}")
            if path.is_dir():
                if not recursive:
                    raise UsageError(f"{path} is a directory: pass -r to upload the files under it")
                files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
            elif not path.is_file():
                raise UsageError(f"not a regular file: {path}")
            elif not os.access(path, os.R_OK):
                raise UsageError(f"cannot read {path}: permission denied")
            else:
                files.append(path)
    return files


def check_server(client: Any, host: str) -> None:
    """One cheap request, so an unreachable server or a bad token is one clear line, not N failures."""
    deadline = client.retry.deadline
    patience = FIRST_CONTACT_PATIENCE if deadline is None else min(deadline, FIRST_CONTACT_PATIENCE)
    try:
        client._get("chunked_upload/0/", retry=dataclasses.replace(client.retry, deadline=patience))
    except (NotFoundError, ValidationError):
        pass  # reached, and the token was accepted
    except AuthenticationError as error:
        raise UsageError(f"the server at {host} refused the access token (401): {error.detail}") from None
    except ClientConnectionError as error:
        raise UsageError(f"cannot reach the server at {host}: {error.detail}") from None
    except ServerError as error:
        raise UsageError(f"the server at {host} is failing ({error.status_code}): {error.detail}") from None


class RetryNotices(logging.Handler):
    """Shows the client's retry waits ("what it is waiting for") through the progress display.

    One line per request and reason every ``interval`` seconds: a file's
    parallel chunks all wait for the same server, and a line per connection
    and attempt would bury the bars.
    """

    def __init__(
        self, display: ProgressDisplay, interval: float = NOTICE_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(logging.WARNING)
        self.display = display
        self.interval = interval
        self.clock = clock
        self._shown: dict[tuple[str, str], float] = {}  # (request, reason) -> when last shown

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock: one thread at a time.
        message = record.getMessage()
        key = (getattr(record, "retry_what", message), getattr(record, "retry_reason", message))
        now = self.clock()
        if now - self._shown.get(key, -math.inf) >= self.interval:
            self._shown[key] = now
            self.display.note(f"waiting: {message}")


def _bind_to_collection(client: Any, collection_id: int, successful: list[dict[str, Any]]) -> list[Any]:
    """Register uploaded files as data files and bind each to a data unit of the collection."""
    collection = client.get_data_collection(collection_id)
    specifications = collection.get("file_specifications") or [{"name": "primary"}]
    name = specifications[0]["name"] if isinstance(specifications[0], dict) else str(specifications[0])
    units = []
    for entry in successful:
        data_file = client._post("data_files/", data={"chunked_upload": entry["result"]["id"]})
        path = Path(entry["file_path"])
        entry["data_file"] = data_file
        units.append(
            {
                "data_collection": collection_id,
                "files": {name: {"checksum": data_file["checksum"], "path": str(path)}},
                "meta": {"origin_file_stem": path.stem, "origin_file_extension": path.suffix},
            }
        )
    created: list[Any] = []
    for start in range(0, len(units), UNIT_BATCH):
        created.extend(client.create_data_units(units[start : start + UNIT_BATCH]))
    return created


def _summary(results: dict[str, Any], sent: int, seconds: float) -> list[str]:
    rate = sent / seconds if seconds > 0 else 0.0
    lines = [
        f"{len(results['successful'])} of {results['total']} files uploaded ({human_bytes(sent)} in {seconds:.1f} s,"
        f" {human_bytes(rate)}/s)"
        + (f", {len(results['skipped'])} already on the server" if results["skipped"] else "")
        + (f", {len(results['failed'])} failed:" if results["failed"] else "")
    ]
    lines += [f"  {r['file_path']}: {r['error']}" for r in results["failed"]]
    return lines


def _as_json(results: dict[str, Any], sent: int, seconds: float, units: list[Any] | None) -> str:
    def entry(r: dict[str, Any]) -> dict[str, Any]:
        out = {"path": str(r["file_path"]), "status": r["status"]}
        if "result" in r:
            record = r["result"]
            out.update(id=record.get("id"), checksum=record.get("checksum"), size=record.get("size"))
        if "duplicate_of" in r:
            out["duplicate_of"] = str(r["duplicate_of"])
        for key in ("error", "checksum"):
            if key in r:
                out[key] = r[key]
        if "data_file" in r:
            out["data_file"] = r["data_file"].get("id")
        return out

    document = {key: [entry(r) for r in results[key]] for key in ("successful", "failed", "skipped")} | {
        "total": results["total"],
        "bytes": sent,
        "seconds": round(seconds, 3),
    }
    if units is not None:
        document["data_units"] = [u.get("id") for u in units]
    return json.dumps(document, indent=2)


def ray_executor(address: str | bool) -> Any:
    """A connected ``RayExecutor`` (``True``: ``$RAY_ADDRESS``, a local cluster, or a new local Ray)."""
    try:
        from synapse_sdk.clients.backend.ray_executor import RayExecutor

        executor = RayExecutor(None if address is True else address)
    except ImportError as error:
        raise UsageError(str(error)) from None
    try:
        executor.connect()
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = "a local Ray" if address is True else f"Ray at {address}"
        raise UsageError(f"cannot connect to {where}: {error}") from None
    return executor


def run_upload(args: argparse.Namespace) -> int:
    from synapse_sdk.clients.backend import BackendClient
    from synapse_sdk.clients.backend.ray_executor import WorkerStartError  # Ray itself is imported only if used

    files = expand_paths(args.paths, recursive=args.recursive)
    executor = ray_executor(args.ray) if args.ray else None
    with ExitStack() as stack:
        host, token = args.host, args.token
        if not host:
            from synapse_sdk.server import ReferenceServer

            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="synapse-upload-")))
            token = secrets.token_urlsafe(16)
            host = stack.enter_context(ReferenceServer(data_dir, tokens={token: "local"})).base_url
            print(f"No --host given: uploading to a reference server at {host} (data in {data_dir})", file=sys.stderr)
        elif not token:
            raise UsageError("--token (or SYNAPSE_ACCESS_TOKEN) is required with --host")
        display = ProgressDisplay(sys.stderr, tty=sys.stderr.isatty())
        notices = RetryNotices(display)
        retry_log = logging.getLogger("synapse_sdk.retry")
        retry_log.addHandler(notices)
        stack.callback(retry_log.removeHandler, notices)
        client = stack.enter_context(
            BackendClient(
                host,
                access_token=token,
                tenant=args.tenant,
                journal=not args.no_resume,
                retry=RetryPolicy(deadline=args.retry_deadline),
                send_whole=not args.no_send_whole,
                parallel_chunks=args.parallel_chunks,
            )
        )
        check_server(client, host)
        started = time.monotonic()
        try:
            results = client.upload_files(
                files,
                concurrency=args.concurrency,
                chunk_size=args.chunk_size,
                skip_existing=args.skip_existing,
                on_progress=display,
                executor=executor,
            )
        except WorkerStartError as error:
            raise UsageError(str(error)) from None
        seconds = time.monotonic() - started
        display.close()
        sent = sum(r["result"].get("size") or Path(r["file_path"]).stat().st_size for r in results["successful"])
        units = None
        if args.data_collection is not None and results["successful"]:
            try:
                units = _bind_to_collection(client, args.data_collection, results["successful"])
            except ClientError as error:
                raise UsageError(
                    f"files uploaded, but binding them to collection {args.data_collection} failed: {error}"
                ) from None
        if args.json:
            print(_as_json(results, sent, seconds, units))
        else:
            for r in results["successful"]:
                record = r["result"]
                print(f"{r['file_path']}: id={record.get('id')} checksum={record.get('checksum')}")
        for line in _summary(results, sent, seconds):
            print(line, file=sys.stderr)
        if units is not None:
            print(f"{len(units)} data units created in collection {args.data_collection}", file=sys.stderr)
    return 1 if results["failed"] else 0

"""``synapse-upload``: upload files, or serve the reference server.

``synapse-upload upload FILE...`` sends files to the backend named by
``--host``/``SYNAPSE_HOST``; with no host it starts the reference server on
loopback in the background and uploads there, so it works out of the box.
Errors are one line a person can act on; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from engine.errors import ClientError
from engine.plan import DEFAULT_CHUNK_SIZE

__all__ = ["main"]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2}
_UNITS |= {"g": 1024**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """``"50MiB"``, ``"64k"``, ``"1048576"`` → bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a positive size: {text!r} (try 50MiB, 8M or 1048576)")
    return int(match.group(1)) * _UNITS[unit]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synapse-upload", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    upload = commands.add_parser("upload", help="upload files with chunked upload")
    upload.add_argument("paths", nargs="+", type=Path, metavar="FILE")
    upload.add_argument("--host", default=os.environ.get("SYNAPSE_HOST"), help="backend URL (env SYNAPSE_HOST)")
    upload.add_argument("--token", default=os.environ.get("SYNAPSE_ACCESS_TOKEN"), help="env SYNAPSE_ACCESS_TOKEN")
    upload.add_argument("--tenant", default=os.environ.get("SYNAPSE_TENANT"), help="env SYNAPSE_TENANT")
    upload.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE, help="default 50MiB")
    upload.add_argument("--json", action="store_true", help="print results as JSON")

    # The server's parsers, imported only when a server flag is used: importing
    # the server (cheroot, SQLite) would slow every `upload` down.
    def parse_rate(text: str) -> float:
        from synapse_sdk.server.limits import parse_rate

        return parse_rate(text)

    def parse_duration(text: str):  # -> timedelta
        from synapse_sdk.server.limits import parse_duration

        return parse_duration(text)

    serve = commands.add_parser("serve", help="run the reference chunked-upload server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0: any free port (the URL printed names it)")
    serve.add_argument("--data-dir", type=Path, default=Path("synapse-data"))
    serve.add_argument("--token", default=None, help="access token to accept (default: a random one)")
    serve.add_argument("--max-size", type=parse_size, default=None, help="largest file, e.g. 10GiB (413 above)")
    serve.add_argument("--quota", type=parse_size, default=None, help="bytes of all uploads per user (507 above)")
    serve.add_argument("--rate-limit", type=parse_rate, default=None, help="requests per token, e.g. 20/s (429)")
    serve.add_argument("--rate-burst", type=int, default=None, help="requests at once (default: one second's)")
    serve.add_argument("--expire-after", type=parse_duration, default="1d", help="open uploads expire (410)")
    serve.add_argument("--certfile", type=Path, default=None, help="PEM certificate: serve HTTPS")
    serve.add_argument("--keyfile", type=Path, default=None, help="PEM private key of --certfile")

    cleanup = commands.add_parser("cleanup", help="delete the reference server's expired open uploads")
    cleanup.add_argument("--data-dir", type=Path, default=Path("synapse-data"), help="of a stopped server")
    cleanup.add_argument("--expire-after", type=parse_duration, default="1d", help="age of an expired upload")
    return parser


def _upload(args: argparse.Namespace) -> int:
    from synapse_sdk.clients.backend import BackendClient

    for path in args.paths:
        if not path.exists():
            raise SystemExit(f"synapse-upload: no such file: {path}")
        if not path.is_file():
            raise SystemExit(f"synapse-upload: not a regular file: {path}")
    with ExitStack() as stack:
        host, token = args.host, args.token
        if not host:
            from synapse_sdk.server import ReferenceServer

            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="synapse-upload-")))
            token = secrets.token_urlsafe(16)
            server = stack.enter_context(ReferenceServer(data_dir, tokens={token: "local"}))
            host = server.base_url
            print(f"No --host given: uploading to a reference server at {host} (data in {data_dir})", file=sys.stderr)
        elif not token:
            raise SystemExit("synapse-upload: --token (or SYNAPSE_ACCESS_TOKEN) is required with --host")
        client = stack.enter_context(BackendClient(host, access_token=token, tenant=args.tenant))
        results = []
        for path in args.paths:
            started = time.perf_counter()
            record = client.create_chunked_upload(path, chunk_size=args.chunk_size, on_progress=_progress(path))
            seconds = time.perf_counter() - started
            size = path.stat().st_size
            results.append(
                {
                    "path": str(path),
                    "id": record.get("id"),
                    "checksum": record.get("checksum"),
                    "size": size,
                    "seconds": round(seconds, 3),
                }
            )
            if not args.json:
                rate = size / seconds / 1e6 if seconds > 0 else float("inf")
                print(f"{path}: id={record.get('id')} checksum={record.get('checksum')} size={size} ({rate:.0f} MB/s)")
        if args.json:
            print(json.dumps(results, indent=2))
    return 0


def _progress(path: Path):
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{path.name}: {done / max(total, 1):6.1%} of {total / 1e6:.1f} MB", end=end, file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from synapse_sdk.server.runner import run_forever

            if (args.certfile is None) != (args.keyfile is None):
                raise SystemExit("synapse-upload: --certfile and --keyfile go together")
            rate_limit = None
            if args.rate_limit is not None:
                rate_limit = (args.rate_limit, args.rate_burst or max(1, int(args.rate_limit)))
            run_forever(
                args.host,
                args.port,
                args.data_dir,
                token=args.token,
                max_upload_size=args.max_size,
                quota=args.quota,
                rate_limit=rate_limit,
                expire_after=args.expire_after,
                certfile=args.certfile,
                keyfile=args.keyfile,
            )
            return 0
        if args.command == "cleanup":
            from synapse_sdk.server.runner import run_cleanup

            run_cleanup(args.data_dir, args.expire_after)
            return 0
        return _upload(args)
    except (ClientError, OSError, ValueError) as error:
        if args.debug:
            raise
        print(f"synapse-upload: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("synapse-upload: interrupted", file=sys.stderr)
        return 130

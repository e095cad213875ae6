"""``synapse-upload``: upload files, serve the reference server, or clean it up.

``synapse-upload upload PATH...`` sends files to the backend named by
``--host``/``SYNAPSE_HOST``; with no host it starts the reference server on
loopback in the background and uploads there, so it works out of the box.
Errors are one line a person can act on; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.errors import ClientError
from engine.plan import DEFAULT_CHUNK_SIZE
from synapse_sdk.cli.arguments import parse_concurrency, parse_size, positive_float, positive_int
from synapse_sdk.cli.upload import UsageError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synapse-upload", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    upload = commands.add_parser("upload", help="upload files, directories (-r) and globs")
    # PATH is checked in main(): "--ray PATH" would otherwise take the path for the address.
    upload.add_argument("paths", nargs="*", metavar="PATH", help="files, directories with -r, or globs ('data/*.zip')")
    upload.add_argument("-r", "--recursive", action="store_true", help="upload the files under directories")
    upload.add_argument("--host", default=os.environ.get("SYNAPSE_HOST"), help="backend URL (env SYNAPSE_HOST)")
    upload.add_argument("--token", default=os.environ.get("SYNAPSE_ACCESS_TOKEN"), help="env SYNAPSE_ACCESS_TOKEN")
    upload.add_argument("--tenant", default=os.environ.get("SYNAPSE_TENANT"), help="env SYNAPSE_TENANT")
    upload.add_argument(
        "--concurrency",
        type=parse_concurrency,
        default="auto",
        metavar="N|auto",
        help="files in flight at once, or auto: adapt to the round trip and throughput (default auto)",
    )
    upload.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE, help="default 50MiB")
    upload.add_argument("--no-resume", action="store_true", help="do not journal or resume unfinished uploads")
    upload.add_argument("--skip-existing", action="store_true", help="skip files whose MD5 the server holds")
    upload.add_argument("--data-collection", type=positive_int, metavar="ID", help="bind files to data units")
    upload.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    upload.add_argument(
        "--parallel-chunks",
        type=positive_int,
        default=4,
        metavar="N",
        help="chunks of one file at once where the server takes them out of order (default 4; 1: one at a time)",
    )
    upload.add_argument(
        "--no-send-whole",
        action="store_true",
        help="send a file of one chunk as a chunk and a finalize, not in one POST",
    )
    upload.add_argument(
        "--retry-deadline",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="how long a request keeps retrying a server that is down, without progress (default 300)",
    )
    upload.add_argument(
        "--ray",
        nargs="?",
        const=True,
        metavar="ADDRESS",
        help="upload on Ray workers: a local Ray, or the cluster at ADDRESS ('auto', host:port, ray://...);"
        " paths must be readable on every node (--concurrency is per worker)",
    )
    upload.set_defaults(usage_error=upload.error)

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
    serve.add_argument(
        "--discard", action="store_true", help="benchmarks only: check the protocol, count bytes, store nothing"
    )
    serve.add_argument(
        "--parallel-chunks",
        type=positive_int,
        default=8,
        metavar="N",
        help="chunks of one upload taken at once, out of order (default 8; 1: in order only, as drf-chunked-upload)",
    )
    s3 = serve.add_argument_group("presigned uploads to an S3-compatible storage (needs boto3: the 's3' extra)")
    s3.add_argument("--s3-endpoint", metavar="URL", help="the storage's endpoint, e.g. http://127.0.0.1:9000")
    s3.add_argument("--s3-bucket", metavar="NAME", help="the bucket files go to")
    s3.add_argument("--s3-region", default="us-east-1", help="default us-east-1")
    s3.add_argument("--s3-public-endpoint", metavar="URL", help="endpoint signed into the URLs (default --s3-endpoint)")
    s3.add_argument("--s3-prefix", default="uploads/", help="key prefix (default uploads/)")
    s3.add_argument("--s3-create-bucket", action="store_true", help="create the bucket if it does not exist")
    s3.add_argument(
        "--s3-multipart-threshold", type=parse_size, default=100 * 1024**2, help="multipart above this (default 100MiB)"
    )
    s3.add_argument(
        "--s3-part-size", type=parse_size, default=100 * 1024**2, help="multipart part size (default 100MiB)"
    )

    cleanup = commands.add_parser("cleanup", help="delete the reference server's expired open uploads")
    cleanup.add_argument("--data-dir", type=Path, default=Path("synapse-data"), help="of a stopped server")
    cleanup.add_argument("--expire-after", type=parse_duration, default="1d", help="age of an expired upload")

    # --size and --rounds stay strings here: run_bench parses them, so a bad
    # value is one line (exit 2) rather than argparse's usage block.
    bench = commands.add_parser("bench", help="measure the engine against the published SDK and one core's MD5")
    bench.add_argument("--size", default="1GiB", help="bytes of the random test file (default 1GiB)")
    bench.add_argument("--rounds", default="3", help="timed rounds per case, after one warm-up (default 3)")
    # No SYNAPSE_HOST default: a stray environment variable must not turn a local
    # benchmark into gigabytes sent to a real backend.
    bench.add_argument("--host", default=None, help="benchmark against this backend (default: a local server)")
    bench.add_argument("--token", default=os.environ.get("SYNAPSE_ACCESS_TOKEN"), help="env SYNAPSE_ACCESS_TOKEN")
    bench.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    bench.add_argument("--plot", metavar="FILE.png", default=None, help="draw a bar chart (needs matplotlib)")
    bench.add_argument(
        "--discard", action="store_true", help="the local server stores and verifies nothing: measure the client"
    )
    bench.add_argument(
        "--chunk-digest", choices=("md5", "xxh3", "none"), default="md5", help="the engine's per-chunk digest"
    )
    return parser


def _looks_like_ray_address(text: str) -> bool:
    return (
        text in ("auto", "local")
        or "://" in text
        or re.fullmatch(r"[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+", text) is not None
    )


def _resolve_ray_option(args: argparse.Namespace) -> None:
    """``--ray PATH...`` has no address: argparse took the first path for one; give it back."""
    if isinstance(args.ray, str) and (os.path.exists(args.ray) or not _looks_like_ray_address(args.ray)):
        args.paths.insert(0, args.ray)
        args.ray = True
    if not args.paths:
        args.usage_error("the following arguments are required: PATH")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "upload":
        _resolve_ray_option(args)
    try:
        if args.command == "serve":
            from synapse_sdk.server.runner import run_forever

            if (args.certfile is None) != (args.keyfile is None):
                raise SystemExit("synapse-upload: --certfile and --keyfile go together")
            s3 = None
            if (args.s3_endpoint is None) != (args.s3_bucket is None):
                raise SystemExit("synapse-upload: --s3-endpoint and --s3-bucket go together")
            if args.s3_endpoint is not None:
                from synapse_sdk.server.presigned import S3Config

                # Credentials come from the environment, as boto3 reads them (AWS_ACCESS_KEY_ID...).
                s3 = S3Config(
                    args.s3_endpoint,
                    args.s3_bucket,
                    region=args.s3_region,
                    public_endpoint_url=args.s3_public_endpoint,
                    prefix=args.s3_prefix,
                    multipart_threshold=args.s3_multipart_threshold,
                    part_size=args.s3_part_size,
                    create_bucket=args.s3_create_bucket,
                )
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
                discard=args.discard,
                parallel_chunks=args.parallel_chunks,
                s3=s3,
            )
            return 0
        if args.command == "cleanup":
            from synapse_sdk.server.runner import run_cleanup

            run_cleanup(args.data_dir, args.expire_after)
            return 0
        if args.command == "bench":
            # Imported when used, as the server is: `upload` should not pay for
            # the benchmark's modules at start-up. Imports go one way: bench
            # takes its parsers from cli.arguments, nothing from this module.
            from synapse_sdk.cli.bench import run_bench

            return run_bench(args)
        from synapse_sdk.cli.upload import run_upload

        return run_upload(args)
    except UsageError as error:
        if args.debug:
            raise
        print(f"synapse-upload: {error}", file=sys.stderr)
        return 2
    except (ClientError, OSError, ValueError) as error:
        if args.debug:
            raise
        print(f"synapse-upload: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("synapse-upload: interrupted", file=sys.stderr)
        return 130

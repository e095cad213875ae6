"""Start and stop the reference server: cheroot serving ``UploadApp`` in a background thread.

``ReferenceServer`` is what tests and benchmarks use; ``run_forever`` and
``run_cleanup`` are what the command line uses. None of them speaks the
protocol itself (that is ``app``) nor touches storage directly (that is ``store``).
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from synapse_sdk.server.app import UploadApp
from synapse_sdk.server.discard import DiscardStore
from synapse_sdk.server.kept import kept_secret
from synapse_sdk.server.limits import RateLimiter
from synapse_sdk.server.media import MediaSigner
from synapse_sdk.server.presigned import S3Config
from synapse_sdk.server.storage import Upload, UploadStore
from synapse_sdk.server.store import Store
from synapse_sdk.server.wire import Connection, with_readinto

__all__ = ["DEFAULT_PARALLEL_CHUNKS", "ReferenceServer", "run_cleanup", "run_forever"]

#: Chunks of one upload the server takes at once by default (``Synapse-Parallel-Chunks``).
DEFAULT_PARALLEL_CHUNKS = 8
#: Files in the data directory holding the token ``serve`` made and the key signing media URLs.
TOKEN_FILE = "access-token"
MEDIA_KEY_FILE = "media-key"
#: Idle keep-alive connections kept open: as many as a batch keeps files in flight, and some.
KEEP_ALIVE_CONNECTIONS = 256


class ReferenceServer:
    """The chunked-upload server on ``host:port`` (port 0: any free one), data under ``data_dir``.

    ``tokens`` maps access tokens to user names. ``start()`` returns once the
    socket accepts connections; ``base_url`` then names the bound port.

    Limits, all off by default: ``max_upload_size`` (bytes of one file, 413),
    ``quota`` (bytes of all of a user's uploads, 507) and ``rate_limit``
    (``(per_second, burst)`` requests per token, 429), whose clock is
    ``clock``. With ``certfile`` and ``keyfile`` (PEM) it serves HTTPS. With
    ``s3`` (an ``S3Config``) it hands out presigned URLs of that storage.
    ``parallel_chunks``: how many chunks of one upload it takes at once, out
    of order (advertised as ``Synapse-Parallel-Chunks``; 1: in order only, as
    drf-chunked-upload).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Mapping[str, str],
        max_upload_size: int | None = None,
        quota: int | None = None,
        rate_limit: tuple[float, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        expire_after: timedelta = timedelta(days=1),
        threads: int = 16,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        discard: bool = False,
        media_ttl: float = 3600.0,
        s3: S3Config | None = None,
        parallel_chunks: int = DEFAULT_PARALLEL_CHUNKS,
    ) -> None:
        if (certfile is None) != (keyfile is None):
            raise ValueError("TLS needs both certfile and keyfile")
        if isinstance(parallel_chunks, bool) or not isinstance(parallel_chunks, int) or not 1 <= parallel_chunks <= 64:
            raise ValueError(f"parallel_chunks must be a whole number from 1 to 64, not {parallel_chunks!r}")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.tokens = dict(tokens)
        self.max_upload_size = max_upload_size
        self.quota = quota
        self.rate_limit = rate_limit
        self.clock = clock
        self.expire_after = expire_after
        self.threads = threads
        self.certfile = certfile
        self.keyfile = keyfile
        self.discard = discard
        self.media_ttl = media_ttl
        self.s3 = s3
        self.parallel_chunks = parallel_chunks
        self._store: UploadStore | None = None
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with TLS) of the running server, without a trailing slash."""
        if self._server is None:
            raise RuntimeError("the server is not running: call start() first")
        host, port = self._server.bind_addr[:2]
        scheme = "https" if self.certfile is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def stats(self) -> dict[str, int]:
        """Counters since start: ``bytes_received`` (file parts), ``chunks_stored``, ``uploads_created``."""
        if self._store is None:
            raise RuntimeError("the server is not running: call start() first")
        return self._store.stats()

    def start(self) -> ReferenceServer:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        # Discard mode (benchmarks): records kept, bytes counted, nothing stored or verified.
        store_class = DiscardStore if self.discard else Store
        store = store_class(self.data_dir, self.expire_after, io_threads=self.threads, quota=self.quota)
        try:
            limiter = None if self.rate_limit is None else RateLimiter(*self.rate_limit, clock=self.clock)
            # Kept in the data directory: a media URL handed out before a restart stays good.
            media_key = kept_secret(self.data_dir, MEDIA_KEY_FILE, lambda: secrets.token_hex(32))
            signer = MediaSigner(media_key.encode(), ttl=self.media_ttl)
            app = UploadApp(
                store,
                self.tokens,
                self.max_upload_size,
                rate_limiter=limiter,
                media_signer=signer,
                s3=self.s3,
                parallel_chunks=self.parallel_chunks,
            )
            server = wsgi.Server((self.host, self.port), with_readinto(app), numthreads=self.threads)
            server.ConnectionClass = Connection
            # cheroot keeps 10 idle keep-alive connections by default and closes the rest:
            # a batch with many files in flight would then open a connection (a round trip) per request.
            server.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
            # stop() waits for the serve loop's next wake-up (0.5 s by default):
            # tests start and stop many servers.
            server.expiration_interval = 0.05
            if self.certfile is not None:
                server.ssl_adapter = BuiltinSSLAdapter(str(self.certfile), str(self.keyfile))
            # Binds and listens here, so a busy port fails in the caller's thread.
            server.prepare()
        except BaseException:
            store.close()
            raise
        self._store, self._server = store, server
        self._thread = threading.Thread(target=server.serve, name="synapse-reference-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        if self._thread is not None:
            self._thread.join()
        if self._store is not None:
            self._store.close()
        self._server = self._thread = self._store = None

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_forever(
    host: str,
    port: int,
    data_dir: str | os.PathLike[str],
    token: str | None = None,
    **options: Any,
) -> None:
    """Serve until SIGINT or SIGTERM.

    Without ``token``, the token kept in ``data_dir`` is accepted (a random
    one, made on the first start): clients in the middle of an upload keep
    working across a restart. ``options`` are ``ReferenceServer``'s keyword
    arguments (limits, TLS files).
    """
    kept_note = ""
    if not token:
        token = kept_secret(data_dir, TOKEN_FILE, lambda: secrets.token_urlsafe(24))
        kept_note = f" (kept in {Path(data_dir).resolve() / TOKEN_FILE}; --token sets another)"
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ReferenceServer(data_dir, host, port, tokens={token: "user"}, **options) as server:
            print(f"Serving chunked uploads on {server.base_url}/ (data in {server.data_dir})", flush=True)
            print(f"Access token: {token}{kept_note}", flush=True)
            if server.s3 is not None:
                where = server.s3.public_endpoint_url or server.s3.endpoint_url
                print(f"Presigned uploads go to bucket {server.s3.bucket} at {where}", flush=True)
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_cleanup(data_dir: str | os.PathLike[str], expire_after: timedelta = timedelta(days=1)) -> list[Upload]:
    """Delete the open uploads older than ``expire_after`` under ``data_dir``, printing each one.

    The server must be stopped: it holds the data directory while it runs.
    """
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"no data directory at {data_dir}")
    store = Store(data_dir, expire_after, io_threads=1)
    try:
        removed = store.cleanup_expired(datetime.now(timezone.utc))
    finally:
        store.close()
    for upload in removed:
        # A filename may hold anything a client sent: show it quoted and short.
        name = upload.filename if len(upload.filename) <= 80 else upload.filename[:80] + "..."
        owner = upload.owner.user + (f"@{upload.owner.tenant}" if upload.owner.tenant else "")
        print(
            f"removed upload {upload.id} of {owner}: {name!r}, {upload.offset} of {upload.total} bytes,"
            f" created {upload.created_at.isoformat()}",
            flush=True,
        )
    total = sum(upload.offset for upload in removed)
    print(f"removed {len(removed)} expired upload(s), {total} bytes", flush=True)
    return removed

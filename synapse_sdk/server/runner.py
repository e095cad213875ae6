"""Start and stop the reference server: cheroot serving ``UploadApp`` in a background thread.

``ReferenceServer`` is what tests and benchmarks use; ``run_forever`` is what
the command line uses. Neither speaks the protocol itself (that is ``app``) nor
touches storage (that is ``store``).
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import FrameType, TracebackType

from cheroot import wsgi

from synapse_sdk.server.app import UploadApp
from synapse_sdk.server.store import Store

__all__ = ["ReferenceServer", "run_forever"]


class ReferenceServer:
    """The chunked-upload server on ``host:port`` (port 0: any free one), data under ``data_dir``.

    ``tokens`` maps access tokens to user names. ``start()`` returns once the
    socket accepts connections; ``base_url`` then names the bound port.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Mapping[str, str],
        max_upload_size: int | None = None,
        expire_after: timedelta = timedelta(days=1),
        threads: int = 16,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.tokens = dict(tokens)
        self.max_upload_size = max_upload_size
        self.expire_after = expire_after
        self.threads = threads
        self._store: Store | None = None
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server, without a trailing slash."""
        if self._server is None:
            raise RuntimeError("the server is not running: call start() first")
        host, port = self._server.bind_addr[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> ReferenceServer:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        store = Store(self.data_dir, self.expire_after, io_threads=self.threads)
        app = UploadApp(store, self.tokens, self.max_upload_size)
        server = wsgi.Server((self.host, self.port), app, numthreads=self.threads)
        try:
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


def run_forever(host: str, port: int, data_dir: str | os.PathLike[str], token: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM; a random token is made when none is given."""
    token = token or secrets.token_urlsafe(24)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ReferenceServer(data_dir, host, port, tokens={token: "user"}) as server:
            print(f"Serving chunked uploads on {server.base_url}/ (data in {server.data_dir})", flush=True)
            print(f"Access token: {token}", flush=True)
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

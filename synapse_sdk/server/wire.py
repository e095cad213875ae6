"""cheroot glue: request bodies go from the socket straight into the app's buffer.

cheroot reads sockets through ``_pyio``, the pure-Python ``io``: its
``read(n)`` of a large body copies every byte three more times after the
kernel (a ``bytes`` per recv, a join, a slice), which cost the reference
server more than a quarter of its CPU in discard mode. Here the connection's
reader gains a ``readinto`` (what cheroot has buffered, else one
``recv_into`` into the caller's buffer), and ``with_readinto`` hands the app a
``wsgi.input`` that uses it. Both lean on two attributes of ``_pyio``'s
``BufferedReader`` (``_read_buf``, ``_read_pos``) that cheroot itself uses.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterable
from typing import Any

from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection, KnownLengthRFile

__all__ = ["Connection", "with_readinto"]


class _SocketReader(StreamReader):
    """cheroot's socket reader with a ``readinto`` that bypasses its buffer."""

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._read_lock:
            held = len(self._read_buf) - self._read_pos
            if held:
                count = min(held, len(view))
                view[:count] = self._read_buf[self._read_pos : self._read_pos + count]
                self._read_pos += count
            else:
                count = self.raw.readinto(view) or 0
        self.bytes_read += count
        return count


def _make_file(sock: socket.socket, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE) -> Any:
    return _SocketReader(sock, mode, bufsize) if "r" in mode else StreamWriter(sock, mode, bufsize)


class Connection(HTTPConnection):
    """``wsgi.Server.ConnectionClass`` whose socket reader has ``readinto``.

    For TLS the socket is wrapped before this point and cheroot's TLS adapter
    builds the same reader and writer classes, so one file factory serves both.
    """

    def __init__(self, server: Any, sock: socket.socket, makefile: Callable[..., Any] | None = None) -> None:
        super().__init__(server, sock, _make_file)


class _KnownLengthBody:
    """cheroot's body of known length, with ``readinto`` through the connection's reader."""

    def __init__(self, body: KnownLengthRFile) -> None:
        self._body = body

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self._body.remaining]
        if not view:
            return 0
        count = self._body.rfile.readinto(view)
        self._body.remaining -= count
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def with_readinto(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app`` (WSGI), given a ``wsgi.input`` with ``readinto`` when cheroot's allows it."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ.get("wsgi.input")
        if isinstance(body, KnownLengthRFile) and isinstance(body.rfile, _SocketReader):
            environ["wsgi.input"] = _KnownLengthBody(body)
        return app(environ, start_response)

    return serve

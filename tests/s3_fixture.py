"""A real S3-compatible server for the tests: moto's server mode in a subprocess on 127.0.0.1.

``start_moto()`` picks a free loopback port, starts ``python -m moto.server``
there and waits until it answers; leaving the ``with`` block stops it. The
tests reach it over HTTP like any S3 endpoint (boto3 on the server side, the
engine's PUTs on the client side); nothing is mocked in-process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import urllib3

__all__ = ["MotoServer", "start_moto"]


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def start_moto(tls: tuple[str, str, str] | None = None) -> Iterator[MotoServer]:
    """moto's S3 server on loopback; with ``tls`` = (certificate, key, CA bundle) paths, over HTTPS."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for _attempt in range(3):
        port = _free_port()
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        if tls is not None:
            command += ["-c", tls[0], "-k", tls[1]]
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        http = urllib3.PoolManager(retries=False, **({"ca_certs": tls[2]} if tls else {}))
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                http.request("GET", url + "/", timeout=1.0)
                break
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        if process.poll() is None and time.monotonic() < deadline:
            try:
                yield MotoServer(url, process)
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return
        process.kill()
        process.wait()
    raise RuntimeError("moto's server did not start on loopback")

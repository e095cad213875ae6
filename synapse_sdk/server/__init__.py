"""The reference chunked-upload server: PROTOCOL.md's ``chunked_upload/`` endpoint, standalone.

It lets the upload client be tested and benchmarked with nothing else
installed: cheroot serves a hand-written WSGI application (``app``) over
SQLite records and files on disk (``store``), parsing bodies as they stream
in (``multipart``), with limits (file size, per-user quota, per-token rate),
an idempotent create, TLS and byte counters. Around the uploads it keeps the
records the data-collection and model clients create (``catalog``: data
files, collections, units, models, tasks) and, given an S3-compatible storage
(``presigned``), hands out presigned URLs of it and confirms what lands there. It is a test and benchmark
server, not a production backend: it serves no files back, and expired
uploads are deleted only by ``run_cleanup`` (``synapse-upload cleanup``).

    from synapse_sdk.server import ReferenceServer

    with ReferenceServer(data_dir, tokens={"secret": "alice"}) as server:
        server.base_url  # "http://127.0.0.1:PORT"
"""

from __future__ import annotations

from synapse_sdk.server.app import UploadApp
from synapse_sdk.server.runner import ReferenceServer, run_cleanup, run_forever

__all__ = ["ReferenceServer", "UploadApp", "run_cleanup", "run_forever"]

"""The documentation's batch example over the published synapse-sdk's upload; its CPU and time, as JSON.

``python -m benches.workloads.published URL TOKEN THREADS PATH...``

Target 11's baseline in ``benches/bench_targets.py``: what a user of the
published SDK runs today for many files. ``batch_chunked_upload`` of
``docs/CoreClientMixin.txt`` (``tests/doc_examples.py``, as published) with
``max_concurrent=THREADS``: a ``ThreadPoolExecutor`` calling one shared
client's ``create_chunked_upload`` per file. The client here is the
published algorithm (``synapse_sdk.cli.benchmark.baseline_upload``: requests,
one shared session, PUT each 50 MiB chunk then POST the MD5), as the
published client would run it. The example's progress lines go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

from benches.workloads.upload import report
from benches.workloads.usage import usage
from synapse_sdk.cli.benchmark import baseline_upload
from tests import doc_examples

__all__ = ["PublishedClient", "main"]


class PublishedClient:
    """The published client's ``create_chunked_upload``, over the one ``requests.Session`` its threads share."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url, self.token = base_url, token
        self.session = requests.Session()

    def create_chunked_upload(self, file_path: str | os.PathLike[str]) -> dict[str, Any]:
        return baseline_upload(self.session, self.base_url, self.token, Path(file_path))


def main(argv: list[str]) -> dict[str, Any]:
    """Upload the files ``argv`` names with the documentation's batch example; the report to print."""
    if len(argv) < 4:
        raise SystemExit(f"usage: python -m {__spec__.name} URL TOKEN THREADS PATH...")
    url, token, threads, *paths = argv
    doc_examples.client = PublishedClient(url, token)
    before = usage()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        batch = doc_examples.batch_chunked_upload(paths, max_concurrent=int(threads))
    return report(before, started, batch)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

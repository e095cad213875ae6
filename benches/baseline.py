"""The published synapse-sdk's upload algorithm, reproduced as the benchmark baseline.

Strictly sequential, as synapse-sdk's ``create_chunked_upload`` is: read 50
MiB into ``bytes``, ``hashlib.md5().update`` it, PUT it as a multipart body
built by requests, wait for the answer, repeat; then POST the MD5.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import requests

CHUNK_SIZE = 50 * 1024 * 1024


def baseline_upload(session: requests.Session, base_url: str, token: str, path: Path) -> dict:
    headers = {"Synapse-Access-Token": f"Token {token}"}
    total = os.path.getsize(path)
    md5 = hashlib.md5()
    url = f"{base_url}/chunked_upload/"
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            md5.update(chunk)
            answer = session.put(
                url,
                data={"filename": path.name},
                files={"file": chunk},
                headers={**headers, "Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{total}"},
                timeout=(5, 60),
            )
            answer.raise_for_status()
            record = answer.json()
            offset, url = record["offset"], record["url"]
    answer = session.post(url, data={"md5": md5.hexdigest()}, headers=headers, timeout=(5, 60))
    answer.raise_for_status()
    return answer.json()

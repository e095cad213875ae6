"""One hash over a file already in memory, in the upload's 50 MiB chunks; its CPU, as JSON.

``python -m benches.workloads.hashing MODE PATH``, ``MODE`` one of ``MODES``.

The file is read into memory before the first usage reading, so only the
hashing is measured (no I/O): target 7 of ``benches/bench_targets.py`` and
its table of hashes on one core.
"""

from __future__ import annotations

import hashlib
import json
import sys

import xxhash

import engine
from benches.workloads.usage import usage

__all__ = ["CHUNK", "MODES", "main"]

#: The upload's chunks: a new chunk MD5 at each boundary.
CHUNK = 50 * 1024 * 1024
MODES = (
    "hashlib.md5",
    "engine.Md5 (one lane)",
    "engine.update_pair (two lanes)",
    "digest_windows, one lane + xxh3 (for xxh3)",
    "xxhash.xxh3_128 alone",
)


def main(argv: list[str]) -> dict[str, object]:
    """Hash the file as ``argv`` says; the report to print (usage before and after, and the MD5 if any)."""
    if len(argv) != 2 or argv[0] not in MODES:
        raise SystemExit(f"usage: python -m {__spec__.name} MODE PATH, MODE one of {MODES}; not {argv}")
    mode, path = argv
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    chunks = [view[start : start + CHUNK] for start in range(0, len(view), CHUNK)]
    before = usage()
    if mode == "hashlib.md5":
        md5 = hashlib.md5()
        for chunk in chunks:
            md5.update(chunk)
    elif mode == "engine.Md5 (one lane)":
        md5 = engine.Md5()
        for chunk in chunks:
            md5.update(chunk)
    elif mode == "engine.update_pair (two lanes)":
        md5 = engine.Md5()
        for chunk in chunks:
            engine.update_pair(md5, engine.Md5(), chunk)
    elif mode == "digest_windows, one lane + xxh3 (for xxh3)":
        md5 = engine.Md5()
        for chunk in chunks:
            engine.digest_windows([chunk], md5, False, True)
    else:  # "xxhash.xxh3_128 alone"
        md5 = None
        for chunk in chunks:
            xxhash.xxh3_128(chunk).digest()
    after = usage()
    return {"before": before, "after": after, "digest": md5.hexdigest() if md5 is not None else None}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

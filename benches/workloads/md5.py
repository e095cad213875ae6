"""One core's ``hashlib.md5`` over files, read as ``synapse-upload bench`` reads them; its CPU and time, as JSON.

``python -m benches.workloads.md5 PATH...``

The reference of targets 3, 8 and 9 in ``benches/bench_targets.py``: the
uploading process's CPU is divided by this one's, and its throughput by
this one's bytes over ``wall`` seconds. The files are hashed one after the
other, each on its own (one digest per file), on one thread.
"""

from __future__ import annotations

import json
import sys
import time

from benches.workloads.usage import usage
from synapse_sdk.cli.benchmark import md5_file

__all__ = ["main"]


def main(argv: list[str]) -> dict[str, object]:
    """Hash the files ``argv`` names; the report to print (usage before and after, seconds, the digests)."""
    if not argv:
        raise SystemExit(f"usage: python -m {__spec__.name} PATH...")
    before = usage()
    started = time.perf_counter()
    digests = [md5_file(path) for path in argv]
    wall = time.perf_counter() - started
    after = usage()
    return {"before": before, "after": after, "wall": wall, "digests": digests}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

"""One core's ``hashlib.md5`` over a file, read as ``synapse-upload bench`` reads it; its CPU, as JSON.

``python -m benches.workloads.md5 PATH``

Target 3's reference in ``benches/bench_targets.py``: the uploading
process's CPU is divided by this one's.
"""

from __future__ import annotations

import json
import sys

from benches.workloads.usage import usage
from synapse_sdk.cli.benchmark import md5_file

__all__ = ["main"]


def main(argv: list[str]) -> dict[str, object]:
    """Hash the file ``argv`` names; the report to print (usage before and after, and the digest)."""
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m {__spec__.name} PATH")
    before = usage()
    digest = md5_file(argv[0])
    after = usage()
    return {"before": before, "after": after, "digest": digest}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

"""The ``synapse-upload`` command's entry point.

Kept apart from the files synapse-sdk also installs, so that where
synapse-sdk's ``synapse_sdk`` overwrote ours the command says so in one
line instead of failing on an import from the other package.
"""

from __future__ import annotations

import sys

from synapse_sdk.installation import conflict, ours_in_place

__all__ = ["main"]


def main() -> int:
    problem = conflict()
    if problem is not None and not ours_in_place():
        print(f"synapse-upload: {problem}", file=sys.stderr)
        return 2
    from synapse_sdk.cli import main as run

    return run()

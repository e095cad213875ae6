"""Whether this environment holds synapse-upload's ``synapse_sdk`` alone, or beside synapse-sdk's.

synapse-upload provides the ``synapse_sdk`` import package, as the published
synapse-sdk does. pip cannot stop both being installed in one environment,
and when they are, the one installed last silently overwrites the files the
two have in common (``synapse_sdk/__init__.py``, ``clients/base.py``, ...):
what ``from synapse_sdk.clients.backend import BackendClient`` gives then
depends on install order. This module tells which case holds; it is kept
apart from every file the two packages share, so it still runs when
synapse-sdk's files are the ones in place. It must stay cheap: the package
imports it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

__all__ = ["PUBLISHED_DISTRIBUTION", "conflict", "ours_in_place"]

PUBLISHED_DISTRIBUTION = "synapse-sdk"
#: Marks synapse-upload's ``synapse_sdk/__init__.py`` (synapse-sdk's has no such name).
MARKER = "_provided_by"


def conflict() -> str | None:
    """What is wrong, if synapse-sdk is installed in this environment too; None if it is not."""
    try:
        published = importlib.metadata.version(PUBLISHED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        ours = importlib.metadata.version("synapse-upload")
    except importlib.metadata.PackageNotFoundError:
        ours = "(from source)"
    spec = importlib.util.find_spec("synapse_sdk")
    in_place = "synapse-upload's" if _ours(spec.origin if spec is not None else None) else "synapse-sdk's"
    return (
        f"synapse-sdk {published} is installed beside synapse-upload {ours}: both install the `synapse_sdk` "
        f"package, and the one installed last overwrote the files they share ({in_place} are in place now). "
        "Use one per environment: `pip uninstall -y synapse-sdk synapse-upload && pip install synapse-upload` "
        "(uninstalling either removes the shared files), or give each its own virtual environment."
    )


def ours_in_place() -> bool:
    """Whether the ``synapse_sdk/__init__.py`` Python finds is synapse-upload's."""
    spec = importlib.util.find_spec("synapse_sdk")
    return _ours(spec.origin if spec is not None else None)


def _ours(init: str | None) -> bool:
    if not init:
        return False
    try:
        with open(init, encoding="utf-8", errors="replace") as source:
            return MARKER in source.read()
    except OSError:
        return False

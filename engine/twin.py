"""Picks the engine twin: the compiled ``_native`` unless it is missing or ``SYNAPSE_ENGINE=python`` asks for ``_pure``.

``SYNAPSE_ENGINE=native`` makes a missing extension an error instead of a
silent fallback. Modules of the engine that need the twin import it from
here (not from the package, whose ``__init__`` imports them: no cycle).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

__all__ = ["NATIVE", "Md5", "digest_windows", "md5_lanes", "md5_many", "md5_simd", "read_into", "update_pair"]

_wanted = os.environ.get("SYNAPSE_ENGINE", "").strip().lower()
if _wanted not in ("", "native", "python"):
    raise ImportError(f"SYNAPSE_ENGINE must be 'native' or 'python', not {_wanted!r}")

if TYPE_CHECKING:  # both twins have the API of _native.pyi
    import engine._native as _impl
elif _wanted == "python":
    _impl = importlib.import_module("engine._pure")
else:
    # By name: the compiled module may be missing, and import graphs (lint-imports) cannot see a .so.
    try:
        _impl = importlib.import_module("engine._native")
    except ImportError:
        if _wanted == "native":
            raise
        _impl = importlib.import_module("engine._pure")

NATIVE: bool = _impl.NATIVE
Md5 = _impl.Md5
update_pair = _impl.update_pair
digest_windows = _impl.digest_windows
read_into = _impl.read_into
md5_many = _impl.md5_many
md5_lanes = _impl.md5_lanes
md5_simd = _impl.md5_simd

"""The performance core behind ``synapse_sdk``: hashing, mapped reads, the upload pipeline.

The compiled twin (``engine._native``) is used unless it is missing or the
environment variable ``SYNAPSE_ENGINE=python`` asks for the pure-Python one;
``SYNAPSE_ENGINE=native`` makes a missing extension an error instead of a
silent fallback. Both twins give identical results.

``md5_many`` runs many MD5 streams at once in SIMD lanes (compiled twin);
``SYNAPSE_MD5_SIMD=avx512|avx2|scalar`` caps the kernel it picks.
``HashingService`` packs the MD5 work of many threads (the uploads of a
batch, or a caller's own files) into those lanes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

_wanted = os.environ.get("SYNAPSE_ENGINE", "").strip().lower()
if _wanted not in ("", "native", "python"):
    raise ImportError(f"SYNAPSE_ENGINE must be 'native' or 'python', not {_wanted!r}")

if TYPE_CHECKING:  # both twins have the API of _native.pyi
    from engine import _native as _impl
elif _wanted == "python":
    from engine import _pure as _impl
else:
    try:
        from engine import _native as _impl
    except ImportError:
        if _wanted == "native":
            raise
        from engine import _pure as _impl

NATIVE: bool = _impl.NATIVE
Md5 = _impl.Md5
update_pair = _impl.update_pair
digest_windows = _impl.digest_windows
read_into = _impl.read_into
md5_many = _impl.md5_many
md5_lanes = _impl.md5_lanes
md5_simd = _impl.md5_simd

# Last: the service hashes with the twin chosen above.
from engine.hashing_service import HashingService  # noqa: E402

__all__ = [
    "NATIVE",
    "HashingService",
    "Md5",
    "digest_windows",
    "md5_lanes",
    "md5_many",
    "md5_simd",
    "read_into",
    "update_pair",
]

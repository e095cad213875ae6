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

from engine.hashing_service import HashingService
from engine.twin import (
    NATIVE,
    Md5,
    digest_windows,
    md5_lanes,
    md5_many,
    md5_simd,
    read_into,
    update_pair,
)

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

"""The published synapse-sdk's upload algorithm, now in the package (``synapse_sdk.benchmark``).

Kept as a re-export so that scripts importing ``benches.baseline`` still
work; the benchmarks import from ``synapse_sdk.benchmark`` directly, as the
``synapse-upload bench`` command does, so both measure the same baseline.
"""

from __future__ import annotations

from synapse_sdk.benchmark import CHUNK_SIZE, baseline_upload

__all__ = ["CHUNK_SIZE", "baseline_upload"]

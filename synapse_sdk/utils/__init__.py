"""Utilities of the published synapse-sdk that the clients use: ``synapse_sdk.utils.file`` (downloads, cache)."""

from __future__ import annotations

__all__: list[str] = []

"""HTTP clients for the Synapse backend: ``BaseClient`` and ``ClientError``, as synapse-sdk exports them here."""

from __future__ import annotations

from synapse_sdk.clients.base import BaseClient
from synapse_sdk.clients.exceptions import ClientError

__all__ = ["BaseClient", "ClientError"]

"""Client errors: ``ClientError`` and its subclasses, as synapse-sdk exports them here."""

from __future__ import annotations

from engine.errors import *  # noqa: F403
from engine.errors import __all__  # noqa: F401

"""The client error hierarchy, under the import path synapse-sdk publishes it at."""

from __future__ import annotations

from engine.errors import *  # noqa: F403
from engine.errors import __all__  # noqa: F401

"""Fault injection for the upload tests: a real HTTP proxy that breaks requests on purpose.

``tests.faults.proxy.Proxy`` sits on loopback in front of a real server and,
request by request, either forwards faithfully or injects one fault (a torn
request body, a lost answer, an injected error status, a stall, a flipped
byte). It is test tooling only: it never talks to anything but 127.0.0.1.
"""

from __future__ import annotations

from tests.faults.proxy import *  # noqa: F403  (the proxy's __all__ is this package's)
from tests.faults.proxy import __all__  # noqa: F401

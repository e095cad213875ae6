"""Token authentication for the test server.

Accepts ``Synapse-Access-Token: Token <key>`` (the header our client sends) in
addition to DRF's standard ``Authorization: Token <key>``; both map to DRF
``authtoken`` tokens.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.request import Request


class SynapseAccessTokenAuthentication(TokenAuthentication):
    """``TokenAuthentication`` reading the ``Synapse-Access-Token`` header.

    Inheriting ``authenticate_header`` ("Token") matters: DRF answers 401
    rather than 403 only when the first authentication class provides a
    ``WWW-Authenticate`` value.
    """

    header = "HTTP_SYNAPSE_ACCESS_TOKEN"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        value = request.META.get(self.header)
        if not value:
            # Let the next class (plain TokenAuthentication) have a go.
            return None
        parts = value.split()
        if len(parts) != 2 or parts[0].lower() != self.keyword.lower():
            raise exceptions.AuthenticationFailed("Invalid Synapse-Access-Token header: expected 'Token <key>'.")
        return self.authenticate_credentials(parts[1])

"""Who is asking the reference server, and whether they may ask now.

``Authenticator`` turns a request's token headers into its ``Owner`` (the
token's user, and the tenant of ``Synapse-Tenant``), and asks the rate
limiter, when there is one, once per authenticated request. A request it
refuses raises ``HttpError``: 401 with a ``WWW-Authenticate`` challenge, 429
with ``Retry-After``, 400 for a malformed tenant header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from engine import wire
from synapse_sdk.server.limits import RateLimiter
from synapse_sdk.server.request import HttpError
from synapse_sdk.server.storage import Owner

__all__ = ["Authenticator"]


class Authenticator:
    """``tokens`` maps access tokens to user names; ``rate_limiter`` (None: no limit) is keyed by token."""

    def __init__(self, tokens: Mapping[str, str], rate_limiter: RateLimiter | None = None) -> None:
        self._tokens = dict(tokens)
        self._rate_limiter = rate_limiter

    def authenticate(self, environ: Mapping[str, Any]) -> Owner:
        """The owner the request's token names, or an ``HttpError`` (401, 429, 400)."""
        challenge = [("WWW-Authenticate", "Token")]
        # The first token header present decides; a bad primary token is not
        # rescued by a legacy one.
        for header in ("HTTP_SYNAPSE_ACCESS_TOKEN", "HTTP_AUTHORIZATION"):
            value = environ.get(header)
            if value is not None:
                token = _token(value) or ""
                user = self._tokens.get(token)
                if user is None:
                    raise HttpError(401, "Invalid token.", challenge)
                break
        else:
            raise HttpError(401, "Authentication credentials were not provided.", challenge)
        if self._rate_limiter is not None:
            wait = self._rate_limiter.acquire(token)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                detail = f"Request was throttled. Expected available in {retry_after} seconds."
                raise HttpError(429, detail, [(wire.RETRY_AFTER, str(retry_after))])
        tenant = environ.get("HTTP_SYNAPSE_TENANT")
        if tenant is None:
            return Owner(user)
        code = _token(tenant)
        if code is None:
            raise HttpError(400, "malformed Synapse-Tenant header: expected 'Token <tenant code>'")
        return Owner(user, code)


def _token(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "token" and token else None

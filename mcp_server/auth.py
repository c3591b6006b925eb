"""The MCP server as an OAuth 2.1 resource server: bearer tokens verified exactly as everywhere else.

The SDK's bearer middleware calls `CrmTokenVerifier.verify_token` on every HTTP request; it authenticates the
token with the core's `authenticate` (signature, `aud`, `exp`, issuer, then the user's roles and teams) and
keeps the resulting Principal on the access token, where the tools find it through `caller_from_request`.
A token is never forwarded anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from pydantic import ConfigDict, Field, InstanceOf

from services.kernel.errors import Unauthenticated
from services.kernel.permissions import SCOPE_PERMISSIONS, Scope
from services.kernel.principal import Principal

Authenticate = Callable[[str], Awaitable[Principal]]

# What every MCP request needs at least: a token that may read the CRM.
REQUIRED_SCOPES = [Scope.READ.value]
# Every scope this server understands, published in its protected resource metadata.
SUPPORTED_SCOPES = [s.value for s in Scope]
# What a 401 asks a client to request: an assistant reads and changes records. Deleting and AI summaries are
# asked for on purpose (they are in SUPPORTED_SCOPES), never by default.
BASIC_SCOPES = [Scope.READ.value, Scope.WRITE.value]

# Why the bearer token of the request being served was refused (None: it was accepted). The bearer middleware
# keeps only "no user"; the 401 tells the client the reason, e.g. "token expired".
refusal: ContextVar[str | None] = ContextVar("refusal", default=None)


class CrmAccessToken(AccessToken):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    principal: InstanceOf[Principal] = Field(exclude=True)


def granted_scopes(principal: Principal) -> list[str]:
    """The scopes a token amounts to: an unscoped session has them all; a scope includes those whose
    permissions it covers (crm.write includes crm.read)."""
    if principal.scopes is None:
        return [s.value for s in Scope]
    allowed = frozenset().union(*(SCOPE_PERMISSIONS[s] for s in principal.scopes))
    return [s.value for s in Scope if SCOPE_PERMISSIONS[s] <= allowed]


class CrmTokenVerifier:
    """An `mcp.server.auth.provider.TokenVerifier` over the core's authentication."""

    def __init__(self, authenticate: Authenticate) -> None:
        self._authenticate = authenticate

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self._authenticate(token)
        except Unauthenticated as exc:
            refusal.set(exc.message)
            return None
        refusal.set(None)
        return CrmAccessToken(
            token=token,
            client_id=str(principal.user_id),
            subject=str(principal.user_id),
            scopes=granted_scopes(principal),
            principal=principal,
        )


async def caller_from_request() -> Principal:
    """The Principal of the HTTP request being served (its bearer token was verified by the middleware)."""
    token = get_access_token()
    if not isinstance(token, CrmAccessToken):
        raise Unauthenticated("no verified bearer token on this request")
    return token.principal


class TokenCaller:
    """The caller of a stdio server: the token it was started with, verified again once it is `recheck`
    seconds old, so an expired or revoked token stops working within that time."""

    def __init__(self, authenticate: Authenticate, token: str, *, recheck: float = 60.0) -> None:
        self._authenticate = authenticate
        self._token = token
        self._recheck = recheck
        self._principal: Principal | None = None
        self._checked_at = 0.0

    async def __call__(self) -> Principal:
        now = time.monotonic()
        if self._principal is None or now - self._checked_at >= self._recheck:
            self._principal = None
            self._principal = await self._authenticate(self._token)
            self._checked_at = now
        return self._principal

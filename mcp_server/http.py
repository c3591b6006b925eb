"""The MCP server over Streamable HTTP, ready to mount into the app at `/mcp`.

`install(app, db, authenticate, ...)` builds the server with the bearer-token resource server in front of it:
protected resource metadata at `/.well-known/oauth-protected-resource/mcp` naming the Supabase Auth issuer and
every scope the server understands, 401 with `WWW-Authenticate: Bearer ... scope=... resource_metadata=...` for a
missing or invalid token (the scopes an assistant needs, and why the token was refused), 403
`insufficient_scope` naming the scope for a token that may not read the CRM, and Host/Origin checks against DNS
rebinding.
"""

from __future__ import annotations

import json
import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, RequireAuthMiddleware
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.auth import (
    BASIC_SCOPES,
    REQUIRED_SCOPES,
    SUPPORTED_SCOPES,
    Authenticate,
    CrmTokenVerifier,
    caller_from_request,
    refusal,
)
from mcp_server.options import HttpOptions
from mcp_server.server import CrmServer, create_server
from services.kernel.errors import Unavailable
from services.kernel.uow import Database

PATH = "/mcp"

# How long a client is asked to wait before retrying when the server is overloaded.
RETRY_AFTER_SECONDS = 2


class UnavailableAnswer:
    """A 503 with Retry-After when the database cannot serve a request before it reached a tool, i.e. while
    its bearer token is turned into a user (tools answer `[unavailable]` themselves). Without it the
    authentication middleware's error would be a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Unavailable as exc:
            if started or scope["type"] != "http":
                raise
            body = json.dumps({"error": "temporarily_unavailable", "error_description": exc.message}).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]})
            await send({"type": "http.response.body", "body": body})


# What may stand in a quoted WWW-Authenticate value (RFC 6750 §3: no quote, no backslash, printable ASCII).
_UNQUOTABLE = re.compile(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]')


class Challenge:
    """The bearer-token gate in front of `/mcp`, in place of the SDK's `RequireAuthMiddleware`, whose challenges
    carry no `scope`: a client follows the MCP authorization spec and requests the scope a challenge names.

    401 (no token, or a refused one) asks for BASIC_SCOPES and says why a presented token was refused
    ("token expired"); 403 `insufficient_scope` names the scope the refused request needs."""

    def __init__(self, app: ASGIApp, required_scopes: list[str], resource_metadata_url: str) -> None:
        self.app = app
        self.required_scopes = required_scopes
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):
            presented = Headers(scope=scope).get("authorization", "").lower().startswith("bearer ")
            reason = refusal.get() if presented else None
            await self._refuse(send, 401, "invalid_token", reason or "Authentication required", BASIC_SCOPES,
                               # RFC 6750 §3.1: no error code for a request that carried no token at all
                               quiet=not presented)
            return
        missing = [s for s in self.required_scopes if s not in user.scopes]
        if missing:
            await self._refuse(send, 403, "insufficient_scope", f"Required scope: {' '.join(missing)}", missing)
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, send: Send, status: int, error: str, description: str, scopes: list[str], *, quiet: bool = False
    ) -> None:
        description = _UNQUOTABLE.sub("?", description)
        parts = [] if quiet else [f'error="{error}"', f'error_description="{description}"']
        parts += [f'scope="{" ".join(scopes)}"', f'resource_metadata="{self.resource_metadata_url}"']
        body = json.dumps({"error": error, "error_description": description}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", f"Bearer {', '.join(parts)}".encode())]})
        await send({"type": "http.response.body", "body": body})


def _with_our_challenges(app: Starlette, auth: AuthSettings) -> None:
    """Swap the SDK's gate for `Challenge`, and its metadata (whose `scopes_supported` would be only the scope
    every request needs) for one listing every scope the server understands."""
    assert auth.resource_server_url is not None
    metadata_url = str(build_resource_metadata_url(auth.resource_server_url))
    metadata = create_protected_resource_routes(
        auth.resource_server_url, [auth.issuer_url], scopes_supported=SUPPORTED_SCOPES
    )
    replaced = {route.path: route for route in metadata if isinstance(route, Route)}
    routes = app.router.routes
    gated = 0
    for i, route in enumerate(routes):
        if not isinstance(route, Route):
            continue
        if isinstance(route.endpoint, RequireAuthMiddleware):
            gate = route.endpoint
            routes[i] = Route(route.path, Challenge(gate.app, gate.required_scopes, metadata_url))
            gated += 1
        elif route.path in replaced:
            routes[i] = replaced.pop(route.path)
    assert gated == 1 and not replaced, "the SDK no longer gates /mcp and serves its metadata as it did"


@dataclass(frozen=True)
class Mounted:
    server: CrmServer
    app: ASGIApp

    def running(self) -> AbstractAsyncContextManager[None]:
        """Enter in the app's lifespan: the session manager runs the MCP sessions."""
        return self.server.session_manager.run()


def build(db: Database, authenticate: Authenticate, options: HttpOptions) -> Mounted:
    auth = AuthSettings(
        issuer_url=AnyHttpUrl(options.issuer_url),
        resource_server_url=AnyHttpUrl(options.resource_url),
        required_scopes=REQUIRED_SCOPES,
        # Supabase access tokens carry `aud: authenticated`, not this resource: the verifier checks that.
        validate_token_resource=False,
    )
    server = create_server(
        db,
        caller_from_request,
        rate_limit=options.rate_limit,
        confirmation_key=options.confirmation_key,
        token_verifier=CrmTokenVerifier(authenticate),
        auth=auth,
    )
    app = server.streamable_http_app(
        streamable_http_path=PATH,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=options.allowed_hosts,
            allowed_origins=options.allowed_origins,
        ),
    )
    _with_our_challenges(app, auth)
    app.add_middleware(UnavailableAnswer)  # outermost of its middleware: around the bearer-token check
    return Mounted(server, app)

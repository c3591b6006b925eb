"""The MCP server over Streamable HTTP, ready to mount into the app at `/mcp`.

`install(app, db, authenticate, ...)` builds the server with the bearer-token resource server in front of it:
protected resource metadata at `/.well-known/oauth-protected-resource/mcp` naming the Supabase Auth issuer,
401 with `WWW-Authenticate: Bearer ... resource_metadata=...` for a missing or invalid token, 403
`insufficient_scope` for a token that may not read the CRM, and Host/Origin checks against DNS rebinding.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.auth import REQUIRED_SCOPES, Authenticate, CrmTokenVerifier, caller_from_request
from mcp_server.server import DEFAULT_RATE_LIMIT, CrmServer, create_server
from services.kernel.errors import Unavailable
from services.kernel.ratelimit import RateLimit
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


@dataclass(frozen=True)
class HttpOptions:
    resource_url: str  # the public URL of the MCP endpoint, e.g. https://crm.example.com/mcp
    issuer_url: str  # the authorization server: the Supabase Auth issuer
    allowed_hosts: list[str] = field(default_factory=list)  # Host values accepted ("host:*" for any port)
    allowed_origins: list[str] = field(default_factory=list)  # Origin values accepted from browsers
    rate_limit: RateLimit | str = DEFAULT_RATE_LIMIT  # each user's budget of MCP requests
    confirmation_key: bytes | None = None  # shared by every process of the deployment


@dataclass(frozen=True)
class Mounted:
    server: CrmServer
    app: ASGIApp

    def running(self) -> AbstractAsyncContextManager[None]:
        """Enter in the app's lifespan: the session manager runs the MCP sessions."""
        return self.server.session_manager.run()


def build(db: Database, authenticate: Authenticate, options: HttpOptions) -> Mounted:
    server = create_server(
        db,
        caller_from_request,
        rate_limit=options.rate_limit,
        confirmation_key=options.confirmation_key,
        token_verifier=CrmTokenVerifier(authenticate),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(options.issuer_url),
            resource_server_url=AnyHttpUrl(options.resource_url),
            required_scopes=REQUIRED_SCOPES,
            # Supabase access tokens carry `aud: authenticated`, not this resource: the verifier checks that.
            validate_token_resource=False,
        ),
    )
    app = server.streamable_http_app(
        streamable_http_path=PATH,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=options.allowed_hosts,
            allowed_origins=options.allowed_origins,
        ),
    )
    app.add_middleware(UnavailableAnswer)  # outermost of its middleware: around the bearer-token check
    return Mounted(server, app)

"""How the MCP server is served over HTTP: what the app's settings give it. Light to import (no SDK), so the
app can be configured before the server and its SDK load."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.kernel.ratelimit import RateLimit

DEFAULT_RATE_LIMIT = "120/minute"  # each user's MCP requests


@dataclass(frozen=True)
class HttpOptions:
    resource_url: str  # the public URL of the MCP endpoint, e.g. https://crm.example.com/mcp
    issuer_url: str  # the authorization server: the Supabase Auth issuer
    allowed_hosts: list[str] = field(default_factory=list)  # Host values accepted ("host:*" for any port)
    allowed_origins: list[str] = field(default_factory=list)  # Origin values accepted from browsers
    rate_limit: RateLimit | str = DEFAULT_RATE_LIMIT  # each user's budget of MCP requests
    confirmation_key: bytes | None = None  # shared by every process of the deployment

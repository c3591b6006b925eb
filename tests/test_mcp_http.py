"""The MCP server mounted at /mcp in the app, over HTTP in-process: the OAuth resource-server surface (metadata,
401 and 403 with their WWW-Authenticate headers, and what the official OAuth client asks for after them),
Host/Origin checks, and the official client with a bearer
token acting as exactly that user."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx2
import jwt
import pytest
from conftest import TEST_JWT_SECRET, Company, lifespan
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from services.kernel.permissions import Scope

BASE = "http://127.0.0.1:8000"
METADATA = f"{BASE}/.well-known/oauth-protected-resource/mcp"
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Http:
    def __init__(self, app: Any, settings: Any, company: Company) -> None:
        self.app = app
        self.settings = settings
        self.company = company

    def token(self, key: str, *, scopes: list[Scope] | None = None) -> str:
        from pipecd.runtime import mint_token

        person = self.company.people[key]
        return mint_token(self.settings, person.id, person.email, scopes=scopes, ttl_seconds=600)

    def raw(self, **headers: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app), base_url=BASE, headers=headers)

    def client(self, key: str, *, scopes: list[Scope] | None = None, mode: str = "auto") -> Client:
        http = self.raw(Authorization=f"Bearer {self.token(key, scopes=scopes)}")
        return Client(streamable_http_client(f"{BASE}/mcp", http_client=http), mode=mode)


@pytest.fixture
async def http(settings, company: Company) -> AsyncIterator[Http]:
    from pipecd.app import create_app

    app = create_app(settings)
    async with lifespan(app):
        yield Http(app, settings, company)


async def test_protected_resource_metadata_names_the_supabase_issuer_and_every_scope(http):
    async with http.raw() as client:
        response = await client.get("/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    body = response.json()
    assert (body["resource"], body["authorization_servers"], body["scopes_supported"]) == (
        f"{BASE}/mcp", ["http://127.0.0.1:54321/auth/v1"], ["crm.read", "crm.write", "crm.delete", "crm.ai"])


ASK = f'scope="crm.read crm.write", resource_metadata="{METADATA}"'


@pytest.mark.parametrize(
    ("authorization", "description"),
    [("Bearer not-a-jwt", "malformed token"), ("Bearer {expired}", "token expired"),
     ("Bearer {wrong_audience}", "token audience is not 'authenticated'"),
     ("Bearer {wrong_secret}", "token signature is invalid"),
     ("Bearer {stranger}", "unknown user: no CRM profile for this account")],
    ids=["garbage", "expired", "wrong-audience", "wrong-secret", "unknown-user"],
)
async def test_a_refused_token_gets_401_saying_why_and_asking_for_the_basic_scopes(http, authorization, description):
    person = http.company.people["bob"]
    base = {"sub": str(person.id), "role": "authenticated", "aud": "authenticated", "exp": 4_000_000_000}
    tokens = {
        "expired": jwt.encode({**base, "exp": 1_000_000_000}, TEST_JWT_SECRET, algorithm="HS256"),
        "wrong_audience": jwt.encode({**base, "aud": "someone-else"}, TEST_JWT_SECRET, algorithm="HS256"),
        "wrong_secret": jwt.encode(base, "another-secret-of-sufficient-length-0123456789", algorithm="HS256"),
        "stranger": jwt.encode({**base, "sub": str(uuid4())}, TEST_JWT_SECRET, algorithm="HS256"),
    }
    headers = {**ACCEPT, "Authorization": authorization.format(**tokens)}
    async with http.raw() as client:
        response = await client.post("/mcp", json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", error_description="{description}", {ASK}')
    assert response.json() == {"error": "invalid_token", "error_description": description}


@pytest.mark.parametrize("authorization", [None, "Basic abc"], ids=["missing", "not-bearer"])
async def test_a_request_without_a_bearer_token_gets_401_with_the_scopes_and_no_error_code(http, authorization):
    headers = {**ACCEPT, "Authorization": authorization} if authorization else ACCEPT
    async with http.raw() as client:
        response = await client.post("/mcp", json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f"Bearer {ASK}"
    assert response.json() == {"error": "invalid_token", "error_description": "Authentication required"}


async def test_a_token_without_the_read_scope_gets_403_insufficient_scope_naming_it(http):
    token = http.token("bob", scopes=[Scope.AI])
    async with http.raw() as client:
        response = await client.post("/mcp", json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", error_description="Required scope: crm.read", scope="crm.read", '
        f'resource_metadata="{METADATA}"')


class Stop(Exception):
    pass


async def test_the_official_oauth_client_asks_the_authorization_server_for_the_challenged_scopes(http):
    """The SDK's OAuth client, sent away with 401, reads our metadata and challenge and sends the user to the
    authorization server asking for exactly the scopes the challenge names."""
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

    issuer = "http://127.0.0.1:54321/auth/v1"
    asked: list[str] = []

    def authorization_server(request: httpx2.Request) -> httpx2.Response:
        asked.append(f"{request.method} {request.url.path}")
        if request.url.path.startswith("/.well-known/oauth-authorization-server"):
            return httpx2.Response(200, json={
                "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token",
                "registration_endpoint": f"{issuer}/register", "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"]})
        if request.url.path == "/auth/v1/register":
            return httpx2.Response(201, json={**json.loads(request.content), "client_id": "assistant"})
        return httpx2.Response(404)

    class Routed(httpx2.AsyncBaseTransport):
        def __init__(self) -> None:
            self.app = httpx2.ASGITransport(app=http.app)
            self.auth_server = httpx2.MockTransport(authorization_server)

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            target = self.auth_server if request.url.port == 54321 else self.app
            return await target.handle_async_request(request)

    class Memory(TokenStorage):
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.client: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.client

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.client = client_info

    redirected: list[str] = []

    async def redirect(url: str) -> None:
        redirected.append(url)

    async def callback() -> Any:
        raise Stop  # the user would sign in now

    provider = OAuthClientProvider(
        f"{BASE}/mcp",
        OAuthClientMetadata(redirect_uris=["http://localhost:3030/callback"], client_name="assistant"),
        Memory(),
        redirect_handler=redirect,
        callback_handler=callback,
    )
    async with httpx2.AsyncClient(transport=Routed(), auth=provider) as client:
        with pytest.raises(Stop):
            await client.post(f"{BASE}/mcp", json=INITIALIZE, headers=ACCEPT)
    assert asked == ["GET /.well-known/oauth-authorization-server/auth/v1", "POST /auth/v1/register"]
    assert len(redirected) == 1
    query = parse_qs(urlsplit(redirected[0]).query)
    assert (query["client_id"], query["scope"], query["resource"]) == (
        ["assistant"], ["crm.read crm.write"], [f"{BASE}/mcp"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Host": "evil.example"}, 421), ({"Origin": "https://evil.example"}, 403),
     ({"Origin": "http://localhost:5173"}, 200)],
    ids=["foreign-host", "foreign-origin", "loopback-origin"],
)
async def test_host_and_origin_are_checked_against_dns_rebinding(http, headers, status):
    token = http.token("bob")
    async with http.raw() as client:
        response = await client.post("/mcp", json=INITIALIZE,
                                     headers={**ACCEPT, "Authorization": f"Bearer {token}", **headers})
    assert response.status_code == status, response.text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_official_client_acts_as_the_token_s_user_with_its_scopes(http, mode):
    async with http.client("bob", mode=mode) as client:
        me = await client.call_tool("whoami", {})
        tools = {t.name for t in (await client.list_tools()).tools}
    assert me.structured_content["user"]["email"] == "bob@example.com"
    assert {"create_deal", "search"} <= tools
    async with http.client("bob", scopes=[Scope.READ], mode=mode) as client:
        read_only = {t.name for t in (await client.list_tools()).tools}
        narrowed = await client.call_tool("whoami", {})
        refused = await client.call_tool("create_deal", {"title": "Sneaky"})
    assert "create_deal" not in read_only and "search" in read_only
    # the words of the refusal are those whoami lists
    assert (narrowed.structured_content["scopes"], narrowed.structured_content["permissions"]) == (
        ["crm.read"], ["activities:read", "contacts:read", "deals:read", "leads:read", "notes:read", "pipelines:read",
                       "users:read"])
    assert refused.is_error
    assert refused.content[0].text == "[forbidden] your token's scope crm.read does not allow deals:write"


async def test_graphql_and_health_still_answer_beside_the_mount(http):
    async with http.raw(Host="testserver") as client:
        health = await client.get("/healthz")
        anonymous = await client.post("/graphql", json={"query": "{ me { email } }"})
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert anonymous.status_code == 401


def test_host_and_origin_defaults_follow_the_public_url_and_production_drops_loopback(tmp_path):
    from pipecd.settings import Settings

    base = {"PIPECD_STATE_DIR": tmp_path, "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
            "PIPECD_PUBLIC_URL": "https://crm.example.com", "SUPABASE_URL": "https://abc.supabase.co"}
    production = Settings(**base, PIPECD_ENV="production")
    assert production.effective_mcp_allowed_hosts == ["crm.example.com", "crm.example.com:*"]
    assert production.effective_mcp_allowed_origins == ["https://crm.example.com"]
    assert (production.mcp_resource_url, production.auth_issuer) == (
        "https://crm.example.com/mcp", "https://abc.supabase.co/auth/v1")
    explicit = Settings(**base, PIPECD_MCP_ALLOWED_HOSTS="a.example, b.example:*", PIPECD_MCP_ALLOWED_ORIGINS="")
    assert (explicit.effective_mcp_allowed_hosts, explicit.effective_mcp_allowed_origins) == (
        ["a.example", "b.example:*"], [])


def test_a_malformed_rate_limit_is_refused_at_startup(tmp_path):
    from pydantic import ValidationError

    from pipecd.settings import Settings

    refusal = "PIPECD_MCP_RATE_LIMIT\n  Value error, couldn't parse rate limit string 'lots'"
    with pytest.raises(ValidationError, match=refusal):
        Settings(PIPECD_STATE_DIR=tmp_path, PIPECD_MCP_RATE_LIMIT="lots")

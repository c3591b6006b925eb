"""The MCP server mounted at /mcp in the app, over HTTP in-process: the OAuth resource-server surface (metadata,
401 and 403 with their WWW-Authenticate headers), Host/Origin checks, and the official client with a bearer
token acting as exactly that user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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


async def test_protected_resource_metadata_names_the_supabase_issuer_and_the_scope(http):
    async with http.raw() as client:
        response = await client.get("/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    body = response.json()
    assert (body["resource"], body["authorization_servers"], body["scopes_supported"]) == (
        f"{BASE}/mcp", ["http://127.0.0.1:54321/auth/v1"], ["crm.read"])


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer not-a-jwt", "Bearer {expired}", "Bearer {wrong_audience}", "Bearer {wrong_secret}", "Basic abc"],
    ids=["missing", "garbage", "expired", "wrong-audience", "wrong-secret", "not-bearer"],
)
async def test_a_missing_or_invalid_token_gets_401_pointing_at_the_metadata(http, authorization):
    person = http.company.people["bob"]
    base = {"sub": str(person.id), "role": "authenticated", "aud": "authenticated", "exp": 4_000_000_000}
    tokens = {
        "expired": jwt.encode({**base, "exp": 1_000_000_000}, TEST_JWT_SECRET, algorithm="HS256"),
        "wrong_audience": jwt.encode({**base, "aud": "someone-else"}, TEST_JWT_SECRET, algorithm="HS256"),
        "wrong_secret": jwt.encode(base, "another-secret-of-sufficient-length-0123456789", algorithm="HS256"),
    }
    headers = {**ACCEPT, "Authorization": authorization.format(**tokens)} if authorization else ACCEPT
    async with http.raw() as client:
        response = await client.post("/mcp", json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{METADATA}"' in challenge


async def test_a_token_without_the_read_scope_gets_403_insufficient_scope(http):
    token = http.token("bob", scopes=[Scope.AI])
    async with http.raw() as client:
        response = await client.post("/mcp", json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", error_description="Required scope: crm.read", '
        f'resource_metadata="{METADATA}"')


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
        refused = await client.call_tool("create_deal", {"title": "Sneaky"})
    assert "create_deal" not in read_only and "search" in read_only
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

"""Per-user rate limits on every surface: GraphQL requests (429 before the user's roles are read) and MCP tool
calls, resource reads, prompts and completions (in-protocol errors). A refused request writes nothing. With a
Redis store, two app instances (two processes or replicas) share one budget; the default counts per process."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import TEST_JWT_SECRET, Company, counts, forget_bookkeeping, lifespan
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, PromptReference

from mcp_server.server import create_server
from pipecd.settings import Settings
from services.kernel.principal import Channel
from services.kernel.ratelimit import RateLimit, storage

REDIS_URL = "redis://127.0.0.1:6379/0"
WRITES = ("deals", "audit_log", "outbox")
REFUSAL = r"too many requests: at most 2 per 1 minute; try again in (\d+) s"
CREATE_DEAL = 'mutation { createDeal(input: {title: "Limited"}) { id } }'
WHOAMI = "{ me { user { email } } }"


def settings_for(admin_url: str, tmp_path: Path, **env: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, DATABASE_URL=admin_url, PIPECD_STATE_DIR=tmp_path / "state", PIPECD_ENV="test",
        SUPABASE_JWT_SECRET=TEST_JWT_SECRET, **env,
    )


def token(settings: Settings, company: Company, key: str) -> str:
    from pipecd.runtime import mint_token

    person = company.people[key]
    return mint_token(settings, person.id, person.email, ttl_seconds=600)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from pipecd.app import create_app

    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def graphql(client: httpx.AsyncClient, bearer: str, query: str) -> httpx.Response:
    return await client.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {bearer}"})


def assert_refused_over_http(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    (error,) = body["errors"]
    match = re.fullmatch(REFUSAL, error["message"])
    assert match, error["message"]
    assert body["data"] is None
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": int(match[1])}
    assert response.headers["Retry-After"] == match[1]
    assert 1 <= int(match[1]) <= 60


# GraphQL --------------------------------------------------------------------------------------------------


async def test_graphql_requests_past_the_limit_are_refused_with_429_and_write_nothing(
    admin_url, tmp_path, company, admin
):
    settings = settings_for(admin_url, tmp_path, PIPECD_GRAPHQL_RATE_LIMIT="2/minute")
    bob, carol = token(settings, company, "bob"), token(settings, company, "carol")
    async with running(settings) as client:
        first = await graphql(client, bob, CREATE_DEAL)
        second = await graphql(client, bob, WHOAMI)
        forget_bookkeeping(admin)
        before = counts(admin, *WRITES)
        third = await graphql(client, bob, CREATE_DEAL)
        carols = await graphql(client, carol, WHOAMI)  # the budget is per user
    assert first.status_code == 200 and "errors" not in first.json(), first.text
    assert second.json() == {"data": {"me": {"user": {"email": "bob@example.com"}}}}
    assert_refused_over_http(third)
    assert counts(admin, *WRITES) == before == {"deals": 1, "audit_log": 0, "outbox": 0}
    assert carols.json() == {"data": {"me": {"user": {"email": "carol@example.com"}}}}


async def test_a_refused_graphql_request_is_refused_before_the_users_roles_are_read(
    admin_url, tmp_path, company, admin
):
    settings = settings_for(admin_url, tmp_path, PIPECD_GRAPHQL_RATE_LIMIT="1/minute")
    bob = token(settings, company, "bob")
    async with running(settings) as client:
        assert (await graphql(client, bob, WHOAMI)).status_code == 200
        # Were the profile read for the next request, it would be answered "unknown user" (401).
        admin.execute("alter table public.user_profiles rename to user_profiles_away")
        try:
            refused = await graphql(client, bob, WHOAMI)
        finally:
            admin.execute("alter table public.user_profiles_away rename to user_profiles")
    assert refused.status_code == 429, refused.text
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


# MCP --------------------------------------------------------------------------------------------------------


async def _tool(client: Client) -> Any:
    result = await client.call_tool("create_deal", {"title": "Limited"})
    if result.is_error:
        raise MCPError(code=0, message=result.content[0].text)
    return result


async def _resource(client: Client) -> Any:
    return await client.read_resource("crm://me")


async def _prompt(client: Client) -> Any:
    return await client.get_prompt("pipeline_review", {})


async def _completion(client: Client) -> Any:
    return await client.complete(PromptReference(name="lost_deal_analysis"), {"name": "period", "value": "last"})


SURFACES: dict[str, tuple[Callable[[Client], Any], int]] = {
    "tool call": (_tool, 0),  # a tool error (is_error), not a protocol error
    "resource read": (_resource, INTERNAL_ERROR),
    "prompt": (_prompt, INTERNAL_ERROR),
    "completion": (_completion, INTERNAL_ERROR),
}


@pytest.mark.parametrize("surface", list(SURFACES))
async def test_every_mcp_surface_refuses_past_the_limit_and_writes_nothing(db, company, admin, surface):
    use, code = SURFACES[surface]
    acting = {"as": company.principal("bob", channel=Channel.MCP)}

    async def caller():
        return acting["as"]

    forget_bookkeeping(admin)
    async with Client(create_server(db, caller, rate_limit="2/minute")) as client:
        await use(client)
        await use(client)
        before = counts(admin, *WRITES)
        with pytest.raises(MCPError) as raised:
            await use(client)
        after = counts(admin, *WRITES)
        acting["as"] = company.principal("carol", channel=Channel.MCP)
        await use(client)  # the budget is per user
    assert (raised.value.code, bool(re.fullmatch(rf"\[rate_limited\] {REFUSAL}", raised.value.message))) == (
        code, True), raised.value.message
    assert after == before


async def test_mcp_over_http_uses_the_configured_limit(admin_url, tmp_path, company, admin):
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from pipecd.app import create_app

    settings = settings_for(admin_url, tmp_path, PIPECD_MCP_RATE_LIMIT="2/minute",
                            PIPECD_PUBLIC_URL="http://127.0.0.1:8000")
    app = create_app(settings)
    forget_bookkeeping(admin)
    async with lifespan(app):
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000",
                                  headers={"Authorization": f"Bearer {token(settings, company, 'bob')}"})
        async with Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client:
            results = [await client.call_tool("whoami", {}) for _ in range(3)]
    assert [r.is_error for r in results] == [False, False, True]
    assert re.fullmatch(rf"\[rate_limited\] {REFUSAL}", results[2].content[0].text), results[2].content[0].text
    operations = [op for (op,) in admin.execute("select operation from public.audit_log order by id").fetchall()]
    assert operations == ["tool.whoami", "tool.whoami"]


# Unknown tools --------------------------------------------------------------------------------------------


async def test_an_unknown_tool_is_audited_as_such_with_its_name_cut_short(db, company, admin):
    principal = company.principal("bob", channel=Channel.MCP)

    async def caller():
        return principal

    forget_bookkeeping(admin)
    name = "x" * 50_000
    async with Client(create_server(db, caller)) as client:
        result = await client.call_tool(name, {})
    assert result.is_error
    assert result.content[0].text == f"[not_found] there is no tool {'x' * 100!r}; see tools/list"
    rows = admin.execute("select operation, entity_type, diff->'after' from public.audit_log").fetchall()
    assert len(rows) == 1
    operation, entity_type, after = rows[0]
    assert (operation, entity_type) == ("tool.unknown", "mcp_tool_call")
    assert after["requested"] == "x" * 100
    assert after["outcome"] == "not_found"


# Stores -----------------------------------------------------------------------------------------------------


def _redis_reachable(url: str) -> str | None:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return None
    except OSError as exc:
        return f"Redis is not reachable at {url}: {exc}"


async def test_two_app_instances_on_redis_share_one_budget(admin_url, tmp_path, company, admin, db):
    if (reason := _redis_reachable(REDIS_URL)) is not None:
        pytest.skip(reason)
    settings = settings_for(admin_url, tmp_path, PIPECD_GRAPHQL_RATE_LIMIT="2/minute",
                            PIPECD_MCP_RATE_LIMIT="2/minute", PIPECD_RATE_LIMIT_STORAGE=REDIS_URL)
    store = storage(REDIS_URL)
    for surface in ("graphql", "mcp"):  # a budget left over from an earlier run of this test
        await RateLimit(surface, "2/minute", store).reset(company.people["bob"].id)
    bob = token(settings, company, "bob")
    async with running(settings) as one, running(settings) as two:
        first = await graphql(one, bob, WHOAMI)
        second = await graphql(two, bob, WHOAMI)
        forget_bookkeeping(admin)
        before = counts(admin, *WRITES)
        third = await graphql(one, bob, CREATE_DEAL)
        fourth = await graphql(two, bob, CREATE_DEAL)
    assert [first.status_code, second.status_code] == [200, 200]
    assert_refused_over_http(third)
    assert_refused_over_http(fourth)
    assert counts(admin, *WRITES) == before

    # MCP servers of two processes share the MCP budget the same way.
    from pipecd.runtime import rate_limits

    principal = company.principal("bob", channel=Channel.MCP)

    async def caller():
        return principal

    one_server = create_server(db, caller, rate_limit=rate_limits(settings).mcp)
    two_server = create_server(db, caller, rate_limit=rate_limits(settings).mcp)
    async with Client(one_server) as a, Client(two_server) as b:
        await a.list_tools()
        hits = [await a.complete(PromptReference(name="lost_deal_analysis"), {"name": "period", "value": "x"}),
                await b.complete(PromptReference(name="lost_deal_analysis"), {"name": "period", "value": "x"})]
        with pytest.raises(MCPError) as raised:
            await a.complete(PromptReference(name="lost_deal_analysis"), {"name": "period", "value": "x"})
    assert len(hits) == 2
    assert re.fullmatch(rf"\[rate_limited\] {REFUSAL}", raised.value.message), raised.value.message
    for surface in ("graphql", "mcp"):
        await RateLimit(surface, "2/minute", store).reset(company.people["bob"].id)


async def test_the_default_memory_store_counts_in_each_process(admin_url, tmp_path, company):
    settings = settings_for(admin_url, tmp_path, PIPECD_GRAPHQL_RATE_LIMIT="1/minute")
    assert settings.rate_limit_storage == "memory://"
    bob = token(settings, company, "bob")
    async with running(settings) as one, running(settings) as two:
        answers = [await graphql(one, bob, WHOAMI), await graphql(two, bob, WHOAMI), await graphql(one, bob, WHOAMI)]
    assert [a.status_code for a in answers] == [200, 200, 429]


def test_defaults_and_a_bad_store_refused_at_startup(tmp_path):
    from pydantic import ValidationError

    settings = Settings(_env_file=None, PIPECD_STATE_DIR=tmp_path)  # type: ignore[call-arg]
    assert (settings.mcp_rate_limit, settings.graphql_rate_limit, settings.rate_limit_storage) == (
        "120/minute", "600/minute", "memory://")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, PIPECD_STATE_DIR=tmp_path, PIPECD_RATE_LIMIT_STORAGE="carrier-pigeon://")  # type: ignore[call-arg]
    assert "unusable rate limit storage 'carrier-pigeon://'" in str(raised.value)


async def test_an_unreachable_shared_store_refuses_as_unavailable_and_writes_nothing(db, company, admin):
    principal = company.principal("bob", channel=Channel.MCP)

    async def caller():
        return principal

    forget_bookkeeping(admin)
    limit = RateLimit("mcp", "100/minute", storage("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    async with Client(create_server(db, caller, rate_limit=limit)) as client:
        result = await client.call_tool("create_deal", {"title": "Unlimited?"})
    assert result.is_error
    assert result.content[0].text == "[unavailable] the rate limit store cannot be reached; try again shortly"
    assert counts(admin, *WRITES) == {"deals": 0, "audit_log": 0, "outbox": 0}

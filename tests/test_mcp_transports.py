"""A salesperson's assistant over the real transports: the official MCP Python client against uvicorn on
127.0.0.1 with bob's bearer token, and against `pipecd mcp` over stdio. The same sales workflow on each;
then carol's assistant cannot see bob's owner-only deal."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from conftest import ROOT, Company
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from services.contacts import service as contacts
from services.contacts.schemas import PersonCreate

Connect = Callable[[str], Any]


@asynccontextmanager
async def uvicorn_on_loopback(app: Any) -> AsyncIterator[str]:
    """The app served by uvicorn on 127.0.0.1 (a free port), in this event loop; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=["http", "stdio"])
async def connect(request, settings, company: Company) -> AsyncIterator[Connect]:
    """`connect(user_key)` → an official MCP client acting as that user over the transport under test."""
    if request.param == "http":
        from pipecd.app import create_app
        from pipecd.runtime import mint_token

        async with uvicorn_on_loopback(create_app(settings)) as base:

            def over_http(key: str) -> Client:
                person = company.people[key]
                token = mint_token(settings, person.id, person.email, ttl_seconds=600)
                http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
                return Client(streamable_http_client(f"{base}/mcp", http_client=http))

            yield over_http
        return

    def over_stdio(key: str) -> Client:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": settings.database_url,
            "PIPECD_STATE_DIR": str(settings.state_dir),
            "PIPECD_ENV": "test",
            "SUPABASE_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        }
        pipecd = Path(sys.executable).with_name("pipecd")
        command = StdioServerParameters(
            command=str(pipecd), args=["mcp", "--user", company.people[key].email], env=env, cwd=str(ROOT)
        )
        return Client(command)

    yield over_stdio


def data(result: Any) -> Any:
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_a_sales_workflow_then_another_member_cannot_see_the_owner_only_deal(connect, actors, company, admin):
    async with actors.uow("bob") as uow:
        await contacts.create_person(uow, PersonCreate(first_name="Peter", last_name="Gibbons",
                                                       emails=["peter@initech.example"]))
    stages = company.sales_stage_ids
    async with connect("bob") as bob:
        hits = data(await bob.call_tool("search", {"query": "Gibbons"}))["result"]
        assert [(h["type"], h["title"]) for h in hits] == [("person", "Peter Gibbons")]
        deal = data(await bob.call_tool("create_deal", {
            "title": "Initech renewal", "value": 1200, "person_id": hits[0]["id"], "visibility": "owner",
            "idempotency_key": "initech-renewal"}))
        moved = data(await bob.call_tool("move_deal_stage", {
            "deal_id": deal["id"], "stage_id": str(stages[1]), "expected_version": deal["version"]}))
        activity = data(await bob.call_tool("log_activity", {
            "type": "call", "subject": "Pricing call", "deal_id": deal["id"]}))
        note = data(await bob.call_tool("add_note", {"body": "Wants a 3-year term.", "deal_id": deal["id"]}))
        again = data(await bob.call_tool("get_deal", {"deal_id": deal["id"]}))
        (summary,) = data(await bob.call_tool("pipeline_summary", {}))["result"]
    assert (moved["stage_id"], moved["version"]) == (str(stages[1]), 2)
    assert (activity["deal_id"], note["deal_id"]) == (deal["id"], deal["id"])
    assert (again["deal"]["title"], again["stage"]["id"], again["person"]["name"]) == (
        "Initech renewal", str(stages[1]), "Peter Gibbons")
    assert [n["body"] for n in again["recent_notes"]] == ["Wants a 3-year term."]
    assert [a["subject"] for a in again["open_activities"]] == ["Pricing call"]
    stage = next(s for s in summary["stages"] if s["stage_id"] == str(stages[1]))
    weighted = f"{Decimal(1200) * stage['win_probability'] / 100:.2f}"
    assert again["deal"]["weighted_value"] == weighted
    assert stage["open"] == {"count": 1, "amounts": [{"currency": "USD", "value": "1200.00",
                                                      "weighted_value": weighted}]}
    rows = admin.execute("select title, owner_id, stage_id from public.deals").fetchall()
    assert rows == [("Initech renewal", company.people["bob"].id, stages[1])]

    async with connect("carol") as carol:
        got = await carol.call_tool("get_deal", {"deal_id": deal["id"]})
        found = data(await carol.call_tool("search", {"query": "Initech"}))["result"]
        listed = data(await carol.call_tool("list_deals", {}))
    assert got.is_error and got.content[0].text.startswith(f"[not_found] deal {deal['id']} not found")
    assert [(h["type"], h["title"]) for h in found] == [("person", "Peter Gibbons")]  # company-wide, unlike the deal
    assert listed["total"] == 0

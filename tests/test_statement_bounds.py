"""Bounds on the database work of one request: the length of search text (one cap on every surface), a
statement timeout on every unit of work, and a cancelled request leaving no statement running."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from conftest import Company
from mcp import Client
from pydantic import ValidationError

from mcp_server.server import create_server
from services.kernel.auth import session
from services.kernel.errors import Invalid, Unavailable
from services.kernel.principal import Channel
from services.kernel.schemas import MAX_SEARCH_TEXT, RecordFilter
from services.kernel.uow import Database, StatementTimeout, UnitOfWork
from services.search import service as search_service

LONG = "acme " * 2000  # 10,000 characters


@pytest.fixture
def searches(monkeypatch) -> list[str]:
    """The search statements the app sends (its trigram matching, in private.search_candidates, is what costs)."""
    sent: list[str] = []
    execute = UnitOfWork._execute

    async def spy(self: UnitOfWork, query: str, params: Any) -> Any:
        if "search_candidates" in query:
            sent.append(query)
        return await execute(self, query, params)

    monkeypatch.setattr(UnitOfWork, "_execute", spy)
    return sent


async def test_graphql_search_refuses_text_over_the_cap(api, searches):
    body = await api.query("query($q: String!) { search(query: $q) { id } }", {"q": LONG})
    assert searches == []
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "query"}
    assert error["message"] == f"search text must be at most {MAX_SEARCH_TEXT} characters"


async def test_mcp_search_refuses_text_over_the_cap(db, company: Company, searches):
    principal = company.principal("bob", channel=Channel.MCP)

    async def caller() -> Any:
        return principal

    async with Client(create_server(db, caller)) as client:
        result = await client.call_tool("search", {"query": LONG})
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("[invalid]"), text
    assert "query" in text and str(MAX_SEARCH_TEXT) in text
    assert searches == []


async def test_the_service_refuses_long_search_text_before_any_search_sql(actors, searches):
    async with actors.uow("bob") as uow:
        with pytest.raises(Invalid) as caught:
            await search_service.search(uow, "x" * (MAX_SEARCH_TEXT + 1))
        assert caught.value.field == "query"
        assert searches == []
        # exactly at the cap is fine
        assert await search_service.search(uow, "x" * MAX_SEARCH_TEXT) == []
        assert len(searches) == 1


def test_text_filters_share_the_search_cap():
    RecordFilter(text="x" * MAX_SEARCH_TEXT)
    with pytest.raises(ValidationError):
        RecordFilter(text="x" * (MAX_SEARCH_TEXT + 1))


async def test_a_statement_past_the_timeout_becomes_a_domain_error(app_url, company):
    db = Database(app_url, max_size=2, statement_timeout=0.2)
    await db.open()
    try:
        started = time.monotonic()
        with pytest.raises(StatementTimeout) as caught:
            async with db.unit_of_work(company.principal("bob")) as uow:
                await uow.one("select pg_sleep(5)")
        assert time.monotonic() - started < 3
        assert isinstance(caught.value, Unavailable)
        assert caught.value.message == "the database stopped this request because it took too long; ask for less"
        # the connection went back clean: the next unit of work works, with the same bound
        async with db.unit_of_work(company.principal("bob")) as uow:
            assert await uow.one("select current_setting('statement_timeout') as t") == {"t": "200ms"}
        async with session(db, {"sub": str(company.people["bob"].id)}, Channel.GRAPHQL) as uow:
            assert await uow.one("select current_setting('statement_timeout') as t") == {"t": "200ms"}
    finally:
        await db.close()


def test_the_statement_timeout_setting_reaches_the_pool(settings, admin_url):
    from pipecd import runtime
    from pipecd.settings import Settings

    assert settings.db_statement_timeout == 8.0
    tuned = Settings(DATABASE_URL=admin_url, PIPECD_STATE_DIR=settings.state_dir, PIPECD_ENV="test",
                     PIPECD_DB_STATEMENT_TIMEOUT="0.5", PIPECD_DB_POOL_TIMEOUT="1")
    db = runtime.database(tuned, admin_url)
    assert (db.statement_timeout, db.pool_timeout) == (0.5, 1.0)


async def test_a_statement_timeout_in_graphql_is_unavailable_not_internal(api, monkeypatch):
    async def slow(uow: Any, query: str, **_: Any) -> list[Any]:
        await uow.one("select pg_sleep(0.5)")
        return []

    monkeypatch.setattr(search_service, "search", slow)
    monkeypatch.setattr(Database, "_timeout_setting", lambda self: "100ms")
    response = await api.post('{ search(query: "acme") { id } }')
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "UNAVAILABLE"}


def running(admin: psycopg.Connection, marker: str) -> list[Any]:
    return admin.execute(
        "select pid, state from pg_stat_activity where query like %s and pid <> pg_backend_pid()",
        [f"%{marker}%"],
    ).fetchall()


async def test_a_cancelled_unit_of_work_leaves_no_statement_running(db: Database, company, admin):
    marker = "cancelled_marker_7f3a"
    started = asyncio.Event()

    async def slow() -> None:
        async with db.unit_of_work(company.principal("bob")) as uow:
            started.set()
            await uow.one(f"select pg_sleep(30) as {marker}")

    task = asyncio.create_task(slow())
    await started.wait()
    for _ in range(50):
        if [r for r in running(admin, marker) if r[1] == "active"]:
            break
        await asyncio.sleep(0.05)
    assert [r for r in running(admin, marker) if r[1] == "active"], "the statement never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert [r for r in running(admin, marker) if r[1] == "active"] == []
    # and the pool's connections are clean and usable
    async with db.unit_of_work(company.principal("bob")) as uow:
        assert await uow.one("select 1 as one") == {"one": 1}


async def test_a_client_that_disconnects_cancels_its_graphql_statement(settings, company, admin, monkeypatch):
    """Straight ASGI (as uvicorn drives it): the body, then nothing until the client goes away."""
    import json as jsonlib

    from conftest import lifespan

    from pipecd.app import create_app
    from pipecd.runtime import mint_token

    marker = "disconnect_marker_5b1e"

    async def slow(uow: Any, query: str, **_: Any) -> list[Any]:
        await uow.one(f"select pg_sleep(30) as {marker}")
        return []

    monkeypatch.setattr(search_service, "search", slow)
    app = create_app(settings)
    bob = company.people["bob"]
    body = jsonlib.dumps({"query": '{ search(query: "acme") { id } }'}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/graphql", "raw_path": b"/graphql", "query_string": b"", "root_path": "",
        "server": ("testserver", 80), "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"authorization", f"Bearer {mint_token(settings, bob.id, bob.email)}".encode())],
    }
    leave = asyncio.Event()
    delivered = False
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with lifespan(app):
        request = asyncio.create_task(app(scope, receive, send))
        for _ in range(100):
            if [r for r in running(admin, marker) if r[1] == "active"]:
                break
            await asyncio.sleep(0.05)
        assert [r for r in running(admin, marker) if r[1] == "active"], "the statement never started"
        leave.set()
        await asyncio.wait_for(request, 5)
        await asyncio.sleep(0.2)
        assert [r for r in running(admin, marker) if r[1] == "active"] == []
    assert sent == []  # nobody to answer

"""The pool under load: a request never waits for a connection while holding one, and a pool that is full
anyway answers at once and clearly (GraphQL 503 UNAVAILABLE with Retry-After, MCP `[unavailable]`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import TEST_JWT_SECRET, Api, Company, lifespan
from mcp import Client

from mcp_server.server import create_server
from services.kernel.auth import session
from services.kernel.principal import Channel
from services.kernel.uow import Database, NestedUnitOfWork, PoolExhausted

POOL = 3


@pytest.fixture
async def small_api(admin_url: str, tmp_path: Any, company: Company) -> AsyncIterator[tuple[Api, Any]]:
    from pipecd.app import create_app
    from pipecd.settings import Settings

    settings = Settings(
        DATABASE_URL=admin_url, PIPECD_STATE_DIR=tmp_path / "state", PIPECD_ENV="test",
        SUPABASE_JWT_SECRET=TEST_JWT_SECRET, PIPECD_DB_POOL_MAX=POOL, PIPECD_DB_POOL_TIMEOUT=1.5,
    )
    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield Api(client, settings, company), app


def two_deals(n: int) -> str:
    return f"""mutation {{
      a: createDeal(input: {{title: "Load {n} a"}}) {{ id title owner {{ id }} pipeline {{ id }} stage {{ id }} }}
      b: createDeal(input: {{title: "Load {n} b"}}) {{ id title owner {{ id }} pipeline {{ id }} }}
      c: createDeal(input: {{title: "Load {n} c"}}) {{ id owner {{ id }} }}
    }}"""


async def test_more_multi_mutation_documents_than_connections_all_succeed_promptly(small_api, admin, company):
    api, _ = small_api
    documents = 8
    started = time.monotonic()
    answers = await asyncio.gather(
        *(api.post(two_deals(n)) for n in range(documents)),
        api.post("{ me { user { id } } }"),
    )
    elapsed = time.monotonic() - started
    for response in answers[:documents]:
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        for alias in "abc":
            assert body["data"][alias]["owner"] == {"id": str(company.people["bob"].id)}
    assert answers[-1].status_code == 200
    assert answers[-1].json() == {"data": {"me": {"user": {"id": str(company.people["bob"].id)}}}}
    titles = {r[0] for r in admin.execute("select title from public.deals where title like 'Load %'").fetchall()}
    assert titles == {f"Load {n} {alias}" for n in range(documents) for alias in "abc"}
    assert elapsed < 20


async def hold(db: Database, company: Company, count: int, release: asyncio.Event) -> list[asyncio.Task[None]]:
    """Hold `count` pool connections (each in a task of its own) until `release` is set."""
    held = asyncio.Semaphore(0)

    async def one() -> None:
        async with db.unit_of_work(company.principal("alice")):
            held.release()
            await release.wait()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    for _ in range(count):
        await asyncio.wait_for(held.acquire(), 10)
    return tasks


async def test_an_exhausted_pool_answers_503_unavailable_with_retry_after_quickly(small_api, company):
    api, app = small_api
    release = asyncio.Event()
    tasks = await hold(app.state.db, company, POOL, release)
    try:
        started = time.monotonic()
        response = await api.post("{ me { user { id } } }")
        elapsed = time.monotonic() - started
    finally:
        release.set()
        await asyncio.gather(*tasks)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAVAILABLE"}
    assert "no database connection became free within 1.5 s" in body["errors"][0]["message"]
    assert elapsed < 5
    # and the pool is whole again afterwards
    again = await api.query("{ me { user { id } } }")
    assert again == {"data": {"me": {"user": {"id": str(company.people["bob"].id)}}}}


async def test_an_exhausted_pool_is_unavailable_to_an_mcp_tool(app_url, company):
    db = Database(app_url, max_size=2, pool_timeout=0.5)
    await db.open()
    release = asyncio.Event()
    try:
        tasks = await hold(db, company, 2, release)
        principal = company.principal("bob", channel=Channel.MCP)

        async def caller() -> Any:
            return principal

        try:
            async with Client(create_server(db, caller)) as client:
                started = time.monotonic()
                result = await client.call_tool("search", {"query": "peter"})
                elapsed = time.monotonic() - started
        finally:
            release.set()
            await asyncio.gather(*tasks)
    finally:
        await db.close()
    assert result.is_error
    assert result.content[0].text == (
        "[unavailable] the server is busy: no database connection became free within 0.5 s; try again shortly"
    )
    assert elapsed < 5


async def test_a_second_unit_of_work_in_the_same_task_is_refused_before_waiting(db, company, admin):
    principal = company.principal("bob")
    async with db.unit_of_work(principal) as outer:
        with pytest.raises(NestedUnitOfWork):
            async with db.unit_of_work(principal):
                pass
        with pytest.raises(NestedUnitOfWork):
            async with session(db, {"sub": str(principal.user_id)}, Channel.GRAPHQL):
                pass
        assert await outer.one("select 1 as one") == {"one": 1}
    async def side() -> int:
        async with db.unit_of_work(principal) as uow:
            row = await uow.one("select 2 as two")
            return row["two"] if row else 0

    # other tasks open their own, side by side: one started by a holder too (e.g. to meet a lock it holds)
    async with db.unit_of_work(principal):
        assert await asyncio.create_task(side()) == 2
    assert await asyncio.gather(side(), side(), side()) == [2, 2, 2]
    async with db.unit_of_work(principal) as again:
        assert await again.one("select 3 as three") == {"three": 3}


async def test_pool_wait_is_short_and_ends_in_pool_exhausted(app_url, company):
    db = Database(app_url, max_size=1, pool_timeout=0.3)
    await db.open()
    release = asyncio.Event()
    try:
        tasks = await hold(db, company, 1, release)
        started = time.monotonic()
        with pytest.raises(PoolExhausted) as caught:
            async with db.unit_of_work(company.principal("bob")):
                pass
        assert time.monotonic() - started < 2
        assert caught.value.message == "the server is busy: no database connection became free within 0.3 s"
        release.set()
        await asyncio.gather(*tasks)
    finally:
        await db.close()


async def test_an_exhausted_pool_answers_mcp_http_503_with_retry_after(small_api, company):
    api, app = small_api
    release = asyncio.Event()
    tasks = await hold(app.state.db, company, POOL, release)
    try:
        started = time.monotonic()
        response = await api.client.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {api.token('bob')}", "Host": "127.0.0.1:8000",
                     "Accept": "application/json, text/event-stream"},
        )
        elapsed = time.monotonic() - started
    finally:
        release.set()
        await asyncio.gather(*tasks)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"] == "temporarily_unavailable"
    assert elapsed < 5

"""What keeps the gateway's cost per request flat: a page's relations are read ahead in one batch per relation and
level, the level's batches sent in one round trip, then resolve without a task, future or statement per record;
and a request's objects are freed as it ends (no reference cycle through its context is left for the cyclic
garbage collector)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg._connection_base import BaseConnection
from test_graphql_http import SqlLog

from graphql_api.context import Context
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.pagination import PageRequest
from services.notes import service as notes

PAGE = """{ deals(first: 50) { totalCount edges { node { title stage { name } owner { displayName }
  organization { name } person { name organization { name } } notes { body }
  stageHistory { toStage { name } } } } } }"""


async def deals_with_relations(actors, count: int, first: int = 0) -> None:
    for i in range(first, first + count):  # one transaction each: newest first is the last made
        async with actors.uow("bob") as uow:
            org = await contacts.create_organization(uow, OrganizationCreate(name=f"Org {i}"))
            person = await contacts.create_person(uow, PersonCreate(first_name="P", last_name=str(i),
                                                                    organization_id=org.id))
            await deals.create(uow, DealCreate(title=f"Deal {i}", value=Decimal(i), person_id=person.id,
                                               organization_id=org.id))


class Tasks:
    """Counts the asyncio tasks started while installed."""

    def __init__(self) -> None:
        self.started = 0
        loop = asyncio.get_running_loop()
        self._loop, self._before = loop, loop.get_task_factory()

        def factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            self.started += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)

    def stop(self) -> None:
        self._loop.set_task_factory(self._before)


class RoundTrips:
    """Counts the round trips to Postgres while installed: a statement sent alone, or a pipeline of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        execute, exec_command = psycopg.AsyncCursor.execute, BaseConnection._exec_command
        pipeline = psycopg.AsyncConnection.pipeline

        async def counted_execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += not cursor.connection._pipeline
            return await execute(cursor, *args, **kwargs)

        def counted_command(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += not conn._pipeline
            return (yield from exec_command(conn, *args, **kwargs))

        @asynccontextmanager
        async def counted_pipeline(conn: Any) -> Any:
            self.count += not conn._pipeline
            async with pipeline(conn) as entered:
                yield entered

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted_execute)
        monkeypatch.setattr(BaseConnection, "_exec_command", counted_command)
        monkeypatch.setattr(psycopg.AsyncConnection, "pipeline", counted_pipeline)


async def measured(api, monkeypatch) -> tuple[dict[str, Any], int, int, int]:
    """The page, and the statements, round trips and tasks it took."""
    with monkeypatch.context() as patches:
        round_trips = RoundTrips(patches)
        sql, tasks = SqlLog(patches), Tasks()
        try:
            body = await api.query(PAGE)
        finally:
            tasks.stop()
    return body, len(sql.take()), round_trips.count, tasks.started


async def test_a_page_costs_the_same_statements_and_tasks_for_3_records_as_for_12(api, actors, monkeypatch):
    await deals_with_relations(actors, 3)
    await api.query(PAGE)  # anything done once per process happens before
    small, small_statements, small_trips, small_tasks = await measured(api, monkeypatch)
    await deals_with_relations(actors, 9, first=3)
    large, large_statements, large_trips, large_tasks = await measured(api, monkeypatch)

    assert small["data"]["deals"]["totalCount"] == 3
    assert large["data"]["deals"]["totalCount"] == 12
    first = large["data"]["deals"]["edges"][0]["node"]
    assert first == {
        "title": "Deal 11", "stage": {"name": "Qualified"}, "owner": {"displayName": "Bob"},
        "organization": {"name": "Org 11"}, "person": {"name": "P 11", "organization": {"name": "Org 11"}},
        "notes": [], "stageHistory": [{"toStage": {"name": "Qualified"}}],
    }
    assert "errors" not in large
    assert (large_statements, large_trips, large_tasks) == (small_statements, small_trips, small_tasks)
    # BEGIN, the settings and the caller's roles; the count; the page; its six relations; COMMIT
    assert (large_statements, large_trips) == (12, 5)


async def test_a_request_leaves_nothing_for_the_cyclic_garbage_collector(api, actors, monkeypatch):
    await deals_with_relations(actors, 3)
    contexts: list[weakref.ref[Context]] = []
    made = Context.__post_init__

    def remember(self: Context) -> None:
        made(self)
        contexts.append(weakref.ref(self))

    monkeypatch.setattr(Context, "__post_init__", remember)
    await api.query(PAGE)
    gc.collect()
    gc.disable()
    try:
        body = await api.query(PAGE)
        await asyncio.sleep(0)  # let the request's last callbacks run
        assert body["data"]["deals"]["totalCount"] == 3
        assert len(contexts) == 2
        assert contexts[1]() is None  # freed by reference counting alone
    finally:
        gc.enable()


async def test_a_created_deal_costs_three_round_trips(api, monkeypatch):
    create = """mutation { createDeal(input: {title: "Fast"}) { id title version } }"""
    await api.query(create)  # anything done once per process happens before
    with monkeypatch.context() as patches:
        round_trips, sql = RoundTrips(patches), SqlLog(patches)
        body = await api.query(create)
    assert body["data"]["createDeal"]["title"] == "Fast" and body["data"]["createDeal"]["version"] == 1
    statements = sql.take()
    # BEGIN, the settings and the caller's roles; the insert, placed and checked in its statement; the audit row and
    # event, and COMMIT
    assert (len(statements), round_trips.count) == (6, 3), "\n".join(statements)


async def test_a_page_and_the_reads_of_one_record_reuse_their_plans(actors):
    """Past psycopg's prepare threshold (5 runs) and Postgres's custom plans for a prepared statement (its first 5
    runs), a page (its limit written in) and a batch read by one key (compared as a scalar) run on the generic plan,
    made once per connection. With the limit or the one key as an array parameter, Postgres would keep planning
    them afresh (a custom plan looks cheaper than a generic one for an unknown limit or number of keys)."""
    await deals_with_relations(actors, 2)
    async with actors.uow("bob") as uow:
        deal = (await deals.list(uow)).items[0]
        for _ in range(12):
            assert (await notes.list_for(uow, "deal_id", [deal.id])).get(deal.id, []) == []
            assert [d.title for d in (await deals.list(uow, page=PageRequest(limit=1, count=False))).items] == [
                "Deal 1"]
        plans = {r["statement"].split(" where ")[0]: (r["generic_plans"], r["custom_plans"]) for r in await uow.all(
            "select statement, generic_plans, custom_plans from pg_prepared_statements"
            " where statement like 'select%%from public.%%'")}
    assert plans == {"select * from public.notes": (2, 5), SELECT_DEALS: (7, 0)}


SELECT_DEALS = "select t.*, s.win_probability as stage_probability from public.deals t left join public.stages s on" \
    " s.id = t.stage_id"

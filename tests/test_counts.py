"""Counts that stay cheap at scale: a list counts its matches only up to the count limit and says when it stopped
(the service's `total_capped`, GraphQL `totalCountCapped`, MCP `"N+"`), and GraphQL counts only when the query
selects the count."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import as_app_login
from test_graphql_http import SqlLog, headers, serve  # noqa: F401 (fixtures)
from test_mcp_tools import client_for

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.pagination import PageRequest
from services.kernel.uow import Database


async def three_deals(actors) -> None:
    for title in ("One", "Two", "Three"):  # one transaction each: newest first is Three, Two, One
        async with actors.uow("bob") as uow:
            await deals.create(uow, DealCreate(title=title, value=Decimal("100")))


@pytest.mark.parametrize(("limit", "total", "capped"), [(2, 2, True), (3, 3, False), (5, 3, False)])
async def test_a_count_stops_at_the_limit_and_says_when_it_did(admin_url, company, actors, limit, total, capped):
    await three_deals(actors)
    async with Database(as_app_login(admin_url), count_limit=limit) as db:
        async with db.unit_of_work(company.principal("bob")) as uow:
            page = await deals.list(uow, None, PageRequest(limit=1))
    assert (page.total, page.total_capped, [d.title for d in page.items]) == (total, capped, ["Three"])


async def test_a_page_that_is_not_asked_to_count_does_not(actors):
    await three_deals(actors)
    async with actors.uow("bob") as uow:
        page = await deals.list(uow, None, PageRequest(limit=2, count=False))
    assert (page.total, page.total_capped, [d.title for d in page.items]) == (None, False, ["Three", "Two"])


async def test_graphql_says_the_count_is_a_lower_bound_past_the_limit(serve, headers, actors):  # noqa: F811
    await three_deals(actors)
    query = "{ deals(first: 1) { totalCount totalCountCapped edges { node { title } } } }"
    async with serve(PIPECD_COUNT_LIMIT="2") as client:
        capped = (await client.post("/graphql", json={"query": query}, headers=headers)).json()
    async with serve() as client:
        exact = (await client.post("/graphql", json={"query": query}, headers=headers)).json()
    assert capped == {"data": {"deals": {"totalCount": 2, "totalCountCapped": True,
                                         "edges": [{"node": {"title": "Three"}}]}}}
    assert exact == {"data": {"deals": {"totalCount": 3, "totalCountCapped": False,
                                        "edges": [{"node": {"title": "Three"}}]}}}


@pytest.mark.parametrize(
    "selection",
    ["totalCount", "totalCountCapped", "...on DealConnection { totalCount }", "...Counted"],
)
async def test_graphql_counts_only_when_the_query_selects_the_count(api, monkeypatch, actors, selection):
    await three_deals(actors)
    fragment = " fragment Counted on DealConnection { totalCount }" if selection == "...Counted" else ""
    sql = SqlLog(monkeypatch)
    body = await api.query("{ deals(first: 2) { edges { node { title } } } }")
    uncounted = sql.take()
    counted_body = await api.query("{ deals(first: 2) { " + selection + " edges { node { title } } } }" + fragment)
    counted = sql.take()

    assert body == {"data": {"deals": {"edges": [{"node": {"title": "Three"}}, {"node": {"title": "Two"}}]}}}
    assert counted_body["data"]["deals"]["edges"] == body["data"]["deals"]["edges"]
    assert not [s for s in uncounted if "count(*)" in s]
    assert len([s for s in counted if "count(*)" in s]) == 1


async def test_mcp_shows_a_capped_total_as_a_lower_bound(admin_url, company, actors):
    await three_deals(actors)
    async with Database(as_app_login(admin_url), count_limit=2) as db:
        async with client_for(db, company, "bob") as client:
            result = await client.call_tool("list_deals", {"limit": 1})
    got = result.structured_content
    assert (got["total"], got["has_next"], [d["title"] for d in got["items"]]) == ("2+", True, ["Three"])
    assert "total_capped" not in got
    assert result.content[0].text.startswith("1 of 2+ records; for more, call again with cursor=")

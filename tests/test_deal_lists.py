"""Deal lists that answer a question in one call: every sort (NULLs and ties included) paged exactly, cursors bound
to their sort, the close-day and value filters, brief MCP items with names (never a hidden one), pipeline
summaries of every pipeline, and the same sorts and filters over GraphQL."""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from test_mcp_tools import client_for, error_text

from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import Deal, DealCreate, DealFilter, DealSort, DealStatus
from services.kernel.errors import Invalid
from services.kernel.pagination import PageRequest, decode_cursor
from services.kernel.records import Visibility
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput
from services.reports import service as reports

T0 = datetime.fromisoformat("2026-11-01T09:00:00+00:00")

# (title, value, expected close date, created_at, updated_at): ties in every key, NULL close dates
ROWS = [
    ("A", "500", "2027-01-10", "2026-11-01T09:00:00+00:00", "2026-11-05T09:00:00+00:00"),
    ("B", "100", None, "2026-11-01T09:00:00+00:00", "2026-11-05T09:00:00+00:00"),
    ("C", "500", "2027-01-10", "2026-11-02T09:00:00+00:00", "2026-11-03T09:00:00+00:00"),
    ("D", "0", "2027-02-01", "2026-11-03T09:00:00+00:00", "2026-11-04T09:00:00+00:00"),
    ("E", "300", None, "2026-11-03T09:00:00+00:00", "2026-11-04T09:00:00+00:00"),
    ("F", "500", "2026-12-20", "2026-11-04T09:00:00+00:00", "2026-11-06T09:00:00+00:00"),
    ("G", "100", None, "2026-11-01T09:00:00+00:00", "2026-11-07T09:00:00+00:00"),
]

KEYS = {
    DealSort.CREATED_DESC: ("created_at", True), DealSort.CREATED_ASC: ("created_at", False),
    DealSort.UPDATED_DESC: ("updated_at", True), DealSort.UPDATED_ASC: ("updated_at", False),
    DealSort.VALUE_DESC: ("value", True), DealSort.VALUE_ASC: ("value", False),
    DealSort.EXPECTED_CLOSE_ASC: ("expected_close_date", False),
    DealSort.EXPECTED_CLOSE_DESC: ("expected_close_date", True),
}


def set_columns(admin, row_id: UUID, assignments: str, *params: Any) -> None:
    """Rewrite a deal's columns as superuser, with triggers off (they would reset updated_at)."""
    with admin.transaction():
        admin.execute("set local session_replication_role = replica")
        admin.execute(f"update public.deals set {assignments} where id = %s", [*params, row_id])


async def seeded(actors, company, admin) -> dict[str, Deal]:
    made = {}
    async with actors.uow("bob") as uow:
        for title, value, close, _, _ in ROWS:
            made[title] = await deals.create(uow, DealCreate(
                title=title, value=Decimal(value), stage_id=company.sales_stage_ids[0],
                expected_close_date=date.fromisoformat(close) if close else None))
    for title, _, _, created, updated in ROWS:
        set_columns(admin, made[title].id, "created_at = %s, updated_at = %s", created, updated)
    async with actors.uow("bob") as uow:
        return {d.title: d for d in await deals.get_many(uow, [d.id for d in made.values()])}


def expected(made: dict[str, Deal], sort: DealSort) -> list[str]:
    """The order worked out in Python: the key in the sort's direction with NULLs last, then id the same way."""
    column, descending = KEYS[sort]
    valued = [d for d in made.values() if getattr(d, column) is not None]
    nulls = [d for d in made.values() if getattr(d, column) is None]
    valued.sort(key=lambda d: (getattr(d, column), d.id.int), reverse=descending)
    nulls.sort(key=lambda d: d.id.int, reverse=descending)
    return [d.title for d in valued + nulls]


async def walk(actors, sort: DealSort, limit: int, filter: DealFilter | None = None) -> list[list[str]]:
    pages, after = [], None
    while True:
        async with actors.uow("bob") as uow:
            page = await deals.list(uow, filter, PageRequest(limit=limit, after=after), sort=sort)
        assert page.total == 7
        pages.append([d.title for d in page.items])
        if not page.has_next:
            return pages
        after = page.next_cursor


@pytest.mark.parametrize("sort", list(DealSort))
async def test_every_sort_pages_exactly_through_ties_and_nulls(actors, company, admin, sort):
    made = await seeded(actors, company, admin)
    order = expected(made, sort)

    for limit in (1, 2, 3):
        pages = await walk(actors, sort, limit)
        assert pages == [order[i:i + limit] for i in range(0, 7, limit)], limit


async def test_the_sorts_put_ties_by_id_and_undated_deals_last_either_way(actors, company, admin):
    made = await seeded(actors, company, admin)
    by_id = sorted("BEG", key=lambda t: made[t].id.int)

    assert expected(made, DealSort.EXPECTED_CLOSE_ASC)[:4] == ["F", *sorted("AC", key=lambda t: made[t].id.int), "D"]
    assert expected(made, DealSort.EXPECTED_CLOSE_ASC)[4:] == by_id
    assert expected(made, DealSort.EXPECTED_CLOSE_DESC)[4:] == by_id[::-1]
    async with actors.uow("bob") as uow:
        page = await deals.list(uow, sort=DealSort.EXPECTED_CLOSE_DESC)
    assert [d.title for d in page.items] == expected(made, DealSort.EXPECTED_CLOSE_DESC)
    assert page.items[0].title == "D"


async def test_a_cursor_continues_only_the_sort_it_came_from(actors, company, admin):
    await seeded(actors, company, admin)
    async with actors.uow("bob") as uow:
        first = await deals.list(uow, page=PageRequest(limit=2), sort=DealSort.VALUE_DESC)
    assert first.next_cursor is not None

    for other in (DealSort.VALUE_ASC, DealSort.CREATED_DESC):
        with pytest.raises(Invalid) as info:
            async with actors.uow("bob") as uow:
                await deals.list(uow, page=PageRequest(limit=2, after=first.next_cursor), sort=other)
        assert (info.value.message, info.value.field) == (
            f"this cursor continues the value_desc order, not {other.value}: page with the sort it came from,"
            " or leave the cursor out to start again", "after")


# Filters -----------------------------------------------------------------------------------------------


async def closed_deals(actors, company, admin) -> dict[str, Deal]:
    """Won and lost deals closed around the third quarter of 2026 (its first and last instants included)."""
    plan = [
        ("lost before", "lost", "2026-06-30T23:59:59.999999+00:00", "10"),
        ("lost first", "lost", "2026-07-01T00:00:00+00:00", "20"),
        ("lost last", "lost", "2026-09-30T23:59:59.999999+00:00", "30"),
        ("lost after", "lost", "2026-10-01T00:00:00+00:00", "40"),
        ("won inside", "won", "2026-08-15T12:00:00+00:00", "50"),
        ("open", "open", None, "60"),
    ]
    made = {}
    async with actors.uow("bob") as uow:
        for title, status, _, value in plan:
            deal = await deals.create(uow, DealCreate(title=title, value=Decimal(value)))
            if status == "won":
                deal = await deals.mark_won(uow, deal.id)
            elif status == "lost":
                deal = await deals.mark_lost(uow, deal.id, "price")
            made[title] = deal
    for title, status, at, _ in plan:
        if at is not None:
            set_columns(admin, made[title].id, f"{status}_at = %s", at)
    return made


async def titles(actors, filter: DealFilter, sort: DealSort = DealSort.VALUE_ASC) -> list[str]:
    async with actors.uow("bob") as uow:
        page = await deals.list(uow, filter, PageRequest(limit=100), sort=sort)
    assert page.total == len(page.items)
    return [d.title for d in page.items]


@pytest.mark.parametrize(("filter", "found"), [
    (DealFilter(status=DealStatus.LOST, closed_after=date(2026, 7, 1), closed_before=date(2026, 9, 30)),
     ["lost first", "lost last"]),
    (DealFilter(closed_after=date(2026, 7, 1), closed_before=date(2026, 9, 30)), ["lost first", "lost last",
                                                                                 "won inside"]),
    (DealFilter(status=DealStatus.WON, closed_before=date(2026, 9, 30)), ["won inside"]),
    (DealFilter(closed_after=date(2026, 10, 1)), ["lost after"]),
    (DealFilter(closed_before=date(2026, 6, 30)), ["lost before"]),
    (DealFilter(closed_after=date(2026, 7, 1), closed_before=date(2026, 7, 1)), ["lost first"]),
    (DealFilter(value_min=Decimal("20"), value_max=Decimal("40")), ["lost first", "lost last", "lost after"]),
    (DealFilter(value_min=Decimal("50")), ["won inside", "open"]),
    (DealFilter(value_max=Decimal("10")), ["lost before"]),
    (DealFilter(value_min=Decimal("30"), value_max=Decimal("30")), ["lost last"]),
    (DealFilter(status=DealStatus.LOST, value_min=Decimal("25"), closed_before=date(2026, 9, 30)), ["lost last"]),
], ids=["lost-q3", "closed-q3", "won-until", "closed-from", "closed-until", "one-day", "value-range", "value-min",
        "value-max", "value-exact", "combined"])
async def test_each_filter_finds_exactly_its_deals(actors, company, admin, filter, found):
    await closed_deals(actors, company, admin)

    assert await titles(actors, filter) == found


@pytest.mark.parametrize(("fields", "message", "field"), [
    ({"closed_after": date(2026, 10, 1), "closed_before": date(2026, 9, 30)},
     "closed_after (2026-10-01) is after closed_before (2026-09-30)", "closed_after"),
    ({"value_min": Decimal("10"), "value_max": Decimal("9.99")}, "value_min (10) is more than value_max (9.99)",
     "value_min"),
    ({"status": DealStatus.OPEN, "closed_after": date(2026, 10, 1)},
     "open deals have no close date: with closed_after or closed_before, ask for status won, lost or either"
     " (no status)", "status"),
])
def test_contradicting_filters_are_refused_with_the_field(fields, message, field):
    with pytest.raises(Invalid) as info:
        DealFilter(**fields)
    assert (info.value.message, info.value.field) == (message, field)


# Through MCP -------------------------------------------------------------------------------------------


async def test_the_biggest_open_deal_in_one_call_with_the_names_and_contact_a_model_needs(db, company, actors, admin):
    await closed_deals(actors, company, admin)
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Initech"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Peter", last_name="Gibbons"))
        big = await deals.create(uow, DealCreate(
            title="Initech renewal", value=Decimal("9000"), currency="EUR", person_id=person.id,
            organization_id=org.id, stage_id=company.sales_stage_ids[2], expected_close_date=date(2027, 3, 1)))
        bigger = await deals.create(uow, DealCreate(title="Bigger but won", value=Decimal("99000")))
        await deals.mark_won(uow, bigger.id)

    async with client_for(db, company, "alice") as client:
        result = await client.call_tool("list_deals", {"status": "open", "sort": "value_desc", "limit": 1})

    got = result.structured_content
    assert got == {
        "items": [{
            "id": str(big.id), "title": "Initech renewal", "value": "9000.00", "currency": "EUR", "status": "open",
            "stage": "Proposal", "pipeline": "Sales", "person": "Peter Gibbons", "person_id": str(person.id),
            "organization": "Initech", "owner": "Bob", "expected_close_date": "2027-03-01", "closed_at": None,
            "updated_at": got["items"][0]["updated_at"],
        }],
        "next_cursor": got["next_cursor"], "has_next": True, "total": 2, "truncated": False,
    }
    assert datetime.fromisoformat(got["items"][0]["updated_at"]) == big.updated_at


async def test_lost_last_quarter_in_one_call(db, company, actors, admin):
    made = await closed_deals(actors, company, admin)

    async with client_for(db, company, "bob") as client:
        result = await client.call_tool("list_deals", {
            "status": "lost", "closed_after": "2026-07-01", "closed_before": "2026-09-30", "sort": "value_desc"})

    got = result.structured_content
    assert [(d["title"], d["value"], d["status"], d["closed_at"]) for d in got["items"]] == [
        ("lost last", "30.00", "lost", "2026-09-30T23:59:59.999999Z"),
        ("lost first", "20.00", "lost", "2026-07-01T00:00:00Z"),
    ]
    assert (got["total"], got["has_next"], got["next_cursor"]) == (2, False, None)
    assert made["lost last"].id == UUID(got["items"][0]["id"])


async def test_mcp_pages_each_sort_exactly_and_refuses_a_cursor_of_another_sort(db, company, actors, admin):
    made = await seeded(actors, company, admin)
    async with client_for(db, company, "bob") as client:
        for sort in DealSort:
            seen, cursor = [], None
            while True:
                arguments: dict[str, Any] = {"sort": sort.value, "limit": 3}
                if cursor:
                    arguments["cursor"] = cursor
                page = (await client.call_tool("list_deals", arguments)).structured_content
                seen.append([d["title"] for d in page["items"]])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            order = expected(made, sort)
            assert seen == [order[0:3], order[3:6], order[6:]], sort
        first = (await client.call_tool("list_deals", {"sort": "expected_close_desc", "limit": 2})).structured_content
        mixed = await client.call_tool("list_deals", {"cursor": first["next_cursor"], "limit": 2})
        bad = await client.call_tool("list_deals", {"value_min": 5, "value_max": 1})
        negative = await client.call_tool("list_deals", {"value_min": -1})
        unknown = await client.call_tool("list_deals", {"sort": "biggest"})

    assert error_text(mixed) == (
        "[invalid] this cursor continues the expected_close_desc order, not created_desc: page with the sort it came"
        " from, or leave the cursor out to start again (field: cursor)")
    assert error_text(bad) == "[invalid] value_min (5) is more than value_max (1) (field: value_min)"
    assert "greater than or equal to 0" in error_text(negative) and "value_min" in error_text(negative)
    assert error_text(unknown).startswith("[invalid]") and "sort" in error_text(unknown)


async def test_a_name_the_caller_may_not_see_is_null_in_the_list(db, company, actors):
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Initech"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Private", last_name="Person",
                                                                visibility=Visibility.OWNER))
        await deals.create(uow, DealCreate(title="Team deal", person_id=person.id, organization_id=org.id,
                                           visibility=Visibility.TEAM))

    names = {}
    for key in ("bob", "dan"):  # dan, bob's teammate, sees the deal and the organization, not the person
        async with client_for(db, company, key) as client:
            page = (await client.call_tool("list_deals", {})).structured_content
        (item,) = page["items"]
        names[key] = (item["title"], item["person"], item["organization"], item["owner"], item["stage"])
        text = json.dumps(page)
        assert ("Private" in text) is (key == "bob")

    assert names == {
        "bob": ("Team deal", "Private Person", "Initech", "Bob", "Qualified"),
        "dan": ("Team deal", None, "Initech", "Bob", "Qualified"),
    }


async def test_a_page_of_25_brief_deals_stays_small(db, company, actors):
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Globex Corporation"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Hank", last_name="Scorpio"))
        for n in range(30):
            await deals.create(uow, DealCreate(
                title=f"Globex hammock line expansion {n}", value=Decimal("125000.50"), person_id=person.id,
                organization_id=org.id, stage_id=company.sales_stage_ids[n % 4],
                expected_close_date=date(2027, 1, 1 + n % 28)))

    async with client_for(db, company, "bob") as client:
        page = (await client.call_tool("list_deals", {})).structured_content

    assert len(page["items"]) == 25 and page["truncated"] is False
    # 10,235 characters here: about 410 a deal (the contact's id included), well under what the same page of full
    # deals takes (16,500)
    assert len(json.dumps(page, separators=(",", ":"))) < 10_500


# Pipeline summaries ------------------------------------------------------------------------------------


async def test_pipeline_summary_covers_every_pipeline_in_one_call(db, company, actors, admin):
    async with actors.uow("alice") as uow:
        hiring = await pipelines.create(uow, PipelineCreate(
            name="Hiring", stages=[StageInput(name="Screen", win_probability=20)]))
    async with actors.uow("bob") as uow:
        await deals.create(uow, DealCreate(title="S1", value=Decimal("100"), stage_id=company.sales_stage_ids[0]))
        await deals.create(uow, DealCreate(title="S2", value=Decimal("50"), currency="EUR",
                                           stage_id=company.sales_stage_ids[3]))
        hidden = await deals.create(uow, DealCreate(title="H1", value=Decimal("70"), pipeline_id=hiring.id,
                                                    visibility=Visibility.OWNER))
        won = await deals.create(uow, DealCreate(title="H2", value=Decimal("30"), pipeline_id=hiring.id))
        await deals.mark_won(uow, won.id)
    set_columns(admin, hidden.id, "updated_at = now() - interval '40 days'")

    async with client_for(db, company, "bob") as client:
        every = (await client.call_tool("pipeline_summary", {})).structured_content["result"]
        one = (await client.call_tool("pipeline_summary", {"pipeline_id": str(hiring.id)})).structured_content
    async with client_for(db, company, "carol") as client:  # another team: bob's owner-only deal is not counted
        carol = (await client.call_tool("pipeline_summary", {})).structured_content["result"]

    def brief(summary: dict) -> tuple:
        return (summary["pipeline_name"], summary["open"], [s["open"]["count"] for s in summary["stages"]],
                summary["won"], summary["stale"]["total"], [d["title"] for d in summary["stale"]["deals"]])

    assert [brief(s) for s in every] == [
        ("Sales", {"count": 2, "amounts": [{"currency": "EUR", "value": "50.00", "weighted_value": "37.50"},
                                           {"currency": "USD", "value": "100.00", "weighted_value": "10.00"}]},
         [1, 0, 0, 1], {"count": 0, "amounts": []}, 0, []),
        ("Hiring", {"count": 1, "amounts": [{"currency": "USD", "value": "70.00", "weighted_value": "14.00"}]},
         [1], {"count": 1, "amounts": [{"currency": "USD", "value": "30.00"}]}, 1, ["H1"]),
    ]
    assert one["result"] == [every[1]]
    assert [brief(s) for s in carol][1] == (
        "Hiring", {"count": 0, "amounts": []}, [0], {"count": 1, "amounts": [{"currency": "USD", "value": "30.00"}]},
        0, [])


async def test_stale_deals_are_limited_per_pipeline(actors, company, admin):
    async with actors.uow("alice") as uow:
        hiring = await pipelines.create(uow, PipelineCreate(name="Hiring", stages=[StageInput(name="Screen")]))
    made = []
    async with actors.uow("bob") as uow:
        for n, pipeline_id in enumerate([company.sales_pipeline_id] * 3 + [hiring.id] * 2):
            made.append(await deals.create(uow, DealCreate(title=f"Stale {n}", pipeline_id=pipeline_id)))
    for days, deal in zip([50, 60, 40, 45, 35], made, strict=True):
        set_columns(admin, deal.id, "updated_at = now() - make_interval(days => %s)", days)

    async with actors.uow("bob") as uow:
        summaries = await reports.pipeline_summaries(uow, stale_limit=2)

    assert [(s.pipeline_name, s.stale.total, [d.title for d in s.stale.deals]) for s in summaries] == [
        ("Sales", 3, ["Stale 1", "Stale 0"]),
        ("Hiring", 2, ["Stale 3", "Stale 4"]),
    ]


# GraphQL -----------------------------------------------------------------------------------------------

SORTED = """
query($first: Int!, $after: String, $filter: DealFilter, $sort: DealSort!) {
  deals(first: $first, after: $after, filter: $filter, sort: $sort) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { title stage { name } } }
  }
}
"""


async def test_graphql_pages_each_sort_exactly(api, actors, company, admin):
    made = await seeded(actors, company, admin)

    for sort in DealSort:
        seen, after = [], None
        while True:
            body = await api.query(SORTED, {"first": 3, "after": after, "sort": sort.name})
            page = body["data"]["deals"]
            seen.append([e["node"]["title"] for e in page["edges"]])
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["edges"][1]["cursor"] if len(seen) == 1 else page["pageInfo"]["endCursor"]
        order = expected(made, sort)
        # the second page started after the first page's second edge: an edge's cursor is its position
        assert seen == [order[0:3], order[2:5], order[5:7]], sort


async def test_graphql_filters_and_refuses_a_cursor_of_another_sort(api, actors, company, admin):
    await closed_deals(actors, company, admin)

    lost = await api.query(SORTED, {"first": 10, "sort": "VALUE_DESC", "filter": {
        "status": "LOST", "closedAfter": "2026-07-01", "closedBefore": "2026-09-30"}})
    ranged = await api.query(SORTED, {"first": 10, "sort": "VALUE_ASC", "filter": {"valueMin": "20",
                                                                                  "valueMax": "40"}})
    cursor = lost["data"]["deals"]["edges"][0]["cursor"]
    mixed = await api.query(SORTED, {"first": 10, "sort": "CREATED_DESC", "after": cursor})
    backwards = await api.query(SORTED, {"first": 10, "sort": "VALUE_ASC", "filter": {
        "closedAfter": "2026-09-30", "closedBefore": "2026-07-01"}})

    assert [e["node"]["title"] for e in lost["data"]["deals"]["edges"]] == ["lost last", "lost first"]
    assert lost["data"]["deals"]["totalCount"] == 2
    assert [e["node"]["title"] for e in ranged["data"]["deals"]["edges"]] == ["lost first", "lost last",
                                                                             "lost after"]
    ((error,),) = [mixed["errors"]]
    assert (error["message"], error["extensions"]) == (
        "this cursor continues the value_desc order, not created_desc: page with the sort it came from, or leave"
        " the cursor out to start again", {"code": "BAD_USER_INPUT", "field": "after"})
    ((error,),) = [backwards["errors"]]
    assert (error["message"], error["extensions"]) == (
        "closedAfter (2026-09-30) is after closedBefore (2026-07-01)",
        {"code": "BAD_USER_INPUT", "field": "closedAfter"})


def made_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    made_cursor("value_desc", "9223372036854775808", str(uuid4())),
    made_cursor("value_desc", 5, str(uuid4())),
    made_cursor("value_desc", None, str(uuid4())),
    made_cursor("value_desc", "5.5", str(uuid4())),
    made_cursor("biggest_first", "5", str(uuid4())),
    made_cursor("value_desc", "5"),
], ids=["out-of-range", "not-text", "null", "not-whole", "unknown-order", "short"])
async def test_a_cursor_the_server_did_not_make_is_malformed(actors, cursor):
    with pytest.raises(Invalid) as info:
        async with actors.uow("bob") as uow:
            await deals.list(uow, page=PageRequest(after=cursor), sort=DealSort.VALUE_DESC)
    assert (info.value.message, info.value.field) == ("malformed cursor", "after")


@pytest.mark.parametrize(("sort", "index"), [
    (DealSort.VALUE_DESC, "deals_value_idx"), (DealSort.EXPECTED_CLOSE_ASC, "deals_close_asc_idx"),
    (DealSort.EXPECTED_CLOSE_DESC, "deals_close_desc_idx"), (DealSort.UPDATED_ASC, "deals_updated_idx"),
])
async def test_a_later_page_starts_in_its_index_under_rls(actors, company, admin, sort, index):
    """The caller's position reaches the index (its comparison is leakproof), so a deep page reads one page."""
    admin.execute(
        "insert into public.deals (title, value, owner_id, pipeline_id, expected_close_date)"
        " select 'd' || g, g %% 5000, %s, %s, case when g %% 3 > 0 then date '2027-01-01' + g %% 700 end"
        " from generate_series(1, 20000) g", [company.people["bob"].id, company.sales_pipeline_id])
    admin.execute("analyze public.deals")
    async with actors.uow("bob") as uow:
        first = await deals.list(uow, page=PageRequest(limit=5), sort=sort)
        key, row_id = decode_cursor(first.next_cursor or "", sort.order)
        plan = "\n".join(r["QUERY PLAN"] for r in await uow.all(
            f"explain select t.* from public.deals t where {sort.order.after()} order by {sort.order.order_by()}"
            " limit 26", [key, row_id]))
    assert f"using {index} on deals t" in plan and f"Index Cond: (ROW({sort.order.column}, id)" in plan, plan

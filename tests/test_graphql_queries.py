"""The read side of the GraphQL gateway over HTTP: who sees which records, relations (a hidden one is null),
cursor pagination and filters, how many SQL statements a page of deals with its relations costs, and the audit
trail.

Records are created through the service layer as their owners; every read is a POST to the real app (`api`)
with a token for one of the test company's people.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from conftest import Actors, Api, Company, counts
from matrix import LOGINS, PRINCIPALS
from psycopg import sql
from psycopg._connection_base import BaseConnection

from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate
from services.kernel.records import Visibility
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput

QUALIFIED, CONTACT_MADE, PROPOSAL, NEGOTIATION = range(4)  # indexes into company.sales_stage_ids


def login(principal: str) -> dict[str, Any]:
    """`api.query` keyword arguments for a caller of tests/matrix.py (agent: bob's token with crm.read)."""
    key, scopes = LOGINS[principal]
    return {"as_": key, "scopes": None if scopes is None else sorted(scopes)}


def without_locations(body: dict[str, Any]) -> dict[str, Any]:
    """The body with `locations` dropped from its errors (they only point into the query text)."""
    if "errors" not in body:
        return body
    return {**body, "errors": [{k: v for k, v in e.items() if k != "locations"} for e in body["errors"]]}


def error(message: str, path: str, code: str, **extensions: Any) -> dict[str, Any]:
    return {"message": message, "path": [path], "extensions": {"code": code, **extensions}}


def not_found(entity: str, record_id: UUID) -> dict[str, Any]:
    """`{entity: null}` with the one NOT_FOUND error of a missing or hidden record."""
    return {"data": {entity: None}, "errors": [error(f"{entity} {record_id} not found", entity, "NOT_FOUND")]}


def titles(connection: dict[str, Any], field: str = "title") -> list[str]:
    return [edge["node"][field] for edge in connection["edges"]]


async def new_deal(actors: Actors, who: str = "bob", **fields: Any):
    async with actors.uow(who) as uow:
        return await deals.create(uow, DealCreate(**{"title": "Deal", **fields}))


# 1. Who sees what ------------------------------------------------------------------------------------------

# Per entity: the root list field, the root field for one record, the name field, and how to create one.
Create = Callable[[UnitOfWork, str, Visibility], Awaitable[Any]]
ENTITIES: dict[str, tuple[str, str, str, Create]] = {
    "deal": ("deals", "deal", "title",
             lambda uow, name, vis: deals.create(uow, DealCreate(title=name, visibility=vis))),
    "person": ("persons", "person", "name",
               lambda uow, name, vis: contacts.create_person(
                   uow, PersonCreate(first_name=name.split()[0], last_name=name.split()[1], visibility=vis))),
    "organization": ("organizations", "organization", "name",
                     lambda uow, name, vis: contacts.create_organization(
                         uow, OrganizationCreate(name=name, visibility=vis))),
    "lead": ("leads", "lead", "title",
             lambda uow, name, vis: leads.create(uow, LeadCreate(title=name, visibility=vis))),
}

# bob's three records and carol's owner-only one, created in this order, each named by owner and visibility.
RECORDS = (("bob", "Bob owner", Visibility.OWNER), ("bob", "Bob team", Visibility.TEAM),
           ("bob", "Bob company", Visibility.COMPANY), ("carol", "Carol owner", Visibility.OWNER))

# What each caller sees of them, newest first. mia manages East (bob's team), not West (carol's).
SEES = {
    "alice": ["Carol owner", "Bob company", "Bob team", "Bob owner"],
    "mia": ["Bob company", "Bob team", "Bob owner"],
    "bob": ["Bob company", "Bob team", "Bob owner"],
    "dan": ["Bob company", "Bob team"],
    "carol": ["Carol owner", "Bob company"],
    "vic": ["Bob company"],
    "agent": ["Bob company", "Bob team", "Bob owner"],
}


async def create_records(actors: Actors, entity: str) -> dict[str, UUID]:
    """The four RECORDS of one entity, each in a transaction of its own (so each has its own created_at)."""
    create = ENTITIES[entity][3]
    ids = {}
    for owner, name, visibility in RECORDS:
        async with actors.uow(owner) as uow:
            ids[name] = (await create(uow, name, visibility)).id
    return ids


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("entity", ENTITIES)
async def test_each_caller_lists_and_opens_exactly_the_records_visibility_shows_them(api, actors, entity, principal):
    plural, single, field, _ = ENTITIES[entity]
    ids = await create_records(actors, entity)
    seen = SEES[principal]

    listed = await api.query(f"{{ {plural} {{ totalCount edges {{ node {{ {field} }} }} }} }}", **login(principal))
    assert listed == {"data": {plural: {"totalCount": len(seen), "edges": [{"node": {field: n}} for n in seen]}}}

    for name, record_id in ids.items():
        body = await api.query(f"query($id: UUID!) {{ {single}(id: $id) {{ {field} }} }}", {"id": str(record_id)},
                               **login(principal))
        expected = {"data": {single: {field: name}}} if name in seen else not_found(single, record_id)
        assert without_locations(body) == expected, name


SEARCH = "query($q: String!) { search(query: $q) { id type title } }"


async def test_member_cannot_see_other_teams_owner_only_deal(api, actors):
    mine = await new_deal(actors, "bob", title="Harbor crane (Bob)")
    secret = await new_deal(actors, "carol", title="Harbor crane (Carol)", visibility=Visibility.OWNER)

    body = await api.query("query($id: UUID!) { deal(id: $id) { title } }", {"id": str(secret.id)}, as_="bob")
    assert without_locations(body) == not_found("deal", secret.id)
    listed = await api.query("{ deals { totalCount edges { node { title } } } }", as_="bob")
    assert listed == {"data": {"deals": {"totalCount": 1, "edges": [{"node": {"title": "Harbor crane (Bob)"}}]}}}
    assert await api.query(SEARCH, {"q": "harbor crane"}, as_="bob") == {"data": {"search": [
        {"id": str(mine.id), "type": "DEAL", "title": "Harbor crane (Bob)"}]}}


async def test_owner_finds_her_owner_only_deal_in_search(api, actors):
    bobs = await new_deal(actors, "bob", title="Harbor crane (Bob)")
    secret = await new_deal(actors, "carol", title="Harbor crane (Carol)", visibility=Visibility.OWNER)

    assert await api.query(SEARCH, {"q": "harbor crane"}, as_="carol") == {"data": {"search": [
        {"id": str(bobs.id), "type": "DEAL", "title": "Harbor crane (Bob)"},
        {"id": str(secret.id), "type": "DEAL", "title": "Harbor crane (Carol)"},
    ]}}


# 2. Relations ----------------------------------------------------------------------------------------------

DEAL_DETAIL = """
query($id: UUID!) {
  deal(id: $id) {
    title value weightedValue
    stage { name winProbability }
    pipeline { name stages { name } }
    person { name organization { name } }
    organization { name domain }
    owner { displayName email }
    activities { subject owner { displayName } }
    notes { body author { displayName } }
    stageHistory { fromStage { name } toStage { name } changedBy }
  }
}
"""


async def test_a_deal_resolves_stage_pipeline_contacts_owner_attachments_and_stage_history(api, actors, company):
    async with actors.uow("bob") as uow:
        acme = await contacts.create_organization(uow, OrganizationCreate(name="Acme Corp", domain="acme.com"))
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann", last_name="Lee",
                                                             organization_id=acme.id))
        deal = await deals.create(uow, DealCreate(title="Acme renewal", value=Decimal(1000), person_id=ann.id,
                                                  organization_id=acme.id))
        await activities.create(uow, ActivityCreate(subject="Call Ann", deal_id=deal.id, due_date=date(2030, 1, 2)))
    async with actors.uow("dan") as uow:
        await notes.create(uow, NoteCreate(body="Ann wants a discount", deal_id=deal.id))
    async with actors.uow("bob") as uow:
        await deals.move_stage(uow, deal.id, company.sales_stage_ids[PROPOSAL])

    body = await api.query(DEAL_DETAIL, {"id": str(deal.id)}, as_="mia")

    bob = str(actors.id("bob"))
    assert body == {"data": {"deal": {
        "title": "Acme renewal", "value": "1000.00", "weightedValue": "500.00",
        "stage": {"name": "Proposal", "winProbability": 50},
        "pipeline": {"name": "Sales", "stages": [
            {"name": "Qualified"}, {"name": "Contact Made"}, {"name": "Proposal"}, {"name": "Negotiation"}]},
        "person": {"name": "Ann Lee", "organization": {"name": "Acme Corp"}},
        "organization": {"name": "Acme Corp", "domain": "acme.com"},
        "owner": {"displayName": "Bob", "email": "bob@example.com"},
        "activities": [{"subject": "Call Ann", "owner": {"displayName": "Bob"}}],
        "notes": [{"body": "Ann wants a discount", "author": {"displayName": "Dan"}}],
        "stageHistory": [
            {"fromStage": None, "toStage": {"name": "Qualified"}, "changedBy": bob},
            {"fromStage": {"name": "Qualified"}, "toStage": {"name": "Proposal"}, "changedBy": bob},
        ],
    }}}


@pytest.mark.parametrize(
    ("value", "stage", "probability", "weighted"),
    [
        ("1000", PROPOSAL, None, "500.00"),
        ("1234.56", CONTACT_MADE, None, "308.64"),
        ("1000", PROPOSAL, 30, "300.00"),
        ("1000", NEGOTIATION, 0, "0.00"),
    ],
    ids=["stage-probability", "rounded-to-cents", "override", "zero-override"],
)
async def test_weighted_value_is_value_times_the_override_else_the_stage_probability(
    api, actors, company, value, stage, probability, weighted
):
    deal = await new_deal(actors, value=Decimal(value), stage_id=company.sales_stage_ids[stage],
                          probability=probability)
    body = await api.query("query($id: UUID!) { deal(id: $id) { weightedValue } }", {"id": str(deal.id)})
    assert body == {"data": {"deal": {"weightedValue": weighted}}}


HIDDEN_LINKS = """
query($deal: UUID!, $person: UUID!) {
  deal(id: $deal) { title person { name } organization { name } }
  person(id: $person) { name organization { name } }
}
"""


@pytest.mark.parametrize(
    ("caller", "carols_person", "carols_organization"),
    [("bob", None, None), ("carol", {"name": "Cara Vale"}, {"name": "Vale Holdings"})],
)
async def test_a_relation_to_a_record_the_caller_may_not_see_resolves_to_null_without_an_error(
    api, actors, caller, carols_person, carols_organization
):
    async with actors.uow("carol") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Vale Holdings",
                                                                         visibility=Visibility.OWNER))
        cara = await contacts.create_person(uow, PersonCreate(first_name="Cara", last_name="Vale",
                                                              visibility=Visibility.OWNER))
    async with actors.uow("alice") as uow:  # only an admin sees both sides to link them
        deal = await deals.create(uow, DealCreate(title="Vale deal", owner_id=actors.id("bob"), person_id=cara.id,
                                                  organization_id=org.id))
        greg = await contacts.create_person(uow, PersonCreate(first_name="Greg", last_name="Vale",
                                                              owner_id=actors.id("bob"), organization_id=org.id))

    body = await api.query(HIDDEN_LINKS, {"deal": str(deal.id), "person": str(greg.id)}, as_=caller)

    assert body == {"data": {
        "deal": {"title": "Vale deal", "person": carols_person, "organization": carols_organization},
        "person": {"name": "Greg Vale", "organization": carols_organization},
    }}


async def test_a_converted_lead_links_to_its_deal_and_the_contacts_conversion_made(api, actors):
    async with actors.uow("bob") as uow:
        lead = await leads.create(uow, LeadCreate(title="Harbor expansion", value=Decimal(800),
                                                  contact_name="Greta Lind", organization_name="Harbor Works"))
        await leads.convert(uow, lead.id)

    body = await api.query(
        "query($id: UUID!) { lead(id: $id) { status person { name } organization { name }"
        " convertedDeal { title value stage { name } person { name } organization { name } owner { displayName } }"
        " } }",
        {"id": str(lead.id)}, as_="dan",
    )

    assert body == {"data": {"lead": {
        "status": "CONVERTED", "person": {"name": "Greta Lind"}, "organization": {"name": "Harbor Works"},
        "convertedDeal": {"title": "Harbor expansion", "value": "800.00", "stage": {"name": "Qualified"},
                          "person": {"name": "Greta Lind"}, "organization": {"name": "Harbor Works"},
                          "owner": {"displayName": "Bob"}},
    }}}


MEMBER_PERMISSIONS = [
    "ACTIVITIES_DELETE", "ACTIVITIES_READ", "ACTIVITIES_WRITE", "AI_USE", "CONTACTS_READ", "CONTACTS_WRITE",
    "DEALS_DELETE", "DEALS_READ", "DEALS_WRITE", "LEADS_CONVERT", "LEADS_DELETE", "LEADS_READ", "LEADS_WRITE",
    "NOTES_DELETE", "NOTES_READ", "NOTES_WRITE", "PIPELINES_READ", "PROFILE_WRITE", "USERS_READ",
]
READ_PERMISSIONS = ["ACTIVITIES_READ", "CONTACTS_READ", "DEALS_READ", "LEADS_READ", "NOTES_READ", "PIPELINES_READ",
                    "USERS_READ"]


@pytest.mark.parametrize(
    ("principal", "email", "role", "team", "scopes", "permissions"),
    [
        ("bob", "bob@example.com", "MEMBER", "East", None, MEMBER_PERMISSIONS),
        ("agent", "bob@example.com", "MEMBER", "East", ["READ"], READ_PERMISSIONS),
        ("vic", "vic@example.com", "VIEWER", None, None, sorted([*READ_PERMISSIONS, "PROFILE_WRITE"])),
    ],
)
async def test_me_shows_the_callers_roles_teams_scopes_and_effective_permissions(
    api, company, principal, email, role, team, scopes, permissions
):
    body = await api.query("{ me { user { email roles teamIds } scopes permissions } }", **login(principal))
    assert body == {"data": {"me": {
        "user": {"email": email, "roles": [role], "teamIds": [str(company.team_ids[team])] if team else []},
        "scopes": scopes, "permissions": permissions,
    }}}


async def test_a_refusal_names_the_permission_as_me_permissions_lists_it(api, admin):
    """A client matches `extensions.permission` against `me.permissions`: one vocabulary, the Perm enum's names."""
    before = counts(admin, "deals", "audit_log", "outbox")
    agent = await api.query("{ me { permissions } }", **login("agent"))
    bob = await api.query("{ me { permissions } }", **login("bob"))
    refused = await api.query('mutation { createDeal(input: {title: "Sneaky"}) { id } }', **login("agent"))
    assert agent == {"data": {"me": {"permissions": READ_PERMISSIONS}}}
    assert "DEALS_WRITE" in bob["data"]["me"]["permissions"]
    assert without_locations(refused) == {"data": None, "errors": [{
        "message": "missing permission DEALS_WRITE", "path": ["createDeal"],
        "extensions": {"code": "FORBIDDEN", "permission": "DEALS_WRITE"}}]}
    assert counts(admin, "deals", "audit_log", "outbox") == before


def test_graphql_words_change_only_field_names_and_permissions():
    from graphql_api.errors import field_names, graphql_words
    from graphql_api.schema import build_schema

    fields = field_names(build_schema()._schema)
    assert graphql_words("owner_id is required; pass pipeline_id and expected_version", fields) == (
        "ownerId is required; pass pipelineId and expectedVersion")
    assert graphql_words("violates rule deals_owner_id_fkey; no_such_field; crm.read; missing permission "
                         "gdpr:erase; not:apermission", fields) == (
        "violates rule deals_owner_id_fkey; no_such_field; crm.read; missing permission GDPR_ERASE; "
        "not:apermission")


async def test_users_are_listed_by_name_and_teams_resolve_their_members(api, company):
    body = await api.query("{ users { displayName roles } teams { name members { displayName } } }", as_="vic")

    def members(team: str) -> list[dict[str, str]]:  # in the order of the team's member ids
        people = sorted((p for p in company.people.values() if team in p.teams), key=lambda p: p.id)
        return [{"displayName": p.key.title()} for p in people]

    assert body == {"data": {
        "users": [{"displayName": "Alice", "roles": ["ADMIN"]}, {"displayName": "Bob", "roles": ["MEMBER"]},
                  {"displayName": "Carol", "roles": ["MEMBER"]}, {"displayName": "Dan", "roles": ["MEMBER"]},
                  {"displayName": "Mia", "roles": ["MANAGER"]}, {"displayName": "Vic", "roles": ["VIEWER"]}],
        "teams": [{"name": "East", "members": members("East")}, {"name": "West", "members": members("West")}],
    }}


async def test_pipelines_list_their_stages_in_order_and_one_opens_by_id(api, actors, company):
    sales = company.sales_stage_ids
    async with actors.uow("alice") as uow:
        hiring = await pipelines.create(uow, PipelineCreate(name="Hiring", stages=[
            StageInput(name="Applied", win_probability=5), StageInput(name="Offer", win_probability=80)]))
        await pipelines.reorder_stages(uow, company.sales_pipeline_id, [sales[1], sales[0], sales[3], sales[2]])

    body = await api.query(
        "query($id: UUID!) { pipelines { name stages { name position winProbability } }"
        " pipeline(id: $id) { id name stages { name } } }",
        {"id": str(hiring.id)}, as_="vic",
    )

    assert body == {"data": {
        "pipelines": [
            {"name": "Sales", "stages": [
                {"name": "Contact Made", "position": 0, "winProbability": 25},
                {"name": "Qualified", "position": 1, "winProbability": 10},
                {"name": "Negotiation", "position": 2, "winProbability": 75},
                {"name": "Proposal", "position": 3, "winProbability": 50},
            ]},
            {"name": "Hiring", "stages": [{"name": "Applied", "position": 0, "winProbability": 5},
                                          {"name": "Offer", "position": 1, "winProbability": 80}]},
        ],
        "pipeline": {"id": str(hiring.id), "name": "Hiring", "stages": [{"name": "Applied"}, {"name": "Offer"}]},
    }}


async def test_a_missing_pipeline_is_null_with_not_found(api):
    missing = uuid4()
    body = await api.query("query($id: UUID!) { pipeline(id: $id) { name } }", {"id": str(missing)})
    assert without_locations(body) == not_found("pipeline", missing)


# 3. Pagination and filters ---------------------------------------------------------------------------------

DEALS_PAGE = """
query($first: Int!, $after: String, $filter: DealFilter) {
  deals(first: $first, after: $after, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { title } }
  }
}
"""


async def create_numbered_deals(actors: Actors, numbers: range) -> None:
    """Deals "Deal 1", "Deal 2"... by bob, each in its own transaction, so they list newest (highest) first."""
    for n in numbers:
        await new_deal(actors, title=f"Deal {n}")


async def walk(api: Api, first: int, after_first_page: Callable[[], Awaitable[Any]] | None = None):
    """Every page from the start, following endCursor: (titles, hasNextPage, totalCount) per page."""
    pages, after = [], None
    for _ in range(10):
        deals_page = (await api.query(DEALS_PAGE, {"first": first, "after": after}))["data"]["deals"]
        page_info = deals_page["pageInfo"]
        assert page_info["endCursor"] == deals_page["edges"][-1]["cursor"]
        pages.append((titles(deals_page), page_info["hasNextPage"], deals_page["totalCount"]))
        if not page_info["hasNextPage"]:
            return pages
        after = page_info["endCursor"]
        if after_first_page is not None and len(pages) == 1:
            await after_first_page()
    raise AssertionError(f"paging did not end: {pages}")


async def test_paging_by_three_walks_seven_deals_newest_first_without_gaps_or_repeats(api, actors):
    await create_numbered_deals(actors, range(1, 8))

    assert await walk(api, 3) == [
        (["Deal 7", "Deal 6", "Deal 5"], True, 7),
        (["Deal 4", "Deal 3", "Deal 2"], True, 7),
        (["Deal 1"], False, 7),
    ]


async def test_a_deal_created_while_paging_lands_before_the_cursor_so_later_pages_neither_repeat_nor_skip(
    api, actors
):
    await create_numbered_deals(actors, range(1, 8))

    pages = await walk(api, 3, after_first_page=lambda: new_deal(actors, title="Deal 8"))

    assert pages == [
        (["Deal 7", "Deal 6", "Deal 5"], True, 7),
        (["Deal 4", "Deal 3", "Deal 2"], True, 8),
        (["Deal 1"], False, 8),
    ]
    assert (await walk(api, 8))[0] == ([f"Deal {n}" for n in range(8, 0, -1)], False, 8)


@pytest.mark.parametrize("first", [0, 101, -1])
async def test_a_page_size_outside_1_to_100_is_bad_user_input_on_first(api, first):
    body = await api.query(DEALS_PAGE, {"first": first})
    assert without_locations(body) == {"data": None, "errors": [
        error("first must be between 1 and 100", "deals", "BAD_USER_INPUT", field="first")]}


async def test_a_garbage_cursor_is_bad_user_input_on_after(api, actors):
    await new_deal(actors)
    body = await api.query(DEALS_PAGE, {"first": 3, "after": "not-a-cursor"})
    assert without_locations(body) == {"data": None, "errors": [
        error("malformed cursor", "deals", "BAD_USER_INPUT", field="after")]}


@pytest.fixture
async def filterable(actors, company) -> None:
    """bob's open Qualified, won Proposal and lost Negotiation deals, then dan's open Proposal deal."""
    stage = company.sales_stage_ids
    await new_deal(actors, "bob", title="Open qualified", stage_id=stage[QUALIFIED])
    won = await new_deal(actors, "bob", title="Won proposal", stage_id=stage[PROPOSAL])
    lost = await new_deal(actors, "bob", title="Lost negotiation", stage_id=stage[NEGOTIATION])
    async with actors.uow("bob") as uow:
        await deals.mark_won(uow, won.id)
        await deals.mark_lost(uow, lost.id, "Budget cut")
    await new_deal(actors, "dan", title="Dan proposal", stage_id=stage[PROPOSAL])


@pytest.mark.parametrize(
    ("make_filter", "expected"),
    [
        (lambda c: {"status": "OPEN"}, ["Dan proposal", "Open qualified"]),
        (lambda c: {"status": "WON"}, ["Won proposal"]),
        (lambda c: {"status": "LOST"}, ["Lost negotiation"]),
        (lambda c: {"stageId": str(c.sales_stage_ids[PROPOSAL])}, ["Dan proposal", "Won proposal"]),
        (lambda c: {"ownerId": str(c.people["dan"].id)}, ["Dan proposal"]),
        (lambda c: {"ownerId": str(c.people["bob"].id), "status": "OPEN"}, ["Open qualified"]),
        (lambda c: {"teamId": str(c.team_ids["West"])}, []),
        (lambda c: {"text": "PROPOSAL"}, ["Dan proposal", "Won proposal"]),
    ],
    ids=["open", "won", "lost", "stage", "owner", "owner-and-status", "team-without-deals", "text"],
)
async def test_deals_filter_by_status_stage_owner_team_and_text(api, company, filterable, make_filter, expected):
    body = await api.query(DEALS_PAGE, {"first": 10, "filter": make_filter(company)}, as_="mia")
    connection = body["data"]["deals"]
    assert (titles(connection), connection["totalCount"], connection["pageInfo"]["hasNextPage"]) == (
        expected, len(expected), False)


# 4. SQL statements per request -----------------------------------------------------------------------------

DEALS_WITH_RELATIONS = """
{ deals(first: 50) { edges { node { title stage { name } person { name } organization { name }
                                    owner { displayName } } } } }
"""


def _statement_text(statement: Any, conn: Any) -> str:
    if isinstance(statement, bytes):
        text = statement.decode()
    elif isinstance(statement, sql.Composable):
        text = statement.as_string(conn)
    else:
        text = str(statement)
    return " ".join(text.split())


@pytest.fixture
def statements(monkeypatch) -> Iterator[list[str]]:
    """Every SQL statement the process sends from now on: cursor executes, and the BEGIN/COMMIT/ROLLBACK
    that transactions send as commands of their own."""
    log: list[str] = []
    execute = psycopg.AsyncCursor.execute
    exec_command = BaseConnection._exec_command

    async def counted_execute(cur, query, *args, **kwargs):
        log.append(_statement_text(query, cur.connection))
        return await execute(cur, query, *args, **kwargs)

    def counted_exec_command(conn, command, *args, **kwargs):
        log.append(_statement_text(command, conn))
        return (yield from exec_command(conn, command, *args, **kwargs))

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted_execute)
    monkeypatch.setattr(BaseConnection, "_exec_command", counted_exec_command)
    yield log


async def create_deals_with_contacts(actors: Actors, company: Company, numbers: range) -> None:
    for n in numbers:
        async with actors.uow("bob") as uow:
            org = await contacts.create_organization(uow, OrganizationCreate(name=f"Org {n}"))
            person = await contacts.create_person(uow, PersonCreate(first_name="Person", last_name=str(n)))
            await deals.create(uow, DealCreate(title=f"Deal {n}", person_id=person.id, organization_id=org.id,
                                               stage_id=company.sales_stage_ids[n % 4]))


async def deals_page_statements(api: Api, statements: list[str], count: int) -> list[str]:
    """The statements behind one request for the deals page with its relations (checking what it returned)."""
    statements.clear()
    body = await api.query(DEALS_WITH_RELATIONS)
    sent = list(statements)
    stage_names = ["Qualified", "Contact Made", "Proposal", "Negotiation"]
    assert body == {"data": {"deals": {"edges": [
        {"node": {"title": f"Deal {n}", "stage": {"name": stage_names[n % 4]}, "person": {"name": f"Person {n}"},
                  "organization": {"name": f"Org {n}"}, "owner": {"displayName": "Bob"}}}
        for n in range(count, 0, -1)
    ]}}}
    return sent


# One transaction: authentication opens it (the caller's roles read in the same round trip as its settings), then
# the page (not counted: the query does not ask for totalCount) and one query per relation, however many deals.
STATEMENTS = [  # BEGIN goes out before the settings, in their round trip; it is logged as psycopg sends it
    "select set_config('request.jwt.claims', %s, true), set_config('role', %s, true),"
    " set_config('pipecd.channel', %s, true), set_config('statement_timeout', %s, true)",
    "BEGIN",
    "select p.email, array(select r.role from public.user_roles r where r.user_id = p.id) as roles, array(select"
    " m.team_id from public.team_members m where m.user_id = p.id) as team_ids from public.user_profiles p where"
    " p.id = auth.uid()",
    "select t.*, s.win_probability as stage_probability from public.deals t left join public.stages s on s.id ="
    " t.stage_id where true and true order by t.created_at desc, t.id desc limit 51",  # the page size, written in
    'select * from "public"."stages" where id = any(%s)',
    'select * from "public"."persons" where id = any(%s)',
    'select * from "public"."organizations" where id = any(%s)',
    "select p.id, p.email, p.display_name, p.avatar_url, p.created_at, array(select r.role from public.user_roles r"
    " where r.user_id = p.id order by r.role) as roles, array(select m.team_id from public.team_members m where"
    " m.user_id = p.id order by m.team_id) as team_ids from public.user_profiles p where p.id = %s",  # one owner
    "COMMIT",
]


async def test_a_page_of_deals_with_relations_costs_the_same_nine_statements_for_5_and_50_deals(
    api, actors, company, statements
):
    await create_deals_with_contacts(actors, company, range(1, 6))
    for_5 = await deals_page_statements(api, statements, 5)
    await create_deals_with_contacts(actors, company, range(6, 51))
    for_50 = await deals_page_statements(api, statements, 50)

    assert len(for_5) == len(for_50) == 9
    assert for_5 == for_50 == STATEMENTS


# 5. The audit trail ----------------------------------------------------------------------------------------

AUDIT_LOG = """
query($id: UUID!) { auditLog(entityType: "deal", entityId: $id) { operation actorId channel entityType entityId } }
"""


@pytest.fixture
async def audited_deal(actors, company) -> UUID:
    """bob creates, renames, moves and wins a deal; then alice renames it."""
    deal = await new_deal(actors, "bob", title="Audited")
    async with actors.uow("bob") as uow:
        await deals.update(uow, deal.id, DealUpdate(title="Audited, renamed"))
        await deals.move_stage(uow, deal.id, company.sales_stage_ids[PROPOSAL])
        await deals.mark_won(uow, deal.id)
    async with actors.uow("alice") as uow:
        await deals.update(uow, deal.id, DealUpdate(title="Audited by alice"))
    return deal.id


BOBS_TRAIL = [("deal.mark_won", "bob"), ("deal.move_stage", "bob"), ("deal.update", "bob"), ("deal.create", "bob")]


@pytest.mark.parametrize(
    ("reader", "trail"),
    [("alice", [("deal.update", "alice"), *BOBS_TRAIL]), ("mia", BOBS_TRAIL)],
    ids=["admin-sees-every-entry", "manager-sees-her-teams-entries"],
)
async def test_audit_log_reads_a_deals_trail_newest_first(api, actors, audited_deal, reader, trail):
    body = await api.query(AUDIT_LOG, {"id": str(audited_deal)}, as_=reader)

    assert body == {"data": {"auditLog": [
        {"operation": operation, "actorId": str(actors.id(who)), "channel": "graphql", "entityType": "deal",
         "entityId": str(audited_deal)}
        for operation, who in trail
    ]}}


@pytest.mark.parametrize("principal", ["bob", "carol", "vic", "agent"])
async def test_callers_without_audit_read_get_forbidden_for_the_audit_log(api, admin, audited_deal, principal):
    before = counts(admin, "audit_log", "outbox")

    body = await api.query(AUDIT_LOG, {"id": str(audited_deal)}, **login(principal))

    assert without_locations(body) == {"data": None, "errors": [
        error("missing permission AUDIT_READ", "auditLog", "FORBIDDEN", permission="AUDIT_READ")]}
    assert counts(admin, "audit_log", "outbox") == before == {"audit_log": 5, "outbox": 5}

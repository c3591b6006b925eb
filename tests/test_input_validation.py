"""Bad input is refused with BAD_USER_INPUT (GraphQL) or `[invalid]` (MCP) naming the field, never answered as an
internal error, and nothing is written. The NUL tests walk the schema: every String argument and every String
field of every input type of every operation is tried, so a field added later is tried too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from test_graphql_mutations import CASE, database_state, world  # noqa: F401  (world is a fixture)

from graphql_api.schema import build_schema

NUL = "bad\x00text"
SCHEMA = build_schema()._schema


# Walking the schema -------------------------------------------------------------------------------------------


def _unwrap(kind: GraphQLInputType) -> tuple[GraphQLInputType, bool]:
    """The named type under NonNull/List wrappers, and whether a list is among them."""
    listed = False
    while isinstance(kind, GraphQLNonNull | GraphQLList):
        listed = listed or isinstance(kind, GraphQLList)
        kind = kind.of_type
    return kind, listed


def _string_paths(kind: GraphQLInputType, path: tuple[str, ...], seen: frozenset[str]) -> Iterator[
    tuple[tuple[str, ...], bool]
]:
    """(path, is a list) of every String position reachable from `kind`."""
    named, listed = _unwrap(kind)
    if isinstance(named, GraphQLScalarType) and named.name == "String":
        yield path, listed
    elif isinstance(named, GraphQLInputObjectType) and named.name not in seen:
        for name, field in named.fields.items():
            yield from _string_paths(field.type, (*path, name), seen | {named.name})


def _targets(operation: str) -> list[Any]:
    root = SCHEMA.mutation_type if operation == "mutation" else SCHEMA.query_type
    params = []
    for name, field in root.fields.items():
        for argument_name, argument in field.args.items():
            for path, listed in _string_paths(argument.type, (argument_name,), frozenset()):
                params.append(pytest.param(name, path, listed, id=f"{name}-{'.'.join(path)}"))
    return params


def _document(operation: str, name: str, field: GraphQLField, variables: dict[str, Any]) -> str:
    """`operation($a: A, ...) { name(a: $a, ...) { __typename } }` passing the arguments given in `variables`."""
    arguments: dict[str, GraphQLArgument] = {a: arg for a, arg in field.args.items() if a in variables}
    declared = ", ".join(f"${a}: {arg.type}" for a, arg in arguments.items())
    passed = ", ".join(f"{a}: ${a}" for a in arguments)
    head = f"{operation}({declared})" if declared else operation
    call = f"{name}({passed})" if passed else name
    return f"{head} {{ {call} {{ __typename }} }}"


def _set(variables: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """`variables` with the value at `path` (input objects created on the way) replaced."""
    head, *rest = path
    if not rest:
        return {**variables, head: value}
    return {**variables, head: _set(dict(variables.get(head) or {}), tuple(rest), value)}


def _expect_refused(body: dict[str, Any], name: str, field: str) -> None:
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["path"] == [name], error
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == field, error
    # A cursor is opaque: one holding NUL is malformed like any other it did not come from the server.
    assert ("malformed cursor" if field == "after" else "must not contain NUL characters") in error["message"], error


# Query variables that work for bob, where a query has required arguments.
QUERY_VARIABLES = {
    "search": {"query": "harbor"},
    "auditLog": {"entityType": "deal", "entityId": str(uuid4())},
    "summaries": {"subjectType": "DEAL", "subjectId": str(uuid4())},
}


# NUL characters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "path", "listed"), _targets("mutation"))
async def test_nul_in_any_string_input_of_a_mutation_is_bad_user_input_naming_it_and_nothing_is_written(
    api, world, admin, name, path, listed  # noqa: F811
):
    case = CASE[name]
    variables = _set(case.variables(world), path, [NUL] if listed else NUL)
    before = database_state(admin)

    body = await api.query(_document("mutation", name, SCHEMA.mutation_type.fields[name], variables), variables,
                           as_=case.caller)

    _expect_refused(body, name, path[-1])
    assert database_state(admin) == before


@pytest.mark.parametrize(("name", "path", "listed"), _targets("query"))
async def test_nul_in_any_string_input_of_a_query_is_bad_user_input_naming_it(api, world, name, path, listed):  # noqa: F811
    variables = _set(QUERY_VARIABLES.get(name, {}), path, [NUL] if listed else NUL)

    body = await api.query(_document("query", name, SCHEMA.query_type.fields[name], variables), variables, as_="alice")

    _expect_refused(body, name, path[-1])


def test_the_schema_walk_finds_the_string_inputs():
    """A guard on the walk itself: a few known positions, nested and listed ones among them."""
    found = {(p.values[0], ".".join(p.values[1])) for p in _targets("mutation") + _targets("query")}
    assert {("createTeam", "name"), ("markDealLost", "reason"), ("createPipeline", "input.stages.name"),
            ("createPerson", "input.emails"), ("createDeal", "idempotencyKey"), ("search", "query"),
            ("deals", "filter.text"), ("deals", "after"), ("auditLog", "entityType")} <= found


# The same refusals through MCP ------------------------------------------------------------------------------


def _mcp_client(db, company, key="bob"):
    from test_mcp_tools import client_for

    return client_for(db, company, key)


@pytest.mark.parametrize(("tool", "arguments", "field"), [
    ("search", {"query": NUL}, "query"),
    ("create_deal", {"title": NUL}, "title"),
    ("create_person", {"first_name": "Ann", "emails": [NUL]}, "emails"),
    ("list_deals", {"text": NUL}, "text"),
    ("log_activity", {"subject": "Call", "note": NUL}, "note"),
])
async def test_nul_through_mcp_is_invalid_naming_the_field_and_nothing_is_written(
    db, company, admin, tool, arguments, field
):
    from test_mcp_tools import written

    before = written(admin)
    async with _mcp_client(db, company) as client:
        result = await client.call_tool(tool, arguments)

    assert result.is_error, result
    message = result.content[0].text
    # An email is checked as an email first where MCP validates the flat arguments; either way the field is named.
    assert message.startswith("[invalid] ") and ("NUL" in message or "not an email" in message), message
    assert message.endswith(f"(field: {field})"), message
    assert written(admin) == before


async def test_a_non_ascii_delete_confirmation_is_invalid_and_deletes_nothing(db, company, admin):
    async with _mcp_client(db, company) as client:
        deal = (await client.call_tool("create_deal", {"title": "Keep me"})).structured_content
        result = await client.call_tool("delete_record", {"record_type": "deal", "record_id": deal["id"],
                                                          "confirmation": "e30.\u00e9\u00e9\u00e9"})

    assert result.is_error
    assert result.content[0].text == (
        "[invalid] this confirmation is not valid; preview again to get a new one (field: confirmation)")
    assert admin.execute("select count(*) from public.deals").fetchone()[0] == 1


# Times --------------------------------------------------------------------------------------------------------

OUT_OF_RANGE = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"]


@pytest.mark.parametrize("when", OUT_OF_RANGE)
async def test_a_time_outside_years_1_to_9999_in_utc_is_bad_user_input_and_nothing_is_written(
    api, world, admin, when  # noqa: F811
):
    before = database_state(admin)

    created = await api.query(
        "mutation($input: ActivityCreateInput!) { createActivity(input: $input) { id } }",
        {"input": {"subject": "Remind me", "reminderAt": when}})
    listed = await api.query("query($f: DealFilter) { deals(filter: $f) { totalCount } }",
                             {"f": {"updatedSince": when}})

    for body, name in ((created, "createActivity"), (listed, "deals")):
        (error,) = body["errors"]
        assert (error["path"], error["extensions"]["code"], error["extensions"]["field"]) == (
            [name], "BAD_USER_INPUT", "reminderAt" if name == "createActivity" else "updatedSince"), error
        assert "must be within the years 1 to 9999 in UTC" in error["message"]
    assert database_state(admin) == before


async def test_a_time_with_an_offset_is_stored_as_the_same_instant(api, world, admin):  # noqa: F811
    body = await api.query(
        "mutation($input: ActivityCreateInput!) { createActivity(input: $input) { id reminderAt } }",
        {"input": {"subject": "Remind me", "reminderAt": "2026-03-01T09:00:00+05:00"}})

    activity = body["data"]["createActivity"]
    assert activity["reminderAt"] == "2026-03-01T04:00:00+00:00"
    stored = admin.execute("select reminder_at = '2026-03-01T04:00:00Z' from public.activities where id = %s",
                           [activity["id"]]).fetchone()[0]
    assert stored is True


async def test_pipeline_summary_takes_the_first_and_the_last_day_there_are(actors, company):
    from datetime import date

    from services.reports import service as reports

    async with actors.uow("bob") as uow:
        whole = await reports.pipeline_summary(uow, since=date.min, until=date.max)
        first_days = await reports.pipeline_summary(uow, until=date(1, 1, 5))

    assert (whole.period.since, whole.period.until) == (date.min, date.max)
    assert (first_days.period.since, first_days.period.until) == (date.min, date(1, 1, 5))
    assert whole.won.count == whole.lost.count == 0


async def test_mcp_pipeline_summary_over_all_time_counts_every_closed_deal(db, company):
    async with _mcp_client(db, company) as client:
        deal = (await client.call_tool("create_deal", {"title": "Won long ago"})).structured_content
        await client.call_tool("mark_deal_won", {"deal_id": deal["id"]})
        summary = await client.call_tool("pipeline_summary", {"since": "0001-01-01", "until": "9999-12-31"})

    assert not summary.is_error, summary
    assert [s["won"]["count"] for s in summary.structured_content["result"]] == [1]


# Deeply nested JSON -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["variables", "extensions", "body"])
async def test_deeply_nested_json_in_a_request_is_a_400_with_a_graphql_error(api, where):
    deep = "[" * 5000 + "]" * 5000
    body = {
        "variables": '{"query": "query($x: [String]) { me { user { id } } }", "variables": {"x": %s}}',
        "extensions": '{"query": "{ me { user { id } } }", "extensions": {"x": %s}}',
        "body": "%s",
    }[where] % deep
    response = await api.client.post("/graphql", content=body, headers={
        "Authorization": f"Bearer {api.token('bob')}", "Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json() == {"data": None, "errors": [{
        "message": "the request's JSON nests deeper than 32 levels", "extensions": {"code": "BAD_REQUEST"}}]}


async def test_json_nested_just_within_the_limit_is_answered(api):
    nested: Any = "x"
    for _ in range(31):
        nested = {"a": nested}

    response = await api.client.post("/graphql", json={"query": "{ me { user { email } } }", "extensions": nested},
                                     headers={"Authorization": f"Bearer {api.token('bob')}"})

    assert response.json() == {"data": {"me": {"user": {"email": "bob@example.com"}}}}


@pytest.mark.parametrize("cursor", [
    "W" * 5000,
    __import__("base64").urlsafe_b64encode(("[" * 3000 + "]" * 3000).encode()).decode()[:180],
    __import__("base64").urlsafe_b64encode(b'["0001-01-01T00:00:00+05:00", "00000000-0000-0000-0000-000000000000"]')
    .decode(),
], ids=["long", "deep", "out-of-range"])
async def test_a_cursor_that_the_server_did_not_make_is_malformed(api, cursor):
    body = await api.query("query($after: String) { deals(after: $after) { totalCount } }", {"after": cursor})

    (error,) = body["errors"]
    assert (error["message"], error["extensions"]) == ("malformed cursor", {"code": "BAD_USER_INPUT", "field": "after"})


async def test_a_deeply_nested_cursor_is_malformed(actors):
    import base64

    from services.kernel.errors import Invalid
    from services.kernel.pagination import decode_cursor

    deep = base64.urlsafe_b64encode(("[" * 100 + "]" * 100).encode()).decode()
    with pytest.raises(Invalid, match="malformed cursor"):
        decode_cursor(deep[:200])
    nested = base64.urlsafe_b64encode(("[" * 5000 + "]" * 5000).encode()).decode()
    import services.kernel.pagination as pagination

    limit, pagination.MAX_CURSOR_LENGTH = pagination.MAX_CURSOR_LENGTH, 10**6
    try:
        with pytest.raises(Invalid, match="malformed cursor"):
            decode_cursor(nested)
    finally:
        pagination.MAX_CURSOR_LENGTH = limit


# Fields whose rules the database holds too -------------------------------------------------------------------


async def test_an_empty_domain_clears_an_organizations_domain(api, world, admin):  # noqa: F811
    body = await api.query(
        "mutation($id: UUID!, $input: OrganizationUpdateInput!) { updateOrganization(id: $id, input: $input)"
        " { domain } }", {"id": world.organization, "input": {"domain": ""}})

    assert body == {"data": {"updateOrganization": {"domain": None}}}
    assert admin.execute("select domain from public.organizations where id = %s",
                         [world.organization]).fetchone()[0] is None


async def test_an_empty_domain_creates_an_organization_without_one_through_mcp(db, company):
    async with _mcp_client(db, company) as client:
        created = await client.call_tool("create_organization", {"name": "Domainless", "domain": ""})

    assert not created.is_error, created
    assert created.structured_content["domain"] is None


@pytest.mark.parametrize(("document", "variables", "person"), [
    ("mutation($input: PersonCreateInput!) { createPerson(input: $input) { name } }",
     lambda w: {"input": {"firstName": "F" * 150, "lastName": "L" * 150}}, "createPerson"),
    ("mutation($id: UUID!, $input: PersonUpdateInput!) { updatePerson(id: $id, input: $input) { name } }",
     lambda w: {"id": w.person, "input": {"firstName": "F" * 150, "lastName": "L" * 150}}, "updatePerson"),
], ids=["create", "update"])
async def test_a_full_name_of_both_names_at_their_longest_is_saved(
    api, world, admin, document, variables, person  # noqa: F811
):
    body = await api.query(document, variables(world))

    assert "errors" not in body, body
    assert body["data"][person]["name"] == "F" * 150 + " " + "L" * 150
    assert admin.execute("select count(*) from public.persons where length(name) = 301").fetchone()[0] == 1


async def test_database_data_errors_the_services_did_not_foresee_are_invalid(actors):
    from services.kernel.errors import Invalid

    async with actors.uow("bob") as uow:
        with pytest.raises(Invalid, match="NUL"):
            await uow.one("select %s::text", ["a\x00b"])
    async with actors.uow("bob") as uow:
        with pytest.raises(Invalid, match="out of range"):
            await uow.one("select '294277-01-01'::timestamptz")
    async with actors.uow("bob") as uow:
        with pytest.raises(Invalid, match="out of range"):
            await uow.one("select 99999999999::integer")


# Currencies ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "variables"), [
    ("mutation($input: DealCreateInput!) { createDeal(input: $input) { id } }",
     lambda w: {"input": {"title": "Pier lighting", "currency": "XYZ"}}),
    ("mutation($id: UUID!, $input: DealUpdateInput!) { updateDeal(id: $id, input: $input) { id } }",
     lambda w: {"id": w.deal, "input": {"currency": "XYZ"}}),
    ("mutation($input: LeadCreateInput!) { createLead(input: $input) { id } }",
     lambda w: {"input": {"title": "Pier lighting", "currency": "XYZ"}}),
    ("mutation($id: UUID!, $input: LeadUpdateInput!) { updateLead(id: $id, input: $input) { id } }",
     lambda w: {"id": w.lead, "input": {"currency": "XYZ"}}),
], ids=["create deal", "update deal", "create lead", "update lead"])
async def test_an_unknown_currency_is_bad_user_input_naming_it_and_nothing_is_written(
    api, world, admin, document, variables  # noqa: F811
):
    before = database_state(admin)

    body = await api.query(document, variables(world))

    (error,) = body["errors"]
    assert (error["message"], error["extensions"]) == (
        "currency: Value error, 'XYZ' is not an ISO 4217 currency code",
        {"code": "BAD_USER_INPUT", "field": "currency",
         "problems": [{"field": "currency", "message": "Value error, 'XYZ' is not an ISO 4217 currency code"}]})
    assert database_state(admin) == before


@pytest.mark.parametrize(("tool", "arguments"), [
    ("create_deal", {"title": "Pier lighting", "currency": "XYZ"}),
    ("create_lead", {"title": "Pier lighting", "currency": "XYZ"}),
])
async def test_an_unknown_currency_through_mcp_is_invalid_naming_the_field(db, company, admin, tool, arguments):
    from test_mcp_tools import written

    before = written(admin)
    async with _mcp_client(db, company) as client:
        result = await client.call_tool(tool, arguments)

    assert result.is_error, result
    assert result.content[0].text == "[invalid] Value error, 'XYZ' is not an ISO 4217 currency code (field: currency)"
    assert written(admin) == before


def test_the_database_knows_the_currencies_the_services_accept(admin):
    import pycountry

    known = [code for (code,) in admin.execute("select code from private.currencies order by code")]
    assert known == sorted(c.alpha_3 for c in pycountry.currencies)


def test_a_direct_write_of_an_unknown_currency_is_refused_and_an_old_one_still_updates(admin, app_url, company):
    from conftest import rls_session

    bob = company.people["bob"].id
    with rls_session(app_url, bob) as conn:
        deal_id = conn.execute("insert into public.deals (title, owner_id, pipeline_id, currency) values"
                               " ('Direct', %s, %s, 'EUR') returning id", [bob, company.sales_pipeline_id]
                               ).fetchone()[0]
    with pytest.raises(psycopg.errors.ForeignKeyViolation), rls_session(app_url, bob) as conn:
        conn.execute("update public.deals set currency = 'XYZ' where id = %s", [deal_id])
    # a row written before the currencies were checked (the check bypassed here) keeps updating
    with admin.transaction():
        admin.execute("set local session_replication_role = replica")
        admin.execute("update public.deals set currency = 'ZZZ' where id = %s", [deal_id])
    with rls_session(app_url, bob) as conn:
        conn.execute("update public.deals set title = 'Renamed' where id = %s", [deal_id])
    assert admin.execute("select title, currency from public.deals where id = %s", [deal_id]).fetchone() == (
        "Renamed", "ZZZ")

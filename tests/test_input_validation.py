"""Bad input is refused with BAD_USER_INPUT (GraphQL) or `[invalid]` (MCP) naming the field, never answered as an
internal error, and nothing is written. The NUL tests walk the schema: every String argument and every String
field of every input type of every operation is tried, so a field added later is tried too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

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

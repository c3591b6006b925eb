"""The GraphQL gateway over HTTP: its limits refuse abusive documents before any resolver or SQL runs, errors are
masked or passed through as designed, bad tokens get a 401, the IDE and introspection are off in production,
and the health endpoints tell the truth about the database."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from conftest import ROOT, TEST_JWT_SECRET, counts, lifespan
from graphql import ValidationRule
from psycopg._connection_base import BaseConnection
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import graphql_api.schema
from pipecd import runtime
from pipecd.accounts import create_local_user
from pipecd.app import create_app
from pipecd.database.migrations import discover
from pipecd.settings import Settings
from services.kernel.auth import authenticate
from services.kernel.principal import Channel

ME = "{ me { user { email } } }"
BOBS_ME = {"me": {"user": {"email": "bob@example.com"}}}
WWW_AUTHENTICATE = 'Bearer realm="pipecd"'


def refused(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    """The body of a request refused before execution."""
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code, **extensions}}]}


# Recording SQL ------------------------------------------------------------------------------------------------


def _text(statement: Any) -> str:
    if isinstance(statement, bytes):
        statement = statement.decode()
    return " ".join(str(statement).split())


class SqlLog:
    """Every statement this process sends to Postgres while installed: queries and BEGIN/COMMIT/ROLLBACK."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        execute = psycopg.AsyncCursor.execute
        exec_command = BaseConnection._exec_command

        async def recording_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            self.statements.append(_text(query))
            return await execute(cursor, query, *args, **kwargs)

        def recording_exec_command(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            self.statements.append(_text(command))
            return (yield from exec_command(conn, command, *args, **kwargs))

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", recording_execute)
        monkeypatch.setattr(BaseConnection, "_exec_command", recording_exec_command)

    def take(self) -> list[str]:
        taken, self.statements = self.statements, []
        return taken


@pytest.fixture
def sql(api, monkeypatch: pytest.MonkeyPatch) -> SqlLog:
    """Installed once the `api` app is up, so its startup check is not counted."""
    return SqlLog(monkeypatch)


@pytest.fixture
async def auth_sql(sql: SqlLog, db, settings: Settings, company) -> list[str]:
    """What authenticating a token sends, measured here outside the app: the statements every request with a
    valid token makes before its document is even parsed."""
    sql.take()  # the `db` pool's own startup check
    person = company.people["bob"]
    token = runtime.mint_token(settings, person.id, person.email)
    await authenticate(db, runtime.token_verifier(settings), token, channel=Channel.GRAPHQL)
    statements = sql.take()
    assert statements.count("BEGIN") == 1  # (logged after the first query, which psycopg sends it before)
    assert statements[-1] == "COMMIT"
    assert any("from public.user_profiles" in s for s in statements)
    return statements


def touches_deals(statements: list[str]) -> bool:
    return any("public.deals" in s for s in statements)


# Tokens and apps with other settings --------------------------------------------------------------------------


def claims(company, key: str = "bob", **changes: Any) -> dict[str, Any]:
    """Claims shaped like a Supabase access token's; a change to None drops the claim."""
    person = company.people[key]
    now = int(time.time())
    base = {
        "sub": str(person.id),
        "aud": "authenticated",
        "role": "authenticated",
        "email": person.email,
        "iat": now,
        "exp": now + 600,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def signed(company, key: str = "bob", *, secret: str = TEST_JWT_SECRET, **changes: Any) -> str:
    return jwt.encode(claims(company, key, **changes), secret, algorithm="HS256")


@pytest.fixture
def headers(company) -> dict[str, str]:
    """Bob's Authorization header."""
    return {"Authorization": f"Bearer {signed(company)}"}


Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(settings: Settings) -> Serve:
    """`async with serve(PIPECD_ENV="production") as client:` the app for the test database with these settings,
    given by their environment names so they pass Settings' validation as a deployment's would."""

    @asynccontextmanager
    async def serving(**environment: Any) -> AsyncIterator[httpx.AsyncClient]:
        configured = Settings(
            **{
                "DATABASE_URL": settings.database_url,
                "PIPECD_STATE_DIR": settings.state_dir,
                "PIPECD_ENV": "test",
                "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
                **environment,
            }
        )
        app = create_app(configured)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client

    return serving


# Documents ----------------------------------------------------------------------------------------------------

RELATIONS = ["person", "organization", "notes", "deal"]


def nested(depth: int) -> str:
    """A deals page `depth` levels deep: deals, edges, node, then person → organization → notes → deal → person
    ... (one list in four, so the cost stays well under its limit)."""
    fields = ["deals(first: 1)", "edges", "node"] + [RELATIONS[i % 4] for i in range(depth - 3)]
    return "{ " + " { ".join(fields) + " { id" + " }" * len(fields) + " }"


def aliased(count: int) -> str:
    return "{ " + " ".join(f"a{i}: me {{ user {{ email }} }}" for i in range(count)) + " }"


def tokens(count: int) -> str:
    """A valid document of exactly `count` lexical tokens: a search whose `types` list repeats DEAL (15 tokens
    besides). Not thousands of identical fields: those fail validation ("Validation aborted.") on their own."""
    return '{ search(query: "zz", types: [' + " ".join(["DEAL"] * (count - 15)) + "]) { id } }"


# 1 + 100 × (edges 1 + (node 1 + (notes 1 + 10 × (deal 1 + (activities 1 + 10 × id 1))))) = 12301
COSTLY = "{ deals(first: 100) { edges { node { notes { deal { activities { id } } } } } } }"


# 1. Limits ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "error"),
    [
        pytest.param(
            nested(11),
            {
                "message": "query depth 11 exceeds the limit of 10; ask for fewer nested fields",
                "locations": [{"line": 1, "column": 1}],
                "extensions": {"code": "QUERY_TOO_DEEP", "depth": 11, "limit": 10},
            },
            id="depth",
        ),
        pytest.param(
            tokens(2001),
            {
                "message": "query exceeds the limit of 2000 tokens; ask for fewer fields",
                "locations": [{"line": 1, "column": 9970}],
                "extensions": {"code": "QUERY_TOO_LARGE", "limit": 2000},
            },
            id="tokens",
        ),
        pytest.param(
            aliased(16),
            {
                "message": "query has 16 aliases, more than the limit of 15; ask for each field once",
                "extensions": {"code": "TOO_MANY_ALIASES", "aliases": 16, "limit": 15},
            },
            id="aliases",
        ),
        pytest.param(
            COSTLY,
            {
                "message": "query cost 12301 exceeds the limit of 10000; ask for smaller pages or fewer fields",
                "locations": [{"line": 1, "column": 1}],
                "extensions": {"code": "QUERY_TOO_COSTLY", "cost": 12301, "limit": 10000},
            },
            id="cost",
        ),
    ],
)
async def test_a_document_over_a_default_limit_is_refused_before_any_resolver_or_sql_runs(
    api, sql, auth_sql, headers, document, error
):
    response = await api.client.post("/graphql", json={"query": document}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"data": None, "errors": [error]}
    assert sql.take() == auth_sql


def doubling_fragments(levels: int) -> str:
    """Each fragment spreads the next one twice: 2**levels emails in a few tokens per level."""
    fragments = [f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    return "{ me { user { ...F0 } } } " + " ".join([*fragments, f"fragment F{levels} on User {{ email }}"])


async def test_fragments_that_multiply_a_document_are_costed_without_expanding_them(api, sql, auth_sql, headers):
    started = time.monotonic()
    response = await api.client.post("/graphql", json={"query": doubling_fragments(24)}, headers=headers)
    elapsed = time.monotonic() - started
    # me 1 + (user 1 + 2**24 × email 1)
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": "query cost 16777218 exceeds the limit of 10000; ask for smaller pages or fewer fields",
                "locations": [{"line": 1, "column": 1}],
                "extensions": {"code": "QUERY_TOO_COSTLY", "cost": 16777218, "limit": 10000},
            }
        ],
    }
    assert elapsed < 2  # expanded at every spread, the limit rules took about a minute here (and hours at 40)
    assert sql.take() == auth_sql


@pytest.mark.parametrize(
    ("document", "data"),
    [
        pytest.param(nested(10), {"deals": {"edges": []}}, id="depth"),
        pytest.param(tokens(2000), {"search": []}, id="tokens"),
        pytest.param(aliased(15), {f"a{i}": BOBS_ME["me"] for i in range(15)}, id="aliases"),
    ],
)
async def test_a_document_exactly_at_a_default_limit_runs(api, document, data):
    assert await api.query(document) == {"data": data}


async def test_the_web_apps_deals_page_runs_at_the_default_limits_and_its_sql_follows_authentication(
    api, sql, auth_sql, company
):
    created = await api.query('mutation { createDeal(input: {title: "Acme renewal", value: "1000"}) { id } }')
    deal_id = created["data"]["createDeal"]["id"]
    sql.take()
    body = await api.query((ROOT / "tests" / "graphql" / "deals_page.graphql").read_text(), {"first": 100})

    assert body == {
        "data": {
            "deals": {
                "totalCount": 1,
                "pageInfo": {"hasNextPage": False, "endCursor": body["data"]["deals"]["edges"][0]["cursor"]},
                "edges": [
                    {
                        "cursor": body["data"]["deals"]["edges"][0]["cursor"],
                        "node": {
                            "id": deal_id,
                            "title": "Acme renewal",
                            "value": "1000.00",
                            "currency": "USD",
                            "weightedValue": "100.00",
                            "status": "OPEN",
                            "visibility": "COMPANY",
                            "stage": {"id": str(company.sales_stage_ids[0]), "name": "Qualified", "winProbability": 10},
                            "owner": {"displayName": "Bob"},
                        },
                    }
                ],
            }
        }
    }
    statements = sql.take()
    # one transaction: authentication opens it (its statements but the COMMIT), the page is read in it
    opening = auth_sql[:-1]
    assert statements[: len(opening)] == opening
    assert touches_deals(statements[len(opening) : -1])
    assert statements[-1] == "COMMIT"
    assert (statements.count("BEGIN"), statements.count("COMMIT")) == (1, 1)


async def test_a_mutation_writes_in_the_transaction_authentication_opened(api, sql, auth_sql, admin):
    body = await api.query('mutation { createDeal(input: {title: "Acme renewal", value: "1000"}) { title } }')
    statements = sql.take()

    assert body == {"data": {"createDeal": {"title": "Acme renewal"}}}
    assert statements[: len(auth_sql) - 1] == auth_sql[:-1]
    assert (statements.count("BEGIN"), statements.count("COMMIT"), statements[-1]) == (1, 1, "COMMIT")
    assert counts(admin, "deals") == {"deals": 1}


async def test_a_failed_first_mutation_rolls_back_the_transaction_authentication_opened(api, sql, admin):
    body = await api.query(
        f'mutation {{ createDeal(input: {{title: "Refused", stageId: "{uuid.uuid4()}"}}) {{ id }} }}'
    )
    statements = sql.take()

    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert (statements.count("BEGIN"), statements.count("ROLLBACK"), statements.count("COMMIT")) == (1, 1, 0)
    assert counts(admin, "deals") == {"deals": 0}


async def test_a_second_mutation_in_a_document_writes_in_a_transaction_of_its_own(api, sql, admin):
    body = await api.query('mutation { a: createDeal(input: {title: "First"}) { title }'
                           ' b: createDeal(input: {title: "Second"}) { title } }')
    statements = sql.take()

    assert body == {"data": {"a": {"title": "First"}, "b": {"title": "Second"}}}
    assert (statements.count("BEGIN"), statements.count("COMMIT")) == (2, 2)
    assert counts(admin, "deals") == {"deals": 2}


LOWERED = [
    pytest.param(
        "PIPECD_GRAPHQL_MAX_DEPTH",
        "3",
        nested(3),
        {"deals": {"edges": []}},
        nested(4),
        {
            "message": "query depth 4 exceeds the limit of 3; ask for fewer nested fields",
            "locations": [{"line": 1, "column": 1}],
            "extensions": {"code": "QUERY_TOO_DEEP", "depth": 4, "limit": 3},
        },
        id="depth",
    ),
    pytest.param(
        "PIPECD_GRAPHQL_MAX_TOKENS",
        "20",
        tokens(20),
        {"search": []},
        tokens(21),
        {
            "message": "query exceeds the limit of 20 tokens; ask for fewer fields",
            "locations": [{"line": 1, "column": 70}],
            "extensions": {"code": "QUERY_TOO_LARGE", "limit": 20},
        },
        id="tokens",
    ),
    pytest.param(
        "PIPECD_GRAPHQL_MAX_ALIASES",
        "1",
        aliased(1),
        {"a0": BOBS_ME["me"]},
        aliased(2),
        {
            "message": "query has 2 aliases, more than the limit of 1; ask for each field once",
            "extensions": {"code": "TOO_MANY_ALIASES", "aliases": 2, "limit": 1},
        },
        id="aliases",
    ),
    pytest.param(
        # without `first`, a page counts at its default size (25): 1 + 25 × (edges 1 + (node 1 + fields))
        "PIPECD_GRAPHQL_MAX_COST",
        "76",
        "{ deals { edges { node { id } } } }",
        {"deals": {"edges": []}},
        "{ deals { edges { node { id title } } } }",
        {
            "message": "query cost 101 exceeds the limit of 76; ask for smaller pages or fewer fields",
            "locations": [{"line": 1, "column": 1}],
            "extensions": {"code": "QUERY_TOO_COSTLY", "cost": 101, "limit": 76},
        },
        id="cost",
    ),
]


@pytest.mark.parametrize(("variable", "value", "at_limit", "data", "over_limit", "error"), LOWERED)
async def test_a_configured_lower_limit_is_enforced(serve, headers, variable, value, at_limit, data, over_limit, error):
    async with serve(**{variable: value}) as client:
        passing = await client.post("/graphql", json={"query": at_limit}, headers=headers)
        refusal = await client.post("/graphql", json={"query": over_limit}, headers=headers)
    assert (passing.status_code, passing.json()) == (200, {"data": data})
    assert (refusal.status_code, refusal.json()) == (200, {"data": None, "errors": [error]})


def json_body(size: int) -> bytes:
    """A valid GraphQL request body of exactly `size` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"query": ME}).encode()
    return body + b" " * (size - len(body))


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 8192):
        yield body[start : start + 8192]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_body_exactly_at_the_size_limit_is_accepted(api, headers, streamed):
    body = json_body(100_000)
    response = await api.client.post(
        "/graphql",
        content=chunks(body) if streamed else body,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()) == (200, {"data": BOBS_ME})


async def test_a_body_declared_over_the_size_limit_is_refused_before_authentication(api, sql, headers):
    response = await api.client.post(
        "/graphql", content=json_body(100_001), headers={**headers, "Content-Type": "application/json"}
    )
    assert response.request.headers["content-length"] == "100001"
    assert response.status_code == 413
    assert response.json() == refused(
        "request body exceeds the limit of 100000 bytes", "PAYLOAD_TOO_LARGE", limit=100000
    )
    assert sql.take() == []


async def test_a_streamed_body_over_the_size_limit_is_refused_before_it_is_parsed(api, sql, auth_sql, headers):
    response = await api.client.post(
        "/graphql", content=chunks(json_body(100_001)), headers={**headers, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json() == refused(
        "request body exceeds the limit of 100000 bytes", "PAYLOAD_TOO_LARGE", limit=100000
    )
    assert sql.take() == auth_sql  # the token is checked before the body is read; nothing after that


async def test_a_configured_lower_body_size_limit_is_enforced(serve, headers):
    async with serve(PIPECD_GRAPHQL_MAX_BODY_BYTES="2048") as client:
        at_limit = await client.post(
            "/graphql", content=json_body(2048), headers={**headers, "Content-Type": "application/json"}
        )
        over_limit = await client.post(
            "/graphql", content=json_body(2049), headers={**headers, "Content-Type": "application/json"}
        )
    assert (at_limit.status_code, at_limit.json()) == (200, {"data": BOBS_ME})
    assert over_limit.status_code == 413
    assert over_limit.json() == refused("request body exceeds the limit of 2048 bytes", "PAYLOAD_TOO_LARGE", limit=2048)


async def test_a_batch_of_operations_is_refused_and_none_of_them_runs(api, sql, auth_sql, headers, admin):
    create = 'mutation { createDeal(input: {title: "Batched"}) { id } }'
    response = await api.client.post("/graphql", json=[{"query": create}, {"query": create}], headers=headers)
    assert response.status_code == 400
    assert response.json() == refused(
        "batched requests (a JSON array of operations) are not accepted; send one operation per request",
        "BATCHING_NOT_SUPPORTED",
    )
    assert sql.take() == auth_sql
    assert counts(admin, "deals") == {"deals": 0}


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        pytest.param(b'{"query": "{ me', "application/json", "Unable to parse request body as JSON", id="bad-json"),
        pytest.param(b'{"query": null}', "application/json", "No GraphQL query found in the request", id="no-query"),
        pytest.param(b"{ me { user { email } } }", "text/plain", "Unsupported content type", id="not-json"),
    ],
)
async def test_a_request_that_is_not_a_graphql_request_gets_a_400_with_a_graphql_error_body(
    api, sql, auth_sql, headers, content, content_type, message
):
    response = await api.client.post("/graphql", content=content, headers={**headers, "Content-Type": content_type})
    assert response.status_code == 400
    assert response.json() == refused(message, "BAD_REQUEST")
    assert sql.take() == auth_sql


# 2. Errors ----------------------------------------------------------------------------------------------------

SECRET = "secret internals: password=hunter2"


async def test_an_unexpected_error_in_a_resolver_is_masked_and_its_reference_logged_with_the_traceback(
    api, monkeypatch, caplog
):
    failure = RuntimeError(SECRET)

    async def broken(*_: Any, **__: Any) -> Any:
        raise failure

    monkeypatch.setattr("services.deals.service.list", broken)
    with caplog.at_level(logging.ERROR, logger="pipecd.graphql"):
        response = await api.post("{ deals { totalCount } }")

    assert response.status_code == 200
    body = response.json()
    reference = body["errors"][0]["extensions"]["reference"]
    assert re.fullmatch("[0-9a-f]{12}", reference)
    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Unexpected error",
                "locations": [{"line": 1, "column": 3}],
                "path": ["deals"],
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "reference": reference},
            }
        ],
    }
    assert "secret" not in response.text
    [record] = caplog.records  # ours alone: Strawberry's own error logging is off
    assert (record.name, record.levelno) == ("pipecd.graphql", logging.ERROR)
    assert record.getMessage() == f"unexpected error {reference} at ['deals']"
    assert record.exc_info is not None and record.exc_info[1] is failure
    assert SECRET in caplog.text  # the traceback, in the log only


async def test_an_unexpected_error_outside_the_resolvers_is_masked_too(serve, headers, monkeypatch, caplog):
    failure = RuntimeError(SECRET)

    def broken_rule(_: int) -> type[ValidationRule]:
        class Broken(ValidationRule):
            def __init__(self, context: Any) -> None:
                raise failure

        return Broken

    monkeypatch.setattr(graphql_api.schema, "cost_limit_rule", broken_rule)
    with caplog.at_level(logging.ERROR, logger="pipecd.graphql"):
        async with serve() as client:
            response = await client.post("/graphql", json={"query": ME}, headers=headers)

    assert response.status_code == 200
    body = response.json()
    reference = body["errors"][0]["extensions"]["reference"]
    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Unexpected error",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "reference": reference},
            }
        ],
    }
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if r.name == "pipecd.graphql"]
    assert record.getMessage() == f"unexpected error {reference} at None"
    assert record.exc_info is not None and record.exc_info[1] is failure


async def test_a_domain_error_passes_through_with_its_message_and_code_and_is_not_logged(api, caplog):
    missing = uuid.uuid4()
    with caplog.at_level(logging.INFO):
        body = await api.query("query ($id: UUID!) { deal(id: $id) { id } }", {"id": str(missing)})
    assert body == {
        "data": {"deal": None},
        "errors": [
            {
                "message": f"deal {missing} not found",
                "locations": [{"line": 1, "column": 22}],
                "path": ["deal"],
                "extensions": {"code": "NOT_FOUND"},
            }
        ],
    }
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    ("document", "variables", "message"),
    [
        pytest.param(
            "query ($id: UUID!) { deal(id: $id) { id } }",
            {"id": "nope"},
            "Variable '$id' has invalid value: Value cannot represent a UUID: \"nope\". badly formed hexadecimal "
            "UUID string",
            id="malformed-uuid",
        ),
        pytest.param(
            "query ($first: Int!) { deals(first: $first) { totalCount } }",
            {},
            "Variable '$first' has invalid value: Expected a value of non-null type 'Int!' to be provided.",
            id="missing-required",
        ),
        pytest.param(
            'query ($types: [SearchType!]) { search(query: "zz", types: $types) { id } }',
            {"types": ["DEA"]},
            "Variable '$types' has invalid value at [0]: Value 'DEA' does not exist in 'SearchType' enum. "
            "Did you mean the enum value 'DEAL' or 'LEAD'?",
            id="unknown-enum-value",
        ),
    ],
)
async def test_a_variable_value_that_does_not_fit_its_type_is_bad_user_input_not_masked(
    api, sql, auth_sql, caplog, document, variables, message
):
    with caplog.at_level(logging.INFO):
        body = await api.query(document, variables)
    assert body == {
        "data": None,
        "errors": [
            {"message": message, "locations": [{"line": 1, "column": 8}], "extensions": {"code": "BAD_USER_INPUT"}}
        ],
    }
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sql.take() == auth_sql


@pytest.mark.parametrize(
    ("document", "error"),
    [
        pytest.param(
            "{ me { ",
            {
                "message": "Syntax Error: Expected Name, found <EOF>.",
                "locations": [{"line": 1, "column": 8}],
                "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
            },
            id="syntax-error",
        ),
        pytest.param(
            "{ nope }",
            {
                "message": "Cannot query field 'nope' on type 'Query'. Did you mean 'notes'?",
                "locations": [{"line": 1, "column": 3}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            },
            id="unknown-field",
        ),
        pytest.param(
            "{ ...Nope }",
            {
                "message": "Unknown fragment 'Nope'.",
                "locations": [{"line": 1, "column": 6}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            },
            id="unknown-fragment",
        ),
    ],
)
async def test_a_malformed_or_invalid_document_gets_its_error_and_code(api, sql, auth_sql, document, error):
    assert await api.query(document) == {"data": None, "errors": [error]}
    assert sql.take() == auth_sql


# 3. Authentication --------------------------------------------------------------------------------------------


def _tampered(company) -> str:
    """Bob's signed token with its payload swapped for one naming alice."""
    header, _, signature = signed(company).split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims(company, "alice")).encode()).rstrip(b"=").decode()
    return f"Bearer {header}.{payload}.{signature}"


BAD_CREDENTIALS = [
    pytest.param(lambda c: None, "missing bearer token", id="missing"),
    pytest.param(lambda c: "Basic Ym9iOnNlY3JldA==", "the Authorization header must be 'Bearer <token>'", id="basic"),
    pytest.param(lambda c: "Bearer ", "the Authorization header must be 'Bearer <token>'", id="empty-bearer"),
    pytest.param(lambda c: "Bearer not-a-jwt", "malformed token", id="not-a-jwt"),
    pytest.param(_tampered, "token signature is invalid", id="tampered"),
    pytest.param(
        lambda c: "Bearer " + signed(c, secret="another-projects-secret-0123456789abcdef"),
        "token signature is invalid",
        id="other-secret",
    ),
    pytest.param(lambda c: "Bearer " + signed(c, exp=int(time.time()) - 60), "token expired", id="expired"),
    pytest.param(lambda c: "Bearer " + signed(c, exp=None), "token lacks the 'exp' claim", id="no-expiry"),
    pytest.param(
        lambda c: "Bearer " + signed(c, aud="anon"), "token audience is not 'authenticated'", id="wrong-audience"
    ),
    pytest.param(
        lambda c: "Bearer " + jwt.encode(claims(c), None, algorithm="none"),
        "token algorithm 'none' is not accepted",
        id="alg-none",
    ),
    pytest.param(
        lambda c: "Bearer " + signed(c, role="service_role"), "only user sessions may call the CRM", id="service-role"
    ),
    pytest.param(
        lambda c: "Bearer " + signed(c, scope="deals:everything"),
        "token has unknown scope 'deals:everything'",
        id="unknown-scope",
    ),
    pytest.param(lambda c: "Bearer " + signed(c, sub="bob"), "token subject is not a user id", id="subject-not-uuid"),
]


@pytest.mark.parametrize(("authorization", "message"), BAD_CREDENTIALS)
async def test_bad_credentials_get_a_401_before_any_sql(api, sql, company, admin, authorization, message):
    value = authorization(company)
    response = await api.client.post(
        "/graphql",
        json={"query": 'mutation { createDeal(input: {title: "Sneaky"}) { id } }'},
        headers={} if value is None else {"Authorization": value},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
    assert response.json() == refused(message, "UNAUTHENTICATED")
    assert sql.take() == []
    assert counts(admin, "deals") == {"deals": 0}


async def test_a_token_for_an_account_without_a_crm_profile_gets_a_401_after_only_the_profile_lookup(
    api, sql, auth_sql
):
    token = jwt.encode(
        {"sub": str(uuid.uuid4()), "aud": "authenticated", "role": "authenticated", "exp": int(time.time()) + 600},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    response = await api.client.post("/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
    assert response.json() == refused("unknown user: no CRM profile for this account", "UNAUTHENTICATED")
    assert sql.take() == [*auth_sql[:-1], "ROLLBACK"]  # the transaction it opened, and nothing in it


async def test_a_user_with_a_profile_but_no_role_is_authenticated_with_no_rights(api, admin_url):
    nora = create_local_user(admin_url, "nora@example.com", "Nora")
    token = jwt.encode(
        {"sub": str(nora.id), "aud": "authenticated", "role": "authenticated", "exp": int(time.time()) + 600},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    me = await api.query("{ me { user { email } permissions } }", token=token)
    deals = await api.query("{ deals { totalCount } }", token=token)
    assert me == {"data": {"me": {"user": {"email": "nora@example.com"}, "permissions": []}}}
    assert deals == {
        "data": None,
        "errors": [
            {
                "message": "missing permission DEALS_READ",
                "locations": [{"line": 1, "column": 3}],
                "path": ["deals"],
                "extensions": {"code": "FORBIDDEN", "permission": "DEALS_READ"},
            }
        ],
    }


# 4. Development and production --------------------------------------------------------------------------------


async def test_graphiql_is_served_without_a_token_outside_production(api):
    response = await api.client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Strawberry GraphiQL</title>" in response.text


async def test_introspection_works_with_a_token_outside_production(api):
    assert await api.query("{ __schema { queryType { name } } }") == {
        "data": {"__schema": {"queryType": {"name": "Query"}}}
    }


@pytest.mark.parametrize("with_token", [False, True], ids=["anonymous", "with-token"])
async def test_graphiql_is_not_served_in_production(serve, headers, with_token):
    async with serve(PIPECD_ENV="production") as client:
        response = await client.get("/graphql", headers={"Accept": "text/html", **(headers if with_token else {})})
    assert response.status_code == 404
    assert response.json() == refused("Not Found", "NOT_FOUND")


async def test_introspection_is_refused_in_production_while_queries_run(serve, headers):
    async with serve(PIPECD_ENV="production") as client:
        introspection = await client.post(
            "/graphql", json={"query": "{ __schema { types { name } } }"}, headers=headers
        )
        query = await client.post("/graphql", json={"query": ME}, headers=headers)
    assert introspection.status_code == 200
    assert introspection.json() == {
        "data": None,
        "errors": [
            {
                "message": "GraphQL introspection has been disabled, but the requested query contained the field "
                "'__schema'.",
                "locations": [{"line": 1, "column": 3}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            },
            {
                "message": "GraphQL introspection has been disabled, but the requested query contained the field "
                "'types'.",
                "locations": [{"line": 1, "column": 14}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            },
        ],
    }
    assert (query.status_code, query.json()) == (200, {"data": BOBS_ME})


@pytest.mark.parametrize(
    ("document", "variables", "error"),
    [
        pytest.param(
            "{ nope }",
            None,
            {
                "message": "Cannot query field 'nope' on type 'Query'.",
                "locations": [{"line": 1, "column": 3}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            },
            id="unknown-field",
        ),
        pytest.param(
            "{ deals(frist: 1) { totalCount } }",
            None,
            {
                "message": "Unknown argument 'frist' on field 'Query.deals'.",
                "locations": [{"line": 1, "column": 9}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            },
            id="unknown-argument",
        ),
        pytest.param(
            'query ($types: [SearchType!]) { search(query: "zz", types: $types) { id } }',
            {"types": ["DEA"]},
            {
                "message": "Variable '$types' has invalid value at [0]: Value 'DEA' does not exist in 'SearchType' "
                "enum.",
                "locations": [{"line": 1, "column": 8}],
                "extensions": {"code": "BAD_USER_INPUT"},
            },
            id="unknown-enum-value",
        ),
    ],
)
async def test_errors_suggest_no_schema_names_in_production(serve, headers, document, variables, error):
    async with serve(PIPECD_ENV="production") as client:
        response = await client.post("/graphql", json={"query": document, "variables": variables}, headers=headers)
    assert (response.status_code, response.json()) == (200, {"data": None, "errors": [error]})


@pytest.mark.parametrize(
    ("document", "kind"),
    [(ME, "queries"), ('mutation { createDeal(input: {title: "Via GET"}) { id } }', "mutations")],
    ids=["query", "mutation"],
)
async def test_operations_sent_with_get_are_refused_with_405(api, sql, auth_sql, headers, admin, document, kind):
    response = await api.client.get("/graphql", params={"query": document}, headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == refused(
        f"{kind} are not allowed when using GET; send operations with POST", "METHOD_NOT_ALLOWED"
    )
    assert sql.take() == auth_sql
    assert counts(admin, "deals") == {"deals": 0}


async def test_the_requests_transaction_ends_before_its_answer_is_sent(settings, monkeypatch, headers):
    """A client slow to read its answer holds no pool connection."""
    app = create_app(settings)

    async def marking(scope: Any, receive: Any, send: Any) -> None:
        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                sql.statements.append("(answer starts)")
            await send(message)

        await app(scope, receive, sending)

    async with lifespan(app):
        sql = SqlLog(monkeypatch)
        transport = httpx.ASGITransport(app=marking)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post("/graphql", json={"query": ME}, headers=headers)
    assert response.json() == {"data": BOBS_ME}
    statements = sql.take()
    assert statements[-2:] == ["COMMIT", "(answer starts)"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
async def test_other_methods_are_refused_with_405_before_authentication(api, sql, method):
    response = await api.client.request(method, "/graphql")  # no token: not asked for
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"  # GET serves GraphiQL outside production
    if method != "HEAD":
        assert response.json() == refused(
            f"{method} is not accepted here; send operations with POST", "METHOD_NOT_ALLOWED"
        )
    assert sql.take() == []


async def test_only_post_is_allowed_in_production(serve, headers):
    async with serve(PIPECD_ENV="production") as client:
        response = await client.put("/graphql", json={"query": ME}, headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_there_is_no_websocket_endpoint(settings, company):
    app = create_app(settings)
    with TestClient(app) as client, pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]):
            pass
    assert closed.value.code == 1000


# 5. Health ----------------------------------------------------------------------------------------------------


async def test_healthz_answers_ok(api):
    response = await api.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_answers_ready_on_a_migrated_database(api):
    response = await api.client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_readyz_answers_503_with_the_pending_migration_when_one_is_missing(api, admin):
    versions = [m.version for m in discover()]
    missing = versions[len(versions) // 2]
    admin.execute("delete from supabase_migrations.schema_migrations where version = %s", [missing])
    response = await api.client.get("/readyz")
    assert (response.status_code, response.json()) == (503, {"status": "migrations pending", "pending": [missing]})


async def test_readyz_answers_503_unavailable_when_the_migration_history_cannot_be_read(api, admin):
    admin.execute("revoke select on supabase_migrations.schema_migrations from authenticator")
    response = await api.client.get("/readyz")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "unavailable", "reason": "InsufficientPrivilege"},
    )

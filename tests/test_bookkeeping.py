"""The audit log and the outbox are written only through narrow database functions: raw SQL as `authenticated`
(or `service_role`), with no service layer in front.

The database fixes the actor (auth.uid()), the time (now()) and the channel (the transaction's `pipecd.channel`,
set by the unit of work), bounds every argument, and accepts only the events and audit operations the caller's
permissions produce. Every refusal is checked against the superuser connection: nothing was written.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from conftest import counts
from psycopg.errors import InsufficientPrivilege, InvalidParameterValue, UndefinedFunction
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
BOOKKEEPING = ("audit_log", "outbox")
NOTHING = {"audit_log": 0, "outbox": 0}


@contextmanager
def session(
    app_url: str, user_id: UUID | None, *, scope: str | None = None, channel: str | None = "graphql"
) -> Iterator[psycopg.Connection]:
    """One committed transaction as `user_id` (None: the system, `service_role`), set up the way the unit of
    work does, with the channel setting (None: left unset)."""
    if user_id is None:
        claims: dict[str, Any] = {"role": "service_role"}
        role = "service_role"
    else:
        claims = {"sub": str(user_id), "role": "authenticated"}
        role = "authenticated"
    if scope is not None:
        claims["scope"] = scope
    with psycopg.connect(app_url) as conn, conn.transaction():
        conn.execute(
            "select set_config('request.jwt.claims', %s, true), set_config('role', %s, true)",
            [json.dumps(claims), role],
        )
        if channel is not None:
            conn.execute("select set_config('pipecd.channel', %s, true)", [channel])
        yield conn


def caller(company, key: str) -> dict[str, Any]:
    """Session arguments for a caller; "agent" is bob with a crm.read token, "system" is service_role."""
    if key == "system":
        return {"user_id": None}
    if key == "agent":
        return {"user_id": company.people["bob"].id, "scope": "crm.read"}
    return {"user_id": company.people[key].id}


def emit(conn: psycopg.Connection, *events: tuple[str, dict[str, Any]]) -> int:
    batch = [{"name": name, "data": data} for name, data in events]
    return conn.execute("select private.emit_events(%s)", [Jsonb(batch)]).fetchone()[0]  # type: ignore[index]


def append_audit(conn: psycopg.Connection, operation: str, entity_type: str, entity_id: UUID | None,
                 diff: dict[str, Any]) -> None:
    conn.execute("select private.append_audit(%s, %s, %s, %s)", [operation, entity_type, entity_id, Jsonb(diff)])


DEAL = UUID(int=7)


# The outbox ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("principal", ["vic", "agent", "bob", "alice"])
def test_outbox_cannot_be_inserted_into_directly(app_url, company, admin, principal):
    with pytest.raises(InsufficientPrivilege, match="permission denied for table outbox"):
        with session(app_url, **caller(company, principal)) as conn:
            conn.execute(
                "insert into public.outbox (name, data, actor_id, channel)"
                " values ('crm/user.role_granted', '{}', auth.uid(), 'graphql')"
            )

    assert counts(admin, *BOOKKEEPING) == NOTHING


@pytest.mark.parametrize(
    ("principal", "name", "data", "permission"),
    [
        ("vic", "crm/deal.created", {"deal_id": str(DEAL)}, "deals:write"),
        ("agent", "crm/deal.created", {"deal_id": str(DEAL)}, "deals:write"),
        ("agent", "crm/user.profile_updated", {"user_id": "self", "fields": ["display_name"]}, "profile:write"),
        ("bob", "crm/user.role_granted", {"user_id": str(DEAL), "role": "admin"}, "users:manage"),
        ("bob", "crm/team.member_added", {"team_id": str(DEAL), "user_id": str(DEAL)}, "users:manage"),
        ("bob", "crm/person.deleted", {"person_id": str(DEAL)}, "contacts:delete"),
        ("bob", "crm/pipeline.created", {"pipeline_id": str(DEAL)}, "pipelines:manage"),
        ("mia", "crm/user.role_revoked", {"user_id": str(DEAL), "role": "admin"}, "users:manage"),
        ("vic", "crm/user.profile_updated", {"user_id": "carol", "fields": ["display_name"]}, "users:manage"),
    ],
)
def test_an_event_the_writers_permissions_cannot_produce_is_refused(
    app_url, company, admin, principal, name, data, permission
):
    if data.get("user_id") in company.people:
        data = {**data, "user_id": str(company.people[data["user_id"]].id)}
    elif data.get("user_id") == "self":
        data = {**data, "user_id": str(caller(company, principal)["user_id"])}

    with pytest.raises(InsufficientPrivilege, match=f"missing permission {permission} for event {name}"):
        with session(app_url, **caller(company, principal)) as conn:
            emit(conn, (name, data))

    assert counts(admin, *BOOKKEEPING) == NOTHING


def test_a_batch_with_one_refused_event_writes_none(app_url, company, admin):
    refused = r"missing permission users:manage for event crm/user\.role_granted"
    with pytest.raises(InsufficientPrivilege, match=refused):
        with session(app_url, **caller(company, "bob")) as conn:
            emit(
                conn,
                ("crm/lead.updated", {"lead_id": str(DEAL), "fields": ["title"]}),
                ("crm/user.role_granted", {"user_id": str(company.people["bob"].id), "role": "admin"}),
            )

    assert counts(admin, *BOOKKEEPING) == NOTHING


@pytest.mark.parametrize(
    ("principal", "name", "data"),
    [
        ("bob", "crm/deal.created", {"deal_id": str(DEAL), "value": "1200.00", "currency": "EUR"}),
        ("vic", "crm/user.profile_updated", {"user_id": "vic", "fields": ["avatar_url", "display_name"]}),
        ("alice", "crm/user.role_granted", {"user_id": "bob", "role": "manager"}),
        ("alice", "crm/user.profile_updated", {"user_id": "bob", "fields": ["display_name"]}),
    ],
)
def test_an_event_the_writers_permissions_produce_is_written_as_the_writer(
    app_url, company, admin, principal, name, data
):
    if data.get("user_id") in company.people:
        data = {**data, "user_id": str(company.people[data["user_id"]].id)}

    with session(app_url, **caller(company, principal), channel="mcp") as conn:
        assert emit(conn, (name, data)) == 1
        now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]

    assert admin.execute("select name, data, actor_id, channel, occurred_at, dispatched_at from public.outbox"
                         ).fetchall() == [(name, data, company.people[principal].id, "mcp", now, None)]


def test_several_events_are_written_in_one_call_in_order(app_url, company, admin):
    with session(app_url, **caller(company, "bob")) as conn:
        written = emit(
            conn,
            ("crm/deal.created", {"deal_id": str(DEAL)}),
            ("crm/deal.won", {"deal_id": str(DEAL), "currency": "EUR"}),
            ("crm/note.deleted", {"note_id": str(DEAL)}),
        )

    assert written == 3
    assert [r[0] for r in admin.execute("select name from public.outbox order by occurred_at, ctid")] == [
        "crm/deal.created", "crm/deal.won", "crm/note.deleted",
    ]


def test_the_caller_cannot_choose_actor_time_or_channel(app_url, company, admin):
    carol = company.people["carol"].id
    with session(app_url, **caller(company, "bob")) as conn:
        with pytest.raises(UndefinedFunction):
            with conn.transaction():
                conn.execute(
                    "select private.emit_events(%s, %s, %s, %s)",
                    [Jsonb([{"name": "crm/deal.created", "data": {}}]), carol, "cli", "2000-01-01T00:00:00Z"],
                )
        with pytest.raises(UndefinedFunction):
            with conn.transaction():
                conn.execute(
                    "select private.append_audit('cli', 'deal.update', 'deal', %s, '{}')", [DEAL]
                )
        # fields the function does not know are not columns: they stay in the data, if they are ids at all
        emit(conn, ("crm/deal.created", {"deal_id": str(DEAL), "actor_id": str(carol), "channel": "cli"}))
        append_audit(conn, "deal.update", "deal", DEAL, {"after": {"title": "y"}})
        now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]

    bob = company.people["bob"].id
    assert admin.execute("select actor_id, channel, occurred_at from public.outbox").fetchall() == [
        (bob, "graphql", now)
    ]
    assert admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id, diff, occurred_at from public.audit_log"
    ).fetchall() == [(bob, "graphql", "deal.update", "deal", DEAL, {"after": {"title": "y"}}, now)]


@pytest.mark.parametrize("principal", ["bob", "system"])
def test_a_transaction_without_a_channel_writes_no_bookkeeping(app_url, company, admin, principal):
    with pytest.raises(InsufficientPrivilege, match=r"bookkeeping needs the channel of the transaction"):
        with session(app_url, **caller(company, principal), channel=None) as conn:
            emit(conn, ("crm/deal.created", {"deal_id": str(DEAL)}))
    with pytest.raises(InsufficientPrivilege, match=r"bookkeeping needs the channel of the transaction"):
        with session(app_url, **caller(company, principal), channel=None) as conn:
            append_audit(conn, "deal.update", "deal", DEAL, {})

    assert counts(admin, *BOOKKEEPING) == NOTHING


def test_an_unknown_channel_is_refused(app_url, company, admin):
    with pytest.raises(InvalidParameterValue, match=r"unknown channel data_api"):
        with session(app_url, **caller(company, "bob"), channel="data_api") as conn:
            emit(conn, ("crm/deal.created", {"deal_id": str(DEAL)}))
    with pytest.raises(InvalidParameterValue, match=r"unknown channel data_api"):
        with session(app_url, **caller(company, "bob"), channel="data_api") as conn:
            append_audit(conn, "deal.update", "deal", DEAL, {})

    assert counts(admin, *BOOKKEEPING) == NOTHING


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ({"name": "crm/deal.created"}, "must be a JSON array"),
        ([{"name": "crm/deal.created", "data": []}], r'each event must be \{"name": text, "data": object\}'),
        ([{"name": "crm/deal." + "x" * 100, "data": {}}], r"event name must look like crm/entity\.verb"),
        ([{"name": "deal.created", "data": {}}], r"event name must look like crm/entity\.verb"),
        ([{"name": "crm/deal.exploded", "data": {}}], r"unknown event crm/deal\.exploded"),
        ([{"name": "crm/deal.created", "data": {"stage_ids": [str(DEAL)] * 300}}],
         r"event data is too large \(\d+ characters, at most 8000\)"),
        ([{"name": "crm/deal.lost", "data": {"reason": "their CFO Jane Roe said no"}}], "no text"),
        ([{"name": "crm/deal.lost", "data": {"deal_id": {"nested": "x"}}}], "no nested objects"),
        ([{"name": "crm/deal.lost", "data": {"deal_id": [{"nested": "x"}]}}], "no nested objects"),
        ([{"name": "crm/deal.lost", "data": {"Reason Given": "x"}}], "no text"),
        ([{"name": "crm/deal.created", "data": {}}] * 1001, "at most 1000 events at once"),
    ],
    ids=["not-array", "data-not-object", "long-name", "bad-name", "unknown", "large", "free-text", "nested",
         "nested-in-array", "bad-key", "too-many"],
)
def test_malformed_or_oversized_events_are_refused_with_a_clear_error(app_url, company, admin, events, message):
    with pytest.raises(InvalidParameterValue, match=message):
        with session(app_url, **caller(company, "alice")) as conn:
            conn.execute("select private.emit_events(%s)", [Jsonb(events)])

    assert counts(admin, *BOOKKEEPING) == NOTHING


def test_the_system_may_emit_every_known_event_with_no_actor(app_url, company, admin):
    with session(app_url, None, channel="workflow") as conn:
        emit(conn, ("crm/user.role_granted", {"user_id": str(DEAL), "role": "admin"}))
        append_audit(conn, "user.grant_role", "user", DEAL, {"after": {"roles": ["admin"]}})
    with pytest.raises(InvalidParameterValue, match=r"unknown event crm/system\.anything"):
        with session(app_url, None, channel="workflow") as conn:
            emit(conn, ("crm/system.anything", {}))

    assert admin.execute("select name, actor_id, channel from public.outbox").fetchall() == [
        ("crm/user.role_granted", None, "workflow")
    ]
    assert admin.execute("select operation, actor_id, channel from public.audit_log").fetchall() == [
        ("user.grant_role", None, "workflow")
    ]


def test_a_service_role_claim_does_not_make_a_signed_in_session_the_system(app_url, admin):
    with pytest.raises(InsufficientPrivilege, match="bookkeeping needs a signed-in actor"):
        with psycopg.connect(app_url) as conn, conn.transaction():
            conn.execute(
                "select set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true),"
                " set_config('role', 'authenticated', true), set_config('pipecd.channel', 'cli', true)"
            )
            emit(conn, ("crm/user.role_granted", {"user_id": str(DEAL), "role": "admin"}))

    assert counts(admin, *BOOKKEEPING) == NOTHING


def test_anonymous_sessions_write_no_bookkeeping(app_url, admin):
    with pytest.raises(InsufficientPrivilege, match="permission denied for schema private"):
        with psycopg.connect(app_url) as conn, conn.transaction():
            conn.execute("select set_config('role', 'anon', true), set_config('pipecd.channel', 'graphql', true)")
            emit(conn, ("crm/deal.created", {"deal_id": str(DEAL)}))

    assert counts(admin, *BOOKKEEPING) == NOTHING


# The audit log ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "operation", "entity_type", "permission"),
    [
        ("vic", "deal.update", "deal", "deals:write"),
        ("agent", "deal.create", "deal", "deals:write"),
        ("bob", "user.grant_role", "user", "users:manage"),
        ("bob", "person.delete", "person", "contacts:delete"),
        ("mia", "team.create", "team", "users:manage"),
        ("vic", "user.update_profile", "user", "users:manage"),
    ],
)
def test_an_audit_operation_the_writers_permissions_cannot_produce_is_refused(
    app_url, company, admin, principal, operation, entity_type, permission
):
    with pytest.raises(InsufficientPrivilege, match=f"missing permission {permission} for audit operation"):
        with session(app_url, **caller(company, principal)) as conn:
            append_audit(conn, operation, entity_type, company.people["carol"].id, {"after": {"x": 1}})

    assert counts(admin, *BOOKKEEPING) == NOTHING


@pytest.mark.parametrize(
    ("operation", "entity_type", "entity_id", "diff", "message"),
    [
        ("deal.explode", "deal", DEAL, {}, r"unknown audit operation deal\.explode"),
        ("deal.update", "note", DEAL, {}, r"audit operation deal\.update is on entity type deal, not note"),
        ("deal." + "x" * 300, "deal", DEAL, {}, r"audit operation must look like entity\.verb"),
        ("deal.update", "deal", DEAL, {"after": {"body": "x" * 2_000_001}},
         r"audit diff is too large \(\d+ characters, at most 2000000\)"),
        ("tool.list_deals", "deal", None, {}, "a tool call is recorded on entity type mcp_tool_call"),
        ("tool.list_deals", "mcp_tool_call", DEAL, {}, "a tool call is recorded on entity type mcp_tool_call"),
        ("tool.list_deals", "mcp_tool_call", None, {"after": {"x": "y" * 1000}},
         "a tool call's audit diff is at most 1000 characters"),
        ("tool." + "x" * 300, "mcp_tool_call", None, {}, r"audit operation must look like entity\.verb"),
        ("tool.bad\nname", "mcp_tool_call", None, {}, r"audit operation must look like entity\.verb"),
    ],
    ids=["unknown", "wrong-entity", "long-operation", "large-diff", "tool-entity", "tool-id", "tool-diff",
         "tool-long", "tool-control"],
)
def test_malformed_or_oversized_audit_rows_are_refused_with_a_clear_error(
    app_url, company, admin, operation, entity_type, entity_id, diff, message
):
    with pytest.raises(InvalidParameterValue, match=message):
        with session(app_url, **caller(company, "alice")) as conn:
            append_audit(conn, operation, entity_type, entity_id, diff)

    assert counts(admin, *BOOKKEEPING) == NOTHING


def test_a_note_body_of_the_largest_size_fits_an_update_diff(app_url, company, admin):
    body = "\u00e9\"" * 50_000  # 100,000 characters, half of them escaped in JSON
    with session(app_url, **caller(company, "bob")) as conn:
        append_audit(conn, "note.update", "note", DEAL, {"before": {"body": body}, "after": {"body": body[::-1]}})

    assert counts(admin, *BOOKKEEPING) == {"audit_log": 1, "outbox": 0}


@pytest.mark.parametrize("principal", ["vic", "agent"])
def test_every_signed_in_caller_records_their_own_tool_calls(app_url, company, admin, principal):
    diff = {"after": {"arguments_sha256": "0" * 64, "outcome": "forbidden"}}
    with session(app_url, **caller(company, principal), channel="mcp") as conn:
        append_audit(conn, "tool.create_deal", "mcp_tool_call", None, diff)

    assert admin.execute("select actor_id, channel, operation, entity_type, entity_id, diff from public.audit_log"
                         ).fetchall() == [(company.people["bob" if principal == "agent" else principal].id, "mcp",
                                           "tool.create_deal", "mcp_tool_call", None, diff)]


def test_bookkeeping_internals_are_not_callable(app_url, company, admin):
    with pytest.raises(InsufficientPrivilege, match="permission denied for function insert_audit"):
        with session(app_url, **caller(company, "alice")) as conn:
            conn.execute("select private.insert_audit('deal.update', 'deal', null, '{}')")
    with pytest.raises(InsufficientPrivilege, match="permission denied for table event_permissions"):
        with session(app_url, **caller(company, "alice")) as conn:
            conn.execute("insert into private.event_permissions values ('crm/deal.forged', 'profile:write')")

    assert counts(admin, *BOOKKEEPING) == NOTHING


# Every event and operation the services write is mapped to a permission --------------------------------------


def _names(node: ast.expr) -> list[str]:
    """The string(s) an argument can be: a literal, either branch of `a if c else b`, or an f-string as a regex."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [re.escape(node.value)]
    if isinstance(node, ast.IfExp):
        return _names(node.body) + _names(node.orelse)
    if isinstance(node, ast.JoinedStr):
        return ["".join(re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z_]+" for v in node.values)]
    return []


def written_names() -> tuple[set[str], set[str]]:
    """Event names (first argument of `uow.emit`) and audit operations (first argument of `uow.audit`, or the
    `operation` argument of a service's `_apply`) in services/, as regexes."""
    events: set[str] = set()
    operations: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called == "emit":
                events.update(_names(node.args[0]))
            elif called == "audit":
                operations.update(n for n in _names(node.args[0]) if not n.startswith("tool"))
            elif called == "_apply" and len(node.args) >= 4:
                operations.update(_names(node.args[3]))
    return events, operations


def test_every_event_and_audit_operation_the_services_write_has_a_permission(admin):
    events, operations = written_names()
    mapped_events = {r[0] for r in admin.execute("select name from private.event_permissions")}
    mapped_operations = {r[0] for r in admin.execute("select operation from private.audit_operation_permissions")}

    assert len(events) > 30 and len(operations) > 30
    assert [e for e in sorted(events) if not any(re.fullmatch(e, m) for m in mapped_events)] == []
    assert [o for o in sorted(operations) if not any(re.fullmatch(o, m) for m in mapped_operations)] == []

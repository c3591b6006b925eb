"""The RLS policies deny on their own: raw SQL as the app login, with no service layer in front.

Each session is what the unit of work sets up: the pool login `authenticator`, in a transaction that sets
`request.jwt.claims` and switches to the role `authenticated`. The record cells are the ones the service test
checks (tests/matrix.py); here a refused update or delete simply touches no row, and the superuser connection
confirms that nothing changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
import pytest
from conftest import rls_session
from matrix import (
    LOGINS,
    NOT_FOUND,
    OK,
    TABLES,
    TEXT_COLUMNS,
    attached_rows,
    rows,
    seed_attached_each_visibility,
    seed_each_visibility,
    seed_record,
    snapshot,
)
from psycopg.errors import InsufficientPrivilege

from services.contacts.schemas import organization_name_key
from services.kernel.permissions import ROLE_PERMISSIONS, SCOPE_PERMISSIONS


@contextmanager
def session_of(app_url: str, company, principal: str) -> Iterator[psycopg.Connection]:
    """A session as one of the matrix's callers ("agent" is bob with the scope crm.read)."""
    key, scopes = LOGINS[principal]
    scope = " ".join(sorted(s.value for s in scopes)) if scopes else None
    with rls_session(app_url, company.people[key].id, scope=scope) as conn:
        yield conn


def visible_ids(conn: psycopg.Connection, table: str, record_id: UUID | None = None) -> list[UUID]:
    if record_id is None:
        return [r[0] for r in conn.execute(f"select id from public.{table}").fetchall()]
    return [r[0] for r in conn.execute(f"select id from public.{table} where id = %s", [record_id]).fetchall()]


# The matrix, by RLS alone --------------------------------------------------------------------------------
# Each test seeds three of bob's records (visibility owner, team, company) and compares what one caller's
# statements reach with that caller's row of the table: a refused update or delete touches no row.


REFUSED = "refused"  # RLS cannot tell not_found from forbidden: the statement touches no row either way


def seen_outcomes(seen: list[UUID], ids: list[UUID]) -> tuple[str, ...]:
    return tuple(OK if i in seen else NOT_FOUND for i in ids)


def touched_outcomes(rowcounts: list[int]) -> tuple[str, ...]:
    return tuple({1: OK, 0: REFUSED}[n] for n in rowcounts)


def refused_as_rls_sees_it(expected: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(OK if outcome == OK else REFUSED for outcome in expected)


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("get"))
def test_select_by_id_follows_the_matrix(app_url, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)

    with session_of(app_url, company, principal) as conn:
        seen = [seen_id for i in ids for seen_id in visible_ids(conn, TABLES[entity], i)]

    assert seen_outcomes(seen, ids) == expected


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("list"))
def test_select_all_follows_the_matrix(app_url, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)

    with session_of(app_url, company, principal) as conn:
        seen = visible_ids(conn, TABLES[entity])

    assert seen_outcomes(seen, ids) == expected
    assert len(seen) == expected.count(OK)


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("update"))
def test_update_follows_the_matrix(app_url, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)
    before = [snapshot(admin, entity, i) for i in ids]
    table, column = TABLES[entity], TEXT_COLUMNS[entity]

    with session_of(app_url, company, principal) as conn:
        updated = [conn.execute(f"update public.{table} set {column} = 'x' where id = %s", [i]).rowcount for i in ids]

    assert touched_outcomes(updated) == refused_as_rls_sees_it(expected)
    for record_id, old, outcome in zip(ids, before, expected, strict=True):
        if outcome == OK:
            assert admin.execute(f"select {column} from public.{table} where id = %s", [record_id]).fetchone() == ("x",)
        else:
            assert old is not None
            assert snapshot(admin, entity, record_id) == old


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("delete"))
def test_delete_follows_the_matrix(app_url, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)
    before = [snapshot(admin, entity, i) for i in ids]

    with session_of(app_url, company, principal) as conn:
        deleted = [conn.execute(f"delete from public.{TABLES[entity]} where id = %s", [i]).rowcount for i in ids]

    assert touched_outcomes(deleted) == refused_as_rls_sees_it(expected)
    for record_id, old, outcome in zip(ids, before, expected, strict=True):
        assert old is not None
        assert snapshot(admin, entity, record_id) == (None if outcome == OK else old)


@pytest.mark.parametrize(("kind", "principal", "expected"), attached_rows("get"))
def test_select_of_notes_or_activities_on_a_deal_follows_the_deal(app_url, company, admin, kind, principal, expected):
    ids = seed_attached_each_visibility(admin, company, kind)

    with session_of(app_url, company, principal) as conn:
        seen = visible_ids(conn, TABLES[kind])

    assert seen_outcomes(seen, ids) == expected
    assert len(seen) == expected.count(OK)


@pytest.mark.parametrize(("kind", "principal", "expected"), attached_rows("update"))
def test_update_of_note_or_activity_on_a_deal_follows_the_deal(app_url, company, admin, kind, principal, expected):
    ids = seed_attached_each_visibility(admin, company, kind)
    before = [snapshot(admin, kind, i) for i in ids]
    table, column = TABLES[kind], TEXT_COLUMNS[kind]

    with session_of(app_url, company, principal) as conn:
        updated = [conn.execute(f"update public.{table} set {column} = 'x' where id = %s", [i]).rowcount for i in ids]

    assert touched_outcomes(updated) == refused_as_rls_sees_it(expected)
    for record_id, old, outcome in zip(ids, before, expected, strict=True):
        if outcome == OK:
            assert admin.execute(f"select {column} from public.{table} where id = %s", [record_id]).fetchone() == ("x",)
        else:
            assert old is not None
            assert snapshot(admin, kind, record_id) == old


# Inserting a record for someone else -------------------------------------------------------------------

INSERTS = {
    "deal": "insert into public.deals (title, owner_id, pipeline_id) values ('Planted', %(owner)s, %(pipeline)s)",
    "person": "insert into public.persons (first_name, owner_id) values ('Planted', %(owner)s)",
    "organization": (
        "insert into public.organizations (name, name_key, owner_id) values ('Planted', %(key)s, %(owner)s)"
    ),
    "lead": "insert into public.leads (title, owner_id) values ('Planted', %(owner)s)",
}


def insert_owned_by_bob(conn: psycopg.Connection, company, entity: str) -> None:
    params = {"owner": company.people["bob"].id, "pipeline": company.sales_pipeline_id,
              "key": organization_name_key("Planted")}
    conn.execute(INSERTS[entity], params)


@pytest.mark.parametrize("entity", list(INSERTS))
@pytest.mark.parametrize("principal", ["dan", "carol", "vic", "agent"])
def test_insert_with_bobs_owner_id_is_refused(app_url, company, admin, entity, principal):
    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with session_of(app_url, company, principal) as conn:
            insert_owned_by_bob(conn, company, entity)

    assert admin.execute(f"select count(*) from public.{TABLES[entity]}").fetchone() == (0,)


@pytest.mark.parametrize("entity", list(INSERTS))
@pytest.mark.parametrize("principal", ["alice", "mia", "bob"])
def test_insert_with_bobs_owner_id_is_allowed_to_bob_his_manager_and_admin(app_url, company, admin, entity, principal):
    with session_of(app_url, company, principal) as conn:
        insert_owned_by_bob(conn, company, entity)

    owners = admin.execute(f"select owner_id from public.{TABLES[entity]}").fetchall()
    assert owners == [(company.people["bob"].id,)]


# The login itself, and the bookkeeping tables ------------------------------------------------------------


@pytest.mark.parametrize("table", ["deals", "persons", "organizations", "leads", "notes", "activities", "audit_log"])
@pytest.mark.parametrize("with_claims", [False, True], ids=["no-claims", "claims-without-role"])
def test_login_that_forgets_the_role_switch_is_denied(app_url, company, admin, table, with_claims):
    seed_record(admin, company, "deal", "company")
    claims = json.dumps({"sub": str(company.people["alice"].id), "role": "authenticated"})

    with pytest.raises(InsufficientPrivilege, match=f"permission denied for table {table}"):
        with psycopg.connect(app_url) as conn, conn.transaction():
            if with_claims:
                conn.execute("select set_config('request.jwt.claims', %s, true)", [claims])
            conn.execute(f"select * from public.{table}")


def test_login_is_not_privileged_and_only_reaches_rows_after_role_switch(app_url, company, admin):
    deal_id = seed_record(admin, company, "deal", "company")

    with psycopg.connect(app_url) as conn:
        assert conn.execute(
            "select current_user, rolsuper, rolbypassrls, rolinherit from pg_roles where rolname = current_user"
        ).fetchone() == ("authenticator", False, False, False)
    with rls_session(app_url, company.people["alice"].id) as conn:
        assert visible_ids(conn, "deals") == [deal_id]


def seed_audit_row(admin, company) -> tuple[Any, ...]:
    admin.execute(
        "insert into public.audit_log (actor_id, channel, operation, entity_type, entity_id)"
        " values (%s, 'graphql', 'deal.update', 'deal', gen_random_uuid())",
        [company.people["bob"].id],
    )
    return admin.execute("select * from public.audit_log").fetchone()


@pytest.mark.parametrize("principal", ["alice", "bob"])
@pytest.mark.parametrize(
    "statement",
    [
        "update public.audit_log set operation = 'deal.delete'",
        "delete from public.audit_log",
        "insert into public.audit_log (actor_id, channel, operation, entity_type) values (%s, 'cli', 'x', 'deal')",
    ],
    ids=["update", "delete", "insert"],
)
def test_audit_log_cannot_be_written_directly(app_url, company, admin, principal, statement):
    row = seed_audit_row(admin, company)

    with pytest.raises(InsufficientPrivilege, match="permission denied for table audit_log"):
        with session_of(app_url, company, principal) as conn:
            conn.execute(statement, [company.people[principal].id] if "%s" in statement else None)

    assert admin.execute("select * from public.audit_log").fetchall() == [row]


def test_audit_rows_come_only_through_append_audit_with_the_caller_as_actor(app_url, company, admin):
    bob = company.people["bob"].id
    entity_id = UUID(int=7)

    with rls_session(app_url, bob) as conn:
        conn.execute("select set_config('pipecd.channel', 'mcp', true)")
        conn.execute(
            "select private.append_audit('deal.update', 'deal', %s, '{\"after\": {\"title\": \"y\"}}')",
            [entity_id],
        )

    rows = admin.execute("select actor_id, channel, operation, entity_type, entity_id, diff from public.audit_log")
    assert rows.fetchall() == [(bob, "mcp", "deal.update", "deal", entity_id, {"after": {"title": "y"}})]


@pytest.mark.parametrize("principal", ["alice", "bob"])
def test_outbox_cannot_be_read(app_url, company, admin, principal):
    admin.execute("insert into public.outbox (name, data, channel) values ('crm/deal.created', '{}', 'graphql')")

    with pytest.raises(InsufficientPrivilege, match="permission denied for table outbox"):
        with session_of(app_url, company, principal) as conn:
            conn.execute("select * from public.outbox")


@pytest.mark.parametrize("principal", ["alice", "bob"])
@pytest.mark.parametrize(
    "statement",
    ["update public.deal_stage_history set to_stage_id = null", "delete from public.deal_stage_history"],
    ids=["update", "delete"],
)
def test_deal_stage_history_cannot_be_edited(app_url, company, admin, principal, statement):
    deal_id = seed_record(admin, company, "deal", "company")
    admin.execute(
        "insert into public.deal_stage_history (deal_id, to_stage_id, changed_by) values (%s, %s, %s)",
        [deal_id, company.sales_stage_ids[0], company.people["bob"].id],
    )
    before = admin.execute("select * from public.deal_stage_history").fetchall()

    with pytest.raises(InsufficientPrivilege, match="permission denied for table deal_stage_history"):
        with session_of(app_url, company, principal) as conn:
            conn.execute(statement)

    assert admin.execute("select * from public.deal_stage_history").fetchall() == before


def roles_of(admin, user_id: UUID) -> list[str]:
    rows = admin.execute("select role from public.user_roles where user_id = %s order by role", [user_id])
    return [role for (role,) in rows.fetchall()]


@pytest.mark.parametrize(("grantee", "role"), [("bob", "admin"), ("dan", "manager")])
def test_member_cannot_grant_roles(app_url, company, admin, grantee, role):
    grantee_id = company.people[grantee].id

    with pytest.raises(InsufficientPrivilege, match="row-level security"):
        with rls_session(app_url, company.people["bob"].id) as conn:
            conn.execute("insert into public.user_roles (user_id, role) values (%s, %s)", [grantee_id, role])

    assert roles_of(admin, grantee_id) == ["member"]


def test_member_cannot_revoke_roles(app_url, company, admin):
    carol = company.people["carol"].id

    with rls_session(app_url, company.people["bob"].id) as conn:
        revoked = conn.execute("delete from public.user_roles where user_id = %s", [carol]).rowcount

    assert revoked == 0
    assert roles_of(admin, carol) == ["member"]


def test_admin_can_grant_roles(app_url, company, admin):
    vic = company.people["vic"].id

    with rls_session(app_url, company.people["alice"].id) as conn:
        conn.execute("insert into public.user_roles (user_id, role) values (%s, 'member')", [vic])

    assert roles_of(admin, vic) == ["member", "viewer"]


# The schema as a whole -----------------------------------------------------------------------------------


def test_permission_mirror_equals_the_python_source_of_truth(admin):
    def grants(table: str, key: str) -> dict[str, set[str]]:
        mirrored: dict[str, set[str]] = {}
        for owner, permission in admin.execute(f"select {key}, permission from public.{table}").fetchall():
            mirrored.setdefault(owner, set()).add(permission)
        return mirrored

    assert grants("role_permissions", "role") == {
        role.value: {p.value for p in perms} for role, perms in ROLE_PERMISSIONS.items()
    }
    assert grants("scope_permissions", "scope") == {
        scope.value: {p.value for p in perms} for scope, perms in SCOPE_PERMISSIONS.items()
    }


def test_every_public_table_has_row_level_security(admin):
    tables = admin.execute(
        "select c.relname, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p') order by c.relname"
    ).fetchall()

    assert {"deals", "persons", "organizations", "leads", "audit_log", "outbox"} <= {name for name, _ in tables}
    assert [name for name, secured in tables if not secured] == []


def test_no_policy_is_for_all(admin):
    policies = admin.execute(
        "select tablename, policyname, cmd from pg_policies where schemaname = 'public'"
    ).fetchall()

    assert {cmd for _, _, cmd in policies} == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert [(table, name) for table, name, cmd in policies if cmd == "ALL"] == []


CALLER_ID_ARGUMENT = re.compile(r"user_?id|uid|caller", re.IGNORECASE)


def test_no_security_definer_function_a_user_can_call_takes_a_caller_id(admin):
    """A signed-in user must not be able to name whom a privileged function acts for (auth.uid() says that).
    Functions only the system may call (e.g. a workflow checking that an account is active) are exempt."""
    definers = admin.execute(
        "select n.nspname || '.' || p.proname, coalesce(p.proargnames, '{}'),"
        " has_function_privilege('authenticated', p.oid, 'execute') or has_function_privilege('anon', p.oid, 'execute')"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where p.prosecdef and n.nspname in ('public', 'private', 'auth')"
    ).fetchall()

    assert "private.has_permission" in {name for name, _, _ in definers}
    assert [(name, args) for name, args, callable_by_users in definers
            if callable_by_users and any(CALLER_ID_ARGUMENT.search(a) for a in args)] == []
    system_only = [name for name, args, callable_by_users in definers
                   if not callable_by_users and any(CALLER_ID_ARGUMENT.search(a) for a in args)]
    assert system_only == ["private.account_is_active"]


@pytest.mark.parametrize(
    ("principal", "target", "updated"),
    [("bob", "bob", 1), ("agent", "bob", 0), ("bob", "carol", 0), ("vic", "vic", 1), ("alice", "carol", 1)],
)
def test_profile_update_needs_profile_write_for_your_own_and_users_manage_for_others(
    app_url, company, admin, principal, target, updated
):
    with session_of(app_url, company, principal) as conn:
        cursor = conn.execute(
            "update public.user_profiles set display_name = 'Changed' where id = %s", [company.people[target].id]
        )
        assert cursor.rowcount == updated
    stored = admin.execute("select display_name from public.user_profiles where id = %s",
                           [company.people[target].id]).fetchone()
    assert stored == (("Changed",) if updated else (target.title(),))

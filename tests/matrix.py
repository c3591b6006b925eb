"""The access matrix, written out by hand, shared by the service-layer test and the RLS test.

Every record is owned by bob (member, team East). A cell says what a caller gets from one operation on such a
record, per visibility of the record:

    ok          it works: the record is returned, listed, changed or deleted
    not_found   the record is hidden: NotFound, left out of lists (RLS: no row is seen or touched)
    forbidden   the call is refused with Forbidden (RLS: no row is touched)

Forbidden comes from two places. A visible record the caller may not change (dan and carol on bob's records).
And a permission the caller lacks altogether (vic and the read-only agent writing anything; members deleting
persons and organizations, as they lack contacts:delete): `@requires` refuses that before the record is looked
up, whatever its id, so the answer says nothing about whether the record exists, even when it is hidden.

Callers: alice admin, mia manager of East, bob the owner (member, East), dan member of East, carol member of
West, vic viewer (no team), and "agent": bob's own agent token with the scopes {crm.read}.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest

from services.contacts.schemas import organization_name_key
from services.kernel.permissions import Scope

OK, NOT_FOUND, FORBIDDEN = "ok", "not_found", "forbidden"

PRINCIPALS = ("alice", "mia", "bob", "dan", "carol", "vic", "agent")
VISIBILITIES = ("owner", "team", "company")
ENTITIES = ("deal", "person", "organization", "lead")
OPERATIONS = ("get", "list", "update", "delete")

# Who logs in for each caller, and with which token scopes (None: a first-party session, the role's rights).
LOGINS: dict[str, tuple[str, frozenset[Scope] | None]] = {
    "alice": ("alice", None),
    "mia": ("mia", None),
    "bob": ("bob", None),
    "dan": ("dan", None),
    "carol": ("carol", None),
    "vic": ("vic", None),
    "agent": ("bob", frozenset({Scope.READ})),
}

# Tables: one row per caller, one column per visibility of bob's record.

#                 owner       team        company
SEE = {
    "alice": (OK,        OK,        OK),
    "mia":   (OK,        OK,        OK),
    "bob":   (OK,        OK,        OK),
    "dan":   (NOT_FOUND, OK,        OK),
    "carol": (NOT_FOUND, NOT_FOUND, OK),
    "vic":   (NOT_FOUND, NOT_FOUND, OK),
    "agent": (OK,        OK,        OK),
}  # fmt: skip

#                 owner       team        company
CHANGE = {
    "alice": (OK,        OK,        OK),
    "mia":   (OK,        OK,        OK),
    "bob":   (OK,        OK,        OK),
    "dan":   (NOT_FOUND, FORBIDDEN, FORBIDDEN),
    "carol": (NOT_FOUND, NOT_FOUND, FORBIDDEN),
    "vic":   (FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "agent": (FORBIDDEN, FORBIDDEN, FORBIDDEN),
}  # fmt: skip

# Persons and organizations: members lack contacts:delete, even for their own.
#                 owner       team        company
DELETE_CONTACT = {
    "alice": (OK,        OK,        OK),
    "mia":   (OK,        OK,        OK),
    "bob":   (FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "dan":   (FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "carol": (FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "vic":   (FORBIDDEN, FORBIDDEN, FORBIDDEN),
    "agent": (FORBIDDEN, FORBIDDEN, FORBIDDEN),
}  # fmt: skip

EXPECTED: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {
    ("deal", "get"): SEE,
    ("deal", "list"): SEE,
    ("deal", "update"): CHANGE,
    ("deal", "delete"): CHANGE,
    ("person", "get"): SEE,
    ("person", "list"): SEE,
    ("person", "update"): CHANGE,
    ("person", "delete"): DELETE_CONTACT,
    ("organization", "get"): SEE,
    ("organization", "list"): SEE,
    ("organization", "update"): CHANGE,
    ("organization", "delete"): DELETE_CONTACT,
    ("lead", "get"): SEE,
    ("lead", "list"): SEE,
    ("lead", "update"): CHANGE,
    ("lead", "delete"): CHANGE,
}

# A note bob wrote, or an activity he owns, on bob's deal: it is visible exactly when the deal is, and bob's
# own rights over it follow the owner rule. The column is the DEAL's visibility.
EXPECTED_ATTACHED: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {
    ("note", "get"): SEE,
    ("note", "list"): SEE,
    ("note", "update"): CHANGE,
    ("activity", "get"): SEE,
    ("activity", "list"): SEE,
    ("activity", "update"): CHANGE,
}


def rows(operation: str) -> list[Any]:
    """pytest params (entity, principal, expected row over the three visibilities) for one operation."""
    return [
        pytest.param(entity, principal, EXPECTED[entity, operation][principal], id=f"{entity}-{principal}")
        for entity in ENTITIES
        for principal in PRINCIPALS
    ]


def attached_rows(operation: str) -> list[Any]:
    """pytest params (kind, principal, expected row over the deal's three visibilities) for notes, activities."""
    return [
        pytest.param(kind, principal, EXPECTED_ATTACHED[kind, operation][principal], id=f"{kind}-{principal}")
        for kind in ("note", "activity")
        for principal in PRINCIPALS
    ]


# Seeding bob's records as superuser (no audit or outbox rows, so a test starts from empty bookkeeping).

TABLES = {"deal": "deals", "person": "persons", "organization": "organizations", "lead": "leads",
          "note": "notes", "activity": "activities"}

# The text column each test changes, and the value the record starts with.
TEXT_COLUMNS = {"deal": "title", "person": "first_name", "organization": "name", "lead": "title",
                "note": "body", "activity": "subject"}


def seed_record(admin: psycopg.Connection, company: Any, entity: str, visibility: str) -> UUID:
    """Insert one of bob's records with the given visibility; returns its id."""
    bob = company.people["bob"].id
    if entity == "deal":
        query = ("insert into public.deals (title, owner_id, visibility, pipeline_id, stage_id)"
                 " values ('Harbor crane retrofit', %s, %s, %s, %s) returning id")
        params: list[Any] = [bob, visibility, company.sales_pipeline_id, company.sales_stage_ids[0]]
    elif entity == "person":
        query = ("insert into public.persons (first_name, last_name, emails, owner_id, visibility)"
                 " values ('Greta', 'Lind', '{greta@harbor.example}', %s, %s) returning id")
        params = [bob, visibility]
    elif entity == "organization":
        query = ("insert into public.organizations (name, name_key, owner_id, visibility)"
                 " values ('Harbor Works', %s, %s, %s) returning id")
        params = [organization_name_key("Harbor Works"), bob, visibility]
    elif entity == "lead":
        query = ("insert into public.leads (title, source, owner_id, visibility)"
                 " values ('Harbor expansion', 'web', %s, %s) returning id")
        params = [bob, visibility]
    else:
        raise ValueError(entity)
    return admin.execute(query, params).fetchone()[0]  # type: ignore[index]


def seed_attached(admin: psycopg.Connection, company: Any, kind: str, deal_id: UUID) -> UUID:
    """A note bob wrote, or an activity he owns, on the given deal; returns its id."""
    bob = company.people["bob"].id
    if kind == "note":
        query = "insert into public.notes (body, author_id, deal_id) values ('Crane specs sent', %s, %s) returning id"
    elif kind == "activity":
        query = ("insert into public.activities (type, subject, owner_id, deal_id)"
                 " values ('call', 'Call the harbor master', %s, %s) returning id")
    else:
        raise ValueError(kind)
    return admin.execute(query, [bob, deal_id]).fetchone()[0]  # type: ignore[index]


def seed_each_visibility(admin: psycopg.Connection, company: Any, entity: str) -> list[UUID]:
    """Three of bob's records, one per visibility, in the order of VISIBILITIES."""
    return [seed_record(admin, company, entity, visibility) for visibility in VISIBILITIES]


def seed_attached_each_visibility(admin: psycopg.Connection, company: Any, kind: str) -> list[UUID]:
    """Three notes or activities of bob's, one on each of three deals of his, by the deals' VISIBILITIES."""
    return [seed_attached(admin, company, kind, deal_id) for deal_id in seed_each_visibility(admin, company, "deal")]


def snapshot(admin: psycopg.Connection, entity: str, record_id: UUID) -> tuple[Any, ...] | None:
    """The whole row as superuser (None if it is gone)."""
    return admin.execute(f"select * from public.{TABLES[entity]} where id = %s", [record_id]).fetchone()

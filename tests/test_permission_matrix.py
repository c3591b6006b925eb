"""Who may read, list, change and delete bob's records, through the service layer.

The expected outcome of every cell is written out in tests/matrix.py (shared with tests/test_rls.py, which checks
the same cells against the RLS policies alone). A refused write must leave no trace: the row is unchanged and
neither audit_log nor outbox got a row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from conftest import Actors, counts
from matrix import (
    FORBIDDEN,
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

from services.activities import service as activities
from services.activities.schemas import ActivityUpdate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationUpdate, PersonUpdate
from services.deals import service as deals
from services.deals.schemas import DealUpdate
from services.kernel.errors import Forbidden, NotFound
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.leads.schemas import LeadUpdate
from services.notes import service as notes
from services.notes.schemas import NoteUpdate
from services.search import service as search
from services.search.schemas import SearchType

Call = Callable[[UnitOfWork, UUID], Awaitable[Any]]


@dataclass(frozen=True)
class Api:
    """One entity's service functions, each taking (uow, id); `update` sets its text column to "Changed"."""

    get: Call
    list: Callable[[UnitOfWork], Awaitable[Any]]
    update: Call
    delete: Call | None = None


API = {
    "deal": Api(deals.get, deals.list, lambda uow, i: deals.update(uow, i, DealUpdate(title="Changed")), deals.delete),
    "person": Api(
        contacts.get_person,
        contacts.list_persons,
        lambda uow, i: contacts.update_person(uow, i, PersonUpdate(first_name="Changed")),
        contacts.delete_person,
    ),
    "organization": Api(
        contacts.get_organization,
        contacts.list_organizations,
        lambda uow, i: contacts.update_organization(uow, i, OrganizationUpdate(name="Changed")),
        contacts.delete_organization,
    ),
    "lead": Api(leads.get, leads.list, lambda uow, i: leads.update(uow, i, LeadUpdate(title="Changed")), leads.delete),
    "note": Api(notes.get, notes.list, lambda uow, i: notes.update(uow, i, NoteUpdate(body="Changed"))),
    "activity": Api(
        activities.get, activities.list, lambda uow, i: activities.update(uow, i, ActivityUpdate(subject="Changed"))
    ),
}


async def attempt(actors: Actors, principal: str, entity: str, record_id: UUID, call: Call) -> str:
    """Run one call as `principal` in its own unit of work; 'ok', 'not_found' or 'forbidden'."""
    key, scopes = LOGINS[principal]
    try:
        async with actors.uow(key, scopes=scopes) as uow:
            await call(uow, record_id)
    except NotFound as error:
        assert (error.entity, error.entity_id) == (entity, record_id)
        return NOT_FOUND
    except Forbidden:
        return FORBIDDEN
    return OK


async def listed_ids(actors: Actors, principal: str, entity: str) -> tuple[list[UUID], int]:
    key, scopes = LOGINS[principal]
    async with actors.uow(key, scopes=scopes) as uow:
        page = await API[entity].list(uow)
    return [item.id for item in page.items], page.total


def bookkeeping(admin) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Audit rows (actor, channel, operation, entity type, entity id) in order, and outbox rows (name, data)."""
    audit = admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id from public.audit_log order by id"
    ).fetchall()
    outbox = admin.execute("select name, data from public.outbox").fetchall()
    return audit, sorted(outbox, key=str)


def assert_written_only_for(admin, entity: str, ids, outcomes, before, changed: Callable[[UUID], Any]) -> None:
    """Records the call was refused for are exactly as before; `changed(id)` holds for the others."""
    for record_id, outcome, old in zip(ids, outcomes, before, strict=True):
        if outcome == OK:
            changed(record_id)
        else:
            assert old is not None
            assert snapshot(admin, entity, record_id) == old


def assert_nothing_written(admin, entity: str, record_id: UUID, before: tuple[Any, ...] | None) -> None:
    assert before is not None
    assert snapshot(admin, entity, record_id) == before
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


def expected_bookkeeping(actor: UUID, entity: str, verb: str, ids: list[UUID], payload: dict[str, Any]):
    """One audit row and one outbox event per record the call went through for."""
    audit = [(actor, "graphql", f"{entity}.{verb}", entity, i) for i in ids]
    event = {"update": "updated", "delete": "deleted"}[verb]
    outbox = [(f"crm/{entity}.{event}", {f"{entity}_id": str(i), **payload}) for i in ids]
    return audit, sorted(outbox, key=str)


# Records: deals, persons, organizations, leads ---------------------------------------------------------
# Each test seeds three of bob's records (visibility owner, team, company) and compares what one caller gets
# with that caller's row of the table.


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("get"))
async def test_get_follows_the_matrix(actors, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)

    outcomes = tuple([await attempt(actors, principal, entity, i, API[entity].get) for i in ids])

    assert outcomes == expected


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("list"))
async def test_list_follows_the_matrix(actors, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)

    listed, total = await listed_ids(actors, principal, entity)

    assert tuple(OK if i in listed else NOT_FOUND for i in ids) == expected
    assert (len(listed), total) == (expected.count(OK), expected.count(OK))


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("update"))
async def test_update_follows_the_matrix(actors, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)
    before = [snapshot(admin, entity, i) for i in ids]
    table, column = TABLES[entity], TEXT_COLUMNS[entity]

    outcomes = tuple([await attempt(actors, principal, entity, i, API[entity].update) for i in ids])

    assert outcomes == expected

    def changed(record_id: UUID) -> None:
        row = admin.execute(f"select {column}, version from public.{table} where id = %s", [record_id]).fetchone()
        assert row == ("Changed", 2)

    assert_written_only_for(admin, entity, ids, outcomes, before, changed)
    updated = [i for i, outcome in zip(ids, outcomes, strict=True) if outcome == OK]
    actor = actors.id(LOGINS[principal][0])
    assert bookkeeping(admin) == expected_bookkeeping(actor, entity, "update", updated, {"fields": [column]})


@pytest.mark.parametrize(("entity", "principal", "expected"), rows("delete"))
async def test_delete_follows_the_matrix(actors, company, admin, entity, principal, expected):
    ids = seed_each_visibility(admin, company, entity)
    before = [snapshot(admin, entity, i) for i in ids]

    outcomes = tuple([await attempt(actors, principal, entity, i, API[entity].delete) for i in ids])

    assert outcomes == expected

    def gone(record_id: UUID) -> None:
        assert snapshot(admin, entity, record_id) is None

    assert_written_only_for(admin, entity, ids, outcomes, before, gone)
    deleted = [i for i, outcome in zip(ids, outcomes, strict=True) if outcome == OK]
    actor = actors.id(LOGINS[principal][0])
    assert bookkeeping(admin) == expected_bookkeeping(actor, entity, "delete", deleted, {})


# Notes and activities on a deal: visible exactly when the deal is ---------------------------------------
# Three of bob's deals (owner, team, company), each with a note he wrote or an activity he owns.


@pytest.mark.parametrize(("kind", "principal", "expected"), attached_rows("get"))
async def test_get_of_note_or_activity_on_a_deal_follows_the_deal(actors, company, admin, kind, principal, expected):
    ids = seed_attached_each_visibility(admin, company, kind)

    outcomes = tuple([await attempt(actors, principal, kind, i, API[kind].get) for i in ids])

    assert outcomes == expected


@pytest.mark.parametrize(("kind", "principal", "expected"), attached_rows("list"))
async def test_list_of_notes_or_activities_on_a_deal_follows_the_deal(
    actors, company, admin, kind, principal, expected
):
    ids = seed_attached_each_visibility(admin, company, kind)

    listed, total = await listed_ids(actors, principal, kind)

    assert tuple(OK if i in listed else NOT_FOUND for i in ids) == expected
    assert (len(listed), total) == (expected.count(OK), expected.count(OK))


@pytest.mark.parametrize(("kind", "principal", "expected"), attached_rows("update"))
async def test_update_of_note_or_activity_on_a_deal_follows_the_deal(
    actors, company, admin, kind, principal, expected
):
    ids = seed_attached_each_visibility(admin, company, kind)
    before = [snapshot(admin, kind, i) for i in ids]
    table, column = TABLES[kind], TEXT_COLUMNS[kind]

    outcomes = tuple([await attempt(actors, principal, kind, i, API[kind].update) for i in ids])

    assert outcomes == expected

    def changed(record_id: UUID) -> None:
        row = admin.execute(f"select {column}, version from public.{table} where id = %s", [record_id]).fetchone()
        assert row == ("Changed", 2)

    assert_written_only_for(admin, kind, ids, outcomes, before, changed)
    updated = [i for i, outcome in zip(ids, outcomes, strict=True) if outcome == OK]
    actor = actors.id(LOGINS[principal][0])
    assert bookkeeping(admin) == expected_bookkeeping(actor, kind, "update", updated, {"fields": [column]})


# Across teams ------------------------------------------------------------------------------------------


async def test_member_of_other_team_cannot_find_team_visible_deal_by_id_list_or_search(actors, company, admin):
    deal_id = seed_record(admin, company, "deal", "team")

    async with actors.uow("carol") as uow:
        with pytest.raises(NotFound) as error:
            await deals.get(uow, deal_id)
        page = await deals.list(uow)
        hits = await search.search(uow, "harbor crane", types=[SearchType.DEAL])

    assert (error.value.entity, error.value.entity_id) == ("deal", deal_id)
    assert (page.items, page.total) == ([], 0)
    assert hits == []


async def test_member_of_same_team_finds_team_visible_deal_by_search(actors, company, admin):
    deal_id = seed_record(admin, company, "deal", "team")

    async with actors.uow("dan") as uow:
        hits = await search.search(uow, "harbor crane", types=[SearchType.DEAL])

    assert [(hit.id, hit.type, hit.title) for hit in hits] == [(deal_id, SearchType.DEAL, "Harbor crane retrofit")]


@pytest.mark.parametrize("operation", ["update", "delete"])
async def test_member_of_other_team_cannot_change_team_visible_deal(actors, company, admin, operation):
    deal_id = seed_record(admin, company, "deal", "team")
    before = snapshot(admin, "deal", deal_id)
    call = API["deal"].update if operation == "update" else API["deal"].delete

    with pytest.raises(NotFound) as error:
        async with actors.uow("carol") as uow:
            await call(uow, deal_id)

    assert (error.value.entity, error.value.entity_id) == ("deal", deal_id)
    assert_nothing_written(admin, "deal", deal_id, before)

"""State transitions happen once, and a change that changes nothing writes nothing.

Concurrent calls of one transition on one record: exactly one makes it (one version bump, one audit row, one
event), the others wait for it and get the record in its new state. A transition to the state the record is
already in, and an update with the values the record already has, return the record and write nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from conftest import Actors, Company, audit_operations, counts, events, forget_bookkeeping

from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityUpdate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, OrganizationUpdate, PersonCreate, PersonUpdate
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate
from services.kernel.errors import Conflict
from services.kernel.uow import Database, UnitOfWork
from services.leads import service as leads
from services.leads.schemas import LeadCreate, LeadUpdate
from services.notes import service as notes
from services.notes.schemas import NoteCreate, NoteUpdate
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineUpdate, StageUpdate
from services.users import service as users
from services.users.schemas import ProfileUpdate

CALLERS = 10


@pytest.fixture
async def crowd(app_url: str, company: Company) -> AsyncIterator[Actors]:
    """Actors whose pool has a connection for each of the CALLERS concurrent units of work."""
    async with Database(app_url, min_size=CALLERS, max_size=CALLERS) as database:
        yield Actors(database, company)


def version(admin: psycopg.Connection, table: str, record_id: UUID) -> int:
    row = admin.execute(f"select version from public.{table} where id = %s", [record_id]).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class Transition:
    """A record put in its starting state by `setup`, then moved by `call`, audited and emitted once."""

    table: str
    setup: Callable[[UnitOfWork], Awaitable[Any]]
    call: Callable[[UnitOfWork, UUID], Awaitable[Any]]
    operation: str
    event: str
    state: Callable[[Any], Any]
    expected: Any


async def _open_deal(uow: UnitOfWork) -> Any:
    return await deals.create(uow, DealCreate(title="Contested", value=Decimal("100")))


async def _won_deal(uow: UnitOfWork) -> Any:
    return await deals.mark_won(uow, (await _open_deal(uow)).id)


async def _open_activity(uow: UnitOfWork) -> Any:
    return await activities.create(uow, ActivityCreate(subject="Call back"))


async def _done_activity(uow: UnitOfWork) -> Any:
    return await activities.complete(uow, (await _open_activity(uow)).id)


async def _open_lead(uow: UnitOfWork) -> Any:
    return await leads.create(uow, LeadCreate(title="Inbound"))


async def _archived_lead(uow: UnitOfWork) -> Any:
    return await leads.archive(uow, (await _open_lead(uow)).id)


TRANSITIONS = {
    "mark_won": Transition("deals", _open_deal, lambda uow, i: deals.mark_won(uow, i), "deal.mark_won",
                           "crm/deal.won", lambda d: d.status, "won"),
    "mark_lost": Transition("deals", _open_deal, lambda uow, i: deals.mark_lost(uow, i, "No budget"),
                            "deal.mark_lost", "crm/deal.lost", lambda d: (d.status, d.lost_reason),
                            ("lost", "No budget")),
    "reopen": Transition("deals", _won_deal, lambda uow, i: deals.reopen(uow, i), "deal.reopen",
                         "crm/deal.reopened", lambda d: d.status, "open"),
    "complete": Transition("activities", _open_activity, lambda uow, i: activities.complete(uow, i),
                           "activity.complete", "crm/activity.completed", lambda a: a.done, True),
    "complete-not-done": Transition("activities", _done_activity,
                                    lambda uow, i: activities.complete(uow, i, done=False),
                                    "activity.reopen", "crm/activity.reopened", lambda a: a.done, False),
    "archive": Transition("leads", _open_lead, lambda uow, i: leads.archive(uow, i), "lead.archive",
                          "crm/lead.archived", lambda lead: lead.status, "archived"),
    "unarchive": Transition("leads", _archived_lead, lambda uow, i: leads.unarchive(uow, i), "lead.unarchive",
                            "crm/lead.unarchived", lambda lead: lead.status, "open"),
}


@pytest.mark.parametrize("name", TRANSITIONS)
async def test_concurrent_calls_of_one_transition_make_it_exactly_once(crowd, admin, name):
    transition = TRANSITIONS[name]
    async with crowd.uow("bob") as uow:
        record = await transition.setup(uow)
    forget_bookkeeping(admin)
    start = version(admin, transition.table, record.id)

    async def call() -> Any:
        async with crowd.uow("bob") as uow:
            return await transition.call(uow, record.id)

    results = await asyncio.gather(*(call() for _ in range(CALLERS)))

    assert [transition.state(r) for r in results] == [transition.expected] * CALLERS
    assert {r.version for r in results} == {start + 1}
    assert version(admin, transition.table, record.id) == start + 1
    assert audit_operations(admin) == [transition.operation]
    assert [name for name, _ in events(admin)] == [transition.event]


@pytest.mark.parametrize("name", TRANSITIONS)
async def test_a_transition_to_the_current_state_returns_the_record_and_writes_nothing(actors, admin, name):
    transition = TRANSITIONS[name]
    async with actors.uow("bob") as uow:
        record = await transition.setup(uow)
    async with actors.uow("bob") as uow:
        done = await transition.call(uow, record.id)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:  # a retry, with the version read before the first call went through
        again = await transition.call(uow, record.id)

    assert again == done
    assert version(admin, transition.table, record.id) == done.version
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_an_already_won_deal_is_returned_even_with_the_version_read_before_it_was_won(actors, admin):
    async with actors.uow("bob") as uow:
        deal = await _open_deal(uow)
    async with actors.uow("bob") as uow:
        won = await deals.mark_won(uow, deal.id, expected_version=deal.version)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        again = await deals.mark_won(uow, deal.id, expected_version=deal.version)

    assert again == won
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_losing_a_lost_deal_with_another_reason_keeps_the_recorded_reason(actors, admin):
    async with actors.uow("bob") as uow:
        deal = await _open_deal(uow)
        lost = await deals.mark_lost(uow, deal.id, "No budget")
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        again = await deals.mark_lost(uow, deal.id, "Went with a competitor")

    assert again == lost
    assert (again.status, again.lost_reason) == ("lost", "No budget")
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_a_transition_the_state_does_not_allow_stays_a_conflict(actors, admin):
    async with actors.uow("bob") as uow:
        lead = await _open_lead(uow)
        await leads.convert(uow, lead.id)
    forget_bookkeeping(admin)
    start = version(admin, "leads", lead.id)

    for call in (leads.archive, leads.unarchive):
        with pytest.raises(Conflict):
            async with actors.uow("bob") as uow:
                await call(uow, lead.id)

    assert version(admin, "leads", lead.id) == start
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_concurrent_wins_through_graphql_make_one_win(api, admin):
    created = await api.query('mutation { createDeal(input: {title: "Contested"}) { id version } }')
    deal_id = created["data"]["createDeal"]["id"]
    forget_bookkeeping(admin)
    document = "mutation($id: UUID!) { markDealWon(id: $id) { id status version } }"

    bodies = await asyncio.gather(*(api.query(document, {"id": deal_id}) for _ in range(5)))

    assert [b.get("errors") for b in bodies] == [None] * 5
    assert [b["data"]["markDealWon"] for b in bodies] == [{"id": deal_id, "status": "WON", "version": 2}] * 5
    assert audit_operations(admin) == ["deal.mark_won"]
    assert [name for name, _ in events(admin)] == ["crm/deal.won"]


# Changes that change nothing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NoOp:
    """A record made by `setup` (as `who`), and an update of it with the values it already has."""

    table: str
    who: str
    setup: Callable[[UnitOfWork, Company], Awaitable[Any]]
    update: Callable[[UnitOfWork, Any], Awaitable[Any]]


async def _deal(uow: UnitOfWork, _: Company) -> Any:
    return await deals.create(uow, DealCreate(title="Same", value=Decimal("100.00"), currency="EUR"))


async def _person(uow: UnitOfWork, _: Company) -> Any:
    return await contacts.create_person(uow, PersonCreate(first_name="Ada", last_name="Lovelace",
                                                          emails=["ada@example.org"]))


async def _organization(uow: UnitOfWork, _: Company) -> Any:
    return await contacts.create_organization(uow, OrganizationCreate(name="Engines", domain="engines.example"))


async def _lead(uow: UnitOfWork, _: Company) -> Any:
    return await leads.create(uow, LeadCreate(title="Same", labels=["hot"]))


async def _activity(uow: UnitOfWork, _: Company) -> Any:
    return await activities.create(uow, ActivityCreate(subject="Same"))


async def _note(uow: UnitOfWork, _: Company) -> Any:
    return await notes.create(uow, NoteCreate(body="Same", deal_id=(await _deal(uow, _)).id))


async def _pipeline(uow: UnitOfWork, company: Company) -> Any:
    return await pipelines.get(uow, company.sales_pipeline_id)


async def _stage(uow: UnitOfWork, company: Company) -> Any:
    return await pipelines.get_stage(uow, company.sales_stage_ids[0])


NO_OPS = {
    "deal": NoOp("deals", "bob", _deal, lambda uow, d: deals.update(
        uow, d.id, DealUpdate(title="Same", value=Decimal("100"), currency="EUR", person_id=None),
        expected_version=d.version)),
    "deal-nothing-sent": NoOp("deals", "bob", _deal, lambda uow, d: deals.update(uow, d.id, DealUpdate())),
    "deal-same-stage": NoOp("deals", "bob", _deal, lambda uow, d: deals.move_stage(uow, d.id, d.stage_id)),
    "person": NoOp("persons", "bob", _person, lambda uow, p: contacts.update_person(
        uow, p.id, PersonUpdate(first_name="Ada", emails=["ada@example.org"]))),
    "organization": NoOp("organizations", "bob", _organization, lambda uow, o: contacts.update_organization(
        uow, o.id, OrganizationUpdate(name="Engines", domain="engines.example"))),
    "lead": NoOp("leads", "bob", _lead, lambda uow, lead: leads.update(
        uow, lead.id, LeadUpdate(title="Same", labels=["hot"]))),
    "activity": NoOp("activities", "bob", _activity, lambda uow, a: activities.update(
        uow, a.id, ActivityUpdate(subject="Same", due_date=None))),
    "note": NoOp("notes", "bob", _note, lambda uow, n: notes.update(uow, n.id, NoteUpdate(body="Same"))),
    "pipeline": NoOp("pipelines", "alice", _pipeline, lambda uow, p: pipelines.update(
        uow, p.id, PipelineUpdate(name="Sales", position=p.position))),
    "stage": NoOp("stages", "alice", _stage, lambda uow, s: pipelines.update_stage(
        uow, s.id, StageUpdate(name=s.name, win_probability=s.win_probability))),
}


@pytest.mark.parametrize("name", NO_OPS)
async def test_an_update_with_the_current_values_returns_the_record_and_writes_nothing(actors, company, admin,
                                                                                     name):
    case = NO_OPS[name]
    async with actors.uow(case.who) as uow:
        record = await case.setup(uow, company)
    forget_bookkeeping(admin)
    row_before = admin.execute(f"select * from public.{case.table} where id = %s", [record.id]).fetchone()

    async with actors.uow(case.who) as uow:
        after = await case.update(uow, record)

    assert after.version == record.version
    assert admin.execute(f"select * from public.{case.table} where id = %s", [record.id]).fetchone() == row_before
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_a_profile_update_with_the_current_values_writes_nothing(actors, admin):
    bob = actors.id("bob")
    row_before = admin.execute("select * from public.user_profiles where id = %s", [bob]).fetchone()

    async with actors.uow("bob") as uow:
        profile = await users.update_profile(uow, bob, ProfileUpdate(display_name="Bob", avatar_url=None))

    assert profile.display_name == "Bob"
    assert admin.execute("select * from public.user_profiles where id = %s", [bob]).fetchone() == row_before
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_an_update_that_changes_one_value_of_several_is_written_once(actors, admin):
    async with actors.uow("bob") as uow:
        deal = await _deal(uow, None)  # type: ignore[arg-type]
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        after = await deals.update(uow, deal.id, DealUpdate(title="Same", value=Decimal("250")))

    assert (after.value, after.version) == (Decimal("250.00"), deal.version + 1)
    assert audit_operations(admin) == ["deal.update"]
    assert events(admin) == [("crm/deal.updated", {"deal_id": str(deal.id), "fields": ["title", "value"]})]


# What MCP clients are told --------------------------------------------------------------------------------

IDEMPOTENT_WRITE_TOOLS = [
    "update_deal", "move_deal_stage", "mark_deal_won", "mark_deal_lost", "update_contact", "convert_lead",
    "complete_activity", "delete_record", "mark_notifications_read",
]


def test_idempotent_hint_is_set_exactly_on_the_tools_a_repeat_leaves_as_they_are():
    from mcp_server.tools import TOOLS

    writes = {t.name: t.annotations.idempotent_hint for t in TOOLS if not t.annotations.read_only_hint}
    assert writes == {
        "create_deal": False, "create_person": False, "create_organization": False, "create_lead": False,
        "log_activity": False, "add_note": False,  # a repeat without an idempotency key makes a twin
        "request_summary": False,  # a repeat after the first is done asks for a new one
        **dict.fromkeys(IDEMPOTENT_WRITE_TOOLS, True),
    }
    assert all(t.annotations.idempotent_hint for t in TOOLS if t.annotations.read_only_hint)


async def test_repeating_an_idempotent_tool_call_succeeds_and_writes_nothing_more(db, actors, company, admin):
    from test_mcp_tools import client_for, written

    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Repeat"))
        other = await deals.create(uow, DealCreate(title="Repeat too"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Ada"))
        lead = await leads.create(uow, LeadCreate(title="Repeat"))
        activity = await activities.create(uow, ActivityCreate(subject="Repeat"))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("update_deal", {"deal_id": str(deal.id), "title": "Repeated", "value": "10"}),
        ("move_deal_stage", {"deal_id": str(deal.id), "stage_id": str(company.sales_stage_ids[2])}),
        ("mark_deal_won", {"deal_id": str(deal.id)}),
        ("mark_deal_lost", {"deal_id": str(other.id), "reason": "No budget"}),
        ("update_contact", {"contact_type": "person", "contact_id": str(person.id), "last_name": "Lovelace"}),
        ("convert_lead", {"lead_id": str(lead.id)}),
        ("complete_activity", {"activity_id": str(activity.id)}),
    ]
    async with client_for(db, company, "bob") as client:
        for name, arguments in calls:
            first = await client.call_tool(name, arguments)
            assert not first.is_error, (name, first)
            after_first = {**written(admin), **counts(admin, "outbox")}
            again = await client.call_tool(name, arguments)
            assert not again.is_error, (name, again)
            assert {**written(admin), **counts(admin, "outbox")} == after_first, name

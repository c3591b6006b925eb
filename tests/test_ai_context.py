"""The context of a summary: read as the requester (RLS decides), bounded, with exact signals and a stable hash."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityType
from services.ai.context import build_context, canonical_json, estimate_tokens
from services.contacts import service as contacts
from services.contacts.schemas import PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Invalid, NotFound
from services.kernel.permissions import Scope
from services.kernel.principal import Channel
from services.kernel.records import Visibility
from services.notes import service as notes
from services.notes.schemas import NoteCreate, NoteUpdate

AI_SCOPES = frozenset({Scope.READ, Scope.AI})


def as_requester(actors, who: str):
    """A unit of work as a workflow acting for `who`, narrowed to reading and AI (as the summary job runs)."""
    return actors.uow(who, scopes=AI_SCOPES, channel=Channel.WORKFLOW)


async def context_of(actors, who: str, subject_type: str, subject_id, **options):
    async with as_requester(actors, who) as uow:
        return await build_context(uow, subject_type, subject_id, **options)


async def new_deal(actors, who: str = "bob", **fields):
    fields.setdefault("title", "Acme renewal")
    async with actors.uow(who) as uow:
        return await deals.create(uow, DealCreate(**fields))


async def test_a_hidden_linked_person_and_its_notes_never_reach_the_context(actors):
    async with actors.uow("carol") as uow:
        person = await contacts.create_person(
            uow, PersonCreate(first_name="Zelda", last_name="Quist", visibility=Visibility.OWNER))
        hidden = [await notes.create(uow, NoteCreate(body=f"Zelda confided budget {n}", person_id=person.id))
                  for n in (1, 2)]
        deal = await deals.create(uow, DealCreate(title="Quist expansion", person_id=person.id,
                                                  visibility=Visibility.COMPANY))
    async with actors.uow("bob") as uow:
        seen = await notes.create(uow, NoteCreate(body="Kick-off went well.", deal_id=deal.id))

    context = await context_of(actors, "bob", "deal", deal.id)

    assert "person" not in context.data["deal"]
    assert [n["id"] for n in context.data["notes"]] == [str(seen.id)]
    assert context.data["omitted"] == {"notes": 0, "activities": 0}
    assert context.source_ids == [deal.id, seen.id]
    assert "Zelda" not in canonical_json(context.data)
    # carol herself sees all of it: the test above is not empty by construction
    own = await context_of(actors, "carol", "deal", deal.id)
    assert own.data["deal"]["person"] == {"id": str(person.id), "name": "Zelda Quist", "job_title": None}
    assert {n["id"] for n in own.data["notes"]} == {str(seen.id), *(str(n.id) for n in hidden)}
    assert set(own.source_ids) == {deal.id, person.id, seen.id, *(n.id for n in hidden)}


@pytest.mark.parametrize("subject_type", ["deal", "person", "organization", "pipeline"])
async def test_an_unknown_subject_is_not_found(actors, subject_type):
    with pytest.raises(NotFound):
        await context_of(actors, "bob", subject_type, uuid4())


async def test_a_subject_the_requester_cannot_see_is_not_found(actors):
    deal = await new_deal(actors, "carol", visibility=Visibility.OWNER)
    with pytest.raises(NotFound):
        await context_of(actors, "bob", "deal", deal.id)


async def test_an_unknown_subject_type_is_invalid(actors):
    deal = await new_deal(actors)
    with pytest.raises(Invalid) as caught:
        await context_of(actors, "bob", "lead", deal.id)
    assert caught.value.field == "subject_type"


async def test_two_hundred_notes_stay_within_the_budget_and_the_omitted_count_is_exact(actors, admin):
    deal = await new_deal(actors)
    admin.execute(
        "insert into public.notes (body, author_id, deal_id, created_at)"
        " select 'Note ' || n || '. ' || repeat('x', 1500), %s, %s, now() - make_interval(mins => n)"
        " from generate_series(1, 200) n",
        [actors.id("bob"), deal.id],
    )

    context = await context_of(actors, "bob", "deal", deal.id)

    kept = context.data["notes"]
    assert estimate_tokens(context.data) <= 6000
    assert 0 < len(kept) < 200
    assert context.data["omitted"] == {"notes": 200 - len(kept), "activities": 0}
    assert [n["body"].split(".")[0] for n in kept] == [f"Note {n}" for n in range(1, len(kept) + 1)]
    assert {len(n["body"]) for n in kept} == {1000}
    # one more note would not have fitted
    one_more = {**context.data, "notes": [*kept, kept[-1]]}
    assert estimate_tokens(one_more) > 6000


async def test_open_activities_are_the_soonest_ten(actors):
    deal = await new_deal(actors)
    today = datetime.now(UTC).date()
    async with actors.uow("bob") as uow:
        created = [await activities.create(uow, ActivityCreate(subject=f"Step {n}", deal_id=deal.id,
                                                                due_date=today + timedelta(days=n)))
                   for n in range(12, 0, -1)]
    context = await context_of(actors, "bob", "deal", deal.id)
    assert [a["subject"] for a in context.data["open_activities"]] == [f"Step {n}" for n in range(1, 11)]
    assert context.data["omitted"] == {"notes": 0, "activities": 2}
    assert len(created) == 12


async def test_signals_are_computed_from_the_deal_and_its_activities(actors, admin):
    today = datetime.now(UTC).date()
    deal = await new_deal(actors, expected_close_date=today - timedelta(days=2))
    admin.execute("update public.deal_stage_history set changed_at = now() - interval '12 days' where deal_id = %s",
                  [deal.id])
    async with actors.uow("bob") as uow:
        overdue = await activities.create(uow, ActivityCreate(type=ActivityType.CALL, subject="Call the buyer",
                                                               deal_id=deal.id, due_date=today - timedelta(days=1)))
        done = await activities.create(uow, ActivityCreate(subject="Send the quote", deal_id=deal.id))
        await activities.complete(uow, done.id)
    admin.execute("update public.activities set done_at = now() - interval '5 days' where id = %s", [done.id])

    context = await context_of(actors, "bob", "deal", deal.id)

    assert context.data["signals"] == {
        "overdue_activities": 1, "no_next_activity": True, "close_date_passed": True, "days_in_stage": 12,
        "days_since_last_activity": 5,
    }
    assert context.data["open_activities"] == [{
        "id": str(overdue.id), "type": "call", "subject": "Call the buyer",
        "due_date": (today - timedelta(days=1)).isoformat(), "overdue": True,
    }]
    async with actors.uow("bob") as uow:
        await activities.create(uow, ActivityCreate(subject="Demo", deal_id=deal.id, due_date=today))
    context = await context_of(actors, "bob", "deal", deal.id)
    assert context.data["signals"]["no_next_activity"] is False


async def test_the_deal_fields_are_stated_and_cleaned(actors, admin):
    deal = await new_deal(actors, value="12000", currency="EUR", expected_close_date=date(2026, 12, 15))
    admin.execute("update public.deals set title = %s where id = %s", ["Acme\u202e renewal\u200b", deal.id])
    context = await context_of(actors, "bob", "deal", deal.id)
    assert context.data["deal"] == {
        "id": str(deal.id), "title": "Acme renewal", "status": "open", "stage": "Qualified", "pipeline": "Sales",
        "value": "12000.00", "currency": "EUR", "expected_close_date": "2026-12-15", "probability": 10,
        "owner": "Bob", "created": deal.created_at.astimezone(UTC).date().isoformat(), "won_at": None,
        "lost_at": None, "lost_reason": None,
    }


async def test_the_pipeline_context_holds_only_the_requesters_own_deals(actors, company):
    sales = company.sales_pipeline_id
    today = datetime.now(UTC).date()
    mine = await new_deal(actors, "bob", title="Bob open")
    moved = await new_deal(actors, "bob", title="Bob moved")
    won = await new_deal(actors, "bob", title="Bob won")
    others = await new_deal(actors, "dan", title="Dan open", visibility=Visibility.COMPANY)
    async with actors.uow("bob") as uow:
        await deals.move_stage(uow, moved.id, company.sales_stage_ids[2])
        await deals.mark_won(uow, won.id)
        due = await activities.create(uow, ActivityCreate(subject="Prepare the demo", deal_id=mine.id,
                                                           due_date=today + timedelta(days=3)))
        await activities.create(uow, ActivityCreate(subject="Far away", deal_id=mine.id,
                                                    due_date=today + timedelta(days=30)))
    async with actors.uow("dan") as uow:
        await activities.create(uow, ActivityCreate(subject="Dan's call", deal_id=others.id, due_date=today))

    context = await context_of(actors, "bob", "pipeline", sales)

    data = context.data
    assert {d["id"] for d in data["open_deals"]} == {str(mine.id), str(moved.id)}
    assert data["pipeline"]["open_deals"] == 2
    assert [s["open_deals"] for s in data["pipeline"]["stages"]] == [1, 0, 1, 0]
    assert data["this_week"]["won"] == {"count": 1, "value": {"USD": "0.00"},
                                        "deals": [{"id": str(won.id), "title": "Bob won"}]}
    assert [(m["title"], m["from"], m["to"]) for m in data["this_week"]["moved"]["moves"]] == [
        ("Bob moved", "Qualified", "Proposal")]
    assert [a["id"] for a in data["activities_due"]] == [str(due.id)]
    assert others.id not in context.source_ids
    assert "Dan" not in canonical_json(data)


async def test_the_snapshot_hash_is_stable_and_changes_with_a_note(actors):
    deal = await new_deal(actors)
    async with actors.uow("bob") as uow:
        note = await notes.create(uow, NoteCreate(body="Budget approved.", deal_id=deal.id))
    now = datetime.now(UTC)

    first = await context_of(actors, "bob", "deal", deal.id, now=now)
    again = await context_of(actors, "bob", "deal", deal.id, now=now)
    assert again.snapshot_hash == first.snapshot_hash and again.data == first.data
    assert first.snapshot_at == max(deal.updated_at, note.updated_at)

    async with actors.uow("bob") as uow:
        changed = await notes.update(uow, note.id, NoteUpdate(body="Budget cut."))
    after = await context_of(actors, "bob", "deal", deal.id, now=now)
    assert after.snapshot_hash != first.snapshot_hash
    assert after.snapshot_at == changed.updated_at

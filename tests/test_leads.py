"""The leads inbox, and converting a lead into a deal as one transaction."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from conftest import audit_operations, counts, events, forget_bookkeeping

from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityType
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from services.kernel.permissions import Scope
from services.kernel.records import Visibility
from services.leads import service as leads
from services.leads.schemas import LeadConversion, LeadCreate, LeadFilter, LeadStatus, LeadUpdate
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput

# Everything a conversion could write.
WRITTEN = ("persons", "organizations", "deals", "leads", "notes", "activities", "audit_log", "outbox")


async def new_lead(actors, who: str = "bob", title: str = "Initech rollout", **fields):
    async with actors.uow(who) as uow:
        return await leads.create(uow, LeadCreate(title=title, **fields))


async def initech_lead(actors, *, visibility: Visibility = Visibility.TEAM):
    """bob's lead with raw contact details, a note by his manager mia and an activity of his own."""
    lead = await new_lead(
        actors, value=Decimal("5000"), currency="eur", contact_name=" Ann  Lee ", contact_email="Ann@Initech.com",
        organization_name="Initech", visibility=visibility,
    )
    async with actors.uow("mia") as uow:
        note = await notes.create(uow, NoteCreate(body="Budget approved", lead_id=lead.id))
    async with actors.uow("bob") as uow:
        call = await activities.create(uow, ActivityCreate(subject="Call Ann", type=ActivityType.CALL, lead_id=lead.id))
    return lead, note, call








def lead_row(admin, lead_id) -> tuple:
    return admin.execute(
        "select status, converted_deal_id, version from public.leads where id = %s", [lead_id]
    ).fetchone()


# The inbox --------------------------------------------------------------------------------------------


async def test_create_lead_normalizes_input_and_records_audit_and_event(actors, admin):
    lead = await new_lead(actors, source="web form", labels=[" Hot ", "q3", "HOT"], contact_email=" Ann@Initech.COM")

    assert (lead.status, lead.currency, lead.labels) == (LeadStatus.OPEN, "USD", ["hot", "q3"])
    assert (lead.contact_email, lead.owner_id, lead.visibility) == (
        "ann@initech.com", actors.id("bob"), Visibility.COMPANY)
    assert (lead.converted_deal_id, lead.converted_at, lead.version) == (None, None, 1)
    assert audit_operations(admin) == ["lead.create"]
    assert events(admin) == [
        ("crm/lead.created", {"lead_id": str(lead.id), "owner_id": str(actors.id("bob"))})
    ]


async def test_lead_linked_to_a_person_the_caller_cannot_see_is_invalid(actors, admin):
    async with actors.uow("carol") as uow:
        hidden = await contacts.create_person(uow, PersonCreate(first_name="Ann", visibility=Visibility.OWNER))
    before = counts(admin, *WRITTEN)

    with pytest.raises(Invalid) as caught:
        await new_lead(actors, person_id=hidden.id)

    assert caught.value.field == "person_id"
    assert counts(admin, *WRITTEN) == before


async def test_owner_updates_lead_and_version_increments(actors, admin):
    lead = await new_lead(actors)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        updated = await leads.update(uow, lead.id, LeadUpdate(title="Initech, phase 1", labels=["Warm"]),
                                     expected_version=1)

    assert (updated.title, updated.labels, updated.version) == ("Initech, phase 1", ["warm"], 2)
    assert audit_operations(admin) == ["lead.update"]
    assert events(admin) == [("crm/lead.updated", {"lead_id": str(lead.id), "fields": ["labels", "title"]})]


async def test_lead_update_with_a_stale_version_is_a_conflict(actors, admin):
    lead = await new_lead(actors)
    async with actors.uow("bob") as uow:
        await leads.update(uow, lead.id, LeadUpdate(source="event"))
    before = counts(admin, *WRITTEN)

    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await leads.update(uow, lead.id, LeadUpdate(title="Too late"), expected_version=1)

    assert counts(admin, *WRITTEN) == before
    assert admin.execute("select title, version from public.leads").fetchone() == ("Initech rollout", 2)


@pytest.mark.parametrize(
    ("actor", "visibility", "error"),
    [
        ("dan", Visibility.TEAM, Forbidden),
        ("carol", Visibility.OWNER, NotFound),
        ("vic", Visibility.COMPANY, Forbidden),
    ],
)
async def test_only_owner_managers_and_admins_may_update_a_lead(actors, admin, actor, visibility, error):
    lead = await new_lead(actors, visibility=visibility)
    before = counts(admin, *WRITTEN)

    with pytest.raises(error):
        async with actors.uow(actor) as uow:
            await leads.update(uow, lead.id, LeadUpdate(title="Mine now"))

    assert counts(admin, *WRITTEN) == before
    assert lead_row(admin, lead.id) == ("open", None, 1)


async def test_archive_and_unarchive_a_lead(actors, admin):
    lead = await new_lead(actors)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        archived = await leads.archive(uow, lead.id)
        again = await leads.archive(uow, lead.id)
    assert (archived.status, archived.version) == (LeadStatus.ARCHIVED, 2)
    assert again == archived  # archiving an archived lead changes nothing
    assert audit_operations(admin) == ["lead.archive"]

    async with actors.uow("mia") as uow:
        reopened = await leads.unarchive(uow, lead.id)
    assert (reopened.status, reopened.version) == (LeadStatus.OPEN, 3)
    assert audit_operations(admin) == ["lead.archive", "lead.unarchive"]
    assert events(admin) == [
        ("crm/lead.archived", {"lead_id": str(lead.id)}),
        ("crm/lead.unarchived", {"lead_id": str(lead.id)}),
    ]


async def test_lead_list_filters_by_status_and_label(actors):
    hot = await new_lead(actors, title="Hot one", labels=["hot"])
    cold = await new_lead(actors, title="Cold one", labels=["cold"])
    async with actors.uow("bob") as uow:
        await leads.archive(uow, cold.id)

    async with actors.uow("bob") as uow:
        open_leads = await leads.list(uow, LeadFilter(status=LeadStatus.OPEN))
        archived = await leads.list(uow, LeadFilter(status=LeadStatus.ARCHIVED))
        labelled = await leads.list(uow, LeadFilter(label=" HOT "))

    assert [lead.id for lead in open_leads.items] == [hot.id]
    assert [lead.id for lead in archived.items] == [cold.id]
    assert [lead.id for lead in labelled.items] == [hot.id]


# Conversion -------------------------------------------------------------------------------------------


async def test_conversion_creates_contacts_and_deal_moves_everything_and_marks_lead_converted(actors, admin, company):
    lead, mias_note, call = await initech_lead(actors)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        result = await leads.convert(uow, lead.id)

    bob = actors.id("bob")
    deal = result.deal
    assert (result.created_person, result.created_organization, result.already_converted) == (True, True, False)
    assert (deal.pipeline_id, deal.stage_id) == (company.sales_pipeline_id, company.sales_stage_ids[0])
    assert (deal.title, deal.value, deal.currency, deal.owner_id, deal.visibility) == (
        "Initech rollout", Decimal("5000.00"), "EUR", bob, Visibility.TEAM)

    persons = admin.execute("select id, first_name, last_name, emails, owner_id, visibility from public.persons")
    assert persons.fetchall() == [(deal.person_id, "Ann", "Lee", ["ann@initech.com"], bob, "team")]
    organizations = admin.execute("select id, name, owner_id, visibility from public.organizations")
    assert organizations.fetchall() == [(deal.organization_id, "Initech", bob, "team")]

    # mia's note moved too, although bob could not have edited it himself
    assert admin.execute("select id, deal_id, lead_id from public.notes").fetchall() == [(mias_note.id, deal.id, None)]
    assert admin.execute("select id, deal_id, lead_id from public.activities").fetchall() == [(call.id, deal.id, None)]

    converted = result.lead
    assert (converted.status, converted.converted_deal_id, converted.version) == (LeadStatus.CONVERTED, deal.id, 2)
    assert converted.converted_at is not None
    assert (converted.person_id, converted.organization_id) == (deal.person_id, deal.organization_id)
    assert lead_row(admin, lead.id) == ("converted", deal.id, 2)

    assert audit_operations(admin) == [
        "person.create", "organization.create", "deal.create", "note.move_to_deal", "activity.move_to_deal",
        "lead.convert",
    ]
    emitted = dict(events(admin))
    assert sorted(emitted) == [
        "crm/deal.created", "crm/lead.converted", "crm/organization.created", "crm/person.created"]
    assert emitted["crm/lead.converted"] == {
        "lead_id": str(lead.id), "deal_id": str(deal.id), "person_id": str(deal.person_id),
        "organization_id": str(deal.organization_id), "notes_moved": 1, "activities_moved": 1,
    }
    assert emitted["crm/person.created"] == {"person_id": str(deal.person_id), "owner_id": str(bob)}
    assert emitted["crm/organization.created"] == {
        "organization_id": str(deal.organization_id), "owner_id": str(bob)}
    assert emitted["crm/deal.created"]["deal_id"] == str(deal.id)
    assert admin.execute("select distinct actor_id from public.outbox").fetchall() == [(bob,)]


@pytest.mark.parametrize("stage_index", [None, 1], ids=["pipeline-first-stage", "chosen-stage"])
async def test_conversion_places_the_deal_in_the_chosen_pipeline_and_stage(actors, stage_index):
    async with actors.uow("alice") as uow:
        partners = await pipelines.create(
            uow, PipelineCreate(name="Partners", stages=[StageInput(name="Intro"), StageInput(name="Pilot")])
        )
    lead = await new_lead(actors)
    stage_id = None if stage_index is None else partners.stages[stage_index].id

    async with actors.uow("bob") as uow:
        result = await leads.convert(
            uow, lead.id, LeadConversion(pipeline_id=partners.id, stage_id=stage_id, title="Initech pilot")
        )

    expected_stage = partners.stages[stage_index or 0].id
    assert (result.deal.pipeline_id, result.deal.stage_id, result.deal.title) == (
        partners.id, expected_stage, "Initech pilot")


async def test_conversion_links_the_existing_person_and_organization_instead_of_creating_them(actors, admin):
    async with actors.uow("dan") as uow:
        initech = await contacts.create_organization(uow, OrganizationCreate(name="Initech Inc."))
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann", emails=["ann@initech.com"]))
    lead = await new_lead(actors, contact_name="Ann Lee", contact_email="ANN@initech.com", organization_name="initech")
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        result = await leads.convert(uow, lead.id)

    assert (result.created_person, result.created_organization) == (False, False)
    assert (result.deal.person_id, result.deal.organization_id) == (ann.id, initech.id)
    assert (result.lead.person_id, result.lead.organization_id) == (ann.id, initech.id)
    assert counts(admin, "persons", "organizations") == {"persons": 1, "organizations": 1}
    assert sorted(name for name, _ in events(admin)) == ["crm/deal.created", "crm/lead.converted"]


async def test_manager_converts_members_lead_and_the_deal_stays_the_members(actors):
    lead, _, _ = await initech_lead(actors, visibility=Visibility.OWNER)

    async with actors.uow("mia") as uow:
        result = await leads.convert(uow, lead.id)

    assert result.deal.owner_id == actors.id("bob")
    assert result.lead.status is LeadStatus.CONVERTED


async def test_converting_twice_returns_the_same_deal_and_writes_nothing(actors, admin):
    lead, _, _ = await initech_lead(actors)
    async with actors.uow("bob") as uow:
        first = await leads.convert(uow, lead.id)
    before = counts(admin, *WRITTEN)

    async with actors.uow("bob") as uow:
        second = await leads.convert(uow, lead.id)

    assert second.already_converted is True
    assert (second.created_person, second.created_organization) == (False, False)
    assert second.deal == first.deal
    assert second.lead == first.lead
    assert counts(admin, *WRITTEN) == before


async def waiting_on_a_lock(admin) -> bool:
    """Poll (bounded) until another session of this database waits on a row lock."""
    for _ in range(1000):
        waiting = admin.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"
        ).fetchone()[0]
        if waiting:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_concurrent_conversions_of_one_lead_create_one_deal(actors, admin):
    lead, _, _ = await initech_lead(actors)

    async def convert_as(who: str):
        async with actors.uow(who) as uow:
            return await leads.convert(uow, lead.id)

    async with actors.uow("bob") as uow:
        first = await leads.convert(uow, lead.id)
        second = asyncio.create_task(convert_as("mia"))
        assert await waiting_on_a_lock(admin)  # mia's conversion waits for bob's to commit
    late = await second

    assert late.already_converted is True
    assert late.deal.id == first.deal.id
    assert counts(admin, "deals", "persons", "organizations") == {"deals": 1, "persons": 1, "organizations": 1}
    assert admin.execute("select count(*) from public.outbox where name = 'crm/lead.converted'").fetchone()[0] == 1


async def test_conversion_failing_midway_leaves_no_trace(actors, admin, monkeypatch):
    lead, note, call = await initech_lead(actors)
    before = counts(admin, *WRITTEN)
    real_create = deals.create

    async def create_deal_then_crash(uow, data, **kwargs):
        await real_create(uow, data, **kwargs)  # person, organization and deal are written by now
        raise RuntimeError("crash in the middle of the conversion")

    monkeypatch.setattr(deals, "create", create_deal_then_crash)

    with pytest.raises(RuntimeError):
        async with actors.uow("bob") as uow:
            await leads.convert(uow, lead.id)

    assert counts(admin, *WRITTEN) == before
    assert counts(admin, "persons", "organizations", "deals") == {"persons": 0, "organizations": 0, "deals": 0}
    assert lead_row(admin, lead.id) == ("open", None, 1)
    assert admin.execute("select lead_id, deal_id from public.notes where id = %s", [note.id]).fetchone() == (
        lead.id, None)
    assert admin.execute("select lead_id, deal_id from public.activities where id = %s", [call.id]).fetchone() == (
        lead.id, None)


async def test_archived_lead_cannot_be_converted(actors, admin):
    lead, _, _ = await initech_lead(actors)
    async with actors.uow("bob") as uow:
        await leads.archive(uow, lead.id)
    before = counts(admin, *WRITTEN)

    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await leads.convert(uow, lead.id)

    assert counts(admin, *WRITTEN) == before
    assert lead_row(admin, lead.id) == ("archived", None, 2)


async def test_converted_lead_can_no_longer_be_updated_or_archived(actors, admin):
    lead = await new_lead(actors)
    async with actors.uow("bob") as uow:
        result = await leads.convert(uow, lead.id)
    before = counts(admin, *WRITTEN)

    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await leads.update(uow, lead.id, LeadUpdate(title="Changed my mind"))
    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await leads.archive(uow, lead.id)

    assert counts(admin, *WRITTEN) == before
    assert lead_row(admin, lead.id) == ("converted", result.deal.id, 2)


@pytest.mark.parametrize(
    ("actor", "scopes", "visibility", "error"),
    [
        ("vic", None, Visibility.COMPANY, Forbidden),
        ("bob", frozenset({Scope.READ}), Visibility.COMPANY, Forbidden),
        ("carol", None, Visibility.OWNER, NotFound),
        ("carol", None, Visibility.COMPANY, Forbidden),
        ("dan", None, Visibility.TEAM, Forbidden),
    ],
    ids=["viewer", "read-only-agent", "other-team-hidden", "other-team-visible", "teammate"],
)
async def test_who_may_not_convert_a_lead_gets_an_error_and_nothing_is_written(
    actors, admin, actor, scopes, visibility, error
):
    lead, _, _ = await initech_lead(actors, visibility=visibility)
    before = counts(admin, *WRITTEN)

    with pytest.raises(error):
        async with actors.uow(actor, scopes=scopes) as uow:
            await leads.convert(uow, lead.id)

    assert counts(admin, *WRITTEN) == before
    assert lead_row(admin, lead.id) == ("open", None, 1)

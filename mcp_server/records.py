"""A record with its key relations, for `get_*` tools and `crm://` resources alike: a deal with its stage, contact,
organization, newest notes and open activities; a person with their deals; and so on. At most `RELATED` of each
related kind, with the total, all read as the caller through the services, so Row Level Security decides what is
in it: a linked record the caller may not see reads as no link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, Field

from services.activities import service as activities
from services.activities.schemas import Activity, ActivityFilter
from services.contacts import service as contacts
from services.contacts.schemas import Organization, Person, PersonFilter
from services.deals import service as deals
from services.deals.schemas import Deal, DealFilter
from services.kernel.pagination import Page, PageRequest
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.leads.schemas import Lead
from services.notes import service as notes
from services.notes.schemas import Note, NoteFilter
from services.pipelines import service as pipelines

RELATED = 10  # related records of each kind


class PipelineRef(BaseModel):
    id: UUID
    name: str


class StageRef(BaseModel):
    id: UUID
    name: str
    win_probability: int


class Detail(BaseModel):
    """A record (the field named by `PRIMARY`) with related records in the lists named by `TRIMMABLE`, which are
    shortened from their ends when the whole would be too long for one result (then `truncated` is true)."""

    PRIMARY: ClassVar[str]
    TRIMMABLE: ClassVar[tuple[str, ...]]

    truncated: bool = Field(False, description="True when related records were left out to keep this small.")

    @property
    def primary(self) -> Any:
        return getattr(self, self.PRIMARY)


class DealDetail(Detail):
    PRIMARY = "deal"
    TRIMMABLE = ("recent_notes", "open_activities")

    deal: Deal
    pipeline: PipelineRef | None
    stage: StageRef | None
    person: Person | None
    organization: Organization | None
    recent_notes: list[Note]
    notes_total: int | str
    open_activities: list[Activity]
    open_activities_total: int | str


class PersonDetail(Detail):
    PRIMARY = "person"
    TRIMMABLE = ("deals", "recent_notes", "open_activities")

    person: Person
    organization: Organization | None
    deals: list[Deal]
    deals_total: int | str
    recent_notes: list[Note]
    notes_total: int | str
    open_activities: list[Activity]
    open_activities_total: int | str


class OrganizationDetail(Detail):
    PRIMARY = "organization"
    TRIMMABLE = ("persons", "deals", "recent_notes")

    organization: Organization
    persons: list[Person]
    persons_total: int | str
    deals: list[Deal]
    deals_total: int | str
    recent_notes: list[Note]
    notes_total: int | str


class LeadDetail(Detail):
    PRIMARY = "lead"
    TRIMMABLE = ("recent_notes", "open_activities")

    lead: Lead
    person: Person | None
    organization: Organization | None
    recent_notes: list[Note]
    notes_total: int | str
    open_activities: list[Activity]
    open_activities_total: int | str


def shown_total(total: int, capped: bool) -> int | str:
    """A count as a model reads it: exact, or "1000+" when counting stopped at 1000."""
    return f"{total}+" if capped else total


def _total(page: Page[Any]) -> int | str:
    return shown_total(page.total or 0, page.total_capped)


def _page() -> PageRequest:
    return PageRequest(limit=RELATED)


async def _one_or_none(
    fetch: Callable[[UnitOfWork, list[UUID]], Awaitable[list[Any]]], uow: UnitOfWork, record: UUID | None
) -> Any:
    """A linked record when the caller may see it; a link to one they may not see reads as no link."""
    if record is None:
        return None
    found = await fetch(uow, [record])
    return found[0] if found else None


async def deal_detail(uow: UnitOfWork, deal_id: UUID) -> DealDetail:
    deal = await deals.get(uow, deal_id)
    pipeline = await _one_or_none(pipelines.get_many, uow, deal.pipeline_id)
    stage = next((s for s in pipeline.stages if s.id == deal.stage_id), None) if pipeline else None
    recent_notes = await notes.list(uow, NoteFilter(deal_id=deal_id), _page())
    open_activities = await activities.list(uow, ActivityFilter(deal_id=deal_id, done=False), _page())
    return DealDetail(
        deal=deal,
        pipeline=None if pipeline is None else PipelineRef(id=pipeline.id, name=pipeline.name),
        stage=None if stage is None else StageRef(id=stage.id, name=stage.name, win_probability=stage.win_probability),
        person=await _one_or_none(contacts.get_persons, uow, deal.person_id),
        organization=await _one_or_none(contacts.get_organizations, uow, deal.organization_id),
        recent_notes=recent_notes.items,
        notes_total=_total(recent_notes),
        open_activities=open_activities.items,
        open_activities_total=_total(open_activities),
    )


async def person_detail(uow: UnitOfWork, person_id: UUID) -> PersonDetail:
    person = await contacts.get_person(uow, person_id)
    their_deals = await deals.list(uow, DealFilter(person_id=person_id), _page())
    recent_notes = await notes.list(uow, NoteFilter(person_id=person_id), _page())
    open_activities = await activities.list(uow, ActivityFilter(person_id=person_id, done=False), _page())
    return PersonDetail(
        person=person,
        organization=await _one_or_none(contacts.get_organizations, uow, person.organization_id),
        deals=their_deals.items,
        deals_total=_total(their_deals),
        recent_notes=recent_notes.items,
        notes_total=_total(recent_notes),
        open_activities=open_activities.items,
        open_activities_total=_total(open_activities),
    )


async def organization_detail(uow: UnitOfWork, organization_id: UUID) -> OrganizationDetail:
    organization = await contacts.get_organization(uow, organization_id)
    persons = await contacts.list_persons(uow, PersonFilter(organization_id=organization_id), _page())
    their_deals = await deals.list(uow, DealFilter(organization_id=organization_id), _page())
    recent_notes = await notes.list(uow, NoteFilter(organization_id=organization_id), _page())
    return OrganizationDetail(
        organization=organization,
        persons=persons.items,
        persons_total=_total(persons),
        deals=their_deals.items,
        deals_total=_total(their_deals),
        recent_notes=recent_notes.items,
        notes_total=_total(recent_notes),
    )


async def lead_detail(uow: UnitOfWork, lead_id: UUID) -> LeadDetail:
    lead = await leads.get(uow, lead_id)
    recent_notes = await notes.list(uow, NoteFilter(lead_id=lead_id), _page())
    open_activities = await activities.list(uow, ActivityFilter(lead_id=lead_id, done=False), _page())
    return LeadDetail(
        lead=lead,
        person=await _one_or_none(contacts.get_persons, uow, lead.person_id),
        organization=await _one_or_none(contacts.get_organizations, uow, lead.organization_id),
        recent_notes=recent_notes.items,
        notes_total=_total(recent_notes),
        open_activities=open_activities.items,
        open_activities_total=_total(open_activities),
    )

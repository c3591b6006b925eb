"""GraphQL object types, generated from the service layer's pydantic models (fields and descriptions), plus
relations resolved through the request's DataLoaders.

No `from __future__ import annotations` here: relation types are resolved when the classes are built, and
`Lazy["X"]` names the types further down that relations point back to."""

from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

import strawberry
from pydantic import ValidationError
from strawberry.experimental.pydantic import type as from_model
from strawberry.scalars import JSON

from services.activities.schemas import Activity
from services.audit.schemas import AuditEntry
from services.contacts.schemas import Organization, Person
from services.deals.schemas import Deal, StageChange
from services.gdpr.schemas import Erasure
from services.kernel.errors import Invalid
from services.kernel.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest
from services.kernel.permissions import Perm
from services.leads.schemas import ConversionResult, Lead
from services.notes.schemas import Note
from services.notifications import service as notifications
from services.notifications.schemas import Notification
from services.pipelines.schemas import Pipeline, Stage
from services.search.schemas import SearchHit
from services.summaries.schemas import CitedText, Summary, SummaryContent, SummarySubject
from services.users.schemas import Me, Team, UserProfile

N = TypeVar("N")


class _LazyType:
    """`Lazy["DealType"]`: a forward reference to a type further down this module (relations are circular)."""

    def __getitem__(self, name: str) -> Any:
        return Annotated[name, strawberry.lazy("graphql_api.types")]


Lazy = _LazyType()


def _loaders(info: strawberry.Info) -> Any:
    return info.context.loaders


async def _one(loader: Any, key: UUID | None, convert: Any) -> Any:
    if key is None:
        return None
    found = await loader.load(key)
    return None if found is None else convert.from_pydantic(found)


@from_model(model=UserProfile, all_fields=True, name="User", description="A CRM user (from Supabase Auth).")
class UserType:
    pass


@from_model(model=Team, all_fields=True, name="Team", description="A team of users.")
class TeamType:
    @strawberry.field(description="The team's members.")
    async def members(self, info: strawberry.Info) -> list[UserType]:
        found = await _loaders(info).user.load_many(self.member_ids)
        return [UserType.from_pydantic(u) for u in found if u is not None]


@from_model(model=Stage, all_fields=True, name="Stage", description="A stage of a pipeline.")
class StageType:
    pass


@from_model(model=Pipeline, all_fields=True, name="Pipeline", description="A sales pipeline with ordered stages.")
class PipelineType:
    pass


@from_model(model=StageChange, all_fields=True, name="StageChange", description="One stage change of a deal.")
class StageChangeType:
    @strawberry.field(description="The stage before (null when created, or if that stage was deleted).")
    async def from_stage(self, info: strawberry.Info) -> StageType | None:
        return await _one(_loaders(info).stage, self.from_stage_id, StageType)

    @strawberry.field(description="The stage after.")
    async def to_stage(self, info: strawberry.Info) -> StageType | None:
        return await _one(_loaders(info).stage, self.to_stage_id, StageType)


def _attachments(link: str) -> tuple[Any, Any]:
    """`activities` and `notes` relation fields for a record type linked through `link` (e.g. deal_id)."""

    @strawberry.field(description="Activities attached to this record, due first.")
    async def activities(self: Any, info: strawberry.Info) -> list[Lazy["ActivityType"]]:
        found = await _loaders(info).activities_of[link].load(self.id)
        return [ActivityType.from_pydantic(a) for a in found]

    @strawberry.field(description="Notes attached to this record, newest first.")
    async def notes(self: Any, info: strawberry.Info) -> list[Lazy["NoteType"]]:
        found = await _loaders(info).notes_of[link].load(self.id)
        return [NoteType.from_pydantic(n) for n in found]

    return activities, notes


def _owner_field() -> Any:
    @strawberry.field(description="The owner.")
    async def owner(self: Any, info: strawberry.Info) -> UserType | None:
        return await _one(_loaders(info).user, self.owner_id, UserType)

    return owner


@from_model(model=CitedText, all_fields=True, name="CitedText", description="A point with the records it rests on.")
class CitedTextType:
    pass


@from_model(model=SummaryContent, all_fields=True, name="SummaryContent",
            description="What the model wrote: plain text, to be shown as text (never as HTML or Markdown links).")
class SummaryContentType:
    pass


@from_model(model=Summary, all_fields=True, name="Summary",
            description="An AI summary you requested: queued at once, done a moment later (read it again). Made "
                        "from what you could see when it was made.")
class SummaryType:
    pass


def _latest_summary_field(subject_type: SummarySubject) -> Any:
    @strawberry.field(description="Your newest finished AI summary of it (null without one, or without AI_USE).")
    async def latest_summary(self: Any, info: strawberry.Info) -> SummaryType | None:
        if not info.context.principal.can(Perm.AI_USE):
            return None
        return await _one(_loaders(info).latest_summary[subject_type], self.id, SummaryType)

    return latest_summary


@from_model(model=Organization, all_fields=True, name="Organization", description="A company or institution.")
class OrganizationType:
    owner = _owner_field()
    activities, notes = _attachments("organization_id")
    latest_summary = _latest_summary_field(SummarySubject.ORGANIZATION)


@from_model(model=Person, all_fields=True, name="Person", description="A contact person.")
class PersonType:
    owner = _owner_field()
    activities, notes = _attachments("person_id")
    latest_summary = _latest_summary_field(SummarySubject.PERSON)

    @strawberry.field(description="The organization the person works for.")
    async def organization(self, info: strawberry.Info) -> OrganizationType | None:
        return await _one(_loaders(info).organization, self.organization_id, OrganizationType)


@from_model(model=Deal, all_fields=True, name="Deal", description="A deal moving through a pipeline.")
class DealType:
    owner = _owner_field()
    activities, notes = _attachments("deal_id")
    latest_summary = _latest_summary_field(SummarySubject.DEAL)

    @strawberry.field(description="The deal's pipeline.")
    async def pipeline(self, info: strawberry.Info) -> PipelineType | None:
        return await _one(_loaders(info).pipeline, self.pipeline_id, PipelineType)

    @strawberry.field(description="The deal's current stage.")
    async def stage(self, info: strawberry.Info) -> StageType | None:
        return await _one(_loaders(info).stage, self.stage_id, StageType)

    @strawberry.field(description="The contact person.")
    async def person(self, info: strawberry.Info) -> PersonType | None:
        return await _one(_loaders(info).person, self.person_id, PersonType)

    @strawberry.field(description="The organization.")
    async def organization(self, info: strawberry.Info) -> OrganizationType | None:
        return await _one(_loaders(info).organization, self.organization_id, OrganizationType)

    @strawberry.field(description="Every stage change, oldest first.")
    async def stage_history(self, info: strawberry.Info) -> list[StageChangeType]:
        found = await _loaders(info).stage_history.load(self.id)
        return [StageChangeType.from_pydantic(c) for c in found]


@from_model(model=Lead, all_fields=True, name="Lead", description="A lead in the inbox, before it becomes a deal.")
class LeadType:
    owner = _owner_field()
    activities, notes = _attachments("lead_id")

    @strawberry.field(description="The linked person.")
    async def person(self, info: strawberry.Info) -> PersonType | None:
        return await _one(_loaders(info).person, self.person_id, PersonType)

    @strawberry.field(description="The linked organization.")
    async def organization(self, info: strawberry.Info) -> OrganizationType | None:
        return await _one(_loaders(info).organization, self.organization_id, OrganizationType)

    @strawberry.field(description="The deal this lead became.")
    async def converted_deal(self, info: strawberry.Info) -> DealType | None:
        return await _one(_loaders(info).deal, self.converted_deal_id, DealType)


def _links() -> tuple[Any, Any, Any, Any]:
    @strawberry.field(description="The deal it belongs to.")
    async def deal(self: Any, info: strawberry.Info) -> Lazy["DealType"] | None:
        return await _one(_loaders(info).deal, self.deal_id, DealType)

    @strawberry.field(description="The lead it belongs to.")
    async def lead(self: Any, info: strawberry.Info) -> Lazy["LeadType"] | None:
        return await _one(_loaders(info).lead, self.lead_id, LeadType)

    @strawberry.field(description="The person it belongs to.")
    async def person(self: Any, info: strawberry.Info) -> PersonType | None:
        return await _one(_loaders(info).person, self.person_id, PersonType)

    @strawberry.field(description="The organization it belongs to.")
    async def organization(self: Any, info: strawberry.Info) -> OrganizationType | None:
        return await _one(_loaders(info).organization, self.organization_id, OrganizationType)

    return deal, lead, person, organization


@from_model(model=Activity, all_fields=True, name="Activity", description="A task, call, meeting, email or deadline.")
class ActivityType:
    owner = _owner_field()
    deal, lead, person, organization = _links()


@from_model(model=Note, all_fields=True, name="Note", description="A note on a CRM record.")
class NoteType:
    deal, lead, person, organization = _links()

    @strawberry.field(description="Who wrote it.")
    async def author(self, info: strawberry.Info) -> UserType | None:
        return await _one(_loaders(info).user, self.author_id, UserType)


@from_model(model=SearchHit, all_fields=True, name="SearchHit", description="One search result.")
class SearchHitType:
    pass


@from_model(model=AuditEntry, all_fields=False, name="AuditEntry", description="One audited change.")
class AuditEntryType:
    id: strawberry.auto
    actor_id: strawberry.auto
    channel: strawberry.auto
    operation: strawberry.auto
    entity_type: strawberry.auto
    entity_id: strawberry.auto
    occurred_at: strawberry.auto
    diff: JSON = strawberry.field(description="Changed fields: {before: {...}, after: {...}}.")


@from_model(model=Erasure, all_fields=False, name="Erasure",
            description="A GDPR erasure of a person: its progress and what it removed (never the identifiers).")
class ErasureType:
    id: strawberry.auto
    person_id: strawberry.auto
    requested_by: strawberry.auto
    status: strawberry.auto
    counts: JSON
    hits: strawberry.auto
    created_at: strawberry.auto
    completed_at: strawberry.auto
    error: strawberry.auto


@from_model(model=ConversionResult, all_fields=True, name="LeadConversion", description="A converted lead.")
class ConversionType:
    pass


@strawberry.type(description="Where a page ends and whether more follow.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether another page follows.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")


@strawberry.type(description="One record on a page, with its cursor.")
class Edge(Generic[N]):
    cursor: str = strawberry.field(description="This record's position, usable as `after`.")
    node: N = strawberry.field(description="The record.")


@strawberry.type(description="A page of records.")
class Connection(Generic[N]):
    edges: list[Edge[N]] = strawberry.field(description="The records on this page.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")
    total_count: int = strawberry.field(description="How many records match the filter in all.")


def connection(page: Page[Any], convert: Any) -> Connection[Any]:
    """A service page as a connection, each edge with its item's position in the order the page was read in."""
    edges = [Edge(cursor=page.position(i), node=convert.from_pydantic(item)) for i, item in enumerate(page.items)]
    return Connection(
        edges=edges,
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None),
        total_count=page.total,
    )


def page_request(first: int, after: str | None) -> PageRequest:
    try:
        return PageRequest(limit=first, after=after)
    except ValidationError as exc:  # only the page size has bounds to break
        raise Invalid(f"first must be between 1 and {MAX_LIMIT}", field="first") from exc


@from_model(
    model=Notification, all_fields=True, name="Notification",
    description="Something that happened for you, e.g. an activity's reminder is due. What it shows of the record "
                "(subject, due date) is read now, as you may see it: null when the record is gone or hidden.",
)
class NotificationType:
    pass


@from_model(model=Me, all_fields=True, name="Me", description="The caller: profile, token scopes, permissions.")
class MeType:
    @strawberry.field(description="Your notifications, unread first, then newest first.")
    async def notifications(
        self, info: strawberry.Info, first: int = DEFAULT_LIMIT, after: str | None = None, unread_only: bool = False
    ) -> Connection[NotificationType]:
        page = await notifications.list(await info.context.read(), page_request(first, after), unread_only=unread_only)
        return connection(page, NotificationType)

    @strawberry.field(description="How many of your notifications are unread.")
    async def unread_notification_count(self, info: strawberry.Info) -> int:
        return await notifications.unread_count(await info.context.read())

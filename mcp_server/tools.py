"""The CRM tools. Each is one service call; its docstring is written for the model that will call it.

Every tool runs as the calling user, through the same permission checks and Row Level Security as the web app.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from mcp_server import records
from mcp_server.records import DealDetail, LeadDetail, OrganizationDetail, PersonDetail
from mcp_server.registry import Call, CrmTool, crm_tool
from mcp_server.safety import clean_text
from services.activities import service as activities
from services.activities.schemas import Activity, ActivityCreate, ActivityFilter
from services.contacts import service as contacts
from services.contacts.schemas import (
    Organization,
    OrganizationCreate,
    OrganizationFilter,
    OrganizationUpdate,
    Person,
    PersonCreate,
    PersonFilter,
    PersonUpdate,
)
from services.deals import service as deals
from services.deals.schemas import Deal, DealBrief, DealCreate, DealFilter, DealSort, DealUpdate
from services.deletion import service as deletion
from services.deletion.schemas import DeletableType, DeletionPreview
from services.kernel.errors import Conflict, Invalid
from services.kernel.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest
from services.kernel.schemas import MAX_SEARCH_TEXT
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.leads.schemas import ConversionResult, Lead, LeadConversion, LeadCreate, LeadFilter
from services.notes import service as notes
from services.notes.schemas import Note, NoteCreate, NoteFilter
from services.notifications import service as notifications
from services.notifications.schemas import Notification
from services.pipelines import service as pipelines
from services.pipelines.schemas import Pipeline
from services.reports import service as reports
from services.reports.schemas import PipelineSummary
from services.search import service as search_service
from services.search.schemas import SearchHit, SearchType
from services.summaries import service as summaries
from services.summaries.schemas import Summary, SummarySubject
from services.users import service as users
from services.users.schemas import Me

TOOLS: list[CrmTool] = []

RESOLVE_FIRST = "Resolve names to ids with `search` first; never guess ids."

DealId = Annotated[UUID, Field(description="From `search`/`list_deals`.")]
PersonId = Annotated[UUID, Field(description="From `search`/`list_persons`.")]
OrganizationId = Annotated[UUID, Field(description="From `search`/`list_organizations`.")]
LeadId = Annotated[UUID, Field(description="From `search`/`list_leads`.")]
ActivityId = Annotated[UUID, Field(description="From `list_activities`.")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]
Sort = Annotated[DealSort, Field(description="Ties by id; no expected close date: last.")]
Cursor = Annotated[str | None, Field(description="Last page's `next_cursor`.")]
IdempotencyKey = Annotated[
    str | None, Field(max_length=200, description="A retry returns the first result.")
]
ExpectedVersion = Annotated[
    int | None, Field(description="Refused unless still this `version`.")
]


# A cursor copied out of a result's text may bring the sentence's full stop, quotes or spaces along: none of them
# is ever part of a cursor.
CURSOR_NOISE = " \t\r\n.'\"`"


def _page(limit: int, cursor: str | None) -> PageRequest:
    return PageRequest(limit=limit, after=None if cursor is None else cursor.strip(CURSOR_NOISE))


# Who am I, and finding things --------------------------------------------------------------------------


@crm_tool(TOOLS, title="Who am I", calls=users.whoami, read_only=True)
async def whoami(uow: UnitOfWork) -> Me:
    """The user you act for: profile, token scopes, permissions in effect. Call it when unsure what you may do
    (a read-only token cannot write even where the user could)."""
    return await users.whoami(uow)


@crm_tool(TOOLS, title="Search the CRM", calls=search_service.search, read_only=True)
async def search(
    uow: UnitOfWork,
    query: Annotated[str, Field(min_length=2, max_length=MAX_SEARCH_TEXT)],
    types: Annotated[list[SearchType] | None, Field(description="Default: all.")] = None,
    limit: Annotated[int, Field(ge=1, le=search_service.MAX_LIMIT)] = 10,
) -> list[SearchHit]:
    """Find persons, organizations, deals and leads by name, email, domain or title, best first: turn a name the
    user mentions into an id before other tools. If several hits fit, ask the user which."""
    return await search_service.search(uow, query, types=types, limit=limit)


# Reading records ---------------------------------------------------------------------------------------


@crm_tool(TOOLS, title="Get a deal", calls=deals.get, read_only=True)
async def get_deal(uow: UnitOfWork, deal_id: DealId) -> DealDetail:
    """One deal (id from `search`) with its stage, contact, organization, newest notes and open activities."""
    return await records.deal_detail(uow, deal_id)


@crm_tool(TOOLS, title="Get a person", calls=contacts.get_person, read_only=True)
async def get_person(uow: UnitOfWork, person_id: PersonId) -> PersonDetail:
    """One person with their organization, deals, newest notes and open activities."""
    return await records.person_detail(uow, person_id)


@crm_tool(TOOLS, title="Get an organization", calls=contacts.get_organization, read_only=True)
async def get_organization(uow: UnitOfWork, organization_id: OrganizationId) -> OrganizationDetail:
    """One organization with its persons, deals and newest notes."""
    return await records.organization_detail(uow, organization_id)


@crm_tool(TOOLS, title="Get a lead", calls=leads.get, read_only=True)
async def get_lead(uow: UnitOfWork, lead_id: LeadId) -> LeadDetail:
    """One inbox lead with its person, organization, newest notes and open activities."""
    return await records.lead_detail(uow, lead_id)


@crm_tool(TOOLS, title="List deals", calls=deals.list_briefs, read_only=True)
async def list_deals(
    uow: UnitOfWork, filter: DealFilter, sort: Sort = DealSort.CREATED_DESC, limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DealBrief]:
    """Deals you may see, filtered and sorted (biggest open one: status=open, sort=value_desc, limit=1). Brief
    items with names; `get_deal` has the rest. `total` counts every match. Pipeline and stage ids:
    `list_pipelines`."""
    return await deals.list_briefs(uow, filter, _page(limit, cursor), sort=sort)


@crm_tool(TOOLS, title="List persons", calls=contacts.list_persons, read_only=True)
async def list_persons(
    uow: UnitOfWork, filter: PersonFilter, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[Person]:
    """Persons you may see, newest first, by owner, team, organization or text (by name or email: `search`)."""
    return await contacts.list_persons(uow, filter, _page(limit, cursor))


@crm_tool(TOOLS, title="List organizations", calls=contacts.list_organizations, read_only=True)
async def list_organizations(
    uow: UnitOfWork, filter: OrganizationFilter, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[Organization]:
    """Organizations you may see, newest first, by owner, team or text (by name: `search`)."""
    return await contacts.list_organizations(uow, filter, _page(limit, cursor))


@crm_tool(TOOLS, title="List leads", calls=leads.list, read_only=True)
async def list_leads(
    uow: UnitOfWork, filter: LeadFilter, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[Lead]:
    """Inbox leads you may see, newest first, by status, label, owner or text."""
    return await leads.list(uow, filter, _page(limit, cursor))


@crm_tool(TOOLS, title="List activities", calls=activities.list, read_only=True)
async def list_activities(
    uow: UnitOfWork, filter: ActivityFilter, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[Activity]:
    """Activities you may see, by linked record, owner, type, done or due date."""
    return await activities.list(uow, filter, _page(limit, cursor))


@crm_tool(TOOLS, title="List notes", calls=notes.list, read_only=True, omit=("team_id", "updated_since"))
async def list_notes(
    uow: UnitOfWork, filter: NoteFilter, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[Note]:
    """Notes you may see, newest first; `owner_id` is the author."""
    return await notes.list(uow, filter, _page(limit, cursor))


@crm_tool(TOOLS, title="List pipelines", calls=pipelines.list, read_only=True)
async def list_pipelines(uow: UnitOfWork) -> list[Pipeline]:
    """Every pipeline with its stages in order (id, win probability %). Call it for pipeline and stage ids."""
    return await pipelines.list(uow)


# Reports ------------------------------------------------------------------------------------------------


@crm_tool(TOOLS, title="Pipeline summary", calls=reports.pipeline_summaries, read_only=True)
async def pipeline_summary(
    uow: UnitOfWork,
    pipeline_id: Annotated[UUID | None, Field(description="Default: every pipeline.")] = None,
    since: Annotated[date | None, Field(description="Won/lost from; default 29 days before `until`.")] = None,
    until: Annotated[date | None, Field(description="Won/lost up to (inclusive); default today.")] = None,
    stale_days: Annotated[int, Field(ge=1, le=365, description="Idle days that make an open deal stale.")] = 30,
) -> list[PipelineSummary]:
    """Pipelines at a glance (deals the user may see): open deals per stage with value and weighted value per
    currency, deals won and lost in a period, open deals untouched for `stale_days`. Start reviews here."""
    return await reports.pipeline_summaries(uow, pipeline_id, since=since, until=until, stale_days=stale_days)


# Your notifications -----------------------------------------------------------------------------------


@crm_tool(TOOLS, title="List your notifications", calls=notifications.list, read_only=True)
async def list_notifications(
    uow: UnitOfWork,
    unread_only: Annotated[bool, Field(description="Only unread ones.")] = False,
    cursor: Cursor = None,
) -> Page[Notification]:
    """The user's reminders of due activities (`entity_id`: the activity), unread first, then newest."""
    # 25 notifications (no free text but a capped subject) stay far below the result budget, so the page is never
    # cut; a cut page would continue with the shared time-and-id cursor, which the inbox's order does not use.
    return await notifications.list(uow, _page(DEFAULT_LIMIT, cursor), unread_only=unread_only)


@crm_tool(TOOLS, title="Mark notifications read", calls=notifications.mark_read, idempotent=True)
async def mark_notifications_read(
    uow: UnitOfWork,
    notification_ids: Annotated[list[UUID], Field(min_length=1, max_length=DEFAULT_LIMIT,
                                                  description="Ids from `list_notifications`.")],
) -> list[Notification]:
    """Mark notifications read once the user has seen them."""
    return [await notifications.mark_read(uow, notification_id) for notification_id in notification_ids]


# AI summaries (scope crm.ai) ----------------------------------------------------------------------------


@crm_tool(TOOLS, title="Request an AI summary", calls=summaries.request_summary)
async def request_summary(
    uow: UnitOfWork,
    subject_type: SummarySubject,
    subject_id: Annotated[UUID, Field(description="A pipeline's: your deals in it.")],
) -> Summary:
    """Queue an AI summary of a record; call `get_summary` seconds later."""
    return await summaries.request_summary(uow, subject_type, subject_id)


@crm_tool(TOOLS, title="Get an AI summary", calls=summaries.get, read_only=True)
async def get_summary(
    uow: UnitOfWork, summary_id: Annotated[UUID, Field(description="From `request_summary`.")]
) -> Summary:
    """A summary you requested: status, then content (`stale`: the record changed since)."""
    return await summaries.get(uow, summary_id)


# Changing deals ----------------------------------------------------------------------------------------


@crm_tool(TOOLS, title="Create a deal", calls=deals.create)
async def create_deal(uow: UnitOfWork, data: DealCreate, idempotency_key: IdempotencyKey = None) -> Deal:
    """Create a deal (stage ids: `list_pipelines`). For its contact, `search` first; create one
    (`create_person`/`create_organization`) only if none is found."""
    return await deals.create(uow, data, idempotency_key=idempotency_key)


@crm_tool(TOOLS, title="Update a deal", calls=deals.update, idempotent=True)
async def update_deal(
    uow: UnitOfWork, deal_id: DealId, changes: DealUpdate, expected_version: ExpectedVersion = None
) -> Deal:
    """Change a deal. Send only what changes; null clears (`person_id: null` unlinks). Stage and status:
    `move_deal_stage`, `mark_deal_won`, `mark_deal_lost`."""
    return await deals.update(uow, deal_id, changes, expected_version=expected_version)


@crm_tool(TOOLS, title="Move a deal to a stage", calls=deals.move_stage, idempotent=True)
async def move_deal_stage(
    uow: UnitOfWork,
    deal_id: DealId,
    stage_id: Annotated[UUID, Field(description="From `list_pipelines`.")],
    pipeline_id: Annotated[UUID | None, Field(description="Only for a stage of another pipeline.")] = None,
    expected_version: ExpectedVersion = None,
) -> Deal:
    """Move a deal to another stage (recorded in its stage history)."""
    return await deals.move_stage(uow, deal_id, stage_id, pipeline_id=pipeline_id, expected_version=expected_version)


@crm_tool(TOOLS, title="Mark a deal won", calls=deals.mark_won, idempotent=True)
async def mark_deal_won(uow: UnitOfWork, deal_id: DealId, expected_version: ExpectedVersion = None) -> Deal:
    """Mark a deal won, only when the user says so. A won deal is returned unchanged."""
    return await deals.mark_won(uow, deal_id, expected_version=expected_version)


@crm_tool(TOOLS, title="Mark a deal lost", calls=deals.mark_lost, idempotent=True)
async def mark_deal_lost(
    uow: UnitOfWork,
    deal_id: DealId,
    reason: Annotated[str, Field(min_length=1, max_length=500, description="In a few words.")],
    expected_version: ExpectedVersion = None,
) -> Deal:
    """Mark a deal lost with the user's reason (ask; never invent one). A lost deal is returned unchanged."""
    return await deals.mark_lost(uow, deal_id, reason, expected_version=expected_version)


# Contacts and leads ------------------------------------------------------------------------------------


@crm_tool(TOOLS, title="Create a person", calls=contacts.create_person)
async def create_person(
    uow: UnitOfWork,
    data: PersonCreate,
    force: Annotated[bool, Field(description="Create despite a duplicate (rarely right).")] = False,
    idempotency_key: IdempotencyKey = None,
) -> Person:
    """Create a person; `search` first. A person with one of the emails is refused as `[duplicate]` with its
    id: use that one."""
    return await contacts.create_person(uow, data, force=force, idempotency_key=idempotency_key)


@crm_tool(TOOLS, title="Create an organization", calls=contacts.create_organization)
async def create_organization(
    uow: UnitOfWork,
    data: OrganizationCreate,
    force: Annotated[bool, Field(description="Create despite a duplicate (rarely right).")] = False,
    idempotency_key: IdempotencyKey = None,
) -> Organization:
    """Create an organization; `search` first. One with the same name or domain is refused as `[duplicate]`
    with its id: use that one."""
    return await contacts.create_organization(uow, data, force=force, idempotency_key=idempotency_key)


class ContactChanges(PersonUpdate, OrganizationUpdate):
    """A person's and an organization's changeable fields in one set; each contact type takes its own."""


@crm_tool(TOOLS, title="Update a person or organization", calls=contacts.update_person, idempotent=True)
async def update_contact(
    uow: UnitOfWork,
    contact_type: Literal["person", "organization"],
    contact_id: Annotated[UUID, Field(description="From `search`.")],
    changes: ContactChanges,
    expected_version: ExpectedVersion = None,
) -> Person | Organization:
    """Change a person (first_name, last_name, emails, phones, job_title, organization_id) or an organization
    (name, domain, address). Send only what changes; null clears; lists are replaced whole."""
    given = changes.model_dump(exclude_unset=True)
    model: type[PersonUpdate] | type[OrganizationUpdate] = (
        PersonUpdate if contact_type == "person" else OrganizationUpdate
    )
    if wrong := sorted(set(given) - set(model.model_fields)):
        kind = "a person" if contact_type == "person" else "an organization"
        raise Invalid(f"{wrong[0]} does not apply to {kind}", field=wrong[0])
    if contact_type == "person":
        return await contacts.update_person(
            uow, contact_id, PersonUpdate(**given), expected_version=expected_version
        )
    return await contacts.update_organization(
        uow, contact_id, OrganizationUpdate(**given), expected_version=expected_version
    )


@crm_tool(TOOLS, title="Create a lead", calls=leads.create)
async def create_lead(uow: UnitOfWork, data: LeadCreate, idempotency_key: IdempotencyKey = None) -> Lead:
    """Add a lead (an unqualified prospect) to the inbox. Link a known person or organization (`search`), or
    give the contact's name, email and organization name."""
    return await leads.create(uow, data, idempotency_key=idempotency_key)


@crm_tool(TOOLS, title="Convert a lead to a deal", calls=leads.convert, idempotent=True)
async def convert_lead(uow: UnitOfWork, lead_id: LeadId, data: LeadConversion) -> ConversionResult:
    """Turn a lead into a deal, finding or creating its person and organization and moving its notes and
    activities. Again: returns the same deal."""
    return await leads.convert(uow, lead_id, data)


# Activities and notes ----------------------------------------------------------------------------------


@crm_tool(TOOLS, title="Log or plan an activity", calls=activities.create)
async def log_activity(uow: UnitOfWork, data: ActivityCreate, idempotency_key: IdempotencyKey = None) -> Activity:
    """Record an activity on a deal, lead, person or organization (ids: `search`). Past: log it, then
    `complete_activity`; a follow-up: set `due_date`."""
    return await activities.create(uow, data, idempotency_key=idempotency_key)


@crm_tool(TOOLS, title="Complete an activity", calls=activities.complete, idempotent=True)
async def complete_activity(
    uow: UnitOfWork,
    activity_id: ActivityId,
    done: Annotated[bool, Field(description="false: not done again.")] = True,
    expected_version: ExpectedVersion = None,
) -> Activity:
    """Mark an activity done (or not done again)."""
    return await activities.complete(uow, activity_id, done=done, expected_version=expected_version)


@crm_tool(TOOLS, title="Add a note", calls=notes.create)
async def add_note(uow: UnitOfWork, data: NoteCreate, idempotency_key: IdempotencyKey = None) -> Note:
    """Write a note as the user on at least one deal, lead, person or organization (ids: `search`)."""
    return await notes.create(uow, data, idempotency_key=idempotency_key)


# Deleting -----------------------------------------------------------------------------------------------

DELETE = "delete_record"


class DeletionOutcome(BaseModel):
    deleted: bool = Field(description="True once the record is gone.")
    preview: DeletionPreview = Field(description="What is (or would be) deleted, and what loses its link to it.")
    confirmation: str | None = Field(
        None, description="Pass back as `confirmation`, with the same arguments, to delete (valid 5 minutes)."
    )
    declined: bool = Field(False, description="True when the user was asked and said no: nothing was deleted.")
    next_step: str = Field(description="What to do now (written by the server, not taken from the record).")

PREVIEWED = (
    "Nothing was deleted. Show the user this record and what happens to the linked records; only if they agree, "
    "call delete_record again with the same record_type, record_id and this confirmation (valid 5 minutes)."
)


class ConfirmDeletion(BaseModel):
    delete: bool = Field(description="Yes, delete it.")


# Idempotent: repeating a confirmed delete deletes nothing more (the record is gone; the repeat says so).
@crm_tool(
    TOOLS, title="Delete a record", calls=deletion.delete, destructive=True, idempotent=True,
    any_of=deletion.PERMISSIONS.values(),
)
async def delete_record(
    call: Call,
    record_type: DeletableType,
    record_id: Annotated[UUID, Field(description="From `search` or a list tool.")],
    confirmation: Annotated[str | None, Field(description="From the preview; omit to preview.")] = None,
) -> DeletionOutcome:
    """Delete a record, only when the user asked for exactly that. Without `confirmation` nothing is deleted:
    you get a preview (what is deleted or unlinked) and a `confirmation`. Show it; only if the user agrees, call
    again adding `confirmation`. A client that can ask the user is asked instead."""
    subject = {"record_type": record_type.value, "record_id": str(record_id)}
    if confirmation is not None:
        state = call.confirmations.check(confirmation, call.caller.user_id, DELETE, subject)
        try:
            return await _delete(call, record_type, record_id, state["version"])
        except Conflict as exc:  # the record changed since the preview: this confirmation can never work again
            raise Conflict(f"{record_type.value} {record_id} changed since the preview; this confirmation will "
                           "never work: preview again (call without `confirmation`) and show the user the new "
                           "preview") from exc
    async with call.unit_of_work() as uow:
        preview = await deletion.preview(uow, record_type, record_id)
    version = preview.record.version
    if call.can_elicit():
        assert call.context is not None
        answer = await call.context.elicit(_question(preview), ConfirmDeletion)
        if answer.action == "accept" and answer.data.delete:
            return await _delete(call, record_type, record_id, version)
        return DeletionOutcome(deleted=False, preview=preview, declined=True,
                               next_step="The user said no: nothing was deleted. Do not ask again unprompted.")
    token = call.confirmations.issue(call.caller.user_id, DELETE, subject, {"version": version})
    return DeletionOutcome(deleted=False, preview=preview, confirmation=token, next_step=PREVIEWED)


async def _delete(call: Call, record_type: DeletableType, record_id: UUID, version: int | None) -> DeletionOutcome:
    async with call.unit_of_work() as uow:
        gone = await deletion.delete(uow, record_type, record_id, expected_version=version)
    return DeletionOutcome(deleted=True, preview=gone, next_step="Deleted; tell the user what was removed.")


def _question(preview: DeletionPreview) -> str:
    record = preview.record
    effects = [f"{c.count} {c.entity_type.value.replace('_', ' ')}(s) {c.effect.value}" for c in preview.consequences]
    also = f" Also: {', '.join(effects)}." if effects else ""
    title = clean_text(record.title, 200)
    return f"Delete {record.entity_type.value} \u201c{title}\u201d?{also} This cannot be undone."

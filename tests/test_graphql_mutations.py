"""Every GraphQL mutation over HTTP: the success path (exact fields returned, what was stored, one audit row on
the graphql channel, the outbox events) and the refusals the gateway maps: FORBIDDEN, NOT_FOUND,
BAD_USER_INPUT (with the field), CONFLICT (stale versions, duplicates); plus idempotency keys, partial updates
and the domain flows. Business rules themselves are tested at the service layer; here the mapping is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from conftest import counts, events, forget_bookkeeping
from psycopg import sql
from psycopg.rows import dict_row
from pydantic_core import to_jsonable_python

from graphql_api.schema import build_schema
from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.permissions import Scope
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput

QUALIFIED, CONTACT_MADE, PROPOSAL, NEGOTIATION = range(4)  # indexes into company.sales_stage_ids
READ_ONLY = [Scope.READ]

# Where each kind of record is stored.
TABLES = {
    "team": "teams", "user": "user_profiles", "pipeline": "pipelines", "stage": "stages", "activity": "activities",
    "note": "notes", "lead": "leads", "person": "persons", "organization": "organizations", "deal": "deals",
    "gdpr_erasure": "gdpr_erasures",
}
# Every table a mutation may write, for "nothing was written" (contents, not just counts).
WRITABLE = (
    "user_profiles", "user_roles", "teams", "team_members", "pipelines", "stages", "organizations", "persons",
    "deals", "deal_stage_history", "leads", "activities", "notes", "audit_log", "outbox", "idempotency_keys",
    "ai_summaries", "gdpr_erasures",
)


# The world every test starts from -----------------------------------------------------------------------


@dataclass
class World:
    """Ids (as GraphQL strings) of the test company and of bob's records, all visible to their owner only."""

    users: dict[str, str]
    teams: dict[str, str]
    sales: str
    sales_stages: list[str]
    hiring: str
    applied: str
    offer: str
    organization: str
    person: str
    deal: str
    won_deal: str
    lead: str
    archived_lead: str
    activity: str
    note: str

    def stage(self, index: int) -> str:
        return self.sales_stages[index]


@pytest.fixture
async def world(actors, company, admin) -> World:
    """Bob's organization, person, deal (Qualified, probability 40), won deal, lead, archived lead, an activity
    and a note on the deal, all owner-only; alice's second pipeline "Hiring" (Applied 5, Offer 80); dan's
    avatar. The audit log and outbox start empty."""
    async with actors.uow("alice") as uow:
        hiring = await pipelines.create(uow, PipelineCreate(name="Hiring", stages=[
            StageInput(name="Applied", win_probability=5), StageInput(name="Offer", win_probability=80)]))
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(
            name="Harbor Works", domain="harbor.example", address="1 Quay Street", visibility="owner"))
        person = await contacts.create_person(uow, PersonCreate(
            first_name="Greta", last_name="Lind", emails=["greta@harbor.example"], job_title="Port engineer",
            organization_id=org.id, visibility="owner"))
        deal = await deals.create(uow, DealCreate(
            title="Harbor crane retrofit", value=Decimal("1000"), person_id=person.id, organization_id=org.id,
            expected_close_date=date(2026, 3, 31), probability=40, visibility="owner"))
        won_deal = await deals.create(uow, DealCreate(title="Dock lights", value=Decimal("300"), visibility="owner"))
        await deals.mark_won(uow, won_deal.id)
        lead = await leads.create(uow, LeadCreate(
            title="Fjord expansion", source="web", value=Decimal("500"), contact_name="Ola Berg",
            contact_email="ola@fjord.example", organization_name="Fjord Shipping", labels=["warm"],
            visibility="owner"))
        archived = await leads.create(uow, LeadCreate(title="Old inquiry", visibility="owner"))
        await leads.archive(uow, archived.id)
        activity = await activities.create(uow, ActivityCreate(
            type="call", subject="Call the harbor master", deal_id=deal.id, due_date=date(2026, 2, 2),
            note="Ask about the crane load"))
        note = await notes.create(uow, NoteCreate(body="Crane specs sent", deal_id=deal.id, person_id=person.id))
    admin.execute("update public.user_profiles set avatar_url = 'https://img.example/dan-old.png' where id = %s",
                  [company.people["dan"].id])
    forget_bookkeeping(admin)
    return World(
        users={key: str(p.id) for key, p in company.people.items()},
        teams={name: str(tid) for name, tid in company.team_ids.items()},
        sales=str(company.sales_pipeline_id), sales_stages=[str(s) for s in company.sales_stage_ids],
        hiring=str(hiring.id), applied=str(hiring.stages[0].id), offer=str(hiring.stages[1].id),
        organization=str(org.id), person=str(person.id), deal=str(deal.id), won_deal=str(won_deal.id),
        lead=str(lead.id), archived_lead=str(archived.id), activity=str(activity.id), note=str(note.id),
    )


# Reading back what was written, as superuser -------------------------------------------------------------


def database_state(admin) -> dict[str, tuple[int, str]]:
    """(row count, digest of every row) per writable table: equal states mean nothing was written."""
    state = {}
    for table in WRITABLE:
        state[table] = admin.execute(
            sql.SQL("select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                    " from {} t").format(sql.Identifier("public", table))
        ).fetchone()
    return state


def stored(admin, entity: str, record_id: str, *columns: str) -> list[Any] | None:
    """The record's columns (or SQL expressions over its table) as JSON values; None if it is gone."""
    table = TABLES[entity]
    row = admin.execute(f"select {', '.join(columns)} from public.{table} where id = %s", [record_id]).fetchone()
    return None if row is None else to_jsonable_python(list(row))


def whole_row(admin, entity: str, record_id: str) -> dict[str, Any]:
    query = sql.SQL("select * from {} where id = %s").format(sql.Identifier("public", TABLES[entity]))
    return admin.cursor(row_factory=dict_row).execute(query, [record_id]).fetchone()


def audit_rows(admin) -> list[list[Any]]:
    return to_jsonable_python([list(r) for r in admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id from public.audit_log order by id").fetchall()])


def outbox_rows(admin) -> list[list[Any]]:
    return to_jsonable_python([list(r) for r in admin.execute(
        "select name, actor_id, channel from public.outbox order by name").fetchall()])


class _NewId:
    """Stands for the id of a record the mutation created: equal to any UUID string."""

    def __eq__(self, other: object) -> bool:
        try:
            UUID(str(other))
        except ValueError:
            return False
        return isinstance(other, str)

    def __repr__(self) -> str:
        return "NEW"


NEW = _NewId()


# The mutations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One mutation: its document, variables that work for `caller`, the permission it needs, and what a
    success returns (`returned`), stores (`columns` of the returned record read back as `row`), audits
    (`operation` on `entity`, the returned id) and emits (`events`, by name)."""

    name: str
    entity: str
    permission: str  # as GraphQL names it (the Perm enum of `me.permissions`)
    document: str
    variables: Callable[[World], dict[str, Any]]
    returned: Callable[[World], dict[str, Any]]
    columns: tuple[str, ...]
    row: Callable[[World, dict[str, Any]], list[Any] | None]
    operation: str
    events: tuple[str, ...]
    caller: str = "bob"
    # Overrides for convertLead, whose result is not one record.
    audit: Callable[[World, dict[str, Any]], list[tuple[str, str, str]]] | None = None
    record: Callable[[World, dict[str, Any]], str] = field(default=lambda w, d: d["id"])

    def __str__(self) -> str:
        return self.name


MEMBERS = "array(select m.user_id from public.team_members m where m.team_id = teams.id order by m.user_id)"
ROLES = "array(select r.role from public.user_roles r where r.user_id = user_profiles.id order by r.role)"
STAGE_NAMES = "array(select s.name from public.stages s where s.pipeline_id = pipelines.id order by s.position)"
DELETED = "{ id deleted }"
GONE = None

CASES = [
    # Users and teams ---------------------------------------------------------------------------------------
    Case(
        "createTeam", "team", "USERS_MANAGE",
        "mutation($name: String!) { createTeam(name: $name) { id name memberIds } }",
        lambda w: {"name": "North"},
        lambda w: {"id": NEW, "name": "North", "memberIds": []},
        ("name", MEMBERS), lambda w, d: ["North", []],
        "team.create", ("crm/team.created",), caller="alice",
    ),
    Case(
        "addTeamMember", "team", "USERS_MANAGE",
        "mutation($teamId: UUID!, $userId: UUID!) { addTeamMember(teamId: $teamId, userId: $userId)"
        " { id name memberIds } }",
        lambda w: {"teamId": w.teams["West"], "userId": w.users["dan"]},
        lambda w: {"id": w.teams["West"], "name": "West", "memberIds": sorted([w.users["carol"], w.users["dan"]])},
        (MEMBERS,), lambda w, d: [sorted([w.users["carol"], w.users["dan"]])],
        "team.add_member", ("crm/team.member_added",), caller="alice",
    ),
    Case(
        "removeTeamMember", "team", "USERS_MANAGE",
        "mutation($teamId: UUID!, $userId: UUID!) { removeTeamMember(teamId: $teamId, userId: $userId)"
        " { id name memberIds } }",
        lambda w: {"teamId": w.teams["East"], "userId": w.users["dan"]},
        lambda w: {"id": w.teams["East"], "name": "East", "memberIds": sorted([w.users["mia"], w.users["bob"]])},
        (MEMBERS,), lambda w, d: [sorted([w.users["mia"], w.users["bob"]])],
        "team.remove_member", ("crm/team.member_removed",), caller="alice",
    ),
    Case(
        "grantRole", "user", "USERS_MANAGE",
        "mutation($userId: UUID!, $role: Role!) { grantRole(userId: $userId, role: $role) { id roles } }",
        lambda w: {"userId": w.users["bob"], "role": "MANAGER"},
        lambda w: {"id": w.users["bob"], "roles": ["MANAGER", "MEMBER"]},
        (ROLES,), lambda w, d: [["manager", "member"]],
        "user.grant_role", ("crm/user.role_granted",), caller="alice",
    ),
    Case(
        "revokeRole", "user", "USERS_MANAGE",
        "mutation($userId: UUID!, $role: Role!) { revokeRole(userId: $userId, role: $role) { id roles } }",
        lambda w: {"userId": w.users["mia"], "role": "MANAGER"},
        lambda w: {"id": w.users["mia"], "roles": []},
        (ROLES,), lambda w, d: [[]],
        "user.revoke_role", ("crm/user.role_revoked",), caller="alice",
    ),
    Case(
        "updateProfile", "user", "USERS_MANAGE",
        "mutation($userId: UUID!, $input: ProfileUpdateInput!) { updateProfile(userId: $userId, input: $input)"
        " { id email displayName avatarUrl } }",
        lambda w: {"userId": w.users["dan"], "input": {"displayName": "Daniel", "avatarUrl": "https://img.example/dan.png"}},
        lambda w: {"id": w.users["dan"], "email": "dan@example.com", "displayName": "Daniel",
                   "avatarUrl": "https://img.example/dan.png"},
        ("display_name", "avatar_url"), lambda w, d: ["Daniel", "https://img.example/dan.png"],
        "user.update_profile", ("crm/user.profile_updated",), caller="alice",
    ),
    # Pipelines and stages ----------------------------------------------------------------------------------
    Case(
        "createPipeline", "pipeline", "PIPELINES_MANAGE",
        "mutation($input: PipelineCreateInput!) { createPipeline(input: $input)"
        " { id name position version stages { name position winProbability } } }",
        lambda w: {"input": {"name": "Partners", "stages": [{"name": "Intro", "winProbability": 10},
                                                           {"name": "Signed", "winProbability": 90}]}},
        lambda w: {"id": NEW, "name": "Partners", "position": 2, "version": 1, "stages": [
            {"name": "Intro", "position": 0, "winProbability": 10},
            {"name": "Signed", "position": 1, "winProbability": 90}]},
        ("name", "position", STAGE_NAMES), lambda w, d: ["Partners", 2, ["Intro", "Signed"]],
        "pipeline.create", ("crm/pipeline.created",), caller="alice",
    ),
    Case(
        "updatePipeline", "pipeline", "PIPELINES_MANAGE",
        "mutation($id: UUID!, $input: PipelineUpdateInput!, $expectedVersion: Int) {"
        " updatePipeline(id: $id, input: $input, expectedVersion: $expectedVersion) { id name position version } }",
        lambda w: {"id": w.hiring, "input": {"name": "Recruiting"}},
        lambda w: {"id": w.hiring, "name": "Recruiting", "position": 1, "version": 2},
        ("name", "position", "version"), lambda w, d: ["Recruiting", 1, 2],
        "pipeline.update", ("crm/pipeline.updated",), caller="alice",
    ),
    Case(
        "deletePipeline", "pipeline", "PIPELINES_MANAGE",
        "mutation($id: UUID!) { deletePipeline(id: $id) " + DELETED + " }",
        lambda w: {"id": w.hiring},
        lambda w: {"id": w.hiring, "deleted": True},
        ("id",), lambda w, d: GONE,
        "pipeline.delete", ("crm/pipeline.deleted",), caller="alice",
    ),
    Case(
        "createStage", "stage", "PIPELINES_MANAGE",
        "mutation($pipelineId: UUID!, $input: StageCreateInput!) { createStage(pipelineId: $pipelineId, input: $input)"
        " { id pipelineId name position winProbability } }",
        lambda w: {"pipelineId": w.hiring, "input": {"name": "Interview", "winProbability": 30, "position": 1}},
        lambda w: {"id": NEW, "pipelineId": w.hiring, "name": "Interview", "position": 1, "winProbability": 30},
        ("pipeline_id", "name", "position", "win_probability"), lambda w, d: [w.hiring, "Interview", 1, 30],
        "stage.create", ("crm/stage.created",), caller="alice",
    ),
    Case(
        "updateStage", "stage", "PIPELINES_MANAGE",
        "mutation($id: UUID!, $input: StageUpdateInput!, $expectedVersion: Int) {"
        " updateStage(id: $id, input: $input, expectedVersion: $expectedVersion)"
        " { id name position winProbability version } }",
        lambda w: {"id": w.offer, "input": {"winProbability": 85}},
        lambda w: {"id": w.offer, "name": "Offer", "position": 1, "winProbability": 85, "version": 2},
        ("name", "win_probability", "version"), lambda w, d: ["Offer", 85, 2],
        "stage.update", ("crm/stage.updated",), caller="alice",
    ),
    Case(
        "deleteStage", "stage", "PIPELINES_MANAGE",
        "mutation($id: UUID!) { deleteStage(id: $id) " + DELETED + " }",
        lambda w: {"id": w.applied},
        lambda w: {"id": w.applied, "deleted": True},
        ("id",), lambda w, d: GONE,
        "stage.delete", ("crm/stage.deleted",), caller="alice",
    ),
    Case(
        "reorderStages", "pipeline", "PIPELINES_MANAGE",
        "mutation($pipelineId: UUID!, $stageIds: [UUID!]!) {"
        " reorderStages(pipelineId: $pipelineId, stageIds: $stageIds) { id stages { id name position } } }",
        lambda w: {"pipelineId": w.hiring, "stageIds": [w.offer, w.applied]},
        lambda w: {"id": w.hiring, "stages": [{"id": w.offer, "name": "Offer", "position": 0},
                                               {"id": w.applied, "name": "Applied", "position": 1}]},
        (STAGE_NAMES,), lambda w, d: [["Offer", "Applied"]],
        "pipeline.reorder_stages", ("crm/pipeline.stages_reordered",), caller="alice",
    ),
    # Activities --------------------------------------------------------------------------------------------
    Case(
        "createActivity", "activity", "ACTIVITIES_WRITE",
        "mutation($input: ActivityCreateInput!, $key: String) { createActivity(input: $input, idempotencyKey: $key)"
        " { id type subject dealId dueDate dueTime durationMinutes done doneAt ownerId version } }",
        lambda w: {"input": {"type": "MEETING", "subject": "Site visit", "dealId": w.deal, "dueDate": "2026-03-02",
                             "dueTime": "10:30:00", "durationMinutes": 90}},
        lambda w: {"id": NEW, "type": "MEETING", "subject": "Site visit", "dealId": w.deal, "dueDate": "2026-03-02",
                   "dueTime": "10:30:00", "durationMinutes": 90, "done": False, "doneAt": None,
                   "ownerId": w.users["bob"], "version": 1},
        ("type", "subject", "deal_id", "due_date", "due_time", "duration_minutes", "owner_id"),
        lambda w, d: ["meeting", "Site visit", w.deal, "2026-03-02", "10:30:00", 90, w.users["bob"]],
        "activity.create", ("crm/activity.created",),
    ),
    Case(
        "updateActivity", "activity", "ACTIVITIES_WRITE",
        "mutation($id: UUID!, $input: ActivityUpdateInput!, $expectedVersion: Int) {"
        " updateActivity(id: $id, input: $input, expectedVersion: $expectedVersion)"
        " { id type subject durationMinutes dueDate note dealId version } }",
        lambda w: {"id": w.activity, "input": {"subject": "Call the harbor master again", "durationMinutes": 15}},
        lambda w: {"id": w.activity, "type": "CALL", "subject": "Call the harbor master again", "durationMinutes": 15,
                   "dueDate": "2026-02-02", "note": "Ask about the crane load", "dealId": w.deal, "version": 2},
        ("subject", "duration_minutes", "version"), lambda w, d: ["Call the harbor master again", 15, 2],
        "activity.update", ("crm/activity.updated",),
    ),
    Case(
        "completeActivity", "activity", "ACTIVITIES_WRITE",
        "mutation($id: UUID!, $done: Boolean! = true, $expectedVersion: Int) {"
        " completeActivity(id: $id, done: $done, expectedVersion: $expectedVersion) { id done version } }",
        lambda w: {"id": w.activity},
        lambda w: {"id": w.activity, "done": True, "version": 2},
        ("done", "done_at is not null", "version"), lambda w, d: [True, True, 2],
        "activity.complete", ("crm/activity.completed",),
    ),
    Case(
        "deleteActivity", "activity", "ACTIVITIES_DELETE",
        "mutation($id: UUID!) { deleteActivity(id: $id) " + DELETED + " }",
        lambda w: {"id": w.activity},
        lambda w: {"id": w.activity, "deleted": True},
        ("id",), lambda w, d: GONE,
        "activity.delete", ("crm/activity.deleted",),
    ),
    # Notes -------------------------------------------------------------------------------------------------
    Case(
        "createNote", "note", "NOTES_WRITE",
        "mutation($input: NoteCreateInput!, $key: String) { createNote(input: $input, idempotencyKey: $key)"
        " { id body dealId leadId authorId version } }",
        lambda w: {"input": {"body": "Budget **approved**", "dealId": w.deal}},
        lambda w: {"id": NEW, "body": "Budget **approved**", "dealId": w.deal, "leadId": None,
                   "authorId": w.users["bob"], "version": 1},
        ("body", "deal_id", "author_id"), lambda w, d: ["Budget **approved**", w.deal, w.users["bob"]],
        "note.create", ("crm/note.created",),
    ),
    Case(
        "updateNote", "note", "NOTES_WRITE",
        "mutation($id: UUID!, $input: NoteUpdateInput!, $expectedVersion: Int) {"
        " updateNote(id: $id, input: $input, expectedVersion: $expectedVersion) { id body dealId version } }",
        lambda w: {"id": w.note, "input": {"body": "Crane specs sent twice"}},
        lambda w: {"id": w.note, "body": "Crane specs sent twice", "dealId": w.deal, "version": 2},
        ("body", "deal_id", "version"), lambda w, d: ["Crane specs sent twice", w.deal, 2],
        "note.update", ("crm/note.updated",),
    ),
    Case(
        "deleteNote", "note", "NOTES_DELETE",
        "mutation($id: UUID!) { deleteNote(id: $id) " + DELETED + " }",
        lambda w: {"id": w.note},
        lambda w: {"id": w.note, "deleted": True},
        ("id",), lambda w, d: GONE,
        "note.delete", ("crm/note.deleted",),
    ),
    # Leads -------------------------------------------------------------------------------------------------
    Case(
        "createLead", "lead", "LEADS_WRITE",
        "mutation($input: LeadCreateInput!, $key: String) { createLead(input: $input, idempotencyKey: $key)"
        " { id title source value currency labels status ownerId visibility version } }",
        lambda w: {"input": {"title": "Pier lighting", "source": "event", "value": "750", "labels": ["Hot", "pier"]}},
        lambda w: {"id": NEW, "title": "Pier lighting", "source": "event", "value": "750.00", "currency": "USD",
                   "labels": ["hot", "pier"], "status": "OPEN", "ownerId": w.users["bob"], "visibility": "COMPANY",
                   "version": 1},
        ("title", "source", "value", "labels", "status", "owner_id", "visibility"),
        lambda w, d: ["Pier lighting", "event", "750.00", ["hot", "pier"], "open", w.users["bob"], "company"],
        "lead.create", ("crm/lead.created",),
    ),
    Case(
        "updateLead", "lead", "LEADS_WRITE",
        "mutation($id: UUID!, $input: LeadUpdateInput!, $expectedVersion: Int) {"
        " updateLead(id: $id, input: $input, expectedVersion: $expectedVersion)"
        " { id title source value labels version } }",
        lambda w: {"id": w.lead, "input": {"source": "referral", "labels": ["warm", "Priority"]}},
        lambda w: {"id": w.lead, "title": "Fjord expansion", "source": "referral", "value": "500.00",
                   "labels": ["warm", "priority"], "version": 2},
        ("source", "labels", "version"), lambda w, d: ["referral", ["warm", "priority"], 2],
        "lead.update", ("crm/lead.updated",),
    ),
    Case(
        "archiveLead", "lead", "LEADS_WRITE",
        "mutation($id: UUID!, $expectedVersion: Int) { archiveLead(id: $id, expectedVersion: $expectedVersion)"
        " { id status version } }",
        lambda w: {"id": w.lead},
        lambda w: {"id": w.lead, "status": "ARCHIVED", "version": 2},
        ("status", "version"), lambda w, d: ["archived", 2],
        "lead.archive", ("crm/lead.archived",),
    ),
    Case(
        "unarchiveLead", "lead", "LEADS_WRITE",
        "mutation($id: UUID!, $expectedVersion: Int) { unarchiveLead(id: $id, expectedVersion: $expectedVersion)"
        " { id status version } }",
        lambda w: {"id": w.archived_lead},
        lambda w: {"id": w.archived_lead, "status": "OPEN", "version": 3},
        ("status", "version"), lambda w, d: ["open", 3],
        "lead.unarchive", ("crm/lead.unarchived",),
    ),
    Case(
        "convertLead", "lead", "LEADS_CONVERT",
        "mutation($id: UUID!, $input: LeadConversionInput) { convertLead(id: $id, input: $input) {"
        " alreadyConverted createdPerson createdOrganization"
        " lead { id status convertedDealId personId organizationId version }"
        " deal { id title value currency status ownerId personId organizationId pipelineId stageId visibility } } }",
        lambda w: {"id": w.lead},
        lambda w: {
            "alreadyConverted": False, "createdPerson": True, "createdOrganization": True,
            "lead": {"id": w.lead, "status": "CONVERTED", "convertedDealId": NEW, "personId": NEW,
                     "organizationId": NEW, "version": 2},
            "deal": {"id": NEW, "title": "Fjord expansion", "value": "500.00", "currency": "USD", "status": "OPEN",
                     "ownerId": w.users["bob"], "personId": NEW, "organizationId": NEW, "pipelineId": w.sales,
                     "stageId": w.stage(QUALIFIED), "visibility": "OWNER"},
        },
        ("status", "converted_deal_id", "person_id", "organization_id"),
        lambda w, d: ["converted", d["deal"]["id"], d["deal"]["personId"], d["deal"]["organizationId"]],
        "lead.convert",
        ("crm/deal.created", "crm/lead.converted", "crm/organization.created", "crm/person.created"),
        audit=lambda w, d: [
            ("person.create", "person", d["deal"]["personId"]),
            ("organization.create", "organization", d["deal"]["organizationId"]),
            ("deal.create", "deal", d["deal"]["id"]),
            ("lead.convert", "lead", w.lead),
        ],
        record=lambda w, d: w.lead,
    ),
    Case(
        "deleteLead", "lead", "LEADS_DELETE",
        "mutation($id: UUID!) { deleteLead(id: $id) " + DELETED + " }",
        lambda w: {"id": w.lead},
        lambda w: {"id": w.lead, "deleted": True},
        ("id",), lambda w, d: GONE,
        "lead.delete", ("crm/lead.deleted",),
    ),
    # Persons and organizations -----------------------------------------------------------------------------
    Case(
        "createPerson", "person", "CONTACTS_WRITE",
        "mutation($input: PersonCreateInput!, $force: Boolean! = false, $key: String) {"
        " createPerson(input: $input, force: $force, idempotencyKey: $key)"
        " { id name firstName lastName emails phones jobTitle organizationId ownerId visibility version } }",
        lambda w: {"input": {"firstName": "Ola", "lastName": "Berg", "emails": ["Ola@Fjord.example"],
                             "phones": ["+47 22 33 44 55"], "jobTitle": "CTO", "organizationId": w.organization}},
        lambda w: {"id": NEW, "name": "Ola Berg", "firstName": "Ola", "lastName": "Berg",
                   "emails": ["ola@fjord.example"], "phones": ["+47 22 33 44 55"], "jobTitle": "CTO",
                   "organizationId": w.organization, "ownerId": w.users["bob"], "visibility": "COMPANY",
                   "version": 1},
        ("name", "emails", "phones", "job_title", "organization_id", "owner_id", "visibility"),
        lambda w, d: ["Ola Berg", ["ola@fjord.example"], ["+47 22 33 44 55"], "CTO", w.organization,
                      w.users["bob"], "company"],
        "person.create", ("crm/person.created",),
    ),
    Case(
        "updatePerson", "person", "CONTACTS_WRITE",
        "mutation($id: UUID!, $input: PersonUpdateInput!, $expectedVersion: Int) {"
        " updatePerson(id: $id, input: $input, expectedVersion: $expectedVersion)"
        " { id name emails phones jobTitle organizationId version } }",
        lambda w: {"id": w.person, "input": {"jobTitle": "Harbor master", "phones": ["+47 99 88 77 66"]}},
        lambda w: {"id": w.person, "name": "Greta Lind", "emails": ["greta@harbor.example"],
                   "phones": ["+47 99 88 77 66"], "jobTitle": "Harbor master", "organizationId": w.organization,
                   "version": 2},
        ("job_title", "phones", "version"), lambda w, d: ["Harbor master", ["+47 99 88 77 66"], 2],
        "person.update", ("crm/person.updated",),
    ),
    Case(
        "deletePerson", "person", "CONTACTS_DELETE",
        "mutation($id: UUID!) { deletePerson(id: $id) " + DELETED + " }",
        lambda w: {"id": w.person},
        lambda w: {"id": w.person, "deleted": True},
        ("id",), lambda w, d: GONE,
        "person.delete", ("crm/person.deleted",), caller="alice",
    ),
    Case(
        "createOrganization", "organization", "CONTACTS_WRITE",
        "mutation($input: OrganizationCreateInput!, $force: Boolean! = false, $key: String) {"
        " createOrganization(input: $input, force: $force, idempotencyKey: $key)"
        " { id name domain address ownerId visibility version } }",
        lambda w: {"input": {"name": "Fjord Shipping AS", "domain": "https://www.Fjord.example/about",
                             "address": "Pier 4"}},
        lambda w: {"id": NEW, "name": "Fjord Shipping AS", "domain": "fjord.example", "address": "Pier 4",
                   "ownerId": w.users["bob"], "visibility": "COMPANY", "version": 1},
        ("name", "domain", "address", "owner_id", "visibility"),
        lambda w, d: ["Fjord Shipping AS", "fjord.example", "Pier 4", w.users["bob"], "company"],
        "organization.create", ("crm/organization.created",),
    ),
    Case(
        "updateOrganization", "organization", "CONTACTS_WRITE",
        "mutation($id: UUID!, $input: OrganizationUpdateInput!, $expectedVersion: Int) {"
        " updateOrganization(id: $id, input: $input, expectedVersion: $expectedVersion)"
        " { id name domain address version } }",
        lambda w: {"id": w.organization, "input": {"address": "2 Quay Street"}},
        lambda w: {"id": w.organization, "name": "Harbor Works", "domain": "harbor.example",
                   "address": "2 Quay Street", "version": 2},
        ("address", "version"), lambda w, d: ["2 Quay Street", 2],
        "organization.update", ("crm/organization.updated",),
    ),
    Case(
        "deleteOrganization", "organization", "CONTACTS_DELETE",
        "mutation($id: UUID!) { deleteOrganization(id: $id) " + DELETED + " }",
        lambda w: {"id": w.organization},
        lambda w: {"id": w.organization, "deleted": True},
        ("id",), lambda w, d: GONE,
        "organization.delete", ("crm/organization.deleted",), caller="alice",
    ),
    # Deals -------------------------------------------------------------------------------------------------
    Case(
        "createDeal", "deal", "DEALS_WRITE",
        "mutation($input: DealCreateInput!, $key: String) { createDeal(input: $input, idempotencyKey: $key) {"
        " id title value currency status ownerId personId organizationId pipelineId stageId probability"
        " expectedCloseDate visibility weightedValue version } }",
        lambda w: {"input": {"title": "Lighthouse upgrade", "value": "2000", "currency": "eur", "personId": w.person,
                             "organizationId": w.organization, "stageId": w.stage(PROPOSAL), "probability": 30,
                             "expectedCloseDate": "2026-06-30"}},
        lambda w: {"id": NEW, "title": "Lighthouse upgrade", "value": "2000.00", "currency": "EUR", "status": "OPEN",
                   "ownerId": w.users["bob"], "personId": w.person, "organizationId": w.organization,
                   "pipelineId": w.sales, "stageId": w.stage(PROPOSAL), "probability": 30,
                   "expectedCloseDate": "2026-06-30", "visibility": "COMPANY", "weightedValue": "600.00",
                   "version": 1},
        ("title", "value", "currency", "status", "owner_id", "person_id", "organization_id", "pipeline_id",
         "stage_id", "probability", "expected_close_date", "visibility"),
        lambda w, d: ["Lighthouse upgrade", "2000.00", "EUR", "open", w.users["bob"], w.person, w.organization,
                      w.sales, w.stage(PROPOSAL), 30, "2026-06-30", "company"],
        "deal.create", ("crm/deal.created",),
    ),
    Case(
        "updateDeal", "deal", "DEALS_WRITE",
        "mutation($id: UUID!, $input: DealUpdateInput!, $expectedVersion: Int) {"
        " updateDeal(id: $id, input: $input, expectedVersion: $expectedVersion) {"
        " id title value probability weightedValue personId organizationId expectedCloseDate version } }",
        lambda w: {"id": w.deal, "input": {"title": "Harbor crane retrofit, phase 2", "value": "1500"}},
        lambda w: {"id": w.deal, "title": "Harbor crane retrofit, phase 2", "value": "1500.00", "probability": 40,
                   "weightedValue": "600.00", "personId": w.person, "organizationId": w.organization,
                   "expectedCloseDate": "2026-03-31", "version": 2},
        ("title", "value", "version"), lambda w, d: ["Harbor crane retrofit, phase 2", "1500.00", 2],
        "deal.update", ("crm/deal.updated",),
    ),
    Case(
        "moveDealToStage", "deal", "DEALS_WRITE",
        "mutation($id: UUID!, $stageId: UUID!, $pipelineId: UUID, $expectedVersion: Int) {"
        " moveDealToStage(id: $id, stageId: $stageId, pipelineId: $pipelineId, expectedVersion: $expectedVersion)"
        " { id pipelineId stageId stage { name } weightedValue version } }",
        lambda w: {"id": w.deal, "stageId": w.stage(PROPOSAL)},
        lambda w: {"id": w.deal, "pipelineId": w.sales, "stageId": w.stage(PROPOSAL), "stage": {"name": "Proposal"},
                   "weightedValue": "400.00", "version": 2},
        ("pipeline_id", "stage_id", "version"), lambda w, d: [w.sales, w.stage(PROPOSAL), 2],
        "deal.move_stage", ("crm/deal.stage_changed",),
    ),
    Case(
        "markDealWon", "deal", "DEALS_WRITE",
        "mutation($id: UUID!, $expectedVersion: Int) { markDealWon(id: $id, expectedVersion: $expectedVersion)"
        " { id status lostAt lostReason version } }",
        lambda w: {"id": w.deal},
        lambda w: {"id": w.deal, "status": "WON", "lostAt": None, "lostReason": None, "version": 2},
        ("status", "won_at is not null", "version"), lambda w, d: ["won", True, 2],
        "deal.mark_won", ("crm/deal.won",),
    ),
    Case(
        "markDealLost", "deal", "DEALS_WRITE",
        "mutation($id: UUID!, $reason: String!, $expectedVersion: Int) {"
        " markDealLost(id: $id, reason: $reason, expectedVersion: $expectedVersion)"
        " { id status wonAt lostReason version } }",
        lambda w: {"id": w.deal, "reason": "  Went with a competitor "},
        lambda w: {"id": w.deal, "status": "LOST", "wonAt": None, "lostReason": "Went with a competitor", "version": 2},
        ("status", "lost_at is not null", "lost_reason", "version"),
        lambda w, d: ["lost", True, "Went with a competitor", 2],
        "deal.mark_lost", ("crm/deal.lost",),
    ),
    Case(
        "reopenDeal", "deal", "DEALS_WRITE",
        "mutation($id: UUID!, $expectedVersion: Int) { reopenDeal(id: $id, expectedVersion: $expectedVersion)"
        " { id status wonAt lostAt lostReason version } }",
        lambda w: {"id": w.won_deal},
        lambda w: {"id": w.won_deal, "status": "OPEN", "wonAt": None, "lostAt": None, "lostReason": None,
                   "version": 3},
        ("status", "won_at", "version"), lambda w, d: ["open", None, 3],
        "deal.reopen", ("crm/deal.reopened",),
    ),
    Case(
        "deleteDeal", "deal", "DEALS_DELETE",
        "mutation($id: UUID!) { deleteDeal(id: $id) " + DELETED + " }",
        lambda w: {"id": w.deal},
        lambda w: {"id": w.deal, "deleted": True},
        ("id",), lambda w, d: GONE,
        "deal.delete", ("crm/deal.deleted",),
    ),
    # GDPR ----------------------------------------------------------------------------------------------------
    Case(
        "requestErasure", "gdpr_erasure", "GDPR_ERASE",
        "mutation($personId: UUID!) { requestErasure(personId: $personId) { id personId status hits error } }",
        lambda w: {"personId": w.person},
        lambda w: {"id": NEW, "personId": w.person, "status": "QUEUED", "hits": None, "error": None},
        ("person_id", "requested_by", "status", "identifiers"),
        lambda w, d: [w.person, w.users["alice"], "queued",
                      {"name": "Greta Lind", "emails": ["greta@harbor.example"], "phones": []}],
        "gdpr.request", ("crm/gdpr.erasure.requested",), caller="alice",
    ),
]
CASE = {case.name: case for case in CASES}


def cases(predicate: Callable[[Case], bool] = lambda c: True) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in CASES if predicate(c)]


async def run(api, case: Case, variables: dict[str, Any], who: str | None = None,
              scopes: list[Scope] | None = None) -> dict[str, Any]:
    return await api.query(case.document, variables, as_=who or case.caller, scopes=scopes)


def refusal(body: dict[str, Any], case: Case) -> tuple[str, dict[str, Any]]:
    """(message, extensions) of the single error of a refused mutation, which returned no data."""
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["path"] == [case.name]
    return error["message"], error["extensions"]


# Marking your own notifications read needs no permission and writes no audit row or event: tested with the
# rest of the inbox in test_notifications.py.
OWN_INBOX = ["markAllNotificationsRead", "markNotificationRead"]
# Queues a summary of a record rather than changing it: tested (permission, visibility, nothing written, audit,
# event) in test_summaries.py.
QUEUES_WORK = ["requestSummary"]


def test_every_mutation_of_the_schema_has_a_case():
    assert sorted([*CASE, *OWN_INBOX, *QUEUES_WORK]) == sorted(build_schema()._schema.mutation_type.fields)


# Success: returned fields, stored row, audit row on the graphql channel, events ----------------------------


@pytest.mark.parametrize("case", cases())
async def test_mutation_returns_stores_audits_and_emits(api, world, admin, case):
    body = await run(api, case, case.variables(world))

    assert body == {"data": {case.name: case.returned(world)}}
    data = body["data"][case.name]
    assert stored(admin, case.entity, case.record(world, data), *case.columns) == case.row(world, data)
    actor = world.users[case.caller]
    expected_audit = case.audit(world, data) if case.audit else [(case.operation, case.entity, data["id"])]
    assert audit_rows(admin) == [[actor, "graphql", op, entity, record] for op, entity, record in expected_audit]
    assert outbox_rows(admin) == [[name, actor, "graphql"] for name in case.events]


# FORBIDDEN: the permission is named, nothing is written ------------------------------------------------------


def _without_permission() -> list[Any]:
    """Every mutation as vic the viewer and as bob's read-only agent token; the admins' mutations (users,
    pipelines, deleting contacts) also as bob himself, a member."""
    params = []
    for case in CASES:
        callers = [("vic", None, "viewer"), ("bob", READ_ONLY, "read-only-token")]
        if case.caller != "bob":
            callers.append(("bob", None, "member"))
        params += [pytest.param(case, who, scopes, id=f"{case.name}-{label}") for who, scopes, label in callers]
    return params


@pytest.mark.parametrize(("case", "who", "scopes"), _without_permission())
async def test_a_caller_without_the_permission_is_forbidden_naming_it_and_nothing_is_written(
    api, world, admin, case, who, scopes
):
    before = database_state(admin)

    body = await run(api, case, case.variables(world), who, scopes)

    # changing any profile is a write first: a read-only token lacks PROFILE_WRITE before USERS_MANAGE
    missing = "PROFILE_WRITE" if case.name == "updateProfile" and scopes == READ_ONLY else case.permission
    assert refusal(body, case) == (f"missing permission {missing}", {"code": "FORBIDDEN", "permission": missing})
    assert database_state(admin) == before
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_a_member_updates_his_own_profile(api, world, admin):
    body = await run(api, CASE["updateProfile"], {"userId": world.users["bob"], "input": {"displayName": "Bobby"}},
                     "bob")

    assert body == {"data": {"updateProfile": {"id": world.users["bob"], "email": "bob@example.com",
                                               "displayName": "Bobby", "avatarUrl": None}}}
    assert stored(admin, "user", world.users["bob"], "display_name") == ["Bobby"]
    assert audit_rows(admin) == [[world.users["bob"], "graphql", "user.update_profile", "user", world.users["bob"]]]


async def test_a_read_only_token_cannot_update_its_own_profile(api, world, admin):
    case = CASE["updateProfile"]
    before = database_state(admin)

    body = await run(api, case, {"userId": world.users["bob"], "input": {"displayName": "Agent wrote this"}},
                     "bob", READ_ONLY)

    assert refusal(body, case) == ("missing permission PROFILE_WRITE",
                                   {"code": "FORBIDDEN", "permission": "PROFILE_WRITE"})
    assert database_state(admin) == before


# NOT_FOUND: a record the caller cannot see ----------------------------------------------------------------


@pytest.mark.parametrize("case", cases(lambda c: c.caller == "bob" and not c.name.startswith("create")))
async def test_changing_a_record_hidden_from_the_caller_is_not_found_and_nothing_is_written(
    api, world, admin, case
):
    variables = case.variables(world)
    before = database_state(admin)

    body = await run(api, case, variables, "carol")

    assert refusal(body, case) == (f"{case.entity} {variables['id']} not found", {"code": "NOT_FOUND"})
    assert database_state(admin) == before


@pytest.mark.parametrize(
    ("name", "variables", "missing"),
    [
        ("updatePipeline", lambda w, gone: {"id": gone, "input": {"name": "X"}}, "pipeline"),
        ("deletePipeline", lambda w, gone: {"id": gone}, "pipeline"),
        ("createStage", lambda w, gone: {"pipelineId": gone, "input": {"name": "X"}}, "pipeline"),
        ("updateStage", lambda w, gone: {"id": gone, "input": {"name": "X"}}, "stage"),
        ("deleteStage", lambda w, gone: {"id": gone}, "stage"),
        ("reorderStages", lambda w, gone: {"pipelineId": gone, "stageIds": []}, "pipeline"),
        ("addTeamMember", lambda w, gone: {"teamId": gone, "userId": w.users["dan"]}, "team"),
        ("addTeamMember", lambda w, gone: {"teamId": w.teams["West"], "userId": gone}, "user"),
        ("removeTeamMember", lambda w, gone: {"teamId": w.teams["West"], "userId": gone}, "team member"),
        ("grantRole", lambda w, gone: {"userId": gone, "role": "ADMIN"}, "user"),
        ("updateProfile", lambda w, gone: {"userId": gone, "input": {"displayName": "X"}}, "user"),
        ("deletePerson", lambda w, gone: {"id": gone}, "person"),
    ],
    ids=["update-pipeline", "delete-pipeline", "create-stage-in-pipeline", "update-stage", "delete-stage",
         "reorder-stages-of-pipeline", "add-member-to-team", "add-user-to-team", "remove-non-member",
         "grant-role-to-user", "update-profile-of-user", "delete-person"],
)
async def test_an_admin_changing_what_does_not_exist_is_not_found(api, world, admin, name, variables, missing):
    gone = str(uuid4())
    case = CASE[name]
    before = database_state(admin)

    body = await run(api, case, variables(world, gone), "alice")

    assert refusal(body, case) == (f"{missing} {gone} not found", {"code": "NOT_FOUND"})
    assert database_state(admin) == before


# BAD_USER_INPUT: the offending field, in GraphQL's spelling -------------------------------------------------


def _with_input(name: str, **fields: Any) -> Callable[[World, str], dict[str, Any]]:
    """The case's own variables with some input fields replaced."""
    return lambda w, gone: {**CASE[name].variables(w), "input": {**CASE[name].variables(w)["input"], **fields}}


# (mutation, variables given the world and an id nothing has, the field named, the message). Messages of the
# form "<path>: <problem>" come from the input model, and extensions.problems lists them too.
BAD_INPUT = [
    ("createDeal", _with_input("createDeal", value="-5"), "value", "value: Input should be greater than or equal to 0"),
    ("createDeal", _with_input("createDeal", probability=101), "probability",
     "probability: Input should be less than or equal to 100"),
    ("createDeal", lambda w, gone: {"input": {"title": "Misplaced", "pipelineId": w.hiring,
                                              "stageId": w.stage(PROPOSAL)}},
     "stageId", "stage {proposal} is not in pipeline {hiring}"),
    ("updateDeal", lambda w, gone: {"id": w.deal, "input": {"value": "-0.01"}}, "value",
     "value: Input should be greater than or equal to 0"),
    ("updateDeal", lambda w, gone: {"id": w.deal, "input": {"title": None}}, "title", "title cannot be null"),
    ("moveDealToStage", lambda w, gone: {"id": w.deal, "stageId": w.offer}, "stageId",
     "stage {offer} belongs to pipeline {hiring}, not the deal's pipeline {sales}; pass pipelineId to move the"
     " deal to that pipeline"),
    ("markDealLost", lambda w, gone: {"id": w.deal, "reason": ""}, "reason",
     "a reason is required to mark a deal lost"),
    ("markDealLost", lambda w, gone: {"id": w.deal, "reason": "   "}, "reason",
     "a reason is required to mark a deal lost"),
    ("createPipeline", lambda w, gone: {"input": {"name": ""}}, "name",
     "name: String should have at least 1 character"),
    ("createPipeline", lambda w, gone: {"input": {"name": "Odd", "stages": [{"name": "A", "winProbability": 101}]}},
     "winProbability", "stages.0.winProbability: Input should be less than or equal to 100"),
    ("createStage", lambda w, gone: {"pipelineId": w.hiring, "input": {"name": "Late", "position": 3}}, "position",
     "position must be between 0 and 2"),
    ("updateStage", lambda w, gone: {"id": w.offer, "input": {"winProbability": -1}}, "winProbability",
     "winProbability: Input should be greater than or equal to 0"),
    ("reorderStages", lambda w, gone: {"pipelineId": w.hiring, "stageIds": [w.offer]}, "stageIds",
     "stageIds must list every stage of the pipeline exactly once"),
    ("createTeam", lambda w, gone: {"name": ""}, "name", "name: String should have at least 1 character"),
    ("updateProfile", lambda w, gone: {"userId": w.users["dan"], "input": {"displayName": ""}}, "displayName",
     "displayName: String should have at least 1 character"),
    ("createActivity", lambda w, gone: {"input": {"subject": "Call", "dueTime": "09:00:00"}}, "dueTime",
     "a due time needs a due date"),
    ("createActivity", lambda w, gone: {"input": {"subject": "Call", "dealId": gone}}, "dealId",
     "deal {gone} not found"),
    ("createNote", lambda w, gone: {"input": {"body": "<b></b>", "dealId": w.deal}}, "body",
     "body: Value error, a note needs some text"),
    ("createLead", lambda w, gone: {"input": {"title": "Tagged", "labels": [" "]}}, "labels",
     "labels: Value error, labels are 1-50 characters"),
    ("createPerson", _with_input("createPerson", emails=["not-an-email"]), "emails",
     "emails: Value error, 'not-an-email' is not an email address"),
    ("updatePerson", lambda w, gone: {"id": w.person, "input": {"firstName": "", "lastName": ""}}, "firstName",
     "a person needs a first or last name"),
    ("createOrganization", lambda w, gone: {"input": {"name": "Nowhere", "domain": "not a domain"}}, "domain",
     "domain: Value error, 'not a domain' is not a domain name"),
    ("convertLead", lambda w, gone: {"id": w.lead, "input": {"stageId": gone}}, "stageId",
     "stage {gone} does not exist"),
]


@pytest.mark.parametrize(("name", "variables", "field_name", "message"), BAD_INPUT,
                         ids=[f"{row[0]}-{row[2]}" for row in BAD_INPUT])
async def test_invalid_input_is_bad_user_input_naming_the_field_and_nothing_is_written(
    api, world, admin, name, variables, field_name, message
):
    case = CASE[name]
    gone = str(uuid4())
    before = database_state(admin)

    body = await run(api, case, variables(world, gone))

    error_message, extensions = refusal(body, case)
    assert error_message == message.format(**vars(world), gone=gone, proposal=world.stage(PROPOSAL))
    path, _, problem = error_message.partition(": ")
    if path.split(".")[-1] == field_name:  # refused by the input model
        assert extensions == {"code": "BAD_USER_INPUT", "field": field_name,
                              "problems": [{"field": path, "message": problem}]}
    else:  # refused by the service
        assert extensions == {"code": "BAD_USER_INPUT", "field": field_name}
    assert database_state(admin) == before


# CONFLICT ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(lambda c: "$expectedVersion" in c.document))
async def test_a_stale_expected_version_is_a_conflict_naming_the_current_version(api, world, admin, case):
    variables = case.variables(world)
    table = TABLES[case.entity]
    (version,) = admin.execute(f"update public.{table} set updated_at = now() where id = %s returning version",
                               [variables["id"]]).fetchone()  # someone else's change: the version moves on
    before = database_state(admin)

    body = await run(api, case, {**variables, "expectedVersion": version - 1})

    assert refusal(body, case) == (
        f"{case.entity} {variables['id']} was changed by someone else (version {version}, expected {version - 1});"
        " reload it and try again",
        {"code": "CONFLICT"},
    )
    assert database_state(admin) == before


@pytest.mark.parametrize("case", cases(lambda c: "$expectedVersion" in c.document))
async def test_the_current_expected_version_is_accepted(api, world, admin, case):
    variables = case.variables(world)
    (version,) = stored(admin, case.entity, variables["id"], "version")

    body = await run(api, case, {**variables, "expectedVersion": version})

    assert body == {"data": {case.name: case.returned(world)}}


@pytest.mark.parametrize(
    ("name", "given", "existing", "reason"),
    [
        ("createPerson", {"firstName": "Greta", "emails": ["Greta@Harbor.example"]}, "person",
         "same email greta@harbor.example"),
        ("createOrganization", {"name": "Harbor Works Ltd."}, "organization", "same name"),
        ("createOrganization", {"name": "HW Holding", "domain": "www.harbor.example"}, "organization", "same domain"),
    ],
    ids=["person-email", "organization-name", "organization-domain"],
)
async def test_a_create_that_looks_like_a_visible_record_is_a_conflict_naming_it_unless_forced(
    api, world, admin, name, given, existing, reason
):
    case = CASE[name]
    existing_id = getattr(world, existing)
    before = database_state(admin)

    refused = await run(api, case, {"input": given})

    assert refusal(refused, case) == (
        f"{existing} {existing_id} already exists ({reason}); use it, or pass force=true to create another",
        {"code": "CONFLICT", "existingId": existing_id},
    )
    assert database_state(admin) == before

    forced = await run(api, case, {"input": given, "force": True})

    created = forced["data"][name]["id"]
    assert created != existing_id
    assert counts(admin, TABLES[existing]) == {TABLES[existing]: 2}
    assert audit_rows(admin) == [[world.users["bob"], "graphql", f"{existing}.create", existing, created]]


@pytest.mark.parametrize(
    ("name", "variables", "who", "message"),
    [
        ("convertLead", lambda w: {"id": w.archived_lead}, "bob",
         "lead {archived_lead} is archived; unarchive it before converting"),
        ("deletePipeline", lambda w: {"id": w.sales}, "alice",
         "pipeline {sales} still has 2 deal(s); move or delete them first"),
        ("createPipeline", lambda w: {"input": {"name": "hiring"}}, "alice", "a pipeline named 'hiring' already exists"
         " ({hiring})"),
        ("createTeam", lambda w: {"name": "east"}, "alice", "team 'east' already exists ({east})"),
    ],
    ids=["convert-archived-lead",
         "delete-pipeline-with-deals", "duplicate-pipeline-name", "duplicate-team-name"],
)
async def test_a_change_the_current_state_does_not_allow_is_a_conflict(api, world, admin, name, variables, who,
                                                                      message):
    case = CASE[name]
    before = database_state(admin)

    body = await run(api, case, variables(world), who)

    names = {**vars(world), "east": world.teams["East"]}
    assert refusal(body, case) == (message.format(**names), {"code": "CONFLICT"})
    assert database_state(admin) == before


@pytest.mark.parametrize(
    ("name", "variables", "status"),
    [("markDealWon", lambda w: {"id": w.won_deal}, "WON"), ("reopenDeal", lambda w: {"id": w.deal}, "OPEN")],
    ids=["win-won-deal", "reopen-open-deal"],
)
async def test_a_transition_to_the_current_state_returns_the_record_and_writes_nothing(api, world, admin, name,
                                                                                       variables, status):
    case = CASE[name]
    before = database_state(admin)

    body = await run(api, case, variables(world), "bob")

    assert "errors" not in body, body
    assert (body["data"][name]["id"], body["data"][name]["status"]) == (variables(world)["id"], status)
    assert database_state(admin) == before


# Idempotency keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(lambda c: "idempotencyKey" in c.document))
async def test_a_create_repeated_with_its_idempotency_key_returns_the_first_record_and_writes_once(
    api, world, admin, case
):
    variables = {**case.variables(world), "key": "retry-1"}
    table = TABLES[case.entity]
    (records_before,) = admin.execute(f"select count(*) from public.{table}").fetchone()

    first = await run(api, case, variables)
    second = await run(api, case, variables)

    assert first == second == {"data": {case.name: case.returned(world)}}
    assert admin.execute(f"select count(*) from public.{table}").fetchone() == (records_before + 1,)
    created = first["data"][case.name]["id"]
    assert audit_rows(admin) == [[world.users["bob"], "graphql", case.operation, case.entity, created]]
    assert outbox_rows(admin) == [[name, world.users["bob"], "graphql"] for name in case.events]
    assert to_jsonable_python(admin.execute(
        "select user_id, key, operation, entity_id from public.idempotency_keys").fetchall()
    ) == [[world.users["bob"], "retry-1", case.operation, created]]


# Partial updates: fields left out stay, an explicit null clears ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "given", "changed"),
    [
        ("updateDeal", {"title": "Renamed"}, {"title": "Renamed", "search_text": "renamed"}),
        ("updateDeal", {"probability": None}, {"probability": None}),
        # the generated sort keys of a deal with no expected close date put it last in either order
        ("updateDeal", {"personId": None, "expectedCloseDate": None},
         {"person_id": None, "expected_close_date": None, "close_day_asc": 2**31 - 1, "close_day_desc": -(2**31)}),
        ("updatePerson", {"organizationId": None}, {"organization_id": None}),
        ("updatePerson", {"jobTitle": None}, {"job_title": None}),
        ("updateOrganization", {"address": None}, {"address": None}),
        ("updateLead", {"value": None}, {"value": None}),
        ("updateActivity", {"note": None, "dueDate": None}, {"note": None, "due_date": None}),
        ("updateNote", {"dealId": None}, {"deal_id": None}),
        ("updateProfile", {"avatarUrl": None}, {"avatar_url": None}),
    ],
    ids=["deal-title-only", "deal-null-probability", "deal-null-person-and-date", "person-null-organization",
         "person-null-job-title", "organization-null-address", "lead-null-value", "activity-null-note-and-date",
         "note-null-deal", "profile-null-avatar"],
)
async def test_an_update_changes_exactly_the_fields_it_names(api, world, admin, name, given, changed):
    case = CASE[name]
    variables = {**case.variables(world), "input": given}
    record = variables.get("id") or variables["userId"]
    before = whole_row(admin, case.entity, record)

    body = await run(api, case, variables)

    returned = body["data"][name]
    assert {key: returned[key] for key in given} == given
    after = whole_row(admin, case.entity, record)
    assert after["updated_at"] > before["updated_at"]
    expected = {**before, **changed, "updated_at": after["updated_at"]}
    if "version" in before:
        expected["version"] = before["version"] + 1
    assert after == expected


async def test_an_explicit_null_written_inline_in_the_document_clears_the_field_too(api, world, admin):
    body = await api.query(
        "mutation($id: UUID!) { updateDeal(id: $id, input: {probability: null}) { probability weightedValue } }",
        {"id": world.deal},
    )

    assert body == {"data": {"updateDeal": {"probability": None, "weightedValue": "100.00"}}}
    assert stored(admin, "deal", world.deal, "probability", "title", "person_id") == [
        None, "Harbor crane retrofit", world.person]


# Domain flows -----------------------------------------------------------------------------------------------


DEAL_HISTORY = "query($id: UUID!) { deal(id: $id) { stageHistory { fromStageId toStageId changedBy } } }"


async def test_moving_a_deal_records_its_stage_history_and_emits_stage_changed(api, world, admin):
    await run(api, CASE["moveDealToStage"], {"id": world.deal, "stageId": world.stage(NEGOTIATION)})

    history = await api.query(DEAL_HISTORY, {"id": world.deal})
    bob = world.users["bob"]
    assert history == {"data": {"deal": {"stageHistory": [
        {"fromStageId": None, "toStageId": world.stage(QUALIFIED), "changedBy": bob},
        {"fromStageId": world.stage(QUALIFIED), "toStageId": world.stage(NEGOTIATION), "changedBy": bob},
    ]}}}
    assert events(admin) == [("crm/deal.stage_changed", {
        "deal_id": world.deal, "from_stage_id": world.stage(QUALIFIED), "to_stage_id": world.stage(NEGOTIATION),
        "from_pipeline_id": world.sales, "to_pipeline_id": world.sales,
    })]


async def test_moving_a_deal_to_another_pipelines_stage_with_its_pipeline_id(api, world, admin):
    body = await run(api, CASE["moveDealToStage"],
                     {"id": world.deal, "stageId": world.offer, "pipelineId": world.hiring})

    assert body == {"data": {"moveDealToStage": {
        "id": world.deal, "pipelineId": world.hiring, "stageId": world.offer, "stage": {"name": "Offer"},
        "weightedValue": "400.00", "version": 2}}}
    assert stored(admin, "deal", world.deal, "pipeline_id", "stage_id") == [world.hiring, world.offer]
    assert [data["to_pipeline_id"] for _, data in events(admin)] == [world.hiring]


OUTCOME = "{ status wonAt lostAt lostReason version }"


async def test_a_deal_won_then_lost_then_reopened_keeps_exactly_one_outcome(api, world, admin):
    won = await api.query(f"mutation($id: UUID!) {{ markDealWon(id: $id) {OUTCOME} }}", {"id": world.deal})
    won_at = stored(admin, "deal", world.deal, "won_at")[0]
    lost = await api.query(f"mutation($id: UUID!) {{ markDealLost(id: $id, reason: \"No budget\") {OUTCOME} }}",
                           {"id": world.deal})
    lost_at = stored(admin, "deal", world.deal, "lost_at")[0]
    reopened = await api.query(f"mutation($id: UUID!) {{ reopenDeal(id: $id) {OUTCOME} }}", {"id": world.deal})

    assert won["data"]["markDealWon"] == {"status": "WON", "wonAt": won["data"]["markDealWon"]["wonAt"],
                                          "lostAt": None, "lostReason": None, "version": 2}
    assert datetime.fromisoformat(won["data"]["markDealWon"]["wonAt"]) == datetime.fromisoformat(won_at)
    assert lost["data"]["markDealLost"] == {"status": "LOST", "wonAt": None,
                                            "lostAt": lost["data"]["markDealLost"]["lostAt"],
                                            "lostReason": "No budget", "version": 3}
    assert datetime.fromisoformat(lost["data"]["markDealLost"]["lostAt"]) == datetime.fromisoformat(lost_at)
    assert reopened == {"data": {"reopenDeal": {"status": "OPEN", "wonAt": None, "lostAt": None,
                                                "lostReason": None, "version": 4}}}
    assert stored(admin, "deal", world.deal, "status", "won_at", "lost_at", "lost_reason") == ["open", None, None,
                                                                                              None]
    bob = world.users["bob"]
    assert [r[2] for r in audit_rows(admin)] == ["deal.mark_won", "deal.mark_lost", "deal.reopen"]
    assert sorted(events(admin)) == [
        ("crm/deal.lost", {"deal_id": world.deal, "owner_id": bob}),
        ("crm/deal.reopened", {"deal_id": world.deal, "previous_status": "lost"}),
        ("crm/deal.won", {"deal_id": world.deal, "owner_id": bob, "value": "1000.00", "currency": "USD"}),
    ]


CONVERT = CASE["convertLead"].document


async def test_converting_a_lead_creates_one_deal_with_its_person_and_organization(api, world, admin):
    body = await api.query(CONVERT, {"id": world.lead, "input": {"title": "Fjord fleet deal"}})

    result = body["data"]["convertLead"]
    deal, lead = result["deal"], result["lead"]
    assert (lead["convertedDealId"], lead["personId"], lead["organizationId"]) == (
        deal["id"], deal["personId"], deal["organizationId"])
    assert deal["title"] == "Fjord fleet deal"
    assert stored(admin, "person", deal["personId"], "first_name", "last_name", "emails", "owner_id",
                  "visibility") == ["Ola", "Berg", ["ola@fjord.example"], world.users["bob"], "owner"]
    assert stored(admin, "organization", deal["organizationId"], "name", "owner_id") == [
        "Fjord Shipping", world.users["bob"]]
    assert counts(admin, "deals", "persons", "organizations") == {"deals": 3, "persons": 2, "organizations": 2}
    assert stored(admin, "lead", world.lead, "status", "converted_deal_id", "converted_at is not null") == [
        "converted", deal["id"], True]


async def test_converting_a_lead_again_returns_the_same_deal_and_writes_nothing(api, world, admin):
    first = await api.query(CONVERT, {"id": world.lead})
    forget_bookkeeping(admin)
    before = database_state(admin)

    again = await api.query(CONVERT, {"id": world.lead})

    expected = first["data"]["convertLead"]
    assert again == {"data": {"convertLead": {**expected, "alreadyConverted": True, "createdPerson": False,
                                              "createdOrganization": False}}}
    assert database_state(admin) == before
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


COMPLETE = CASE["completeActivity"].document.replace("{ id done version }", "{ id done doneAt version }")


async def test_completing_an_activity_marks_it_done_once_and_done_false_reopens_it(api, world, admin):
    done = await api.query(COMPLETE, {"id": world.activity})
    done_at = stored(admin, "activity", world.activity, "done_at")[0]
    forget_bookkeeping(admin)
    before = database_state(admin)
    again = await api.query(COMPLETE, {"id": world.activity})
    unchanged = database_state(admin)
    reopened = await api.query(COMPLETE, {"id": world.activity, "done": False})

    assert done == again == {"data": {"completeActivity": {"id": world.activity, "done": True,
                                                           "doneAt": done["data"]["completeActivity"]["doneAt"],
                                                           "version": 2}}}
    assert datetime.fromisoformat(done["data"]["completeActivity"]["doneAt"]) == datetime.fromisoformat(done_at)
    assert unchanged == before
    assert reopened == {"data": {"completeActivity": {"id": world.activity, "done": False, "doneAt": None,
                                                      "version": 3}}}
    assert stored(admin, "activity", world.activity, "done", "done_at") == [False, None]
    assert audit_rows(admin) == [[world.users["bob"], "graphql", "activity.reopen", "activity", world.activity]]
    assert events(admin) == [("crm/activity.reopened", {"activity_id": world.activity, "owner_id": world.users["bob"],
                                                        "deal_id": world.deal})]


PIPELINE_STAGES = "query($id: UUID!) { pipeline(id: $id) { stages { id position } } }"


async def test_reordering_stages_numbers_them_densely_in_the_given_order(api, world, admin):
    order = list(reversed(world.sales_stages))

    body = await api.query(CASE["reorderStages"].document, {"pipelineId": world.sales, "stageIds": order},
                           as_="alice")

    dense = [{"id": stage, "position": index} for index, stage in enumerate(order)]
    assert [{"id": s["id"], "position": s["position"]} for s in body["data"]["reorderStages"]["stages"]] == dense
    assert await api.query(PIPELINE_STAGES, {"id": world.sales}) == {"data": {"pipeline": {"stages": dense}}}
    assert to_jsonable_python(admin.execute(
        "select id, position from public.stages where pipeline_id = %s order by position", [world.sales]
    ).fetchall()) == [[stage, index] for index, stage in enumerate(order)]
    assert events(admin) == [("crm/pipeline.stages_reordered", {"pipeline_id": world.sales, "stage_ids": order})]


async def test_deleting_a_stage_leaves_its_deals_in_the_pipeline_without_a_stage(api, world, admin):
    qualified = world.stage(QUALIFIED)

    body = await api.query(CASE["deleteStage"].document, {"id": qualified}, as_="alice")

    assert body == {"data": {"deleteStage": {"id": qualified, "deleted": True}}}
    for deal_id in (world.deal, world.won_deal):
        assert stored(admin, "deal", deal_id, "pipeline_id", "stage_id") == [world.sales, None]
    deal = await api.query("query($id: UUID!) { deal(id: $id) { pipelineId stageId stage { id } weightedValue } }",
                           {"id": world.deal})
    assert deal == {"data": {"deal": {"pipelineId": world.sales, "stageId": None, "stage": None,
                                      "weightedValue": "400.00"}}}
    remaining = [{"id": s, "position": i} for i, s in enumerate(world.sales_stages[1:])]
    assert await api.query(PIPELINE_STAGES, {"id": world.sales}) == {"data": {"pipeline": {"stages": remaining}}}
    assert events(admin) == [("crm/stage.deleted", {"stage_id": qualified, "pipeline_id": world.sales,
                                                     "deals_unstaged": 2})]


async def test_deleting_a_pipeline_deletes_its_stages(api, world, admin):
    body = await api.query(CASE["deletePipeline"].document, {"id": world.hiring}, as_="alice")

    assert body == {"data": {"deletePipeline": {"id": world.hiring, "deleted": True}}}
    assert admin.execute("select count(*) from public.stages where pipeline_id = %s", [world.hiring]).fetchone() == (0,)
    assert await api.query("{ pipelines { name } }") == {"data": {"pipelines": [{"name": "Sales"}]}}


async def test_a_later_mutation_in_the_same_document_sees_an_earlier_ones_change(api, world, admin):
    body = await api.query(
        """mutation($deal: UUID!, $person: UUID!) {
             before: updateDeal(id: $deal, input: {title: "One"}) { person { firstName } }
             rename: updatePerson(id: $person, input: {firstName: "Gretchen"}) { firstName }
             after: updateDeal(id: $deal, input: {title: "Two"}) { person { firstName } }
           }""",
        {"deal": world.deal, "person": world.person},
    )

    assert body == {"data": {"before": {"person": {"firstName": "Greta"}}, "rename": {"firstName": "Gretchen"},
                             "after": {"person": {"firstName": "Gretchen"}}}}

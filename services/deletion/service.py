"""Deleting any CRM record, with a preview of what the delete does to the records linked to it.

The consequences follow the foreign keys in the migrations (`CASCADES`); the delete itself is the record's own
domain function, so its permission, owner rule, audit row and event apply unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from psycopg import sql

from services.activities import service as activities
from services.contacts import service as contacts
from services.deals import service as deals
from services.deletion.schemas import (
    AffectedType,
    Consequence,
    DeletableType,
    DeletionPreview,
    DeletionTarget,
    Effect,
)
from services.kernel.errors import Conflict
from services.kernel.permissions import Perm, requires
from services.kernel.uow import UnitOfWork
from services.leads import service as leads
from services.notes import service as notes

PERMISSIONS: dict[DeletableType, Perm] = {
    DeletableType.DEAL: Perm.DEALS_DELETE,
    DeletableType.PERSON: Perm.CONTACTS_DELETE,
    DeletableType.ORGANIZATION: Perm.CONTACTS_DELETE,
    DeletableType.LEAD: Perm.LEADS_DELETE,
    DeletableType.ACTIVITY: Perm.ACTIVITIES_DELETE,
    DeletableType.NOTE: Perm.NOTES_DELETE,
}

TABLES: dict[DeletableType, str] = {
    DeletableType.DEAL: "deals",
    DeletableType.PERSON: "persons",
    DeletableType.ORGANIZATION: "organizations",
    DeletableType.LEAD: "leads",
    DeletableType.ACTIVITY: "activities",
    DeletableType.NOTE: "notes",
}

# Every foreign key that points at a deletable table with ON DELETE CASCADE or SET NULL, as
# (affected kind, referencing table, referencing column, effect); deleted ones first. A test compares this
# with the database's catalog.
CASCADES: dict[DeletableType, tuple[tuple[AffectedType, str, str, Effect], ...]] = {
    DeletableType.DEAL: (
        (AffectedType.STAGE_CHANGE, "deal_stage_history", "deal_id", Effect.DELETED),
        (AffectedType.LEAD, "leads", "converted_deal_id", Effect.UNLINKED),
        (AffectedType.ACTIVITY, "activities", "deal_id", Effect.UNLINKED),
        (AffectedType.NOTE, "notes", "deal_id", Effect.UNLINKED),
    ),
    DeletableType.PERSON: (
        (AffectedType.DEAL, "deals", "person_id", Effect.UNLINKED),
        (AffectedType.LEAD, "leads", "person_id", Effect.UNLINKED),
        (AffectedType.ACTIVITY, "activities", "person_id", Effect.UNLINKED),
        (AffectedType.NOTE, "notes", "person_id", Effect.UNLINKED),
    ),
    DeletableType.ORGANIZATION: (
        (AffectedType.PERSON, "persons", "organization_id", Effect.UNLINKED),
        (AffectedType.DEAL, "deals", "organization_id", Effect.UNLINKED),
        (AffectedType.LEAD, "leads", "organization_id", Effect.UNLINKED),
        (AffectedType.ACTIVITY, "activities", "organization_id", Effect.UNLINKED),
        (AffectedType.NOTE, "notes", "organization_id", Effect.UNLINKED),
    ),
    DeletableType.LEAD: (
        (AffectedType.ACTIVITY, "activities", "lead_id", Effect.UNLINKED),
        (AffectedType.NOTE, "notes", "lead_id", Effect.UNLINKED),
    ),
    DeletableType.ACTIVITY: (),
    DeletableType.NOTE: (),
}

_DELETE: dict[DeletableType, Callable[[UnitOfWork, UUID], Awaitable[None]]] = {
    DeletableType.DEAL: deals.delete,
    DeletableType.PERSON: contacts.delete_person,
    DeletableType.ORGANIZATION: contacts.delete_organization,
    DeletableType.LEAD: leads.delete,
    DeletableType.ACTIVITY: activities.delete,
    DeletableType.NOTE: notes.delete,
}

_NOTE_TITLE_LENGTH = 80


def _note_title(body: str) -> str:
    line = body.strip().splitlines()[0].strip() if body.strip() else ""
    return line if len(line) <= _NOTE_TITLE_LENGTH else line[: _NOTE_TITLE_LENGTH - 1] + "…"


async def _target(uow: UnitOfWork, entity_type: DeletableType, entity_id: UUID) -> DeletionTarget:
    """The record as its own domain reads it (NotFound in the domain's words when missing or hidden)."""
    title: str
    version: int | None
    if entity_type is DeletableType.DEAL:
        deal = await deals.get(uow, entity_id)
        title, version = deal.title, deal.version
    elif entity_type is DeletableType.PERSON:
        person = await contacts.get_person(uow, entity_id)
        title, version = person.name, person.version
    elif entity_type is DeletableType.ORGANIZATION:
        organization = await contacts.get_organization(uow, entity_id)
        title, version = organization.name, organization.version
    elif entity_type is DeletableType.LEAD:
        lead = await leads.get(uow, entity_id)
        title, version = lead.title, lead.version
    elif entity_type is DeletableType.ACTIVITY:
        activity = await activities.get(uow, entity_id)
        title, version = activity.subject, activity.version
    else:
        note = await notes.get(uow, entity_id)
        title, version = _note_title(note.body), note.version
    return DeletionTarget(entity_type=entity_type, id=entity_id, title=title, version=version)


# Deleting a deal, lead, person or organization also deletes the notes that belong to it alone (a note must
# belong to a record; trigger `*_delete_notes_alone` in the migrations): of the notes its foreign key unlinks,
# those with no other link are deleted instead.
_NOTE_LINKS = "num_nonnulls(deal_id, lead_id, person_id, organization_id)"


async def _consequences(uow: UnitOfWork, entity_type: DeletableType, entity_id: UUID) -> list[Consequence]:
    """Counts of the linked rows the caller can see, in one query; deleted kinds first."""
    cascades = [
        (kind, table, column, effect, sql.SQL("true"))
        for kind, table, column, effect in CASCADES[entity_type]
        if table != "notes"
    ]
    for kind, table, column, _ in CASCADES[entity_type]:
        if table == "notes":
            cascades.insert(
                sum(1 for c in cascades if c[3] is Effect.DELETED),
                (kind, table, column, Effect.DELETED, sql.SQL(_NOTE_LINKS + " = 1")),
            )
            cascades.append((kind, table, column, Effect.UNLINKED, sql.SQL(_NOTE_LINKS + " > 1")))
    if not cascades:
        return []
    query = sql.SQL(" union all ").join(
        sql.SQL("select {} as i, count(*) as n from {} where {} = %s and {}").format(
            sql.Literal(i), sql.Identifier("public", table), sql.Identifier(column), condition
        )
        for i, (_, table, column, _, condition) in enumerate(cascades)
    )
    rows = await uow.all(query.as_string(), [entity_id] * len(cascades))
    counts = {r["i"]: r["n"] for r in rows}
    return [
        Consequence(entity_type=kind, count=counts[i], effect=effect)
        for i, (kind, _, _, effect, _) in enumerate(cascades)
        if counts[i]
    ]


async def _preview(uow: UnitOfWork, entity_type: DeletableType, entity_id: UUID) -> DeletionPreview:
    uow.principal.require(PERMISSIONS[entity_type])
    record = await _target(uow, entity_type, entity_id)
    return DeletionPreview(record=record, consequences=await _consequences(uow, entity_type, entity_id))


@requires(None)
async def preview(uow: UnitOfWork, entity_type: DeletableType, entity_id: UUID) -> DeletionPreview:
    """What deleting the record would do, changing nothing: the record, and how many linked records would be
    deleted with it or unlinked from it. Needs the type's delete permission (see PERMISSIONS), and refuses as
    the delete would (Forbidden for a record the caller may see but not change): it runs the delete and rolls
    it back."""
    entity_type = DeletableType(entity_type)
    found = await _preview(uow, entity_type, entity_id)
    await _dry_run(uow, entity_type, entity_id)
    return found


async def _dry_run(uow: UnitOfWork, entity_type: DeletableType, entity_id: UUID) -> None:
    """Run the domain's delete inside a savepoint and roll it back: every check it makes (service and RLS)
    answers, and nothing stays, neither rows, audit entries nor events."""
    held = uow.events[:], uow.audits[:]  # bookkeeping queued before the dry run is kept for the commit
    uow.events.clear()
    uow.audits.clear()
    await uow.execute("savepoint deletion_dry_run")
    try:
        await _DELETE[entity_type](uow, entity_id)
        await uow.flush_events()  # the delete's audit row and events meet the database's checks too
    finally:
        await uow.execute("rollback to savepoint deletion_dry_run")
        uow.events[:], uow.audits[:] = held


@requires(None)
async def delete(
    uow: UnitOfWork, entity_type: DeletableType, entity_id: UUID, *, expected_version: int | None = None
) -> DeletionPreview:
    """Delete the record through its domain's own delete and return what was deleted (the preview taken just
    before, in the same transaction). With `expected_version`, refuse with Conflict if the record changed."""
    entity_type = DeletableType(entity_type)
    uow.principal.require(PERMISSIONS[entity_type])
    # Hold the row so the version check and the counts stay true until the delete; a row the caller may not
    # change is not locked, and the domain's delete refuses it.
    await uow.one(
        sql.SQL("select 1 from {} where id = %s for update")
        .format(sql.Identifier("public", TABLES[entity_type]))
        .as_string(),
        [entity_id],
    )
    before = await _preview(uow, entity_type, entity_id)
    current = before.record.version
    if expected_version is not None and current != expected_version:
        raise Conflict(
            f"{entity_type.value} {entity_id} was changed by someone else (version {current},"
            f" expected {expected_version}); reload it and try again"
        )
    await _DELETE[entity_type](uow, entity_id)
    return before

"""Notes on deals, leads, persons and organizations."""

from __future__ import annotations

import builtins
from typing import Any
from uuid import UUID

from services.kernel import idempotency, records
from services.kernel.attachments import LINK_TABLES, check_links
from services.kernel.errors import Invalid
from services.kernel.pagination import Page, PageRequest
from services.kernel.permissions import Perm, requires
from services.kernel.schemas import escape_like, filter_conditions
from services.kernel.uow import Row, UnitOfWork
from services.notes.schemas import Note, NoteCreate, NoteFilter, NoteUpdate

UNLINKED = "a note must be linked to a deal, lead, person or organization: give one of their ids"


def _note(row: Row) -> Note:
    return Note.model_validate(row)


def _require_a_link(links: dict[str, UUID | None]) -> None:
    """A note belongs to at least one record (the database holds the same rule, constraint notes_linked)."""
    if all(links.get(column) is None for column in LINK_TABLES):
        raise Invalid(UNLINKED, field="deal_id")


async def _fetch_for_change(uow: UnitOfWork, note_id: UUID) -> Note:
    """The note, locked for this transaction (see records.fetch_for_change); its author may change it."""
    return _note(await records.fetch_for_change(uow, "notes", "note", note_id, owner_column="author_id"))


@requires(Perm.NOTES_READ)
async def get(uow: UnitOfWork, note_id: UUID) -> Note:
    return _note(await records.fetch(uow, "notes", "note", note_id))


@requires(Perm.NOTES_READ)
async def list(
    uow: UnitOfWork, filter: NoteFilter | None = None, page: PageRequest | None = None
) -> Page[Note]:
    """Visible notes, newest first: by linked record, author (`owner_id`), text and time written."""
    f = filter or NoteFilter()
    where, params = filter_conditions(f, owner_column="author_id")
    for column in LINK_TABLES:
        value = getattr(f, column)
        if value is not None:
            where.append(f"t.{column} = %s")
            params.append(value)
    if f.created_since is not None:
        where.append("t.created_at >= %s")
        params.append(f.created_since)
    if f.created_before is not None:
        where.append("t.created_at < %s")
        params.append(f.created_before)
    if f.text:
        where.append("lower(t.body) like %s")
        params.append("%" + escape_like(f.text.lower()) + "%")
    return await records.list_page(
        uow, table="notes", where=where, params=params, page=page or PageRequest(), item=_note
    )


@requires(Perm.NOTES_READ)
async def list_for(uow: UnitOfWork, link: str, record_ids: builtins.list[UUID]) -> dict[UUID, builtins.list[Note]]:
    """Visible notes of several records (batch loader), by `link` (deal_id, lead_id, ...), newest first."""
    if link not in LINK_TABLES:
        raise Invalid(f"unknown link {link!r}", field="link")
    condition, keys = records.among(link, record_ids)
    rows = await uow.all(f"select * from public.notes where {condition} order by created_at desc, id desc", [keys])
    grouped: dict[UUID, builtins.list[Note]] = {}
    for row in rows:
        grouped.setdefault(row[link], []).append(_note(row))
    return grouped


@requires(Perm.NOTES_WRITE)
async def create(uow: UnitOfWork, data: NoteCreate, *, idempotency_key: str | None = None) -> Note:
    """Write a note as the caller, attached to the records it names."""
    if (done := await idempotency.claim(uow, idempotency_key, "note.create")) is not None:
        return _note(await records.fetch(uow, "notes", "note", done))
    if uow.user_id is None:
        raise Invalid("notes need an author", field="author_id")
    _require_a_link({column: getattr(data, column) for column in LINK_TABLES})
    await check_links(uow, {column: getattr(data, column) for column in LINK_TABLES})
    note = _note(await records.insert(uow, "notes", {**data.model_dump(), "author_id": uow.user_id}))
    await idempotency.complete(uow, idempotency_key, note.id)
    await uow.audit("note.create", "note", note.id, after=note.model_dump())
    uow.emit("crm/note.created", note_id=note.id, author_id=note.author_id, deal_id=note.deal_id,
             lead_id=note.lead_id, person_id=note.person_id, organization_id=note.organization_id)
    return note


@requires(Perm.NOTES_WRITE)
async def update(
    uow: UnitOfWork, note_id: UUID, data: NoteUpdate, *, expected_version: int | None = None
) -> Note:
    before = await _fetch_for_change(uow, note_id)
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    if "body" in changes and changes["body"] is None:
        raise Invalid("body cannot be null", field="body")
    _require_a_link({column: changes.get(column, getattr(before, column)) for column in LINK_TABLES})
    await check_links(uow, {k: v for k, v in changes.items() if k in LINK_TABLES})
    row = await records.update(uow, "notes", "note", note_id, changes, expected_version=expected_version)
    if row is None:
        return before
    after = _note(row)
    await uow.audit("note.update", "note", note_id, before=before.model_dump(), after=after.model_dump())
    uow.emit("crm/note.updated", note_id=note_id, fields=sorted(changes))
    return after


@requires(Perm.NOTES_DELETE)
async def delete(uow: UnitOfWork, note_id: UUID) -> None:
    before = await _fetch_for_change(uow, note_id)
    await records.delete(uow, "notes", "note", note_id)
    await uow.audit("note.delete", "note", note_id, before=before.model_dump())
    uow.emit("crm/note.deleted", note_id=note_id)

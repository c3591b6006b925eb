"""The leads inbox, and conversion of a lead into a deal (one transaction)."""

from __future__ import annotations

import builtins
from typing import Any
from uuid import UUID

from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel import idempotency, records
from services.kernel.attachments import check_links
from services.kernel.errors import Conflict, Invalid
from services.kernel.pagination import Page, PageRequest
from services.kernel.permissions import Perm, requires
from services.kernel.schemas import filter_conditions, text_condition
from services.kernel.uow import Row, UnitOfWork, require_found
from services.leads.schemas import (
    ConversionResult,
    Lead,
    LeadConversion,
    LeadCreate,
    LeadFilter,
    LeadStatus,
    LeadUpdate,
)


def _lead(row: Row) -> Lead:
    return Lead.model_validate(row)


async def _fetch(uow: UnitOfWork, lead_id: UUID, *, lock: bool = False) -> Lead:
    return _lead(await records.fetch(uow, "leads", "lead", lead_id, lock=lock))


async def _fetch_for_change(uow: UnitOfWork, lead_id: UUID) -> Lead:
    """The lead, locked for this transaction (see records.fetch_for_change)."""
    return _lead(await records.fetch_for_change(uow, "leads", "lead", lead_id))


@requires(Perm.LEADS_READ)
async def get(uow: UnitOfWork, lead_id: UUID) -> Lead:
    return await _fetch(uow, lead_id)


@requires(Perm.LEADS_READ)
async def get_many(uow: UnitOfWork, lead_ids: builtins.list[UUID]) -> builtins.list[Lead]:
    """Visible leads by id (batch loader); hidden or missing ids are left out."""
    return [_lead(r) for r in await records.fetch_many(uow, "leads", lead_ids)]


@requires(Perm.LEADS_READ)
async def list(
    uow: UnitOfWork, filter: LeadFilter | None = None, page: PageRequest | None = None
) -> Page[Lead]:
    f = filter or LeadFilter()
    where, params = filter_conditions(f)
    if f.status is not None:
        where.append("t.status = %s")
        params.append(f.status.value)
    if f.label is not None:
        where.append("%s = any(t.labels)")
        params.append(f.label.strip().lower())
    text_where, text_params = text_condition(f)
    return await records.list_page(
        uow, table="leads", where=where + text_where, params=params + text_params,
        page=page or PageRequest(), item=_lead,
    )


@requires(Perm.LEADS_WRITE)
async def create(uow: UnitOfWork, data: LeadCreate, *, idempotency_key: str | None = None) -> Lead:
    if (done := await idempotency.claim(uow, idempotency_key, "lead.create")) is not None:
        return await _fetch(uow, done)
    owner_id = data.owner_id or uow.user_id
    if owner_id is None:
        raise Invalid("owner_id is required", field="owner_id")
    await records.ensure_can_own(uow, "lead", owner_id)
    await check_links(uow, {"person_id": data.person_id, "organization_id": data.organization_id})
    values: dict[str, Any] = data.model_dump(exclude={"owner_id", "visibility"})
    values["owner_id"] = owner_id
    if data.visibility is not None:
        values["visibility"] = data.visibility.value
    lead = _lead(await records.insert(uow, "leads", values))
    await idempotency.complete(uow, idempotency_key, lead.id)
    await uow.audit("lead.create", "lead", lead.id, after=lead.model_dump())
    uow.emit("crm/lead.created", lead_id=lead.id, owner_id=lead.owner_id)
    return lead


async def _apply(
    uow: UnitOfWork, before: Lead, changes: dict[str, Any], operation: str, expected_version: int | None
) -> Lead | None:
    """The changed lead, audited; None when `changes` change nothing (then nothing is written or emitted)."""
    row = await records.update(uow, "leads", "lead", before.id, changes, expected_version=expected_version)
    if row is None:
        return None
    after = _lead(row)
    await uow.audit(operation, "lead", before.id, before=before.model_dump(), after=after.model_dump())
    return after


@requires(Perm.LEADS_WRITE)
async def update(
    uow: UnitOfWork, lead_id: UUID, data: LeadUpdate, *, expected_version: int | None = None
) -> Lead:
    before = await _fetch_for_change(uow, lead_id)
    if before.status is LeadStatus.CONVERTED:
        raise Conflict(f"lead {lead_id} was converted to deal {before.converted_deal_id}; change the deal")
    changes = data.model_dump(exclude_unset=True)
    for column in ("title", "currency", "labels", "owner_id", "visibility"):
        if column in changes and changes[column] is None:
            raise Invalid(f"{column} cannot be null", field=column)
    if "owner_id" in changes:
        await records.ensure_can_own(uow, "lead", changes["owner_id"])
    await check_links(uow, {k: changes.get(k) for k in ("person_id", "organization_id")})
    after = await _apply(uow, before, changes, "lead.update", expected_version)
    if after is None:
        return before
    uow.emit("crm/lead.updated", lead_id=lead_id, fields=sorted(changes))
    return after


async def _set_status(
    uow: UnitOfWork, lead_id: UUID, status: LeadStatus, expected_version: int | None
) -> Lead:
    """Archive or unarchive under the row lock: of concurrent calls one changes the lead, the others get it as
    changed. A lead already in `status` is returned as it is (nothing written), whatever `expected_version`
    says; a converted lead is a Conflict."""
    before = await _fetch_for_change(uow, lead_id)
    if before.status is LeadStatus.CONVERTED:
        raise Conflict(f"lead {lead_id} is converted")
    if before.status is status:
        return before
    verb = "archive" if status is LeadStatus.ARCHIVED else "unarchive"
    after = await _apply(uow, before, {"status": status.value}, f"lead.{verb}", expected_version)
    assert after is not None  # the status changes
    uow.emit(f"crm/lead.{verb}d", lead_id=lead_id)
    return after


@requires(Perm.LEADS_WRITE)
async def archive(uow: UnitOfWork, lead_id: UUID, *, expected_version: int | None = None) -> Lead:
    return await _set_status(uow, lead_id, LeadStatus.ARCHIVED, expected_version)


@requires(Perm.LEADS_WRITE)
async def unarchive(uow: UnitOfWork, lead_id: UUID, *, expected_version: int | None = None) -> Lead:
    return await _set_status(uow, lead_id, LeadStatus.OPEN, expected_version)


@requires(Perm.LEADS_DELETE)
async def delete(uow: UnitOfWork, lead_id: UUID) -> None:
    before = await _fetch_for_change(uow, lead_id)
    await records.delete(uow, "leads", "lead", lead_id)
    await uow.audit("lead.delete", "lead", lead_id, before=before.model_dump())
    uow.emit("crm/lead.deleted", lead_id=lead_id)


async def _person_for(uow: UnitOfWork, lead: Lead) -> tuple[UUID | None, bool]:
    if lead.person_id is not None:
        return lead.person_id, False
    if lead.contact_email:
        found = await contacts.find_person_by_email(uow, lead.contact_email)
        if found is not None:
            return found.id, False
    if not (lead.contact_name or lead.contact_email):
        return None, False
    name = (lead.contact_name or lead.contact_email or "").strip()
    first, _, last = name.partition(" ")
    person = await contacts.create_person(
        uow,
        PersonCreate(
            first_name=first, last_name=last, emails=[lead.contact_email] if lead.contact_email else [],
            owner_id=lead.owner_id, visibility=lead.visibility,
        ),
        force=True,
    )
    return person.id, True


async def _organization_for(uow: UnitOfWork, lead: Lead) -> tuple[UUID | None, bool]:
    if lead.organization_id is not None:
        return lead.organization_id, False
    if not lead.organization_name:
        return None, False
    found = await contacts.find_organization(uow, lead.organization_name)
    if found is not None:
        return found.id, False
    org = await contacts.create_organization(
        uow,
        OrganizationCreate(name=lead.organization_name, owner_id=lead.owner_id, visibility=lead.visibility),
        force=True,
    )
    return org.id, True


@requires(Perm.LEADS_CONVERT)
async def convert(uow: UnitOfWork, lead_id: UUID, options: LeadConversion | None = None) -> ConversionResult:
    """Turn a lead into a deal, in one transaction: find or create its person and organization, create the
    deal (default: first stage of the first pipeline), move the lead's notes and activities to the deal, and
    mark the lead converted. Converting a converted lead again returns the existing deal and changes nothing."""
    opts = options or LeadConversion()
    lead = await _fetch(uow, lead_id)
    if lead.status is not LeadStatus.CONVERTED:
        await records.ensure_can_change(uow, "lead", lead_id, lead.owner_id)
        # Lock only once the caller may change it: FOR UPDATE also applies the update policy, which would
        # hide a visible lead that is not the caller's (NotFound instead of Forbidden). The locked read also
        # sees a conversion that committed while we waited.
        lead = await _fetch(uow, lead_id, lock=True)
    if lead.status is LeadStatus.CONVERTED:
        if lead.converted_deal_id is None:
            raise Conflict(f"lead {lead_id} was converted, but its deal has since been deleted")
        return ConversionResult(
            lead=lead, deal=await deals.get(uow, lead.converted_deal_id),
            created_person=False, created_organization=False, already_converted=True,
        )
    if lead.status is LeadStatus.ARCHIVED:
        raise Conflict(f"lead {lead_id} is archived; unarchive it before converting")
    person_id, created_person = await _person_for(uow, lead)
    organization_id, created_organization = await _organization_for(uow, lead)
    deal = await deals.create(
        uow,
        DealCreate(
            title=opts.title or lead.title, value=lead.value or 0, currency=lead.currency,
            person_id=person_id, organization_id=organization_id, pipeline_id=opts.pipeline_id,
            stage_id=opts.stage_id, owner_id=lead.owner_id, visibility=lead.visibility,
        ),
    )
    await uow.flush_events()  # the audit rows queued so far come before the ones the move writes in the database
    moved = await uow.one(
        "select notes_moved, activities_moved from private.move_lead_attachments(%s, %s)", [lead_id, deal.id]
    )
    # Only the database's conversion function may mark a lead converted (a signed-in user cannot set those
    # columns); it also links the lead to the deal's person and organization.
    row = await uow.one("select * from private.mark_lead_converted(%s, %s)", [lead_id, deal.id])
    after = _lead(require_found(row, "lead", lead_id))
    await uow.audit("lead.convert", "lead", lead_id, before=lead.model_dump(), after=after.model_dump())
    uow.emit(
        "crm/lead.converted", lead_id=lead_id, deal_id=deal.id, person_id=person_id,
        organization_id=organization_id, notes_moved=moved["notes_moved"] if moved else 0,
        activities_moved=moved["activities_moved"] if moved else 0,
    )
    return ConversionResult(
        lead=after, deal=deal, created_person=created_person,
        created_organization=created_organization, already_converted=False,
    )

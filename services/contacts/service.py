"""Organizations and persons, with duplicate detection at create time."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.contacts.schemas import (
    Organization,
    OrganizationCreate,
    OrganizationFilter,
    OrganizationUpdate,
    Person,
    PersonCreate,
    PersonFilter,
    PersonUpdate,
    organization_name_key,
)
from services.kernel import idempotency, records
from services.kernel.attachments import check_links
from services.kernel.errors import DuplicateFound, Invalid
from services.kernel.pagination import Page, PageRequest
from services.kernel.permissions import Perm, requires
from services.kernel.schemas import filter_conditions, text_condition
from services.kernel.uow import Row, UnitOfWork

_ORG_COLUMNS = set(Organization.model_fields)
_PERSON_COLUMNS = set(Person.model_fields) - {"name"}


def _check_person_name(first_name: str, last_name: str) -> None:
    """Each half has its own bound (150), and the database takes any name they make together (up to 301)."""
    if not f"{first_name} {last_name}".strip():
        raise Invalid("a person needs a first or last name", field="first_name")


def _org(row: Row) -> Organization:
    return Organization.model_validate(row)


def _person(row: Row) -> Person:
    return Person.model_validate(row)


# Organizations -----------------------------------------------------------------------------------------


@requires(Perm.CONTACTS_READ)
async def get_organization(uow: UnitOfWork, organization_id: UUID) -> Organization:
    return _org(await records.fetch(uow, "organizations", "organization", organization_id))


@requires(Perm.CONTACTS_READ)
async def get_organizations(uow: UnitOfWork, organization_ids: list[UUID]) -> list[Organization]:
    """Visible organizations by id (batch loader); hidden or missing ids are left out."""
    return [_org(r) for r in await records.fetch_many(uow, "organizations", organization_ids)]


@requires(Perm.CONTACTS_READ)
async def list_organizations(
    uow: UnitOfWork, filter: OrganizationFilter | None = None, page: PageRequest | None = None
) -> Page[Organization]:
    f = filter or OrganizationFilter()
    where, params = filter_conditions(f)
    text_where, text_params = text_condition(f)
    return await records.list_page(
        uow, table="organizations", where=where + text_where, params=params + text_params,
        page=page or PageRequest(), item=_org,
    )


async def _find_organization_twin(uow: UnitOfWork, name: str, domain: str | None) -> Row | None:
    return await uow.one(
        "select id, name, domain from public.organizations"
        " where name_key = %s or (%s::text is not null and domain = %s) order by created_at, id limit 1",
        [organization_name_key(name), domain, domain],
    )


@requires(Perm.CONTACTS_WRITE)
async def create_organization(
    uow: UnitOfWork, data: OrganizationCreate, *, force: bool = False, idempotency_key: str | None = None
) -> Organization:
    """Create an organization. If a visible one has the same normalized name or domain, DuplicateFound names
    it instead (pass force=True to create a second one anyway)."""
    if (done := await idempotency.claim(uow, idempotency_key, "organization.create")) is not None:
        return _org(await records.fetch(uow, "organizations", "organization", done))
    owner_id = data.owner_id or uow.user_id
    if owner_id is None:
        raise Invalid("owner_id is required", field="owner_id")
    await records.ensure_can_own(uow, "organization", owner_id)
    if not force and (twin := await _find_organization_twin(uow, data.name, data.domain)) is not None:
        same = "domain" if data.domain and twin["domain"] == data.domain else "name"
        raise DuplicateFound("organization", twin["id"], f"same {same}")
    values: dict[str, Any] = {
        "name": data.name,
        "name_key": organization_name_key(data.name),
        "domain": data.domain,
        "address": data.address,
        "owner_id": owner_id,
    }
    if data.visibility is not None:
        values["visibility"] = data.visibility.value
    org = _org(await records.insert(uow, "organizations", values))
    await idempotency.complete(uow, idempotency_key, org.id)
    await uow.audit("organization.create", "organization", org.id, after=org.model_dump())
    uow.emit("crm/organization.created", organization_id=org.id, owner_id=org.owner_id)
    return org


@requires(Perm.CONTACTS_WRITE)
async def update_organization(
    uow: UnitOfWork, organization_id: UUID, data: OrganizationUpdate, *, expected_version: int | None = None
) -> Organization:
    before = _org(await records.fetch_for_change(uow, "organizations", "organization", organization_id))
    changes = data.model_dump(exclude_unset=True)
    if changes.get("owner_id"):
        await records.ensure_can_own(uow, "organization", changes["owner_id"])
    if "name" in changes:
        if not changes["name"]:
            raise Invalid("name cannot be empty", field="name")
        changes["name_key"] = organization_name_key(changes["name"])
    row = await records.update(
        uow, "organizations", "organization", organization_id, changes, expected_version=expected_version
    )
    if row is None:
        return before
    after = _org(row)
    await uow.audit(
        "organization.update", "organization", organization_id, before=before.model_dump(), after=after.model_dump()
    )
    uow.emit("crm/organization.updated", organization_id=organization_id, fields=sorted(data.model_fields_set))
    return after


@requires(Perm.CONTACTS_DELETE)
async def delete_organization(uow: UnitOfWork, organization_id: UUID) -> None:
    """Delete an organization; its persons, deals and leads stay, unlinked."""
    before = _org(await records.fetch(uow, "organizations", "organization", organization_id))
    await records.ensure_can_change(uow, "organization", organization_id, before.owner_id)
    await records.delete(uow, "organizations", "organization", organization_id)
    await uow.audit("organization.delete", "organization", organization_id, before=before.model_dump())
    uow.emit("crm/organization.deleted", organization_id=organization_id)


@requires(Perm.CONTACTS_READ)
async def find_organization(uow: UnitOfWork, name: str, domain: str | None = None) -> Organization | None:
    """The visible organization with the same normalized name or domain, if there is one."""
    twin = await _find_organization_twin(uow, name, domain)
    return None if twin is None else _org(await records.fetch(uow, "organizations", "organization", twin["id"]))


# Persons -----------------------------------------------------------------------------------------------


@requires(Perm.CONTACTS_READ)
async def get_person(uow: UnitOfWork, person_id: UUID) -> Person:
    return _person(await records.fetch(uow, "persons", "person", person_id))


@requires(Perm.CONTACTS_READ)
async def get_persons(uow: UnitOfWork, person_ids: list[UUID]) -> list[Person]:
    """Visible persons by id (batch loader); hidden or missing ids are left out."""
    return [_person(r) for r in await records.fetch_many(uow, "persons", person_ids)]


@requires(Perm.CONTACTS_READ)
async def list_persons(
    uow: UnitOfWork, filter: PersonFilter | None = None, page: PageRequest | None = None
) -> Page[Person]:
    f = filter or PersonFilter()
    where, params = filter_conditions(f)
    if f.organization_id is not None:
        where.append("t.organization_id = %s")
        params.append(f.organization_id)
    text_where, text_params = text_condition(f)
    return await records.list_page(
        uow, table="persons", where=where + text_where, params=params + text_params,
        page=page or PageRequest(), item=_person,
    )


async def _find_person_twin(uow: UnitOfWork, emails: list[str]) -> Row | None:
    if not emails:
        return None
    return await uow.one(
        "select id, emails from public.persons where emails && %s::text[] order by created_at, id limit 1",
        [emails],
    )


@requires(Perm.CONTACTS_READ)
async def find_person_by_email(uow: UnitOfWork, email: str) -> Person | None:
    """The visible person with this email address, if there is one."""
    twin = await _find_person_twin(uow, [email.strip().lower()])
    return None if twin is None else _person(await records.fetch(uow, "persons", "person", twin["id"]))


@requires(Perm.CONTACTS_WRITE)
async def create_person(
    uow: UnitOfWork, data: PersonCreate, *, force: bool = False, idempotency_key: str | None = None
) -> Person:
    """Create a person. If a visible person already has one of the emails, DuplicateFound names them
    instead (pass force=True to create a second one anyway)."""
    if (done := await idempotency.claim(uow, idempotency_key, "person.create")) is not None:
        return _person(await records.fetch(uow, "persons", "person", done))
    _check_person_name(data.first_name, data.last_name)
    owner_id = data.owner_id or uow.user_id
    if owner_id is None:
        raise Invalid("owner_id is required", field="owner_id")
    await records.ensure_can_own(uow, "person", owner_id)
    await check_links(uow, {"organization_id": data.organization_id})
    if not force and (twin := await _find_person_twin(uow, data.emails)) is not None:
        shared = sorted(set(twin["emails"]) & set(data.emails))
        raise DuplicateFound("person", twin["id"], f"same email {shared[0]}")
    values: dict[str, Any] = data.model_dump(include=_PERSON_COLUMNS, exclude={"visibility", "owner_id"})
    values["owner_id"] = owner_id
    if data.visibility is not None:
        values["visibility"] = data.visibility.value
    person = _person(await records.insert(uow, "persons", values))
    await idempotency.complete(uow, idempotency_key, person.id)
    await uow.audit("person.create", "person", person.id, after=person.model_dump())
    uow.emit("crm/person.created", person_id=person.id, owner_id=person.owner_id)
    return person


@requires(Perm.CONTACTS_WRITE)
async def update_person(
    uow: UnitOfWork, person_id: UUID, data: PersonUpdate, *, expected_version: int | None = None
) -> Person:
    before = _person(await records.fetch_for_change(uow, "persons", "person", person_id))
    changes = data.model_dump(exclude_unset=True)
    if changes.get("owner_id"):
        await records.ensure_can_own(uow, "person", changes["owner_id"])
    await check_links(uow, {"organization_id": changes.get("organization_id")})
    for column in ("first_name", "last_name", "emails", "phones"):
        if column in changes and changes[column] is None:
            raise Invalid(f"{column} cannot be null", field=column)
    _check_person_name(changes.get("first_name", before.first_name), changes.get("last_name", before.last_name))
    row = await records.update(uow, "persons", "person", person_id, changes, expected_version=expected_version)
    if row is None:
        return before
    after = _person(row)
    await uow.audit("person.update", "person", person_id, before=before.model_dump(), after=after.model_dump())
    uow.emit("crm/person.updated", person_id=person_id, fields=sorted(data.model_fields_set))
    return after


@requires(Perm.CONTACTS_DELETE)
async def delete_person(uow: UnitOfWork, person_id: UUID) -> None:
    """Delete a person; their deals, leads, notes and activities stay, unlinked."""
    before = _person(await records.fetch(uow, "persons", "person", person_id))
    await records.ensure_can_change(uow, "person", person_id, before.owner_id)
    await records.delete(uow, "persons", "person", person_id)
    await uow.audit("person.delete", "person", person_id, before=before.model_dump())
    uow.emit("crm/person.deleted", person_id=person_id)

"""Persons and organizations: duplicate detection, validation, the record rules for change and delete, lists."""

from __future__ import annotations

import pytest
from conftest import audit_operations, counts, events
from pydantic import ValidationError

from services.contacts import service as contacts
from services.contacts.schemas import (
    OrganizationCreate,
    OrganizationUpdate,
    PersonCreate,
    PersonFilter,
    PersonUpdate,
)
from services.kernel.errors import Conflict, DuplicateFound, Forbidden, Invalid, NotFound
from services.kernel.records import Visibility

CONTACT_TABLES = ("persons", "organizations", "audit_log", "outbox")


async def new_person(actors, who: str, first: str, last: str = "", **fields):
    async with actors.uow(who) as uow:
        return await contacts.create_person(uow, PersonCreate(first_name=first, last_name=last, **fields))


async def new_org(actors, who: str, name: str, **fields):
    async with actors.uow(who) as uow:
        return await contacts.create_organization(uow, OrganizationCreate(name=name, **fields))






# Creating ---------------------------------------------------------------------------------------------


async def test_create_person_stores_normalized_emails_and_records_audit_and_event(actors, admin):
    person = await new_person(
        actors, "bob", "Ann", "Lee", emails=[" Ann@Initech.COM ", "ann@initech.com", "a.lee@home.org"],
        phones=[" +1 (555) 010-2000 ", ""], job_title="CTO",
    )

    assert person.name == "Ann Lee"
    assert person.emails == ["ann@initech.com", "a.lee@home.org"]
    assert person.phones == ["+1 (555) 010-2000"]
    assert (person.owner_id, person.visibility, person.version) == (actors.id("bob"), Visibility.COMPANY, 1)
    assert audit_operations(admin) == ["person.create"]
    assert events(admin) == [
        ("crm/person.created", {"person_id": str(person.id), "owner_id": str(actors.id("bob"))})
    ]


@pytest.mark.parametrize(
    "emails",
    [["ann@initech.com"], ["  ANN@Initech.com "], ["someone@else.org", "Ann@initech.com"]],
    ids=["same", "case-and-whitespace", "second-address"],
)
async def test_person_with_an_email_a_visible_person_has_is_a_duplicate_and_nothing_is_written(
    actors, admin, emails
):
    ann = await new_person(actors, "bob", "Ann", emails=["ann@initech.com"])
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(DuplicateFound) as caught:
        async with actors.uow("dan") as uow:
            await contacts.create_person(uow, PersonCreate(first_name="Annie", emails=emails))

    assert caught.value.existing_id == ann.id
    assert caught.value.entity == "person"
    assert "same email ann@initech.com" in caught.value.message
    assert counts(admin, *CONTACT_TABLES) == before


async def test_force_creates_a_second_person_with_the_same_email(actors, admin):
    ann = await new_person(actors, "bob", "Ann", emails=["ann@initech.com"])

    async with actors.uow("dan") as uow:
        twin = await contacts.create_person(uow, PersonCreate(first_name="Ann", emails=["ANN@initech.com"]), force=True)

    assert twin.id != ann.id
    assert twin.emails == ["ann@initech.com"]
    assert counts(admin, "persons") == {"persons": 2}


async def test_person_twin_hidden_from_the_caller_is_not_reported_so_creation_succeeds_without_leaking_it(
    actors, admin
):
    hidden = await new_person(actors, "carol", "Ann", emails=["ann@initech.com"], visibility=Visibility.OWNER)

    async with actors.uow("bob") as uow:
        mine = await contacts.create_person(uow, PersonCreate(first_name="Ann", emails=["ann@initech.com"]))

    assert mine.id != hidden.id
    assert admin.execute("select count(*) from public.persons where emails = '{ann@initech.com}'").fetchone()[0] == 2


@pytest.mark.parametrize(
    ("existing", "attempt", "reason"),
    [
        (dict(name="Acme, Inc."), dict(name="acme"), "same name"),
        (dict(name="ACME  Ltd"), dict(name="Acme GmbH"), "same name"),
        (dict(name="Acme Corporation", domain="acme.com"), dict(name="Road Runner", domain="https://www.Acme.com/x"),
         "same domain"),
        (dict(name="Acme", domain="https://www.Acme.com/x"), dict(name="Wile E.", domain="acme.com"), "same domain"),
    ],
    ids=["name-suffix", "name-two-suffixes", "domain-from-url", "url-stored-as-domain"],
)
async def test_organization_with_the_same_normalized_name_or_domain_is_a_duplicate(
    actors, admin, existing, attempt, reason
):
    acme = await new_org(actors, "bob", **existing)
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(DuplicateFound) as caught:
        async with actors.uow("carol") as uow:
            await contacts.create_organization(uow, OrganizationCreate(**attempt))

    assert caught.value.existing_id == acme.id
    assert caught.value.entity == "organization"
    assert f"({reason})" in caught.value.message
    assert counts(admin, *CONTACT_TABLES) == before


async def test_organization_domain_is_stored_normalized(actors):
    acme = await new_org(actors, "bob", "Acme", domain="HTTPS://www.Acme.com:443/about")

    assert acme.domain == "acme.com"


async def test_force_creates_a_second_organization_with_the_same_name(actors, admin):
    acme = await new_org(actors, "bob", "Acme, Inc.")

    async with actors.uow("bob") as uow:
        twin = await contacts.create_organization(uow, OrganizationCreate(name="acme"), force=True)

    assert twin.id != acme.id
    assert counts(admin, "organizations") == {"organizations": 2}


async def test_organization_twin_hidden_from_the_caller_is_not_reported_so_creation_succeeds_without_leaking_it(
    actors, admin
):
    await new_org(actors, "carol", "Acme", domain="acme.com", visibility=Visibility.OWNER)

    async with actors.uow("bob") as uow:
        mine = await contacts.create_organization(uow, OrganizationCreate(name="Acme Inc", domain="acme.com"))

    assert mine.owner_id == actors.id("bob")
    assert counts(admin, "organizations") == {"organizations": 2}


async def test_renamed_organization_is_found_as_duplicate_under_its_new_name(actors):
    org = await new_org(actors, "bob", "Acme")
    async with actors.uow("bob") as uow:
        await contacts.update_organization(uow, org.id, OrganizationUpdate(name="Globex Corporation"))

    async with actors.uow("bob") as uow:
        assert (await contacts.create_organization(uow, OrganizationCreate(name="Acme"))).name == "Acme"
        with pytest.raises(DuplicateFound) as caught:
            await contacts.create_organization(uow, OrganizationCreate(name="globex"))
    assert caught.value.existing_id == org.id


# Validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: PersonCreate(first_name="Ann", emails=["not-an-email"]),
        lambda: PersonCreate(first_name="Ann", emails=["ann@initech"]),
        lambda: PersonCreate(first_name="Ann", phones=["call me maybe"]),
        lambda: PersonUpdate(emails=["two@@at.com"]),
        lambda: PersonUpdate(phones=["12"]),
        lambda: OrganizationCreate(name="Acme", domain="not a domain"),
        lambda: OrganizationCreate(name="Acme", domain="localhost"),
        lambda: OrganizationUpdate(domain="acme"),
    ],
    ids=["email", "email-no-tld", "phone", "update-email", "update-short-phone", "domain", "domain-no-tld",
         "update-domain"],
)
def test_malformed_email_phone_or_domain_is_rejected_by_the_schema(build):
    with pytest.raises(ValidationError):
        build()


async def test_person_without_first_or_last_name_is_invalid_and_nothing_is_written(actors, admin):
    with pytest.raises(Invalid) as caught:
        async with actors.uow("bob") as uow:
            await contacts.create_person(uow, PersonCreate(first_name="  ", emails=["ann@initech.com"]))

    assert caught.value.field == "first_name"
    assert counts(admin, *CONTACT_TABLES) == dict.fromkeys(CONTACT_TABLES, 0)


async def test_update_that_would_leave_a_person_without_a_name_is_invalid(actors, admin):
    ann = await new_person(actors, "bob", "Ann", "Lee")
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(Invalid) as caught:
        async with actors.uow("bob") as uow:
            await contacts.update_person(uow, ann.id, PersonUpdate(first_name="", last_name=""))

    assert caught.value.field == "first_name"
    assert counts(admin, *CONTACT_TABLES) == before


# Changing and deleting --------------------------------------------------------------------------------


async def test_owner_updates_person_version_increments_and_change_is_audited(actors, admin):
    ann = await new_person(actors, "bob", "Ann", "Lee", emails=["ann@initech.com"])

    async with actors.uow("bob") as uow:
        updated = await contacts.update_person(
            uow, ann.id, PersonUpdate(job_title="CTO", emails=["ann@initech.com", "Ann@Home.org"]), expected_version=1
        )

    assert (updated.version, updated.job_title, updated.emails) == (2, "CTO", ["ann@initech.com", "ann@home.org"])
    row = admin.execute(
        "select operation, entity_id, diff from public.audit_log where operation = 'person.update'"
    ).fetchone()
    assert row[1] == ann.id
    assert row[2]["before"]["job_title"] is None
    assert row[2]["after"]["job_title"] == "CTO"
    assert row[2]["after"]["version"] == 2
    updated_events = [data for name, data in events(admin) if name == "crm/person.updated"]
    assert updated_events == [{"person_id": str(ann.id), "fields": ["emails", "job_title"]}]


async def test_stale_version_is_a_conflict_and_nothing_is_written(actors, admin):
    ann = await new_person(actors, "bob", "Ann")
    async with actors.uow("bob") as uow:
        await contacts.update_person(uow, ann.id, PersonUpdate(last_name="Lee"))
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await contacts.update_person(uow, ann.id, PersonUpdate(job_title="CTO"), expected_version=1)

    assert counts(admin, *CONTACT_TABLES) == before
    assert admin.execute("select version, job_title from public.persons").fetchone() == (2, None)


@pytest.mark.parametrize(
    ("actor", "visibility", "error"),
    [
        ("dan", Visibility.TEAM, Forbidden),
        ("carol", Visibility.COMPANY, Forbidden),
        ("carol", Visibility.OWNER, NotFound),
        ("vic", Visibility.COMPANY, Forbidden),
    ],
)
async def test_only_owner_managers_and_admins_may_update_a_person(actors, admin, actor, visibility, error):
    ann = await new_person(actors, "bob", "Ann", visibility=visibility)
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(error):
        async with actors.uow(actor) as uow:
            await contacts.update_person(uow, ann.id, PersonUpdate(job_title="CTO"))

    assert counts(admin, *CONTACT_TABLES) == before
    assert admin.execute("select version, job_title from public.persons").fetchone() == (1, None)


@pytest.mark.parametrize("actor", ["mia", "alice"])
async def test_manager_of_owners_team_and_admin_may_update_an_owner_only_person(actors, actor):
    ann = await new_person(actors, "bob", "Ann", visibility=Visibility.OWNER)

    async with actors.uow(actor) as uow:
        updated = await contacts.update_person(uow, ann.id, PersonUpdate(job_title="CTO"))

    assert (updated.job_title, updated.version, updated.owner_id) == ("CTO", 2, actors.id("bob"))


async def test_member_may_not_hand_a_person_to_another_user(actors, admin):
    ann = await new_person(actors, "bob", "Ann")

    with pytest.raises(Forbidden):
        async with actors.uow("bob") as uow:
            await contacts.update_person(uow, ann.id, PersonUpdate(owner_id=actors.id("dan")))

    assert admin.execute("select owner_id from public.persons").fetchone()[0] == actors.id("bob")


@pytest.mark.parametrize("actor", ["bob", "vic"])
async def test_members_and_viewers_cannot_delete_contacts(actors, admin, actor):
    ann = await new_person(actors, "bob", "Ann")
    acme = await new_org(actors, "bob", "Acme")
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(Forbidden):
        async with actors.uow(actor) as uow:
            await contacts.delete_person(uow, ann.id)
    with pytest.raises(Forbidden):
        async with actors.uow(actor) as uow:
            await contacts.delete_organization(uow, acme.id)

    assert counts(admin, *CONTACT_TABLES) == before


async def test_manager_deletes_organization_and_its_persons_stay_unlinked(actors, admin):
    acme = await new_org(actors, "bob", "Acme")
    ann = await new_person(actors, "bob", "Ann", organization_id=acme.id)

    async with actors.uow("mia") as uow:
        await contacts.delete_organization(uow, acme.id)

    assert counts(admin, "organizations", "persons") == {"organizations": 0, "persons": 1}
    assert admin.execute("select id, organization_id from public.persons").fetchone() == (ann.id, None)
    assert audit_operations(admin) == ["organization.create", "person.create", "organization.delete"]
    assert ("crm/organization.deleted", {"organization_id": str(acme.id)}) in events(admin)


async def test_manager_of_another_team_cannot_delete_a_visible_person(actors, admin):
    # carol is in West; mia manages East only, so carol's company-visible person is not mia's to delete.
    ann = await new_person(actors, "carol", "Ann")
    before = counts(admin, *CONTACT_TABLES)

    with pytest.raises(Forbidden):
        async with actors.uow("mia") as uow:
            await contacts.delete_person(uow, ann.id)

    assert counts(admin, *CONTACT_TABLES) == before


# Listing ----------------------------------------------------------------------------------------------


async def test_persons_list_filters_by_organization_and_text(actors):
    initech = await new_org(actors, "bob", "Initech")
    ann = await new_person(actors, "bob", "Ann", "Lee", emails=["ann@initech.com"], organization_id=initech.id)
    bo = await new_person(actors, "dan", "Bo", "Chen", emails=["bo@initech.com"], organization_id=initech.id)
    cy = await new_person(actors, "bob", "Cy", "Leeds", emails=["cy@initech.com"])
    await new_person(actors, "carol", "Di", "Lee", organization_id=initech.id, visibility=Visibility.OWNER)

    async with actors.uow("bob") as uow:
        at_initech = await contacts.list_persons(uow, PersonFilter(organization_id=initech.id))
        lee = await contacts.list_persons(uow, PersonFilter(text=" LEE "))
        lee_at_initech = await contacts.list_persons(uow, PersonFilter(organization_id=initech.id, text="lee"))
        by_email = await contacts.list_persons(uow, PersonFilter(text="@initech.com"))

    assert [p.id for p in at_initech.items] == [bo.id, ann.id]  # newest first; carol's hidden Di is absent
    assert at_initech.total == 2
    assert [p.id for p in lee.items] == [cy.id, ann.id]
    assert [p.id for p in lee_at_initech.items] == [ann.id]
    assert {p.id for p in by_email.items} == {ann.id, bo.id, cy.id}

"""Deleting any CRM record: the preview (the record and what happens to linked records), the delete through
the record's own domain, permissions per type, hidden records, and stale versions."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest
from conftest import audit_operations, counts, events, forget_bookkeeping

from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate
from services.deletion import service as deletion
from services.deletion.schemas import DeletableType, DeletionPreview
from services.kernel.errors import Conflict, Forbidden, NotFound
from services.kernel.permissions import Perm, Scope
from services.kernel.records import Visibility
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate

ALL_TABLES = (
    "deals",
    "deal_stage_history",
    "persons",
    "organizations",
    "leads",
    "activities",
    "notes",
    "audit_log",
    "outbox",
    "idempotency_keys",
)


@dataclass
class World:
    """bob's records, all visible company-wide, linked to each other."""

    organization: UUID
    person: UUID
    deal: UUID
    lead: UUID
    activity: UUID
    note: UUID

    def id(self, entity_type: DeletableType) -> UUID:
        return getattr(self, entity_type.value)


async def build_world(actors, company) -> World:
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Initech"))
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann", last_name="Lee", organization_id=org.id))
        await contacts.create_person(uow, PersonCreate(first_name="Bo", last_name="Chen", organization_id=org.id))
        converted = await leads.create(
            uow, LeadCreate(title="Initech expansion", person_id=ann.id, organization_id=org.id)
        )
        deal = (await leads.convert(uow, converted.id)).deal
        await deals.move_stage(uow, deal.id, company.sales_stage_ids[2])
        inbound = await leads.create(uow, LeadCreate(title="Inbound", person_id=ann.id, organization_id=org.id))
        call = await activities.create(uow, ActivityCreate(subject="Call Ann", deal_id=deal.id, person_id=ann.id))
        await activities.create(uow, ActivityCreate(subject="Send proposal", deal_id=deal.id))
        await activities.create(uow, ActivityCreate(subject="Demo", lead_id=inbound.id))
        budget = await notes.create(
            uow,
            NoteCreate(
                body="Budget approved\nNext: legal review", deal_id=deal.id, person_id=ann.id, organization_id=org.id
            ),
        )
        await notes.create(uow, NoteCreate(body="Met at the fair", lead_id=inbound.id))
        await notes.create(uow, NoteCreate(body="Initech has 300 staff", organization_id=org.id))
    return World(org.id, ann.id, deal.id, inbound.id, call.id, budget.id)


# Who previews and deletes each type: members may not delete contacts, so a manager of bob's team does.
DELETER = {
    DeletableType.DEAL: "bob",
    DeletableType.PERSON: "mia",
    DeletableType.ORGANIZATION: "mia",
    DeletableType.LEAD: "bob",
    DeletableType.ACTIVITY: "bob",
    DeletableType.NOTE: "bob",
}

# (title, version, [(affected type, count, effect)]) per type, for the world above.
EXPECTED = {
    DeletableType.DEAL: ("Initech expansion", 2, [
        ("stage_change", 2, "deleted"), ("lead", 1, "unlinked"), ("activity", 2, "unlinked"),
        ("note", 1, "unlinked"),
    ]),
    DeletableType.PERSON: ("Ann Lee", 1, [
        ("deal", 1, "unlinked"), ("lead", 2, "unlinked"), ("activity", 1, "unlinked"), ("note", 1, "unlinked"),
    ]),
    DeletableType.ORGANIZATION: ("Initech", 1, [
        ("note", 1, "deleted"), ("person", 2, "unlinked"), ("deal", 1, "unlinked"), ("lead", 2, "unlinked"),
        ("note", 1, "unlinked"),
    ]),
    DeletableType.LEAD: ("Inbound", 1, [("note", 1, "deleted"), ("activity", 1, "unlinked")]),
    DeletableType.ACTIVITY: ("Call Ann", 1, []),
    DeletableType.NOTE: ("Budget approved", 1, []),
}  # fmt: skip


def expected_preview(world: World, entity_type: DeletableType) -> dict:
    title, version, consequences = EXPECTED[entity_type]
    return {
        "record": {"entity_type": entity_type, "id": world.id(entity_type), "title": title, "version": version},
        "consequences": [{"entity_type": t, "count": n, "effect": e} for t, n, e in consequences],
    }


def links_to(admin, entity_type: DeletableType, entity_id: UUID) -> dict[tuple[str, str], int]:
    """Rows pointing at the record, per referencing (table, column), read as superuser."""
    return {
        (table, column): admin.execute(
            f"select count(*) from public.{table} where {column} = %s", [entity_id]
        ).fetchone()[0]
        for _, table, column, _ in deletion.CASCADES[entity_type]
    }


def notes_alone(admin, entity_type: DeletableType, entity_id: UUID) -> int:
    """Notes linked to the record and to no other, which go with it (read as superuser)."""
    column = {"deal": "deal_id", "lead": "lead_id", "person": "person_id", "organization": "organization_id"}
    if entity_type.value not in column:
        return 0
    return admin.execute(
        f"select count(*) from public.notes where {column[entity_type.value]} = %s"
        " and num_nonnulls(deal_id, lead_id, person_id, organization_id) = 1",
        [entity_id],
    ).fetchone()[0]


async def preview_as(actors, who: str, entity_type: DeletableType, entity_id: UUID, **kwargs) -> DeletionPreview:
    async with actors.uow(who, **kwargs) as uow:
        return await deletion.preview(uow, entity_type, entity_id)


async def delete_as(
    actors, who: str, entity_type: DeletableType, entity_id: UUID, *, expected_version: int | None = None, **kwargs
) -> DeletionPreview:
    async with actors.uow(who, **kwargs) as uow:
        return await deletion.delete(uow, entity_type, entity_id, expected_version=expected_version)


@pytest.fixture
async def world(actors, company, admin) -> World:
    built = await build_world(actors, company)
    forget_bookkeeping(admin)
    return built


@pytest.mark.parametrize("entity_type", list(DeletableType))
async def test_preview_shows_the_record_and_exact_consequences_and_writes_nothing(actors, admin, world, entity_type):
    before = counts(admin, *ALL_TABLES)

    preview = await preview_as(actors, DELETER[entity_type], entity_type, world.id(entity_type))

    assert preview.model_dump() == expected_preview(world, entity_type)
    assert counts(admin, *ALL_TABLES) == before
    assert admin.execute("select count(*) from public.deals where id = %s", [world.deal]).fetchone()[0] == 1


@pytest.mark.parametrize("entity_type", list(DeletableType))
async def test_delete_does_exactly_what_the_preview_said(actors, admin, world, entity_type):
    entity_id = world.id(entity_type)
    before = counts(admin, *ALL_TABLES)
    linked = links_to(admin, entity_type, entity_id)
    alone = notes_alone(admin, entity_type, entity_id)

    deleted = await delete_as(actors, DELETER[entity_type], entity_type, entity_id)

    assert deleted.model_dump() == expected_preview(world, entity_type)
    expected_counts = {}
    for kind, table, column, effect in deletion.CASCADES[entity_type]:
        n = linked[(table, column)]
        if table == "notes":  # the notes linked to the record alone go with it; the others are unlinked
            expected_counts[("note", "deleted")] = alone
            expected_counts[("note", "unlinked")] = n - alone
        else:
            expected_counts[(kind.value, effect.value)] = n
    assert {(c.entity_type.value, c.effect.value): c.count for c in deleted.consequences} == {
        key: n for key, n in expected_counts.items() if n
    }
    assert links_to(admin, entity_type, entity_id) == dict.fromkeys(linked, 0)
    removed = {deletion.TABLES[entity_type]: 1}
    if alone:
        removed["notes"] = alone
    for _, table, column, effect in deletion.CASCADES[entity_type]:
        if effect == "deleted":
            removed[table] = linked[(table, column)]
    after = counts(admin, *ALL_TABLES)
    assert {t: before[t] - after[t] for t in ALL_TABLES if t not in ("audit_log", "outbox")} == {
        t: removed.get(t, 0) for t in ALL_TABLES if t not in ("audit_log", "outbox")
    }
    assert audit_operations(admin) == [f"{entity_type.value}.delete"]
    assert [name for name, _ in events(admin)] == [f"crm/{entity_type.value}.deleted"]


async def test_delete_with_the_current_version_deletes(actors, admin, world):
    deleted = await delete_as(actors, "bob", DeletableType.NOTE, world.note, expected_version=1)

    assert deleted.record.version == 1
    assert counts(admin, "notes") == {"notes": 2}


async def test_a_stale_expected_version_is_a_conflict_and_nothing_is_written(actors, admin, world):
    async with actors.uow("bob") as uow:
        await deals.update(uow, world.deal, DealUpdate(title="Initech expansion II"))
    forget_bookkeeping(admin)
    before = counts(admin, *ALL_TABLES)

    with pytest.raises(Conflict) as info:
        await delete_as(actors, "bob", DeletableType.DEAL, world.deal, expected_version=2)

    assert info.value.message == (
        f"deal {world.deal} was changed by someone else (version 3, expected 2); reload it and try again"
    )
    assert counts(admin, *ALL_TABLES) == before


@pytest.mark.parametrize(
    ("who", "scopes", "entity_type", "permission"),
    [
        ("bob", None, DeletableType.PERSON, "contacts:delete"),
        ("bob", None, DeletableType.ORGANIZATION, "contacts:delete"),
        ("vic", None, DeletableType.DEAL, "deals:delete"),
        ("vic", None, DeletableType.NOTE, "notes:delete"),
        ("bob", frozenset({Scope.WRITE}), DeletableType.DEAL, "deals:delete"),
        ("bob", frozenset({Scope.WRITE}), DeletableType.LEAD, "leads:delete"),
        ("bob", frozenset({Scope.READ}), DeletableType.ACTIVITY, "activities:delete"),
    ],
    ids=[
        "member-person",
        "member-organization",
        "viewer-deal",
        "viewer-note",
        "write-token-deal",
        "write-token-lead",
        "read-token-activity",
    ],
)
@pytest.mark.parametrize("operation", ["preview", "delete"])
async def test_callers_without_the_types_delete_permission_are_forbidden_and_nothing_is_written(
    actors, admin, world, who, scopes, entity_type, permission, operation
):
    before = counts(admin, *ALL_TABLES)

    for entity_id in (world.id(entity_type), uuid4()):  # refused before the lookup: existence does not show
        with pytest.raises(Forbidden) as info:
            if operation == "preview":
                await preview_as(actors, who, entity_type, entity_id, scopes=scopes)
            else:
                await delete_as(actors, who, entity_type, entity_id, scopes=scopes)
        assert info.value.permission == permission

    assert counts(admin, *ALL_TABLES) == before


@pytest.mark.parametrize("operation", ["preview", "delete"])
async def test_a_visible_record_the_caller_may_not_change_is_neither_previewed_nor_deleted(
    actors, admin, world, operation
):
    before = counts(admin, *ALL_TABLES)

    with pytest.raises(Forbidden) as info:
        run = preview_as if operation == "preview" else delete_as
        await run(actors, "dan", DeletableType.DEAL, world.deal)

    assert info.value.message == (
        f"only the owner, a manager of the owner's team, or an admin may change deal {world.deal}")
    assert counts(admin, *ALL_TABLES) == before


@pytest.mark.parametrize("operation", ["preview", "delete"])
async def test_carol_cannot_preview_or_delete_bobs_owner_only_deal(actors, admin, operation):
    async with actors.uow("bob") as uow:
        secret = await deals.create(uow, DealCreate(title="Secret", visibility=Visibility.OWNER))
    forget_bookkeeping(admin)
    before = counts(admin, *ALL_TABLES)

    with pytest.raises(NotFound) as info:
        if operation == "preview":
            await preview_as(actors, "carol", DeletableType.DEAL, secret.id)
        else:
            await delete_as(actors, "carol", DeletableType.DEAL, secret.id, expected_version=1)

    assert info.value.message == f"deal {secret.id} not found"
    assert counts(admin, *ALL_TABLES) == before


@pytest.mark.parametrize("entity_type", list(DeletableType))
async def test_an_unknown_record_is_not_found_in_the_domains_words(actors, entity_type):
    missing = uuid4()

    with pytest.raises(NotFound) as info:
        await preview_as(actors, "alice", entity_type, missing)

    assert info.value.message == f"{entity_type.value} {missing} not found"


async def test_counts_cover_only_the_rows_the_caller_can_see_while_the_delete_unlinks_all(actors, admin):
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Globex"))
        await deals.create(uow, DealCreate(title="Globex East", organization_id=org.id))
    async with actors.uow("carol") as uow:
        await deals.create(uow, DealCreate(title="Globex West", organization_id=org.id, visibility=Visibility.OWNER))

    preview = await preview_as(actors, "mia", DeletableType.ORGANIZATION, org.id)
    deleted = await delete_as(actors, "mia", DeletableType.ORGANIZATION, org.id)

    assert [c.model_dump() for c in preview.consequences] == [{"entity_type": "deal", "count": 1, "effect": "unlinked"}]
    assert deleted == preview
    assert admin.execute("select title, organization_id from public.deals order by title").fetchall() == [
        ("Globex East", None),
        ("Globex West", None),
    ]


async def test_a_long_note_is_titled_by_its_first_line_shortened(actors):
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Initech"))
        note = await notes.create(uow, NoteCreate(body="x" * 100 + "\nmore", organization_id=org.id))

    preview = await preview_as(actors, "bob", DeletableType.NOTE, note.id)

    assert preview.record.title == "x" * 79 + "…"


def test_every_deletable_type_has_its_delete_permission():
    assert deletion.PERMISSIONS == {
        DeletableType.DEAL: Perm.DEALS_DELETE,
        DeletableType.PERSON: Perm.CONTACTS_DELETE,
        DeletableType.ORGANIZATION: Perm.CONTACTS_DELETE,
        DeletableType.LEAD: Perm.LEADS_DELETE,
        DeletableType.ACTIVITY: Perm.ACTIVITIES_DELETE,
        DeletableType.NOTE: Perm.NOTES_DELETE,
    }


def test_the_cascades_match_the_foreign_keys_in_the_database(admin):
    rows = admin.execute(
        """
        select target.relname, source.relname, a.attname, c.confdeltype
        from pg_constraint c
        join pg_class target on target.oid = c.confrelid
        join pg_class source on source.oid = c.conrelid
        join pg_namespace ns on ns.oid = target.relnamespace and ns.nspname = 'public'
        join pg_attribute a on a.attrelid = c.conrelid and a.attnum = any (c.conkey)
        where c.contype = 'f' and target.relname = any (%s)
        """,
        [list(deletion.TABLES.values())],
    ).fetchall()
    effects = {"c": "deleted", "n": "unlinked"}
    in_database = {(target, source, column, effects.get(action, action)) for target, source, column, action in rows}

    declared = {
        (deletion.TABLES[entity_type], table, column, effect.value)
        for entity_type, cascades in deletion.CASCADES.items()
        for _, table, column, effect in cascades
    }
    assert in_database == declared

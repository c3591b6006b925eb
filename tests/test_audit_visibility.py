"""An audit row is readable only while its record is: a diff shows the record's fields. Admins read every row,
deleted records' included; a manager reads her team's rows of records she can still see. Both the policy
(raw SQL as `authenticated`) and the service (`audit.for_entity`) hold it."""

from __future__ import annotations

from uuid import UUID

import pytest
from conftest import rls_session
from matrix import seed_record

from services.audit import service as audit
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate
from services.kernel.errors import NotFound


def audit_row(admin, company, entity_type: str, entity_id: UUID | None, actor: str = "bob") -> int:
    return admin.execute(
        "insert into public.audit_log (actor_id, channel, operation, entity_type, entity_id, diff)"
        " values (%s, 'graphql', %s, %s, %s, '{\"after\": {\"title\": \"Secret\"}}') returning id",
        [company.people[actor].id, f"{entity_type}.update", entity_type, entity_id],
    ).fetchone()[0]


def readable(app_url, company, reader: str) -> list[int]:
    with rls_session(app_url, company.people[reader].id) as conn:
        return [r[0] for r in conn.execute("select id from public.audit_log order by id").fetchall()]


def hide_from_mia(admin, company, entity: str, record_id: UUID) -> None:
    """Hand the record to carol (West) with visibility owner: out of mia's reach."""
    table = {"deal": "deals", "person": "persons", "organization": "organizations", "lead": "leads"}[entity]
    admin.execute(f"update public.{table} set owner_id = %s, visibility = 'owner' where id = %s",
                  [company.people["carol"].id, record_id])


@pytest.mark.parametrize("entity", ["deal", "person", "organization", "lead"])
def test_a_manager_no_longer_reads_the_trail_of_a_record_moved_out_of_her_reach(app_url, company, admin, entity):
    record_id = seed_record(admin, company, entity, "owner")
    row = audit_row(admin, company, entity, record_id)
    assert readable(app_url, company, "mia") == [row]

    hide_from_mia(admin, company, entity, record_id)

    assert readable(app_url, company, "mia") == []
    assert readable(app_url, company, "alice") == [row]


def test_rows_of_a_deleted_record_are_for_admins_only(app_url, company, admin):
    deal_id = seed_record(admin, company, "deal", "company")
    row = audit_row(admin, company, "deal", deal_id)
    admin.execute("delete from public.deals where id = %s", [deal_id])

    assert readable(app_url, company, "mia") == []
    assert readable(app_url, company, "alice") == [row]


def test_notes_and_activities_rows_follow_their_record(app_url, company, admin):
    deal_id = seed_record(admin, company, "deal", "owner")
    bob = company.people["bob"].id
    note_id = admin.execute("insert into public.notes (body, author_id, deal_id) values ('x', %s, %s) returning id",
                            [bob, deal_id]).fetchone()[0]
    activity_id = admin.execute("insert into public.activities (type, subject, owner_id, deal_id)"
                                " values ('call', 'x', %s, %s) returning id", [bob, deal_id]).fetchone()[0]
    rows = [audit_row(admin, company, "note", note_id), audit_row(admin, company, "activity", activity_id)]
    assert readable(app_url, company, "mia") == rows

    hide_from_mia(admin, company, "deal", deal_id)

    assert readable(app_url, company, "mia") == []


def test_rows_about_no_record_keep_the_actor_rule(app_url, company, admin):
    bobs = audit_row(admin, company, "mcp_tool_call", None)
    carols = audit_row(admin, company, "mcp_tool_call", None, actor="carol")
    unknown_kind = audit_row(admin, company, "gadget", UUID(int=5))

    assert readable(app_url, company, "mia") == [bobs]
    assert readable(app_url, company, "alice") == [bobs, carols, unknown_kind]


def test_pipeline_stage_user_and_team_rows_follow_their_record(app_url, company, admin):
    mia = "mia"
    rows = [
        audit_row(admin, company, "pipeline", company.sales_pipeline_id, actor=mia),
        audit_row(admin, company, "stage", company.sales_stage_ids[0], actor=mia),
        audit_row(admin, company, "user", company.people["bob"].id, actor=mia),
        audit_row(admin, company, "team", company.team_ids["East"], actor=mia),
        audit_row(admin, company, "stage", UUID(int=9), actor=mia),  # a stage since deleted
    ]

    assert readable(app_url, company, "mia") == rows[:4]


# The service -----------------------------------------------------------------------------------------------


async def test_for_entity_of_a_record_the_reader_cannot_see_is_not_found(actors, company, admin):
    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Harbor"))
        await deals.update(uow, deal.id, DealUpdate(title="Harbor, renamed"))
    async with actors.uow("mia") as uow:
        assert [e.operation for e in await audit.for_entity(uow, "deal", deal.id)] == ["deal.update", "deal.create"]
    admin.execute("update public.deals set owner_id = %s, visibility = 'owner' where id = %s",
                  [company.people["carol"].id, deal.id])

    async with actors.uow("mia") as uow:
        with pytest.raises(NotFound, match=f"deal {deal.id} not found"):
            await audit.for_entity(uow, "deal", deal.id)
    async with actors.uow("alice") as uow:
        assert len(await audit.for_entity(uow, "deal", deal.id)) == 2


async def test_for_entity_of_a_deleted_record_is_for_admins_only(actors, admin):
    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Harbor"))
        await deals.delete(uow, deal.id)

    async with actors.uow("mia") as uow:
        with pytest.raises(NotFound, match=f"deal {deal.id} not found"):
            await audit.for_entity(uow, "deal", deal.id)
    async with actors.uow("alice") as uow:
        assert [e.operation for e in await audit.for_entity(uow, "deal", deal.id)] == ["deal.delete", "deal.create"]


async def test_for_entity_of_an_unknown_kind_is_not_found_for_non_admins(actors, company, admin):
    audit_row(admin, company, "gadget", UUID(int=5))

    async with actors.uow("mia") as uow:
        with pytest.raises(NotFound):
            await audit.for_entity(uow, "gadget", UUID(int=5))
    async with actors.uow("alice") as uow:
        assert len(await audit.for_entity(uow, "gadget", UUID(int=5))) == 1

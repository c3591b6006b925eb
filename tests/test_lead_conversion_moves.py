"""Converting a lead moves only what belongs to the lead alone: a note or activity already on someone's deal keeps
that deal (and its lead link), and every row that moves gets its own audit row, written by the database function
itself, so a raw-SQL caller cannot move rows without the trail."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest
from conftest import counts, events, forget_bookkeeping, rls_session
from matrix import seed_record
from psycopg.errors import InsufficientPrivilege

from services.leads import service as leads

Seeded = dict[str, UUID]


def insert(admin: psycopg.Connection, query: str, params: list[Any]) -> UUID:
    return admin.execute(query, params).fetchone()[0]  # type: ignore[index]


def seed(admin: psycopg.Connection, company) -> Seeded:
    """bob's lead (company-wide) and deal; carol's deal; on the lead: carol's note and activity that are also on
    her deal, and mia's note and bob's activity that are on the lead alone."""
    bob, carol, mia = (company.people[k].id for k in ("bob", "carol", "mia"))
    lead = seed_record(admin, company, "lead", "company")
    bobs_deal = seed_record(admin, company, "deal", "company")
    carols_deal = insert(
        admin,
        "insert into public.deals (title, owner_id, visibility, pipeline_id, stage_id)"
        " values ('Carol''s deal', %s, 'owner', %s, %s) returning id",
        [carol, company.sales_pipeline_id, company.sales_stage_ids[0]],
    )
    note = "insert into public.notes (body, author_id, lead_id, deal_id) values (%s, %s, %s, %s) returning id"
    activity = ("insert into public.activities (type, subject, owner_id, lead_id, deal_id)"
                " values ('call', %s, %s, %s, %s) returning id")
    return {
        "lead": lead, "bobs_deal": bobs_deal, "carols_deal": carols_deal,
        "carols_note": insert(admin, note, ["Carol's own note", carol, lead, carols_deal]),
        "carols_activity": insert(admin, activity, ["Carol's own call", carol, lead, carols_deal]),
        "mias_note": insert(admin, note, ["Budget approved", mia, lead, None]),
        "bobs_activity": insert(admin, activity, ["Call Ann", bob, lead, None]),
    }


def links(admin: psycopg.Connection, table: str) -> dict[UUID, tuple[UUID | None, UUID | None]]:
    return {r[0]: (r[1], r[2]) for r in admin.execute(f"select id, deal_id, lead_id from public.{table}")}


def moved_diff(lead: UUID, deal: UUID) -> dict[str, Any]:
    return {"before": {"deal_id": None, "lead_id": str(lead)}, "after": {"deal_id": str(deal), "lead_id": None}}


def test_raw_move_leaves_rows_on_another_deal_alone_and_audits_each_moved_row(app_url, company, admin):
    s = seed(admin, company)
    bob = company.people["bob"].id

    with rls_session(app_url, bob, channel="mcp") as conn:
        moved = conn.execute(
            "select notes_moved, activities_moved from private.move_lead_attachments(%s, %s)",
            [s["lead"], s["bobs_deal"]],
        ).fetchone()

    assert moved == (1, 1)
    assert links(admin, "notes") == {
        s["carols_note"]: (s["carols_deal"], s["lead"]),
        s["mias_note"]: (s["bobs_deal"], None),
    }
    assert links(admin, "activities") == {
        s["carols_activity"]: (s["carols_deal"], s["lead"]),
        s["bobs_activity"]: (s["bobs_deal"], None),
    }
    assert admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id, diff from public.audit_log order by id"
    ).fetchall() == [
        (bob, "mcp", "note.move_to_deal", "note", s["mias_note"], moved_diff(s["lead"], s["bobs_deal"])),
        (bob, "mcp", "activity.move_to_deal", "activity", s["bobs_activity"], moved_diff(s["lead"], s["bobs_deal"])),
    ]


def test_raw_move_without_a_channel_moves_nothing(app_url, company, admin):
    s = seed(admin, company)
    before = (links(admin, "notes"), links(admin, "activities"))

    with pytest.raises(InsufficientPrivilege, match="bookkeeping needs the channel of the transaction"):
        with rls_session(app_url, company.people["bob"].id) as conn:
            conn.execute("select * from private.move_lead_attachments(%s, %s)", [s["lead"], s["bobs_deal"]])

    assert (links(admin, "notes"), links(admin, "activities")) == before
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_converting_keeps_carols_deal_on_her_note_and_audits_the_moved_rows(actors, admin, company, app_url):
    s = seed(admin, company)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        result = await leads.convert(uow, s["lead"])

    bob, deal = actors.id("bob"), result.deal.id
    assert links(admin, "notes") == {s["carols_note"]: (s["carols_deal"], s["lead"]), s["mias_note"]: (deal, None)}
    assert links(admin, "activities") == {
        s["carols_activity"]: (s["carols_deal"], s["lead"]),
        s["bobs_activity"]: (deal, None),
    }
    moves = admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id, diff from public.audit_log"
        " where operation like '%%.move_to_deal' order by id"
    ).fetchall()
    assert moves == [
        (bob, "graphql", "note.move_to_deal", "note", s["mias_note"], moved_diff(s["lead"], deal)),
        (bob, "graphql", "activity.move_to_deal", "activity", s["bobs_activity"], moved_diff(s["lead"], deal)),
    ]
    converted = dict(events(admin))["crm/lead.converted"]
    assert (converted["notes_moved"], converted["activities_moved"]) == (1, 1)

    # carol still finds her note and activity on her own deal
    with rls_session(app_url, company.people["carol"].id, channel="graphql") as conn:
        assert [r[0] for r in conn.execute("select id from public.notes where deal_id = %s", [s["carols_deal"]])
                ] == [s["carols_note"]]
        assert [r[0] for r in conn.execute(
            "select id from public.activities where deal_id = %s", [s["carols_deal"]])] == [s["carols_activity"]]


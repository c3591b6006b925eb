"""Columns only the service may set are the database's own under RLS: raw SQL as `authenticated` cannot plant
versions, timestamps, statuses, a conversion, or a stage history that did not happen. The system and the
table owner (seeding, migrations) still may."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest
from conftest import rls_session
from matrix import seed_record
from psycopg.errors import InsufficientPrivilege

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.leads import service as leads
from services.leads.schemas import LeadCreate

LONG_AGO = datetime(1990, 1, 1, tzinfo=UTC)


def now(admin) -> datetime:
    return admin.execute("select now()").fetchone()[0]


# Versions and timestamps ---------------------------------------------------------------------------------


def test_insert_gets_version_1_and_the_database_clock(app_url, company, admin):
    bob = company.people["bob"].id
    started = now(admin)

    with rls_session(app_url, bob) as conn:
        deal = conn.execute(
            "insert into public.deals (title, pipeline_id, version, created_at, updated_at)"
            " values ('Planted', %s, 999, %s, %s) returning id", [company.sales_pipeline_id, LONG_AGO, LONG_AGO]
        ).fetchone()[0]
        conn.execute("insert into public.notes (body, deal_id, version, created_at, updated_at)"
                     " values ('Mine', %s, 7, %s, %s)", [deal, LONG_AGO, LONG_AGO])

    for table in ("deals", "notes"):
        query = f"select version, created_at, updated_at from public.{table}"
        version, created, updated = admin.execute(query).fetchone()
        assert version == 1
        assert created == updated >= started


def test_update_cannot_move_created_at_or_set_version_or_updated_at(app_url, company, admin):
    deal_id = seed_record(admin, company, "deal", "company")
    created, updated = admin.execute("select created_at, updated_at from public.deals where id = %s",
                                     [deal_id]).fetchone()

    with rls_session(app_url, company.people["bob"].id) as conn:
        conn.execute("update public.deals set title = 'Renamed', version = 999, created_at = %s, updated_at = %s"
                     " where id = %s", [LONG_AGO, LONG_AGO, deal_id])

    title, version, created_after, updated_after = admin.execute(
        "select title, version, created_at, updated_at from public.deals where id = %s", [deal_id]).fetchone()
    assert (title, version, created_after) == ("Renamed", 2, created)
    assert updated_after > updated


@pytest.mark.parametrize("who", ["user", "owner"])
def test_an_update_that_changes_nothing_keeps_the_version(app_url, company, admin, who):
    deal_id = seed_record(admin, company, "deal", "company")
    before = admin.execute("select * from public.deals where id = %s", [deal_id]).fetchone()

    if who == "user":
        with rls_session(app_url, company.people["bob"].id) as conn:
            conn.execute("update public.deals set title = title, version = version where id = %s", [deal_id])
    else:
        admin.execute("update public.deals set title = title where id = %s", [deal_id])

    assert admin.execute("select * from public.deals where id = %s", [deal_id]).fetchone() == before


def test_the_table_owner_may_still_seed_any_version_and_timestamps(admin, company):
    deal_id = admin.execute(
        "insert into public.deals (title, owner_id, pipeline_id, status, won_at, version, created_at)"
        " values ('Seeded', %s, %s, 'won', %s, 5, %s) returning id",
        [company.people["bob"].id, company.sales_pipeline_id, LONG_AGO, LONG_AGO]).fetchone()[0]

    assert admin.execute("select status, won_at, version, created_at from public.deals where id = %s",
                         [deal_id]).fetchone() == ("won", LONG_AGO, 5, LONG_AGO)


# Deals -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "column"), [("won", "won_at"), ("lost", "lost_at")])
def test_a_deal_cannot_be_inserted_won_or_lost(app_url, company, admin, status, column):
    with pytest.raises(InsufficientPrivilege, match="a deal is created open"):
        with rls_session(app_url, company.people["bob"].id) as conn:
            conn.execute(f"insert into public.deals (title, pipeline_id, status, {column}, lost_reason)"
                         " values ('Planted', %s, %s, %s, 'x')", [company.sales_pipeline_id, status, LONG_AGO])

    assert admin.execute("select count(*) from public.deals").fetchone() == (0,)


def test_won_at_and_lost_at_are_the_database_clock_when_the_status_changes(app_url, company, admin):
    deal_id = seed_record(admin, company, "deal", "company")
    started = now(admin)

    with rls_session(app_url, company.people["bob"].id) as conn:
        conn.execute("update public.deals set status = 'won', won_at = %s where id = %s", [LONG_AGO, deal_id])
    won_at = admin.execute("select won_at from public.deals where id = %s", [deal_id]).fetchone()[0]
    with rls_session(app_url, company.people["bob"].id) as conn:
        conn.execute("update public.deals set title = 'Renamed', won_at = %s where id = %s", [LONG_AGO, deal_id])

    assert won_at >= started
    assert admin.execute("select status, won_at, lost_at from public.deals where id = %s",
                         [deal_id]).fetchone() == ("won", won_at, None)


# Leads -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["status", "status, converted_at", "converted_deal_id"])
def test_a_lead_cannot_be_inserted_converted(app_url, company, admin, columns):
    deal_id = seed_record(admin, company, "deal", "company")
    values = {"status": "'converted'", "converted_at": "now()", "converted_deal_id": f"'{deal_id}'"}

    with pytest.raises(InsufficientPrivilege, match="a lead is created open"):
        with rls_session(app_url, company.people["bob"].id) as conn:
            names = columns.split(", ")
            conn.execute(f"insert into public.leads (title, {columns}) values ('Planted',"
                         f" {', '.join(values[n] for n in names)})")

    assert admin.execute("select count(*) from public.leads").fetchone() == (0,)


@pytest.mark.parametrize(
    "assignment",
    ["status = 'converted', converted_at = now()", "converted_deal_id = %(deal)s", "converted_at = now()"],
)
def test_a_lead_cannot_be_marked_converted_by_hand(app_url, company, admin, assignment):
    lead_id = seed_record(admin, company, "lead", "company")
    deal_id = seed_record(admin, company, "deal", "company")
    before = admin.execute("select * from public.leads where id = %s", [lead_id]).fetchone()

    with pytest.raises(InsufficientPrivilege, match="only the conversion"):
        with rls_session(app_url, company.people["bob"].id) as conn:
            conn.execute(f"update public.leads set {assignment} where id = %(lead)s",
                         {"deal": deal_id, "lead": lead_id})

    assert admin.execute("select * from public.leads where id = %s", [lead_id]).fetchone() == before


async def test_a_converted_lead_stays_converted(actors, app_url, company, admin):
    async with actors.uow("bob") as uow:
        lead = await leads.create(uow, LeadCreate(title="Initech"))
        converted = await leads.convert(uow, lead.id)
    before = admin.execute("select * from public.leads where id = %s", [lead.id]).fetchone()

    with pytest.raises(InsufficientPrivilege, match="stays converted"):
        with rls_session(app_url, company.people["bob"].id) as conn:
            conn.execute("update public.leads set status = 'open', converted_at = null, converted_deal_id = null"
                         " where id = %s", [lead.id])

    assert admin.execute("select * from public.leads where id = %s", [lead.id]).fetchone() == before
    assert (converted.lead.status, converted.lead.converted_deal_id) == ("converted", converted.deal.id)


def test_the_conversion_function_needs_leads_convert_and_a_lead_the_caller_may_change(app_url, company, admin):
    lead_id = seed_record(admin, company, "lead", "company")
    deal_id = seed_record(admin, company, "deal", "company")
    before = admin.execute("select * from public.leads where id = %s", [lead_id]).fetchone()

    for who, message in [("vic", "missing permission leads:convert"), ("dan", "not yours to convert")]:
        with pytest.raises(InsufficientPrivilege, match=message):
            with rls_session(app_url, company.people[who].id) as conn:
                conn.execute("select private.mark_lead_converted(%s, %s)", [lead_id, deal_id])

    assert admin.execute("select * from public.leads where id = %s", [lead_id]).fetchone() == before


def test_the_conversion_function_marks_the_lead_converted_for_its_owner(app_url, company, admin):
    lead_id = seed_record(admin, company, "lead", "company")
    deal_id = seed_record(admin, company, "deal", "company")

    with rls_session(app_url, company.people["bob"].id) as conn:
        conn.execute("select private.mark_lead_converted(%s, %s)", [lead_id, deal_id])

    status, converted_deal, converted_at, version = admin.execute(
        "select status, converted_deal_id, converted_at, version from public.leads where id = %s", [lead_id]).fetchone()
    assert (status, converted_deal, version) == ("converted", deal_id, 2)
    assert converted_at is not None


def test_deleting_the_deal_of_a_converted_lead_still_clears_the_link(app_url, company, admin):
    lead_id = seed_record(admin, company, "lead", "company")
    deal_id = seed_record(admin, company, "deal", "company")
    with rls_session(app_url, company.people["bob"].id) as conn:
        conn.execute("select private.mark_lead_converted(%s, %s)", [lead_id, deal_id])

    with rls_session(app_url, company.people["bob"].id) as conn:
        assert conn.execute("delete from public.deals where id = %s", [deal_id]).rowcount == 1

    assert admin.execute("select status, converted_deal_id from public.leads where id = %s",
                         [lead_id]).fetchone() == ("converted", None)


# Activities ------------------------------------------------------------------------------------------------


def test_done_at_is_the_database_clock_when_done_flips(app_url, company, admin):
    bob = company.people["bob"].id
    started = now(admin)

    with rls_session(app_url, bob) as conn:
        planted = conn.execute("insert into public.activities (type, subject, done, done_at)"
                               " values ('call', 'Called', true, %s) returning id", [LONG_AGO]).fetchone()[0]
        open_one = conn.execute("insert into public.activities (type, subject) values ('call', 'Open')"
                                " returning id").fetchone()[0]
    with rls_session(app_url, bob) as conn:
        conn.execute("update public.activities set subject = 'Called again', done_at = %s where id = %s",
                     [LONG_AGO, planted])
        conn.execute("update public.activities set done = true, done_at = %s where id = %s", [LONG_AGO, open_one])

    for activity_id in (planted, open_one):
        done, done_at = admin.execute("select done, done_at from public.activities where id = %s",
                                      [activity_id]).fetchone()
        assert done is True
        assert done_at >= started


# Stage history ---------------------------------------------------------------------------------------------


async def bobs_deal(actors) -> UUID:
    async with actors.uow("bob") as uow:
        return (await deals.create(uow, DealCreate(title="Harbor"))).id


def history(admin, deal_id: UUID) -> list[tuple]:
    return admin.execute("select from_stage_id, to_stage_id, changed_by, changed_at from public.deal_stage_history"
                         " where deal_id = %s order by id", [deal_id]).fetchall()


async def test_stage_history_cannot_be_backdated_or_planted_for_a_stage_the_deal_is_not_in(
    actors, app_url, company, admin
):
    deal_id = await bobs_deal(actors)
    before = history(admin, deal_id)
    other = admin.execute("insert into public.pipelines (name) values ('Other') returning id").fetchone()[0]
    foreign = admin.execute("insert into public.stages (pipeline_id, name, position) values (%s, 'Elsewhere', 0)"
                            " returning id", [other]).fetchone()[0]
    stages = company.sales_stage_ids

    for to_stage, message in [(foreign, "current stage"), (stages[2], "current stage"),
                              (stages[0], "continue from its last stage")]:
        with pytest.raises(InsufficientPrivilege, match=message):
            with rls_session(app_url, company.people["bob"].id) as conn:
                conn.execute("insert into public.deal_stage_history (deal_id, from_stage_id, to_stage_id, changed_at)"
                             " values (%s, %s, %s, %s)", [deal_id, stages[0], to_stage, LONG_AGO])

    assert history(admin, deal_id) == before


async def test_stage_history_is_stamped_by_the_database(actors, app_url, company, admin):
    deal_id = await bobs_deal(actors)
    stages = company.sales_stage_ids
    started = now(admin)

    with rls_session(app_url, company.people["bob"].id) as conn:
        conn.execute("update public.deals set stage_id = %s where id = %s", [stages[1], deal_id])
        conn.execute("insert into public.deal_stage_history (deal_id, from_stage_id, to_stage_id, changed_at)"
                     " values (%s, %s, %s, %s)", [deal_id, stages[0], stages[1], LONG_AGO])

    last = history(admin, deal_id)[-1]
    assert last[:3] == (stages[0], stages[1], company.people["bob"].id)
    assert last[3] >= started

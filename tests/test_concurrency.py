"""Races that real clients produce: retries with the same idempotency key, double-clicked conversions."""

from __future__ import annotations

import asyncio

from conftest import counts

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Conflict
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import StageCreate


async def test_concurrent_creates_with_one_idempotency_key_make_one_deal(actors, admin):
    async def create():
        async with actors.uow("bob") as uow:
            return await deals.create(uow, DealCreate(title="Retry storm"), idempotency_key="req-42")

    first, second = await asyncio.gather(create(), create())
    assert first.id == second.id
    assert counts(admin, "deals", "audit_log", "outbox") == {"deals": 1, "audit_log": 1, "outbox": 1}


async def test_converting_a_lead_twice_at_once_makes_one_deal(actors, admin):
    async with actors.uow("bob") as uow:
        lead = await leads.create(uow, LeadCreate(title="Double click", contact_name="Ada Lovelace",
                                                 contact_email="ada@example.org", organization_name="Engines"))
    before = counts(admin, "deals", "persons", "organizations")

    async def convert():
        async with actors.uow("bob") as uow:
            return await leads.convert(uow, lead.id)

    results = await asyncio.gather(convert(), convert())
    assert results[0].deal.id == results[1].deal.id
    assert sorted(r.already_converted for r in results) == [False, True]
    after = counts(admin, "deals", "persons", "organizations")
    assert after == {k: v + 1 for k, v in before.items()}


async def test_two_admins_adding_stages_at_once_get_one_success_and_one_conflict(actors, company, admin):
    inserted = {"A": asyncio.Event(), "B": asyncio.Event()}

    async def add(name: str, other: str):
        async with actors.uow("alice") as uow:
            stage = await pipelines.create_stage(uow, company.sales_pipeline_id, StageCreate(name=name))
            inserted[name].set()
            await inserted[other].wait()  # both have written before either commits
        return stage

    results = await asyncio.gather(add("A", "B"), add("B", "A"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "Stage"]
    assert isinstance(next(r for r in results if isinstance(r, Exception)), Conflict)
    positions = admin.execute(
        "select position from public.stages where pipeline_id = %s order by position", [company.sales_pipeline_id]
    ).fetchall()
    assert [p[0] for p in positions] == [0, 1, 2, 3, 4]

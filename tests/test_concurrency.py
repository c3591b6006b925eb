"""Races that real clients produce: retries with the same idempotency key, double-clicked conversions."""

from __future__ import annotations

import asyncio

from conftest import counts

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.leads import service as leads
from services.leads.schemas import LeadCreate


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

"""Weekly pipeline digests: the cron asks once per user and week however often it runs and however many runners
tick; each digest is written AS its user from their own deals, kept as a pipeline summary, and announced."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conftest import Actors, Start

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.records import Visibility
from services.summaries import service as summaries
from workflows.acting import SYSTEM


async def own_deals(actors: Actors, who: str, *titles: str) -> set[str]:
    ids = set()
    for title in titles:
        async with actors.uow(who) as uow:
            ids.add(str((await deals.create(uow, DealCreate(title=title, visibility=Visibility.OWNER))).id))
    return ids


async def test_one_digest_per_user_and_week_whatever_runs_twice(start: Start, actors: Actors, admin) -> None:
    bobs = await own_deals(actors, "bob", "Acme renewal", "Globex pilot")
    carols = await own_deals(actors, "carol", "Umbrella lab")
    one, two = await start(), await start()
    monday = datetime.now(UTC) + timedelta(days=8)
    ticks = await asyncio.gather(one.runner.tick_crons(now=monday), two.runner.tick_crons(now=monday))
    assert sorted(ticks) == [0, 3]  # one runner started the tick of each cron function; the other none
    await one.settle()
    week = summaries.iso_week(datetime.now(UTC).date())
    async with actors.db.unit_of_work(SYSTEM) as uow:  # a rerun of the week asks for nothing new
        assert await summaries.request_digests(uow, week) == 0
    await one.settle()
    rows = admin.execute(
        "select requested_by, status, model, period, source_ids::text[] from public.ai_summaries where kind = 'digest'"
    ).fetchall()
    by_user = {row[0]: row for row in rows}
    # bob and carol own open deals; alice, mia and dan own none (no digest); vic, a viewer, may not use AI
    assert set(by_user) == {actors.id("bob"), actors.id("carol")}
    assert all(row[1:4] == ("done", "offline", week) for row in rows)
    assert bobs <= set(by_user[actors.id("bob")][4]) and not carols & set(by_user[actors.id("bob")][4])
    assert carols <= set(by_user[actors.id("carol")][4]) and not bobs & set(by_user[actors.id("carol")][4])
    assert sorted(admin.execute("select user_id, kind from public.notifications").fetchall()) == sorted(
        [(actors.id("bob"), "digest_ready"), (actors.id("carol"), "digest_ready")])
    runs = admin.execute("select count(*) from runner.runs where function_id = 'pipecd-ai-digest'").fetchone()
    assert runs == (5,)  # one per active user who may use AI; three found nothing to digest

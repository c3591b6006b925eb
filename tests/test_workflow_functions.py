"""The workflow functions, run by the embedded runner over a real database: the follow-up task for a new deal
(as its owner, once per deal), the daily maintenance, and who a step acts as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import Actors, Start, forget_bookkeeping

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Forbidden
from services.kernel.permissions import Perm, Scope
from services.kernel.principal import Channel
from services.kernel.uow import Database
from services.maintenance import service as maintenance
from services.maintenance.schemas import Retention
from workflows import functions
from workflows.acting import SYSTEM, as_user


async def create_deal(actors: Actors, who: str = "bob", title: str = "Acme renewal") -> str:
    async with actors.uow(who) as uow:
        return str((await deals.create(uow, DealCreate(title=title))).id)


def followups(admin) -> list[tuple]:
    return admin.execute(
        "select owner_id::text, type, subject, due_date, deal_id::text from public.activities order by created_at"
    ).fetchall()


def runs(admin, function: str) -> list[tuple]:
    return admin.execute(
        "select status, output, error ->> 'message' from runner.runs where function_id = %s order by created_at",
        [f"pipecd-{function}"],
    ).fetchall()


async def test_a_new_deal_gets_one_follow_up_task_for_its_owner(start: Start, actors: Actors, admin) -> None:
    engine = await start(followup_days=3)
    forget_bookkeeping(admin)
    deal_id = await create_deal(actors)
    await engine.settle()
    due = (datetime.now(UTC) + timedelta(days=3)).date()
    assert followups(admin) == [(str(actors.id("bob")), "task", functions.FOLLOWUP_SUBJECT, due, deal_id)]
    ((status, output, _),) = runs(admin, "deal-created-followup")
    task_id = admin.execute("select id::text from public.activities").fetchone()[0]
    assert (status, output) == ("completed", {"deal_id": deal_id, "activity_id": task_id})
    # made as bob, through the workflow channel, like any write: audited and announced
    assert admin.execute("select actor_id::text, channel, operation from public.audit_log"
                         " where entity_type = 'activity'").fetchall() == [
        (str(actors.id("bob")), "workflow", "activity.create")]


async def test_the_same_deal_announced_twice_still_gets_one_task(start: Start, actors: Actors, admin) -> None:
    engine = await start()
    deal_id = await create_deal(actors)
    await engine.settle()
    async with actors.db.unit_of_work(SYSTEM) as uow:  # a second delivery under another event id
        await uow.execute(
            "select private.emit_events(%s::jsonb)",
            [f'[{{"id": "again", "name": "crm/deal.created", "data": {{"deal_id": "{deal_id}", '
             f'"owner_id": "{actors.id("bob")}"}}}}]'],
        )
    await engine.settle()
    assert len(followups(admin)) == 1
    first, second = runs(admin, "deal-created-followup")
    assert first[:2] == second[:2]  # both completed with the one task's id


async def test_no_task_when_the_owner_is_disabled(start: Start, actors: Actors, admin) -> None:
    engine = await start()
    await create_deal(actors)
    admin.execute("update auth.users set banned_until = now() + interval '1 day' where id = %s", [actors.id("bob")])
    await engine.settle()
    assert followups(admin) == []
    assert runs(admin, "deal-created-followup") == [
        ("failed", None, f"user {actors.id('bob')} no longer exists or is disabled")]


async def test_a_deal_deleted_before_the_job_runs_is_skipped(start: Start, actors: Actors, admin) -> None:
    engine = await start()
    deal_id = await create_deal(actors)
    admin.execute("delete from public.deals where id = %s", [deal_id])
    await engine.settle()
    assert followups(admin) == []
    assert runs(admin, "deal-created-followup") == [
        ("completed", {"deal_id": deal_id, "skipped": "deal_not_visible"}, None)]


async def test_zero_follow_up_days_turns_the_function_off(start: Start, actors: Actors, admin) -> None:
    engine = await start(followup_days=0)
    assert "pipecd-deal-created-followup" not in engine.runner.specs
    await create_deal(actors)
    await engine.settle()
    assert followups(admin) == []


async def test_a_workflow_acts_as_the_user_with_only_the_scopes_it_needs(db: Database, actors: Actors) -> None:
    bob = await as_user(db, actors.id("bob"), {Scope.READ})
    assert (bob.user_id, bob.channel, bob.scopes) == (actors.id("bob"), Channel.WORKFLOW, frozenset({Scope.READ}))
    assert bob.can(Perm.DEALS_READ) and not bob.can(Perm.DEALS_WRITE)
    vic = await as_user(db, actors.id("vic"), {Scope.WRITE})  # a viewer's scopes never widen their role
    assert not vic.can(Perm.DEALS_WRITE)


async def test_maintenance_prunes_only_what_is_past_its_retention(start: Start, actors: Actors, admin) -> None:
    engine = await start(outbox_retention_days=7, runs_retention_days=14, idempotency_retention_days=30)
    forget_bookkeeping(admin)
    for key in ("old", "recent", "pending"):
        await create_deal(actors, title=key)
    admin.execute("update public.outbox set dispatched_at = now() - interval '8 days'"
                  " where data ->> 'deal_id' = (select id::text from public.deals where title = 'old')")
    admin.execute("update public.outbox set dispatched_at = now() - interval '6 days'"
                  " where data ->> 'deal_id' = (select id::text from public.deals where title = 'recent')")
    admin.execute("insert into public.idempotency_keys (user_id, key, operation, created_at) values"
                  " (%(u)s, 'old', 'deal.create', now() - interval '31 days'),"
                  " (%(u)s, 'recent', 'deal.create', now() - interval '29 days')", {"u": actors.id("bob")})
    admin.execute("insert into runner.runs (function_id, idempotency_key, event, status, created_at, ended_at) values"
                  " ('pipecd-x', 'old', '{}', 'failed', now() - interval '20 days', now() - interval '15 days'),"
                  " ('pipecd-x', 'recent', '{}', 'completed', now() - interval '20 days', now() - interval '13 days')")
    tomorrow = datetime.now(UTC) + timedelta(days=1, hours=1)
    assert await engine.runner.tick_crons(now=tomorrow) == 2  # maintenance and reminders
    await engine.runner.drain()
    ((status, output, _),) = runs(admin, "maintenance")
    assert (status, output) == ("completed", {"outbox": 1, "runs": 1, "idempotency_keys": 1})
    assert admin.execute("select count(*) from public.outbox").fetchone() == (2,)
    assert admin.execute("select key from public.idempotency_keys where key in ('old', 'recent')").fetchall() == [
        ("recent",)]
    assert admin.execute("select idempotency_key from runner.runs where function_id = 'pipecd-x'").fetchall() == [
        ("recent",)]


async def test_only_the_system_prunes(actors: Actors, admin) -> None:
    before = admin.execute("select count(*) from public.outbox").fetchone()
    async with actors.uow("alice") as uow:
        with pytest.raises(Forbidden, match="only the system prunes"):
            await maintenance.prune(uow, Retention(outbox_days=1))
    assert admin.execute("select count(*) from public.outbox").fetchone() == before


async def test_step_outputs_and_events_carry_no_personal_data(start: Start, actors: Actors, admin) -> None:
    engine = await start()
    await create_deal(actors, title="Secret Acme merger with Wile E. Coyote")
    await engine.settle()
    stored = admin.execute(
        "select coalesce((select jsonb_agg(data)::text from runner.steps), '')"
        " || coalesce((select jsonb_agg(output)::text from runner.runs), '')"
        " || coalesce((select jsonb_agg(event)::text from runner.runs), '')"
        " || coalesce((select jsonb_agg(data)::text from public.outbox), '')").fetchone()[0]
    assert stored
    for personal in ("Acme", "Coyote", "bob@example.com", "Bob"):
        assert personal not in stored

"""The workflow functions: Inngest SDK functions, written once, whichever engine runs them.

Where a function touches CRM data it acts AS a user (`acting.as_user`): the event's actor or the record's
owner, rebuilt from the database with the scopes the job needs, through the same services and RLS as any
request. Only maintenance acts as the system. Step outputs are ids and counts: engines keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import inngest

from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityType
from services.ai.llm import LLM
from services.ai.offline import OfflineLLM
from services.kernel.errors import Forbidden, Invalid, NotFound
from services.kernel.permissions import Scope
from services.kernel.uow import Database
from services.maintenance import service as maintenance
from services.maintenance.schemas import Retention
from services.notifications import service as notifications
from workflows import gdpr, summaries
from workflows.acting import SYSTEM, as_user

APP_ID = "pipecd"

# Reminders whose time passed longer ago than this (e.g. while nothing ran) are not announced any more.
REMINDER_LOOKBACK = timedelta(hours=24)
FOLLOWUP_SUBJECT = "Follow up on the new deal"


@dataclass(frozen=True)
class Config:
    followup_days: int = 2
    reminder_cron: str = "*/5 * * * *"
    maintenance_cron: str = "17 3 * * *"
    outbox_retention_days: int = 7
    runs_retention_days: int = 14
    idempotency_retention_days: int = 30
    ai_context_tokens: int = 6000
    ai_concurrency_per_user: int = 1
    ai_concurrency: int = 4
    digest_cron: str = "0 7 * * 1"
    erasure_settle_seconds: int = 600  # GDPR erasure: how long in-flight work may finish before verification


def build(
    client: inngest.Inngest, db: Database, config: Config, llm: LLM | None = None
) -> list[inngest.Function[Any]]:
    """Every workflow function, made with `client` (the engine's) over `db`; summaries are written by `llm`
    (default: the offline summarizer)."""
    functions: list[inngest.Function[Any]] = summaries.build(
        client, db, llm or OfflineLLM(), context_tokens=config.ai_context_tokens,
        per_user=config.ai_concurrency_per_user, overall=config.ai_concurrency, digest_cron=config.digest_cron,
    )

    if config.followup_days > 0:

        @client.create_function(
            fn_id="deal-created-followup", trigger=inngest.TriggerEvent(event="crm/deal.created"), retries=4
        )
        async def deal_created_followup(ctx: inngest.Context) -> dict[str, Any]:
            """A follow-up task for the new deal's owner, due in `followup_days` days; one per deal, however
            often the event arrives (the idempotency key is the deal's)."""
            deal_id = UUID(str(ctx.event.data["deal_id"]))
            owner_id = UUID(str(ctx.event.data["owner_id"]))

            async def create_followup() -> dict[str, Any]:
                owner = await as_user(db, owner_id, {Scope.WRITE})
                due = datetime.now(UTC).date() + timedelta(days=config.followup_days)
                try:
                    async with db.unit_of_work(owner) as uow:
                        task = await activities.create(
                            uow,
                            ActivityCreate(type=ActivityType.TASK, subject=FOLLOWUP_SUBJECT, due_date=due,
                                           deal_id=deal_id),
                            idempotency_key=f"followup:{deal_id}",
                        )
                except (NotFound, Invalid):  # the deal is gone, or its owner can no longer see it
                    return {"deal_id": str(deal_id), "skipped": "deal_not_visible"}
                except Forbidden as exc:
                    raise inngest.NonRetriableError(f"the deal's owner may not create tasks: {exc}") from exc
                return {"deal_id": str(deal_id), "activity_id": str(task.id)}

            return await ctx.step.run("create-followup", create_followup)

        functions.append(deal_created_followup)

    @client.create_function(
        fn_id="activity-reminders", trigger=inngest.TriggerCron(cron=config.reminder_cron), retries=2
    )
    async def activity_reminders(ctx: inngest.Context) -> dict[str, Any]:
        """One notification for its owner per activity whose reminder time has come, exactly once per
        (activity, reminder time) however the ticks overlap (the database's unique rule decides)."""

        async def notify_due() -> dict[str, Any]:
            async with db.unit_of_work(SYSTEM) as uow:
                sent = await notifications.notify_due_reminders(
                    uow, now=datetime.now(UTC), lookback=REMINDER_LOOKBACK
                )
            return {"notified": sent}

        return await ctx.step.run("notify-due", notify_due)

    functions.append(activity_reminders)

    @client.create_function(fn_id="maintenance", trigger=inngest.TriggerCron(cron=config.maintenance_cron), retries=2)
    async def daily_maintenance(ctx: inngest.Context) -> dict[str, Any]:
        """Prune dispatched outbox rows, finished runner runs and idempotency keys past their retention."""

        async def prune() -> dict[str, Any]:
            retention = Retention(
                outbox_days=config.outbox_retention_days,
                runs_days=config.runs_retention_days,
                idempotency_days=config.idempotency_retention_days,
            )
            async with db.unit_of_work(SYSTEM) as uow:
                return (await maintenance.prune(uow, retention)).model_dump()

        return await ctx.step.run("prune", prune)

    functions.append(daily_maintenance)
    return [*functions, *gdpr.build(client, db, config)]

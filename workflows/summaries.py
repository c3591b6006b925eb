"""AI summaries and weekly digests: `ai-summary` produces a requested summary AS its requester; the
`weekly-pipeline-digest` cron asks for one digest per user, which `ai-digest` writes AS that user.

The context is built by the requester (scopes narrowed to read and AI), so Row Level Security decides what the
model sees: a note or linked person they cannot see never reaches the prompt. The model is called outside any
transaction. A busy model is retried at the time it names; a refusal ends the summary `failed`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import inngest

from services.ai.context import build_context
from services.ai.llm import LLM, ModelBusy, ModelRefused, Purpose
from services.kernel.errors import Forbidden, NotFound
from services.kernel.permissions import Scope
from services.kernel.uow import Database
from services.summaries import service as summaries
from workflows.acting import SYSTEM, as_user
from workflows.failures import failure_of

# When a busy model names no time: 30 s, doubling per attempt.
BUSY_RETRY_SECONDS = 30


def build(
    client: inngest.Inngest, db: Database, llm: LLM, *, context_tokens: int, per_user: int, overall: int,
    digest_cron: str,
) -> list[inngest.Function[Any]]:

    async def mark_failed(ctx: inngest.Context) -> None:
        """When the run fails for good (retries exhausted), so does the summary: nobody waits forever."""
        asked, message = failure_of(ctx, "the summary could not be made")
        async with db.unit_of_work(SYSTEM) as uow:
            if "summary_id" in asked:
                await summaries.fail(uow, UUID(str(asked["summary_id"])), message)
            else:
                await summaries.fail_digest(uow, UUID(str(asked["user_id"])), str(asked["week"]), message)

    @client.create_function(
        fn_id="ai-summary",
        trigger=inngest.TriggerEvent(event="crm/ai.summary.requested"),
        retries=4,
        concurrency=[inngest.Concurrency(limit=per_user, key="event.data.actor_id"),
                     inngest.Concurrency(limit=overall)],
        on_failure=mark_failed,
    )
    async def ai_summary(ctx: inngest.Context) -> dict[str, Any]:
        summary_id = UUID(str(ctx.event.data["summary_id"]))

        async def generate() -> dict[str, Any]:
            async with db.unit_of_work(SYSTEM) as uow:
                work = await summaries.start(uow, summary_id)
            if work is None:
                return {"summary_id": str(summary_id), "status": "skipped"}
            return await _produce(db, llm, work, "summary", ctx.attempt, context_tokens)

        return await ctx.step.run("generate", generate)

    @client.create_function(
        fn_id="weekly-pipeline-digest", trigger=inngest.TriggerCron(cron=digest_cron), retries=2
    )
    async def weekly_pipeline_digest(ctx: inngest.Context) -> dict[str, Any]:
        """Monday morning: one digest request per active user; the event id per user and week makes a rerun, or
        a second runner, request nothing twice."""

        async def request_digests() -> dict[str, Any]:
            async with db.unit_of_work(SYSTEM) as uow:
                requested = await summaries.request_digests(uow, summaries.iso_week(datetime.now(UTC).date()))
            return {"requested": requested}

        return await ctx.step.run("request-digests", request_digests)

    @client.create_function(
        fn_id="ai-digest", trigger=inngest.TriggerEvent(event="crm/ai.digest.requested"), retries=4,
        concurrency=[inngest.Concurrency(limit=overall)], on_failure=mark_failed,
    )
    async def ai_digest(ctx: inngest.Context) -> dict[str, Any]:
        """The user's weekly digest of their own pipeline, written AS them, kept as a pipeline summary and
        announced in their notifications."""
        user_id = UUID(str(ctx.event.data["user_id"]))
        week = str(ctx.event.data["week"])

        async def generate() -> dict[str, Any]:
            async with db.unit_of_work(SYSTEM) as uow:
                work = await summaries.start_digest(uow, user_id, week)
            if work is None:
                return {"user_id": str(user_id), "status": "skipped"}
            return await _produce(db, llm, work, "digest", ctx.attempt, context_tokens)

        return await ctx.step.run("generate", generate)

    return [ai_summary, weekly_pipeline_digest, ai_digest]


async def _produce(
    db: Database, llm: LLM, work: summaries.Work, purpose: Purpose, attempt: int, context_tokens: int
) -> dict[str, Any]:
    """Build the context AS the requester, ask the model (outside any transaction), store the answer."""
    requester = await as_user(db, work.requested_by, {Scope.READ, Scope.AI})
    try:
        async with db.unit_of_work(requester) as uow:
            context = await build_context(uow, work.subject_type.value, work.subject_id, budget_tokens=context_tokens)
    except (NotFound, Forbidden) as exc:
        await _give_up(db, work.summary_id, f"the subject is no longer visible to you: {exc}")
        raise inngest.NonRetriableError(str(exc)) from exc
    try:
        answer = await llm.summarize(context, purpose)
    except ModelBusy as exc:
        wait = exc.retry_after or BUSY_RETRY_SECONDS * 2 ** attempt
        raise inngest.RetryAfterError(str(exc), int(wait * 1000)) from exc
    except ModelRefused as exc:
        await _give_up(db, work.summary_id, f"the model refused: {exc}")
        raise inngest.NonRetriableError(str(exc)) from exc
    async with db.unit_of_work(SYSTEM) as uow:
        stored = await summaries.store(uow, work.summary_id, context, answer)
    return {"summary_id": str(work.summary_id), "status": "done" if stored else "discarded",
            "input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}


async def _give_up(db: Database, summary_id: UUID, reason: str) -> None:
    async with db.unit_of_work(SYSTEM) as uow:
        await summaries.fail(uow, summary_id, reason)

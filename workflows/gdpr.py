"""The GDPR erasure workflow: erase, let in-flight work settle, verify and wipe.

It runs as the system (an erasure reaches every record, whoever owns it). The settle sleep lets AI summaries
that were generating when the person was erased finish; they check `gdpr.is_erased` and store nothing, and
whatever else slipped in is found and redacted by the verification. One erasure at a time (concurrency 1):
each scans the whole database. Step outputs are ids and counts: the engine keeps them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import inngest

from services.gdpr import service as gdpr
from services.kernel.uow import Database
from workflows.acting import SYSTEM
from workflows.failures import failure_of

if TYPE_CHECKING:
    from workflows.functions import Config


def build(client: inngest.Inngest, db: Database, config: Config) -> list[inngest.Function[Any]]:
    async def gave_up(ctx: inngest.Context) -> None:
        """Out of retries: say so on the erasure (a retried run carries on from there)."""
        asked, message = failure_of(ctx, "unknown error")
        erasure_id = UUID(str(asked["erasure_id"]))
        reason = f"the erasure workflow gave up: {message}"
        async with db.unit_of_work(SYSTEM) as uow:
            await gdpr.record_failure(uow, erasure_id, reason)

    @client.create_function(
        fn_id="gdpr-erasure",
        trigger=inngest.TriggerEvent(event="crm/gdpr.erasure.requested"),
        retries=10,
        concurrency=[inngest.Concurrency(limit=1)],
        on_failure=gave_up,
    )
    async def gdpr_erasure(ctx: inngest.Context) -> dict[str, Any]:
        erasure_id = UUID(str(ctx.event.data["erasure_id"]))

        async def erase() -> dict[str, Any]:
            async with db.unit_of_work(SYSTEM) as uow:
                counts = await gdpr.erase(uow, erasure_id)
            return {"erasure_id": str(erasure_id), "counts": counts}

        async def verify_and_wipe() -> dict[str, Any]:
            async with db.unit_of_work(SYSTEM) as uow:
                hits = await gdpr.verify(uow, erasure_id)
            return {"erasure_id": str(erasure_id), "hits": hits}

        erased = await ctx.step.run("erase", erase)
        await ctx.step.sleep("settle", timedelta(seconds=config.erasure_settle_seconds))
        verified = await ctx.step.run("verify-and-wipe", verify_and_wipe)
        if verified["hits"]:
            raise inngest.NonRetriableError(
                f"erasure {erasure_id}: {verified['hits']} mentions remain after redacting twice"
            )
        return {"erasure_id": str(erasure_id), "counts": erased["counts"], "hits": 0}

    return [gdpr_erasure]

"""Pruning: dispatched outbox rows, finished runs of the embedded workflow runner, and idempotency keys, each
past its retention. Only the system may prune (a signed-in user, whatever their role, is refused)."""

from __future__ import annotations

from datetime import timedelta

from services.kernel.permissions import requires
from services.kernel.principal import require_system
from services.kernel.uow import UnitOfWork
from services.maintenance.schemas import Pruned, Retention


@requires(None)
async def prune(uow: UnitOfWork, retention: Retention) -> Pruned:
    """Delete what is older than its retention; returns how many rows of each kind went."""
    require_system(uow.principal, "prunes")
    outbox = await uow.execute(
        "delete from public.outbox where dispatched_at < now() - %s", [timedelta(days=retention.outbox_days)]
    )
    runs = await uow.execute(
        "delete from runner.runs where ended_at < now() - %s", [timedelta(days=retention.runs_days)]
    )
    keys = await uow.execute(
        "delete from public.idempotency_keys where created_at < now() - %s",
        [timedelta(days=retention.idempotency_days)],
    )
    return Pruned(outbox=outbox, runs=runs, idempotency_keys=keys)

"""What an operator does with the embedded runner's runs: look at them, queue a failed one again, and (in
development) put an event in the outbox by hand."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from services.kernel.errors import ServiceError
from services.kernel.uow import Database, Row
from services.summaries import service as summaries
from workflows.acting import SYSTEM
from workflows.embedded.runner import Runner, requeue
from workflows.functions import APP_ID
from workflows.relay import Relay

STATUSES = ("queued", "running", "sleeping", "completed", "failed")


@dataclass(frozen=True)
class RunView:
    id: UUID
    function_id: str
    status: str
    event_name: str
    created_at: datetime
    ended_at: datetime | None
    error: dict[str, Any] | None
    steps: list[dict[str, Any]]

    def describe(self) -> str:
        """A few lines for a terminal: the run, then one line per finished step, then the error."""
        when = self.created_at.strftime("%Y-%m-%d %H:%M:%S")
        lines = [f"{self.id}  {self.function_id.removeprefix(APP_ID + '-')}  {self.status}  {self.event_name}  {when}"]
        for step in self.steps:
            outcome = f"error: {step['error'].get('message')}" if step["error"] else json.dumps(step["data"])
            lines.append(f"    {step['op']:<10} {step['name'] or ''}  {outcome[:200]}")
        if self.error:
            lines.append(f"    error: {self.error.get('name')}: {self.error.get('message')}")
        return "\n".join(lines)


async def list_runs(db: Database, *, status: str | None, function: str | None, limit: int) -> list[RunView]:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    function_id = None if function is None else (
        function if function.startswith(APP_ID + "-") else f"{APP_ID}-{function}")
    async with db.unit_of_work(SYSTEM) as uow:
        runs = await uow.all(
            """
            select id, function_id, status, event ->> 'name' as event_name, created_at, ended_at, error
            from runner.runs
            where (%(status)s::text is null or status = %(status)s)
              and (%(function)s::text is null or function_id = %(function)s)
            order by created_at desc, id
            limit %(limit)s
            """,
            {"status": status, "function": function_id, "limit": limit},
        )
        steps = await uow.all(
            "select run_id, op, name, data, error from runner.steps where run_id = any(%s) order by position",
            [[r["id"] for r in runs]],
        )
    by_run: dict[UUID, list[dict[str, Any]]] = {}
    for step in steps:
        by_run.setdefault(step["run_id"], []).append(step)
    return [RunView(**run, steps=by_run.get(run["id"], [])) for run in runs]


async def retry(db: Database, run_id: str) -> bool:
    try:
        parsed = UUID(run_id)
    except ValueError as exc:
        raise ValueError(f"{run_id!r} is not a run id") from exc
    async with db.unit_of_work(SYSTEM) as uow:
        return await requeue(uow, parsed)


async def send(db: Database, name: str, data: str, event_id: str | None) -> str:
    """Emit one event as the system (the database checks its name and data like any other); returns its id."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--data is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("--data must be a JSON object")
    chosen = event_id or str(uuid4())
    try:
        async with db.unit_of_work(SYSTEM) as uow:
            uow.emit(name, event_id=chosen, **payload)
    except ServiceError as exc:
        raise ValueError(str(exc)) from exc
    return chosen


async def digest_now(db: Database, relay: Relay, runner: Runner, user_id: UUID, *, seconds: float = 60) -> Row | None:
    """Request the user's digest of this week and run the engine here until it is finished; the digest's row
    (status, content), or None when the user has no open deal to report on."""
    week = summaries.iso_week(datetime.now(UTC).date())
    async with db.unit_of_work(SYSTEM) as uow:
        await summaries.request_digests(uow, week, [user_id])
        asked = await uow.one("select 1 as found from public.outbox where event_id = %s",
                              [f"digest:{user_id}:{week}"])
    if asked is None:
        raise ValueError("this user gets no digest: their account is disabled or their role may not use AI")
    async with asyncio.timeout(seconds):
        while True:
            await relay.drain()
            await runner.drain()
            async with db.unit_of_work(SYSTEM) as uow:
                row = await uow.one(
                    "select id, status, model, content, error from public.ai_summaries"
                    " where requested_by = %s and kind = 'digest' and period = %s", [user_id, week])
                run = await uow.one(
                    "select status from runner.runs where function_id = %s and idempotency_key = %s",
                    [f"{APP_ID}-ai-digest", f"digest:{user_id}:{week}"])
            if row is not None and row["status"] in ("done", "failed"):
                return row
            if row is None and run is not None and run["status"] in ("completed", "failed"):
                return None
            await asyncio.sleep(0.2)

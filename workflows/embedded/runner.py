"""The embedded runner: Inngest's executor, reduced to one job table in Postgres.

Guarantees (each has a test):
- Durable: runs, finished steps and pending jobs live in the database; a process that dies loses only the step
  it was executing, which runs again once its lease expires (at-least-once steps, like Inngest). A finished
  step never runs again: its result is memoized in the same transaction that schedules what comes next.
- One run per (function, idempotency key): the event id, a cron tick, or the `idempotency` expression's value,
  however many processes run the runner (a unique constraint decides).
- Concurrency limits count steps being executed, per `event.data.<path>` key; a sleeping run holds no slot.
- Retries follow Inngest's backoff table (scaled by a setting); a run that exhausts them ends `failed` with its
  error kept, and its `on_failure` handler runs.

Each job is one call to the function over the private endpoint: claim (a short transaction that leases the
job), call (no connection held, since the function opens its own units of work), apply (one transaction that
stores the outcome and schedules what comes next, only while the lease is still ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import fastapi
import httpx
import inngest
import inngest.fast_api
import jcs
from inngest import Streaming
from psycopg.types.json import Jsonb

from services.kernel.uow import Database, Row, UnitOfWork
from workflows.acting import SYSTEM
from workflows.embedded import protocol
from workflows.embedded.client import EmbeddedInngest
from workflows.embedded.protocol import FunctionSpec
from workflows.signing import sign

log = logging.getLogger("pipecd.workflows")

SERVE_PATH = "/api/inngest"
INTERNAL_ORIGIN = "http://embedded-runner.invalid"


@dataclass(frozen=True)
class Job:
    """A claimed job, with what the call needs: the run's event and its finished steps in order."""

    id: int
    run_id: UUID
    target: str
    attempt: int
    function_id: str
    event: dict[str, Any]
    disable_immediate: bool
    memos: list[tuple[str, dict[str, Any] | None]]


@dataclass(frozen=True)
class Outcome:
    """What one call produced: the function's output, ops to apply, or an error."""

    status: str  # "completed" | "ops" | "error"
    output: Any = None
    ops: tuple[dict[str, Any], ...] = ()
    error: dict[str, Any] | None = None
    retriable: bool = True
    retry_at: datetime | None = None


class Runner:
    """Runs the given functions (made with `client`) over `db`. Any number of processes may run one each."""

    def __init__(
        self,
        db: Database,
        client: EmbeddedInngest,
        functions: list[inngest.Function[Any]],
        *,
        lease: float = 30.0,
        poll: float = 1.0,
        parallel: int = 4,
        backoff_scale: float = 1.0,
    ) -> None:
        self.db = db
        self.client = client
        self.functions = functions
        self.lease = lease
        self.poll = poll
        self.parallel = parallel
        self.backoff_scale = backoff_scale
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.specs: dict[str, FunctionSpec] = {}
        self.first_synced: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        internal = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        inngest.fast_api.serve(
            internal, client, functions, serve_path=SERVE_PATH, serve_origin=INTERNAL_ORIGIN,
            enable_unauthed_sync=False, streaming=Streaming.DISABLE,
        )
        self._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=internal), base_url=INTERNAL_ORIGIN,
                                       timeout=None)

    # Sync ---------------------------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Learn the functions by the SDK's signed in-band sync; refuse (UnsupportedConfig) any that need
        features only Inngest has, before anything runs."""
        body = jcs.canonicalize({"url": INTERNAL_ORIGIN + SERVE_PATH})
        response = await self._http.put(SERVE_PATH, content=body, headers={
            **self._signed(body), "x-inngest-sync-kind": "in_band"})
        if response.status_code != 200:
            raise RuntimeError(f"in-band sync of the workflow functions failed: {response.status_code} {response.text}")
        specs = [protocol.parse_function(config) for config in response.json()["functions"]]
        async with self.db.unit_of_work(SYSTEM) as uow:
            for spec in specs:
                row = await uow.one(
                    "insert into runner.functions (id, config) values (%s, %s) on conflict (id) do update"
                    " set config = excluded.config, synced_at = now() returning first_synced_at",
                    [spec.id, Jsonb(spec.config)],
                )
                assert row is not None
                self.first_synced[spec.id] = row["first_synced_at"]
        self.specs = {spec.id: spec for spec in specs}

    def _signed(self, body: bytes) -> dict[str, str]:
        return {"x-inngest-signature": sign(body, self.client.key), "content-type": "application/json"}

    # Runs are created by events (handed over by the relay) and by cron ticks ----------------------------------

    async def ingest(self, uow: UnitOfWork, events: list[dict[str, Any]]) -> int:
        """Create the runs these events trigger, inside the caller's (system) transaction; returns how many are
        new. Called by the relay in the transaction that marks the events dispatched: exactly-once handoff."""
        created = 0
        for event in events:
            for spec in self.specs.values():
                if event["name"] not in spec.events:
                    continue
                if spec.failure_of is not None and (event.get("data") or {}).get("function_id") != spec.failure_of:
                    continue
                created += await self._create_run(uow, spec, event, spec.idempotency_key(event))
        if created:
            self._wake.set()
        return created

    async def _create_run(self, uow: UnitOfWork, spec: FunctionSpec, event: dict[str, Any], key: str) -> int:
        row = await uow.one(
            "insert into runner.runs (function_id, idempotency_key, event, concurrency_keys) values (%s, %s, %s, %s)"
            " on conflict (function_id, idempotency_key) do nothing returning id",
            [spec.id, key, Jsonb(event), spec.concurrency_keys(event)],
        )
        if row is None:
            return 0
        await uow.execute("insert into runner.jobs (run_id, target) values (%s, %s)", [row["id"], protocol.ROOT_STEP])
        return 1

    async def tick_crons(self, now: datetime | None = None) -> int:
        """Start the run of each cron function's latest tick (if after the function was first synced and not
        started yet): at most one run per tick whatever the number of runners; after downtime only the latest
        missed tick runs (no backfill)."""
        now = now or datetime.now(UTC)
        created = 0
        async with self.db.unit_of_work(SYSTEM) as uow:
            for spec in self.specs.values():
                for expression in spec.crons:
                    tick, _ = protocol.cron_ticks(expression, now)
                    if tick <= self.first_synced[spec.id]:
                        continue
                    stamp = tick.isoformat().replace("+00:00", "Z")
                    event = {"id": stamp, "name": protocol.CRON_EVENT,
                             "data": {"cron": expression, "scheduledAt": stamp}, "ts": _ms(tick)}
                    created += await self._create_run(uow, spec, event, stamp)
        if created:
            self._wake.set()
        return created

    def next_cron_tick(self, now: datetime) -> datetime | None:
        ticks = [protocol.cron_ticks(e, now)[1] for spec in self.specs.values() for e in spec.crons]
        return min(ticks) if ticks else None

    # The loop -------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Execute jobs (`parallel` at a time) and fire cron ticks until `stop` is set."""
        workers = [asyncio.create_task(self._work(stop, index)) for index in range(self.parallel)]
        workers.append(asyncio.create_task(self._cron(stop)))
        try:
            await stop.wait()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _work(self, stop: asyncio.Event, index: int) -> None:
        """One of `parallel` workers. Idle, the first looks for ready jobs every `poll` seconds and the others
        rarely: a worker that claims a job wakes another, so the pool fills up as soon as there is work."""
        idle = self.poll if index == 0 else self.poll * self.parallel
        while not stop.is_set():
            try:
                if await self.run_one():
                    continue
            except Exception:  # one failed job must not stop the runner; the lease returns the job later
                log.exception("embedded runner: a job failed unexpectedly")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), idle)

    async def _cron(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick_crons()
            except Exception:
                log.exception("embedded runner: cron tick failed")
            now = datetime.now(UTC)
            upcoming = self.next_cron_tick(now)
            delay = 30.0 if upcoming is None else min(30.0, max(0.05, (upcoming - now).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def run_one(self) -> bool:
        """Claim, call and apply one job; False when none is ready."""
        job = await self._claim()
        if job is None:
            return False
        self._wake.set()  # there may be more: another worker looks
        heartbeat = asyncio.create_task(self._heartbeat(job))
        try:
            outcome = await self._call(job)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._apply(job, outcome)
        return True

    async def drain(self, *, max_jobs: int = 1000) -> int:
        """Run ready jobs until none is left (tests and the CLI); returns how many ran."""
        for done in range(max_jobs):
            if not await self.run_one():
                return done
        raise RuntimeError(f"jobs were still ready after {max_jobs}")

    # Claim ----------------------------------------------------------------------------------------------------

    async def _claim(self) -> Job | None:
        async with self.db.unit_of_work(SYSTEM) as uow:
            candidates = await uow.all(
                """
                select j.id, j.run_id, j.target, j.attempt, r.function_id, r.concurrency_keys
                from runner.jobs j join runner.runs r on r.id = j.run_id
                where j.available_at <= now() and (j.locked_by is null or j.locked_until < now())
                  and r.function_id = any(%s)
                order by j.available_at, j.id
                limit 20
                for update of j skip locked
                """,
                [list(self.specs)],
            )
            for row in candidates:
                if await self._slot_free(uow, row):
                    await uow.execute(
                        "update runner.jobs set locked_by = %s, locked_until = now() + %s where id = %s",
                        [self.worker_id, timedelta(seconds=self.lease), row["id"]],
                    )
                    run = await uow.one(
                        "update runner.runs set status = 'running', updated_at = now() where id = %s"
                        " returning event, disable_immediate",
                        [row["run_id"]],
                    )
                    steps = await uow.all(
                        "select step_id, op, data, error from runner.steps where run_id = %s order by position",
                        [row["run_id"]],
                    )
                    assert run is not None  # the job's foreign key keeps its run
                    return Job(row["id"], row["run_id"], row["target"], row["attempt"], row["function_id"],
                               run["event"], run["disable_immediate"], [(s["step_id"], _memo(s)) for s in steps])
        return None

    async def _slot_free(self, uow: UnitOfWork, row: Row) -> bool:
        """Whether every concurrency limit of the job's function has room for one more executing step. The
        count is taken under a per-key advisory lock, so two runners cannot both take the last slot; a key
        another runner is checking right now is skipped this time rather than waited for."""
        spec = self.specs[row["function_id"]]
        for index, limit in enumerate(spec.concurrency):
            key = row["concurrency_keys"][index]
            locked = await uow.one("select pg_try_advisory_xact_lock(hashtext(%s)) as ok", [f"{spec.id}/{key}"])
            if locked is None or not locked["ok"]:
                return False
            busy = await uow.one(
                """
                select count(*) as n from runner.jobs j join runner.runs r on r.id = j.run_id
                where r.function_id = %s and r.concurrency_keys[%s] = %s
                  and j.locked_by is not null and j.locked_until >= now() and j.id <> %s
                """,
                [spec.id, index + 1, key, row["id"]],
            )
            if busy is not None and busy["n"] >= limit.limit:
                return False
        return True

    async def _heartbeat(self, job: Job) -> None:
        """Keep the lease while the step runs, so a slow step is not taken over by another runner."""
        while True:
            await asyncio.sleep(self.lease / 3)
            async with self.db.unit_of_work(SYSTEM) as uow:
                await uow.execute(
                    "update runner.jobs set locked_until = now() + %s where id = %s and locked_by = %s",
                    [timedelta(seconds=self.lease), job.id, self.worker_id],
                )

    # Call -----------------------------------------------------------------------------------------------------

    async def _call(self, job: Job) -> Outcome:
        spec = self.specs[job.function_id]
        body = jcs.canonicalize(protocol.call_body(
            event=job.event, run_id=str(job.run_id), attempt=job.attempt, max_attempts=spec.max_attempts,
            disable_immediate=job.disable_immediate, memos=job.memos,
        ))
        try:
            response = await self._http.post(
                SERVE_PATH, params={"fnId": spec.id, "stepId": job.target}, content=body, headers=self._signed(body)
            )
        except Exception as exc:  # the app itself failed (not the function): retry like a 5xx
            return Outcome("error", error={"name": type(exc).__name__, "message": str(exc)})
        return _outcome(response)

    # Apply ----------------------------------------------------------------------------------------------------

    async def _apply(self, job: Job, outcome: Outcome) -> None:
        spec = self.specs[job.function_id]
        async with self.db.unit_of_work(SYSTEM) as uow:
            run = await uow.one("select id, status, event from runner.runs where id = %s for update", [job.run_id])
            mine = await uow.execute(
                "delete from runner.jobs where id = %s and locked_by = %s", [job.id, self.worker_id]
            )
            if run is None or not mine or run["status"] in ("completed", "failed"):
                log.warning("embedded runner: dropped the result of job %s (lease lost or run ended)", job.id)
                return
            if outcome.status == "completed":
                await uow.execute(
                    "update runner.runs set status = 'completed', output = %s, ended_at = now(), updated_at = now()"
                    " where id = %s", [Jsonb(outcome.output), job.run_id])
                await uow.execute("delete from runner.jobs where run_id = %s", [job.run_id])
                return
            if outcome.status == "error":
                await self._retry_or_fail(uow, spec, job, run, outcome)
                return
            await self._apply_ops(uow, spec, job, run, outcome.ops)

    async def _apply_ops(
        self, uow: UnitOfWork, spec: FunctionSpec, job: Job, run: Row, ops: tuple[dict[str, Any], ...]
    ) -> None:
        status = "running"
        continue_at: datetime | None = None
        planned = [op for op in ops if op.get("op") == "StepPlanned"]
        for op in ops:
            kind = op.get("op")
            if kind in protocol.UNSUPPORTED_OPS:
                message = (f"the embedded runner does not support {protocol.UNSUPPORTED_OPS[kind]} "
                           f"(op {kind}); configure Inngest")
                await self._fail(uow, spec, run, {"name": "UnsupportedOp", "message": message})
                return
            if kind not in protocol.SUPPORTED_OPS:
                await self._fail(uow, spec, run, {"name": "UnknownOp", "message": f"unknown op {kind!r}"})
                return
            if kind == "StepError":
                error = op.get("error") or {"name": "StepError", "message": "step failed"}
                if job.attempt + 1 < spec.max_attempts:
                    retry = Outcome("error", error=error, retriable=True)
                    await self._retry_or_fail(uow, spec, job, run, retry)
                    return
                kind, op = "StepFailed", {**op, "error": error}
            if kind == "StepPlanned":
                await uow.execute(
                    "insert into runner.jobs (run_id, target) select %s, %s where not exists"
                    " (select 1 from runner.steps where run_id = %s and step_id = %s)"
                    " and not exists (select 1 from runner.jobs where run_id = %s and target = %s)",
                    [job.run_id, op["id"], job.run_id, op["id"], job.run_id, op["id"]],
                )
                continue
            await self._memoize(uow, job.run_id, op, kind)
            if kind == "Sleep":
                status = "sleeping"
                continue_at = protocol.parse_time(str(op.get("name")))
        if len(planned) > 1:
            await uow.execute("update runner.runs set disable_immediate = true where id = %s", [job.run_id])
        if not planned:
            # continue the function: at once, or when its sleep ends; one pending continuation is enough
            await uow.execute(
                "insert into runner.jobs (run_id, target, available_at) select %s, %s, coalesce(%s, now())"
                " where not exists (select 1 from runner.jobs where run_id = %s and target = %s"
                " and locked_by is null)",
                [job.run_id, protocol.ROOT_STEP, continue_at, job.run_id, protocol.ROOT_STEP],
            )
        await self._keep_going(uow, job.run_id)
        await uow.execute("update runner.runs set status = %s, updated_at = now() where id = %s", [status, job.run_id])

    async def _memoize(self, uow: UnitOfWork, run_id: UUID, op: dict[str, Any], kind: str) -> None:
        await uow.execute(
            """
            insert into runner.steps (run_id, step_id, position, op, name, data, error)
            select %(run)s, %(step)s, coalesce(max(position), -1) + 1, %(op)s, %(name)s, %(data)s, %(error)s
            from runner.steps where run_id = %(run)s
            on conflict (run_id, step_id) do nothing
            """,
            {"run": run_id, "step": op["id"], "op": kind, "name": op.get("displayName") or op.get("name"),
             "data": Jsonb(op.get("data")) if kind == "StepRun" else None,
             "error": Jsonb(op.get("error")) if kind == "StepFailed" else None},
        )

    async def _keep_going(self, uow: UnitOfWork, run_id: UUID) -> None:
        """A run that has not ended always has a job: if the applied response left none, continue it."""
        await uow.execute(
            "insert into runner.jobs (run_id, target) select %s, %s"
            " where not exists (select 1 from runner.jobs where run_id = %s)",
            [run_id, protocol.ROOT_STEP, run_id],
        )

    async def _retry_or_fail(self, uow: UnitOfWork, spec: FunctionSpec, job: Job, run: Row, outcome: Outcome) -> None:
        error = outcome.error or {"name": "Error", "message": "unknown error"}
        if not outcome.retriable or job.attempt + 1 >= spec.max_attempts:
            await self._fail(uow, spec, run, error)
            return
        at = outcome.retry_at or datetime.now(UTC) + protocol.backoff(job.attempt, self.backoff_scale)
        await uow.execute(
            "insert into runner.jobs (run_id, target, attempt, available_at, last_error) values (%s, %s, %s, %s, %s)",
            [job.run_id, job.target, job.attempt + 1, at, Jsonb(error)],
        )
        await uow.execute("update runner.runs set status = 'queued', updated_at = now() where id = %s", [job.run_id])

    async def _fail(self, uow: UnitOfWork, spec: FunctionSpec, run: Row, error: dict[str, Any]) -> None:
        """End the run `failed`, keeping the error, and start the function's failure handler, if it has one."""
        error = {k: error[k] for k in ("name", "message", "code") if k in error}
        await uow.execute(
            "update runner.runs set status = 'failed', error = %s, ended_at = now(), updated_at = now() where id = %s",
            [Jsonb(error), run["id"]],
        )
        await uow.execute("delete from runner.jobs where run_id = %s", [run["id"]])
        log.warning("embedded runner: run %s of %s failed: %s", run["id"], spec.id, error.get("message"))
        for handler in self.specs.values():
            if handler.failure_of == spec.id:
                event = {"id": f"failure:{run['id']}", "name": protocol.FAILED_EVENT, "ts": _ms(datetime.now(UTC)),
                         "data": {"function_id": spec.id, "run_id": str(run["id"]), "error": error,
                                  "event": run["event"]}}
                await self._create_run(uow, handler, event, str(run["id"]))
                self._wake.set()

    # Operations -----------------------------------------------------------------------------------------------

    async def retry(self, run_id: UUID) -> bool:
        """Queue a failed run again from where it failed: its finished steps stay, failed ones run again."""
        async with self.db.unit_of_work(SYSTEM) as uow:
            return await requeue(uow, run_id)

    async def close(self) -> None:
        await self._http.aclose()


async def requeue(uow: UnitOfWork, run_id: UUID) -> bool:
    """Queue a failed run again (see `Runner.retry`); False when there is no failed run with this id."""
    row = await uow.one(
        "update runner.runs set status = 'queued', error = null, ended_at = null, updated_at = now()"
        " where id = %s and status = 'failed' returning id", [run_id])
    if row is None:
        return False
    await uow.execute("delete from runner.steps where run_id = %s and op = 'StepFailed'", [run_id])
    await uow.execute("insert into runner.jobs (run_id, target) values (%s, %s)", [run_id, protocol.ROOT_STEP])
    return True


def _memo(step: Row) -> dict[str, Any] | None:
    if step["op"] == "StepRun":
        return {"data": step["data"]}
    if step["op"] == "StepFailed":
        return {"error": step["error"]}
    return None  # a finished sleep


def _outcome(response: httpx.Response) -> Outcome:
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {"message": response.text[:1000]}
    if response.status_code == 200:
        return Outcome("completed", output=body)
    if response.status_code == 206 and isinstance(body, list):
        return Outcome("ops", ops=tuple(body))
    error = body if isinstance(body, dict) else {"message": str(body)[:1000]}
    error = {"name": str(error.get("name") or "Error"), "message": str(error.get("message") or ""),
             **({"code": str(error["code"])} if error.get("code") else {})}
    if response.headers.get("x-inngest-no-retry") == "true":
        return Outcome("error", error=error, retriable=False)
    if response.status_code in (401, 403) or error.get("code") in ("function_not_found", "unknown"):
        error["message"] = f"the workflow endpoint refused the call ({response.status_code}): {error['message']}"
        return Outcome("error", error=error, retriable=False)
    retry_after = response.headers.get("retry-after")
    if retry_after:
        return Outcome("error", error=error, retry_at=_retry_time(retry_after))
    return Outcome("error", error=error)


def _retry_time(value: str) -> datetime:
    if value.isdigit():
        return datetime.now(UTC) + timedelta(seconds=int(value))
    return protocol.parse_time(value)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)

"""The embedded runner against every protocol case it supports, with the real Inngest SDK serving real
functions and run state in a real Postgres. Each test builds its own functions on the runner's client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest

from services.kernel.uow import Database
from workflows.acting import SYSTEM
from workflows.embedded.client import EmbeddedInngest
from workflows.embedded.protocol import UnsupportedConfig
from workflows.embedded.runner import INTERNAL_ORIGIN, SERVE_PATH, Runner
from workflows.relay import EmbeddedSink, Relay

Build = Callable[[EmbeddedInngest], list[inngest.Function[Any]]]


class Harness:
    """Runners over the test database; `start(build)` makes one whose functions `build` creates."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.runners: list[Runner] = []

    async def start(self, build: Build, *, lease: float = 30.0) -> Runner:
        client = EmbeddedInngest(self.db)
        runner = Runner(self.db, client, build(client), lease=lease, poll=0.05, backoff_scale=0)
        await runner.sync()
        self.runners.append(runner)
        return runner

    async def send(self, runner: Runner, name: str, data: dict[str, Any], event_id: str = "e-1") -> int:
        async with self.db.unit_of_work(SYSTEM) as uow:
            return await runner.ingest(uow, [{"id": event_id, "name": name, "data": data, "ts": 0}])

    async def runs(self) -> list[dict[str, Any]]:
        async with self.db.unit_of_work(SYSTEM) as uow:
            return await uow.all("select * from runner.runs order by created_at, id")

    async def one_run(self) -> dict[str, Any]:
        runs = await self.runs()
        assert len(runs) == 1, runs
        return runs[0]

    async def steps(self, run_id: Any) -> list[tuple[str, str | None, Any]]:
        async with self.db.unit_of_work(SYSTEM) as uow:
            rows = await uow.all(
                "select op, name, coalesce(data, error) as value from runner.steps where run_id = %s order by position",
                [run_id])
        return [(r["op"], r["name"], r["value"]) for r in rows]

    async def jobs(self) -> list[dict[str, Any]]:
        async with self.db.unit_of_work(SYSTEM) as uow:
            return await uow.all("select * from runner.jobs order by id")


@pytest.fixture
async def harness(db: Database) -> AsyncIterator[Harness]:
    h = Harness(db)
    yield h
    for runner in h.runners:
        await runner.close()


def event_fn(client: EmbeddedInngest, fn_id: str, handler: Any, **options: Any) -> inngest.Function[Any]:
    return client.create_function(fn_id=fn_id, trigger=inngest.TriggerEvent(event="test/go"), **options)(handler)


async def test_two_steps_complete_each_running_once(harness: Harness) -> None:
    calls: list[str] = []

    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def two(ctx: inngest.Context) -> dict[str, Any]:
            async def load() -> dict[str, Any]:
                calls.append("load")
                return {"deal_id": ctx.event.data["deal_id"]}

            async def finish() -> str:
                calls.append("finish")
                return "done"

            loaded = await ctx.step.run("load", load)
            return {"loaded": loaded, "finished": await ctx.step.run("finish", finish)}

        return [event_fn(client, "two", two)]

    runner = await harness.start(build)
    assert await harness.send(runner, "test/go", {"deal_id": "d-1"}) == 1
    assert await harness.send(runner, "test/go", {"deal_id": "d-1"}) == 0  # the same event id: no second run
    assert await runner.drain() == 3  # load, finish, return
    run = await harness.one_run()
    assert (run["function_id"], run["status"], run["output"]) == (
        "pipecd-two", "completed", {"loaded": {"deal_id": "d-1"}, "finished": "done"})
    assert run["ended_at"] is not None
    assert await harness.steps(run["id"]) == [("StepRun", "load", {"deal_id": "d-1"}), ("StepRun", "finish", "done")]
    assert calls == ["load", "finish"]
    assert await harness.jobs() == []


async def test_a_failed_step_is_retried_with_the_next_attempt(harness: Harness) -> None:
    attempts: list[int] = []

    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def flaky(ctx: inngest.Context) -> str:
            async def once_failing() -> str:
                attempts.append(ctx.attempt)
                if ctx.attempt == 0:
                    raise ValueError("boom")
                return "ok"

            return await ctx.step.run("flaky", once_failing)

        return [event_fn(client, "flaky", flaky, retries=2)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {})
    await runner.drain()
    run = await harness.one_run()
    assert (run["status"], run["output"]) == ("completed", "ok")
    assert attempts == [0, 1]


async def test_exhausted_retries_fail_the_run_keep_the_error_and_run_the_failure_handler(harness: Harness) -> None:
    attempts: list[int] = []
    failures: list[dict[str, Any]] = []

    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def on_failure(ctx: inngest.Context) -> None:
            failures.append({"function_id": ctx.event.data["function_id"],
                             "deal_id": ctx.event.data["event"]["data"]["deal_id"]})

        async def doomed(ctx: inngest.Context) -> str:
            def fail() -> str:
                attempts.append(ctx.attempt)
                raise ValueError(f"boom {ctx.attempt}")

            return await ctx.step.run("doomed", fail)

        return [event_fn(client, "doomed", doomed, retries=2, on_failure=on_failure)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {"deal_id": "d-9"})
    await runner.drain()
    main, handler = await harness.runs()
    assert attempts == [0, 1, 2]  # retries=2: three attempts
    assert main["status"] == "failed"
    assert main["error"]["message"] == "boom 2"
    assert (handler["function_id"], handler["status"]) == ("pipecd-doomed-failure", "completed")
    assert failures == [{"function_id": "pipecd-doomed", "deal_id": "d-9"}]


async def test_a_non_retriable_error_fails_at_once(harness: Harness) -> None:
    attempts: list[int] = []

    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def refused(ctx: inngest.Context) -> str:
            def refuse() -> str:
                attempts.append(ctx.attempt)
                raise inngest.NonRetriableError("the user is gone")

            return await ctx.step.run("refuse", refuse)

        return [event_fn(client, "refused", refused, retries=4)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {})
    await runner.drain()
    run = await harness.one_run()
    assert (run["status"], run["error"]["message"]) == ("failed", "the user is gone")
    assert attempts == [0]


async def test_retry_after_is_honoured(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def limited(ctx: inngest.Context) -> str:
            def busy() -> str:
                raise inngest.RetryAfterError("rate limited", timedelta(seconds=120))

            return await ctx.step.run("busy", busy)

        return [event_fn(client, "limited", limited)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {})
    before = datetime.now(UTC)
    assert await runner.drain() == 1  # the retry is not ready yet
    (job,) = await harness.jobs()
    assert job["attempt"] == 1
    assert timedelta(seconds=115) < job["available_at"] - before < timedelta(seconds=125)
    assert job["last_error"]["message"] == "rate limited"
    assert (await harness.one_run())["status"] == "queued"


async def test_a_sleep_waits_for_its_time_then_continues(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def napping(ctx: inngest.Context) -> str:
            await ctx.step.sleep("nap", timedelta(seconds=1))
            return await ctx.step.run("after", lambda: "awake")

        return [event_fn(client, "napping", napping)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {})
    assert await runner.drain() == 1
    run = await harness.one_run()
    assert run["status"] == "sleeping"
    (job,) = await harness.jobs()
    assert timedelta(seconds=0.5) < job["available_at"] - run["created_at"] < timedelta(seconds=2)
    await asyncio.sleep(1.1)
    await runner.drain()
    run = await harness.one_run()
    assert (run["status"], run["output"]) == ("completed", "awake")
    assert [s[0] for s in await harness.steps(run["id"])] == ["Sleep", "StepRun"]


async def test_parallel_steps_are_planned_and_each_run_on_its_own(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def fan(ctx: inngest.Context) -> Any:
            both = await ctx.group.parallel((lambda: ctx.step.run("p1", lambda: 1),
                                             lambda: ctx.step.run("p2", lambda: 2)))
            return [*both, await ctx.step.run("sum", lambda: sum(both))]

        return [event_fn(client, "fan", fan)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {})
    await runner.drain()
    run = await harness.one_run()
    assert (run["status"], run["output"], run["disable_immediate"]) == ("completed", [1, 2, 3], True)
    assert sorted(s[1] for s in await harness.steps(run["id"])) == ["p1", "p2", "sum"]


async def test_a_concurrency_key_limits_executing_steps_not_sleeping_runs(harness: Harness) -> None:
    release, first_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def limited(ctx: inngest.Context) -> str:
            name = ctx.event.data["name"]

            async def work() -> str:
                started.append(name)
                if name == "first":
                    first_started.set()
                    await release.wait()
                return name

            await ctx.step.run("work", work)
            await ctx.step.sleep("rest", timedelta(seconds=30))
            return name

        return [event_fn(client, "limited", limited,
                         concurrency=[inngest.Concurrency(limit=1, key="event.data.user_id")])]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {"user_id": "u-1", "name": "first"}, event_id="e-1")
    await harness.send(runner, "test/go", {"user_id": "u-1", "name": "second"}, event_id="e-2")
    await harness.send(runner, "test/go", {"user_id": "u-2", "name": "other"}, event_id="e-3")
    first = asyncio.create_task(runner.run_one())
    await first_started.wait()
    # while "first" executes its step, only the other user's run may go on (to its sleep)
    assert await runner.drain() == 2
    assert started == ["first", "other"]
    release.set()
    await first
    # "first" goes to sleep, which holds no slot, so "second" runs
    assert await runner.drain() == 3
    assert started == ["first", "other", "second"]
    statuses = {r["event"]["data"]["name"]: r["status"] for r in await harness.runs()}
    assert statuses == {"first": "sleeping", "second": "sleeping", "other": "sleeping"}


async def test_a_cron_tick_starts_one_run_whatever_the_number_of_runners(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def ticking(ctx: inngest.Context) -> str:
            return str(ctx.event.data["scheduledAt"])

        return [client.create_function(fn_id="ticking", trigger=inngest.TriggerCron(cron="*/5 * * * *"))(ticking)]

    one, two = await harness.start(build), await harness.start(build)
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert await one.tick_crons(now=datetime.now(UTC)) == 0  # no tick since the function was first synced
    counts = await asyncio.gather(one.tick_crons(now=later), two.tick_crons(now=later))
    assert sorted(counts) == [0, 1]
    assert await two.tick_crons(now=later) == 0
    await one.drain()
    run = await harness.one_run()
    tick = later.replace(minute=later.minute - later.minute % 5, second=0, microsecond=0)
    stamp = tick.isoformat().replace("+00:00", "Z")
    assert (run["idempotency_key"], run["status"], run["output"]) == (stamp, "completed", stamp)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"debounce": inngest.Debounce(period=timedelta(seconds=5))}, "debounce"),
        ({"throttle": inngest.Throttle(limit=1, period=timedelta(seconds=5))}, "throttle"),
        ({"rate_limit": inngest.RateLimit(limit=1, period=timedelta(seconds=5))}, "rate_limit"),
        ({"batch_events": inngest.Batch(max_size=5, timeout=timedelta(seconds=5))}, "batch_events"),
        ({"priority": inngest.Priority(run="event.data.p")}, "priority"),
        ({"cancel": [inngest.Cancel(event="test/stop")]}, "cancel"),
        ({"concurrency": [inngest.Concurrency(limit=1, key="event.data.a", scope="account")]}, "scope"),
        ({"idempotency": "event.data.a + event.data.b"}, "idempotency"),
    ],
)
async def test_unsupported_options_are_refused_by_name_at_sync(harness: Harness, options: dict, name: str) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def fancy(ctx: inngest.Context) -> None:
            return None

        return [event_fn(client, "fancy", fancy, **options)]

    with pytest.raises(UnsupportedConfig, match=name):
        await harness.start(build)


async def test_an_unsupported_trigger_expression_is_refused(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def picky(ctx: inngest.Context) -> None:
            return None

        trigger = inngest.TriggerEvent(event="test/go", expression="event.data.big == true")
        return [client.create_function(fn_id="picky", trigger=trigger)(picky)]

    with pytest.raises(UnsupportedConfig, match="trigger expressions"):
        await harness.start(build)


async def test_an_op_only_inngest_has_fails_the_run_with_its_name(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def waiting(ctx: inngest.Context) -> None:
            await ctx.step.wait_for_event("approval", event="test/approved", timeout=timedelta(hours=1))

        return [event_fn(client, "waiting", waiting)]

    runner = await harness.start(build)
    await harness.send(runner, "test/go", {})
    await runner.drain()
    run = await harness.one_run()
    assert run["status"] == "failed"
    assert run["error"]["message"] == (
        "the embedded runner does not support wait_for_event (op WaitForEvent); configure Inngest")


async def test_the_private_endpoint_refuses_unsigned_and_wrongly_signed_calls(harness: Harness) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def secret(ctx: inngest.Context) -> str:
            return "ran"

        return [event_fn(client, "secret", secret)]

    runner = await harness.start(build)
    event = {"id": "e", "name": "test/go", "data": {}, "ts": 0}
    body = json.dumps({"event": event, "events": [event], "steps": {}, "use_api": False,
                       "ctx": {"run_id": "r", "attempt": 0, "disable_immediate_execution": False, "use_api": False,
                               "stack": {"stack": []}}}).encode()
    http = runner._http
    unsigned = await http.post(SERVE_PATH, params={"fnId": "pipecd-secret", "stepId": "step"}, content=body)
    assert unsigned.status_code == 401
    forged = await http.post(SERVE_PATH, params={"fnId": "pipecd-secret", "stepId": "step"}, content=body,
                             headers={"x-inngest-signature": "t=1&s=" + "0" * 64})
    assert forged.status_code == 401
    sync = await http.put(SERVE_PATH, content=json.dumps({"url": INTERNAL_ORIGIN}).encode(),
                          headers={"x-inngest-sync-kind": "in_band"})
    assert sync.status_code == 401
    assert isinstance(http._transport, httpx.ASGITransport)  # in-process only: no port is ever opened


async def test_send_event_goes_through_the_outbox_and_the_relay_to_the_next_function(harness: Harness, admin) -> None:
    def build(client: EmbeddedInngest) -> list[inngest.Function[Any]]:
        async def first(ctx: inngest.Context) -> list[str]:
            return await ctx.step.send_event(
                "emit", inngest.Event(name="crm/deal.won", id="won:d-1", data={"deal_id": "d-1"}))

        async def second(ctx: inngest.Context) -> str:
            return str(ctx.event.data["deal_id"])

        return [event_fn(client, "first", first),
                client.create_function(fn_id="second", trigger=inngest.TriggerEvent(event="crm/deal.won"))(second)]

    runner = await harness.start(build)
    relay = Relay(harness.db, EmbeddedSink(runner), listen=False)
    await harness.send(runner, "test/go", {})
    await runner.drain()
    assert admin.execute("select event_id, name, data, channel from public.outbox").fetchall() == [
        ("won:d-1", "crm/deal.won", {"deal_id": "d-1"}, "workflow")]
    assert await relay.drain() == 1
    await runner.drain()
    first, second = await harness.runs()
    assert (first["output"], second["function_id"], second["output"]) == (["won:d-1"], "pipecd-second", "d-1")
    assert second["idempotency_key"] == "won:d-1"


# Durability: a worker process killed with SIGKILL ---------------------------------------------------------


async def _wait_for(predicate: Callable[[], Any]) -> None:
    """Poll what another process does (no event crosses the process boundary)."""
    async with asyncio.timeout(20):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_worker_killed_between_a_steps_response_and_its_commit_reruns_only_that_step(
    harness: Harness, app_url: str, admin, tmp_path
) -> None:
    import os
    import sys

    import psycopg
    from workflow_worker import journal_functions

    log = tmp_path / "journal.log"
    log.touch()
    tests = Path(__file__).parent
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(tests / "workflow_worker.py"), app_url, str(log), "1.0",
        cwd=tests.parent, env={**os.environ, "PYTHONPATH": f"{tests}{os.pathsep}{tests.parent}"},
    )
    try:
        here = await harness.start(lambda client: journal_functions(client, log), lease=1.0)
        await harness.send(here, "test/journal", {})
        await _wait_for(lambda: log.read_text().splitlines() == ["one", "two"])  # step two runs in the worker
        run_id = (await harness.one_run())["id"]
        with psycopg.connect(str(admin.info.dsn)) as blocker:
            # hold the run's row: the worker's commit of step two waits behind it
            blocker.execute("select 1 from runner.runs where id = %s for update", [run_id])
            log.with_suffix(".go").touch()
            await _wait_for(lambda: admin.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and query like '%%from runner.runs where id = %%for update%%'").fetchone()[0] == 1)
            worker.kill()  # SIGKILL, while it waits to commit step two
            await worker.wait()
            blocker.rollback()
        assert await harness.steps(run_id) == [("StepRun", "one", "one")]  # step two's result was never stored
        await asyncio.sleep(1.2)  # the dead worker's lease runs out
        await here.drain()
        run = await harness.one_run()
        assert (run["status"], run["output"]) == ("completed", "done")
        assert log.read_text().splitlines() == ["one", "two", "two"]  # two ran again, one did not
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()

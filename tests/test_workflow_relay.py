"""The outbox relay: to Inngest's Event API (faked at the HTTP transport with respx, the real SDK client
sending) and to the embedded runner (handed over in the transaction that marks the rows dispatched)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest
import respx
from conftest import Actors, forget_bookkeeping

from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.uow import Database, UnitOfWork
from workflows.embedded.client import EmbeddedInngest
from workflows.embedded.runner import Runner
from workflows.relay import EmbeddedSink, InngestSink, Relay

EVENT_API = "http://inngest.test"


def inngest_client() -> inngest.Inngest:
    return inngest.Inngest(app_id="pipecd", is_production=True, event_key="test-event-key",
                           signing_key="signkey-test-" + "ab" * 32, event_api_base_url=EVENT_API)


async def create_deals(actors: Actors, *titles: str) -> list[str]:
    ids = []
    for title in titles:
        async with actors.uow("bob") as uow:
            ids.append(str((await deals.create(uow, DealCreate(title=title))).id))
    return ids


def pending(admin) -> list[tuple[str, int, bool]]:
    return admin.execute(
        "select name, attempts, coalesce(next_attempt_at > now(), false) from public.outbox where dispatched_at is null"
        " order by name, attempts desc"
    ).fetchall()


def sent_events(route: respx.Route) -> list[dict[str, Any]]:
    return [e for call in route.calls if call.response.status_code == 200 for e in json.loads(call.request.content)]


async def test_events_reach_inngest_once_with_the_outbox_event_id(db: Database, actors: Actors, admin) -> None:
    forget_bookkeeping(admin)
    await create_deals(actors, "Acme renewal", "Globex pilot")
    outbox = dict(admin.execute("select event_id, data ->> 'deal_id' from public.outbox").fetchall())
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{EVENT_API}/e/test-event-key").mock(side_effect=[
            httpx.Response(503, json={"error": "unavailable"}),
            httpx.Response(200, json={"ids": list(outbox), "status": 200}),
        ])
        assert await Relay(db, InngestSink(inngest_client()), listen=False).drain() == 2
    events = sent_events(route)
    assert sorted(e["id"] for e in events) == sorted(outbox)
    assert {e["name"] for e in events} == {"crm/deal.created"}
    assert {e["data"]["deal_id"] for e in events} == set(outbox.values())
    assert {(e["data"]["actor_id"], e["data"]["channel"]) for e in events} == {(str(actors.id("bob")), "graphql")}
    assert pending(admin) == []
    with respx.mock(assert_all_called=False) as mock:
        again = mock.post(f"{EVENT_API}/e/test-event-key").mock(return_value=httpx.Response(200, json={"ids": []}))
        assert await Relay(db, InngestSink(inngest_client()), listen=False).drain() == 0
    assert not again.called  # dispatched rows are never sent again


async def test_events_committed_while_inngest_is_unreachable_are_delivered_later(
    db: Database, actors: Actors, admin
) -> None:
    forget_bookkeeping(admin)
    await create_deals(actors, "Acme renewal")
    relay = Relay(db, InngestSink(inngest_client()), listen=False)
    with respx.mock() as mock:
        mock.post(f"{EVENT_API}/e/test-event-key").mock(side_effect=httpx.ConnectError("no route to host"))
        assert await relay.drain() == 0
        await create_deals(actors, "Globex pilot")  # committed while Inngest is away
    assert pending(admin) == [("crm/deal.created", 1, True), ("crm/deal.created", 0, False)]
    (error,) = admin.execute("select last_error from public.outbox where attempts = 1").fetchone()
    assert error.startswith("SendEventsError") or "ConnectError" in error
    admin.execute("update public.outbox set next_attempt_at = now()")  # its backoff is over
    with respx.mock() as mock:
        route = mock.post(f"{EVENT_API}/e/test-event-key").mock(return_value=httpx.Response(200, json={"ids": []}))
        assert await relay.drain() == 2
    assert len(sent_events(route)) == 2
    assert pending(admin) == []


async def test_failed_deliveries_back_off_exponentially_up_to_ten_minutes(db: Database, actors: Actors, admin) -> None:
    forget_bookkeeping(admin)
    await create_deals(actors, "Acme renewal")
    relay = Relay(db, InngestSink(inngest_client()), listen=False)
    waits = []
    with respx.mock() as mock:
        mock.post(f"{EVENT_API}/e/test-event-key").mock(return_value=httpx.Response(401, json={"error": "bad key"}))
        for _ in range(12):
            admin.execute("update public.outbox set next_attempt_at = now() where dispatched_at is null")
            assert await relay.drain() == 0
            waits.append(admin.execute(
                "select round(extract(epoch from next_attempt_at - now())) from public.outbox").fetchone()[0])
    assert [int(w) for w in waits] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert admin.execute("select attempts, last_error like '%%bad key%%' from public.outbox").fetchone() == (12, True)


@pytest.fixture
async def runner(db: Database) -> AsyncIterator[Runner]:
    client = EmbeddedInngest(db)

    async def count(ctx: inngest.Context) -> str:
        return str(ctx.event.data["deal_id"])

    trigger = inngest.TriggerEvent(event="crm/deal.created")
    built = Runner(db, client, [client.create_function(fn_id="count", trigger=trigger)(count)], backoff_scale=0)
    await built.sync()
    yield built
    await built.close()


async def test_the_embedded_handoff_creates_runs_in_the_same_transaction(
    db: Database, actors: Actors, admin, runner: Runner
) -> None:
    forget_bookkeeping(admin)
    ids = await create_deals(actors, "Acme renewal", "Globex pilot")

    class Failing(EmbeddedSink):
        async def deliver(self, uow: UnitOfWork, events: list[dict[str, Any]]) -> None:
            await super().deliver(uow, events)
            raise RuntimeError("crashed after creating the runs")

    assert await Relay(db, Failing(runner), listen=False).drain() == 0
    assert admin.execute("select count(*) from runner.runs").fetchone() == (0,)  # rolled back with the handoff
    assert [p[:2] for p in pending(admin)] == [("crm/deal.created", 1), ("crm/deal.created", 1)]
    admin.execute("update public.outbox set next_attempt_at = now()")
    assert await Relay(db, EmbeddedSink(runner), listen=False).drain() == 2
    admin.execute("update public.outbox set dispatched_at = null")  # delivered again, e.g. restored from a backup
    assert await Relay(db, EmbeddedSink(runner), listen=False).drain() == 2
    await runner.drain()
    outputs = admin.execute("select output #>> '{}' from runner.runs where status = 'completed'").fetchall()
    assert sorted(o for (o,) in outputs) == sorted(ids)  # one run per event, however often it arrived


async def test_a_commit_wakes_the_relay_at_once(db: Database, actors: Actors, admin, runner: Runner) -> None:
    forget_bookkeeping(admin)
    relay = Relay(db, EmbeddedSink(runner), interval=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.5)  # the relay swept once and listens; the next sweep is a minute away
        await create_deals(actors, "Acme renewal")
        async with asyncio.timeout(5):
            while pending(admin):  # noqa: ASYNC110 (the relay's progress is only visible in the database)
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    assert admin.execute("select count(*) from runner.runs").fetchone() == (1,)


# A relay process killed while it sends ------------------------------------------------------------------


class FakeEventApi:
    """Inngest's Event API on a loopback port (a process cannot be respx-mocked from another one): the first
    request hangs until the test lets go; every other one is accepted and recorded."""

    def __init__(self) -> None:
        import threading

        import fastapi
        import uvicorn

        self.received: list[dict[str, Any]] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        api = fastapi.FastAPI()

        @api.post("/e/{key}")
        def receive(batch: list[dict[str, Any]]) -> dict[str, Any]:
            if not self.first_arrived.is_set():
                self.first_arrived.set()
                self.release.wait(30)
                return {"ids": [], "status": 500, "error": "released"}
            self.received.extend(batch)
            return {"ids": [e["id"] for e in batch], "status": 200}

        self.server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def __aenter__(self) -> str:
        self.thread.start()
        async with asyncio.timeout(10):
            while not self.server.started:  # noqa: ASYNC110 (uvicorn runs in its own thread)
                await asyncio.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 10)


async def test_a_relay_killed_while_sending_loses_nothing(
    db: Database, actors: Actors, admin, admin_url: str, tmp_path
) -> None:
    import os
    import sys

    forget_bookkeeping(admin)
    await create_deals(actors, "Acme renewal", "Globex pilot")
    fake = FakeEventApi()
    async with fake as origin:
        env = {**os.environ, "DATABASE_URL": admin_url, "PIPECD_STATE_DIR": str(tmp_path), "PIPECD_ENV": "test",
               "PIPECD_WORKFLOWS": "inngest", "INNGEST_BASE_URL": origin, "INNGEST_EVENT_KEY": "test-event-key",
               "INNGEST_SIGNING_KEY": "signkey-test-" + "ab" * 32}
        worker = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "pipecd"), "workflows", "worker", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            arrived = await asyncio.to_thread(fake.first_arrived.wait, 60)
            assert arrived, (await worker.stderr.read()).decode() if worker.stderr else "the worker never sent"
            worker.kill()  # SIGKILL while its send is in flight: its transaction never commits
            await worker.wait()
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        assert len(pending(admin)) == 2  # nothing was marked sent
        client = inngest.Inngest(app_id="pipecd", is_production=True, event_key="test-event-key",
                                 signing_key="signkey-test-" + "ab" * 32, event_api_base_url=origin)
        assert await Relay(db, InngestSink(client), listen=False).drain() == 2
    outbox = {row[0] for row in admin.execute("select event_id from public.outbox").fetchall()}
    assert sorted(e["id"] for e in fake.received) == sorted(outbox)
    assert pending(admin) == []

"""The outbox relay: the only way events leave the database.

Requests write events into `public.outbox` in their own transaction and never send anything. The relay
claims pending rows (`FOR UPDATE SKIP LOCKED`, so any number of processes may run it), hands them to a sink,
and marks them dispatched in the same transaction. A commit that added events wakes it at once (`NOTIFY
pipecd_outbox` on a connection of its own); a periodic sweep catches the rest (and everything, where LISTEN is
not available, e.g. behind a transaction pooler).

Sinks:
- `InngestSink`: `client.send` with the outbox row's event id as the Inngest event id. A process that dies
  after sending and before committing sends again; Inngest drops a duplicate id (within 24 h). Failures wait
  with capped exponential backoff (`attempts`, `last_error`, `next_attempt_at`).
- `EmbeddedSink`: the runner creates the runs inside the relay's transaction: handed over exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any, Protocol

import inngest
import psycopg

from services.kernel.uow import Database, Row, UnitOfWork
from workflows.acting import SYSTEM
from workflows.embedded.runner import Runner

log = logging.getLogger("pipecd.workflows")

CHANNEL = "pipecd_outbox"
MAX_BACKOFF = timedelta(minutes=10)


class Sink(Protocol):
    async def deliver(self, uow: UnitOfWork, events: list[dict[str, Any]]) -> None:
        """Deliver the events (raising on failure), inside the transaction that marks them dispatched."""

    def delivered(self) -> None:
        """Called after that transaction committed."""


class InngestSink:
    def __init__(self, client: inngest.Inngest) -> None:
        self.client = client

    async def deliver(self, uow: UnitOfWork, events: list[dict[str, Any]]) -> None:
        await self.client.send([inngest.Event(**event) for event in events])

    def delivered(self) -> None:
        return None


class EmbeddedSink:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def deliver(self, uow: UnitOfWork, events: list[dict[str, Any]]) -> None:
        await self.runner.ingest(uow, events)

    def delivered(self) -> None:
        self.runner.wake()


def event(row: Row) -> dict[str, Any]:
    """An outbox row as the event the engine receives: ids and enums, plus who caused it and through what."""
    data = dict(row["data"])
    data.setdefault("actor_id", None if row["actor_id"] is None else str(row["actor_id"]))
    data.setdefault("channel", row["channel"])
    return {"id": row["event_id"], "name": row["name"], "data": data,
            "ts": int(row["occurred_at"].timestamp() * 1000)}


class Relay:
    def __init__(
        self, db: Database, sink: Sink, *, interval: float = 2.0, batch: int = 100, listen: bool = True
    ) -> None:
        self.db = db
        self.sink = sink
        self.interval = interval
        self.batch = batch
        self.listen = listen
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Deliver every event that is due; returns how many were delivered. Stops at the first failed batch
        (its rows wait for their next attempt)."""
        total = 0
        while True:
            delivered = await self._deliver_batch()
            if delivered <= 0:
                return total
            total += delivered

    async def _deliver_batch(self) -> int:
        async with self.db.unit_of_work(SYSTEM) as uow:
            rows = await uow.all(
                """
                select id, event_id, name, data, actor_id, channel, occurred_at, attempts
                from public.outbox
                where dispatched_at is null and coalesce(next_attempt_at, occurred_at) <= now()
                order by coalesce(next_attempt_at, occurred_at), occurred_at, id
                limit %s
                for update skip locked
                """,
                [self.batch],
            )
            if not rows:
                return 0
            ids = [row["id"] for row in rows]
            try:
                async with uow.conn.transaction():  # a savepoint: a failed handoff leaves nothing behind
                    await self.sink.deliver(uow, [event(row) for row in rows])
            except Exception as exc:
                log.warning("outbox relay: %d event(s) not delivered: %s", len(rows), exc)
                await uow.execute(
                    """
                    update public.outbox
                    set attempts = attempts + 1, last_error = left(%s, 1000),
                        next_attempt_at = clock_timestamp() + least(power(2, attempts) * interval '1 second', %s)
                    where id = any(%s)
                    """,
                    [f"{type(exc).__name__}: {exc}", MAX_BACKOFF, ids],
                )
                return -1
            await uow.execute(
                "update public.outbox set dispatched_at = now(), last_error = null where id = any(%s)", [ids]
            )
        self.sink.delivered()
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver on every wake-up (a commit's NOTIFY) and every `interval` seconds until `stop` is set."""
        listener = asyncio.create_task(self._listen(stop)) if self.listen else None
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.drain()
                except Exception:  # e.g. the database is away for a moment: the next sweep tries again
                    log.exception("outbox relay: sweep failed")
                await _first_of(self._wake, stop, seconds=self.interval)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN on a connection of its own (not the pool's: it stays open); reconnects after a failure."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.db.conninfo, autocommit=True) as conn:
                    await conn.execute(f"listen {CHANNEL}")
                    self._wake.set()  # anything committed before LISTEN took effect
                    async for _ in conn.notifies():
                        self._wake.set()
            except Exception as exc:
                log.warning("outbox relay: LISTEN failed (%s); sweeping every %g s", exc, self.interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(self.interval, 5.0))


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Wait until any of `events` is set, or `seconds` have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

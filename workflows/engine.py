"""The workflow engine a process runs: the outbox relay, and with the embedded engine also the runner.

`pipecd serve`/`dev` run it in the app's lifespan (every uvicorn worker may: the relay and the runner share
work through the database), `pipecd workflows worker` on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import inngest

from services.ai.llm import LLM
from services.kernel.uow import Database
from workflows import functions
from workflows.embedded.client import EmbeddedInngest
from workflows.embedded.runner import Runner
from workflows.relay import EmbeddedSink, InngestSink, Relay


@dataclass(frozen=True)
class Timing:
    relay_interval: float = 2.0
    backoff_scale: float = 1.0
    lease: float = 30.0
    poll: float = 1.0


@dataclass
class Engine:
    relay: Relay
    runner: Runner | None = None  # the embedded runner
    inngest: inngest.Inngest | None = None  # or the client of the Inngest that runs the functions

    async def start(self) -> None:
        if self.runner is not None:
            await self.runner.sync()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Engine]:
        """Sync, then relay (and run) in background tasks until the block ends."""
        await self.start()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.relay.run(stop))]
        if self.runner is not None:
            tasks.append(asyncio.create_task(self.runner.run(stop)))
        try:
            yield self
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.runner is not None:
                await self.runner.close()


def embedded(db: Database, config: functions.Config, timing: Timing, llm: LLM | None = None) -> Engine:
    client = EmbeddedInngest(db)
    runner = Runner(db, client, functions.build(client, db, config, llm), lease=timing.lease, poll=timing.poll,
                    backoff_scale=timing.backoff_scale)
    return Engine(Relay(db, EmbeddedSink(runner), interval=timing.relay_interval), runner)


def with_inngest(db: Database, client: inngest.Inngest, timing: Timing) -> Engine:
    """Inngest runs the functions (it calls /api/inngest); this process only relays the outbox to it."""
    return Engine(Relay(db, InngestSink(client), interval=timing.relay_interval), inngest=client)

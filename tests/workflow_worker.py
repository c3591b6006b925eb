"""A runner in a process of its own, for the tests that kill it: `python workflow_worker.py APP_URL LOG LEASE`.

Its one function, `journal`, runs two steps; each appends its name to LOG when it executes, so the test can
count executions across processes. Step "two" then waits for the file LOG.go, so the test can act while it runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import inngest

from services.kernel.uow import Database
from workflows.embedded.client import EmbeddedInngest
from workflows.embedded.runner import Runner


def journal_functions(client: EmbeddedInngest, log: Path) -> list[inngest.Function[Any]]:
    async def journal(ctx: inngest.Context) -> str:
        async def step(name: str) -> str:
            with log.open("a") as out:
                out.write(name + "\n")
            while name == "two" and not log.with_suffix(".go").exists():  # noqa: ASYNC110 (set by another process)
                await asyncio.sleep(0.02)
            return name

        await ctx.step.run("one", step, "one")
        await ctx.step.run("two", step, "two")
        return "done"

    trigger = inngest.TriggerEvent(event="test/journal")
    return [client.create_function(fn_id="journal", trigger=trigger, retries=0)(journal)]


async def main(app_url: str, log: Path, lease: float) -> None:
    async with Database(app_url, max_size=3) as db:
        client = EmbeddedInngest(db)
        runner = Runner(db, client, journal_functions(client, log), lease=lease, poll=0.05, backoff_scale=0)
        await runner.sync()
        await runner.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])))

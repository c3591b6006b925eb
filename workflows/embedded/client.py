"""The Inngest client the embedded runner serves its functions with: `send` (and so `step.send_event`) puts the
events in the outbox, in the system's own transaction, from where the relay hands them to the runner."""

from __future__ import annotations

import secrets
from uuid import uuid4

import inngest

from services.kernel.uow import Database
from workflows.acting import SYSTEM
from workflows.functions import APP_ID


class EmbeddedInngest(inngest.Inngest):
    """Production mode with a signing key made for this process: the SDK checks the runner's signature on
    every call, so the private endpoint refuses anyone else even if it were ever exposed."""

    def __init__(self, db: Database) -> None:
        key = "signkey-embedded-" + secrets.token_hex(32)
        super().__init__(app_id=APP_ID, is_production=True, signing_key=key, event_key="embedded")
        self.key = key
        self._db = db

    async def send(self, events: inngest.Event | list[inngest.Event], *, skip_middleware: bool = False) -> list[str]:
        batch = events if isinstance(events, list) else [events]
        ids = [event.id or str(uuid4()) for event in batch]
        async with self._db.unit_of_work(SYSTEM) as uow:
            for event_id, event in zip(ids, batch, strict=True):
                uow.emit(event.name, event_id=event_id, **event.data)
        return ids

    def send_sync(self, events: inngest.Event | list[inngest.Event], *, skip_middleware: bool = False) -> list[str]:
        raise RuntimeError("the embedded engine sends events from async functions only (use `await client.send`)")

"""The workflow functions: Inngest SDK functions, written once, whichever engine runs them."""

from __future__ import annotations

from dataclasses import dataclass

import inngest

from services.kernel.uow import Database

APP_ID = "pipecd"


@dataclass(frozen=True)
class Config:
    followup_days: int = 2
    reminder_cron: str = "*/5 * * * *"
    maintenance_cron: str = "17 3 * * *"
    outbox_retention_days: int = 7
    runs_retention_days: int = 14
    idempotency_retention_days: int = 30


def build(client: inngest.Inngest, db: Database, config: Config) -> list[inngest.Function]:
    """Every workflow function, made with `client` (the engine's) over `db`."""
    return []

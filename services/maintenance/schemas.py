"""How long pruned things are kept, and what a pruning removed."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Retention(BaseModel):
    outbox_days: int = Field(7, ge=1)
    runs_days: int = Field(14, ge=1)
    idempotency_days: int = Field(30, ge=1)


class Pruned(BaseModel):
    outbox: int
    runs: int
    idempotency_keys: int

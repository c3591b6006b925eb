from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class AuditEntry(BaseModel):
    id: int = Field(description="Entry id (increasing).")
    actor_id: UUID | None = Field(description="Who made the change; null for the system.")
    channel: str = Field(description="graphql, mcp, workflow or cli.")
    operation: str = Field(description="The operation, e.g. deal.mark_won.")
    entity_type: str = Field(description="Kind of record changed.")
    entity_id: UUID | None = Field(description="The record changed.")
    diff: dict[str, Any] = Field(description="Changed fields: {before: {...}, after: {...}}.")
    occurred_at: datetime = Field(description="When.")

"""A requested summary and what the model said, as the requester reads it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class SummarySubject(StrEnum):
    DEAL = "deal"
    PERSON = "person"
    ORGANIZATION = "organization"
    PIPELINE = "pipeline"


class SummaryStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class CitedText(BaseModel):
    text: str = Field(description="A risk or next step, in the model's words (plain text).")
    record_ids: list[UUID] = Field(default_factory=list, description="Records it is based on.")


class SummaryContent(BaseModel):
    summary: str = Field(description="What is going on, in a few sentences (plain text).")
    status_line: str = Field(description="One line: where it stands.")
    risks: list[CitedText] = Field(default_factory=list, description="What could go wrong, each with its records.")
    next_steps: list[CitedText] = Field(default_factory=list, description="What to do next, each with its records.")


class Summary(BaseModel):
    id: UUID = Field(description="Summary id (read it with get_summary).")
    kind: str = Field(description="summary, or digest (a weekly pipeline digest).")
    subject_type: SummarySubject = Field(description="deal, person, organization or pipeline.")
    subject_id: UUID = Field(description="The record (or pipeline) summarized.")
    period: str | None = Field(None, description="A digest's ISO week, e.g. 2026-W49.")
    status: SummaryStatus = Field(description="queued, running, done or failed.")
    model: str | None = Field(None, description="The model that wrote it; 'offline' for the built-in summarizer.")
    content: SummaryContent | None = Field(None, description="The summary, once done.")
    input_tokens: int | None = Field(None, description="Tokens the model read.")
    output_tokens: int | None = Field(None, description="Tokens the model wrote.")
    snapshot_at: datetime | None = Field(None, description="The time the data it describes is from.")
    stale: bool = Field(False, description="Whether the subject changed after snapshot_at.")
    error: str | None = Field(None, description="Why it failed.")
    created_at: datetime = Field(description="When it was requested.")
    completed_at: datetime | None = Field(None, description="When it was done.")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Summary:
        return cls.model_validate(row)

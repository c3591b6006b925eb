"""The model interface every summarizer implements (the Anthropic adapter, the offline extractive one), and the
context and answer shapes they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

Purpose = Literal["summary", "digest"]


@dataclass(frozen=True)
class Context:
    """What a model may be told about a subject, built AS the requesting user (RLS decides), bounded in size."""

    subject_type: str  # deal, person, organization, pipeline
    subject_id: UUID
    data: dict[str, Any]  # fields, computed signals, open activities, notes; `omitted` counts what did not fit
    source_ids: list[UUID]  # every record id in `data`: citations must be among them; erasure finds summaries by them
    snapshot_hash: str  # SHA-256 of `data`
    snapshot_at: datetime  # the time the data describes (a change after it makes the summary stale)


@dataclass(frozen=True)
class Cited:
    text: str
    record_ids: list[UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """A model's answer, validated: citations outside the context dropped, URLs, emails and phones stripped."""

    summary: str
    status_line: str
    risks: list[Cited]
    next_steps: list[Cited]
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    ignored_instructions: bool = False  # the data addressed the model (an injection attempt) and it did not obey


class LLM(Protocol):
    model: str

    async def summarize(self, context: Context, purpose: Purpose) -> Answer:
        """Summarize `context`. Raises ModelBusy (retry later) or ModelRefused (retrying cannot help)."""
        ...


class ModelBusy(Exception):
    """The model could not answer now (rate limit, overload, connection): try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelRefused(Exception):
    """The model will not answer this request (bad request, authentication, permission, refusal)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from services.kernel.schemas import Input

Probability = Field(ge=0, le=100, description="Win probability in percent (integer 0-100).")


class Stage(BaseModel):
    id: UUID = Field(description="Stage id.")
    pipeline_id: UUID = Field(description="The pipeline this stage belongs to.")
    name: str = Field(description="Stage name.")
    position: int = Field(description="0-based order within the pipeline; dense and unique.")
    win_probability: int = Field(description="Win probability in percent (0-100) for deals in this stage.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")


class Pipeline(BaseModel):
    id: UUID = Field(description="Pipeline id.")
    name: str = Field(description="Pipeline name, unique (case-insensitive).")
    position: int = Field(description="Display order among pipelines.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When the pipeline was created.")
    stages: list[Stage] = Field(default_factory=list, description="Stages in order.")


class StageInput(Input):
    name: str = Field(min_length=1, max_length=200, description="Stage name.")
    win_probability: int = Field(0, ge=0, le=100, description="Win probability in percent (integer 0-100).")


class PipelineCreate(Input):
    name: str = Field(min_length=1, max_length=200, description="Pipeline name, unique (case-insensitive).")
    stages: list[StageInput] = Field(default_factory=list, description="Initial stages, in order.")


class PipelineUpdate(Input):
    name: str | None = Field(None, min_length=1, max_length=200, description="New name.")
    position: int | None = Field(None, ge=0, description="New display order among pipelines.")


class StageCreate(StageInput):
    position: int | None = Field(None, ge=0, description="Where to insert (0-based); default: at the end.")


class StageUpdate(Input):
    name: str | None = Field(None, min_length=1, max_length=200, description="New name.")
    win_probability: int | None = Field(None, ge=0, le=100, description="New win probability (0-100).")

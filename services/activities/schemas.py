from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from uuid import UUID

from pydantic import Field

from services.kernel.attachments import Links
from services.kernel.schemas import Input, RecordFilter


class ActivityType(StrEnum):
    TASK = "task"
    CALL = "call"
    MEETING = "meeting"
    EMAIL = "email"
    DEADLINE = "deadline"


class Activity(Links):
    id: UUID = Field(description="Activity id.")
    type: ActivityType = Field(description="task, call, meeting, email or deadline.")
    subject: str = Field(description="What it is about.")
    due_date: date | None = Field(description="Due date.")
    due_time: time | None = Field(description="Due time of day (needs a due date).")
    duration_minutes: int | None = Field(description="Planned duration in minutes.")
    done: bool = Field(description="Whether it is done.")
    done_at: datetime | None = Field(description="When it was marked done.")
    reminder_at: datetime | None = Field(description="When to remind the owner.")
    note: str | None = Field(description="Free-text details.")
    owner_id: UUID = Field(description="Owner (a user id).")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")


class ActivityCreate(Links, Input):
    multiline_fields = frozenset({"note"})

    type: ActivityType = Field(ActivityType.TASK, description="Kind of activity.")
    subject: str = Field(min_length=1, max_length=300, description="What it is about.")
    due_date: date | None = Field(None, description="Due date.")
    due_time: time | None = Field(None, description="Due time of day (needs a due date).")
    duration_minutes: int | None = Field(None, ge=0, le=10080, description="Planned duration in minutes.")
    reminder_at: datetime | None = Field(None, description="When to remind the owner.")
    note: str | None = Field(None, max_length=10000, description="Free-text details.")
    owner_id: UUID | None = Field(None, description="Default: you.")


class ActivityUpdate(Input):
    multiline_fields = frozenset({"note"})

    type: ActivityType | None = Field(None, description="New type.")
    subject: str | None = Field(None, min_length=1, max_length=300, description="New subject.")
    due_date: date | None = Field(None, description="New due date.")
    due_time: time | None = Field(None, description="New due time.")
    duration_minutes: int | None = Field(None, ge=0, le=10080, description="New duration in minutes.")
    reminder_at: datetime | None = Field(None, description="New reminder time.")
    note: str | None = Field(None, max_length=10000, description="New details.")
    deal_id: UUID | None = Field(None, description="New deal link.")
    lead_id: UUID | None = Field(None, description="New lead link.")
    person_id: UUID | None = Field(None, description="New person link.")
    organization_id: UUID | None = Field(None, description="New organization link.")
    owner_id: UUID | None = Field(None, description="New owner.")


class ActivityFilter(RecordFilter):
    type: ActivityType | None = Field(None, description="Only this type.")
    done: bool | None = Field(None, description="true: done; false: open.")
    due_before: date | None = Field(None, description="Due on or before.")
    due_after: date | None = Field(None, description="Due on or after.")
    deal_id: UUID | None = Field(None, description="Of this deal.")
    lead_id: UUID | None = Field(None, description="Of this lead.")
    person_id: UUID | None = Field(None, description="Of this person.")
    organization_id: UUID | None = Field(None, description="Of this organization.")

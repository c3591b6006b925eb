"""A notification as its reader sees it: what happened to which record, and the record's details read now."""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

from services.activities.schemas import ActivityType


class NotificationKind(StrEnum):
    ACTIVITY_REMINDER = "activity_reminder"
    SUMMARY_READY = "summary_ready"
    DIGEST_READY = "digest_ready"
    ERASURE_DONE = "erasure_done"


class Notification(BaseModel):
    id: UUID = Field(description="Notification id.")
    kind: NotificationKind = Field(description="What happened: activity_reminder (an activity's reminder is due), "
                                  "summary_ready, digest_ready (an AI summary or weekly digest is done), erasure_done.")
    entity_type: str = Field(description="The kind of record it is about, e.g. activity.")
    entity_id: UUID = Field(description="The record it is about.")
    occasion: datetime = Field(description="The moment it is about (for a reminder: the reminder time).")
    created_at: datetime = Field(description="When it was created.")
    read_at: datetime | None = Field(description="When you marked it read; null while unread.")
    subject: str | None = Field(
        description="The activity's subject, as it is now; null if it is gone or you may no longer see it."
    )
    due_date: date | None = Field(description="The activity's due date, as it is now.")
    due_time: time | None = Field(description="The activity's due time, as it is now.")
    activity_type: ActivityType | None = Field(description="The activity's type, as it is now.")

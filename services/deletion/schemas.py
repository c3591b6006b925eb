from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field


class DeletableType(StrEnum):
    DEAL = "deal"
    PERSON = "person"
    ORGANIZATION = "organization"
    LEAD = "lead"
    ACTIVITY = "activity"
    NOTE = "note"


class AffectedType(StrEnum):
    STAGE_CHANGE = "stage_change"
    PERSON = "person"
    DEAL = "deal"
    LEAD = "lead"
    ACTIVITY = "activity"
    NOTE = "note"


class Effect(StrEnum):
    DELETED = "deleted"
    UNLINKED = "unlinked"


class DeletionTarget(BaseModel):
    entity_type: DeletableType = Field(description="deal, person, organization, lead, activity or note.")
    id: UUID = Field(description="Record id.")
    title: str = Field(
        description="Deal or lead title, person or organization name, activity subject, or a note's first line."
    )
    version: int | None = Field(description="The record's version (pass it as expected_version to delete).")


class Consequence(BaseModel):
    entity_type: AffectedType = Field(
        description="Kind of the other records affected: stage_change (a deal's stage history entry), person,"
        " deal, lead, activity or note."
    )
    count: int = Field(
        description="How many of them. Only rows the caller can see are counted; rows hidden from the caller"
        " are affected the same way but not counted."
    )
    effect: Effect = Field(
        description="deleted: removed with the record; unlinked: kept, with the link to the record cleared."
    )


class DeletionPreview(BaseModel):
    record: DeletionTarget = Field(description="The record that is (or would be) deleted.")
    consequences: list[Consequence] = Field(
        description="What happens to other records, deleted ones first; kinds with no affected row are left"
        " out. Counts cover the rows the caller can see."
    )

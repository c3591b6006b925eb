from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field


class SearchType(StrEnum):
    PERSON = "person"
    ORGANIZATION = "organization"
    DEAL = "deal"
    LEAD = "lead"


class SearchHit(BaseModel):
    id: UUID = Field(description="Record id; use it with the record's get/update operations.")
    type: SearchType = Field(description="person, organization, deal or lead.")
    title: str = Field(description="Name or title of the record.")
    context: str = Field(description="A short line to tell similar hits apart (email, domain, status...).")
    score: float = Field(description="Relevance, higher is better.")

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field

from services.contacts.schemas import normalize_email
from services.deals.schemas import Currency, Deal, Money
from services.kernel.records import Visibility
from services.kernel.schemas import Input, OwnedInput, RecordFilter


class LeadStatus(StrEnum):
    OPEN = "open"
    ARCHIVED = "archived"
    CONVERTED = "converted"


def _labels(values: list[str]) -> list[str]:
    labels: list[str] = []
    for value in values:
        label = value.strip().lower()
        if not label or len(label) > 50:
            raise ValueError("labels are 1-50 characters")
        if label not in labels:
            labels.append(label)
    return labels


Labels = Annotated[list[str], AfterValidator(_labels)]
Email = Annotated[str, AfterValidator(normalize_email)]


class Lead(BaseModel):
    id: UUID = Field(description="Lead id.")
    title: str = Field(description="Lead title.")
    source: str | None = Field(description="Where the lead came from (web form, event, referral...).")
    value: Decimal | None = Field(description="Potential value in `currency`.")
    currency: str = Field(description="ISO 4217 currency code.")
    person_id: UUID | None = Field(description="Linked person.")
    organization_id: UUID | None = Field(description="Linked organization.")
    contact_name: str | None = Field(description="Contact name when no person is linked yet.")
    contact_email: str | None = Field(description="Contact email when no person is linked yet.")
    organization_name: str | None = Field(description="Organization name when none is linked yet.")
    owner_id: UUID = Field(description="Owner (a user id).")
    labels: list[str] = Field(description="Labels (lowercase).")
    status: LeadStatus = Field(description="open, archived or converted.")
    converted_deal_id: UUID | None = Field(description="The deal this lead became.")
    converted_at: datetime | None = Field(description="When it was converted.")
    visibility: Visibility = Field(description="Who sees it: owner, team or company.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")


class LeadCreate(OwnedInput):
    title: str = Field(min_length=1, max_length=300, description="Lead title.")
    source: str | None = Field(None, max_length=200, description="Where the lead came from.")
    value: Money | None = Field(None, description="Potential value.")
    currency: Currency = Field("USD", description="ISO 4217 currency code.")
    person_id: UUID | None = Field(None, description="Linked person.")
    organization_id: UUID | None = Field(None, description="Linked organization.")
    contact_name: str | None = Field(None, max_length=300, description="If no person is linked.")
    contact_email: Email | None = Field(None, description="If no person is linked.")
    organization_name: str | None = Field(None, max_length=300, description="If none is linked.")
    labels: Labels = Field(default_factory=list, max_length=20, description="Labels.")


class LeadUpdate(Input):
    title: str | None = Field(None, min_length=1, max_length=300, description="New title.")
    source: str | None = Field(None, max_length=200, description="New source.")
    value: Money | None = Field(None, description="New value.")
    currency: Currency | None = Field(None, description="New currency.")
    person_id: UUID | None = Field(None, description="New linked person.")
    organization_id: UUID | None = Field(None, description="New linked organization.")
    contact_name: str | None = Field(None, max_length=300, description="New contact name.")
    contact_email: Email | None = Field(None, description="New contact email.")
    organization_name: str | None = Field(None, max_length=300, description="New organization name.")
    labels: Labels | None = Field(None, max_length=20, description="Replaces all labels.")
    owner_id: UUID | None = Field(None, description="New owner.")
    visibility: Visibility | None = Field(None, description="New visibility.")


class LeadFilter(RecordFilter):
    status: LeadStatus | None = Field(None, description="Only leads with this status.")
    label: str | None = Field(None, description="Only leads with this label.")


class LeadConversion(Input):
    pipeline_id: UUID | None = Field(None, description="Default: the first.")
    stage_id: UUID | None = Field(None, description="Default: the pipeline's first.")
    title: str | None = Field(None, min_length=1, max_length=300, description="Deal title; default: the lead's.")


class ConversionResult(BaseModel):
    lead: Lead = Field(description="The lead, now converted.")
    deal: Deal = Field(description="The deal it became.")
    created_person: bool = Field(description="Whether conversion created a new person.")
    created_organization: bool = Field(description="Whether conversion created a new organization.")
    already_converted: bool = Field(description="True when the lead had been converted before (nothing changed).")

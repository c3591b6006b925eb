from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from uuid import UUID

import pycountry
from pydantic import AfterValidator, BaseModel, Field, model_validator

from services.kernel.errors import Invalid
from services.kernel.pagination import NEWEST_FIRST, Order
from services.kernel.records import Visibility
from services.kernel.schemas import Input, OwnedInput, RecordFilter


class DealStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


def _currency(value: str) -> str:
    """An active ISO 4217 code (pycountry's list, kept current with the standard), upper-cased."""
    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha() or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


Currency = Annotated[str, AfterValidator(_currency)]
Money = Annotated[Decimal, Field(ge=0, max_digits=16, decimal_places=2)]
Percent = Annotated[int, Field(ge=0, le=100)]


class Deal(BaseModel):
    id: UUID = Field(description="Deal id.")
    title: str = Field(description="Deal title.")
    value: Decimal = Field(description="Deal value in `currency`.")
    currency: str = Field(description="ISO 4217 currency code.")
    owner_id: UUID = Field(description="Owner (a user id).")
    person_id: UUID | None = Field(description="Contact person.")
    organization_id: UUID | None = Field(description="Organization.")
    pipeline_id: UUID = Field(description="Pipeline the deal is in.")
    stage_id: UUID | None = Field(description="Current stage; null if its stage was deleted.")
    status: DealStatus = Field(description="open, won or lost.")
    won_at: datetime | None = Field(description="When it was won.")
    lost_at: datetime | None = Field(description="When it was lost.")
    lost_reason: str | None = Field(description="Why it was lost.")
    expected_close_date: date | None = Field(description="Expected close date.")
    probability: int | None = Field(description="Win probability override in percent; null: the stage's.")
    visibility: Visibility = Field(description="Who sees it: owner, team or company.")
    version: int = Field(description="Increments on every change (optimistic concurrency).")
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")
    weighted_value: Decimal = Field(
        description="value × (probability override, else the stage's win probability) / 100."
    )


class DealCreate(OwnedInput):
    title: str = Field(min_length=1, max_length=300, description="Deal title.")
    value: Money = Field(Decimal("0"), description="Deal value (non-negative, 2 decimals).")
    currency: Currency = Field("USD", description="ISO 4217 currency code.")
    person_id: UUID | None = Field(None, description="Contact person (resolve with search first).")
    organization_id: UUID | None = Field(None, description="Organization (resolve with search first).")
    pipeline_id: UUID | None = Field(None, description="Pipeline; default: the first pipeline.")
    stage_id: UUID | None = Field(None, description="Stage within the pipeline; default: its first stage.")
    expected_close_date: date | None = Field(None, description="Expected close date.")
    probability: Percent | None = Field(None, description="Win probability override in percent.")


class DealUpdate(Input):
    title: str | None = Field(None, min_length=1, max_length=300, description="New title.")
    value: Money | None = Field(None, description="New value.")
    currency: Currency | None = Field(None, description="New currency.")
    person_id: UUID | None = Field(None, description="New contact person (null unlinks).")
    organization_id: UUID | None = Field(None, description="New organization (null unlinks).")
    expected_close_date: date | None = Field(None, description="New expected close date.")
    probability: Percent | None = Field(None, description="New probability override (null: use the stage's).")
    owner_id: UUID | None = Field(None, description="New owner.")
    visibility: Visibility | None = Field(None, description="New visibility.")


class DealFilter(RecordFilter):
    pipeline_id: UUID | None = Field(None, description="Only deals in this pipeline.")
    stage_id: UUID | None = Field(None, description="Only deals in this stage.")
    status: DealStatus | None = Field(None, description="Only deals with this status.")
    person_id: UUID | None = Field(None, description="Only deals with this contact person.")
    organization_id: UUID | None = Field(None, description="Only deals with this organization.")
    closed_after: date | None = Field(None, description="Won or lost on or after this day (UTC).")
    closed_before: date | None = Field(None, description="Won or lost on or before this day (UTC).")
    value_min: Money | None = Field(None, description="Value at least this.")
    value_max: Money | None = Field(None, description="Value at most this.")

    @model_validator(mode="after")
    def _ranges(self) -> DealFilter:
        """Invalid (not a pydantic error) names the field on every surface."""
        if self.closed_after and self.closed_before and self.closed_after > self.closed_before:
            raise Invalid(f"closed_after ({self.closed_after}) is after closed_before ({self.closed_before})",
                          field="closed_after")
        if self.value_min is not None and self.value_max is not None and self.value_min > self.value_max:
            raise Invalid(f"value_min ({self.value_min}) is more than value_max ({self.value_max})",
                          field="value_min")
        if self.status is DealStatus.OPEN and (self.closed_after or self.closed_before):
            raise Invalid("open deals have no close date: with closed_after or closed_before, ask for status won,"
                          " lost or either (no status)", field="status")
        return self


class DealSort(StrEnum):
    """The orders a deal list comes in; each breaks ties by id, and deals without an expected close date come
    last either way."""

    CREATED_DESC = "created_desc"
    CREATED_ASC = "created_asc"
    UPDATED_DESC = "updated_desc"
    UPDATED_ASC = "updated_asc"
    VALUE_DESC = "value_desc"
    VALUE_ASC = "value_asc"
    EXPECTED_CLOSE_ASC = "expected_close_asc"
    EXPECTED_CLOSE_DESC = "expected_close_desc"

    @property
    def order(self) -> Order:
        return _ORDERS[self]


# value_cents and close_day_asc/_desc are generated columns for these orders (their migration says why); a deal
# without an expected close date has the largest day number in each direction.
_ORDERS = {
    DealSort.CREATED_DESC: NEWEST_FIRST,
    DealSort.CREATED_ASC: Order("created_asc", "created_at", datetime, descending=False),
    DealSort.UPDATED_DESC: Order("updated_desc", "updated_at", datetime, descending=True),
    DealSort.UPDATED_ASC: Order("updated_asc", "updated_at", datetime, descending=False),
    DealSort.VALUE_DESC: Order("value_desc", "value_cents", int, descending=True),
    DealSort.VALUE_ASC: Order("value_asc", "value_cents", int, descending=False),
    DealSort.EXPECTED_CLOSE_ASC: Order("expected_close_asc", "close_day_asc", int, descending=False),
    DealSort.EXPECTED_CLOSE_DESC: Order("expected_close_desc", "close_day_desc", int, descending=True),
}


class DealBrief(BaseModel):
    """A deal as a list shows it: what tells deals apart, with the names of its relations (null when the caller
    may not see the related record)."""

    id: UUID = Field(description="Deal id.")
    title: str = Field(description="Deal title.")
    value: Decimal = Field(description="Deal value in `currency`.")
    currency: str = Field(description="ISO 4217 currency code.")
    status: DealStatus = Field(description="open, won or lost.")
    stage: str | None = Field(description="Stage name.")
    pipeline: str | None = Field(description="Pipeline name.")
    person: str | None = Field(description="Contact person's name.")
    person_id: UUID | None = Field(description="Contact person's id (to log an activity with them).")
    organization: str | None = Field(description="Organization name.")
    owner: str | None = Field(description="Owner's name.")
    expected_close_date: date | None = Field(description="Expected close date.")
    closed_at: datetime | None = Field(description="When it was won or lost; null while open.")
    updated_at: datetime = Field(description="When it last changed.")


class StageChange(BaseModel):
    id: int = Field(description="History entry id (increasing).")
    deal_id: UUID = Field(description="The deal.")
    from_stage_id: UUID | None = Field(description="Stage before (null when the deal was created).")
    to_stage_id: UUID | None = Field(description="Stage after.")
    changed_by: UUID | None = Field(description="Who moved it.")
    changed_at: datetime = Field(description="When.")

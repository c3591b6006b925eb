from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, Field


class OpenAmount(BaseModel):
    currency: str = Field(description="ISO 4217 currency code; amounts of different currencies are never added.")
    value: Decimal = Field(description="Sum of the deals' values in this currency (2 decimals).")
    weighted_value: Decimal = Field(
        description="Sum of value × (the deal's probability override, else its stage's win probability) / 100,"
        " in this currency (2 decimals). Applied to summed values, so it may differ by a cent from adding up"
        " each deal's rounded weighted_value."
    )


class ClosedAmount(BaseModel):
    currency: str = Field(description="ISO 4217 currency code; amounts of different currencies are never added.")
    value: Decimal = Field(description="Sum of the deals' values in this currency (2 decimals).")


class OpenDeals(BaseModel):
    count: int = Field(description="Number of open deals.")
    amounts: list[OpenAmount] = Field(description="Value and weighted value per currency, sorted by currency.")


class StageSummary(BaseModel):
    stage_id: UUID = Field(description="Stage id.")
    name: str = Field(description="Stage name.")
    position: int = Field(description="0-based order within the pipeline.")
    win_probability: int = Field(description="The stage's win probability in percent.")
    open: OpenDeals = Field(description="The open deals in this stage.")


class ClosedDeals(BaseModel):
    count: int = Field(description="Number of deals.")
    amounts: list[ClosedAmount] = Field(description="Value per currency, sorted by currency.")


class Period(BaseModel):
    since: date = Field(description="First day of the period (UTC), inclusive.")
    until: date = Field(description="Last day of the period (UTC), inclusive.")


class StaleDeal(BaseModel):
    deal_id: UUID = Field(description="Deal id.")
    title: str = Field(description="Deal title.")
    stage_id: UUID | None = Field(description="Current stage; null if its stage was deleted.")
    owner_id: UUID = Field(description="Owner (a user id).")
    last_touched_at: datetime = Field(
        description="Latest change to the deal itself or to any of its activities or notes."
    )
    days_idle: int = Field(description="Whole days since last_touched_at.")


class StaleDeals(BaseModel):
    stale_days: int = Field(description="A deal is stale after this many whole days without being touched.")
    total: int = Field(description="How many open deals of the pipeline are stale.")
    deals: list[StaleDeal] = Field(description="The stalest of them, longest idle first, up to the requested limit.")


class PipelineSummary(BaseModel):
    pipeline_id: UUID = Field(description="Pipeline id.")
    pipeline_name: str = Field(description="Pipeline name.")
    stages: list[StageSummary] = Field(description="Every stage of the pipeline in order, with its open deals.")
    unstaged: OpenDeals = Field(description="Open deals of the pipeline without a stage (their stage was deleted).")
    open: OpenDeals = Field(
        description="All open deals of the pipeline: the stages' deals plus the unstaged ones. Like every figure"
        " here, it counts only the deals the caller may see."
    )
    period: Period = Field(description="The period that won and lost count.")
    won: ClosedDeals = Field(description="Deals of the pipeline won in the period (by won_at's UTC date).")
    lost: ClosedDeals = Field(description="Deals of the pipeline lost in the period (by lost_at's UTC date).")
    stale: StaleDeals = Field(
        description="Open deals untouched for stale_days: neither the deal (any field, stage moves included) nor"
        " any of its activities or notes changed since."
    )

"""Reports over the CRM, computed in SQL as the caller: RLS decides which records count."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from services.deals import service as deals
from services.kernel.errors import Invalid
from services.kernel.permissions import Perm, requires
from services.kernel.uow import Row, UnitOfWork
from services.pipelines import service as pipelines
from services.pipelines.schemas import Pipeline
from services.reports.schemas import (
    ClosedAmount,
    ClosedDeals,
    OpenAmount,
    OpenDeals,
    Period,
    PipelineSummary,
    StageSummary,
    StaleDeal,
    StaleDeals,
)

DEFAULT_PERIOD_DAYS = 30
MAX_STALE_DAYS = 365
MAX_STALE_LIMIT = 50
_CENT = Decimal("0.01")
_ZERO = Decimal("0.00")

# Open deals grouped by everything the weighted value depends on, so the deals service's rule applies to sums.
_OPEN_GROUPS = """
    select d.pipeline_id, d.stage_id, d.currency, d.probability, s.win_probability as stage_probability,
           count(*) as n, sum(d.value) as value
    from public.deals d
    left join public.stages s on s.id = d.stage_id
    where d.pipeline_id = any(%s) and d.status = 'open'
    group by d.pipeline_id, d.stage_id, d.currency, d.probability, s.win_probability
"""

# The period's bounds are computed in SQL from its days: the day after 9999-12-31 exists there, not in Python.
_CLOSED = """
    with period as (
        select (%(since)s::date)::timestamp at time zone 'UTC' as start,
               (%(until)s::date + 1)::timestamp at time zone 'UTC' as stop
    )
    select d.pipeline_id, d.status, d.currency, count(*) as n, sum(d.value) as value
    from public.deals d, period p
    where d.pipeline_id = any(%(pipeline_ids)s)
      and ((d.status = 'won' and d.won_at >= p.start and d.won_at < p.stop)
           or (d.status = 'lost' and d.lost_at >= p.start and d.lost_at < p.stop))
    group by d.pipeline_id, d.status, d.currency
"""

# The stalest `limit` open deals of each pipeline, with how many are stale in that pipeline.
_STALE = """
    with touched as (
        select d.id, d.pipeline_id, d.title, d.stage_id, d.owner_id,
               greatest(d.updated_at,
                        (select max(a.updated_at) from public.activities a where a.deal_id = d.id),
                        (select max(n.updated_at) from public.notes n where n.deal_id = d.id)) as last_touched_at
        from public.deals d
        where d.pipeline_id = any(%s) and d.status = 'open'
    ), stale as (
        select id, pipeline_id, title, stage_id, owner_id, last_touched_at,
               floor(extract(epoch from now() - last_touched_at) / 86400)::integer as days_idle,
               count(*) over (partition by pipeline_id) as total,
               row_number() over (partition by pipeline_id order by last_touched_at, id) as rank
        from touched
        where last_touched_at <= now() - make_interval(days => %s)
    )
    select * from stale where rank <= %s order by pipeline_id, rank
"""


@dataclass
class _Tally:
    count: int = 0
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: _ZERO))
    weighted: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: _ZERO))

    def add(self, count: int, currency: str, value: Decimal, weighted: Decimal) -> None:
        self.count += count
        self.value[currency] += value
        self.weighted[currency] += weighted

    def open_deals(self) -> OpenDeals:
        return OpenDeals(
            count=self.count,
            amounts=[
                OpenAmount(currency=c, value=_money(self.value[c]), weighted_value=_money(self.weighted[c]))
                for c in sorted(self.value)
            ],
        )

    def closed_deals(self) -> ClosedDeals:
        return ClosedDeals(
            count=self.count,
            amounts=[ClosedAmount(currency=c, value=_money(self.value[c])) for c in sorted(self.value)],
        )


def _money(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT)


def _period(since: date | None, until: date | None) -> Period:
    """The inclusive period; `until` defaults to today (UTC), `since` to 29 days before `until` (or the first day
    there is)."""
    until = until if until is not None else datetime.now(UTC).date()
    if since is None:
        days_before = min(DEFAULT_PERIOD_DAYS - 1, (until - date.min).days)
        since = until - timedelta(days=days_before)
    if since > until:
        raise Invalid(f"since ({since}) is after until ({until})", field="since")
    return Period(since=since, until=until)


def _checked(since: date | None, until: date | None, stale_days: int, stale_limit: int) -> Period:
    """The summary's period, once its arguments are known to be in range."""
    period = _period(since, until)
    _check_range("stale_days", stale_days, MAX_STALE_DAYS)
    _check_range("stale_limit", stale_limit, MAX_STALE_LIMIT)
    return period


def _check_range(name: str, value: int, high: int) -> None:
    if not 1 <= value <= high:
        raise Invalid(f"{name} must be between 1 and {high}", field=name)


@requires(Perm.DEALS_READ)
async def pipeline_summary(
    uow: UnitOfWork,
    pipeline_id: UUID | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
    stale_days: int = 30,
    stale_limit: int = 10,
) -> PipelineSummary:
    """A pipeline at a glance: open deals per stage with value and weighted value per currency, deals won and
    lost in the period (default: the last 30 days), and the open deals untouched for `stale_days`.
    Counts only the deals the caller may see. Default pipeline: the first in display order."""
    period = _checked(since, until, stale_days, stale_limit)
    pipeline: Pipeline = (
        await pipelines.default_pipeline(uow) if pipeline_id is None else await pipelines.get(uow, pipeline_id)
    )
    (summary,) = await _summaries(uow, [pipeline], period, stale_days, stale_limit)
    return summary


@requires(Perm.DEALS_READ)
async def pipeline_summaries(
    uow: UnitOfWork,
    pipeline_id: UUID | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
    stale_days: int = 30,
    stale_limit: int = 10,
) -> list[PipelineSummary]:
    """`pipeline_summary` of the pipeline `pipeline_id`, else of every pipeline in display order, all computed
    together (three queries however many pipelines there are)."""
    period = _checked(since, until, stale_days, stale_limit)
    of = await pipelines.list(uow) if pipeline_id is None else [await pipelines.get(uow, pipeline_id)]
    return await _summaries(uow, of, period, stale_days, stale_limit)


async def _summaries(
    uow: UnitOfWork, of: list[Pipeline], period: Period, stale_days: int, stale_limit: int
) -> list[PipelineSummary]:
    ids = [p.id for p in of]
    per_stage: dict[UUID, _Tally] = defaultdict(_Tally)
    unstaged: dict[UUID, _Tally] = defaultdict(_Tally)
    open_total: dict[UUID, _Tally] = defaultdict(_Tally)
    for row in await uow.all(_OPEN_GROUPS, [ids]):
        weighted = deals.weighted_value(row["value"], row["probability"], row["stage_probability"])
        tally = unstaged[row["pipeline_id"]] if row["stage_id"] is None else per_stage[row["stage_id"]]
        for target in (tally, open_total[row["pipeline_id"]]):
            target.add(row["n"], row["currency"], row["value"], weighted)

    closed: dict[tuple[UUID, str], _Tally] = defaultdict(_Tally)
    for row in await uow.all(_CLOSED, {"pipeline_ids": ids, "since": period.since, "until": period.until}):
        closed[row["pipeline_id"], row["status"]].add(row["n"], row["currency"], row["value"], _ZERO)

    stale_rows: dict[UUID, list[Row]] = defaultdict(list)
    for row in await uow.all(_STALE, [ids, stale_days, stale_limit]):
        stale_rows[row["pipeline_id"]].append(row)
    return [
        PipelineSummary(
            pipeline_id=pipeline.id,
            pipeline_name=pipeline.name,
            stages=[
                StageSummary(
                    stage_id=stage.id,
                    name=stage.name,
                    position=stage.position,
                    win_probability=stage.win_probability,
                    open=per_stage[stage.id].open_deals(),
                )
                for stage in pipeline.stages
            ],
            unstaged=unstaged[pipeline.id].open_deals(),
            open=open_total[pipeline.id].open_deals(),
            period=period,
            won=closed[pipeline.id, "won"].closed_deals(),
            lost=closed[pipeline.id, "lost"].closed_deals(),
            stale=_stale(stale_days, stale_rows[pipeline.id]),
        )
        for pipeline in of
    ]


def _stale(stale_days: int, rows: list[Row]) -> StaleDeals:
    return StaleDeals(
        stale_days=stale_days,
        total=rows[0]["total"] if rows else 0,
        deals=[
            StaleDeal(
                deal_id=r["id"],
                title=r["title"],
                stage_id=r["stage_id"],
                owner_id=r["owner_id"],
                last_touched_at=r["last_touched_at"],
                days_idle=r["days_idle"],
            )
            for r in rows
        ],
    )

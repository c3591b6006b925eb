"""The pipeline summary: open deals per stage with per-currency value and weighted value, won and lost in a
period, stale deals, and who may read it (RLS decides which deals count)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from conftest import counts, forget_bookkeeping

from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.deals import service as deals
from services.deals.schemas import Deal, DealCreate
from services.kernel.errors import Forbidden, Invalid, NotFound
from services.kernel.permissions import Scope
from services.kernel.records import Visibility
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput
from services.reports import service as reports
from services.reports.schemas import PipelineSummary

QUALIFIED, CONTACT_MADE, PROPOSAL, NEGOTIATION = range(4)  # indexes into company.sales_stage_ids
WRITTEN = ("deals", "deal_stage_history", "activities", "notes", "audit_log", "outbox")


async def new_deal(actors, company, who: str = "bob", stage: int = QUALIFIED, **fields) -> Deal:
    async with actors.uow(who) as uow:
        return await deals.create(
            uow, DealCreate(**{"title": "Deal", "stage_id": company.sales_stage_ids[stage], **fields})
        )


async def won(actors, deal: Deal) -> None:
    async with actors.uow("bob") as uow:
        await deals.mark_won(uow, deal.id)


async def lost(actors, deal: Deal) -> None:
    async with actors.uow("bob") as uow:
        await deals.mark_lost(uow, deal.id, "price")


def set_columns(admin, table: str, row_id: UUID, assignments: str, *params) -> None:
    """Rewrite a row's timestamps as superuser, with triggers off (they would reset updated_at)."""
    with admin.transaction():
        admin.execute("set local session_replication_role = replica")
        admin.execute(f"update public.{table} set {assignments} where id = %s", [*params, row_id])


def age(admin, table: str, row_id: UUID, days: int) -> None:
    """Make a row look last changed `days` days (and an hour) ago."""
    set_columns(admin, table, row_id, "updated_at = now() - make_interval(days => %s, hours => 1)", days)


def amounts(*rows: tuple[str, str, str]) -> list[dict]:
    return [{"currency": c, "value": Decimal(v), "weighted_value": Decimal(w)} for c, v, w in rows]


def closed(*rows: tuple[str, str]) -> list[dict]:
    return [{"currency": c, "value": Decimal(v)} for c, v in rows]


def stage_rows(summary: PipelineSummary) -> list[tuple]:
    return [
        (s.name, s.position, s.win_probability, s.open.count, s.open.model_dump()["amounts"]) for s in summary.stages
    ]


async def summary_as(actors, who: str = "alice", pipeline_id: UUID | None = None, **options) -> PipelineSummary:
    async with actors.uow(who) as uow:
        return await reports.pipeline_summary(uow, pipeline_id, **options)


async def test_summary_counts_open_deals_per_stage_and_currency_and_won_and_lost_in_the_period(actors, company, admin):
    await new_deal(actors, company, value=Decimal("1000"), currency="USD")
    await new_deal(actors, company, value=Decimal("500"), currency="EUR")
    await new_deal(actors, company, stage=PROPOSAL, value=Decimal("2000"), currency="USD", probability=20)
    await new_deal(actors, company, stage=PROPOSAL, value=Decimal("300"), currency="EUR")
    await new_deal(actors, company, stage=NEGOTIATION, value=Decimal("1000.40"), currency="USD")
    won_now = await new_deal(actors, company, value=Decimal("700"), currency="USD")
    won_before = await new_deal(actors, company, value=Decimal("999"), currency="USD")
    won_recently = await new_deal(actors, company, stage=PROPOSAL, value=Decimal("200"), currency="EUR")
    lost_now = await new_deal(actors, company, value=Decimal("50"), currency="USD")
    lost_before = await new_deal(actors, company, value=Decimal("80"), currency="USD")
    for deal in (won_now, won_before, won_recently):
        await won(actors, deal)
    for deal in (lost_now, lost_before):
        await lost(actors, deal)
    set_columns(admin, "deals", won_before.id, "won_at = now() - interval '45 days'")
    set_columns(admin, "deals", won_recently.id, "won_at = now() - interval '10 days'")
    set_columns(admin, "deals", lost_before.id, "lost_at = now() - interval '40 days'")

    summary = await summary_as(actors, "alice")

    assert (summary.pipeline_id, summary.pipeline_name) == (company.sales_pipeline_id, "Sales")
    assert [s.stage_id for s in summary.stages] == company.sales_stage_ids
    assert stage_rows(summary) == [
        ("Qualified", 0, 10, 2, amounts(("EUR", "500.00", "50.00"), ("USD", "1000.00", "100.00"))),
        ("Contact Made", 1, 25, 0, []),
        ("Proposal", 2, 50, 2, amounts(("EUR", "300.00", "150.00"), ("USD", "2000.00", "400.00"))),
        ("Negotiation", 3, 75, 1, amounts(("USD", "1000.40", "750.30"))),
    ]
    assert summary.unstaged.model_dump() == {"count": 0, "amounts": []}
    assert summary.open.model_dump() == {
        "count": 5,
        "amounts": amounts(("EUR", "800.00", "200.00"), ("USD", "4000.40", "1250.30")),
    }
    today = datetime.now(UTC).date()
    assert (summary.period.since, summary.period.until) == (today - timedelta(days=29), today)
    assert summary.won.model_dump() == {"count": 2, "amounts": closed(("EUR", "200.00"), ("USD", "700.00"))}
    assert summary.lost.model_dump() == {"count": 1, "amounts": closed(("USD", "50.00"))}


async def test_weighted_value_follows_the_deals_rule_override_else_stage(actors, company):
    deal = await new_deal(actors, company, stage=CONTACT_MADE, value=Decimal("333.33"), probability=0)
    other = await new_deal(actors, company, stage=CONTACT_MADE, value=Decimal("100"))

    summary = await summary_as(actors)

    async with actors.uow("bob") as uow:
        shown = [(await deals.get(uow, d.id)).weighted_value for d in (deal, other)]
    assert shown == [Decimal("0.00"), Decimal("25.00")]
    assert stage_rows(summary)[CONTACT_MADE] == (
        "Contact Made",
        1,
        25,
        2,
        amounts(("USD", "433.33", "25.00")),
    )


async def test_deals_whose_stage_was_deleted_count_as_unstaged_and_in_the_totals(actors, company):
    await new_deal(actors, company, stage=CONTACT_MADE, value=Decimal("400"))
    await new_deal(actors, company, stage=CONTACT_MADE, value=Decimal("100"), probability=50)
    await new_deal(actors, company, stage=QUALIFIED, value=Decimal("10"))
    async with actors.uow("alice") as uow:
        await pipelines.delete_stage(uow, company.sales_stage_ids[CONTACT_MADE])

    summary = await summary_as(actors)

    assert [s.name for s in summary.stages] == ["Qualified", "Proposal", "Negotiation"]
    assert summary.unstaged.model_dump() == {"count": 2, "amounts": amounts(("USD", "500.00", "50.00"))}
    assert summary.open.model_dump() == {"count": 3, "amounts": amounts(("USD", "510.00", "51.00"))}


async def test_an_explicit_period_includes_both_end_days_by_utc_date(actors, company, admin):
    inside = {"2025-03-01 00:00:00+00": "1", "2025-03-31 23:59:59.999+00": "2", "2025-03-15 12:00:00-05": "4"}
    outside = {"2025-02-28 23:59:59+00": "8", "2025-04-01 00:00:00+00": "16", "2025-03-31 20:00:00-05": "32"}
    for when, value in {**inside, **outside}.items():
        deal = await new_deal(actors, company, value=Decimal(value))
        await won(actors, deal)
        set_columns(admin, "deals", deal.id, "won_at = %s", when)

    summary = await summary_as(actors, since=date(2025, 3, 1), until=date(2025, 3, 31))

    assert (summary.period.since, summary.period.until) == (date(2025, 3, 1), date(2025, 3, 31))
    assert summary.won.model_dump() == {"count": 3, "amounts": closed(("USD", "7.00"))}
    assert summary.lost.model_dump() == {"count": 0, "amounts": []}


async def test_a_period_given_only_by_its_end_spans_the_30_days_up_to_it(actors):
    summary = await summary_as(actors, until=date(2025, 3, 31))

    assert (summary.period.since, summary.period.until) == (date(2025, 3, 2), date(2025, 3, 31))


async def test_stale_deals_are_open_deals_untouched_by_any_change_note_or_activity_oldest_first(actors, company, admin):
    oldest = await new_deal(actors, company, title="Oldest")
    noted = await new_deal(actors, company, title="Noted")
    called = await new_deal(actors, company, stage=PROPOSAL, title="Called long ago")
    fresh = await new_deal(actors, company, title="Fresh")
    closed_deal = await new_deal(actors, company, title="Won long ago")
    await won(actors, closed_deal)
    async with actors.uow("bob") as uow:
        note = await notes.create(uow, NoteCreate(body="Still talking", deal_id=noted.id))
        call = await activities.create(uow, ActivityCreate(subject="Call", deal_id=called.id))
    age(admin, "deals", oldest.id, 40)
    age(admin, "deals", noted.id, 35)
    age(admin, "notes", note.id, 5)
    age(admin, "deals", called.id, 31)
    age(admin, "activities", call.id, 33)
    age(admin, "deals", fresh.id, 29)
    age(admin, "deals", closed_deal.id, 100)

    summary = await summary_as(actors)

    assert summary.stale.stale_days == 30
    assert summary.stale.total == 2
    assert [(d.deal_id, d.title, d.stage_id, d.owner_id, d.days_idle) for d in summary.stale.deals] == [
        (oldest.id, "Oldest", company.sales_stage_ids[QUALIFIED], actors.id("bob"), 40),
        (called.id, "Called long ago", company.sales_stage_ids[PROPOSAL], actors.id("bob"), 31),
    ]
    stored = admin.execute("select updated_at from public.deals where id = %s", [oldest.id]).fetchone()[0]
    assert summary.stale.deals[0].last_touched_at == stored

    limited = await summary_as(actors, stale_days=5, stale_limit=1)
    assert (limited.stale.total, [d.title for d in limited.stale.deals]) == (4, ["Oldest"])
    assert (await summary_as(actors, stale_days=41)).stale.model_dump() == {
        "stale_days": 41,
        "total": 0,
        "deals": [],
    }


async def test_a_member_counts_only_the_deals_they_may_see(actors, company):
    await new_deal(actors, company, value=Decimal("1000"), visibility=Visibility.OWNER)
    await new_deal(actors, company, value=Decimal("200"), visibility=Visibility.COMPANY)

    as_carol = await summary_as(actors, "carol")
    as_alice = await summary_as(actors, "alice")

    assert stage_rows(as_carol)[QUALIFIED] == ("Qualified", 0, 10, 1, amounts(("USD", "200.00", "20.00")))
    assert stage_rows(as_alice)[QUALIFIED] == ("Qualified", 0, 10, 2, amounts(("USD", "1200.00", "120.00")))
    assert (as_carol.open.count, as_alice.open.count) == (1, 2)


async def test_a_viewer_can_read_the_summary(actors, company):
    await new_deal(actors, company, value=Decimal("200"))

    summary = await summary_as(actors, "vic")

    assert summary.open.model_dump() == {"count": 1, "amounts": amounts(("USD", "200.00", "20.00"))}


async def test_a_named_pipeline_counts_only_its_own_deals(actors, company):
    async with actors.uow("alice") as uow:
        hiring = await pipelines.create(
            uow, PipelineCreate(name="Hiring", stages=[StageInput(name="Applied", win_probability=40)])
        )
    async with actors.uow("bob") as uow:
        await deals.create(uow, DealCreate(title="Engineer", value=Decimal("90"), stage_id=hiring.stages[0].id))
    await new_deal(actors, company, value=Decimal("5"))

    summary = await summary_as(actors, pipeline_id=hiring.id)

    assert (summary.pipeline_id, summary.pipeline_name) == (hiring.id, "Hiring")
    assert stage_rows(summary) == [("Applied", 0, 40, 1, amounts(("USD", "90.00", "36.00")))]
    assert (await summary_as(actors)).open.model_dump() == {
        "count": 1,
        "amounts": amounts(("USD", "5.00", "0.50")),
    }


async def test_a_caller_without_deals_read_is_forbidden(actors, admin):
    forget_bookkeeping(admin)
    before = counts(admin, *WRITTEN)

    with pytest.raises(Forbidden) as info:
        async with actors.uow("bob", scopes=frozenset({Scope.AI})) as uow:
            await reports.pipeline_summary(uow)

    assert info.value.permission == "deals:read"
    assert counts(admin, *WRITTEN) == before


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"since": date(2025, 3, 2), "until": date(2025, 3, 1)}, "since"),
        ({"since": date(2999, 1, 1)}, "since"),
        ({"stale_days": 0}, "stale_days"),
        ({"stale_days": 366}, "stale_days"),
        ({"stale_limit": 0}, "stale_limit"),
        ({"stale_limit": 51}, "stale_limit"),
    ],
    ids=["since-after-until", "since-after-today", "stale-days-0", "stale-days-366", "limit-0", "limit-51"],
)
async def test_invalid_arguments_name_the_field(actors, options, field):
    with pytest.raises(Invalid) as info:
        await summary_as(actors, "bob", **options)

    assert info.value.field == field


async def test_the_bounds_themselves_are_accepted(actors):
    summary = await summary_as(
        actors, "bob", stale_days=365, stale_limit=50, since=date(2025, 3, 1), until=date(2025, 3, 1)
    )

    assert (summary.stale.stale_days, summary.period.since, summary.period.until) == (
        365,
        date(2025, 3, 1),
        date(2025, 3, 1),
    )


async def test_an_unknown_pipeline_is_not_found(actors):
    missing = uuid4()

    with pytest.raises(NotFound) as info:
        await summary_as(actors, "bob", pipeline_id=missing)

    assert info.value.message == f"pipeline {missing} not found"

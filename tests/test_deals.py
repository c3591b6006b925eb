"""Deals through the service layer: placement, stage moves, won/lost, weighted value, versions, idempotency,
paging, filters, audit rows, outbox events, and who may change or assign a deal."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from conftest import Actors, Company, counts, events, forget_bookkeeping
from psycopg import sql
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from services.contacts import service as contacts
from services.contacts.schemas import PersonCreate
from services.deals import service as deals
from services.deals.schemas import Deal, DealCreate, DealFilter, DealStatus, DealUpdate
from services.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from services.kernel.pagination import PageRequest
from services.kernel.permissions import Scope
from services.kernel.principal import Channel
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.pipelines import service as pipelines
from services.pipelines.schemas import Pipeline, PipelineCreate, PipelineUpdate, StageInput, StageUpdate

QUALIFIED, CONTACT_MADE, PROPOSAL, NEGOTIATION = range(4)  # indexes into company.sales_stage_ids
NOTHING_WRITTEN = {"deals": 0, "deal_stage_history": 0, "audit_log": 0, "outbox": 0}


# Helpers: read what was written, as superuser.


def written(admin) -> dict[str, int]:
    return counts(admin, "deals", "deal_stage_history", "audit_log", "outbox")


def audit_rows(admin) -> list[tuple]:
    return admin.execute(
        "select actor_id, channel, operation, entity_type, entity_id from public.audit_log order by id"
    ).fetchall()






def stored(admin, deal_id: UUID, *columns: str) -> tuple:
    """The deal's columns as stored (read as superuser), e.g. stored(admin, id, "status", "version")."""
    query = sql.SQL("select {} from public.deals where id = %s").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    return admin.execute(query, [deal_id]).fetchone()


OUTCOME = ("status", "won_at", "lost_at", "lost_reason", "version")
ALL_COLUMNS = ("title", "value", "owner_id", "stage_id", "pipeline_id", *OUTCOME, "updated_at")


async def new_deal(actors, who: str = "bob", **fields) -> Deal:
    async with actors.uow(who) as uow:
        return await deals.create(uow, DealCreate(**{"title": "Deal", **fields}))


async def new_pipeline(actors, name: str, *stages: tuple[str, int]):
    async with actors.uow("alice") as uow:
        return await pipelines.create(
            uow, PipelineCreate(name=name, stages=[StageInput(name=n, win_probability=p) for n, p in stages])
        )


# Creating deals


async def test_create_defaults_to_the_first_pipelines_first_stage_owned_by_the_caller(actors, company, admin):
    deal = await new_deal(actors, "bob", title="Acme renewal", value=Decimal("1000"))

    assert (deal.pipeline_id, deal.stage_id) == (company.sales_pipeline_id, company.sales_stage_ids[QUALIFIED])
    assert (deal.owner_id, deal.status, deal.version, deal.visibility) == (actors.id("bob"), "open", 1, "company")
    assert (str(deal.value), deal.currency, str(deal.weighted_value)) == ("1000.00", "USD", "100.00")
    assert admin.execute(
        "select from_stage_id, to_stage_id, changed_by from public.deal_stage_history where deal_id = %s",
        [deal.id],
    ).fetchall() == [(None, company.sales_stage_ids[QUALIFIED], actors.id("bob"))]
    assert audit_rows(admin) == [(actors.id("bob"), "graphql", "deal.create", "deal", deal.id)]
    assert admin.execute("select name, data, actor_id, channel from public.outbox").fetchall() == [
        (
            "crm/deal.created",
            {
                "deal_id": str(deal.id),
                "owner_id": str(actors.id("bob")),
                "pipeline_id": str(company.sales_pipeline_id),
                "stage_id": str(company.sales_stage_ids[QUALIFIED]),
                "value": "1000.00",
                "currency": "USD",
            },
            actors.id("bob"),
            "graphql",
        )
    ]


async def test_the_default_pipeline_is_the_first_in_display_order(actors, company):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5), ("Offer", 80))
    assert (await new_deal(actors)).pipeline_id == company.sales_pipeline_id

    async with actors.uow("alice") as uow:
        await pipelines.update(uow, company.sales_pipeline_id, PipelineUpdate(position=5))

    deal = await new_deal(actors)
    assert (deal.pipeline_id, deal.stage_id) == (hiring.id, hiring.stages[0].id)


async def test_an_explicit_stage_implies_its_pipeline(actors):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5), ("Offer", 80))

    deal = await new_deal(actors, stage_id=hiring.stages[1].id)

    assert (deal.pipeline_id, deal.stage_id) == (hiring.id, hiring.stages[1].id)


async def test_an_explicit_pipeline_without_a_stage_starts_at_its_first_stage(actors):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5), ("Offer", 80))

    deal = await new_deal(actors, pipeline_id=hiring.id)

    assert (deal.pipeline_id, deal.stage_id) == (hiring.id, hiring.stages[0].id)


async def test_create_with_a_stage_outside_the_named_pipeline_is_invalid_stage_id(actors, company, admin):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5))
    forget_bookkeeping(admin)

    with pytest.raises(Invalid) as info:
        await new_deal(actors, pipeline_id=hiring.id, stage_id=company.sales_stage_ids[PROPOSAL])

    assert info.value.field == "stage_id"
    assert written(admin) == NOTHING_WRITTEN


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (lambda: {"stage_id": uuid4()}, "stage_id"),
        (lambda: {"pipeline_id": uuid4()}, "pipeline_id"),
        (lambda: {"person_id": uuid4()}, "person_id"),
        (lambda: {"organization_id": uuid4()}, "organization_id"),
    ],
    ids=["unknown-stage", "unknown-pipeline", "unknown-person", "unknown-organization"],
)
async def test_create_with_an_unknown_reference_is_invalid_naming_the_field(actors, admin, fields, field):
    with pytest.raises(Invalid) as info:
        await new_deal(actors, **fields())

    assert info.value.field == field
    assert written(admin) == NOTHING_WRITTEN


async def test_a_person_the_caller_cannot_see_counts_as_unknown(actors, admin):
    async with actors.uow("carol") as uow:
        secret = await contacts.create_person(uow, PersonCreate(first_name="Secret", visibility="owner"))
    forget_bookkeeping(admin)

    with pytest.raises(Invalid) as info:
        await new_deal(actors, "bob", person_id=secret.id)

    assert info.value.field == "person_id"
    assert written(admin) == NOTHING_WRITTEN


@pytest.mark.parametrize(
    ("who", "scopes"), [("vic", None), ("bob", frozenset({Scope.READ}))], ids=["viewer", "read-only-token"]
)
async def test_callers_without_deals_write_cannot_create(actors, admin, who, scopes):
    with pytest.raises(Forbidden) as info:
        async with actors.uow(who, scopes=scopes) as uow:
            await deals.create(uow, DealCreate(title="Nope"))

    assert info.value.permission == "deals:write"
    assert written(admin) == NOTHING_WRITTEN


# Moving through stages


async def test_move_stage_records_history_and_emits_stage_changed(actors, company, admin):
    deal = await new_deal(actors, "bob", value=Decimal("1000"))
    forget_bookkeeping(admin)
    qualified, proposal = company.sales_stage_ids[QUALIFIED], company.sales_stage_ids[PROPOSAL]

    async with actors.uow("mia", channel=Channel.MCP) as uow:
        moved = await deals.move_stage(uow, deal.id, proposal)

    assert (moved.stage_id, moved.version, str(moved.weighted_value)) == (proposal, 2, "500.00")
    assert admin.execute(
        "select from_stage_id, to_stage_id, changed_by from public.deal_stage_history where deal_id = %s order by id",
        [deal.id],
    ).fetchall() == [(None, qualified, actors.id("bob")), (qualified, proposal, actors.id("mia"))]
    assert audit_rows(admin) == [(actors.id("mia"), "mcp", "deal.move_stage", "deal", deal.id)]
    assert admin.execute("select name, data, actor_id, channel from public.outbox").fetchall() == [
        (
            "crm/deal.stage_changed",
            {
                "deal_id": str(deal.id),
                "from_stage_id": str(qualified),
                "to_stage_id": str(proposal),
                "from_pipeline_id": str(company.sales_pipeline_id),
                "to_pipeline_id": str(company.sales_pipeline_id),
            },
            actors.id("mia"),
            "mcp",
        )
    ]


async def test_stage_history_lists_every_move_oldest_first(actors, company):
    deal = await new_deal(actors)
    stage = company.sales_stage_ids
    async with actors.uow("bob") as uow:
        await deals.move_stage(uow, deal.id, stage[NEGOTIATION])
        await deals.move_stage(uow, deal.id, stage[CONTACT_MADE])

    async with actors.uow("dan") as uow:
        history = await deals.stage_history(uow, deal.id)

    assert [(h.from_stage_id, h.to_stage_id) for h in history] == [
        (None, stage[QUALIFIED]),
        (stage[QUALIFIED], stage[NEGOTIATION]),
        (stage[NEGOTIATION], stage[CONTACT_MADE]),
    ]


async def test_moving_to_the_current_stage_writes_nothing(actors, company, admin):
    deal = await new_deal(actors)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        same = await deals.move_stage(uow, deal.id, company.sales_stage_ids[QUALIFIED])

    assert same.version == 1
    assert written(admin) == {"deals": 1, "deal_stage_history": 1, "audit_log": 0, "outbox": 0}


async def test_moving_to_another_pipelines_stage_needs_that_pipeline_id(actors, company, admin):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5), ("Offer", 80))
    deal = await new_deal(actors)
    forget_bookkeeping(admin)

    with pytest.raises(Invalid) as info:
        async with actors.uow("bob") as uow:
            await deals.move_stage(uow, deal.id, hiring.stages[1].id)

    assert info.value.field == "stage_id"
    assert stored(admin, deal.id, "pipeline_id", "stage_id") == (
        company.sales_pipeline_id,
        company.sales_stage_ids[QUALIFIED],
    )
    assert written(admin) == {"deals": 1, "deal_stage_history": 1, "audit_log": 0, "outbox": 0}


async def test_moving_with_the_other_pipeline_id_moves_pipeline_and_stage(actors, company, admin):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5), ("Offer", 80))
    deal = await new_deal(actors)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        moved = await deals.move_stage(uow, deal.id, hiring.stages[1].id, pipeline_id=hiring.id)

    assert (moved.pipeline_id, moved.stage_id) == (hiring.id, hiring.stages[1].id)
    assert stored(admin, deal.id, "pipeline_id", "stage_id") == (hiring.id, hiring.stages[1].id)
    assert events(admin) == [
        (
            "crm/deal.stage_changed",
            {
                "deal_id": str(deal.id),
                "from_stage_id": str(company.sales_stage_ids[QUALIFIED]),
                "to_stage_id": str(hiring.stages[1].id),
                "from_pipeline_id": str(company.sales_pipeline_id),
                "to_pipeline_id": str(hiring.id),
            },
        )
    ]


async def test_moving_to_a_stage_outside_the_given_pipeline_id_is_invalid(actors, company, admin):
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5))
    deal = await new_deal(actors)
    forget_bookkeeping(admin)

    with pytest.raises(Invalid) as info:
        async with actors.uow("bob") as uow:
            await deals.move_stage(uow, deal.id, company.sales_stage_ids[PROPOSAL], pipeline_id=hiring.id)

    assert info.value.field == "stage_id"
    assert written(admin) == {"deals": 1, "deal_stage_history": 1, "audit_log": 0, "outbox": 0}


# Won, lost, reopened


async def test_mark_won_sets_status_and_won_at_and_emits_won(actors, admin):
    deal = await new_deal(actors, value=Decimal("250.50"), currency="eur")
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        won = await deals.mark_won(uow, deal.id)

    assert (won.status, won.lost_at, won.lost_reason, won.version) == (DealStatus.WON, None, None, 2)
    assert won.won_at is not None
    assert stored(admin, deal.id, *OUTCOME) == ("won", won.won_at, None, None, 2)
    assert audit_rows(admin) == [(actors.id("bob"), "graphql", "deal.mark_won", "deal", deal.id)]
    assert events(admin) == [
        (
            "crm/deal.won",
            {"deal_id": str(deal.id), "owner_id": str(actors.id("bob")), "value": "250.50", "currency": "EUR"},
        )
    ]


async def test_winning_a_won_deal_returns_it_unchanged(actors, admin):
    deal = await new_deal(actors)
    async with actors.uow("bob") as uow:
        won = await deals.mark_won(uow, deal.id)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        again = await deals.mark_won(uow, deal.id)

    assert again == won
    assert stored(admin, deal.id, *OUTCOME) == ("won", won.won_at, None, None, 2)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


@pytest.mark.parametrize("reason", ["", "   "])
async def test_mark_lost_requires_a_reason(actors, admin, reason):
    deal = await new_deal(actors)
    forget_bookkeeping(admin)

    with pytest.raises(Invalid) as info:
        async with actors.uow("bob") as uow:
            await deals.mark_lost(uow, deal.id, reason)

    assert info.value.field == "reason"
    assert stored(admin, deal.id, *OUTCOME) == ("open", None, None, None, 1)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_mark_lost_sets_lost_at_and_reason_and_emits_lost(actors, admin):
    deal = await new_deal(actors)
    async with actors.uow("bob") as uow:
        await deals.mark_won(uow, deal.id)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        lost = await deals.mark_lost(uow, deal.id, "  Went with a competitor  ")

    assert (lost.status, lost.won_at, lost.lost_reason) == (DealStatus.LOST, None, "Went with a competitor")
    assert lost.lost_at is not None
    assert stored(admin, deal.id, *OUTCOME) == ("lost", None, lost.lost_at, "Went with a competitor", 3)
    assert events(admin) == [
        (
            "crm/deal.lost",
            {"deal_id": str(deal.id), "owner_id": str(actors.id("bob"))},
        )
    ]


@pytest.mark.parametrize("close", ["won", "lost"])
async def test_reopen_clears_the_outcome(actors, admin, close):
    deal = await new_deal(actors)
    async with actors.uow("bob") as uow:
        if close == "won":
            await deals.mark_won(uow, deal.id)
        else:
            await deals.mark_lost(uow, deal.id, "No budget")
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        reopened = await deals.reopen(uow, deal.id)

    assert (reopened.status, reopened.won_at, reopened.lost_at, reopened.lost_reason) == ("open", None, None, None)
    assert stored(admin, deal.id, *OUTCOME) == ("open", None, None, None, 3)
    assert events(admin) == [("crm/deal.reopened", {"deal_id": str(deal.id), "previous_status": close})]


async def test_reopening_an_open_deal_returns_it_unchanged(actors, admin):
    deal = await new_deal(actors)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        again = await deals.reopen(uow, deal.id)

    assert again == deal
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


# Weighted value


@pytest.mark.parametrize(
    ("value", "stage", "override", "expected"),
    [
        ("1000", PROPOSAL, None, "500.00"),
        ("1000", PROPOSAL, 90, "900.00"),
        ("1000", NEGOTIATION, 0, "0.00"),
        ("333.33", CONTACT_MADE, None, "83.33"),
        ("999.99", NEGOTIATION, None, "749.99"),
        ("0", PROPOSAL, 100, "0.00"),
    ],
)
async def test_weighted_value_uses_the_override_else_the_stage_probability(
    actors, company, value, stage, override, expected
):
    deal = await new_deal(actors, value=Decimal(value), stage_id=company.sales_stage_ids[stage], probability=override)

    async with actors.uow("bob") as uow:
        listed = (await deals.list(uow)).items

    assert deal.weighted_value == Decimal(expected)
    assert str(deal.weighted_value) == expected
    assert [str(d.weighted_value) for d in listed] == [expected]


async def test_weighted_value_of_a_deal_without_a_stage_is_zero(actors):
    empty = await new_pipeline(actors, "Empty")

    deal = await new_deal(actors, value=Decimal("1000"), pipeline_id=empty.id)

    assert (deal.stage_id, str(deal.weighted_value)) == (None, "0.00")


async def test_weighted_value_follows_the_stage_probability_and_the_override(actors, company):
    deal = await new_deal(actors, value=Decimal("1000"), stage_id=company.sales_stage_ids[PROPOSAL])

    async with actors.uow("alice") as uow:
        await pipelines.update_stage(uow, company.sales_stage_ids[PROPOSAL], StageUpdate(win_probability=40))
    async with actors.uow("bob") as uow:
        after_stage_change = await deals.get(uow, deal.id)
        with_override = await deals.update(uow, deal.id, DealUpdate(probability=90))
        override_cleared = await deals.update(uow, deal.id, DealUpdate(probability=None))

    assert str(after_stage_change.weighted_value) == "400.00"
    assert str(with_override.weighted_value) == "900.00"
    assert (override_cleared.probability, str(override_cleared.weighted_value)) == (None, "400.00")


@pytest.mark.parametrize("probability", [101, -1])
def test_probability_override_outside_0_to_100_is_rejected(probability):
    with pytest.raises(ValidationError):
        DealCreate(title="X", probability=probability)
    with pytest.raises(ValidationError):
        DealUpdate(probability=probability)


# Optimistic concurrency


async def test_update_with_the_current_version_increments_it_by_one(actors, admin):
    deal = await new_deal(actors, title="Old")

    async with actors.uow("bob") as uow:
        updated = await deals.update(uow, deal.id, DealUpdate(title="New"), expected_version=1)

    assert (updated.title, updated.version) == ("New", 2)
    assert stored(admin, deal.id, "title", "version") == ("New", 2)


async def _update_title(uow, deal_id, stage_ids):
    await deals.update(uow, deal_id, DealUpdate(title="Changed"), expected_version=1)


async def _move(uow, deal_id, stage_ids):
    await deals.move_stage(uow, deal_id, stage_ids[PROPOSAL], expected_version=1)


async def _win(uow, deal_id, stage_ids):
    await deals.mark_won(uow, deal_id, expected_version=1)


async def _lose(uow, deal_id, stage_ids):
    await deals.mark_lost(uow, deal_id, "Too late", expected_version=1)


@pytest.mark.parametrize("change", [_update_title, _move, _win, _lose], ids=lambda f: f.__name__.strip("_"))
async def test_a_change_with_a_stale_version_is_a_conflict_and_changes_nothing(actors, company, admin, change):
    deal = await new_deal(actors, title="Original")
    async with actors.uow("mia") as uow:  # bob's manager changes the deal first: version 1 -> 2
        await deals.update(uow, deal.id, DealUpdate(value=Decimal("10")))
    forget_bookkeeping(admin)
    row_before = stored(admin, deal.id, *ALL_COLUMNS)

    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await change(uow, deal.id, company.sales_stage_ids)

    assert stored(admin, deal.id, *ALL_COLUMNS) == row_before
    assert stored(admin, deal.id, "title", "version") == ("Original", 2)
    assert written(admin) == {"deals": 1, "deal_stage_history": 1, "audit_log": 0, "outbox": 0}


# Idempotency keys


async def test_create_twice_with_the_same_key_returns_the_first_deal_and_writes_once(actors, admin):
    async with actors.uow("bob") as uow:
        first = await deals.create(uow, DealCreate(title="Once"), idempotency_key="k-1")
    async with actors.uow("bob") as uow:
        second = await deals.create(uow, DealCreate(title="Once"), idempotency_key="k-1")

    assert second.id == first.id
    assert written(admin) == {"deals": 1, "deal_stage_history": 1, "audit_log": 1, "outbox": 1}


async def test_an_idempotency_key_belongs_to_its_user(actors, admin):
    async with actors.uow("bob") as uow:
        bobs = await deals.create(uow, DealCreate(title="Bob's"), idempotency_key="shared")
    async with actors.uow("dan") as uow:
        dans = await deals.create(uow, DealCreate(title="Dan's"), idempotency_key="shared")

    assert bobs.id != dans.id
    assert (bobs.owner_id, dans.owner_id) == (actors.id("bob"), actors.id("dan"))
    assert written(admin)["deals"] == 2


async def test_reusing_a_key_for_another_operation_is_a_conflict(actors, admin):
    async with actors.uow("bob") as uow:
        await deals.create(uow, DealCreate(title="Deal"), idempotency_key="k-2")
    forget_bookkeeping(admin)

    with pytest.raises(Conflict):
        async with actors.uow("bob") as uow:
            await leads.create(uow, LeadCreate(title="Lead"), idempotency_key="k-2")

    assert counts(admin, "deals", "leads", "audit_log", "outbox") == {
        "deals": 1,
        "leads": 0,
        "audit_log": 0,
        "outbox": 0,
    }


async def test_a_failed_create_does_not_use_up_its_key(actors, admin):
    with pytest.raises(Invalid):
        async with actors.uow("bob") as uow:
            await deals.create(uow, DealCreate(title="Bad", person_id=uuid4()), idempotency_key="k-3")

    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Good"), idempotency_key="k-3")

    assert admin.execute("select id, title from public.deals").fetchall() == [(deal.id, "Good")]


# Pagination


async def _create_deals(actors, who: str, n: int, prefix: str) -> list[UUID]:
    async with actors.uow(who) as uow:
        return [(await deals.create(uow, DealCreate(title=f"{prefix} {i:02}"))).id for i in range(n)]


async def test_sixty_deals_page_as_25_25_10_without_gaps_or_repeats(actors, admin):
    created = await _create_deals(actors, "bob", 60, "Deal")
    expected_order = [
        r[0] for r in admin.execute("select id from public.deals order by created_at desc, id desc").fetchall()
    ]

    pages, after = [], None
    async with actors.uow("bob") as uow:
        while True:
            page = await deals.list(uow, page=PageRequest(limit=25, after=after))
            pages.append(page)
            if not page.has_next:
                break
            after = page.next_cursor

    assert [len(p.items) for p in pages] == [25, 25, 10]
    assert [p.total for p in pages] == [60, 60, 60]
    assert [p.has_next for p in pages] == [True, True, False]
    assert pages[-1].next_cursor is None
    assert [d.id for p in pages for d in p.items] == expected_order
    assert sorted(expected_order) == sorted(created)


async def test_deals_added_between_pages_neither_repeat_nor_skip_earlier_rows(actors, admin):
    original = await _create_deals(actors, "bob", 60, "Old")

    seen: list[UUID] = []
    async with actors.uow("bob") as uow:
        first = await deals.list(uow, page=PageRequest(limit=25))
    await _create_deals(actors, "bob", 5, "New A")
    async with actors.uow("bob") as uow:
        second = await deals.list(uow, page=PageRequest(limit=25, after=first.next_cursor))
    await _create_deals(actors, "dan", 5, "New B")
    async with actors.uow("bob") as uow:
        third = await deals.list(uow, page=PageRequest(limit=25, after=second.next_cursor))
    for page in (first, second, third):
        seen.extend(d.id for d in page.items)

    assert [len(p.items) for p in (first, second, third)] == [25, 25, 10]
    assert [p.total for p in (first, second, third)] == [60, 65, 70]
    assert third.has_next is False
    assert len(seen) == len(set(seen)) == 60
    assert set(seen) == set(original)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "%%%",
        base64.urlsafe_b64encode(b"null").decode(),
        base64.urlsafe_b64encode(json.dumps(["yesterday", str(uuid4())]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "not-a-uuid"]).encode()).decode(),
    ],
)
async def test_a_malformed_cursor_is_invalid_after(actors, cursor):
    with pytest.raises(Invalid) as info:
        async with actors.uow("bob") as uow:
            await deals.list(uow, page=PageRequest(after=cursor))

    assert info.value.field == "after"


@pytest.mark.parametrize("limit", [0, 101])
def test_page_limit_outside_1_to_100_is_rejected(limit):
    with pytest.raises(ValidationError) as info:
        PageRequest(limit=limit)

    assert [e["loc"] for e in info.value.errors()] == [("limit",)]


def test_page_limit_100_is_allowed():
    assert PageRequest(limit=100).limit == 100


# List filters


@dataclass
class Spread:
    """Six deals across owners, teams, stages, pipelines and statuses (keyed by title), and the ids to filter by."""

    deals: dict[str, Deal]
    hiring: Pipeline
    company: Company
    actors: Actors

    def user(self, key: str) -> UUID:
        return self.actors.id(key)

    def sales_stage(self, index: int) -> UUID:
        return self.company.sales_stage_ids[index]


@pytest.fixture
async def spread(actors, company) -> Spread:
    hiring = await new_pipeline(actors, "Hiring", ("Applied", 5))
    stage = company.sales_stage_ids
    made: dict[str, Deal] = {}
    for who, title, fields in [
        ("alice", "Alpha Corp", {"stage_id": stage[PROPOSAL]}),
        ("bob", "Beta Industries", {"stage_id": stage[PROPOSAL]}),  # won below
        ("bob", "Gamma alpha tools", {"stage_id": hiring.stages[0].id}),
        ("mia", "Delta", {"stage_id": stage[NEGOTIATION]}),
        ("carol", "Epsilon", {}),  # lost below
        ("dan", "Zeta_50%", {"stage_id": stage[CONTACT_MADE]}),
    ]:
        made[title] = await new_deal(actors, who, title=title, **fields)
    async with actors.uow("bob") as uow:
        await deals.mark_won(uow, made["Beta Industries"].id)
    async with actors.uow("carol") as uow:
        await deals.mark_lost(uow, made["Epsilon"].id, "No budget")
    return Spread(made, hiring, company, actors)


ALL_SIX = {"Alpha Corp", "Beta Industries", "Gamma alpha tools", "Delta", "Epsilon", "Zeta_50%"}


@pytest.mark.parametrize(
    ("make_filter", "expected"),
    [
        pytest.param(lambda s: {}, ALL_SIX, id="none"),
        pytest.param(lambda s: {"owner_id": s.user("bob")}, {"Beta Industries", "Gamma alpha tools"}, id="owner"),
        pytest.param(
            lambda s: {"team_id": s.company.team_ids["East"]},
            {"Beta Industries", "Gamma alpha tools", "Delta", "Zeta_50%"},
            id="team-east",
        ),
        pytest.param(lambda s: {"team_id": s.company.team_ids["West"]}, {"Epsilon"}, id="team-west"),
        pytest.param(
            lambda s: {"pipeline_id": s.company.sales_pipeline_id},
            ALL_SIX - {"Gamma alpha tools"},
            id="pipeline-sales",
        ),
        pytest.param(lambda s: {"pipeline_id": s.hiring.id}, {"Gamma alpha tools"}, id="pipeline-hiring"),
        pytest.param(lambda s: {"stage_id": s.sales_stage(PROPOSAL)}, {"Alpha Corp", "Beta Industries"}, id="stage"),
        pytest.param(lambda s: {"status": "won"}, {"Beta Industries"}, id="won"),
        pytest.param(lambda s: {"status": "lost"}, {"Epsilon"}, id="lost"),
        pytest.param(lambda s: {"status": "open"}, ALL_SIX - {"Beta Industries", "Epsilon"}, id="open"),
        pytest.param(lambda s: {"text": "ALPHA"}, {"Alpha Corp", "Gamma alpha tools"}, id="text-ignores-case"),
        pytest.param(lambda s: {"text": "_50%"}, {"Zeta_50%"}, id="text-matches-wildcard-characters-literally"),
        pytest.param(lambda s: {"text": "et_"}, set(), id="text-underscore-is-no-wildcard"),
        pytest.param(lambda s: {"text": "z%0"}, set(), id="text-percent-is-no-wildcard"),
        pytest.param(
            lambda s: {"owner_id": s.user("bob"), "stage_id": s.sales_stage(PROPOSAL)},
            {"Beta Industries"},
            id="owner-and-stage",
        ),
    ],
)
async def test_list_filters_return_exactly_the_matching_deals(actors, spread, make_filter, expected):
    async with actors.uow("alice") as uow:
        page = await deals.list(uow, DealFilter(**make_filter(spread)))

    assert {d.title for d in page.items} == expected
    assert page.total == len(expected)


async def test_list_filter_updated_since_returns_only_deals_changed_since(actors, spread):
    async with actors.uow("alice") as uow:
        renamed = await deals.update(uow, spread.deals["Delta"].id, DealUpdate(title="Delta renamed"))
        moved = await deals.move_stage(
            uow, spread.deals["Alpha Corp"].id, spread.hiring.stages[0].id, pipeline_id=spread.hiring.id
        )

    async with actors.uow("alice") as uow:
        page = await deals.list(uow, DealFilter(updated_since=renamed.updated_at))

    assert moved.updated_at == renamed.updated_at  # one transaction, one now()
    assert {d.title for d in page.items} == {"Delta renamed", "Alpha Corp"}
    assert page.total == 2


async def test_list_shows_only_deals_the_caller_may_see(actors):
    await new_deal(actors, "carol", title="Carol private", visibility="owner")
    await new_deal(actors, "carol", title="Carol team", visibility="team")
    await new_deal(actors, "bob", title="Bob private", visibility="owner")
    await new_deal(actors, "dan", title="Dan company", visibility="company")

    async with actors.uow("dan") as uow:
        page = await deals.list(uow)

    assert {d.title for d in page.items} == {"Dan company"}
    assert page.total == 1


# Audit rows and outbox events for every write


async def _do_create(uow, deal, stages):
    await deals.create(uow, DealCreate(title="Another"))


async def _do_update(uow, deal, stages):
    await deals.update(uow, deal.id, DealUpdate(title="Renamed"))


async def _do_move(uow, deal, stages):
    await deals.move_stage(uow, deal.id, stages[PROPOSAL])


async def _do_win(uow, deal, stages):
    await deals.mark_won(uow, deal.id)


async def _do_lose(uow, deal, stages):
    await deals.mark_lost(uow, deal.id, "Lost it")


async def _do_delete(uow, deal, stages):
    await deals.delete(uow, deal.id)


@pytest.mark.parametrize(
    ("write", "operation", "event_names"),
    [
        (_do_create, "deal.create", ["crm/deal.created"]),
        (_do_update, "deal.update", ["crm/deal.updated"]),
        (_do_move, "deal.move_stage", ["crm/deal.stage_changed"]),
        (_do_win, "deal.mark_won", ["crm/deal.won"]),
        (_do_lose, "deal.mark_lost", ["crm/deal.lost"]),
        (_do_delete, "deal.delete", ["crm/deal.deleted"]),
    ],
    ids=["create", "update", "move_stage", "mark_won", "mark_lost", "delete"],
)
@pytest.mark.parametrize("channel", [Channel.GRAPHQL, Channel.MCP])
async def test_every_write_appends_one_audit_row_and_emits_its_events(
    actors, company, admin, write, operation, event_names, channel
):
    deal = await new_deal(actors, "bob")
    forget_bookkeeping(admin)

    async with actors.uow("bob", channel=channel) as uow:
        await write(uow, deal, company.sales_stage_ids)

    rows = admin.execute("select actor_id, channel, operation, entity_type from public.audit_log").fetchall()
    assert rows == [(actors.id("bob"), channel.value, operation, "deal")]
    assert admin.execute("select name, actor_id, channel from public.outbox order by name").fetchall() == [
        (name, actors.id("bob"), channel.value) for name in event_names
    ]


async def test_update_audit_diff_holds_exactly_the_changed_fields(actors, company, admin):
    proposal = company.sales_stage_ids[PROPOSAL]
    deal = await new_deal(actors, "bob", title="Old title", value=Decimal("1000"), stage_id=proposal)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        after = await deals.update(uow, deal.id, DealUpdate(title="New title", value=Decimal("2000"), currency="USD"))

    def pick(d: Deal, *fields: str) -> dict:
        return {f: to_jsonable_python(getattr(d, f)) for f in fields}

    changed = ("title", "updated_at", "value", "version", "weighted_value")
    assert admin.execute("select entity_id, diff from public.audit_log").fetchall() == [
        (deal.id, {"before": pick(deal, *changed), "after": pick(after, *changed)})
    ]
    assert pick(after, "title", "value", "version", "weighted_value") == {
        "title": "New title",
        "value": "2000.00",
        "version": 2,
        "weighted_value": "1000.00",
    }
    assert events(admin) == [("crm/deal.updated", {"deal_id": str(deal.id), "fields": ["currency", "title", "value"]})]


async def test_create_audit_diff_holds_the_whole_new_deal(actors, admin):
    deal = await new_deal(actors, "bob", title="Fresh")

    (diff,) = admin.execute("select diff from public.audit_log").fetchone()

    assert diff == {"after": to_jsonable_python(deal.model_dump())}
    assert diff["after"]["person_id"] is None  # null fields are part of the snapshot too


async def test_delete_audit_diff_holds_the_whole_deleted_deal(actors, admin):
    deal = await new_deal(actors, "bob", title="Gone soon")
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        await deals.delete(uow, deal.id)

    assert admin.execute("select operation, diff from public.audit_log").fetchall() == [
        ("deal.delete", {"before": to_jsonable_python(deal.model_dump())})
    ]
    assert written(admin) == {"deals": 0, "deal_stage_history": 0, "audit_log": 1, "outbox": 1}


async def test_a_failed_unit_of_work_writes_no_deal_audit_or_event(actors, admin):
    with pytest.raises(RuntimeError, match="boom"):
        async with actors.uow("bob") as uow:
            await deals.create(uow, DealCreate(title="Doomed"))
            assert len(uow.events) == 1
            raise RuntimeError("boom")

    assert written(admin) == NOTHING_WRITTEN


# Who may change and assign deals


@pytest.mark.parametrize("who", ["bob", "mia", "alice"], ids=["owner", "manager-of-owners-team", "admin"])
async def test_owner_manager_and_admin_may_change_bobs_deal(actors, admin, who):
    deal = await new_deal(actors, "bob", title="Bob's", visibility="company")
    forget_bookkeeping(admin)

    async with actors.uow(who) as uow:
        changed = await deals.update(uow, deal.id, DealUpdate(title="Changed"))

    assert (changed.title, changed.version) == ("Changed", 2)
    assert audit_rows(admin) == [(actors.id(who), "graphql", "deal.update", "deal", deal.id)]


@pytest.mark.parametrize("who", ["dan", "carol", "vic"], ids=["teammate", "other-team", "viewer"])
async def test_others_who_see_bobs_company_deal_may_not_change_it(actors, admin, who):
    deal = await new_deal(actors, "bob", title="Bob's", visibility="company")
    forget_bookkeeping(admin)

    with pytest.raises(Forbidden):
        async with actors.uow(who) as uow:
            await deals.update(uow, deal.id, DealUpdate(title="Changed"))

    assert stored(admin, deal.id, "title", "version") == ("Bob's", 1)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_manager_is_forbidden_on_another_teams_company_deal(actors, admin):
    carols = await new_deal(actors, "carol", title="Carol's", visibility="company")
    forget_bookkeeping(admin)

    async with actors.uow("mia") as uow:
        assert (await deals.get(uow, carols.id)).title == "Carol's"
    for change in (
        lambda uow: deals.update(uow, carols.id, DealUpdate(title="Mine now")),
        lambda uow: deals.mark_won(uow, carols.id),
        lambda uow: deals.delete(uow, carols.id),
    ):
        with pytest.raises(Forbidden):
            async with actors.uow("mia") as uow:
                await change(uow)

    assert stored(admin, carols.id, "title", "status", "version") == ("Carol's", "open", 1)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_a_deal_the_caller_cannot_see_is_not_found(actors, admin):
    carols = await new_deal(actors, "carol", title="Carol's", visibility="owner")

    for change in (deals.get, deals.mark_won, deals.delete):
        with pytest.raises(NotFound):
            async with actors.uow("mia") as uow:
                await change(uow, carols.id)

    assert stored(admin, carols.id, "status", "version") == ("open", 1)


@pytest.mark.parametrize(("who", "new_owner"), [("mia", "dan"), ("alice", "carol"), ("alice", "mia")])
async def test_managers_assign_to_teammates_and_admins_to_anyone_on_create(actors, admin, who, new_owner):
    deal = await new_deal(actors, who, owner_id=actors.id(new_owner))

    assert deal.owner_id == actors.id(new_owner)
    assert stored(admin, deal.id, "owner_id") == (actors.id(new_owner),)
    assert audit_rows(admin) == [(actors.id(who), "graphql", "deal.create", "deal", deal.id)]


@pytest.mark.parametrize(("who", "new_owner"), [("bob", "dan"), ("bob", "carol"), ("mia", "carol")])
async def test_members_and_other_teams_managers_cannot_create_for_another_owner(actors, admin, who, new_owner):
    with pytest.raises(Forbidden):
        await new_deal(actors, who, owner_id=actors.id(new_owner))

    assert written(admin) == NOTHING_WRITTEN


@pytest.mark.parametrize(("who", "new_owner"), [("mia", "dan"), ("alice", "carol")])
async def test_managers_reassign_to_teammates_and_admins_to_anyone(actors, admin, who, new_owner):
    deal = await new_deal(actors, "bob")
    forget_bookkeeping(admin)

    async with actors.uow(who) as uow:
        reassigned = await deals.update(uow, deal.id, DealUpdate(owner_id=actors.id(new_owner)))

    assert reassigned.owner_id == actors.id(new_owner)
    assert events(admin) == [
        (
            "crm/deal.owner_changed",
            {"deal_id": str(deal.id), "from_owner_id": str(actors.id("bob")), "to_owner_id": str(actors.id(new_owner))},
        ),
        ("crm/deal.updated", {"deal_id": str(deal.id), "fields": ["owner_id"]}),
    ]


@pytest.mark.parametrize(("who", "new_owner"), [("bob", "dan"), ("mia", "carol")])
async def test_members_and_managers_cannot_reassign_outside_their_reach(actors, admin, who, new_owner):
    deal = await new_deal(actors, "bob")
    forget_bookkeeping(admin)

    with pytest.raises(Forbidden):
        async with actors.uow(who) as uow:
            await deals.update(uow, deal.id, DealUpdate(owner_id=actors.id(new_owner)))

    assert stored(admin, deal.id, "owner_id", "version") == (actors.id("bob"), 1)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}

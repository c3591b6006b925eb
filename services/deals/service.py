"""Deals: create, change, move through stages, win, lose, reopen. Every stage change is recorded."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import sql

from services.deals.schemas import (
    Deal,
    DealBrief,
    DealCreate,
    DealFilter,
    DealSort,
    DealStatus,
    DealUpdate,
    StageChange,
)
from services.kernel import idempotency, records
from services.kernel.attachments import check_links, link_checks, raise_missing_link
from services.kernel.errors import Conflict, Invalid, NotFound
from services.kernel.inputs import text_argument
from services.kernel.pagination import Page, PageRequest
from services.kernel.permissions import Perm, requires
from services.kernel.schemas import filter_conditions, text_condition
from services.kernel.uow import Row, UnitOfWork
from services.pipelines import service as pipelines
from services.pipelines.schemas import Stage

_SELECT = "t.*, s.win_probability as stage_probability"
_JOIN = "left join public.stages s on s.id = t.stage_id"
_CENT = Decimal("0.01")


def weighted_value(value: Decimal, probability: int | None, stage_probability: int | None) -> Decimal:
    percent = probability if probability is not None else (stage_probability or 0)
    return (value * percent / 100).quantize(_CENT)


def _deal(row: Row) -> Deal:
    return Deal.model_validate(
        {**row, "weighted_value": weighted_value(row["value"], row["probability"], row["stage_probability"])}
    )


async def _fetch(uow: UnitOfWork, deal_id: UUID) -> Deal:
    row = await uow.one(f"select {_SELECT} from public.deals t {_JOIN} where t.id = %s", [deal_id])
    if row is None:
        raise NotFound("deal", deal_id)
    return _deal(row)


async def _fetch_for_change(uow: UnitOfWork, deal_id: UUID) -> Deal:
    """The deal, locked for this transaction (see records.fetch_for_change), as it is once the lock is held."""
    await records.fetch_for_change(uow, "deals", "deal", deal_id)
    return await _fetch(uow, deal_id)


@requires(Perm.DEALS_READ)
async def get(uow: UnitOfWork, deal_id: UUID) -> Deal:
    return await _fetch(uow, deal_id)


@requires(Perm.DEALS_READ)
async def get_many(uow: UnitOfWork, deal_ids: builtins.list[UUID]) -> builtins.list[Deal]:
    """Visible deals by id (batch loader); hidden or missing ids are left out."""
    condition, keys = records.among("t.id", deal_ids)
    rows = await uow.all(f"select {_SELECT} from public.deals t {_JOIN} where {condition}", [keys])
    return [_deal(r) for r in rows]


# A brief's names come from left joins read as the caller: a related record RLS hides joins no row (a null name).
_BRIEF_SELECT = (
    "t.*, s.name as stage, pl.name as pipeline, p.name as person,"
    " o.name as organization, u.display_name as owner"
)
_BRIEF_JOIN = (
    "left join public.stages s on s.id = t.stage_id left join public.pipelines pl on pl.id = t.pipeline_id"
    " left join public.persons p on p.id = t.person_id left join public.organizations o on o.id = t.organization_id"
    " left join public.user_profiles u on u.id = t.owner_id"
)
_CENTS = 100


def _conditions(f: DealFilter) -> tuple[builtins.list[str], builtins.list[Any]]:
    where, params = filter_conditions(f)
    for column in ("pipeline_id", "stage_id", "status", "person_id", "organization_id"):
        value = getattr(f, column)
        if value is not None:
            where.append(f"t.{column} = %s")
            params.append(value)
    # closed_at (won_at or lost_at) and value_cents are generated columns, indexed and comparable under RLS.
    # A day covers the whole UTC day; the bounds are computed in SQL (the day after 9999-12-31 exists there).
    if f.closed_after is not None:
        where.append("t.closed_at >= (%s::date)::timestamp at time zone 'UTC'")
        params.append(f.closed_after)
    if f.closed_before is not None:
        where.append("t.closed_at < (%s::date + 1)::timestamp at time zone 'UTC'")
        params.append(f.closed_before)
    if f.value_min is not None:
        where.append("t.value_cents >= %s")
        params.append(int(f.value_min * _CENTS))
    if f.value_max is not None:
        where.append("t.value_cents <= %s")
        params.append(int(f.value_max * _CENTS))
    text_where, text_params = text_condition(f)
    return where + text_where, params + text_params


@requires(Perm.DEALS_READ)
async def list(
    uow: UnitOfWork,
    filter: DealFilter | None = None,
    page: PageRequest | None = None,
    *,
    sort: DealSort = DealSort.CREATED_DESC,
) -> Page[Deal]:
    """Deals matching `filter`, in `sort` order (default: newest first)."""
    where, params = _conditions(filter or DealFilter())
    return await records.list_page(
        uow, table="deals", where=where, params=params, page=page or PageRequest(), item=_deal,
        select=_SELECT, joins=_JOIN, order=sort.order,
    )


@requires(Perm.DEALS_READ)
async def list_briefs(
    uow: UnitOfWork,
    filter: DealFilter | None = None,
    page: PageRequest | None = None,
    *,
    sort: DealSort = DealSort.CREATED_DESC,
) -> Page[DealBrief]:
    """The same list as `list`, each deal as a brief with the names of its relations, read in the same query."""
    where, params = _conditions(filter or DealFilter())
    return await records.list_page(
        uow, table="deals", where=where, params=params, page=page or PageRequest(),
        item=DealBrief.model_validate, select=_BRIEF_SELECT, joins=_BRIEF_JOIN, order=sort.order,
    )


@requires(Perm.DEALS_READ)
async def stage_history(uow: UnitOfWork, deal_id: UUID) -> builtins.list[StageChange]:
    """The deal's stage changes, oldest first."""
    await _fetch(uow, deal_id)
    rows = await uow.all("select * from public.deal_stage_history where deal_id = %s order by id", [deal_id])
    return [StageChange.model_validate(r) for r in rows]


@requires(Perm.DEALS_READ)
async def stage_histories(uow: UnitOfWork, deal_ids: builtins.list[UUID]) -> dict[UUID, builtins.list[StageChange]]:
    """Stage changes of several visible deals (batch loader)."""
    condition, keys = records.among("deal_id", deal_ids)
    rows = await uow.all(f"select * from public.deal_stage_history where {condition} order by deal_id, id", [keys])
    grouped: dict[UUID, builtins.list[StageChange]] = {}
    for row in rows:
        grouped.setdefault(row["deal_id"], []).append(StageChange.model_validate(row))
    return grouped


async def _stage(uow: UnitOfWork, stage_id: UUID) -> Stage:
    try:
        return await pipelines.get_stage(uow, stage_id)
    except NotFound as exc:
        raise Invalid(f"stage {stage_id} does not exist", field="stage_id") from exc


async def _record_stage_change(uow: UnitOfWork, deal_id: UUID, old: UUID | None, new: UUID | None) -> None:
    await uow.execute(
        "insert into public.deal_stage_history (deal_id, from_stage_id, to_stage_id, changed_by)"
        " values (%s, %s, %s, auth.uid())",
        [deal_id, old, new],
    )


@dataclass(frozen=True)
class _Placement:
    """Where a new deal goes, as SQL: `select` reads one row, its `pipeline_id` and `stage_id` and whether the
    caller sees each given contact (`link_checks`); `ok` (over that row, alias `placed`) holds when all is well."""

    select: str
    params: builtins.list[Any]
    ok: str
    ok_params: builtins.list[Any]


def _links(data: DealCreate) -> dict[str, UUID | None]:
    return {"person_id": data.person_id, "organization_id": data.organization_id}


def _placement_sql(data: DealCreate) -> _Placement:
    """The named pipeline and stage, else the default pipeline and its first stage; its person and organization
    checked too, all in one select."""
    checks, params = link_checks(_links(data))
    seen = [f"placed.{column}" for column, target in _links(data).items() if target is not None]
    if data.stage_id is not None:
        query = ("select (select s.pipeline_id from public.stages s where s.id = %s) as pipeline_id,"
                 " %s::uuid as stage_id")
        first: builtins.list[Any] = [data.stage_id, data.stage_id]
        same = [] if data.pipeline_id is None else [data.pipeline_id]  # the stage must be in the named pipeline
    else:
        pipeline = "where id = %s" if data.pipeline_id is not None else "order by position, lower(name), id"
        query = (
            f"with p as (select id from public.pipelines {pipeline} limit 1)"
            " select (select id from p) as pipeline_id, (select s.id from public.stages s"
            " where s.pipeline_id = (select id from p) order by s.position limit 1) as stage_id"
        )
        first = [] if data.pipeline_id is None else [data.pipeline_id]
        same = []
    ok = " and ".join(["placed.pipeline_id is not null", *(["placed.pipeline_id = %s"] if same else []), *seen])
    return _Placement(", ".join([query, *checks]), [*first, *params], ok, same)


async def _refuse_placement(uow: UnitOfWork, data: DealCreate) -> None:
    """Invalid for the first placement check (see `_placement_sql`) that fails, in the order they are listed."""
    placement = _placement_sql(data)
    found = await uow.one(placement.select, placement.params)
    assert found is not None
    if data.stage_id is not None:
        if found["pipeline_id"] is None:
            raise Invalid(f"stage {data.stage_id} does not exist", field="stage_id")
        if data.pipeline_id is not None and found["pipeline_id"] != data.pipeline_id:
            raise Invalid(f"stage {data.stage_id} is not in pipeline {data.pipeline_id}", field="stage_id")
    elif found["pipeline_id"] is None:
        raise Invalid(
            "there is no pipeline yet; create one first" if data.pipeline_id is None
            else f"pipeline {data.pipeline_id} does not exist",
            field="pipeline_id",
        )
    raise_missing_link(found, _links(data))


async def _insert_deal(uow: UnitOfWork, data: DealCreate, owner_id: UUID) -> Deal:
    """Create the deal row where `_placement_sql` puts it, in one statement; its first history entry is written by
    the insert (private.record_first_stage). When a placement check fails nothing is inserted, and
    `_refuse_placement` reads again to say which."""
    uow.principal.require(Perm.PIPELINES_READ)  # the placement reads pipelines, as pipelines.get does
    placement = _placement_sql(data)
    values: dict[str, Any] = data.model_dump(exclude={"owner_id", "visibility", "pipeline_id", "stage_id"})
    values["owner_id"] = owner_id
    if data.visibility is not None:
        values["visibility"] = data.visibility.value
    columns = ", ".join(sql.Identifier(k).as_string() for k in values)
    row = await uow.one(
        f"with placed as ({placement.select}),"
        f" t as (insert into public.deals ({columns}, pipeline_id, stage_id)"
        f" select {', '.join(['%s'] * len(values))}, placed.pipeline_id, placed.stage_id from placed"
        f" where {placement.ok} returning *)"
        f" select {_SELECT} from t {_JOIN}",
        [*placement.params, *values.values(), *placement.ok_params],
    )
    if row is None:
        await _refuse_placement(uow, data)
        raise Conflict("the deal's pipeline, stage or contacts changed while it was placed; try again")
    deal = _deal(row)
    await uow.audit("deal.create", "deal", deal.id, after=deal.model_dump())
    uow.emit(
        "crm/deal.created", deal_id=deal.id, owner_id=deal.owner_id, pipeline_id=deal.pipeline_id,
        stage_id=deal.stage_id, value=deal.value, currency=deal.currency,
    )
    return deal


@requires(Perm.DEALS_WRITE)
async def create(uow: UnitOfWork, data: DealCreate, *, idempotency_key: str | None = None) -> Deal:
    """Create a deal in the named pipeline/stage (default: the first pipeline's first stage)."""
    if (done := await idempotency.claim(uow, idempotency_key, "deal.create")) is not None:
        return await _fetch(uow, done)
    owner_id = data.owner_id or uow.user_id
    if owner_id is None:
        raise Invalid("owner_id is required", field="owner_id")
    await records.ensure_can_own(uow, "deal", owner_id)
    deal = await _insert_deal(uow, data, owner_id)
    await idempotency.complete(uow, idempotency_key, deal.id)
    return deal


async def _apply(
    uow: UnitOfWork, before: Deal, changes: dict[str, Any], operation: str, expected_version: int | None
) -> Deal | None:
    """The changed deal, audited; None when `changes` change nothing (then nothing is written or emitted)."""
    if await records.update(uow, "deals", "deal", before.id, changes, expected_version=expected_version) is None:
        return None
    after = await _fetch(uow, before.id)
    await uow.audit(operation, "deal", before.id, before=before.model_dump(), after=after.model_dump())
    return after


@requires(Perm.DEALS_WRITE)
async def update(
    uow: UnitOfWork, deal_id: UUID, data: DealUpdate, *, expected_version: int | None = None
) -> Deal:
    """Change a deal's fields. Stage and status change through move_stage, mark_won, mark_lost, reopen."""
    before = await _fetch_for_change(uow, deal_id)
    changes = data.model_dump(exclude_unset=True)
    for column in ("title", "value", "currency", "owner_id", "visibility"):
        if column in changes and changes[column] is None:
            raise Invalid(f"{column} cannot be null", field=column)
    if "owner_id" in changes:
        await records.ensure_can_own(uow, "deal", changes["owner_id"])
    await check_links(uow, {k: changes.get(k) for k in ("person_id", "organization_id")})
    after = await _apply(uow, before, changes, "deal.update", expected_version)
    if after is None:
        return before
    uow.emit("crm/deal.updated", deal_id=deal_id, fields=sorted(changes))
    if "owner_id" in changes and changes["owner_id"] != before.owner_id:
        uow.emit("crm/deal.owner_changed", deal_id=deal_id, from_owner_id=before.owner_id,
                 to_owner_id=after.owner_id)
    return after


@requires(Perm.DEALS_WRITE)
async def move_stage(
    uow: UnitOfWork,
    deal_id: UUID,
    stage_id: UUID,
    *,
    pipeline_id: UUID | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Move a deal to a stage. A stage of another pipeline needs `pipeline_id` set to that pipeline too."""
    before = await _fetch_for_change(uow, deal_id)
    stage = await _stage(uow, stage_id)
    target_pipeline = pipeline_id or before.pipeline_id
    if stage.pipeline_id != target_pipeline:
        if pipeline_id is None:
            raise Invalid(
                f"stage {stage_id} belongs to pipeline {stage.pipeline_id}, not the deal's pipeline"
                f" {before.pipeline_id}; pass pipeline_id to move the deal to that pipeline",
                field="stage_id",
            )
        raise Invalid(f"stage {stage_id} is not in pipeline {pipeline_id}", field="stage_id")
    if stage_id == before.stage_id:
        return before
    changes = {"stage_id": stage_id, "pipeline_id": target_pipeline}
    after = await _apply(uow, before, changes, "deal.move_stage", expected_version)
    if after is None:
        return before
    await _record_stage_change(uow, deal_id, before.stage_id, stage_id)
    uow.emit(
        "crm/deal.stage_changed", deal_id=deal_id, from_stage_id=before.stage_id, to_stage_id=stage_id,
        from_pipeline_id=before.pipeline_id, to_pipeline_id=target_pipeline,
    )
    return after


@requires(Perm.DEALS_WRITE)
async def mark_won(uow: UnitOfWork, deal_id: UUID, *, expected_version: int | None = None) -> Deal:
    """Mark a deal won. A won deal is returned as it is (nothing written), whatever `expected_version` says:
    of concurrent calls exactly one wins the deal, the others get the won deal."""
    before = await _fetch_for_change(uow, deal_id)
    if before.status is DealStatus.WON:
        return before
    changes = {"status": "won", "won_at": _now(), "lost_at": None, "lost_reason": None}
    after = await _apply(uow, before, changes, "deal.mark_won", expected_version)
    assert after is not None  # the status changes
    uow.emit("crm/deal.won", deal_id=deal_id, owner_id=after.owner_id, value=after.value, currency=after.currency)
    return after


@requires(Perm.DEALS_WRITE)
async def mark_lost(
    uow: UnitOfWork, deal_id: UUID, reason: str, *, expected_version: int | None = None
) -> Deal:
    """Mark a deal lost; the reason is required. A lost deal is returned as it is, with the reason recorded when
    it was lost, even if this call gives another one: the reason belongs to that loss (to record another, reopen
    the deal and mark it lost again).
    Of concurrent calls exactly one loses the deal, the others get the lost deal."""
    reason = text_argument(reason, "reason", single_line=False)
    if not reason or not reason.strip():
        raise Invalid("a reason is required to mark a deal lost", field="reason")
    before = await _fetch_for_change(uow, deal_id)
    if before.status is DealStatus.LOST:
        return before
    changes = {"status": "lost", "lost_at": _now(), "lost_reason": reason.strip()[:1000], "won_at": None}
    after = await _apply(uow, before, changes, "deal.mark_lost", expected_version)
    assert after is not None  # the status changes
    uow.emit("crm/deal.lost", deal_id=deal_id, owner_id=after.owner_id)
    return after


@requires(Perm.DEALS_WRITE)
async def reopen(uow: UnitOfWork, deal_id: UUID, *, expected_version: int | None = None) -> Deal:
    """Reopen a won or lost deal. An open deal is returned as it is (nothing written)."""
    before = await _fetch_for_change(uow, deal_id)
    if before.status is DealStatus.OPEN:
        return before
    changes = {"status": "open", "won_at": None, "lost_at": None, "lost_reason": None}
    after = await _apply(uow, before, changes, "deal.reopen", expected_version)
    assert after is not None  # the status changes
    uow.emit("crm/deal.reopened", deal_id=deal_id, previous_status=before.status)
    return after


@requires(Perm.DEALS_DELETE)
async def delete(uow: UnitOfWork, deal_id: UUID) -> None:
    """Delete a deal with its stage history; its notes and activities stay, unlinked."""
    before = await _fetch_for_change(uow, deal_id)
    await records.delete(uow, "deals", "deal", deal_id)
    await uow.audit("deal.delete", "deal", deal_id, before=before.model_dump())
    uow.emit("crm/deal.deleted", deal_id=deal_id)


def _now() -> datetime:
    return datetime.now(UTC)

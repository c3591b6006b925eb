"""Activities: tasks, calls, meetings, emails and deadlines, attached to CRM records or standing alone."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from services.activities.schemas import Activity, ActivityCreate, ActivityFilter, ActivityUpdate
from services.kernel import idempotency, records
from services.kernel.attachments import LINK_TABLES, check_links
from services.kernel.errors import Invalid
from services.kernel.pagination import Page, PageRequest
from services.kernel.permissions import Perm, requires
from services.kernel.schemas import escape_like, filter_conditions
from services.kernel.uow import Row, UnitOfWork


def _activity(row: Row) -> Activity:
    return Activity.model_validate(row)


async def _fetch_for_change(uow: UnitOfWork, activity_id: UUID) -> Activity:
    """The activity, locked for this transaction (see records.fetch_for_change)."""
    return _activity(await records.fetch_for_change(uow, "activities", "activity", activity_id))


@requires(Perm.ACTIVITIES_READ)
async def get(uow: UnitOfWork, activity_id: UUID) -> Activity:
    return _activity(await records.fetch(uow, "activities", "activity", activity_id))


@requires(Perm.ACTIVITIES_READ)
async def list(
    uow: UnitOfWork, filter: ActivityFilter | None = None, page: PageRequest | None = None
) -> Page[Activity]:
    f = filter or ActivityFilter()
    where, params = filter_conditions(f)
    for column in ("type", "done", *LINK_TABLES):
        value = getattr(f, column)
        if value is not None:
            where.append(f"t.{column} = %s")
            params.append(value)
    if f.due_before is not None:
        where.append("t.due_date <= %s")
        params.append(f.due_before)
    if f.due_after is not None:
        where.append("t.due_date >= %s")
        params.append(f.due_after)
    if f.text:
        where.append("lower(t.subject) like %s")
        params.append("%" + escape_like(f.text.lower()) + "%")
    return await records.list_page(
        uow, table="activities", where=where, params=params, page=page or PageRequest(), item=_activity
    )


@requires(Perm.ACTIVITIES_READ)
async def list_for(uow: UnitOfWork, link: str, record_ids: builtins.list[UUID]) -> dict[UUID, builtins.list[Activity]]:
    """Visible activities of several records (batch loader), by `link` (deal_id, lead_id, ...), due first."""
    if link not in LINK_TABLES:
        raise Invalid(f"unknown link {link!r}", field="link")
    condition, keys = records.among(link, record_ids)
    rows = await uow.all(
        f"select * from public.activities where {condition}"
        " order by due_date nulls last, due_time nulls last, created_at, id",
        [keys],
    )
    grouped: dict[UUID, builtins.list[Activity]] = {}
    for row in rows:
        grouped.setdefault(row[link], []).append(_activity(row))
    return grouped


def _check_schedule(due_date: Any, due_time: Any) -> None:
    if due_time is not None and due_date is None:
        raise Invalid("a due time needs a due date", field="due_time")


@requires(Perm.ACTIVITIES_WRITE)
async def create(uow: UnitOfWork, data: ActivityCreate, *, idempotency_key: str | None = None) -> Activity:
    if (done := await idempotency.claim(uow, idempotency_key, "activity.create")) is not None:
        return _activity(await records.fetch(uow, "activities", "activity", done))
    owner_id = data.owner_id or uow.user_id
    if owner_id is None:
        raise Invalid("owner_id is required", field="owner_id")
    await records.ensure_can_own(uow, "activity", owner_id)
    _check_schedule(data.due_date, data.due_time)
    await check_links(uow, {column: getattr(data, column) for column in LINK_TABLES})
    values = data.model_dump(exclude={"owner_id"})
    values["owner_id"] = owner_id
    activity = _activity(await records.insert(uow, "activities", values))
    await idempotency.complete(uow, idempotency_key, activity.id)
    await uow.audit("activity.create", "activity", activity.id, after=activity.model_dump())
    uow.emit("crm/activity.created", activity_id=activity.id, owner_id=activity.owner_id, type=activity.type,
             due_date=activity.due_date, deal_id=activity.deal_id)
    return activity


async def _apply(
    uow: UnitOfWork, before: Activity, changes: dict[str, Any], operation: str, expected_version: int | None
) -> Activity | None:
    """The changed activity, audited; None when `changes` change nothing (then nothing is written or emitted)."""
    row = await records.update(uow, "activities", "activity", before.id, changes, expected_version=expected_version)
    if row is None:
        return None
    after = _activity(row)
    await uow.audit(operation, "activity", before.id, before=before.model_dump(), after=after.model_dump())
    return after


@requires(Perm.ACTIVITIES_WRITE)
async def update(
    uow: UnitOfWork, activity_id: UUID, data: ActivityUpdate, *, expected_version: int | None = None
) -> Activity:
    before = await _fetch_for_change(uow, activity_id)
    changes = data.model_dump(exclude_unset=True)
    for column in ("type", "subject", "owner_id"):
        if column in changes and changes[column] is None:
            raise Invalid(f"{column} cannot be null", field=column)
    if "owner_id" in changes:
        await records.ensure_can_own(uow, "activity", changes["owner_id"])
    _check_schedule(changes.get("due_date", before.due_date), changes.get("due_time", before.due_time))
    await check_links(uow, {k: v for k, v in changes.items() if k in LINK_TABLES})
    after = await _apply(uow, before, changes, "activity.update", expected_version)
    if after is None:
        return before
    uow.emit("crm/activity.updated", activity_id=activity_id, fields=sorted(changes))
    return after


@requires(Perm.ACTIVITIES_WRITE)
async def complete(
    uow: UnitOfWork, activity_id: UUID, *, done: bool = True, expected_version: int | None = None
) -> Activity:
    """Mark an activity done (or, with done=False, not done again). An activity already so is returned as it is
    (nothing written), whatever `expected_version` says: of concurrent calls exactly one changes it."""
    before = await _fetch_for_change(uow, activity_id)
    if before.done == done:
        return before
    changes = {"done": done, "done_at": datetime.now(UTC) if done else None}
    after = await _apply(uow, before, changes, "activity.complete" if done else "activity.reopen",
                         expected_version)
    assert after is not None  # `done` changes
    uow.emit("crm/activity.completed" if done else "crm/activity.reopened", activity_id=activity_id,
             owner_id=after.owner_id, deal_id=after.deal_id)
    return after


@requires(Perm.ACTIVITIES_DELETE)
async def delete(uow: UnitOfWork, activity_id: UUID) -> None:
    before = await _fetch_for_change(uow, activity_id)
    await records.delete(uow, "activities", "activity", activity_id)
    await uow.audit("activity.delete", "activity", activity_id, before=before.model_dump())
    uow.emit("crm/activity.deleted", activity_id=activity_id)

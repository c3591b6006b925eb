"""Notifications: each user's inbox of things that happened for them; the first kind is a due activity reminder.

The system creates notifications (`notify_due_reminders`, from a scheduled workflow); a user reads their own and
marks them read. Who may do what:

- Reading your inbox and marking it read needs nothing beyond being the signed-in user, whatever the token's
  scopes: the inbox is your own state, not CRM data, and a notification holds no CRM text. What it shows of the
  record it is about (an activity's subject and due date) is read with the notification under the caller's
  permissions and RLS, so a token that may not read activities sees a reminder without its subject.
- Marking read writes no audit row and emits no event: it changes nothing anyone else sees and nothing a
  workflow acts on (an inbox's read state is not a CRM change to account for).
- Only the system (service_role) creates notifications; the database refuses inserts by anyone else.

The inbox lists unread first, then newest first. Its cursor carries the read state with the position (the
shared cursors of services.kernel.pagination carry only the time and id), so pages are exact keyset pages; a
notification marked read while a client pages moves to the read part of the list and may show up again there.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from services.kernel.errors import Forbidden, Invalid, NotFound
from services.kernel.inputs import utc
from services.kernel.pagination import NEWEST_FIRST, Page, PageRequest, decode_cursor, encode_cursor
from services.kernel.permissions import requires
from services.kernel.principal import require_system
from services.kernel.uow import Row, UnitOfWork
from services.notifications.schemas import Notification, NotificationKind

# The record's details come from the record, as the caller may see it now (RLS applies to the joined table).
_SELECT = """
    select n.id, n.kind, n.entity_type, n.entity_id, n.occasion, n.created_at, n.read_at,
           a.subject, a.due_date, a.due_time, a.type as activity_type
    from public.notifications n
    left join public.activities a on n.entity_type = 'activity' and a.id = n.entity_id
"""
_INBOX_ORDER = " order by (n.read_at is null) desc, n.created_at desc, n.id desc"

_UNREAD, _READ = "u", "r"


def _notification(row: Row) -> Notification:
    return Notification.model_validate(row)


def _reader(uow: UnitOfWork) -> UUID:
    """The signed-in user whose inbox this is; the system has none."""
    if uow.user_id is None:
        raise Forbidden("the system has no notifications of its own; act as a user")
    return uow.user_id


def cursor(item: Notification) -> str:
    """The inbox position of `item`, for `after`: its read state, then the shared cursor of its time and id."""
    return f"{_READ if item.read_at is not None else _UNREAD}.{encode_cursor(NEWEST_FIRST, item.created_at, item.id)}"


def _position(after: str) -> tuple[bool, datetime, UUID]:
    """(unread, created_at, id) from a cursor made by `cursor`; anything else is Invalid."""
    state, dot, rest = after.partition(".")
    if not dot or state not in (_UNREAD, _READ):
        raise Invalid("malformed cursor", field="after")
    created_at, row_id = decode_cursor(rest)
    return state == _UNREAD, created_at, row_id


@requires(None)
async def list(uow: UnitOfWork, page: PageRequest | None = None, *, unread_only: bool = False) -> Page[Notification]:
    """Your notifications, unread first, then newest first; `total` counts them all (or all unread)."""
    user_id = _reader(uow)
    page = page or PageRequest()
    where = ["n.user_id = %s"]
    params: builtins.list[Any] = [user_id]
    if unread_only:
        where.append("n.read_at is null")
    counted = await uow.one(
        f"select count(*) as total from public.notifications n where {' and '.join(where)}", params
    )
    if page.after is not None:
        where.append("((n.read_at is null), n.created_at, n.id) < (%s, %s, %s)")
        params.extend(_position(page.after))
    rows = await uow.all(
        f"{_SELECT} where {' and '.join(where)}{_INBOX_ORDER} limit %s", [*params, page.limit + 1]
    )
    has_next = len(rows) > page.limit
    items = [_notification(r) for r in rows[: page.limit]]
    return Page(
        items=items,
        next_cursor=cursor(items[-1]) if has_next else None,
        has_next=has_next,
        total=counted["total"] if counted else 0,
    ).positioned(lambda index: cursor(items[index]))


@requires(None)
async def unread_count(uow: UnitOfWork) -> int:
    """How many of your notifications are unread."""
    row = await uow.one(
        "select count(*) as unread from public.notifications where user_id = %s and read_at is null",
        [_reader(uow)],
    )
    return row["unread"] if row else 0


@requires(None)
async def mark_read(uow: UnitOfWork, notification_id: UUID) -> Notification:
    """Mark one of your notifications read and return it. One already read is returned as it is (nothing is
    written); another user's, or an unknown id, is NotFound."""
    user_id = _reader(uow)
    await uow.execute(
        "update public.notifications set read_at = now() where id = %s and user_id = %s and read_at is null",
        [notification_id, user_id],
    )
    row = await uow.one(f"{_SELECT} where n.id = %s and n.user_id = %s", [notification_id, user_id])
    if row is None:
        raise NotFound("notification", notification_id)
    return _notification(row)


@requires(None)
async def mark_all_read(uow: UnitOfWork) -> int:
    """Mark every unread notification of yours read; returns how many were unread."""
    return await uow.execute(
        "update public.notifications set read_at = now() where user_id = %s and read_at is null", [_reader(uow)]
    )


@requires(None)
async def notify_due_reminders(uow: UnitOfWork, *, now: datetime, lookback: timedelta) -> int:
    """Create an activity_reminder notification for its owner for every open activity whose reminder time is in
    (now - lookback, now]; returns how many were created. Only the system may run it (Forbidden for a user).

    One statement, idempotent: a notification exists at most once per activity and reminder time (the table's
    unique key), so repeated and concurrent runs over overlapping windows create each exactly once. A changed
    reminder time is a new occasion and notifies again; a reminder older than `lookback` when first seen (e.g.
    after a long outage) is skipped rather than delivered late."""
    require_system(uow.principal, "creates notifications")
    if lookback <= timedelta(0):
        raise Invalid("lookback must be positive", field="lookback")
    try:
        until = utc(now)
        since = until - lookback
    except (ValueError, OverflowError) as exc:
        raise Invalid("now and now - lookback must be within the years 1 to 9999", field="lookback") from exc
    return await uow.execute(
        """
        insert into public.notifications (user_id, kind, entity_type, entity_id, occasion)
        select a.owner_id, %s, 'activity', a.id, a.reminder_at
        from public.activities a
        where a.reminder_at <= %s and a.reminder_at > %s and not a.done
        on conflict (kind, entity_id, occasion) do nothing
        """,
        [NotificationKind.ACTIVITY_REMINDER.value, until, since],
    )


@requires(None)
async def notify(
    uow: UnitOfWork, user_id: UUID, kind: NotificationKind, entity_type: str, entity_id: UUID, occasion: datetime
) -> bool:
    """Tell `user_id` that something happened to a record (e.g. their summary is ready); once per kind, record and
    occasion. Only the system may (Forbidden for a user). Returns whether the notification is new."""
    require_system(uow.principal, "creates notifications")
    return bool(await uow.execute(
        "insert into public.notifications (user_id, kind, entity_type, entity_id, occasion) values (%s, %s, %s, %s, %s)"
        " on conflict (kind, entity_id, occasion) do nothing",
        [user_id, kind.value, entity_type, entity_id, occasion],
    ))

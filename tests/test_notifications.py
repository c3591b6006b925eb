"""Notifications: reminders created exactly once by the system, each user's inbox (unread first, exact pages),
marking read, and Row Level Security holding on its own."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID, uuid4

import psycopg
import pytest
from conftest import counts, forget_bookkeeping, rls_session
from mcp import Client
from psycopg.errors import InsufficientPrivilege

from mcp_server.server import create_server
from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityType, ActivityUpdate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Forbidden, Invalid, NotFound
from services.kernel.pagination import PageRequest
from services.kernel.permissions import Scope
from services.kernel.principal import Channel, SystemPrincipal
from services.kernel.records import Visibility
from services.notifications import service as notifications
from services.notifications.schemas import NotificationKind

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SYSTEM = SystemPrincipal(Channel.WORKFLOW)


async def new_activity(actors, who: str = "bob", subject: str = "Call Ann", **fields):
    async with actors.uow(who) as uow:
        return await activities.create(uow, ActivityCreate(subject=subject, **fields))


async def notify(db, *, now: datetime = NOW, lookback: timedelta = HOUR) -> int:
    async with db.unit_of_work(SYSTEM) as uow:
        return await notifications.notify_due_reminders(uow, now=now, lookback=lookback)


def stored(admin) -> list[tuple]:
    """(user_id, kind, entity_type, entity_id, occasion, read_at) of every notification, as superuser."""
    return admin.execute(
        "select user_id, kind, entity_type, entity_id, occasion, read_at from public.notifications"
        " order by occasion, entity_id"
    ).fetchall()


def seed(admin, user_id: UUID, *, created_at: datetime, read: bool = False) -> UUID:
    """A notification about a made-up activity, written as superuser (the inbox does not need the record)."""
    row = admin.execute(
        "insert into public.notifications (user_id, kind, entity_type, entity_id, occasion, created_at, read_at)"
        " values (%s, 'activity_reminder', 'activity', %s, %s, %s, %s) returning id",
        [user_id, uuid4(), created_at, created_at, created_at + HOUR if read else None],
    ).fetchone()
    return row[0]


# Creating reminders ----------------------------------------------------------------------------------------


async def test_a_due_reminder_notifies_the_activity_s_owner_once_with_no_bookkeeping(db, actors, admin):
    activity = await new_activity(actors, reminder_at=NOW - timedelta(minutes=5))
    forget_bookkeeping(admin)

    assert await notify(db) == 1
    assert await notify(db) == 0
    assert await notify(db, now=NOW + timedelta(minutes=30)) == 0

    assert stored(admin) == [
        (actors.id("bob"), "activity_reminder", "activity", activity.id, NOW - timedelta(minutes=5), None)
    ]
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_only_open_reminders_inside_the_lookback_window_are_notified(db, actors, admin):
    due = await new_activity(actors, subject="Due", reminder_at=NOW)
    await new_activity(actors, subject="Just too old", reminder_at=NOW - HOUR)
    await new_activity(actors, subject="Future", reminder_at=NOW + timedelta(seconds=1))
    await new_activity(actors, subject="No reminder")
    done = await new_activity(actors, subject="Done", reminder_at=NOW - timedelta(minutes=1))
    async with actors.uow("bob") as uow:
        await activities.complete(uow, done.id)
    carols = await new_activity(actors, "carol", subject="Carol's", reminder_at=NOW - timedelta(minutes=59))

    assert await notify(db) == 2

    assert {(r[0], r[3]) for r in stored(admin)} == {(actors.id("bob"), due.id), (actors.id("carol"), carols.id)}


async def test_a_changed_reminder_time_is_a_new_occasion(db, actors, admin):
    activity = await new_activity(actors, reminder_at=NOW - timedelta(minutes=10))
    assert await notify(db) == 1
    async with actors.uow("bob") as uow:
        await activities.update(uow, activity.id, ActivityUpdate(reminder_at=NOW - timedelta(minutes=1)))

    assert await notify(db) == 1
    assert [r[4] for r in stored(admin)] == [NOW - timedelta(minutes=10), NOW - timedelta(minutes=1)]


async def test_repeated_concurrent_runs_notify_each_reminder_exactly_once(db, actors, admin):
    for i in range(5):
        await new_activity(actors, subject=f"Reminder {i}", reminder_at=NOW - timedelta(minutes=i))

    results = await asyncio.gather(*(notify(db) for _ in range(4)))

    assert sorted(results) == [0, 0, 0, 5]
    assert len(stored(admin)) == 5


async def test_a_run_that_overlaps_an_uncommitted_one_waits_and_adds_nothing(db, actors, admin):
    await new_activity(actors, reminder_at=NOW)
    inserted = asyncio.Event()

    async def first() -> int:
        async with db.unit_of_work(SYSTEM) as uow:
            created = await notifications.notify_due_reminders(uow, now=NOW, lookback=HOUR)
            inserted.set()
            await asyncio.sleep(0.3)  # the second run starts its insert before this one commits
        return created

    async def second() -> int:
        await inserted.wait()
        return await notify(db)

    assert await asyncio.gather(first(), second()) == [1, 0]
    assert len(stored(admin)) == 1


@pytest.mark.parametrize("key", ["alice", "bob"])
async def test_a_user_cannot_create_notifications_and_nothing_is_written(db, actors, admin, key):
    await new_activity(actors, reminder_at=NOW)

    async with actors.uow(key) as uow:
        with pytest.raises(Forbidden, match="only the system"):
            await notifications.notify_due_reminders(uow, now=NOW, lookback=HOUR)

    assert stored(admin) == []


@pytest.mark.parametrize(
    ("now", "lookback", "field"),
    [(NOW, timedelta(0), "lookback"), (NOW, -HOUR, "lookback"),
     (datetime(1, 1, 1, tzinfo=UTC), HOUR, "lookback")],
    ids=["zero", "negative", "before-year-1"],
)
async def test_a_bad_window_is_invalid(db, now, lookback, field):
    with pytest.raises(Invalid) as refused:
        await notify(db, now=now, lookback=lookback)
    assert refused.value.field == field


# Reading the inbox -----------------------------------------------------------------------------------------


async def test_the_inbox_shows_the_activity_as_it_is_now_and_only_your_own(db, actors, admin):
    activity = await new_activity(actors, subject="Call Ann", type=ActivityType.CALL, due_date=date(2026, 12, 3),
                                  due_time=time(10, 30), reminder_at=NOW)
    await new_activity(actors, "carol", subject="Carol's", reminder_at=NOW)
    await notify(db)

    async with actors.uow("bob") as uow:
        page = await notifications.list(uow)
        unread = await notifications.unread_count(uow)

    (item,) = page.items
    assert (item.kind, item.entity_type, item.entity_id, item.occasion, item.read_at) == (
        "activity_reminder", "activity", activity.id, NOW, None)
    assert (item.subject, item.activity_type, item.due_date, item.due_time) == (
        "Call Ann", ActivityType.CALL, date(2026, 12, 3), time(10, 30))
    assert (page.total, page.has_next, page.next_cursor, unread) == (1, False, None, 1)


async def test_a_record_gone_or_hidden_shows_no_details(db, actors, admin):
    deal_id = None
    async with actors.uow("bob") as uow:
        deal_id = (await deals.create(uow, DealCreate(title="Private", visibility=Visibility.OWNER))).id
    attached = await new_activity(actors, subject="On a private deal", deal_id=deal_id, reminder_at=NOW)
    gone = await new_activity(actors, subject="Deleted", reminder_at=NOW - timedelta(minutes=1))
    await notify(db)
    # carol becomes the owner of the activity, but the deal it hangs off stays bob's and owner-only
    admin.execute("update public.activities set owner_id = %s where id = %s", [actors.id("carol"), attached.id])
    admin.execute("update public.notifications set user_id = %s where entity_id = %s",
                  [actors.id("carol"), attached.id])
    async with actors.uow("bob") as uow:
        await activities.delete(uow, gone.id)

    async with actors.uow("bob") as uow:
        (bobs,) = (await notifications.list(uow)).items
    async with actors.uow("carol") as uow:
        (carols,) = (await notifications.list(uow)).items
    async with actors.uow("bob", scopes=frozenset({Scope.AI})) as uow:  # a token that may not read activities
        (unreadable,) = (await notifications.list(uow)).items

    assert (bobs.entity_id, bobs.subject, bobs.activity_type) == (gone.id, None, None)
    assert (carols.entity_id, carols.subject, carols.due_date) == (attached.id, None, None)
    assert (unreadable.entity_id, unreadable.subject) == (gone.id, None)


async def test_pages_are_exact_unread_first_then_newest_first(db, actors, admin):
    bob = actors.id("bob")
    base = datetime(2026, 11, 1, tzinfo=UTC)
    seeded = [(seed(admin, bob, created_at=base + i * HOUR, read=i % 3 == 0), i % 3 != 0, base + i * HOUR)
              for i in range(10)]
    same_time = [(seed(admin, bob, created_at=base + 4 * HOUR), True, base + 4 * HOUR) for _ in range(2)]
    seed(admin, actors.id("carol"), created_at=base)
    expected = [i for i, _, _ in sorted(seeded + same_time, key=lambda s: (s[1], s[2], s[0]), reverse=True)]

    seen, after, pages = [], None, 0
    while True:
        async with actors.uow("bob") as uow:
            page = await notifications.list(uow, PageRequest(limit=5, after=after))
        assert page.total == 12
        seen += [n.id for n in page.items]
        pages += 1
        if not page.has_next:
            assert page.next_cursor is None
            break
        after = page.next_cursor

    assert (seen, pages) == (expected, 3)
    unread = [i for i, is_unread, _ in sorted(seeded + same_time, key=lambda s: (s[1], s[2], s[0]), reverse=True)
              if is_unread]
    async with actors.uow("bob") as uow:
        first = await notifications.list(uow, PageRequest(limit=4), unread_only=True)
        rest = await notifications.list(uow, PageRequest(limit=4, after=first.next_cursor), unread_only=True)
    assert [n.id for n in first.items + rest.items] == unread
    assert (first.total, len(unread), rest.has_next) == (8, 8, False)


@pytest.mark.parametrize("after", ["x", "u.", "r.!!", "q." + "A" * 20, "u." + "A" * 300, ""])
async def test_a_malformed_cursor_is_invalid(actors, after):
    async with actors.uow("bob") as uow:
        with pytest.raises(Invalid) as refused:
            await notifications.list(uow, PageRequest(after=after))
    assert refused.value.field == "after"


async def test_the_system_has_no_inbox(db):
    async with db.unit_of_work(SYSTEM) as uow:
        with pytest.raises(Forbidden):
            await notifications.list(uow)


# Marking read ----------------------------------------------------------------------------------------------


async def test_mark_read_is_idempotent_and_writes_only_the_first_time(db, actors, admin):
    notification_id = seed(admin, actors.id("bob"), created_at=NOW)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        first = await notifications.mark_read(uow, notification_id)
    read_at = admin.execute("select read_at from public.notifications").fetchone()[0]
    async with actors.uow("bob") as uow:
        again = await notifications.mark_read(uow, notification_id)
        unread = await notifications.unread_count(uow)

    assert first.read_at == again.read_at == read_at is not None
    assert admin.execute("select read_at from public.notifications").fetchone()[0] == read_at
    assert unread == 0
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


@pytest.mark.parametrize("key", ["carol", "alice", "mia"])
async def test_another_users_notification_is_not_found_and_stays_unread(db, actors, admin, key):
    notification_id = seed(admin, actors.id("bob"), created_at=NOW)

    async with actors.uow(key) as uow:
        with pytest.raises(NotFound):
            await notifications.mark_read(uow, notification_id)
        assert await notifications.mark_all_read(uow) == 0
        assert (await notifications.list(uow)).items == []

    assert admin.execute("select read_at from public.notifications").fetchall() == [(None,)]


async def test_an_unknown_notification_is_not_found(actors):
    async with actors.uow("bob") as uow:
        with pytest.raises(NotFound, match="notification"):
            await notifications.mark_read(uow, uuid4())


async def test_mark_all_read_counts_only_the_newly_read_and_only_your_own(db, actors, admin):
    for i in range(3):
        seed(admin, actors.id("bob"), created_at=NOW + i * HOUR, read=i == 0)
    seed(admin, actors.id("carol"), created_at=NOW)

    async with actors.uow("bob", scopes=frozenset({Scope.READ})) as uow:  # own inbox state: any token may
        assert await notifications.mark_all_read(uow) == 2
    async with actors.uow("bob") as uow:
        assert await notifications.mark_all_read(uow) == 0

    owners_unread = admin.execute(
        "select u.email from public.notifications n join public.user_profiles u on u.id = n.user_id"
        " where n.read_at is null").fetchall()
    assert owners_unread == [("carol@example.com",)]


# Row Level Security on its own -----------------------------------------------------------------------------


async def test_rls_shows_and_lets_change_only_your_own_notifications(app_url, actors, admin):
    bobs = seed(admin, actors.id("bob"), created_at=NOW)

    with rls_session(app_url, actors.id("carol")) as conn:
        assert conn.execute("select id from public.notifications").fetchall() == []
        assert conn.execute("update public.notifications set read_at = now()").rowcount == 0
        assert conn.execute("select count(*) from public.notifications where id = %s", [bobs]).fetchone() == (0,)
    with rls_session(app_url, actors.id("bob")) as conn:
        assert conn.execute("select id from public.notifications").fetchall() == [(bobs,)]
        assert conn.execute("update public.notifications set read_at = %s", [NOW]).rowcount == 1

    assert admin.execute("select read_at from public.notifications").fetchall() == [(NOW,)]


@pytest.mark.parametrize(
    "statement",
    [
        "update public.notifications set user_id = %(carol)s",
        "update public.notifications set occasion = now()",
        "delete from public.notifications",
        "insert into public.notifications (user_id, kind, entity_type, entity_id, occasion)"
        " values (%(bob)s, 'activity_reminder', 'activity', gen_random_uuid(), now())",
    ],
    ids=["give-away", "other-column", "delete", "insert"],
)
async def test_rls_session_may_change_nothing_but_read_at(app_url, actors, admin, statement):
    seed(admin, actors.id("bob"), created_at=NOW)
    before = admin.execute("select * from public.notifications").fetchall()

    with pytest.raises(InsufficientPrivilege):
        with rls_session(app_url, actors.id("bob")) as conn:
            conn.execute(statement, {"bob": actors.id("bob"), "carol": actors.id("carol")})

    assert admin.execute("select * from public.notifications").fetchall() == before


async def test_anonymous_sessions_cannot_read_notifications(app_url, actors, admin):
    seed(admin, actors.id("bob"), created_at=NOW)

    with pytest.raises(InsufficientPrivilege):
        with psycopg.connect(app_url) as conn, conn.transaction():
            conn.execute("select set_config('role', 'anon', true)")
            conn.execute("select * from public.notifications")


async def test_an_unknown_kind_is_refused_by_the_database(admin, actors):
    with pytest.raises(psycopg.errors.CheckViolation, match="notifications_kind_known"):
        admin.execute(
            "insert into public.notifications (user_id, kind, entity_type, entity_id, occasion)"
            " values (%s, 'gossip', 'activity', gen_random_uuid(), now())", [actors.id("bob")])


def test_the_kinds_the_database_accepts_are_the_service_s_kinds(admin):
    (definition,) = admin.execute(
        "select pg_get_constraintdef(oid) from pg_constraint where conname = 'notifications_kind_known'"
    ).fetchone()

    assert sorted(re.findall(r"'(\w+)'::text", definition)) == sorted(k.value for k in NotificationKind)


async def test_the_inbox_index_serves_the_page_query_without_a_sort(admin, actors):
    for i in range(50):
        seed(admin, actors.id("bob"), created_at=NOW + i * HOUR, read=i % 2 == 0)
    admin.execute("analyze public.notifications")
    with admin.transaction():  # a table this small is cheaper to scan: ask whether the index can serve it
        admin.execute("set local enable_seqscan = off")
        plan = admin.execute(
            "explain (format json) select id from public.notifications n where n.user_id = %s"
            " and ((n.read_at is null), n.created_at, n.id) < (true, %s, %s)"
            " order by (n.read_at is null) desc, n.created_at desc, n.id desc limit 26",
            [actors.id("bob"), NOW + 10 * HOUR, uuid4()],
        ).fetchone()[0]
    scan = plan[0]["Plan"]["Plans"][0]
    assert (scan["Index Name"], scan["Scan Direction"]) == ("notifications_inbox_idx", "Backward")
    assert "created_at" in scan["Index Cond"] and "Filter" not in scan, scan  # the cursor bounds the scan


# GraphQL over HTTP -----------------------------------------------------------------------------------------

INBOX = """query($first: Int!, $after: String, $unreadOnly: Boolean!) { me {
  unreadNotificationCount
  notifications(first: $first, after: $after, unreadOnly: $unreadOnly) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id kind entityType entityId occasion readAt subject dueDate dueTime activityType } }
  } } }"""
MARK_READ = "mutation($id: UUID!) { markNotificationRead(id: $id) { id readAt subject } }"
MARK_ALL = "mutation { markAllNotificationsRead }"


async def inbox(api, *, first: int = 25, after: str | None = None, unread_only: bool = False, **login):
    return await api.query(INBOX, {"first": first, "after": after, "unreadOnly": unread_only}, **login)


async def test_graphql_me_lists_your_notifications_in_pages_with_the_activity(api, db, actors, admin):
    activity = await new_activity(actors, subject="Call Ann", type=ActivityType.MEETING, due_date=date(2026, 12, 3),
                                  reminder_at=NOW)
    await notify(db)
    older = seed(admin, actors.id("bob"), created_at=NOW - HOUR, read=True)
    seed(admin, actors.id("carol"), created_at=NOW)

    first = await inbox(api, first=1)
    second = await inbox(api, first=1, after=first["data"]["me"]["notifications"]["pageInfo"]["endCursor"])

    page = first["data"]["me"]["notifications"]
    (edge,) = page["edges"]
    assert first["data"]["me"]["unreadNotificationCount"] == 1
    assert (page["totalCount"], page["pageInfo"]["hasNextPage"], page["pageInfo"]["endCursor"]) == (
        2, True, edge["cursor"])
    assert {k: v for k, v in edge["node"].items() if k != "id"} == {
        "kind": "ACTIVITY_REMINDER", "entityType": "activity", "entityId": str(activity.id),
        "occasion": NOW.isoformat(), "readAt": None, "subject": "Call Ann", "dueDate": "2026-12-03",
        "dueTime": None, "activityType": "MEETING"}
    rest = second["data"]["me"]["notifications"]
    assert [e["node"]["id"] for e in rest["edges"]] == [str(older)]
    assert (rest["pageInfo"]["hasNextPage"], rest["totalCount"]) == (False, 2)
    only_unread = (await inbox(api, unread_only=True))["data"]["me"]["notifications"]
    assert [e["node"]["entityId"] for e in only_unread["edges"]] == [str(activity.id)]


@pytest.mark.parametrize(("variables", "field", "message"), [
    ({"first": 0}, "first", "first must be between 1 and 100"),
    ({"after": "not-a-cursor"}, "after", "malformed cursor"),
])
async def test_graphql_bad_page_arguments_are_bad_user_input(api, variables, field, message):
    body = await inbox(api, **variables)

    assert body["data"] is None
    (error,) = body["errors"]
    assert (error["message"], error["path"], error["extensions"]) == (
        message, ["me", "notifications"], {"code": "BAD_USER_INPUT", "field": field})


async def test_graphql_marking_read_is_idempotent_and_another_users_is_not_found(api, actors, admin):
    notification_id = seed(admin, actors.id("bob"), created_at=NOW)
    seed(admin, actors.id("bob"), created_at=NOW + HOUR)
    forget_bookkeeping(admin)

    refused = await api.query(MARK_READ, {"id": str(notification_id)}, as_="carol")
    assert admin.execute("select count(*) from public.notifications where read_at is not null").fetchone() == (0,)
    first = await api.query(MARK_READ, {"id": str(notification_id)}, scopes=[Scope.READ])
    again = await api.query(MARK_READ, {"id": str(notification_id)})
    everything = await api.query(MARK_ALL)
    nothing_left = await api.query(MARK_ALL)

    assert refused == {"data": None, "errors": [{
        "message": f"notification {notification_id} not found", "locations": [{"line": 1, "column": 24}],
        "path": ["markNotificationRead"], "extensions": {"code": "NOT_FOUND"}}]}
    read_at = admin.execute("select read_at from public.notifications where id = %s", [notification_id]).fetchone()[0]
    assert first == again == {"data": {"markNotificationRead": {
        "id": str(notification_id), "readAt": read_at.isoformat(), "subject": None}}}
    assert (everything, nothing_left) == ({"data": {"markAllNotificationsRead": 1}},
                                          {"data": {"markAllNotificationsRead": 0}})
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


# MCP, through the in-memory client -------------------------------------------------------------------------


def mcp_client(db, company, key: str, *, scopes: frozenset[Scope] | None = None) -> Client:
    principal = company.principal(key, scopes=scopes, channel=Channel.MCP)

    async def caller():
        return principal

    return Client(create_server(db, caller))


def tool_calls(admin) -> list[tuple[str, str]]:
    return admin.execute("select operation, diff->'after'->>'outcome' from public.audit_log"
                         " where entity_type = 'mcp_tool_call' order by id").fetchall()


async def test_mcp_list_notifications_pages_your_inbox_with_a_read_only_token(db, actors, company, admin):
    activity = await new_activity(actors, subject="Call Ann", due_date=date(2026, 12, 3), reminder_at=NOW)
    await notify(db)
    bob = actors.id("bob")
    older = [seed(admin, bob, created_at=NOW - i * HOUR, read=True) for i in range(1, 27)]
    seed(admin, actors.id("carol"), created_at=NOW)
    forget_bookkeeping(admin)

    async with mcp_client(db, company, "bob", scopes=frozenset({Scope.READ})) as client:
        first = await client.call_tool("list_notifications", {})
        rest = await client.call_tool("list_notifications", {"cursor": first.structured_content["next_cursor"]})
        unread = await client.call_tool("list_notifications", {"unread_only": True})

    page = first.structured_content
    assert (page["total"], page["has_next"], page["truncated"], len(page["items"])) == (27, True, False, 25)
    top = page["items"][0]
    assert (top["entity_id"], top["subject"], top["due_date"], top["activity_type"], top["read_at"]) == (
        str(activity.id), "Call Ann", "2026-12-03", "task", None)
    assert [i["id"] for i in page["items"][1:] + rest.structured_content["items"]] == [str(n) for n in older]
    assert rest.structured_content["has_next"] is False
    assert [i["entity_id"] for i in unread.structured_content["items"]] == [str(activity.id)]
    assert "<crm-data>" in first.content[0].text
    assert tool_calls(admin) == [("tool.list_notifications", "ok")] * 3


async def test_mcp_mark_notifications_read_is_idempotent_and_refuses_another_users_whole(db, actors, company, admin):
    mine = [seed(admin, actors.id("bob"), created_at=NOW + i * HOUR) for i in range(2)]
    carols = seed(admin, actors.id("carol"), created_at=NOW)

    async with mcp_client(db, company, "bob", scopes=frozenset({Scope.READ})) as client:
        refused = await client.call_tool("mark_notifications_read",
                                         {"notification_ids": [str(mine[0]), str(carols)]})
        unchanged = admin.execute("select count(*) from public.notifications where read_at is null").fetchone()
        marked = await client.call_tool("mark_notifications_read", {"notification_ids": [str(n) for n in mine]})
        read_at = admin.execute("select array_agg(read_at order by id) from public.notifications"
                                " where user_id = %s", [actors.id("bob")]).fetchone()[0]
        again = await client.call_tool("mark_notifications_read", {"notification_ids": [str(mine[0])]})

    assert refused.is_error and refused.content[0].text.startswith(f"[not_found] notification {carols} not found")
    assert unchanged == (3,)
    assert sorted(n["id"] for n in marked.structured_content["result"]) == sorted(str(n) for n in mine)
    assert all(n["read_at"] is not None for n in marked.structured_content["result"])
    assert again.structured_content["result"][0]["read_at"] == next(
        n["read_at"] for n in marked.structured_content["result"] if n["id"] == str(mine[0]))
    assert admin.execute("select array_agg(read_at order by id) from public.notifications"
                         " where user_id = %s", [actors.id("bob")]).fetchone()[0] == read_at
    assert admin.execute("select read_at from public.notifications where id = %s", [carols]).fetchone() == (None,)
    assert [op for op, _ in tool_calls(admin)] == ["tool.mark_notifications_read"] * 3
    assert counts(admin, "outbox") == {"outbox": 0}


async def test_mcp_notifications_resource_is_the_callers_newest_25_unread_first(db, actors, company, admin):
    bob = actors.id("bob")
    read = [seed(admin, bob, created_at=NOW + i * HOUR, read=True) for i in range(30)]
    unread = seed(admin, bob, created_at=NOW - HOUR)
    seed(admin, actors.id("carol"), created_at=NOW + 99 * HOUR)

    async with mcp_client(db, company, "bob", scopes=frozenset({Scope.READ})) as client:
        result = await client.read_resource("crm://me/notifications")

    got = json.loads(result.contents[0].text)
    assert [i["id"] for i in got["items"]] == [str(unread), *[str(n) for n in reversed(read)][:24]]
    assert (got["total"], got["has_next"], got["truncated"]) == (31, True, False)

"""Shared mechanics for owned records: the record rules in Python, and the row operations every domain uses
(fetch, insert, versioned update, delete, paged list). The RLS policies enforce the same rules again in SQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from psycopg import sql

from services.kernel.errors import Conflict, Forbidden, NotFound
from services.kernel.pagination import NEWEST_FIRST, Count, Order, Page, PageRequest, build_page, keyset
from services.kernel.uow import Row, UnitOfWork

T = TypeVar("T")


class Visibility(StrEnum):
    OWNER = "owner"
    TEAM = "team"
    COMPANY = "company"


async def owner_team_ids(uow: UnitOfWork, owner_id: UUID) -> frozenset[UUID]:
    rows = await uow.all("select team_id from public.team_members where user_id = %s", [owner_id])
    return frozenset(r["team_id"] for r in rows)


async def may_change(uow: UnitOfWork, owner_id: UUID) -> bool:
    """Admins, the owner, and managers of a team the owner is in may change a record."""
    principal = uow.principal
    if principal.is_admin or owner_id == principal.user_id:
        return True
    if principal.is_manager:
        return bool(principal.team_ids & await owner_team_ids(uow, owner_id))
    return False


async def ensure_can_change(uow: UnitOfWork, entity: str, entity_id: UUID | None, owner_id: UUID) -> None:
    if not await may_change(uow, owner_id):
        target = f"{entity} {entity_id}" if entity_id else f"a {entity} owned by user {owner_id}"
        raise Forbidden(f"only the owner, a manager of the owner's team, or an admin may change {target}")


async def ensure_can_own(uow: UnitOfWork, entity: str, owner_id: UUID) -> None:
    """Assigning a record to `owner_id` is allowed to whoever could change that owner's records."""
    if owner_id == uow.user_id:
        return
    exists = await uow.one("select 1 from public.user_profiles where id = %s", [owner_id])
    if exists is None:
        raise NotFound("user", owner_id)
    await ensure_can_change(uow, entity, None, owner_id)


async def fetch(uow: UnitOfWork, table: str, entity: str, entity_id: UUID, *, lock: bool = False) -> Row:
    """The row, or NotFound (also when RLS hides it)."""
    query = sql.SQL("select * from {} where id = %s{}").format(
        sql.Identifier("public", table), sql.SQL(" for update") if lock else sql.SQL("")
    )
    row = await uow.one(query.as_string(), [entity_id])
    if row is None:
        raise NotFound(entity, entity_id)
    return row


def among(column: str, keys: Sequence[Any]) -> tuple[str, Any]:
    """The condition `column = any(keys)` (with one placeholder) and its parameter, for a batch read by key.

    One key is compared as a scalar. With an array parameter Postgres plans the statement afresh on every
    execution when the array is short (a custom plan for its one key looks cheaper than a generic plan for a
    list of unknown length), so reading one record's notes, say, would pay for planning every time; a scalar
    comparison is planned once per connection."""
    if len(keys) == 1:
        return f"{column} = %s", keys[0]
    return f"{column} = any(%s)", list(keys)


async def fetch_many(uow: UnitOfWork, table: str, ids: list[UUID]) -> list[Row]:
    condition, keys = among("id", ids)
    return await uow.all(f"select * from {sql.Identifier('public', table).as_string()} where {condition}", [keys])


async def insert(
    uow: UnitOfWork, table: str, values: Mapping[str, Any], *, select: str = "t.*", joins: str = ""
) -> Row:
    """The inserted row as `select` reads it (alias `t`, plus columns of left `joins`), in the same statement:
    a record that shows columns of related rows needs no second round trip to read itself back."""
    insert = sql.SQL("insert into {} ({}) values ({}) returning *").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(sql.Identifier(k) for k in values),
        sql.SQL(", ").join(sql.Placeholder() for _ in values),
    )
    query = insert.as_string()
    if select != "t.*" or joins:
        query = f"with t as ({query}) select {select} from t {joins}"
    row = await uow.one(query, list(values.values()))
    assert row is not None
    return row


async def fetch_for_change(
    uow: UnitOfWork, table: str, entity: str, entity_id: UUID, *, owner_column: str = "owner_id"
) -> Row:
    """The row, locked until this transaction ends, once the caller may change it (else NotFound/Forbidden).

    Every change reads its record through here, so concurrent changes of one record take turns: the second
    waits for the first to commit and then sees its result. That makes a state transition (win, archive,
    complete) happen once, and the state checks and audit `before` values read under the lock are current.
    The lock is taken only after the permission check: FOR UPDATE also applies the update policy, which would
    hide a visible record the caller may not change (NotFound instead of Forbidden)."""
    seen = await fetch(uow, table, entity, entity_id)
    await ensure_can_change(uow, entity, entity_id, seen[owner_column])
    row = await fetch(uow, table, entity, entity_id, lock=True)
    if row[owner_column] != seen[owner_column]:  # reassigned while we waited
        await ensure_can_change(uow, entity, entity_id, row[owner_column])
    return row


def differs(changes: Mapping[str, Any]) -> tuple[sql.Composable, list[Any]]:
    """A condition true when a row's columns differ from `changes` (NULL-safe), with its parameters."""
    if not changes:
        return sql.SQL("false"), []
    condition = sql.SQL(" or ").join(
        sql.SQL("{} is distinct from %s").format(sql.Identifier(k)) for k in changes
    )
    return sql.SQL("({})").format(condition), list(changes.values())


async def update(
    uow: UnitOfWork,
    table: str,
    entity: str,
    entity_id: UUID,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
) -> Row | None:
    """Apply `changes` and return the changed row, or None when the row already holds these values: then
    nothing is written (no version bump) and the caller writes no audit row and emits no event.

    With `expected_version`, a real change is refused with Conflict if someone else changed the row first.
    The values are compared first: a change that changes nothing succeeds whatever the version, so a retry
    of a call that went through (with the version it read before) gets the record, not a Conflict."""
    if_differs, differs_params = differs(changes)
    query = sql.SQL("update {} set {} where id = %s{} and {} returning *").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
        if changes
        else sql.SQL("version = version"),
        sql.SQL(" and version = %s") if expected_version is not None else sql.SQL(""),
        if_differs,
    )
    params: list[Any] = [*changes.values(), entity_id]
    if expected_version is not None:
        params.append(expected_version)
    row = await uow.one(query.as_string(), [*params, *differs_params])
    if row is not None:
        return row
    current = await uow.one(
        sql.SQL("select version, {} as differs from {} where id = %s")
        .format(if_differs, sql.Identifier("public", table))
        .as_string(),
        [*differs_params, entity_id],
    )
    if current is None:
        raise NotFound(entity, entity_id)
    if not current["differs"]:
        return None
    if expected_version is not None and current["version"] != expected_version:
        raise Conflict(
            f"{entity} {entity_id} was changed by someone else (version {current['version']},"
            f" expected {expected_version}); reload it and try again"
        )
    raise Forbidden(f"the database refused this change to {entity} {entity_id}")


async def delete(uow: UnitOfWork, table: str, entity: str, entity_id: UUID) -> None:
    query = sql.SQL("delete from {} where id = %s").format(sql.Identifier("public", table))
    if await uow.execute(query.as_string(), [entity_id]) == 0:
        raise NotFound(entity, entity_id)


async def list_page(
    uow: UnitOfWork,
    *,
    table: str,
    where: list[str],
    params: list[Any],
    page: PageRequest,
    item: Callable[[Row], T],
    select: str = "t.*",
    joins: str = "",
    order: Order = NEWEST_FIRST,
) -> Page[T]:
    """One filtered, keyset-paginated page (alias `t`, read in `order`) plus the filter's count (if the page
    request asks for it). The selected columns include the order's key; `joins` only add columns (left joins), so
    the count skips them."""
    conditions = " and ".join(where) or "true"
    total = await count(uow, f"public.{table} t where {conditions}", params, page)
    after_sql, after_params = keyset("t", page, order)
    # The limit is written in, not a parameter: with a parameter for it Postgres plans the page afresh on every
    # read (a generic plan for an unknown limit looks costlier than any custom one). Validated as an int from 1 to
    # MAX_LIMIT, it makes a handful of prepared statements, each planned once per connection.
    rows = await uow.all(
        f"select {select} from public.{table} t {joins} where {conditions} and {after_sql}"
        f" order by {order.order_by()} limit {int(page.limit) + 1}",
        [*params, *after_params],
    )
    return build_page(rows, page, total, item, order)


async def count(uow: UnitOfWork, rows: str, params: list[Any], page: PageRequest) -> Count:
    """How many of `rows` (`<table> <alias> where <conditions>`) there are, up to the unit of work's count limit:
    reading one more row than the limit tells whether there are more, without reading them all."""
    if not page.count:
        return Count(None)
    row = await uow.one(f"select count(*) as n from (select from {rows} limit %s) counted", [*params,
                                                                                             uow.count_limit + 1])
    n = row["n"] if row else 0
    return Count(min(n, uow.count_limit), capped=n > uow.count_limit)

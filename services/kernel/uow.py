"""The database pool and the unit of work: one transaction that runs AS the principal.

Every unit of work starts with `request.jwt.claims` and `role` set transaction-locally, so each statement
inside passes the RLS policies as that user (`authenticated`) or as the system (`service_role`). Services
write through it, append audit rows, and emit events; the audit rows and the events are written together,
in one statement, just before commit, in the same transaction. Services never commit: leaving the
`async with` block does.

Round trips are what a request pays most for on a small machine, so a unit of work spends few: BEGIN, the
settings and an opening query (the caller's roles) go out together; reads started together go out together
(`reads_together`); the bookkeeping statement goes out with COMMIT.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic_core import to_jsonable_python

from services.kernel.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError, Unavailable
from services.kernel.pagination import COUNT_LIMIT
from services.kernel.principal import AnyPrincipal, SystemPrincipal

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any] | None


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    id: str | None = None  # None: the outbox row's own id


@dataclass(frozen=True)
class AuditRow:
    operation: str
    entity_type: str
    entity_id: UUID | None
    diff: dict[str, Any]


@dataclass(frozen=True)
class _Read:
    query: str
    params: Params
    rows: asyncio.Future[list[Row]]


@dataclass
class UnitOfWork:
    conn: psycopg.AsyncConnection[Row]
    principal: AnyPrincipal
    events: list[Event] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)
    opening_row: Row | None = None  # the first row of the query the transaction was opened with, if any
    count_limit: int = COUNT_LIMIT  # lists count their matches up to this many (see records.count)
    # Reads are sent together inside `reads_together` blocks (how many are open), those waiting here; a statement
    # is sent, and its rows read, holding `_sending`, so that no two interleave on the connection.
    _together: int = field(default=0, repr=False)
    _waiting: list[_Read] = field(default_factory=list, repr=False)
    _sending: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def user_id(self) -> UUID | None:
        return self.principal.user_id

    # Queries. Database errors that the service layer did not pre-empt become domain errors here.

    async def one(self, query: str, params: Params = None) -> Row | None:
        async with self._sending:
            cur = await self._execute(query, params)
            return await cur.fetchone()

    async def all(self, query: str, params: Params = None) -> list[Row]:
        if self._together:
            return await self._read_together(query, params)
        async with self._sending:
            cur = await self._execute(query, params)
            return await cur.fetchall()

    async def execute(self, query: str, params: Params = None) -> int:
        async with self._sending:
            cur = await self._execute(query, params)
            return cur.rowcount

    @asynccontextmanager
    async def reads_together(self) -> AsyncIterator[None]:
        """Within this block, the `all` reads that concurrent tasks start at the same moment (e.g. the batch reads
        of one level of a GraphQL selection, gathered) are sent to the database in one round trip, a psycopg
        pipeline, rather than one after another: on a small machine each round trip costs as much CPU as a small
        query. A read that comes later is sent with the next ones, or alone; the answers are the same either way.
        If one read of a batch fails, the transaction is aborted and every read of it fails."""
        self._together += 1
        try:
            yield
        finally:
            self._together -= 1

    async def _read_together(self, query: str, params: Params) -> list[Row]:
        read = _Read(query, params, asyncio.get_running_loop().create_future())
        self._waiting.append(read)
        if len(self._waiting) > 1:  # the first reader of this moment sends them all
            return await read.rows
        batch: list[_Read] = []
        try:
            await asyncio.sleep(0)  # the other tasks of this moment add their reads
            batch, self._waiting = self._waiting, []
            async with self._sending:
                if len(batch) == 1:
                    cursors = [await self._execute(query, params)]
                else:
                    async with self.conn.pipeline():
                        cursors = [await self._execute(r.query, r.params) for r in batch]
                for r, cursor in zip(batch, cursors, strict=True):
                    rows = await cursor.fetchall()
                    if not r.rows.done():  # (a reader whose task was cancelled meanwhile is done)
                        r.rows.set_result(rows)
        except BaseException as exc:
            if not batch:  # cancelled before sending: the reads that joined fail with it
                batch, self._waiting = self._waiting, []
            mapped = domain_error(exc) if isinstance(exc, psycopg.Error) else None
            for r in batch:
                if r is not read and not r.rows.done():
                    if isinstance(exc, Exception):
                        r.rows.set_exception(mapped or exc)
                    else:
                        r.rows.cancel()
            if mapped is not None:
                raise mapped from exc
            raise
        return read.rows.result()

    async def _execute(self, query: str, params: Params) -> psycopg.AsyncCursor[Row]:
        try:
            return await self.conn.execute(query, params)
        except psycopg.Error as exc:
            if (mapped := domain_error(exc)) is None:
                raise
            raise mapped from exc

    # Bookkeeping.

    def emit(self, name: str, /, *, event_id: str | None = None, **data: Any) -> None:
        """Record a past-tense domain event; it reaches the outbox if and when this unit of work commits.
        `event_id` names it (e.g. one digest per user and week): emitting an id the outbox has is a no-op."""
        self.events.append(Event(name, to_jsonable_python(data), event_id))

    async def audit(
        self,
        operation: str,
        entity_type: str,
        entity_id: UUID | None,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an audit row with the changed fields' before/after values. It is written with the events (see
        flush_events), in order, in the round trip that commits (see commit). The database
        function fixes the actor, the time and the channel, and refuses an operation the caller's permissions
        do not produce; that refusal fails the commit, and with it the change."""
        self.audits.append(AuditRow(operation, entity_type, entity_id, audit_diff(before, after)))

    async def flush_events(self) -> int:
        """Write the pending audit rows and events now, in one round trip, through the database functions that
        fix the actor, the time and the channel and refuse what the caller's permissions do not produce;
        returns how many events were new (an id already in the outbox is skipped). Commit writes what is
        left (see `commit`)."""
        if (statement := self._bookkeeping()) is None:
            return 0
        row = await self.one(*statement)
        emitted = 0 if not self.events or row is None else int(row["emitted"])
        self.audits.clear()
        self.events.clear()
        return emitted

    async def commit(self) -> None:
        """Write what is pending (as `flush_events`) and commit, in one round trip: a pipeline of the two."""
        if (statement := self._bookkeeping()) is None:
            await self.conn.commit()
            return
        async with self._sending:
            async with self.conn.pipeline():
                await self._execute(*statement)
                # COMMIT as a statement of the pipeline: psycopg's commit() syncs the pipeline itself, which
                # stalls behind a large statement still being sent (measured: ~1 MB of audit rows)
                await self.conn.execute("COMMIT", prepare=False)
        self.audits.clear()
        self.events.clear()

    def _bookkeeping(self) -> tuple[str, list[Any]] | None:
        """The statement writing the pending audit rows and events, if there are any."""
        if not self.audits and not self.events:
            return None
        columns: list[str] = []
        params: list[Any] = []
        if self.audits:
            columns.append(
                "(select count(private.append_audit(a.operation, a.entity_type, a.entity_id, a.diff))"
                " from jsonb_to_recordset(%s) as a(operation text, entity_type text, entity_id uuid, diff jsonb))"
                " as audited"
            )
            params.append(Jsonb([
                {"operation": a.operation, "entity_type": a.entity_type, "entity_id": to_jsonable_python(a.entity_id),
                 "diff": a.diff}
                for a in self.audits
            ]))
        if self.events:
            columns.append("private.emit_events(%s) as emitted")
            params.append(
                Jsonb([{"name": e.name, "data": e.data, **({"id": e.id} if e.id else {})} for e in self.events])
            )
        return f"select {', '.join(columns)}", params


def domain_error(exc: psycopg.Error) -> ServiceError | None:
    """The domain error for a database error the service layer did not pre-empt (None: not a domain matter)."""
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return Forbidden("the database refused this change for the current user")
    if isinstance(exc, pg_errors.CheckViolation):
        return Invalid(f"violates rule {exc.diag.constraint_name}")
    if isinstance(exc, pg_errors.NotNullViolation):
        return Invalid(f"{exc.diag.column_name} is required", field=exc.diag.column_name)
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict(f"already exists ({exc.diag.constraint_name}); reload and try again")
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return Invalid(f"refers to a record that does not exist ({exc.diag.constraint_name})")
    if isinstance(exc, psycopg.DataError):  # a value the column's type cannot hold (also NUL, refused client-side)
        return Invalid(exc.diag.message_primary or str(exc))
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return Conflict("a concurrent change got in the way; try again")
    if isinstance(exc, pg_errors.QueryCanceled) and "statement timeout" in str(exc.diag.message_primary or ""):
        return StatementTimeout()
    return None


class StatementTimeout(Unavailable):
    """A statement ran past the database's statement_timeout and was stopped: the request was too costly."""

    def __init__(self) -> None:
        super().__init__("the database stopped this request because it took too long; ask for less")


class PoolExhausted(Unavailable):
    """No database connection became free within the pool wait: the server is overloaded for now."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"the server is busy: no database connection became free within {waited:g} s")
        self.retry_after = max(1, round(waited))


def audit_diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{"before": {...}, "after": {...}}` restricted to fields that differ (all fields on create/delete)."""
    old = to_jsonable_python(dict(before or {}))
    new = to_jsonable_python(dict(after or {}))
    both = before is not None and after is not None
    keys = sorted(k for k in set(old) | set(new) if not both or old.get(k) != new.get(k))
    diff: dict[str, Any] = {}
    if before is not None:
        diff["before"] = {k: old.get(k) for k in keys if k in old}
    if after is not None:
        diff["after"] = {k: new.get(k) for k in keys if k in new}
    return diff


_SETTINGS = (
    "select set_config('request.jwt.claims', %s, true), set_config('role', %s, true),"
    " set_config('pipecd.channel', %s, true), set_config('statement_timeout', %s, true)"
)


class Database:
    """A pool of connections logged in as `authenticator` (never a superuser).

    Waiting for a connection is short (`pool_timeout`) and ends in `PoolExhausted`, so an overloaded server
    says so at once instead of holding every caller for half a minute. Every statement inside a unit of work
    is bounded by `statement_timeout` (seconds), whatever its shape. A task never holds two connections at
    once: a second unit of work opened while the first is open would wait for the pool while holding a
    connection, and enough such tasks at once starve it; it is refused (`NestedUnitOfWork`) instead.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        prepare: bool = True,
        pool_timeout: float = 5.0,
        statement_timeout: float = 8.0,
        count_limit: int = COUNT_LIMIT,
    ) -> None:
        self.conninfo = conninfo
        self.count_limit = count_limit
        self.pool_timeout = pool_timeout
        self.statement_timeout = statement_timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] = AsyncConnectionPool(
            conninfo,
            connection_class=psycopg.AsyncConnection[Row],
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"row_factory": dict_row, "prepare_threshold": 5 if prepare else None},
        )

    async def open(self) -> None:
        await self._pool.open(wait=True)
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute("select rolsuper, rolbypassrls from pg_roles where rolname = current_user")
            ).fetchone()
        if row is None or row["rolsuper"] or row["rolbypassrls"]:
            await self._pool.close()
            raise RuntimeError(
                "the app's database login must be an unprivileged role (authenticator), not a superuser"
            )

    async def close(self) -> None:
        await self._pool.close()

    async def applied_migrations(self) -> set[str]:
        """Versions recorded in the migration history (for readiness checks)."""
        async with self._pool.connection(timeout=5) as conn:
            cur = await conn.execute("select version from supabase_migrations.schema_migrations")
            return {row["version"] for row in await cur.fetchall()}

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        """A pool connection for this task, which must not hold one already (see the class docstring).

        A task cancelled mid-statement has psycopg cancel that statement on the server before the connection
        goes back to the pool, so a dropped request leaves nothing running."""
        task = asyncio.current_task()
        if task is not None and _holding.get() is task:
            raise NestedUnitOfWork()
        try:
            manager = self._pool.connection(timeout=self.pool_timeout)
            conn = await manager.__aenter__()
        except PoolTimeout as exc:
            raise PoolExhausted(self.pool_timeout) from exc
        _holding.set(task)
        try:
            yield conn
        except BaseException as exc:
            if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await manager.__aexit__(None, None, None)
        finally:
            _holding.set(None)

    def _timeout_setting(self) -> str:
        return f"{max(1, round(self.statement_timeout * 1000))}ms"

    @asynccontextmanager
    async def unit_of_work(self, principal: AnyPrincipal, *, opening: str | None = None) -> AsyncIterator[UnitOfWork]:
        """One transaction as `principal`; commits on normal exit, rolls back on any exception.

        `opening` is a query sent with the transaction's settings in one round trip (a pipeline); its first row
        is `uow.opening_row`. Authentication reads the caller's roles this way, in the request's own transaction."""
        role = "service_role" if isinstance(principal, SystemPrincipal) else "authenticated"
        settings = [json.dumps(principal.claims()), role, principal.channel.value, self._timeout_setting()]
        async with self._connection() as conn:
            try:
                # BEGIN (psycopg's own, this connection not being in autocommit mode), the settings and the
                # opening query go out together, and their answers come back together: one round trip. The
                # pipeline ends there: its deferred results would not suit the statements that follow.
                async with conn.pipeline():
                    await conn.execute(_SETTINGS, settings)
                    opened = await conn.execute(opening) if opening is not None else None
                opening_row = await opened.fetchone() if opened is not None else None
                uow = UnitOfWork(conn, principal, opening_row=opening_row, count_limit=self.count_limit)
                yield uow
                await uow.commit()  # a refused audit row, or a deferred constraint, fails here
            except BaseException as exc:
                await _roll_back(conn)
                if isinstance(exc, psycopg.Error) and (mapped := domain_error(exc)) is not None:
                    raise mapped from exc
                raise


async def _roll_back(conn: psycopg.AsyncConnection[Row]) -> None:
    """Roll back what the failed unit of work did, if the connection can still say so; if it cannot (a cancelled
    statement, a broken connection), the pool discards or resets the connection."""
    if conn.closed or conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
        return
    try:
        await conn.rollback()
    except Exception as exc:
        logger.warning("rollback failed on a unit of work's connection: %s", exc)


# The task that holds a pool connection, if this context's task does. Set and cleared with set() (not
# reset(token)): a unit of work may be left in another task than the one that entered it (a request's exit
# stack), where a token from the entering task's context is not valid. Tasks start with a copy of their
# parent's context, hence the task itself is stored: a task started by a holder is free to open its own.
_holding: ContextVar[asyncio.Task[Any] | None] = ContextVar("pipecd_holding_connection", default=None)


class NestedUnitOfWork(RuntimeError):
    """A unit of work was opened while the same task already holds one.

    Waiting for a second connection while holding one is how a pool starves: enough such callers at once
    hold every connection and all wait for one more. Finish (or reuse) the open unit of work first."""

    def __init__(self) -> None:
        super().__init__(
            "a unit of work was opened while this task already holds one; finish or reuse the open one first"
        )


def require_found(row: Row | None, entity: str, entity_id: object) -> Row:
    if row is None:
        raise NotFound(entity, entity_id)
    return row

"""GDPR erasure of a person, verified: erase, let in-flight work settle, then prove nothing is left.

An admin (`gdpr:erase`) requests it; the database (`private.request_erasure`) copies the person's identifiers
(full name, emails, phones) into the request, readable by the system only. The rest runs as the system, from a workflow:

- `erase` (one transaction): deletes the person, the notes and activities attached to them alone, and the AI
  summaries that used them or mention them; replaces every identifier with `[erased]` in every text, JSON and
  text-array column of schemas public, private and runner (the audit log through `private.redact_audit`, its
  only writer besides appending); deals, leads and organizations stay, unlinked. A PII-free audit row records
  the counts.
- `verify`: scans every text/JSON/array column of those schemas for the identifiers (`scan`), redacts and
  rescans once if anything turned up (work that was in flight during `erase`), then marks the erasure done,
  wipes the identifiers, announces it and notifies the requester; or marks it failed, naming where mentions
  remain.

Names shorter than four characters and phones with fewer than seven digits are not looked for: they would
match ordinary words and numbers (see `Identifiers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from services.contacts import service as contacts
from services.gdpr.schemas import Erasure, ErasureStatus, Hit, Identifiers
from services.kernel.errors import NotFound
from services.kernel.permissions import Perm, requires
from services.kernel.principal import require_system
from services.kernel.uow import Row, UnitOfWork

SCHEMAS = ("public", "private", "runner")
_COLUMNS = "id, person_id, requested_by, status, counts, hits, created_at, completed_at, error"
_PENDING = (ErasureStatus.QUEUED.value, ErasureStatus.ERASING.value, ErasureStatus.VERIFYING.value)
# Excluded from scans and redaction: the identifiers themselves (wiped when verified).
_IDENTIFIERS_COLUMN = ("public", "gdpr_erasures", "identifiers")
# The audit log is append-only: only private.redact_audit changes it.
_AUDIT_LOG = ("public", "audit_log")
_TEXT_TYPES = ("text", "character varying", "character")


@requires(Perm.GDPR_ERASE)
async def request_erasure(uow: UnitOfWork, person_id: UUID) -> Erasure:
    """Queue the erasure of a person you can see (else NotFound). While one is pending for the person, that one
    is returned and nothing is written."""
    if (pending := await _pending(uow, person_id)) is not None:
        return pending
    await contacts.get_person(uow, person_id)
    created = await uow.one("select private.request_erasure(%s) as id", [person_id])
    if created is None or created["id"] is None:  # a concurrent request won
        if (pending := await _pending(uow, person_id)) is None:
            raise NotFound("person", person_id)
        return pending
    row = await uow.one(f"select {_COLUMNS} from public.gdpr_erasures where id = %s", [created["id"]])
    erasure = Erasure.model_validate(row)
    await uow.audit("gdpr.request", "gdpr_erasure", erasure.id, after={"person_id": person_id})
    uow.emit("crm/gdpr.erasure.requested", erasure_id=erasure.id)
    return erasure


@requires(Perm.GDPR_ERASE)
async def get(uow: UnitOfWork, erasure_id: UUID) -> Erasure:
    """An erasure's progress and counts (never its identifiers)."""
    row = await uow.one(f"select {_COLUMNS} from public.gdpr_erasures where id = %s", [erasure_id])
    if row is None:
        raise NotFound("erasure", erasure_id)
    return Erasure.model_validate(row)


@requires(None)
async def erase(uow: UnitOfWork, erasure_id: UUID) -> dict[str, Any]:
    """Erase the person (system only; see the module docstring); returns what was deleted and redacted, per
    table. Run again after it committed, it changes nothing and returns the same counts."""
    require_system(uow.principal, "erases and verifies")
    row = await _locked(uow, erasure_id)
    if row["status"] != ErasureStatus.QUEUED:
        return dict(row["counts"])
    ids = Identifiers.model_validate(row["identifiers"])
    person_id = row["person_id"]
    alone = "person_id = %s and deal_id is null and lead_id is null and organization_id is null"
    deleted = {
        "ai_summaries": await uow.execute(
            "delete from public.ai_summaries where source_ids @> array[%s]::uuid[]"
            " or (subject_type = 'person' and subject_id = %s)"
            " or private.mentions(content::text, %s, %s)",
            [person_id, person_id, ids.patterns, ids.digit_patterns],
        ),
        "notes": await uow.execute(f"delete from public.notes where {alone}", [person_id]),
        "activities": await uow.execute(f"delete from public.activities where {alone}", [person_id]),
        "persons": await uow.execute("delete from public.persons where id = %s", [person_id]),
    }
    counts = {"deleted": deleted, "redacted": await _redact(uow, ids)}
    await uow.execute(
        "update public.gdpr_erasures set status = %s, counts = %s where id = %s",
        [ErasureStatus.ERASING.value, Jsonb(counts), erasure_id],
    )
    await uow.audit("gdpr.erased", "gdpr_erasure", erasure_id, after={"counts": counts})
    return counts


@requires(None)
async def verify(uow: UnitOfWork, erasure_id: UUID) -> int:
    """Prove the erasure (system only): scan, redact and rescan once if anything is found; then done (identifiers
    wiped, `crm/gdpr.erasure.completed` emitted, the requester notified) or failed naming where mentions remain.
    Returns the hits of the final scan. Run again, a failed erasure is verified again (the identifiers are kept
    until it is done); a done one returns 0."""
    require_system(uow.principal, "erases and verifies")
    row = await _locked(uow, erasure_id)
    if row["status"] == ErasureStatus.DONE:
        return 0
    await uow.execute(
        "update public.gdpr_erasures set status = 'verifying', completed_at = null where id = %s", [erasure_id]
    )
    ids = Identifiers.model_validate(row["identifiers"])
    found = await scan(uow, ids)
    if found:  # work that was in flight while erasing: redact it too, then look again
        await uow.execute(
            "update public.gdpr_erasures set counts = counts || jsonb_build_object('found_when_verifying', %s::int)"
            " where id = %s",
            [sum(h.rows for h in found), erasure_id],
        )
        await _redact(uow, ids)
        found = await scan(uow, ids)
    hits = sum(h.rows for h in found)
    if hits:
        where = ", ".join(f"{h.table}.{h.column} ({h.rows})" for h in found)
        await uow.execute(
            "update public.gdpr_erasures set status = 'failed', hits = %s, completed_at = now(), error = left(%s, 2000)"
            " where id = %s",
            [hits, f"{hits} mentions remain after redacting twice: {where}", erasure_id],
        )
        return hits
    done = await uow.one(
        "update public.gdpr_erasures set status = 'done', hits = 0, identifiers = null, completed_at = now(),"
        " error = null"
        " where id = %s returning requested_by, completed_at",
        [erasure_id],
    )
    assert done is not None  # locked above
    if done["requested_by"] is not None:
        await uow.execute(
            "insert into public.notifications (user_id, kind, entity_type, entity_id, occasion)"
            " values (%s, 'erasure_done', 'gdpr_erasure', %s, %s) on conflict (kind, entity_id, occasion) do nothing",
            [done["requested_by"], erasure_id, done["completed_at"]],
        )
    uow.emit("crm/gdpr.erasure.completed", erasure_id=erasure_id)
    return 0


@requires(None)
async def record_failure(uow: UnitOfWork, erasure_id: UUID, reason: str) -> None:
    """Note why the workflow gave up on an erasure that is not done (system only). Its status stays as it was, so
    retrying the run carries on where it stopped; meanwhile a new request for the person returns this one, with
    the reason."""
    require_system(uow.principal, "erases and verifies")
    await uow.execute(
        "update public.gdpr_erasures set error = left(%s, 2000) where id = %s and status <> 'done'",
        [reason, erasure_id],
    )


@requires(None)
async def is_erased(uow: UnitOfWork, record_ids: Sequence[UUID]) -> bool:
    """Whether any of the ids is a person with an erasure requested, in progress or finished (system only): work
    that was started before the erasure (an AI summary) must not store what it made from them. A failed erasure
    counts too: it fails only in verification, after the person was erased."""
    require_system(uow.principal, "erases and verifies")
    row = await uow.one(
        "select exists (select 1 from public.gdpr_erasures where person_id = any(%s::uuid[])) as erased",
        [list(record_ids)],
    )
    return bool(row and row["erased"])


@requires(None)
async def scan(uow: UnitOfWork, ids: Identifiers) -> list[Hit]:
    """Every column of type text, varchar, char, json, jsonb or array of every table in schemas public, private and
    runner whose rows mention an identifier (`private.mentions`: the names and emails case-insensitively, each
    phone's digits in any formatting), except the erasure's own identifiers column. System only.

    Cost: one statement per table, each a sequential scan of the whole table that casts every such column to
    text and matches it (ILIKE and a regexp per row and column): proportional to the text stored, not to what is
    found; indexes do not help. Each statement is bounded by the unit of work's statement timeout, so on a big
    database a table that cannot be scanned in time stops the scan with StatementTimeout (the workflow retries;
    give its worker a longer timeout rather than scanning less)."""
    require_system(uow.principal, "erases and verifies")
    if not ids.patterns and not ids.digit_patterns:
        return []
    found: list[Hit] = []
    for table in await _tables(uow):
        counted = [
            sql.SQL("count(*) filter (where private.mentions({}::text, %(p)s, %(d)s)) as {}").format(
                sql.Identifier(c.name), sql.Identifier(c.name)
            )
            for c in table.columns
        ]
        query = sql.SQL("select {} from {}.{}").format(
            sql.SQL(", ").join(counted), sql.Identifier(table.schema), sql.Identifier(table.name)
        )
        row = await uow.one(query.as_string(uow.conn), {"p": ids.patterns, "d": ids.digit_patterns})
        assert row is not None  # an aggregate returns one row
        found += [Hit(table=table.qualified, column=c, rows=n) for c, n in row.items() if n]
    return found


# Internals -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    type: str  # format_type: the exact type to cast a redacted value back to
    base: str  # text, character varying, character, json, jsonb, or the element type of an array
    is_array: bool
    generated: bool


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    updatable: bool  # by the system; the rest (e.g. the bookkeeping rules in private) are only scanned
    columns: list[_Column]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


async def _tables(uow: UnitOfWork) -> list[_Table]:
    """The ordinary tables of SCHEMAS with their text-like columns, from the catalog (information_schema would
    leave out columns the role holds no privilege on)."""
    rows = await uow.all(
        """
        select n.nspname as schema, c.relname as table, a.attname as column,
               format_type(a.atttypid, a.atttypmod) as type, a.attgenerated <> '' as generated,
               t.typcategory = 'A' as is_array, has_table_privilege(c.oid, 'UPDATE') as updatable,
               format_type(case when t.typcategory = 'A' then t.typelem else a.atttypid end, null) as base
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        join pg_type t on t.oid = a.atttypid
        where n.nspname = any(%s) and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
          and (t.typcategory = 'A' or a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype,
                                                     'json'::regtype, 'jsonb'::regtype))
        order by n.nspname, c.relname, a.attnum
        """,
        [list(SCHEMAS)],
    )
    tables: dict[tuple[str, str, bool], list[_Column]] = {}
    for r in rows:
        if (r["schema"], r["table"], r["column"]) == _IDENTIFIERS_COLUMN:
            continue
        tables.setdefault((r["schema"], r["table"], r["updatable"]), []).append(
            _Column(r["column"], r["type"], r["base"], r["is_array"], r["generated"])
        )
    return [_Table(schema, name, updatable, columns) for (schema, name, updatable), columns in tables.items()]


def _redacted(column: _Column) -> sql.Composable | None:
    """The column's value with the identifiers replaced, cast back to its type; None when it cannot hold text
    (e.g. uuid[]) or is generated (it follows the columns it is made of)."""
    col = sql.Identifier(column.name)
    cast = sql.SQL(column.type)
    if column.generated:
        return None
    if column.is_array:
        if column.base not in _TEXT_TYPES:
            return None
        return sql.SQL("private.redact_array({}::text[], %(t)s, %(h)s)::{}").format(col, cast)
    if column.base == "jsonb":
        return sql.SQL("private.redact_jsonb({}, %(t)s, %(h)s)").format(col)
    if column.base == "json":
        return sql.SQL("private.redact_jsonb({}::jsonb, %(t)s, %(h)s)::json").format(col)
    return sql.SQL("private.redact_text({}::text, %(t)s, %(h)s)::{}").format(col, cast)


async def _redact(uow: UnitOfWork, ids: Identifiers) -> dict[str, int]:
    """Replace the identifiers in every redactable column (one UPDATE per table, touching only rows that mention
    them) and in the audit log's diffs; returns the rows changed per table (tables with none left out)."""
    params = {"p": ids.patterns, "d": ids.digit_patterns, "t": ids.terms, "h": ids.phone_digits}
    changed: dict[str, int] = {}
    for table in await _tables(uow):
        if (table.schema, table.name) == _AUDIT_LOG or not table.updatable:
            continue
        sets, tests = [], []
        for column in table.columns:
            if (redacted := _redacted(column)) is None:
                continue
            mentions = sql.SQL("private.mentions({}::text, %(p)s, %(d)s)").format(sql.Identifier(column.name))
            tests.append(mentions)
            sets.append(sql.SQL("{} = case when {} then {} else {} end").format(
                sql.Identifier(column.name), mentions, redacted, sql.Identifier(column.name)))
        if not sets:
            continue
        query = sql.SQL("update {}.{} set {} where {}").format(
            sql.Identifier(table.schema), sql.Identifier(table.name), sql.SQL(", ").join(sets),
            sql.SQL(" or ").join(tests),
        )
        if rows := await uow.execute(query.as_string(uow.conn), params):
            changed[table.qualified] = rows
    audit = await uow.one(
        "select private.redact_audit(%s, %s, %s, %s) as rows", [ids.patterns, ids.digit_patterns, ids.terms,
                                                                ids.phone_digits]
    )
    if audit and audit["rows"]:
        changed["public.audit_log"] = audit["rows"]
    return changed


async def _pending(uow: UnitOfWork, person_id: UUID) -> Erasure | None:
    row = await uow.one(
        f"select {_COLUMNS} from public.gdpr_erasures where person_id = %s and status = any(%s)",
        [person_id, list(_PENDING)],
    )
    return None if row is None else Erasure.model_validate(row)


async def _locked(uow: UnitOfWork, erasure_id: UUID) -> Row:
    row = await uow.one(
        "select person_id, status, counts, hits, identifiers from public.gdpr_erasures where id = %s for update",
        [erasure_id],
    )
    if row is None:
        raise NotFound("erasure", erasure_id)
    return row



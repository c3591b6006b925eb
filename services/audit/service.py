"""Reading the audit log, and recording the tool calls of assistants (every other write appends its audit row
itself, through the unit of work)."""

from __future__ import annotations

from uuid import UUID

from services.audit.schemas import AuditEntry
from services.kernel.errors import Invalid, NotFound
from services.kernel.inputs import text_argument
from services.kernel.permissions import Perm, requires
from services.kernel.uow import UnitOfWork

# The table of each kind of record the audit log speaks of.
RECORD_TABLES = {
    "deal": "deals", "person": "persons", "organization": "organizations", "lead": "leads",
    "activity": "activities", "note": "notes", "pipeline": "pipelines", "stage": "stages",
    "user": "user_profiles", "team": "teams",
}


@requires(Perm.AUDIT_READ)
async def for_entity(uow: UnitOfWork, entity_type: str, entity_id: UUID, *, limit: int = 100) -> list[AuditEntry]:
    """The audit trail of one record, newest first (admins see all; managers their teams'; others their own).

    Only admins read the trail of a record they cannot see, which includes a deleted one: a diff shows the
    record's fields, so for anyone else a hidden record's trail is NotFound, like the record itself."""
    entity_type = text_argument(entity_type, "entity_type")
    if not 1 <= limit <= 500:
        raise Invalid("limit must be between 1 and 500", field="limit")
    if not uow.principal.is_admin:
        table = RECORD_TABLES.get(entity_type)
        if table is None or await uow.one(f"select 1 from public.{table} where id = %s", [entity_id]) is None:
            raise NotFound(entity_type, entity_id)
    rows = await uow.all(
        "select * from public.audit_log where entity_type = %s and entity_id = %s order by id desc limit %s",
        [entity_type, entity_id, limit],
    )
    return [AuditEntry.model_validate(r) for r in rows]


@requires(None)
async def record_tool_call(
    uow: UnitOfWork, tool: str, arguments_sha256: str, outcome: str, *, requested: str | None = None
) -> None:
    """Record that the caller's assistant called `tool` (the arguments only as a hash) and how it ended: `ok`
    or the error's kind (`forbidden`, `not_found`, `invalid`, ...). Every caller records their own calls.
    `requested` is the name a call for no known tool asked for (`tool` is then `unknown`), already cut short."""
    after = {"arguments_sha256": arguments_sha256, "outcome": outcome}
    if requested is not None:
        after["requested"] = requested
    await uow.audit(f"tool.{tool}", "mcp_tool_call", None, after=after)

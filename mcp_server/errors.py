"""The one place where errors become MCP errors (of tools, resources and prompts): short, tagged, and telling the
model what to do next.

`[not_found] deal 123 not found — ...`, `[forbidden] ...`, `[invalid] ... (field: value)`. Anything unexpected
is logged with a reference and answered as `[internal] internal error, ref=...`, never with its details.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError

from services.kernel.errors import (
    Conflict,
    DuplicateFound,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from services.kernel.permissions import ROLE_PERMISSIONS, Perm
from services.kernel.principal import Principal

log = logging.getLogger("pipecd.mcp")

# Where the model gets the id of each kind of record: the tool that yields it (`search` knows no stages,
# activities or notes), named when an id is missing, malformed or not found.
ID_SOURCES = {
    "deal": "`search` or `list_deals`",
    "person": "`search` or `list_persons`",
    "organization": "`search` or `list_organizations`",
    "lead": "`search` or `list_leads`",
    "contact": "`search`, `list_persons` or `list_organizations`",
    "activity": "`list_activities`",
    "note": "`list_notes`",
    "pipeline": "`list_pipelines`",
    "stage": "`list_pipelines`",
    "summary": "`request_summary`",
    "notification": "`list_notifications`",
    "user": "`whoami` (yours) or a record's `owner_id`",
    "team": "`whoami` (your `team_ids`)",
    "record": "`search` or a list tool",
}
# The kind of record each id argument names (`notification_ids` holds several).
ID_ARGUMENTS = {
    "deal_id": "deal", "person_id": "person", "organization_id": "organization", "lead_id": "lead",
    "contact_id": "contact", "activity_id": "activity", "note_id": "note", "pipeline_id": "pipeline",
    "stage_id": "stage", "summary_id": "summary", "notification_ids": "notification", "owner_id": "user",
    "team_id": "team", "record_id": "record", "subject_id": "record",
}


def id_hint(kind: str | None) -> str:
    """What to do about a missing or malformed id of `kind` (a record kind): the tool that yields such ids."""
    source = ID_SOURCES.get(kind or "")
    return f"get ids from {source}; never guess ids" if source else "never guess ids"


def not_an_id(argument: str) -> str:
    """The message for a value of id argument `argument` that is not an id."""
    return f"not an id — {id_hint(ID_ARGUMENTS.get(argument))}"


NOT_AN_ID = "not an id"  # an `Invalid` naming an id argument gets that argument's hint


# Pydantic's wording where a plainer one tells the model what to do.
_PLAIN = {
    "missing": "required",
    "extra_forbidden": "no such argument",
}
_UUID_ERRORS = ("uuid_parsing", "uuid_type")


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] in _UUID_ERRORS:
        return f"{not_an_id(str(error['loc'][0]) if error['loc'] else '')} (field: {where})"
    return f"{_PLAIN.get(error['type'], error['msg'])} (field: {where})"


def _forbidden(error: Forbidden, principal: Principal | None) -> str:
    """Say when the token's scopes, not the user's role, are what refuses the call: the user could do it."""
    if principal is not None and principal.scopes is not None and error.permission:
        perm = Perm(error.permission)
        role_grants = any(perm in ROLE_PERMISSIONS[role] for role in principal.roles)
        if role_grants:
            scopes = ", ".join(sorted(s.value for s in principal.scopes))
            return f"[forbidden] your token's scope {scopes} does not allow {perm.value}"
    return f"[forbidden] {error.message}; your role does not allow this"


def error_message(error: Exception, principal: Principal | None = None, where: str = "tool") -> str:
    """The message (`[kind] ...`) for an exception raised while serving a tool, resource or prompt. Anything
    unexpected is logged with a reference and answered with the reference only."""
    if isinstance(error, NotFound):
        return f"[not_found] {error.message} — {id_hint(error.entity)}"
    if isinstance(error, Forbidden):
        return _forbidden(error, principal)
    if isinstance(error, Invalid):
        field = f" (field: {error.field})" if error.field else ""
        kind = ID_ARGUMENTS.get(error.field or "")
        # An id argument that is not an id, or names no record: where such ids come from. (A message about an
        # id that exists, such as a stage of another pipeline, says itself what to do.)
        missing = kind is not None and error.message.endswith((NOT_AN_ID, "does not exist"))
        hint = f" — {id_hint(kind)}" if missing else ""
        return f"[invalid] {error.message}{hint}{field}"
    if isinstance(error, DuplicateFound):
        return f"[duplicate] {error.message} (existing_id: {error.existing_id})"
    if isinstance(error, Conflict):
        return f"[conflict] {error.message}"
    if isinstance(error, RateLimited):
        return f"[rate_limited] {error.message}"
    if isinstance(error, Unavailable):
        return f"[unavailable] {error.message}; try again shortly"
    if isinstance(error, Unauthenticated):
        return f"[unauthenticated] {error.message}"
    if isinstance(error, ServiceError):
        return f"[error] {error.message}"
    if isinstance(error, ValidationError):
        problems = "; ".join(_problem(e) for e in error.errors(include_url=False))
        return f"[invalid] {problems}"
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error in an MCP %s, ref=%s", where, reference, exc_info=error)
    return f"[internal] internal error, ref={reference}"


def tool_error(error: Exception, principal: Principal | None = None) -> ToolError:
    """The tool error for an exception raised while a tool ran."""
    return ToolError(error_message(error, principal))


def resource_error(error: Exception, principal: Principal | None) -> Exception:
    """What the client sees: a missing, hidden or malformed record as resource-not-found (invalid params)."""
    if isinstance(error, MCPError | ResourceError):
        return error
    message = error_message(error, principal, "resource")
    if isinstance(error, NotFound | Invalid | ValidationError):
        return ResourceNotFoundError(message)
    return ResourceError(message)


def prompt_error(error: Exception, principal: Principal | None) -> MCPError:
    """What the client sees: a missing, hidden or malformed record or argument as invalid params."""
    if isinstance(error, MCPError):
        return error
    code = INVALID_PARAMS if isinstance(error, NotFound | Invalid | ValidationError) else INTERNAL_ERROR
    return MCPError(code=code, message=error_message(error, principal, "prompt"))

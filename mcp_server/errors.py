"""The one place where errors become MCP errors (of tools, resources and prompts): short, tagged, and telling the
model what to do next.

`[not_found] deal 123 not found — ...`, `[forbidden] ...`, `[invalid] ... (field: value)`. Anything unexpected
is logged with a reference and answered as `[internal] internal error, ref=...`, never with its details.
"""

from __future__ import annotations

import logging
import uuid

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

# Pydantic's wording where a plainer one tells the model what to do.
_PLAIN = {
    "missing": "required",
    "uuid_parsing": "not an id — resolve names to ids with `search` first; never guess ids",
    "uuid_type": "not an id — resolve names to ids with `search` first; never guess ids",
    "extra_forbidden": "no such argument",
}


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
        return f"[not_found] {error.message} — resolve names to ids with `search` first; never guess ids"
    if isinstance(error, Forbidden):
        return _forbidden(error, principal)
    if isinstance(error, Invalid):
        field = f" (field: {error.field})" if error.field else ""
        return f"[invalid] {error.message}{field}"
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
        problems = "; ".join(
            f"{_PLAIN.get(e['type'], e['msg'])} (field: {'.'.join(str(p) for p in e['loc'])})"
            for e in error.errors(include_url=False)
        )
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

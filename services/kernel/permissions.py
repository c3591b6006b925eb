"""The permission vocabulary, role and scope grants as data, and the `@requires` checkpoint.

This module is the source of truth; the migration `create_access_control` mirrors it into the database for the
RLS policies, and a test keeps the two equal.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from services.kernel.errors import Forbidden

if TYPE_CHECKING:
    from services.kernel.uow import UnitOfWork


class Perm(StrEnum):
    DEALS_READ = "deals:read"
    DEALS_WRITE = "deals:write"
    DEALS_DELETE = "deals:delete"
    CONTACTS_READ = "contacts:read"
    CONTACTS_WRITE = "contacts:write"
    CONTACTS_DELETE = "contacts:delete"
    LEADS_READ = "leads:read"
    LEADS_WRITE = "leads:write"
    LEADS_DELETE = "leads:delete"
    LEADS_CONVERT = "leads:convert"
    ACTIVITIES_READ = "activities:read"
    ACTIVITIES_WRITE = "activities:write"
    ACTIVITIES_DELETE = "activities:delete"
    NOTES_READ = "notes:read"
    NOTES_WRITE = "notes:write"
    NOTES_DELETE = "notes:delete"
    PIPELINES_READ = "pipelines:read"
    PIPELINES_MANAGE = "pipelines:manage"
    USERS_READ = "users:read"
    USERS_MANAGE = "users:manage"
    PROFILE_WRITE = "profile:write"
    AI_USE = "ai:use"
    GDPR_ERASE = "gdpr:erase"
    AUDIT_READ = "audit:read"


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"
    VIEWER = "viewer"


class Scope(StrEnum):
    READ = "crm.read"
    WRITE = "crm.write"
    DELETE = "crm.delete"
    AI = "crm.ai"


_ALL = frozenset(Perm)
_READS = frozenset(p for p in Perm if p.value.endswith(":read"))
_WRITES = frozenset(p for p in Perm if p.value.endswith(":write"))
_DELETES = frozenset(p for p in Perm if p.value.endswith(":delete"))
_ADMIN_ONLY = frozenset({Perm.PIPELINES_MANAGE, Perm.USERS_MANAGE, Perm.GDPR_ERASE})

ROLE_PERMISSIONS: dict[Role, frozenset[Perm]] = {
    Role.ADMIN: _ALL,
    Role.MANAGER: _ALL - _ADMIN_ONLY,
    Role.MEMBER: _ALL - _ADMIN_ONLY - {Perm.AUDIT_READ, Perm.CONTACTS_DELETE},
    Role.VIEWER: _READS - {Perm.AUDIT_READ} | {Perm.PROFILE_WRITE},
}

# Token scopes come in tiers: crm.read ⊂ crm.write ⊂ crm.delete; crm.ai stands apart.
# users:manage is in no scope: administering people needs a first-party session, never an agent token.
_SCOPE_READ = _READS
_SCOPE_WRITE = _SCOPE_READ | _WRITES | {Perm.LEADS_CONVERT, Perm.PIPELINES_MANAGE}
SCOPE_PERMISSIONS: dict[Scope, frozenset[Perm]] = {
    Scope.READ: _SCOPE_READ,
    Scope.WRITE: _SCOPE_WRITE,
    Scope.DELETE: _SCOPE_WRITE | _DELETES | {Perm.GDPR_ERASE},
    Scope.AI: frozenset({Perm.AI_USE}),
}


def effective_permissions(roles: Iterable[Role], scopes: Iterable[Scope] | None) -> frozenset[Perm]:
    """Role permissions, narrowed by the token's scopes when it carries scopes (None: an unscoped session)."""
    granted: frozenset[Perm] = frozenset().union(*(ROLE_PERMISSIONS[r] for r in roles))
    if scopes is None:
        return granted
    allowed: frozenset[Perm] = frozenset().union(*(SCOPE_PERMISSIONS[s] for s in scopes))
    return granted & allowed


P = ParamSpec("P")
R = TypeVar("R")

# Every public service function registers here through @requires; a test walks the service modules and
# fails on a public coroutine that is not in this registry.
REGISTRY: dict[str, Perm | None] = {}


def requires(
    perm: Perm | None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Declare the permission a service function needs; checked before the function body runs.

    `requires(None)` marks a function any authenticated caller may use (e.g. `whoami`); it is still declared.
    """

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            uow: UnitOfWork = args[0]  # type: ignore[assignment]
            if perm is not None:
                uow.principal.require(perm)
            return await fn(*args, **kwargs)

        checked.__requires__ = perm  # type: ignore[attr-defined]
        REGISTRY[f"{fn.__module__}.{fn.__qualname__}"] = perm
        return checked

    return decorate


def forbidden(perm: Perm) -> Forbidden:
    return Forbidden(f"missing permission {perm.value}", permission=perm.value)


def declared_permission(fn: Any) -> Perm | bool | None:
    """The permission a function declared, or False when it declared none."""
    return getattr(fn, "__requires__", False)

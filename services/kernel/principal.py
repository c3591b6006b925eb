"""Who is calling: a user (with roles, teams and the token's scopes) on one channel, or the system itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from services.kernel.errors import Forbidden
from services.kernel.permissions import (
    Perm,
    Role,
    Scope,
    effective_permissions,
    forbidden,
)


class Channel(StrEnum):
    GRAPHQL = "graphql"
    MCP = "mcp"
    WORKFLOW = "workflow"
    CLI = "cli"


@dataclass(frozen=True)
class Principal:
    user_id: UUID
    roles: frozenset[Role]
    team_ids: frozenset[UUID]
    scopes: frozenset[Scope] | None
    channel: Channel
    email: str | None = None
    permissions: frozenset[Perm] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "permissions", effective_permissions(self.roles, self.scopes))

    def can(self, perm: Perm) -> bool:
        return perm in self.permissions

    def require(self, perm: Perm) -> None:
        if perm not in self.permissions:
            raise forbidden(perm)

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @property
    def is_manager(self) -> bool:
        return Role.MANAGER in self.roles

    def claims(self) -> dict[str, Any]:
        """The claims the database sees as `request.jwt.claims` (what `auth.uid()`/`auth.jwt()` read)."""
        claims: dict[str, Any] = {"sub": str(self.user_id), "role": "authenticated", "aud": "authenticated"}
        if self.scopes:
            claims["scope"] = " ".join(sorted(s.value for s in self.scopes))
        return claims


@dataclass(frozen=True)
class SystemPrincipal:
    """The system acting for itself (migrations, workflows, operator CLI): runs as `service_role`."""

    channel: Channel
    user_id: None = None
    permissions: frozenset[Perm] = frozenset(Perm)

    def can(self, perm: Perm) -> bool:
        return True

    def require(self, perm: Perm) -> None:
        return None

    @property
    def is_admin(self) -> bool:
        return True

    @property
    def is_manager(self) -> bool:
        return False

    @property
    def team_ids(self) -> frozenset[UUID]:
        return frozenset()

    def claims(self) -> dict[str, Any]:
        return {"role": "service_role"}


AnyPrincipal = Principal | SystemPrincipal


def require_system(principal: AnyPrincipal, doing: str) -> None:
    """For work only the system does (workflow steps, maintenance): any user, whatever their role, is refused
    with "only the system <doing>"."""
    if not isinstance(principal, SystemPrincipal):
        raise Forbidden(f"only the system {doing}")

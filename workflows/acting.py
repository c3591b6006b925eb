"""Who a workflow step acts as: a user rebuilt from the database (roles and teams as they are now, channel
`workflow`, scopes narrowed to what the job needs), or, for maintenance only, the system."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import inngest

from services.kernel.auth import principal_from_claims
from services.kernel.errors import Unauthenticated
from services.kernel.permissions import Scope
from services.kernel.principal import Channel, Principal, SystemPrincipal
from services.kernel.uow import Database

SYSTEM = SystemPrincipal(Channel.WORKFLOW)


async def as_user(db: Database, user_id: UUID, scopes: Iterable[Scope]) -> Principal:
    """The user, as they are now, with only `scopes`; a user who no longer exists or is disabled ends the run
    (retrying cannot bring them back)."""
    async with db.unit_of_work(SYSTEM) as uow:
        row = await uow.one("select private.account_is_active(%s) as active", [user_id])
    if row is None or not row["active"]:
        raise inngest.NonRetriableError(f"user {user_id} no longer exists or is disabled")
    claims = {"sub": str(user_id), "scope": " ".join(sorted(s.value for s in scopes))}
    try:
        return await principal_from_claims(db, claims, Channel.WORKFLOW)
    except Unauthenticated as exc:
        raise inngest.NonRetriableError(f"user {user_id} cannot act: {exc}") from exc

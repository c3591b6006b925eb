"""From a bearer token to a Principal: verify the token, then read the user's roles and teams (under RLS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from uuid import UUID

from services.kernel.errors import Unauthenticated
from services.kernel.permissions import Role, Scope
from services.kernel.principal import Channel, Principal
from services.kernel.ratelimit import RateLimit
from services.kernel.tokens import TokenVerifier
from services.kernel.uow import Database, UnitOfWork


def scopes_from_claims(claims: dict[str, Any]) -> frozenset[Scope] | None:
    """`scope` is a space-separated list; absent or empty means an unscoped (first-party) session.

    An unknown scope refuses the token rather than being dropped: dropping could widen an agent's rights.
    """
    raw = claims.get("scope")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise Unauthenticated("token scope claim must be a space-separated string")
    names = raw.split()
    if not names:
        return None
    known = {s.value: s for s in Scope}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Unauthenticated(f"token has unknown scope {unknown[0]!r}")
    return frozenset(known[n] for n in names)


def subject(claims: dict[str, Any]) -> UUID:
    """The user a verified token speaks for."""
    try:
        return UUID(str(claims["sub"]))
    except (KeyError, ValueError) as exc:
        raise Unauthenticated("token subject is not a user id") from exc


# The caller's profile, roles and teams, read as the caller (their own rows are visible whatever their scopes).
PRINCIPAL = """
    select p.email,
           array(select r.role from public.user_roles r where r.user_id = p.id) as roles,
           array(select m.team_id from public.team_members m where m.user_id = p.id) as team_ids
    from public.user_profiles p
    where p.id = auth.uid()
"""


@asynccontextmanager
async def session(db: Database, claims: dict[str, Any], channel: Channel) -> AsyncIterator[UnitOfWork]:
    """A unit of work as the user verified `claims` speak for, with their Principal: the roles and teams are read
    in the same round trip that opens the transaction, so authenticating costs no transaction of its own.
    Unauthenticated (and nothing else runs) if the account has no CRM profile."""
    caller = Principal(subject(claims), frozenset(), frozenset(), scopes_from_claims(claims), channel)
    async with db.unit_of_work(caller, opening=PRINCIPAL) as uow:
        row = uow.opening_row
        if row is None:
            raise Unauthenticated("unknown user: no CRM profile for this account")
        uow.principal = replace(
            caller,
            roles=frozenset(Role(r) for r in row["roles"]),
            team_ids=frozenset(row["team_ids"]),
            email=row["email"],
        )
        yield uow


async def principal_from_claims(db: Database, claims: dict[str, Any], channel: Channel) -> Principal:
    async with session(db, claims, channel) as uow:
        principal = uow.principal
    assert isinstance(principal, Principal)
    return principal


async def verified_claims(
    verifier: TokenVerifier, token: str, *, limit: RateLimit | None = None
) -> dict[str, Any]:
    """A bearer token's claims once verified (signature, `aud`, `exp`, issuer) as a user session's.

    With `limit`, the request is counted against the user's budget here, before any database work: a refused
    request (`RateLimited`) costs none. The subject is as good as the user id, since only a valid token for that
    user can spend their budget."""
    claims = await verifier.verify(token)
    if claims.get("role", "authenticated") != "authenticated":
        raise Unauthenticated("only user sessions may call the CRM")
    if limit is not None:
        await limit.hit(subject(claims))
    return claims


@asynccontextmanager
async def token_session(
    db: Database, verifier: TokenVerifier, token: str, channel: Channel, *, limit: RateLimit | None = None
) -> AsyncIterator[UnitOfWork]:
    """`session` for a bearer token: verified (and counted) first, then the transaction and its Principal."""
    async with session(db, await verified_claims(verifier, token, limit=limit), channel) as uow:
        yield uow


async def authenticate(
    db: Database, verifier: TokenVerifier, token: str, channel: Channel, *, limit: RateLimit | None = None
) -> Principal:
    """The Principal for a bearer token, or Unauthenticated (a transaction of its own: for callers that cannot
    share their request's, e.g. MCP's bearer middleware, which runs before the tool call)."""
    return await principal_from_claims(db, await verified_claims(verifier, token, limit=limit), channel)

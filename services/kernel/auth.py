"""From a bearer token to a Principal: verify the token, then read the user's roles and teams (under RLS)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.kernel.errors import Unauthenticated
from services.kernel.permissions import Role, Scope
from services.kernel.principal import Channel, Principal
from services.kernel.ratelimit import RateLimit
from services.kernel.tokens import TokenVerifier
from services.kernel.uow import Database


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


async def principal_from_claims(db: Database, claims: dict[str, Any], channel: Channel) -> Principal:
    user_id = subject(claims)
    scopes = scopes_from_claims(claims)
    scoped_claims = {"sub": str(user_id), "role": "authenticated"}
    async with db.claims_transaction(scoped_claims) as uow:
        row = await uow.one(
            """
            select p.email,
                   array(select r.role from public.user_roles r where r.user_id = p.id) as roles,
                   array(select m.team_id from public.team_members m where m.user_id = p.id) as team_ids
            from public.user_profiles p
            where p.id = auth.uid()
            """
        )
    if row is None:
        raise Unauthenticated("unknown user: no CRM profile for this account")
    return Principal(
        user_id=user_id,
        roles=frozenset(Role(r) for r in row["roles"]),
        team_ids=frozenset(row["team_ids"]),
        scopes=scopes,
        channel=channel,
        email=row["email"],
    )


async def authenticate(
    db: Database, verifier: TokenVerifier, token: str, channel: Channel, *, limit: RateLimit | None = None
) -> Principal:
    """The Principal for a bearer token, or Unauthenticated.

    With `limit`, the request is counted against the user's budget once the token's signature is verified and
    before their roles are read: a refused request (`RateLimited`) costs no database work at all. The subject
    is as good as the user id here, since only a valid token for that user can spend their budget."""
    claims = await verifier.verify(token)
    if claims.get("role", "authenticated") != "authenticated":
        raise Unauthenticated("only user sessions may call the CRM")
    if limit is not None:
        await limit.hit(subject(claims))
    return await principal_from_claims(db, claims, channel)

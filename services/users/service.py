"""Users (profiles synced from Supabase Auth), roles and teams."""

from __future__ import annotations

import builtins
from typing import Any
from uuid import UUID

from psycopg import sql

from services.kernel import records
from services.kernel.errors import Conflict, Forbidden, NotFound
from services.kernel.inputs import text_argument
from services.kernel.permissions import Perm, Role, requires
from services.kernel.uow import UnitOfWork, require_found
from services.users.schemas import Me, ProfileUpdate, Team, TeamCreate, UserProfile

_PROFILE_SELECT = """
    select p.id, p.email, p.display_name, p.avatar_url, p.created_at,
           array(select r.role from public.user_roles r where r.user_id = p.id order by r.role) as roles,
           array(select m.team_id from public.team_members m where m.user_id = p.id order by m.team_id)
             as team_ids
    from public.user_profiles p
"""


def _profile(row: dict[str, Any]) -> UserProfile:
    return UserProfile.model_validate(row)


@requires(None)
async def whoami(uow: UnitOfWork) -> Me:
    """The calling user, their scopes, and their effective permissions."""
    if uow.user_id is None:
        raise Forbidden("the system principal has no user profile")
    row = require_found(await uow.one(_PROFILE_SELECT + " where p.id = auth.uid()"), "user", uow.user_id)
    scopes = getattr(uow.principal, "scopes", None)
    return Me(
        user=_profile(row),
        scopes=sorted(scopes) if scopes is not None else None,
        permissions=sorted(uow.principal.permissions),
    )


async def _fetch(uow: UnitOfWork, user_id: UUID) -> UserProfile:
    row = await uow.one(_PROFILE_SELECT + " where p.id = %s", [user_id])
    return _profile(require_found(row, "user", user_id))


@requires(Perm.USERS_READ)
async def get(uow: UnitOfWork, user_id: UUID) -> UserProfile:
    return await _fetch(uow, user_id)


@requires(Perm.USERS_READ)
async def get_many(uow: UnitOfWork, user_ids: builtins.list[UUID]) -> builtins.list[UserProfile]:
    """Profiles for the given ids that exist (batch loader)."""
    condition, keys = records.among("p.id", user_ids)
    rows = await uow.all(f"{_PROFILE_SELECT} where {condition}", [keys])
    return [_profile(r) for r in rows]


@requires(Perm.USERS_READ)
async def list(uow: UnitOfWork) -> builtins.list[UserProfile]:
    rows = await uow.all(_PROFILE_SELECT + " order by lower(p.display_name), p.id")
    return [_profile(r) for r in rows]


@requires(Perm.USERS_READ)
async def find_by_email(uow: UnitOfWork, email: str) -> UserProfile:
    email = text_argument(email, "email")
    row = await uow.one(_PROFILE_SELECT + " where lower(p.email) = lower(%s)", [email])
    return _profile(require_found(row, "user", email))


@requires(Perm.PROFILE_WRITE)
async def update_profile(uow: UnitOfWork, user_id: UUID, data: ProfileUpdate) -> UserProfile:
    """Change a display name or avatar: your own, or anyone's with users:manage."""
    if user_id != uow.user_id:
        uow.principal.require(Perm.USERS_MANAGE)
    before = await _fetch(uow, user_id)
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return before
    # Only a real change is written (and audited): the same values again change nothing.
    if_differs, differs_params = records.differs(changes)
    query = sql.SQL("update public.user_profiles set {}, updated_at = now() where id = %s and {}").format(
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes), if_differs
    )
    if await uow.execute(query.as_string(), [*changes.values(), user_id, *differs_params]) == 0:
        current = await uow.one(
            sql.SQL("select {} as differs from public.user_profiles where id = %s").format(if_differs).as_string(),
            [*differs_params, user_id],
        )
        if current is not None and current["differs"]:
            raise Forbidden(f"the database refused this change to user {user_id}")
        return before
    after = await _fetch(uow, user_id)
    await uow.audit("user.update_profile", "user", user_id, before=before.model_dump(), after=after.model_dump())
    uow.emit("crm/user.profile_updated", user_id=user_id, fields=sorted(changes))
    return after


@requires(Perm.USERS_MANAGE)
async def grant_role(uow: UnitOfWork, user_id: UUID, role: Role) -> UserProfile:
    before = await _fetch(uow, user_id)
    if role in before.roles:
        return before
    await uow.execute("insert into public.user_roles (user_id, role) values (%s, %s)", [user_id, role.value])
    await uow.audit("user.grant_role", "user", user_id, before={"roles": before.roles}, after={
        "roles": sorted([*before.roles, role])})
    uow.emit("crm/user.role_granted", user_id=user_id, role=role)
    return await _fetch(uow, user_id)


@requires(Perm.USERS_MANAGE)
async def revoke_role(uow: UnitOfWork, user_id: UUID, role: Role) -> UserProfile:
    before = await _fetch(uow, user_id)
    if role not in before.roles:
        return before
    await uow.execute("delete from public.user_roles where user_id = %s and role = %s", [user_id, role.value])
    await uow.audit("user.revoke_role", "user", user_id, before={"roles": before.roles}, after={
        "roles": [r for r in before.roles if r != role]})
    uow.emit("crm/user.role_revoked", user_id=user_id, role=role)
    return await _fetch(uow, user_id)


_TEAM_SELECT = """
    select t.id, t.name, t.created_at,
           array(select m.user_id from public.team_members m where m.team_id = t.id order by m.user_id)
             as member_ids
    from public.teams t
"""


@requires(Perm.USERS_READ)
async def list_teams(uow: UnitOfWork) -> builtins.list[Team]:
    rows = await uow.all(_TEAM_SELECT + " order by lower(t.name)")
    return [Team.model_validate(r) for r in rows]


async def _fetch_team(uow: UnitOfWork, team_id: UUID) -> Team:
    row = await uow.one(_TEAM_SELECT + " where t.id = %s", [team_id])
    return Team.model_validate(require_found(row, "team", team_id))


@requires(Perm.USERS_READ)
async def get_team(uow: UnitOfWork, team_id: UUID) -> Team:
    return await _fetch_team(uow, team_id)


@requires(Perm.USERS_READ)
async def find_team(uow: UnitOfWork, name: str) -> Team:
    name = text_argument(name, "name")
    row = await uow.one(_TEAM_SELECT + " where lower(t.name) = lower(%s)", [name])
    return Team.model_validate(require_found(row, "team", name))


@requires(Perm.USERS_MANAGE)
async def create_team(uow: UnitOfWork, data: TeamCreate) -> Team:
    existing = await uow.one("select id from public.teams where lower(name) = lower(%s)", [data.name])
    if existing is not None:
        raise Conflict(f"team {data.name!r} already exists ({existing['id']})")
    row = require_found(
        await uow.one("insert into public.teams (name) values (%s) returning id", [data.name.strip()]),
        "team",
        data.name,
    )
    team = await _fetch_team(uow, row["id"])
    await uow.audit("team.create", "team", team.id, after=team.model_dump())
    uow.emit("crm/team.created", team_id=team.id)
    return team


@requires(Perm.USERS_MANAGE)
async def add_team_member(uow: UnitOfWork, team_id: UUID, user_id: UUID) -> Team:
    team = await _fetch_team(uow, team_id)
    await _fetch(uow, user_id)
    if user_id in team.member_ids:
        return team
    await uow.execute("insert into public.team_members (team_id, user_id) values (%s, %s)", [team_id, user_id])
    await uow.audit("team.add_member", "team", team_id, after={"user_id": user_id})
    uow.emit("crm/team.member_added", team_id=team_id, user_id=user_id)
    return await _fetch_team(uow, team_id)


@requires(Perm.USERS_MANAGE)
async def remove_team_member(uow: UnitOfWork, team_id: UUID, user_id: UUID) -> Team:
    team = await _fetch_team(uow, team_id)
    if user_id not in team.member_ids:
        raise NotFound("team member", user_id)
    await uow.execute("delete from public.team_members where team_id = %s and user_id = %s", [team_id, user_id])
    await uow.audit("team.remove_member", "team", team_id, before={"user_id": user_id})
    uow.emit("crm/team.member_removed", team_id=team_id, user_id=user_id)
    return await _fetch_team(uow, team_id)

"""Adding users. Identities belong to Supabase Auth: with SUPABASE_URL and a service key configured, users are
created (or invited) through its admin API; on the embedded/local database they go straight into the local
`auth.users`. Either way the profile follows from the `auth.users` trigger, then role and team are granted
through the service layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import psycopg
from psycopg.types.json import Jsonb

from pipecd.settings import Settings
from services.kernel.errors import NotFound
from services.kernel.permissions import Role
from services.kernel.principal import Channel, SystemPrincipal
from services.kernel.uow import Database
from services.users import service as users
from services.users.schemas import TeamCreate, UserProfile

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class NewUser:
    id: UUID
    created: bool


def create_local_user(admin: str, email: str, display_name: str | None = None) -> NewUser:
    """Insert into the local `auth.users` (what Supabase Auth would do); returns the existing user if any."""
    metadata = {"display_name": display_name} if display_name else {}
    with psycopg.connect(admin) as conn:
        existing = conn.execute("select id from auth.users where lower(email) = lower(%s)", [email]).fetchone()
        if existing:
            return NewUser(existing[0], False)
        user_id = uuid4()
        conn.execute(
            "insert into auth.users (instance_id, id, aud, role, email, email_confirmed_at,"
            " raw_app_meta_data, raw_user_meta_data, created_at, updated_at)"
            " values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s, now(),"
            " %s, %s, now(), now())",
            [user_id, email.lower(), Jsonb({"provider": "email", "providers": ["email"]}), Jsonb(metadata)],
        )
    return NewUser(user_id, True)


def create_supabase_user(
    settings: Settings,
    email: str,
    display_name: str | None = None,
    *,
    invite: bool = False,
    http_client: httpx.Client | None = None,
) -> NewUser:
    """Create (or invite) the user through Supabase Auth's admin API; an existing user is reused."""
    from supabase import ClientOptions, create_client  # a large import that only this path needs

    assert settings.supabase_url and settings.supabase_service_key
    options = ClientOptions(httpx_client=http_client) if http_client is not None else ClientOptions()
    client = create_client(settings.supabase_url, settings.supabase_service_key.get_secret_value(), options)
    metadata = {"display_name": display_name} if display_name else {}
    for page in range(1, 100):
        listed = client.auth.admin.list_users(page=page, per_page=200)
        for user in listed:
            if (user.email or "").lower() == email.lower():
                return NewUser(UUID(user.id), False)
        if len(listed) < 200:
            break
    if invite:
        response = client.auth.admin.invite_user_by_email(email, {"data": metadata})
    else:
        response = client.auth.admin.create_user(
            {"email": email, "email_confirm": True, "user_metadata": metadata}
        )
    return NewUser(UUID(response.user.id), True)


async def grant_access(db: Database, user_id: UUID, role: Role, team: str | None) -> UserProfile:
    """Give the user a role (and team membership, creating the team if needed), as the system."""
    async with db.unit_of_work(SystemPrincipal(Channel.CLI)) as uow:
        profile = await users.get(uow, user_id)
        for other in profile.roles:
            if other != role:
                await users.revoke_role(uow, user_id, other)
        await users.grant_role(uow, user_id, role)
        if team:
            try:
                team_record = await users.find_team(uow, team)
            except NotFound:
                team_record = await users.create_team(uow, TeamCreate(name=team))
            await users.add_team_member(uow, team_record.id, user_id)
        return await users.get(uow, user_id)

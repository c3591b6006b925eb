from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.kernel.permissions import Perm, Role, Scope
from services.kernel.schemas import Input


def web_url(value: str) -> str | None:
    """An http(s) URL with a host, the only kind a browser may load as an image without running anything
    (`javascript:`, `data:` and the like are refused); an empty string clears it."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("must be an http or https URL")
    return value


WebUrl = Annotated[str, Field(max_length=2000), AfterValidator(web_url)]


class UserProfile(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(description="The user's id (the Supabase Auth user id).")
    email: str = Field(description="Login email.")
    display_name: str = Field(description="Name shown in the CRM.")
    avatar_url: str | None = Field(None, description="Avatar image URL.")
    roles: list[Role] = Field(default_factory=list, description="Roles granted to the user.")
    team_ids: list[UUID] = Field(default_factory=list, description="Teams the user belongs to.")
    created_at: datetime = Field(description="When the profile was created.")


class ProfileUpdate(Input):
    display_name: str | None = Field(None, min_length=1, max_length=200, description="New display name.")
    avatar_url: WebUrl | None = Field(None, description="New avatar URL (http or https); null or empty clears it.")


class Team(BaseModel):
    id: UUID = Field(description="Team id.")
    name: str = Field(description="Team name, unique (case-insensitive).")
    member_ids: list[UUID] = Field(default_factory=list, description="Users in the team.")
    created_at: datetime = Field(description="When the team was created.")


class TeamCreate(Input):
    name: str = Field(min_length=1, max_length=200, description="Team name, unique (case-insensitive).")


class Me(BaseModel):
    user: UserProfile = Field(description="The calling user.")
    scopes: list[Scope] | None = Field(description="The token's scopes; null for an unscoped session.")
    permissions: list[Perm] = Field(description="What this caller may do: the role's grants within the scopes.")

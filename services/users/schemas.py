from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.kernel.permissions import Perm, Role, Scope


class UserProfile(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(description="The user's id (the Supabase Auth user id).")
    email: str = Field(description="Login email.")
    display_name: str = Field(description="Name shown in the CRM.")
    avatar_url: str | None = Field(None, description="Avatar image URL.")
    roles: list[Role] = Field(default_factory=list, description="Roles granted to the user.")
    team_ids: list[UUID] = Field(default_factory=list, description="Teams the user belongs to.")
    created_at: datetime = Field(description="When the profile was created.")


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(None, min_length=1, max_length=200, description="New display name.")
    avatar_url: str | None = Field(None, max_length=2000, description="New avatar URL.")


class Team(BaseModel):
    id: UUID = Field(description="Team id.")
    name: str = Field(description="Team name, unique (case-insensitive).")
    member_ids: list[UUID] = Field(default_factory=list, description="Users in the team.")
    created_at: datetime = Field(description="When the team was created.")


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Team name, unique (case-insensitive).")


class Me(BaseModel):
    user: UserProfile = Field(description="The calling user.")
    scopes: list[Scope] | None = Field(description="The token's scopes; null for an unscoped session.")
    permissions: list[Perm] = Field(description="What this caller may do: the role's grants within the scopes.")

"""Users, roles and teams through the service layer."""

from __future__ import annotations

import pytest
from conftest import audit_operations, counts, events

from services.kernel.errors import Conflict, Forbidden, NotFound
from services.kernel.permissions import ROLE_PERMISSIONS, SCOPE_PERMISSIONS, Role, Scope
from services.users import service as users
from services.users.schemas import ProfileUpdate, TeamCreate


async def test_whoami_reports_the_caller_scopes_and_effective_permissions(actors, company):
    async with actors.uow("bob", scopes=frozenset({Scope.READ})) as uow:
        me = await users.whoami(uow)
    assert me.user.id == actors.id("bob")
    assert me.user.email == "bob@example.com"
    assert me.user.roles == [Role.MEMBER]
    assert me.user.team_ids == [company.team_ids["East"]]
    assert me.scopes == [Scope.READ]
    assert set(me.permissions) == ROLE_PERMISSIONS[Role.MEMBER] & SCOPE_PERMISSIONS[Scope.READ]


async def test_users_are_listed_by_display_name_and_fetched_in_batches(actors):
    async with actors.uow("vic") as uow:
        everyone = await users.list(uow)
        some = await users.get_many(uow, [actors.id("bob"), actors.id("carol")])
        found = await users.find_by_email(uow, "CAROL@example.com")
    assert [u.display_name for u in everyone] == ["Alice", "Bob", "Carol", "Dan", "Mia", "Vic"]
    assert sorted(u.email for u in some) == ["bob@example.com", "carol@example.com"]
    assert found.id == actors.id("carol")


async def test_a_user_changes_their_own_profile_and_it_is_audited(actors, admin):
    async with actors.uow("bob") as uow:
        profile = await users.update_profile(uow, actors.id("bob"), ProfileUpdate(display_name="Robert"))
    assert profile.display_name == "Robert"
    assert audit_operations(admin) == ["user.update_profile"]
    assert events(admin) == [("crm/user.profile_updated", {"user_id": str(actors.id("bob")),
                                                          "fields": ["display_name"]})]


async def test_a_member_cannot_change_someone_elses_profile_and_nothing_is_written(actors, admin):
    with pytest.raises(Forbidden):
        async with actors.uow("bob") as uow:
            await users.update_profile(uow, actors.id("carol"), ProfileUpdate(display_name="Caz"))
    assert admin.execute("select display_name from public.user_profiles where email = 'carol@example.com'"
                         ).fetchone() == ("Carol",)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_a_read_only_token_cannot_change_its_users_profile_and_nothing_is_written(actors, admin):
    with pytest.raises(Forbidden, match="missing permission profile:write"):
        async with actors.uow("bob", scopes=frozenset({Scope.READ})) as uow:
            await users.update_profile(uow, actors.id("bob"), ProfileUpdate(display_name="Agent wrote this"))
    assert admin.execute("select display_name from public.user_profiles where email = 'bob@example.com'"
                         ).fetchone() == ("Bob",)
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 0, "outbox": 0}


async def test_a_viewer_changes_their_own_profile(actors):
    async with actors.uow("vic") as uow:
        profile = await users.update_profile(uow, actors.id("vic"), ProfileUpdate(display_name="Victor"))
    assert profile.display_name == "Victor"


async def test_admin_manages_roles_and_teams(actors, admin):
    async with actors.uow("alice") as uow:
        team = await users.create_team(uow, TeamCreate(name="North"))
        await users.add_team_member(uow, team.id, actors.id("carol"))
        promoted = await users.grant_role(uow, actors.id("carol"), Role.MANAGER)
        demoted = await users.revoke_role(uow, actors.id("carol"), Role.MEMBER)
        north = await users.get_team(uow, team.id)
    assert promoted.roles == [Role.MANAGER, Role.MEMBER]
    assert demoted.roles == [Role.MANAGER]
    assert north.member_ids == [actors.id("carol")]
    assert audit_operations(admin) == [
        "team.create", "team.add_member", "user.grant_role", "user.revoke_role"]
    assert [name for name, _ in events(admin)] == [
        "crm/team.created", "crm/team.member_added", "crm/user.role_granted", "crm/user.role_revoked"]


async def test_team_names_are_unique_ignoring_case(actors):
    with pytest.raises(Conflict):
        async with actors.uow("alice") as uow:
            await users.create_team(uow, TeamCreate(name="east"))


async def test_removing_someone_who_is_not_in_the_team_is_not_found(actors, company):
    with pytest.raises(NotFound):
        async with actors.uow("alice") as uow:
            await users.remove_team_member(uow, company.team_ids["West"], actors.id("bob"))


@pytest.mark.parametrize("who", ["mia", "bob", "vic"])
async def test_only_admins_manage_roles_and_teams(actors, admin, company, who):
    before = counts(admin, "user_roles", "teams", "team_members", "audit_log", "outbox")
    with pytest.raises(Forbidden):
        async with actors.uow(who) as uow:
            await users.grant_role(uow, actors.id(who), Role.ADMIN)
    with pytest.raises(Forbidden):
        async with actors.uow(who) as uow:
            await users.add_team_member(uow, company.team_ids["West"], actors.id(who))
    assert counts(admin, "user_roles", "teams", "team_members", "audit_log", "outbox") == before


async def test_an_admin_agent_token_cannot_manage_users_whatever_its_scopes(actors):
    with pytest.raises(Forbidden):
        async with actors.uow("alice", scopes=frozenset(Scope)) as uow:
            await users.create_team(uow, TeamCreate(name="Agents"))

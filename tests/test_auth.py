"""From a bearer token to a Principal against the real test database, and the scope tiers behind it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from services.kernel.auth import authenticate
from services.kernel.errors import Unauthenticated
from services.kernel.permissions import ROLE_PERMISSIONS, Perm, Role, Scope, effective_permissions
from services.kernel.principal import Channel, Principal
from services.kernel.tokens import TokenVerifier

SECRET = "auth-tests-jwt-secret-that-is-long-enough-for-hs256"


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(hs256_secret=SECRET)


def token_for(sub: object, **extra: Any) -> str:
    now = int(time.time())
    claims = {"sub": str(sub), "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 600}
    claims.update(extra)
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_token_for_bob_gives_his_role_team_and_email(db, verifier, company):
    principal = await authenticate(db, verifier, token_for(company.people["bob"].id), Channel.MCP)
    assert principal == Principal(
        user_id=company.people["bob"].id,
        roles=frozenset({Role.MEMBER}),
        team_ids=frozenset({company.team_ids["East"]}),
        scopes=None,
        channel=Channel.MCP,
        email="bob@example.com",
    )
    assert principal.permissions == ROLE_PERMISSIONS[Role.MEMBER]


@pytest.mark.parametrize("key", ["alice", "mia", "bob", "dan", "carol", "vic"])
async def test_every_test_user_authenticates_as_themselves(db, verifier, company, key):
    principal = await authenticate(db, verifier, token_for(company.people[key].id), Channel.GRAPHQL)
    assert principal == company.principal(key, channel=Channel.GRAPHQL)


async def test_scoped_token_narrows_the_role_to_the_scopes(db, verifier, company):
    token = token_for(company.people["bob"].id, scope="crm.read crm.ai")
    principal = await authenticate(db, verifier, token, Channel.MCP)
    assert principal.scopes == frozenset({Scope.READ, Scope.AI})
    assert principal.permissions == {
        Perm.DEALS_READ,
        Perm.CONTACTS_READ,
        Perm.LEADS_READ,
        Perm.ACTIVITIES_READ,
        Perm.NOTES_READ,
        Perm.PIPELINES_READ,
        Perm.USERS_READ,
        Perm.AI_USE,
    }  # a member has no audit:read, so crm.read cannot give it


@pytest.mark.parametrize("scope", ["", "   "])
async def test_empty_scope_claim_is_an_unscoped_session(db, verifier, company, scope):
    principal = await authenticate(db, verifier, token_for(company.people["bob"].id, scope=scope), Channel.MCP)
    assert principal.scopes is None
    assert principal.permissions == ROLE_PERMISSIONS[Role.MEMBER]


async def refusal(db, verifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await authenticate(db, verifier, token, Channel.MCP)
    return caught.value.message


async def test_unknown_scope_refuses_the_token_rather_than_dropping_it(db, verifier, company):
    token = token_for(company.people["bob"].id, scope="crm.read crm.admin")
    assert await refusal(db, verifier, token) == "token has unknown scope 'crm.admin'"


async def test_scope_claim_that_is_not_a_string_is_refused(db, verifier, company):
    token = token_for(company.people["bob"].id, scope=["crm.read"])
    assert await refusal(db, verifier, token) == "token scope claim must be a space-separated string"


async def test_valid_token_for_a_user_without_a_crm_profile_is_refused(db, verifier):
    assert await refusal(db, verifier, token_for(uuid.uuid4())) == "unknown user: no CRM profile for this account"


async def test_token_whose_subject_is_not_a_uuid_is_refused(db, verifier):
    assert await refusal(db, verifier, token_for("bob@example.com")) == "token subject is not a user id"


@pytest.mark.parametrize("role", ["service_role", "anon", "supabase_admin"])
async def test_token_with_a_non_user_role_claim_is_refused(db, verifier, company, role):
    token = token_for(company.people["alice"].id, role=role)
    assert await refusal(db, verifier, token) == "only user sessions may call the CRM"


async def test_token_signed_with_another_secret_is_refused(db, verifier, company):
    forged = jwt.encode(
        {"sub": str(company.people["alice"].id), "aud": "authenticated", "exp": int(time.time()) + 60},
        "someone-elses-secret-that-is-long-enough-too",
        algorithm="HS256",
    )
    assert await refusal(db, verifier, forged) == "token signature is invalid"


# Effective permissions ------------------------------------------------------------------------------------


def scoped(*scopes: Scope, role: Role = Role.ADMIN) -> frozenset[Perm]:
    return effective_permissions({role}, frozenset(scopes))


def test_scope_tiers_nest_read_in_write_in_delete():
    assert scoped(Scope.READ) < scoped(Scope.WRITE) < scoped(Scope.DELETE)


def test_read_scope_gives_only_read_permissions():
    assert scoped(Scope.READ) == {p for p in Perm if p.value.endswith(":read")}


def test_write_scope_gives_no_delete_permission():
    assert [p for p in scoped(Scope.WRITE) if p.value.endswith(":delete")] == []
    assert Perm.GDPR_ERASE not in scoped(Scope.WRITE)


def test_delete_scope_adds_exactly_the_deletes_and_gdpr_erase():
    added = scoped(Scope.DELETE) - scoped(Scope.WRITE)
    assert added == {p for p in Perm if p.value.endswith(":delete")} | {Perm.GDPR_ERASE}


def test_ai_scope_gives_only_ai_use():
    assert scoped(Scope.AI) == {Perm.AI_USE}


def test_users_manage_is_in_no_scope():
    assert Perm.USERS_MANAGE not in scoped(*Scope)
    assert scoped(*Scope) == frozenset(Perm) - {Perm.USERS_MANAGE}


@pytest.mark.parametrize("role", list(Role))
def test_unscoped_session_gets_the_roles_permissions(role):
    assert effective_permissions({role}, None) == ROLE_PERMISSIONS[role]


@pytest.mark.parametrize("role", list(Role))
def test_scopes_never_widen_a_role(role):
    assert scoped(*Scope, role=role) <= ROLE_PERMISSIONS[role]
    assert scoped(Scope.DELETE, role=role) == ROLE_PERMISSIONS[role] & scoped(Scope.DELETE)


def test_viewer_with_write_scope_still_cannot_write():
    assert scoped(Scope.WRITE, role=Role.VIEWER) == ROLE_PERMISSIONS[Role.VIEWER]
    # a viewer's one write is their own profile
    writes = {p for p in scoped(Scope.WRITE, role=Role.VIEWER) if p.value.endswith((":write", ":delete"))}
    assert writes == {Perm.PROFILE_WRITE}

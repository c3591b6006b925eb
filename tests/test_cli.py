"""The `pipecd` command, driven in-process against this test's database; Supabase Auth faked at the HTTP edge."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import respx
from conftest import counts, with_database
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from typer.testing import CliRunner, Result

from pipecd.accounts import create_supabase_user, grant_access
from pipecd.cli import app
from pipecd.database import migrations
from pipecd.database.embedded import EmbeddedPostgres
from pipecd.settings import Settings
from services.kernel.permissions import Role

# Anything in the developer's shell that would change what the CLI does is cleared for every run.
_CLEARED = [
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_SERVICE_KEY",
    "SUPABASE_JWT_SECRET",
    "PIPECD_JWT_SECRET",
    "PIPECD_JWT_ISSUER",
    "PIPECD_JWKS_URL",
    "PIPECD_APP_DATABASE_URL",
    "PIPECD_AUTHENTICATOR_PASSWORD",
]
SUPABASE_URL = "http://supabase.test"
SERVICE_KEY = "service-role-key-for-tests"
USER_TABLES = ("user_profiles", "user_roles", "teams", "team_members")
DEMO_TABLES = ("deals", "persons", "organizations", "leads", "activities", "notes", "pipelines", "audit_log", "outbox")

Run = Callable[..., Result]


@pytest.fixture
def cli(admin_url: str, tmp_path: Path) -> Run:
    """`cli("token", "--user", "bob@example.com", PIPECD_ENV="production")` runs `pipecd` with that environment."""
    runner = CliRunner()

    def run(*args: str, **env: str) -> Result:
        environment: dict[str, str | None] = dict.fromkeys(_CLEARED)
        environment |= {"DATABASE_URL": admin_url, "PIPECD_STATE_DIR": str(tmp_path), "PIPECD_ENV": "development"}
        environment |= env
        return runner.invoke(app, list(args), env=environment)

    return run


def rows(admin: psycopg.Connection, query: str, *params: object) -> list[tuple[Any, ...]]:
    return admin.execute(query, list(params)).fetchall()


def auth_user_count(admin: psycopg.Connection) -> int:
    return rows(admin, "select count(*) from auth.users")[0][0]


# migrate, db url --------------------------------------------------------------------------------------------


def test_migrate_on_a_migrated_database_applies_nothing(cli, admin):
    before = rows(admin, "select version from supabase_migrations.schema_migrations order by version")
    result = cli("migrate")
    assert result.exit_code == 0, result.output
    assert result.stderr == "0 migration(s) applied; database is current\n"
    assert result.stdout == ""
    assert rows(admin, "select version from supabase_migrations.schema_migrations order by version") == before


def test_db_url_prints_database_url(cli, admin_url):
    result = cli("db", "url")
    assert result.exit_code == 0, result.output
    assert result.stdout == admin_url + "\n"


# users add --------------------------------------------------------------------------------------------------


def roles_and_teams(admin: psycopg.Connection, user_id: uuid.UUID) -> tuple[list[str], list[str]]:
    roles = rows(admin, "select role from public.user_roles where user_id = %s order by role", user_id)
    teams = rows(
        admin,
        "select t.name from public.team_members m join public.teams t on t.id = m.team_id"
        " where m.user_id = %s order by t.name",
        user_id,
    )
    return [r for (r,) in roles], [t for (t,) in teams]


def test_users_add_creates_auth_user_profile_role_and_membership(cli, admin):
    result = cli("users", "add", "new@example.com", "--role", "member", "--team", "East")
    assert result.exit_code == 0, result.output

    user_id = uuid.UUID(result.stdout.strip())
    assert rows(admin, "select email, aud, role from auth.users where id = %s", user_id) == [
        ("new@example.com", "authenticated", "authenticated")
    ]
    assert rows(admin, "select email, display_name from public.user_profiles where id = %s", user_id) == [
        ("new@example.com", "new")
    ]
    assert roles_and_teams(admin, user_id) == (["member"], ["East"])
    assert rows(admin, "select operation, entity_type, channel, actor_id from public.audit_log order by id") == [
        ("user.grant_role", "user", "cli", None),
        ("team.add_member", "team", "cli", None),
    ]
    assert [n for (n,) in rows(admin, "select name from public.outbox order by occurred_at, name")] == [
        "crm/team.member_added",
        "crm/user.role_granted",
    ]
    assert result.stderr == f"new@example.com (created): id {user_id}, roles member\n"


def test_users_add_is_repeatable(cli, admin):
    first = cli("users", "add", "new@example.com", "--role", "member", "--team", "East")
    assert first.exit_code == 0, first.output
    before = counts(admin, *USER_TABLES, "audit_log", "outbox") | {"auth.users": auth_user_count(admin)}

    second = cli("users", "add", "new@example.com", "--role", "member", "--team", "East")

    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
    assert counts(admin, *USER_TABLES, "audit_log", "outbox") | {"auth.users": auth_user_count(admin)} == before
    assert second.stderr == f"new@example.com (exists): id {first.stdout.strip()}, roles member\n"


def test_users_add_with_another_role_replaces_the_role(cli, admin):
    first = cli("users", "add", "new@example.com", "--role", "member", "--team", "East")
    user_id = uuid.UUID(first.stdout.strip())

    second = cli("users", "add", "new@example.com", "--role", "manager", "--team", "East")

    assert second.exit_code == 0, second.output
    assert uuid.UUID(second.stdout.strip()) == user_id
    assert roles_and_teams(admin, user_id) == (["manager"], ["East"])


def test_users_add_creates_a_missing_team(cli, admin):
    result = cli("users", "add", "north@example.com", "--role", "viewer", "--team", "North", "--name", "Nora North")
    assert result.exit_code == 0, result.output
    user_id = uuid.UUID(result.stdout.strip())
    assert roles_and_teams(admin, user_id) == (["viewer"], ["North"])
    assert rows(admin, "select display_name from public.user_profiles where id = %s", user_id) == [("Nora North",)]
    assert sorted(n for (n,) in rows(admin, "select name from public.teams")) == ["East", "North", "West"]


def test_users_add_refuses_an_unknown_role(cli, admin):
    before = counts(admin, *USER_TABLES) | {"auth.users": auth_user_count(admin)}
    result = cli("users", "add", "new@example.com", "--role", "owner")
    assert result.exit_code == 2
    message = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # typer draws a box around it
    assert "Invalid value for '--role': Value error, 'owner' is not one of 'admin', 'manager', 'member', 'viewer'." in (
        message
    )
    assert counts(admin, *USER_TABLES) | {"auth.users": auth_user_count(admin)} == before


def test_users_add_invite_without_supabase_is_refused(cli, admin):
    before = auth_user_count(admin)
    result = cli("users", "add", "new@example.com", "--invite")
    assert result.exit_code == 1
    assert result.stderr == "error: --invite needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY\n"
    assert auth_user_count(admin) == before


# token ------------------------------------------------------------------------------------------------------


def decode_with_generated_secret(token: str, state_dir: Path) -> dict[str, Any]:
    secret = (state_dir / "jwt_secret").read_text().strip()
    return jwt.decode(token, secret, algorithms=["HS256"], audience="authenticated")


def test_token_prints_only_a_jwt_for_the_user(cli, company, tmp_path):
    result = cli("token", "--user", "bob@example.com")
    assert result.exit_code == 0, result.output
    token = result.stdout.removesuffix("\n")
    assert "\n" not in token and token.count(".") == 2

    claims = decode_with_generated_secret(token, tmp_path)
    assert claims["sub"] == str(company.people["bob"].id)
    assert claims["aud"] == "authenticated"
    assert claims["role"] == "authenticated"
    assert claims["email"] == "bob@example.com"
    assert claims["exp"] - claims["iat"] == 3600
    assert "scope" not in claims


def test_token_with_scopes_carries_them_space_separated(cli, tmp_path):
    result = cli("token", "--user", "bob@example.com", "--scopes", "crm.read,crm.ai")
    assert result.exit_code == 0, result.output
    assert decode_with_generated_secret(result.stdout.strip(), tmp_path)["scope"] == "crm.read crm.ai"


def test_token_uses_the_configured_secret_when_there_is_one(cli, tmp_path):
    secret = "configured-project-secret-that-is-long-enough"
    result = cli("token", "--user", "bob@example.com", PIPECD_JWT_SECRET=secret)
    assert result.exit_code == 0, result.output
    assert jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"], audience="authenticated")["email"] == (
        "bob@example.com"
    )
    assert not (tmp_path / "jwt_secret").exists()


def test_token_with_an_unknown_scope_fails_with_the_known_ones(cli):
    result = cli("token", "--user", "bob@example.com", "--scopes", "crm.read,crm.admin")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: 'crm.admin' is not a valid Scope; known scopes: crm.read, crm.write, crm.delete, crm.ai\n"
    )


def test_token_for_an_unknown_user_fails(cli):
    result = cli("token", "--user", "nobody@example.com")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: no user nobody@example.com; add one with `pipecd users add nobody@example.com --role member`\n"
    )


def test_token_is_refused_in_production_even_with_a_secret(cli, tmp_path):
    result = cli(
        "token",
        "--user",
        "bob@example.com",
        PIPECD_ENV="production",
        SUPABASE_JWT_SECRET="production-project-secret-that-is-long-enough",
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: refusing to mint tokens when PIPECD_ENV=production\n"
    assert not (tmp_path / "jwt_secret").exists()


# seed --demo ------------------------------------------------------------------------------------------------


def test_seed_demo_creates_the_demo_company_once(cli, admin, company):
    first = cli("seed", "--demo")
    assert first.exit_code == 0, first.output
    after_first = counts(admin, *DEMO_TABLES)
    assert {k: v for k, v in after_first.items() if k not in ("audit_log", "outbox")} == {
        "deals": 22,
        "persons": 16,
        "organizations": 12,
        "leads": 8,
        "activities": 14,
        "notes": 12,
        "pipelines": 2,
    }
    assert first.stderr == (
        "demo company ready: 5 users, 2 pipelines, 12 organizations, 16 persons, 22 deals, 8 leads, "
        "14 activities, 12 notes\n"
    )
    # The demo's users are the test company's (same emails): they were reused, not duplicated.
    assert auth_user_count(admin) == len(company.people)
    assert rows(admin, "select id from auth.users where email = 'bob@example.com'") == [(company.people["bob"].id,)]

    second = cli("seed", "--demo")

    assert second.exit_code == 0, second.output
    assert counts(admin, *DEMO_TABLES) == after_first
    assert auth_user_count(admin) == len(company.people)


def test_seed_demo_stays_single_after_its_idempotency_keys_are_pruned(cli, admin):
    assert cli("seed", "--demo").exit_code == 0
    after_first = counts(admin, *DEMO_TABLES)
    admin.execute("delete from public.idempotency_keys")  # what the daily maintenance does after their retention
    assert cli("seed", "--demo").exit_code == 0
    assert counts(admin, *DEMO_TABLES) == after_first


def test_the_demo_s_events_carry_no_personal_data_and_are_history(cli, admin):
    from pipecd import demo

    assert cli("seed", "--demo").exit_code == 0
    payloads = [json.dumps(data) for (data,) in rows(admin, "select data from public.outbox")]
    assert len(payloads) > 90  # every demo record announced its creation
    personal = {u.email for u in demo.USERS} | {u.name for u in demo.USERS}
    personal |= {w for first, last, email, *_ in demo.PERSONS for w in (first, last, email)}
    personal |= {title for title, *_ in demo.DEALS} | {name for name, *_ in demo.ORGANIZATIONS}
    personal |= {contact for _, _, _, contact, email, *_ in demo.LEADS for contact in (contact, email) if contact}
    hits = sorted({word for word in personal for payload in payloads if word in payload})
    assert hits == []
    # the demo describes the past: its events are dispatched, so no workflow acts on them
    assert rows(admin, "select count(*) from public.outbox where dispatched_at is null") == [(0,)]


def test_seed_without_demo_flag_does_nothing(cli, admin):
    before = counts(admin, *DEMO_TABLES)
    result = cli("seed")
    assert result.exit_code == 1
    assert result.stderr == "error: pass either --demo (the demo company) or --scale N (a company of N deals)\n"
    assert counts(admin, *DEMO_TABLES) == before


# Supabase Auth (its admin API faked at the HTTP transport) ------------------------------------------------


@dataclass
class FakeGoTrue:
    """Behaves like Supabase Auth's admin API: users live in the database's `auth.users`."""

    admin: psycopg.Connection
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("apikey") != SERVICE_KEY or request.headers.get("authorization") != (
            f"Bearer {SERVICE_KEY}"
        ):
            return httpx.Response(401, json={"code": 401, "error_code": "no_authorization", "msg": "bad key"})
        route = (request.method, request.url.path)
        if route == ("GET", "/auth/v1/admin/users"):
            page, per_page = int(request.url.params["page"]), int(request.url.params["per_page"])
            found = self.admin.execute(
                "select id from auth.users order by created_at, id limit %s offset %s",
                [per_page, (page - 1) * per_page],
            ).fetchall()
            return httpx.Response(200, json={"users": [self.user_json(i) for (i,) in found], "aud": "authenticated"})
        if route == ("POST", "/auth/v1/admin/users"):
            body = json.loads(request.content)
            user_id = self.insert(body["email"], body.get("user_metadata") or {}, confirmed=body["email_confirm"])
            return httpx.Response(200, json=self.user_json(user_id))
        if route == ("POST", "/auth/v1/invite"):
            body = json.loads(request.content)
            user_id = self.insert(body["email"], body.get("data") or {}, confirmed=False)
            return httpx.Response(200, json=self.user_json(user_id))
        return httpx.Response(404, json={"code": 404, "msg": "not found"})

    def insert(self, email: str, metadata: dict[str, Any], *, confirmed: bool) -> uuid.UUID:
        user_id = uuid.uuid4()
        self.admin.execute(
            "insert into auth.users (instance_id, id, aud, role, email, email_confirmed_at, invited_at,"
            " raw_app_meta_data, raw_user_meta_data, created_at, updated_at)"
            " values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s,"
            " case when %s then now() end, case when %s then null else now() end, %s, %s, now(), now())",
            [
                user_id,
                email.lower(),
                confirmed,
                confirmed,
                Jsonb({"provider": "email", "providers": ["email"]}),
                Jsonb(metadata),
            ],
        )
        return user_id

    def user_json(self, user_id: uuid.UUID) -> dict[str, Any]:
        row = self.admin.execute(
            "select id, aud, role, email, email_confirmed_at, invited_at, raw_app_meta_data, raw_user_meta_data,"
            " created_at, updated_at from auth.users where id = %s",
            [user_id],
        ).fetchone()
        assert row is not None
        keys = (
            "id",
            "aud",
            "role",
            "email",
            "email_confirmed_at",
            "invited_at",
            "app_metadata",
            "user_metadata",
            "created_at",
            "updated_at",
        )
        user = dict(zip(keys, row, strict=True))
        for key in ("email_confirmed_at", "invited_at", "created_at", "updated_at"):
            user[key] = user[key].isoformat() if user[key] else None
        return {**user, "id": str(user_id), "phone": "", "identities": [], "is_anonymous": False}

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]


@pytest.fixture
def gotrue(admin: psycopg.Connection) -> FakeGoTrue:
    return FakeGoTrue(admin)


@pytest.fixture
def supabase_settings(admin_url: str, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        DATABASE_URL=admin_url,
        PIPECD_STATE_DIR=tmp_path,
        SUPABASE_URL=SUPABASE_URL,
        SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
    )


def fake_client(gotrue: FakeGoTrue) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(gotrue.handler))


async def test_create_supabase_user_goes_through_the_admin_api(gotrue, supabase_settings, admin, db):
    account = create_supabase_user(supabase_settings, "Sam@Example.com", "Sam Seller", http_client=fake_client(gotrue))

    assert account.created is True
    assert gotrue.calls() == [("GET", "/auth/v1/admin/users"), ("POST", "/auth/v1/admin/users")]
    listing, creation = gotrue.requests
    assert dict(listing.url.params) == {"page": "1", "per_page": "200"}
    for request in gotrue.requests:
        assert request.headers["apikey"] == SERVICE_KEY
        assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert json.loads(creation.content) == {
        "email": "Sam@Example.com",
        "email_confirm": True,
        "user_metadata": {"display_name": "Sam Seller"},
    }
    assert rows(admin, "select email, display_name from public.user_profiles where id = %s", account.id) == [
        ("sam@example.com", "Sam Seller")
    ]

    profile = await grant_access(db, account.id, Role.MEMBER, "West")

    assert (profile.id, profile.email, profile.roles) == (account.id, "sam@example.com", ["member"])
    assert roles_and_teams(admin, account.id) == (["member"], ["West"])


async def test_create_supabase_user_reuses_an_existing_user(gotrue, supabase_settings, admin, company):
    before = auth_user_count(admin)
    account = create_supabase_user(supabase_settings, "BOB@example.com", http_client=fake_client(gotrue))
    assert (account.id, account.created) == (company.people["bob"].id, False)
    assert gotrue.calls() == [("GET", "/auth/v1/admin/users")]
    assert auth_user_count(admin) == before


def test_invite_goes_through_the_invite_endpoint(gotrue, supabase_settings, admin):
    account = create_supabase_user(
        supabase_settings, "invitee@example.com", "Ivy Invitee", invite=True, http_client=fake_client(gotrue)
    )
    assert account.created is True
    assert gotrue.calls() == [("GET", "/auth/v1/admin/users"), ("POST", "/auth/v1/invite")]
    assert json.loads(gotrue.requests[1].content) == {
        "email": "invitee@example.com",
        "data": {"display_name": "Ivy Invitee"},
    }
    assert gotrue.requests[1].headers["apikey"] == SERVICE_KEY
    invited = rows(
        admin,
        "select email, email_confirmed_at is null, invited_at is not null from auth.users where id = %s",
        account.id,
    )
    assert invited == [("invitee@example.com", True, True)]


def test_users_add_through_supabase_auth(cli, gotrue, admin):
    with respx.mock(assert_all_called=False) as router:
        router.route(host="supabase.test").mock(side_effect=gotrue.handler)
        result = cli(
            "users",
            "add",
            "sam@example.com",
            "--role",
            "manager",
            "--team",
            "East",
            SUPABASE_URL=SUPABASE_URL,
            SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
        )

    assert result.exit_code == 0, result.output
    assert gotrue.calls() == [("GET", "/auth/v1/admin/users"), ("POST", "/auth/v1/admin/users")]
    user_id = uuid.UUID(result.stdout.strip())
    assert rows(admin, "select email from auth.users where id = %s", user_id) == [("sam@example.com",)]
    assert roles_and_teams(admin, user_id) == (["manager"], ["East"])


def test_users_add_invite_through_supabase_auth(cli, gotrue, admin):
    with respx.mock(assert_all_called=False) as router:
        router.route(host="supabase.test").mock(side_effect=gotrue.handler)
        result = cli(
            "users",
            "add",
            "ivy@example.com",
            "--invite",
            SUPABASE_URL=SUPABASE_URL,
            SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
        )

    assert result.exit_code == 0, result.output
    assert gotrue.calls() == [("GET", "/auth/v1/admin/users"), ("POST", "/auth/v1/invite")]
    assert roles_and_teams(admin, uuid.UUID(result.stdout.strip())) == (["member"], [])


def test_users_add_refuses_what_is_not_an_email(cli, admin):
    before = counts(admin, *USER_TABLES) | {"auth.users": auth_user_count(admin)}
    result = cli("users", "add", "not-an-email")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: 'not-an-email' is not an email address: An email address must have an @-sign.\n"
    assert counts(admin, *USER_TABLES) | {"auth.users": auth_user_count(admin)} == before


# The command as a user runs it: a subprocess in a folder of its own ----------------------------------------

PIPECD = Path(sys.executable).parent / "pipecd"
_SETTINGS_PREFIXES = ("PIPECD_", "DATABASE_URL", "SUPABASE_", "INNGEST_", "ANTHROPIC_")


def pipecd(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
    return subprocess.run(
        [str(PIPECD), *args], cwd=cwd, env=environment | env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize(
    "args",
    [
        ("token", "--user", "bob@example.com"),
        ("mcp", "--user", "bob@example.com"),
        ("users", "add", "bob@example.com"),
        ("seed", "--demo"),
        ("serve",),
        ("db", "url"),
        ("workflows", "runs"),
    ],
)
def test_commands_outside_a_checkout_say_where_they_looked_and_create_nothing(tmp_path, args):
    result = pipecd(tmp_path, *args)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: no PipeCD database at {tmp_path.resolve() / '.pipecd'} (set DATABASE_URL or PIPECD_STATE_DIR, "
        "or run `pipecd dev` first)\n"
    )
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_database_that_is_not_migrated_is_named_with_the_fix(tmp_path, server_url):
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        url = with_database(server_url, name)
        result = pipecd(tmp_path, "token", "--user", "bob@example.com", DATABASE_URL=url)
        host = conninfo_to_dict(url)["host"]
        assert result.returncode == 1
        assert result.stderr == f"error: {name} on {host} (DATABASE_URL) is not migrated: run `pipecd migrate`\n"
        assert list(tmp_path.iterdir()) == []
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')


def test_an_unreachable_database_is_one_line(tmp_path):
    result = pipecd(tmp_path, "token", "--user", "bob@example.com", DATABASE_URL="postgresql://x@127.0.0.1:1/crm")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach crm on 127.0.0.1 (DATABASE_URL): connection")
    assert result.stderr.count("\n") == 1


def test_a_bad_setting_is_one_line(tmp_path):
    result = pipecd(tmp_path, "doctor", PIPECD_DB_POOL_MAX="0")
    assert result.returncode == 1
    assert result.stderr == "error: invalid setting PIPECD_DB_POOL_MAX: Input should be greater than or equal to 1\n"


def test_version_is_the_package_s(tmp_path):
    result = pipecd(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"pipecd {importlib.metadata.version('pipecd')}\n"


def test_migrate_creates_the_embedded_database_and_others_stop_what_they_start(tmp_path):
    state = tmp_path / "state"
    env = {"PIPECD_STATE_DIR": str(state)}
    server = EmbeddedPostgres(state / "pgdata")
    try:
        migrated = pipecd(tmp_path, "migrate", **env)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stderr.endswith(
            f"migration(s) applied; database is current\nembedded Postgres left running (data in "
            f"{state.resolve() / 'pgdata'}); `pipecd db stop` stops it\n"
        )
        assert pipecd(tmp_path, "db", "stop", **env).returncode == 0
        assert not server.status().running

        token = pipecd(tmp_path, "token", "--user", "nobody@example.com", **env)

        assert token.returncode == 1
        assert token.stderr == (
            "error: no user nobody@example.com; add one with `pipecd users add nobody@example.com --role member`\n"
        )
        assert not server.status().running  # started for the command, stopped after it
    finally:
        server.stop()


# doctor -------------------------------------------------------------------------------------------------------


def test_doctor_on_a_good_database_says_all_is_well(tmp_path, admin_url):
    result = pipecd(tmp_path, "doctor", DATABASE_URL=admin_url, PIPECD_WORKFLOWS="embedded")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    name, host = conninfo_to_dict(admin_url)["dbname"], conninfo_to_dict(admin_url)["host"]
    assert [line.split(":")[0] for line in lines] == [
        "ok       python", "ok       database", "ok       migrations", "ok       app login", "ok       tokens",
        "ok       workflows", "ok       ai",
    ]
    assert lines[1].endswith(f", {name} on {host} (DATABASE_URL)")
    assert lines[2] == f"ok       migrations: all {len(migrations.discover())} applied"
    assert lines[3] == "ok       app login: authenticator: not superuser, no bypassrls, can set anon, authenticated, " \
                       "service_role"
    assert lines[5] == "ok       workflows: embedded (PIPECD_WORKFLOWS=embedded): the embedded runner"
    assert lines[6] == "ok       ai: the offline summarizer (set ANTHROPIC_API_KEY for Claude)"
    assert list(tmp_path.iterdir()) == []


def test_doctor_names_a_pending_migration_and_bad_settings_with_their_fixes(tmp_path, admin_url, admin):
    admin.execute("delete from supabase_migrations.schema_migrations where version = %s",
                  [migrations.discover()[-1].version])
    result = pipecd(tmp_path, "doctor", DATABASE_URL=admin_url, PIPECD_WORKFLOWS="inngest",
                    INNGEST_EVENT_KEY="event-key", PIPECD_ENV="production")
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem")]
    assert problems == [
        "problem  migrations: 1 pending; run `pipecd migrate`",
        "problem  tokens: nothing verifies tokens; set SUPABASE_URL (its JWKS) or SUPABASE_JWT_SECRET",
        "problem  workflows: inngest without INNGEST_SIGNING_KEY; set them (or INNGEST_DEV=1 for a development "
        "server, or PIPECD_WORKFLOWS=embedded)",
    ]


def test_doctor_names_an_app_login_that_bypasses_row_level_security(tmp_path, admin_url, admin):
    admin.execute("alter role authenticator bypassrls")
    try:
        result = pipecd(tmp_path, "doctor", DATABASE_URL=admin_url)
    finally:
        admin.execute("alter role authenticator nobypassrls")
    assert result.returncode == 1
    assert "problem  app login: authenticator is bypassrls, so row-level security does not apply to it; run " \
           "`alter role authenticator nosuperuser nobypassrls`" in result.stdout.splitlines()

"""`pipecd doctor`: checks the setup and names the fix for each problem. Never creates a database."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import metadata

import psycopg
from packaging.specifiers import SpecifierSet

from pipecd import runtime
from pipecd.database import migrations
from pipecd.settings import Settings
from workflows.production import _is_dev

# Roles the app login switches to (Supabase's): it must be a member of each.
APP_ROLES = ("anon", "authenticated", "service_role")
# Shortest HS256 secret accepted as configured (Supabase's are 32 characters or more).
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Check:
    ok: bool
    name: str
    text: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'problem':<8} {self.name}: {self.text}"


def run(settings: Settings) -> list[Check]:
    return [*_python(), *_database(settings), *_tokens(settings), *_workflows(settings), *_ai(settings)]


def _python() -> Iterator[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    required = SpecifierSet(metadata("pipecd")["Requires-Python"] or "")
    if version in required:
        yield Check(True, "python", version)
    else:
        yield Check(False, "python", f"{version}; PipeCD needs {required} (set PYTHON for scripts/bootstrap.sh)")


def _database(settings: Settings) -> Iterator[Check]:
    try:
        with runtime.existing_database(settings, migrated=False) as admin:
            with psycopg.connect(admin) as conn:
                server = conn.execute("show server_version").fetchone()
                waiting = migrations.pending(conn)
            yield Check(True, "database", f"Postgres {server[0] if server else '?'}, {runtime.where(settings)}")
            if waiting:
                yield Check(False, "migrations", f"{len(waiting)} pending; run `pipecd migrate`")
            else:
                yield Check(True, "migrations", f"all {len(migrations.discover())} applied")
            yield _app_login(settings, admin)
    except runtime.SetupError as exc:
        yield Check(False, "database", str(exc))


def _app_login(settings: Settings, admin: str) -> Check:
    try:
        with psycopg.connect(runtime.app_url(settings, admin), connect_timeout=5) as conn:
            row = conn.execute(
                "select current_user, rolsuper, rolbypassrls from pg_roles where rolname = current_user"
            ).fetchone()
            assert row is not None
            login, superuser, bypass = row
            missing = [
                role for role in APP_ROLES
                if not conn.execute("select pg_has_role(current_user, %s, 'member')", [role]).fetchone()[0]  # type: ignore[index]
            ]
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check(False, "app login", f"cannot log in as the app ({reason}); set PIPECD_APP_DATABASE_URL or "
                                         "PIPECD_AUTHENTICATOR_PASSWORD")
    if superuser or bypass:
        what = "superuser" if superuser else "bypassrls"
        return Check(False, "app login", f"{login} is {what}, so row-level security does not apply to it; "
                                         f"run `alter role {login} nosuperuser nobypassrls`")
    if missing:
        return Check(False, "app login", f"{login} cannot set the role(s) {', '.join(missing)}; "
                                         f"run `grant {', '.join(missing)} to {login}`")
    return Check(True, "app login", f"{login}: not superuser, no bypassrls, can set {', '.join(APP_ROLES)}")


def _tokens(settings: Settings) -> Iterator[Check]:
    if settings.jwt_secret is not None:
        if len(settings.jwt_secret.get_secret_value()) < MIN_SECRET_LENGTH:
            yield Check(False, "tokens", f"the HS256 secret is shorter than {MIN_SECRET_LENGTH} characters; "
                                         "set SUPABASE_JWT_SECRET to the project's JWT secret")
        else:
            yield Check(True, "tokens", "HS256 with the configured secret")
    if settings.effective_jwks_url:
        yield Check(True, "tokens", f"asymmetric keys from {settings.effective_jwks_url}")
    if settings.jwt_secret is None and not settings.effective_jwks_url:
        if settings.is_production:
            yield Check(False, "tokens", "nothing verifies tokens; set SUPABASE_URL (its JWKS) or "
                                         "SUPABASE_JWT_SECRET")
        else:
            yield Check(True, "tokens", f"HS256 with the local development secret in {settings.state_dir.resolve()}")


def _workflows(settings: Settings) -> Iterator[Check]:
    engine = settings.workflow_engine
    if engine != "inngest":
        how = "the embedded runner" if engine == "embedded" else "off: events stay in the outbox"
        yield Check(True, "workflows", f"{engine} (PIPECD_WORKFLOWS={settings.workflows}): {how}")
        return
    if _is_dev(settings.inngest_dev):
        yield Check(True, "workflows", "inngest, a development server (INNGEST_DEV)")
        return
    missing = [name for name, value in (("INNGEST_EVENT_KEY", settings.inngest_event_key),
                                        ("INNGEST_SIGNING_KEY", settings.inngest_signing_key)) if value is None]
    if missing:
        yield Check(False, "workflows", f"inngest without {' and '.join(missing)}; set them (or INNGEST_DEV=1 for "
                                        "a development server, or PIPECD_WORKFLOWS=embedded)")
    else:
        yield Check(True, "workflows", f"inngest at {settings.inngest_base_url or 'Inngest Cloud'}, keys set")


def _ai(settings: Settings) -> Iterator[Check]:
    if settings.anthropic_api_key is not None and settings.anthropic_api_key.get_secret_value():
        yield Check(True, "ai", f"Claude ({settings.ai_model}) with ANTHROPIC_API_KEY")
    else:
        yield Check(True, "ai", "the offline summarizer (set ANTHROPIC_API_KEY for Claude)")

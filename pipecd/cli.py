"""The `pipecd` command."""
# ruff: noqa: E402

from __future__ import annotations

import gc

# Importing the app makes ~190k objects that live as long as the process: the cyclic collector would rescan them
# again and again while they are being made (about a fifth of a server's start). It is back on at the end of
# this module; `serve` keeps it off until startup is done (see pipecd.app.freeze_startup_objects).
_collecting = gc.isenabled()
gc.disable()

import asyncio
import contextlib
import time
from contextvars import ContextVar
from functools import partial
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from pipecd import runtime
from pipecd.accounts import create_local_user, create_supabase_user, grant_access
from pipecd.database import migrations
from pipecd.database.embedded import DidNotStart
from pipecd.settings import Settings, get_settings
from services.kernel.permissions import Role, Scope

# What the running command holds until it ends (e.g. an embedded server it started for itself).
_resources: ContextVar[contextlib.ExitStack] = ContextVar("resources")


class _Commands(TyperGroup):
    """Known failures (setup, connection, settings) end a command with one line on stderr, not a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with contextlib.ExitStack() as resources:
                token = _resources.set(resources)
                try:
                    return super().invoke(ctx)
                finally:
                    _resources.reset(token)
        except (runtime.SetupError, DidNotStart) as exc:
            _fail(str(exc))
        except psycopg.OperationalError as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            _fail(f"database error: {lines[0]}")
        except ValidationError as exc:
            _fail("; ".join(f"invalid setting {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


app = typer.Typer(
    cls=_Commands, help="PipeCD: a CRM backend for sales teams and their LLM agents.", no_args_is_help=True
)
db_app = typer.Typer(help="The embedded Postgres (used when DATABASE_URL is not set).", no_args_is_help=True)
users_app = typer.Typer(help="Users (identities live in Supabase Auth).", no_args_is_help=True)
app.add_typer(db_app, name="db")
workflows_app = typer.Typer(help="Background work: the outbox relay and the workflow functions.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(workflows_app, name="workflows")


def _settings() -> Settings:
    """The settings of every command; logging follows them from here on."""
    settings = get_settings()
    runtime.configure_logging(settings.log_format)
    return settings


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"pipecd {version('pipecd')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """PipeCD: a CRM backend for sales teams and their LLM agents."""


def _started_embedded(settings: Settings) -> bool:
    """Whether the embedded server is initialized but stopped (so a command that starts it should say so)."""
    server = runtime.embedded(settings)
    return settings.uses_embedded_database and server.initialized() and not server.status().running


def _database(settings: Settings) -> str:
    """The admin URL of the existing, migrated database, for the rest of this command (an embedded server
    started for it is stopped when the command ends)."""
    return _resources.get().enter_context(runtime.existing_database(settings))


def _left_running(settings: Settings) -> None:
    typer.echo(
        f"embedded Postgres left running (data in {settings.embedded_data_dir}); `pipecd db stop` stops it", err=True
    )


# Database -------------------------------------------------------------------------------------------------


@db_app.command("start")
def db_start() -> None:
    """Start the embedded Postgres (initializing it on first use)."""
    settings = _settings()
    if not settings.uses_embedded_database:
        _fail("DATABASE_URL is set: PipeCD uses that database, not the embedded one")
    status = runtime.embedded(settings).start()
    typer.echo(f"embedded Postgres running on the socket {status.socket} (pid {status.pid})", err=True)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded Postgres cleanly."""
    stopped = runtime.embedded(_settings()).stop()
    typer.echo("embedded Postgres stopped" if stopped else "embedded Postgres was not running", err=True)


@db_app.command("status")
def db_status() -> None:
    """Say whether the database is up, and how far it is migrated."""
    settings = _settings()
    if settings.uses_embedded_database:
        status = runtime.embedded(settings).status()
        if not status.running:
            typer.echo(f"embedded Postgres: stopped (data in {settings.embedded_data_dir})")
            raise typer.Exit(3)
        typer.echo(f"embedded Postgres: running on the socket {status.socket} (pid {status.pid})")
    import psycopg

    url = runtime.admin_url(settings, start=False)
    runtime.check_reachable(url, settings)
    with psycopg.connect(url) as conn:
        waiting = migrations.pending(conn)
    typer.echo("migrations: up to date" if not waiting else f"migrations: {len(waiting)} pending (`pipecd migrate`)")


@db_app.command("url")
def db_url() -> None:
    """Print the database's admin URL (starting an existing embedded server if it is stopped)."""
    settings = _settings()
    starting = _started_embedded(settings)
    with runtime.existing_database(settings, migrated=False, keep_running=True) as url:
        typer.echo(url)
    if starting:
        _left_running(settings)


@app.command()
def migrate() -> None:
    """Apply pending migrations (bootstrapping Supabase's roles and auth schema on plain Postgres).
    Without DATABASE_URL, creates the embedded database on first use."""
    settings = _settings()
    starting = settings.uses_embedded_database and not runtime.embedded(settings).status().running
    url = runtime.admin_url(settings)
    runtime.check_reachable(url, settings)
    password = settings.authenticator_password.get_secret_value() if settings.authenticator_password else None
    applied = migrations.migrate(url, authenticator_password=password)
    for migration in applied:
        typer.echo(f"applied {migration.version}_{migration.name}", err=True)
    typer.echo(f"{len(applied)} migration(s) applied; database is current", err=True)
    if starting:
        _left_running(settings)


# Users and tokens -----------------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The user's email address.")],
    role: Annotated[Role, typer.Option(help="The user's role.")] = Role.MEMBER,
    team: Annotated[str | None, typer.Option(help="Team to join (created if it does not exist).")] = None,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    invite: Annotated[bool, typer.Option(help="Send a Supabase invite instead of creating the user.")] = False,
) -> None:
    """Add a user (or update their role and team). Through Supabase Auth when SUPABASE_URL is configured."""
    email = _email(email)
    settings = _settings()
    with runtime.existing_database(settings) as admin:
        _add_user(settings, admin, email, role, team, name, invite)


def _email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        _fail(f"{value!r} is not an email address: {exc}")


def _add_user(
    settings: Settings, admin: str, email: str, role: Role, team: str | None, name: str | None, invite: bool
) -> None:
    if settings.supabase_url and settings.supabase_service_key:
        account = create_supabase_user(settings, email, name, invite=invite)
    else:
        if invite:
            _fail("--invite needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        account = create_local_user(admin, email, name)

    async def grant() -> None:
        async with runtime.open_database(settings, admin) as db:
            profile = await grant_access(db, account.id, role, team)
        state = "created" if account.created else "exists"
        typer.echo(f"{profile.email} ({state}): id {profile.id}, roles {', '.join(profile.roles)}", err=True)

    asyncio.run(grant())
    typer.echo(str(account.id))


@app.command()
def token(
    user: Annotated[str, typer.Option(help="Email of the user the token is for.")],
    scopes: Annotated[str | None, typer.Option(help="Comma-separated: crm.read, crm.write, crm.delete, crm.ai")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=60, max=30 * 86400)] = 3600,
) -> None:
    """Mint a development access token (signed with the local secret) and print only the token."""
    settings = _settings()
    if settings.is_production:
        _fail("refusing to mint tokens when PIPECD_ENV=production")
    with runtime.existing_database(settings) as admin:
        typer.echo(_mint(settings, admin, user, scopes, ttl))


def _mint(settings: Settings, admin: str, email: str, scopes: str | None, ttl: int) -> str:
    if settings.is_production:
        _fail("refusing to mint tokens when PIPECD_ENV=production")
    scope_list: list[Scope] | None = None
    if scopes:
        try:
            scope_list = [Scope(s.strip()) for s in scopes.split(",") if s.strip()]
        except ValueError as exc:
            _fail(f"{exc}; known scopes: {', '.join(s.value for s in Scope)}")
    user_id = runtime.user_id_for_email(admin, email)
    if user_id is None:
        _fail(f"no user {email}; add one with `pipecd users add {email} --role member`")
    assert user_id is not None
    return runtime.mint_token(settings, user_id, email, scopes=scope_list, ttl_seconds=ttl)


# The MCP server over stdio ----------------------------------------------------------------------------------


@app.command()
def mcp(
    user: Annotated[
        str | None, typer.Option(help="Development: act as this user (a token is minted with the local secret).")
    ] = None,
    scopes: Annotated[
        str | None, typer.Option(help="With --user: narrow the minted token, e.g. crm.read or crm.write.")
    ] = None,
) -> None:
    """Serve the MCP server over stdio, as the user of PIPECD_TOKEN (or, in development, of --user)."""
    import os

    settings = _settings()
    if user is None and scopes is not None:
        _fail("--scopes narrows a minted token; it needs --user (a PIPECD_TOKEN carries its own scopes)")
    if user is None and not os.environ.get("PIPECD_TOKEN", ""):
        _fail("set PIPECD_TOKEN to a user's access token, or pass --user EMAIL in development")
    with runtime.existing_database(settings) as admin:
        access = _mint(settings, admin, user, scopes, 12 * 3600) if user is not None else os.environ["PIPECD_TOKEN"]
        asyncio.run(_serve_stdio(settings, admin, access))


async def _serve_stdio(settings: Settings, admin: str, access: str) -> None:
    from mcp_server.auth import TokenCaller
    from mcp_server.server import create_server
    from services.kernel.auth import authenticate
    from services.kernel.errors import Unauthenticated
    from services.kernel.principal import Channel

    async with runtime.open_database(settings, admin) as db:
        verifier = runtime.token_verifier(settings)
        caller = TokenCaller(partial(authenticate, db, verifier, channel=Channel.MCP), access)
        try:
            principal = await caller()
        except Unauthenticated as exc:
            _fail(f"the token was refused: {exc.message}")
        typer.echo(f"PipeCD MCP server (stdio) acting for {principal.email}", err=True)
        server = create_server(
            db, caller, rate_limit=runtime.rate_limits(settings).mcp, confirmation_key=settings.mcp_confirmation_key
        )
        await server.run_stdio_async()


@app.command("mcp-tools")
def mcp_tools() -> None:
    """Print the MCP tools/list of a user allowed everything, as committed in mcp_server/tools.json."""
    from mcp_server.catalog import tools_json

    typer.echo(asyncio.run(tools_json()), nl=False)


# Workflows ------------------------------------------------------------------------------------------------


@workflows_app.command("worker")
def workflows_worker() -> None:
    """Relay the outbox (and, with the embedded engine, run the workflow functions) until stopped."""
    settings = _settings()
    if settings.workflow_engine == "off":
        _fail("PIPECD_WORKFLOWS is off: there is nothing to run")
    admin = _database(settings)

    async def run() -> None:
        async with runtime.open_database(settings, admin) as db:
            engine = runtime.workflows(settings, db)
            assert engine is not None
            async with engine.running():
                typer.echo(f"workflow worker running ({settings.workflow_engine} engine); Ctrl-C stops it", err=True)
                await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@workflows_app.command("runs")
def workflows_runs(
    status: Annotated[str | None, typer.Option(help="Only runs in this state (queued, running, sleeping, "
                                                    "completed, failed).")] = None,
    function: Annotated[str | None, typer.Option(help="Only runs of this function (e.g. deal-created-followup).")]
    = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """List the embedded runner's runs, newest first, with their steps and errors."""
    from workflows.embedded import operations

    settings = _settings()
    admin = _database(settings)

    async def run() -> list[operations.RunView]:
        async with runtime.open_database(settings, admin) as db:
            return await operations.list_runs(db, status=status, function=function, limit=limit)

    try:
        runs = asyncio.run(run())
    except ValueError as exc:
        _fail(str(exc))
    if not runs:
        typer.echo("no runs", err=True)
    for view in runs:
        typer.echo(view.describe())


@workflows_app.command("retry")
def workflows_retry(run_id: Annotated[str, typer.Argument(help="The id of a failed run.")]) -> None:
    """Queue a failed run again: its finished steps are kept, the failed step runs again."""
    from workflows.embedded import operations

    settings = _settings()
    admin = _database(settings)

    async def run() -> bool:
        async with runtime.open_database(settings, admin) as db:
            return await operations.retry(db, run_id)

    try:
        queued = asyncio.run(run())
    except ValueError as exc:
        _fail(str(exc))
    if not queued:
        _fail(f"no failed run {run_id}")
    typer.echo(f"run {run_id} queued again", err=True)


@workflows_app.command("digest")
def workflows_digest(
    user: Annotated[str, typer.Option("--user", help="The user's email.")],
) -> None:
    """(Development) Make the user's weekly pipeline digest now, on the embedded engine, and print it."""
    from workflows.embedded import operations

    settings = _settings()
    if settings.is_production:
        _fail("`pipecd workflows digest` is for development; PIPECD_ENV is production")
    if settings.workflow_engine != "embedded":
        _fail("digests run here on the embedded engine only; with Inngest they come on their schedule")
    admin = _database(settings)
    user_id = runtime.user_id_for_email(admin, user)
    if user_id is None:
        _fail(f"no user {user}")

    async def run() -> Any:
        async with runtime.open_database(settings, admin) as db:
            engine = runtime.workflows(settings, db)
            assert engine is not None and engine.runner is not None
            await engine.start()
            try:
                return await operations.digest_now(db, engine.relay, engine.runner, user_id)
            finally:
                await engine.runner.close()

    try:
        row = asyncio.run(run())
    except ValueError as exc:
        _fail(str(exc))
    if row is None:
        _fail(f"{user} owns no open deal: there is nothing to digest")
    if row["status"] == "failed":
        _fail(f"the digest failed: {row['error']}")
    content = row["content"]
    typer.echo(f"digest {row['id']} ({row['model']})\n{content['status_line']}\n\n{content['summary']}")
    for label, items in (("Risks", content["risks"]), ("Next steps", content["next_steps"])):
        if items:
            typer.echo(f"\n{label}:")
            for item in items:
                typer.echo(f"  - {item['text']}")


@workflows_app.command("send")
def workflows_send(
    name: Annotated[str, typer.Argument(help="Event name, e.g. crm/deal.created.")],
    data: Annotated[str, typer.Option(help="Event data as a JSON object (ids and enums only).")] = "{}",
    event_id: Annotated[str | None, typer.Option("--id", help="Event id (default: a new one).")] = None,
) -> None:
    """(Development) Put an event in the outbox as the system; the relay delivers it like any other."""
    from workflows.embedded import operations

    settings = _settings()
    if settings.is_production:
        _fail("`pipecd workflows send` is for development; PIPECD_ENV is production")
    admin = _database(settings)

    async def run() -> str:
        async with runtime.open_database(settings, admin) as db:
            return await operations.send(db, name, data, event_id)

    try:
        sent = asyncio.run(run())
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"event {sent} queued in the outbox", err=True)


# Demo and development -------------------------------------------------------------------------------------


def _seed(settings: Settings, admin: str) -> dict[str, int]:
    from pipecd.demo import seed_demo

    async def run() -> dict[str, int]:
        async with runtime.open_database(settings, admin) as db:
            return await seed_demo(settings, admin, db)

    return asyncio.run(run())


@app.command()
def seed(
    demo: Annotated[bool, typer.Option("--demo", help="Create the demo company.")] = False,
    scale: Annotated[int | None, typer.Option(
        "--scale", min=1, help="Create a company of this many deals (and the persons, activities, notes... around "
        "them) for measuring; needs an empty database.")] = None,
    random_seed: Annotated[int, typer.Option("--seed", help="With --scale: the same seed gives the same company.")] = 1,
) -> None:
    """Seed data. `--demo` creates the demo company (safe to repeat: nothing is created twice); `--scale N` a
    company of N deals for measuring."""
    if demo == (scale is not None):
        _fail("pass either --demo (the demo company) or --scale N (a company of N deals)")
    settings = _settings()
    admin = _database(settings)
    if scale is None:
        counts = _seed(settings, admin)
        typer.echo("demo company ready: " + ", ".join(f"{v} {k}" for k, v in counts.items()), err=True)
        return
    _seed_scale(settings, admin, scale, random_seed)


def _seed_scale(settings: Settings, admin: str, deals: int, random_seed: int) -> None:
    from rich.progress import Progress

    from pipecd.scale import AlreadySeeded, Shape, seed_scale

    shape = Shape(deals)
    expected = {**shape.counts(), "stage_history": deals}

    async def run() -> dict[str, int]:
        with Progress(transient=True) as bar:
            tasks = {name: bar.add_task(name, total=total) for name, total in expected.items()}

            def advance(table: str, rows: int) -> None:
                bar.advance(tasks[table], rows)

            async with runtime.open_database(settings, admin) as db:
                return await seed_scale(settings, admin, db, deals, seed=random_seed, progress=advance)

    started = time.monotonic()
    try:
        written = asyncio.run(run())
    except AlreadySeeded as exc:
        _fail(str(exc))
    typer.echo(f"company at scale ready in {time.monotonic() - started:.0f} s: "
               + ", ".join(f"{v} {k}" for k, v in written.items()), err=True)


def _workflows_summary(settings: Settings) -> str:
    engine = settings.workflow_engine
    if engine == "off":
        return "off (events stay in the outbox)"
    where = "the embedded runner" if engine == "embedded" else "Inngest"
    followup = (f"a follow-up task {settings.followup_days} day(s) after each new deal"
                if settings.followup_days else "no follow-up tasks")
    return f"on {where}: {followup}; reminders checked at '{settings.reminder_cron}' (UTC)"


EXAMPLE = '{"query": "{ me { user { email } } deals(first: 3) { totalCount edges { node { title stage { name } } } } }"}'  # noqa: E501


def _serve(settings: Settings, admin: str, host: str, port: int, workers: int) -> None:
    import os

    import uvicorn

    if workers == 1:
        gc.disable()  # until the app's startup is done and its objects are frozen (create_app's `serving`)
    from pipecd.app import create_app

    if "public_url" not in settings.model_fields_set:  # say where this server is (MCP resource metadata)
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
        os.environ.setdefault("PIPECD_PUBLIC_URL", settings.public_url)
    if workers > 1:
        # each worker process builds its own app (and pool) from the environment
        os.environ.setdefault("DATABASE_URL", admin)
        uvicorn.run("pipecd.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    log_config=runtime.log_config(settings.log_format))
    else:
        uvicorn.run(create_app(settings, admin_url=admin, serving=True), host=host, port=port,
                    log_config=runtime.log_config(settings.log_format))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
) -> None:
    """Serve the GraphQL gateway (/graphql), the MCP server (/mcp) and health endpoints on the configured database."""
    settings = _settings()
    with runtime.existing_database(settings, any_pending=False) as admin:
        with psycopg.connect(admin) as conn:
            waiting = migrations.pending(conn)
        if waiting:
            typer.echo(f"warning: {len(waiting)} migration(s) pending (/readyz answers 503 until `pipecd migrate`)",
                       err=True)
        _serve(settings, admin, host, port, workers)


@app.command("graphql-schema")
def graphql_schema() -> None:
    """Print the GraphQL schema (SDL), as committed in graphql_api/schema.graphql."""
    from graphql_api.schema import sdl

    typer.echo(sdl(), nl=False)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run PipeCD locally: embedded database, migrations, demo data, tokens for the demo users, and the server."""
    from pipecd.demo import USERS

    settings = _settings()
    if settings.is_production:
        _fail("`pipecd dev` is for development; PIPECD_ENV is production")
    if "reminder_cron" not in settings.model_fields_set:  # a reminder shows within a minute while developing
        settings = settings.model_copy(update={"reminder_cron": "* * * * *"})
    if settings.uses_embedded_database:
        fresh = not runtime.embedded(settings).initialized()
        typer.echo(f"{'creating' if fresh else 'starting'} the embedded Postgres in {settings.embedded_data_dir}",
                   err=True)
    admin = runtime.admin_url(settings)
    runtime.check_reachable(admin, settings)
    typer.echo("applying migrations", err=True)
    password = settings.authenticator_password.get_secret_value() if settings.authenticator_password else None
    applied = migrations.migrate(admin, authenticator_password=password)
    typer.echo(f"seeding the demo company ({len(applied)} migration(s) applied)", err=True)
    counts = _seed(settings, admin)
    url = f"http://127.0.0.1:{port}/graphql"
    typer.echo("PipeCD development server")
    typer.echo(f"  database: {admin}")
    typer.echo("  demo data: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    typer.echo(f"  GraphiQL: {url}  (a token goes in its Headers tab: {{\"Authorization\": \"Bearer …\"}})")
    typer.echo(f"  MCP (Streamable HTTP): http://127.0.0.1:{port}/mcp  (stdio: pipecd mcp --user EMAIL)")
    typer.echo(f"  workflows: {_workflows_summary(settings)}")
    typer.echo("\nDemo users and access tokens (valid 12 hours):")
    for demo_user in USERS:
        user_id = runtime.user_id_for_email(admin, demo_user.email)
        assert user_id is not None
        access = runtime.mint_token(settings, user_id, demo_user.email, ttl_seconds=12 * 3600)
        typer.echo(f"\n  {demo_user.email} ({demo_user.role.value})")
        typer.echo(f"  TOKEN={access}")
        typer.echo(f"  curl -s {url} -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\")
        typer.echo(f"    -d '{EXAMPLE}'")
    typer.echo("\nCtrl-C stops the server; `pipecd db stop` stops the database.\n")
    _serve(settings, admin, "127.0.0.1", port, 1)


@app.command()
def doctor() -> None:
    """Check the setup (Python, database, migrations, app login, tokens, workflows, AI); each problem names its fix."""
    from pipecd.doctor import run

    checks = run(_settings())
    for check in checks:
        typer.echo(check.line())
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


if _collecting:
    gc.enable()

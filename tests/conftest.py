"""Test fixtures: a real Postgres, a migrated template database, and a fresh copy of it for every test.

The server is the embedded Postgres (started in `.pipecd/test-pgdata`) unless TEST_DATABASE_URL names another
one (an admin URL; tests create and drop their own databases there). The template holds the migrations and a
small company: admin alice, manager mia and member bob (team East), member dan (East), member carol (West),
viewer vic, and the "Sales" pipeline.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipecd.accounts import create_local_user, grant_access
from pipecd.database.embedded import EmbeddedPostgres, process_alive
from pipecd.database.migrations import migrate
from services.kernel.permissions import Role, Scope
from services.kernel.principal import Channel, Principal
from services.kernel.uow import Database, UnitOfWork
from services.pipelines import service as pipelines
from services.pipelines.schemas import PipelineCreate, StageInput

ROOT = Path(__file__).resolve().parents[1]

# Apps built by tests run no workflow engine unless a test asks for one: a background relay and runner would
# otherwise act on every test's events (and wait on the test's own blocking checks).
os.environ["PIPECD_WORKFLOWS"] = "off"
# Tests never reach the real Anthropic API: without a key, apps use the offline summarizer.
os.environ.pop("ANTHROPIC_API_KEY", None)
_counter = itertools.count()


def with_database(url: str, name: str, **extra: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    params.update(extra)
    return make_conninfo(**params)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Person:
    """A test user: id, email, role, and team names."""

    key: str
    id: UUID
    email: str
    role: Role
    teams: tuple[str, ...]


PEOPLE = {
    "alice": (Role.ADMIN, ()),
    "mia": (Role.MANAGER, ("East",)),
    "bob": (Role.MEMBER, ("East",)),
    "dan": (Role.MEMBER, ("East",)),
    "carol": (Role.MEMBER, ("West",)),
    "vic": (Role.VIEWER, ()),
}


@dataclass
class Company:
    people: dict[str, Person]
    team_ids: dict[str, UUID]
    sales_pipeline_id: UUID
    sales_stage_ids: list[UUID]

    def principal(
        self, key: str, *, scopes: frozenset[Scope] | None = None, channel: Channel = Channel.GRAPHQL
    ) -> Principal:
        person = self.people[key]
        return Principal(
            user_id=person.id,
            roles=frozenset({person.role}),
            team_ids=frozenset(self.team_ids[t] for t in person.teams),
            scopes=scopes,
            channel=channel,
            email=person.email,
        )


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Admin URL of the server's maintenance database."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    # Several pytest runs may share the server: each registers itself, and the last one out stops it.
    server = EmbeddedPostgres(ROOT / ".pipecd" / "test-pgdata")
    sessions = ROOT / ".pipecd" / "test-sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    mine = sessions / str(os.getpid())
    mine.touch()
    # test databases are throwaway: skip the flushes that make CREATE DATABASE slow
    server.start(settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    try:
        yield server.admin_url("postgres")
    finally:
        mine.unlink(missing_ok=True)
        if not any(process_alive(int(other.name)) for other in sessions.iterdir() if other.name.isdigit()):
            server.stop()



@contextmanager
def rls_session(app_url: str, user_id: UUID, *, scope: str | None = None,
                channel: str | None = None) -> Iterator[psycopg.Connection]:
    """One committed transaction as `user_id` under RLS, with no service in front, set up the way the unit of work
    opens it: the app's login as `authenticated` with the user's JWT claims (and `scope`, if given); `channel`, if
    given, as `pipecd.channel`."""
    claims: dict[str, Any] = {"sub": str(user_id), "role": "authenticated"}
    if scope is not None:
        claims["scope"] = scope
    with psycopg.connect(app_url) as conn, conn.transaction():
        conn.execute("select set_config('request.jwt.claims', %s, true), set_config('role', 'authenticated', true)",
                     [json.dumps(claims)])
        if channel is not None:
            conn.execute("select set_config('pipecd.channel', %s, true)", [channel])
        yield conn


def as_app_login(url: str) -> str:
    """The same database, logged in as the app's pool login (`authenticator`, no password under trust)."""
    params = {k: v for k, v in conninfo_to_dict(url).items() if k != "password"}
    params["user"] = "authenticator"
    return make_conninfo(**params)  # type: ignore[arg-type]


async def _build_company(admin: str) -> Company:
    app = as_app_login(admin)
    people: dict[str, Person] = {}
    async with Database(app, max_size=2) as db:
        for key, (role, teams) in PEOPLE.items():
            email = f"{key}@example.com"
            account = create_local_user(admin, email, key.title())
            for team in teams:
                await grant_access(db, account.id, role, team)
            if not teams:
                await grant_access(db, account.id, role, None)
            people[key] = Person(key, account.id, email, role, teams)
        with psycopg.connect(admin) as conn:
            team_ids = {name: tid for tid, name in conn.execute("select id, name from public.teams").fetchall()}
        company = Company(people, team_ids, UUID(int=0), [])
        async with db.unit_of_work(company.principal("alice")) as uow:
            sales = await pipelines.create(
                uow,
                PipelineCreate(
                    name="Sales",
                    stages=[
                        StageInput(name="Qualified", win_probability=10),
                        StageInput(name="Contact Made", win_probability=25),
                        StageInput(name="Proposal", win_probability=50),
                        StageInput(name="Negotiation", win_probability=75),
                    ],
                ),
            )
        company.sales_pipeline_id = sales.id
        company.sales_stage_ids = [s.id for s in sales.stages]
    with psycopg.connect(admin) as conn:  # the fixture's own bookkeeping is not part of any test
        conn.execute("truncate public.audit_log, public.outbox")
    return company


@pytest.fixture(scope="session")
def template(server_url: str) -> Iterator[tuple[str, Company]]:
    """A migrated database with the test company, copied for each test."""
    name = f"pipecd_tmpl_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{name}"')
    admin = with_database(server_url, name)
    migrate(admin)
    company = asyncio.run(_build_company(admin))
    yield name, company
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


class FreshDatabases:
    """Each test's own copy of the template, made ahead and dropped behind by threads of their own.

    On a server that flushes to disk, CREATE DATABASE and DROP DATABASE each wait for a checkpoint, which takes
    longer than most tests. Done in the background they overlap the tests, and databases made side by side share
    their checkpoints. A test takes a database that is ready and gives it back to be dropped."""

    ahead = 4
    makers = 2  # and as many droppers

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url = server_url
        self.template = template
        self.ready: queue.Queue[str | Exception] = queue.Queue()
        self.used: queue.Queue[str | None] = queue.Queue()
        self.drop_failures: list[str] = []
        self.room = threading.Semaphore(self.ahead)
        self.closing = threading.Event()
        self.maker_threads = [threading.Thread(target=self._make, daemon=True) for _ in range(self.makers)]
        self.droppers = [threading.Thread(target=self._drop, daemon=True) for _ in range(self.makers)]
        for thread in (*self.maker_threads, *self.droppers):
            thread.start()

    def take(self) -> str:
        made = self.ready.get()
        self.room.release()
        if isinstance(made, Exception):
            raise RuntimeError(f"could not make a test database from {self.template}") from made
        return made

    def give_back(self, name: str) -> None:
        self.used.put(name)

    def close(self) -> None:
        self.closing.set()
        for _ in self.maker_threads:
            self.room.release()  # wakes a maker that waits for room
        for thread in self.maker_threads:
            thread.join()
        while not self.ready.empty():
            if isinstance(made := self.ready.get(), str):
                self.used.put(made)
        for _ in self.droppers:
            self.used.put(None)
        for thread in self.droppers:
            thread.join()
        if self.drop_failures:
            raise RuntimeError("test databases left behind: " + "; ".join(self.drop_failures))

    def _make(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            self.room.acquire()
            if self.closing.is_set():
                break
            name = f"pipecd_test_{os.getpid()}_{next(_counter)}"
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.server_url, autocommit=True)
                conn.execute(f'create database "{name}" template "{self.template}" strategy file_copy')
                # durability is not under test: commits need not wait for the disk (on a server run with fsync)
                conn.execute(f'alter database "{name}" set synchronous_commit = off')
            except Exception as error:  # the test that takes it reports it
                self.used.put(name)
                self.ready.put(error)
            else:
                self.ready.put(name)
        if conn is not None:
            conn.close()

    def _drop(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while (name := self.used.get()) is not None:
                try:
                    conn.execute(f'drop database if exists "{name}" with (force)')
                except psycopg.Error as error:
                    self.drop_failures.append(f"{name}: {error}")


@pytest.fixture(scope="session")
def fresh_databases(server_url: str, template: tuple[str, Company]) -> Iterator[FreshDatabases]:
    databases = FreshDatabases(server_url, template[0])
    yield databases
    databases.close()


@pytest.fixture
def admin_url(server_url: str, fresh_databases: FreshDatabases) -> Iterator[str]:
    """Admin URL of this test's own copy of the template."""
    name = fresh_databases.take()
    yield with_database(server_url, name)
    fresh_databases.give_back(name)


@pytest.fixture
def company(template: tuple[str, Company]) -> Company:
    return template[1]


@pytest.fixture
def app_url(admin_url: str) -> str:
    return as_app_login(admin_url)


@pytest.fixture
async def db(app_url: str) -> AsyncIterator[Database]:
    database = Database(app_url, min_size=1, max_size=4)
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def admin(admin_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection to this test's database, for checking what was (not) written."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        yield conn


class Actors:
    """Units of work as the test company's people: `async with actors.uow("bob") as uow: ...`."""

    def __init__(self, db: Database, company: Company) -> None:
        self.db = db
        self.company = company

    def uow(self, key: str, *, scopes: frozenset[Scope] | None = None, channel: Channel = Channel.GRAPHQL):
        return self.db.unit_of_work(self.company.principal(key, scopes=scopes, channel=channel))

    def id(self, key: str) -> UUID:
        return self.company.people[key].id


@pytest.fixture
def actors(db: Database, company: Company) -> Actors:
    return Actors(db, company)


def counts(conn: psycopg.Connection, *tables: str) -> dict[str, int]:
    """Row counts, read as superuser (RLS does not apply)."""
    return {t: conn.execute(f"select count(*) from public.{t}").fetchone()[0] for t in tables}  # type: ignore[index]


# The GraphQL gateway over HTTP ------------------------------------------------------------------------

TEST_JWT_SECRET = "test-secret-for-pipecd-tests-only-0123456789"


@pytest.fixture
def settings(admin_url: str, tmp_path: Path):
    from pipecd.settings import Settings

    return Settings(
        DATABASE_URL=admin_url, PIPECD_STATE_DIR=tmp_path / "state", PIPECD_ENV="test",
        SUPABASE_JWT_SECRET=TEST_JWT_SECRET,
    )


class Api:
    """POSTs GraphQL to the real app in-process (httpx ASGI transport) as one of the test company's people."""

    def __init__(self, client: Any, settings: Any, company: Company) -> None:
        self.client = client
        self.settings = settings
        self.company = company

    def token(self, key: str, *, scopes: list[Scope] | None = None, ttl_seconds: int = 600) -> str:
        from pipecd.runtime import mint_token

        person = self.company.people[key]
        return mint_token(self.settings, person.id, person.email, scopes=scopes, ttl_seconds=ttl_seconds)

    async def post(self, query: str, variables: dict[str, Any] | None = None, *, as_: str | None = "bob",
                   token: str | None = None, scopes: list[Scope] | None = None) -> Any:
        headers = {}
        if token is None and as_ is not None:
            token = self.token(as_, scopes=scopes)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.post("/graphql", json={"query": query, "variables": variables or {}},
                                      headers=headers)

    async def query(self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """The JSON body of a POST (asserting HTTP 200)."""
        response = await self.post(query, variables, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """The app's lifespan, entered and left in one task of its own: the MCP session manager's task group must
    end in the task that started it, and a fixture's setup and teardown may run in different tasks."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        task.result()  # raises what stopped the startup
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
async def api(settings, company: Company) -> AsyncIterator[Api]:
    import httpx

    from pipecd.app import create_app

    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, settings, company)


def events(conn: psycopg.Connection) -> list[tuple[str, dict]]:
    """(name, data) of every outbox event, sorted by name (events of one transaction share a timestamp)."""
    return conn.execute("select name, data from public.outbox order by name").fetchall()


def audit_operations(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("select operation from public.audit_log order by id").fetchall()]


def forget_bookkeeping(conn: psycopg.Connection) -> None:
    """Empty the audit log and outbox after a test's setup, so only the behaviour under test shows."""
    conn.execute("truncate public.audit_log, public.outbox")


def npm_tool(folder: str, packages: dict[str, str], binary: str, *, env: dict[str, str] | None = None) -> Path:
    """An npm package's binary (or, given a path such as `pkg/package.json`, that file under node_modules),
    installed (exact versions) into .tools/<folder> once; the test is skipped, with npm's reason, when npm is
    missing or cannot reach its registry."""
    tools = ROOT / ".tools" / folder
    path = tools / "node_modules" / (binary if "/" in binary else f".bin/{binary}")
    if path.exists():
        return path
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {binary}")
    tools.mkdir(parents=True, exist_ok=True)
    with open(tools / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test runs side by side (one per server) install once, in turn
        if path.exists():
            return path
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(tools), "-E",
             *(f"{name}@{version}" for name, version in packages.items())],
            capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
        )
    if result.returncode != 0 or not path.exists():
        pytest.skip(f"npm could not install {binary}: {result.stderr.strip()[-300:]}")
    return path


# The workflow engine, driven by hand ---------------------------------------------------------------------


@dataclass
class Engine:
    """The embedded runner with the function set and a relay that only sweeps (no LISTEN): a test settles it."""

    runner: Any
    relay: Any

    async def settle(self) -> None:
        """Deliver the outbox and run everything that is ready, until nothing is left."""
        while await self.relay.drain() or await self.runner.drain():
            pass


Start = Callable[..., Coroutine[Any, Any, Engine]]


@pytest.fixture
async def start(db: Database) -> AsyncIterator[Start]:
    """`await start(llm=None, **config)`: an engine over the test database, retries at once; `config` sets
    workflows.functions.Config fields, `llm` the summarizer (default: the offline one)."""
    from workflows import functions
    from workflows.embedded.client import EmbeddedInngest
    from workflows.embedded.runner import Runner
    from workflows.relay import EmbeddedSink, Relay

    made: list[Any] = []

    async def make(llm: Any = None, **config: Any) -> Engine:
        client = EmbeddedInngest(db)
        runner = Runner(db, client, functions.build(client, db, functions.Config(**config), llm), backoff_scale=0)
        await runner.sync()
        made.append(runner)
        return Engine(runner, Relay(db, EmbeddedSink(runner), listen=False))

    yield make
    for runner in made:
        await runner.close()


__all__ = [
    "Actors", "Api", "Company", "Engine", "Start", "UnitOfWork", "audit_operations", "counts", "events",
    "forget_bookkeeping", "npm_tool",
]

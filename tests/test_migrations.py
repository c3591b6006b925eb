"""The migration runner: Supabase CLI-compatible history, bootstrap on plain Postgres, locking, atomicity."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, npm_tool, with_database

from pipecd.database import migrations
from pipecd.database.migrations import discover, migrate, needs_bootstrap, split_statements

SUPABASE_CLI_VERSION = "2.117.0"


@pytest.fixture
def empty_db(server_url: str) -> Iterator[str]:
    """Admin URL of a brand-new, empty database."""
    name = f"pipecd_empty_{os.getpid()}_{threading.get_ident() % 100000}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    yield with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def history(url: str) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


# Splitting ---------------------------------------------------------------------------------------------


def test_split_keeps_semicolons_inside_strings_comments_and_dollar_bodies():
    sql = """
    -- a comment; with a semicolon
    create table t (a text default 'x;y', "we;ird" int);
    /* block; /* nested; */ still comment; */ select 1;
    create function f() returns int language sql as $body$ select 1; $body$;
    select 'it''s; fine', $$a;b$$
    """
    assert split_statements(sql) == [
        "-- a comment; with a semicolon\n    create table t (a text default 'x;y', \"we;ird\" int)",
        "/* block; /* nested; */ still comment; */ select 1",
        "create function f() returns int language sql as $body$ select 1; $body$",
        "select 'it''s; fine', $$a;b$$",
    ]


def test_split_drops_empty_statements_and_trailing_semicolons():
    assert split_statements(";;\n select 1 ;  ;\n\n select 2;") == ["select 1", "select 2"]


def test_split_treats_semicolons_inside_parentheses_as_part_of_the_statement():
    assert split_statements("create rule r as on insert to t do (select 1; select 2); select 3") == [
        "create rule r as on insert to t do (select 1; select 2)",
        "select 3",
    ]


# Applying ----------------------------------------------------------------------------------------------


def test_migrate_applies_every_file_once_and_records_it_like_the_supabase_cli(empty_db):
    files = discover()
    applied = migrate(empty_db)
    assert [m.version for m in applied] == [m.version for m in files]
    assert history(empty_db) == [(m.version, m.name, m.statements) for m in files]
    assert migrate(empty_db) == []
    assert len(history(empty_db)) == len(files)


def test_bootstrap_creates_supabase_roles_and_auth_functions(empty_db):
    migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert needs_bootstrap(conn) is False
        roles = {
            r[0]: r[1:]
            for r in conn.execute(
                "select rolname, rolcanlogin, rolinherit, rolbypassrls, rolsuper from pg_roles"
                " where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')"
            ).fetchall()
        }
        member_of = {
            r[0]
            for r in conn.execute(
                "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid"
                " join pg_roles u on u.oid = m.member where u.rolname = 'authenticator'"
            ).fetchall()
        }
        # a pooled connection reads claims back as '' after a transaction that set them
        conn.execute("select set_config('request.jwt.claims', '', false)")
        empty_claims = conn.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone()
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            ['{"sub": "8f0c6a52-3b7a-4a53-9f1e-2d3c4b5a6e7f", "role": "authenticated"}'],
        )
        claims = conn.execute("select auth.uid()::text, auth.role(), auth.jwt() ->> 'sub'").fetchone()
    assert roles == {
        "anon": (False, False, False, False),
        "authenticated": (False, False, False, False),
        "service_role": (False, False, True, False),
        "authenticator": (True, False, False, False),
    }
    assert member_of == {"anon", "authenticated", "service_role"}
    assert empty_claims == (None, None, None)
    assert claims == (
        "8f0c6a52-3b7a-4a53-9f1e-2d3c4b5a6e7f",
        "authenticated",
        "8f0c6a52-3b7a-4a53-9f1e-2d3c4b5a6e7f",
    )


def test_bootstrap_leaves_an_existing_supabase_auth_schema_alone(empty_db):
    supabase_uid = "select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid /* supabase */"
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute(
            "create table auth.users (id uuid primary key, email text, raw_user_meta_data jsonb,"
            " created_at timestamptz default now())"
        )
        conn.execute(f"create function auth.uid() returns uuid language sql stable as $$ {supabase_uid} $$")
        conn.execute("create function auth.jwt() returns jsonb language sql stable as $$ select '{}'::jsonb $$")
        conn.execute("create function auth.role() returns text language sql stable as $$ select 'anon' $$")
        assert needs_bootstrap(conn) is False
    migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        body = conn.execute("select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure").fetchone()[0]
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'auth'"
            " and table_name = 'users' order by ordinal_position").fetchall()]
    assert body.strip() == supabase_uid
    assert columns == ["id", "email", "raw_user_meta_data", "created_at"]


def test_two_processes_migrating_at_once_apply_each_migration_exactly_once(empty_db):
    barrier = threading.Barrier(2)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(len(migrate(empty_db)))
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [0, len(discover())]  # type: ignore[type-var]
    assert len(history(empty_db)) == len(discover())


def test_a_failing_migration_is_rolled_back_whole_and_not_recorded(empty_db, tmp_path: Path):
    (tmp_path / "20260101000000_create_good.sql").write_text("create table public.good (id int);")
    (tmp_path / "20260101000100_create_bad.sql").write_text(
        "create table public.half_done (id int);\nselect * from public.no_such_table;"
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        migrate(empty_db, directory=tmp_path)
    with psycopg.connect(empty_db) as conn:
        tables = {r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = 'public'").fetchall()}
    assert tables == {"good"}
    assert [v for v, _, _ in history(empty_db)] == ["20260101000000"]


def test_pending_lists_only_what_is_not_applied(empty_db, tmp_path: Path):
    (tmp_path / "20260101000000_create_one.sql").write_text("create table public.one (id int);")
    migrate(empty_db, directory=tmp_path)
    (tmp_path / "20260101000100_create_two.sql").write_text("create table public.two (id int);")
    (tmp_path / "README.md").write_text("not a migration")
    with psycopg.connect(empty_db) as conn:
        assert [m.name for m in migrations.pending(conn, tmp_path)] == ["create_two"]


# The real Supabase CLI agrees ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def supabase_cli() -> Path:
    """The Supabase CLI from npm, installed into .tools/ once; skipped when npm cannot reach the registry."""
    return npm_tool("supabase", {"supabase": SUPABASE_CLI_VERSION}, "supabase",
                    env={"SUPABASE_TELEMETRY_DISABLED": "1"})


def run_cli(cli: Path, *args: str) -> str:
    result = subprocess.run(
        [str(cli), *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "SUPABASE_TELEMETRY_DISABLED": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="session")
def cli_url(server_url: str) -> Iterator[Callable[[str], str]]:
    """A URL the Supabase CLI can use for a database of the test server. The CLI speaks TCP only; the embedded
    server listens on its Unix socket only, so it is reached through a forwarder on 127.0.0.1 for these tests."""
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    host, port = str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))
    listener: socket.socket | None = None
    if host.startswith("/"):
        path = f"{host}/.s.PGSQL.{port}"
        listener = socket.create_server(("127.0.0.1", 0))
        host, port = "127.0.0.1", listener.getsockname()[1]

        def forward(server: socket.socket) -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(path)
                for ends in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=ends, daemon=True).start()

        threading.Thread(target=forward, args=(listener,), daemon=True).start()

    def url(database_url: str) -> str:
        database = psycopg.conninfo.conninfo_to_dict(database_url)
        return f"postgresql://{database.get('user', 'postgres')}@{host}:{port}/{database['dbname']}?sslmode=disable"

    yield url
    if listener is not None:
        listener.close()


@pytest.mark.npm
def test_supabase_cli_sees_every_migration_applied_and_has_nothing_to_push(supabase_cli, cli_url, empty_db):
    migrate(empty_db)
    listing = run_cli(supabase_cli, "migration", "list", "--db-url", cli_url(empty_db))
    for migration in discover():
        row = next((line for line in listing.splitlines() if migration.version in line), "")
        assert row.count(migration.version) == 2, f"{migration.version} not applied per the CLI:\n{listing}"
    pushed = run_cli(supabase_cli, "db", "push", "--db-url", cli_url(empty_db), "--yes")
    assert "Remote database is up to date" in pushed


@pytest.mark.npm
def test_supabase_cli_records_the_same_history_as_pipecd(supabase_cli, cli_url, empty_db, server_url):
    migrate(empty_db)
    name = psycopg.conninfo.conninfo_to_dict(empty_db)["dbname"] + "_cli"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    other = with_database(server_url, name)
    try:
        with psycopg.connect(other, autocommit=True) as conn:
            migrations.bootstrap(conn)
        run_cli(supabase_cli, "db", "push", "--db-url", cli_url(other), "--yes")
        assert history(other) == history(empty_db)
        assert migrate(other) == []
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def test_known_currencies_migrate_over_rows_with_an_unknown_currency(empty_db, tmp_path: Path):
    known = next(m for m in discover() if m.name == "known_currencies")
    for migration in discover():
        if migration.version < known.version:
            shutil.copy(migration.path, tmp_path / migration.path.name)
    migrate(empty_db, directory=tmp_path)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # rows as an older PipeCD could have left them
        conn.execute("insert into public.deals (id, title, owner_id, pipeline_id, currency)"
                     " values (gen_random_uuid(), 'Old', gen_random_uuid(), gen_random_uuid(), 'ZZZ')")
        conn.execute("insert into public.leads (id, title, owner_id, currency)"
                     " values (gen_random_uuid(), 'Old', gen_random_uuid(), 'ZZZ')")

    assert [m.name for m in migrate(empty_db)][-1:] == [discover()[-1].name]

    with psycopg.connect(empty_db) as conn:
        assert conn.execute("select currency from public.deals union all select currency from public.leads"
                            ).fetchall() == [("ZZZ",), ("ZZZ",)]
        assert conn.execute("select count(*) from private.currencies where code = 'EUR'").fetchone() == (1,)

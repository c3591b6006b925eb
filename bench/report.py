"""The benchmark's Markdown: the machine, a table per scale, and each target as met or missed with its ratio."""

from __future__ import annotations

from typing import Any

NAMES = {"pipecd": "PipeCD", "postgraphile": "PostGraphile 5", "floor": "SQL over HTTP"}
LABELS = {
    "deals_page": "deals page (50, with stage, person, organization, owner)",
    "deal": "one deal with notes and activities",
    "search": "search",
    "create_deal": "createDeal (audit, outbox, stage history)",
    "mcp_list_deals": "MCP list_deals (50), official client over HTTP",
    "mcp_search": "MCP search, official client over HTTP",
}


def _figure(summary: dict[str, Any], scenario: str, system: str, level: str, key: str) -> float | None:
    value = summary.get(scenario, {}).get(system, {}).get(level, {}).get(key)
    return None if value is None else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else round(a / b, 2)  # type: ignore[operator]


def _cell(summary: dict[str, Any], scenario: str, system: str, level: str) -> str:
    figures = summary.get(scenario, {}).get(system, {}).get(level)
    if not figures:
        return "—"
    if level == "c1":
        text = f"{figures.get('p50_ms', '?')} / {figures.get('p95_ms', '?')} / {figures.get('p99_ms', '?')} ms"
    else:
        text = f"{figures.get('throughput_rps', '?')} req/s (p50 {figures.get('p50_ms', '?')} ms)"
    if figures.get("errors"):
        text += f" ⚠ {figures['errors']} errors"
    return text


def targets(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, met/missed) for every target the scales measured allow checking."""
    scales = sorted(report["scales"], key=int)
    out: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "missed")

    for deals in scales:
        data = report["scales"][deals]
        s = data["summary"]
        tag = f"{int(deals):,} deals"
        r = _ratio(_figure(s, "deals_page", "pipecd", "c1", "p50_ms"), _figure(s, "deals_page", "postgraphile", "c1",
                                                                             "p50_ms"))
        out.append((f"deals page p50 ≤ 2× PostGraphile, c=1 ({tag})", f"{r}×", verdict(r is not None and r <= 2)))
        r = _ratio(_figure(s, "deals_page", "pipecd", "c16", "throughput_rps"),
                   _figure(s, "deals_page", "postgraphile", "c16", "throughput_rps"))
        out.append((f"deals page throughput c=16 ≥ 50% of PostGraphile's ({tag})", f"{r}×",
                    verdict(r is not None and r >= 0.5)))
        r = _ratio(_figure(s, "deals_page", "pipecd", "c1", "p95_ms"),
                   _figure(s, "deals_page", "pipecd", "c1", "p50_ms"))
        out.append((f"deals page p95 ≤ 2× p50, c=1 ({tag})", f"{r}×", verdict(r is not None and r <= 2)))
        r = _ratio(_figure(s, "deal", "pipecd", "c1", "p50_ms"), _figure(s, "deal", "postgraphile", "c1", "p50_ms"))
        out.append((f"one deal p50 ≤ 1.5× PostGraphile ({tag})", f"{r}×", verdict(r is not None and r <= 1.5)))
        rps = _figure(s, "search", "pipecd", "c16", "throughput_rps")
        if int(deals) == 100_000:
            out.append((f"search ≥ 200 req/s at c=16 ({tag})", f"{rps} req/s", verdict(rps is not None and rps >= 200)))
        p95 = _figure(s, "search", "pipecd", "c1", "p95_ms")
        if int(deals) == 1_000_000:
            out.append((f"search p95 < 25 ms at c=1 ({tag})", f"{p95} ms", verdict(p95 is not None and p95 < 25)))
        r = _ratio(_figure(s, "create_deal", "pipecd", "c16", "throughput_rps"),
                   _figure(s, "create_deal", "floor", "c16", "throughput_rps"))
        out.append((f"createDeal c=16 ≥ 60% of the raw-INSERT floor ({tag})", f"{r}×",
                    verdict(r is not None and r >= 0.6)))
        out.append((f"cold start < 1.0 s ({tag})", f"{data['cold_start_s']} s", verdict(data["cold_start_s"] < 1.0)))
        rss = data["peak_rss_mb"].get("pipecd")
        out.append((f"RSS < 250 MB under load ({tag})", f"{rss} MB", verdict(rss is not None and rss < 250)))
        r = _ratio(_figure(s, "mcp_list_deals", "pipecd", "c1", "p50_ms"),
                   _figure(s, "deals_page", "pipecd", "c1", "p50_ms"))
        out.append((f"MCP list_deals p50 ≤ 1.3× the GraphQL page ({tag})", f"{r}×",
                    verdict(r is not None and r <= 1.3)))
    if len(scales) > 1:
        low, high = report["scales"][scales[0]]["summary"], report["scales"][scales[-1]]["summary"]
        for scenario in ("deals_page", "deal", "search"):
            r = _ratio(_figure(high, scenario, "pipecd", "c1", "p50_ms"),
                       _figure(low, scenario, "pipecd", "c1", "p50_ms"))
            out.append((f"{scenario} p50 grows ≤ 1.3× from {int(scales[0]):,} to {int(scales[-1]):,} deals", f"{r}×",
                        verdict(r is not None and r <= 1.3)))
    return out


def before_and_after(report: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """PipeCD's figures in `baseline` (an earlier run of this benchmark, e.g. before a change) against this run's,
    with each run's own ratio to PostGraphile (or to the SQL floor), measured in that run."""
    lines = ["", "## Before and after", "",
             f"Before: the run of {baseline['started']}; after: this run. Each ratio is to PostGraphile (or, where "
             "PostGraphile has no such request, to the SQL floor) in the same run.", "",
             "| deals | request | c | PipeCD before | PipeCD after | ratio before | ratio after |",
             "|---|---|---|---|---|---|---|"]
    for deals, data in sorted(report["scales"].items(), key=lambda kv: int(kv[0])):
        old = baseline["scales"].get(deals)
        if old is None:
            continue
        for scenario, label in LABELS.items():
            for level in ("c1", "c16"):
                key = "p50_ms" if level == "c1" else "throughput_rps"
                unit = " ms" if level == "c1" else " req/s"
                before = _figure(old["summary"], scenario, "pipecd", level, key)
                after = _figure(data["summary"], scenario, "pipecd", level, key)
                if before is None and after is None:
                    continue
                peer = "postgraphile" if _figure(data["summary"], scenario, "postgraphile", level, key) else "floor"
                ratios = [_ratio(_figure(run["summary"], scenario, "pipecd", level, key),
                                 _figure(run["summary"], scenario, peer, level, key)) for run in (old, data)]
                lines.append(
                    f"| {int(deals):,} | {label} | {level[1:]} | {'—' if before is None else f'{before}{unit}'} | "
                    f"{'—' if after is None else f'{after}{unit}'} | "
                    + " | ".join("—" if r is None else f"{r}× {NAMES[peer]}" for r in ratios) + " |")
        statements = ", ".join(
            f"{scenario} {old['statements_per_request'].get(scenario, {}).get('pipecd', '—')} → {per.get('pipecd')}"
            for scenario, per in data["statements_per_request"].items())
        lines.append(f"| {int(deals):,} | statements per request | | | {statements} | | |")
        lines.append(f"| {int(deals):,} | cold start | | {old['cold_start_s']} s | {data['cold_start_s']} s | | |")
        lines.append(f"| {int(deals):,} | peak RSS | | {old['peak_rss_mb'].get('pipecd')} MB | "
                     f"{data['peak_rss_mb'].get('pipecd')} MB | | |")
    return lines


def render(report: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    m = report["machine"]
    lines = [
        "# PipeCD side by side: PostGraphile 5 and hand-written SQL over HTTP",
        "",
        f"Measured {report['started']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}; "
        f"Python {m['python']}, Node {m['node']}, Postgres {report.get('postgres', '?')} (embedded). "
        f"All three systems on the same database, as the same member ({report['member']}) under the same RLS; "
        f"interleaved rounds, medians of {report['rounds']} rounds of {report['seconds_per_measurement']} s each. "
        "Ratios are the claim; absolute times hold only for this machine.",
        "",
        "c=1 cells: p50 / p95 / p99. c=16 cells: throughput (and p50).",
    ]
    for deals, data in sorted(report["scales"].items(), key=lambda kv: int(kv[0])):
        s = data["summary"]
        lines += ["", f"## {int(deals):,} deals", "",
                  "| request | c | " + " | ".join(NAMES.values()) + " | PipeCD ÷ PostGraphile |",
                  "|---|---|---|---|---|---|"]
        for scenario, label in LABELS.items():
            for level in ("c1", "c16"):
                if not any(level in s.get(scenario, {}).get(system, {}) for system in NAMES):
                    continue
                key = "p50_ms" if level == "c1" else "throughput_rps"
                ratio = _ratio(_figure(s, scenario, "pipecd", level, key),
                               _figure(s, scenario, "postgraphile", level, key))
                cells = " | ".join(_cell(s, scenario, system, level) for system in NAMES)
                lines.append(f"| {label} | {level[1:]} | {cells} | {'—' if ratio is None else f'{ratio}×'} |")
        statements = data["statements_per_request"]
        lines += ["", "SQL statements per request (pg_stat_statements): " + "; ".join(
            f"{scenario}: " + ", ".join(f"{NAMES[k]} {v}" for k, v in per.items()) for scenario, per in
            statements.items()) + ".",
            f"Cold start (process start to the first /graphql answer, database running): {data['cold_start_s']} s. "
            "Peak RSS under load: " + ", ".join(f"{NAMES[k]} {v} MB" for k, v in data["peak_rss_mb"].items()) + "."]
        created = data["runs"].get("create_deal", {})
        if created:
            totals = {k: sum(o["rows_written"] for o in v["c16"]) for k, v in created.items()}
            lines.append("Deals created, counted in the database after each run (equal to the successful requests, "
                         "or the run fails): " + ", ".join(f"{NAMES[k]} {n}" for k, n in totals.items()) + ".")
    if baseline is not None:
        lines += before_and_after(report, baseline)
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t} | {m_} | {v} |" for t, m_, v in targets(report)]
    return "\n".join(lines) + "\n"

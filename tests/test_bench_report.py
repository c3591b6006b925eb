"""The benchmark's verdicts: each target read from the right figures, met or missed by its exact bound."""

from __future__ import annotations

from typing import Any

from bench.report import render, targets


def figures(p50: float, p95: float, rps: float) -> dict[str, Any]:
    return {"c1": {"p50_ms": p50, "p95_ms": p95, "p99_ms": p95, "errors": 0, "requests": 100},
            "c16": {"p50_ms": p50 * 4, "throughput_rps": rps, "errors": 0, "requests": 1000}}


def scale(page: float, search_p95: float, rss: int, cold: float) -> dict[str, Any]:
    summary = {
        "deals_page": {"pipecd": figures(page, page * 2, 150), "postgraphile": figures(4, 5, 300),
                       "floor": figures(2, 3, 600)},
        "deal": {"pipecd": figures(3, 4, 200), "postgraphile": figures(2, 3, 400), "floor": figures(1, 2, 800)},
        "search": {"pipecd": figures(10, search_p95, 199.9), "floor": figures(9, 12, 220)},
        "create_deal": {"pipecd": {"c16": {"throughput_rps": 480.0}}, "floor": {"c16": {"throughput_rps": 800.0}}},
        "mcp_list_deals": {"pipecd": figures(page * 1.3, 10, 100)},
    }
    return {"summary": summary, "cold_start_s": cold, "peak_rss_mb": {"pipecd": rss}, "first_answer_s": {},
            "statements_per_request": {"deals_page": {"pipecd": 4.0}},
            "runs": {"create_deal": {"pipecd": {"c16": [{"rows_written": 12}]}}}}


REPORT = {
    "machine": {"cpu": "test", "cores": 2, "memory_gb": 24, "os": "Linux", "python": "3.11", "node": "v22"},
    "started": "2026-12-01T00:00:00+00:00", "rounds": 3, "seconds_per_measurement": 5, "member": "m",
    "postgres": "18", "scales": {"100000": scale(8.0, 30, 251, 0.99), "1000000": scale(10.4, 24.9, 120, 1.0)},
}


def test_each_target_is_judged_by_its_exact_bound():
    judged = {target: (measured, verdict) for target, measured, verdict in targets(REPORT)}
    assert judged["deals page p50 ≤ 2× PostGraphile, c=1 (100,000 deals)"] == ("2.0×", "met")
    assert judged["deals page p50 ≤ 2× PostGraphile, c=1 (1,000,000 deals)"] == ("2.6×", "missed")
    assert judged["deals page throughput c=16 ≥ 50% of PostGraphile's (100,000 deals)"] == ("0.5×", "met")
    assert judged["deals page p95 ≤ 2× p50, c=1 (100,000 deals)"] == ("2.0×", "met")
    assert judged["one deal p50 ≤ 1.5× PostGraphile (100,000 deals)"] == ("1.5×", "met")
    assert judged["search ≥ 200 req/s at c=16 (100,000 deals)"] == ("199.9 req/s", "missed")
    assert judged["search p95 < 25 ms at c=1 (1,000,000 deals)"] == ("24.9 ms", "met")
    assert judged["createDeal c=16 ≥ 60% of the raw-INSERT floor (100,000 deals)"] == ("0.6×", "met")
    assert judged["cold start < 1.0 s (100,000 deals)"] == ("0.99 s", "met")
    assert judged["cold start < 1.0 s (1,000,000 deals)"] == ("1.0 s", "missed")
    assert judged["RSS < 250 MB under load (100,000 deals)"] == ("251 MB", "missed")
    assert judged["MCP list_deals p50 ≤ 1.3× the GraphQL page (100,000 deals)"] == ("1.3×", "met")
    assert judged["deals_page p50 grows ≤ 1.3× from 100,000 to 1,000,000 deals"] == ("1.3×", "met")
    assert judged["deal p50 grows ≤ 1.3× from 100,000 to 1,000,000 deals"] == ("1.0×", "met")
    assert len(judged) == 2 * 9 + 3


def test_the_markdown_carries_the_machine_the_tables_and_the_verdicts():
    text = render(REPORT)
    assert "on test, 2 cores, 24 GB, Linux; Python 3.11, Node v22, Postgres 18 (embedded)" in text
    assert ("| deals page (50, with stage, person, organization, owner) | 1 | 8.0 / 16.0 / 16.0 ms | 4 / 5 / 5 ms"
            " | 2 / 3 / 3 ms | 2.0× |") in text
    assert ("| createDeal (audit, outbox, stage history) | 16 | 480.0 req/s (p50 ? ms) | — | 800.0 req/s (p50 ? ms)"
            " | — |") in text
    assert "Deals created, counted in the database after each run" in text
    assert "| RSS < 250 MB under load (100,000 deals) | 251 MB | missed |" in text


def test_a_baseline_adds_before_and_after_with_each_runs_own_ratio():
    before = {**REPORT, "started": "2026-11-30T00:00:00+00:00", "scales": {"100000": scale(40.0, 30, 180, 4.5)}}
    text = render(REPORT, before)
    assert "Before: the run of 2026-11-30T00:00:00+00:00; after: this run." in text
    assert ("| 100,000 | deals page (50, with stage, person, organization, owner) | 1 | 40.0 ms | 8.0 ms | "
            "10.0× PostGraphile 5 | 2.0× PostGraphile 5 |") in text
    assert ("| 100,000 | createDeal (audit, outbox, stage history) | 16 | 480.0 req/s | 480.0 req/s | "
            "0.6× SQL over HTTP | 0.6× SQL over HTTP |") in text
    assert "| 100,000 | cold start | | 4.5 s | 0.99 s | | |" in text
    assert "1,000,000 | deals page" not in text.split("## Before and after")[1].split("## Targets")[0]

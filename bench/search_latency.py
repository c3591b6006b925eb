"""Search latency per term through the service layer, as the scale company's member (one connection, in order).

Run against a company seeded with `pipecd seed --scale N`, with the same environment as the CLI:

    PIPECD_STATE_DIR=... PYTHONPATH=$PWD .venv/bin/python -m bench.search_latency [--runs 50] [--sql]

Prints the median and p95 in milliseconds of each term of bench/run.py's SEARCH_TERMS (first 10 hits), and of
all of them together. `--sql` also prints each term's hit count and the best hit, to compare rankings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import psycopg

from bench.run import MEMBER, SEARCH_TERMS
from pipecd import runtime
from pipecd.settings import get_settings
from services.search import service as search


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(admin: str, runs: int, show: bool) -> None:
    settings = get_settings()
    async with runtime.open_database(settings, admin) as db:
        with psycopg.connect(admin) as conn:
            row = conn.execute("select id from public.user_profiles where lower(email) = %s", [MEMBER]).fetchone()
        assert row is not None, f"no {MEMBER}: seed a company with `pipecd seed --scale N` first"
        principal = await runtime.principal_for(db, row[0])
        everything: list[float] = []
        print(f"{'term':<18}{'p50 ms':>8}{'p95 ms':>8}  hits")
        for term in SEARCH_TERMS:
            times = []
            for _ in range(runs + 3):
                started = time.perf_counter()
                async with db.unit_of_work(principal) as uow:
                    hits = await search.search(uow, term, limit=10)
                times.append((time.perf_counter() - started) * 1000)
            times = times[3:]  # the first runs warm the caches and the connection
            everything += times
            best = f"{hits[0].type.value}: {hits[0].title} ({hits[0].score})" if hits and show else ""
            print(f"{term:<18}{statistics.median(times):>8.2f}{percentile(times, 0.95):>8.2f}  {len(hits)} {best}")
        print(f"{'all':<18}{statistics.median(everything):>8.2f}{percentile(everything, 0.95):>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--sql", action="store_true", help="show each term's best hit")
    args = parser.parse_args()
    settings = get_settings()
    with runtime.existing_database(settings) as admin:
        asyncio.run(measure(admin, args.runs, args.sql))


if __name__ == "__main__":
    main()

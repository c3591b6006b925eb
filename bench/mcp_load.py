"""MCP over HTTP with the official client: `concurrency` sessions call one tool in a loop for `seconds`.
Usage: python -m bench.mcp_load < spec.json → one JSON object (the same fields as load.mjs).
spec: {url, token, tool, arguments: [{...}...], concurrency, seconds, warmup_seconds}"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, -(-len(ordered) * p // 100) - 1))
    return ordered[int(index)]


async def calls(client: Client, spec: dict[str, Any], until: float, warm_until: float, latencies: list[float],
                errors: list[str]) -> None:
    n = 0
    while (now := time.perf_counter()) < until:
        arguments = spec["arguments"][n % len(spec["arguments"])]
        n += 1
        result = await client.call_tool(spec["tool"], arguments)
        elapsed = (time.perf_counter() - now) * 1000
        if now < warm_until:
            continue
        if result.is_error:
            errors.append(str(result.content[0])[:300])
        else:
            latencies.append(elapsed)


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """Opens every session first (the handshake is not what is measured), then calls in a loop."""
    latencies: list[float] = []
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {spec['token']}"}
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(spec["concurrency"]):
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=60))
            clients.append(await stack.enter_async_context(
                Client(streamable_http_client(spec["url"], http_client=http))))
        warm_until = time.perf_counter() + spec.get("warmup_seconds", 1)
        until = warm_until + spec["seconds"]
        await asyncio.gather(*(calls(c, spec, until, warm_until, latencies, errors) for c in clients))
        measured = time.perf_counter() - warm_until
    latencies.sort()

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {"requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "p50_ms": rounded(percentile(latencies, 50)), "p95_ms": rounded(percentile(latencies, 95)),
            "p99_ms": rounded(percentile(latencies, 99)), "throughput_rps": round(len(latencies) / measured, 2)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.stdin.read())))))

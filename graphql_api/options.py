"""How the GraphQL gateway is limited: what the app's settings give it. Light to import (no Strawberry), so
settings load without the schema, and commands that serve no GraphQL (the MCP server over stdio, migrations)
never load it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Defaults sized for the web app's heaviest screens with room to spare; every one is configurable
    (PIPECD_GRAPHQL_MAX_* settings). Batched requests (a JSON array of operations) are refused outright."""

    max_depth: int = 10
    max_tokens: int = 2000
    max_aliases: int = 15
    max_cost: int = 10_000
    max_body_bytes: int = 100_000

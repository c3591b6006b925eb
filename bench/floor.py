"""The floor: hand-written SQL over HTTP. Each endpoint verifies the same bearer token, opens one transaction as
the token's user (the same `set_config` PipeCD's units of work make, under the same RLS policies) and runs one
statement that returns the answer as JSON. Nothing a real API would add (validation, permissions in code,
field selection) is here, so what PipeCD and PostGraphile spend above it is their own.

Run: DATABASE_URL=<authenticator login> JWT_SECRET=... uvicorn bench.floor:app
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import jwt
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.queries import FLOOR_CREATE_DEAL, FLOOR_DEAL, FLOOR_DEALS_PAGE, floor_search

SECRET = os.environ.get("JWT_SECRET", "")
pool = AsyncConnectionPool(os.environ.get("DATABASE_URL", ""), min_size=4, max_size=10, open=False)


UNAUTHENTICATED = Response('{"errors":[{"message":"unauthenticated"}]}', status_code=401)
AS_USER = ("select set_config('request.jwt.claims', %s, true), set_config('role', 'authenticated', true),"
           " set_config('pipecd.channel', 'graphql', true)")


def claims_of(request: Request) -> dict[str, Any] | None:
    header = request.headers.get("authorization", "")
    try:
        return jwt.decode(header.removeprefix("Bearer "), SECRET, algorithms=["HS256"], audience="authenticated")
    except jwt.PyJWTError:
        return None


async def as_user(request: Request, sql: str, params: list[Any]) -> Response:
    if (claims := claims_of(request)) is None:
        return UNAUTHENTICATED
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute(AS_USER, [json.dumps(claims)])
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(sql, params)
            row = await cursor.fetchone()
    return Response(row[0] if row else "null", media_type="application/json")


async def deals_page(request: Request) -> Response:
    return await as_user(request, FLOOR_DEALS_PAGE, [])


async def deal(request: Request) -> Response:
    body = await request.json()
    return await as_user(request, FLOOR_DEAL, [body["id"]])


async def search(request: Request) -> Response:
    body = await request.json()
    sql, params = floor_search(body["query"], 10)
    return await as_user(request, sql, params)


async def create_deal(request: Request) -> Response:
    if (claims := claims_of(request)) is None:
        return UNAUTHENTICATED
    row = {**await request.json(), "id": uuid4()}
    async with pool.connection() as conn:
        async with conn.transaction():
            async with conn.pipeline():
                await conn.execute(AS_USER, [json.dumps(claims)])
                for statement in FLOOR_CREATE_DEAL:
                    await conn.execute(statement, row)
    return Response(json.dumps({"id": str(row["id"]), "version": 1}), media_type="application/json")


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    await pool.open()
    yield
    await pool.close()


app = Starlette(
    routes=[Route("/deals", deals_page, methods=["POST"]), Route("/deal", deal, methods=["POST"]),
            Route("/search", search, methods=["POST"]), Route("/create_deal", create_deal, methods=["POST"])],
    lifespan=lifespan,
)

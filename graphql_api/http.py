"""The HTTP side of the gateway: the GraphQL endpoint, the 401 answer for bad tokens, and the body size limit.

Every answer from /graphql is a GraphQL response body: refusals before execution (bad token, body too large,
a batch, an operation sent with GET, another method) carry `data: null` and an error with `extensions.code`, as
errors from execution do."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import strawberry
from cross_web import HTTPException
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.schema.exceptions import InvalidOperationTypeError

from graphql_api.context import AuthenticationFailed, OpenContext, OpenSession, context_getter
from graphql_api.options import Limits
from graphql_api.schema import build_schema
from services.kernel.errors import RateLimited, Unavailable
from services.kernel.uow import Database

PATH = "/graphql"


def refused(status: int, message: str, code: str, *, headers: dict[str, str] | None = None,
            **extensions: Any) -> JSONResponse:
    """An answer given before execution: `data: null` and one error with `extensions.code`."""
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code, **extensions}}]}
    return JSONResponse(body, status_code=status, headers=headers)


class BodySizeLimit:
    """Refuse GraphQL request bodies over `max_bytes` (413), declared or streamed, before parsing them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body exceeds the limit of {self.max_bytes} bytes"
        await refused(413, message, "PAYLOAD_TOO_LARGE", limit=self.max_bytes)(scope, receive, send)


class _TooLarge(Exception):
    pass


class CancelOnDisconnect:
    """Cancel a GraphQL request's work when its client goes away before the answer is sent.

    Servers do not do this by themselves: uvicorn only reports the disconnect to a `receive()` call, which
    nobody makes once the body has been read, so an abandoned request would run its statements to the end.
    Once the body is in, this watches for `http.disconnect` and cancels the request's task; cancelling a unit
    of work cancels its running statement on the server (psycopg) before the connection goes back to the pool.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_read = asyncio.Event()
        gone = asyncio.Event()
        answered = False

        async def receiving() -> Message:
            if body_read.is_set():  # the app asks again (e.g. "is the client still there?"): wait for the end
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()
            if message["type"] == "http.disconnect":
                gone.set()
            return message

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        work = asyncio.create_task(self.app(scope, receiving, sending))
        try:
            reading = asyncio.create_task(body_read.wait())
            await asyncio.wait([work, reading], return_when=asyncio.FIRST_COMPLETED)
            reading.cancel()
            if not work.done():
                watching = asyncio.create_task(self._watch(receive, gone))
                await asyncio.wait([work, watching], return_when=asyncio.FIRST_COMPLETED)
                if not work.done() and gone.is_set() and not answered:
                    work.cancel()
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        finally:
            if not work.done() and not gone.is_set():  # we are cancelled ourselves (shutdown): so is the work
                work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            if not gone.is_set():
                raise

    @staticmethod
    async def _watch(receive: Receive, gone: asyncio.Event) -> None:
        while True:
            if (await receive())["type"] == "http.disconnect":
                gone.set()
                return


# Strawberry's reason for a JSON array of operations (batching is off: one request, one operation, one cost).
_BATCH_REFUSED = "Batching is not enabled"
_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}

# How deeply a request's JSON (the body, or variables sent in a GET's query string) may nest. Our inputs nest a
# few levels; a deep document would only exhaust the recursion of what reads it (a RecursionError, an HTTP 500).
MAX_JSON_DEPTH = 32


def json_depth_within(value: Any, limit: int) -> bool:
    """Whether `value` (decoded JSON) nests no deeper than `limit` arrays and objects. Not recursive itself."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        pending.extend((child, depth + 1) for child in children)
    return True


# How long a client is asked to wait before retrying an UNAVAILABLE answer (overload passes in seconds).
RETRY_AFTER_SECONDS = 2


def _unavailable(response_data: Any) -> bool:
    errors = response_data.get("errors") if isinstance(response_data, dict) else None
    return any((e.get("extensions") or {}).get("code") == "UNAVAILABLE" for e in errors or ())


class GraphQLEndpoint(GraphQL):
    """/graphql as an ASGI app of its own: Strawberry's view, with the request's context opened and closed around
    it here (a framework's routing and dependency solving would cost more than a small query).

    Answers that Strawberry gives in plain text are GraphQL bodies here. An answer with an UNAVAILABLE error (the
    database is overloaded or took too long) is an HTTP 503 with Retry-After, so clients and proxies back off
    instead of reading it as success. The request's transaction ends before its answer is sent."""

    def __init__(self, schema: strawberry.Schema, context_for: OpenContext, *,
                 graphql_ide: Literal["graphiql"] | None) -> None:
        super().__init__(schema, graphql_ide=graphql_ide, allow_queries_via_get=False)
        self.context_for = context_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # mounted as an HTTP route: there are no subscriptions
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):  # before authentication: nothing to authenticate for
            return refused(405, f"{request.method} is not accepted here; send operations with POST",
                           "METHOD_NOT_ALLOWED", headers={"Allow": "GET, POST" if self.graphql_ide else "POST"})
        try:
            async with self.context_for(request) as context:
                try:
                    return await self.run(request, context=context)
                except HTTPException as exc:
                    return _refusal(request, exc)
        except AuthenticationFailed as exc:
            return refused(401, exc.message, "UNAUTHENTICATED", headers={"WWW-Authenticate": 'Bearer realm="pipecd"'})
        except RateLimited as exc:  # at authentication, before the request's roles are read or any resolver runs
            return refused(429, exc.message, "RATE_LIMITED", headers={"Retry-After": str(exc.retry_after)},
                           retryAfter=exc.retry_after)
        except Unavailable as exc:  # before any resolver runs: authentication could not reach the database
            return refused(503, exc.message, "UNAVAILABLE", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        if _unavailable(response_data):
            sub_response.status_code = 503
            sub_response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return super().create_response(response_data, sub_response)

    def encode_json(self, data: object) -> bytes:
        """The answer as compact UTF-8 JSON, by pydantic-core's encoder: several times faster than the standard
        library's on a page of records."""
        return to_json(data)

    def decode_json(self, data: str | bytes) -> object:
        too_deep = HTTPException(400, f"the request's JSON nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            value = super().decode_json(data)
        except RecursionError:
            raise too_deep from None
        if not json_depth_within(value, MAX_JSON_DEPTH):
            raise too_deep
        return value


def _refusal(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.reason == _BATCH_REFUSED:
        return refused(400, "batched requests (a JSON array of operations) are not accepted; send one operation per"
                       " request", "BATCHING_NOT_SUPPORTED")
    if request.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
        return refused(405, f"{exc.reason}; send operations with POST", "METHOD_NOT_ALLOWED", headers={"Allow": "POST"})
    return refused(exc.status_code, exc.reason, _CODES.get(exc.status_code, "BAD_REQUEST"))


def install(
    app: Starlette, db: Database, open_session: OpenSession, *, limits: Limits | None = None, production: bool = False
) -> None:
    """Mount /graphql on `app`: GraphiQL and introspection only outside production."""
    limits = limits or Limits()
    endpoint = GraphQLEndpoint(
        build_schema(limits, introspection=not production),
        context_getter(db, open_session),
        graphql_ide=None if production else "graphiql",
    )
    # every method: the endpoint refuses those other than GET and POST itself (405), before authentication
    app.router.routes.append(Route(PATH, CancelOnDisconnect(BodySizeLimit(endpoint, limits.max_body_bytes))))

"""The ASGI app factory: one Starlette app, one lifespan that opens what each surface needs, health endpoints.

GraphQL at /graphql, the MCP server at /mcp (mounted last, at the root, since it also serves the OAuth
protected resource metadata under /.well-known/). The workflow engine runs in the lifespan: the outbox relay,
and the embedded runner unless Inngest runs the workflows (`PIPECD_WORKFLOWS=inngest`, or any INNGEST_* variable
set); then the Inngest endpoint (/api/inngest) joins them, and Inngest calls it.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import graphql_api.http
from graphql_api.options import Limits
from mcp_server.options import HttpOptions
from pipecd import runtime
from pipecd.database.migrations import discover
from pipecd.settings import Settings
from services.kernel.auth import authenticate, token_session
from services.kernel.principal import Channel
from services.kernel.uow import Database

if TYPE_CHECKING:
    import inngest

    from mcp_server.http import Mounted

log = logging.getLogger("pipecd.app")


def create_app(settings: Settings, *, admin_url: str | None = None, serving: bool = False) -> Starlette:
    """The app. `serving`: a process that serves it until it exits (not a test that builds many). It answers
    as soon as it listens, while the MCP server loads (see `DeferredMcp`), and what its startup leaves alive is
    then frozen out of the garbage collector's reach (see `freeze_startup_objects`)."""
    admin = admin_url or runtime.admin_url(settings)
    db = runtime.database(settings, admin)
    verifier = runtime.token_verifier(settings)
    limits = runtime.rate_limits(settings)
    shipped = [m.version for m in discover()]
    options = HttpOptions(
        resource_url=settings.mcp_resource_url,
        issuer_url=settings.auth_issuer,
        allowed_hosts=settings.effective_mcp_allowed_hosts,
        allowed_origins=settings.effective_mcp_allowed_origins,
        rate_limit=limits.mcp,
        confirmation_key=settings.mcp_confirmation_key,
    )
    mcp = DeferredMcp(
        partial(importlib.import_module, "mcp_server.http"),
        lambda http: http.build(db, partial(authenticate, db, verifier, channel=Channel.MCP), options),
    )
    engine = runtime.workflows(settings, db)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await db.open()
        try:
            # a serving process answers while the MCP server loads, and freezes its heap once that is done
            async with mcp.running(wait=not serving, then=freeze_startup_objects if serving else None), \
                    engine.running() if engine else nullcontext():
                yield
        finally:
            await db.close()

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        if not mcp.started:
            return JSONResponse({"status": mcp.state}, status_code=503)
        try:
            applied = await db.applied_migrations()
        except Exception as exc:  # any failure to reach the database means not ready
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        missing = [v for v in shipped if v not in applied]
        if missing:
            return JSONResponse({"status": "migrations pending", "pending": missing}, status_code=503)
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)], lifespan=lifespan)
    app.state.db = db  # the one pool every surface shares (operational checks and tests reach it here)
    app.state.workflows = engine  # the relay and, when embedded, the runner (None when workflows are off)
    app.state.mcp = mcp

    graphql_api.http.install(
        app,
        db,
        # one request, one operation: counted as the token is verified, before the user's roles are read (in the
        # round trip that opens the request's transaction)
        partial(token_session, db, verifier, channel=Channel.GRAPHQL, limit=limits.graphql),
        limits=Limits(
            max_depth=settings.graphql_max_depth,
            max_tokens=settings.graphql_max_tokens,
            max_aliases=settings.graphql_max_aliases,
            max_cost=settings.graphql_max_cost,
            max_body_bytes=settings.graphql_max_body_bytes,
        ),
        production=settings.is_production,
    )
    if engine is not None and engine.inngest is not None:
        serve_workflows_on_inngest(app, settings, db, engine.inngest)
    app.mount("/", mcp)  # last: it answers whatever the routes above do not
    return app


class DeferredMcp:
    """The MCP server, mounted at once and built once the app runs.

    Its SDK is the largest import of the app (about a third of a server's start). A serving process imports it
    in a worker thread after it starts listening, so GraphQL answers meanwhile; MCP requests that arrive before
    it is ready wait for it, and /readyz answers 503 `starting` until then. `running(wait=True)` (tests, tools)
    builds it before the app takes requests. If it cannot be built, the error is logged and MCP requests and
    /readyz answer 503: the rest of the app keeps serving."""

    def __init__(self, load: Callable[[], ModuleType], build: Callable[[ModuleType], Mounted]) -> None:
        self.load = load  # imports the server's module (with its SDK): run in a worker thread
        self._build = build
        self._mounted: Mounted | None = None
        self._settled = asyncio.Event()  # built, or failed
        self.failure: Exception | None = None

    @property
    def started(self) -> bool:
        return self._mounted is not None

    @property
    def state(self) -> str:
        """What /readyz says of it."""
        if self._mounted is not None:
            return "ready"
        return "starting" if self.failure is None else "MCP server failed to start"

    async def settled(self) -> None:
        """Until the server is up, or failed to start."""
        await self._settled.wait()

    @asynccontextmanager
    async def running(self, *, wait: bool, then: Callable[[], None] | None = None) -> AsyncIterator[None]:
        """Build the server and run its sessions until the app stops (in the lifespan: the session manager's
        task group must start and end in one task, so it runs in a task of its own)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop, then))
        try:
            if wait:
                await self._settled.wait()
                if self.failure is not None:
                    raise self.failure
            yield
        finally:
            stop.set()
            await task

    async def _run(self, stop: asyncio.Event, then: Callable[[], None] | None) -> None:
        try:
            module = await asyncio.to_thread(self.load)  # the slow part, off the event loop
            mounted = self._build(module)
            async with mounted.running():
                self._mounted = mounted
                self._settled.set()
                if then is not None:
                    then()
                await stop.wait()
        except Exception as exc:
            if self._mounted is not None:
                raise  # a failure of the running server: the app's shutdown reports it
            self.failure = exc
            self._settled.set()
            log.exception("the MCP server failed to start")
            if then is not None:
                then()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._settled.wait()
        if self._mounted is None and scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # "try again later"
            return
        if self._mounted is None:
            response = JSONResponse({"error": "unavailable", "error_description": self.state}, status_code=503)
            await response(scope, receive, send)
            return
        await self._mounted.app(scope, receive, send)


def freeze_startup_objects() -> None:
    """Startup leaves ~190k objects alive for good (modules, schemas, the pool). The cyclic collector would
    rescan them all in every full collection, pausing requests under load (~140 ms); frozen, it skips them.
    Garbage is collected first, so none of it is kept forever; then the collector runs again (the CLI turns it
    off while a server starts)."""
    gc.collect()
    gc.freeze()
    gc.enable()


def serve_workflows_on_inngest(app: Starlette, settings: Settings, db: Database, client: inngest.Inngest) -> None:
    """Inngest (Cloud or self-hosted) calls the workflow functions at /api/inngest; only this engine has it. The
    SDK's handler needs a FastAPI app: it gets one of its own, routed that path."""
    from fastapi import FastAPI

    import workflows.functions
    import workflows.production

    handler = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.router.routes.append(Route(workflows.production.SERVE_PATH, handler))
    workflows.production.mount(
        handler,
        client,
        workflows.functions.build(client, db, runtime.workflow_config(settings), runtime.llm(settings)),
        serve_origin=settings.public_url,
        enable_unauthed_sync=settings.inngest_unauthed_sync,
    )


def app_from_environment() -> Starlette:
    """Factory for `uvicorn --factory` (multi-worker serving): settings from the environment."""
    from pipecd.settings import get_settings

    settings = get_settings()
    runtime.configure_logging(settings.log_format)
    return create_app(settings, serving=True)

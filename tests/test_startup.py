"""What a server does at startup: it loads only what its configuration uses, answers GraphQL while the MCP server
loads, and a serving app takes what startup left alive out of the garbage collector's rescans."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import subprocess
import sys
import threading

import httpx
from conftest import ROOT, Api, lifespan

# Each is large to import and needed only elsewhere: the model SDK when an API key is set, the workflow engine
# and Inngest SDK when workflows run (FastAPI too: the SDK's handlers need it), the Supabase client when users are
# added through Supabase Auth, an HTTP client (httpx, with the terminal libraries it loads) when signing keys come
# from a JWKS URL or users are added through Supabase Auth (the MCP SDK loads it once the app runs).
ONLY_WHEN_USED = ("anthropic", "inngest", "workflows.engine", "workflows.functions", "supabase", "fastapi", "httpx",
                  "rich")

BUILD_APP = """
import sys
from pipecd.app import create_app
from pipecd.settings import Settings
import pipecd.cli

settings = Settings(_env_file=None, DATABASE_URL="postgresql://postgres@/pipecd?host=/nonexistent",
                    PIPECD_WORKFLOWS="off", PIPECD_ENV="test", SUPABASE_JWT_SECRET="x" * 40)
create_app(settings, serving=True)
print(" ".join(name for name in sys.argv[1:] if name in sys.modules) or "none")
"""


def loaded_by_building_a_serving_app(*modules: str) -> str:
    out = subprocess.run([sys.executable, "-c", BUILD_APP, *modules], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_server_without_workflows_or_api_key_loads_no_model_sdk_workflow_engine_or_supabase_client() -> None:
    assert loaded_by_building_a_serving_app(*ONLY_WHEN_USED) == "none"


def test_the_cli_loads_without_the_graphql_schema() -> None:
    # commands that serve no GraphQL (the MCP server over stdio, migrate, seed) start without Strawberry
    out = subprocess.run([sys.executable, "-c", "import sys, pipecd.cli; print('strawberry' in sys.modules,"
                          " 'graphql_api.schema' in sys.modules)"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (out.returncode, out.stdout.strip()) == (0, "False False"), out.stderr


def test_a_serving_app_is_built_without_the_mcp_sdk() -> None:
    # it loads once the app runs (DeferredMcp): GraphQL answers meanwhile
    assert loaded_by_building_a_serving_app("mcp", "mcp_server.http", "mcp_server.server", "graphql_api.http") \
        == "graphql_api.http"


async def test_a_serving_app_freezes_what_its_startup_left_alive(settings) -> None:
    from pipecd.app import create_app

    gc.unfreeze()
    try:
        gc.disable()  # as `pipecd serve` starts it
        app = create_app(settings, serving=True)
        async with lifespan(app):
            await app.state.mcp.settled()  # the heap is frozen once the MCP server is up
            assert gc.get_freeze_count() > 0
            assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


async def test_an_app_built_by_a_test_freezes_nothing(settings) -> None:
    from pipecd.app import create_app

    gc.unfreeze()
    async with lifespan(create_app(settings)):
        assert gc.get_freeze_count() == 0


async def test_a_serving_app_answers_graphql_while_the_mcp_server_loads(settings, company) -> None:
    from pipecd.app import create_app

    app = create_app(settings, serving=True)
    loading, loaded = threading.Event(), threading.Event()

    def load_slowly():  # as importing the SDK would, in its worker thread
        loading.set()
        loaded.wait(10)
        return importlib.import_module("mcp_server.http")

    app.state.mcp.load = load_slowly
    gc.unfreeze()
    try:
        async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                    base_url="http://127.0.0.1") as client:
            api, bob = Api(client, settings, company), company.people["bob"].email
            await asyncio.to_thread(loading.wait, 10)
            assert await api.query("{ me { user { email } } }") == {"data": {"me": {"user": {"email": bob}}}}
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (503, {"status": "starting"})
            metadata = asyncio.create_task(client.get("/.well-known/oauth-protected-resource/mcp"))
            await asyncio.sleep(0.05)
            assert not metadata.done()  # an MCP request waits for the server
            loaded.set()
            assert (await metadata).status_code == 200
            assert (await metadata).json()["resource"] == settings.mcp_resource_url
            assert (await client.get("/readyz")).json() == {"status": "ready"}
    finally:
        loaded.set()
        gc.unfreeze()
        gc.enable()


async def test_an_mcp_server_that_fails_to_load_leaves_graphql_serving_and_says_why(settings, company,
                                                                                    caplog) -> None:
    from pipecd.app import create_app

    app = create_app(settings, serving=True)

    def broken():
        raise ImportError("no module named mcp")

    app.state.mcp.load = broken
    gc.unfreeze()
    gc.disable()  # as `pipecd serve` starts it: the collector comes back even so
    try:
        with caplog.at_level(logging.ERROR, logger="pipecd.app"):
            async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                        base_url="http://127.0.0.1") as client:
                await app.state.mcp.settled()
                api, bob = Api(client, settings, company), company.people["bob"].email
                assert await api.query("{ me { user { email } } }") == {"data": {"me": {"user": {"email": bob}}}}
                mcp = await client.post("/mcp", json={})
                assert (mcp.status_code, mcp.json()) == (
                    503, {"error": "unavailable", "error_description": "MCP server failed to start"})
                ready = await client.get("/readyz")
                assert (ready.status_code, ready.json()) == (503, {"status": "MCP server failed to start"})
                sent = []

                async def send(message):
                    sent.append(message)

                await app.state.mcp({"type": "websocket", "path": "/mcp"}, None, send)
                assert sent == [{"type": "websocket.close", "code": 1013}]
                assert gc.isenabled() and gc.get_freeze_count() > 0
        assert [(r.message, r.exc_info[1].args) for r in caplog.records if r.exc_info] == [
            ("the MCP server failed to start", ("no module named mcp",))]
    finally:
        gc.unfreeze()
        gc.enable()


async def test_an_app_built_by_a_test_waits_for_its_mcp_server(settings) -> None:
    from pipecd.app import create_app

    app = create_app(settings)

    def broken():
        raise ImportError("no module named mcp")

    app.state.mcp.load = broken
    try:
        async with lifespan(app):
            raise AssertionError("the app started without its MCP server")
    except ImportError as exc:
        assert exc.args == ("no module named mcp",)

"""What a server does at startup: it loads only what its configuration uses, and a serving app takes what startup
left alive out of the garbage collector's rescans."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from conftest import ROOT, lifespan

# Each is large to import and needed only elsewhere: the model SDK when an API key is set, the workflow engine
# and Inngest SDK when workflows run, the Supabase client when users are added through Supabase Auth.
ONLY_WHEN_USED = ("anthropic", "inngest", "workflows.engine", "workflows.functions", "supabase")

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


def test_a_server_without_workflows_or_api_key_loads_no_model_sdk_workflow_engine_or_supabase_client() -> None:
    out = subprocess.run([sys.executable, "-c", BUILD_APP, *ONLY_WHEN_USED], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


async def test_a_serving_app_freezes_what_its_startup_left_alive(settings) -> None:
    from pipecd.app import create_app

    gc.unfreeze()
    try:
        gc.disable()  # as `pipecd serve` starts it
        async with lifespan(create_app(settings, serving=True)):
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

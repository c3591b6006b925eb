"""The GraphQL contract for clients: the committed SDL matches the code, types match the service models, and
the web app's tooling (graphql-codegen's client preset) generates from the SDL and representative operations."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, npm_tool
from graphql import build_schema as parse_sdl
from graphql import parse, validate
from typer.testing import CliRunner

from graphql_api import types
from graphql_api.schema import build_schema, sdl
from pipecd.cli import app

SDL_FILE = ROOT / "graphql_api" / "schema.graphql"
OPERATIONS = sorted((ROOT / "tests" / "graphql").glob("*.graphql"))
CODEGEN = {"@graphql-codegen/cli": "7.4.3", "@graphql-codegen/client-preset": "6.2.0", "graphql": "16.11.0"}


def test_committed_sdl_matches_the_code():
    assert SDL_FILE.read_text() == sdl(), "the schema changed: run `pipecd graphql-schema > graphql_api/schema.graphql`"


def test_graphql_schema_command_prints_the_sdl():
    result = CliRunner().invoke(app, ["graphql-schema"])
    assert result.exit_code == 0
    assert result.stdout == SDL_FILE.read_text()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@pytest.mark.parametrize(
    "strawberry_type",
    [types.AuditEntryType, types.DealType, types.PersonType, types.OrganizationType, types.LeadType,
     types.ActivityType, types.NoteType, types.PipelineType, types.StageType, types.UserType, types.TeamType,
     types.NotificationType],
    ids=lambda t: t.__name__,
)
def test_graphql_types_carry_every_field_of_their_service_model(strawberry_type):
    model = strawberry_type._pydantic_type
    graphql_type = build_schema()._schema.get_type(strawberry_type.__strawberry_definition__.name)
    model_fields = {_camel(name) for name in model.model_fields}
    assert model_fields <= set(graphql_type.fields)
    for name, field in model.model_fields.items():
        assert graphql_type.fields[_camel(name)].description == field.description


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda p: p.name)
def test_representative_operations_are_valid_against_the_committed_sdl(operation):
    assert validate(parse_sdl(SDL_FILE.read_text()), parse(operation.read_text())) == []


@pytest.fixture(scope="session")
def codegen() -> Path:
    """graphql-codegen with the client preset, installed from npm into .tools/ once."""
    return npm_tool("codegen", CODEGEN, "graphql-codegen").parents[2]


@pytest.mark.npm
def test_graphql_codegen_client_preset_generates_from_the_committed_sdl(codegen: Path, tmp_path: Path):
    out = tmp_path / "gql"
    config = tmp_path / "codegen.json"
    config.write_text(json.dumps({
        "schema": str(SDL_FILE),
        "documents": [str(p) for p in OPERATIONS],
        "generates": {f"{out}/": {"preset": "client"}},
    }))
    result = subprocess.run(
        [str(codegen / "node_modules" / ".bin" / "graphql-codegen"), "--config", str(config)],
        cwd=codegen, capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    generated = (out / "graphql.ts").read_text()
    for name in ("DealsPageQuery", "DealDetailQuery", "QuickSearchQuery", "CreateDealMutation"):
        assert f"export type {name} = " in generated

"""The full `tools/list`, as a user allowed everything sees it: committed as mcp_server/tools.json, so that any
change to what assistants are offered (names, descriptions, schemas, hints) shows up in review."""

from __future__ import annotations

import json
from uuid import UUID

from mcp_server.server import create_server
from services.kernel.permissions import Role
from services.kernel.principal import Channel, Principal
from services.kernel.uow import Database

EVERYTHING = Principal(
    user_id=UUID(int=0), roles=frozenset(Role), team_ids=frozenset(), scopes=None, channel=Channel.MCP
)


async def tools_json() -> str:
    async def caller() -> Principal:
        return EVERYTHING

    server = create_server(Database(""), caller)  # never opened: listing tools reads nothing
    tools = await server.list_tools()
    listed = {"tools": [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]}
    return json.dumps(listed, indent=1, ensure_ascii=False) + "\n"

"""Prompts: ready-made tasks an assistant can start from (`pipeline_review`, `deal_brief`, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_server.registry import PrincipalSource
from services.kernel.uow import Database

if TYPE_CHECKING:
    from mcp_server.server import CrmServer


def install(server: CrmServer, db: Database, principal: PrincipalSource) -> None:
    """Add the CRM's prompts and the completions for their arguments to `server`."""

"""Resources and resource templates: CRM records an assistant can read by URI (`crm://deals/{deal_id}`, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_server.registry import PrincipalSource
from services.kernel.uow import Database

if TYPE_CHECKING:
    from mcp_server.server import CrmServer


def install(server: CrmServer, db: Database, principal: PrincipalSource) -> None:
    """Add the CRM's resources and templates to `server`."""

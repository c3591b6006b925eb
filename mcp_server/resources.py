"""Resources and resource templates: CRM records an assistant can read by URI (`crm://deals/{deal_id}`, ...).

A record comes with the relations that help to work on it (`records.py`: a deal with its newest notes and open
activities, a person with their deals, ...), the same as its `get_*` tool returns, read as the caller through the
services, so Row Level Security decides what is in it. The content is JSON with its text cleaned (`safety.clean`)
and its size kept within the result budget (`safety.py`) by dropping related records from the ends of the lists
(`truncated: true`).

Errors reach the client as protocol errors whose message reads like a tool error: a missing record, one the caller
may not see and a malformed id are "invalid params" (-32602, the SDK's resource-not-found); a refused permission is
the SDK's anticipated resource error (-32603) saying `[forbidden] ...`; anything unexpected is logged and answered
with a reference only.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from mcp_server.errors import NOT_AN_ID, resource_error
from mcp_server.records import deal_detail, lead_detail, organization_detail, person_detail
from mcp_server.registry import PrincipalSource
from mcp_server.safety import as_data
from services.kernel.errors import Invalid
from services.kernel.principal import Principal
from services.kernel.uow import Database, UnitOfWork
from services.notifications import service as notifications
from services.pipelines import service as pipelines
from services.summaries import service as summaries
from services.users import service as users

if TYPE_CHECKING:
    from mcp_server.server import CrmServer

JSON = "application/json"

DEAL_URI = "crm://deals/{deal_id}"
PERSON_URI = "crm://persons/{person_id}"
ORGANIZATION_URI = "crm://organizations/{organization_id}"
LEAD_URI = "crm://leads/{lead_id}"
PIPELINES_URI = "crm://pipelines"
ME_URI = "crm://me"
NOTIFICATIONS_URI = "crm://me/notifications"
SUMMARY_URI = "crm://summaries/{summary_id}"

def record_id(value: str, field: str) -> UUID:
    """The id in a URI or prompt argument, or `Invalid` naming the argument."""
    try:
        return UUID(value)
    except ValueError:
        raise Invalid(NOT_AN_ID, field=field) from None


async def deal_record(uow: UnitOfWork, deal_id: UUID) -> dict[str, Any]:
    return as_data(await deal_detail(uow, deal_id))


async def person_record(uow: UnitOfWork, person_id: UUID) -> dict[str, Any]:
    return as_data(await person_detail(uow, person_id))


async def organization_record(uow: UnitOfWork, organization_id: UUID) -> dict[str, Any]:
    return as_data(await organization_detail(uow, organization_id))


async def _summary(uow: UnitOfWork, summary_id: UUID) -> Any:
    return as_data(await summaries.get(uow, summary_id))


async def lead_record(uow: UnitOfWork, lead_id: UUID) -> dict[str, Any]:
    return as_data(await lead_detail(uow, lead_id))


def install(server: CrmServer, db: Database, principal: PrincipalSource) -> None:
    """Add the CRM's resources and templates to `server`."""

    async def read(build: Callable[[UnitOfWork], Awaitable[Any]]) -> str:
        caller: Principal | None = None
        try:
            caller = await principal()
            async with db.unit_of_work(caller) as uow:
                content = await build(uow)
        except Exception as exc:
            raise resource_error(exc, caller) from exc
        return json.dumps(content, ensure_ascii=False)

    @server.resource(
        DEAL_URI, name="deal", title="Deal", mime_type=JSON,
        description="One deal as JSON: the deal (value, currency, status, owner, weighted value, `version`), its "
                    "pipeline and stage by name, its person and organization, its 10 newest notes and 10 newest open "
                    "activities (`notes_total` and `open_activities_total` count them all). Ids come from `search` "
                    "or `list_deals`; never guess them.",
    )
    async def deal(deal_id: str) -> str:
        return await read(lambda uow: deal_record(uow, record_id(deal_id, "deal_id")))

    @server.resource(
        PERSON_URI, name="person", title="Person", mime_type=JSON,
        description="One contact person as JSON: name, emails, phones, job title, owner; their organization, their "
                    "10 newest deals, 10 newest notes and 10 newest open activities, with totals. Ids come from "
                    "`search` or `list_persons`; never guess them.",
    )
    async def person(person_id: str) -> str:
        return await read(lambda uow: person_record(uow, record_id(person_id, "person_id")))

    @server.resource(
        ORGANIZATION_URI, name="organization", title="Organization", mime_type=JSON,
        description="One organization as JSON: name, domain, address, owner; its 10 newest persons, deals and notes, "
                    "with totals. Ids come from `search` or `list_organizations`; never guess them.",
    )
    async def organization(organization_id: str) -> str:
        return await read(lambda uow: organization_record(uow, record_id(organization_id, "organization_id")))

    @server.resource(
        LEAD_URI, name="lead", title="Lead", mime_type=JSON,
        description="One lead from the inbox as JSON: title, source, value, contact details, status; its linked "
                    "person and organization, 10 newest notes and 10 newest open activities, with totals. Ids come "
                    "from `search` or `list_leads`; never guess them.",
    )
    async def lead(lead_id: str) -> str:
        return await read(lambda uow: lead_record(uow, record_id(lead_id, "lead_id")))

    @server.resource(
        PIPELINES_URI, name="pipelines", title="Pipelines and stages", mime_type=JSON,
        description="Every pipeline as JSON, in display order, with its stages in order: each stage's id, name and "
                    "win probability (percent). Stage ids for creating and moving deals come from here.",
    )
    async def all_pipelines() -> str:
        async def build(uow: UnitOfWork) -> Any:
            return {"pipelines": as_data(await pipelines.list(uow))}

        return await read(build)

    @server.resource(
        ME_URI, name="me", title="Who am I", mime_type=JSON,
        description="The user this assistant acts for, as JSON: profile, roles, teams, the token's scopes and the "
                    "permissions in effect. Writes fail for a read-only token even when the user could make them.",
    )
    async def me() -> str:
        async def build(uow: UnitOfWork) -> Any:
            return as_data(await users.whoami(uow))

        return await read(build)

    @server.resource(
        NOTIFICATIONS_URI, name="notifications", title="Your notifications", mime_type=JSON,
        description="The user's 25 newest notifications as JSON, unread first (activity reminders that fell due): "
                    "each with the activity's id (`entity_id`), subject, type and due date as they are now, and "
                    "`read_at`; `total` counts them all. `list_notifications` pages further.",
    )
    async def my_notifications() -> str:
        async def build(uow: UnitOfWork) -> Any:
            return as_data(await notifications.list(uow))

        return await read(build)

    @server.resource(
        SUMMARY_URI, name="summary", title="AI summary", mime_type=JSON,
        description="One of the user's AI summaries as JSON (from `request_summary`): status, and once done the "
                    "summary, risks and next steps with the record ids they rest on; `stale` when the record changed "
                    "after it was made.",
    )
    async def summary(summary_id: str) -> str:
        return await read(lambda uow: _summary(uow, record_id(summary_id, "summary_id")))

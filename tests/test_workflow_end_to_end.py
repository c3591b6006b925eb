"""End to end on the embedded default: the app's lifespan runs the relay and the runner. A deal created through
GraphQL gets its follow-up task a moment later; an activity whose reminder time has come notifies its owner,
who sees it through GraphQL and through MCP with the official client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import Api, Company, lifespan
from test_mcp_http import Http

from workflows.functions import FOLLOWUP_SUBJECT


@pytest.fixture
async def running(settings, company: Company) -> AsyncIterator[tuple[Api, Http, Any]]:
    from pipecd.app import create_app

    embedded = settings.model_copy(update={"workflows": "embedded", "relay_interval": 0.5})
    app = create_app(embedded)
    async with lifespan(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield Api(client, embedded, company), Http(app, embedded, company), app.state.workflows


async def eventually(probe: Callable[[], Awaitable[Any]], seconds: float = 10.0) -> Any:
    """Poll `probe` until it returns something truthy (the background engine gets there on its own)."""
    async with asyncio.timeout(seconds):
        while not (found := await probe()):  # noqa: ASYNC110 (the result shows only in what the API answers)
            await asyncio.sleep(0.1)
    return found


async def test_a_deal_created_through_graphql_gets_its_follow_up_task(running) -> None:
    api, _, _ = running
    created = await api.query('mutation { createDeal(input: {title: "Acme renewal"}) { id owner { email } } }')
    deal_id = created["data"]["createDeal"]["id"]

    async def followup() -> list[dict[str, Any]]:
        body = await api.query("query($id: UUID!) { deal(id: $id) { activities { subject type dueDate owner"
                               " { email } } } }", {"id": deal_id})
        return body["data"]["deal"]["activities"]

    tasks = await eventually(followup)
    due = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert tasks == [
        {"subject": FOLLOWUP_SUBJECT, "type": "TASK", "dueDate": due, "owner": {"email": "bob@example.com"}}]


async def test_a_due_reminder_reaches_its_owner_through_graphql_and_mcp(running) -> None:
    api, http, engine = running
    remind_at = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    created = await api.query(
        "mutation($at: DateTime!) { createActivity(input: {subject: \"Call Wile\", reminderAt: $at}) { id } }",
        {"at": remind_at})
    activity_id = created["data"]["createActivity"]["id"]
    # the reminder check runs on its cron; instead of waiting for the next tick, the test starts that tick now
    assert await engine.runner.tick_crons(now=datetime.now(UTC) + timedelta(minutes=6)) >= 1

    async def inbox() -> list[dict[str, Any]]:
        body = await api.query("{ me { unreadNotificationCount notifications(first: 5) { edges { node"
                               " { kind entityId readAt subject } } } } }")
        return body["data"]["me"]["notifications"]["edges"]

    (edge,) = await eventually(inbox)
    assert edge["node"] == {"kind": "ACTIVITY_REMINDER", "entityId": activity_id, "readAt": None,
                            "subject": "Call Wile"}
    async with http.client("bob") as client:
        listed = await client.call_tool("list_notifications", {})
    assert not listed.is_error
    (item,) = listed.structured_content["items"]
    assert (item["entity_id"], item["subject"]) == (activity_id, "Call Wile")
    async with http.client("carol") as client:  # nobody else sees it
        assert (await client.call_tool("list_notifications", {})).structured_content["items"] == []

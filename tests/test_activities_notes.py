"""Activities (links, schedule, completion, list filters) and notes (sanitized bodies, visibility, editing)."""

from __future__ import annotations

from datetime import date, time

import pytest
from conftest import audit_operations, counts, events, forget_bookkeeping
from pydantic import ValidationError

from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityFilter, ActivityType, ActivityUpdate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.errors import Forbidden, Invalid, NotFound
from services.kernel.records import Visibility
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate, NoteFilter, NoteUpdate, sanitize_markdown

WRITTEN = ("activities", "notes", "audit_log", "outbox")


async def new_deal(actors, who: str = "bob", title: str = "Initech rollout", visibility=Visibility.COMPANY):
    async with actors.uow(who) as uow:
        return await deals.create(uow, DealCreate(title=title, visibility=visibility))


async def new_activity(actors, who: str = "bob", subject: str = "Call Ann", **fields):
    async with actors.uow(who) as uow:
        return await activities.create(uow, ActivityCreate(subject=subject, **fields))


async def new_note(actors, who: str = "bob", body: str = "Budget approved", **links):
    async with actors.uow(who) as uow:
        return await notes.create(uow, NoteCreate(body=body, **links))


async def carols_hidden_record(actors, link: str):
    """A record of carol's (team West) that only she, her managers and admins can see."""
    async with actors.uow("carol") as uow:
        if link == "deal_id":
            return await deals.create(uow, DealCreate(title="Secret", visibility=Visibility.OWNER))
        if link == "lead_id":
            return await leads.create(uow, LeadCreate(title="Secret", visibility=Visibility.OWNER))
        if link == "person_id":
            return await contacts.create_person(uow, PersonCreate(first_name="Sec", visibility=Visibility.OWNER))
        return await contacts.create_organization(uow, OrganizationCreate(name="Secret", visibility=Visibility.OWNER))








# Activities -------------------------------------------------------------------------------------------


async def test_create_activity_linked_to_visible_records(actors, admin):
    deal = await new_deal(actors, "dan")
    async with actors.uow("bob") as uow:
        ann = await contacts.create_person(uow, PersonCreate(first_name="Ann"))
    forget_bookkeeping(admin)

    call = await new_activity(
        actors, type=ActivityType.CALL, deal_id=deal.id, person_id=ann.id, due_date=date(2026, 12, 1),
        due_time=time(9, 30), duration_minutes=15,
    )

    assert (call.deal_id, call.person_id, call.lead_id, call.organization_id) == (deal.id, ann.id, None, None)
    assert (call.owner_id, call.done, call.done_at, call.version) == (actors.id("bob"), False, None, 1)
    assert audit_operations(admin) == ["activity.create"]
    assert events(admin) == [
        ("crm/activity.created", {"activity_id": str(call.id), "owner_id": str(actors.id("bob")), "type": "call",
                                  "due_date": "2026-12-01", "deal_id": str(deal.id)})
    ]


@pytest.mark.parametrize("link", ["deal_id", "lead_id", "person_id", "organization_id"])
async def test_activity_linked_to_a_record_the_caller_cannot_see_is_invalid(actors, admin, link):
    hidden = await carols_hidden_record(actors, link)
    before = counts(admin, *WRITTEN)

    with pytest.raises(Invalid) as caught:
        await new_activity(actors, **{link: hidden.id})

    assert caught.value.field == link
    assert counts(admin, *WRITTEN) == before


async def test_due_time_without_due_date_is_invalid(actors, admin):
    with pytest.raises(Invalid) as caught:
        await new_activity(actors, due_time=time(9, 30))
    assert caught.value.field == "due_time"

    dated = await new_activity(actors, due_date=date(2026, 12, 1), due_time=time(9, 30))
    before = counts(admin, *WRITTEN)
    with pytest.raises(Invalid) as caught:
        async with actors.uow("bob") as uow:
            await activities.update(uow, dated.id, ActivityUpdate(due_date=None))
    assert caught.value.field == "due_time"
    assert counts(admin, *WRITTEN) == before


async def test_completing_an_activity_sets_done_at_and_emits_completed_once(actors, admin):
    deal = await new_deal(actors)
    call = await new_activity(actors, deal_id=deal.id)
    forget_bookkeeping(admin)

    async with actors.uow("bob") as uow:
        done = await activities.complete(uow, call.id)
    assert (done.done, done.version) == (True, 2)
    assert done.done_at is not None
    assert audit_operations(admin) == ["activity.complete"]
    assert events(admin) == [
        ("crm/activity.completed",
         {"activity_id": str(call.id), "owner_id": str(actors.id("bob")), "deal_id": str(deal.id)})
    ]

    async with actors.uow("bob") as uow:
        again = await activities.complete(uow, call.id)
    assert again == done
    assert counts(admin, "audit_log", "outbox") == {"audit_log": 1, "outbox": 1}


async def test_reopening_a_done_activity_clears_done_at(actors, admin):
    call = await new_activity(actors)
    async with actors.uow("bob") as uow:
        await activities.complete(uow, call.id)
    forget_bookkeeping(admin)

    async with actors.uow("mia") as uow:
        reopened = await activities.complete(uow, call.id, done=False)

    assert (reopened.done, reopened.done_at, reopened.version) == (False, None, 3)
    assert audit_operations(admin) == ["activity.reopen"]
    assert events(admin) == [
        ("crm/activity.reopened", {"activity_id": str(call.id), "owner_id": str(actors.id("bob")), "deal_id": None})
    ]


@pytest.mark.parametrize(("actor", "error"), [("dan", Forbidden), ("carol", Forbidden), ("vic", Forbidden)])
async def test_only_owner_managers_and_admins_may_complete_an_activity(actors, admin, actor, error):
    deal = await new_deal(actors)  # company-visible, so everyone sees the activity
    call = await new_activity(actors, deal_id=deal.id)
    before = counts(admin, *WRITTEN)

    with pytest.raises(error):
        async with actors.uow(actor) as uow:
            await activities.complete(uow, call.id)

    assert counts(admin, *WRITTEN) == before
    assert admin.execute("select done, version from public.activities").fetchone() == (False, 1)


async def test_activity_list_filters(actors):
    deal = await new_deal(actors)
    await new_activity(actors, subject="Send proposal", due_date=date(2026, 12, 1), deal_id=deal.id)
    called = await new_activity(actors, subject="Call Ann", type=ActivityType.CALL, due_date=date(2026, 12, 5))
    await new_activity(actors, subject="Kickoff", type=ActivityType.MEETING, due_date=date(2026, 12, 10),
                       deal_id=deal.id)
    await new_activity(actors, subject="Someday")
    await new_activity(actors, "dan", subject="Dan calls Bo", type=ActivityType.CALL, due_date=date(2026, 12, 5))
    async with actors.uow("bob") as uow:
        await activities.complete(uow, called.id)

    async def subjects(**filters) -> set[str]:
        # mia manages bob and dan, so she sees all their activities, also the ones on no record
        async with actors.uow("mia") as uow:
            page = await activities.list(uow, ActivityFilter(**filters))
        assert page.total == len(page.items)
        return {a.subject for a in page.items}

    assert await subjects(done=True) == {"Call Ann"}
    assert await subjects(done=False) == {"Send proposal", "Kickoff", "Someday", "Dan calls Bo"}
    assert await subjects(due_before=date(2026, 12, 5)) == {"Send proposal", "Call Ann", "Dan calls Bo"}
    assert await subjects(due_after=date(2026, 12, 5)) == {"Call Ann", "Kickoff", "Dan calls Bo"}
    assert await subjects(due_after=date(2026, 12, 2), due_before=date(2026, 12, 9)) == {"Call Ann", "Dan calls Bo"}
    assert await subjects(type=ActivityType.CALL) == {"Call Ann", "Dan calls Bo"}
    assert await subjects(deal_id=deal.id) == {"Send proposal", "Kickoff"}
    assert await subjects(owner_id=actors.id("dan")) == {"Dan calls Bo"}
    assert await subjects(type=ActivityType.CALL, done=False, owner_id=actors.id("bob")) == set()


async def test_activity_on_no_record_is_visible_only_under_the_owner_rule(actors):
    mine = await new_activity(actors, subject="Private reminder")

    for viewer in ("bob", "mia", "alice"):
        async with actors.uow(viewer) as uow:
            assert (await activities.get(uow, mine.id)).id == mine.id
    for outsider in ("dan", "carol", "vic"):
        with pytest.raises(NotFound):
            async with actors.uow(outsider) as uow:
                await activities.get(uow, mine.id)


# Notes: the sanitizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        ("<script>alert(1)</script>hi", "alert(1)hi"),
        ("<b onclick='x()'>bold</b> text", "bold text"),
        ("<img src=x\nonerror=alert(1)>after", "after"),
        ("<<script>script>alert(1)", "alert(1)"),
        ("[x](javascript:alert(1))", "[x](#)"),
        ("[x](JavaScript:alert(1))", "[x](#)"),
        ("[x](< javascript:alert(1)>)", "[x](#)"),
        ("[x]( javascript:alert(1) \"title\")", "[x]( # \"title\")"),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", "[x](#)"),
        ("![pic](data:image/svg+xml,abc)", "![pic](#)"),
        ("[x](vbscript:msgbox)", "[x](#)"),
        ("[x](java&#115;cript:alert(1))", "[x](#)"),
        ("[x](javascript&colon;alert(1))", "[x](#)"),
        ("[x](javascript\\:alert(1))", "[x](#)"),
        ("[x][1]\n\n[1]: javascript:alert(1)", "[x][1]\n\n[1]: #"),
        ("[x][1]\n\n[1]: <data:text/html,hi> \"t\"", "[x][1]\n\n[1]:  \"t\""),
    ],
    ids=["script", "tag-with-attributes", "multiline-tag", "nested-tag", "javascript-link", "mixed-case-scheme",
         "bracketed-with-space",
         "link-with-title", "data-link", "data-image", "vbscript", "entity-encoded-scheme", "entity-colon",
         "escaped-colon", "reference-definition", "reference-definition-in-brackets"],
)
def test_note_sanitizer_strips_html_and_neutralizes_unsafe_link_targets(body, stored):
    assert sanitize_markdown(body) == stored


@pytest.mark.parametrize(
    "body",
    [
        "**bold**, _italic_ and `code`",
        "[site](https://example.com/a_(b)) and [plain](http://example.com)",
        "[mail](mailto:ann@initech.com) or [call](tel:+15550102000)",
        "[deal](/deals/1) and [top](#top)",
        "[x][1]\n\n[1]: https://example.com",
        "2 < 3 and 5 > 4",
    ],
)
def test_note_sanitizer_keeps_safe_markdown_as_written(body):
    assert sanitize_markdown(body) == body


@pytest.mark.parametrize("body", ["", "   ", "<b></b>", "<p>\n</p>  "])
def test_note_that_is_empty_after_sanitizing_is_rejected(body):
    with pytest.raises(ValidationError):
        NoteCreate(body=body)
    with pytest.raises(ValidationError):
        NoteUpdate(body=body)


async def test_note_is_stored_sanitized(actors, admin):
    deal = await new_deal(actors)
    note = await new_note(actors, body="  <script>alert(1)</script>Call [Ann](javascript:alert(1)) **today**\r\n",
                          deal_id=deal.id)

    assert note.body == "alert(1)Call [Ann](#) **today**"
    assert admin.execute("select body from public.notes").fetchone()[0] == note.body


# Notes: visibility and editing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visibility", "reader", "sees"),
    [
        (Visibility.OWNER, "carol", False),
        (Visibility.OWNER, "dan", False),
        (Visibility.OWNER, "vic", False),
        (Visibility.OWNER, "mia", True),
        (Visibility.OWNER, "alice", True),
        (Visibility.TEAM, "dan", True),
        (Visibility.TEAM, "carol", False),
        (Visibility.COMPANY, "carol", True),
        (Visibility.COMPANY, "vic", True),
    ],
)
async def test_note_on_a_deal_is_visible_exactly_when_the_deal_is(actors, visibility, reader, sees):
    deal = await new_deal(actors, visibility=visibility)
    note = await new_note(actors, deal_id=deal.id)

    async with actors.uow(reader) as uow:
        listed = await notes.list(uow)
        by_deal = await notes.list(uow, NoteFilter(deal_id=deal.id))
    if sees:
        async with actors.uow(reader) as uow:
            assert (await notes.get(uow, note.id)).body == "Budget approved"
        assert [n.id for n in listed.items] == [n.id for n in by_deal.items] == [note.id]
    else:
        with pytest.raises(NotFound):
            async with actors.uow(reader) as uow:
                await notes.get(uow, note.id)
        assert (listed.items, listed.total, by_deal.items) == ([], 0, [])


async def test_note_on_an_invisible_deal_cannot_be_written(actors, admin):
    hidden = await carols_hidden_record(actors, "deal_id")
    before = counts(admin, *WRITTEN)

    with pytest.raises(Invalid) as caught:
        await new_note(actors, deal_id=hidden.id)

    assert caught.value.field == "deal_id"
    assert counts(admin, *WRITTEN) == before


@pytest.mark.parametrize("editor", ["bob", "mia", "alice"])
async def test_author_and_managers_of_the_authors_team_and_admins_may_edit_a_note(actors, admin, editor):
    deal = await new_deal(actors)
    note = await new_note(actors, deal_id=deal.id)
    forget_bookkeeping(admin)

    async with actors.uow(editor) as uow:
        edited = await notes.update(uow, note.id, NoteUpdate(body="Budget approved <i>twice</i>"),
                                    expected_version=1)

    assert (edited.body, edited.version, edited.author_id) == ("Budget approved twice", 2, actors.id("bob"))
    assert audit_operations(admin) == ["note.update"]
    assert events(admin) == [("crm/note.updated", {"note_id": str(note.id), "fields": ["body"]})]


@pytest.mark.parametrize(
    ("author", "editor"),
    [("bob", "dan"), ("bob", "carol"), ("bob", "vic"), ("mia", "bob"), ("carol", "mia")],
    ids=["teammate", "other-team", "viewer", "deal-owner-not-author", "manager-of-another-team"],
)
async def test_others_may_not_edit_a_note_and_nothing_is_written(actors, admin, author, editor):
    deal = await new_deal(actors)  # bob's, company-visible: everyone can read the note
    note = await new_note(actors, author, deal_id=deal.id)
    before = counts(admin, *WRITTEN)

    with pytest.raises(Forbidden):
        async with actors.uow(editor) as uow:
            await notes.update(uow, note.id, NoteUpdate(body="Rewritten"))

    assert counts(admin, *WRITTEN) == before
    assert admin.execute("select body, version from public.notes").fetchone() == ("Budget approved", 1)

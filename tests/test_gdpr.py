"""GDPR erasure, verified: a person whose name, emails and phones are spread over every place the CRM keeps text
(records, audit history, outbox, idempotency keys, AI summaries, the runner's runs) is erased through GraphQL
and the embedded runner, and the same scan the workflow uses then finds nothing anywhere; who may ask, what
RLS allows on its own, and that the events that leave the database carry none of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

import httpx
import inngest
import psycopg
import pytest
import respx
from conftest import Actors, Api, Start, counts, forget_bookkeeping
from psycopg.errors import InsufficientPrivilege
from psycopg.types.json import Jsonb

from services.activities import service as activities
from services.activities.schemas import ActivityCreate
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate, PersonUpdate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.gdpr import service as gdpr
from services.gdpr.schemas import Identifiers
from services.kernel.errors import Forbidden
from services.kernel.uow import Database
from services.leads import service as leads
from services.leads.schemas import LeadCreate
from services.notes import service as notes
from services.notes.schemas import NoteCreate
from workflows.acting import SYSTEM
from workflows.relay import InngestSink, Relay

NAME = "Zebulon Quixwright"
EMAILS = ["zeb.quixwright@example.org", "zq-private@mailbox.test"]
PHONES = ["+44 20 7946 0958", "(555) 013-9921"]
IDS = Identifiers(name=NAME, emails=EMAILS, phones=PHONES)
EVENT_API = "http://inngest.test"

REQUEST = "mutation($personId: UUID!) { requestErasure(personId: $personId) { id personId status } }"
ERASURE = "query($id: UUID!) { erasure(id: $id) { id personId status counts hits createdAt completedAt error } }"


@dataclass
class Seeded:
    person: UUID
    organization: UUID
    linked_deal: UUID
    other_deal: UUID
    lead: UUID
    only_note: UUID
    shared_note: UUID
    only_activity: UUID
    shared_activity: UUID
    summaries: dict[str, UUID]


async def seed(actors: Actors, admin: psycopg.Connection) -> Seeded:
    """The person, and mentions of them in every place text is kept, made through the services where they can be
    (so the audit log and outbox hold what they really hold) and raw where only history or the runner writes."""
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(
            name="Quarry Works", address=f"c/o {NAME.upper()}, call +44 (20) 7946-0958"))
        person = await contacts.create_person(uow, PersonCreate(
            first_name="Zebulon", last_name="Quixwright", emails=EMAILS, phones=PHONES, job_title="Buyer",
            organization_id=org.id), idempotency_key=f"import:{EMAILS[0]}")
    async with actors.uow("bob") as uow:
        await contacts.update_person(uow, person.id, PersonUpdate(job_title="Head buyer"))
        linked = await deals.create(uow, DealCreate(title="Quarry renewal", person_id=person.id,
                                                    organization_id=org.id))
        other = await deals.create(uow, DealCreate(title=f"Intro via {NAME}"))
        await deals.mark_lost(uow, other.id, "He left; reach him on 0044 20 7946 0958 or ZQ-private@mailbox.test")
        lead = await leads.create(uow, LeadCreate(title=f"{NAME} inbound", contact_name=NAME,
                                                  contact_email=EMAILS[0]))
        only_note = await notes.create(uow, NoteCreate(body=f"Met {NAME} at the fair", person_id=person.id))
        shared_note = await notes.create(uow, NoteCreate(
            body=f"{NAME} signed; call 555.013.9921 or mail {EMAILS[0]}", person_id=person.id,
            deal_id=linked.id))
        only_activity = await activities.create(uow, ActivityCreate(subject=f"Call {NAME}", person_id=person.id))
        shared_activity = await activities.create(uow, ActivityCreate(
            subject="Renewal call", note=f"Ask {NAME} about volumes", person_id=person.id, deal_id=linked.id))
    alice = actors.id("alice")
    summaries = {
        label: admin.execute(
            "insert into public.ai_summaries (requested_by, subject_type, subject_id, status, model, content,"
            " source_ids, completed_at) values (%s, 'deal', %s, 'done', 'offline', %s, %s, now()) returning id",
            [alice, subject, Jsonb({"summary": text}), sources],
        ).fetchone()[0]
        for label, subject, text, sources in [
            ("used", linked.id, "Renewal on track.", [linked.id, person.id]),
            ("mentions", other.id, f"Lost after {NAME} left.", [other.id]),
            ("unrelated", other.id, "Lost on price.", [other.id]),
        ]
    }
    # an event from before events were ids only, and a run of the runner that kept the person in its event
    admin.execute("insert into public.outbox (name, data, channel, dispatched_at)"
                  " values ('crm/person.created', %s, 'graphql', now())", [Jsonb({"name": NAME})])
    run = admin.execute(
        "insert into runner.runs (function_id, idempotency_key, event, status, output, ended_at)"
        " values ('pipecd-legacy', 'legacy-1', %s, 'completed', %s, now()) returning id",
        [Jsonb({"name": "crm/legacy", "data": {"contact": NAME}}), Jsonb({"phone": PHONES[0]})],
    ).fetchone()[0]
    admin.execute("insert into runner.steps (run_id, step_id, position, op, data) values (%s, 'lookup', 0,"
                  " 'StepRun', %s)", [run, Jsonb({"email": EMAILS[1].upper()})])
    return Seeded(person.id, org.id, linked.id, other.id, lead.id, only_note.id, shared_note.id, only_activity.id,
                  shared_activity.id, summaries)


async def hits(db: Database) -> list[tuple[str, str, int]]:
    async with db.unit_of_work(SYSTEM) as uow:
        return [(h.table, h.column, h.rows) for h in await gdpr.scan(uow, IDS)]


def mentions(admin: psycopg.Connection, value: str) -> bool:
    """The scan's own test (private.mentions) on one value."""
    return admin.execute("select private.mentions(%s, %s, %s)", [value, IDS.patterns, IDS.digit_patterns]).fetchone()[0]


# End to end ---------------------------------------------------------------------------------------------


async def test_an_erased_person_leaves_no_trace_anywhere_and_business_records_stay(
    start: Start, api: Api, actors: Actors, db: Database, admin
) -> None:
    engine = await start(erasure_settle_seconds=0, followup_days=0)
    seeded = await seed(actors, admin)
    await engine.settle()  # the seed's own events run first
    before = {table for table, _, _ in await hits(db)}
    assert {"public.persons", "public.notes", "public.activities", "public.deals", "public.leads",
            "public.organizations", "public.ai_summaries", "public.audit_log", "public.outbox",
            "public.idempotency_keys", "runner.runs", "runner.steps"} <= before

    body = await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice")
    erasure = body["data"]["requestErasure"]
    assert (erasure["personId"], erasure["status"]) == (str(seeded.person), "QUEUED")
    erasure_id = erasure["id"]
    await engine.settle()

    assert await hits(db) == []
    # the business records stay, unlinked, their text redacted
    assert admin.execute("select id, person_id, organization_id, title, lost_reason from public.deals order by title"
                         ).fetchall() == [
        (seeded.other_deal, None, None, "Intro via [erased]", "He left; reach him on 00[erased] or [erased]"),
        (seeded.linked_deal, None, seeded.organization, "Quarry renewal", None),
    ]
    assert admin.execute("select name, address from public.organizations").fetchall() == [
        ("Quarry Works", "c/o [erased], call +[erased]")]
    assert admin.execute("select title, contact_name, contact_email, person_id from public.leads").fetchall() == [
        ("[erased] inbound", "[erased]", "[erased]", None)]
    # notes and activities about the person alone are gone; shared ones stay, redacted
    assert admin.execute("select id, body, person_id, deal_id from public.notes").fetchall() == [
        (seeded.shared_note, "[erased] signed; call [erased] or mail [erased]", None, seeded.linked_deal)]
    assert admin.execute("select id, note, person_id from public.activities").fetchall() == [
        (seeded.shared_activity, "Ask [erased] about volumes", None)]
    assert admin.execute("select id from public.ai_summaries").fetchall() == [(seeded.summaries["unrelated"],)]
    assert admin.execute("select count(*) from public.persons").fetchone() == (0,)

    # the erasure: done, nothing found, identifiers wiped; the requester told; a PII-free audit row
    row = admin.execute("select status, hits, identifiers, completed_at, counts from public.gdpr_erasures"
                        " where id = %s", [erasure_id]).fetchone()
    status, final_hits, identifiers, completed_at, erasure_counts = row
    assert (status, final_hits, identifiers) == ("done", 0, None)
    assert erasure_counts["deleted"] == {"persons": 1, "notes": 1, "activities": 1, "ai_summaries": 2}
    assert {"public.deals", "public.leads", "public.organizations", "public.notes", "public.activities",
            "public.audit_log", "public.outbox", "public.idempotency_keys", "runner.runs", "runner.steps"} <= set(
        erasure_counts["redacted"])
    assert admin.execute("select user_id, kind, entity_type, entity_id::text, occasion from public.notifications"
                         ).fetchall() == [(actors.id("alice"), "erasure_done", "gdpr_erasure", erasure_id,
                                           completed_at)]
    erased = admin.execute("select actor_id, channel, entity_type, entity_id::text, diff from public.audit_log"
                           " where operation = 'gdpr.erased'").fetchall()
    assert erased == [(None, "workflow", "gdpr_erasure", erasure_id, {"after": {"counts": erasure_counts}})]
    assert not mentions(admin, json.dumps(erased[0][4]))
    assert admin.execute("select actor_id, operation, diff from public.audit_log where operation = 'gdpr.request'"
                         ).fetchall() == [(actors.id("alice"), "gdpr.request",
                                           {"after": {"person_id": str(seeded.person)}})]
    assert admin.execute("select data from public.outbox where name like 'crm/gdpr.%%' order by name").fetchall() == [
        ({"erasure_id": erasure_id},), ({"erasure_id": erasure_id},)]

    # the run: three steps, outputs ids and counts only
    (output, run_status), = admin.execute(
        "select output, status from runner.runs where function_id = 'pipecd-gdpr-erasure'").fetchall()
    assert (run_status, output) == ("completed", {"erasure_id": erasure_id, "counts": erasure_counts, "hits": 0})
    assert admin.execute("select s.name, s.op from runner.steps s join runner.runs r on r.id = s.run_id"
                         " where r.function_id = 'pipecd-gdpr-erasure' order by s.position").fetchall() == [
        ("erase", "StepRun"), ("settle", "Sleep"), ("verify-and-wipe", "StepRun")]

    shown = (await api.query(ERASURE, {"id": erasure_id}, as_="alice"))["data"]["erasure"]
    assert {k: shown[k] for k in ("id", "personId", "status", "hits", "error")} == {
        "id": erasure_id, "personId": str(seeded.person), "status": "DONE", "hits": 0, "error": None}
    assert shown["counts"] == erasure_counts


async def test_a_second_request_while_one_is_pending_returns_it(api: Api, actors: Actors, admin) -> None:
    seeded = await seed(actors, admin)
    first = (await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice"))["data"]["requestErasure"]
    forget_bookkeeping(admin)
    again = (await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice"))["data"]["requestErasure"]
    assert again == first
    assert counts(admin, "gdpr_erasures", "audit_log", "outbox") == {"gdpr_erasures": 1, "audit_log": 0, "outbox": 0}


@pytest.mark.parametrize("who", ["mia", "bob", "vic"])
async def test_only_admins_may_request_an_erasure_and_nothing_is_written(api: Api, actors: Actors, admin,
                                                                         who: str) -> None:
    seeded = await seed(actors, admin)
    forget_bookkeeping(admin)
    body = await api.query(REQUEST, {"personId": str(seeded.person)}, as_=who)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN", "permission": "GDPR_ERASE"}
    assert counts(admin, "gdpr_erasures", "audit_log", "outbox") == {"gdpr_erasures": 0, "audit_log": 0, "outbox": 0}
    body = await api.query(ERASURE, {"id": str(UUID(int=1))}, as_=who)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_an_unknown_person_or_erasure_is_not_found(api: Api, admin) -> None:
    body = await api.query(REQUEST, {"personId": str(UUID(int=5))}, as_="alice")
    assert (body["data"], body["errors"][0]["extensions"]["code"]) == (None, "NOT_FOUND")
    assert counts(admin, "gdpr_erasures", "audit_log", "outbox") == {"gdpr_erasures": 0, "audit_log": 0, "outbox": 0}
    body = await api.query(ERASURE, {"id": str(UUID(int=5))}, as_="alice")
    assert (body["data"], body["errors"][0]["extensions"]["code"]) == ({"erasure": None}, "NOT_FOUND")


async def test_the_steps_and_the_scan_refuse_anyone_but_the_system(actors: Actors) -> None:
    async with actors.uow("alice") as uow:
        for step in (gdpr.erase(uow, UUID(int=1)), gdpr.verify(uow, UUID(int=1)), gdpr.scan(uow, IDS),
                     gdpr.is_erased(uow, [UUID(int=1)])):
            with pytest.raises(Forbidden):
                await step


async def test_a_subject_counts_as_erased_from_the_request_on(api: Api, actors: Actors, db: Database,
                                                               admin) -> None:
    seeded = await seed(actors, admin)
    async with db.unit_of_work(SYSTEM) as uow:
        assert not await gdpr.is_erased(uow, [seeded.linked_deal, seeded.person])
    await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice")
    async with db.unit_of_work(SYSTEM) as uow:
        assert await gdpr.is_erased(uow, [seeded.linked_deal, seeded.person])
        assert not await gdpr.is_erased(uow, [seeded.linked_deal])


# RLS on its own ----------------------------------------------------------------------------------------------


@contextmanager
def session(app_url: str, user_id: UUID | None) -> Iterator[psycopg.Connection]:
    """A raw transaction as a signed-in user (None: the system), set up as the unit of work does."""
    claims = {"role": "service_role"} if user_id is None else {"sub": str(user_id), "role": "authenticated"}
    role = "service_role" if user_id is None else "authenticated"
    with psycopg.connect(app_url) as conn, conn.transaction():
        conn.execute("select set_config('request.jwt.claims', %s, true), set_config('role', %s, true),"
                     " set_config('pipecd.channel', 'graphql', true)", [json.dumps(claims), role])
        yield conn


async def test_rls_keeps_identifiers_and_redaction_to_the_system(app_url: str, api: Api, actors: Actors,
                                                                 admin) -> None:
    seeded = await seed(actors, admin)
    erasure = (await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice"))["data"]["requestErasure"]
    alice, bob = actors.id("alice"), actors.id("bob")
    refused: list[tuple[UUID | None, str]] = [
        (alice, "select identifiers from public.gdpr_erasures"),
        (alice, "select * from public.gdpr_erasures"),
        (alice, "select private.redact_audit('{%%}', '{}', '{a}', '{}')"),
        (alice, "update public.gdpr_erasures set status = 'done'"),
        (alice, "insert into public.gdpr_erasures (person_id) values (gen_random_uuid())"),
        (alice, "delete from public.gdpr_erasures"),
        (bob, f"select private.request_erasure('{seeded.person}')"),
        (None, "update public.audit_log set diff = '{}'"),
        (None, "delete from public.audit_log"),
    ]
    for user_id, statement in refused:
        with pytest.raises(InsufficientPrivilege), session(app_url, user_id) as conn:
            conn.execute(statement)
    with session(app_url, alice) as conn:
        assert conn.execute("select id::text, status from public.gdpr_erasures").fetchall() == [
            (erasure["id"], "queued")]
    with session(app_url, bob) as conn:
        assert conn.execute("select count(*) from public.gdpr_erasures").fetchone() == (0,)
    # an admin names only the person, whose identifiers the database copies from the row; one request at a time
    with session(app_url, alice) as conn:
        assert conn.execute("select private.request_erasure(%s)", [seeded.person]).fetchone() == (None,)
    assert admin.execute("select identifiers from public.gdpr_erasures").fetchall() == [
        ({"name": NAME, "emails": EMAILS, "phones": PHONES},)]
    assert admin.execute("select count(*) from public.audit_log where diff::text like '%%[erased]%%'"
                         ).fetchone() == (0,)


# What leaves the database -------------------------------------------------------------------------------------


async def test_the_events_sent_to_inngest_name_no_identifier(api: Api, actors: Actors, db: Database, admin) -> None:
    seeded = await seed(actors, admin)
    client = inngest.Inngest(app_id="pipecd", is_production=True, event_key="test-event-key",
                             signing_key="signkey-test-" + "ab" * 32, event_api_base_url=EVENT_API)
    relay = Relay(db, InngestSink(client), listen=False)
    erasure = (await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice"))["data"]["requestErasure"]
    with respx.mock() as mock:
        route = mock.post(f"{EVENT_API}/e/test-event-key").mock(return_value=httpx.Response(200, json={"ids": []}))
        await relay.drain()
        async with db.unit_of_work(SYSTEM) as uow:
            await gdpr.erase(uow, UUID(erasure["id"]))
        async with db.unit_of_work(SYSTEM) as uow:
            assert await gdpr.verify(uow, UUID(erasure["id"])) == 0
        await relay.drain()
    sent = [event for call in route.calls for event in json.loads(call.request.content)]
    assert {"crm/person.created", "crm/note.created", "crm/gdpr.erasure.requested",
            "crm/gdpr.erasure.completed"} <= {e["name"] for e in sent}
    assert [e for e in sent if mentions(admin, json.dumps(e))] == []


# Verification ------------------------------------------------------------------------------------------------


async def test_a_mention_stored_after_the_erasure_is_found_and_redacted_by_the_verification(
    api: Api, actors: Actors, db: Database, admin
) -> None:
    seeded = await seed(actors, admin)
    erasure_id = UUID((await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice")
                       )["data"]["requestErasure"]["id"])
    async with db.unit_of_work(SYSTEM) as uow:
        await gdpr.erase(uow, erasure_id)
    # work in flight while erasing: a note saved after the erase step committed
    async with actors.uow("bob") as uow:
        late = await notes.create(uow, NoteCreate(body=f"Late word from {NAME.lower()}", deal_id=seeded.linked_deal))
    assert await hits(db) != []
    async with db.unit_of_work(SYSTEM) as uow:
        assert await gdpr.verify(uow, erasure_id) == 0
    assert await hits(db) == []
    assert admin.execute("select body from public.notes where id = %s", [late.id]).fetchone() == (
        "Late word from [erased]",)
    assert admin.execute("select status, hits, identifiers is null, counts -> 'found_when_verifying'"
                         " from public.gdpr_erasures").fetchone() == ("done", 0, True, 2)  # the note, its audit row


async def test_a_mention_that_cannot_be_redacted_fails_the_erasure_naming_where_it_is(
    api: Api, actors: Actors, db: Database, admin
) -> None:
    seeded = await seed(actors, admin)
    erasure_id = UUID((await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice")
                       )["data"]["requestErasure"]["id"])
    async with db.unit_of_work(SYSTEM) as uow:
        await gdpr.erase(uow, erasure_id)
    forget_bookkeeping(admin)
    # an audit row's operation is not redacted (only diffs are): the verification must say so, not pass
    admin.execute("insert into public.audit_log (channel, operation, entity_type) values ('cli', %s, 'mcp_tool_call')",
                  [f"tool.{NAME}"])
    async with db.unit_of_work(SYSTEM) as uow:
        assert await gdpr.verify(uow, erasure_id) == 1
    status, final_hits, kept, error = admin.execute(
        "select status, hits, identifiers is not null, error from public.gdpr_erasures").fetchone()
    assert (status, final_hits, kept) == ("failed", 1, True)
    assert error == "1 mentions remain after redacting twice: public.audit_log.operation (1)"
    assert counts(admin, "outbox", "notifications") == {"outbox": 0, "notifications": 0}
    async with db.unit_of_work(SYSTEM) as uow:  # run again (a retried step), it returns the same
        assert await gdpr.verify(uow, erasure_id) == 1


async def test_a_run_out_of_retries_leaves_the_erasure_pending_with_the_reason(
    start: Start, api: Api, actors: Actors, admin
) -> None:
    engine = await start(erasure_settle_seconds=0, followup_days=0)
    seeded = await seed(actors, admin)
    await engine.settle()
    body = await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice")
    erasure_id = body["data"]["requestErasure"]["id"]
    admin.execute("update public.gdpr_erasures set identifiers = '{\"emails\": []}'")  # unusable: every attempt fails
    await engine.settle()
    status, error = admin.execute("select status, error from public.gdpr_erasures where id = %s",
                                  [erasure_id]).fetchone()
    assert status == "queued"
    assert error.startswith("the erasure workflow gave up: 1 validation error for Identifiers")
    assert admin.execute("select status from runner.runs where function_id = 'pipecd-gdpr-erasure'").fetchone() == (
        "failed",)
    again = (await api.query(REQUEST, {"personId": str(seeded.person)}, as_="alice"))["data"]["requestErasure"]
    assert again == {"id": erasure_id, "personId": str(seeded.person), "status": "QUEUED"}

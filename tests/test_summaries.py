"""AI summaries, the request side and the stored result: queued once per subject, only for what the requester
can see and only with ai:use, readable only by the requester (by the service and by RLS on its own), written
only by the system, and stale once the subject changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
import pytest
from conftest import Actors, audit_operations, counts, events, forget_bookkeeping
from psycopg.errors import InsufficientPrivilege

from services.ai.llm import Answer, Cited, Context
from services.deals import service as deals
from services.deals.schemas import DealCreate, DealUpdate
from services.kernel.errors import Forbidden, NotFound
from services.kernel.permissions import Scope
from services.kernel.schemas import Visibility
from services.summaries import service as summaries
from services.summaries.schemas import SummaryStatus, SummarySubject
from workflows.acting import SYSTEM

WRITTEN = ("ai_summaries", "audit_log", "outbox")


async def make_deal(actors: Actors, who: str = "bob", **fields) -> UUID:
    async with actors.uow(who) as uow:
        return (await deals.create(uow, DealCreate(title="Acme renewal", **fields))).id


def answer(deal_id: UUID) -> tuple[Context, Answer]:
    context = Context("deal", deal_id, {"deal": {"id": str(deal_id)}}, [deal_id], "a" * 64, datetime.now(UTC))
    return context, Answer("Going well.", "Acme renewal, open", [Cited("Close date passed", [deal_id])],
                           [Cited("Call Wile", [])], "offline", 120, 40)


async def test_a_request_is_queued_once_per_subject_with_its_event_and_audit(actors: Actors, admin) -> None:
    deal_id = await make_deal(actors)
    forget_bookkeeping(admin)
    async with actors.uow("bob") as uow:
        first = await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
    async with actors.uow("bob") as uow:
        again = await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
    assert (first.status, first.subject_id, first.content, first.stale) == (SummaryStatus.QUEUED, deal_id, None, False)
    assert again.id == first.id
    assert events(admin) == [("crm/ai.summary.requested",
                              {"summary_id": str(first.id), "subject_type": "deal", "subject_id": str(deal_id)})]
    assert audit_operations(admin) == ["summary.request"]


@pytest.mark.parametrize(("who", "scopes", "error"), [
    ("dan", None, NotFound),  # carol's owner-only deal is invisible to a colleague of another team
    ("bob", frozenset({Scope.READ}), Forbidden),  # an agent token without crm.ai
    ("vic", None, Forbidden),  # a viewer has no ai:use
])
async def test_refused_requests_write_nothing(actors: Actors, admin, who, scopes, error) -> None:
    deal_id = await make_deal(actors, "carol", visibility=Visibility.OWNER)
    if who != "dan":
        deal_id = await make_deal(actors, "bob")
    forget_bookkeeping(admin)
    async with actors.uow(who, scopes=scopes) as uow:
        with pytest.raises(error):
            await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
    assert counts(admin, *WRITTEN) == dict.fromkeys(WRITTEN, 0)


async def test_the_system_stores_the_answer_and_the_requester_is_told(actors: Actors, admin) -> None:
    deal_id = await make_deal(actors)
    async with actors.uow("bob") as uow:
        queued = await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
    forget_bookkeeping(admin)
    context, result = answer(deal_id)
    async with actors.db.unit_of_work(SYSTEM) as uow:
        work = await summaries.start(uow, queued.id)
        assert work is not None and (work.requested_by, work.subject_id) == (actors.id("bob"), deal_id)
        assert await summaries.store(uow, queued.id, context, result) is True
        assert await summaries.store(uow, queued.id, context, result) is False  # done: nothing more is stored
    async with actors.uow("bob") as uow:
        done = await summaries.get(uow, queued.id)
        latest = await summaries.latest_for(uow, SummarySubject.DEAL, [deal_id])
    assert (done.status, done.model, done.input_tokens, done.stale) == (SummaryStatus.DONE, "offline", 120, False)
    assert done.content is not None and done.content.risks[0].record_ids == [deal_id]
    assert latest == {deal_id: done}
    assert events(admin) == [("crm/ai.summary.completed",
                              {"summary_id": str(queued.id), "requested_by": str(actors.id("bob"))})]
    assert admin.execute("select user_id, kind, entity_id from public.notifications").fetchall() == [
        (actors.id("bob"), "summary_ready", queued.id)]
    # the deal changes: the summary describes the past
    async with actors.uow("bob") as uow:
        await deals.update(uow, deal_id, DealUpdate(title="Acme renewal 2027"))
        assert (await summaries.get(uow, queued.id)).stale is True


async def test_only_the_system_writes_results(actors: Actors, admin) -> None:
    deal_id = await make_deal(actors)
    async with actors.uow("bob") as uow:
        queued = await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
        for call in (summaries.start(uow, queued.id), summaries.fail(uow, queued.id, "no"),
                     summaries.store(uow, queued.id, *answer(deal_id))):
            with pytest.raises(Forbidden, match="only the system writes summaries"):
                await call
    assert admin.execute("select status from public.ai_summaries").fetchall() == [("queued",)]


async def test_someone_elses_summary_is_not_found(actors: Actors) -> None:
    deal_id = await make_deal(actors, visibility=Visibility.COMPANY)
    async with actors.uow("bob") as uow:
        queued = await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
    async with actors.uow("alice") as uow:  # even an admin: a summary is its requester's own
        with pytest.raises(NotFound):
            await summaries.get(uow, queued.id)
        assert (await summaries.list_for(uow, SummarySubject.DEAL, deal_id)).items == []


def raw(app_url: str, user_id: UUID) -> psycopg.Connection:
    conn = psycopg.connect(app_url)
    conn.execute("select set_config('request.jwt.claims', %s, false), set_config('role', 'authenticated', false)",
                 [json.dumps({"sub": str(user_id), "role": "authenticated"})])
    return conn


async def test_rls_alone_keeps_summaries_to_their_requester(actors: Actors, admin, app_url: str) -> None:
    deal_id = await make_deal(actors, visibility=Visibility.COMPANY)
    async with actors.uow("bob") as uow:
        queued = await summaries.request_summary(uow, SummarySubject.DEAL, deal_id)
    with raw(app_url, actors.id("carol")) as carol:
        assert carol.execute("select id from public.ai_summaries").fetchall() == []
        with pytest.raises(InsufficientPrivilege):  # a result cannot be written by a user
            carol.execute("update public.ai_summaries set status = 'failed'")
    with raw(app_url, actors.id("bob")) as bob:
        assert bob.execute("select id from public.ai_summaries").fetchall() == [(queued.id,)]
        with pytest.raises(InsufficientPrivilege):  # nor a finished one forged
            bob.execute("insert into public.ai_summaries (requested_by, subject_type, subject_id, status, content)"
                        " values (%s, 'deal', %s, 'done', '{}')", [actors.id("bob"), deal_id])
    with raw(app_url, actors.id("bob")) as bob, pytest.raises(InsufficientPrivilege):  # nor one for someone else
        bob.execute("insert into public.ai_summaries (requested_by, subject_type, subject_id) values (%s, 'deal', %s)",
                    [actors.id("carol"), uuid4()])
    with raw(app_url, actors.id("vic")) as vic, pytest.raises(InsufficientPrivilege):  # nor without ai:use
        vic.execute("insert into public.ai_summaries (requested_by, subject_type, subject_id) values (%s, 'deal', %s)",
                    [actors.id("vic"), deal_id])
    assert admin.execute("select count(*) from public.ai_summaries").fetchone() == (1,)


async def test_graphql_requests_and_reads_a_summary(api, actors: Actors) -> None:
    deal_id = await make_deal(actors)
    body = await api.query("mutation($id: UUID!) { requestSummary(subjectType: DEAL, subjectId: $id) { id status } }",
                           {"id": str(deal_id)})
    summary_id = body["data"]["requestSummary"]["id"]
    assert body["data"]["requestSummary"]["status"] == "QUEUED"
    read = await api.query("query($id: UUID!, $deal: UUID!) { summary(id: $id) { status subjectId }"
                           " deal(id: $deal) { latestSummary { id } } }", {"id": summary_id, "deal": str(deal_id)})
    assert read["data"] == {"summary": {"status": "QUEUED", "subjectId": str(deal_id)},
                            "deal": {"latestSummary": None}}
    viewer = await api.query("query($deal: UUID!) { deal(id: $deal) { latestSummary { id } } }",
                             {"deal": str(deal_id)}, as_="vic")
    assert viewer["data"] == {"deal": {"latestSummary": None}}
    refused = await api.query("mutation($id: UUID!) { requestSummary(subjectType: DEAL, subjectId: $id) { id } }",
                              {"id": str(deal_id)}, as_="vic")
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_summary_made_from_a_person_being_erased_is_not_stored(actors: Actors, admin) -> None:
    from services.contacts import service as contacts
    from services.contacts.schemas import PersonCreate
    from services.gdpr import service as gdpr

    async with actors.uow("bob") as uow:
        person = await contacts.create_person(uow, PersonCreate(first_name="Wile", last_name="Coyote"))
        deal = await deals.create(uow, DealCreate(title="Acme renewal", person_id=person.id))
        queued = await summaries.request_summary(uow, SummarySubject.DEAL, deal.id)
    async with actors.db.unit_of_work(SYSTEM) as uow:
        assert await summaries.start(uow, queued.id) is not None
    async with actors.uow("alice") as uow:  # the erasure is requested while the summary is being written
        await gdpr.request_erasure(uow, person.id)
    context, result = answer(deal.id)
    context = Context(context.subject_type, context.subject_id, context.data, [deal.id, person.id],
                      context.snapshot_hash, context.snapshot_at)
    async with actors.db.unit_of_work(SYSTEM) as uow:
        assert await summaries.store(uow, queued.id, context, result) is False
    assert admin.execute("select status, content, error from public.ai_summaries").fetchall() == [
        ("failed", None, "a person this summary was made from has been erased")]

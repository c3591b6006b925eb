"""The offline summarizer: exact answers for fixed contexts (golden), on real contexts of every subject, and
the shared output filter."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.activities import service as activities
from services.activities.schemas import ActivityCreate, ActivityType
from services.ai.answer import scrub
from services.ai.context import build_context
from services.ai.llm import Answer, Cited, Context
from services.ai.offline import OfflineLLM, first_sentence
from services.contacts import service as contacts
from services.contacts.schemas import OrganizationCreate, PersonCreate
from services.deals import service as deals
from services.deals.schemas import DealCreate
from services.kernel.permissions import Scope
from services.kernel.principal import Channel
from services.notes import service as notes
from services.notes.schemas import NoteCreate


def U(n: int) -> UUID:
    return UUID(f"00000000-0000-4000-8000-{n:012d}")


def context(subject_type: str, subject: int, data: dict[str, Any], *cited: int) -> Context:
    return Context(subject_type, U(subject), data, [U(n) for n in cited], "0" * 64, datetime(2026, 12, 17, tzinfo=UTC))


DEAL_DATA = {
    "subject": "deal", "today": "2026-12-20",
    "deal": {"id": str(U(1)), "title": "Acme renewal", "status": "open", "stage": "Proposal", "pipeline": "Sales",
             "value": "12000.00", "currency": "EUR", "expected_close_date": "2026-12-15", "probability": 50,
             "owner": "Bob", "created": "2026-10-01", "won_at": None, "lost_at": None, "lost_reason": None,
             "person": {"id": str(U(2)), "name": "Ann Lee", "job_title": "CFO"},
             "organization": {"id": str(U(3)), "name": "Acme"}},
    "signals": {"overdue_activities": 1, "no_next_activity": True, "days_since_last_activity": 19,
                "close_date_passed": True, "days_in_stage": 41},
    "open_activities": [{"id": str(U(4)), "type": "call", "subject": "Call Ann about the budget",
                         "due_date": "2026-12-18", "overdue": True}],
    "notes": [
        {"id": str(U(5)), "date": "2026-12-17", "author": "Bob",
         "body": "Ann wants a 3-year term. She will confirm next week.\nMore."},
        {"id": str(U(6)), "date": "2026-12-10", "author": "Bob", "body": "Sent the proposal to ann@acme.example! Ok."},
        {"id": str(U(7)), "date": "2026-12-01", "author": "Mia", "body": "Long " * 60},
        {"id": str(U(8)), "date": "2026-11-20", "author": "Bob", "body": "Old note."},
    ],
    "omitted": {"notes": 2, "activities": 0},
}


async def test_golden_deal_summary():
    answer = await OfflineLLM().summarize(context("deal", 1, DEAL_DATA, 1, 2, 3, 4, 5, 6, 7, 8), "summary")
    assert answer == Answer(
        summary="Acme renewal — Proposal (Sales), 12,000 EUR, owner Bob, close 2026-12-15, open. Contact: Ann Lee"
        " (CFO), Acme. 1 open activity. Recent notes: 2026-12-17 Bob: “Ann wants a 3-year term.”; 2026-12-10 Bob:"
        " “Sent the proposal to [removed]!”; 2026-12-01 Mia: “" + " ".join(["Long"] * 39) + "…”",
        status_line="Acme renewal — Proposal (Sales), 12,000 EUR, owner Bob, close 2026-12-15, open",
        risks=[
            Cited("1 overdue activity", [U(4)]),
            Cited("close date passed (2026-12-15)", [U(1)]),
            Cited("no next step scheduled", [U(1)]),
            Cited("no activity for 19 days", [U(1)]),
            Cited("41 days in stage Proposal", [U(1)]),
        ],
        next_steps=[
            Cited('Log the outcome of the overdue call "Call Ann about the budget" (due 2026-12-18)', [U(4)]),
            Cited("Update the expected close date", [U(1)]),
            Cited("Schedule the next activity", [U(1)]),
        ],
        model="offline",
    )


async def test_golden_person_summary():
    data = {
        "subject": "person", "today": "2026-12-20",
        "person": {"id": str(U(2)), "name": "Ann Lee", "job_title": "CFO", "owner": "Bob",
                   "organization": {"id": str(U(3)), "name": "Acme"}},
        "open_deals": [{"id": str(U(1)), "title": "Acme renewal", "status": "open", "stage": "Proposal",
                        "value": "12000.00", "currency": "EUR", "expected_close_date": "2026-12-15"}],
        "open_deals_total": 1,
        "signals": {"overdue_activities": 0, "no_next_activity": False, "days_since_last_activity": None},
        "open_activities": [{"id": str(U(4)), "type": "meeting", "subject": "Lunch with Ann",
                             "due_date": "2026-12-23", "overdue": False}],
        "notes": [{"id": str(U(5)), "date": "2026-12-17", "author": "Bob",
                   "body": "Call her on +44 20 7946 0958 or see https://acme.example/team. Prefers mornings."}],
        "omitted": {"notes": 0, "activities": 0},
    }
    answer = await OfflineLLM().summarize(context("person", 2, data, 2, 3, 1, 4, 5), "summary")
    assert answer == Answer(
        summary="Ann Lee — CFO, Acme, owner Bob, 1 open deal. 1 open activity, next: Lunch with Ann on 2026-12-23."
        " Recent notes: 2026-12-17 Bob: “Call her on [removed] or see [removed].”",
        status_line="Ann Lee — CFO, Acme, owner Bob, 1 open deal",
        risks=[],
        next_steps=[],
        model="offline",
    )


async def test_golden_organization_summary():
    data = {
        "subject": "organization", "today": "2026-12-20",
        "organization": {"id": str(U(3)), "name": "Acme", "owner": "Mia"},
        "people": [{"id": str(U(2)), "name": "Ann Lee", "job_title": "CFO"}], "people_total": 1,
        "open_deals": [], "open_deals_total": 0,
        "signals": {"overdue_activities": 0, "no_next_activity": True, "days_since_last_activity": 30},
        "open_activities": [], "notes": [], "omitted": {"notes": 0, "activities": 0},
    }
    answer = await OfflineLLM().summarize(context("organization", 3, data, 3, 2), "summary")
    assert answer == Answer(
        summary="Acme, owner Mia, 1 person, 0 open deals.",
        status_line="Acme, owner Mia, 1 person, 0 open deals",
        risks=[Cited("no next step scheduled", [U(3)]), Cited("no activity for 30 days", [U(3)])],
        next_steps=[Cited("Schedule the next activity", [U(3)])],
        model="offline",
    )


DIGEST_DATA = {
    "subject": "pipeline", "today": "2026-12-20",
    "pipeline": {"id": str(U(10)), "name": "Sales", "open_deals": 3,
                 "open_value": {"EUR": "17000.00", "USD": "900.50"},
                 "stages": [{"stage": "Qualified", "open_deals": 1, "value": {"USD": "900.50"}},
                            {"stage": "Proposal", "open_deals": 2, "value": {"EUR": "17000.00"}}]},
    "this_week": {
        "won": {"count": 1, "value": {"EUR": "3000.00"}, "deals": [{"id": str(U(11)), "title": "Globex pilot"}]},
        "lost": {"count": 1, "deals": [{"id": str(U(12)), "title": "Initech", "reason": "Budget"}]},
        "moved": {"count": 1, "moves": [{"id": str(U(1)), "title": "Acme renewal", "from": "Qualified",
                                         "to": "Proposal", "date": "2026-12-16"}]},
    },
    "open_deals": [
        {"id": str(U(1)), "title": "Acme renewal", "status": "open", "stage": "Proposal", "value": "12000.00",
         "currency": "EUR", "expected_close_date": "2026-12-15",
         "signals": {"overdue_activities": 2, "no_next_activity": True, "days_since_last_activity": 19,
                     "close_date_passed": True, "days_in_stage": 4}},
        {"id": str(U(13)), "title": "Umbrella", "status": "open", "stage": "Proposal", "value": "5000.00",
         "currency": "EUR", "expected_close_date": None,
         "signals": {"overdue_activities": 0, "no_next_activity": False, "days_since_last_activity": 2,
                     "close_date_passed": False, "days_in_stage": 45}},
        {"id": str(U(14)), "title": "Hooli", "status": "open", "stage": "Qualified", "value": "900.50",
         "currency": "USD", "expected_close_date": None,
         "signals": {"overdue_activities": 0, "no_next_activity": False, "days_since_last_activity": 1,
                     "close_date_passed": False, "days_in_stage": 3}},
    ],
    "activities_due": [
        {"id": str(U(15)), "type": "call", "subject": "Call Ann", "due_date": "2026-12-18", "overdue": True,
         "deal_id": str(U(1))},
        {"id": str(U(16)), "type": "meeting", "subject": "Umbrella demo", "due_date": "2026-12-22", "overdue": False,
         "deal_id": str(U(13))},
    ],
    "omitted": {"notes": 0, "activities": 0, "deals": 0},
}


async def test_golden_weekly_digest():
    answer = await OfflineLLM().summarize(context("pipeline", 10, DIGEST_DATA, 10, 11, 12, 1, 13, 14, 15, 16),
                                          "digest")
    assert answer == Answer(
        summary="Sales: 3 open deals, 17,000 EUR, 900.50 USD; this week 1 won, 1 lost, 1 moved. Open deals per"
        " stage: Qualified 1, Proposal 2. Won: Globex pilot. Lost: Initech. Moved: Acme renewal (Qualified →"
        " Proposal). 2 activities due in the next 7 days.",
        status_line="Sales: 3 open deals, 17,000 EUR, 900.50 USD; this week 1 won, 1 lost, 1 moved",
        risks=[
            Cited("Acme renewal: 2 overdue activities, close date passed, no next step", [U(1)]),
            Cited("Umbrella: 45 days in stage", [U(13)]),
        ],
        next_steps=[
            Cited("Acme renewal: log the outcome of the overdue activities", [U(1)]),
            Cited("Umbrella: agree on what moves it out of Proposal", [U(13)]),
            Cited('Prepare the meeting "Umbrella demo" due 2026-12-22', [U(16)]),
        ],
        model="offline",
    )


async def test_the_summary_is_cut_to_120_words():
    data = {**DEAL_DATA, "notes": [{**n, "body": "word " * 150} for n in DEAL_DATA["notes"]]}
    answer = await OfflineLLM().summarize(context("deal", 1, data, 1), "summary")
    assert len(answer.summary.split()) == 120 and answer.summary.endswith("…")


def test_first_sentence_is_one_line_of_at_most_200_characters():
    assert first_sentence("Signed!\nNext: invoice. Then more.") == "Signed!"
    assert first_sentence("a " * 150) == "a " * 98 + "a…"  # cut at a word boundary
    assert len(first_sentence("x" * 300)) == 200


@pytest.mark.parametrize(("text", "kept"), [
    ("write to x@evil.example.", "write to [removed]."),
    ("see https://evil.example/drop?d=1, then www.evil.example/x or evil.example/a",
     "see [removed], then [removed] or [removed]"),
    ("call +1 (555) 010-9999 or 0049 30 1234567!", "call [removed] or [removed]!"),
    ("+1 555 010 9999, +44 20 7946 0958 or 555 010 9999", "[removed], [removed] or [removed]"),
    ("tel:+15550100 javascript:void", "[removed] [removed]"),
    ("close 2026-12-15 (2026-12-20), 15.12.2026, 12.000.000 EUR, 1 200 000 USD, 12,000 EUR, 3-year term",
     "close 2026-12-15 (2026-12-20), 15.12.2026, 12.000.000 EUR, 1 200 000 USD, 12,000 EUR, 3-year term"),
])
def test_the_filter_cuts_urls_emails_and_phones_and_keeps_dates_and_amounts(text, kept):
    assert scrub(text) == kept


async def test_the_offline_summarizer_reads_real_contexts_of_every_subject(actors, company):
    today = datetime.now(UTC).date()
    async with actors.uow("bob") as uow:
        org = await contacts.create_organization(uow, OrganizationCreate(name="Acme"))
        person = await contacts.create_person(uow, PersonCreate(first_name="Ann", last_name="Lee", job_title="CFO",
                                                                organization_id=org.id))
        deal = await deals.create(uow, DealCreate(title="Acme renewal", value="12000", currency="EUR",
                                                  person_id=person.id, organization_id=org.id,
                                                  expected_close_date=date(2026, 12, 15)))
        call = await activities.create(uow, ActivityCreate(type=ActivityType.CALL, subject="Call Ann",
                                                           deal_id=deal.id, due_date=today - timedelta(days=1)))
        await notes.create(uow, NoteCreate(body="Ann wants a 3-year term. Details follow.", deal_id=deal.id))
    answers = {}
    async with actors.uow("bob", scopes=frozenset({Scope.READ, Scope.AI}), channel=Channel.WORKFLOW) as uow:
        for subject_type, subject_id in (("deal", deal.id), ("person", person.id), ("organization", org.id),
                                         ("pipeline", company.sales_pipeline_id)):
            built = await build_context(uow, subject_type, subject_id)
            answers[subject_type] = await OfflineLLM().summarize(built, "summary")
    assert answers["deal"].status_line == (
        "Acme renewal — Qualified (Sales), 12,000 EUR, owner Bob, close 2026-12-15, open")
    assert answers["deal"].risks[0] == Cited("1 overdue activity", [call.id])
    assert answers["person"].status_line == "Ann Lee — CFO, Acme, owner Bob, 1 open deal"
    assert answers["organization"].status_line == "Acme, owner Bob, 1 person, 1 open deal"
    assert answers["pipeline"].status_line == "Sales: 1 open deal, 12,000 EUR; this week 0 won, 0 lost, 0 moved"
    assert answers["pipeline"].risks[0].record_ids == [deal.id]

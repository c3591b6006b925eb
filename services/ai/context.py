"""The context of a summary: what a model may be told about a record, built AS the requesting user.

The caller's unit of work runs as the requester, so Row Level Security decides what is read: a note, a linked
person or an activity the requester cannot see never reaches the data (the lesson of prompt injections that
exfiltrate records: retrieval with the asker's rights, not the system's). Text is cleaned of control,
bidirectional and invisible characters. Contact details (emails, phones, addresses) are left out: a summary
needs none, and what a model is not given it cannot leak.

The data is bounded: fixed fields first, then computed signals, then open activities (soonest first, at most
ten), then notes (newest first, each cut to 1,000 characters), each added while a conservative token estimate
(a token per three characters of JSON) stays within the budget. `omitted` counts what was left out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from services.ai.llm import Context
from services.contacts import service as contacts
from services.deals import service as deals
from services.deals.schemas import Deal, DealStatus
from services.kernel.errors import Invalid
from services.kernel.permissions import Perm, requires
from services.kernel.text import clean_text
from services.kernel.uow import Row, UnitOfWork
from services.pipelines import service as pipelines

SUBJECT_TYPES = ("deal", "person", "organization", "pipeline")
CHARS_PER_TOKEN = 3
MAX_ACTIVITIES = 10
MAX_NOTE_CHARS = 1000
MAX_LISTED = 10  # deals of a person or organization, people of an organization, items of a week's digest
WEEK = timedelta(days=7)
_MIN_NOTE_CHARS = 60  # the JSON of the shortest note: a bound on how many notes can fit, to fetch no more


def canonical_json(data: Any) -> str:
    """The one serialization of context data: hashed, measured and sent."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def estimate_tokens(data: Any) -> int:
    """A conservative token count: JSON of ids and dates runs at 2.2-2.3 characters per token, prose at ~4."""
    return math.ceil(len(canonical_json(data)) / CHARS_PER_TOKEN)


def _line(text: str | None) -> str | None:
    return None if text is None else clean_text(text, single_line=True)


def _cut(text: str, limit: int) -> str:
    text = clean_text(text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _day(value: date | datetime | None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(UTC).date() if isinstance(value, datetime) else value).isoformat()


@dataclass
class _Builder:
    """The data under construction, the budget, and the newest change among what it holds."""

    budget: int
    now: datetime
    data: dict[str, Any] = field(default_factory=dict)
    changed: list[datetime] = field(default_factory=list)

    @property
    def today(self) -> date:
        return self.now.astimezone(UTC).date()

    def fits(self) -> bool:
        return estimate_tokens(self.data) <= self.budget

    def fill(self, key: str, items: Iterable[tuple[dict[str, Any], datetime]], total: int, omitted: str) -> None:
        """Append `items` to `data[key]` in order while the data stays within the budget; the rest of `total`
        is counted in `omitted`."""
        kept: list[dict[str, Any]] = []
        self.data[key] = kept
        for item, changed in items:
            kept.append(item)
            self.data["omitted"][omitted] = total - len(kept)
            if not self.fits():
                kept.pop()
                break
            self.changed.append(changed)
        self.data["omitted"][omitted] = total - len(kept)

    def context(self, subject_type: str, subject_id: UUID) -> Context:
        return Context(
            subject_type=subject_type,
            subject_id=subject_id,
            data=self.data,
            source_ids=_record_ids(self.data),
            snapshot_hash=hashlib.sha256(canonical_json(self.data).encode()).hexdigest(),
            snapshot_at=max(self.changed, default=self.now),
        )


def _record_ids(data: Any) -> list[UUID]:
    """Every record id in the data (each record carries its id under "id"), in order of first appearance."""
    found: list[UUID] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "id" and isinstance(item, str):
                    record_id = UUID(item)
                    if record_id not in found:
                        found.append(record_id)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return found


# Reading, as the requester. --------------------------------------------------------------------------------


async def _names(uow: UnitOfWork, user_ids: Iterable[UUID]) -> dict[UUID, str]:
    rows = await uow.all("select id, display_name from public.user_profiles where id = any(%s)", [list(set(user_ids))])
    return {r["id"]: _line(r["display_name"]) or "unknown" for r in rows}


async def _stage_names(uow: UnitOfWork, stage_ids: Iterable[UUID | None]) -> dict[UUID, str]:
    ids = [s for s in set(stage_ids) if s is not None]
    return {s.id: _line(s.name) or "" for s in await pipelines.get_stages(uow, ids)} if ids else {}


@dataclass(frozen=True)
class _ActivityFacts:
    overdue: int
    next_due: date | None
    last_done: datetime | None
    changed: datetime | None


async def _activity_facts(uow: UnitOfWork, link: str, ids: list[UUID], today: date) -> dict[UUID, _ActivityFacts]:
    """Per record: open activities overdue, the next due date, the last one done, the newest change."""
    rows = await uow.all(
        f"select {link} as record_id,"
        " count(*) filter (where not done and due_date < %(today)s) as overdue,"
        " min(due_date) filter (where not done and due_date >= %(today)s) as next_due,"
        " max(done_at) as last_done, max(updated_at) as changed"
        f" from public.activities where {link} = any(%(ids)s) group by {link}",
        {"ids": ids, "today": today},
    )
    return {r["record_id"]: _ActivityFacts(r["overdue"], r["next_due"], r["last_done"], r["changed"]) for r in rows}


def _signals(facts: _ActivityFacts | None, today: date, *, open_: bool = True) -> dict[str, Any]:
    facts = facts or _ActivityFacts(0, None, None, None)
    return {
        "overdue_activities": facts.overdue,
        "no_next_activity": open_ and facts.next_due is None,
        "days_since_last_activity": None if facts.last_done is None else (today - _as_day(facts.last_done)).days,
    }


def _as_day(value: datetime) -> date:
    return value.astimezone(UTC).date()


async def _deal_signals(uow: UnitOfWork, items: list[Deal], today: date) -> dict[UUID, dict[str, Any]]:
    """The computed signals of deals: overdue activities, next activity, close date, time in stage."""
    ids = [d.id for d in items]
    facts = await _activity_facts(uow, "deal_id", ids, today)
    histories = await deals.stage_histories(uow, ids)
    signals = {}
    for deal in items:
        entered = [h.changed_at for h in histories.get(deal.id, []) if h.to_stage_id == deal.stage_id]
        since = max(entered, default=deal.created_at)
        is_open = deal.status is DealStatus.OPEN
        signals[deal.id] = {
            **_signals(facts.get(deal.id), today, open_=is_open),
            "close_date_passed": is_open and deal.expected_close_date is not None
            and deal.expected_close_date < today,
            "days_in_stage": (today - _as_day(since)).days,
        }
    return signals


async def _open_activities(
    uow: UnitOfWork, link: str, record_id: UUID, today: date
) -> tuple[list[tuple[dict[str, Any], datetime]], int]:
    """Open activities of a record, soonest first (undated last), at most ten, and how many there are."""
    rows = await uow.all(
        f"select *, count(*) over () as total from public.activities where {link} = %s and not done"
        " order by due_date nulls last, due_time nulls last, created_at, id limit %s",
        [record_id, MAX_ACTIVITIES],
    )
    return [(_activity(r, today), r["updated_at"]) for r in rows], (rows[0]["total"] if rows else 0)


def _activity(row: Row, today: date) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": str(row["id"]),
        "type": row["type"],
        "subject": _line(row["subject"]),
        "due_date": _day(row["due_date"]),
        "overdue": row["due_date"] is not None and row["due_date"] < today,
    }
    if row["note"]:
        item["note"] = _cut(row["note"], 300)
    return item


async def _notes(
    uow: UnitOfWork, where: str, params: list[Any], budget: int
) -> tuple[list[tuple[dict[str, Any], datetime]], int]:
    """Visible notes newest first (no more than could fit in the budget), each cut, and how many there are."""
    limit = budget * CHARS_PER_TOKEN // _MIN_NOTE_CHARS + 1
    rows = await uow.all(
        "select id, author_id, created_at, updated_at, left(body, %s) as body, count(*) over () as total"
        f" from public.notes where {where} order by created_at desc, id desc limit %s",
        [MAX_NOTE_CHARS + 1, *params, limit],
    )
    names = await _names(uow, [r["author_id"] for r in rows])
    notes = [
        ({"id": str(r["id"]), "date": _day(r["created_at"]), "author": names.get(r["author_id"], "unknown"),
          "body": _cut(r["body"], MAX_NOTE_CHARS)}, r["updated_at"])
        for r in rows
    ]
    return notes, (rows[0]["total"] if rows else 0)


def _deal_line(deal: Deal, stages: dict[UUID, str]) -> dict[str, Any]:
    return {
        "id": str(deal.id), "title": _line(deal.title), "status": deal.status.value,
        "stage": stages.get(deal.stage_id) if deal.stage_id else None,
        "value": _money(deal.value), "currency": deal.currency,
        "expected_close_date": _day(deal.expected_close_date),
    }


# Subjects. ----------------------------------------------------------------------------------------------------


async def _deal(uow: UnitOfWork, b: _Builder, deal_id: UUID) -> None:
    deal = await deals.get(uow, deal_id)
    pipeline = await pipelines.get(uow, deal.pipeline_id)
    stages = {s.id: _line(s.name) or "" for s in pipeline.stages}
    owners = await _names(uow, [deal.owner_id])
    fields: dict[str, Any] = {
        **_deal_line(deal, stages),
        "pipeline": _line(pipeline.name),
        "probability": deal.probability if deal.probability is not None
        else next((s.win_probability for s in pipeline.stages if s.id == deal.stage_id), None),
        "owner": owners.get(deal.owner_id, "unknown"),
        "created": _day(deal.created_at),
        "won_at": _day(deal.won_at),
        "lost_at": _day(deal.lost_at),
        "lost_reason": _line(deal.lost_reason),
    }
    b.changed.append(deal.updated_at)
    links = ["deal_id = %s"]
    params: list[Any] = [deal.id]
    if deal.person_id is not None:
        for person in await contacts.get_persons(uow, [deal.person_id]):
            fields["person"] = {"id": str(person.id), "name": _line(person.name), "job_title": _line(person.job_title)}
            b.changed.append(person.updated_at)
            links.append("person_id = %s")
            params.append(person.id)
    if deal.organization_id is not None:
        for org in await contacts.get_organizations(uow, [deal.organization_id]):
            fields["organization"] = {"id": str(org.id), "name": _line(org.name)}
            b.changed.append(org.updated_at)
            links.append("organization_id = %s")
            params.append(org.id)
    b.data["deal"] = fields
    b.data["signals"] = (await _deal_signals(uow, [deal], b.today))[deal.id]
    await _attachments(uow, b, "deal_id", deal.id, "(" + " or ".join(links) + ")", params)


async def _person(uow: UnitOfWork, b: _Builder, person_id: UUID) -> None:
    person = await contacts.get_person(uow, person_id)
    names = await _names(uow, [person.owner_id])
    fields: dict[str, Any] = {
        "id": str(person.id), "name": _line(person.name), "job_title": _line(person.job_title),
        "owner": names.get(person.owner_id, "unknown"),
    }
    b.changed.append(person.updated_at)
    if person.organization_id is not None:
        for org in await contacts.get_organizations(uow, [person.organization_id]):
            fields["organization"] = {"id": str(org.id), "name": _line(org.name)}
            b.changed.append(org.updated_at)
    b.data["person"] = fields
    await _linked_deals(uow, b, "person_id", person.id)
    b.data["signals"] = _signals((await _activity_facts(uow, "person_id", [person.id], b.today)).get(person.id),
                                 b.today)
    await _attachments(uow, b, "person_id", person.id, "person_id = %s", [person.id])


async def _organization(uow: UnitOfWork, b: _Builder, organization_id: UUID) -> None:
    org = await contacts.get_organization(uow, organization_id)
    names = await _names(uow, [org.owner_id])
    b.data["organization"] = {"id": str(org.id), "name": _line(org.name), "owner": names.get(org.owner_id, "unknown")}
    b.changed.append(org.updated_at)
    rows = await uow.all(
        "select id, first_name, last_name, job_title, updated_at, count(*) over () as total from public.persons"
        " where organization_id = %s order by last_name, first_name, id limit %s",
        [org.id, MAX_LISTED],
    )
    b.data["people"] = [
        {"id": str(r["id"]), "name": _line(f"{r['first_name']} {r['last_name']}"), "job_title": _line(r["job_title"])}
        for r in rows
    ]
    b.data["people_total"] = rows[0]["total"] if rows else 0
    b.changed.extend(r["updated_at"] for r in rows)
    await _linked_deals(uow, b, "organization_id", org.id)
    b.data["signals"] = _signals((await _activity_facts(uow, "organization_id", [org.id], b.today)).get(org.id),
                                 b.today)
    await _attachments(uow, b, "organization_id", org.id, "organization_id = %s", [org.id])


async def _linked_deals(uow: UnitOfWork, b: _Builder, link: str, record_id: UUID) -> None:
    """The open deals of a person or organization (at most ten, largest first) and how many there are."""
    rows = await uow.all(
        f"select id, count(*) over () as total from public.deals where {link} = %s and status = 'open'"
        " order by value desc, created_at, id limit %s",
        [record_id, MAX_LISTED],
    )
    found = {d.id: d for d in await deals.get_many(uow, [r["id"] for r in rows])}
    items = [found[r["id"]] for r in rows if r["id"] in found]
    stages = await _stage_names(uow, [d.stage_id for d in items])
    b.data["open_deals"] = [_deal_line(d, stages) for d in items]
    b.data["open_deals_total"] = rows[0]["total"] if rows else 0
    b.changed.extend(d.updated_at for d in items)


async def _attachments(uow: UnitOfWork, b: _Builder, link: str, record_id: UUID, note_where: str,
                       note_params: list[Any]) -> None:
    """Open activities of the subject, then notes of the subject and its linked records, within the budget."""
    b.data["omitted"] = {"notes": 0, "activities": 0}
    activities, total = await _open_activities(uow, link, record_id, b.today)
    b.fill("open_activities", activities, total, "activities")
    notes, total = await _notes(uow, note_where, note_params, b.budget)
    b.fill("notes", notes, total, "notes")


async def _pipeline(uow: UnitOfWork, b: _Builder, pipeline_id: UUID) -> None:
    """The requester's own deals in a pipeline: open ones with signals, this week's outcomes and moves, and the
    activities due in the coming week. The weekly digest reads the same."""
    pipeline = await pipelines.get(uow, pipeline_id)
    me = uow.user_id
    if me is None:
        raise Invalid("a pipeline digest is for a user", field="subject_id")
    stages = {s.id: _line(s.name) or "" for s in pipeline.stages}
    since = b.now - WEEK
    own = await uow.all(
        "select id from public.deals where pipeline_id = %s and owner_id = %s"
        " and (status = 'open' or coalesce(won_at, lost_at) >= %s)",
        [pipeline.id, me, since],
    )
    mine = await deals.get_many(uow, [r["id"] for r in own])
    open_deals = sorted((d for d in mine if d.status is DealStatus.OPEN), key=lambda d: (d.created_at, d.id))
    per_stage = [
        {"stage": stages[s.id], "open_deals": sum(1 for d in open_deals if d.stage_id == s.id),
         "value": _totals(d for d in open_deals if d.stage_id == s.id)}
        for s in pipeline.stages
    ]
    week = await _week(uow, b, mine, stages, since)
    b.data["pipeline"] = {"id": str(pipeline.id), "name": _line(pipeline.name), "stages": per_stage,
                          "open_deals": len(open_deals), "open_value": _totals(open_deals)}
    b.data["this_week"] = week
    due = await uow.all(
        "select a.*, count(*) over () as total from public.activities a join public.deals d on d.id = a.deal_id"
        " where d.pipeline_id = %s and d.owner_id = %s and d.status = 'open' and not a.done"
        " and a.due_date <= %s order by a.due_date, a.due_time nulls last, a.created_at, a.id limit %s",
        [pipeline.id, me, b.today + WEEK, MAX_ACTIVITIES],
    )
    b.data["omitted"] = {"notes": 0, "activities": 0, "deals": 0}
    signals = await _deal_signals(uow, open_deals, b.today) if open_deals else {}
    ranked = sorted(open_deals, key=lambda d: (-_attention(signals[d.id]), d.created_at, d.id))
    b.fill("open_deals", (({**_deal_line(d, stages), "signals": signals[d.id]}, d.updated_at) for d in ranked),
           len(ranked), "deals")
    b.fill("activities_due", (({**_activity(r, b.today), "deal_id": str(r["deal_id"])}, r["updated_at"])
                              for r in due), due[0]["total"] if due else 0, "activities")


def _totals(items: Iterable[Deal]) -> dict[str, str]:
    sums: dict[str, Decimal] = {}
    for deal in items:
        sums[deal.currency] = sums.get(deal.currency, Decimal(0)) + deal.value
    return {currency: _money(value) for currency, value in sorted(sums.items())}


def _attention(signals: dict[str, Any]) -> int:
    """How much a deal needs its owner now: the digest lists the neediest first."""
    return (
        3 * signals["overdue_activities"]
        + 2 * signals["close_date_passed"]
        + 2 * signals["no_next_activity"]
        + min(signals["days_in_stage"], 60) // 14
    )


async def _week(
    uow: UnitOfWork, b: _Builder, mine: list[Deal], stages: dict[UUID, str], since: datetime
) -> dict[str, Any]:
    """Counts of the requester's deals won, lost and moved in the last seven days, with the first few of each."""
    won = sorted((d for d in mine if d.won_at is not None and d.won_at >= since), key=lambda d: (d.won_at, d.id))
    lost = sorted((d for d in mine if d.lost_at is not None and d.lost_at >= since), key=lambda d: (d.lost_at, d.id))
    moves = await uow.all(
        "select h.deal_id, h.from_stage_id, h.to_stage_id, h.changed_at from public.deal_stage_history h"
        " join public.deals d on d.id = h.deal_id where d.owner_id = %s and h.to_stage_id = any(%s)"
        " and h.from_stage_id is not null and h.changed_at >= %s order by h.changed_at, h.id",
        [uow.user_id, list(stages), since],
    )
    titles = {d.id: _line(d.title) for d in mine}
    moved = [
        {"id": str(m["deal_id"]), "title": titles.get(m["deal_id"]), "from": stages.get(m["from_stage_id"]),
         "to": stages.get(m["to_stage_id"]), "date": _day(m["changed_at"])}
        for m in moves if m["deal_id"] in titles
    ]
    b.changed.extend(d.updated_at for d in won[:MAX_LISTED] + lost[:MAX_LISTED])
    return {
        "won": {"count": len(won), "value": _totals(won),
                "deals": [{"id": str(d.id), "title": titles[d.id]} for d in won[:MAX_LISTED]]},
        "lost": {"count": len(lost),
                 "deals": [{"id": str(d.id), "title": titles[d.id], "reason": _line(d.lost_reason)}
                           for d in lost[:MAX_LISTED]]},
        "moved": {"count": len(moved), "moves": moved[:MAX_LISTED]},
    }


_BUILDERS = {"deal": _deal, "person": _person, "organization": _organization, "pipeline": _pipeline}


@requires(Perm.AI_USE)
async def build_context(
    uow: UnitOfWork, subject_type: str, subject_id: UUID, *, budget_tokens: int = 6000, now: datetime | None = None
) -> Context:
    """What a model may be told about a deal, person, organization or the requester's pipeline, read AS the
    caller (RLS decides) and bounded by `budget_tokens`. An unknown or invisible subject raises NotFound."""
    if subject_type not in _BUILDERS:
        raise Invalid(f"cannot summarize a {subject_type!r}; one of {', '.join(SUBJECT_TYPES)}", field="subject_type")
    b = _Builder(budget_tokens, now or datetime.now(UTC))
    b.data["subject"] = subject_type
    b.data["today"] = b.today.isoformat()
    await _BUILDERS[subject_type](uow, b, subject_id)
    return b.context(subject_type, subject_id)

"""The offline summarizer: a deterministic, extractive brief built from the context alone, with no model.

It runs when no model is configured (the embedded default works end to end without an API key) and it is
labelled as such (`model = "offline"`). It states fields, turns the computed signals into risks and rules into
next steps, and quotes the first sentence of the newest notes; it invents nothing. Its answer goes through the
same filter as a model's, so a URL or an address quoted from a note is cut here too.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from services.ai.answer import to_answer
from services.ai.llm import Answer, Context, Purpose

MODEL = "offline"
_NOTES_QUOTED = 3
_SENTENCE_CHARS = 200
_STALE_DAYS = 14  # no activity for this long is a risk
_LONG_IN_STAGE = 30  # days
_LISTED = 3  # deals and activities a digest names


def _amount(value: str, currency: str) -> str:
    number = Decimal(value)
    text = f"{number:,.0f}" if number == number.to_integral_value() else f"{number:,.2f}"
    return f"{text} {currency}"


def _totals(totals: dict[str, str]) -> str:
    return ", ".join(_amount(v, c) for c, v in totals.items()) or "no value"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def first_sentence(text: str) -> str:
    """The first sentence of `text` on one line, at most 200 characters."""
    line = " ".join(text.split())
    sentence = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
    if len(sentence) <= _SENTENCE_CHARS:
        return sentence
    return sentence[: _SENTENCE_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _cite(*ids: str | None) -> list[str]:
    return [i for i in ids if i]


class OfflineLLM:
    """Summaries without a model: the same Answer shape, made by rules from the context."""

    model = MODEL

    async def summarize(self, context: Context, purpose: Purpose) -> Answer:
        raw = _digest(context.data) if context.subject_type == "pipeline" else _summary(context)
        return to_answer(raw, context, MODEL)


# Deals, persons, organizations. -------------------------------------------------------------------------------


def _status_line(data: dict[str, Any]) -> str:
    if (deal := data.get("deal")) is not None:
        parts = [f"{deal['title']} — {deal['stage'] or 'no stage'} ({deal['pipeline']})",
                 _amount(deal["value"], deal["currency"]), f"owner {deal['owner']}"]
        if deal["expected_close_date"]:
            parts.append(f"close {deal['expected_close_date']}")
        parts.append(deal["status"])
        return ", ".join(parts)
    if (person := data.get("person")) is not None:
        head = person["name"] + (f" — {person['job_title']}" if person["job_title"] else "")
        org = [person["organization"]["name"]] if "organization" in person else []
        return ", ".join([head, *org, f"owner {person['owner']}", _plural(data["open_deals_total"], "open deal")])
    org = data["organization"]
    return ", ".join([org["name"], f"owner {org['owner']}", _plural(data["people_total"], "person", "people"),
                      _plural(data["open_deals_total"], "open deal")])


def _subject(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("deal") or data.get("person") or data["organization"]


def _risks(data: dict[str, Any]) -> list[dict[str, Any]]:
    signals, subject = data["signals"], _subject(data)
    overdue = [a["id"] for a in data["open_activities"] if a["overdue"]]
    risks = []
    if signals["overdue_activities"]:
        risks.append({"text": _plural(signals["overdue_activities"], "overdue activity", "overdue activities"),
                      "record_ids": overdue})
    if signals.get("close_date_passed"):
        risks.append({"text": f"close date passed ({subject['expected_close_date']})", "record_ids": [subject["id"]]})
    if signals["no_next_activity"]:
        risks.append({"text": "no next step scheduled", "record_ids": [subject["id"]]})
    days = signals["days_since_last_activity"]
    if days is not None and days >= _STALE_DAYS:
        risks.append({"text": f"no activity for {days} days", "record_ids": [subject["id"]]})
    if signals.get("days_in_stage", 0) >= _LONG_IN_STAGE and subject.get("status") == "open":
        risks.append({"text": f"{signals['days_in_stage']} days in stage {subject['stage']}",
                      "record_ids": [subject["id"]]})
    return risks


def _outcome_step(activity: dict[str, Any]) -> str:
    what = f"the overdue {activity['type']} \"{activity['subject']}\" (due {activity['due_date']})"
    if activity["type"] in ("call", "meeting"):
        return f"Log the outcome of {what}"
    return f"Complete or reschedule {what}"


def _next_steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    signals, subject = data["signals"], _subject(data)
    steps = [{"text": _outcome_step(a), "record_ids": [a["id"]]}
             for a in data["open_activities"] if a["overdue"]][:_LISTED]
    if signals.get("close_date_passed"):
        steps.append({"text": "Update the expected close date", "record_ids": [subject["id"]]})
    if signals["no_next_activity"]:
        steps.append({"text": "Schedule the next activity", "record_ids": [subject["id"]]})
    return steps


def _summary(context: Context) -> dict[str, Any]:
    data = context.data
    sentences = [_status_line(data) + "."]
    contacts = [c for c in (_subject(data).get("person"), _subject(data).get("organization")) if c]
    if "deal" in data and contacts:
        people = ", ".join(c["name"] + (f" ({c['job_title']})" if c.get("job_title") else "") for c in contacts)
        sentences.append(f"Contact: {people}.")
    upcoming = [a for a in data["open_activities"] if not a["overdue"] and a["due_date"]]
    opened = len(data["open_activities"]) + data["omitted"]["activities"]
    if opened:
        line = f"{_plural(opened, 'open activity', 'open activities')}"
        if upcoming:
            line += f", next: {upcoming[0]['subject']} on {upcoming[0]['due_date']}"
        sentences.append(line + ".")
    notes = data["notes"][:_NOTES_QUOTED]
    if notes:
        quoted = "; ".join(f"{n['date']} {n['author']}: “{first_sentence(n['body'])}”" for n in notes)
        sentences.append(f"Recent notes: {quoted}")
    return {
        "summary": " ".join(sentences),
        "status_line": _status_line(data),
        "risks": _risks(data),
        "next_steps": _next_steps(data),
        "ignored_instructions": False,
    }


# The weekly digest of a pipeline. -------------------------------------------------------------------------------


def _deal_risk(deal: dict[str, Any]) -> str:
    s = deal["signals"]
    parts = []
    if s["overdue_activities"]:
        parts.append(_plural(s["overdue_activities"], "overdue activity", "overdue activities"))
    if s["close_date_passed"]:
        parts.append("close date passed")
    if s["no_next_activity"]:
        parts.append("no next step")
    if s["days_in_stage"] >= _LONG_IN_STAGE:
        parts.append(f"{s['days_in_stage']} days in stage")
    return f"{deal['title']}: {', '.join(parts)}" if parts else ""


def _deal_step(deal: dict[str, Any]) -> str:
    s = deal["signals"]
    if s["overdue_activities"]:
        return f"{deal['title']}: log the outcome of the overdue activities"
    if s["close_date_passed"]:
        return f"{deal['title']}: update the expected close date"
    if s["no_next_activity"]:
        return f"{deal['title']}: schedule the next activity"
    return f"{deal['title']}: agree on what moves it out of {deal['stage']}"


def _digest(data: dict[str, Any]) -> dict[str, Any]:
    pipeline, week = data["pipeline"], data["this_week"]
    status_line = (
        f"{pipeline['name']}: {_plural(pipeline['open_deals'], 'open deal')}, {_totals(pipeline['open_value'])};"
        f" this week {week['won']['count']} won, {week['lost']['count']} lost, {week['moved']['count']} moved"
    )
    stages = ", ".join(f"{s['stage']} {s['open_deals']}" for s in pipeline["stages"])
    sentences = [f"{status_line}.", f"Open deals per stage: {stages}."]
    if week["won"]["deals"]:
        sentences.append("Won: " + ", ".join(d["title"] for d in week["won"]["deals"]) + ".")
    if week["lost"]["deals"]:
        sentences.append("Lost: " + ", ".join(d["title"] for d in week["lost"]["deals"]) + ".")
    if week["moved"]["moves"]:
        sentences.append("Moved: " + ", ".join(f"{m['title']} ({m['from']} → {m['to']})"
                                               for m in week["moved"]["moves"][:_LISTED]) + ".")
    due = data["activities_due"]
    due_total = len(due) + data["omitted"]["activities"]
    sentences.append(f"{_plural(due_total, 'activity', 'activities')} due in the next 7 days.")
    needy = [d for d in data["open_deals"] if _deal_risk(d)][:_LISTED]
    risks = [{"text": _deal_risk(d), "record_ids": [d["id"]]} for d in needy]
    steps = [{"text": _deal_step(d), "record_ids": [d["id"]]} for d in needy]
    steps += [{"text": f"Prepare the {a['type']} \"{a['subject']}\" due {a['due_date']}", "record_ids": [a["id"]]}
              for a in due if not a["overdue"]][:_LISTED]
    return {
        "summary": " ".join(sentences),
        "status_line": status_line,
        "risks": risks,
        "next_steps": steps,
        "ignored_instructions": False,
    }

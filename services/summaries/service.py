"""AI summaries: a user asks for one (`request_summary`), a workflow step writes it (`start`, `store`, `fail`,
system only), the user reads it a moment later (`get`, `list_for`, `latest_for`).

Long or slow work never runs inside a request: requesting writes a queued row and emits
`crm/ai.summary.requested` in one transaction; the `ai-summary` workflow builds the context AS the requester
(Row Level Security decides what the model may see), calls the model outside any transaction, and stores the
answer. A summary is its requester's own (RLS), and `stale` once its subject, or a note or activity on it, changed
after the time the summary describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from services.ai.llm import Answer, Context
from services.contacts import service as contacts
from services.deals import service as deals
from services.gdpr import service as gdpr
from services.kernel import records
from services.kernel.errors import Conflict, NotFound
from services.kernel.pagination import Page, PageRequest, build_page, keyset
from services.kernel.permissions import ROLE_PERMISSIONS, Perm, requires
from services.kernel.principal import require_system
from services.kernel.uow import UnitOfWork
from services.notifications import service as notifications
from services.notifications.schemas import NotificationKind
from services.pipelines import service as pipelines
from services.summaries.schemas import Summary, SummarySubject

_SUBJECT_TABLES = {"deal": ("deals", "deal_id"), "person": ("persons", "person_id"),
                   "organization": ("organizations", "organization_id")}


def _changed_after_snapshot() -> str:
    """SQL: whether the summary's subject (or a note or activity on it) changed after `snapshot_at`."""
    cases = " ".join(
        f"when '{kind}' then greatest("
        f"(select t.updated_at from public.{table} t where t.id = s.subject_id),"
        f" (select max(n.updated_at) from public.notes n where n.{link} = s.subject_id),"
        f" (select max(a.updated_at) from public.activities a where a.{link} = s.subject_id))"
        for kind, (table, link) in _SUBJECT_TABLES.items()
    )
    pipeline = ("when 'pipeline' then (select max(d.updated_at) from public.deals d"
                " where d.pipeline_id = s.subject_id and d.owner_id = s.requested_by)")
    return f"coalesce((case s.subject_type {cases} {pipeline} end) > s.snapshot_at, false)"


_SELECT = f"select s.*, (s.status = 'done' and {_changed_after_snapshot()}) as stale from public.ai_summaries s"


@dataclass(frozen=True)
class Work:
    """What the workflow needs to produce a summary."""

    summary_id: UUID
    requested_by: UUID
    kind: str
    subject_type: SummarySubject
    subject_id: UUID


async def _ensure_visible(uow: UnitOfWork, subject_type: SummarySubject, subject_id: UUID) -> None:
    """NotFound unless the caller may see the subject (the services check permission and RLS)."""
    if subject_type is SummarySubject.DEAL:
        await deals.get(uow, subject_id)
    elif subject_type is SummarySubject.PERSON:
        await contacts.get_person(uow, subject_id)
    elif subject_type is SummarySubject.ORGANIZATION:
        await contacts.get_organization(uow, subject_id)
    else:
        await pipelines.get(uow, subject_id)


@requires(Perm.AI_USE)
async def request_summary(uow: UnitOfWork, subject_type: SummarySubject, subject_id: UUID) -> Summary:
    """Queue a summary of a record the caller can see (or of their own deals in a pipeline); returns it at once,
    queued. Asking again while one is queued or running for the same subject returns that one."""
    subject_type = SummarySubject(subject_type)
    await _ensure_visible(uow, subject_type, subject_id)
    for _ in range(2):  # a pending one may finish between the insert and the read: then queue anew
        row = await uow.one(
            "insert into public.ai_summaries (requested_by, subject_type, subject_id) values (auth.uid(), %s, %s)"
            " on conflict (requested_by, kind, subject_type, subject_id) where status in ('queued', 'running')"
            " do nothing returning id",
            [subject_type.value, subject_id],
        )
        if row is not None:
            break
        pending = await uow.one(
            f"{_SELECT} where s.requested_by = auth.uid() and s.kind = 'summary' and s.subject_type = %s"
            " and s.subject_id = %s and s.status in ('queued', 'running')",
            [subject_type.value, subject_id],
        )
        if pending is not None:
            return Summary.from_row(pending)
    if row is None:
        raise Conflict("a summary of this record finished while you asked; ask again")
    summary = await get(uow, row["id"])
    await uow.audit("summary.request", "ai_summary", summary.id,
                    after={"subject_type": subject_type.value, "subject_id": subject_id})
    uow.emit("crm/ai.summary.requested", summary_id=summary.id, subject_type=subject_type.value,
             subject_id=subject_id)
    return summary


@requires(Perm.AI_USE)
async def get(uow: UnitOfWork, summary_id: UUID) -> Summary:
    """One of the caller's summaries (someone else's is not found)."""
    row = await uow.one(f"{_SELECT} where s.id = %s", [summary_id])
    if row is None:
        raise NotFound("summary", summary_id)
    return Summary.from_row(row)


@requires(Perm.AI_USE)
async def list_for(
    uow: UnitOfWork, subject_type: SummarySubject, subject_id: UUID, page: PageRequest | None = None
) -> Page[Summary]:
    """The caller's summaries of a subject, newest first."""
    page = page or PageRequest()
    after, params = keyset("s", page)
    where = "s.subject_type = %s and s.subject_id = %s"
    rows = await uow.all(
        f"{_SELECT} where {where} and {after} order by s.created_at desc, s.id desc limit %s",
        [SummarySubject(subject_type).value, subject_id, *params, page.limit + 1],
    )
    total = await records.count(uow, f"public.ai_summaries s where {where}",
                                [SummarySubject(subject_type).value, subject_id], page)
    return build_page(rows, page, total, Summary.from_row)


@requires(Perm.AI_USE)
async def latest_for(uow: UnitOfWork, subject_type: SummarySubject, subject_ids: list[UUID]) -> dict[UUID, Summary]:
    """The caller's newest finished summary of each subject (batch loader)."""
    condition, keys = records.among("s.subject_id", subject_ids)
    rows = await uow.all(
        f"select distinct on (s.subject_id) * from ({_SELECT}) s where s.kind = 'summary' and s.status = 'done'"
        f" and s.subject_type = %s and {condition} order by s.subject_id, s.completed_at desc, s.id desc",
        [SummarySubject(subject_type).value, keys],
    )
    return {row["subject_id"]: Summary.from_row(row) for row in rows}


# The workflow's side: the system starts, stores and fails summaries ---------------------------------------------


@requires(None)
async def start(uow: UnitOfWork, summary_id: UUID) -> Work | None:
    """Mark a queued (or interrupted running) summary running; None when it is done or failed already."""
    require_system(uow.principal, "writes summaries")
    row = await uow.one(
        "update public.ai_summaries set status = 'running', started_at = now()"
        " where id = %s and status in ('queued', 'running')"
        " returning id, requested_by, kind, subject_type, subject_id",
        [summary_id],
    )
    if row is None:
        return None
    return Work(row["id"], row["requested_by"], row["kind"], SummarySubject(row["subject_type"]), row["subject_id"])


@requires(None)
async def store(uow: UnitOfWork, summary_id: UUID, context: Context, answer: Answer) -> bool:
    """Keep the answer with what it was made from, announce it and tell the requester; False (nothing stored)
    when the summary is no longer running, or when a person it was made from is being erased (it then fails)."""
    require_system(uow.principal, "writes summaries")
    if await gdpr.is_erased(uow, context.source_ids):
        await fail(uow, summary_id, "a person this summary was made from has been erased")
        return False
    content: dict[str, Any] = {
        "summary": answer.summary,
        "status_line": answer.status_line,
        "risks": [{"text": r.text, "record_ids": [str(i) for i in r.record_ids]} for r in answer.risks],
        "next_steps": [{"text": n.text, "record_ids": [str(i) for i in n.record_ids]} for n in answer.next_steps],
    }
    row = await uow.one(
        """
        update public.ai_summaries
        set status = 'done', model = %s, content = %s, input_tokens = %s, output_tokens = %s, source_ids = %s,
            snapshot_hash = %s, snapshot_at = %s, completed_at = now(), error = null
        where id = %s and status = 'running'
        returning requested_by, kind, completed_at
        """,
        [answer.model, Jsonb(content), answer.input_tokens, answer.output_tokens, context.source_ids,
         context.snapshot_hash, context.snapshot_at, summary_id],
    )
    if row is None:
        return False
    uow.emit("crm/ai.summary.completed", summary_id=summary_id, requested_by=row["requested_by"])
    kind = NotificationKind.DIGEST_READY if row["kind"] == "digest" else NotificationKind.SUMMARY_READY
    await notifications.notify(uow, row["requested_by"], kind, "ai_summary", summary_id, row["completed_at"])
    return True


@requires(None)
async def fail(uow: UnitOfWork, summary_id: UUID, error: str) -> bool:
    """End an unfinished summary `failed` with a reason the requester can read."""
    require_system(uow.principal, "writes summaries")
    return bool(await uow.execute(
        "update public.ai_summaries set status = 'failed', error = left(%s, 1000), completed_at = now()"
        " where id = %s and status in ('queued', 'running')",
        [error, summary_id],
    ))


# Weekly digests -------------------------------------------------------------------------------------------------


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@requires(None)
async def request_digests(uow: UnitOfWork, week: str, user_ids: list[UUID] | None = None) -> int:
    """Ask for one digest per active user who may use AI (or only `user_ids`), as events with the id
    `digest:<user>:<week>`: a second request for the same user and week (a rerun, another runner) is dropped.
    Returns how many events were new."""
    require_system(uow.principal, "writes summaries")
    roles = [role.value for role, granted in ROLE_PERMISSIONS.items() if Perm.AI_USE in granted]
    rows = await uow.all(
        "select p.id from public.user_profiles p"
        " where private.account_is_active(p.id) and (%s::uuid[] is null or p.id = any(%s::uuid[]))"
        " and exists (select 1 from public.user_roles r where r.user_id = p.id and r.role = any(%s))"
        " order by p.id",
        [user_ids, user_ids, roles],
    )
    for row in rows:
        uow.emit("crm/ai.digest.requested", event_id=f"digest:{row['id']}:{week}", user_id=row["id"], week=week)
    return await uow.flush_events()


@requires(None)
async def start_digest(uow: UnitOfWork, user_id: UUID, week: str) -> Work | None:
    """The user's digest of the week, created on first call and marked running; None when it is finished, or
    when the user owns no open deal to report on. Its subject is the pipeline holding most of their open deals."""
    require_system(uow.principal, "writes summaries")
    pipeline = await uow.one(
        "select d.pipeline_id from public.deals d where d.owner_id = %s and d.status = 'open'"
        " group by d.pipeline_id order by count(*) desc, d.pipeline_id limit 1",
        [user_id],
    )
    if pipeline is None:
        return None
    await uow.execute(
        "insert into public.ai_summaries (requested_by, kind, subject_type, subject_id, period)"
        " values (%s, 'digest', 'pipeline', %s, %s) on conflict (requested_by, period) where kind = 'digest'"
        " do nothing",
        [user_id, pipeline["pipeline_id"], week],
    )
    row = await uow.one(
        "update public.ai_summaries set status = 'running', started_at = now()"
        " where requested_by = %s and kind = 'digest' and period = %s and status in ('queued', 'running')"
        " returning id, requested_by, kind, subject_type, subject_id",
        [user_id, week],
    )
    if row is None:
        return None
    return Work(row["id"], row["requested_by"], row["kind"], SummarySubject(row["subject_type"]), row["subject_id"])


@requires(None)
async def fail_digest(uow: UnitOfWork, user_id: UUID, week: str, error: str) -> bool:
    """End the user's unfinished digest of the week `failed`."""
    require_system(uow.principal, "writes summaries")
    return bool(await uow.execute(
        "update public.ai_summaries set status = 'failed', error = left(%s, 1000), completed_at = now()"
        " where requested_by = %s and kind = 'digest' and period = %s and status in ('queued', 'running')",
        [error, user_id, week],
    ))

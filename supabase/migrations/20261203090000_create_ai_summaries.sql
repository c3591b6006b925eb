-- AI summaries: a request for a summary of a deal, person, organization or the requester's pipeline (or a weekly
-- digest of it), queued by a request and produced by a workflow step, with what it was made from.
--
-- A summary is the requester's own: only they read it (RLS), and it was built from what THEY could see when it
-- was made. `source_ids` lists every record the model was given (citations must be among them; an erasure
-- deletes every summary that used the erased person). `snapshot_at` is the time the data describes: the subject
-- changing after it makes the summary stale. Only the system (the workflow) writes results.

create table public.ai_summaries (
  id uuid primary key default gen_random_uuid(),
  requested_by uuid not null references public.user_profiles (id) on delete cascade,
  kind text not null default 'summary' check (kind in ('summary', 'digest')),
  subject_type text not null check (subject_type in ('deal', 'person', 'organization', 'pipeline')),
  subject_id uuid not null,
  period text check (period ~ '^[0-9]{4}-W[0-9]{2}$'), -- a digest's ISO week
  status text not null default 'queued' check (status in ('queued', 'running', 'done', 'failed')),
  model text check (length(model) between 1 and 100),
  content jsonb, -- {summary, status_line, risks: [{text, record_ids}], next_steps: [...]}
  input_tokens integer check (input_tokens >= 0),
  output_tokens integer check (output_tokens >= 0),
  source_ids uuid[] not null default '{}',
  snapshot_hash text check (snapshot_hash ~ '^[0-9a-f]{64}$'),
  snapshot_at timestamptz,
  error text check (length(error) <= 1000),
  created_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  constraint ai_summaries_done check ((status = 'done') = (content is not null and completed_at is not null)),
  constraint ai_summaries_digest_period check ((kind = 'digest') = (period is not null))
);

-- One queued-or-running summary per requester and subject (a repeated request returns it), one digest per user
-- and week.
create unique index ai_summaries_pending_idx on public.ai_summaries (requested_by, kind, subject_type, subject_id)
  where status in ('queued', 'running');
create unique index ai_summaries_digest_idx on public.ai_summaries (requested_by, period) where kind = 'digest';
create index ai_summaries_subject_idx on public.ai_summaries (subject_type, subject_id, requested_by, created_at desc, id desc);
create index ai_summaries_sources_idx on public.ai_summaries using gin (source_ids);

alter table public.ai_summaries enable row level security;

create policy ai_summaries_select on public.ai_summaries for select to authenticated
  using (requested_by = (select auth.uid()));
-- A request is queued by its requester, for themself, with nothing filled in but the subject.
create policy ai_summaries_insert on public.ai_summaries for insert to authenticated
  with check (requested_by = (select auth.uid()) and status = 'queued' and (select private.has_permission('ai:use')));

revoke all on public.ai_summaries from anon, authenticated;
grant select on public.ai_summaries to authenticated;
grant insert (requested_by, kind, subject_type, subject_id, period) on public.ai_summaries to authenticated;
grant all on public.ai_summaries to service_role;

-- Bookkeeping: the events and audit operations of summaries.
insert into private.event_permissions (name, permission) values
  ('crm/ai.summary.requested', 'ai:use'),
  ('crm/ai.summary.completed', 'ai:use'),
  ('crm/ai.digest.requested', 'ai:use');
insert into private.audit_operation_permissions (operation, entity_type, permission) values
  ('summary.request', 'ai_summary', 'ai:use');

-- Notifications for finished summaries, digests and erasures.
alter table public.notifications drop constraint notifications_kind_known,
  add constraint notifications_kind_known
    check (kind in ('activity_reminder', 'summary_ready', 'digest_ready', 'erasure_done')) not valid;

-- Notifications: a user's inbox of things that happened for them (first kind: an activity's reminder is due).
--
-- A notification stores no text and no personal data, only what happened to which record and when: what it
-- shows (an activity's subject, its due date) is read when the inbox is read, from the record itself and under
-- the reader's RLS, so an erased or hidden record shows nothing through it.
--
-- Only the system writes notifications (service_role). A signed-in user reads their own and may set `read_at`
-- on their own, nothing else: no insert, no delete, no other column.
--
-- Adding a kind is one statement in a later migration (NOT VALID: existing rows need no re-check):
--   alter table public.notifications drop constraint notifications_kind_known,
--     add constraint notifications_kind_known check (kind in ('activity_reminder', 'summary_ready')) not valid;

create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.user_profiles (id) on delete cascade,
  kind text not null constraint notifications_kind_known check (kind in ('activity_reminder')),
  entity_type text not null check (entity_type ~ '^[a-z_]+$'),
  entity_id uuid not null,
  occasion timestamptz not null,
  created_at timestamptz not null default now(),
  read_at timestamptz,
  -- exactly one notification per record and occasion (e.g. an activity and its reminder time), however
  -- often or concurrently the producer runs
  constraint notifications_once unique (kind, entity_id, occasion)
);

-- The inbox: a user's notifications, unread first, newest first, in keyset pages (the list reads this index
-- backwards). Unread counts use its first two columns.
create index notifications_inbox_idx on public.notifications (user_id, (read_at is null), created_at, id);

-- Reminders fall due by time: the producer scans open activities by reminder time.
create index activities_reminder_idx on public.activities (reminder_at) where not done;

alter table public.notifications enable row level security;

create policy notifications_select on public.notifications for select to authenticated
  using (user_id = (select auth.uid()));
create policy notifications_update on public.notifications for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

revoke all on public.notifications from anon, authenticated;
grant select on public.notifications to authenticated;
grant update (read_at) on public.notifications to authenticated;
grant all on public.notifications to service_role;

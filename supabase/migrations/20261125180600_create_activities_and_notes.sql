-- Activities and notes hang off deals, leads, persons and organizations. One attached to a record is
-- visible exactly when that record is (deal, then lead, then person, then organization decides);
-- a detached one is visible under the owner rule of its owner or author.

create function private.can_see_attached(
  owner_id uuid, deal_id uuid, lead_id uuid, person_id uuid, organization_id uuid
) returns boolean
language sql stable
as $$
  select case
    when deal_id is not null then exists (select 1 from public.deals d where d.id = deal_id)
    when lead_id is not null then exists (select 1 from public.leads l where l.id = lead_id)
    when person_id is not null then exists (select 1 from public.persons p where p.id = person_id)
    when organization_id is not null then exists (select 1 from public.organizations o where o.id = organization_id)
    else private.can_see(owner_id, 'owner')
  end
$$;
grant execute on function private.can_see_attached(uuid, uuid, uuid, uuid, uuid) to authenticated, service_role;

create table public.activities (
  id uuid primary key default gen_random_uuid(),
  type text not null check (type in ('task', 'call', 'meeting', 'email', 'deadline')),
  subject text not null check (length(btrim(subject)) between 1 and 300),
  due_date date,
  due_time time,
  duration_minutes integer check (duration_minutes between 0 and 10080),
  done boolean not null default false,
  done_at timestamptz,
  reminder_at timestamptz,
  note text,
  deal_id uuid references public.deals (id) on delete set null,
  lead_id uuid references public.leads (id) on delete set null,
  person_id uuid references public.persons (id) on delete set null,
  organization_id uuid references public.organizations (id) on delete set null,
  owner_id uuid not null default auth.uid() references public.user_profiles (id),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint activities_done_consistent check (done = (done_at is not null)),
  constraint activities_time_needs_date check (due_time is null or due_date is not null)
);
create index activities_list_idx on public.activities (created_at desc, id desc);
create index activities_owner_idx on public.activities (owner_id);
create index activities_due_idx on public.activities (due_date, due_time) where not done;
create index activities_updated_idx on public.activities (updated_at);
create index activities_deal_idx on public.activities (deal_id);
create index activities_lead_idx on public.activities (lead_id);
create index activities_person_idx on public.activities (person_id);
create index activities_organization_idx on public.activities (organization_id);

create table public.notes (
  id uuid primary key default gen_random_uuid(),
  body text not null check (length(btrim(body)) between 1 and 100000),
  author_id uuid not null default auth.uid() references public.user_profiles (id),
  deal_id uuid references public.deals (id) on delete set null,
  lead_id uuid references public.leads (id) on delete set null,
  person_id uuid references public.persons (id) on delete set null,
  organization_id uuid references public.organizations (id) on delete set null,
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index notes_list_idx on public.notes (created_at desc, id desc);
create index notes_author_idx on public.notes (author_id);
create index notes_updated_idx on public.notes (updated_at);
create index notes_deal_idx on public.notes (deal_id);
create index notes_lead_idx on public.notes (lead_id);
create index notes_person_idx on public.notes (person_id);
create index notes_organization_idx on public.notes (organization_id);

create trigger activities_touch before update on public.activities
  for each row execute function private.touch_version();
create trigger notes_touch before update on public.notes
  for each row execute function private.touch_version();

alter table public.activities enable row level security;
alter table public.notes enable row level security;

create policy activities_select on public.activities for select to authenticated
  using ((select private.has_permission('activities:read'))
         and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id));
create policy activities_insert on public.activities for insert to authenticated
  with check ((select private.has_permission('activities:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id));
create policy activities_update on public.activities for update to authenticated
  using ((select private.has_permission('activities:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
         and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id))
  with check ((owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id));
create policy activities_delete on public.activities for delete to authenticated
  using ((select private.has_permission('activities:delete')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
         and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id));

create policy notes_select on public.notes for select to authenticated
  using ((select private.has_permission('notes:read'))
         and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id));
create policy notes_insert on public.notes for insert to authenticated
  with check ((select private.has_permission('notes:write')) and author_id = (select auth.uid())
              and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id));
create policy notes_update on public.notes for update to authenticated
  using ((select private.has_permission('notes:write')) and (author_id = (select auth.uid())
              or (select private.is_admin())
              or author_id in (select unnest(private.managed_user_ids())))
         and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id))
  with check ((author_id = (select auth.uid())
              or (select private.is_admin())
              or author_id in (select unnest(private.managed_user_ids())))
              and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id));
create policy notes_delete on public.notes for delete to authenticated
  using ((select private.has_permission('notes:delete')) and (author_id = (select auth.uid())
              or (select private.is_admin())
              or author_id in (select unnest(private.managed_user_ids())))
         and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id));

revoke all on public.activities, public.notes from anon, authenticated;
grant select, insert, update, delete on public.activities, public.notes to authenticated;
grant all on public.activities, public.notes to service_role;

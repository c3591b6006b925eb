-- The leads inbox. A lead may point at a person/organization or carry raw contact details that
-- conversion turns into (or matches with) a person and an organization.

create table public.leads (
  id uuid primary key default gen_random_uuid(),
  title text not null check (length(btrim(title)) between 1 and 300),
  source text,
  value numeric(16, 2) check (value >= 0),
  currency char(3) not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  person_id uuid references public.persons (id) on delete set null,
  organization_id uuid references public.organizations (id) on delete set null,
  contact_name text,
  contact_email text,
  organization_name text,
  owner_id uuid not null default auth.uid() references public.user_profiles (id),
  labels text[] not null default '{}',
  status text not null default 'open' check (status in ('open', 'archived', 'converted')),
  converted_deal_id uuid references public.deals (id) on delete set null,
  converted_at timestamptz,
  visibility text not null default private.default_visibility()
    check (visibility in ('owner', 'team', 'company')),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  search_text text generated always as (lower(title || ' ' || coalesce(contact_name, '') || ' '
    || coalesce(contact_email, '') || ' ' || coalesce(organization_name, ''))) stored,
  constraint leads_converted_consistent check ((status = 'converted') = (converted_at is not null))
);
create index leads_list_idx on public.leads (created_at desc, id desc);
create index leads_owner_idx on public.leads (owner_id);
create index leads_status_idx on public.leads (status);
create index leads_updated_idx on public.leads (updated_at);
create index leads_labels_idx on public.leads using gin (labels);
create index leads_search_idx on public.leads using gin (search_text extensions.gin_trgm_ops);

create trigger leads_touch before update on public.leads
  for each row execute function private.touch_version();

alter table public.leads enable row level security;

create policy leads_select on public.leads for select to authenticated
  using ((select private.has_permission('leads:read')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids())))));
create policy leads_insert on public.leads for insert to authenticated
  with check ((select private.has_permission('leads:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));
create policy leads_update on public.leads for update to authenticated
  using ((select private.has_permission('leads:write')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))))
  with check ((owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));
create policy leads_delete on public.leads for delete to authenticated
  using ((select private.has_permission('leads:delete')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));

revoke all on public.leads from anon, authenticated;
grant select, insert, update, delete on public.leads to authenticated;
grant all on public.leads to service_role;

-- Organizations and persons. Both carry an owner and a visibility, read and changed under the record rules.

create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(btrim(name)) between 1 and 300),
  name_key text not null,
  domain text check (domain is null or domain ~ '^[a-z0-9.-]+\.[a-z]{2,}$'),
  address text,
  owner_id uuid not null default auth.uid() references public.user_profiles (id),
  visibility text not null default private.default_visibility()
    check (visibility in ('owner', 'team', 'company')),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  search_text text generated always as (lower(name || ' ' || coalesce(domain, ''))) stored
);
create index organizations_list_idx on public.organizations (created_at desc, id desc);
create index organizations_owner_idx on public.organizations (owner_id);
create index organizations_updated_idx on public.organizations (updated_at);
create index organizations_name_key_idx on public.organizations (name_key);
create index organizations_domain_idx on public.organizations (domain) where domain is not null;
create index organizations_search_idx on public.organizations using gin (search_text extensions.gin_trgm_ops);

create table public.persons (
  id uuid primary key default gen_random_uuid(),
  first_name text not null default '',
  last_name text not null default '',
  name text generated always as (btrim(first_name || ' ' || last_name)) stored
    check (length(name) between 1 and 300),
  emails text[] not null default '{}',
  phones text[] not null default '{}',
  job_title text,
  organization_id uuid references public.organizations (id) on delete set null,
  owner_id uuid not null default auth.uid() references public.user_profiles (id),
  visibility text not null default private.default_visibility()
    check (visibility in ('owner', 'team', 'company')),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  search_text text generated always as (
    lower(first_name || ' ' || last_name || ' ' || private.immutable_join(emails))) stored
);
create index persons_list_idx on public.persons (created_at desc, id desc);
create index persons_owner_idx on public.persons (owner_id);
create index persons_updated_idx on public.persons (updated_at);
create index persons_organization_idx on public.persons (organization_id);
create index persons_emails_idx on public.persons using gin (emails);
create index persons_search_idx on public.persons using gin (search_text extensions.gin_trgm_ops);

create trigger organizations_touch before update on public.organizations
  for each row execute function private.touch_version();
create trigger persons_touch before update on public.persons
  for each row execute function private.touch_version();

alter table public.organizations enable row level security;
alter table public.persons enable row level security;

create policy organizations_select on public.organizations for select to authenticated
  using ((select private.has_permission('contacts:read')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids())))));
create policy organizations_insert on public.organizations for insert to authenticated
  with check ((select private.has_permission('contacts:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));
create policy organizations_update on public.organizations for update to authenticated
  using ((select private.has_permission('contacts:write')) and (visibility = 'company'
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
create policy organizations_delete on public.organizations for delete to authenticated
  using ((select private.has_permission('contacts:delete')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));

create policy persons_select on public.persons for select to authenticated
  using ((select private.has_permission('contacts:read')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids())))));
create policy persons_insert on public.persons for insert to authenticated
  with check ((select private.has_permission('contacts:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));
create policy persons_update on public.persons for update to authenticated
  using ((select private.has_permission('contacts:write')) and (visibility = 'company'
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
create policy persons_delete on public.persons for delete to authenticated
  using ((select private.has_permission('contacts:delete')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));

revoke all on public.organizations, public.persons from anon, authenticated;
grant select, insert, update, delete on public.organizations, public.persons to authenticated;
grant all on public.organizations, public.persons to service_role;

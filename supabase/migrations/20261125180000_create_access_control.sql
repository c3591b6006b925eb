-- Access control: permission vocabulary, roles, users, teams, settings, and the helpers every RLS policy uses.
-- The vocabulary mirrors services/kernel/permissions.py (a test keeps the two equal).

create schema if not exists extensions;
create extension if not exists pg_trgm with schema extensions;

create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

-- Permission vocabulary -------------------------------------------------------------------------------

create table public.permissions (
  name text primary key,
  description text not null
);

create table public.role_permissions (
  role text not null check (role in ('admin', 'manager', 'member', 'viewer')),
  permission text not null references public.permissions (name) on delete cascade,
  primary key (role, permission)
);

create table public.scope_permissions (
  scope text not null check (scope in ('crm.read', 'crm.write', 'crm.delete', 'crm.ai')),
  permission text not null references public.permissions (name) on delete cascade,
  primary key (scope, permission)
);

insert into public.permissions (name, description) values
  ('deals:read', 'Read deals and their stage history'),
  ('deals:write', 'Create and change deals'),
  ('deals:delete', 'Delete deals'),
  ('contacts:read', 'Read persons and organizations'),
  ('contacts:write', 'Create and change persons and organizations'),
  ('contacts:delete', 'Delete persons and organizations'),
  ('leads:read', 'Read leads'),
  ('leads:write', 'Create and change leads'),
  ('leads:delete', 'Delete leads'),
  ('leads:convert', 'Convert leads into deals'),
  ('activities:read', 'Read activities'),
  ('activities:write', 'Create, change and complete activities'),
  ('activities:delete', 'Delete activities'),
  ('notes:read', 'Read notes'),
  ('notes:write', 'Create and change notes'),
  ('notes:delete', 'Delete notes'),
  ('pipelines:read', 'Read pipelines and stages'),
  ('pipelines:manage', 'Create, change, reorder and delete pipelines and stages'),
  ('users:read', 'Read user profiles, roles and teams'),
  ('users:manage', 'Manage users, roles, teams and CRM settings'),
  ('ai:use', 'Request AI summaries and digests'),
  ('gdpr:erase', 'Erase a person''s personal data'),
  ('audit:read', 'Read the audit log');

insert into public.role_permissions (role, permission)
select 'admin', name from public.permissions;

insert into public.role_permissions (role, permission)
select 'manager', name from public.permissions
where name not in ('pipelines:manage', 'users:manage', 'gdpr:erase');

insert into public.role_permissions (role, permission)
select 'member', name from public.permissions
where name not in ('pipelines:manage', 'users:manage', 'gdpr:erase', 'audit:read', 'contacts:delete');

insert into public.role_permissions (role, permission)
select 'viewer', name from public.permissions
where name in ('deals:read', 'contacts:read', 'leads:read', 'activities:read', 'notes:read',
               'pipelines:read', 'users:read');

insert into public.scope_permissions (scope, permission)
select 'crm.read', name from public.permissions
where name like '%:read';

insert into public.scope_permissions (scope, permission)
select 'crm.write', name from public.permissions
where name like '%:read' or name like '%:write' or name in ('leads:convert', 'pipelines:manage');

insert into public.scope_permissions (scope, permission)
select 'crm.delete', name from public.permissions
where name like '%:read' or name like '%:write' or name like '%:delete'
   or name in ('leads:convert', 'pipelines:manage', 'gdpr:erase');

insert into public.scope_permissions (scope, permission) values ('crm.ai', 'ai:use');

-- Users, roles, teams -----------------------------------------------------------------------------------

create table public.user_profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  email text not null,
  display_name text not null,
  avatar_url text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index user_profiles_email_idx on public.user_profiles (lower(email));

create table public.user_roles (
  user_id uuid not null references public.user_profiles (id) on delete cascade,
  role text not null check (role in ('admin', 'manager', 'member', 'viewer')),
  created_at timestamptz not null default now(),
  primary key (user_id, role)
);

create table public.teams (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(btrim(name)) between 1 and 200),
  created_at timestamptz not null default now()
);
create unique index teams_name_key on public.teams (lower(name));

create table public.team_members (
  team_id uuid not null references public.teams (id) on delete cascade,
  user_id uuid not null references public.user_profiles (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (team_id, user_id)
);
create index team_members_user_idx on public.team_members (user_id);

create table public.crm_settings (
  key text primary key check (key in ('default_visibility')),
  value jsonb not null,
  updated_at timestamptz not null default now()
);
insert into public.crm_settings (key, value) values ('default_visibility', '"company"');

-- Profiles follow auth.users (Supabase Auth owns identities; the CRM keeps a readable copy).
create function private.sync_user_profile() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into public.user_profiles (id, email, display_name, avatar_url)
  values (
    new.id,
    coalesce(new.email, ''),
    coalesce(nullif(btrim(new.raw_user_meta_data ->> 'display_name'), ''),
             nullif(btrim(new.raw_user_meta_data ->> 'full_name'), ''),
             split_part(coalesce(new.email, ''), '@', 1)),
    new.raw_user_meta_data ->> 'avatar_url'
  )
  on conflict (id) do update
    set email = excluded.email,
        display_name = excluded.display_name,
        avatar_url = excluded.avatar_url,
        updated_at = now();
  return new;
end
$$;

create trigger sync_user_profile
after insert or update of email, raw_user_meta_data on auth.users
for each row execute function private.sync_user_profile();

-- Helpers for policies. Definer helpers read auth.uid() themselves and never take a caller id.

create function private.has_permission(permission text) returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (
      select 1
      from public.user_roles ur
      join public.role_permissions rp on rp.role = ur.role
      where ur.user_id = auth.uid() and rp.permission = has_permission.permission
    )
    and (
      nullif(btrim(auth.jwt() ->> 'scope'), '') is null
      or exists (
        select 1 from public.scope_permissions sp
        where sp.permission = has_permission.permission
          and sp.scope = any (string_to_array(btrim(auth.jwt() ->> 'scope'), ' '))
      )
    )
$$;

create function private.is_admin() returns boolean
language sql stable security definer set search_path = ''
as $$
  select exists (select 1 from public.user_roles where user_id = auth.uid() and role = 'admin')
$$;

-- Everyone who shares a team with the caller (the caller included).
create function private.teammate_ids() returns uuid[]
language sql stable security definer set search_path = ''
as $$
  select coalesce(array_agg(distinct other.user_id), '{}')
  from public.team_members mine
  join public.team_members other on other.team_id = mine.team_id
  where mine.user_id = auth.uid()
$$;

-- Users whose records the caller manages: members of the caller's teams, when the caller is a manager.
create function private.managed_user_ids() returns uuid[]
language sql stable security definer set search_path = ''
as $$
  select case
    when exists (select 1 from public.user_roles where user_id = auth.uid() and role = 'manager')
      then private.teammate_ids()
    else '{}'::uuid[]
  end
$$;

create function private.default_visibility() returns text
language sql stable security definer set search_path = ''
as $$
  select coalesce((select value #>> '{}' from public.crm_settings where key = 'default_visibility'), 'company')
$$;

-- The record rules for one record at a time (used by functions that check a single row). Table policies
-- spell the same expressions out inline: Postgres never inlines a function containing sub-selects, and inline
-- the (select ...) helpers run once per statement instead of once per row.
create function private.can_see(owner_id uuid, visibility text) returns boolean
language sql stable
as $$
  select visibility = 'company'
    or owner_id = (select auth.uid())
    or (select private.is_admin())
    or owner_id in (select unnest(private.managed_user_ids()))
    or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids())))
$$;

create function private.can_change(owner_id uuid) returns boolean
language sql stable
as $$
  select owner_id = (select auth.uid())
    or (select private.is_admin())
    or owner_id in (select unnest(private.managed_user_ids()))
$$;

create function private.immutable_join(parts text[]) returns text
language sql immutable parallel safe
as $$ select array_to_string(parts, ' ') $$;

grant execute on all functions in schema private to authenticated, service_role;

-- Row level security ----------------------------------------------------------------------------------

alter table public.permissions enable row level security;
alter table public.role_permissions enable row level security;
alter table public.scope_permissions enable row level security;
alter table public.user_profiles enable row level security;
alter table public.user_roles enable row level security;
alter table public.teams enable row level security;
alter table public.team_members enable row level security;
alter table public.crm_settings enable row level security;

create policy permissions_select on public.permissions for select to authenticated using (true);
create policy role_permissions_select on public.role_permissions for select to authenticated using (true);
create policy scope_permissions_select on public.scope_permissions for select to authenticated using (true);

create policy user_profiles_select on public.user_profiles for select to authenticated
  using (id = (select auth.uid()) or (select private.has_permission('users:read')));
create policy user_profiles_update on public.user_profiles for update to authenticated
  using (id = (select auth.uid()) or (select private.has_permission('users:manage')))
  with check (id = (select auth.uid()) or (select private.has_permission('users:manage')));

create policy user_roles_select on public.user_roles for select to authenticated
  using (user_id = (select auth.uid()) or (select private.has_permission('users:read')));
create policy user_roles_insert on public.user_roles for insert to authenticated
  with check ((select private.has_permission('users:manage')));
create policy user_roles_delete on public.user_roles for delete to authenticated
  using ((select private.has_permission('users:manage')));

create policy teams_select on public.teams for select to authenticated
  using ((select private.has_permission('users:read')) or id in (
    select team_id from public.team_members where user_id = (select auth.uid())));
create policy teams_insert on public.teams for insert to authenticated
  with check ((select private.has_permission('users:manage')));
create policy teams_update on public.teams for update to authenticated
  using ((select private.has_permission('users:manage')))
  with check ((select private.has_permission('users:manage')));
create policy teams_delete on public.teams for delete to authenticated
  using ((select private.has_permission('users:manage')));

create policy team_members_select on public.team_members for select to authenticated
  using (user_id = (select auth.uid()) or (select private.has_permission('users:read')));
create policy team_members_insert on public.team_members for insert to authenticated
  with check ((select private.has_permission('users:manage')));
create policy team_members_delete on public.team_members for delete to authenticated
  using ((select private.has_permission('users:manage')));

create policy crm_settings_select on public.crm_settings for select to authenticated using (true);
create policy crm_settings_update on public.crm_settings for update to authenticated
  using ((select private.has_permission('users:manage')))
  with check ((select private.has_permission('users:manage')));

revoke all on public.permissions, public.role_permissions, public.scope_permissions, public.user_profiles,
  public.user_roles, public.teams, public.team_members, public.crm_settings from anon, authenticated;
grant select on public.permissions, public.role_permissions, public.scope_permissions to authenticated;
grant select on public.user_profiles to authenticated;
grant update (display_name, avatar_url, updated_at) on public.user_profiles to authenticated;
grant select, insert, delete on public.user_roles, public.team_members to authenticated;
grant select, insert, update, delete on public.teams to authenticated;
grant select, update on public.crm_settings to authenticated;
grant all on public.permissions, public.role_permissions, public.scope_permissions, public.user_profiles,
  public.user_roles, public.teams, public.team_members, public.crm_settings to service_role;

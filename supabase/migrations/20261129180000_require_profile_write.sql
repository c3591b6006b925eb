-- Changing your own profile is a write: a read-only agent token must not be able to do it.
-- `profile:write` goes to every role and to the write scopes; the update policy asks for it.

insert into public.permissions (name, description) values
  ('profile:write', 'Change your own display name and avatar');

insert into public.role_permissions (role, permission) values
  ('admin', 'profile:write'), ('manager', 'profile:write'), ('member', 'profile:write'), ('viewer', 'profile:write');

insert into public.scope_permissions (scope, permission) values
  ('crm.write', 'profile:write'), ('crm.delete', 'profile:write');

drop policy user_profiles_update on public.user_profiles;
create policy user_profiles_update on public.user_profiles for update to authenticated
  using (
    (id = (select auth.uid()) and (select private.has_permission('profile:write')))
    or (select private.has_permission('users:manage'))
  )
  with check (
    (id = (select auth.uid()) and (select private.has_permission('profile:write')))
    or (select private.has_permission('users:manage'))
  );

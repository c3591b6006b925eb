-- Workflows act as the user an event came from. Before a job acts, it checks that the account still exists and
-- may sign in (Supabase Auth bans and soft-deletes accounts in auth.users, which the app's roles cannot read).
-- PL/pgSQL, so that the body is bound when called: auth.users belongs to Supabase Auth, not to these migrations.

create function private.account_is_active(user_id uuid) returns boolean
language plpgsql stable security definer set search_path = ''
as $$
begin
  return exists (
    select 1
    from public.user_profiles p
    join auth.users u on u.id = p.id
    where p.id = account_is_active.user_id
      and u.deleted_at is null
      and (u.banned_until is null or u.banned_until <= now())
  );
end
$$;
revoke all on function private.account_is_active(uuid) from public;
grant execute on function private.account_is_active(uuid) to service_role;

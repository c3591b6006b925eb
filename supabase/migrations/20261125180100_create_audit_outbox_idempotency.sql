-- Audit log, event outbox and idempotency keys: the write path's bookkeeping, in the writer's transaction.

create table public.audit_log (
  id bigint generated always as identity primary key,
  actor_id uuid,
  channel text not null check (channel in ('graphql', 'mcp', 'workflow', 'cli')),
  operation text not null,
  entity_type text not null,
  entity_id uuid,
  diff jsonb not null default '{}',
  occurred_at timestamptz not null default now()
);
create index audit_log_entity_idx on public.audit_log (entity_type, entity_id, id desc);
create index audit_log_actor_idx on public.audit_log (actor_id, id desc);

-- The only way an authenticated session writes the audit log: the actor and the time come from the
-- database, never from the caller. There is no policy or grant for update or delete.
create function private.append_audit(
  channel text, operation text, entity_type text, entity_id uuid, diff jsonb
) returns void
language plpgsql security definer set search_path = ''
as $$
begin
  if auth.uid() is null and auth.role() is distinct from 'service_role' then
    raise exception 'audit rows need an authenticated actor' using errcode = '42501';
  end if;
  insert into public.audit_log (actor_id, channel, operation, entity_type, entity_id, diff)
  values (auth.uid(), append_audit.channel, append_audit.operation, append_audit.entity_type,
          append_audit.entity_id, coalesce(append_audit.diff, '{}'));
end
$$;
revoke all on function private.append_audit(text, text, text, uuid, jsonb) from public;
grant execute on function private.append_audit(text, text, text, uuid, jsonb) to authenticated, service_role;

create table public.outbox (
  id uuid primary key default gen_random_uuid(),
  name text not null check (name ~ '^crm/[a-z_]+(\.[a-z_]+)+$'),
  data jsonb not null,
  actor_id uuid,
  channel text not null,
  occurred_at timestamptz not null default now(),
  dispatched_at timestamptz,
  attempts integer not null default 0,
  last_error text
);
create index outbox_pending_idx on public.outbox (occurred_at) where dispatched_at is null;

create table public.idempotency_keys (
  user_id uuid not null default auth.uid(),
  key text not null check (length(key) between 1 and 200),
  operation text not null,
  entity_id uuid,
  created_at timestamptz not null default now(),
  primary key (user_id, key)
);

alter table public.audit_log enable row level security;
alter table public.outbox enable row level security;
alter table public.idempotency_keys enable row level security;

create policy audit_log_select on public.audit_log for select to authenticated
  using ((select private.has_permission('audit:read'))
         and ((select private.is_admin())
              or actor_id = (select auth.uid())
              or actor_id in (select unnest(private.managed_user_ids()))));

-- Events are written by the actor's own transaction; only the relay (service_role) reads them.
create policy outbox_insert on public.outbox for insert to authenticated
  with check (actor_id = (select auth.uid()));

create policy idempotency_keys_select on public.idempotency_keys for select to authenticated
  using (user_id = (select auth.uid()));
create policy idempotency_keys_insert on public.idempotency_keys for insert to authenticated
  with check (user_id = (select auth.uid()));
create policy idempotency_keys_update on public.idempotency_keys for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

revoke all on public.audit_log, public.outbox, public.idempotency_keys from anon, authenticated;
grant select on public.audit_log to authenticated;
grant insert on public.outbox to authenticated;
grant select, insert, update (entity_id) on public.idempotency_keys to authenticated;
grant all on public.audit_log, public.outbox, public.idempotency_keys to service_role;

-- Shared trigger: every versioned record bumps its version and updated_at on change.
create function private.touch_version() returns trigger
language plpgsql
as $$
begin
  new.version := old.version + 1;
  new.updated_at := now();
  return new;
end
$$;

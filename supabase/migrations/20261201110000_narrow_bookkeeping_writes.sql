-- The audit log and the outbox are written only through narrow functions. The database fixes the actor
-- (auth.uid()), the time (now()) and the channel (the transaction-local setting `pipecd.channel`, which the
-- unit of work sets next to `request.jwt.claims`); the caller names only what happened, within bounds, and only
-- events and operations its own permissions can produce. Events leave the database (the relay hands them to
-- the workflow engine, which keeps them), so their data is ids and enum-like tokens only.
--
-- A session that did not set `pipecd.channel` (e.g. the Data API, which cannot call functions in `private`
-- anyway) writes no bookkeeping at all: the functions refuse it. The system (`service_role`, no auth.uid())
-- may write every known event and operation, with a null actor.

-- Which permission produces each event and audit operation --------------------------------------------------

create table private.event_permissions (
  name text primary key check (name ~ '^crm/[a-z_]+(\.[a-z_]+)+$'),
  permission text not null references public.permissions (name)
);

insert into private.event_permissions (name, permission) values
  ('crm/activity.created', 'activities:write'),
  ('crm/activity.updated', 'activities:write'),
  ('crm/activity.completed', 'activities:write'),
  ('crm/activity.reopened', 'activities:write'),
  ('crm/activity.deleted', 'activities:delete'),
  ('crm/organization.created', 'contacts:write'),
  ('crm/organization.updated', 'contacts:write'),
  ('crm/organization.deleted', 'contacts:delete'),
  ('crm/person.created', 'contacts:write'),
  ('crm/person.updated', 'contacts:write'),
  ('crm/person.deleted', 'contacts:delete'),
  ('crm/deal.created', 'deals:write'),
  ('crm/deal.updated', 'deals:write'),
  ('crm/deal.owner_changed', 'deals:write'),
  ('crm/deal.stage_changed', 'deals:write'),
  ('crm/deal.won', 'deals:write'),
  ('crm/deal.lost', 'deals:write'),
  ('crm/deal.reopened', 'deals:write'),
  ('crm/deal.deleted', 'deals:delete'),
  ('crm/lead.created', 'leads:write'),
  ('crm/lead.updated', 'leads:write'),
  ('crm/lead.archived', 'leads:write'),
  ('crm/lead.unarchived', 'leads:write'),
  ('crm/lead.deleted', 'leads:delete'),
  ('crm/lead.converted', 'leads:convert'),
  ('crm/note.created', 'notes:write'),
  ('crm/note.updated', 'notes:write'),
  ('crm/note.deleted', 'notes:delete'),
  ('crm/pipeline.created', 'pipelines:manage'),
  ('crm/pipeline.updated', 'pipelines:manage'),
  ('crm/pipeline.deleted', 'pipelines:manage'),
  ('crm/pipeline.stages_reordered', 'pipelines:manage'),
  ('crm/stage.created', 'pipelines:manage'),
  ('crm/stage.updated', 'pipelines:manage'),
  ('crm/stage.deleted', 'pipelines:manage'),
  -- your own profile; someone else's also needs users:manage (checked in private.emit_events)
  ('crm/user.profile_updated', 'profile:write'),
  ('crm/user.role_granted', 'users:manage'),
  ('crm/user.role_revoked', 'users:manage'),
  ('crm/team.created', 'users:manage'),
  ('crm/team.member_added', 'users:manage'),
  ('crm/team.member_removed', 'users:manage');

-- Tool calls (`tool.<name>`, entity type `mcp_tool_call`) are not listed: every signed-in caller records their
-- own (see private.append_audit).
create table private.audit_operation_permissions (
  operation text primary key check (operation ~ '^[a-z_]+\.[a-z_]+$'),
  entity_type text not null check (entity_type ~ '^[a-z_]+$'),
  permission text not null references public.permissions (name)
);

insert into private.audit_operation_permissions (operation, entity_type, permission) values
  ('activity.create', 'activity', 'activities:write'),
  ('activity.update', 'activity', 'activities:write'),
  ('activity.complete', 'activity', 'activities:write'),
  ('activity.reopen', 'activity', 'activities:write'),
  ('activity.delete', 'activity', 'activities:delete'),
  ('organization.create', 'organization', 'contacts:write'),
  ('organization.update', 'organization', 'contacts:write'),
  ('organization.delete', 'organization', 'contacts:delete'),
  ('person.create', 'person', 'contacts:write'),
  ('person.update', 'person', 'contacts:write'),
  ('person.delete', 'person', 'contacts:delete'),
  ('deal.create', 'deal', 'deals:write'),
  ('deal.update', 'deal', 'deals:write'),
  ('deal.move_stage', 'deal', 'deals:write'),
  ('deal.mark_won', 'deal', 'deals:write'),
  ('deal.mark_lost', 'deal', 'deals:write'),
  ('deal.reopen', 'deal', 'deals:write'),
  ('deal.delete', 'deal', 'deals:delete'),
  ('lead.create', 'lead', 'leads:write'),
  ('lead.update', 'lead', 'leads:write'),
  ('lead.archive', 'lead', 'leads:write'),
  ('lead.unarchive', 'lead', 'leads:write'),
  ('lead.delete', 'lead', 'leads:delete'),
  ('lead.convert', 'lead', 'leads:convert'),
  ('note.create', 'note', 'notes:write'),
  ('note.update', 'note', 'notes:write'),
  ('note.delete', 'note', 'notes:delete'),
  ('pipeline.create', 'pipeline', 'pipelines:manage'),
  ('pipeline.update', 'pipeline', 'pipelines:manage'),
  ('pipeline.delete', 'pipeline', 'pipelines:manage'),
  ('pipeline.reorder_stages', 'pipeline', 'pipelines:manage'),
  ('stage.create', 'stage', 'pipelines:manage'),
  ('stage.update', 'stage', 'pipelines:manage'),
  ('stage.delete', 'stage', 'pipelines:manage'),
  -- your own profile; someone else's also needs users:manage (checked in private.append_audit)
  ('user.update_profile', 'user', 'profile:write'),
  ('user.grant_role', 'user', 'users:manage'),
  ('user.revoke_role', 'user', 'users:manage'),
  ('team.create', 'team', 'users:manage'),
  ('team.add_member', 'team', 'users:manage'),
  ('team.remove_member', 'team', 'users:manage');

alter table private.event_permissions enable row level security;
alter table private.audit_operation_permissions enable row level security;
revoke all on private.event_permissions, private.audit_operation_permissions from public, anon, authenticated;
grant select on private.event_permissions, private.audit_operation_permissions to service_role;

-- Who, on which channel -----------------------------------------------------------------------------------

-- The channel of the current transaction, as the unit of work set it; refused when unset or unknown.
create function private.bookkeeping_channel() returns text
language plpgsql stable set search_path = ''
as $$
declare
  channel text := nullif(current_setting('pipecd.channel', true), '');
begin
  if channel is null then
    raise exception 'bookkeeping needs the channel of the transaction (pipecd.channel is not set)'
      using errcode = '42501';
  end if;
  if channel not in ('graphql', 'mcp', 'workflow', 'cli') then
    raise exception 'unknown channel % (pipecd.channel must be graphql, mcp, workflow or cli)', channel
      using errcode = '22023';
  end if;
  return channel;
end
$$;

-- Whether the transaction runs as the system: the session really switched to `service_role` (the role setting,
-- which a definer function still sees as the caller's; a claim alone does not make a session the system).
create function private.bookkeeping_by_system() returns boolean
language sql stable set search_path = ''
as $$
  select current_setting('role', true) = 'service_role'
$$;

-- The actor of the current transaction: the signed-in user, or null for the system; anyone else is refused.
create function private.bookkeeping_actor() returns uuid
language plpgsql stable set search_path = ''
as $$
begin
  if private.bookkeeping_by_system() then
    return null;
  end if;
  if auth.uid() is null then
    raise exception 'bookkeeping needs a signed-in actor' using errcode = '42501';
  end if;
  return auth.uid();
end
$$;

-- The audit log ---------------------------------------------------------------------------------------------

-- The bounds of an audit row: refused with a clear error before anything else is looked at.
create function private.check_audit_row(operation text, entity_type text, diff jsonb) returns void
language plpgsql immutable set search_path = ''
as $$
declare
  diff_length integer := length(coalesce(check_audit_row.diff, '{}')::text);
begin
  if check_audit_row.operation is null or length(check_audit_row.operation) > 300
     or check_audit_row.operation !~ '^[a-z_]+\.[^[:cntrl:]]+$' then
    raise exception 'audit operation must look like entity.verb (at most 300 characters)' using errcode = '22023';
  end if;
  if check_audit_row.entity_type is null or check_audit_row.entity_type !~ '^[a-z_]{1,60}$' then
    raise exception 'audit entity type must be 1 to 60 lowercase letters or underscores' using errcode = '22023';
  end if;
  if jsonb_typeof(coalesce(check_audit_row.diff, '{}')) <> 'object' then
    raise exception 'audit diff must be a JSON object' using errcode = '22023';
  end if;
  if diff_length > 2000000 then
    raise exception 'audit diff is too large (% characters, at most 2000000)', diff_length using errcode = '22023';
  end if;
end
$$;

-- Appends one audit row as the transaction's actor, on its channel; authorization is the caller's job (not
-- granted to anyone: only the definer functions below call it).
create function private.insert_audit(operation text, entity_type text, entity_id uuid, diff jsonb)
returns void
language plpgsql security definer set search_path = ''
as $$
begin
  perform private.check_audit_row(insert_audit.operation, insert_audit.entity_type, insert_audit.diff);
  insert into public.audit_log (actor_id, channel, operation, entity_type, entity_id, diff)
  values (private.bookkeeping_actor(), private.bookkeeping_channel(), insert_audit.operation,
          insert_audit.entity_type, insert_audit.entity_id, coalesce(insert_audit.diff, '{}'));
end
$$;
revoke all on function private.insert_audit(text, text, uuid, jsonb) from public;
revoke all on function private.check_audit_row(text, text, jsonb) from public;

drop function private.append_audit(text, text, text, uuid, jsonb);

-- The one way a session appends an audit row: an operation its permissions produce, on its entity type; or a
-- record of its own tool call (`tool.<name>` on `mcp_tool_call`, small diff).
create function private.append_audit(operation text, entity_type text, entity_id uuid, diff jsonb)
returns void
language plpgsql security definer set search_path = ''
as $$
declare
  needed text;
  needed_entity text;
begin
  perform private.bookkeeping_actor();
  perform private.check_audit_row(append_audit.operation, append_audit.entity_type, append_audit.diff);
  if append_audit.operation like 'tool.%' then
    if append_audit.entity_type is distinct from 'mcp_tool_call' or append_audit.entity_id is not null then
      raise exception 'a tool call is recorded on entity type mcp_tool_call without an entity id'
        using errcode = '22023';
    end if;
    if length(coalesce(append_audit.diff, '{}')::text) > 1000 then
      raise exception 'a tool call''s audit diff is at most 1000 characters' using errcode = '22023';
    end if;
  else
    select p.permission, p.entity_type into needed, needed_entity
    from private.audit_operation_permissions p where p.operation = append_audit.operation;
    if not found then
      raise exception 'unknown audit operation %', left(append_audit.operation, 100) using errcode = '22023';
    end if;
    if append_audit.entity_type is distinct from needed_entity then
      raise exception 'audit operation % is on entity type %, not %',
        append_audit.operation, needed_entity, left(append_audit.entity_type, 60) using errcode = '22023';
    end if;
    if not private.bookkeeping_by_system() then
      if not private.has_permission(needed) then
        raise exception 'missing permission % for audit operation %', needed, append_audit.operation
          using errcode = '42501';
      end if;
      if append_audit.operation = 'user.update_profile' and append_audit.entity_id is distinct from auth.uid()
         and not private.has_permission('users:manage') then
        raise exception 'missing permission users:manage for audit operation user.update_profile of another user'
          using errcode = '42501';
      end if;
    end if;
  end if;
  perform private.insert_audit(append_audit.operation, append_audit.entity_type, append_audit.entity_id,
                               append_audit.diff);
end
$$;
revoke all on function private.append_audit(text, text, uuid, jsonb) from public;
grant execute on function private.append_audit(text, text, uuid, jsonb) to authenticated, service_role;

-- The outbox ------------------------------------------------------------------------------------------------

drop policy outbox_insert on public.outbox;
revoke insert on public.outbox from authenticated;

-- Emits a batch of events, `[{"name": ..., "data": {...}}, ...]`, all or none. Each name must be one the
-- caller's permissions produce; data is a flat object of ids, numbers, booleans and enum-like tokens (no
-- spaces: free text and personal data stay in the audit row, which can be erased).
create function private.emit_events(events jsonb) returns integer
language plpgsql security definer set search_path = ''
as $$
declare
  actor uuid := private.bookkeeping_actor();
  channel text := private.bookkeeping_channel();
  event jsonb;
  event_name text;
  event_data jsonb;
  needed text;
  data_length integer;
  emitted integer := 0;
begin
  if jsonb_typeof(emit_events.events) is distinct from 'array' then
    raise exception 'events must be a JSON array of {"name", "data"} objects' using errcode = '22023';
  end if;
  if jsonb_array_length(emit_events.events) > 1000 then
    raise exception 'at most 1000 events at once' using errcode = '22023';
  end if;
  for event in select value from jsonb_array_elements(emit_events.events) loop
    if jsonb_typeof(event) is distinct from 'object' or jsonb_typeof(event -> 'name') is distinct from 'string'
       or jsonb_typeof(event -> 'data') is distinct from 'object' then
      raise exception 'each event must be {"name": text, "data": object}' using errcode = '22023';
    end if;
    event_name := event ->> 'name';
    event_data := event -> 'data';
    if length(event_name) > 100 or event_name !~ '^crm/[a-z_]+(\.[a-z_]+)+$' then
      raise exception 'event name must look like crm/entity.verb (at most 100 characters)' using errcode = '22023';
    end if;
    select p.permission into needed from private.event_permissions p where p.name = event_name;
    if not found then
      raise exception 'unknown event %', event_name using errcode = '22023';
    end if;
    if not private.bookkeeping_by_system() then
      if not private.has_permission(needed) then
        raise exception 'missing permission % for event %', needed, event_name using errcode = '42501';
      end if;
      if event_name = 'crm/user.profile_updated' and (event_data ->> 'user_id') is distinct from actor::text
         and not private.has_permission('users:manage') then
        raise exception 'missing permission users:manage for event crm/user.profile_updated of another user'
          using errcode = '42501';
      end if;
    end if;
    data_length := length(event_data::text);
    if data_length > 8000 then
      raise exception 'event data is too large (% characters, at most 8000)', data_length using errcode = '22023';
    end if;
    if exists (select 1 from jsonb_object_keys(event_data) k where k !~ '^[a-z_]{1,60}$')
       or jsonb_path_exists(event_data, 'strict $.*.** ? (@.type() == "object")')
       or jsonb_path_exists(event_data, 'strict $.** ? (@.type() == "string" && !(@ like_regex "^[A-Za-z0-9_:.+-]{1,64}$"))')
    then
      raise exception 'event data carries ids, numbers, booleans and enum values only (no text, no nested objects)'
        using errcode = '22023';
    end if;
    insert into public.outbox (name, data, actor_id, channel) values (event_name, event_data, actor, channel);
    emitted := emitted + 1;
  end loop;
  return emitted;
end
$$;
revoke all on function private.emit_events(jsonb) from public;
grant execute on function private.emit_events(jsonb) to authenticated, service_role;

revoke all on function private.bookkeeping_channel(), private.bookkeeping_actor(), private.bookkeeping_by_system()
  from public;
grant execute on function private.bookkeeping_channel(), private.bookkeeping_actor(), private.bookkeeping_by_system()
  to authenticated, service_role;

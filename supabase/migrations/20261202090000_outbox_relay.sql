-- The outbox relay: every event gets the id it keeps outside the database (the workflow engine drops a
-- duplicate id), failed deliveries wait for their next attempt, and a commit that added events wakes the relay.
-- Events may name their own id (a deterministic one, e.g. one digest per user and week): emitting an id that is
-- already in the outbox does nothing.

alter table public.outbox add column event_id text;
alter table public.outbox add column next_attempt_at timestamptz;
update public.outbox set event_id = id::text where event_id is null;

create function private.outbox_event_id() returns trigger
language plpgsql
as $$
begin
  new.event_id := coalesce(new.event_id, new.id::text);
  return new;
end
$$;
create trigger outbox_event_id before insert on public.outbox
  for each row execute function private.outbox_event_id();

alter table public.outbox alter column event_id set not null;
alter table public.outbox add constraint outbox_event_id_key unique (event_id);
alter table public.outbox add constraint outbox_event_id_shape check (event_id ~ '^[A-Za-z0-9_:.+-]{1,100}$');

drop index public.outbox_pending_idx;
create index outbox_pending_idx on public.outbox (coalesce(next_attempt_at, occurred_at)) where dispatched_at is null;
create index outbox_dispatched_idx on public.outbox (dispatched_at) where dispatched_at is not null;

-- NOTIFY is delivered when (and only if) the inserting transaction commits.
create function private.outbox_wake_relay() returns trigger
language plpgsql
as $$
begin
  perform pg_notify('pipecd_outbox', '');
  return null;
end
$$;
create trigger outbox_wake_relay after insert on public.outbox
  for each statement execute function private.outbox_wake_relay();

create or replace function private.emit_events(events jsonb) returns integer
language plpgsql security definer set search_path = ''
as $$
declare
  actor uuid := private.bookkeeping_actor();
  channel text := private.bookkeeping_channel();
  event jsonb;
  event_name text;
  event_data jsonb;
  given_id text;
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
      raise exception 'each event must be {"name": text, "data": object} (and an optional "id")' using errcode = '22023';
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
    given_id := event ->> 'id';
    if event ? 'id' and (jsonb_typeof(event -> 'id') is distinct from 'string'
                         or given_id !~ '^[A-Za-z0-9_:.+-]{1,100}$') then
      raise exception 'an event id is 1 to 100 characters of letters, digits and _:.+-' using errcode = '22023';
    end if;
    insert into public.outbox (name, data, actor_id, channel, event_id)
    values (event_name, event_data, actor, channel, given_id)
    on conflict on constraint outbox_event_id_key do nothing;
    if found then
      emitted := emitted + 1;
    end if;
  end loop;
  return emitted;
end
$$;

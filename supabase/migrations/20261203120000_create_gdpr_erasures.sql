-- GDPR erasure of a person: the request (who asked, how far it got, what it removed), the identifiers to erase,
-- and the database functions that find and replace them.
--
-- The identifiers (the person's full name, emails and phones) are themselves personal data: the database copies
-- them from the person row when the request is made (the caller names only the person, so nobody can aim the
-- redaction at arbitrary text), only the system (service_role) reads them, and verification wipes them. No
-- foreign key to the person: the person is what goes.

create table public.gdpr_erasures (
  id uuid primary key default gen_random_uuid(),
  person_id uuid not null,
  requested_by uuid references public.user_profiles (id) on delete set null,
  status text not null default 'queued' check (status in ('queued', 'erasing', 'verifying', 'done', 'failed')),
  counts jsonb not null default '{}' check (jsonb_typeof(counts) = 'object'),
  hits integer check (hits >= 0),
  -- {"name": text, "emails": [text], "phones": [text]}; null once verified
  identifiers jsonb,
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  error text check (length(error) <= 2000),
  constraint gdpr_erasures_completed check ((status in ('done', 'failed')) = (completed_at is not null)),
  constraint gdpr_erasures_wiped check (status <> 'done' or identifiers is null)
);
-- One erasure in progress per person: a repeated request returns it.
create unique index gdpr_erasures_pending_idx on public.gdpr_erasures (person_id)
  where status in ('queued', 'erasing', 'verifying');
create index gdpr_erasures_person_idx on public.gdpr_erasures (person_id, created_at desc);

alter table public.gdpr_erasures enable row level security;

-- Admins (gdpr:erase) read every erasure's progress; the identifiers column is not granted to them. Nobody but
-- the system writes the table directly: a request is made through private.request_erasure.
create policy gdpr_erasures_select on public.gdpr_erasures for select to authenticated
  using ((select private.has_permission('gdpr:erase')));

revoke all on public.gdpr_erasures from anon, authenticated;
grant select (id, person_id, requested_by, status, counts, hits, created_at, completed_at, error)
  on public.gdpr_erasures to authenticated;
grant all on public.gdpr_erasures to service_role;

-- Queues the erasure of a person the caller can see and may erase (gdpr:erase), as the caller, copying the
-- identifiers from the person row; returns the new request's id, or null when one is already pending for the
-- person. The service emits the event and the audit row in the same transaction.
create function private.request_erasure(person_id uuid) returns uuid
language plpgsql security definer set search_path = ''
as $$
#variable_conflict use_column
declare
  person public.persons;
  created uuid;
begin
  if auth.uid() is null or not private.has_permission('gdpr:erase') then
    raise exception 'missing permission gdpr:erase' using errcode = '42501';
  end if;
  select p.* into person from public.persons p
  where p.id = request_erasure.person_id and private.can_see(p.owner_id, p.visibility);
  if not found then
    raise exception 'person % not found', request_erasure.person_id using errcode = 'P0002';
  end if;
  insert into public.gdpr_erasures (person_id, requested_by, identifiers)
  values (person.id, auth.uid(), jsonb_build_object('name', person.name, 'emails', to_jsonb(person.emails),
                                                    'phones', to_jsonb(person.phones)))
  on conflict (person_id) where status in ('queued', 'erasing', 'verifying') do nothing
  returning id into created;
  return created;
end
$$;
revoke all on function private.request_erasure(uuid) from public;
grant execute on function private.request_erasure(uuid) to authenticated;

-- Finding and replacing identifiers ----------------------------------------------------------------------

-- Whether a value mentions an identifier: `patterns` are ILIKE patterns of names and emails ('%term%', with
-- % _ \ escaped), `phone_digits` LIKE patterns of phone digits ('%4930123456%') matched against the value's
-- digits, so a phone is found in any formatting. Plain SQL (no SET clause) so that it is inlined into scans.
create function private.mentions(value text, patterns text[], phone_digits text[]) returns boolean
language sql immutable parallel safe
as $$
  select value ilike any (patterns) or regexp_replace(value, '\D', '', 'g') like any (phone_digits)
$$;

-- `value` with each term (case-insensitive, literally) and each phone (its digits with anything but digits
-- between them) replaced by [erased]. Phones are replaced until none is left: removing one can join the digits
-- around it into another.
create function private.redact_text(value text, terms text[], phones text[]) returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  result text := value;
  term text;
  digits text;
  pattern text;
  previous text;
begin
  if result is null then
    return null;
  end if;
  foreach term in array coalesce(terms, '{}') loop
    result := regexp_replace(result, '***=' || term, '[erased]', 'gi');
  end loop;
  foreach digits in array coalesce(phones, '{}') loop
    pattern := array_to_string(regexp_split_to_array(digits, ''), '\D*');
    loop
      previous := result;
      result := regexp_replace(result, pattern, '[erased]', 'g');
      exit when result = previous;
    end loop;
  end loop;
  return result;
end
$$;

-- A JSON value with every string (keys too) redacted; a number that spells a phone becomes "[erased]".
create function private.redact_jsonb(value jsonb, terms text[], phones text[]) returns jsonb
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  redacted text;
begin
  case jsonb_typeof(value)
    when 'string' then
      return to_jsonb(private.redact_text(value #>> '{}', terms, phones));
    when 'number' then
      redacted := private.redact_text(value::text, terms, phones);
      return case when redacted = value::text then value else to_jsonb(redacted) end;
    when 'array' then
      return coalesce((select jsonb_agg(private.redact_jsonb(e.value, terms, phones) order by e.n)
                       from jsonb_array_elements(value) with ordinality e(value, n)), '[]');
    when 'object' then
      return coalesce((select jsonb_object_agg(private.redact_text(o.key, terms, phones),
                                               private.redact_jsonb(o.value, terms, phones))
                       from jsonb_each(value) o), '{}');
    else
      return value;
  end case;
end
$$;

create function private.redact_array(value text[], terms text[], phones text[]) returns text[]
language sql immutable parallel safe set search_path = ''
as $$
  select case when value is null then null else
    array(select private.redact_text(e.value, terms, phones) from unnest(value) with ordinality e(value, n)
          order by e.n) end
$$;

revoke all on function private.mentions(text, text[], text[]), private.redact_text(text, text[], text[]),
  private.redact_jsonb(jsonb, text[], text[]), private.redact_array(text[], text[], text[]) from public;
grant execute on function private.mentions(text, text[], text[]), private.redact_text(text, text[], text[]),
  private.redact_jsonb(jsonb, text[], text[]), private.redact_array(text[], text[], text[]) to service_role;

-- The audit log is append-only: signed-in sessions may only read it (and append through
-- private.append_audit), and from now on the system may not change or remove rows either. The one exception
-- is this function, which replaces an erased person's identifiers inside the diffs and returns how many rows
-- it changed; only the system may call it.
revoke update, delete, truncate on public.audit_log from service_role;

create function private.redact_audit(patterns text[], phone_digits text[], terms text[], phones text[])
returns integer
language plpgsql security definer set search_path = ''
as $$
declare
  changed integer;
begin
  if not private.bookkeeping_by_system() then
    raise exception 'only the system redacts the audit log' using errcode = '42501';
  end if;
  update public.audit_log a
  set diff = private.redact_jsonb(a.diff, redact_audit.terms, redact_audit.phones)
  where private.mentions(a.diff::text, redact_audit.patterns, redact_audit.phone_digits);
  get diagnostics changed = row_count;
  return changed;
end
$$;
revoke all on function private.redact_audit(text[], text[], text[], text[]) from public;
grant execute on function private.redact_audit(text[], text[], text[], text[]) to service_role;

-- Bookkeeping: the events and audit operations of erasures.
insert into private.event_permissions (name, permission) values
  ('crm/gdpr.erasure.requested', 'gdpr:erase'),
  ('crm/gdpr.erasure.completed', 'gdpr:erase');
insert into private.audit_operation_permissions (operation, entity_type, permission) values
  ('gdpr.request', 'gdpr_erasure', 'gdpr:erase'),
  ('gdpr.erased', 'gdpr_erasure', 'gdpr:erase');

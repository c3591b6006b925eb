-- Guards RLS alone must hold, since the Data API lets every signed-in user write these tables directly:
--   * every link a writer sets (not only the first one) points at a record the writer can see;
--   * an audit row is readable only while its record is (rows of deleted records: admins only);
--   * columns only the service may set (versions, timestamps, statuses, conversion, stage history) are set
--     by the database itself when the writer is a signed-in user (`authenticated`). The system
--     (service_role) and the table owner (migrations, seeding, workflows) may still set them.

-- Links -------------------------------------------------------------------------------------------------

-- Every non-null link is a record the caller can see. Invoker rights on purpose: each lookup passes the
-- linked table's own select policy, by primary key.
create function private.links_visible(deal_id uuid, lead_id uuid, person_id uuid, organization_id uuid)
returns boolean
language sql stable
as $$
  select (deal_id is null or exists (select 1 from public.deals d where d.id = deal_id))
    and (lead_id is null or exists (select 1 from public.leads l where l.id = lead_id))
    and (person_id is null or exists (select 1 from public.persons p where p.id = person_id))
    and (organization_id is null or exists (select 1 from public.organizations o where o.id = organization_id))
$$;
grant execute on function private.links_visible(uuid, uuid, uuid, uuid) to authenticated, service_role;

-- Foreign-key actions (on delete set null) run as the table owner, outside these policies: deleting a linked
-- record keeps working whoever links to it.

drop policy deals_insert on public.deals;
create policy deals_insert on public.deals for insert to authenticated
  with check ((select private.has_permission('deals:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.links_visible(null, null, person_id, organization_id));
drop policy deals_update on public.deals;
create policy deals_update on public.deals for update to authenticated
  using ((select private.has_permission('deals:write')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))))
  with check ((owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.links_visible(null, null, person_id, organization_id));

drop policy leads_insert on public.leads;
create policy leads_insert on public.leads for insert to authenticated
  with check ((select private.has_permission('leads:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.links_visible(converted_deal_id, null, person_id, organization_id));
drop policy leads_update on public.leads;
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
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.links_visible(converted_deal_id, null, person_id, organization_id));

drop policy activities_insert on public.activities;
create policy activities_insert on public.activities for insert to authenticated
  with check ((select private.has_permission('activities:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.links_visible(deal_id, lead_id, person_id, organization_id));
drop policy activities_update on public.activities;
create policy activities_update on public.activities for update to authenticated
  using ((select private.has_permission('activities:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
         and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id))
  with check ((owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids())))
              and private.can_see_attached(owner_id, deal_id, lead_id, person_id, organization_id)
              and private.links_visible(deal_id, lead_id, person_id, organization_id));

drop policy notes_insert on public.notes;
create policy notes_insert on public.notes for insert to authenticated
  with check ((select private.has_permission('notes:write')) and author_id = (select auth.uid())
              and private.links_visible(deal_id, lead_id, person_id, organization_id));
drop policy notes_update on public.notes;
create policy notes_update on public.notes for update to authenticated
  using ((select private.has_permission('notes:write')) and (author_id = (select auth.uid())
              or (select private.is_admin())
              or author_id in (select unnest(private.managed_user_ids())))
         and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id))
  with check ((author_id = (select auth.uid())
              or (select private.is_admin())
              or author_id in (select unnest(private.managed_user_ids())))
              and private.can_see_attached(author_id, deal_id, lead_id, person_id, organization_id)
              and private.links_visible(deal_id, lead_id, person_id, organization_id));

-- Audit log ---------------------------------------------------------------------------------------------

-- Whether the record an audit row is about is visible to the caller now (invoker rights: the record's own
-- select policy decides). Rows about no record (an assistant's tool call) qualify; rows about a record of a
-- kind not listed here do not, so a new kind stays admin-only until it is mapped.
create function private.audit_record_visible(entity_type text, entity_id uuid) returns boolean
language sql stable
as $$
  select case entity_type
    when 'deal' then exists (select 1 from public.deals t where t.id = entity_id)
    when 'person' then exists (select 1 from public.persons t where t.id = entity_id)
    when 'organization' then exists (select 1 from public.organizations t where t.id = entity_id)
    when 'lead' then exists (select 1 from public.leads t where t.id = entity_id)
    when 'activity' then exists (select 1 from public.activities t where t.id = entity_id)
    when 'note' then exists (select 1 from public.notes t where t.id = entity_id)
    when 'pipeline' then exists (select 1 from public.pipelines t where t.id = entity_id)
    when 'stage' then exists (select 1 from public.stages t where t.id = entity_id)
    when 'user' then exists (select 1 from public.user_profiles t where t.id = entity_id)
    when 'team' then exists (select 1 from public.teams t where t.id = entity_id)
    else entity_id is null
  end
$$;
grant execute on function private.audit_record_visible(text, uuid) to authenticated, service_role;

-- Admins read every row, deleted records' included. Others read the rows of their own (a manager: also her
-- team's) actions, and only while the record is still visible to them.
drop policy audit_log_select on public.audit_log;
create policy audit_log_select on public.audit_log for select to authenticated
  using ((select private.has_permission('audit:read'))
         and ((select private.is_admin())
              or ((actor_id = (select auth.uid())
                   or actor_id in (select unnest(private.managed_user_ids())))
                  and private.audit_record_visible(entity_type, entity_id))));

-- Versions and timestamps -------------------------------------------------------------------------------

-- Only a signed-in user's own statements are held to the service's rules: the system role and the table
-- owner (migrations, seeding, definer functions such as the lead conversion) may set these columns.
create function private.writes_as_user() returns boolean
language sql stable
as $$ select current_user = 'authenticated' $$;
grant execute on function private.writes_as_user() to authenticated, service_role;

-- Every versioned record: a signed-in user's insert starts at version 1, created and updated now; an update
-- that changes the row bumps the version and updated_at (anyone's), and a user cannot move created_at. An
-- update that changes nothing keeps version and updated_at, so an unchanged record keeps its version. The
-- trigger's arguments name generated columns, which NEW does not hold yet and the comparison leaves out.
create or replace function private.touch_version() returns trigger
language plpgsql
as $$
begin
  if tg_op = 'INSERT' then
    if private.writes_as_user() then
      new.version := 1;
      new.created_at := now();
      new.updated_at := now();
    end if;
    return new;
  end if;
  if private.writes_as_user() then
    new.created_at := old.created_at;
  end if;
  if (to_jsonb(new) - 'version' - coalesce(tg_argv, '{}')) = (to_jsonb(old) - 'version' - coalesce(tg_argv, '{}')) then
    new.version := old.version;
    new.updated_at := old.updated_at;
  else
    new.version := old.version + 1;
    new.updated_at := now();
  end if;
  return new;
end
$$;

drop trigger pipelines_touch on public.pipelines;
drop trigger stages_touch on public.stages;
drop trigger organizations_touch on public.organizations;
drop trigger persons_touch on public.persons;
drop trigger deals_touch on public.deals;
drop trigger leads_touch on public.leads;
drop trigger activities_touch on public.activities;
drop trigger notes_touch on public.notes;

create trigger pipelines_touch before insert or update on public.pipelines
  for each row execute function private.touch_version();
create trigger stages_touch before insert or update on public.stages
  for each row execute function private.touch_version();
create trigger organizations_touch before insert or update on public.organizations
  for each row execute function private.touch_version('search_text');
create trigger persons_touch before insert or update on public.persons
  for each row execute function private.touch_version('name', 'search_text');
create trigger deals_touch before insert or update on public.deals
  for each row execute function private.touch_version('search_text');
create trigger leads_touch before insert or update on public.leads
  for each row execute function private.touch_version('search_text');
create trigger activities_touch before insert or update on public.activities
  for each row execute function private.touch_version();
create trigger notes_touch before insert or update on public.notes
  for each row execute function private.touch_version();

-- Deals: a user creates a deal open; won_at and lost_at are the database's clock, set when the status
-- changes (how a status may change is the service's rule).
create function private.guard_deal() returns trigger
language plpgsql
as $$
begin
  if not private.writes_as_user() then
    return new;
  end if;
  if tg_op = 'INSERT' then
    if new.status <> 'open' then
      raise exception 'a deal is created open; win or lose it afterwards' using errcode = '42501';
    end if;
    new.won_at := null;
    new.lost_at := null;
  elsif new.status is distinct from old.status then
    new.won_at := case when new.status = 'won' then now() end;
    new.lost_at := case when new.status = 'lost' then now() end;
  else
    new.won_at := old.won_at;
    new.lost_at := old.lost_at;
  end if;
  return new;
end
$$;
create trigger deals_guard before insert or update on public.deals
  for each row execute function private.guard_deal();

-- Leads: a user creates a lead open and never sets the conversion columns; only the conversion
-- (private.mark_lead_converted) marks a lead converted, and a converted lead stays converted.
create function private.guard_lead() returns trigger
language plpgsql
as $$
begin
  if not private.writes_as_user() then
    return new;
  end if;
  if tg_op = 'INSERT' then
    if new.status <> 'open' or new.converted_deal_id is not null or new.converted_at is not null then
      raise exception 'a lead is created open; only its conversion marks it converted' using errcode = '42501';
    end if;
  elsif old.status = 'converted' and new.status <> 'converted' then
    raise exception 'lead % is converted and stays converted', old.id using errcode = '42501';
  elsif (new.status = 'converted' and old.status <> 'converted')
        or new.converted_deal_id is distinct from old.converted_deal_id
        or new.converted_at is distinct from old.converted_at then
    raise exception 'only the conversion of lead % marks it converted', old.id using errcode = '42501';
  end if;
  return new;
end
$$;
create trigger leads_guard before insert or update on public.leads
  for each row execute function private.guard_lead();

-- The last step of converting a lead: mark it converted into the deal, which it now links to the deal's
-- person and organization. Authorized from the caller's own identity (auth.uid()): leads:convert, the
-- lead's record rules (visible, changeable, open), and the deal's (visible).
create function private.mark_lead_converted(lead_id uuid, deal_id uuid) returns public.leads
language plpgsql security definer set search_path = ''
as $$
declare
  target public.deals;
  converted public.leads;
begin
  if not private.has_permission('leads:convert') then
    raise exception 'missing permission leads:convert' using errcode = '42501';
  end if;
  if not exists (
    select 1 from public.leads l
    where l.id = mark_lead_converted.lead_id
      and private.can_see(l.owner_id, l.visibility) and private.can_change(l.owner_id)
  ) then
    raise exception 'lead % is not yours to convert', mark_lead_converted.lead_id using errcode = '42501';
  end if;
  select d.* into target from public.deals d
  where d.id = mark_lead_converted.deal_id and private.can_see(d.owner_id, d.visibility);
  if not found then
    raise exception 'deal % is not visible to you', mark_lead_converted.deal_id using errcode = '42501';
  end if;
  update public.leads l
  set status = 'converted', converted_deal_id = target.id, converted_at = now(),
      person_id = target.person_id, organization_id = target.organization_id
  where l.id = mark_lead_converted.lead_id and l.status = 'open'
  returning l.* into converted;
  if not found then
    raise exception 'lead % is not open', mark_lead_converted.lead_id using errcode = '55000';
  end if;
  return converted;
end
$$;
revoke all on function private.mark_lead_converted(uuid, uuid) from public;
grant execute on function private.mark_lead_converted(uuid, uuid) to authenticated, service_role;

-- Activities: done_at is the database's clock, set when `done` flips.
create function private.guard_activity() returns trigger
language plpgsql
as $$
begin
  if not private.writes_as_user() then
    return new;
  end if;
  if tg_op = 'INSERT' or new.done is distinct from old.done then
    new.done_at := case when new.done then now() end;
  else
    new.done_at := old.done_at;
  end if;
  return new;
end
$$;
create trigger activities_guard before insert or update on public.activities
  for each row execute function private.guard_activity();

-- Stage history: a user records the move the deal just made. The row is stamped now and by the caller; it
-- leads to the deal's current stage, from where the deal's history left it (when it has one), and a deal
-- with a history does not record a move to where it already is.
create function private.guard_stage_history() returns trigger
language plpgsql
as $$
declare
  current_stage uuid;
  last_row public.deal_stage_history;
begin
  if not private.writes_as_user() then
    return new;
  end if;
  new.changed_at := now();
  new.changed_by := auth.uid();
  select d.stage_id into current_stage from public.deals d where d.id = new.deal_id;
  if not found or new.to_stage_id is distinct from current_stage then
    raise exception 'stage history of deal % must lead to its current stage', new.deal_id using errcode = '42501';
  end if;
  select h.* into last_row from public.deal_stage_history h where h.deal_id = new.deal_id
  order by h.id desc limit 1;
  if found and (new.from_stage_id is distinct from last_row.to_stage_id
                or new.from_stage_id is not distinct from new.to_stage_id) then
    raise exception 'stage history of deal % must continue from its last stage', new.deal_id
      using errcode = '42501';
  end if;
  return new;
end
$$;
create trigger deal_stage_history_guard before insert on public.deal_stage_history
  for each row execute function private.guard_stage_history();

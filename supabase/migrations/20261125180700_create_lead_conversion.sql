-- Converting a lead moves ALL its notes and activities to the new deal, including ones written by colleagues
-- that the converting user could not edit one by one. The function authorizes the move itself, from the
-- caller's own identity (auth.uid()), against the lead's and the deal's record rules.

create function private.move_lead_attachments(lead_id uuid, deal_id uuid)
returns table (notes_moved integer, activities_moved integer)
language plpgsql security definer set search_path = ''
as $$
declare
  moved_notes integer;
  moved_activities integer;
begin
  if not private.has_permission('leads:convert') then
    raise exception 'missing permission leads:convert' using errcode = '42501';
  end if;
  if not exists (
    select 1 from public.leads l
    where l.id = move_lead_attachments.lead_id
      and private.can_see(l.owner_id, l.visibility) and private.can_change(l.owner_id)
  ) then
    raise exception 'lead % is not yours to convert', move_lead_attachments.lead_id using errcode = '42501';
  end if;
  if not exists (
    select 1 from public.deals d
    where d.id = move_lead_attachments.deal_id and private.can_change(d.owner_id)
  ) then
    raise exception 'deal % is not yours to change', move_lead_attachments.deal_id using errcode = '42501';
  end if;

  update public.notes n set deal_id = move_lead_attachments.deal_id, lead_id = null
  where n.lead_id = move_lead_attachments.lead_id;
  get diagnostics moved_notes = row_count;

  update public.activities a set deal_id = move_lead_attachments.deal_id, lead_id = null
  where a.lead_id = move_lead_attachments.lead_id;
  get diagnostics moved_activities = row_count;

  return query select moved_notes, moved_activities;
end
$$;
revoke all on function private.move_lead_attachments(uuid, uuid) from public;
grant execute on function private.move_lead_attachments(uuid, uuid) to authenticated, service_role;

-- Converting a lead moves the notes and activities that belong to the lead alone (no deal yet) to the new
-- deal. One already on a deal keeps that deal and its lead link: it is someone's record on their own deal, the
-- conversion leaves it untouched (it still shows on the converted lead, and on its deal as before).
-- Every moved row gets its own audit row (`note.move_to_deal` / `activity.move_to_deal`), written here so no
-- caller can move rows without the trail; per row, because the audit trail is read per record.

create or replace function private.move_lead_attachments(lead_id uuid, deal_id uuid)
returns table (notes_moved integer, activities_moved integer)
language plpgsql security definer set search_path = ''
as $$
declare
  moved_notes integer;
  moved_activities integer;
  moved record;
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

  moved_notes := 0;
  for moved in
    update public.notes n set deal_id = move_lead_attachments.deal_id, lead_id = null
    where n.lead_id = move_lead_attachments.lead_id and n.deal_id is null
    returning n.id
  loop
    perform private.insert_audit(
      'note.move_to_deal', 'note', moved.id,
      jsonb_build_object(
        'before', jsonb_build_object('deal_id', null, 'lead_id', move_lead_attachments.lead_id),
        'after', jsonb_build_object('deal_id', move_lead_attachments.deal_id, 'lead_id', null)));
    moved_notes := moved_notes + 1;
  end loop;

  moved_activities := 0;
  for moved in
    update public.activities a set deal_id = move_lead_attachments.deal_id, lead_id = null
    where a.lead_id = move_lead_attachments.lead_id and a.deal_id is null
    returning a.id
  loop
    perform private.insert_audit(
      'activity.move_to_deal', 'activity', moved.id,
      jsonb_build_object(
        'before', jsonb_build_object('deal_id', null, 'lead_id', move_lead_attachments.lead_id),
        'after', jsonb_build_object('deal_id', move_lead_attachments.deal_id, 'lead_id', null)));
    moved_activities := moved_activities + 1;
  end loop;

  return query select moved_notes, moved_activities;
end
$$;

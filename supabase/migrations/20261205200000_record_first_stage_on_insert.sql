-- A deal created through the app's roles records where it starts: the insert writes the deal's first
-- stage-history row itself (from no stage to the deal's stage), so creating a deal takes one statement, not
-- two. The row passes the same policy and guard as any other (written as the inserting role, stamped by the
-- database). Bulk loads by the table owner (seeding, restores) bring their own history and write none here.
create function private.record_first_stage() returns trigger
language plpgsql
as $$
begin
  if current_user in ('authenticated', 'service_role') then
    insert into public.deal_stage_history (deal_id, from_stage_id, to_stage_id, changed_by)
    values (new.id, null, new.stage_id, auth.uid());
  end if;
  return null;
end
$$;
create trigger deals_record_first_stage after insert on public.deals
  for each row execute function private.record_first_stage();

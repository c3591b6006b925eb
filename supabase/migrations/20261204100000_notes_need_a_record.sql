-- A note belongs to at least one record: a deal, lead, person or organization (an activity may stand alone,
-- as a personal task; a note may not).
--
-- Notes written before this rule without any link are kept as they are: the constraint is NOT VALID, so it
-- holds for every note written or changed from now on but does not check (or refuse to migrate over) existing
-- rows. Such a note stays visible to its author as before; changing it needs a link in the same change.
alter table public.notes
  add constraint notes_linked check (num_nonnulls(deal_id, lead_id, person_id, organization_id) > 0) not valid;

-- Deleting a record unlinks the notes that also belong to another record (the foreign keys' ON DELETE SET
-- NULL) and deletes, with it, the notes that belong to it alone: otherwise the constraint above would refuse
-- the delete. It runs before the record's row goes, for each record deleted, and as the function's owner: the
-- foreign keys' own actions do not depend on who deletes either.
create function private.delete_notes_of_record_alone() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  execute format(
    'delete from public.notes where %I = $1 and num_nonnulls(deal_id, lead_id, person_id, organization_id) = 1',
    tg_argv[0]
  ) using old.id;
  return old;
end
$$;
revoke all on function private.delete_notes_of_record_alone() from public;

create trigger deals_delete_notes_alone before delete on public.deals
  for each row execute function private.delete_notes_of_record_alone('deal_id');
create trigger leads_delete_notes_alone before delete on public.leads
  for each row execute function private.delete_notes_of_record_alone('lead_id');
create trigger persons_delete_notes_alone before delete on public.persons
  for each row execute function private.delete_notes_of_record_alone('person_id');
create trigger organizations_delete_notes_alone before delete on public.organizations
  for each row execute function private.delete_notes_of_record_alone('organization_id');

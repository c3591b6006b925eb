-- A person's name is first name, a space and last name (each up to 150 characters, as the service accepts):
-- up to 301 characters. The check allowed 300, so a person with both names at their longest could not be saved.
alter table public.persons
  drop constraint persons_name_check,
  add constraint persons_name_check check (length(name) between 1 and 301);

-- Search reads only the rows that could be shown.
--
-- A row's score is its word similarity to the search text (at most 1), plus 0.5 when it contains the text and
-- 0.5 when its title starts with it. So a row that does not contain the text scores at most 1, one that
-- contains it as a word more than 1, and one whose title starts with it (and so contains it) more than 1.5 as
-- soon as its similarity is above 0.5 ("sierra cloud" in "Sierra Cloud AB", "summit lab" in "Summit Labs").
-- Two reads are skipped when they could not change what is shown:
--   * per record type, the rows that contain the text (a trigram index read whose cost grows with the table:
--     17 ms of 20 for "sierra cloud" in deals at 1M) when `max_rows` rows starting with the text score above
--     1.5; the similar words are then skipped too;
--   * the similar-word reads (private.search_resembling, the costly part of a search for a word that one
--     record type lacks) when the page is already full of rows scoring above 1. That is known only across the
--     record types searched together, so the caller decides: search_candidates takes `resemble`, and with
--     false it reads only the rows that start with or contain the text.
-- Everything else is unchanged: the ways a row matches, the scores, the caps and the visibility rule.

drop function private.search_candidates(text, text, text, text, int);

create function private.search_candidates(kind text, needle text, contains text, prefix text, max_rows int,
                                          resemble boolean default true)
returns table (id uuid, score double precision)
language plpgsql stable security definer set search_path = ''
rows 10
as $$
declare
  permission text := case kind when 'deal' then 'deals:read' when 'lead' then 'leads:read'
                               when 'person' then 'contacts:read' when 'organization' then 'contacts:read' end;
  caller uuid := auth.uid();
  system boolean := current_setting('role', true) = 'service_role';  -- SET ROLE needs membership: not forgeable
  admin boolean;
  managed uuid[];
  teammates uuid[];
  cap int;
  after_prefix text := needle || chr(1114111);  -- in byte order, above every title that starts with the needle
begin
  if permission is null then
    raise exception 'unknown search kind %', kind using errcode = '22023';
  end if;
  if max_rows is null or max_rows < 1 or max_rows > 100 then
    raise exception 'max_rows must be between 1 and 100' using errcode = '22023';
  end if;
  if not system and (caller is null or not private.has_permission(permission)) then
    return;
  end if;
  admin := system or private.is_admin();
  managed := private.managed_user_ids();
  teammates := private.teammate_ids();
  cap := greatest(3 * max_rows, 30);
  if kind = 'deal' then
    return query
    with starting as materialized (
      select t.id, extensions.word_similarity(needle, t.search_text) > 0.5 as above_containing
        from public.deals t
       where (lower(t.title) collate "C") >= needle and (lower(t.title) collate "C") < after_prefix
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
       order by (lower(t.title) collate "C")
       limit cap
    ), containing as materialized (
      select t.id from public.deals t
       where t.search_text like contains
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
         and (select count(*) from starting s where s.above_containing) < max_rows
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('deal', needle, caller, admin, managed, teammates, cap) r
       where resemble and (select count(*) from starting s where s.above_containing) < max_rows
         and (select count(*) from containing) < cap
    )
    select t.id, extensions.word_similarity(needle, t.search_text)
                 + case when t.search_text like contains then 0.5 else 0 end
                 + case when lower(t.title) like prefix then 0.5 else 0 end
    from public.deals t
    where t.id in (select c.id from starting c union all select c.id from containing c
                   union all select c.id from resembling c)
    order by 2 desc, t.title, t.id
    limit max_rows;
  elsif kind = 'person' then
    return query
    with starting as materialized (
      select t.id, extensions.word_similarity(needle, t.search_text) > 0.5 as above_containing
        from public.persons t
       where (lower(t.name) collate "C") >= needle and (lower(t.name) collate "C") < after_prefix
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
       order by (lower(t.name) collate "C")
       limit cap
    ), containing as materialized (
      select t.id from public.persons t
       where t.search_text like contains
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
         and (select count(*) from starting s where s.above_containing) < max_rows
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('person', needle, caller, admin, managed, teammates, cap) r
       where resemble and (select count(*) from starting s where s.above_containing) < max_rows
         and (select count(*) from containing) < cap
    )
    select t.id, extensions.word_similarity(needle, t.search_text)
                 + case when t.search_text like contains then 0.5 else 0 end
                 + case when lower(t.name) like prefix then 0.5 else 0 end
    from public.persons t
    where t.id in (select c.id from starting c union all select c.id from containing c
                   union all select c.id from resembling c)
    order by 2 desc, t.name, t.id
    limit max_rows;
  elsif kind = 'organization' then
    return query
    with starting as materialized (
      select t.id, extensions.word_similarity(needle, t.search_text) > 0.5 as above_containing
        from public.organizations t
       where (lower(t.name) collate "C") >= needle and (lower(t.name) collate "C") < after_prefix
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
       order by (lower(t.name) collate "C")
       limit cap
    ), containing as materialized (
      select t.id from public.organizations t
       where t.search_text like contains
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
         and (select count(*) from starting s where s.above_containing) < max_rows
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('organization', needle, caller, admin, managed, teammates, cap) r
       where resemble and (select count(*) from starting s where s.above_containing) < max_rows
         and (select count(*) from containing) < cap
    )
    select t.id, extensions.word_similarity(needle, t.search_text)
                 + case when t.search_text like contains then 0.5 else 0 end
                 + case when lower(t.name) like prefix then 0.5 else 0 end
    from public.organizations t
    where t.id in (select c.id from starting c union all select c.id from containing c
                   union all select c.id from resembling c)
    order by 2 desc, t.name, t.id
    limit max_rows;
  elsif kind = 'lead' then
    return query
    with starting as materialized (
      select t.id, extensions.word_similarity(needle, t.search_text) > 0.5 as above_containing
        from public.leads t
       where (lower(t.title) collate "C") >= needle and (lower(t.title) collate "C") < after_prefix
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
       order by (lower(t.title) collate "C")
       limit cap
    ), containing as materialized (
      select t.id from public.leads t
       where t.search_text like contains
         and (t.visibility = 'company' or t.owner_id = caller or admin or t.owner_id = any (managed)
              or (t.visibility = 'team' and t.owner_id = any (teammates)))
         and (select count(*) from starting s where s.above_containing) < max_rows
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('lead', needle, caller, admin, managed, teammates, cap) r
       where resemble and (select count(*) from starting s where s.above_containing) < max_rows
         and (select count(*) from containing) < cap
    )
    select t.id, extensions.word_similarity(needle, t.search_text)
                 + case when t.search_text like contains then 0.5 else 0 end
                 + case when lower(t.title) like prefix then 0.5 else 0 end
    from public.leads t
    where t.id in (select c.id from starting c union all select c.id from containing c
                   union all select c.id from resembling c)
    order by 2 desc, t.title, t.id
    limit max_rows;
  end if;
end
$$;

revoke all on function private.search_candidates(text, text, text, text, int, boolean) from public;
grant execute on function private.search_candidates(text, text, text, text, int, boolean) to authenticated, service_role;

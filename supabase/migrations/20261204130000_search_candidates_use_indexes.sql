-- Search that uses its trigram indexes under RLS.
--
-- Postgres applies a table's RLS policy before any condition whose operator is not leakproof, and the trigram
-- operators (`LIKE`, `<%`) are not: under RLS every search read every row of the four tables. This function finds
-- the candidates with the indexes, as its owner, and applies the same visibility rule as the tables' SELECT
-- policies (the caller's read permission for the kind, then company / own / admin / managed / team), so it
-- returns exactly the rows those policies let the caller see, best first (`service_role`, which bypasses RLS,
-- sees every row). It returns ids and scores only;
-- callers read the rows themselves, under RLS again. `tests/test_search.py` checks it against the policies
-- for every kind of principal.

create function private.search_candidates(kind text, needle text, contains text, prefix text, max_rows int)
returns table (id uuid, score double precision)
language plpgsql stable security definer set search_path = ''
as $$
declare
  source record;
  caller uuid := auth.uid();
  system boolean := current_setting('role', true) = 'service_role';  -- SET ROLE needs membership: not forgeable
  admin boolean;
  managed uuid[];
  teammates uuid[];
begin
  select * into source from (values
    ('deal', 'deals', 'title', 'deals:read'),
    ('person', 'persons', 'name', 'contacts:read'),
    ('organization', 'organizations', 'name', 'contacts:read'),
    ('lead', 'leads', 'title', 'leads:read')
  ) as kinds (kind, tbl, title, permission) where kinds.kind = search_candidates.kind;
  if source is null then
    raise exception 'unknown search kind %', kind using errcode = '22023';
  end if;
  if max_rows is null or max_rows < 1 or max_rows > 100 then
    raise exception 'max_rows must be between 1 and 100' using errcode = '22023';
  end if;
  if not system and (caller is null or not private.has_permission(source.permission)) then
    return;
  end if;
  admin := system or private.is_admin();
  managed := private.managed_user_ids();
  teammates := private.teammate_ids();
  return query execute format(
    $q$
    select t.id,
           extensions.word_similarity($1, t.search_text)
             + case when t.search_text like $2 then 0.5 else 0 end
             + case when lower(t.%1$I) like $3 then 0.5 else 0 end
    from public.%2$I t
    where (t.search_text like $2 or $1 operator(extensions.<%%) t.search_text)
      and (t.visibility = 'company' or t.owner_id = $4 or $5 or t.owner_id = any ($6)
           or (t.visibility = 'team' and t.owner_id = any ($7)))
    order by 2 desc, t.id
    limit $8
    $q$, source.title, source.tbl)
    using needle, contains, prefix, caller, admin, managed, teammates, max_rows;
end
$$;

revoke all on function private.search_candidates(text, text, text, text, int) from public;
grant execute on function private.search_candidates(text, text, text, text, int) to authenticated, service_role;

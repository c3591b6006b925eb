-- Search in bounded work: a search reads a capped number of rows per record type, whatever the table's size.
--
-- private.search_candidates scored every row that matched, so a common word ("renewal", "analytics") cost more
-- as the tables grew; and callers joined its rows back to their table expecting the default 1000 of them, which
-- made the planner read the whole table under RLS to hash it. Now each way a row can match reads at most `cap`
-- visible rows, only those candidates are scored (as before), and the best `max_rows` are returned, ties by
-- title; `rows 10` lets callers join back by primary key.
--   * starting: the title (a person's or organization's name) starts with the text. A btree on the lowercased
--     title in byte order, read in that order: the exact title first, then titles where the text ends a word
--     ("nova analytics") before those where it does not ("novak"). These rank above every other match.
--   * containing: the text appears anywhere, also inside a word (the trigram GIN index, or a walk of the table
--     that stops at `cap` when the text is common).
--   * resembling: words similar to the text (typos), at or above pg_trgm's word-similarity threshold. Read
--     only when fewer than `cap` rows contain the text: a row that does not contain it scores at most 1, below
--     the rows that contain it as a word, so with that many containing rows it would not be shown.
-- A way that matches fewer rows than the cap has read all of them, so over fewer matches the result is what
-- scoring every match gave. The statements are static, one per kind: each connection plans them once, where
-- planning a dynamic statement per kind cost more than running it. The visibility rule is unchanged: the
-- tables' SELECT policies' rule, in every branch.

create index deals_title_prefix_idx on public.deals ((lower(title) collate "C"));
create index persons_name_prefix_idx on public.persons ((lower(name) collate "C"));
create index organizations_name_prefix_idx on public.organizations ((lower(name) collate "C"));
create index leads_title_prefix_idx on public.leads ((lower(title) collate "C"));

-- Up to `cap` visible rows whose words resemble the needle (pg_trgm's word-similarity threshold), read in bounded
-- work whether few or many rows resemble it. The similarity test is costly per row and the planner takes it for
-- cheap, so the way is chosen here from a probe of the table's first 100 rows: when 10 or more of them are
-- visible and resemble the needle, a walk of the table stops after about cap / density rows (~300); otherwise
-- the trigram GIN index reads only the rows that resemble it (about 10% of the table at most). The function's
-- SET clauses restore the planner settings it changes. The needle reaches the planner as a subquery: estimating
-- the similarity test for a known value runs it over the column's statistics, which cost more than the probe
-- and the read together, and the way is chosen here anyway. Not a definer and granted to no one: only
-- private.search_candidates (as its owner) calls it, with the caller's visibility inputs already resolved.
create function private.search_resembling(kind text, needle text, caller uuid, admin boolean, managed uuid[],
                                          teammates uuid[], cap int)
returns table (id uuid)
language plpgsql stable set search_path = '' set enable_seqscan = on set enable_bitmapscan = on
rows 30
as $$
declare
  tbl text := case kind when 'deal' then 'deals' when 'person' then 'persons'
                        when 'organization' then 'organizations' when 'lead' then 'leads' end;
  common boolean;
begin
  execute format($q$select count(*) >= 10 from (select * from public.%I t limit 100) t
                    where (select $1::text) operator(extensions.<%%) t.search_text
                      and (t.visibility = 'company' or t.owner_id = $2 or $3 or t.owner_id = any ($4)
                           or (t.visibility = 'team' and t.owner_id = any ($5)))$q$, tbl)
    using needle, caller, admin, managed, teammates into common;
  if common then
    perform set_config('enable_bitmapscan', 'off', true);
  else
    perform set_config('enable_seqscan', 'off', true);
  end if;
  return query execute format(
    $q$select t.id from public.%I t
       where (select $1::text) operator(extensions.<%%) t.search_text
         and (t.visibility = 'company' or t.owner_id = $2 or $3 or t.owner_id = any ($4)
              or (t.visibility = 'team' and t.owner_id = any ($5)))
       limit $6$q$, tbl)
    using needle, caller, admin, managed, teammates, cap;
end
$$;

revoke all on function private.search_resembling(text, text, uuid, boolean, uuid[], uuid[], int) from public;

create or replace function private.search_candidates(kind text, needle text, contains text, prefix text, max_rows int)
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
      select t.id from public.deals t
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
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('deal', needle, caller, admin, managed, teammates, cap) r
       where (select count(*) from containing) < cap
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
      select t.id from public.persons t
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
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('person', needle, caller, admin, managed, teammates, cap) r
       where (select count(*) from containing) < cap
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
      select t.id from public.organizations t
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
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('organization', needle, caller, admin, managed, teammates, cap) r
       where (select count(*) from containing) < cap
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
      select t.id from public.leads t
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
       limit cap
    ), resembling as materialized (
      select r.id from private.search_resembling('lead', needle, caller, admin, managed, teammates, cap) r
       where (select count(*) from containing) < cap
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

revoke all on function private.search_candidates(text, text, text, text, int) from public;
grant execute on function private.search_candidates(text, text, text, text, int) to authenticated, service_role;

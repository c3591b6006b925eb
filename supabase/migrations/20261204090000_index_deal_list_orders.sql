-- The orders and filters of the deal list (services/deals). Each order is a key and then id, both in one
-- direction, served by an index on (key, id) read forwards or backwards.
--
-- Under RLS a caller's condition reaches an index only when its operators are leakproof and it applies no other
-- function to the row; numeric comparisons and coalesce(...) are not. So the keys that would need them are
-- stored, generated columns of leakproof types: the value in cents (bigint), the expected close day as a day
-- number with NULL standing after every day in each direction (integer), and the time a deal was won or lost.

alter table public.deals
  add column value_cents bigint generated always as ((value * 100)::bigint) stored,
  add column close_day_asc integer
    generated always as (coalesce(expected_close_date - date '2000-01-01', 2147483647)) stored,
  add column close_day_desc integer
    generated always as (coalesce(expected_close_date - date '2000-01-01', -2147483648)) stored,
  add column closed_at timestamptz generated always as (coalesce(won_at, lost_at)) stored;

create index deals_value_idx on public.deals (value_cents, id);
create index deals_close_asc_idx on public.deals (close_day_asc, id);
create index deals_close_desc_idx on public.deals (close_day_desc, id);
create index deals_closed_idx on public.deals (closed_at);

-- (updated_at, id) serves the updated orders and the updated_since filter the old (updated_at) index served.
drop index public.deals_updated_idx;
create index deals_updated_idx on public.deals (updated_at, id);

-- A BEFORE trigger sees generated columns unset: the version touch leaves them out of its comparison, like
-- search_text, or every update would look like a change.
drop trigger deals_touch on public.deals;
create trigger deals_touch before insert or update on public.deals
  for each row execute function private.touch_version(
    'search_text', 'value_cents', 'close_day_asc', 'close_day_desc', 'closed_at');

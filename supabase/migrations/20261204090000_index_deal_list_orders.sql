-- Indexes for the orders and filters of the deal list (services/deals): each order is a key and then id, both
-- in one direction, and an index on (key, id) serves it read forwards or backwards. A nullable key sorts its
-- NULLs last in either direction: the list reads it as coalesce(key, sentinel), so the expected close date has
-- one index per direction, on exactly that expression.

create index deals_value_idx on public.deals (value, id);
create index deals_close_asc_idx on public.deals (coalesce(expected_close_date, 'infinity'::date), id);
create index deals_close_desc_idx on public.deals (coalesce(expected_close_date, '-infinity'::date), id);

-- (updated_at, id) serves the updated orders and the updated_since filter the old (updated_at) index served.
drop index public.deals_updated_idx;
create index deals_updated_idx on public.deals (updated_at, id);

-- When a deal was won or lost (only one is set): the closed_after / closed_before filter.
create index deals_closed_idx on public.deals ((coalesce(won_at, lost_at)));

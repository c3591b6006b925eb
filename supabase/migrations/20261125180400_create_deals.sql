-- Deals and their stage history.

create table public.deals (
  id uuid primary key default gen_random_uuid(),
  title text not null check (length(btrim(title)) between 1 and 300),
  value numeric(16, 2) not null default 0 check (value >= 0),
  currency char(3) not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  owner_id uuid not null default auth.uid() references public.user_profiles (id),
  person_id uuid references public.persons (id) on delete set null,
  organization_id uuid references public.organizations (id) on delete set null,
  pipeline_id uuid not null references public.pipelines (id) on delete restrict,
  stage_id uuid,
  status text not null default 'open' check (status in ('open', 'won', 'lost')),
  won_at timestamptz,
  lost_at timestamptz,
  lost_reason text,
  expected_close_date date,
  probability integer check (probability between 0 and 100),
  visibility text not null default private.default_visibility()
    check (visibility in ('owner', 'team', 'company')),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  search_text text generated always as (lower(title)) stored,
  -- the stage belongs to the deal's pipeline; deleting the stage clears only stage_id
  foreign key (stage_id, pipeline_id) references public.stages (id, pipeline_id)
    on delete set null (stage_id),
  constraint deals_won_consistent check ((status = 'won') = (won_at is not null)),
  constraint deals_lost_consistent check (
    (status = 'lost') = (lost_at is not null)
    and (status <> 'lost' or length(btrim(coalesce(lost_reason, ''))) > 0))
);
create index deals_list_idx on public.deals (created_at desc, id desc);
create index deals_owner_idx on public.deals (owner_id);
create index deals_pipeline_stage_idx on public.deals (pipeline_id, stage_id);
create index deals_stage_idx on public.deals (stage_id);
create index deals_status_idx on public.deals (status);
create index deals_updated_idx on public.deals (updated_at);
create index deals_person_idx on public.deals (person_id);
create index deals_organization_idx on public.deals (organization_id);
create index deals_search_idx on public.deals using gin (search_text extensions.gin_trgm_ops);

create trigger deals_touch before update on public.deals
  for each row execute function private.touch_version();

create table public.deal_stage_history (
  id bigint generated always as identity primary key,
  deal_id uuid not null references public.deals (id) on delete cascade,
  from_stage_id uuid references public.stages (id) on delete set null,
  to_stage_id uuid references public.stages (id) on delete set null,
  changed_by uuid default auth.uid() references public.user_profiles (id),
  changed_at timestamptz not null default now()
);
create index deal_stage_history_deal_idx on public.deal_stage_history (deal_id, id);

alter table public.deals enable row level security;
alter table public.deal_stage_history enable row level security;

create policy deals_select on public.deals for select to authenticated
  using ((select private.has_permission('deals:read')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids())))));
create policy deals_insert on public.deals for insert to authenticated
  with check ((select private.has_permission('deals:write')) and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));
create policy deals_update on public.deals for update to authenticated
  using ((select private.has_permission('deals:write')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))))
  with check ((owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));
create policy deals_delete on public.deals for delete to authenticated
  using ((select private.has_permission('deals:delete')) and (visibility = 'company'
              or owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))
              or (visibility = 'team' and owner_id in (select unnest(private.teammate_ids()))))
         and (owner_id = (select auth.uid())
              or (select private.is_admin())
              or owner_id in (select unnest(private.managed_user_ids()))));

-- History is readable with its deal and written only by the one changing the deal; never edited.
create policy deal_stage_history_select on public.deal_stage_history for select to authenticated
  using (exists (select 1 from public.deals d where d.id = deal_id));
create policy deal_stage_history_insert on public.deal_stage_history for insert to authenticated
  with check (changed_by = (select auth.uid())
              and (select private.has_permission('deals:write'))
              and exists (select 1 from public.deals d where d.id = deal_id and private.can_change(d.owner_id)));

revoke all on public.deals, public.deal_stage_history from anon, authenticated;
grant select, insert, update, delete on public.deals to authenticated;
grant select, insert on public.deal_stage_history to authenticated;
grant all on public.deals, public.deal_stage_history to service_role;

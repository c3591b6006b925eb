-- Pipelines and their ordered stages. Win probability is an integer percentage everywhere.

create table public.pipelines (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(btrim(name)) between 1 and 200),
  position integer not null default 0,
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index pipelines_name_key on public.pipelines (lower(name));

create table public.stages (
  id uuid primary key default gen_random_uuid(),
  pipeline_id uuid not null references public.pipelines (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 200),
  position integer not null check (position >= 0),
  win_probability integer not null default 0 check (win_probability between 0 and 100),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- target of deals' (stage_id, pipeline_id) key: a deal's stage always belongs to its pipeline
  unique (id, pipeline_id),
  -- dense order per pipeline; deferred so a reorder can permute positions in one transaction
  constraint stages_pipeline_position_key unique (pipeline_id, position) deferrable initially deferred
);

create trigger pipelines_touch before update on public.pipelines
  for each row execute function private.touch_version();
create trigger stages_touch before update on public.stages
  for each row execute function private.touch_version();

alter table public.pipelines enable row level security;
alter table public.stages enable row level security;

create policy pipelines_select on public.pipelines for select to authenticated
  using ((select private.has_permission('pipelines:read')));
create policy pipelines_insert on public.pipelines for insert to authenticated
  with check ((select private.has_permission('pipelines:manage')));
create policy pipelines_update on public.pipelines for update to authenticated
  using ((select private.has_permission('pipelines:manage')))
  with check ((select private.has_permission('pipelines:manage')));
create policy pipelines_delete on public.pipelines for delete to authenticated
  using ((select private.has_permission('pipelines:manage')));

create policy stages_select on public.stages for select to authenticated
  using ((select private.has_permission('pipelines:read')));
create policy stages_insert on public.stages for insert to authenticated
  with check ((select private.has_permission('pipelines:manage')));
create policy stages_update on public.stages for update to authenticated
  using ((select private.has_permission('pipelines:manage')))
  with check ((select private.has_permission('pipelines:manage')));
create policy stages_delete on public.stages for delete to authenticated
  using ((select private.has_permission('pipelines:manage')));

revoke all on public.pipelines, public.stages from anon, authenticated;
grant select, insert, update, delete on public.pipelines, public.stages to authenticated;
grant all on public.pipelines, public.stages to service_role;

-- The embedded workflow runner's state: the functions it learned at sync, one row per run (at most one per
-- function and idempotency key: an event id, a cron tick, or an `idempotency` expression's value), each finished
-- step's memo, and the jobs waiting to call the function. Only the system (service_role) reads or writes it: RLS
-- is on with no policies, so a signed-in session reaching it directly sees nothing, and it has no grants anyway.

create schema runner;
revoke all on schema runner from public;
grant usage on schema runner to service_role;

create table runner.functions (
  id text primary key,
  config jsonb not null,
  first_synced_at timestamptz not null default now(),
  synced_at timestamptz not null default now()
);

create table runner.runs (
  id uuid primary key default gen_random_uuid(),
  function_id text not null,
  idempotency_key text not null,
  event jsonb not null,
  status text not null default 'queued'
    check (status in ('queued', 'running', 'sleeping', 'completed', 'failed')),
  -- one value per concurrency limit of the function, evaluated on the triggering event at creation
  concurrency_keys text[] not null default '{}',
  -- set once the function planned steps (parallel): from then on every step is planned, then run on its own
  disable_immediate boolean not null default false,
  output jsonb,
  error jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  ended_at timestamptz,
  unique (function_id, idempotency_key),
  constraint runs_ended check ((status in ('completed', 'failed')) = (ended_at is not null))
);
create index runs_status_idx on runner.runs (status, created_at desc);
create index runs_function_idx on runner.runs (function_id, created_at desc);
create index runs_ended_idx on runner.runs (ended_at) where ended_at is not null;

create table runner.steps (
  run_id uuid not null references runner.runs (id) on delete cascade,
  step_id text not null,
  position integer not null,
  op text not null,
  name text,
  data jsonb,
  error jsonb,
  created_at timestamptz not null default now(),
  primary key (run_id, step_id)
);

create table runner.jobs (
  id bigint generated always as identity primary key,
  run_id uuid not null references runner.runs (id) on delete cascade,
  target text not null, -- 'step' (continue the function) or the id of a planned step
  attempt integer not null default 0 check (attempt >= 0),
  available_at timestamptz not null default now(),
  locked_until timestamptz,
  locked_by text,
  last_error jsonb
);
create index jobs_available_idx on runner.jobs (available_at);
create index jobs_run_idx on runner.jobs (run_id);
create index jobs_leased_idx on runner.jobs (locked_until) where locked_until is not null;

alter table runner.functions enable row level security;
alter table runner.runs enable row level security;
alter table runner.steps enable row level security;
alter table runner.jobs enable row level security;

grant select, insert, update, delete on all tables in schema runner to service_role;

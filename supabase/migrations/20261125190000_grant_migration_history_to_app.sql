-- Readiness checks compare the applied migrations with the ones the app ships; the app's pool login may
-- read the history (and nothing else in this schema).
grant usage on schema supabase_migrations to authenticator;
grant select on supabase_migrations.schema_migrations to authenticator;

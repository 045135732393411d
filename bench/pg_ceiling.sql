-- pgbench script: PostgreSQL's own ceiling for our rows — 100 events per
-- transaction into a table shaped like events (uuid UNIQUE, (aggregate, version) UNIQUE, jsonb).
INSERT INTO bench_events (event_id, aggregate_id, aggregate_type, version, event_type, event_data)
SELECT gen_random_uuid(), gen_random_uuid()::text, 'bench', 1, 'load-applied',
       '{"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'::jsonb
FROM generate_series(1, 100);

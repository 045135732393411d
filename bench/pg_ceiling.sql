-- pgbench script: PostgreSQL's own ceiling for the event store's writes —
-- exactly what one group commit of 100 new aggregates writes (es_load's
-- events: 200-byte data, no metadata), into the store's own tables (events
-- with its unique keys and the events_type_position index, streams, outbox),
-- in one statement shaped like the writer's INSERT_SQL (eventstore/writer.c).
WITH g AS (SELECT gen_random_uuid() AS id, gen_random_uuid()::text AS agg FROM generate_series(1, 100)),
heads AS (
  INSERT INTO streams (aggregate_id, aggregate_type, version) SELECT agg, 'bench', 1 FROM g
  ON CONFLICT (aggregate_id) DO UPDATE SET version = excluded.version RETURNING 1
), ins AS (
  INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, event_data, metadata, stream)
  SELECT id, agg, 'bench', 1, 'load-applied', '{"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'::jsonb, '{}'::jsonb, '' FROM g
  RETURNING position, event_id, (extract(epoch FROM created_at) * 1000000)::int8 AS created_us, event_data::text AS stored
), ob AS (
  INSERT INTO outbox (position) SELECT position FROM ins
)
SELECT count(*) FROM ins;

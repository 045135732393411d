-- The event store: events, per-aggregate stream heads, and the transactional outbox.
-- CockroachDB-compatible: no PL/pgSQL, no advisory locks, no LISTEN/NOTIFY.
CREATE SEQUENCE IF NOT EXISTS events_position_seq;

CREATE TABLE IF NOT EXISTS events (
    position       BIGINT      NOT NULL PRIMARY KEY DEFAULT nextval('events_position_seq'),
    event_id       UUID        NOT NULL UNIQUE,
    aggregate_id   TEXT        NOT NULL,
    aggregate_type TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    event_type     TEXT        NOT NULL,
    event_data     JSONB       NOT NULL,
    metadata       JSONB       NOT NULL DEFAULT '{}',
    stream         TEXT        NOT NULL DEFAULT '',
    -- clock_timestamp(), not now(): taken when the row's position is drawn,
    -- which the readers' gap rule relies on (docs/eventstore.md, "Gaps").
    created_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (aggregate_id, version)
);

CREATE INDEX IF NOT EXISTS events_type_position ON events (aggregate_type, event_type, position);

-- One row per aggregate: its current version. Appends lock this row, so
-- optimistic concurrency is one indexed row, not a max() over events.
CREATE TABLE IF NOT EXISTS streams (
    aggregate_id   TEXT   NOT NULL PRIMARY KEY,
    aggregate_type TEXT   NOT NULL,
    version        BIGINT NOT NULL
);

-- Positions committed but not yet acknowledged by JetStream.
CREATE TABLE IF NOT EXISTS outbox (
    position BIGINT NOT NULL PRIMARY KEY
);

-- Events JetStream refused for good; kept for an operator to inspect and re-queue.
CREATE TABLE IF NOT EXISTS outbox_rejected (
    position    BIGINT      NOT NULL PRIMARY KEY,
    error       TEXT        NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

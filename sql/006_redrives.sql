-- The saga reconciler's re-drives (eventstore/reconcile.c), kept in the
-- database so that a restart or a new relay leader neither forgets them nor
-- starts over: a stuck head (an aggregate's last event, at position) is
-- re-driven at most three times in all, then left to an operator
-- (redrives above three: given up, logged once).
CREATE TABLE IF NOT EXISTS redrives (
    aggregate_id TEXT        NOT NULL PRIMARY KEY,
    position     BIGINT      NOT NULL,
    redrives     INT         NOT NULL,
    last_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

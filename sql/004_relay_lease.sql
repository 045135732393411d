-- The outbox relay's lease: of several eventstore instances on one database,
-- the one holding the lease (holder, until expires_at on the database's
-- clock) publishes the outbox; the others wait to take over.
CREATE TABLE IF NOT EXISTS relay_lease (
    name       TEXT        NOT NULL PRIMARY KEY,
    holder     TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

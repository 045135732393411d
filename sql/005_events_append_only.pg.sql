-- The event log is append-only. Privileges already keep the event store's
-- role from changing or removing events (scripts/pg-roles.sh); this guard
-- keeps anyone from it, owner and superuser included, so that a mistaken
-- grant cannot rewrite history. The one way to remove data on purpose is
-- written in docs/security.md ("Removing data"). PostgreSQL only (the ".pg."
-- in the name): on CockroachDB, which runs no such trigger, the privileges
-- alone enforce it.
CREATE OR REPLACE FUNCTION ordo_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is refused', TG_OP
        USING ERRCODE = '42501';
END
$$;
DROP TRIGGER IF EXISTS events_append_only ON events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ordo_events_append_only();
DROP TRIGGER IF EXISTS events_no_truncate ON events;
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ordo_events_append_only();

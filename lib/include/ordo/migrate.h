/**
 * @file migrate.h
 * Schema migrations: the numbered files of sql/, embedded at build time,
 * applied in order, each once (recorded in schema_migrations). Safe to run
 * from several processes at once. A file named NNN_name.pg.sql is for
 * PostgreSQL alone (CockroachDB skips it). When every migration is recorded
 * nothing runs that needs more than SELECT on schema_migrations.
 */
#ifndef ORDO_MIGRATE_H
#define ORDO_MIGRATE_H

#include <stddef.h>

#include "ordo/pg.h"

typedef struct ordo_migration {
    const char *name;   /**< file name, e.g. "001_events.sql" */
    const char *sql;
} ordo_migration_t;

extern const ordo_migration_t ordo_migrations[];
extern const size_t ordo_migrations_count;

/** Applies every migration not yet recorded. */
ordo_status ordo_migrate(ordo_pg_t *pg, ordo_error_t *err);

/** The same over a connection of its own to @p url. */
ordo_status ordo_migrate_url(const char *url, ordo_error_t *err);

#endif

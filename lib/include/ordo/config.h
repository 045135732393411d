/**
 * @file config.h
 * Configuration as a table: each option has a flag, an environment variable,
 * a default and a description, declared once by the daemon. Precedence:
 * flag, then environment, then default. Values are validated at start and the
 * filled struct is read-only afterwards.
 *
 * String values point into argv, the environment or the table's defaults:
 * they live as long as the process and are never freed.
 */
#ifndef ORDO_CONFIG_H
#define ORDO_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "ordo/status.h"

typedef enum ordo_opt_type {
    ORDO_OPT_STRING,   /**< const char * */
    ORDO_OPT_INT,      /**< int, within [min, max] */
    ORDO_OPT_BOOL,     /**< bool: true/false/1/0/on/off/yes/no */
} ordo_opt_type;

typedef struct ordo_option {
    const char *flag;       /**< without dashes: "database-url" → --database-url */
    const char *env;        /**< "DATABASE_URL", or NULL */
    const char *def;        /**< default, as text */
    ordo_opt_type type;
    size_t offset;          /**< offsetof(the daemon's config struct, field) */
    long min, max;          /**< ORDO_OPT_INT only */
    const char *help;
} ordo_option_t;

/** One row of an option table for the config struct @p T. */
#define ORDO_OPTION(T, flag, env, def, type, field, min, max, help) \
    {flag, env, def, type, offsetof(T, field), min, max, help}

/**
 * Fills @p cfg from @p argv, the environment and defaults. Sets *@p help when
 * --help was given (nothing else is checked then).
 */
ordo_status ordo_config_load(const ordo_option_t *opts, size_t n, void *cfg,
                             int argc, char **argv, bool *help, ordo_error_t *err);

/** Prints one line per option: flag, variable, default, description. */
void ordo_config_usage(FILE *out, const char *prog, const ordo_option_t *opts, size_t n);

/** Whether an optional setting was given: not NULL and not "" (a string
 *  option's default when unset). */
bool ordo_opt_given(const char *value);

/**
 * Reads the file @p path whole into *@p out (malloc'd, NUL-terminated; the
 * caller frees it) when it holds 1 to @p max bytes. ORDO_INVALID names the
 * path and the reason; nothing of the content reaches a message.
 */
ordo_status ordo_file_read(const char *path, size_t max, char **out, ordo_error_t *err);

/** Wipes and frees the secret string @p secret (a key or password read with
 *  ordo_file_read), so it does not linger in freed memory. NULL is a no-op. */
void ordo_secret_free(char *secret);

/** Whether @p addr ("host:port", "[::1]:port") names a loopback host
 *  (127.0.0.0/8, ::1, localhost): what a daemon may serve without TLS. */
bool ordo_addr_is_loopback(const char *addr);

/** The option lines of ordo_config_usage() alone: flag, environment variable, help, default. */
void ordo_config_print_options(FILE *out, const ordo_option_t *opts, size_t n);

/**
 * A program's command line: ordo_config_load, and on an error the message
 * ("@p prog: ...") on stderr, on --help the usage on stdout.
 * @return -1 to go on, or the exit status (2 after an error, 0 after --help).
 */
int ordo_config_cli(const char *prog, const ordo_option_t *opts, size_t n, void *cfg, int argc, char **argv);

#endif

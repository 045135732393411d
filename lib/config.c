#include "ordo/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static ordo_status parse_bool(const char *text, bool *out)
{
    static const char *yes[] = {"1", "true", "on", "yes"}, *no[] = {"0", "false", "off", "no"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return ORDO_OK;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return ORDO_OK;
        }
    }
    return ORDO_INVALID;
}

static ordo_status set_value(const ordo_option_t *o, void *cfg, const char *text,
                             const char *source, ordo_error_t *err)
{
    char *field = (char *)cfg + o->offset;
    char *end;
    long v;

    switch (o->type) {
    case ORDO_OPT_STRING:
        *(const char **)field = text;
        return ORDO_OK;
    case ORDO_OPT_INT:
        errno = 0;
        v = strtol(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || v < o->min || v > o->max)
            return ordo_error_set(err, ORDO_INVALID, "%s: --%s must be an integer in %ld..%ld, got \"%s\"",
                                  source, o->flag, o->min, o->max, text);
        *(int *)field = (int)v;
        return ORDO_OK;
    case ORDO_OPT_BOOL:
        if (parse_bool(text, (bool *)field) != ORDO_OK)
            return ordo_error_set(err, ORDO_INVALID, "%s: --%s must be true or false, got \"%s\"",
                                  source, o->flag, text);
        return ORDO_OK;
    }
    return ordo_error_set(err, ORDO_INTERNAL, "bad option table");
}

static const ordo_option_t *find_flag(const ordo_option_t *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].flag) == len && strncmp(opts[i].flag, name, len) == 0)
            return &opts[i];
    return NULL;
}

ordo_status ordo_config_load(const ordo_option_t *opts, size_t n, void *cfg,
                             int argc, char **argv, bool *help, ordo_error_t *err)
{
    ordo_status st;

    *help = false;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            return ORDO_OK;
        }
    for (size_t i = 0; i < n; i++) {
        const char *env = opts[i].env ? getenv(opts[i].env) : NULL;
        if (env != NULL && env[0] != '\0')
            st = set_value(&opts[i], cfg, env, opts[i].env, err);
        else
            st = set_value(&opts[i], cfg, opts[i].def, "default", err);
        if (st != ORDO_OK)
            return st;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq, *value;
        const ordo_option_t *o;
        if (strncmp(arg, "--", 2) != 0)
            return ordo_error_set(err, ORDO_INVALID, "unexpected argument \"%s\" (see --help)", arg);
        arg += 2;
        eq = strchr(arg, '=');
        o = find_flag(opts, n, arg, eq ? (size_t)(eq - arg) : strlen(arg));
        if (o == NULL)
            return ordo_error_set(err, ORDO_INVALID, "unknown option --%s (see --help)", arg);
        if (eq != NULL)
            value = eq + 1;
        else if (o->type == ORDO_OPT_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else
            return ordo_error_set(err, ORDO_INVALID, "--%s needs a value", o->flag);
        if ((st = set_value(o, cfg, value, "flag", err)) != ORDO_OK)
            return st;
    }
    return ORDO_OK;
}

void ordo_config_usage(FILE *out, const char *prog, const ordo_option_t *opts, size_t n)
{
    fprintf(out, "usage: %s [--option value ...]\n\n", prog);
    ordo_config_print_options(out, opts, n);
}

void ordo_config_print_options(FILE *out, const ordo_option_t *opts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  --%-24s %-22s %s (default: %s)\n", opts[i].flag,
                opts[i].env ? opts[i].env : "", opts[i].help, opts[i].def[0] ? opts[i].def : "\"\"");
}

int ordo_config_cli(const char *prog, const ordo_option_t *opts, size_t n, void *cfg, int argc, char **argv)
{
    ordo_error_t err;
    bool help;

    if (ordo_config_load(opts, n, cfg, argc, argv, &help, &err) != ORDO_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 2;
    }
    if (help) {
        ordo_config_usage(stdout, prog, opts, n);
        return 0;
    }
    return -1;
}

bool ordo_opt_given(const char *value)
{
    return value != NULL && value[0] != '\0';
}

bool ordo_addr_is_loopback(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    size_t len = colon != NULL ? (size_t)(colon - addr) : strlen(addr);
    char host[256];

    if (len >= sizeof host)
        return false;
    memcpy(host, addr, len);
    host[len] = '\0';
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        memmove(host, host + 1, len - 2);
        host[len - 2] = '\0';
    }
    return strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 || strncmp(host, "127.", 4) == 0;
}

ordo_status ordo_file_read(const char *path, size_t max, char **out, ordo_error_t *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0;

    *out = NULL;
    if (f == NULL)
        return ordo_error_set(err, ORDO_INVALID, "%s: %s", path, strerror(errno));
    if ((buf = malloc(max + 1)) != NULL)
        n = fread(buf, 1, max + 1, f);
    fclose(f);
    if (buf == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    if (n == 0 || n > max) {
        free(buf);
        return ordo_error_set(err, ORDO_INVALID, "%s: %s", path, n == 0 ? "empty or unreadable" : "too large");
    }
    buf[n] = '\0';
    *out = buf;
    return ORDO_OK;
}

void ordo_secret_free(char *secret)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, strlen(secret));   /* unlike memset, not dropped as a store before free */
    free(secret);
}

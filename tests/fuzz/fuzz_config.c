/* Fuzz target: a command line (lib/config.c) — the input's lines are the
 * arguments — and what is read from it: URLs shown in logs (passwords
 * redacted), addresses judged loopback or not. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/config.h"
#include "ordo/log.h"

typedef struct fuzz_config {
    const char *url, *addr, *name;
    int count;
    bool flag;
} fuzz_config_t;

#define OPT(...) ORDO_OPTION(fuzz_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("url", NULL, "nats://127.0.0.1:4222", ORDO_OPT_STRING, url, 0, 0, "a URL"),
    OPT("addr", NULL, "127.0.0.1:0", ORDO_OPT_STRING, addr, 0, 0, "an address"),
    OPT("name", NULL, "", ORDO_OPT_STRING, name, 0, 0, "a name"),
    OPT("count", NULL, "1", ORDO_OPT_INT, count, 0, 1000, "a number"),
    OPT("flag", NULL, "false", ORDO_OPT_BOOL, flag, 0, 0, "a flag"),
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *argv[32], *save = NULL, shown[512];
    int argc = 0;
    fuzz_config_t cfg;
    ordo_error_t err;
    bool help;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    argv[argc++] = "fuzz";
    for (char *a = strtok_r(text, "\n", &save); a != NULL && argc < 32; a = strtok_r(NULL, "\n", &save))
        argv[argc++] = a;
    memset(&cfg, 0, sizeof cfg);
    /* (with --help nothing else is filled in: the caller prints the usage) */
    if (ordo_config_load(options, sizeof options / sizeof options[0], &cfg, argc, argv, &help, &err) == ORDO_OK &&
        !help) {
        (void)ordo_log_url(cfg.url, shown, sizeof shown);
        (void)ordo_addr_is_loopback(cfg.addr);
        (void)ordo_opt_given(cfg.name);
    }
    for (int i = 1; i < argc; i++) {
        (void)ordo_log_url(argv[i], shown, sizeof shown);
        (void)ordo_addr_is_loopback(argv[i]);
    }
    free(text);
    return 0;
}

/* What ordo_daemon_init sets up for the libraries a daemon loads (its own
 * process: the set-up is once per process and blocks the stop signals). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "ordo/daemon.h"

/* cnats starts OpenSSL (its NUID seed) the way every daemon's first NATS
 * connection does; OpenSSL's error strings stay unloaded, even when asked
 * for afterwards. */
static void openssl_error_strings_stay_unloaded(void **state)
{
    const char *level = "warn";
    char *argv[] = {"unit_daemon", NULL};
    natsOptions *opts = NULL;

    (void)state;
    assert_int_equal(ordo_daemon_init("unit_daemon", NULL, 0, NULL, &level, 1, argv), -1);
    assert_int_equal(natsOptions_Create(&opts), NATS_OK);
    natsOptions_Destroy(opts);
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    assert_null(ERR_lib_error_string(ERR_PACK(ERR_LIB_EVP, 0, 0)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(openssl_error_strings_stay_unloaded)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "ordo/retry.h"

#include <stdlib.h>
#include <time.h>

int ordo_backoff_ms(const ordo_retry_policy_t *policy, int attempt)
{
    long ms = policy->base_delay_ms;

    for (int i = 1; i < attempt && ms < policy->max_delay_ms; i++)
        ms *= 2;
    return (int)(ms > policy->max_delay_ms ? policy->max_delay_ms : ms);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

void ordo_backoff_sleep(const ordo_retry_policy_t *policy, int attempt)
{
    struct timespec now;
    long ms = ordo_backoff_ms(policy, attempt);
    unsigned seed;

    clock_gettime(CLOCK_MONOTONIC, &now);
    seed = (unsigned)(now.tv_nsec ^ (long)attempt * 2654435761L);
    /* full jitter in [ms/2, ms]: racing writers spread out instead of colliding again */
    sleep_us(ms * 500 + (long)(rand_r(&seed) % (ms * 500 + 1)));
}

void ordo_sleep_ms(int ms)
{
    sleep_us((long)ms * 1000);
}

struct timespec ordo_deadline_us(long us)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += us / 1000000;
    ts.tv_nsec += (us % 1000000) * 1000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

struct timespec ordo_deadline_ms(int ms)
{
    return ordo_deadline_us((long)ms * 1000);
}

int64_t ordo_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double ordo_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t ordo_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t ordo_mono_ms(void)
{
    return ordo_mono_us() / 1000;
}

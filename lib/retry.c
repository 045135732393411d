#include "ordo/retry.h"

#include <stdlib.h>
#include <time.h>

void ordo_backoff_sleep(const ordo_retry_policy_t *policy, int attempt)
{
    struct timespec now, ts;
    long ms = policy->base_delay_ms;
    unsigned seed;

    for (int i = 1; i < attempt && ms < policy->max_delay_ms; i++)
        ms *= 2;
    if (ms > policy->max_delay_ms)
        ms = policy->max_delay_ms;
    clock_gettime(CLOCK_MONOTONIC, &now);
    seed = (unsigned)(now.tv_nsec ^ (long)attempt * 2654435761L);
    /* full jitter in [ms/2, ms]: racing writers spread out instead of colliding again */
    long us = ms * 500 + (long)(rand_r(&seed) % (ms * 500 + 1));
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    nanosleep(&ts, NULL);
}

void ordo_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

int64_t ordo_mono_ms(void)
{
    return ordo_mono_us() / 1000;
}

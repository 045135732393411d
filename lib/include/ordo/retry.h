/**
 * @file retry.h
 * Bounded retries with jittered exponential backoff, and deadlines for
 * bounded waits.
 */
#ifndef ORDO_RETRY_H
#define ORDO_RETRY_H

#include <stdint.h>
#include <time.h>

typedef struct ordo_retry_policy {
    int max_attempts;
    int base_delay_ms;
    int max_delay_ms;
} ordo_retry_policy_t;

/** The backoff for @p attempt (1-based) in milliseconds: base x 2^(attempt-1), capped at max. */
int ordo_backoff_ms(const ordo_retry_policy_t *policy, int attempt);

/** Sleeps the backoff for @p attempt (1-based): ordo_backoff_ms, jittered in [d/2, d]. */
void ordo_backoff_sleep(const ordo_retry_policy_t *policy, int attempt);

/** Sleeps @p ms milliseconds. */
void ordo_sleep_ms(int ms);

/** The CLOCK_REALTIME instant @p ms from now, for pthread_cond_timedwait. */
struct timespec ordo_deadline_ms(int ms);

/** The same, @p us microseconds from now. */
struct timespec ordo_deadline_us(long us);

/** Milliseconds on the monotonic clock (for intervals, never for dates). */
int64_t ordo_mono_ms(void);

/** The same in microseconds. */
int64_t ordo_mono_us(void);

/** Wall-clock microseconds since the epoch (the unit of events' created_at). */
int64_t ordo_wall_us(void);

/** The same in seconds, to the nanosecond (benchmark timings). */
double ordo_mono_s(void);

#endif

/*
 * Retry delays: exponential backoff with full jitter, and Retry-After.
 * The random source is a small seeded generator so that tests can check
 * the bounds deterministically.
 */

#ifndef SBW_BACKOFF_H
#define SBW_BACKOFF_H

#include <stdint.h>
#include <time.h>


typedef struct {
    uint64_t  state;
} sbw_rng_t;


void sbw_rng_seed(sbw_rng_t *r, uint64_t seed);
uint64_t sbw_rng_next(sbw_rng_t *r);
uint64_t sbw_rng_below(sbw_rng_t *r, uint64_t n);
long sbw_backoff_ms(sbw_rng_t *r, unsigned attempt, long base_ms,
    long cap_ms);
long sbw_retry_delay_ms(sbw_rng_t *r, unsigned attempt, long base_ms,
    long cap_ms, long retry_after_ms, long retry_after_cap_ms);
long sbw_retry_after_parse(const char *value, time_t now);


#endif /* SBW_BACKOFF_H */

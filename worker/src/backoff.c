/*
 * Exponential backoff with full jitter (the delay is drawn uniformly
 * between zero and the exponential ceiling, which spreads the retries of
 * many workers instead of synchronising them), plus Retry-After handling.
 */

#include <ctype.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "backoff.h"


/*
 * Seed the generator.  Any seed works, zero included: splitmix64 has no
 * bad states.
 */
void
sbw_rng_seed(sbw_rng_t *r, uint64_t seed)
{
    r->state = seed;
}


/*
 * Next 64 random bits (splitmix64: a Weyl sequence through a 64-bit
 * finaliser; fast, statistically fine for jitter, not for secrets).
 */
uint64_t
sbw_rng_next(sbw_rng_t *r)
{
    uint64_t  z;

    r->state += 0x9e3779b97f4a7c15ULL;

    z = r->state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


/*
 * A uniform value in [0, n), without modulo bias (rejection sampling).
 * Returns 0 when n is 0.
 */
uint64_t
sbw_rng_below(sbw_rng_t *r, uint64_t n)
{
    uint64_t  x, limit;

    if (n == 0) {
        return 0;
    }

    limit = UINT64_MAX - UINT64_MAX % n;

    do {
        x = sbw_rng_next(r);
    } while (x >= limit);

    return x % n;
}


/*
 * Full-jitter delay for the given attempt (0 for the first retry): a
 * uniform draw in [0, min(cap, base * 2^attempt)] milliseconds.
 */
long
sbw_backoff_ms(sbw_rng_t *r, unsigned attempt, long base_ms, long cap_ms)
{
    long  ceiling;

    if (base_ms <= 0 || cap_ms <= 0) {
        return 0;
    }

    ceiling = base_ms;

    while (attempt-- > 0 && ceiling < cap_ms) {
        ceiling *= 2;
    }

    if (ceiling > cap_ms) {
        ceiling = cap_ms;
    }

    return (long) sbw_rng_below(r, (uint64_t) ceiling + 1);
}


/*
 * The delay before the next try.  When the server sent Retry-After
 * (retry_after_ms >= 0) it is honoured, capped at retry_after_cap_ms so
 * that a silly value cannot park an entry for hours, and a little jitter
 * (up to base_ms) is added so that workers told the same instant do not
 * all return together.  Otherwise it is the plain full-jitter backoff.
 */
long
sbw_retry_delay_ms(sbw_rng_t *r, unsigned attempt, long base_ms,
    long cap_ms, long retry_after_ms, long retry_after_cap_ms)
{
    long  d;

    if (retry_after_ms < 0) {
        return sbw_backoff_ms(r, attempt, base_ms, cap_ms);
    }

    d = retry_after_ms;

    if (d > retry_after_cap_ms) {
        d = retry_after_cap_ms;
    }

    if (base_ms > 0) {
        d += (long) sbw_rng_below(r, (uint64_t) base_ms);
    }

    return d;
}


/*
 * Parse a Retry-After header value: delay-seconds ("120") or an HTTP-date
 * (converted with libcurl's date parser against now).  Returns the delay
 * in milliseconds, 0 for a date in the past, or -1 if the value is
 * unusable.
 */
long
sbw_retry_after_parse(const char *value, time_t now)
{
    char        *end;
    long         secs;
    time_t       t;
    const char  *p;

    if (value == NULL) {
        return -1;
    }

    p = value;

    while (*p == ' ' || *p == '\t') {
        p++;
    }

    if (*p == '\0') {
        return -1;
    }

    if (isdigit((unsigned char) *p)) {
        secs = strtol(p, &end, 10);

        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') {
            end++;
        }

        if (*end != '\0' || secs < 0 || secs > 86400 * 7) {
            return -1;
        }

        return secs * 1000;
    }

    t = curl_getdate(p, NULL);
    if (t == (time_t) -1) {
        return -1;
    }

    if (t <= now) {
        return 0;
    }

    if (t - now > 86400 * 7) {
        return -1;
    }

    return (long) (t - now) * 1000;
}

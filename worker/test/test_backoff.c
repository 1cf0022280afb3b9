/*
 * Backoff bounds with a seeded generator, and Retry-After parsing.
 */

#include <curl/curl.h>

#include "backoff.h"
#include "tests.h"


static void
test_rng_deterministic(void **state)
{
    int        i;
    sbw_rng_t  a, b, c;

    (void) state;

    sbw_rng_seed(&a, 42);
    sbw_rng_seed(&b, 42);
    sbw_rng_seed(&c, 43);

    for (i = 0; i < 100; i++) {
        assert_true(sbw_rng_next(&a) == sbw_rng_next(&b));
    }

    sbw_rng_seed(&a, 42);
    assert_false(sbw_rng_next(&a) == sbw_rng_next(&c));
}


/*
 * Every delay lies in [0, min(cap, base * 2^attempt)], and over many
 * draws the delays reach both ends of that range (full jitter, not a
 * fixed or half-jittered delay).
 */
static void
test_full_jitter_bounds(void **state)
{
    int        i;
    long       d, lo, hi, ceiling;
    unsigned   attempt;
    sbw_rng_t  r;

    (void) state;

    sbw_rng_seed(&r, 20260316);

    for (attempt = 0; attempt < 40; attempt++) {
        ceiling = 500;

        for (i = 0; i < (int) attempt && ceiling < 60000; i++) {
            ceiling *= 2;
        }

        if (ceiling > 60000) {
            ceiling = 60000;
        }

        lo = ceiling;
        hi = 0;

        for (i = 0; i < 2000; i++) {
            d = sbw_backoff_ms(&r, attempt, 500, 60000);

            assert_in_range(d, 0, ceiling);

            if (d < lo) {
                lo = d;
            }

            if (d > hi) {
                hi = d;
            }
        }

        assert_true(lo < ceiling / 10);
        assert_true(hi > ceiling - ceiling / 10);
    }
}


static void
test_backoff_degenerate(void **state)
{
    sbw_rng_t  r;

    (void) state;

    sbw_rng_seed(&r, 1);

    assert_int_equal(sbw_backoff_ms(&r, 3, 0, 1000), 0);
    assert_int_equal(sbw_backoff_ms(&r, 3, 100, 0), 0);
    assert_in_range(sbw_backoff_ms(&r, 1000, 100, 250), 0, 250);
}


/*
 * Retry-After wins over the exponential delay, capped, plus less than one
 * base of jitter.
 */
static void
test_retry_after_honoured(void **state)
{
    int        i;
    long       d;
    sbw_rng_t  r;

    (void) state;

    sbw_rng_seed(&r, 7);

    for (i = 0; i < 1000; i++) {
        d = sbw_retry_delay_ms(&r, 0, 500, 60000, 3000, 120000);
        assert_in_range(d, 3000, 3499);

        d = sbw_retry_delay_ms(&r, 0, 500, 60000, 3600000, 120000);
        assert_in_range(d, 120000, 120499);

        d = sbw_retry_delay_ms(&r, 2, 500, 60000, -1, 120000);
        assert_in_range(d, 0, 2000);
    }
}


static void
test_retry_after_parse(void **state)
{
    time_t  t;

    (void) state;

    assert_int_equal(sbw_retry_after_parse("120", 0), 120000);
    assert_int_equal(sbw_retry_after_parse(" 5\r\n", 0), 5000);
    assert_int_equal(sbw_retry_after_parse("0", 0), 0);
    assert_int_equal(sbw_retry_after_parse("abc", 0), -1);
    assert_int_equal(sbw_retry_after_parse("-1", 0), -1);
    assert_int_equal(sbw_retry_after_parse("1.5", 0), -1);
    assert_int_equal(sbw_retry_after_parse("", 0), -1);
    assert_int_equal(sbw_retry_after_parse(NULL, 0), -1);

    t = curl_getdate("Wed, 21 Oct 2015 07:28:00 GMT", NULL);
    assert_true(t > 0);

    assert_int_equal(sbw_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT",
                                           t - 30), 30000);
    assert_int_equal(sbw_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT",
                                           t + 30), 0);
}


int
test_backoff_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_rng_deterministic),
        cmocka_unit_test(test_full_jitter_bounds),
        cmocka_unit_test(test_backoff_degenerate),
        cmocka_unit_test(test_retry_after_honoured),
        cmocka_unit_test(test_retry_after_parse),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}

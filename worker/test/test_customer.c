/*
 * Customer strategy "email": which address an order is matched by, the
 * BC filter, and the cache's hits, misses and expiry.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customer.h"
#include "tests.h"


/* the address sbw_order_email() picks from a JSON order, or "-" */
static const char *
email_of(const char *json, char *buf, size_t len)
{
    json_t  *o;

    o = json_loads(json, JSON_ALLOW_NUL, NULL);
    assert_non_null(o);

    if (sbw_order_email(o, buf, len) != 0) {
        snprintf(buf, len, "-");
    }

    json_decref(o);
    return buf;
}


static void
test_order_email(void **state)
{
    char  b[SBW_EMAIL_BUFLEN], big[200];

    (void) state;

    assert_string_equal(email_of("{\"customer\":{\"email\":\"c@x.com\"},"
                                 "\"email\":\"e@x.com\"}", b, sizeof(b)),
                        "c@x.com");
    assert_string_equal(email_of("{\"customer\":null,\"email\":\" e@x.com "
                                 "\",\"contact_email\":\"k@x.com\"}", b,
                                 sizeof(b)), "e@x.com");
    assert_string_equal(email_of("{\"email\":\"\",\"contact_email\":"
                                 "\"k@x.com\"}", b, sizeof(b)), "k@x.com");

    /* guest / POS: null customer, empty e-mail, or nothing at all */
    assert_string_equal(email_of("{\"customer\":null,\"email\":\"\"}", b,
                                 sizeof(b)), "-");
    assert_string_equal(email_of("{}", b, sizeof(b)), "-");
    assert_string_equal(email_of("{\"email\":\"not-an-address\"}", b,
                                 sizeof(b)), "-");
    assert_string_equal(email_of("{\"email\":\"a\\u0000@x.com\"}", b,
                                 sizeof(b)), "-");

    /* longer than BC's Text[80]: it cannot be a BC customer's */
    memset(big, 'a', 90);
    snprintf(big + 90, sizeof(big) - 90, "@x.com");
    {
        char  json[300];

        snprintf(json, sizeof(json), "{\"email\":\"%s\"}", big);
        assert_string_equal(email_of(json, b, sizeof(b)), "-");
    }
}


static void
test_filter(void **state)
{
    char  *f;

    (void) state;

    f = sbw_customer_filter("a@x.com");
    assert_string_equal(f, "email eq 'a@x.com'");
    free(f);

    f = sbw_customer_filter("O'Brien@X.com");
    assert_string_equal(f, "email eq 'O''Brien@X.com' or "
                        "email eq 'o''brien@x.com'");
    free(f);
}


static void
test_cache(void **state)
{
    char                   n[SBW_CUSTOMER_NO_BUFLEN];
    sbw_customer_cache_t  *c;

    (void) state;

    c = malloc(sizeof(*c));
    assert_non_null(c);
    sbw_customer_cache_init(c, 600.0);

    assert_int_equal(sbw_customer_cache_get(c, "a@x.com", 100.0, n,
                                            sizeof(n)), 0);

    sbw_customer_cache_put(c, "A@X.com", "10000", 100.0);
    sbw_customer_cache_put(c, "b@x.com", "", 100.0);

    /* case does not matter; "not found" is an answer too */
    assert_int_equal(sbw_customer_cache_get(c, "a@x.COM", 699.0, n,
                                            sizeof(n)), 1);
    assert_string_equal(n, "10000");
    assert_int_equal(sbw_customer_cache_get(c, "b@x.com", 699.0, n,
                                            sizeof(n)), 1);
    assert_string_equal(n, "");
    assert_int_equal(sbw_customer_cache_get(c, "c@x.com", 699.0, n,
                                            sizeof(n)), 0);

    /* expired after the TTL */
    assert_int_equal(sbw_customer_cache_get(c, "a@x.com", 700.0, n,
                                            sizeof(n)), 0);

    free(c);
}


/*
 * Two buyers of one company whose keys fell in the same slot of the
 * former direct-mapped cache (FNV-1a mod 1024: both slot 570) evicted
 * each other, so alternating orders of the two looked their customer up
 * every time (seen in the worker benchmark: 0.2 extra BC calls per
 * order).  Both stay cached now, and so do many more addresses than one
 * slot could hold.
 */
static void
test_cache_collisions(void **state)
{
    int                    i, hits;
    char                   n[SBW_CUSTOMER_NO_BUFLEN], key[128], want[32];
    sbw_customer_cache_t  *c;
    const char            *morgan, *sam;

    (void) state;

    morgan = "a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6/morgan.dummy@example.com";
    sam = "a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6/sam.testperson@example.com";

    c = malloc(sizeof(*c));
    assert_non_null(c);
    sbw_customer_cache_init(c, 600.0);

    sbw_customer_cache_put(c, morgan, "", 100.0);
    sbw_customer_cache_put(c, sam, "C00010", 100.5);

    assert_int_equal(sbw_customer_cache_get(c, morgan, 101.0, n,
                                            sizeof(n)), 1);
    assert_string_equal(n, "");
    assert_int_equal(sbw_customer_cache_get(c, sam, 101.0, n, sizeof(n)), 1);
    assert_string_equal(n, "C00010");

    /* a sixteenth of the slots' worth of buyers: every one is still there */
    for (i = 0; i < SBW_CUSTOMER_CACHE_SLOTS / 16; i++) {
        snprintf(key, sizeof(key), "31b7c38b/buyer.%d@example.com", i);
        snprintf(want, sizeof(want), "N%d", i);
        sbw_customer_cache_put(c, key, want, 200.0);
    }

    hits = 0;

    for (i = 0; i < SBW_CUSTOMER_CACHE_SLOTS / 16; i++) {
        snprintf(key, sizeof(key), "31b7c38b/buyer.%d@example.com", i);
        snprintf(want, sizeof(want), "N%d", i);

        if (sbw_customer_cache_get(c, key, 201.0, n, sizeof(n)) == 1
            && strcmp(n, want) == 0)
        {
            hits++;
        }
    }

    assert_int_equal(hits, SBW_CUSTOMER_CACHE_SLOTS / 16);

    /* a put for a cached address replaces its answer, in place */
    sbw_customer_cache_put(c, sam, "C00020", 300.0);
    assert_int_equal(sbw_customer_cache_get(c, sam, 301.0, n, sizeof(n)), 1);
    assert_string_equal(n, "C00020");

    free(c);
}


int
test_customer_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_order_email),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_cache_collisions),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("customer", tests, NULL, NULL);
}

/*
 * Decimal money parsing and formatting.
 */

#include <string.h>

#include "money.h"
#include "tests.h"


static void
test_parse_valid(void **state)
{
    int64_t  c;

    (void) state;

    assert_int_equal(sbw_money_parse("1000.80", &c), 0);
    assert_int_equal(c, 100080);

    assert_int_equal(sbw_money_parse("0.5", &c), 0);
    assert_int_equal(c, 50);

    assert_int_equal(sbw_money_parse("7", &c), 0);
    assert_int_equal(c, 700);

    assert_int_equal(sbw_money_parse("-49.00", &c), 0);
    assert_int_equal(c, -4900);

    assert_int_equal(sbw_money_parse("0.00", &c), 0);
    assert_int_equal(c, 0);

    /* trailing zeros beyond cents carry no information */
    assert_int_equal(sbw_money_parse("1.500", &c), 0);
    assert_int_equal(c, 150);

    assert_int_equal(sbw_money_parse("465611.90", &c), 0);
    assert_int_equal(c, 46561190);

    assert_int_equal(sbw_money_parse("999999999999999.99", &c), 0);
    assert_int_equal(c, 99999999999999999LL);
}


static void
test_parse_invalid(void **state)
{
    size_t       i;
    int64_t      c;

    static const char *const  bad[] = {
        "", "-", ".", "1.", ".5", "abc", "1,00", " 1.00", "1.00 ", "1e3",
        "+1.00", "1.234", "0.001", "--1", "1.2.3", "0x10",
        "1000000000000000.00"
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = 12345;

        if (sbw_money_parse(bad[i], &c) != -1) {
            fail_msg("\"%s\" was accepted as %lld", bad[i], (long long) c);
        }
    }

    assert_int_equal(sbw_money_parse(NULL, &c), -1);
}


/*
 * Ten times 0.10 is exactly 1.00 in cents; in binary floating point it is
 * not, which is why money never goes through double here.
 */
static void
test_sum_is_exact(void **state)
{
    int      i;
    double   d;
    int64_t  c, sum;

    (void) state;

    sum = 0;
    d = 0.0;

    for (i = 0; i < 10; i++) {
        assert_int_equal(sbw_money_parse("0.10", &c), 0);
        sum += c;
        d += 0.10;
    }

    assert_int_equal(sum, 100);
    assert_true(d != 1.0);
}


static void
test_format(void **state)
{
    char  buf[SBW_MONEY_BUFLEN];

    (void) state;

    sbw_money_format(100080, buf, sizeof(buf));
    assert_string_equal(buf, "1000.80");

    sbw_money_format(-4900, buf, sizeof(buf));
    assert_string_equal(buf, "-49.00");

    sbw_money_format(5, buf, sizeof(buf));
    assert_string_equal(buf, "0.05");

    sbw_money_format(-5, buf, sizeof(buf));
    assert_string_equal(buf, "-0.05");

    sbw_money_format(0, buf, sizeof(buf));
    assert_string_equal(buf, "0.00");

    sbw_money_format(INT64_MIN, buf, sizeof(buf));
    assert_string_equal(buf, "-92233720368547758.08");
}


static void
test_from_json(void **state)
{
    json_t   *v;
    int64_t   c;

    (void) state;

    v = json_string("54.90");
    assert_int_equal(sbw_money_from_json(v, &c), 0);
    assert_int_equal(c, 5490);
    json_decref(v);

    v = json_integer(12);
    assert_int_equal(sbw_money_from_json(v, &c), 0);
    assert_int_equal(c, 1200);
    json_decref(v);

    /* reals lost their text in the parser: refused */
    v = json_real(1000.8);
    assert_int_equal(sbw_money_from_json(v, &c), -1);
    json_decref(v);

    assert_int_equal(sbw_money_from_json(NULL, &c), -1);

    v = json_null();
    assert_int_equal(sbw_money_from_json(v, &c), -1);
}


int
test_money_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_sum_is_exact),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_from_json),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("money", tests, NULL, NULL);
}

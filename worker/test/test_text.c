/*
 * UTF-8 aware truncation, Code[35] normalisation, OData quoting.
 */

#include <stdlib.h>
#include <string.h>

#include "tests.h"
#include "text.h"


/* a string made of n copies of the UTF-8 sequence s */
static char *
repeat(const char *s, size_t n)
{
    char    *out;
    size_t   i, len;

    len = strlen(s);
    out = malloc(len * n + 1);
    assert_non_null(out);

    for (i = 0; i < n; i++) {
        memcpy(out + i * len, s, len);
    }

    out[len * n] = '\0';
    return out;
}


static void
test_ascii_prefix(void **state)
{
    (void) state;

    assert_int_equal(sbw_utf8_prefix("ATHENS Desk", 100), 11);
    assert_int_equal(sbw_utf8_prefix("ATHENS Desk", 6), 6);
    assert_int_equal(sbw_utf8_prefix("", 100), 0);
    assert_int_equal(sbw_utf8_prefix("abc", 0), 0);
}


/*
 * 101 two-byte characters: the cut keeps 100 characters (200 bytes), not
 * 100 bytes (which would be 50 characters).
 */
static void
test_two_byte_cut_in_characters(void **state)
{
    char  *s, *t;

    (void) state;

    s = repeat("\xc3\xa4", 101);                  /* U+00E4 */

    assert_int_equal(sbw_utf8_length(s), 101);
    assert_int_equal(sbw_utf8_prefix(s, 100), 200);

    t = sbw_utf8_truncate(s, 100);
    assert_non_null(t);
    assert_int_equal(strlen(t), 200);
    assert_int_equal(sbw_utf8_length(t), 100);

    free(t);
    free(s);
}


/*
 * A character never gets cut in half: 99 ASCII letters and a three-byte
 * CJK character fit in 100; with 100 letters first, the CJK character is
 * dropped whole.
 */
static void
test_no_split_sequence(void **state)
{
    char  *a, *s;

    (void) state;

    a = repeat("a", 99);
    s = malloc(200);
    assert_non_null(s);

    strcpy(s, a);
    strcat(s, "\xe4\xb8\xad");                    /* U+4E2D */
    assert_int_equal(sbw_utf8_prefix(s, 100), 102);

    strcpy(s, a);
    strcat(s, "a\xe4\xb8\xad");
    assert_int_equal(sbw_utf8_prefix(s, 100), 100);

    free(s);
    free(a);
}


/*
 * Characters outside the BMP take two UTF-16 units in BC (.NET), so an
 * emoji needs two of the hundred places.
 */
static void
test_astral_counts_two(void **state)
{
    char  *a, *s;

    (void) state;

    a = repeat("a", 99);
    s = malloc(200);
    assert_non_null(s);

    strcpy(s, a);
    strcat(s, "\xf0\x9f\x98\x80");                /* U+1F600 */

    assert_int_equal(sbw_utf8_length(s), 101);
    assert_int_equal(sbw_utf8_prefix(s, 100), 99);
    assert_int_equal(sbw_utf8_prefix(s, 101), 103);

    free(s);
    free(a);
}


static void
test_code35_normalize(void **state)
{
    char  out[SBW_CODE35_BUFLEN];

    (void) state;

    sbw_code_normalize("  shopify-6021450011001 \t", out, sizeof(out),
                       SBW_BC_CODE35_LEN);
    assert_string_equal(out, "SHOPIFY-6021450011001");

    /* the long-name order's name: 38 characters, cut to 35 */
    sbw_code_normalize("#ACME-EUROPE-WEBSHOP-2026-0000012345-B", out,
                       sizeof(out), SBW_BC_CODE35_LEN);
    assert_string_equal(out, "#ACME-EUROPE-WEBSHOP-2026-000001234");
    assert_int_equal(strlen(out), 35);

    /* a blank exposed by the cut is trimmed as BC would */
    sbw_code_normalize("abcdefghijklmnopqrstuvwxyz01234567 89", out,
                       sizeof(out), SBW_BC_CODE35_LEN);
    assert_string_equal(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZ01234567");

    sbw_code_normalize("   ", out, sizeof(out), SBW_BC_CODE35_LEN);
    assert_string_equal(out, "");
}


static void
test_odata_quote(void **state)
{
    char  *q;

    (void) state;

    q = sbw_odata_quote("SHOPIFY-1");
    assert_string_equal(q, "'SHOPIFY-1'");
    free(q);

    q = sbw_odata_quote("O'BRIEN''S");
    assert_string_equal(q, "'O''BRIEN''''S'");
    free(q);

    q = sbw_odata_quote("");
    assert_string_equal(q, "''");
    free(q);
}


/*
 * Shop domains are stored and compared in lower case; a value that does
 * not fit is refused rather than cut.
 */
static void
test_ascii_lower(void **state)
{
    char  out[32];

    (void) state;

    assert_int_equal(sbw_ascii_lower("ACME-Demo.MyShopify.com", out,
                                     sizeof(out)), 0);
    assert_string_equal(out, "acme-demo.myshopify.com");

    assert_int_equal(sbw_ascii_lower("\xc3\x84x-9", out, sizeof(out)), 0);
    assert_string_equal(out, "\xc3\x84x-9");

    assert_int_equal(sbw_ascii_lower("abcdefgh", out, 9), 0);
    assert_int_equal(sbw_ascii_lower("abcdefghi", out, 9), -1);
    assert_string_equal(out, "");
}


int
test_text_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_ascii_prefix),
        cmocka_unit_test(test_two_byte_cut_in_characters),
        cmocka_unit_test(test_no_split_sequence),
        cmocka_unit_test(test_astral_counts_two),
        cmocka_unit_test(test_code35_normalize),
        cmocka_unit_test(test_odata_quote),
        cmocka_unit_test(test_ascii_lower),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("text", tests, NULL, NULL);
}

/*
 * Decimal money parsing and formatting in integer cents.
 */

#include <stdio.h>
#include <string.h>

#include "money.h"


/* integer part digits accepted: 15 keeps cents far inside int64_t */
#define SBW_MONEY_MAX_DIGITS  15


/*
 * Parse a decimal amount such as "1000.80", "-49.00", "7", "0.5" into
 * cents.  The grammar is deliberately strict: an optional minus sign, one
 * or more digits, then optionally a point and one or more digits.  Digits
 * beyond the second decimal are accepted only when they are zeros
 * ("1.500"), since anything else cannot be represented in cents without
 * rounding, and rounding money silently is the bug this module exists to
 * avoid.  Returns 0 on success and -1 on any malformed input.
 */
int
sbw_money_parse(const char *s, int64_t *cents)
{
    int          neg, ndigits, nfrac;
    int64_t      whole, frac;
    const char  *p;

    if (s == NULL || cents == NULL) {
        return -1;
    }

    p = s;
    neg = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }

    whole = 0;
    ndigits = 0;

    while (*p >= '0' && *p <= '9') {
        if (++ndigits > SBW_MONEY_MAX_DIGITS) {
            return -1;
        }

        whole = whole * 10 + (*p - '0');
        p++;
    }

    if (ndigits == 0) {
        return -1;
    }

    frac = 0;
    nfrac = 0;

    if (*p == '.') {
        p++;

        if (*p < '0' || *p > '9') {
            return -1;
        }

        while (*p >= '0' && *p <= '9') {
            if (nfrac < 2) {
                frac = frac * 10 + (*p - '0');

            } else if (*p != '0') {
                return -1;
            }

            nfrac++;
            p++;
        }
    }

    if (*p != '\0') {
        return -1;
    }

    if (nfrac == 1) {
        frac *= 10;
    }

    *cents = whole * 100 + frac;

    if (neg) {
        *cents = -*cents;
    }

    return 0;
}


/*
 * Read a money value from a JSON node: the usual decimal string, or a
 * JSON integer (a whole amount).  JSON reals are refused because jansson
 * has already turned them into doubles and the exact text is gone.
 */
int
sbw_money_from_json(const json_t *v, int64_t *cents)
{
    json_int_t  n;

    if (json_is_string(v)) {
        return sbw_money_parse(json_string_value(v), cents);
    }

    if (json_is_integer(v)) {
        n = json_integer_value(v);

        if (n > 999999999999999LL || n < -999999999999999LL) {
            return -1;
        }

        *cents = (int64_t) n * 100;
        return 0;
    }

    return -1;
}


/*
 * Write cents as a decimal with exactly two fraction digits ("-49.00"),
 * the form used both in logs and in the JSON numbers sent to BC.
 */
void
sbw_money_format(int64_t cents, char *buf, size_t len)
{
    uint64_t  u;

    if (cents < 0) {
        u = (uint64_t) 0 - (uint64_t) cents;

    } else {
        u = (uint64_t) cents;
    }

    snprintf(buf, len, "%s%llu.%02llu", cents < 0 ? "-" : "",
             (unsigned long long) (u / 100),
             (unsigned long long) (u % 100));
}

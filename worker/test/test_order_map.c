/*
 * Shopify order -> BC salesOrder mapping, checked against the reference
 * orders in fixtures/expected/bc-sales-orders.json.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "money.h"
#include "order_map.h"
#include "tests.h"


#define SHIPPING_ACCOUNT     "8130"
#define TIP_ACCOUNT          "22300"
#define GIFT_CARD_ACCOUNT    "22150"
#define CUSTOM_LINE_ACCOUNT  "40250"


typedef struct {
    json_t          *expected;     /* whole expected file */
    json_t          *variants;     /* variant id -> item no */
    json_t          *skus;         /* empty SKU map */
    sbw_map_conf_t   mc;
} map_state_t;


static json_t *
load_json(const char *rel)
{
    char          path[1024];
    json_t       *j;
    json_error_t  err;

    snprintf(path, sizeof(path), "%s/%s", test_fixtures_dir(), rel);

    j = json_load_file(path, 0, &err);
    if (j == NULL) {
        fail_msg("cannot load %s: %s", path, err.text);
    }

    return j;
}


static int
setup(void **state)
{
    char          err[256];
    json_t       *raw;
    map_state_t  *ms;

    ms = calloc(1, sizeof(*ms));
    if (ms == NULL) {
        return -1;
    }

    ms->expected = load_json("expected/bc-sales-orders.json");

    raw = load_json("meta/variant-map.json");
    ms->variants = sbw_variant_map_from_json(raw, err, sizeof(err));
    json_decref(raw);

    if (ms->variants == NULL) {
        free(ms);
        return -1;
    }

    ms->skus = json_object();
    ms->mc.sku_map = ms->skus;
    ms->mc.variant_map = ms->variants;
    ms->mc.customer_number = "WEB";
    ms->mc.shipping_account = SHIPPING_ACCOUNT;

    *state = ms;
    return 0;
}


static int
teardown(void **state)
{
    map_state_t  *ms;

    ms = *state;

    json_decref(ms->expected);
    json_decref(ms->variants);
    json_decref(ms->skus);
    free(ms);

    return 0;
}


static int64_t
cents_of(const json_t *v)
{
    int64_t  c;

    if (sbw_money_from_json(v, &c) != 0) {
        fail_msg("expected amount is not a decimal string");
    }

    return c;
}


/*
 * Map one fixture and compare every Item and Account line, in order, with
 * the reference order; then the document total and the header fields.
 */
static void
check_fixture(map_state_t *ms, const char *name)
{
    int              rc, taxes_included;
    char             rel[256], err[1024], *payload;
    size_t           i, n, total_lines;
    const char      *role;
    json_t          *order, *parsed, *plines;
    int64_t          want_total;
    const json_t    *exp, *lines, *el;
    sbw_bc_line_t   *l;
    sbw_bc_order_t   o;

    snprintf(rel, sizeof(rel), "shopify/%s", name);
    order = load_json(rel);

    exp = json_object_get(ms->expected, name);
    assert_non_null(exp);

    rc = sbw_order_map(&ms->mc, order, &o, err, sizeof(err));
    if (rc != SBW_MAP_OK) {
        fail_msg("%s: mapping failed (%d): %s", name, rc, err);
    }

    /* header */
    assert_int_equal(o.order_id,
                     json_integer_value(json_object_get(exp,
                                                        "shopifyOrderId")));
    assert_string_equal(o.currency,
                        json_string_value(json_object_get(exp,
                                                          "currencyCode")));
    assert_string_equal(o.customer_number, "WEB");
    assert_int_equal(strlen(o.order_date), 10);
    assert_memory_equal(o.order_date, "2026-03-16", 10);

    /* the first line is the Comment carrying the order name */
    assert_true(o.nlines >= 2);
    assert_int_equal(o.lines[0].type, SBW_LINE_COMMENT);
    assert_non_null(strstr(o.lines[0].description,
                           json_string_value(json_object_get(exp,
                                             "shopifyOrderName"))));

    lines = json_object_get(exp, "lines");
    n = json_array_size(lines);
    assert_int_equal(o.nlines - 1, n);

    for (i = 0; i < n; i++) {
        el = json_array_get(lines, i);
        l = &o.lines[i + 1];

        if (strcmp(json_string_value(json_object_get(el, "lineType")),
                   "Item") == 0)
        {
            assert_int_equal(l->type, SBW_LINE_ITEM);
            assert_string_equal(l->number,
                                json_string_value(json_object_get(el,
                                                  "lineObjectNumber")));

        } else {
            role = json_string_value(json_object_get(el, "role"));
            assert_int_equal(l->type, SBW_LINE_ACCOUNT);
            assert_string_equal(l->role, role);
            assert_string_equal(l->number,
                                strcmp(role, "tip") == 0 ? TIP_ACCOUNT
                                : strcmp(role, "gift_card_sold") == 0
                                ? GIFT_CARD_ACCOUNT
                                : strcmp(role, "custom_line") == 0
                                ? CUSTOM_LINE_ACCOUNT : SHIPPING_ACCOUNT);
        }

        assert_string_equal(l->description,
                            json_string_value(json_object_get(el,
                                              "description")));
        assert_int_equal(l->quantity,
                         json_integer_value(json_object_get(el,
                                                            "quantity")));
        assert_int_equal(l->unit_price,
                         cents_of(json_object_get(el, "unitPrice")));
        assert_int_equal(l->discount,
                         cents_of(json_object_get(el, "discountAmount")));
        assert_int_equal(l->quantity * l->unit_price - l->discount,
                         cents_of(json_object_get(el, "lineAmount")));
    }

    /* prices exclude tax unless the shop enters them with tax */
    taxes_included = json_is_true(json_object_get(exp, "pricesIncludeTax"));
    assert_int_equal(o.taxes_included, taxes_included);

    want_total = cents_of(json_object_get(exp, taxes_included
                                          ? "amountIncludingTax"
                                          : "amountExcludingTax"));
    assert_int_equal(o.lines_total, want_total);

    /* the request body parses and carries the same lines */
    payload = sbw_order_payload(&o);
    assert_non_null(payload);

    parsed = json_loads(payload, 0, NULL);
    assert_non_null(parsed);

    assert_string_equal(json_string_value(json_object_get(parsed,
                        "externalDocumentNumber")), o.external_doc);
    assert_string_equal(json_string_value(json_object_get(parsed,
                        "customerNumber")), "WEB");
    assert_string_equal(json_string_value(json_object_get(parsed,
                        "orderDate")), "2026-03-16");

    plines = json_object_get(parsed, "salesOrderLines");
    total_lines = json_array_size(plines);
    assert_int_equal(total_lines, o.nlines);
    assert_string_equal(json_string_value(json_object_get(
                        json_array_get(plines, 0), "lineType")), "Comment");

    json_decref(parsed);
    free(payload);
    sbw_order_free(&o);
    json_decref(order);
}


static void
test_basic(void **state)
{
    check_fixture(*state, "orders-create-basic.json");
}


static void
test_discounts(void **state)
{
    check_fixture(*state, "orders-create-discounts.json");
}


static void
test_unicode(void **state)
{
    check_fixture(*state, "orders-create-unicode.json");
}


static void
test_guest_pos(void **state)
{
    check_fixture(*state, "orders-create-guest-pos.json");
}


static void
test_large(void **state)
{
    check_fixture(*state, "orders-create-large.json");
}


static void
test_multicurrency(void **state)
{
    check_fixture(*state, "orders-create-multicurrency.json");
}


static void
test_long_name(void **state)
{
    check_fixture(*state, "orders-create-long-name.json");
}


/*
 * Amounts go out as JSON numbers with exactly two decimals, and non-ASCII
 * text as raw UTF-8.
 */
static void
test_payload_text(void **state)
{
    char            err[512], *payload;
    json_t         *order;
    map_state_t    *ms;
    sbw_bc_order_t  o;

    ms = *state;
    order = load_json("shopify/orders-create-basic.json");

    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    payload = sbw_order_payload(&o);
    assert_non_null(payload);

    assert_non_null(strstr(payload, "\"lineObjectNumber\":\"1896-S\","
                           "\"description\":\"ATHENS Desk\","
                           "\"quantity\":2,\"unitPrice\":1000.80,"
                           "\"discountAmount\":0.00}"));
    assert_non_null(strstr(payload, "{\"lineType\":\"Comment\","
                           "\"description\":\"Shopify order #1043\"}"));
    assert_non_null(strstr(payload, "\"externalDocumentNumber\":"
                           "\"SHOPIFY-6021450011001\""));
    assert_non_null(strstr(payload, "\"currencyCode\":\"USD\""));

    free(payload);
    sbw_order_free(&o);
    json_decref(order);

    order = load_json("shopify/orders-create-unicode.json");
    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    payload = sbw_order_payload(&o);
    assert_non_null(strstr(payload, "Zone 8 (\xe4\xb8\xad\xe5\x9b\xbd)"));

    free(payload);
    sbw_order_free(&o);
    json_decref(order);
}


/*
 * With the three G/L accounts set, the no-SKU order maps as the reference
 * says: the BERLIN chair by variant, then the custom line, the gift card
 * and the tip as Account lines on their accounts, then shipping.
 */
static void
test_no_sku_accounts(void **state)
{
    map_state_t  ms;

    ms = *(map_state_t *) *state;
    ms.mc.tip_account = TIP_ACCOUNT;
    ms.mc.gift_card_account = GIFT_CARD_ACCOUNT;
    ms.mc.custom_line_account = CUSTOM_LINE_ACCOUNT;

    check_fixture(&ms, "orders-create-no-sku.json");
}


/*
 * Only the kinds whose account is set are booked: with the tip account
 * alone, the custom line and the gift card still refuse the order, and
 * the tip is no longer named.
 */
static void
test_no_sku_some_accounts(void **state)
{
    char             err[1024];
    json_t          *order;
    map_state_t     *ms;
    sbw_bc_order_t   o;
    sbw_map_conf_t   mc;

    ms = *state;
    order = load_json("shopify/orders-create-no-sku.json");

    mc = ms->mc;
    mc.tip_account = TIP_ACCOUNT;
    mc.gift_card_account = "";

    assert_int_equal(sbw_order_map(&mc, order, &o, err, sizeof(err)),
                     SBW_MAP_UNSUPPORTED);
    assert_non_null(strstr(err, "line 2 \"On-site assembly service\""));
    assert_non_null(strstr(err, "line 3 \"Acme Gift Card\""));
    assert_null(strstr(err, "Tip"));

    json_decref(order);
}


/*
 * Without the accounts, the no-SKU order has a custom line, a gift card
 * and a tip: the whole order is refused, naming exactly those three
 * lines.  Its first line (no
 * SKU, variant in the map) is fine and is not named.
 */
static void
test_no_sku_refused(void **state)
{
    int             rc;
    char            err[1024];
    json_t         *order;
    map_state_t    *ms;
    sbw_bc_order_t  o;

    ms = *state;
    order = load_json("shopify/orders-create-no-sku.json");

    rc = sbw_order_map(&ms->mc, order, &o, err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_UNSUPPORTED);
    assert_int_equal(o.nlines, 0);
    assert_null(o.lines);

    assert_null(strstr(err, "line 1 "));
    assert_non_null(strstr(err, "line 2 \"On-site assembly service\" "
                           "(id 15120450003002): custom line"));
    assert_non_null(strstr(err, "line 3 \"Acme Gift Card\" "
                           "(id 15120450003003): gift card"));
    assert_non_null(strstr(err, "line 4 \"Tip\" (id 15120450003004): tip"));

    json_decref(order);
}


/*
 * Without the variant map the BERLIN chair (sku "") cannot be mapped
 * either, and the message says which variant is missing.
 */
static void
test_variant_map_needed(void **state)
{
    char             err[1024];
    json_t          *order, *empty, *li;
    map_state_t     *ms;
    sbw_bc_order_t   o;
    sbw_map_conf_t   mc;

    ms = *state;
    order = load_json("shopify/orders-create-no-sku.json");
    empty = json_object();

    mc = ms->mc;
    mc.variant_map = empty;

    assert_int_equal(sbw_order_map(&mc, order, &o, err, sizeof(err)),
                     SBW_MAP_UNSUPPORTED);
    assert_non_null(strstr(err, "line 1 \"BERLIN Guest Chair, yellow\""));
    assert_non_null(strstr(err, "variant 45512345000080 is not in the "
                           "variant map"));

    /* keep only the BERLIN line: with the map it becomes item 1936-S */
    li = json_object_get(order, "line_items");
    while (json_array_size(li) > 1) {
        json_array_remove(li, 1);
    }

    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    assert_int_equal(o.nlines, 3);
    assert_string_equal(o.lines[1].number, "1936-S");
    assert_int_equal(o.lines[1].quantity, 2);
    assert_int_equal(o.lines[1].unit_price, 19280);
    assert_int_equal(o.lines_total, 38560 + 2900);

    sbw_order_free(&o);
    json_decref(empty);
    json_decref(order);
}


static void
test_sku_map_applies(void **state)
{
    char             err[512];
    json_t          *order, *skus;
    map_state_t     *ms;
    sbw_map_conf_t   mc;
    sbw_bc_order_t   o;

    ms = *state;
    order = load_json("shopify/orders-create-basic.json");
    skus = json_pack("{s:s}", "1896-S", "DESK-ATHENS");

    mc = ms->mc;
    mc.sku_map = skus;

    assert_int_equal(sbw_order_map(&mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    assert_string_equal(o.lines[1].number, "DESK-ATHENS");
    assert_string_equal(o.lines[2].number, "1900-S");

    sbw_order_free(&o);
    json_decref(skus);
    json_decref(order);
}


/*
 * The long-name order: its name (38 characters) does not fit BC's
 * Code[35], the number built from the order id does, in upper case, the
 * same on every call; the full name still reaches BC in the Comment line.
 */
static void
test_external_doc_number(void **state)
{
    char             a[SBW_CODE35_BUFLEN], b[SBW_CODE35_BUFLEN];
    char             err[512];
    size_t           i;
    json_t          *order;
    map_state_t     *ms;
    sbw_bc_order_t   o;

    ms = *state;
    order = load_json("shopify/orders-create-long-name.json");

    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);

    assert_string_equal(o.external_doc, "SHOPIFY-6021450033001");
    assert_true(strlen(o.external_doc) <= 35);

    for (i = 0; o.external_doc[i]; i++) {
        assert_false(o.external_doc[i] >= 'a' && o.external_doc[i] <= 'z');
    }

    sbw_external_doc_number(6021450033001LL, a, sizeof(a));
    sbw_external_doc_number(6021450033001LL, b, sizeof(b));
    assert_string_equal(a, b);
    assert_string_equal(a, o.external_doc);

    assert_string_equal(o.lines[0].description,
                        "Shopify order "
                        "#ACME-EUROPE-WEBSHOP-2026-0000012345-B");

    /* the largest possible id still fits */
    sbw_external_doc_number(INT64_MAX, a, sizeof(a));
    assert_string_equal(a, "SHOPIFY-9223372036854775807");
    assert_true(strlen(a) <= 35);

    sbw_order_free(&o);
    json_decref(order);
}


/*
 * A 150-character title reaches BC as its first 100 characters, counted
 * as characters: 100 'u-umlaut' are 200 bytes.
 */
static void
test_description_truncated(void **state)
{
    char             err[512], title[400];
    size_t           i;
    json_t          *order, *li;
    map_state_t     *ms;
    sbw_bc_order_t   o;

    ms = *state;
    order = load_json("shopify/orders-create-guest-pos.json");

    title[0] = '\0';
    for (i = 0; i < 150; i++) {
        strcat(title, "\xc3\xbc");
    }

    li = json_array_get(json_object_get(order, "line_items"), 0);
    json_object_set_new(li, "title", json_string(title));

    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    assert_int_equal(strlen(o.lines[1].description), 200);
    assert_memory_equal(o.lines[1].description, title, 200);

    sbw_order_free(&o);
    json_decref(order);
}


static void
test_invalid_orders(void **state)
{
    char             err[512];
    json_t          *order, *li;
    map_state_t     *ms;
    sbw_bc_order_t   o;

    ms = *state;

    order = json_pack("{s:s}", "name", "#1");
    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_INVALID);
    assert_non_null(strstr(err, "id"));
    json_decref(order);

    order = load_json("shopify/orders-create-basic.json");
    li = json_array_get(json_object_get(order, "line_items"), 1);
    json_object_set_new(li, "price", json_string("192.805"));

    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_INVALID);
    assert_non_null(strstr(err, "line 2"));
    assert_non_null(strstr(err, "price"));
    json_decref(order);

    order = load_json("shopify/orders-create-basic.json");
    json_object_set_new(order, "line_items", json_array());
    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_INVALID);
    assert_non_null(strstr(err, "order #1043 has no line items"));

    /* without a name the order is named by its id */
    json_object_del(order, "name");
    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_INVALID);
    assert_non_null(strstr(err, "order 6021450011001 has no line items"));
    json_decref(order);
}


/*
 * Map the basic order after setting one field of line item `line` (1 is
 * the first) or of the shipping line (line 0) to the JSON text `value`.
 * Returns the mapping result, the message in err.
 */
static int
map_with(map_state_t *ms, int line, const char *field, const char *value,
    char *err, size_t errlen)
{
    int              rc;
    json_t          *order, *target, *v;
    json_error_t     jerr;
    sbw_bc_order_t   o;

    order = load_json("shopify/orders-create-basic.json");

    target = line > 0
             ? json_array_get(json_object_get(order, "line_items"),
                              (size_t) line - 1)
             : json_array_get(json_object_get(order, "shipping_lines"), 0);
    assert_non_null(target);

    v = json_loads(value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (v == NULL) {
        fail_msg("bad test value %s: %s", value, jerr.text);
    }

    json_object_set_new(target, field, v);

    rc = sbw_order_map(&ms->mc, order, &o, err, errlen);

    if (rc == SBW_MAP_OK) {
        sbw_order_free(&o);
    }

    json_decref(order);
    return rc;
}


/* the mapping refuses the order and err contains every one of the parts */
#define assert_refused(rc, err, ...)                                        \
    do {                                                                    \
        const char  *parts_[] = { __VA_ARGS__, NULL };                      \
        size_t       i_;                                                    \
                                                                            \
        assert_int_equal((rc), SBW_MAP_INVALID);                            \
        for (i_ = 0; parts_[i_] != NULL; i_++) {                            \
            if (strstr((err), parts_[i_]) == NULL) {                        \
                fail_msg("\"%s\" not in \"%s\"", parts_[i_], (err));        \
            }                                                               \
        }                                                                   \
    } while (0)


/*
 * Prices and discounts below zero are not amounts BC should book: the
 * order is refused, naming the line and the field.
 */
static void
test_negative_amounts(void **state)
{
    int           rc;
    char          err[1024];
    map_state_t  *ms;

    ms = *state;

    rc = map_with(ms, 1, "price", "\"-1000.80\"", err, sizeof(err));
    assert_refused(rc, err, "line 1 \"ATHENS Desk\" (id 15120450001001): ",
                   "price -1000.80 is negative");

    rc = map_with(ms, 2, "discount_allocations",
                  "[{\"amount\": \"5.00\"}, {\"amount\": \"-5.00\"}]",
                  err, sizeof(err));
    assert_refused(rc, err, "line 2 \"PARIS Guest Chair\"",
                   "discount allocation 2 amount -5.00 is negative");

    rc = map_with(ms, 0, "price", "\"-49.00\"", err, sizeof(err));
    assert_refused(rc, err, "shipping line 1: price -49.00 is negative");

    rc = map_with(ms, 0, "discount_allocations",
                  "[{\"amount\": \"-1.00\"}]", err, sizeof(err));
    assert_refused(rc, err, "shipping line 1: discount allocation 1 amount "
                   "-1.00 is negative");

    /* a free line is fine */
    rc = map_with(ms, 1, "price", "\"0.00\"", err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_OK);
}


/*
 * A discount can take a line down to zero (4 x 192.80 = 771.20) but not
 * below.
 */
static void
test_discount_over_line_total(void **state)
{
    int           rc;
    char          err[1024];
    map_state_t  *ms;

    ms = *state;

    rc = map_with(ms, 2, "discount_allocations",
                  "[{\"amount\": \"771.20\"}]", err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_OK);

    rc = map_with(ms, 2, "discount_allocations",
                  "[{\"amount\": \"700.00\"}, {\"amount\": \"71.21\"}]",
                  err, sizeof(err));
    assert_refused(rc, err, "line 2 \"PARIS Guest Chair\"",
                   "discount 771.21 is more than the line total 771.20");

    rc = map_with(ms, 0, "discount_allocations",
                  "[{\"amount\": \"49.01\"}]", err, sizeof(err));
    assert_refused(rc, err, "shipping line 1: discount 49.01 is more than "
                   "the line total 49.00");
}


/*
 * Quantities run from 1 to SBW_MAP_MAX_QUANTITY.  INT64_MAX used to be
 * multiplied by the price (signed overflow).
 */
static void
test_quantity_bounds(void **state)
{
    int           rc;
    char          err[1024];
    map_state_t  *ms;

    ms = *state;

    rc = map_with(ms, 1, "quantity", "0", err, sizeof(err));
    assert_refused(rc, err, "line 1 \"ATHENS Desk\"",
                   "quantity is not a positive integer");

    rc = map_with(ms, 1, "quantity", "-2", err, sizeof(err));
    assert_refused(rc, err, "line 1", "quantity is not a positive integer");

    rc = map_with(ms, 2, "quantity", "1000000", err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_OK);

    rc = map_with(ms, 2, "quantity", "1000001", err, sizeof(err));
    assert_refused(rc, err, "line 2 \"PARIS Guest Chair\"",
                   "quantity 1000001 is more than 1000000");

    rc = map_with(ms, 1, "quantity", "9223372036854775807", err,
                  sizeof(err));
    assert_refused(rc, err, "line 1 \"ATHENS Desk\"",
                   "quantity 9223372036854775807 is more than 1000000");
}


/*
 * Every amount is at most SBW_MAP_MAX_CENTS (100000000000.00): a price, a
 * discount, a line total (where quantity x price would overflow int64_t
 * without the check) and the order total.
 */
static void
test_amount_bounds(void **state)
{
    int           rc;
    char          err[1024];
    json_t       *order, *li;
    map_state_t  *ms;
    sbw_bc_order_t  o;

    ms = *state;

    rc = map_with(ms, 1, "price", "\"100000000000.01\"", err, sizeof(err));
    assert_refused(rc, err, "line 1 \"ATHENS Desk\"",
                   "price 100000000000.01 is more than 100000000000.00");

    /* 1000000 x 99999999999.99 is about 10^19 cents: beyond int64_t */
    order = load_json("shopify/orders-create-basic.json");
    li = json_array_get(json_object_get(order, "line_items"), 0);
    json_object_set_new(li, "quantity", json_integer(1000000));
    json_object_set_new(li, "price", json_string("99999999999.99"));
    rc = sbw_order_map(&ms->mc, order, &o, err, sizeof(err));
    assert_refused(rc, err, "line 1 \"ATHENS Desk\"",
                   "line total 1000000 x 99999999999.99 is more than "
                   "100000000000.00");
    json_decref(order);

    rc = map_with(ms, 2, "discount_allocations",
                  "[{\"amount\": \"100000000000.01\"}]", err, sizeof(err));
    assert_refused(rc, err, "line 2",
                   "discount allocation 1 amount 100000000000.01 is more "
                   "than 100000000000.00");

    rc = map_with(ms, 0, "price", "\"100000000000.01\"", err, sizeof(err));
    assert_refused(rc, err, "shipping line 1: price 100000000000.01 is "
                   "more than 100000000000.00");

    /* each line within the bound, their sum not */
    order = load_json("shopify/orders-create-basic.json");
    li = json_array_get(json_object_get(order, "line_items"), 0);
    json_object_set_new(li, "quantity", json_integer(1));
    json_object_set_new(li, "price", json_string("100000000000.00"));
    rc = sbw_order_map(&ms->mc, order, &o, err, sizeof(err));
    assert_refused(rc, err, "order total is more than 100000000000.00");
    json_decref(order);

    /* exactly the bound is accepted */
    order = load_json("shopify/orders-create-basic.json");
    json_object_set_new(order, "shipping_lines", json_array());
    json_array_remove(json_object_get(order, "line_items"), 1);
    li = json_array_get(json_object_get(order, "line_items"), 0);
    json_object_set_new(li, "quantity", json_integer(4));
    json_object_set_new(li, "price", json_string("25000000000.00"));
    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    assert_int_equal(o.lines_total, SBW_MAP_MAX_CENTS);
    sbw_order_free(&o);
    json_decref(order);
}


/*
 * A line item or shipping line that is not a JSON object is named as
 * such, not as a line without SKU.
 */
static void
test_line_not_object(void **state)
{
    char             err[1024];
    json_t          *order;
    map_state_t     *ms;
    sbw_bc_order_t   o;

    ms = *state;

    order = load_json("shopify/orders-create-basic.json");
    json_array_insert_new(json_object_get(order, "line_items"), 0,
                          json_integer(1));
    json_array_append_new(json_object_get(order, "shipping_lines"),
                          json_string("free"));

    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_INVALID);
    assert_string_equal(err, "line 1 is not an object; "
                        "shipping line 2 is not an object");
    json_decref(order);
}


/*
 * "\u0000" is valid JSON: the body loads, and the order maps unless the
 * NUL is in a string the mapping uses, where it is refused by name (as a
 * C string the SKU would silently end at the NUL).
 */
static void
test_nul_in_strings(void **state)
{
    int              rc;
    char             err[1024];
    json_t          *order;
    map_state_t     *ms;
    json_error_t     jerr;
    sbw_bc_order_t   o;

    static const char  body[] =
        "{\"id\": 1, \"name\": \"#1\", \"note\": \"a\\u0000b\","
        " \"line_items\": [{\"id\": 2, \"title\": \"Desk\","
        " \"sku\": \"1896-S\", \"quantity\": 1, \"price\": \"1.00\"}]}";

    ms = *state;

    order = sbw_order_parse(body, sizeof(body) - 1, &jerr);
    assert_non_null(order);
    assert_int_equal(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)),
                     SBW_MAP_OK);
    sbw_order_free(&o);
    json_decref(order);

    rc = map_with(ms, 1, "sku", "\"1896-S\\u0000X\"", err, sizeof(err));
    assert_refused(rc, err, "line 1", "sku contains a NUL character");

    rc = map_with(ms, 2, "title", "\"Chair\\u0000\"", err, sizeof(err));
    assert_refused(rc, err, "line 2", "title contains a NUL character");

    order = load_json("shopify/orders-create-basic.json");
    json_object_set_new(order, "currency", json_stringn("US\0D", 4));
    assert_refused(sbw_order_map(&ms->mc, order, &o, err, sizeof(err)), err,
                   "currency contains a NUL character");
    json_decref(order);
}


int
test_order_map_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_discounts),
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_guest_pos),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_multicurrency),
        cmocka_unit_test(test_long_name),
        cmocka_unit_test(test_payload_text),
        cmocka_unit_test(test_no_sku_refused),
        cmocka_unit_test(test_no_sku_accounts),
        cmocka_unit_test(test_no_sku_some_accounts),
        cmocka_unit_test(test_variant_map_needed),
        cmocka_unit_test(test_sku_map_applies),
        cmocka_unit_test(test_external_doc_number),
        cmocka_unit_test(test_description_truncated),
        cmocka_unit_test(test_invalid_orders),
        cmocka_unit_test(test_negative_amounts),
        cmocka_unit_test(test_discount_over_line_total),
        cmocka_unit_test(test_quantity_bounds),
        cmocka_unit_test(test_amount_bounds),
        cmocka_unit_test(test_line_not_object),
        cmocka_unit_test(test_nul_in_strings),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("order_map", tests, setup, teardown);
}

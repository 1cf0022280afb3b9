/*
 * The order sync's mapping rules: taxable or not per line, prices
 * including tax, shop or presentment money, edited orders (current
 * quantities, prorated discounts), Shopify's tax as lines, the totals
 * tolerance, companies per shop, the line plan of an update, and their
 * settings.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "money.h"
#include "order_map.h"
#include "sync_map.h"
#include "tests.h"


#define EUR_COMPANY  "a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6"
#define USD_COMPANY  "31b7c38b-2d4e-5437-beff-68c052310a74"


typedef struct {
    json_t          *variants;
    json_t          *skus;
    sbw_map_conf_t   mc;
} sync_state_t;


static json_t *
load(const char *rel)
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
    char           err[256];
    json_t        *raw;
    sync_state_t  *ss;

    ss = calloc(1, sizeof(*ss));
    if (ss == NULL) {
        return -1;
    }

    raw = load("meta/variant-map.json");
    ss->variants = sbw_variant_map_from_json(raw, err, sizeof(err));
    json_decref(raw);
    ss->skus = json_object();

    ss->mc.sku_map = ss->skus;
    ss->mc.variant_map = ss->variants;
    ss->mc.customer_number = "WEB";
    ss->mc.shipping_account = "40400";
    ss->mc.tip_account = "22300";
    ss->mc.gift_card_account = "22150";
    ss->mc.custom_line_account = "40250";
    ss->mc.nontaxable_code = "NONTAXABLE";

    *state = ss;
    return 0;
}


static int
teardown(void **state)
{
    sync_state_t  *ss;

    ss = *state;
    json_decref(ss->variants);
    json_decref(ss->skus);
    free(ss);

    return 0;
}


static void
map_ok(const sbw_map_conf_t *mc, const char *name, sbw_bc_order_t *o)
{
    int      rc;
    char     rel[256], err[1024];
    json_t  *order;

    snprintf(rel, sizeof(rel), "shopify/%s", name);
    order = load(rel);
    rc = sbw_order_map(mc, order, o, err, sizeof(err));
    json_decref(order);

    if (rc != SBW_MAP_OK) {
        fail_msg("%s: mapping failed (%d): %s", name, rc, err);
    }
}


/* "T" for a line BC taxes itself, "N" for NONTAXABLE, per non-comment line */
static void
tax_pattern(const sbw_bc_order_t *o, char *out)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < o->nlines; i++) {
        if (o->lines[i].type == SBW_LINE_COMMENT) {
            continue;
        }

        out[n++] = o->lines[i].tax_code == NULL ? 'T'
                   : strcmp(o->lines[i].tax_code, "NONTAXABLE") == 0 ? 'N'
                   : '?';
    }

    out[n] = '\0';
}


/*
 * Every fixture: a line Shopify did not tax goes out NONTAXABLE, the
 * others get BC's own tax group; the total BC must reach is Shopify's
 * total_price; pricesIncludeTax follows taxes_included; the number of
 * tax amounts Shopify rounded is counted.
 */
static void
test_fixture_tax_codes(void **state)
{
    char            pat[512], *payload;
    size_t          i;
    sync_state_t   *ss;
    sbw_bc_order_t  o;

    static const struct {
        const char  *name;
        const char  *pattern;
        int64_t      total;
        int          ntax;
        int          incl;
    } cases[] = {
        { "orders-create-basic.json", "TTN", 293271, 2, 0 },
        { "orders-create-discounts.json", "TTTT", 122747, 8, 0 },
        { "orders-create-unicode.json", "NNN", 203190, 0, 0 },
        { "orders-create-guest-pos.json", "TT", 31470, 2, 0 },
        { "orders-create-no-sku.json", "TTNNN", 61982, 2, 0 },
        { "orders-create-multicurrency.json", "TTT", 173100, 3, 1 },
        { "orders-create-long-name.json", "TT", 98800, 2, 1 },
    };

    ss = *state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        map_ok(&ss->mc, cases[i].name, &o);
        tax_pattern(&o, pat);

        if (strcmp(pat, cases[i].pattern) != 0) {
            fail_msg("%s: tax codes %s, want %s", cases[i].name, pat,
                     cases[i].pattern);
        }

        assert_int_equal(o.shopify_total, cases[i].total);
        assert_int_equal(o.ntax_lines, cases[i].ntax);

        payload = sbw_order_payload(&o);
        assert_non_null(payload);
        assert_non_null(strstr(payload, cases[i].incl
                               ? "\"pricesIncludeTax\":true"
                               : "\"pricesIncludeTax\":false"));

        if (strchr(cases[i].pattern, 'N') != NULL) {
            assert_non_null(strstr(payload, "\"taxCode\":\"NONTAXABLE\""));

        } else {
            assert_null(strstr(payload, "\"taxCode\""));
        }

        free(payload);
        sbw_order_free(&o);
    }

    /* no code configured: nothing sent, BC decides */
    ss->mc.nontaxable_code = "none";
    map_ok(&ss->mc, "orders-create-unicode.json", &o);
    tax_pattern(&o, pat);
    assert_string_equal(pat, "TTT");
    sbw_order_free(&o);
    ss->mc.nontaxable_code = "NONTAXABLE";
}


/*
 * Presentment money: every amount from presentment_money, the currency
 * presentment_currency, and the total Shopify charged in it (1873.83,
 * not 1731.00 x 1.0825).
 */
static void
test_presentment_money(void **state)
{
    sync_state_t    *ss;
    sbw_bc_order_t   o;

    ss = *state;
    ss->mc.money = SBW_MONEY_PRESENTMENT;
    map_ok(&ss->mc, "orders-create-multicurrency.json", &o);
    ss->mc.money = SBW_MONEY_SHOP;

    assert_string_equal(o.currency, "USD");
    assert_int_equal(o.nlines, 4);
    assert_int_equal(o.lines[1].unit_price, 64734);
    assert_int_equal(o.lines[2].unit_price, 19377);
    assert_int_equal(o.lines[3].unit_price, 6387);
    assert_int_equal(o.lines_total, 187383);
    assert_int_equal(o.shopify_total, 187383);
    sbw_order_free(&o);

    /* shop money: the plain strings */
    map_ok(&ss->mc, "orders-create-multicurrency.json", &o);
    assert_string_equal(o.currency, "EUR");
    assert_int_equal(o.lines_total, 173100);
    sbw_order_free(&o);
}


/*
 * orders/updated: the current quantities and total; lines with nothing
 * left are left out; orders/cancelled keeps only shipping.
 */
static void
test_current_quantities(void **state)
{
    sync_state_t    *ss;
    sbw_bc_order_t   o;

    ss = *state;
    ss->mc.use_current = 1;

    map_ok(&ss->mc, "orders-updated.json", &o);
    assert_int_equal(o.nlines, 4);
    assert_string_equal(o.lines[1].number, "1896-S");
    assert_int_equal(o.lines[1].quantity, 1);
    assert_string_equal(o.lines[2].number, "1900-S");
    assert_int_equal(o.lines[2].quantity, 3);
    assert_int_equal(o.lines_total, 162820);
    assert_int_equal(o.shopify_total, 169137);
    assert_string_equal(o.updated_at, "2026-03-17T14:05:12-04:00");
    sbw_order_free(&o);

    map_ok(&ss->mc, "orders-cancelled.json", &o);
    assert_int_equal(o.nlines, 2);
    assert_int_equal(o.lines[1].type, SBW_LINE_ACCOUNT);
    assert_int_equal(o.shopify_total, 0);
    sbw_order_free(&o);

    /* orders/create ignores current_quantity */
    ss->mc.use_current = 0;
    map_ok(&ss->mc, "orders-updated.json", &o);
    assert_int_equal(o.lines[1].quantity, 2);
    assert_int_equal(o.shopify_total, 293271);
    sbw_order_free(&o);
}


/*
 * An edited line keeps the discount of what is left: 134.02 over 3
 * chairs, 1 left: 44.67 (half up).  A current quantity above the
 * quantity is refused.
 */
static void
test_discount_prorated(void **state)
{
    int              rc;
    char            *text, err[512], *p;
    json_t          *order;
    sync_state_t    *ss;
    sbw_bc_order_t   o;

    ss = *state;
    order = load("shopify/orders-create-discounts.json");
    text = json_dumps(order, JSON_COMPACT);
    json_decref(order);

    p = strstr(text, "\"current_quantity\":3");
    assert_non_null(p);
    p[19] = '1';

    order = json_loads(text, 0, NULL);
    ss->mc.use_current = 1;
    rc = sbw_order_map(&ss->mc, order, &o, err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_OK);
    assert_string_equal(o.lines[2].number, "1908-S");
    assert_int_equal(o.lines[2].quantity, 1);
    assert_int_equal(o.lines[2].discount, 4467);
    sbw_order_free(&o);
    json_decref(order);

    p[19] = '9';
    order = json_loads(text, 0, NULL);
    rc = sbw_order_map(&ss->mc, order, &o, err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_INVALID);
    assert_non_null(strstr(err, "current_quantity"));
    json_decref(order);

    ss->mc.use_current = 0;
    free(text);
}


/*
 * BC365_TAX_POLICY=line: every line non-taxable, Shopify's tax as one
 * Account line per tax title; without the account the order is refused;
 * with prices including tax there is no tax line.
 */
static void
test_tax_line_policy(void **state)
{
    int              rc;
    char             pat[64], err[512];
    json_t          *order;
    sync_state_t    *ss;
    sbw_bc_order_t   o;

    ss = *state;
    ss->mc.tax_line = 1;
    ss->mc.tax_account = "22500";

    map_ok(&ss->mc, "orders-create-discounts.json", &o);
    tax_pattern(&o, pat);
    assert_string_equal(pat, "NNNNNN");
    assert_int_equal(o.nlines, 7);
    assert_string_equal(o.lines[5].description, "GA State Tax");
    assert_int_equal(o.lines[5].unit_price, 4632);
    assert_string_equal(o.lines[6].description, "Cobb County Tax");
    assert_int_equal(o.lines[6].unit_price, 2317);
    assert_string_equal(o.lines[6].number, "22500");
    assert_int_equal(o.lines_total, 122747);
    sbw_order_free(&o);

    map_ok(&ss->mc, "orders-create-long-name.json", &o);
    assert_int_equal(o.nlines, 3);
    sbw_order_free(&o);

    ss->mc.use_current = 1;
    map_ok(&ss->mc, "orders-updated.json", &o);
    assert_string_equal(o.lines[4].description, "Tax");
    assert_int_equal(o.lines[4].unit_price, 6317);
    assert_int_equal(o.lines_total, 169137);
    sbw_order_free(&o);
    ss->mc.use_current = 0;

    ss->mc.tax_account = NULL;
    order = load("shopify/orders-create-basic.json");
    rc = sbw_order_map(&ss->mc, order, &o, err, sizeof(err));
    assert_int_equal(rc, SBW_MAP_UNSUPPORTED);
    assert_non_null(strstr(err, "no tax account"));
    json_decref(order);

    ss->mc.tax_line = 0;
}


static void
test_tolerance(void **state)
{
    (void) state;

    assert_int_equal(sbw_total_tolerance(-1, 0), 5);
    assert_int_equal(sbw_total_tolerance(-1, 8), 5);
    assert_int_equal(sbw_total_tolerance(-1, 250), 125);
    assert_int_equal(sbw_total_tolerance(-1, 251), 126);
    assert_int_equal(sbw_total_tolerance(3, 250), 3);
    assert_int_equal(sbw_total_tolerance(0, 10), 0);
}


static void
test_companies(void **state)
{
    char          err[256];
    json_t       *map;
    sbw_config_t  c;

    (void) state;

    map = json_pack("{s:s,s:s}", "acme-demo-eu.myshopify.com", EUR_COMPANY,
                    "Acme-Europe-Webshop.myshopify.com", EUR_COMPANY);
    assert_int_equal(sbw_companies_check(map, err, sizeof(err)), 0);

    memset(&c, 0, sizeof(c));
    c.companies = map;
    c.company_id = USD_COMPANY;

    assert_string_equal(sbw_company_for_shop(&c, "acme-demo-eu.myshopify.com"),
                        EUR_COMPANY);
    assert_string_equal(sbw_company_for_shop(&c,
                        "acme-europe-webshop.myshopify.com"), EUR_COMPANY);
    assert_string_equal(sbw_company_for_shop(&c, "acme-demo.myshopify.com"),
                        USD_COMPANY);
    assert_string_equal(sbw_company_for_shop(&c, NULL), USD_COMPANY);

    json_object_set_new(map, "x.myshopify.com", json_string("not-a-guid"));
    assert_int_equal(sbw_companies_check(map, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "x.myshopify.com"));
    json_decref(map);

    map = json_pack("{s:s}", "nodomain", EUR_COMPANY);
    assert_int_equal(sbw_companies_check(map, err, sizeof(err)), -1);
    json_decref(map);
}


/* BC's salesOrderLines for an order as the worker posted it */
static json_t *
bc_lines_of(const sbw_bc_order_t *o)
{
    char     id[32];
    size_t   i;
    json_t  *a, *l;

    a = json_array();

    for (i = 0; i < o->nlines; i++) {
        snprintf(id, sizeof(id), "line-%zu", i);
        l = json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", id, "@odata.etag",
                      "W/\"e\"", "lineType",
                      o->lines[i].type == SBW_LINE_COMMENT ? "Comment"
                      : o->lines[i].type == SBW_LINE_ITEM ? "Item"
                      : "Account",
                      "lineObjectNumber", o->lines[i].number
                                          ? o->lines[i].number : "",
                      "description", o->lines[i].description);
        json_object_set_new(l, "quantity",
                            json_integer(o->lines[i].quantity));
        json_object_set_new(l, "unitPrice",
                            json_real((double) o->lines[i].unit_price
                                      / 100.0));
        json_object_set_new(l, "discountAmount",
                            json_real((double) o->lines[i].discount
                                      / 100.0));

        if (o->lines[i].tax_code != NULL) {
            json_object_set_new(l, "taxCode",
                                json_string(o->lines[i].tax_code));
        }

        json_array_append_new(a, l);
    }

    return a;
}


/*
 * The plan of an update: unchanged lines are left alone, changed
 * amounts PATCHed, another item replaced (DELETE + POST), leftovers
 * deleted or added; the comment and the variance line are not touched.
 */
static void
test_sync_plan(void **state)
{
    size_t           n;
    json_t          *bc, *v;
    sync_state_t    *ss;
    sbw_sync_op_t    ops[16];
    sbw_bc_order_t   created, edited;

    ss = *state;
    map_ok(&ss->mc, "orders-create-basic.json", &created);
    bc = bc_lines_of(&created);

    /* the same state: nothing to do, a variance line is ignored */
    v = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:f,s:f}", "id", "var",
                  "@odata.etag", "W/\"v\"", "lineType", "Account",
                  "lineObjectNumber", "40900", "description",
                  SBW_VARIANCE_DESCRIPTION, "quantity", 1, "unitPrice", 0.01,
                  "discountAmount", 0.0);
    json_array_append_new(bc, v);
    assert_true(sbw_is_variance_line(v, "40900"));
    assert_false(sbw_is_variance_line(json_array_get(bc, 3), "40900"));

    assert_int_equal(sbw_sync_plan(bc, &created, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 0);

    /* the edit: two quantities */
    ss->mc.use_current = 1;
    map_ok(&ss->mc, "orders-updated.json", &edited);
    ss->mc.use_current = 0;

    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ops[0].op, SBW_OP_PATCH);
    assert_string_equal(ops[0].bc_line_id, "line-1");
    assert_string_equal(ops[0].etag, "W/\"e\"");
    assert_int_equal(ops[0].line, 1);
    assert_int_equal(ops[1].op, SBW_OP_PATCH);
    assert_string_equal(ops[1].bc_line_id, "line-2");

    /* a new description alone is a PATCH too */
    json_object_set_new(json_array_get(bc, 3), "description",
                        json_string("Old shipping name"));
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ops[2].op, SBW_OP_PATCH);
    assert_string_equal(ops[2].bc_line_id, "line-3");
    json_object_set_new(json_array_get(bc, 3), "description",
                        json_string("Standard Shipping"));

    /* another item in BC's first place: replaced */
    json_object_set_new(json_array_get(bc, 1), "lineObjectNumber",
                        json_string("1906-S"));
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ops[0].op, SBW_OP_DELETE);
    assert_string_equal(ops[0].bc_line_id, "line-1");
    assert_int_equal(ops[1].op, SBW_OP_POST);
    assert_int_equal(ops[1].line, 1);
    assert_int_equal(ops[2].op, SBW_OP_PATCH);

    /* an extra BC line is deleted; too little room is an error */
    json_object_set_new(json_array_get(bc, 1), "lineObjectNumber",
                        json_string("1896-S"));
    json_array_append_new(bc, json_pack("{s:s,s:s,s:s,s:s,s:i,s:f,s:f}",
                          "id", "extra", "@odata.etag", "W/\"x\"",
                          "lineType", "Item", "lineObjectNumber", "1928-S",
                          "quantity", 1, "unitPrice", 54.9,
                          "discountAmount", 0.0));
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ops[2].op, SBW_OP_DELETE);
    assert_string_equal(ops[2].bc_line_id, "extra");
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 2, &n), -1);

    json_decref(bc);
    sbw_order_free(&created);
    sbw_order_free(&edited);
}


/* the body of a line POST and of a PATCH */
static void
test_line_payloads(void **state)
{
    char            *p;
    sync_state_t    *ss;
    sbw_bc_order_t   o;

    ss = *state;
    map_ok(&ss->mc, "orders-create-basic.json", &o);

    p = sbw_order_line_payload(&o.lines[3], 0);
    assert_string_equal(p, "{\"lineType\":\"Account\",\"lineObjectNumber\":"
                        "\"40400\",\"description\":\"Standard Shipping\","
                        "\"quantity\":1,\"unitPrice\":49.00,"
                        "\"discountAmount\":0.00,\"taxCode\":\"NONTAXABLE\"}");
    free(p);

    p = sbw_order_line_payload(&o.lines[1], 1);
    assert_string_equal(p, "{\"description\":\"ATHENS Desk\","
                        "\"quantity\":2,\"unitPrice\":1000.80,"
                        "\"discountAmount\":0.00}");
    free(p);

    /* a line asked for under its own sequence (the variance line) */
    o.lines[3].sequence = SBW_VARIANCE_SEQUENCE;
    p = sbw_order_line_payload(&o.lines[3], 0);
    assert_string_equal(p, "{\"sequence\":1000000000,\"lineType\":"
                        "\"Account\",\"lineObjectNumber\":\"40400\","
                        "\"description\":\"Standard Shipping\","
                        "\"quantity\":1,\"unitPrice\":49.00,"
                        "\"discountAmount\":0.00,\"taxCode\":\"NONTAXABLE\"}");
    free(p);
    p = sbw_order_line_payload(&o.lines[3], 1);
    assert_null(strstr(p, "sequence"));
    free(p);

    sbw_order_free(&o);
}


static const char *
env_get(const char *name, void *ctx)
{
    const char  **kv;

    for (kv = ctx; kv[0] != NULL; kv += 2) {
        if (strcmp(kv[0], name) == 0) {
            return kv[1];
        }
    }

    return NULL;
}


static int
load_with(sbw_config_t *c, const char *name, const char *value, char *err,
    size_t errlen)
{
    const char  *kv[] = {
        "DATABASE_URL", "postgresql://bc@127.0.0.1/bc",
        "BC365_TENANT_ID", "t", "BC365_CLIENT_ID", "c",
        "BC365_CLIENT_SECRET", "s", "BC365_COMPANY_ID", USD_COMPANY,
        "BC365_SHIPPING_ACCOUNT", "40400",
        NULL, NULL, NULL, NULL
    };

    if (name != NULL) {
        kv[12] = name;
        kv[13] = value;
    }

    return sbw_config_load(c, env_get, kv, err, errlen);
}


static void
test_settings(void **state)
{
    char          err[512];
    sbw_config_t  c;

    (void) state;

    assert_int_equal(load_with(&c, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(c.order_money, SBW_MONEY_SHOP);
    assert_int_equal(c.tax_policy, SBW_TAX_VARIANCE);
    assert_int_equal(c.tax_tolerance, -1);
    assert_string_equal(c.nontaxable_code, "NONTAXABLE");
    assert_null(c.rounding_account);
    assert_int_equal(json_object_size(c.companies), 0);
    sbw_config_free(&c);

    assert_int_equal(load_with(&c, "BC365_ORDER_MONEY", "presentment", err,
                               sizeof(err)), 0);
    assert_int_equal(c.order_money, SBW_MONEY_PRESENTMENT);
    sbw_config_free(&c);

    assert_int_equal(load_with(&c, "BC365_ORDER_MONEY", "both", err,
                               sizeof(err)), SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "BC365_ORDER_MONEY"));

    assert_int_equal(load_with(&c, "BC365_TAX_TOLERANCE", "0.08", err,
                               sizeof(err)), 0);
    assert_int_equal(c.tax_tolerance, 8);
    sbw_config_free(&c);

    assert_int_equal(load_with(&c, "BC365_TAX_TOLERANCE", "-1", err,
                               sizeof(err)), SBW_EXIT_CONFIG);

    assert_int_equal(load_with(&c, "BC365_TAX_POLICY", "line", err,
                               sizeof(err)), SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "BC365_TAX_ACCOUNT"));

    assert_int_equal(load_with(&c, "BC365_CUSTOMER_STRATEGY", "create", err,
                               sizeof(err)), 0);
    assert_int_equal(c.customer_strategy, SBW_CUSTOMER_CREATE);
    sbw_config_free(&c);

    assert_int_equal(load_with(&c, "BC365_COMPANIES",
                               "{\"a.myshopify.com\":\"" EUR_COMPANY "\"}",
                               err, sizeof(err)), 0);
    assert_string_equal(sbw_company_for_shop(&c, "a.myshopify.com"),
                        EUR_COMPANY);
    sbw_config_free(&c);

    assert_int_equal(load_with(&c, "BC365_COMPANIES",
                               "{\"a.myshopify.com\":\"EUR\"}", err,
                               sizeof(err)), SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "not a GUID"));

    assert_int_equal(load_with(&c, "BC365_COMPANIES", "[1]", err,
                               sizeof(err)), SBW_EXIT_CONFIG);
}


int
test_sync_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_fixture_tax_codes),
        cmocka_unit_test(test_presentment_money),
        cmocka_unit_test(test_current_quantities),
        cmocka_unit_test(test_discount_prorated),
        cmocka_unit_test(test_tax_line_policy),
        cmocka_unit_test(test_tolerance),
        cmocka_unit_test(test_companies),
        cmocka_unit_test(test_sync_plan),
        cmocka_unit_test(test_line_payloads),
        cmocka_unit_test(test_settings),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("order sync", tests, setup,
                                       teardown);
}

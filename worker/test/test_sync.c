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


/* BC's salesOrderLine for line l of an order, under id and sequence */
static json_t *
bc_line_new(const sbw_bc_line_t *l, const char *id, int64_t seq)
{
    json_t  *j;

    j = json_pack("{s:s,s:s,s:I,s:s,s:s,s:s?}", "id", id, "@odata.etag",
                  "W/\"e\"", "sequence", (json_int_t) seq, "lineType",
                  l->type == SBW_LINE_COMMENT ? "Comment"
                  : l->type == SBW_LINE_ITEM ? "Item" : "Account",
                  "lineObjectNumber", l->number ? l->number : "",
                  "description", l->description);
    json_object_set_new(j, "quantity", json_integer(l->quantity));
    json_object_set_new(j, "unitPrice",
                        json_real((double) l->unit_price / 100.0));
    json_object_set_new(j, "discountAmount",
                        json_real((double) l->discount / 100.0));

    if (l->tax_code != NULL) {
        json_object_set_new(j, "taxCode", json_string(l->tax_code));
    }

    return j;
}


/* BC's salesOrderLines for an order as the worker posted it */
static json_t *
bc_lines_of(const sbw_bc_order_t *o)
{
    char     id[32];
    size_t   i;
    json_t  *a;

    a = json_array();

    for (i = 0; i < o->nlines; i++) {
        snprintf(id, sizeof(id), "line-%zu", i);
        json_array_append_new(a, bc_line_new(&o->lines[i], id,
                                             (int64_t) (i + 1) * 10000));
    }

    return a;
}


/*
 * The plan of an update: unchanged lines are left alone, changed
 * amounts PATCHed, from another item on the rest replaced (DELETEs, then
 * POSTs), leftovers deleted; the comment and the variance line are not
 * touched.
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
    v = json_pack("{s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:f,s:f}", "id", "var",
                  "@odata.etag", "W/\"v\"", "sequence",
                  SBW_VARIANCE_SEQUENCE, "lineType", "Account",
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

    /*
     * another item in BC's first place: the order is new from there on,
     * so every line after the comment is deleted, then posted again
     * under sequences after the comment's
     */
    json_object_set_new(json_array_get(bc, 1), "lineObjectNumber",
                        json_string("1906-S"));
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 6);
    assert_int_equal(ops[0].op, SBW_OP_DELETE);
    assert_string_equal(ops[0].bc_line_id, "line-1");
    assert_int_equal(ops[1].op, SBW_OP_DELETE);
    assert_string_equal(ops[1].bc_line_id, "line-2");
    assert_int_equal(ops[2].op, SBW_OP_DELETE);
    assert_string_equal(ops[2].bc_line_id, "line-3");
    assert_int_equal(ops[3].op, SBW_OP_POST);
    assert_int_equal(ops[3].line, 1);
    assert_int_equal(ops[3].sequence, 20000);
    assert_null(ops[3].bc_line_id);
    assert_int_equal(ops[4].op, SBW_OP_POST);
    assert_int_equal(ops[4].line, 2);
    assert_int_equal(ops[4].sequence, 30000);
    assert_int_equal(ops[5].op, SBW_OP_POST);
    assert_int_equal(ops[5].line, 3);
    assert_int_equal(ops[5].sequence, 40000);

    /* an extra BC line is deleted; too little room is an error */
    json_object_set_new(json_array_get(bc, 1), "lineObjectNumber",
                        json_string("1896-S"));
    json_array_append_new(bc, json_pack("{s:s,s:s,s:i,s:s,s:s,s:i,s:f,s:f}",
                          "id", "extra", "@odata.etag", "W/\"x\"",
                          "sequence", 50000, "lineType", "Item",
                          "lineObjectNumber", "1928-S", "quantity", 1,
                          "unitPrice", 54.9, "discountAmount", 0.0));
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ops[2].op, SBW_OP_DELETE);
    assert_string_equal(ops[2].bc_line_id, "extra");
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 2, &n),
                     SBW_PLAN_INVALID);

    /* a BC line without an integer sequence: the answer is not usable */
    json_object_set_new(json_array_get(bc, 5), "sequence",
                        json_string("50000"));
    assert_int_equal(sbw_sync_plan(bc, &edited, "40900", ops, 16, &n),
                     SBW_PLAN_INVALID);

    json_decref(bc);
    sbw_order_free(&created);
    sbw_order_free(&edited);
}


/*
 * orders-updated.json changed by what: "lamp" adds an AMSTERDAM Lamp
 * Shopify did not tax (the end-to-end case in t/160), "pedestal" an
 * ATHENS Mobile Pedestal instead, "no-chair" takes the chairs out, and
 * "chairs" leaves the edit as it is.
 */
static void
map_edit(sync_state_t *ss, const char *what, sbw_bc_order_t *o)
{
    int      rc;
    char     err[1024];
    json_t  *order, *items, *li;

    order = load("shopify/orders-updated.json");
    items = json_object_get(order, "line_items");

    if (strcmp(what, "lamp") == 0 || strcmp(what, "pedestal") == 0) {
        li = json_deep_copy(json_array_get(items, 1));
        json_object_set_new(li, "id", json_integer(15120450001077));
        json_object_set_new(li, "variant_id", json_integer(45512345000077));
        json_object_set_new(li, "sku", json_string(what[0] == 'l'
                                                   ? "1928-S" : "1906-S"));
        json_object_set_new(li, "title", json_string(what[0] == 'l'
                            ? "AMSTERDAM Lamp" : "ATHENS Mobile Pedestal"));
        json_object_set_new(li, "price", json_string(what[0] == 'l'
                                                     ? "54.90" : "281.40"));
        json_object_set_new(li, "quantity", json_integer(1));
        json_object_set_new(li, "current_quantity", json_integer(1));
        json_object_set_new(li, "tax_lines", json_array());
        json_array_append_new(items, li);

    } else if (strcmp(what, "no-chair") == 0) {
        json_object_set_new(json_array_get(items, 1), "current_quantity",
                            json_integer(0));
    }

    ss->mc.use_current = 1;
    rc = sbw_order_map(&ss->mc, order, o, err, sizeof(err));
    ss->mc.use_current = 0;
    json_decref(order);

    if (rc != SBW_MAP_OK) {
        fail_msg("%s: mapping failed (%d): %s", what, rc, err);
    }
}


/*
 * Carry one planned change out on BC's lines as BC would.  Returns 0,
 * or 409 for a POST whose sequence a line has already (BC's
 * Internal_EntityWithSameKeyExists: nothing added).
 */
static int
bc_apply(json_t *bc, const sbw_bc_order_t *o, const sbw_sync_op_t *op)
{
    char     id[48];
    size_t   i;
    json_t  *ln;
    const sbw_bc_line_t  *l;

    if (op->op == SBW_OP_POST) {
        json_array_foreach(bc, i, ln) {
            if (json_integer_value(json_object_get(ln, "sequence"))
                == op->sequence)
            {
                return 409;
            }
        }

        assert_true(op->sequence > 0);
        assert_true(op->sequence <= SBW_LINE_SEQUENCE_MAX);
        snprintf(id, sizeof(id), "posted-%lld", (long long) op->sequence);
        json_array_append_new(bc, bc_line_new(&o->lines[op->line], id,
                                              op->sequence));
        return 0;
    }

    json_array_foreach(bc, i, ln) {
        if (strcmp(json_string_value(json_object_get(ln, "id")),
                   op->bc_line_id) != 0)
        {
            continue;
        }

        if (op->op == SBW_OP_DELETE) {
            json_array_remove(bc, i);
            return 0;
        }

        l = &o->lines[op->line];
        json_object_set_new(ln, "description", json_string(l->description));
        json_object_set_new(ln, "quantity", json_integer(l->quantity));
        json_object_set_new(ln, "unitPrice",
                            json_real((double) l->unit_price / 100.0));
        json_object_set_new(ln, "discountAmount",
                            json_real((double) l->discount / 100.0));
        return 0;
    }

    fail_msg("%s: no BC line %s", op->op == SBW_OP_DELETE ? "DELETE"
             : "PATCH", op->bc_line_id);
    return -1;
}


/*
 * Plan and carry out until nothing is left to do, as the worker does:
 * a POST BC refuses (409) ends the pass, the lines are read again and
 * planned again.  Then the order's lines must be o's: the item and
 * account lines in o's order, each sequence once.
 */
static void
bc_converge(json_t *bc, const sbw_bc_order_t *o, const char *acct)
{
    int             pass, seen;
    size_t          i, j, n;
    int64_t         a, b;
    sbw_sync_op_t   ops[32];

    for (pass = 0; pass < 4; pass++) {
        assert_int_equal(sbw_sync_plan(bc, o, acct, ops, 32, &n), 0);

        if (n == 0) {
            break;
        }

        for (i = 0; i < n; i++) {
            if (bc_apply(bc, o, &ops[i]) != 0) {
                break;
            }
        }
    }

    assert_true(pass < 4);

    for (i = 0; i < json_array_size(bc); i++) {
        a = json_integer_value(json_object_get(json_array_get(bc, i),
                                               "sequence"));

        for (j = i + 1; j < json_array_size(bc); j++) {
            b = json_integer_value(json_object_get(json_array_get(bc, j),
                                                   "sequence"));
            assert_true(a != b);
        }
    }

    /* in sequence order, BC's item and account lines are o's */
    j = 0;
    seen = 0;

    for (b = 0; ; ) {
        const json_t  *next = NULL;

        a = -1;

        json_array_foreach(bc, i, next) {
            int64_t  q = json_integer_value(json_object_get(next,
                                                            "sequence"));

            if (q > b && (a < 0 || q < a)) {
                a = q;
            }
        }

        if (a < 0) {
            break;
        }

        b = a;

        json_array_foreach(bc, i, next) {
            if (json_integer_value(json_object_get(next, "sequence")) != a
                || strcmp(json_string_value(json_object_get(next,
                                            "lineType")), "Comment") == 0
                || sbw_is_variance_line(next, acct))
            {
                continue;
            }

            while (j < o->nlines && o->lines[j].type == SBW_LINE_COMMENT) {
                j++;
            }

            assert_true(j < o->nlines);
            assert_string_equal(json_string_value(json_object_get(next,
                                "lineObjectNumber")), o->lines[j].number);
            assert_int_equal(json_integer_value(json_object_get(next,
                             "quantity")), o->lines[j].quantity);
            j++;
            seen++;
        }
    }

    while (j < o->nlines && o->lines[j].type == SBW_LINE_COMMENT) {
        j++;
    }

    assert_int_equal(j, o->nlines);
    assert_true(seen > 0);
}


/* the sequence after another: BC's step, never the variance line's */
static void
test_next_sequence(void **state)
{
    (void) state;

    assert_int_equal(sbw_next_sequence(0), 10000);
    assert_int_equal(sbw_next_sequence(-5), 10000);
    assert_int_equal(sbw_next_sequence(30000), 40000);
    assert_int_equal(sbw_next_sequence(35000), 45000);
    assert_int_equal(sbw_next_sequence(999990000), 1000010000);
    assert_int_equal(sbw_next_sequence(SBW_VARIANCE_SEQUENCE), 1000010000);
    assert_int_equal(sbw_next_sequence(2147470000), 2147480000);
    assert_int_equal(sbw_next_sequence(2147473647), 2147483647);
    assert_int_equal(sbw_next_sequence(2147473648), -1);
    assert_int_equal(sbw_next_sequence(2147480000), -1);
}


/*
 * An added line is posted under the sequence after the highest line the
 * update keeps; the lines after it in the order (the shipping line) are
 * deleted first and posted after it.
 */
static void
test_added_line_sequence(void **state)
{
    char            *p;
    size_t           n;
    json_t          *bc;
    sync_state_t    *ss;
    sbw_sync_op_t    ops[16];
    sbw_bc_line_t    l;
    sbw_bc_order_t   created, lamp;

    ss = *state;
    map_ok(&ss->mc, "orders-create-basic.json", &created);
    map_edit(ss, "lamp", &lamp);
    bc = bc_lines_of(&created);

    /* #1043 as created: comment 10000, desk, chairs, shipping 40000 */
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ops[0].op, SBW_OP_PATCH);
    assert_int_equal(ops[1].op, SBW_OP_PATCH);
    assert_int_equal(ops[2].op, SBW_OP_DELETE);
    assert_string_equal(ops[2].bc_line_id, "line-3");
    assert_int_equal(ops[3].op, SBW_OP_POST);
    assert_string_equal(lamp.lines[ops[3].line].number, "1928-S");
    assert_int_equal(ops[3].sequence, 40000);
    assert_int_equal(ops[4].op, SBW_OP_POST);
    assert_string_equal(lamp.lines[ops[4].line].number, "40400");
    assert_int_equal(ops[4].sequence, 50000);

    /* what the worker sends for it */
    l = lamp.lines[ops[3].line];
    l.sequence = ops[3].sequence;
    p = sbw_order_line_payload(&l, 0);
    assert_string_equal(p, "{\"sequence\":40000,\"lineType\":\"Item\","
                        "\"lineObjectNumber\":\"1928-S\",\"description\":"
                        "\"AMSTERDAM Lamp\",\"quantity\":1,\"unitPrice\":"
                        "54.90,\"discountAmount\":0.00,\"taxCode\":"
                        "\"NONTAXABLE\"}");
    free(p);

    /* the highest kept line may be a comment (a person's note) */
    json_array_append_new(bc, json_pack("{s:s,s:i,s:s,s:s}", "id", "note",
                                        "sequence", 45000, "lineType",
                                        "Comment", "description", "call"));
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n), 0);
    assert_int_equal(ops[3].sequence, 55000);
    assert_int_equal(ops[4].sequence, 65000);
    json_array_remove(bc, json_array_size(bc) - 1);

    /* the variance line's sequence is never used, even before it exists */
    json_object_set_new(json_array_get(bc, 2), "sequence",
                        json_integer(999990000));
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n), 0);
    assert_int_equal(ops[3].sequence, 1000010000);
    assert_int_equal(ops[4].sequence, 1000020000);

    /* nor does a variance line at its own sequence count as kept line */
    json_object_set_new(json_array_get(bc, 2), "sequence",
                        json_integer(30000));
    json_array_append_new(bc, json_pack("{s:s,s:i,s:s,s:s,s:s,s:i,s:f,"
                          "s:f}", "id", "var", "sequence",
                          SBW_VARIANCE_SEQUENCE, "lineType", "Account",
                          "lineObjectNumber", "40900", "description",
                          SBW_VARIANCE_DESCRIPTION, "quantity", 1,
                          "unitPrice", 0.01, "discountAmount", 0.0));
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ops[3].sequence, 40000);
    bc_converge(bc, &lamp, "40900");

    /* BC's Integer range: no line number is left after 2147480000 */
    json_decref(bc);
    bc = bc_lines_of(&created);
    json_object_set_new(json_array_get(bc, 2), "sequence",
                        json_integer(2147480000));
    json_object_set_new(json_array_get(bc, 3), "sequence",
                        json_integer(2147483000));
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n),
                     SBW_PLAN_NO_SEQUENCE);
    /* nor for the shipping line after a lamp at 2147480000 */
    json_object_set_new(json_array_get(bc, 2), "sequence",
                        json_integer(2147470000));
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n),
                     SBW_PLAN_NO_SEQUENCE);
    /* the edit without the lamp needs none */
    sbw_order_free(&lamp);
    map_edit(ss, "chairs", &lamp);
    assert_int_equal(sbw_sync_plan(bc, &lamp, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 2);

    json_decref(bc);
    sbw_order_free(&created);
    sbw_order_free(&lamp);
}


/*
 * A plan cut short after any of its changes, with or without the POST
 * that was in flight carried out late by BC, then planned again: every
 * line the new plan posts gets the sequence the first plan gave it, so
 * a late POST and the next try's collide (one of them 409) instead of
 * adding the line twice; and planning on converges on the edit.
 */
static void
test_replan_same_sequence(void **state)
{
    int              late;
    size_t           k, i, j, n, m;
    json_t          *first, *bc;
    sync_state_t    *ss;
    sbw_sync_op_t    ops[16], again[16];
    sbw_bc_order_t   created, edit;
    const char      *what;
    static const char  *edits[] = { "lamp", "pedestal", "no-chair", NULL };
    size_t           e;

    ss = *state;
    map_ok(&ss->mc, "orders-create-basic.json", &created);

    for (e = 0; edits[e / 2] != NULL; e++) {
        what = edits[e / 2];
        map_edit(ss, what, &edit);
        first = bc_lines_of(&created);

        /* a person's note after the lines: kept, and counted */
        if (e % 2) {
            json_array_append_new(first, json_pack("{s:s,s:i,s:s,s:s}",
                                  "id", "note", "sequence", 45000,
                                  "lineType", "Comment", "description",
                                  "call first"));
        }

        assert_int_equal(sbw_sync_plan(first, &edit, "40900", ops, 16, &n),
                         0);

        for (k = 0; k <= n; k++) {
            for (late = 0; late <= (k < n && ops[k].op == SBW_OP_POST);
                 late++)
            {
                bc = json_deep_copy(first);

                for (i = 0; i < k; i++) {
                    assert_int_equal(bc_apply(bc, &edit, &ops[i]), 0);
                }

                /* the change in flight at the cut, done by BC after all */
                if (late) {
                    assert_int_equal(bc_apply(bc, &edit, &ops[k]), 0);
                }

                assert_int_equal(sbw_sync_plan(bc, &edit, "40900", again,
                                               16, &m), 0);

                for (i = 0; i < m; i++) {
                    if (again[i].op != SBW_OP_POST) {
                        continue;
                    }

                    for (j = 0; j < n; j++) {
                        if (ops[j].op == SBW_OP_POST
                            && ops[j].line == again[i].line)
                        {
                            break;
                        }
                    }

                    assert_true(j < n);
                    assert_int_equal(again[i].sequence, ops[j].sequence);
                    /* a line BC has already is not posted again */
                    assert_false(late && j <= k);
                }

                /* the late POST comes after the next try's: refused */
                if (!late && k < n && ops[k].op == SBW_OP_POST) {
                    json_t  *later = json_deep_copy(bc);

                    bc_converge(later, &edit, "40900");
                    assert_int_equal(bc_apply(later, &edit, &ops[k]), 409);
                    bc_converge(later, &edit, "40900");
                    json_decref(later);
                }

                bc_converge(bc, &edit, "40900");
                json_decref(bc);
            }
        }

        json_decref(first);
        sbw_order_free(&edit);
    }

    sbw_order_free(&created);
}


/*
 * Two updates in a row, and a line removed and then added again: each
 * posts after the lines it keeps, never on a line that is there, and
 * the order converges each time.
 */
static void
test_updates_in_a_row(void **state)
{
    size_t           i, n;
    json_t          *bc;
    sync_state_t    *ss;
    sbw_sync_op_t    ops[16];
    sbw_bc_order_t   created, lamp, pedestal, nochair, chairs;

    ss = *state;
    map_ok(&ss->mc, "orders-create-basic.json", &created);
    map_edit(ss, "lamp", &lamp);
    map_edit(ss, "pedestal", &pedestal);
    map_edit(ss, "no-chair", &nochair);
    map_edit(ss, "chairs", &chairs);

    bc = bc_lines_of(&created);
    bc_converge(bc, &lamp, "40900");        /* lamp 40000, shipping 50000 */

    /* the lamp gives way to a pedestal: it goes where the lamp was */
    assert_int_equal(sbw_sync_plan(bc, &pedestal, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ops[0].op, SBW_OP_DELETE);
    assert_string_equal(ops[0].bc_line_id, "posted-40000");
    assert_int_equal(ops[1].op, SBW_OP_DELETE);
    assert_string_equal(ops[1].bc_line_id, "posted-50000");
    assert_int_equal(ops[2].op, SBW_OP_POST);
    assert_int_equal(ops[2].sequence, 40000);
    assert_int_equal(ops[3].op, SBW_OP_POST);
    assert_int_equal(ops[3].sequence, 50000);
    bc_converge(bc, &pedestal, "40900");

    /* the chairs and the pedestal taken out: DELETEs, nothing posted */
    assert_int_equal(sbw_sync_plan(bc, &nochair, "40900", ops, 16, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ops[0].op, SBW_OP_DELETE);
    assert_string_equal(ops[0].bc_line_id, "line-2");
    assert_int_equal(ops[1].op, SBW_OP_DELETE);
    assert_string_equal(ops[1].bc_line_id, "posted-40000");
    bc_converge(bc, &nochair, "40900");

    /* and back: after the desk (20000), the rest after them */
    assert_int_equal(sbw_sync_plan(bc, &chairs, "40900", ops, 16, &n), 0);

    for (i = 0; i < n && ops[i].op != SBW_OP_POST; i++) {
        assert_int_equal(ops[i].op, SBW_OP_DELETE);
    }

    assert_int_equal(n - i, 2);
    assert_string_equal(chairs.lines[ops[i].line].number, "1900-S");
    assert_int_equal(ops[i].sequence, 30000);
    assert_int_equal(ops[i + 1].sequence, 40000);
    bc_converge(bc, &chairs, "40900");

    json_decref(bc);
    sbw_order_free(&created);
    sbw_order_free(&lamp);
    sbw_order_free(&pedestal);
    sbw_order_free(&nochair);
    sbw_order_free(&chairs);
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
        cmocka_unit_test(test_next_sequence),
        cmocka_unit_test(test_added_line_sequence),
        cmocka_unit_test(test_replan_same_sequence),
        cmocka_unit_test(test_updates_in_a_row),
        cmocka_unit_test(test_line_payloads),
        cmocka_unit_test(test_settings),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("order sync", tests, setup,
                                       teardown);
}

/*
 * Shopify order -> BC salesOrder mapping (see order_map.h).
 *
 * Every line is mapped in shop money: the plain "price" strings and the
 * "amount" of each discount allocation are in the shop's currency, which
 * is also the order's "currency" and the BC document currency.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "money.h"
#include "order_map.h"


/* room in the refusal message for one line title */
#define SBW_MAP_TITLE_IN_ERR  40


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
    int      failed;
} sbw_buf_t;


static void sbw_err_append(char *err, size_t errlen, const char *fmt, ...);
static int sbw_has_nul(const json_t *v);
static int sbw_line_discount(const sbw_map_conf_t *mc, const json_t *src,
    int64_t *sum, char *why, size_t whylen);
static int sbw_line_amounts(const sbw_map_conf_t *mc, const json_t *src,
    int64_t quantity, int64_t ordered, sbw_bc_line_t *line, char *why,
    size_t whylen);
static int sbw_line_taxed(const sbw_map_conf_t *mc, const json_t *src,
    int *ntax);
static const char *sbw_nontaxable(const sbw_map_conf_t *mc);
static const char *sbw_map_lookup(const json_t *map, const char *key);
static int sbw_map_item(const sbw_map_conf_t *mc, const json_t *li,
    sbw_bc_line_t *line, char *why, size_t whylen, int *ntax);
static int sbw_map_shipping(const sbw_map_conf_t *mc, const json_t *sl,
    sbw_bc_line_t *line, char *why, size_t whylen, int *ntax);
static int sbw_map_tax_lines(const sbw_map_conf_t *mc,
    const json_t *order, sbw_bc_order_t *o, size_t *cap, char *err,
    size_t errlen);
static int sbw_add_line(sbw_bc_order_t *o, size_t *cap,
    const sbw_bc_line_t *line);
static void sbw_buf_add(sbw_buf_t *b, const char *s, size_t n);
static void sbw_buf_str(sbw_buf_t *b, const char *s);
static void sbw_buf_json_string(sbw_buf_t *b, const char *s);
static void sbw_buf_money(sbw_buf_t *b, int64_t cents);
static void sbw_buf_line(sbw_buf_t *b, const sbw_bc_line_t *l,
    int amounts_only);


/*
 * Append a formatted piece to a NUL-terminated message buffer, silently
 * stopping at its end.
 */
static void
sbw_err_append(char *err, size_t errlen, const char *fmt, ...)
{
    size_t   used;
    va_list  ap;

    if (err == NULL || errlen == 0) {
        return;
    }

    used = strlen(err);
    if (used + 1 >= errlen) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}


/*
 * Parse a delivery body.  "\u0000" is valid JSON and jansson refuses it
 * unless told otherwise, which would report a well-formed order as "not
 * valid JSON".  It is accepted here; the mapping refuses a NUL only in
 * the strings it uses (sbw_has_nul()).
 */
json_t *
sbw_order_parse(const char *body, size_t len, json_error_t *err)
{
    return json_loadb(body, len, JSON_ALLOW_NUL, err);
}


/*
 * Whether v is a string holding a NUL character.  As a C string it would
 * silently end there: a SKU "1896-S\u0000X" would book item 1896-S.
 */
static int
sbw_has_nul(const json_t *v)
{
    return json_is_string(v)
           && strlen(json_string_value(v)) != json_string_length(v);
}


/*
 * The order's Shopify id, a positive JSON integer (13 digits today, so
 * well beyond 32 bits).  Returns 0 on success, -1 when absent or unusable.
 */
int
sbw_order_id(const json_t *order, int64_t *id)
{
    const json_t  *v;

    v = json_object_get(order, "id");

    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        return -1;
    }

    *id = (int64_t) json_integer_value(v);
    return 0;
}


/*
 * The externalDocumentNumber of an order: "SHOPIFY-" and the decimal
 * Shopify order id, normalised the way BC stores a Code[35].  The order
 * id, unlike the order name, is unique across shops, never renamed and at
 * most 19 digits, so the result is always 27 characters or less and is
 * the same on every retry.
 */
void
sbw_external_doc_number(int64_t order_id, char *out, size_t len)
{
    char  raw[64];

    snprintf(raw, sizeof(raw), SBW_EXTDOC_PREFIX "%lld",
             (long long) order_id);

    sbw_code_normalize(raw, out, len, SBW_BC_CODE35_LEN);
}


/*
 * An amount of a Shopify object in the document's money: with shop money
 * the plain field ("price"), or its "_set" shop_money when the plain one
 * is absent; with presentment money the "_set" presentment_money, which
 * Shopify gives for every amount.  Returns 0, or -1 when absent or not a
 * decimal.
 */
int
sbw_map_money(const sbw_map_conf_t *mc, const json_t *obj,
    const char *field, int64_t *cents)
{
    char           key[64];
    const json_t  *v, *set;

    if (mc->money != SBW_MONEY_PRESENTMENT) {
        v = json_object_get(obj, field);

        if (v != NULL && !json_is_null(v)) {
            return sbw_money_from_json(v, cents);
        }
    }

    snprintf(key, sizeof(key), "%s_set", field);
    set = json_object_get(obj, key);
    v = json_object_get(set, mc->money == SBW_MONEY_PRESENTMENT
                             ? "presentment_money" : "shop_money");

    return sbw_money_from_json(json_object_get(v, "amount"), cents);
}


/*
 * Whether Shopify charged tax on a line item or shipping line: one of its
 * tax_lines has a non-zero amount.  *ntax counts those amounts (each one
 * was rounded by Shopify on its own).
 */
static int
sbw_line_taxed(const sbw_map_conf_t *mc, const json_t *src, int *ntax)
{
    int            taxed;
    size_t         i;
    int64_t        cents;
    const json_t  *tl;

    taxed = 0;

    json_array_foreach(json_object_get(src, "tax_lines"), i, tl) {
        if (sbw_map_money(mc, tl, "price", &cents) == 0 && cents != 0) {
            taxed = 1;
            (*ntax)++;
        }
    }

    return taxed;
}


/*
 * The taxCode that makes a line non-taxable in BC, or NULL when the
 * worker is told not to send one.
 */
static const char *
sbw_nontaxable(const sbw_map_conf_t *mc)
{
    if (mc->nontaxable_code == NULL || mc->nontaxable_code[0] == '\0'
        || strcmp(mc->nontaxable_code, "none") == 0)
    {
        return NULL;
    }

    return mc->nontaxable_code;
}


/*
 * Sum of the "amount" of every discount allocation of a line item or
 * shipping line (order-level codes included, as Shopify allocates them
 * to the lines).  Each amount must be a decimal from 0 to
 * SBW_MAP_MAX_CENTS, and so must the sum.  Returns SBW_MAP_OK, or
 * SBW_MAP_INVALID with the reason in why.
 */
static int
sbw_line_discount(const sbw_map_conf_t *mc, const json_t *src,
    int64_t *sum, char *why, size_t whylen)
{
    char           text[SBW_MONEY_BUFLEN], max[SBW_MONEY_BUFLEN];
    size_t         i;
    int64_t        cents;
    const json_t  *allocs, *a;

    *sum = 0;
    sbw_money_format(SBW_MAP_MAX_CENTS, max, sizeof(max));

    allocs = json_object_get(src, "discount_allocations");
    if (allocs == NULL || json_is_null(allocs)) {
        return SBW_MAP_OK;
    }

    if (!json_is_array(allocs)) {
        snprintf(why, whylen, "discount_allocations is not an array");
        return SBW_MAP_INVALID;
    }

    json_array_foreach(allocs, i, a) {
        if (sbw_map_money(mc, a, "amount", &cents) != 0) {
            snprintf(why, whylen, "discount allocation %zu is not a decimal "
                     "amount", i + 1);
            return SBW_MAP_INVALID;
        }

        sbw_money_format(cents, text, sizeof(text));

        if (cents < 0) {
            snprintf(why, whylen, "discount allocation %zu amount %s is "
                     "negative", i + 1, text);
            return SBW_MAP_INVALID;
        }

        if (cents > SBW_MAP_MAX_CENTS) {
            snprintf(why, whylen, "discount allocation %zu amount %s is more "
                     "than %s", i + 1, text, max);
            return SBW_MAP_INVALID;
        }

        if (__builtin_add_overflow(*sum, cents, sum)
            || *sum > SBW_MAP_MAX_CENTS)
        {
            snprintf(why, whylen, "discount allocations add up to more "
                     "than %s", max);
            return SBW_MAP_INVALID;
        }
    }

    return SBW_MAP_OK;
}


/*
 * The money of a line: unit price, discount and amount (quantity x
 * price - discount), with the checks that keep an impossible line out
 * of BC: no negative price or discount, no amount above
 * SBW_MAP_MAX_CENTS, no discount above the line total.  The product is
 * computed with an overflow check.  Returns SBW_MAP_OK, or
 * SBW_MAP_INVALID with the reason (naming the field) in why.
 */
static int
sbw_line_amounts(const sbw_map_conf_t *mc, const json_t *src,
    int64_t quantity, int64_t ordered, sbw_bc_line_t *line, char *why,
    size_t whylen)
{
    int                rc;
    char               a[SBW_MONEY_BUFLEN], b[SBW_MONEY_BUFLEN];
    char               max[SBW_MONEY_BUFLEN];
    int64_t            price, gross, discount;
    unsigned __int128  part;

    sbw_money_format(SBW_MAP_MAX_CENTS, max, sizeof(max));

    if (sbw_map_money(mc, src, "price", &price) != 0) {
        snprintf(why, whylen, "price is not a decimal amount");
        return SBW_MAP_INVALID;
    }

    sbw_money_format(price, a, sizeof(a));

    if (price < 0) {
        snprintf(why, whylen, "price %s is negative", a);
        return SBW_MAP_INVALID;
    }

    if (price > SBW_MAP_MAX_CENTS) {
        snprintf(why, whylen, "price %s is more than %s", a, max);
        return SBW_MAP_INVALID;
    }

    if (__builtin_mul_overflow(quantity, price, &gross)
        || gross > SBW_MAP_MAX_CENTS)
    {
        snprintf(why, whylen, "line total %lld x %s is more than %s",
                 (long long) quantity, a, max);
        return SBW_MAP_INVALID;
    }

    rc = sbw_line_discount(mc, src, &discount, why, whylen);
    if (rc != SBW_MAP_OK) {
        return rc;
    }

    /*
     * an edited order keeps the allocations of the ordered quantity: the
     * current quantity gets its share, rounded half up
     */
    if (ordered > 0 && quantity != ordered) {
        part = (unsigned __int128) discount * (uint64_t) quantity * 2
               + (uint64_t) ordered;
        discount = (int64_t) (part / ((uint64_t) ordered * 2));
    }

    if (discount > gross) {
        sbw_money_format(discount, a, sizeof(a));
        sbw_money_format(gross, b, sizeof(b));
        snprintf(why, whylen, "discount %s is more than the line total %s",
                 a, b);
        return SBW_MAP_INVALID;
    }

    line->quantity = quantity;
    line->unit_price = price;
    line->discount = discount;
    line->amount = gross - discount;

    return SBW_MAP_OK;
}


/*
 * The string stored under key in a JSON object map, or NULL.
 */
static const char *
sbw_map_lookup(const json_t *map, const char *key)
{
    const json_t  *v;

    if (map == NULL) {
        return NULL;
    }

    v = json_object_get(map, key);

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    return json_string_value(v);
}


/*
 * Map one Shopify line item to an Item line.  The BC item number comes
 * from the SKU (through the SKU map when it lists the SKU, otherwise the
 * SKU itself); a line without SKU is looked up by variant id in the
 * variant map.  Gift cards, tips and custom lines (no variant, no SKU)
 * have no BC item: they become Account lines on the G/L account
 * configured for their kind, and when none is configured they are
 * refused with the reason in why, so that the caller can reject the
 * whole order rather than book part of it.
 */
static int
sbw_map_item(const sbw_map_conf_t *mc, const json_t *li,
    sbw_bc_line_t *line, char *why, size_t whylen, int *ntax)
{
    int              rc, taxed;
    json_int_t       ordered;
    char             key[32];
    json_int_t       quantity;
    const char      *sku, *title, *number, *role, *account;
    const json_t    *v, *variant;
    sbw_line_type_e  type;

    memset(line, 0, sizeof(*line));

    v = json_object_get(li, "title");
    title = json_is_string(v) ? json_string_value(v) : "";

    if (sbw_has_nul(v)) {
        snprintf(why, whylen, "title contains a NUL character");
        return SBW_MAP_INVALID;
    }

    v = json_object_get(li, "sku");
    sku = json_is_string(v) ? json_string_value(v) : "";

    if (sbw_has_nul(v)) {
        snprintf(why, whylen, "sku contains a NUL character");
        return SBW_MAP_INVALID;
    }

    variant = json_object_get(li, "variant_id");

    number = NULL;
    role = NULL;
    account = NULL;

    if (json_is_true(json_object_get(li, "gift_card"))) {
        role = "gift_card_sold";
        account = mc->gift_card_account;
        snprintf(why, whylen, "gift card");

    } else if (sku[0] != '\0') {
        number = sbw_map_lookup(mc->sku_map, sku);

        if (number == NULL) {
            number = sku;
        }

    } else if (json_is_integer(variant)) {
        snprintf(key, sizeof(key), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(variant));

        number = sbw_map_lookup(mc->variant_map, key);

        if (number == NULL) {
            snprintf(why, whylen, "no SKU and variant %s is not in the "
                     "variant map", key);
            return SBW_MAP_UNSUPPORTED;
        }

    } else if (strcmp(title, "Tip") == 0) {
        role = "tip";
        account = mc->tip_account;
        snprintf(why, whylen, "tip");

    } else {
        role = "custom_line";
        account = mc->custom_line_account;
        snprintf(why, whylen, "custom line without variant or SKU");
    }

    type = SBW_LINE_ITEM;

    if (role != NULL) {
        if (account == NULL || account[0] == '\0') {
            return SBW_MAP_UNSUPPORTED;
        }

        why[0] = '\0';
        type = SBW_LINE_ACCOUNT;
        number = account;

    } else {
        role = "item";
    }

    v = json_object_get(li, "quantity");

    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        snprintf(why, whylen, "quantity is not a positive integer");
        return SBW_MAP_INVALID;
    }

    quantity = json_integer_value(v);
    ordered = quantity;

    if (quantity > SBW_MAP_MAX_QUANTITY) {
        snprintf(why, whylen, "quantity %" JSON_INTEGER_FORMAT " is more "
                 "than %d", quantity, SBW_MAP_MAX_QUANTITY);
        return SBW_MAP_INVALID;
    }

    /* an edited order: what is left after edits and refunds */
    v = json_object_get(li, "current_quantity");

    if (mc->use_current && v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0
            || json_integer_value(v) > ordered)
        {
            snprintf(why, whylen, "current_quantity is not an integer "
                     "from 0 to the quantity");
            return SBW_MAP_INVALID;
        }

        quantity = json_integer_value(v);

        if (quantity == 0) {
            return SBW_MAP_SKIPPED;
        }
    }

    rc = sbw_line_amounts(mc, li, (int64_t) quantity, (int64_t) ordered,
                          line, why, whylen);
    if (rc != SBW_MAP_OK) {
        return rc;
    }

    taxed = sbw_line_taxed(mc, li, ntax);
    line->tax_code = (!taxed || mc->tax_line) ? sbw_nontaxable(mc) : NULL;

    v = json_object_get(li, "id");

    line->type = type;
    line->role = role;
    line->shopify_id = json_is_integer(v) ? json_integer_value(v) : 0;
    line->number = strdup(number);
    line->description = sbw_utf8_truncate(title, SBW_BC_DESCRIPTION_LEN);

    if (line->number == NULL || line->description == NULL) {
        free(line->number);
        free(line->description);
        return SBW_MAP_NOMEM;
    }

    return SBW_MAP_OK;
}


/*
 * Map one shipping line to a G/L Account line on the shipping account:
 * quantity 1, its price as unit price and its own discount allocations
 * (shipping discount codes) as line discount.
 */
static int
sbw_map_shipping(const sbw_map_conf_t *mc, const json_t *sl,
    sbw_bc_line_t *line, char *why, size_t whylen, int *ntax)
{
    int            rc, taxed;
    const char    *title;
    const json_t  *v;

    memset(line, 0, sizeof(*line));

    v = json_object_get(sl, "title");
    title = (json_is_string(v) && json_string_length(v) > 0)
            ? json_string_value(v) : "Shipping";

    if (sbw_has_nul(v)) {
        snprintf(why, whylen, "title contains a NUL character");
        return SBW_MAP_INVALID;
    }

    rc = sbw_line_amounts(mc, sl, 1, 1, line, why, whylen);
    if (rc != SBW_MAP_OK) {
        return rc;
    }

    taxed = sbw_line_taxed(mc, sl, ntax);
    line->tax_code = (!taxed || mc->tax_line) ? sbw_nontaxable(mc) : NULL;

    v = json_object_get(sl, "id");

    line->type = SBW_LINE_ACCOUNT;
    line->role = "shipping";
    line->shopify_id = json_is_integer(v) ? json_integer_value(v) : 0;
    line->number = strdup(mc->shipping_account ? mc->shipping_account : "");
    line->description = sbw_utf8_truncate(title, SBW_BC_DESCRIPTION_LEN);

    if (line->number == NULL || line->description == NULL) {
        free(line->number);
        free(line->description);
        return SBW_MAP_NOMEM;
    }

    return SBW_MAP_OK;
}


/*
 * Append a copy of line to the order's line array, growing it as needed.
 * The order takes over the line's strings.
 */
static int
sbw_add_line(sbw_bc_order_t *o, size_t *cap, const sbw_bc_line_t *line)
{
    size_t          ncap;
    sbw_bc_line_t  *nl;

    if (o->nlines == *cap) {
        ncap = *cap ? *cap * 2 : 8;

        nl = realloc(o->lines, ncap * sizeof(sbw_bc_line_t));
        if (nl == NULL) {
            return -1;
        }

        o->lines = nl;
        *cap = ncap;
    }

    o->lines[o->nlines++] = *line;

    return 0;
}


/*
 * BC365_TAX_POLICY=line: Shopify's tax as Account lines on the tax
 * account, one per tax title of the order ("GA State Tax"), or one
 * "Tax" line with the current total tax of an edited order.  Every line
 * of the order is then sent non-taxable, so BC adds no tax of its own.
 */
static int
sbw_map_tax_lines(const sbw_map_conf_t *mc, const json_t *order,
    sbw_bc_order_t *o, size_t *cap, char *err, size_t errlen)
{
    size_t          i;
    int64_t         cents;
    const char     *title;
    const json_t   *tl, *v;
    sbw_bc_line_t   line;

    if (mc->tax_account == NULL || mc->tax_account[0] == '\0') {
        sbw_err_append(err, errlen, "no tax account for Shopify's tax");
        return SBW_MAP_UNSUPPORTED;
    }

    for (i = 0; ; i++) {
        memset(&line, 0, sizeof(line));

        if (mc->use_current) {
            if (i > 0) {
                break;
            }

            if (sbw_map_money(mc, order, "current_total_tax", &cents) != 0) {
                sbw_err_append(err, errlen, "current_total_tax is not a "
                               "decimal amount");
                return SBW_MAP_INVALID;
            }

            title = "Tax";

        } else {
            tl = json_array_get(json_object_get(order, "tax_lines"), i);
            if (tl == NULL) {
                break;
            }

            if (sbw_map_money(mc, tl, "price", &cents) != 0) {
                sbw_err_append(err, errlen, "tax line %zu: price is not a "
                               "decimal amount", i + 1);
                return SBW_MAP_INVALID;
            }

            v = json_object_get(tl, "title");
            title = json_is_string(v) && !sbw_has_nul(v)
                    ? json_string_value(v) : "Tax";
        }

        if (cents == 0) {
            continue;
        }

        if (cents < 0 || cents > SBW_MAP_MAX_CENTS) {
            sbw_err_append(err, errlen, "tax amount out of range");
            return SBW_MAP_INVALID;
        }

        line.type = SBW_LINE_ACCOUNT;
        line.role = "tax";
        line.quantity = 1;
        line.unit_price = cents;
        line.amount = cents;
        line.tax_code = sbw_nontaxable(mc);
        line.number = strdup(mc->tax_account);
        line.description = sbw_utf8_truncate(title, SBW_BC_DESCRIPTION_LEN);

        if (line.number == NULL || line.description == NULL
            || sbw_add_line(o, cap, &line) != 0)
        {
            free(line.number);
            free(line.description);
            return SBW_MAP_NOMEM;
        }
    }

    return SBW_MAP_OK;
}


/*
 * Build the BC sales order for a Shopify order.  On SBW_MAP_OK, out holds
 * the header and lines (free with sbw_order_free()).  The first line is a
 * Comment carrying the Shopify order name, so a merchant reading the BC
 * order sees "#1043"; then one line per line item (an Item line, or an
 * Account line for a gift card, tip or custom line when its account is
 * configured) and one Account line per shipping line.  Every line is
 * checked before anything is returned: if any line cannot be mapped the
 * result is SBW_MAP_UNSUPPORTED and err names all such lines, because a
 * partial order in BC is worse than none.  SBW_MAP_INVALID means the
 * payload itself is unusable: no id, a line that is not an object,
 * malformed or impossible amounts (see SBW_MAP_MAX_CENTS), a NUL
 * character in a string the mapping uses.
 */
int
sbw_order_map(const sbw_map_conf_t *mc, const json_t *order,
    sbw_bc_order_t *out, char *err, size_t errlen)
{
    int             rc, result, nbad, ntax;
    char            why[160], max[SBW_MONEY_BUFLEN], *title;
    size_t          i, cap;
    int64_t         id;
    const char     *s;
    const json_t   *items, *ships, *li, *v;
    sbw_bc_line_t   line;

    static const char  *texts[] = { "name", "currency", "created_at" };

    memset(out, 0, sizeof(*out));
    cap = 0;

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }

    if (!json_is_object(order) || sbw_order_id(order, &id) != 0) {
        sbw_err_append(err, errlen, "order has no usable \"id\"");
        return SBW_MAP_INVALID;
    }

    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        if (sbw_has_nul(json_object_get(order, texts[i]))) {
            sbw_err_append(err, errlen, "%s contains a NUL character",
                           texts[i]);
            return SBW_MAP_INVALID;
        }
    }

    out->order_id = id;
    sbw_external_doc_number(id, out->external_doc, sizeof(out->external_doc));

    v = json_object_get(order, "name");
    s = json_is_string(v) ? json_string_value(v) : "";

    out->order_name = strdup(s);
    out->customer_number = strdup(mc->customer_number
                                  ? mc->customer_number : "");

    if (out->order_name == NULL || out->customer_number == NULL) {
        sbw_order_free(out);
        return SBW_MAP_NOMEM;
    }

    v = json_object_get(order, mc->money == SBW_MONEY_PRESENTMENT
                               ? "presentment_currency" : "currency");

    if (json_is_string(v) && json_string_length(v) > 0) {
        out->currency = strdup(json_string_value(v));

        if (out->currency == NULL) {
            sbw_order_free(out);
            return SBW_MAP_NOMEM;
        }
    }

    /* the date part of created_at is already in the shop's UTC offset */
    v = json_object_get(order, "created_at");
    s = json_is_string(v) ? json_string_value(v) : "";

    if (strlen(s) >= 10 && s[4] == '-' && s[7] == '-') {
        memcpy(out->order_date, s, 10);
        out->order_date[10] = '\0';
    }

    out->taxes_included = json_is_true(json_object_get(order,
                                                       "taxes_included"));

    v = json_object_get(order, "updated_at");

    if (json_is_string(v) && json_string_length(v) < sizeof(out->updated_at)
        && !sbw_has_nul(v))
    {
        snprintf(out->updated_at, sizeof(out->updated_at), "%s",
                 json_string_value(v));
    }

    /* the total BC's document must reach */
    out->shopify_total = -1;
    s = mc->use_current && json_object_get(order, "current_total_price")
        ? "current_total_price" : "total_price";

    if (sbw_map_money(mc, order, s, &out->shopify_total) != 0) {
        out->shopify_total = -1;
    }

    /* the order name goes first, as a Comment line */
    memset(&line, 0, sizeof(line));
    line.type = SBW_LINE_COMMENT;
    line.role = "note";

    if (out->order_name[0] != '\0') {
        snprintf(why, sizeof(why), "Shopify order %s", out->order_name);

    } else {
        snprintf(why, sizeof(why), "Shopify order %lld", (long long) id);
    }

    line.description = sbw_utf8_truncate(why, SBW_BC_DESCRIPTION_LEN);

    if (line.description == NULL || sbw_add_line(out, &cap, &line) != 0) {
        free(line.description);
        sbw_order_free(out);
        return SBW_MAP_NOMEM;
    }

    items = json_object_get(order, "line_items");

    if (!json_is_array(items) || json_array_size(items) == 0) {
        if (out->order_name[0] != '\0') {
            sbw_err_append(err, errlen, "order %s has no line items",
                           out->order_name);

        } else {
            sbw_err_append(err, errlen, "order %lld has no line items",
                           (long long) id);
        }

        sbw_order_free(out);
        return SBW_MAP_INVALID;
    }

    result = SBW_MAP_OK;
    nbad = 0;
    ntax = 0;

    json_array_foreach(items, i, li) {
        if (!json_is_object(li)) {
            sbw_err_append(err, errlen, "%sline %zu is not an object",
                           nbad ? "; " : "", i + 1);
            result = SBW_MAP_INVALID;
            nbad++;
            continue;
        }

        why[0] = '\0';
        rc = sbw_map_item(mc, li, &line, why, sizeof(why), &ntax);

        if (rc == SBW_MAP_NOMEM) {
            sbw_order_free(out);
            return SBW_MAP_NOMEM;
        }

        if (rc == SBW_MAP_SKIPPED) {
            continue;
        }

        if (rc != SBW_MAP_OK) {
            v = json_object_get(li, "title");
            title = sbw_utf8_truncate(json_is_string(v)
                                      ? json_string_value(v) : "",
                                      SBW_MAP_TITLE_IN_ERR);

            v = json_object_get(li, "id");

            sbw_err_append(err, errlen, "%sline %zu \"%s\" (id %"
                           JSON_INTEGER_FORMAT "): %s",
                           nbad ? "; " : "", i + 1,
                           title ? title : "",
                           json_is_integer(v) ? json_integer_value(v) : 0,
                           why);
            free(title);
            nbad++;

            if (rc == SBW_MAP_INVALID || result == SBW_MAP_OK) {
                result = rc;
            }

            continue;
        }

        if (result != SBW_MAP_OK || sbw_add_line(out, &cap, &line) != 0) {
            free(line.number);
            free(line.description);

            if (result == SBW_MAP_OK) {
                sbw_order_free(out);
                return SBW_MAP_NOMEM;
            }
        }
    }

    ships = json_object_get(order, "shipping_lines");

    if (ships != NULL && !json_is_null(ships) && !json_is_array(ships)) {
        sbw_err_append(err, errlen, "%sshipping_lines is not an array",
                       nbad ? "; " : "");
        result = SBW_MAP_INVALID;
        nbad++;
        ships = NULL;
    }

    json_array_foreach(ships, i, li) {
        if (!json_is_object(li)) {
            sbw_err_append(err, errlen, "%sshipping line %zu is not an "
                           "object", nbad ? "; " : "", i + 1);
            result = SBW_MAP_INVALID;
            nbad++;
            continue;
        }

        if (json_is_true(json_object_get(li, "is_removed"))) {
            continue;
        }

        why[0] = '\0';
        rc = sbw_map_shipping(mc, li, &line, why, sizeof(why), &ntax);

        if (rc == SBW_MAP_NOMEM) {
            sbw_order_free(out);
            return SBW_MAP_NOMEM;
        }

        if (rc != SBW_MAP_OK) {
            sbw_err_append(err, errlen, "%sshipping line %zu: %s",
                           nbad ? "; " : "", i + 1, why);
            result = SBW_MAP_INVALID;
            nbad++;
            continue;
        }

        if (result != SBW_MAP_OK || sbw_add_line(out, &cap, &line) != 0) {
            free(line.number);
            free(line.description);

            if (result == SBW_MAP_OK) {
                sbw_order_free(out);
                return SBW_MAP_NOMEM;
            }
        }
    }

    if (result == SBW_MAP_OK && mc->tax_line && !out->taxes_included) {
        result = sbw_map_tax_lines(mc, order, out, &cap, err, errlen);
    }

    if (result != SBW_MAP_OK) {
        sbw_order_free(out);
        return result;
    }

    out->ntax_lines = ntax;

    /* each line is within the bound, and so must their sum be */
    for (i = 0; i < out->nlines; i++) {
        if (__builtin_add_overflow(out->lines_total, out->lines[i].amount,
                                   &out->lines_total)
            || out->lines_total > SBW_MAP_MAX_CENTS)
        {
            sbw_money_format(SBW_MAP_MAX_CENTS, max, sizeof(max));
            sbw_err_append(err, errlen, "order total is more than %s", max);
            sbw_order_free(out);
            return SBW_MAP_INVALID;
        }
    }

    return SBW_MAP_OK;
}


/*
 * Growable text buffer used to write the request body.  Allocation
 * failures are remembered and reported once at the end.
 */
static void
sbw_buf_add(sbw_buf_t *b, const char *s, size_t n)
{
    size_t   ncap;
    char    *nd;

    if (b->failed) {
        return;
    }

    if (b->len + n + 1 > b->cap) {
        ncap = b->cap ? b->cap : 1024;

        while (ncap < b->len + n + 1) {
            ncap *= 2;
        }

        nd = realloc(b->data, ncap);
        if (nd == NULL) {
            b->failed = 1;
            return;
        }

        b->data = nd;
        b->cap = ncap;
    }

    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}


static void
sbw_buf_str(sbw_buf_t *b, const char *s)
{
    sbw_buf_add(b, s, strlen(s));
}


/*
 * Append s as a JSON string literal, escaped by jansson (raw UTF-8 is
 * kept, control characters and quotes are escaped).
 */
static void
sbw_buf_json_string(sbw_buf_t *b, const char *s)
{
    char    *text;
    json_t  *js;

    js = json_string(s);
    if (js == NULL) {
        b->failed = 1;
        return;
    }

    text = json_dumps(js, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(js);

    if (text == NULL) {
        b->failed = 1;
        return;
    }

    sbw_buf_str(b, text);
    free(text);
}


/*
 * Append cents as a JSON number with exactly two decimals.  jansson would
 * print reals in shortest form through a double; writing the digits here
 * keeps the amount exact and readable ("1000.80").
 */
static void
sbw_buf_money(sbw_buf_t *b, int64_t cents)
{
    char  text[SBW_MONEY_BUFLEN];

    sbw_money_format(cents, text, sizeof(text));
    sbw_buf_str(b, text);
}


/*
 * One line as a JSON object: the whole line, or (amounts_only) the body
 * of a PATCH that changes its description, quantity, price, discount and
 * tax code.
 */
static void
sbw_buf_line(sbw_buf_t *b, const sbw_bc_line_t *l, int amounts_only)
{
    char  num[32];

    sbw_buf_str(b, "{");

    if (!amounts_only && l->sequence > 0) {
        snprintf(num, sizeof(num), "\"sequence\":%lld,",
                 (long long) l->sequence);
        sbw_buf_str(b, num);
    }

    if (!amounts_only) {
        switch (l->type) {

        case SBW_LINE_COMMENT:
            sbw_buf_str(b, "\"lineType\":\"Comment\",\"description\":");
            sbw_buf_json_string(b, l->description);
            sbw_buf_str(b, "}");
            return;

        case SBW_LINE_ITEM:
            sbw_buf_str(b, "\"lineType\":\"Item\"");
            break;

        default:
            sbw_buf_str(b, "\"lineType\":\"Account\"");
            break;
        }

        sbw_buf_str(b, ",\"lineObjectNumber\":");
        sbw_buf_json_string(b, l->number);
        sbw_buf_str(b, ",");
    }

    sbw_buf_str(b, "\"description\":");
    sbw_buf_json_string(b, l->description);
    sbw_buf_str(b, ",");

    snprintf(num, sizeof(num), "\"quantity\":%lld", (long long) l->quantity);
    sbw_buf_str(b, num);

    sbw_buf_str(b, ",\"unitPrice\":");
    sbw_buf_money(b, l->unit_price);
    sbw_buf_str(b, ",\"discountAmount\":");
    sbw_buf_money(b, l->discount);

    if (l->tax_code != NULL) {
        sbw_buf_str(b, ",\"taxCode\":");
        sbw_buf_json_string(b, l->tax_code);
    }

    sbw_buf_str(b, "}");
}


/*
 * The JSON body of POST .../salesOrderLines for one line (amounts_only:
 * of a PATCH of its quantity, price, discount and tax code).  The
 * caller frees it; NULL means out of memory.
 */
char *
sbw_order_line_payload(const sbw_bc_line_t *l, int amounts_only)
{
    sbw_buf_t  b;

    memset(&b, 0, sizeof(b));
    sbw_buf_line(&b, l, amounts_only);

    if (b.failed) {
        free(b.data);
        return NULL;
    }

    return b.data;
}


/*
 * The JSON body of POST .../salesOrders for o, with the lines nested as
 * salesOrderLines (deep insert: header and lines in one request, so BC
 * creates all of it or nothing).  The caller frees the text; NULL means
 * out of memory.
 */
char *
sbw_order_payload(const sbw_bc_order_t *o)
{
    size_t     i;
    sbw_buf_t  b;

    memset(&b, 0, sizeof(b));

    sbw_buf_str(&b, "{\"customerNumber\":");
    sbw_buf_json_string(&b, o->customer_number);
    sbw_buf_str(&b, ",\"externalDocumentNumber\":");
    sbw_buf_json_string(&b, o->external_doc);

    if (o->order_date[0] != '\0') {
        sbw_buf_str(&b, ",\"orderDate\":");
        sbw_buf_json_string(&b, o->order_date);
    }

    if (o->currency != NULL) {
        sbw_buf_str(&b, ",\"currencyCode\":");
        sbw_buf_json_string(&b, o->currency);
    }

    sbw_buf_str(&b, o->taxes_included ? ",\"pricesIncludeTax\":true"
                                      : ",\"pricesIncludeTax\":false");

    sbw_buf_str(&b, ",\"salesOrderLines\":[");

    for (i = 0; i < o->nlines; i++) {
        sbw_buf_str(&b, i ? "," : "");
        sbw_buf_line(&b, &o->lines[i], 0);
    }

    sbw_buf_str(&b, "]}");

    if (b.failed) {
        free(b.data);
        return NULL;
    }

    return b.data;
}


/*
 * Release everything sbw_order_map() allocated and zero the order.
 */
void
sbw_order_free(sbw_bc_order_t *o)
{
    size_t  i;

    for (i = 0; i < o->nlines; i++) {
        free(o->lines[i].number);
        free(o->lines[i].description);
    }

    free(o->lines);
    free(o->order_name);
    free(o->customer_number);
    free(o->currency);

    memset(o, 0, sizeof(*o));
}

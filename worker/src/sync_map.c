/*
 * Pure rules of the order sync (see sync_map.h).
 */

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "money.h"
#include "sync_map.h"


static int sbw_line_matches(const json_t *bc, const sbw_bc_line_t *l);
static int sbw_line_same(const json_t *bc, const sbw_bc_line_t *l);


/*
 * A GUID as BC writes company ids: 8-4-4-4-12 hexadecimal digits.
 */
int
sbw_is_guid(const char *s)
{
    size_t  i;

    if (strlen(s) != 36) {
        return 0;
    }

    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return 0;
            }

        } else if (strchr("0123456789abcdefABCDEF", s[i]) == NULL
                   || s[i] == '\0')
        {
            return 0;
        }
    }

    return 1;
}


/*
 * BC365_COMPANIES: every key a shop domain, every value a company GUID.
 * Returns 0, or -1 with the first offence in err.
 */
int
sbw_companies_check(const json_t *map, char *err, size_t errlen)
{
    const char    *shop;
    const json_t  *v;

    json_object_foreach((json_t *) map, shop, v) {
        if (strchr(shop, '.') == NULL) {
            snprintf(err, errlen, "invalid BC365_COMPANIES: \"%s\" is not "
                     "a shop domain (name.myshopify.com)", shop);
            return -1;
        }

        if (!sbw_is_guid(json_string_value(v))) {
            snprintf(err, errlen, "invalid BC365_COMPANIES: the company of "
                     "\"%s\" is not a GUID", shop);
            return -1;
        }
    }

    return 0;
}


/*
 * The BC company of a shop (lower-case domain): its BC365_COMPANIES
 * entry, compared without regard to case, else BC365_COMPANY_ID.
 */
const char *
sbw_company_for_shop(const sbw_config_t *conf, const char *shop)
{
    const char    *key;
    const json_t  *v;

    if (shop != NULL && conf->companies != NULL) {
        json_object_foreach(conf->companies, key, v) {
            if (strcasecmp(key, shop) == 0) {
                return json_string_value(v);
            }
        }
    }

    return conf->company_id;
}


/*
 * How many cents BC's total may differ from Shopify's and still be taken
 * as rounding.  A fixed setting is used as is.  "auto" (-1): Shopify
 * rounds each line's tax on its own, BC once per jurisdiction, so each
 * tax amount Shopify rounded can move the total by at most half a cent;
 * the tolerance is that bound, and never less than 0.05.
 */
int64_t
sbw_total_tolerance(long setting, int ntax_lines)
{
    int64_t  t;

    if (setting >= 0) {
        return setting;
    }

    t = ((int64_t) ntax_lines + 1) / 2;

    return t < SBW_TOLERANCE_MIN_CENTS ? SBW_TOLERANCE_MIN_CENTS : t;
}


/*
 * Whether a BC line is the rounding-variance line the worker adds.
 */
int
sbw_is_variance_line(const json_t *bc_line, const char *account)
{
    const char  *type, *no, *desc;

    type = json_string_value(json_object_get(bc_line, "lineType"));
    no = json_string_value(json_object_get(bc_line, "lineObjectNumber"));
    desc = json_string_value(json_object_get(bc_line, "description"));

    return type != NULL && no != NULL && desc != NULL && account != NULL
           && strcmp(type, "Account") == 0 && strcasecmp(no, account) == 0
           && strcmp(desc, SBW_VARIANCE_DESCRIPTION) == 0;
}


/*
 * A JSON number of BC's answer as cents (BC writes 1000.8, 12 or
 * 0.01).  Returns 0, or -1 when it is not a number.
 */
int
sbw_cents_of(const json_t *v, int64_t *cents)
{
    if (json_is_integer(v)) {
        *cents = (int64_t) json_integer_value(v) * 100;
        return 0;
    }

    if (json_is_real(v)) {
        *cents = (int64_t) llround(json_real_value(v) * 100.0);
        return 0;
    }

    return -1;
}


/*
 * Same line type and item or account.
 */
static int
sbw_line_matches(const json_t *bc, const sbw_bc_line_t *l)
{
    const char  *type, *no;

    type = json_string_value(json_object_get(bc, "lineType"));
    no = json_string_value(json_object_get(bc, "lineObjectNumber"));

    if (type == NULL || no == NULL || l->number == NULL) {
        return 0;
    }

    if (strcmp(type, l->type == SBW_LINE_ITEM ? "Item" : "Account") != 0) {
        return 0;
    }

    return strcasecmp(no, l->number) == 0;
}


/*
 * Same description, quantity, unit price, discount and (when the worker
 * sets one) tax code.
 */
static int
sbw_line_same(const json_t *bc, const sbw_bc_line_t *l)
{
    int64_t      q, p, d;
    const char  *tax, *desc;

    if (sbw_cents_of(json_object_get(bc, "quantity"), &q) != 0
        || sbw_cents_of(json_object_get(bc, "unitPrice"), &p) != 0
        || sbw_cents_of(json_object_get(bc, "discountAmount"), &d) != 0)
    {
        return 0;
    }

    if (q != l->quantity * 100 || p != l->unit_price || d != l->discount) {
        return 0;
    }

    desc = json_string_value(json_object_get(bc, "description"));

    if (desc == NULL || l->description == NULL
        || strcmp(desc, l->description) != 0)
    {
        return 0;
    }

    tax = json_string_value(json_object_get(bc, "taxCode"));

    return l->tax_code == NULL
           || (tax != NULL && strcasecmp(tax, l->tax_code) == 0);
}


/*
 * The changes that bring an open BC order's lines (bc_lines, BC's
 * salesOrderLines in sequence order) to the mapped order o.  Comment
 * lines are left alone; the variance line is left to the totals check.
 * The other BC lines are paired in order with o's non-comment lines:
 * the same item or account with other amounts is PATCHed, another
 * item or account is deleted and the new line posted; BC lines left over
 * are deleted, order lines left over are posted.  Applying the plan to
 * a BC order that already had part of it applied gives the same end
 * state, so a plan interrupted half-way is simply planned again.
 * Returns 0 with the ops in ops[0..*nops), -1 when more than maxops are
 * needed or the BC answer is malformed.
 */
/* TODO: lines a person added to the open BC order are deleted as leftovers */
int
sbw_sync_plan(const json_t *bc_lines, const sbw_bc_order_t *o,
    const char *rounding_account, sbw_sync_op_t *ops, size_t maxops,
    size_t *nops)
{
    size_t          i, j, n;
    const char     *type;
    const json_t   *bc;
    const json_t   *kept[4096];
    sbw_sync_op_t   op;

    *nops = 0;
    n = 0;

    if (!json_is_array(bc_lines)) {
        return -1;
    }

    json_array_foreach(bc_lines, i, bc) {
        type = json_string_value(json_object_get(bc, "lineType"));

        if (type == NULL || strcmp(type, "Comment") == 0
            || sbw_is_variance_line(bc, rounding_account))
        {
            continue;
        }

        if (n == sizeof(kept) / sizeof(kept[0])) {
            return -1;
        }

        kept[n++] = bc;
    }

    j = 0;

    for (i = 0; i < o->nlines; i++) {
        if (o->lines[i].type == SBW_LINE_COMMENT) {
            continue;
        }

        memset(&op, 0, sizeof(op));
        op.line = i;

        if (j < n && sbw_line_matches(kept[j], &o->lines[i])) {
            if (!sbw_line_same(kept[j], &o->lines[i])) {
                op.op = SBW_OP_PATCH;
                op.bc_line_id = json_string_value(json_object_get(kept[j],
                                                                  "id"));
                op.etag = json_string_value(json_object_get(kept[j],
                                                            "@odata.etag"));

                if (*nops == maxops) {
                    return -1;
                }

                ops[(*nops)++] = op;
            }

            j++;
            continue;
        }

        if (j < n) {
            op.op = SBW_OP_DELETE;
            op.bc_line_id = json_string_value(json_object_get(kept[j], "id"));
            op.etag = json_string_value(json_object_get(kept[j],
                                                        "@odata.etag"));

            if (*nops == maxops) {
                return -1;
            }

            ops[(*nops)++] = op;
            j++;
        }

        op.op = SBW_OP_POST;
        op.bc_line_id = NULL;
        op.etag = NULL;

        if (*nops == maxops) {
            return -1;
        }

        ops[(*nops)++] = op;
    }

    for ( ; j < n; j++) {
        memset(&op, 0, sizeof(op));
        op.op = SBW_OP_DELETE;
        op.bc_line_id = json_string_value(json_object_get(kept[j], "id"));
        op.etag = json_string_value(json_object_get(kept[j], "@odata.etag"));

        if (*nops == maxops) {
            return -1;
        }

        ops[(*nops)++] = op;
    }

    for (i = 0; i < *nops; i++) {
        if (ops[i].op != SBW_OP_POST && ops[i].bc_line_id == NULL) {
            return -1;
        }
    }

    return 0;
}

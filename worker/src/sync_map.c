/*
 * Pure rules of the order sync (see sync_map.h).
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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
 * The sequence after `after` for a line the worker adds:
 * SBW_LINE_SEQUENCE_STEP on, as BC numbers the lines it creates, but
 * never SBW_VARIANCE_SEQUENCE (it stays the variance line's whether or
 * not the order has one yet).  -1 beyond BC's Integer range.
 */
int64_t
sbw_next_sequence(int64_t after)
{
    int64_t  next;

    if (after < 0) {
        after = 0;
    }

    next = after + SBW_LINE_SEQUENCE_STEP;

    if (next == SBW_VARIANCE_SEQUENCE) {
        next += SBW_LINE_SEQUENCE_STEP;
    }

    return next > SBW_LINE_SEQUENCE_MAX ? -1 : next;
}


/* one BC line of the plan */
typedef struct {
    const json_t  *bc;
    int64_t        seq;
    size_t         pos;          /* in BC's answer, to keep sorts stable */
    int            pairable;     /* an item or account line (not a
                                    comment, not the variance line) */
    int            deleted;      /* the plan deletes it */
} sbw_plan_line_t;


static int
sbw_plan_line_cmp(const void *a, const void *b)
{
    const sbw_plan_line_t  *x = a, *y = b;

    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }

    return x->pos < y->pos ? -1 : x->pos > y->pos;
}


static int
sbw_plan_add(sbw_sync_op_t *ops, size_t maxops, size_t *nops,
    sbw_sync_op_e what, const json_t *bc, size_t line)
{
    sbw_sync_op_t  *op;

    if (*nops == maxops) {
        return -1;
    }

    op = &ops[(*nops)++];
    memset(op, 0, sizeof(*op));
    op->op = what;
    op->line = line;

    if (bc != NULL) {
        op->bc_line_id = json_string_value(json_object_get(bc, "id"));
        op->etag = json_string_value(json_object_get(bc, "@odata.etag"));

        if (op->bc_line_id == NULL) {
            return -1;
        }
    }

    return 0;
}


/*
 * The changes that bring an open BC order's lines (bc_lines, BC's
 * salesOrderLines) to the mapped order o.  Comment lines are left alone;
 * the variance line is left to the totals check.  The other BC lines,
 * in sequence order, are walked along o's non-comment lines:
 *
 *   - a BC line with the same item or account as the order line is kept
 *     (PATCHed when amounts, description or tax code differ);
 *   - BC lines before the next one that matches are deleted (an item
 *     the edit removed, a line a person added);
 *   - from the first order line that no BC line further on matches, the
 *     rest of the order is new: every BC line from there on is deleted,
 *     then that order line and all after it are posted.
 *
 * The DELETEs come before the POSTs, and each POST asks for its own
 * sequence: the first after the highest sequence among the lines the
 * plan keeps (the kept item and account lines, comments, a variance line
 * not at SBW_VARIANCE_SEQUENCE), the next ones each after the one
 * before (sbw_next_sequence()).  The posted lines thus sort after
 * every kept line, in the order's order, so the next plan pairs them.
 *
 * The plan is stable under its own partial application: once some of
 * its DELETEs, PATCHes and POSTs are done (a try cut short, a POST BC
 * carries out after the worker gave up), planning again keeps the same
 * lines, and each line it still has to post gets the sequence the first
 * plan gave it (a line posted already is kept and is the highest kept
 * line, so the next one follows it as before).  A POST BC carries out
 * late and the same POST of the next try therefore collide on one key,
 * and BC refuses the second (409 Internal_EntityWithSameKeyExists)
 * instead of adding the line twice.
 *
 * Returns 0 with the ops in ops[0..*nops), SBW_PLAN_INVALID when more
 * than maxops are needed or the BC answer is malformed (a line without
 * an id or an integer sequence), SBW_PLAN_NO_SEQUENCE when the posted
 * lines would go beyond BC's Integer range.
 */
/* TODO: lines a person added to the open BC order are deleted as leftovers */
int
sbw_sync_plan(const json_t *bc_lines, const sbw_bc_order_t *o,
    const char *rounding_account, sbw_sync_op_t *ops, size_t maxops,
    size_t *nops)
{
    int               rc, tail;
    size_t            i, j, k, n, p;
    int64_t           base;
    const char       *type;
    const json_t     *bc, *seq;
    sbw_plan_line_t  *all, **cand;

    *nops = 0;

    if (!json_is_array(bc_lines)) {
        return SBW_PLAN_INVALID;
    }

    n = json_array_size(bc_lines);
    all = calloc(n + 1, sizeof(*all));
    cand = calloc(n + 1, sizeof(*cand));

    if (all == NULL || cand == NULL) {
        free(all);
        free(cand);
        return SBW_PLAN_INVALID;
    }

    rc = SBW_PLAN_INVALID;

    json_array_foreach(bc_lines, i, bc) {
        seq = json_object_get(bc, "sequence");

        if (!json_is_object(bc) || !json_is_integer(seq)) {
            goto done;
        }

        type = json_string_value(json_object_get(bc, "lineType"));
        all[i].bc = bc;
        all[i].seq = (int64_t) json_integer_value(seq);
        all[i].pos = i;
        all[i].pairable = type != NULL && strcmp(type, "Comment") != 0
                      && !sbw_is_variance_line(bc, rounding_account);
    }

    qsort(all, n, sizeof(*all), sbw_plan_line_cmp);

    k = 0;

    for (i = 0; i < n; i++) {
        if (all[i].pairable) {
            cand[k++] = &all[i];
        }
    }

    p = 0;
    tail = 0;

    for (i = 0; i < o->nlines; i++) {
        if (o->lines[i].type == SBW_LINE_COMMENT) {
            continue;
        }

        if (!tail) {
            for (j = p; j < k; j++) {
                if (sbw_line_matches(cand[j]->bc, &o->lines[i])) {
                    break;
                }
            }

            if (j == k) {
                /* new from here on */
                tail = 1;
            }

            for ( ; p < j; p++) {
                cand[p]->deleted = 1;

                if (sbw_plan_add(ops, maxops, nops, SBW_OP_DELETE,
                                 cand[p]->bc, 0) != 0)
                {
                    goto done;
                }
            }

            if (!tail) {
                if (!sbw_line_same(cand[p]->bc, &o->lines[i])
                    && sbw_plan_add(ops, maxops, nops, SBW_OP_PATCH,
                                    cand[p]->bc, i) != 0)
                {
                    goto done;
                }

                p++;
                continue;
            }
        }

        if (sbw_plan_add(ops, maxops, nops, SBW_OP_POST, NULL, i) != 0) {
            goto done;
        }
    }

    for ( ; p < k; p++) {
        cand[p]->deleted = 1;

        if (sbw_plan_add(ops, maxops, nops, SBW_OP_DELETE, cand[p]->bc, 0)
            != 0)
        {
            goto done;
        }
    }

    /*
     * The POSTs came last (the tail's DELETEs were added when it began):
     * number them after the highest line kept
     */
    base = 0;

    for (i = 0; i < n; i++) {
        if (!all[i].deleted && all[i].seq != SBW_VARIANCE_SEQUENCE
            && all[i].seq > base)
        {
            base = all[i].seq;
        }
    }

    for (i = 0; i < *nops; i++) {
        if (ops[i].op == SBW_OP_POST) {
            base = sbw_next_sequence(base);

            if (base < 0) {
                rc = SBW_PLAN_NO_SEQUENCE;
                goto done;
            }

            ops[i].sequence = base;
        }
    }

    rc = 0;

done:

    free(all);
    free(cand);

    return rc;
}

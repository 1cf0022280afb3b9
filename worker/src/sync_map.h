/*
 * Pure rules of the order sync (no I/O): which BC company a shop's orders
 * go to, how far BC's total may be from Shopify's before an order is
 * flagged, and how an open BC order's lines are brought to the state of
 * an edited Shopify order.  The unit tests drive them directly.
 */

#ifndef SBW_SYNC_MAP_H
#define SBW_SYNC_MAP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "order_map.h"


/* description of the line that carries a rounding variance */
#define SBW_VARIANCE_DESCRIPTION  "Shopify rounding variance"

/*
 * Its sequence (BC's Line No., the line's key in the order), the same on
 * every try: a POST of it that BC carries out after the worker gave up on
 * it, while a later try adds it again, is refused by BC as a line that
 * exists (409), so an order never gets two.  Far above the numbers BC
 * gives (10000 per line).
 */
#define SBW_VARIANCE_SEQUENCE  1000000000

/*
 * Lines an update adds are asked for under sequences of their own too
 * (sbw_sync_plan()): each follows the highest sequence among the lines
 * the update keeps, SBW_LINE_SEQUENCE_STEP apart as BC numbers lines,
 * never SBW_VARIANCE_SEQUENCE, never above BC's Integer range.
 */
#define SBW_LINE_SEQUENCE_STEP  10000
#define SBW_LINE_SEQUENCE_MAX   2147483647

/* sbw_sync_plan() results besides 0 */
#define SBW_PLAN_INVALID     -1   /* malformed BC lines, or too many ops */
#define SBW_PLAN_NO_SEQUENCE -2   /* no sequence left in BC's range */

/* BC365_TAX_TOLERANCE=auto: at least this many cents */
#define SBW_TOLERANCE_MIN_CENTS  5


typedef enum {
    SBW_OP_PATCH = 0,       /* change quantity / price / discount */
    SBW_OP_DELETE,          /* remove a BC line */
    SBW_OP_POST             /* add a line */
} sbw_sync_op_e;


typedef struct {
    sbw_sync_op_e   op;
    const char     *bc_line_id;   /* PATCH, DELETE: in the BC answer */
    const char     *etag;         /* PATCH, DELETE: the line's */
    size_t          line;         /* PATCH, POST: index in the order */
    int64_t         sequence;     /* POST: the sequence to ask for */
} sbw_sync_op_t;


int sbw_is_guid(const char *s);
int sbw_companies_check(const json_t *map, char *err, size_t errlen);
const char *sbw_company_for_shop(const sbw_config_t *conf,
    const char *shop);
int64_t sbw_total_tolerance(long setting, int ntax_lines);
int sbw_is_variance_line(const json_t *bc_line, const char *account);
int sbw_cents_of(const json_t *v, int64_t *cents);
int64_t sbw_next_sequence(int64_t after);
int sbw_sync_plan(const json_t *bc_lines, const sbw_bc_order_t *o,
    const char *rounding_account, sbw_sync_op_t *ops, size_t maxops,
    size_t *nops);


#endif /* SBW_SYNC_MAP_H */

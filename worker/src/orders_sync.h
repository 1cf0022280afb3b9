/*
 * The order sync around the exactly-once create (worker.c): the BC
 * company of each order, the SKU map table, customers created on demand,
 * the totals check with its rounding-variance line, and orders/updated
 * and orders/cancelled applied to the open BC order.  Its state is the
 * PostgreSQL table bc_order_sync (schema component "orders-sync").
 */

#ifndef SBW_ORDERS_SYNC_H
#define SBW_ORDERS_SYNC_H

#include <stdint.h>

#include <jansson.h>

#include "bc.h"
#include "config.h"
#include "ledger.h"
#include "order_map.h"


#define SBW_SYNC_SCHEMA_VERSION  1

#define SBW_TOPIC_ORDERS_UPDATED    "orders/updated"
#define SBW_TOPIC_ORDERS_CANCELLED  "orders/cancelled"

/* what the worker does with the entry after a sync step */
#define SBW_SYNC_ACK     0     /* done: acknowledge */
#define SBW_SYNC_RETRY   1     /* try again later (res says why) */
#define SBW_SYNC_REVIEW  2     /* dead-letter for review, then ack */
#define SBW_SYNC_PGFAIL  3     /* PostgreSQL failed: start over later */

/* reason codes of review records */
#define SBW_SYNC_ERR_CONFLICT  "Sync_Conflict"
#define SBW_SYNC_ERR_CANCELLED "Shopify_OrderCancelled"


typedef struct {
    int     found;
    char    company[64];
    char    totals_state[16];     /* pending, matched, variance, mismatch,
                                     unchecked */
    char    sync_state[16];       /* open, cancelled, conflict */
    int     has_updated_at;
    char    doc_type[16];         /* the ledger's bc_document_type */
} sbw_sync_row_t;


/* the outcome of a sync step, for the worker's one log line */
typedef struct {
    int               action;            /* SBW_SYNC_* */
    int               level;             /* log level of the line */
    const char       *event;             /* log event, NULL: none */
    char              code[128];         /* review reason code */
    char              message[512];
    json_t           *extra;             /* log fields (owned) */
    sbw_bc_result_t   res;               /* the BC answer of a retry */
} sbw_sync_result_t;


typedef struct {
    const sbw_config_t  *conf;
    sbw_ledger_t        *ledger;
    sbw_bc_t            *bc;
    char                 company[64];    /* of the order at hand */
} sbw_sync_t;


int sbw_sync_migrate(sbw_ledger_t *l, const sbw_config_t *conf,
    long long *seeded);
json_t *sbw_sync_sku_map(sbw_ledger_t *l, const json_t *order);
int sbw_sync_read(sbw_ledger_t *l, int64_t order_id, sbw_sync_row_t *row);
int sbw_sync_use_company(sbw_sync_t *s, const sbw_sync_row_t *row,
    const char *shop);
int sbw_sync_is_stale(sbw_ledger_t *l, int64_t order_id,
    const char *updated_at);
void sbw_sync_result_init(sbw_sync_result_t *r);
void sbw_sync_result_clear(sbw_sync_result_t *r);
void sbw_sync_after_create(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, const char *bc_id, const json_t *answer,
    const char *topic, sbw_sync_result_t *r);
void sbw_sync_created(sbw_sync_t *s, int64_t order_id,
    const sbw_sync_row_t *row, const sbw_bc_order_t *o,
    const char *doc_type, const char *bc_id, const char *topic,
    sbw_sync_result_t *r);
void sbw_sync_cancel_before_create(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, sbw_sync_result_t *r);
int sbw_sync_customer_create(sbw_sync_t *s, const json_t *order,
    const char *email, char *number, size_t numlen, sbw_bc_result_t *res);


#endif /* SBW_ORDERS_SYNC_H */

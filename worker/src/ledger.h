/*
 * The PostgreSQL order ledger: one row per Shopify order id recording
 * whether a BC sales order exists for it.  It is what makes the worker
 * create every order exactly once.  The order id alone is the key:
 * Shopify order ids are unique across shops, while the shop comes from
 * X-Shopify-Shop-Domain, a header the webhook's HMAC does not cover.
 * The shop is recorded (lower case) as the one first seen.
 */

#ifndef SBW_LEDGER_H
#define SBW_LEDGER_H

#include <stdint.h>

#include <libpq-fe.h>

#include "text.h"


#define SBW_LEDGER_SCHEMA_VERSION  2

/* room for a shop domain (at most 253 characters) */
#define SBW_SHOP_BUFLEN  256


typedef struct {
    PGconn      *conn;
    const char  *url;
    char         errstr[512];
} sbw_ledger_t;


typedef struct {
    char       shop[SBW_SHOP_BUFLEN];  /* the shop first recorded */
    char       state[16];              /* new, attempting, created, failed */
    int        attempts;
    int        in_doubt;               /* an attempt's outcome is unknown */
    long long  since_attempt_ms;       /* -1 if never attempted */
    char       owner[160];             /* who started the last attempt */
    char       external_doc[SBW_CODE35_BUFLEN];
    char       bc_number[64];
    char       bc_id[64];
    char       error_code[128];
} sbw_ledger_row_t;


int sbw_ledger_connect(sbw_ledger_t *l);
void sbw_ledger_close(sbw_ledger_t *l);
int sbw_ledger_migrate(sbw_ledger_t *l, int *from_version,
    long long *archived);
int sbw_ledger_lock(sbw_ledger_t *l, int64_t order_id);
int sbw_ledger_unlock(sbw_ledger_t *l, int64_t order_id);
int sbw_ledger_claim(sbw_ledger_t *l, const char *shop, int64_t order_id,
    const char *order_name, const char *external_doc,
    const char *webhook_id, const char *stream_id, sbw_ledger_row_t *row);
int sbw_ledger_start_attempt(sbw_ledger_t *l, int64_t order_id,
    const char *owner, int *attempts);
int sbw_ledger_created(sbw_ledger_t *l, int64_t order_id,
    const char *doc_type, const char *bc_id, const char *bc_number,
    const char *resolved_by);
int sbw_ledger_failed(sbw_ledger_t *l, int64_t order_id, const char *code,
    const char *message);
int sbw_ledger_retry(sbw_ledger_t *l, int64_t order_id, int in_doubt,
    const char *code, const char *message, long delay_ms);


#endif /* SBW_LEDGER_H */

/*
 * The mandatory privacy topics and the retention purge.
 *
 *   customers/data_request  an export of what is held for the customer,
 *                           kept in privacy_requests for the merchant;
 *   customers/redact        the customer's personal data erased from
 *                           the ledger, the dead letters and the Redis
 *                           streams;
 *   shop/redact             everything of the shop erased.
 *
 * Each leaves one shop_audit row (counts, never personal data).
 */

#ifndef SBW_PRIVACY_H
#define SBW_PRIVACY_H

#include <stddef.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "config.h"
#include "stream.h"


/* results */
#define SBW_PRIVACY_OK       0
#define SBW_PRIVACY_RETRY   -1    /* PostgreSQL or Redis failed */
#define SBW_PRIVACY_INVALID -2    /* the payload is unusable */


typedef struct {
    long long    customer_id;     /* 0 when absent */
    const char  *email;           /* NULL when absent */
    const char  *phone;           /* NULL when absent */
    long long   *order_ids;
    size_t       norders;
    int          whole_shop;      /* shop/redact: every entry of the shop */
} sbw_privacy_subject_t;


int sbw_privacy_entry_matches(const sbw_privacy_subject_t *who,
    const char *shop, const char *entry_shop, const char *topic,
    const char *body, size_t len);

int sbw_privacy_handle(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    char *err, size_t errlen);
int sbw_privacy_purge(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, long retention_days, char *err,
    size_t errlen);


#endif /* SBW_PRIVACY_H */

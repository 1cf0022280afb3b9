/*
 * The duplicate detector: BC does not keep externalDocumentNumber
 * unique, so a POST that BC ran after its client had given up, and that
 * was posted again, leaves two open sales orders for one Shopify order.
 * This finds them, reports them, and removes the newer copy when that
 * is safe.
 */

#ifndef SBW_DUPCHECK_H
#define SBW_DUPCHECK_H

#include <jansson.h>
#include <libpq-fe.h>

#include "bc.h"
#include "config.h"


typedef struct {
    int  checked;        /* orders looked up */
    int  found;          /* extra copies found */
    int  removed;        /* of which deleted */
    int  kept;           /* of which left in place */
} sbw_dupcheck_stats_t;


int sbw_dupcheck_run(sbw_bc_t *bc, PGconn *pg, const sbw_config_t *conf,
    int all, int remove, json_t *report, sbw_dupcheck_stats_t *st,
    char *err, size_t errlen);
int sbw_dupcheck_number_cmp(const char *a, const char *b);


#endif /* SBW_DUPCHECK_H */

/*
 * The dead-letter store: PostgreSQL table dead_letters, the store of
 * record for every stream entry the worker gives up on (an entry that
 * is not an order, an order the mapping or BC refuses for good, an
 * entry delivered too many times, a duplicate BC order found).  A row is
 * committed before its stream entry is acknowledged.  Schema component
 * "dead-letters" in schema_version.
 */

#ifndef SBW_DLQ_H
#define SBW_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "stream.h"


#define SBW_DLQ_SCHEMA_VERSION  1

#define SBW_DLQ_REASON_LEN  32


typedef struct {
    const sbw_entry_t  *entry;          /* NULL for a record without one */
    const char         *shop;           /* lower case when known */
    int64_t             order_id;       /* 0 when unknown */
    const char         *code;           /* BC's, Mapping_*, Worker_* */
    const char         *message;
    const char         *correlation_id; /* may be NULL or "" */
    int                 attempts;       /* BC attempts or deliveries */
    const char         *status;         /* NULL: "open" */
} sbw_dlq_item_t;


int sbw_dlq_migrate(PGconn *pg, char *err, size_t errlen);
int sbw_dlq_exec(PGconn *pg, const char *sql, char *err, size_t errlen);
int sbw_dlq_add(PGconn *pg, const sbw_dlq_item_t *it, long long *id,
    char *err, size_t errlen);
int sbw_dlq_resolved(PGconn *pg, const char *dead_letter_id,
    const char *bc_number, char *err, size_t errlen);
int sbw_dlq_open_counts(PGconn *pg, char (*reasons)[SBW_DLQ_REASON_LEN],
    long long *counts, size_t max, size_t *n, char *err, size_t errlen);
int sbw_dlq_text_ok(const char *s, size_t len);
int sbw_dlq_id_ok(const char *s);


#endif /* SBW_DLQ_H */

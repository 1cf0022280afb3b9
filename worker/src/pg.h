/*
 * Small libpq helpers shared by the components that keep tables in
 * PostgreSQL (ledger, dead letters, shops, order sync).
 */

#ifndef SBW_PG_H
#define SBW_PG_H

#include <stddef.h>

#include <libpq-fe.h>


/* what sbw_pg_exec() accepts as success */
#define SBW_PG_COMMAND  0      /* PGRES_COMMAND_OK */
#define SBW_PG_TUPLES   1      /* PGRES_TUPLES_OK */
#define SBW_PG_ANY      2      /* either */


void sbw_pg_error(PGconn *conn, const PGresult *res, char *err,
    size_t errlen);
int sbw_pg_exec(PGconn *conn, const char *sql, int n,
    const char *const *params, int want, PGresult **out, char *err,
    size_t errlen);


#endif /* SBW_PG_H */

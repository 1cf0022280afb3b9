/*
 * Small libpq helpers shared by the components that keep tables in
 * PostgreSQL.
 */

#include <stdio.h>
#include <string.h>

#include "pg.h"


/*
 * The error of a failed statement (or of the connection) on one line:
 * libpq's messages span several lines, a log line must not.
 */
void
sbw_pg_error(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
    char        *p;
    const char  *m;

    m = res != NULL ? PQresultErrorMessage(res) : NULL;

    if (m == NULL || *m == '\0') {
        m = conn != NULL ? PQerrorMessage(conn) : "no connection";
    }

    snprintf(err, errlen, "%s", m);

    for (p = err; *p; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            *p = ' ';
        }
    }

    while (p > err && p[-1] == ' ') {
        *--p = '\0';
    }
}


/*
 * One parameterised statement (text parameters, text results).  want is
 * SBW_PG_COMMAND, SBW_PG_TUPLES or SBW_PG_ANY.  Returns 0 with the result
 * in *out (or freed when out is NULL), or -1 with err set.
 */
int
sbw_pg_exec(PGconn *conn, const char *sql, int n, const char *const *params,
    int want, PGresult **out, char *err, size_t errlen)
{
    int             ok;
    PGresult       *res;
    ExecStatusType  st;

    if (out != NULL) {
        *out = NULL;
    }

    if (conn == NULL) {
        snprintf(err, errlen, "no connection");
        return -1;
    }

    res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    switch (want) {
    case SBW_PG_COMMAND:
        ok = st == PGRES_COMMAND_OK;
        break;
    case SBW_PG_TUPLES:
        ok = st == PGRES_TUPLES_OK;
        break;
    default:
        ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        break;
    }

    if (!ok) {
        sbw_pg_error(conn, res, err, errlen);
        PQclear(res);
        return -1;
    }

    if (out != NULL) {
        *out = res;

    } else {
        PQclear(res);
    }

    return 0;
}

/*
 * Error classification by BC error code family.
 *
 * BC answers {"error":{"code":"Family_Detail",...}}.  The families
 * (Application_, BadRequest_, Authentication_, Authorization_,
 * Internal_, Request_) say whose problem an error is:
 *
 *   the order's (its data breaks a BC rule)      -> park it: retrying the
 *                                                   same data cannot help;
 *   the connector's settings or BC's availability -> retry it: every
 *                                                   order would fail the
 *                                                   same way, and none of
 *                                                   them is wrong.
 *
 * Retried errors are split further into "BC certainly did not do it"
 * and "BC may have done it" (see sbw_bc_class_e), which decides whether
 * the next attempt must look the order up in BC first.
 */

#include <string.h>

#include <curl/curl.h>

#include "errclass.h"


typedef struct {
    const char      *code;
    sbw_bc_class_e   cls;
} sbw_code_rule_t;


/*
 * Codes decided one by one, before the family rules.  Everything listed
 * as "not sent" was refused before BC ran any business logic.
 */
static const sbw_code_rule_t  sbw_code_rules[] = {

    /* throttled (429), rejected before processing */
    { "Application_TooManyRequests", SBW_BC_RETRY_NOT_SENT },

    /* the company id or the route is wrong: a setting, not the order */
    { "Internal_CompanyNotFound", SBW_BC_RETRY_NOT_SENT },
    { "BadRequest_ResourceNotFound", SBW_BC_RETRY_NOT_SENT },
    { "BadRequest_MethodNotAllowed", SBW_BC_RETRY_NOT_SENT },

    /* an optimistic concurrency conflict: the change was not made */
    { "Request_EntityChanged", SBW_BC_RETRY_NOT_SENT },

    /* a record the order refers to does not exist: the order's data */
    { "Internal_RecordNotFound", SBW_BC_PERMANENT },

    /* two lines with one key (sequence): the order's data */
    { "Internal_EntityWithSameKeyExists", SBW_BC_PERMANENT },

    { NULL, SBW_BC_OK }
};


/*
 * Classify one outcome: the HTTP status (0 when none came), the libcurl
 * result (0 when the exchange worked) and the error code (BC's, an
 * Entra error, or one of the worker's: Transport_*, HTTP_<status>,
 * Mapping_*, Worker_*; may be NULL).
 *
 *   - no answer: a connection that was never made is "not sent", any
 *     other transport failure (timeout, reset, a POST libcurl refused to
 *     send twice) "uncertain";
 *   - status 0 without a transport error: no token, nothing reached BC;
 *   - 2xx: done;
 *   - the codes of sbw_code_rules;
 *   - Authentication_* and Authorization_* (401/403): credentials or
 *     permissions, retried (after one token refresh by the client);
 *   - Application_* and BadRequest_* on a 4xx: BC refuses the document,
 *     parked;
 *   - Mapping_* (the worker refused the order before sending it):
 *     parked;
 *   - a 5xx, whatever its code (Internal_ServerError,
 *     Internal_TenantUnavailable, a gateway's 502/504): "uncertain",
 *     since a gateway can answer while BC still runs the request;
 *   - remaining statuses: 401, 403, 404, 408 and 429 are "not sent",
 *     any other 4xx is parked.
 */
sbw_bc_class_e
sbw_errclass(long status, int curl_code, const char *code)
{
    size_t  i;

    if (code == NULL) {
        code = "";
    }

    if (strncmp(code, "Mapping_", 8) == 0) {
        return SBW_BC_PERMANENT;
    }

    if (curl_code != 0) {
        switch (curl_code) {

        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_ABORTED_BY_CALLBACK:
        case CURLE_URL_MALFORMAT:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_OUT_OF_MEMORY:
            return SBW_BC_RETRY_NOT_SENT;

        default:
            return SBW_BC_RETRY_UNCERTAIN;
        }
    }

    if (status == 0) {
        return SBW_BC_RETRY_NOT_SENT;
    }

    if (status >= 200 && status < 300) {
        return SBW_BC_OK;
    }

    if (status >= 500) {
        return SBW_BC_RETRY_UNCERTAIN;
    }

    for (i = 0; sbw_code_rules[i].code != NULL; i++) {
        if (strcmp(code, sbw_code_rules[i].code) == 0) {
            return sbw_code_rules[i].cls;
        }
    }

    if (strncmp(code, "Authentication_", 15) == 0
        || strncmp(code, "Authorization_", 14) == 0)
    {
        return SBW_BC_RETRY_NOT_SENT;
    }

    if (strncmp(code, "Application_", 12) == 0
        || strncmp(code, "BadRequest", 10) == 0)
    {
        return SBW_BC_PERMANENT;
    }

    if (status == 401 || status == 403 || status == 404 || status == 408
        || status == 429)
    {
        return SBW_BC_RETRY_NOT_SENT;
    }

    return SBW_BC_PERMANENT;
}


/*
 * The dead-letter reason (a small fixed vocabulary, used as a metric
 * label and by "dlq list --reason") for an error code.
 */
const char *
sbw_dlq_reason(const char *code)
{
    if (code == NULL) {
        return "bc_rejected";
    }

    if (strcmp(code, "Worker_InvalidEntry") == 0) {
        return "invalid_entry";
    }

    if (strcmp(code, "Worker_MaxDeliveries") == 0) {
        return "max_deliveries";
    }

    if (strcmp(code, "Worker_DuplicateOrder") == 0) {
        return "duplicate_bc_order";
    }

    if (strcmp(code, "Mapping_UnsupportedLines") == 0) {
        return "unmapped_lines";
    }

    if (strcmp(code, "Mapping_TotalMismatch") == 0) {
        return "total_mismatch";
    }

    if (strncmp(code, "Mapping_", 8) == 0) {
        return "mapping";
    }

    if (strncmp(code, "Sync_", 5) == 0) {
        return "sync_conflict";
    }

    if (strncmp(code, "Shops_", 6) == 0) {
        return "shopify_install";
    }

    if (strncmp(code, "Privacy_", 8) == 0) {
        return "invalid_entry";
    }

    return "bc_rejected";
}

/*
 * GraphQL Admin API: webhook subscription operations and cost
 * accounting (see shopify_gql.h).
 *
 * Every answer of the GraphQL endpoint with HTTP 200 carries
 * extensions.cost: the query's requested and actual cost and the shop's
 * bucket (throttleStatus: maximumAvailable, currentlyAvailable,
 * restoreRate).  A query that costs more than the bucket holds is not
 * run: the answer is HTTP 200 with errors[].extensions.code THROTTLED,
 * and the wait until the bucket has refilled enough follows from the
 * same numbers.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shopify_gql.h"


static const char  sbw_gql_list_query[] =
    "query webhookSubscriptions($first: Int!, $after: String) "
    "{ webhookSubscriptions(first: $first, after: $after) "
    "{ edges { node { id topic uri } } "
    "pageInfo { hasNextPage endCursor } } }";

static const char  sbw_gql_create_query[] =
    "mutation webhookSubscriptionCreate("
    "$topic: WebhookSubscriptionTopic!, "
    "$webhookSubscription: WebhookSubscriptionInput!) "
    "{ webhookSubscriptionCreate(topic: $topic, "
    "webhookSubscription: $webhookSubscription) "
    "{ webhookSubscription { id topic uri } "
    "userErrors { field message } } }";

static const char  sbw_gql_delete_query[] =
    "mutation webhookSubscriptionDelete($id: ID!) "
    "{ webhookSubscriptionDelete(id: $id) "
    "{ deletedWebhookSubscriptionId userErrors { field message } } }";


static char *sbw_gql_body(const char *query, json_t *vars);
static double sbw_gql_num(json_t *o, const char *key);


/*
 * {"query": ..., "variables": ...} as a string (vars is consumed).
 */
static char *
sbw_gql_body(const char *query, json_t *vars)
{
    char    *s;
    json_t  *o;

    if (vars == NULL) {
        return NULL;
    }

    o = json_pack("{s:s,s:o}", "query", query, "variables", vars);
    if (o == NULL) {
        return NULL;
    }

    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);

    return s;
}


char *
sbw_gql_list_body(const char *after)
{
    return sbw_gql_body(sbw_gql_list_query,
                        json_pack("{s:i,s:s?}", "first",
                                  (json_int_t) SBW_GQL_PAGE, "after",
                                  after));
}


char *
sbw_gql_create_body(const char *topic_enum, const char *uri)
{
    return sbw_gql_body(sbw_gql_create_query,
                        json_pack("{s:s,s:{s:s,s:s}}", "topic", topic_enum,
                                  "webhookSubscription", "uri", uri,
                                  "format", "JSON"));
}


char *
sbw_gql_delete_body(const char *id)
{
    return sbw_gql_body(sbw_gql_delete_query, json_pack("{s:s}", "id", id));
}


void
sbw_gql_cost_init(sbw_gql_cost_t *c)
{
    c->requested = -1;
    c->actual = -1;
    c->maximum = -1;
    c->available = -1;
    c->restore_rate = -1;
}


static double
sbw_gql_num(json_t *o, const char *key)
{
    json_t  *v;

    v = json_object_get(o, key);

    return json_is_number(v) ? json_number_value(v) : -1;
}


/*
 * Look at an answer: read extensions.cost into *cost (fields it lacks
 * are left as they were, so the last known bucket state is kept), then
 * say whether it was throttled, carries other errors (msg names the
 * first), or is usable.
 */
int
sbw_gql_check(json_t *resp, sbw_gql_cost_t *cost, char *msg, size_t msglen)
{
    double       v;
    size_t       i;
    json_t      *c, *t, *errors, *err, *code;
    const char  *m;

    msg[0] = '\0';

    if (!json_is_object(resp)) {
        snprintf(msg, msglen, "the answer is not a JSON object");
        return SBW_GQL_MALFORMED;
    }

    c = json_object_get(json_object_get(resp, "extensions"), "cost");

    if (json_is_object(c)) {
        cost->requested = sbw_gql_num(c, "requestedQueryCost");
        cost->actual = sbw_gql_num(c, "actualQueryCost");

        t = json_object_get(c, "throttleStatus");

        if ((v = sbw_gql_num(t, "maximumAvailable")) >= 0) {
            cost->maximum = v;
        }

        if ((v = sbw_gql_num(t, "currentlyAvailable")) >= 0) {
            cost->available = v;
        }

        if ((v = sbw_gql_num(t, "restoreRate")) >= 0) {
            cost->restore_rate = v;
        }
    }

    errors = json_object_get(resp, "errors");

    if (json_is_array(errors) && json_array_size(errors) > 0) {
        json_array_foreach(errors, i, err) {
            code = json_object_get(json_object_get(err, "extensions"),
                                   "code");

            if (json_is_string(code)
                && strcmp(json_string_value(code), "THROTTLED") == 0)
            {
                snprintf(msg, msglen, "throttled");
                return SBW_GQL_THROTTLED;
            }
        }

        m = json_string_value(json_object_get(json_array_get(errors, 0),
                                              "message"));
        snprintf(msg, msglen, "%s", m ? m : "GraphQL error");
        return SBW_GQL_ERRORS;
    }

    if (!json_is_object(json_object_get(resp, "data"))) {
        snprintf(msg, msglen, "the answer has no data");
        return SBW_GQL_MALFORMED;
    }

    return SBW_GQL_OK;
}


/*
 * How long to wait until the bucket holds need points: the shortfall
 * divided by the restore rate, rounded up to a millisecond.  0 when the
 * bucket is known to hold enough, or nothing is known about it.
 */
long
sbw_gql_wait_ms(const sbw_gql_cost_t *c, double need)
{
    double  missing, rate;

    if (c->available < 0 || need <= c->available) {
        return 0;
    }

    if (c->maximum >= 0 && need > c->maximum) {
        need = c->maximum;
    }

    missing = need - c->available;

    if (missing <= 0) {
        return 0;
    }

    rate = c->restore_rate > 0 ? c->restore_rate : 1;

    return (long) ceil(missing / rate * 1000.0);
}


void
sbw_gql_subs_free(sbw_gql_sub_t *subs, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(subs[i].id);
        free(subs[i].topic);
        free(subs[i].uri);
    }

    free(subs);
}


/*
 * One page of webhookSubscriptions: its subscriptions appended to *subs
 * (grown as needed), and the cursor of the next page when there is
 * one.  Returns 0, or -1 with msg when the shape is not Shopify's.
 */
int
sbw_gql_parse_list(json_t *resp, sbw_gql_sub_t **subs, size_t *n,
    int *has_next, char *cursor, size_t cursorlen, char *msg, size_t msglen)
{
    size_t          i;
    json_t         *conn, *edges, *edge, *node, *pi, *end;
    const char     *id, *topic, *uri;
    sbw_gql_sub_t  *ns;

    *has_next = 0;

    conn = json_object_get(json_object_get(resp, "data"),
                           "webhookSubscriptions");
    edges = json_object_get(conn, "edges");
    pi = json_object_get(conn, "pageInfo");

    if (!json_is_array(edges) || !json_is_object(pi)) {
        snprintf(msg, msglen, "webhookSubscriptions: no edges or pageInfo");
        return -1;
    }

    ns = realloc(*subs, (*n + json_array_size(edges) + 1)
                        * sizeof(sbw_gql_sub_t));
    if (ns == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }

    *subs = ns;

    json_array_foreach(edges, i, edge) {
        node = json_object_get(edge, "node");
        id = json_string_value(json_object_get(node, "id"));
        topic = json_string_value(json_object_get(node, "topic"));
        uri = json_string_value(json_object_get(node, "uri"));

        if (id == NULL || topic == NULL) {
            snprintf(msg, msglen, "webhookSubscriptions: a node without "
                     "id or topic");
            return -1;
        }

        ns[*n].id = strdup(id);
        ns[*n].topic = strdup(topic);
        ns[*n].uri = strdup(uri ? uri : "");

        if (ns[*n].id == NULL || ns[*n].topic == NULL
            || ns[*n].uri == NULL)
        {
            free(ns[*n].id);
            free(ns[*n].topic);
            free(ns[*n].uri);
            snprintf(msg, msglen, "out of memory");
            return -1;
        }

        (*n)++;
    }

    if (json_is_true(json_object_get(pi, "hasNextPage"))) {
        end = json_object_get(pi, "endCursor");

        if (!json_is_string(end)
            || strlen(json_string_value(end)) >= cursorlen)
        {
            snprintf(msg, msglen, "webhookSubscriptions: hasNextPage "
                     "without a usable endCursor");
            return -1;
        }

        snprintf(cursor, cursorlen, "%s", json_string_value(end));
        *has_next = 1;
    }

    return 0;
}


/*
 * The payload of a mutation (data.<field>): 0 when it has no userErrors,
 * -1 with the errors in msg ("field.path: message; ...") otherwise, or
 * when the payload is missing.
 */
int
sbw_gql_parse_mutation(json_t *resp, const char *field, char *msg,
    size_t msglen)
{
    size_t       i, j, len;
    json_t      *payload, *ue, *e, *path, *part;
    const char  *m;

    msg[0] = '\0';

    payload = json_object_get(json_object_get(resp, "data"), field);

    if (!json_is_object(payload)) {
        snprintf(msg, msglen, "%s: no payload", field);
        return -1;
    }

    ue = json_object_get(payload, "userErrors");

    if (!json_is_array(ue) || json_array_size(ue) == 0) {
        return 0;
    }

    len = 0;

    json_array_foreach(ue, i, e) {
        path = json_object_get(e, "field");
        m = json_string_value(json_object_get(e, "message"));

        if (len > 0 && len < msglen) {
            len += (size_t) snprintf(msg + len, msglen - len, "; ");
        }

        json_array_foreach(path, j, part) {
            if (len < msglen && json_is_string(part)) {
                len += (size_t) snprintf(msg + len, msglen - len, "%s%s",
                                         j ? "." : "",
                                         json_string_value(part));
            }
        }

        if (len < msglen) {
            len += (size_t) snprintf(msg + len, msglen - len, "%s%s",
                                     json_array_size(path) ? ": " : "",
                                     m ? m : "error");
        }
    }

    return -1;
}


void
sbw_gql_strv_free(char **v, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(v[i]);
    }

    free(v);
}


/*
 * What makes the shop's subscriptions match the settings: keep[i] says
 * whether subs[i] stays (one subscription per configured topic, to the
 * configured callback URL); every other one is deleted, and *create
 * lists the configured topics (as enum values) that have none.
 * Returns 0 or -1 (no memory).
 */
int
sbw_gql_plan(const sbw_shopify_conf_t *c, const sbw_gql_sub_t *subs,
    size_t n, int *keep, char ***create, size_t *ncreate)
{
    int      have;
    char     e[128];
    char   **v;
    size_t   i, j;

    *create = NULL;
    *ncreate = 0;

    for (i = 0; i < n; i++) {
        keep[i] = 0;

        if (c->callback_url == NULL || strcmp(subs[i].uri, c->callback_url)
                                       != 0
            || !sbw_shopify_topic_wanted(c, subs[i].topic))
        {
            continue;
        }

        keep[i] = 1;

        for (j = 0; j < i; j++) {
            if (keep[j] && strcmp(subs[j].topic, subs[i].topic) == 0) {
                keep[i] = 0;
                break;
            }
        }
    }

    v = calloc(c->ntopics + 1, sizeof(char *));
    if (v == NULL) {
        return -1;
    }

    for (i = 0; i < c->ntopics; i++) {
        if (sbw_shopify_topic_enum(c->topics[i], e, sizeof(e)) != 0) {
            continue;
        }

        have = 0;

        for (j = 0; j < n; j++) {
            if (keep[j] && strcmp(subs[j].topic, e) == 0) {
                have = 1;
                break;
            }
        }

        if (!have) {
            v[*ncreate] = strdup(e);

            if (v[*ncreate] == NULL) {
                sbw_gql_strv_free(v, *ncreate);
                *ncreate = 0;
                return -1;
            }

            (*ncreate)++;
        }
    }

    *create = v;
    return 0;
}

/*
 * Customer look-up by e-mail (see customer.h).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customer.h"
#include "text.h"


static int sbw_email_candidate(const json_t *v, char *out, size_t outlen);
static size_t sbw_customer_set(const char *key);


/*
 * Copy the string v, trimmed of surrounding blanks, to out.  Returns 0
 * when it is a usable address: non-empty, no NUL character, an "@", and
 * short enough for BC's Text[80], since a longer one cannot be stored in
 * BC and so cannot match.  Returns -1 otherwise.
 */
static int
sbw_email_candidate(const json_t *v, char *out, size_t outlen)
{
    size_t       len;
    const char  *s;

    if (!json_is_string(v)
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        return -1;
    }

    s = json_string_value(v);

    while (*s == ' ' || *s == '\t') {
        s++;
    }

    len = strlen(s);

    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }

    if (len == 0 || len >= outlen || memchr(s, '@', len) == NULL) {
        return -1;
    }

    memcpy(out, s, len);
    out[len] = '\0';

    if (sbw_utf8_length(out) > SBW_BC_EMAIL_LEN) {
        out[0] = '\0';
        return -1;
    }

    return 0;
}


/*
 * The e-mail address an order is matched by: the customer's
 * (customer.email), else the order's "email", else "contact_email".  A
 * guest or POS order has a null customer and an empty "email".  Returns
 * 0 with the address in out, or -1 when the order names none.
 */
int
sbw_order_email(const json_t *order, char *out, size_t outlen)
{
    const json_t  *customer;

    customer = json_object_get(order, "customer");

    if (json_is_object(customer)
        && sbw_email_candidate(json_object_get(customer, "email"), out,
                               outlen) == 0)
    {
        return 0;
    }

    if (sbw_email_candidate(json_object_get(order, "email"), out, outlen)
        == 0)
    {
        return 0;
    }

    return sbw_email_candidate(json_object_get(order, "contact_email"), out,
                               outlen);
}


/*
 * The $filter (not yet URL-encoded) that finds the BC customer with this
 * e-mail.  BC compares text case-sensitively, and Shopify sends
 * addresses as the buyer typed them or in lower case, so the filter asks
 * for the address as given and, when it differs, its lower-case form:
 * "email eq 'A@x.com' or email eq 'a@x.com'".  Quotes are doubled.  The
 * caller frees the result; NULL means out of memory.
 */
char *
sbw_customer_filter(const char *email)
{
    int    n;
    char   lower[SBW_EMAIL_BUFLEN * 2], *q1, *q2, *out;

    if (sbw_ascii_lower(email, lower, sizeof(lower)) != 0) {
        return NULL;
    }

    q1 = sbw_odata_quote(email);
    q2 = sbw_odata_quote(lower);

    if (q1 == NULL || q2 == NULL) {
        free(q1);
        free(q2);
        return NULL;
    }

    if (strcmp(q1, q2) == 0) {
        n = snprintf(NULL, 0, "email eq %s", q1);

    } else {
        n = snprintf(NULL, 0, "email eq %s or email eq %s", q1, q2);
    }

    out = malloc((size_t) n + 1);

    if (out != NULL) {
        if (strcmp(q1, q2) == 0) {
            snprintf(out, (size_t) n + 1, "email eq %s", q1);

        } else {
            snprintf(out, (size_t) n + 1, "email eq %s or email eq %s", q1,
                     q2);
        }
    }

    free(q1);
    free(q2);

    return out;
}


/*
 * Prepare an empty cache whose answers live ttl seconds.
 */
void
sbw_customer_cache_init(sbw_customer_cache_t *c, double ttl)
{
    memset(c->slots, 0, sizeof(c->slots));
    pthread_mutex_init(&c->mutex, NULL);
    c->ttl = ttl;
}


/*
 * The set of a lower-case address: FNV-1a, then a final mix, since the
 * set is the hash modulo a power of two and FNV-1a's low bits alone mix
 * poorly.  A set has SBW_CUSTOMER_CACHE_WAYS slots; a newer address
 * meeting a full set replaces its oldest answer, which only costs that
 * address another look-up later.
 */
static size_t
sbw_customer_set(const char *key)
{
    uint64_t  h;

    h = 1469598103934665603ULL;

    for (; *key; key++) {
        h ^= (unsigned char) *key;
        h *= 1099511628211ULL;
    }

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;

    return (size_t) (h % SBW_CUSTOMER_CACHE_SETS);
}


/*
 * The cached answer for an address (compared without regard to ASCII
 * case) at time now: 1 with the customer number in number ("" when BC
 * had no customer with it), 0 when nothing usable is cached.
 */
int
sbw_customer_cache_get(sbw_customer_cache_t *c, const char *email,
    double now, char *number, size_t numlen)
{
    int                   hit, i;
    char                  key[SBW_CUSTOMER_KEY_BUFLEN];
    sbw_customer_slot_t  *set;

    if (sbw_ascii_lower(email, key, sizeof(key)) != 0 || key[0] == '\0') {
        return 0;
    }

    hit = 0;

    pthread_mutex_lock(&c->mutex);

    set = &c->slots[sbw_customer_set(key) * SBW_CUSTOMER_CACHE_WAYS];

    for (i = 0; i < SBW_CUSTOMER_CACHE_WAYS; i++) {
        if (strcmp(set[i].email, key) == 0 && now < set[i].expires) {
            snprintf(number, numlen, "%s", set[i].number);
            hit = 1;
            break;
        }
    }

    pthread_mutex_unlock(&c->mutex);

    return hit;
}


/*
 * Remember at time now that BC's customer for this address is number
 * ("" for none).
 */
void
sbw_customer_cache_put(sbw_customer_cache_t *c, const char *email,
    const char *number, double now)
{
    int                   i, pick;
    char                  key[SBW_CUSTOMER_KEY_BUFLEN];
    sbw_customer_slot_t  *set;

    if (sbw_ascii_lower(email, key, sizeof(key)) != 0 || key[0] == '\0'
        || strlen(number) >= SBW_CUSTOMER_NO_BUFLEN)
    {
        return;
    }

    pthread_mutex_lock(&c->mutex);

    set = &c->slots[sbw_customer_set(key) * SBW_CUSTOMER_CACHE_WAYS];

    /* the address's own slot, else a free one, else the oldest answer */
    pick = 0;

    for (i = 0; i < SBW_CUSTOMER_CACHE_WAYS; i++) {
        if (strcmp(set[i].email, key) == 0) {
            pick = i;
            break;
        }

        if (set[i].email[0] == '\0') {
            if (set[pick].email[0] != '\0') {
                pick = i;
            }

        } else if (set[pick].email[0] != '\0'
                   && set[i].expires < set[pick].expires)
        {
            pick = i;
        }
    }

    snprintf(set[pick].email, sizeof(set[pick].email), "%s", key);
    snprintf(set[pick].number, sizeof(set[pick].number), "%s", number);
    set[pick].expires = now + c->ttl;

    pthread_mutex_unlock(&c->mutex);
}

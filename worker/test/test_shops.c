/*
 * The Shopify app side: token encryption (the format nginx shares),
 * settings, the GraphQL operations' answers and throttling arithmetic,
 * the subscription plan, the token endpoint's answers, and which stream
 * entries a privacy request concerns.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "privacy.h"
#include "shopify_api.h"
#include "shopify_conf.h"
#include "shopify_gql.h"
#include "tests.h"


static const char  key_hex[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char  other_hex[] =
    "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";


static void
test_key_parse(void **state)
{
    unsigned char  k[SBW_TOKEN_KEY_LEN];

    (void) state;

    assert_int_equal(sbw_token_key_parse(key_hex, k), 0);
    assert_int_equal(k[0], 0);
    assert_int_equal(k[31], 0x1f);
    assert_int_equal(sbw_token_key_parse("00", k), -1);
    assert_int_equal(sbw_token_key_parse(NULL, k), -1);
    assert_int_equal(sbw_token_key_parse(
        "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        k), -1);
    assert_int_equal(sbw_token_key_parse(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0",
        k), -1);
}


static void
test_encrypt_roundtrip(void **state)
{
    char           *blob, *blob2, *plain;
    unsigned char   k[SBW_TOKEN_KEY_LEN];

    (void) state;

    assert_int_equal(sbw_token_key_parse(key_hex, k), 0);

    blob = sbw_token_encrypt(k, "a.myshopify.com", "shpat_secret");
    assert_non_null(blob);
    assert_memory_equal(blob, "v1.", 3);
    assert_null(strstr(blob, "shpat"));

    /* nonce || 12-byte ciphertext || tag: 40 bytes, 56 base64 chars */
    assert_int_equal(strlen(blob), 3 + 56);

    plain = sbw_token_decrypt(k, "a.myshopify.com", blob);
    assert_non_null(plain);
    assert_string_equal(plain, "shpat_secret");
    sbw_token_free(plain);

    /* a fresh nonce every time */
    blob2 = sbw_token_encrypt(k, "a.myshopify.com", "shpat_secret");
    assert_non_null(blob2);
    assert_string_not_equal(blob, blob2);

    free(blob);
    free(blob2);

    assert_null(sbw_token_encrypt(k, "a.myshopify.com", ""));
}


/*
 * A blob made here with EVP directly, the way the nginx module makes
 * them, decrypts: the format is the shared one, not just our own
 * round trip.
 */
static void
test_decrypt_reference(void **state)
{
    int              len;
    char            *plain, b64[128], blob[140];
    unsigned char    k[SBW_TOKEN_KEY_LEN], raw[64];
    EVP_CIPHER_CTX  *ctx;
    static const char  aad[] = "b.myshopify.com", msg[] = "tok-123";

    (void) state;

    assert_int_equal(sbw_token_key_parse(key_hex, k), 0);
    memset(raw, 7, 12);

    ctx = EVP_CIPHER_CTX_new();
    assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k,
                                        raw), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &len,
                                       (const unsigned char *) aad,
                                       (int) strlen(aad)), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, raw + 12, &len,
                                       (const unsigned char *) msg,
                                       (int) strlen(msg)), 1);
    assert_int_equal(EVP_EncryptFinal_ex(ctx, raw + 12 + len, &len), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16,
                                         raw + 12 + strlen(msg)), 1);
    EVP_CIPHER_CTX_free(ctx);

    EVP_EncodeBlock((unsigned char *) b64, raw, (int) (12 + strlen(msg)
                                                       + 16));
    snprintf(blob, sizeof(blob), "v1.%s", b64);

    plain = sbw_token_decrypt(k, aad, blob);
    assert_non_null(plain);
    assert_string_equal(plain, msg);
    sbw_token_free(plain);
}


static void
test_decrypt_refusals(void **state)
{
    char           *blob, *bad;
    size_t          n;
    unsigned char   k[SBW_TOKEN_KEY_LEN], other[SBW_TOKEN_KEY_LEN];

    (void) state;

    assert_int_equal(sbw_token_key_parse(key_hex, k), 0);
    assert_int_equal(sbw_token_key_parse(other_hex, other), 0);

    blob = sbw_token_encrypt(k, "a.myshopify.com", "shpat_secret");
    assert_non_null(blob);
    n = strlen(blob);

    /* another shop (AAD), another key */
    assert_null(sbw_token_decrypt(k, "b.myshopify.com", blob));
    assert_null(sbw_token_decrypt(other, "a.myshopify.com", blob));

    /* a flipped character in the nonce, the ciphertext, the tag */
    bad = strdup(blob);
    bad[5] = bad[5] == 'A' ? 'B' : 'A';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));
    strcpy(bad, blob);
    bad[3 + 18] = bad[3 + 18] == 'A' ? 'B' : 'A';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));
    strcpy(bad, blob);
    bad[n - 4] = bad[n - 4] == 'A' ? 'B' : 'A';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));

    /* the same bytes in a non-canonical spelling (padding bits set) */
    strcpy(bad, blob);
    assert_string_equal(bad + n - 2, "==");
    bad[n - 3] = bad[n - 3] == 'A' ? 'B' : 'A';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));

    /* truncated, another version, not base64, too short */
    strcpy(bad, blob);
    bad[n - 4] = '\0';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));
    strcpy(bad, blob);
    bad[1] = '2';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));
    strcpy(bad, blob);
    bad[10] = '*';
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", bad));
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", "v1.AAAA"));
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", "v1."));
    assert_null(sbw_token_decrypt(k, "a.myshopify.com", "shpat_plain"));

    free(bad);
    free(blob);
}


typedef struct {
    const char  *names[16];
    const char  *values[16];
} env_t;


static const char *
env_get(const char *name, void *ctx)
{
    int     i;
    env_t  *e;

    e = ctx;

    for (i = 0; i < 16 && e->names[i] != NULL; i++) {
        if (strcmp(e->names[i], name) == 0) {
            return e->values[i];
        }
    }

    return NULL;
}


static void
test_conf(void **state)
{
    char                err[512];
    sbw_shopify_conf_t  c;
    env_t               off = { { NULL }, { NULL } };
    env_t               partial = { { "SHOPIFY_CLIENT_ID", NULL },
                                    { "app", NULL } };
    env_t               full = {
        { "SHOPIFY_CLIENT_ID", "SHOPIFY_CLIENT_SECRET", "SHOPIFY_TOKEN_KEY",
          "SHOPIFY_WEBHOOK_CALLBACK_URL", "SHOPIFY_WEBHOOK_TOPICS",
          "SHOPIFY_CLIENT_CREDENTIALS_SHOPS", NULL },
        { "app", "s3cret", key_hex, "https://x.example.com/webhooks/shopify",
          " orders/create , app/uninstalled,,", "Own-Store.myshopify.com",
          NULL } };
    env_t               privacy = {
        { "SHOPIFY_CLIENT_ID", "SHOPIFY_CLIENT_SECRET", "SHOPIFY_TOKEN_KEY",
          "SHOPIFY_WEBHOOK_CALLBACK_URL", "SHOPIFY_WEBHOOK_TOPICS", NULL },
        { "app", "s3cret", key_hex, "https://x.example.com/w",
          "orders/create,shop/redact", NULL } };
    env_t               http = {
        { "SHOPIFY_CLIENT_ID", "SHOPIFY_CLIENT_SECRET", "SHOPIFY_TOKEN_KEY",
          "SHOPIFY_WEBHOOK_CALLBACK_URL", NULL },
        { "app", "s3cret", key_hex, "http://x.example.com/w", NULL } };

    (void) state;

    /* off: nothing required, privacy handling still works */
    assert_int_equal(sbw_shopify_conf_load(&c, env_get, &off, err,
                                           sizeof(err)), 0);
    assert_false(c.enabled);
    assert_int_equal(c.ntopics, 2);
    assert_int_equal(c.retention_days, 30);
    sbw_shopify_conf_free(&c);

    assert_int_equal(sbw_shopify_conf_load(&c, env_get, &partial, err,
                                           sizeof(err)), -1);
    assert_string_equal(err, "missing required settings: "
                        "SHOPIFY_CLIENT_SECRET, SHOPIFY_TOKEN_KEY, "
                        "SHOPIFY_WEBHOOK_CALLBACK_URL");

    assert_int_equal(sbw_shopify_conf_load(&c, env_get, &full, err,
                                           sizeof(err)), 0);
    assert_true(c.enabled);
    assert_true(c.have_key);
    assert_int_equal(c.ntopics, 2);
    assert_string_equal(c.topics[0], "app/uninstalled");
    assert_string_equal(c.topics[1], "orders/create");
    assert_int_equal(c.ncc_shops, 1);
    assert_string_equal(c.cc_shops[0], "own-store.myshopify.com");
    assert_true(sbw_shopify_is_cc_shop(&c, "own-store.myshopify.com"));
    assert_true(sbw_shopify_topic_wanted(&c, "ORDERS_CREATE"));
    assert_false(sbw_shopify_topic_wanted(&c, "ORDERS_UPDATED"));
    assert_int_equal(c.refresh_margin_ms, 300000);
    sbw_shopify_conf_free(&c);

    assert_int_equal(sbw_shopify_conf_load(&c, env_get, &privacy, err,
                                           sizeof(err)), -1);
    assert_non_null(strstr(err, "shop/redact is a privacy topic"));

    assert_int_equal(sbw_shopify_conf_load(&c, env_get, &http, err,
                                           sizeof(err)), -1);
    assert_non_null(strstr(err, "SHOPIFY_WEBHOOK_CALLBACK_URL"));
}


static void
test_domain_and_topics(void **state)
{
    char  out[256];

    (void) state;

    assert_int_equal(sbw_shop_domain_normalize("Acme-Demo.MyShopify.com",
                                               out, sizeof(out)), 0);
    assert_string_equal(out, "acme-demo.myshopify.com");
    assert_int_equal(sbw_shop_domain_normalize("-x.myshopify.com", out,
                                               sizeof(out)), -1);
    assert_int_equal(sbw_shop_domain_normalize("evil.example#.myshopify.com",
                                               out, sizeof(out)), -1);
    assert_int_equal(sbw_shop_domain_normalize("a.myshopify.com:443", out,
                                               sizeof(out)), -1);
    assert_int_equal(sbw_shop_domain_normalize(".myshopify.com", out,
                                               sizeof(out)), -1);
    assert_int_equal(sbw_shop_domain_normalize("a.b.myshopify.com", out,
                                               sizeof(out)), -1);

    assert_int_equal(sbw_shopify_topic_enum("orders/create", out,
                                            sizeof(out)), 0);
    assert_string_equal(out, "ORDERS_CREATE");
    assert_int_equal(sbw_shopify_topic_enum("inventory_levels/update", out,
                                            sizeof(out)), 0);
    assert_string_equal(out, "INVENTORY_LEVELS_UPDATE");
    assert_int_equal(sbw_shopify_topic_enum("ORDERS/create", out,
                                            sizeof(out)), -1);
    assert_int_equal(sbw_shopify_topic_enum("a/b/c", out, sizeof(out)), -1);
    assert_int_equal(sbw_shopify_topic_enum("orders", out, sizeof(out)), -1);
}


static void
test_gql_bodies(void **state)
{
    char    *s;
    json_t  *o;

    (void) state;

    s = sbw_gql_list_body(NULL);
    o = json_loads(s, 0, NULL);
    assert_non_null(o);
    assert_non_null(strstr(json_string_value(json_object_get(o, "query")),
                           "webhookSubscriptions(first: $first, after: "
                           "$after)"));
    assert_int_equal(json_integer_value(json_object_get(
        json_object_get(o, "variables"), "first")), SBW_GQL_PAGE);
    assert_true(json_is_null(json_object_get(json_object_get(o,
                                                             "variables"),
                                             "after")));
    json_decref(o);
    free(s);

    s = sbw_gql_create_body("ORDERS_CREATE", "https://x/w?a=\"b\"");
    o = json_loads(s, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(json_object_get(o, "variables"),
                        "webhookSubscription"), "uri")), "https://x/w?a=\"b\"");
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(o, "variables"), "topic")), "ORDERS_CREATE");
    json_decref(o);
    free(s);
}


static void
test_gql_check_and_wait(void **state)
{
    char            msg[256];
    json_t         *r;
    sbw_gql_cost_t  c;

    (void) state;

    sbw_gql_cost_init(&c);

    r = json_loads("{\"data\":{\"x\":1},\"extensions\":{\"cost\":{"
                   "\"requestedQueryCost\":52,\"actualQueryCost\":4,"
                   "\"throttleStatus\":{\"maximumAvailable\":2000.0,"
                   "\"currentlyAvailable\":1996,\"restoreRate\":100.0}}}}",
                   0, NULL);
    assert_int_equal(sbw_gql_check(r, &c, msg, sizeof(msg)), SBW_GQL_OK);
    assert_true(c.requested == 52);
    assert_true(c.available == 1996);
    assert_int_equal(sbw_gql_wait_ms(&c, 52), 0);
    json_decref(r);

    r = json_loads("{\"errors\":[{\"message\":\"Throttled\",\"extensions\":"
                   "{\"code\":\"THROTTLED\",\"documentation\":\"x\"}}],"
                   "\"extensions\":{\"cost\":{\"requestedQueryCost\":52,"
                   "\"actualQueryCost\":null,\"throttleStatus\":{"
                   "\"maximumAvailable\":100.0,\"currentlyAvailable\":7,"
                   "\"restoreRate\":20.0}}}}", 0, NULL);
    assert_int_equal(sbw_gql_check(r, &c, msg, sizeof(msg)),
                     SBW_GQL_THROTTLED);
    assert_true(c.actual == -1);

    /* (52 - 7) / 20 points per second */
    assert_int_equal(sbw_gql_wait_ms(&c, c.requested), 2250);

    /* a cost above the bucket waits for a full bucket only */
    assert_int_equal(sbw_gql_wait_ms(&c, 500), 4650);
    json_decref(r);

    r = json_loads("{\"errors\":[{\"message\":\"Field 'x' doesn't exist\"}]}",
                   0, NULL);
    assert_int_equal(sbw_gql_check(r, &c, msg, sizeof(msg)),
                     SBW_GQL_ERRORS);
    assert_string_equal(msg, "Field 'x' doesn't exist");
    json_decref(r);

    r = json_loads("{\"extensions\":{}}", 0, NULL);
    assert_int_equal(sbw_gql_check(r, &c, msg, sizeof(msg)),
                     SBW_GQL_MALFORMED);
    json_decref(r);

    /* nothing known: no wait */
    sbw_gql_cost_init(&c);
    assert_int_equal(sbw_gql_wait_ms(&c, 1000), 0);
}


static void
test_gql_list_and_mutations(void **state)
{
    int             next;
    char            cursor[64], msg[256];
    size_t          n;
    json_t         *r;
    sbw_gql_sub_t  *subs;

    (void) state;

    subs = NULL;
    n = 0;

    r = json_loads("{\"data\":{\"webhookSubscriptions\":{\"edges\":["
                   "{\"node\":{\"id\":\"gid://shopify/WebhookSubscription/1\","
                   "\"topic\":\"ORDERS_CREATE\",\"uri\":\"https://a/w\"}},"
                   "{\"node\":{\"id\":\"gid://shopify/WebhookSubscription/2\","
                   "\"topic\":\"ORDERS_PAID\",\"uri\":\"https://a/w\"}}],"
                   "\"pageInfo\":{\"hasNextPage\":true,\"endCursor\":\"c2\"}}"
                   "}}", 0, NULL);
    assert_int_equal(sbw_gql_parse_list(r, &subs, &n, &next, cursor,
                                        sizeof(cursor), msg, sizeof(msg)), 0);
    assert_int_equal(n, 2);
    assert_true(next);
    assert_string_equal(cursor, "c2");
    assert_string_equal(subs[1].topic, "ORDERS_PAID");
    json_decref(r);

    r = json_loads("{\"data\":{\"webhookSubscriptions\":{\"edges\":[],"
                   "\"pageInfo\":{\"hasNextPage\":false,\"endCursor\":null}}"
                   "}}", 0, NULL);
    assert_int_equal(sbw_gql_parse_list(r, &subs, &n, &next, cursor,
                                        sizeof(cursor), msg, sizeof(msg)), 0);
    assert_false(next);
    assert_int_equal(n, 2);
    json_decref(r);
    sbw_gql_subs_free(subs, n);

    r = json_loads("{\"data\":{\"webhookSubscriptions\":{}}}", 0, NULL);
    subs = NULL;
    n = 0;
    assert_int_equal(sbw_gql_parse_list(r, &subs, &n, &next, cursor,
                                        sizeof(cursor), msg, sizeof(msg)),
                     -1);
    sbw_gql_subs_free(subs, n);
    json_decref(r);

    r = json_loads("{\"data\":{\"webhookSubscriptionCreate\":{"
                   "\"webhookSubscription\":null,\"userErrors\":[{\"field\":"
                   "[\"webhookSubscription\",\"callbackUrl\"],\"message\":"
                   "\"Address for this topic has already been taken\"}]}}}",
                   0, NULL);
    assert_int_equal(sbw_gql_parse_mutation(r, "webhookSubscriptionCreate",
                                            msg, sizeof(msg)), -1);
    assert_string_equal(msg, "webhookSubscription.callbackUrl: Address for "
                        "this topic has already been taken");
    assert_int_equal(sbw_gql_parse_mutation(r, "webhookSubscriptionDelete",
                                            msg, sizeof(msg)), -1);
    json_decref(r);

    r = json_loads("{\"data\":{\"webhookSubscriptionDelete\":{"
                   "\"deletedWebhookSubscriptionId\":\"gid://x/1\","
                   "\"userErrors\":[]}}}", 0, NULL);
    assert_int_equal(sbw_gql_parse_mutation(r, "webhookSubscriptionDelete",
                                            msg, sizeof(msg)), 0);
    json_decref(r);
}


static void
test_gql_plan(void **state)
{
    int                 keep[5];
    char              **create;
    char               *topics[] = { "app/uninstalled", "orders/create" };
    size_t              ncreate;
    sbw_shopify_conf_t  c;
    sbw_gql_sub_t       subs[] = {
        { "1", "ORDERS_CREATE", "https://a/w" },
        { "2", "ORDERS_CREATE", "https://a/w" },       /* duplicate */
        { "3", "ORDERS_CREATE", "https://old/w" },     /* old URL */
        { "4", "PRODUCTS_UPDATE", "https://a/w" },     /* not wanted */
    };

    (void) state;

    memset(&c, 0, sizeof(c));
    c.callback_url = "https://a/w";
    c.topics = topics;
    c.ntopics = 2;

    assert_int_equal(sbw_gql_plan(&c, subs, 4, keep, &create, &ncreate), 0);
    assert_int_equal(keep[0], 1);
    assert_int_equal(keep[1], 0);
    assert_int_equal(keep[2], 0);
    assert_int_equal(keep[3], 0);
    assert_int_equal(ncreate, 1);
    assert_string_equal(create[0], "APP_UNINSTALLED");
    sbw_gql_strv_free(create, ncreate);

    /* nothing there yet */
    assert_int_equal(sbw_gql_plan(&c, subs, 0, keep, &create, &ncreate), 0);
    assert_int_equal(ncreate, 2);
    sbw_gql_strv_free(create, ncreate);
}


static void
test_tokens_answer(void **state)
{
    char                  msg[128];
    json_t               *r;
    sbw_shopify_tokens_t  t;

    (void) state;

    r = json_loads("{\"access_token\":\"a1\",\"scope\":\"read_orders\","
                   "\"expires_in\":3599,\"refresh_token\":\"r1\","
                   "\"refresh_token_expires_in\":7776000}", 0, NULL);
    assert_int_equal(sbw_shopify_parse_tokens(r, &t, msg, sizeof(msg)), 0);
    assert_string_equal(t.access_token, "a1");
    assert_string_equal(t.refresh_token, "r1");
    assert_int_equal(t.expires_in, 3599);
    assert_int_equal(t.refresh_expires_in, 7776000);
    sbw_shopify_tokens_clear(&t);
    json_decref(r);

    /* client credentials: no refresh token */
    r = json_loads("{\"access_token\":\"a2\",\"scope\":\"\",\"expires_in\":"
                   "86399}", 0, NULL);
    assert_int_equal(sbw_shopify_parse_tokens(r, &t, msg, sizeof(msg)), 0);
    assert_null(t.refresh_token);
    sbw_shopify_tokens_clear(&t);
    json_decref(r);

    r = json_loads("{\"error\":\"invalid_grant\"}", 0, NULL);
    assert_int_equal(sbw_shopify_parse_tokens(r, &t, msg, sizeof(msg)), -1);
    json_decref(r);
}


static void
test_privacy_match(void **state)
{
    long long              ids[] = { 6021450011004 };
    sbw_privacy_subject_t  who, shop;
    static const char      s[] = "acme-demo.myshopify.com";

    (void) state;

    memset(&who, 0, sizeof(who));
    who.customer_id = 7712345000004;
    who.email = "Juergen.Groesse@example.com";
    who.order_ids = ids;
    who.norders = 1;

#define M(entry_shop, body) \
    sbw_privacy_entry_matches(&who, s, entry_shop, "orders/create", body, \
                              strlen(body))

    assert_true(M(s, "{\"id\":6021450011004,\"email\":\"x@y\"}"));
    assert_true(M(s, "{\"id\":1,\"customer\":{\"id\":7712345000004}}"));
    assert_true(M(s, "{\"id\":1,\"email\":\"juergen.groesse@example.com\"}"));
    assert_true(M(s, "{\"id\":1,\"contact_email\":"
                     "\"JUERGEN.GROESSE@example.com\"}"));
    assert_true(M(s, "{\"id\":9,\"order_id\":6021450011004}"));
    assert_false(M(s, "{\"id\":6021450011001,\"customer\":{\"id\":1},"
                      "\"email\":\"other@example.com\"}"));

    /* another shop's entry is never this customer's */
    assert_false(M("other.myshopify.com", "{\"id\":6021450011004}"));

    /* not JSON: only the e-mail can tell */
    assert_true(M(s, "garbage juergen.groesse@example.com"));
    assert_false(M(s, "garbage 6021450011004"));

#undef M

    memset(&shop, 0, sizeof(shop));
    shop.whole_shop = 1;
    assert_true(sbw_privacy_entry_matches(&shop, s, "Acme-Demo.myshopify.com",
                                          "products/update", "{}", 2));
    assert_false(sbw_privacy_entry_matches(&shop, s, "b.myshopify.com",
                                           "products/update", "{}", 2));
}


int
test_shops_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_encrypt_roundtrip),
        cmocka_unit_test(test_decrypt_reference),
        cmocka_unit_test(test_decrypt_refusals),
        cmocka_unit_test(test_conf),
        cmocka_unit_test(test_domain_and_topics),
        cmocka_unit_test(test_gql_bodies),
        cmocka_unit_test(test_gql_check_and_wait),
        cmocka_unit_test(test_gql_list_and_mutations),
        cmocka_unit_test(test_gql_plan),
        cmocka_unit_test(test_tokens_answer),
        cmocka_unit_test(test_privacy_match),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("shops", tests, NULL, NULL);
}

/*
 * Settings: required names, URL forms, maps, defaults.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tests.h"


#define MAX_VARS  32


typedef struct {
    const char  *name[MAX_VARS];
    const char  *value[MAX_VARS];
    int          n;
} env_table_t;


static const char *
table_get(const char *name, void *ctx)
{
    int           i;
    env_table_t  *t;

    t = ctx;

    for (i = 0; i < t->n; i++) {
        if (strcmp(t->name[i], name) == 0) {
            return t->value[i];
        }
    }

    return NULL;
}


static void
table_set(env_table_t *t, const char *name, const char *value)
{
    int  i;

    for (i = 0; i < t->n; i++) {
        if (strcmp(t->name[i], name) == 0) {
            t->value[i] = value;
            return;
        }
    }

    assert_true(t->n < MAX_VARS);
    t->name[t->n] = name;
    t->value[t->n] = value;
    t->n++;
}


static void
table_required(env_table_t *t)
{
    memset(t, 0, sizeof(*t));

    table_set(t, "DATABASE_URL", "postgresql://bc@127.0.0.1:5432/bc");
    table_set(t, "BC365_TENANT_ID", "tenant-1");
    table_set(t, "BC365_CLIENT_ID", "client-1");
    table_set(t, "BC365_CLIENT_SECRET", "s3cret-value");
    table_set(t, "BC365_COMPANY_ID", "31b7c38b-2d4e-5437-beff-68c052310a74");
    table_set(t, "BC365_SHIPPING_ACCOUNT", "8130");
}


static void
test_missing_all(void **state)
{
    char          err[512];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    memset(&t, 0, sizeof(t));

    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_string_equal(err, "missing required settings: DATABASE_URL, "
                        "BC365_TENANT_ID, BC365_CLIENT_ID, "
                        "BC365_CLIENT_SECRET, BC365_COMPANY_ID, "
                        "BC365_SHIPPING_ACCOUNT");
}


static void
test_missing_some(void **state)
{
    char          err[512];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    table_required(&t);
    table_set(&t, "BC365_CLIENT_SECRET", "");
    table_set(&t, "BC365_COMPANY_ID", NULL);

    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_string_equal(err, "missing required settings: "
                        "BC365_CLIENT_SECRET, BC365_COMPANY_ID");
    assert_null(strstr(err, "s3cret"));
}


static void
test_defaults(void **state)
{
    char          err[512];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    table_required(&t);

    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     0);

    assert_string_equal(c.redis.host, "127.0.0.1");
    assert_int_equal(c.redis.port, 6379);
    assert_string_equal(c.stream_key, "shopify:webhooks");
    assert_string_equal(c.group, "bc-sync");
    assert_int_equal(c.indoubt_wait_ms, 660000);
    assert_int_equal(c.max_deliveries, 10);
    assert_int_equal(c.dup_check_interval_ms, 600000);
    assert_int_equal(c.dup_remove, 1);
    assert_string_equal(c.default_customer, "WEB");
    assert_string_equal(c.environment, "production");
    assert_string_equal(c.api_base,
                        "https://api.businesscentral.dynamics.com");
    assert_string_equal(c.auth_base, "https://login.microsoftonline.com");
    assert_string_equal(c.metrics_host, "127.0.0.1");
    assert_int_equal(c.metrics_port, 9101);
    assert_true(strlen(c.worker_name) > 0);
    assert_int_equal(json_object_size(c.sku_map), 0);

    sbw_config_free(&c);
}


static void
test_overrides(void **state)
{
    char          err[512];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    table_required(&t);
    table_set(&t, "BC365_API_BASE", "http://127.0.0.1:8089/");
    table_set(&t, "WORKER_NAME", "worker-a");
    table_set(&t, "METRICS_ADDR", "off");
    table_set(&t, "SKU_MAP_JSON", "{\"1896-S\": \"DESK-1\"}");
    table_set(&t, "VARIANT_MAP_JSON", "{\"45512345000080\": \"1936-S\"}");
    table_set(&t, "LOG_LEVEL", "debug");
    table_set(&t, "WORKER_CONCURRENCY", "2");

    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     0);

    assert_string_equal(c.api_base, "http://127.0.0.1:8089");
    assert_string_equal(c.worker_name, "worker-a");
    assert_null(c.metrics_host);
    assert_string_equal(json_string_value(json_object_get(c.sku_map,
                                                          "1896-S")),
                        "DESK-1");
    assert_string_equal(json_string_value(json_object_get(c.variant_map,
                                          "45512345000080")), "1936-S");
    assert_int_equal(c.log_level, 0);
    assert_int_equal(c.concurrency, 2);

    sbw_config_free(&c);
}


static void
test_customer_and_accounts(void **state)
{
    char          err[512];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    table_required(&t);
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     0);
    assert_int_equal(c.customer_strategy, SBW_CUSTOMER_EMAIL);
    assert_null(c.tip_account);
    assert_null(c.gift_card_account);
    assert_null(c.custom_line_account);
    sbw_config_free(&c);

    table_set(&t, "BC365_TIP_ACCOUNT", "22300");
    table_set(&t, "BC365_GIFT_CARD_ACCOUNT", "22150");
    table_set(&t, "BC365_CUSTOM_LINE_ACCOUNT", "");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     0);
    assert_string_equal(c.tip_account, "22300");
    assert_string_equal(c.gift_card_account, "22150");
    assert_null(c.custom_line_account);
    sbw_config_free(&c);

    table_set(&t, "BC365_CUSTOMER_STRATEGY", "default");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     0);
    assert_int_equal(c.customer_strategy, SBW_CUSTOMER_DEFAULT);
    sbw_config_free(&c);

    table_set(&t, "BC365_CUSTOMER_STRATEGY", "Email");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid BC365_CUSTOMER_STRATEGY: "
                           "\"Email\""));
}


static void
test_bad_values(void **state)
{
    char          err[512];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    table_required(&t);
    table_set(&t, "SKU_MAP_JSON", "{\"1896-S\": ");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid SKU_MAP_JSON: line 1"));

    table_required(&t);
    table_set(&t, "SKU_MAP_JSON", "{\"1896-S\": 5}");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "\"1896-S\" is not a string"));

    table_required(&t);
    table_set(&t, "BC365_COMPANY_ID", "not-a-guid");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid BC365_COMPANY_ID: \"not-a-guid\""));

    table_required(&t);
    table_set(&t, "RETRY_BASE_MS", "5000");
    table_set(&t, "RETRY_MAX_MS", "100");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid RETRY_MAX_MS"));

    table_required(&t);
    table_set(&t, "BC365_API_BASE", "notaurl");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid BC365_API_BASE"));

    table_required(&t);
    table_set(&t, "WORKER_CONCURRENCY", "many");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid WORKER_CONCURRENCY"));

    table_required(&t);
    table_set(&t, "LOG_LEVEL", "loud");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid LOG_LEVEL"));

    table_required(&t);
    table_set(&t, "DATABASE_URL", "mysql://u@h/db");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid DATABASE_URL"));

    table_required(&t);
    table_set(&t, "REDIS_URL", "redis://:p%4@host");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid REDIS_URL"));

    table_required(&t);
    table_set(&t, "METRICS_ADDR", "localhost");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid METRICS_ADDR"));
}


static void
test_database_url(void **state)
{
    char  err[256], *u;

    (void) state;

    u = sbw_database_url_normalize("postgresql+psycopg2://app:pw@db:5432/bc",
                                   err, sizeof(err));
    assert_string_equal(u, "postgresql://app:pw@db:5432/bc");
    free(u);

    u = sbw_database_url_normalize("postgres+asyncpg://db/bc?sslmode=off",
                                   err, sizeof(err));
    assert_string_equal(u, "postgres://db/bc?sslmode=off");
    free(u);

    u = sbw_database_url_normalize("postgresql:///bc?host=/run/pg", err,
                                   sizeof(err));
    assert_string_equal(u, "postgresql:///bc?host=/run/pg");
    free(u);

    u = sbw_database_url_normalize("host=/tmp dbname=bc", err, sizeof(err));
    assert_string_equal(u, "host=/tmp dbname=bc");
    free(u);

    assert_null(sbw_database_url_normalize("sqlite:///x.db", err,
                                           sizeof(err)));
    assert_null(sbw_database_url_normalize("just-a-name", err, sizeof(err)));
}


static void
test_redis_url_tcp(void **state)
{
    char             err[256];
    sbw_redis_url_t  u;

    (void) state;

    assert_int_equal(sbw_redis_url_parse("redis://localhost", &u, err,
                                         sizeof(err)), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_null(u.path);
    assert_null(u.password);
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("redis://:s3cret@10.1.2.3:6380/2",
                                         &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "10.1.2.3");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_null(u.user);
    assert_string_equal(u.password, "s3cret");
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("redis://app:p%40ss%2Fw@h:1/15",
                                         &u, err, sizeof(err)), 0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@ss/w");
    assert_int_equal(u.db, 15);
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("redis://[::1]:7000/3", &u, err,
                                         sizeof(err)), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("redis://h:6379/", &u, err,
                                         sizeof(err)), 0);
    assert_int_equal(u.db, 0);
    sbw_redis_url_free(&u);
}


static void
test_redis_url_unix(void **state)
{
    char             err[256];
    sbw_redis_url_t  u;

    (void) state;

    assert_int_equal(sbw_redis_url_parse("unix:///tmp/redis.sock", &u, err,
                                         sizeof(err)), 0);
    assert_null(u.host);
    assert_string_equal(u.path, "/tmp/redis.sock");
    assert_int_equal(u.db, 0);
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("redis+unix:///run/r.sock?db=4",
                                         &u, err, sizeof(err)), 0);
    assert_string_equal(u.path, "/run/r.sock");
    assert_int_equal(u.db, 4);
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("redis+unix://:pw@/run/r.sock",
                                         &u, err, sizeof(err)), 0);
    assert_string_equal(u.path, "/run/r.sock");
    assert_string_equal(u.password, "pw");
    sbw_redis_url_free(&u);

    assert_int_equal(sbw_redis_url_parse("unix:///s.sock?password=x%21&db=1",
                                         &u, err, sizeof(err)), 0);
    assert_string_equal(u.password, "x!");
    assert_int_equal(u.db, 1);
    sbw_redis_url_free(&u);
}


static void
test_redis_url_bad(void **state)
{
    size_t           i;
    char             err[256];
    sbw_redis_url_t  u;

    static const char *const  bad[] = {
        "rediss://h:6380", "http://h", "redis://", "redis://h:0",
        "redis://h:99999", "redis://h/abc", "redis://h:12x", "unix://",
        "unix://relative.sock", "redis://[::1", "redis://h/1?db=x"
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';

        if (sbw_redis_url_parse(bad[i], &u, err, sizeof(err)) != -1) {
            sbw_redis_url_free(&u);
            fail_msg("\"%s\" was accepted", bad[i]);
        }

        assert_non_null(strstr(err, "REDIS_URL"));
    }
}


/*
 * VARIANT_MAP_FILE takes the fixture's array shape; variants without a BC
 * item (bc_item_no null) are left out.
 */
static void
test_variant_map_file(void **state)
{
    char          err[512], path[1024];
    env_table_t   t;
    sbw_config_t  c;

    (void) state;

    snprintf(path, sizeof(path), "%s/meta/variant-map.json",
             test_fixtures_dir());

    table_required(&t);
    table_set(&t, "VARIANT_MAP_FILE", path);

    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     0);
    assert_string_equal(json_string_value(json_object_get(c.variant_map,
                                          "45512345000080")), "1936-S");
    assert_null(json_object_get(c.variant_map, "45512345000022"));
    assert_int_equal(json_object_size(c.variant_map), 22);

    sbw_config_free(&c);

    table_set(&t, "VARIANT_MAP_FILE", "/nonexistent/variant-map.json");
    assert_int_equal(sbw_config_load(&c, table_get, &t, err, sizeof(err)),
                     SBW_EXIT_CONFIG);
    assert_non_null(strstr(err, "invalid VARIANT_MAP_FILE"));
}


int
test_config_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_missing_all),
        cmocka_unit_test(test_missing_some),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_customer_and_accounts),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_database_url),
        cmocka_unit_test(test_redis_url_tcp),
        cmocka_unit_test(test_redis_url_unix),
        cmocka_unit_test(test_redis_url_bad),
        cmocka_unit_test(test_variant_map_file),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

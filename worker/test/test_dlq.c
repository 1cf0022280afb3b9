/*
 * Failures and recovery: the error classifier (errclass.c), dead-letter
 * reasons and payload storage (dlq.c), and the argument parsing of the
 * operator's verbs (cli_args.c).
 */

#include <string.h>

#include <curl/curl.h>

#include "tests.h"

#include "cli_args.h"
#include "dlq.h"
#include "errclass.h"


static void
test_classes_by_code(void **state)
{
    (void) state;

    /* the order's data: parked */
    assert_int_equal(sbw_errclass(400, 0, "Application_DialogException"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(400, 0,
                                  "Application_FieldValidationException"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(400, 0,
                                  "Application_StringExceededLength"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(400, 0, "BadRequest"), SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(400, 0, "BadRequest_InvalidOperation"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(404, 0, "Internal_RecordNotFound"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(409, 0,
                                  "Internal_EntityWithSameKeyExists"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(0, 0, "Mapping_UnsupportedLines"),
                     SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(0, 0, "Mapping_TotalMismatch"),
                     SBW_BC_PERMANENT);

    /* throttling, settings, credentials: retried, certainly not done */
    assert_int_equal(sbw_errclass(429, 0, "Application_TooManyRequests"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(401, 0,
                                  "Authentication_InvalidCredentials"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(403, 0, "Authorization_Forbidden"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(404, 0, "Internal_CompanyNotFound"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(404, 0, "BadRequest_ResourceNotFound"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(405, 0, "BadRequest_MethodNotAllowed"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(409, 0, "Request_EntityChanged"),
                     SBW_BC_RETRY_NOT_SENT);

    /* 5xx whatever the code: BC may have done it */
    assert_int_equal(sbw_errclass(500, 0, "Internal_ServerError"),
                     SBW_BC_RETRY_UNCERTAIN);
    assert_int_equal(sbw_errclass(503, 0, "Internal_TenantUnavailable"),
                     SBW_BC_RETRY_UNCERTAIN);
    assert_int_equal(sbw_errclass(504, 0, "HTTP_504"),
                     SBW_BC_RETRY_UNCERTAIN);
    assert_int_equal(sbw_errclass(502, 0, "Application_DialogException"),
                     SBW_BC_RETRY_UNCERTAIN);

    /* transport */
    assert_int_equal(sbw_errclass(0, CURLE_OPERATION_TIMEDOUT,
                                  "Transport_Timeout"),
                     SBW_BC_RETRY_UNCERTAIN);
    assert_int_equal(sbw_errclass(0, CURLE_COULDNT_CONNECT,
                                  "Transport_Error"),
                     SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(0, 0, "invalid_client"),
                     SBW_BC_RETRY_NOT_SENT);

    /* no code: the status decides */
    assert_int_equal(sbw_errclass(400, 0, NULL), SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(413, 0, ""), SBW_BC_PERMANENT);
    assert_int_equal(sbw_errclass(408, 0, ""), SBW_BC_RETRY_NOT_SENT);
    assert_int_equal(sbw_errclass(201, 0, ""), SBW_BC_OK);
}


static void
test_reasons(void **state)
{
    (void) state;

    assert_string_equal(sbw_dlq_reason("Worker_InvalidEntry"),
                        "invalid_entry");
    assert_string_equal(sbw_dlq_reason("Worker_MaxDeliveries"),
                        "max_deliveries");
    assert_string_equal(sbw_dlq_reason("Worker_DuplicateOrder"),
                        "duplicate_bc_order");
    assert_string_equal(sbw_dlq_reason("Mapping_UnsupportedLines"),
                        "unmapped_lines");
    assert_string_equal(sbw_dlq_reason("Mapping_TotalMismatch"),
                        "total_mismatch");
    assert_string_equal(sbw_dlq_reason("Mapping_InvalidOrder"), "mapping");
    assert_string_equal(sbw_dlq_reason("Application_DialogException"),
                        "bc_rejected");
    assert_string_equal(sbw_dlq_reason(NULL), "bc_rejected");
}


static void
test_payload_text(void **state)
{
    (void) state;

    assert_true(sbw_dlq_text_ok("{\"a\":\"\\u0000\"}", 13));
    assert_true(sbw_dlq_text_ok("caf\xc3\xa9 \xf0\x9f\x98\x80", 10));
    assert_false(sbw_dlq_text_ok("a\0b", 3));
    assert_false(sbw_dlq_text_ok("\xc3", 1));
    assert_false(sbw_dlq_text_ok("\xc0\xaf", 2));         /* overlong */
    assert_false(sbw_dlq_text_ok("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(sbw_dlq_text_ok("\xff", 1));

    assert_true(sbw_dlq_id_ok("12"));
    assert_false(sbw_dlq_id_ok(""));
    assert_false(sbw_dlq_id_ok("12x"));
    assert_false(sbw_dlq_id_ok("1234567890123456789"));
}


static char  parse_err[256];


static int
parse(sbw_cli_args_t *a, const char *line)
{
    int    argc;
    char   buf[512], *argv[32], *p, *err;

    err = parse_err;
    err[0] = '\0';

    snprintf(buf, sizeof(buf), "%s", line);
    argc = 0;

    for (p = strtok(buf, " "); p != NULL && argc < 32;
         p = strtok(NULL, " "))
    {
        argv[argc++] = p;
    }

    return sbw_cli_parse(argc, argv, a, err, sizeof(parse_err));
}


static void
test_cli_args(void **state)
{
    sbw_cli_args_t  a;

    (void) state;

    assert_true(sbw_cli_is_command("dlq"));
    assert_true(sbw_cli_is_command("ledger"));
    assert_true(sbw_cli_is_command("dry-run"));
    assert_false(sbw_cli_is_command("--drain"));

    assert_int_equal(parse(&a, "dlq list"), SBW_CLI_OK);
    assert_int_equal(a.cmd, SBW_CLI_DLQ_LIST);
    assert_string_equal(a.status, "open");
    assert_int_equal(a.limit, 100);

    assert_int_equal(parse(&a, "dlq list --shop S.myshopify.com --status "
                           "all --reason bc_rejected --limit 5 --json"),
                     SBW_CLI_OK);
    assert_string_equal(a.shop, "S.myshopify.com");
    assert_string_equal(a.status, "all");
    assert_string_equal(a.reason, "bc_rejected");
    assert_int_equal(a.limit, 5);
    assert_true(a.json);

    assert_int_equal(parse(&a, "dlq list --status gone"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq list --reason Bad-Reason"),
                     SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq list --limit 0"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq list --state failed"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq list --shop"), SBW_CLI_USAGE);
    assert_string_equal(parse_err, "--shop needs a value");
    assert_int_equal(parse(&a, "ledger duplicates --bogus"), SBW_CLI_USAGE);
    assert_string_equal(parse_err, "unknown option \"--bogus\"");
    assert_int_equal(parse(&a, "dlq frobnicate"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq"), SBW_CLI_USAGE);

    assert_int_equal(parse(&a, "dlq show 12"), SBW_CLI_OK);
    assert_int_equal(a.ids[0], 12);
    assert_int_equal(parse(&a, "dlq show"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq show 1 2"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq show -1"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq show 1x"), SBW_CLI_USAGE);

    assert_int_equal(parse(&a, "dlq retry 1 2 3"), SBW_CLI_OK);
    assert_int_equal(a.nids, 3);
    assert_int_equal(a.ids[2], 3);
    assert_int_equal(parse(&a, "dlq retry --all --shop s --reason mapping"),
                     SBW_CLI_OK);
    assert_true(a.all);
    assert_int_equal(parse(&a, "dlq retry"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq retry 1 --all"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq retry 1 --shop s"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq retry 4 --payload f.json --note n"),
                     SBW_CLI_OK);
    assert_string_equal(a.payload_file, "f.json");
    assert_string_equal(a.note, "n");
    assert_int_equal(parse(&a, "dlq retry 4 5 --payload f.json"),
                     SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq retry --all --payload f.json"),
                     SBW_CLI_USAGE);

    assert_int_equal(parse(&a, "dlq discard 7 8"), SBW_CLI_OK);
    assert_int_equal(a.cmd, SBW_CLI_DLQ_DISCARD);
    assert_int_equal(parse(&a, "dlq discard"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dlq discard --all"), SBW_CLI_USAGE);

    assert_int_equal(parse(&a, "ledger list --state failed --shop s"),
                     SBW_CLI_OK);
    assert_string_equal(a.state, "failed");
    assert_int_equal(parse(&a, "ledger list --state done"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "ledger show 6021450011001"), SBW_CLI_OK);
    assert_int_equal(a.order_id, 6021450011001LL);
    assert_int_equal(parse(&a, "ledger show"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "ledger show 1 2"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "ledger duplicates --remove"), SBW_CLI_OK);
    assert_true(a.remove);
    assert_int_equal(parse(&a, "ledger list --remove"), SBW_CLI_USAGE);

    assert_int_equal(parse(&a, "dry-run order.json"), SBW_CLI_OK);
    assert_string_equal(a.file, "order.json");
    assert_int_equal(parse(&a, "dry-run --dlq 3 --json"), SBW_CLI_OK);
    assert_int_equal(a.dlq_id, 3);
    assert_int_equal(parse(&a, "dry-run order.json --shop a.myshopify.com"),
                     SBW_CLI_OK);
    assert_string_equal(a.shop, "a.myshopify.com");
    assert_int_equal(parse(&a, "dry-run --dlq 3 --shop a.myshopify.com"),
                     SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dry-run order.json --shop evil"),
                     SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dry-run order.json --shop "
                               "evil.example#.myshopify.com"),
                     SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dry-run"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dry-run a.json --dlq 3"), SBW_CLI_USAGE);
    assert_int_equal(parse(&a, "dry-run a.json b.json"), SBW_CLI_USAGE);

    assert_int_equal(parse(&a, "dlq --help"), SBW_CLI_OK);
    assert_int_equal(a.cmd, SBW_CLI_HELP);
    assert_int_equal(parse(&a, "ledger list --help"), SBW_CLI_OK);
    assert_int_equal(a.cmd, SBW_CLI_HELP);
}


int
test_dlq_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_classes_by_code),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_payload_text),
        cmocka_unit_test(test_cli_args),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("failures and recovery", tests,
                                       NULL, NULL);
}

/*
 * BC answer classification, correlation ids, and the metrics text.
 */

#include <stdlib.h>
#include <string.h>

#include "bc.h"
#include "metrics.h"
#include "tests.h"


static sbw_bc_result_t
answer(long status, int curl_code)
{
    sbw_bc_result_t  r;

    memset(&r, 0, sizeof(r));
    r.status = status;
    r.curl_code = curl_code;
    r.retry_after_ms = -1;

    return r;
}


/*
 * Only answers that prove BC did not process the request may skip the
 * lookup before the next POST; anything that may hide a committed order
 * must not.
 */
static void
test_classify(void **state)
{
    sbw_bc_result_t  r;

    (void) state;

    r = answer(201, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_OK);

    r = answer(200, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_OK);

    r = answer(429, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_NOT_SENT);

    r = answer(401, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_NOT_SENT);

    r = answer(404, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_NOT_SENT);

    r = answer(0, CURLE_COULDNT_CONNECT);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_NOT_SENT);

    /* token endpoint failures leave status 0 and no curl error */
    r = answer(0, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_NOT_SENT);

    r = answer(500, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    r = answer(503, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    r = answer(504, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    r = answer(0, CURLE_OPERATION_TIMEDOUT);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    r = answer(0, CURLE_GOT_NOTHING);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    r = answer(0, CURLE_RECV_ERROR);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    /* a POST libcurl would have re-sent on a new connection, refused */
    r = answer(0, CURLE_SEND_FAIL_REWIND);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_RETRY_UNCERTAIN);

    r = answer(400, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_PERMANENT);

    r = answer(409, 0);
    assert_int_equal(sbw_bc_classify(&r), SBW_BC_PERMANENT);
}


static void
test_correlation(void **state)
{
    char  out[64];

    (void) state;

    sbw_bc_extract_correlation("Item does not exist.  CorrelationId:  "
                               "1de77279-60d6-437e-ba24-397ddbaef694.",
                               out, sizeof(out));
    assert_string_equal(out, "1de77279-60d6-437e-ba24-397ddbaef694");

    sbw_bc_extract_correlation("no id here", out, sizeof(out));
    assert_string_equal(out, "");

    sbw_bc_extract_correlation(NULL, out, sizeof(out));
    assert_string_equal(out, "");

    /* never more than the buffer */
    sbw_bc_extract_correlation("CorrelationId: 0123456789abcdef", out, 5);
    assert_string_equal(out, "0123");
}


static void
test_describe(void **state)
{
    char             code[64], msg[128];
    sbw_bc_result_t  r;

    (void) state;

    r = answer(400, 0);
    strcpy(r.error_code, "Application_DialogException");
    strcpy(r.error_message, "Item does not exist.");
    sbw_bc_describe(&r, code, sizeof(code), msg, sizeof(msg));
    assert_string_equal(code, "Application_DialogException");
    assert_string_equal(msg, "Item does not exist.");

    r = answer(502, 0);
    sbw_bc_describe(&r, code, sizeof(code), msg, sizeof(msg));
    assert_string_equal(code, "Unknown");
    assert_string_equal(msg, "HTTP 502");
}


/*
 * The exposition text carries the product notes' metric names, a
 * cumulative histogram, and escaped label values.
 */
static void
test_metrics_text(void **state)
{
    char  *text;

    (void) state;

    sbw_metrics_order_pushed(0.07);
    sbw_metrics_order_pushed(3.0);
    sbw_metrics_order_deduped();
    sbw_metrics_entry("orders/create", "created");
    sbw_metrics_entry("we\"ird\\topic\n", "ignored");
    sbw_metrics_bc_request("create_order", "201");

    text = sbw_metrics_render();
    assert_non_null(text);

    /* the group's gauges are shown once Redis has told them */
    assert_null(strstr(text, "\nworker_stream_lag "));
    free(text);

    sbw_metrics_limiter_wait("rate");
    sbw_metrics_limiter_wait("rate");
    sbw_metrics_limiter_waited(1.5);
    sbw_metrics_stream_group(7, 3);

    text = sbw_metrics_render();
    assert_non_null(text);

    assert_non_null(strstr(text, "\nbc_limiter_waits_total{reason=\"rate\"}"
                           " 2\n"));
    assert_non_null(strstr(text, "\nbc_limiter_waiting 1\n"));
    assert_non_null(strstr(text, "\nbc_limiter_wait_seconds_total 1.500\n"));
    assert_non_null(strstr(text, "\nworker_stream_lag 7\n"));
    assert_non_null(strstr(text, "\nworker_stream_pending 3\n"));

    assert_non_null(strstr(text, "\nbc_orders_pushed_total 2\n"));
    assert_non_null(strstr(text, "\nbc_orders_deduped_total 1\n"));
    assert_non_null(strstr(text, "bc_order_push_seconds_bucket{le=\"0.05\"}"
                           " 0\n"));
    assert_non_null(strstr(text, "bc_order_push_seconds_bucket{le=\"0.1\"}"
                           " 1\n"));
    assert_non_null(strstr(text, "bc_order_push_seconds_bucket{le=\"5\"}"
                           " 2\n"));
    assert_non_null(strstr(text, "bc_order_push_seconds_bucket{le=\"+Inf\"}"
                           " 2\n"));
    assert_non_null(strstr(text, "bc_order_push_seconds_count 2\n"));
    assert_non_null(strstr(text, "worker_stream_entries_total{topic="
                           "\"orders/create\",outcome=\"created\"} 1\n"));
    assert_non_null(strstr(text, "{topic=\"we\\\"ird\\\\topic\\n\","
                           "outcome=\"ignored\"} 1\n"));
    assert_non_null(strstr(text, "bc_requests_total{op=\"create_order\","
                           "status=\"201\"} 1\n"));

    free(text);
}


int
test_bc_run(int *ran)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_correlation),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_metrics_text),
    };

    *ran += (int) (sizeof(tests) / sizeof(tests[0]));

    return cmocka_run_group_tests_name("bc", tests, NULL, NULL);
}

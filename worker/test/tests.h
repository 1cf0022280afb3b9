/*
 * Unit test groups of test_worker.  Each runner adds the number of tests
 * it ran to *ran and returns the number that failed.
 */

#ifndef SBW_TESTS_H
#define SBW_TESTS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>


int test_money_run(int *ran);
int test_text_run(int *ran);
int test_order_map_run(int *ran);
int test_backoff_run(int *ran);
int test_config_run(int *ran);
int test_bc_run(int *ran);
int test_customer_run(int *ran);
int test_shops_run(int *ran);
int test_dlq_run(int *ran);
int test_sync_run(int *ran);

const char *test_fixtures_dir(void);


#endif /* SBW_TESTS_H */

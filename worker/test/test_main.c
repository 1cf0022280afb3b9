/*
 * test_worker: the worker's unit tests (cmocka).  Fixtures are found in
 * $SBW_FIXTURES_DIR, else in the directory compiled in as FIXTURES_DIR.
 */

#include <stdio.h>
#include <stdlib.h>

#include "tests.h"


#ifndef FIXTURES_DIR
#define FIXTURES_DIR  "../fixtures"
#endif


const char *
test_fixtures_dir(void)
{
    const char  *d;

    d = getenv("SBW_FIXTURES_DIR");

    return (d != NULL && *d != '\0') ? d : FIXTURES_DIR;
}


int
main(void)
{
    int  failed, ran;

    /* keep cmocka's stdout and stderr lines in order when piped */
    setvbuf(stdout, NULL, _IOLBF, 0);

    ran = 0;
    failed = 0;

    failed += test_money_run(&ran);
    failed += test_text_run(&ran);
    failed += test_order_map_run(&ran);
    failed += test_backoff_run(&ran);
    failed += test_config_run(&ran);
    failed += test_bc_run(&ran);
    failed += test_customer_run(&ran);
    failed += test_shops_run(&ran);
    failed += test_dlq_run(&ran);
    failed += test_sync_run(&ran);

    printf("\n%d passed, %d failed\n", ran - failed, failed);

    return failed ? 1 : 0;
}

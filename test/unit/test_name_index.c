/* test_name_index: positions of names by name (common.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "common.h"

#include <stdlib.h>

static void test_find(void **state)
{
    (void)state;
    const char *names[] = {"a", "b", "", "b", "cluster_with_a_long_name", "a"};
    sharp_name_index_t ix;
    sharp_name_index_init(&ix, names, 6);
    assert_int_equal(sharp_name_index_find(&ix, "a"), 0); /* the first of two */
    assert_int_equal(sharp_name_index_find(&ix, "b"), 1);
    assert_int_equal(sharp_name_index_find(&ix, ""), 2);
    assert_int_equal(sharp_name_index_find(&ix, "cluster_with_a_long_name"), 4);
    assert_int_equal(sharp_name_index_find(&ix, "c"), -1);
    assert_int_equal(sharp_name_index_find(&ix, "cluster_with_a_long_nam"), -1);
    sharp_name_index_free(&ix);
    sharp_name_index_init(&ix, names, 0); /* nothing indexed */
    assert_int_equal(sharp_name_index_find(&ix, "a"), -1);
    sharp_name_index_free(&ix);
}

/* 10,000 names, each written twice: every lookup finds the first */
static void test_many(void **state)
{
    (void)state;
    enum { N = 10000 };
    char **store = calloc(2 * N, sizeof *store);
    for (int i = 0; i < 2 * N; i++) {
        store[i] = malloc(24);
        snprintf(store[i], 24, "outbound|%d||svc", i % N);
    }
    sharp_name_index_t ix;
    sharp_name_index_init(&ix, (const char *const *)store, 2 * N);
    for (int i = 0; i < N; i++) {
        char name[24];
        snprintf(name, sizeof name, "outbound|%d||svc", i);
        assert_int_equal(sharp_name_index_find(&ix, name), i);
    }
    assert_int_equal(sharp_name_index_find(&ix, "outbound|10000||svc"), -1);
    sharp_name_index_free(&ix);
    for (int i = 0; i < 2 * N; i++) free(store[i]);
    free(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

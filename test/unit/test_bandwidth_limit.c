/* test_bandwidth_limit.c: the bandwidth limit filter's token bucket
 * (Envoy's SharedTokenBucketImpl, consumed with allow_partial) on a fake
 * clock: it starts full with limit_kbps KiB, refills continuously at
 * limit_kbps KiB per second up to that, gives whole tokens only, as many
 * as there are when fewer than asked for, and threads sharing it never
 * take more than it had. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>

#include "filters/bandwidth_limit/bucket.h"

#define MS 1000000ull
#define S (1000 * MS)
#define T0 (1000 * S)

static void starts_full(void **state)
{
    (void)state;
    sharp_bw_bucket_t b;
    sharp_bw_bucket_init(&b, 100, T0);
    /* 100 KiB there at once; asking for more gets what is there */
    assert_int_equal(sharp_bw_bucket_take(&b, 1000000, T0), 102400);
    assert_int_equal(sharp_bw_bucket_take(&b, 1, T0), 0);
    sharp_bw_bucket_destroy(&b);
}

static void refills_at_the_rate(void **state)
{
    (void)state;
    sharp_bw_bucket_t b;
    sharp_bw_bucket_init(&b, 100, T0);
    sharp_bw_bucket_take(&b, 102400, T0);
    /* 50 ms of 102400 bytes/s: 5120 bytes */
    assert_int_equal(sharp_bw_bucket_take(&b, 1000000, T0 + 50 * MS), 5120);
    /* a smaller want takes only that, the rest stays */
    assert_int_equal(sharp_bw_bucket_take(&b, 1000, T0 + 100 * MS), 1000);
    assert_int_equal(sharp_bw_bucket_take(&b, 1000000, T0 + 100 * MS), 4120);
    /* less than one whole token: nothing */
    assert_int_equal(sharp_bw_bucket_take(&b, 10, T0 + 100 * MS + 9000), 0);
    assert_int_equal(sharp_bw_bucket_take(&b, 10, T0 + 100 * MS + 10000), 1);
    /* a long idle time fills it only up to its size */
    assert_int_equal(sharp_bw_bucket_take(&b, 10000000, T0 + 100 * S), 102400);
    /* a clock going back changes nothing */
    assert_int_equal(sharp_bw_bucket_take(&b, 10, T0), 0);
    sharp_bw_bucket_destroy(&b);
}

static void pacing_over_a_second(void **state)
{
    (void)state;
    sharp_bw_bucket_t b;
    sharp_bw_bucket_init(&b, 1, T0);
    uint64_t got = sharp_bw_bucket_take(&b, 1 << 20, T0);
    /* a pass every 50 ms for 10 s: 10 KiB more, within a token */
    for (uint64_t t = 50; t <= 10000; t += 50)
        got += sharp_bw_bucket_take(&b, 1 << 20, T0 + t * MS);
    assert_true(got >= 11 * 1024 - 1 && got <= 11 * 1024);
    sharp_bw_bucket_destroy(&b);
}

static void zero_limit_gives_nothing(void **state)
{
    (void)state;
    sharp_bw_bucket_t b;
    sharp_bw_bucket_init(&b, 0, T0);
    assert_int_equal(sharp_bw_bucket_take(&b, 100, T0 + 5 * S), 0);
    sharp_bw_bucket_destroy(&b);
}

#define THREADS 4
static sharp_bw_bucket_t shared;
static uint64_t taken[THREADS];

static void *taker(void *arg)
{
    uint64_t *out = arg;
    for (int i = 0; i < 100000; i++)
        *out += sharp_bw_bucket_take(&shared, 7, T0);
    return NULL;
}

static void threads_share_it(void **state)
{
    (void)state;
    sharp_bw_bucket_init(&shared, 64, T0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, taker, &taken[i]);
    uint64_t sum = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        sum += taken[i];
    }
    assert_int_equal(sum, 64 * 1024);
    sharp_bw_bucket_destroy(&shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_full),          cmocka_unit_test(refills_at_the_rate),
        cmocka_unit_test(pacing_over_a_second), cmocka_unit_test(zero_limit_gives_nothing),
        cmocka_unit_test(threads_share_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

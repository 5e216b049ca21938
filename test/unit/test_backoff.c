/* The gRPC client's jittered exponential back-off (proxy/grpc/backoff.c),
 * Envoy's JitteredExponentialBackOffStrategy, with a deterministic random
 * source. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "grpc/backoff.h"

static uint64_t fixed(void *arg)
{
    return *(uint64_t *)arg;
}

/* The interval doubles from base until doubling would pass max / 2, then
 * stays at max; random() % interval is the back-off. */
static void intervals_double_to_max(void **state)
{
    (void)state;
    uint64_t r = UINT64_MAX;
    sharp_backoff_t b;
    sharp_backoff_init(&b, 500, 30000, fixed, &r);
    const uint64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(sharp_backoff_interval(&b), want[i]);
        assert_int_equal(sharp_backoff_next(&b), UINT64_MAX % want[i]);
    }
    /* a random value below the interval comes back as is */
    r = 123;
    assert_int_equal(sharp_backoff_next(&b), 123);
}

/* Envoy's test values: random 999 with base 500 gives 499, then 999. */
static void full_jitter_and_reset(void **state)
{
    (void)state;
    uint64_t r = 999;
    sharp_backoff_t b;
    sharp_backoff_init(&b, 500, 30000, fixed, &r);
    assert_int_equal(sharp_backoff_next(&b), 499);
    assert_int_equal(sharp_backoff_next(&b), 999);
    assert_int_equal(sharp_backoff_next(&b), 999);
    sharp_backoff_reset(&b);
    assert_int_equal(sharp_backoff_interval(&b), 500);
    assert_int_equal(sharp_backoff_next(&b), 499);
    /* zero is a valid back-off (full jitter has no lower bound) */
    r = 0;
    assert_int_equal(sharp_backoff_next(&b), 0);
}

/* A max that is not base times a power of two: 100, 200, then 350 (200
 * is not below 350 / 2); max equal to base; and the corrections of values
 * Envoy asserts against (base 0, max below base). */
static void odd_bounds(void **state)
{
    (void)state;
    uint64_t r = 1000003;
    sharp_backoff_t b;
    sharp_backoff_init(&b, 100, 350, fixed, &r);
    const uint64_t want[] = {100, 200, 350, 350};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(sharp_backoff_interval(&b), want[i]);
        assert_int_equal(sharp_backoff_next(&b), 1000003 % want[i]);
    }
    sharp_backoff_init(&b, 250, 250, fixed, &r);
    for (int i = 0; i < 3; i++) assert_int_equal(sharp_backoff_next(&b), 1000003 % 250);
    sharp_backoff_init(&b, 0, 0, fixed, &r);
    assert_int_equal(sharp_backoff_next(&b), 0); /* interval 1 */
    sharp_backoff_init(&b, 800, 100, fixed, &r);
    assert_int_equal(sharp_backoff_interval(&b), 800);
    sharp_backoff_next(&b);
    assert_int_equal(sharp_backoff_interval(&b), 800);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(intervals_double_to_max),
        cmocka_unit_test(full_jitter_and_reset),
        cmocka_unit_test(odd_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_overload.c: the overload manager's trigger arithmetic (Envoy's
 * ThresholdTriggerImpl / ScaledTriggerImpl), action states, the bernoulli
 * draw on a published state, and the global connection limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "overload.h"

static void threshold_trigger(void **state)
{
    (void)state;
    sharp_ol_trigger_t t = {.threshold = 0.9};
    assert_true(sharp_overload_trigger_state(&t, 0.0) == 0.0);
    assert_true(sharp_overload_trigger_state(&t, 0.899) == 0.0);
    /* at the value the trigger saturates (">= value") */
    assert_true(sharp_overload_trigger_state(&t, 0.9) == 1.0);
    assert_true(sharp_overload_trigger_state(&t, 3.5) == 1.0); /* pressure may exceed 1 */
    assert_true(sharp_overload_trigger_state(&t, NAN) == 0.0);
}

static void scaled_trigger(void **state)
{
    (void)state;
    sharp_ol_trigger_t t = {.scaled = true, .scaling = 0.5, .saturation = 0.9};
    assert_true(sharp_overload_trigger_state(&t, 0.2) == 0.0);
    assert_true(sharp_overload_trigger_state(&t, 0.499) == 0.0);
    assert_true(sharp_overload_trigger_state(&t, 0.5) == 0.0); /* (p - s) / (sat - s) = 0 */
    assert_true(fabs(sharp_overload_trigger_state(&t, 0.6) - 0.25) < 1e-9);
    assert_true(fabs(sharp_overload_trigger_state(&t, 0.8) - 0.75) < 1e-9);
    assert_true(sharp_overload_trigger_state(&t, 0.9) == 1.0);
    assert_true(sharp_overload_trigger_state(&t, 1.2) == 1.0);
}

static void action_takes_the_largest_trigger(void **state)
{
    (void)state;
    sharp_ol_trigger_t tr[2] = {{.monitor = 0, .threshold = 0.95},
                                {.monitor = 1, .scaled = true, .scaling = 0.0, .saturation = 1.0}};
    sharp_ol_action_t a = {.triggers = tr, .ntriggers = 2};
    double p1[2] = {0.5, 0.3};
    assert_true(fabs(sharp_overload_action_state(&a, p1) - 0.3) < 1e-9);
    double p2[2] = {0.96, 0.3};
    assert_true(sharp_overload_action_state(&a, p2) == 1.0);
    double p3[2] = {0.0, 0.0};
    assert_true(sharp_overload_action_state(&a, p3) == 0.0);
}

static void bernoulli_draws(void **state)
{
    (void)state;
    assert_false(sharp_overload_bernoulli(0, 0));
    assert_false(sharp_overload_bernoulli(0, UINT64_MAX));
    assert_true(sharp_overload_bernoulli(1000000, 0));
    assert_true(sharp_overload_bernoulli(1000000, 999999));
    /* a quarter of uniformly spread draws take a 25% state */
    unsigned taken = 0;
    for (uint64_t r = 0; r < 1000000; r += 7) taken += sharp_overload_bernoulli(250000, r * 1000003u);
    double frac = taken / (1000000.0 / 7);
    assert_true(frac > 0.23 && frac < 0.27);
}

static void scaled_timeouts(void **state)
{
    (void)state;
    /* Envoy's scaled range timer: min + (max - min) * (1 - state) */
    assert_int_equal(sharp_overload_scaled_timeout_ms(3600000, 2000, 0), 3600000);
    assert_int_equal(sharp_overload_scaled_timeout_ms(3600000, 2000, 1000000), 2000);
    assert_int_equal(sharp_overload_scaled_timeout_ms(600000, 2000, 700000), 2000 + 598000 * 3 / 10);
    /* a minimum above the timeout is the timeout (AbsoluteMinimum) */
    assert_int_equal(sharp_overload_scaled_timeout_ms(1000, 5000, 1000000), 1000);
    /* without reduce_timeouts the remaining time is the plain one */
    assert_int_equal(sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, 1000, 400), 600);
    assert_int_equal(sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, 1000, 1400), 0);
}

static void action_names(void **state)
{
    (void)state;
    assert_int_equal(sharp_overload_action_kind("envoy.overload_actions.stop_accepting_requests"),
                     SHARP_OL_STOP_ACCEPTING_REQUESTS);
    assert_int_equal(sharp_overload_action_kind("envoy.overload_actions.shrink_heap"), SHARP_OL_SHRINK_HEAP);
    assert_int_equal(sharp_overload_action_kind("envoy.overload_actions.reduce_timeouts"), SHARP_OL_REDUCE_TIMEOUTS);
    assert_int_equal(sharp_overload_action_kind("envoy.overload_actions.reset_high_memory_stream"),
                     SHARP_OL_RESET_HIGH_MEMORY_STREAM);
    assert_int_equal(sharp_overload_action_kind("envoy.overload_actions.stop_accepting_connections"),
                     SHARP_OL_STOP_ACCEPTING_CONNECTIONS);
    assert_int_equal(sharp_overload_action_kind("envoy.overload_actions.close_idle_http_connections"), -1);
    assert_int_equal(sharp_overload_action_kind("stop_accepting_requests"), -1);
}

static void global_connection_limit(void **state)
{
    (void)state;
    sharp_ol_monitor_t m = {.name = "envoy.resource_monitors.global_downstream_max_connections",
                            .kind = SHARP_OL_MONITOR_DOWNSTREAM_CONNECTIONS, .max = 2};
    sharp_overload_config_t cfg = {.refresh_ms = 1000, .monitors = &m, .nmonitors = 1};
    uv_loop_t loop;
    uv_loop_init(&loop);
    sharp_stats_t *stats = sharp_stats_create(1);
    sharp_overload_start(&loop, &cfg, stats);
    assert_int_equal(sharp_overload_admit_connection(false, false, 1), SHARP_OL_ADMIT);
    assert_int_equal(sharp_overload_admit_connection(false, false, 2), SHARP_OL_ADMIT);
    assert_int_equal(sharp_overload_admit_connection(false, false, 3), SHARP_OL_REJECT_GLOBAL_LIMIT);
    /* a listener ignoring the limit gets in and still counts */
    assert_int_equal(sharp_overload_admit_connection(true, false, 4), SHARP_OL_ADMIT);
    assert_int_equal(sharp_overload_connections(), 3);
    sharp_overload_connection_closed();
    assert_int_equal(sharp_overload_admit_connection(false, false, 5), SHARP_OL_REJECT_GLOBAL_LIMIT);
    sharp_overload_connection_closed();
    assert_int_equal(sharp_overload_admit_connection(false, false, 6), SHARP_OL_ADMIT);
    sharp_overload_connection_closed();
    sharp_overload_connection_closed();
    assert_int_equal(sharp_overload_connections(), 0);
    sharp_overload_stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sharp_stats_destroy(stats);
}

/* reset_high_memory_stream's memory classes (buffer_factory_config) and
 * how many of them a state clears, as Envoy's resetAccountsGivenPressure. */
static void memory_classes(void **state)
{
    (void)state;
    sharp_overload_config_t cfg = {.refresh_ms = 1000, .min_account_pow2 = 16};
    uv_loop_t loop;
    uv_loop_init(&loop);
    sharp_stats_t *stats = sharp_stats_create(1);
    sharp_overload_start(&loop, &cfg, stats);
    assert_int_equal(sharp_overload_memory_class(0), -1);
    assert_int_equal(sharp_overload_memory_class(65535), -1);
    assert_int_equal(sharp_overload_memory_class(65536), 0);
    assert_int_equal(sharp_overload_memory_class(131071), 0);
    assert_int_equal(sharp_overload_memory_class(131072), 1);
    assert_int_equal(sharp_overload_memory_class(1u << 20), 4);
    assert_int_equal(sharp_overload_memory_class((uint64_t)1 << 23), 7);
    assert_int_equal(sharp_overload_memory_class((uint64_t)1 << 40), 7);
    sharp_overload_stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    /* without buffer accounting nothing is tracked */
    sharp_overload_config_t none = {.refresh_ms = 1000};
    sharp_overload_start(&loop, &none, stats);
    assert_int_equal(sharp_overload_memory_class((uint64_t)1 << 40), -1);
    sharp_overload_stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sharp_stats_destroy(stats);
    /* floor(state * 8) + 1 classes, at most 8; none while inactive */
    assert_int_equal(sharp_overload_classes_to_reset(0), 0);
    assert_int_equal(sharp_overload_classes_to_reset(1), 1);
    assert_int_equal(sharp_overload_classes_to_reset(124999), 1);
    assert_int_equal(sharp_overload_classes_to_reset(125000), 2);
    assert_int_equal(sharp_overload_classes_to_reset(500000), 5);
    assert_int_equal(sharp_overload_classes_to_reset(999999), 8);
    assert_int_equal(sharp_overload_classes_to_reset(1000000), 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threshold_trigger),
        cmocka_unit_test(scaled_trigger),
        cmocka_unit_test(action_takes_the_largest_trigger),
        cmocka_unit_test(bernoulli_draws),
        cmocka_unit_test(scaled_timeouts),
        cmocka_unit_test(action_names),
        cmocka_unit_test(global_connection_limit),
        cmocka_unit_test(memory_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

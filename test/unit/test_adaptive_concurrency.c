/* test_adaptive_concurrency.c: the gradient and AIMD concurrency controllers
 * driven by a fake clock and scripted latencies: window math, clamps, minRTT
 * measurements, jitter, the 5-window retrigger, AIMD steps and baseline.
 * test_adaptive_concurrency_load.c has the load simulations and threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <math.h>

#include "ac_test.h"

/* ---- Gradient controller ---- */

typedef Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig gpb_t;
typedef Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig__ConcurrencyLimitCalculationParams
    clp_t;
typedef Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig__MinimumRTTCalculationParams
    mrp_t;

static void expect_gradient_error(const gpb_t *pb, const char *needle)
{
    sharp_gradient_config_t g;
    char err[256] = "";
    assert_int_equal(sharp_gradient_config_from_proto(pb, &g, err, sizeof err), -1);
    if (!strstr(err, needle)) fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void test_gradient_config_from_proto(void **state)
{
    (void)state;
    gpb_t pb =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ADAPTIVE_CONCURRENCY__V3__GRADIENT_CONTROLLER_CONFIG__INIT;
    clp_t clp =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ADAPTIVE_CONCURRENCY__V3__GRADIENT_CONTROLLER_CONFIG__CONCURRENCY_LIMIT_CALCULATION_PARAMS__INIT;
    mrp_t mrp =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ADAPTIVE_CONCURRENCY__V3__GRADIENT_CONTROLLER_CONFIG__MINIMUM_RTTCALCULATION_PARAMS__INIT;
    Google__Protobuf__Duration upd = GOOGLE__PROTOBUF__DURATION__INIT, iv = upd, fixed = upd;
    Google__Protobuf__UInt32Value zero = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, u25 = zero;
    Envoy__Type__V3__Percent pct = ENVOY__TYPE__V3__PERCENT__INIT;
    upd.nanos = 100000000;
    iv.seconds = 60;
    u25.value = 25;

    expect_gradient_error(NULL, "gradient_controller_config");
    expect_gradient_error(&pb, "concurrency_limit_params: is required");
    pb.concurrency_limit_params = &clp;
    expect_gradient_error(&pb, "concurrency_update_interval: is required");
    clp.concurrency_update_interval = &upd;
    expect_gradient_error(&pb, "min_rtt_calc_params: is required");
    pb.min_rtt_calc_params = &mrp;
    expect_gradient_error(&pb, "neither interval nor fixed_value");

    mrp.interval = &iv;
    sharp_gradient_config_t g;
    char err[256] = "";
    assert_int_equal(sharp_gradient_config_from_proto(&pb, &g, err, sizeof err), 0);
    assert_true(g.sample_aggregate_percentile == 0.5);
    assert_int_equal(g.concurrency_update_interval_ns, MS(100));
    assert_int_equal(g.max_concurrency_limit, 1000);
    assert_int_equal(g.min_rtt_calc_interval_ns, SEC(60));
    assert_int_equal(g.request_count, 50);
    assert_true(fabs(g.jitter - 0.15) < 1e-12);
    assert_int_equal(g.min_concurrency, 3);
    assert_int_equal(g.min_concurrency_limit, 0);
    assert_true(fabs(g.buffer - 0.25) < 1e-12);
    assert_int_equal(g.fixed_value_ns, 0);
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&g, 1, NULL, NULL, 1);
    assert_non_null(c);
    sharp_ac_destroy(c);

    clp.min_concurrency_limit = &u25;
    assert_int_equal(sharp_gradient_config_from_proto(&pb, &g, err, sizeof err), 0);
    assert_int_equal(g.min_concurrency_limit, 25);
    clp.min_concurrency_limit = NULL;

    pct.value = 101;
    pb.sample_aggregate_percentile = &pct;
    expect_gradient_error(&pb, "sample_aggregate_percentile: value must be in [0, 100]");
    pct.value = 90;
    assert_int_equal(sharp_gradient_config_from_proto(&pb, &g, err, sizeof err), 0);
    assert_true(fabs(g.sample_aggregate_percentile - 0.9) < 1e-12);
    pb.sample_aggregate_percentile = NULL;
    mrp.jitter = &pct;
    pct.value = -1;
    expect_gradient_error(&pb, "min_rtt_calc_params.jitter");
    mrp.jitter = NULL;

    mrp.request_count = &zero;
    expect_gradient_error(&pb, "request_count: must be greater than 0");
    mrp.request_count = NULL;
    mrp.min_concurrency = &zero;
    expect_gradient_error(&pb, "min_concurrency: must be greater than 0");
    mrp.min_concurrency = NULL;
    clp.max_concurrency_limit = &zero;
    expect_gradient_error(&pb, "max_concurrency_limit: must be greater than 0");
    clp.max_concurrency_limit = NULL;
    upd.nanos = 0;
    expect_gradient_error(&pb, "concurrency_update_interval: must be greater than 0");
    upd.nanos = 100000000;
    iv.seconds = 0;
    iv.nanos = 500000;
    expect_gradient_error(&pb, "interval: must be at least 1ms");
    iv.seconds = -1;
    expect_gradient_error(&pb, "non-negative");

    /* fixed_value alone is enough, and wins over interval. */
    mrp.interval = NULL;
    fixed.nanos = 20000000;
    mrp.fixed_value = &fixed;
    assert_int_equal(sharp_gradient_config_from_proto(&pb, &g, err, sizeof err), 0);
    assert_int_equal(g.fixed_value_ns, MS(20));
    fixed.nanos = 0;
    expect_gradient_error(&pb, "fixed_value: must be greater than 0");

    sharp_gradient_config_t bad = gcfg();
    bad.concurrency_update_interval_ns = 0;
    assert_null(sharp_ac_gradient_create(&bad, 1, NULL, NULL, 1));
    bad = gcfg();
    assert_null(sharp_ac_gradient_create(&bad, 0, NULL, NULL, 1));
}

/* The controller starts measuring: the limit is pinned to min_concurrency
 * until request_count samples arrived, then minRTT is their percentile. */
static void test_gradient_initial_min_rtt(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(1)};
    sharp_gradient_config_t cfg = gcfg();
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 2, fake_clock, &clk, 7);
    sharp_ac_snapshot_t s = snap(c);
    assert_int_equal(s.kind, SHARP_AC_GRADIENT);
    assert_true(s.min_rtt_calculation_active);
    assert_int_equal(s.concurrency_limit, 3);

    uint64_t st[4];
    assert_true(sharp_ac_try_acquire(c, 0, &st[0]));
    assert_true(sharp_ac_try_acquire(c, 1, &st[1]));
    assert_true(sharp_ac_try_acquire(c, 0, &st[2]));
    assert_false(sharp_ac_try_acquire(c, 1, &st[3]));
    assert_int_equal(snap(c).in_flight, 3);
    for (int i = 0; i < 3; i++)
        sharp_ac_release(c, (unsigned)i & 1, st[i], MS(10), SHARP_AC_OK, true);
    assert_int_equal(snap(c).in_flight, 0);

    /* Windows do not close while measuring. */
    advance(c, &clk, MS(500));
    assert_int_equal(serial(c, 46, MS(10), SHARP_AC_OK), 46);
    s = snap(c);
    assert_true(s.min_rtt_calculation_active);
    assert_int_equal(s.windows, 0);
    assert_int_equal(serial(c, 1, MS(10), SHARP_AC_OK), 1);
    s = snap(c);
    assert_false(s.min_rtt_calculation_active);
    assert_int_equal(s.min_rtt_msecs, 10);
    assert_true(s.min_rtt_ns >= MS(10) && s.min_rtt_ns <= MS(10) * 1.02);
    assert_int_equal(s.concurrency_limit, 3);

    /* A reset without a response frees the slot and is not a sample. */
    uint64_t t;
    assert_true(sharp_ac_try_acquire(c, 0, &t));
    sharp_ac_release(c, 0, t, SEC(100), SHARP_AC_ERROR, false);
    advance(c, &clk, MS(100));
    assert_int_equal(snap(c).windows, 0);
    sharp_ac_destroy(c);
}

/* With fixed_value nothing is measured; each window moves the limit by
 * limit*g + sqrt(limit*g), truncated, with g clamped to [0.5, 2]. */
static void test_gradient_limit_formula(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_gradient_config_t cfg = gcfg();
    cfg.fixed_value_ns = MS(10);
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, 7);
    sharp_ac_snapshot_t s = snap(c);
    assert_false(s.min_rtt_calculation_active);
    assert_int_equal(s.min_rtt_msecs, 10);
    assert_int_equal(s.concurrency_limit, 3);

    /* Latencies near the buffered minRTT (12.5 ms): check the formula with
     * the sampleRTT the controller reports. */
    uint32_t limit = 3;
    for (int i = 0; i < 6; i++) {
        serial(c, 20, US(12500), SHARP_AC_OK);
        advance(c, &clk, MS(100));
        s = snap(c);
        double g = 12.5e6 / (double)s.sample_rtt_ns;
        g = g < 0.5 ? 0.5 : g > 2 ? 2 : g;
        double l = limit * g;
        uint32_t expect = (uint32_t)(l + sqrt(l));
        assert_int_equal(s.concurrency_limit, expect);
        assert_int_equal(s.gradient, (uint64_t)(g * 1000));
        assert_int_equal(s.burst_queue_size, (uint64_t)sqrt(l));
        assert_int_equal(s.sample_rtt_msecs, 12);
        assert_true(s.sample_rtt_ns >= US(12500) && s.sample_rtt_ns <= US(12500) * 1.02);
        limit = expect;
    }
    assert_int_equal(snap(c).windows, 6);

    /* A window without samples keeps the limit. */
    advance(c, &clk, MS(100));
    assert_int_equal(limit_of(c), limit);
    assert_int_equal(snap(c).windows, 6);
    sharp_ac_destroy(c);
}

static void test_gradient_clamps(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_gradient_config_t cfg = gcfg();
    cfg.fixed_value_ns = MS(10);
    cfg.max_concurrency_limit = 100;
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, 7);

    /* Fast samples: gradient 2.0 (raw 12.5), 3 -> 8 -> 20 -> 46 -> 100 (max). */
    const uint32_t up[] = {8, 20, 46, 100, 100};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(up); i++) {
        serial(c, 5, MS(1), SHARP_AC_OK);
        advance(c, &clk, MS(100));
        assert_int_equal(snap(c).gradient, 2000);
        assert_int_equal(limit_of(c), up[i]);
    }
    /* Slow samples: gradient 0.5 (raw 0.125): 100 -> 57 -> 33 -> 20 -> 13 ->
     * 9 -> 6 -> 4 -> 3 -> 3 (2, clamped to the minimum). */
    const uint32_t down[] = {57, 33, 20, 13, 9, 6, 4, 3, 3};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(down); i++) {
        serial(c, 3, MS(100), SHARP_AC_OK);
        advance(c, &clk, MS(100));
        assert_int_equal(snap(c).gradient, 500);
        assert_int_equal(limit_of(c), down[i]);
    }
    assert_int_equal(snap(c).burst_queue_size, 1);
    /* fixed_value: staying at the minimum never starts a measurement. */
    for (int i = 0; i < 10; i++) {
        serial(c, 3, MS(100), SHARP_AC_OK);
        advance(c, &clk, MS(100));
    }
    assert_false(snap(c).min_rtt_calculation_active);
    sharp_ac_destroy(c);
}

/* Runs the initial measurement to completion with `count` samples. */
static void finish_measurement(sharp_ac_controller_t *c, unsigned count, uint64_t latency)
{
    assert_true(snap(c).min_rtt_calculation_active);
    serial(c, count, latency, SHARP_AC_OK);
    assert_false(snap(c).min_rtt_calculation_active);
}

/* Samples of requests admitted before a measurement began do not count
 * toward it and do not enter its minRTT. */
static void test_gradient_old_samples_ignored(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_gradient_config_t cfg = gcfg();
    cfg.request_count = 5;
    cfg.sample_aggregate_percentile = 1.0;
    cfg.min_rtt_calc_interval_ns = SEC(1);
    cfg.jitter = 0;
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, 7);
    finish_measurement(c, 5, MS(10));

    for (int i = 0; i < 9; i++)
        advance(c, &clk, MS(100));
    advance(c, &clk, MS(99));
    uint64_t old;
    assert_true(sharp_ac_try_acquire(c, 0, &old));
    assert_false(snap(c).min_rtt_calculation_active);
    advance(c, &clk, MS(1));
    assert_true(snap(c).min_rtt_calculation_active);
    sharp_ac_release(c, 0, old, MS(500), SHARP_AC_OK, true);
    assert_int_equal(serial(c, 4, MS(20), SHARP_AC_OK), 4);
    assert_true(snap(c).min_rtt_calculation_active);
    assert_int_equal(serial(c, 1, MS(20), SHARP_AC_OK), 1);
    sharp_ac_snapshot_t s = snap(c);
    assert_false(s.min_rtt_calculation_active);
    assert_true(s.min_rtt_ns >= MS(20) && s.min_rtt_ns <= MS(20) * 1.02);

    /* A sample from before that measurement is ignored afterwards too. */
    advance(c, &clk, MS(100));
    uint64_t windows = snap(c).windows;
    assert_true(sharp_ac_try_acquire(c, 0, &old));
    sharp_ac_release(c, 0, old, MS(1), SHARP_AC_OK, true);
    advance(c, &clk, MS(100));
    assert_int_equal(snap(c).windows, windows + 1);
    assert_true(sharp_ac_try_acquire(c, 0, &old));
    sharp_ac_release(c, 0, old - SEC(1), MS(1), SHARP_AC_OK, true);
    advance(c, &clk, MS(100));
    assert_int_equal(snap(c).windows, windows + 1);
    sharp_ac_destroy(c);
}

/* The next measurement starts interval + [0, ceil(interval * jitter)) after
 * the previous one ended. */
static void test_gradient_jitter_bounds(void **state)
{
    (void)state;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        fake_clock_t clk = {SEC(10)};
        sharp_gradient_config_t cfg = gcfg();
        cfg.request_count = 1;
        cfg.min_rtt_calc_interval_ns = SEC(1);
        cfg.jitter = seed == 300 ? 0 : 0.15;
        sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, seed);
        finish_measurement(c, 1, MS(1));
        uint64_t t0 = clk.now;
        while (!snap(c).min_rtt_calculation_active) {
            advance(c, &clk, MS(1));
            assert_true(clk.now - t0 <= MS(1150));
        }
        uint64_t d = clk.now - t0;
        if (seed == 300) {
            assert_int_equal(d, MS(1000));
        } else {
            assert_true(d >= MS(1000));
            lo = SHARP_MIN(lo, d);
            hi = SHARP_MAX(hi, d);
        }
        sharp_ac_destroy(c);
    }
    assert_true(lo <= MS(1010));
    assert_true(hi >= MS(1140) && hi <= MS(1150));
}

/* Five consecutive windows that set the limit to its minimum start a new
 * measurement at once. */
static void test_gradient_min_limit_retrigger(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_gradient_config_t cfg = gcfg();
    cfg.request_count = 5;
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, 7);
    finish_measurement(c, 5, MS(10));
    for (int i = 1; i <= 5; i++) {
        serial(c, 2, MS(100), SHARP_AC_OK);
        advance(c, &clk, MS(100));
        assert_int_equal(limit_of(c), 3);
        assert_int_equal(snap(c).min_rtt_calculation_active, i == 5);
    }
    /* It measures like any other: the new minRTT replaces the old one. */
    finish_measurement(c, 5, MS(100));
    assert_int_equal(snap(c).min_rtt_msecs, 100);

    /* A window that moves off the minimum resets the count. */
    for (int i = 1; i <= 4; i++) {
        serial(c, 2, MS(300), SHARP_AC_OK);
        advance(c, &clk, MS(100));
    }
    serial(c, 2, MS(20), SHARP_AC_OK);
    advance(c, &clk, MS(100));
    assert_true(limit_of(c) > 3);
    for (int i = 1; i <= 4; i++) {
        serial(c, 2, MS(300), SHARP_AC_OK);
        advance(c, &clk, MS(100));
    }
    assert_int_equal(limit_of(c), 3);
    assert_false(snap(c).min_rtt_calculation_active);
    sharp_ac_destroy(c);
}

/* min_concurrency_limit set apart: measurements leave the limit alone, and
 * it bounds the calculated limit. */
static void test_gradient_unpinned(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_gradient_config_t cfg = gcfg();
    cfg.request_count = 5;
    cfg.min_rtt_calc_interval_ns = SEC(2);
    cfg.jitter = 0;
    cfg.min_concurrency_limit = 5;
    sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, 7);
    finish_measurement(c, 5, MS(10));
    for (int i = 0; i < 10; i++) {
        serial(c, 5, MS(10), SHARP_AC_OK);
        advance(c, &clk, MS(100));
    }
    uint32_t before = limit_of(c);
    assert_true(before > 20);
    while (!snap(c).min_rtt_calculation_active)
        advance(c, &clk, MS(100));
    assert_int_equal(limit_of(c), before);
    finish_measurement(c, 5, MS(10));
    assert_int_equal(limit_of(c), before);
    for (int i = 0; limit_of(c) > 5; i++) {
        assert_true(i < 20);
        serial(c, 5, MS(500), SHARP_AC_OK);
        advance(c, &clk, MS(100));
        assert_true(limit_of(c) >= 5);
    }
    sharp_ac_destroy(c);
}

/* The window percentile is within 3% of the exact one. */
static void test_gradient_percentile_accuracy(void **state)
{
    (void)state;
    const double qs[] = {0.5, 0.9, 0.99, 0.0, 1.0};
    const uint64_t scales[] = {US(1), US(50), MS(3), SEC(2)};
    for (size_t qi = 0; qi < SHARP_ARRAY_SIZE(qs); qi++) {
        for (size_t si = 0; si < SHARP_ARRAY_SIZE(scales); si++) {
            fake_clock_t clk = {SEC(5)};
            sharp_gradient_config_t cfg = gcfg();
            cfg.fixed_value_ns = MS(10);
            cfg.sample_aggregate_percentile = qs[qi];
            sharp_ac_controller_t *c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &clk, 7);
            enum { N = 1000 };
            uint64_t v[N];
            for (unsigned i = 0; i < N; i++) {
                /* 1x .. ~4x the scale, in a scrambled order */
                unsigned k = (i * 7919u) % N;
                v[k] = scales[si] + scales[si] * 3 * i / N;
            }
            for (unsigned i = 0; i < N; i++) {
                uint64_t st;
                assert_true(sharp_ac_try_acquire(c, 0, &st));
                sharp_ac_release(c, 0, st, v[i], SHARP_AC_OK, true);
            }
            advance(c, &clk, MS(100));
            /* exact: the sorted values are scale + scale*3*i/N */
            unsigned rank = qs[qi] <= 0 ? 0 : (unsigned)ceil(qs[qi] * N) - 1;
            double exact = (double)(scales[si] + scales[si] * 3 * rank / N);
            double got = (double)snap(c).sample_rtt_ns;
            if (fabs(got - exact) > 0.03 * exact)
                fail_msg("q=%g scale=%llu: got %.0f, exact %.0f", qs[qi],
                         (unsigned long long)scales[si], got, exact);
            sharp_ac_destroy(c);
        }
    }
}

typedef Sharp__Extensions__Filters__Http__AdaptiveConcurrency__V1__AimdControllerConfig apb_t;

static void test_aimd_config_from_proto(void **state)
{
    (void)state;
    sharp_aimd_config_t a;
    char err[256] = "";
    assert_int_equal(sharp_aimd_config_from_proto(NULL, &a, err, sizeof err), 0);
    assert_int_equal(a.initial_limit, 20);
    assert_int_equal(a.min_limit, 3);
    assert_int_equal(a.max_limit, 1000);
    assert_int_equal(a.update_interval_ns, MS(100));
    assert_true(a.sample_aggregate_percentile == 0.5);
    assert_true(a.latency_tolerance == 1.5);
    assert_true(a.decrease_ratio == 0.9);
    assert_int_equal(a.increase_step, 1);
    assert_int_equal(a.baseline_half_life_ns, SEC(30));
    assert_int_equal(a.min_samples, 10);
    assert_true(a.timeout_is_drop && a.overload_is_drop && !a.error_is_drop && a.slow_start);

    apb_t pb =
        SHARP__EXTENSIONS__FILTERS__HTTP__ADAPTIVE_CONCURRENCY__V1__AIMD_CONTROLLER_CONFIG__INIT;
    Google__Protobuf__UInt32Value init = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, minl = init,
                                  maxl = init;
    Google__Protobuf__DoubleValue tol = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT, ratio = tol;
    Google__Protobuf__BoolValue f = GOOGLE__PROTOBUF__BOOL_VALUE__INIT, t = f;
    Google__Protobuf__Duration iv = GOOGLE__PROTOBUF__DURATION__INIT;
    Envoy__Type__V3__Percent pct = ENVOY__TYPE__V3__PERCENT__INIT;
    init.value = 5000;
    minl.value = 10;
    maxl.value = 200;
    tol.value = 2.0;
    ratio.value = 0.5;
    t.value = true;
    iv.nanos = 250000000;
    pct.value = 90;
    pb.initial_limit = &init;
    pb.min_limit = &minl;
    pb.max_limit = &maxl;
    pb.latency_tolerance = &tol;
    pb.decrease_ratio = &ratio;
    pb.update_interval = &iv;
    pb.sample_aggregate_percentile = &pct;
    pb.timeout_is_drop = &f;
    pb.error_is_drop = &t;
    pb.slow_start = &f;
    assert_int_equal(sharp_aimd_config_from_proto(&pb, &a, err, sizeof err), 0);
    assert_int_equal(a.initial_limit, 200); /* clamped */
    assert_int_equal(a.min_limit, 10);
    assert_int_equal(a.update_interval_ns, MS(250));
    assert_true(fabs(a.sample_aggregate_percentile - 0.9) < 1e-12);
    assert_true(a.latency_tolerance == 2.0 && a.decrease_ratio == 0.5);
    assert_true(!a.timeout_is_drop && a.overload_is_drop && a.error_is_drop && !a.slow_start);

    struct {
        double tol, ratio;
        uint32_t minl, maxl;
        const char *needle;
    } bad[] = {
        {1.0, 0.9, 3, 10, "latency_tolerance"}, {NAN, 0.9, 3, 10, "latency_tolerance"},
        {1.5, 1.0, 3, 10, "decrease_ratio"},    {1.5, 0.0, 3, 10, "decrease_ratio"},
        {1.5, 0.9, 0, 10, "min_limit"},         {1.5, 0.9, 11, 10, "max_limit"},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(bad); i++) {
        tol.value = bad[i].tol;
        ratio.value = bad[i].ratio;
        minl.value = bad[i].minl;
        maxl.value = bad[i].maxl;
        assert_int_equal(sharp_aimd_config_from_proto(&pb, &a, err, sizeof err), -1);
        if (!strstr(err, bad[i].needle) || !strstr(err, "aimd_controller_config."))
            fail_msg("case %zu: \"%s\"", i, err);
    }
    tol.value = 1.5;
    ratio.value = 0.9;
    minl.value = 3;
    iv.seconds = -1;
    assert_int_equal(sharp_aimd_config_from_proto(&pb, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "aimd_controller_config.update_interval"));
    iv.seconds = 0;
    pct.value = 150;
    assert_int_equal(sharp_aimd_config_from_proto(&pb, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "sample_aggregate_percentile"));

    sharp_aimd_config_t b = acfg();
    b.min_samples = 0;
    assert_null(sharp_ac_aimd_create(&b, 1, NULL, NULL, 1));
}

/* One AIMD window: n requests in batches of `width`, then the window ends. */
static void awin(sharp_ac_controller_t *c, fake_clock_t *clk, unsigned width, unsigned n,
                 uint64_t latency, sharp_ac_outcome_t outcome)
{
    batches(c, width, n, latency, outcome);
    advance(c, clk, MS(100));
}

static void test_aimd_increase_when_used(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_aimd_config_t cfg = acfg();
    sharp_ac_controller_t *c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    sharp_ac_snapshot_t s = snap(c);
    assert_int_equal(s.kind, SHARP_AC_AIMD);
    assert_int_equal(s.concurrency_limit, 20);
    assert_false(s.min_rtt_calculation_active);

    awin(c, &clk, 5, 40, MS(10), SHARP_AC_OK); /* 5 of 20: not in use */
    s = snap(c);
    assert_int_equal(s.concurrency_limit, 20);
    assert_int_equal(s.min_rtt_msecs, 10);
    assert_int_equal(s.windows, 1);
    awin(c, &clk, 9, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 20);
    awin(c, &clk, 10, 40, MS(10), SHARP_AC_OK); /* half the limit: in use */
    assert_int_equal(limit_of(c), 21);
    awin(c, &clk, 21, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 22);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK); /* rejections: in use */
    assert_int_equal(limit_of(c), 23);
    awin(c, &clk, 3, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 23);
    assert_false(snap(c).min_rtt_calculation_active);

    /* A window with fewer than min_samples latencies is extended, and keeps
     * its highest in-flight (12 of 23: in use). */
    uint64_t st[12];
    for (int i = 0; i < 12; i++)
        assert_true(sharp_ac_try_acquire(c, 0, &st[i]));
    for (int i = 0; i < 12; i++)
        sharp_ac_release(c, 0, st[i], MS(10), SHARP_AC_OK, i < 9);
    advance(c, &clk, MS(100));
    assert_int_equal(limit_of(c), 23);
    awin(c, &clk, 1, 1, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 24);
    sharp_ac_destroy(c);

    /* Slow start doubles until the first decrease; max_limit caps it. */
    cfg.slow_start = true;
    cfg.max_limit = 100;
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 20, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 40);
    awin(c, &clk, 40, 80, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 80);
    awin(c, &clk, 80, 160, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 100);
    awin(c, &clk, 100, 200, MS(20), SHARP_AC_OK); /* breach */
    assert_int_equal(limit_of(c), 90);
    awin(c, &clk, 90, 180, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 91);
    sharp_ac_destroy(c);
}

static void test_aimd_decrease_on_breach(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_aimd_config_t cfg = acfg();
    sharp_ac_controller_t *c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 20, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 21);
    /* Within tolerance (1.5x): still an increase. */
    awin(c, &clk, 21, 40, MS(14), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 22);
    /* Latency that follows concurrency (queueing): one decrease per window. */
    awin(c, &clk, 22, 44, MS(22), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 19);
    awin(c, &clk, 19, 38, MS(19), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 17);
    awin(c, &clk, 17, 34, MS(17), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 15);
    awin(c, &clk, 15, 30, MS(15), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 16);
    sharp_ac_snapshot_t s = snap(c);
    assert_int_equal(s.min_rtt_msecs, 10); /* the baseline did not move */
    /* A breach while the limit is not in use does not decrease. */
    awin(c, &clk, 4, 40, MS(40), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 16);
    /* The gradient-like gauge: 1000 * 1.5 * baseline / latency. */
    s = snap(c);
    assert_true(s.gradient >= 360 && s.gradient <= 390);
    /* Repeated breaches stop at min_limit. */
    for (int i = 0; i < 40; i++) {
        uint32_t l = limit_of(c);
        awin(c, &clk, l, 4 * l + 10, MS(10) * l, SHARP_AC_OK);
    }
    assert_int_equal(limit_of(c), 3);
    sharp_ac_destroy(c);
}

static void test_aimd_decrease_on_drops(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_aimd_config_t cfg = acfg();
    sharp_ac_controller_t *c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 20, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 21);
    serial(c, 1, SEC(15), SHARP_AC_TIMEOUT);
    awin(c, &clk, 21, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 18);
    serial(c, 1, MS(1), SHARP_AC_OVERLOAD);
    awin(c, &clk, 2, 40, MS(10), SHARP_AC_OK); /* even when not in use */
    assert_int_equal(limit_of(c), 16);
    /* A drop closes a window that has no latencies at all. */
    serial(c, 1, MS(1), SHARP_AC_OVERLOAD);
    advance(c, &clk, MS(100));
    assert_int_equal(limit_of(c), 14);
    /* Other errors are not drops by default, and their (fast) latencies do
     * not enter the baseline. */
    serial(c, 50, US(100), SHARP_AC_ERROR);
    awin(c, &clk, 14, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 15);
    assert_int_equal(snap(c).min_rtt_msecs, 10);
    sharp_ac_destroy(c);

    cfg.error_is_drop = true;
    cfg.timeout_is_drop = false;
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 20, 40, MS(10), SHARP_AC_OK);
    serial(c, 1, MS(1), SHARP_AC_ERROR);
    awin(c, &clk, 21, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 18);
    serial(c, 1, SEC(15), SHARP_AC_TIMEOUT);
    awin(c, &clk, 18, 40, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 19);
    sharp_ac_destroy(c);
}

/* Baseline: follows a permanent increase over half-lives (limit not in
 * use), not a transient spike. */
static void test_aimd_baseline(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_aimd_config_t cfg = acfg();
    sharp_ac_controller_t *c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 2, 20, MS(10), SHARP_AC_OK);
    assert_int_equal(snap(c).min_rtt_msecs, 10);

    /* A 1 s spike to 40 ms moves the baseline by a few percent... */
    for (int i = 0; i < 10; i++)
        awin(c, &clk, 2, 20, MS(40), SHARP_AC_OK);
    sharp_ac_snapshot_t s = snap(c);
    assert_true(s.min_rtt_ns > MS(10) && s.min_rtt_ns < MS(11));
    assert_int_equal(s.concurrency_limit, 20);
    /* ...and the next normal window takes it back. */
    awin(c, &clk, 2, 20, MS(10), SHARP_AC_OK);
    assert_true(snap(c).min_rtt_ns <= MS(10) * 1.02);

    /* A permanent doubling: half the gap after one half-life (30 s), nearly
     * all of it after five; the limit stays. */
    uint64_t b0 = snap(c).min_rtt_ns;
    for (int i = 0; i < 300; i++)
        awin(c, &clk, 2, 20, MS(20), SHARP_AC_OK);
    double mid = (double)b0 + (MS(20) * 1.01 - (double)b0) / 2;
    s = snap(c);
    assert_true(fabs((double)s.min_rtt_ns - mid) < 0.03 * mid);
    for (int i = 0; i < 1200; i++)
        awin(c, &clk, 2, 20, MS(20), SHARP_AC_OK);
    s = snap(c);
    assert_true(s.min_rtt_ns > MS(19) && s.min_rtt_ns < MS(21));
    assert_int_equal(s.concurrency_limit, 20);
    /* Once the baseline has caught up, in-use windows increase again. */
    awin(c, &clk, 20, 40, MS(20), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 21);
    sharp_ac_destroy(c);
}

/* Runs windows at `lat` (all in use) until the baseline becomes lat; returns
 * how many it took, 0 if not within `max`. */
static int slow_until_rebase(sharp_ac_controller_t *c, fake_clock_t *clk, uint64_t lat, int max)
{
    for (int i = 1; i <= max; i++) {
        awin(c, clk, 30, 60, lat, SHARP_AC_OK);
        if (snap(c).min_rtt_msecs == lat / 1000000) return i;
    }
    return 0;
}

/* The service gets slower under load: latency stops following concurrency.
 * The run's first breach is not a reference, one window of evidence holds
 * the limit and the second in a row resets the baseline. */
static void test_aimd_rebase(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)};
    sharp_aimd_config_t cfg = acfg();
    sharp_ac_controller_t *c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 21);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK); /* first breach: 21 in flight */
    assert_int_equal(limit_of(c), 18);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK); /* 16 <= 0.85 * 21, but 21 was the first */
    assert_int_equal(limit_of(c), 16);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK); /* 16 > 0.85 * 18 */
    assert_int_equal(limit_of(c), 14);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK); /* 14 <= 0.85 * 18: evidence, hold */
    assert_int_equal(limit_of(c), 14);
    assert_int_equal(snap(c).min_rtt_msecs, 10);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK); /* again: rebase */
    assert_int_equal(limit_of(c), 14);
    assert_int_equal(snap(c).min_rtt_msecs, 25);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK);
    assert_int_equal(limit_of(c), 15);
    /* The service recovers: a window within tolerance of the baseline the
     * rebase replaced (10 ms) brings that baseline back, even though its own
     * latency still includes some queueing. */
    awin(c, &clk, 30, 60, MS(14), SHARP_AC_OK);
    assert_int_equal(snap(c).min_rtt_msecs, 10);
    assert_int_equal(limit_of(c), 16);
    sharp_ac_destroy(c);

    /* Evidence that is not repeated does not rebase: latency that follows
     * concurrency again (a noisy window) resets the count. */
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK);
    for (int i = 0; i < 3; i++)
        awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK);
    awin(c, &clk, 30, 60, MS(25), SHARP_AC_OK); /* evidence, hold at 14 */
    assert_int_equal(limit_of(c), 14);
    awin(c, &clk, 30, 60, MS(20), SHARP_AC_OK); /* 20 < 0.95 * 25: it follows */
    assert_int_equal(limit_of(c), 12);
    assert_int_equal(snap(c).min_rtt_msecs, 10);
    sharp_ac_destroy(c);

    /* A partial recovery (lat beyond tolerance of the old baseline) only
     * lowers the baseline to what it sees. */
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK);
    assert_int_equal(slow_until_rebase(c, &clk, MS(25), 8), 5);
    awin(c, &clk, 30, 60, MS(17), SHARP_AC_OK);
    assert_true(fabs((double)snap(c).min_rtt_ns - MS(17)) < 0.02 * MS(17));
    sharp_ac_destroy(c);

    /* Recovery under load: after the rebase the loaded latency rises to
     * 30 ms as the limit grows. When the service recovers, the same load
     * sees 17 ms, still beyond tolerance of the old 10 ms baseline; scaled by
     * the drop (17/~29) it is within it, and the old baseline returns rather
     * than the queueing-laden 17 ms. */
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK);
    assert_int_equal(slow_until_rebase(c, &clk, MS(25), 8), 5);
    for (int i = 0; i < 8; i++)
        awin(c, &clk, 30, 60, MS(30), SHARP_AC_OK);
    assert_int_equal(snap(c).min_rtt_msecs, 25);
    awin(c, &clk, 30, 60, MS(17), SHARP_AC_OK);
    assert_int_equal(snap(c).min_rtt_msecs, 10);
    sharp_ac_destroy(c);
    /* A window only slightly below the rebased baseline is noise, not a
     * recovery: it lowers the baseline to itself. */
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK);
    assert_int_equal(slow_until_rebase(c, &clk, MS(25), 8), 5);
    for (int i = 0; i < 8; i++)
        awin(c, &clk, 30, 60, MS(30), SHARP_AC_OK);
    awin(c, &clk, 30, 60, MS(23), SHARP_AC_OK);
    assert_true(fabs((double)snap(c).min_rtt_ns - MS(23)) < 0.02 * MS(23));
    sharp_ac_destroy(c);

    /* Capacity halves (latency follows concurrency all the way down): no
     * rebase, the limit keeps falling until latency is within tolerance. */
    c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &clk, 7);
    awin(c, &clk, 30, 60, MS(10), SHARP_AC_OK); /* limit 21, 10 ms: 1 ms per request in flight beyond ~10 */
    for (int i = 0; i < 15; i++) {
        uint32_t l = limit_of(c);
        uint64_t lat = MS(10) + (l > 10 ? (uint64_t)(l - 10) * MS(2) : 0) + MS(5);
        awin(c, &clk, 30, 60, lat, SHARP_AC_OK);
    }
    assert_int_equal(snap(c).min_rtt_msecs, 10);
    assert_true(limit_of(c) <= 11);
    sharp_ac_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient_config_from_proto),
        cmocka_unit_test(test_gradient_initial_min_rtt),
        cmocka_unit_test(test_gradient_limit_formula),
        cmocka_unit_test(test_gradient_clamps),
        cmocka_unit_test(test_gradient_old_samples_ignored),
        cmocka_unit_test(test_gradient_jitter_bounds),
        cmocka_unit_test(test_gradient_min_limit_retrigger),
        cmocka_unit_test(test_gradient_unpinned),
        cmocka_unit_test(test_gradient_percentile_accuracy),
        cmocka_unit_test(test_aimd_config_from_proto),
        cmocka_unit_test(test_aimd_increase_when_used),
        cmocka_unit_test(test_aimd_decrease_on_breach),
        cmocka_unit_test(test_aimd_decrease_on_drops),
        cmocka_unit_test(test_aimd_baseline),
        cmocka_unit_test(test_aimd_rebase),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

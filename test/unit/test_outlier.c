/* test_outlier.c: outlier detection driven by a fake clock: every detector,
 * max_ejection_percent, ejection time growth and cap, un-ejection, the
 * enforcing roll, the half-open breaker with the load balancer, and config
 * validation. The main-thread functions take the time as an argument; no
 * loop runs here (the detector is never started, so workers' wake-ups are
 * replaced by explicit sharp_outlier_process_pending calls). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <math.h>

#include "log.h"
#include "upstream/lb.h"
#include "upstream/outlier.h"

#include "config/types.h"
#include "kernel/kernel.h"

#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"
#include "sharp/extensions/outlier_detection_monitors/kernel/v1/kernel.pb-c.h"
#include "sharp/extensions/outlier_detection_monitors/latency/v1/latency.pb-c.h"

#define MAXH 12

typedef struct {
    sharp_cluster_t c;
    sharp_host_t h[MAXH];
    sharp_host_t *ptr[MAXH];
    sharp_stats_t *stats;
    sharp_outlier_t *od;
} fixture_t;

/* A cluster "c" of n hosts with a detector configured by cfg (NULL: Envoy's
 * defaults with max_ejection_percent 100, so single ejections are allowed). */
static fixture_t *setup(uint32_t n, const sharp_outlier_config_t *cfg)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->c.name = f->c.stat_name = "c";
    f->c.nhosts = n;
    f->c.hosts = f->ptr;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(f->h[i].address, sizeof f->h[i].address, "10.0.0.%u:80", i + 1);
        f->h[i].weight = 1;
        f->h[i].index = i;
        f->ptr[i] = &f->h[i];
    }
    f->stats = sharp_stats_create(1);
    sharp_outlier_config_t d;
    if (!cfg) {
        sharp_outlier_config_defaults(&d);
        d.max_ejection_percent = 100;
        cfg = &d;
    }
    f->od = sharp_outlier_create(&f->c, cfg, f->stats, 42);
    return f;
}

static void teardown(fixture_t *f)
{
    for (uint32_t i = 0; i < MAXH; i++) sharp_diag_host_destroy(&f->h[i]);
    sharp_outlier_free(f->od);
    sharp_stats_destroy(f->stats);
    free(f);
}

static uint64_t counter(fixture_t *f, const char *suffix)
{
    char name[256];
    snprintf(name, sizeof name, "cluster.c.outlier_detection.%s", suffix);
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    if (sharp_stats_find(f->stats, name, &id, &kind) != 0) fail_msg("no stat %s", name);
    assert_int_equal(kind, SHARP_STAT_COUNTER);
    return sharp_stats_counter_value(f->stats, id);
}

static int64_t gauge(fixture_t *f, const char *suffix)
{
    char name[256];
    snprintf(name, sizeof name, "cluster.c.outlier_detection.%s", suffix);
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    if (sharp_stats_find(f->stats, name, &id, &kind) != 0) fail_msg("no stat %s", name);
    assert_int_equal(kind, SHARP_STAT_GAUGE);
    return sharp_stats_gauge_value(f->stats, id);
}

static bool ejected(fixture_t *f, uint32_t i)
{
    return (atomic_load(&f->h[i].health_flags) & SHARP_HOST_FAILED_OUTLIER) != 0;
}

static sharp_host_breaker_t breaker(fixture_t *f, uint32_t i)
{
    return sharp_outlier_breaker(&f->h[i]);
}

static void put_n(fixture_t *f, uint32_t i, uint32_t code, int n)
{
    for (int k = 0; k < n; k++)
        sharp_outlier_put_http(&f->c, &f->h[i], code);
}

/* total results on host i, `ok` of them successes, spread evenly */
static void put_mix(fixture_t *f, uint32_t i, int total, int ok)
{
    for (int k = 0; k < total; k++) {
        bool success = (k + 1) * ok / total > k * ok / total;
        sharp_outlier_put_http(&f->c, &f->h[i], success ? 200 : 500);
    }
}

/* Defaults for the interval detectors' tests: single ejections allowed and
 * the consecutive detectors out of the way. */
static sharp_outlier_config_t rate_cfg(void)
{
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.consecutive_5xx = cfg.consecutive_gateway_failure = cfg.consecutive_local_origin_failure =
        100000;
    return cfg;
}

/* ---- consecutive detectors ---- */

static void test_consecutive_5xx_trip_and_reset(void **state)
{
    (void)state;
    fixture_t *f = setup(4, NULL);
    put_n(f, 0, 503, 4);
    put_n(f, 0, 200, 1); /* a success resets the run */
    put_n(f, 0, 500, 4);
    sharp_outlier_process_pending(f->od, 1000);
    assert_false(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 0);
    put_n(f, 0, 500, 1);         /* the fifth in a row */
    assert_false(ejected(f, 0)); /* the decision is the main thread's */
    sharp_outlier_process_pending(f->od, 1000);
    assert_true(ejected(f, 0));
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_OPEN);
    assert_false(ejected(f, 1));
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 1);
    assert_int_equal(counter(f, "ejections_enforced_consecutive_5xx"), 1);
    assert_int_equal(counter(f, "ejections_enforced_total"), 1);
    assert_int_equal(counter(f, "ejections_total"), 1);
    assert_int_equal(counter(f, "ejections_consecutive_5xx"), 1);
    assert_int_equal(counter(f, "ejections_overflow"), 0);
    assert_int_equal(gauge(f, "ejections_active"), 1);
    /* more 5xx on an ejected host trip nothing new */
    put_n(f, 0, 500, 10);
    sharp_outlier_process_pending(f->od, 1001);
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 1);
    /* 4xx is a success for the detector */
    put_n(f, 1, 500, 4);
    put_n(f, 1, 404, 1);
    put_n(f, 1, 500, 4);
    sharp_outlier_process_pending(f->od, 1002);
    assert_false(ejected(f, 1));
    teardown(f);
}

static void test_gateway_failure_only_502_503_504(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.consecutive_5xx = 1000; /* keep the 5xx detector out of the way */
    fixture_t *f = setup(4, &cfg);
    /* default enforcing_consecutive_gateway_failure is 0: detected only */
    put_n(f, 0, 502, 2);
    put_n(f, 0, 503, 2);
    put_n(f, 0, 504, 1);
    sharp_outlier_process_pending(f->od, 10);
    assert_false(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_detected_consecutive_gateway_failure"), 1);
    assert_int_equal(counter(f, "ejections_enforced_consecutive_gateway_failure"), 0);
    assert_int_equal(counter(f, "ejections_total"), 0); /* only 5xx and success rate count there */
    teardown(f);

    cfg.enforcing[SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = 100;
    f = setup(4, &cfg);
    /* 500 is a 5xx but not a gateway failure: it breaks the run */
    put_n(f, 0, 503, 4);
    put_n(f, 0, 500, 1);
    put_n(f, 0, 504, 4);
    sharp_outlier_process_pending(f->od, 10);
    assert_false(ejected(f, 0));
    put_n(f, 0, 502, 1);
    sharp_outlier_process_pending(f->od, 10);
    assert_true(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_enforced_consecutive_gateway_failure"), 1);
    assert_int_equal(counter(f, "ejections_enforced_total"), 1);
    /* a 200 resets the gateway run too */
    put_n(f, 1, 503, 4);
    put_n(f, 1, 200, 1);
    put_n(f, 1, 503, 4);
    sharp_outlier_process_pending(f->od, 10);
    assert_false(ejected(f, 1));
    teardown(f);
}

static void test_local_origin_not_split(void **state)
{
    (void)state;
    fixture_t *f = setup(4, NULL);
    sharp_cluster_t *c = &f->c;
    /* connect failures and timeouts count as 503 and 504 */
    sharp_outlier_put_local(c, &f->h[0], SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
    sharp_outlier_put_local(c, &f->h[0], SHARP_OUTLIER_LOCAL_TIMEOUT);
    /* a connection alone is nothing: it does not reset the run */
    sharp_outlier_put_local(c, &f->h[0], SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS);
    sharp_outlier_put_local(c, &f->h[0], SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
    sharp_outlier_put_local(c, &f->h[0], SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
    put_n(f, 0, 500, 1);
    sharp_outlier_process_pending(f->od, 5);
    assert_true(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_enforced_consecutive_5xx"), 1);
    assert_int_equal(counter(f, "ejections_detected_consecutive_local_origin_failure"), 0);
    /* a final success is a 200: it resets the run */
    for (int k = 0; k < 4; k++)
        sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_TIMEOUT);
    sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS_FINAL);
    for (int k = 0; k < 4; k++)
        sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_TIMEOUT);
    sharp_outlier_process_pending(f->od, 5);
    assert_false(ejected(f, 1));
    /* local results land in the external success-rate bucket */
    uint64_t b = atomic_load(&f->od->hosts[1]->bucket[SHARP_OUTLIER_EXTERNAL]);
    assert_int_equal(b >> 32, 9);
    assert_int_equal(b & 0xffffffffu, 1);
    assert_int_equal(atomic_load(&f->od->hosts[1]->bucket[SHARP_OUTLIER_LOCAL]), 0);
    teardown(f);
}

static void test_local_origin_split(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.split_external_local_origin_errors = true;
    cfg.consecutive_local_origin_failure = 3;
    fixture_t *f = setup(4, &cfg);
    sharp_cluster_t *c = &f->c;
    /* local failures do not touch the 5xx detector ... */
    for (int k = 0; k < 4; k++)
        sharp_outlier_put_local(c, &f->h[0], SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
    /* ... but trip their own at 3 (the fourth goes past it) */
    sharp_outlier_process_pending(f->od, 5);
    assert_true(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_detected_consecutive_local_origin_failure"), 1);
    assert_int_equal(counter(f, "ejections_enforced_consecutive_local_origin_failure"), 1);
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 0);
    assert_int_equal(counter(f, "ejections_total"), 0);
    /* a connection (pool ready) resets the local run */
    sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_TIMEOUT);
    sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_TIMEOUT);
    sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS);
    sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_TIMEOUT);
    sharp_outlier_put_local(c, &f->h[1], SHARP_OUTLIER_LOCAL_TIMEOUT);
    /* HTTP 5xx stays external: 4 of them plus local events are no trip */
    put_n(f, 1, 503, 4);
    sharp_outlier_process_pending(f->od, 5);
    assert_false(ejected(f, 1));
    put_n(f, 1, 503, 1);
    sharp_outlier_process_pending(f->od, 5);
    assert_true(ejected(f, 1));
    assert_int_equal(counter(f, "ejections_enforced_consecutive_5xx"), 1);
    /* buckets: local events in the local monitor only */
    uint64_t lb = atomic_load(&f->od->hosts[1]->bucket[SHARP_OUTLIER_LOCAL]);
    uint64_t eb = atomic_load(&f->od->hosts[1]->bucket[SHARP_OUTLIER_EXTERNAL]);
    assert_int_equal(lb >> 32, 5);
    assert_int_equal(lb & 0xffffffffu, 1);
    assert_int_equal(eb >> 32, 5);
    assert_int_equal(eb & 0xffffffffu, 0);
    teardown(f);
}

/* ---- success rate and failure percentage ---- */

static void test_success_rate_threshold_math(void **state)
{
    (void)state;
    /* Envoy's documented example: {50, 100, 100, 100, 100}: mean 90,
     * stdev 20, threshold with 1.9: 52. */
    double rates[] = {50, 100, 100, 100, 100}, mean, thr;
    sharp_outlier_success_rate_threshold(rates, 5, 1.9, &mean, &thr);
    assert_true(fabs(mean - 90) < 1e-9);
    assert_true(fabs(thr - 52) < 1e-9);
    sharp_outlier_success_rate_threshold(rates, 5, 1.0, &mean, &thr);
    assert_true(fabs(thr - 70) < 1e-9);
    double same[] = {80, 80, 80};
    sharp_outlier_success_rate_threshold(same, 3, 1.9, &mean, &thr);
    assert_true(fabs(thr - 80) < 1e-9); /* no spread: nobody is below */
}

static void test_success_rate_ejection(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = rate_cfg();
    fixture_t *f = setup(6, &cfg);
    put_mix(f, 0, 100, 50);
    for (uint32_t i = 1; i < 5; i++)
        put_mix(f, i, 100, 100);
    put_mix(f, 5, 99, 0); /* below request_volume: not in the statistics */
    sharp_outlier_on_interval(f->od, 10000);
    assert_true(fabs(f->od->sr_average[SHARP_OUTLIER_EXTERNAL] - 90) < 1e-9);
    assert_true(fabs(f->od->sr_threshold[SHARP_OUTLIER_EXTERNAL] - 52) < 1e-9);
    assert_true(ejected(f, 0));
    for (uint32_t i = 1; i < 6; i++)
        assert_false(ejected(f, i));
    assert_int_equal(counter(f, "ejections_detected_success_rate"), 1);
    assert_int_equal(counter(f, "ejections_enforced_success_rate"), 1);
    assert_int_equal(counter(f, "ejections_success_rate"), 1);
    assert_int_equal(counter(f, "ejections_total"), 1);
    /* per-host success rate of the interval, as /clusters shows it: host 5
     * had the failure-percentage volume (50), so it has one */
    assert_true(fabs(sharp_outlier_success_rate(&f->c, &f->h[0], SHARP_OUTLIER_EXTERNAL) - 50) <
                1e-9);
    assert_true(fabs(sharp_outlier_success_rate(&f->c, &f->h[1], SHARP_OUTLIER_EXTERNAL) - 100) <
                1e-9);
    assert_true(fabs(sharp_outlier_success_rate(&f->c, &f->h[5], SHARP_OUTLIER_EXTERNAL) - 0) <
                1e-9);
    assert_true(sharp_outlier_success_rate(&f->c, &f->h[1], SHARP_OUTLIER_LOCAL) == -1);
    /* the failure-percentage detector saw host 5 at 100% failures, but its
     * default enforcing is 0 */
    assert_int_equal(counter(f, "ejections_detected_failure_percentage"), 1);
    assert_int_equal(counter(f, "ejections_enforced_failure_percentage"), 0);
    assert_false(ejected(f, 5));
    /* next interval without traffic: nothing computed */
    sharp_outlier_on_interval(f->od, 20000);
    assert_true(f->od->sr_average[SHARP_OUTLIER_EXTERNAL] == -1);
    assert_true(sharp_outlier_success_rate(&f->c, &f->h[1], SHARP_OUTLIER_EXTERNAL) == -1);
    teardown(f);
}

static void test_success_rate_gating(void **state)
{
    (void)state;
    /* minimum_hosts: 4 hosts with volume < 5 */
    sharp_outlier_config_t cfg = rate_cfg();
    fixture_t *f = setup(4, &cfg);
    put_mix(f, 0, 200, 0);
    for (uint32_t i = 1; i < 4; i++)
        put_mix(f, i, 200, 200);
    sharp_outlier_on_interval(f->od, 10000);
    assert_true(f->od->sr_average[SHARP_OUTLIER_EXTERNAL] == -1);
    assert_false(ejected(f, 0));
    /* fewer hosts than both minimums: Envoy does not even record rates */
    assert_true(sharp_outlier_success_rate(&f->c, &f->h[0], SHARP_OUTLIER_EXTERNAL) == -1);
    teardown(f);

    /* request_volume: 6 hosts, only 4 with 100 requests */
    f = setup(6, &cfg);
    put_mix(f, 0, 100, 0);
    for (uint32_t i = 1; i < 4; i++)
        put_mix(f, i, 100, 100);
    put_mix(f, 4, 99, 99);
    put_mix(f, 5, 10, 10);
    sharp_outlier_on_interval(f->od, 10000);
    assert_true(f->od->sr_average[SHARP_OUTLIER_EXTERNAL] == -1);
    assert_int_equal(counter(f, "ejections_detected_success_rate"), 0);
    assert_true(fabs(sharp_outlier_success_rate(&f->c, &f->h[4], SHARP_OUTLIER_EXTERNAL) - 100) <
                1e-9);
    assert_true(sharp_outlier_success_rate(&f->c, &f->h[5], SHARP_OUTLIER_EXTERNAL) == -1);
    teardown(f);

    /* minimum_hosts 3 makes the same data sufficient; stdev factor 1.0 */
    cfg.success_rate_minimum_hosts = 3;
    cfg.success_rate_stdev_factor = 1000;
    f = setup(4, &cfg);
    put_mix(f, 0, 100, 40);
    for (uint32_t i = 1; i < 4; i++)
        put_mix(f, i, 100, 100);
    sharp_outlier_on_interval(f->od, 10000);
    /* mean 85, stdev sqrt(675) = 25.98, threshold 59.02 */
    assert_true(fabs(f->od->sr_threshold[SHARP_OUTLIER_EXTERNAL] - (85 - sqrt(675))) < 1e-9);
    assert_true(ejected(f, 0));
    teardown(f);
}

static void test_failure_percentage(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = rate_cfg();
    cfg.enforcing[SHARP_OUTLIER_SUCCESS_RATE] = 0;
    cfg.enforcing[SHARP_OUTLIER_FAILURE_PERCENTAGE] = 100;
    fixture_t *f = setup(6, &cfg);
    put_mix(f, 0, 60, 9);  /* 85% failures: at the threshold, ejected */
    put_mix(f, 1, 60, 10); /* 83.3%: kept */
    put_mix(f, 2, 49, 0);  /* below failure_percentage_request_volume */
    for (uint32_t i = 3; i < 6; i++)
        put_mix(f, i, 60, 60);
    sharp_outlier_on_interval(f->od, 10000);
    assert_true(ejected(f, 0));
    assert_false(ejected(f, 1));
    assert_false(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_detected_failure_percentage"), 1);
    assert_int_equal(counter(f, "ejections_enforced_failure_percentage"), 1);
    assert_int_equal(counter(f, "ejections_total"), 0);
    teardown(f);

    /* minimum hosts: only 4 hosts with the volume */
    f = setup(6, &cfg);
    put_mix(f, 0, 60, 0);
    for (uint32_t i = 1; i < 4; i++)
        put_mix(f, i, 60, 60);
    sharp_outlier_on_interval(f->od, 10000);
    assert_false(ejected(f, 0));
    teardown(f);

    /* local origin variant with split */
    cfg.split_external_local_origin_errors = true;
    cfg.enforcing[SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = 100;
    f = setup(5, &cfg);
    for (uint32_t i = 0; i < 5; i++)
        for (int k = 0; k < 50; k++)
            sharp_outlier_put_local(&f->c, &f->h[i],
                                    i == 2 ? SHARP_OUTLIER_LOCAL_CONNECT_FAILED
                                           : SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS);
    sharp_outlier_on_interval(f->od, 10000);
    assert_true(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_enforced_local_origin_failure_percentage"), 1);
    assert_true(fabs(sharp_outlier_success_rate(&f->c, &f->h[2], SHARP_OUTLIER_LOCAL) - 0) < 1e-9);
    assert_true(sharp_outlier_success_rate(&f->c, &f->h[2], SHARP_OUTLIER_EXTERNAL) == -1);
    teardown(f);
}

static void test_local_origin_success_rate(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = rate_cfg();
    cfg.split_external_local_origin_errors = true;
    fixture_t *f = setup(5, &cfg);
    for (uint32_t i = 0; i < 5; i++)
        for (int k = 0; k < 100; k++)
            sharp_outlier_put_local(&f->c, &f->h[i],
                                    i == 3 && k % 2 ? SHARP_OUTLIER_LOCAL_TIMEOUT
                                                    : SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS);
    sharp_outlier_on_interval(f->od, 10000);
    assert_true(ejected(f, 3));
    assert_true(fabs(f->od->sr_average[SHARP_OUTLIER_LOCAL] - 90) < 1e-9);
    assert_true(f->od->sr_average[SHARP_OUTLIER_EXTERNAL] == -1);
    assert_int_equal(counter(f, "ejections_detected_local_origin_success_rate"), 1);
    assert_int_equal(counter(f, "ejections_enforced_local_origin_success_rate"), 1);
    assert_int_equal(counter(f, "ejections_success_rate"),
                     1); /* Envoy's deprecated counter counts both */
    assert_int_equal(counter(f, "ejections_total"), 0);
    teardown(f);
}

/* ---- limits, times, enforcement ---- */

static void test_max_ejection_percent(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    /* Envoy counts the host to eject: 1 of 3 is 33% > 10%: refused */
    assert_false(sharp_outlier_may_eject(&cfg, 0, 3));
    assert_true(sharp_outlier_may_eject(&cfg, 0, 10));
    assert_false(sharp_outlier_may_eject(&cfg, 1, 10));
    cfg.always_eject_one_host = true;
    assert_true(sharp_outlier_may_eject(&cfg, 0, 3));
    assert_false(sharp_outlier_may_eject(&cfg, 1, 3));
    cfg.always_eject_one_host = false;
    cfg.max_ejection_percent = 50;
    assert_true(sharp_outlier_may_eject(&cfg, 0, 3));
    assert_false(sharp_outlier_may_eject(&cfg, 1, 3));
    assert_true(sharp_outlier_may_eject(&cfg, 1, 4));
    cfg.max_ejection_percent = 0;
    assert_false(sharp_outlier_may_eject(&cfg, 0, 1));

    sharp_outlier_config_defaults(&cfg);
    fixture_t *f = setup(3, &cfg);
    put_n(f, 0, 500, 5);
    sharp_outlier_process_pending(f->od, 1);
    assert_false(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 1);
    assert_int_equal(counter(f, "ejections_overflow"), 1);
    assert_int_equal(counter(f, "ejections_enforced_total"), 0);
    /* the counter was reset: a new bout is needed */
    put_n(f, 0, 500, 4);
    sharp_outlier_process_pending(f->od, 2);
    assert_int_equal(counter(f, "ejections_overflow"), 1);
    teardown(f);

    cfg.max_ejection_percent = 50;
    f = setup(3, &cfg);
    put_n(f, 0, 500, 5);
    put_n(f, 1, 500, 5);
    sharp_outlier_process_pending(f->od, 1);
    assert_true(ejected(f, 0));
    assert_false(ejected(f, 1));
    assert_int_equal(counter(f, "ejections_overflow"), 1);
    assert_int_equal(gauge(f, "ejections_active"), 1);
    teardown(f);
}

static void test_enforcing_0_and_100(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.enforcing[SHARP_OUTLIER_CONSECUTIVE_5XX] = 0;
    fixture_t *f = setup(2, &cfg);
    for (int round = 0; round < 20; round++) {
        put_n(f, 0, 500, 5);
        sharp_outlier_process_pending(f->od, (uint64_t)round);
    }
    assert_false(ejected(f, 0));
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 20);
    assert_int_equal(counter(f, "ejections_enforced_consecutive_5xx"), 0);
    assert_int_equal(counter(f, "ejections_total"), 20); /* Envoy counts before the roll */
    teardown(f);

    cfg.enforcing[SHARP_OUTLIER_CONSECUTIVE_5XX] = 100;
    f = setup(2, &cfg);
    put_n(f, 0, 500, 5);
    sharp_outlier_process_pending(f->od, 0);
    assert_true(ejected(f, 0));
    teardown(f);

    /* 50: roughly half of many detections are enforced */
    cfg.enforcing[SHARP_OUTLIER_CONSECUTIVE_5XX] = 50;
    cfg.base_ejection_time_ms = 1;
    cfg.max_ejection_time_ms = 1;
    f = setup(2, &cfg);
    uint64_t now = 0;
    for (int round = 0; round < 400; round++) {
        put_n(f, 0, 500, 5);
        sharp_outlier_process_pending(f->od, now);
        now += 10;
        sharp_outlier_on_interval(f->od, now); /* un-eject (half-open) */
        put_n(f, 0, 200, 1);                   /* probe passes: closed */
        sharp_outlier_process_pending(f->od, now);
    }
    uint64_t enforced = counter(f, "ejections_enforced_consecutive_5xx");
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 400);
    assert_true(enforced > 140 && enforced < 260);
    teardown(f);
}

static void test_ejection_time_growth_and_cap(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    assert_int_equal(sharp_outlier_ejection_ms(&cfg, 1, 0), 30000);
    assert_int_equal(sharp_outlier_ejection_ms(&cfg, 3, 0), 90000);
    assert_int_equal(sharp_outlier_ejection_ms(&cfg, 11, 0), 300000);
    assert_int_equal(sharp_outlier_ejection_ms(&cfg, 11, 7), 300007);

    cfg.max_ejection_percent = 100;
    cfg.interval_ms = 100;
    cfg.base_ejection_time_ms = 1000;
    cfg.max_ejection_time_ms = 3000;
    fixture_t *f = setup(2, &cfg);
    sharp_outlier_host_t *oh = f->od->hosts[0];
    uint64_t now = 0;
    /* every probe fails: 1000, 2000, 3000, 3000 (capped) */
    uint64_t expect[] = {1000, 2000, 3000, 3000, 3000};
    put_n(f, 0, 500, 5);
    sharp_outlier_process_pending(f->od, now);
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(expect); k++) {
        assert_true(ejected(f, 0));
        uint64_t start = now;
        /* still open one interval before the time is up */
        now = start + expect[k] - 100;
        sharp_outlier_on_interval(f->od, now);
        assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_OPEN);
        now = start + expect[k];
        sharp_outlier_on_interval(f->od, now);
        assert_false(ejected(f, 0));
        assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_HALF_OPEN);
        put_n(f, 0, 503, 1); /* the probe fails */
        assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_OPEN);
        sharp_outlier_process_pending(f->od, now);
    }
    /* the multiplier stops one step past the cap (Envoy: base * backoff <
     * max + base) */
    assert_int_equal(oh->backoff, 4);
    assert_int_equal(counter(f, "ejections_enforced_consecutive_5xx"), 6);
    teardown(f);
}

static void test_unejection_and_backoff_decrement(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.interval_ms = 100;
    cfg.base_ejection_time_ms = 1000;
    fixture_t *f = setup(3, &cfg);
    sharp_outlier_host_t *oh = f->od->hosts[1];
    put_n(f, 1, 500, 5);
    sharp_outlier_process_pending(f->od, 0);
    assert_int_equal(oh->backoff, 1);
    for (uint64_t t = 100; t < 1000; t += 100) {
        sharp_outlier_on_interval(f->od, t);
        assert_true(ejected(f, 1));
    }
    sharp_outlier_on_interval(f->od, 1000);
    assert_false(ejected(f, 1));
    assert_int_equal(breaker(f, 1), SHARP_HOST_BREAKER_HALF_OPEN);
    assert_int_equal(gauge(f, "ejections_active"), 0);
    assert_int_equal(gauge(f, "half_open_active"), 1);
    /* a half-open host is not forgiven: it has proved nothing */
    sharp_outlier_on_interval(f->od, 1100);
    sharp_outlier_on_interval(f->od, 1200);
    assert_int_equal(oh->backoff, 1);
    put_n(f, 1, 200, 1);
    assert_int_equal(breaker(f, 1), SHARP_HOST_BREAKER_CLOSED);
    sharp_outlier_process_pending(f->od, 1250);
    assert_int_equal(gauge(f, "half_open_active"), 0);
    /* closed and an interval past the un-ejection: one step forgiven */
    sharp_outlier_on_interval(f->od, 1300);
    assert_int_equal(oh->backoff, 0);
    /* the next ejection starts from the base again */
    put_n(f, 1, 500, 5);
    sharp_outlier_process_pending(f->od, 2000);
    assert_int_equal(oh->backoff, 1);
    sharp_outlier_on_interval(f->od, 3000);
    assert_int_equal(breaker(f, 1), SHARP_HOST_BREAKER_HALF_OPEN);
    teardown(f);
}

static void test_jitter(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.base_ejection_time_ms = 1000;
    cfg.max_ejection_time_jitter_ms = 500;
    fixture_t *f = setup(2, &cfg);
    bool some_jitter = false;
    uint64_t now = 0;
    for (int round = 0; round < 20; round++) {
        put_n(f, 0, 500, 5);
        sharp_outlier_process_pending(f->od, now);
        uint64_t j = f->od->hosts[0]->jitter_ms;
        assert_true(j <= 500);
        some_jitter |= j > 0;
        sharp_outlier_on_interval(f->od, now + 1000 * f->od->hosts[0]->backoff + j - 1);
        assert_true(ejected(f, 0));
        now += 1000 * f->od->hosts[0]->backoff + j;
        sharp_outlier_on_interval(f->od, now);
        assert_false(ejected(f, 0));
        put_n(f, 0, 200, 1);
        sharp_outlier_process_pending(f->od, now);
    }
    assert_true(some_jitter);
    teardown(f);
}

/* ---- the half-open breaker with the load balancer ---- */

static void half_open_fixture(fixture_t **fp, sharp_lb_t *lb)
{
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.interval_ms = 100;
    cfg.base_ejection_time_ms = 1000;
    fixture_t *f = setup(3, &cfg);
    sharp_lb_init(lb, SHARP_LB_ROUND_ROBIN, f->c.hosts, f->c.nhosts, 7);
    lb->panic_threshold = 0;
    put_n(f, 0, 500, 5);
    sharp_outlier_process_pending(f->od, 0);
    for (int k = 0; k < 30; k++)
        assert_ptr_not_equal(sharp_lb_choose(lb), &f->h[0]);
    sharp_outlier_on_interval(f->od, 1000);
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_HALF_OPEN);
    *fp = f;
}

static int picks_of(sharp_lb_t *lb, sharp_host_t *h, int n)
{
    int got = 0;
    for (int k = 0; k < n; k++)
        got += sharp_lb_choose(lb) == h;
    return got;
}

static void test_half_open_probe_success(void **state)
{
    (void)state;
    fixture_t *f;
    sharp_lb_t lb;
    half_open_fixture(&f, &lb);
    /* exactly one probe is admitted */
    assert_int_equal(picks_of(&lb, &f->h[0], 30), SHARP_OUTLIER_HALF_OPEN_PROBES);
    put_n(f, 0, 200, 1);
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_CLOSED);
    sharp_outlier_process_pending(f->od, 1050);
    assert_int_equal(gauge(f, "half_open_active"), 0);
    /* closed: full share again */
    assert_int_equal(picks_of(&lb, &f->h[0], 30), 10);
    assert_int_equal(counter(f, "ejections_enforced_total"), 1);
    sharp_lb_destroy(&lb);
    teardown(f);
}

static void test_half_open_probe_failure(void **state)
{
    (void)state;
    fixture_t *f;
    sharp_lb_t lb;
    half_open_fixture(&f, &lb);
    assert_int_equal(picks_of(&lb, &f->h[0], 30), 1);
    sharp_outlier_put_local(&f->c, &f->h[0], SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
    /* the worker opens it at once, before the main thread re-ejects it */
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_OPEN);
    assert_false(ejected(f, 0));
    sharp_outlier_on_interval(f->od, 1100); /* a refill must not admit an open host */
    assert_int_equal(picks_of(&lb, &f->h[0], 30), 0);
    assert_true(ejected(f, 0));
    assert_int_equal(f->od->hosts[0]->backoff, 2);
    assert_int_equal(counter(f, "ejections_enforced_consecutive_5xx"), 2);
    assert_int_equal(counter(f, "ejections_detected_consecutive_5xx"), 2);
    assert_int_equal(gauge(f, "ejections_active"), 1);
    assert_int_equal(gauge(f, "half_open_active"), 0);
    /* ejected for 2 x base from the re-ejection */
    sharp_outlier_on_interval(f->od, 3000);
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_OPEN);
    sharp_outlier_on_interval(f->od, 3100);
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_HALF_OPEN);
    sharp_lb_destroy(&lb);
    teardown(f);
}

static void test_half_open_stuck_probe(void **state)
{
    (void)state;
    fixture_t *f;
    sharp_lb_t lb;
    half_open_fixture(&f, &lb);
    /* the probe is taken and never reports (the client went away) */
    assert_int_equal(picks_of(&lb, &f->h[0], 30), 1);
    assert_int_equal(picks_of(&lb, &f->h[0], 30), 0);
    /* the next interval refills the budget */
    sharp_outlier_on_interval(f->od, 1100);
    assert_int_equal(picks_of(&lb, &f->h[0], 30), 1);
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_HALF_OPEN);
    /* a late result of a request sent while closed still decides */
    put_n(f, 0, 204, 1);
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_CLOSED);
    sharp_lb_destroy(&lb);
    teardown(f);
}

static void test_half_open_panic(void **state)
{
    (void)state;
    fixture_t *f;
    sharp_lb_t lb;
    half_open_fixture(&f, &lb);
    /* other hosts ejected too (100% allowed): in panic every host is used */
    lb.panic_threshold = 50;
    put_n(f, 1, 500, 5);
    put_n(f, 2, 500, 5);
    sharp_outlier_process_pending(f->od, 1000);
    assert_true(ejected(f, 1) && ejected(f, 2));
    int got = picks_of(&lb, &f->h[0], 30);
    assert_true(got >= 1); /* its probe, then whatever panic gives it */
    sharp_lb_destroy(&lb);
    teardown(f);
}

static void test_health_check_uneject(void **state)
{
    (void)state;
    fixture_t *f = setup(3, NULL);
    put_n(f, 0, 500, 5);
    sharp_outlier_process_pending(f->od, 0);
    assert_true(ejected(f, 0));
    sharp_outlier_on_health_check_success(&f->c, &f->h[0], 10);
    assert_false(ejected(f, 0));
    assert_int_equal(breaker(f, 0), SHARP_HOST_BREAKER_CLOSED);
    assert_int_equal(gauge(f, "ejections_active"), 0);
    teardown(f);

    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    cfg.successful_active_health_check_uneject_host = false;
    f = setup(3, &cfg);
    put_n(f, 0, 500, 5);
    sharp_outlier_process_pending(f->od, 0);
    sharp_outlier_on_health_check_success(&f->c, &f->h[0], 10);
    assert_true(ejected(f, 0));
    teardown(f);
}

static void test_no_detector(void **state)
{
    (void)state;
    sharp_cluster_t c = {.name = "plain", .stat_name = "plain"};
    sharp_host_t h = {.index = 0};
    sharp_host_t *hp = &h;
    c.hosts = &hp;
    c.nhosts = 1;
    sharp_outlier_put_http(&c, &h, 503);
    sharp_outlier_put_local(&c, &h, SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
    assert_true(sharp_outlier_success_rate(&c, &h, SHARP_OUTLIER_EXTERNAL) == -1);
    sharp_outlier_start(&c, NULL);
    sharp_outlier_close(&c);
}

/* ---- configuration ---- */

static int configure(fixture_t *f, const Envoy__Config__Cluster__V3__OutlierDetection *pb,
                     char *path, char *msg)
{
    sharp_outlier_free(f->od);
    f->od = NULL;
    f->c.outlier = NULL;
    f->c.stats = f->stats;
    int rc = sharp_outlier_configure(&f->c, &pb->base, "static_resources.clusters[0]", path, 256,
                                     msg, 256);
    f->od = f->c.outlier;
    return rc;
}

static void test_config(void **state)
{
    (void)state;
    fixture_t *f = setup(2, NULL);
    char path[256], msg[256];
    Envoy__Config__Cluster__V3__OutlierDetection pb =
        ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT;
    assert_int_equal(configure(f, &pb, path, msg), 0);
    const sharp_outlier_config_t *g = &f->od->cfg;
    assert_int_equal(g->interval_ms, 10000);
    assert_int_equal(g->base_ejection_time_ms, 30000);
    assert_int_equal(g->max_ejection_time_ms, 300000);
    assert_int_equal(g->max_ejection_time_jitter_ms, 0);
    assert_int_equal(g->consecutive_5xx, 5);
    assert_int_equal(g->consecutive_gateway_failure, 5);
    assert_int_equal(g->consecutive_local_origin_failure, 5);
    assert_int_equal(g->max_ejection_percent, 10);
    static const uint32_t enforcing[SHARP_OUTLIER_NTYPES] = {100, 0, 100, 100, 100, 0, 0, 100, 100};
    assert_memory_equal(g->enforcing, enforcing, sizeof enforcing);
    assert_int_equal(g->success_rate_minimum_hosts, 5);
    assert_int_equal(g->success_rate_request_volume, 100);
    assert_int_equal(g->success_rate_stdev_factor, 1900);
    assert_int_equal(g->failure_percentage_threshold, 85);
    assert_int_equal(g->failure_percentage_minimum_hosts, 5);
    assert_int_equal(g->failure_percentage_request_volume, 50);
    assert_false(g->split_external_local_origin_errors);
    assert_true(g->successful_active_health_check_uneject_host);
    assert_false(g->always_eject_one_host);

    Google__Protobuf__UInt32Value big = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    big.value = 101;
    pb.max_ejection_percent = &big;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path,
                        "static_resources.clusters[0].outlier_detection.max_ejection_percent");
    assert_string_equal(msg, "must be at most 100");
    pb.max_ejection_percent = NULL;
    pb.enforcing_failure_percentage_local_origin = &big;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(
        path,
        "static_resources.clusters[0].outlier_detection.enforcing_failure_percentage_local_origin");
    pb.enforcing_failure_percentage_local_origin = NULL;

    Google__Protobuf__Duration zero = GOOGLE__PROTOBUF__DURATION__INIT,
                               d40 = GOOGLE__PROTOBUF__DURATION__INIT,
                               d20 = GOOGLE__PROTOBUF__DURATION__INIT,
                               ms = GOOGLE__PROTOBUF__DURATION__INIT;
    pb.interval = &zero;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.interval");
    assert_string_equal(msg, "must be greater than 0s");
    ms.nanos = 200000000;
    pb.interval = &ms;
    /* base 400s without max: max becomes 400s */
    d40.seconds = 400;
    pb.base_ejection_time = &d40;
    assert_int_equal(configure(f, &pb, path, msg), 0);
    assert_int_equal(f->od->cfg.interval_ms, 200);
    assert_int_equal(f->od->cfg.max_ejection_time_ms, 400000);
    d20.seconds = 20;
    pb.max_ejection_time = &d20;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.max_ejection_time");
    assert_string_equal(
        msg, "outlier detector's max_ejection_time cannot be smaller than base_ejection_time");
    /* the default base (30 s) is above 20 s too */
    pb.base_ejection_time = NULL;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    d40.seconds = 10;
    pb.base_ejection_time = &d40;
    assert_int_equal(configure(f, &pb, path, msg), 0);
    assert_int_equal(f->od->cfg.max_ejection_time_ms, 20000);

    Google__Protobuf__UInt32Value three = GOOGLE__PROTOBUF__UINT32_VALUE__INIT,
                                  zero32 = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    three.value = 3;
    pb.consecutive_5xx = &three;
    pb.enforcing_consecutive_gateway_failure = &three;
    pb.enforcing_success_rate = &zero32;
    pb.split_external_local_origin_errors = true;
    Google__Protobuf__BoolValue no = GOOGLE__PROTOBUF__BOOL_VALUE__INIT,
                                yes = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    yes.value = true;
    pb.successful_active_health_check_uneject_host = &no;
    pb.always_eject_one_host = &yes;
    assert_int_equal(configure(f, &pb, path, msg), 0);
    assert_int_equal(f->od->cfg.consecutive_5xx, 3);
    assert_int_equal(f->od->cfg.enforcing[SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE], 3);
    assert_int_equal(f->od->cfg.enforcing[SHARP_OUTLIER_SUCCESS_RATE], 0);
    assert_true(f->od->cfg.split_external_local_origin_errors);
    assert_false(f->od->cfg.successful_active_health_check_uneject_host);
    assert_true(f->od->cfg.always_eject_one_host);
    teardown(f);
}


/* ---- SHARP's kernel monitor ---- */

static sharp_outlier_config_t kernel_cfg(void)
{
    sharp_outlier_config_t cfg = rate_cfg();
    cfg.kernel.enabled = true;
    return cfg;
}

/* One kernel interval: host i sent segs[i] segments, retransmitted
 * retrans[i] of them, and had RTT rtt[i] us (0: no sample in the interval);
 * then the monitor runs at `now`. */
static void kernel_round(fixture_t *f, const uint64_t *segs, const uint64_t *retrans, const double *rtt,
                         uint64_t now)
{
    for (uint32_t i = 0; i < f->c.nhosts; i++) {
        sharp_host_kernel_t *k = &f->h[i].kern;
        if (!k->has_prev) sharp_tcp_signals_init(&k->sig);
        k->has_prev = true;
        sharp_tcp_counters_t prev = k->prev, cur = prev;
        cur.segs_out += segs[i];
        cur.retrans += retrans[i];
        if (rtt[i] > 0) {
            cur.rtt_samples += 10;
            cur.rtt_sum_us += (uint64_t)(rtt[i] * 10);
        }
        sharp_tcp_signals_update(&k->sig, &prev, &cur);
        k->prev = cur;
    }
    sharp_outlier_kernel_interval(&f->c, now);
}

/* A recorded run: host 2 loses 5% of its segments, hosts 0 and 1 none. */
static const uint64_t SEGS[3] = {200, 210, 190}, LOSSY[3] = {0, 0, 10}, CLEAN[3] = {0, 0, 0};
static const double RTT[3] = {1000, 1100, 1050};

static void test_kernel_verdict(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = kernel_cfg();
    const sharp_outlier_kernel_config_t *k = &cfg.kernel;
    sharp_tcp_signals_t s;
    sharp_tcp_signals_init(&s);
    s.segs_out = 200;
    s.retrans_rate = 0.05;
    s.rtt_samples = 10;
    s.rtt_us = 1000;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_LOSS);
    /* the whole path loses: 5% against a median of 2% is not 3 times it */
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0.02, 3, 1000, 3), SHARP_KERNEL_VERDICT_OK);
    /* under the floor */
    s.retrans_rate = 0.009;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_OK);
    /* too few segments, and no RTT check possible: unknown */
    s.retrans_rate = 0.5;
    s.segs_out = 49;
    s.rtt_samples = 0;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_UNKNOWN);
    /* too few hosts to compare with */
    s.segs_out = 200;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 2, 1000, 3), SHARP_KERNEL_VERDICT_UNKNOWN);
    /* latency: 3 times the median and at least 5 ms */
    s.retrans_rate = 0;
    s.rtt_samples = 5;
    s.rtt_us = 20000;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_LATENCY);
    s.rtt_us = 4000; /* 4 times the median, under the 5 ms floor */
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_OK);
    s.rtt_us = 20000;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 8000, 3), SHARP_KERNEL_VERDICT_OK);
    /* both over their thresholds: the one further above names the cause. A
     * full queue: 90 ms against 0.12 ms (18 times the 5 ms floor) and the
     * 4.3% its tail drops (4.3 times the 1% floor): latency */
    s.retrans_rate = 0.043;
    s.rtt_us = 90000;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 120, 3), SHARP_KERNEL_VERDICT_LATENCY);
    /* 20% lost, 6 ms (1.2 times the floor): loss */
    s.retrans_rate = 0.2;
    s.rtt_us = 6000;
    assert_int_equal(sharp_outlier_kernel_verdict(k, &s, 0, 3, 120, 3), SHARP_KERNEL_VERDICT_LOSS);
    s.retrans_rate = 0;
    s.rtt_us = 20000;
    sharp_outlier_kernel_config_t off = *k;
    off.rtt_ratio = 0;
    assert_int_equal(sharp_outlier_kernel_verdict(&off, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_OK);
    sharp_outlier_kernel_config_t low = *k;
    low.min_rtt_us = 1000;
    s.rtt_us = 4000;
    assert_int_equal(sharp_outlier_kernel_verdict(&low, &s, 0, 3, 1000, 3), SHARP_KERNEL_VERDICT_LATENCY);
}

static void test_kernel_ejects_after_consecutive_intervals(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = kernel_cfg();
    fixture_t *f = setup(3, &cfg);
    kernel_round(f, SEGS, LOSSY, RTT, 1000);
    kernel_round(f, SEGS, LOSSY, RTT, 2000);
    assert_false(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_detected_kernel"), 0);
    kernel_round(f, SEGS, LOSSY, RTT, 3000);
    assert_true(ejected(f, 2));
    assert_false(ejected(f, 0) || ejected(f, 1));
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_OPEN);
    assert_int_equal(counter(f, "ejections_detected_kernel"), 1);
    assert_int_equal(counter(f, "ejections_enforced_kernel"), 1);
    assert_int_equal(counter(f, "ejections_enforced_total"), 1);
    assert_int_equal(gauge(f, "ejections_active"), 1);
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LOSS);
    /* the machinery's ejection time: half-open after base_ejection_time */
    sharp_outlier_on_interval(f->od, 3000 + 29999);
    assert_true(ejected(f, 2));
    sharp_outlier_on_interval(f->od, 3000 + 30000);
    assert_false(ejected(f, 2));
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_HALF_OPEN);
    teardown(f);
}

static void test_kernel_run_broken_and_unknown(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = kernel_cfg();
    fixture_t *f = setup(3, &cfg);
    uint64_t t = 0;
    /* bad, bad, clean: the run starts again */
    kernel_round(f, SEGS, LOSSY, RTT, t += 1000);
    kernel_round(f, SEGS, LOSSY, RTT, t += 1000);
    kernel_round(f, SEGS, CLEAN, RTT, t += 1000);
    kernel_round(f, SEGS, LOSSY, RTT, t += 1000);
    kernel_round(f, SEGS, LOSSY, RTT, t += 1000);
    assert_false(ejected(f, 2));
    /* an idle interval (too few segments, no RTT sample) neither counts nor breaks */
    static const uint64_t idle[3] = {3, 2, 4};
    static const double nortt[3] = {0, 0, 0};
    kernel_round(f, idle, CLEAN, nortt, t += 1000);
    assert_false(ejected(f, 2));
    /* signals not recomputed since (the source had nothing): not judged again */
    sharp_outlier_kernel_interval(&f->c, t += 1000);
    assert_false(ejected(f, 2));
    kernel_round(f, SEGS, LOSSY, RTT, t += 1000);
    assert_true(ejected(f, 2));
    teardown(f);
}

static void test_kernel_no_false_positive(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = kernel_cfg();
    fixture_t *f = setup(3, &cfg);
    /* a few retransmissions on every host, under the 1% floor; and loss on
     * the whole path (2-4% everywhere): no host stands out */
    static const uint64_t noise[3] = {1, 0, 1}, path[3] = {4, 6, 8};
    static const double jitter[3] = {1000, 1400, 2000};
    for (int i = 0; i < 10; i++) kernel_round(f, SEGS, i % 2 ? noise : path, jitter, 1000 * (i + 1));
    for (uint32_t i = 0; i < 3; i++) assert_false(ejected(f, i));
    assert_int_equal(counter(f, "ejections_detected_kernel"), 0);
    /* too few hosts with traffic for a median */
    sharp_outlier_config_t four = kernel_cfg();
    four.kernel.minimum_hosts = 4;
    teardown(f);
    f = setup(3, &four);
    for (int i = 0; i < 5; i++) kernel_round(f, SEGS, LOSSY, RTT, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    teardown(f);
}

static void test_kernel_run_names_its_cause(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = kernel_cfg();
    fixture_t *f = setup(3, &cfg);
    /* a lossy host: two intervals of 5.3% retransmits, then one whose
     * retransmits came in under the 1% floor but whose RTT, inflated by
     * the loss, is 9.2 ms (1.84 times the 5 ms floor): that interval's
     * verdict is latency, the run's cause is loss, and the detail has the
     * loss's figures */
    static const uint64_t low[3] = {0, 0, 1};
    static const double inflated[3] = {1000, 1100, 9200};
    kernel_round(f, SEGS, LOSSY, RTT, 1000);
    kernel_round(f, SEGS, LOSSY, RTT, 2000);
    assert_false(ejected(f, 2));
    kernel_round(f, SEGS, low, inflated, 3000);
    assert_true(ejected(f, 2));
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LOSS);
    assert_string_equal(f->od->hosts[2]->detail, "retransmits 5.3% vs cluster median 0.0%");
    /* the evidence went with the ejection */
    assert_int_equal(f->od->hosts[2]->kernel_loss_n, 0);
    assert_true(f->od->hosts[2]->kernel_rtt_score == 0);
    teardown(f);
    /* the order does not matter: the RTT interval first */
    f = setup(3, &cfg);
    kernel_round(f, SEGS, low, inflated, 1000);
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LATENCY);
    kernel_round(f, SEGS, LOSSY, RTT, 2000);
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LOSS);
    kernel_round(f, SEGS, LOSSY, RTT, 3000);
    assert_true(ejected(f, 2));
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LOSS);
    teardown(f);
    /* a full queue: 90 ms against the 5 ms floor every interval, with the
     * 2.6% its tail drops in one: latency, as each interval's verdict */
    f = setup(3, &cfg);
    static const uint64_t tail[3] = {0, 0, 5};
    static const double queued[3] = {1000, 1100, 90000};
    kernel_round(f, SEGS, CLEAN, queued, 1000);
    kernel_round(f, SEGS, tail, queued, 2000);
    kernel_round(f, SEGS, CLEAN, queued, 3000);
    assert_true(ejected(f, 2));
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LATENCY);
    assert_string_equal(f->od->hosts[2]->detail, "RTT 90.0 ms vs cluster median 1.10 ms");
    teardown(f);
    /* a clean interval ends the run and its evidence: loss, clean, then
     * two RTT intervals and one more are a latency run */
    f = setup(3, &cfg);
    kernel_round(f, SEGS, LOSSY, RTT, 1000);
    kernel_round(f, SEGS, CLEAN, RTT, 2000);
    kernel_round(f, SEGS, low, inflated, 3000);
    kernel_round(f, SEGS, low, inflated, 4000);
    kernel_round(f, SEGS, low, inflated, 5000);
    assert_true(ejected(f, 2));
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LATENCY);
    assert_string_equal(f->od->hosts[2]->detail, "RTT 9.20 ms vs cluster median 1.10 ms");
    teardown(f);
}

static void test_kernel_latency_and_settings(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = kernel_cfg();
    cfg.kernel.consecutive_intervals = 2;
    fixture_t *f = setup(3, &cfg);
    static const double slow[3] = {1000, 1100, 30000};
    kernel_round(f, SEGS, CLEAN, slow, 1000);
    assert_false(ejected(f, 2));
    kernel_round(f, SEGS, CLEAN, slow, 2000);
    assert_true(ejected(f, 2));
    assert_int_equal(f->od->hosts[2]->kernel_cause, SHARP_KERNEL_VERDICT_LATENCY);
    teardown(f);
    /* rtt_ratio 0: no latency check */
    cfg.kernel.rtt_ratio = 0;
    f = setup(3, &cfg);
    for (int i = 0; i < 4; i++) kernel_round(f, SEGS, CLEAN, slow, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    teardown(f);
    /* min_segments and min_retransmit_rate, factor */
    cfg = kernel_cfg();
    cfg.kernel.consecutive_intervals = 1;
    cfg.kernel.min_segments = 500;
    f = setup(3, &cfg);
    kernel_round(f, SEGS, LOSSY, RTT, 1000); /* 200 segments: not enough to judge the rate */
    assert_false(ejected(f, 2));
    teardown(f);
    cfg.kernel.min_segments = 50;
    cfg.kernel.min_retransmit_rate = 0.06;
    f = setup(3, &cfg);
    kernel_round(f, SEGS, LOSSY, RTT, 1000); /* 5.3% under a 6% floor */
    assert_false(ejected(f, 2));
    teardown(f);
    cfg.kernel.min_retransmit_rate = 0.01;
    cfg.kernel.retransmit_rate_factor = 2;
    static const uint64_t some[3] = {5, 4, 10}; /* 2.5%, 1.9%, 5.3%: median 2.5% */
    f = setup(3, &cfg);
    kernel_round(f, SEGS, some, RTT, 1000);
    assert_true(ejected(f, 2)); /* twice the median */
    teardown(f);
    cfg.kernel.retransmit_rate_factor = 3;
    f = setup(3, &cfg);
    kernel_round(f, SEGS, some, RTT, 1000);
    assert_false(ejected(f, 2)); /* not three times */
    teardown(f);
}

static void test_kernel_machinery_limits(void **state)
{
    (void)state;
    /* max_ejection_percent (Envoy's default 10% of 3 hosts: none) */
    sharp_outlier_config_t cfg = kernel_cfg();
    cfg.max_ejection_percent = 10;
    fixture_t *f = setup(3, &cfg);
    for (int i = 0; i < 3; i++) kernel_round(f, SEGS, LOSSY, RTT, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_detected_kernel"), 1);
    assert_int_equal(counter(f, "ejections_overflow"), 1);
    teardown(f);
    /* enforcing 0: detected, not ejected */
    cfg = kernel_cfg();
    cfg.enforcing[SHARP_OUTLIER_KERNEL] = 0;
    f = setup(3, &cfg);
    for (int i = 0; i < 3; i++) kernel_round(f, SEGS, LOSSY, RTT, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_detected_kernel"), 1);
    assert_int_equal(counter(f, "ejections_enforced_kernel"), 0);
    teardown(f);
    /* without the monitor: nothing, and no kernel stats */
    cfg = rate_cfg();
    f = setup(3, &cfg);
    for (int i = 0; i < 5; i++) kernel_round(f, SEGS, LOSSY, RTT, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    assert_int_not_equal(sharp_stats_find(f->stats, "cluster.c.outlier_detection.ejections_detected_kernel", &id, &kind), 0);
    teardown(f);
}

/* monitors[] with an Any holding `m`. */
static Envoy__Config__Core__V3__TypedExtensionConfig *monitor_of(const ProtobufCMessage *m, Google__Protobuf__Any *any,
                                                               Envoy__Config__Core__V3__TypedExtensionConfig *tec,
                                                               uint8_t *buf, char *url)
{
    google__protobuf__any__init(any);
    envoy__config__core__v3__typed_extension_config__init(tec);
    sprintf(url, "type.googleapis.com/%s", m->descriptor->name);
    any->type_url = url;
    any->value.len = protobuf_c_message_pack(m, buf);
    any->value.data = buf;
    tec->name = "sharp.outlier_detection_monitors.kernel";
    tec->typed_config = any;
    return tec;
}

static void test_kernel_config(void **state)
{
    (void)state;
    sharp_config_types_register();
    sharp_kernel_set_mode(SHARP_KERNEL_MODE_AUTO);
    fixture_t *f = setup(3, NULL);
    char path[256], msg[256];
    Envoy__Config__Cluster__V3__OutlierDetection pb = ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT;
    Sharp__Extensions__OutlierDetectionMonitors__Kernel__V1__KernelSignals ks =
        SHARP__EXTENSIONS__OUTLIER_DETECTION_MONITORS__KERNEL__V1__KERNEL_SIGNALS__INIT;
    Google__Protobuf__Any any;
    Envoy__Config__Core__V3__TypedExtensionConfig tec, *tecs[2];
    uint8_t buf[256];
    char url[200];
    tecs[0] = monitor_of(&ks.base, &any, &tec, buf, url);
    pb.n_monitors = 1;
    pb.monitors = tecs;
    /* defaults */
    assert_int_equal(configure(f, &pb, path, msg), 0);
    const sharp_outlier_kernel_config_t *k = &f->od->cfg.kernel;
    assert_true(k->enabled);
    assert_true(k->min_retransmit_rate == 0.01 && k->retransmit_rate_factor == 3 && k->rtt_ratio == 3);
    assert_int_equal(k->min_segments, 50);
    assert_int_equal(k->min_rtt_us, 5000);
    assert_int_equal(k->consecutive_intervals, 3);
    assert_int_equal(k->minimum_hosts, 3);
    assert_int_equal(f->od->cfg.enforcing[SHARP_OUTLIER_KERNEL], 100);
    counter(f, "ejections_detected_kernel"); /* registered with the monitor */
    /* every field */
    Google__Protobuf__DoubleValue rate = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT, factor = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT,
                                  ratio = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    Google__Protobuf__UInt32Value segs = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, n = GOOGLE__PROTOBUF__UINT32_VALUE__INIT,
                                  hosts = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, enf = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__Duration minrtt = GOOGLE__PROTOBUF__DURATION__INIT;
    rate.value = 0.02, factor.value = 4, ratio.value = 2.5, segs.value = 80, n.value = 5, hosts.value = 2,
    enf.value = 50, minrtt.nanos = 2500000;
    ks.min_retransmit_rate = &rate, ks.retransmit_rate_factor = &factor, ks.rtt_ratio = &ratio;
    ks.min_segments = &segs, ks.consecutive_intervals = &n, ks.minimum_hosts = &hosts, ks.enforcing = &enf;
    ks.min_rtt = &minrtt;
    monitor_of(&ks.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), 0);
    k = &f->od->cfg.kernel;
    assert_true(k->min_retransmit_rate == 0.02 && k->retransmit_rate_factor == 4 && k->rtt_ratio == 2.5);
    assert_int_equal(k->min_segments, 80);
    assert_int_equal(k->min_rtt_us, 2500);
    assert_int_equal(k->consecutive_intervals, 5);
    assert_int_equal(k->minimum_hosts, 2);
    assert_int_equal(f->od->cfg.enforcing[SHARP_OUTLIER_KERNEL], 50);
    /* bad values */
    ratio.value = 0.5;
    monitor_of(&ks.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[0].typed_config.rtt_ratio");
    assert_string_equal(msg, "must be 0 (no latency check) or at least 1");
    ratio.value = 0;
    rate.value = 1.5;
    monitor_of(&ks.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[0].typed_config.min_retransmit_rate");
    rate.value = 0.02;
    n.value = 0;
    monitor_of(&ks.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[0].typed_config.consecutive_intervals");
    n.value = 5;
    enf.value = 101;
    monitor_of(&ks.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[0].typed_config.enforcing");
    enf.value = 50;
    monitor_of(&ks.base, &any, &tec, buf, url);
    /* twice */
    Google__Protobuf__Any any2;
    Envoy__Config__Core__V3__TypedExtensionConfig tec2;
    uint8_t buf2[256];
    char url2[200];
    tecs[1] = monitor_of(&ks.base, &any2, &tec2, buf2, url2);
    pb.n_monitors = 2;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[1].typed_config");
    assert_string_equal(msg, "the kernel monitor is configured twice");
    /* another monitor type */
    Google__Protobuf__UInt32Value other = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    tecs[1] = monitor_of(&other.base, &any2, &tec2, buf2, url2);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(msg, "outlier detection monitor google.protobuf.UInt32Value is not supported: the monitors "
                             "SHARP implements are sharp.extensions.outlier_detection_monitors.kernel.v1.KernelSignals "
                             "and sharp.extensions.outlier_detection_monitors.latency.v1.LatencyOutlier");
    /* kernel signals off */
    pb.n_monitors = 1;
    sharp_kernel_set_mode(SHARP_KERNEL_MODE_OFF);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(msg, "the kernel monitor needs the kernel signals, which --kernel-signals off turns off");
    sharp_kernel_set_mode(SHARP_KERNEL_MODE_AUTO);
    teardown(f);
}

/* ---- SHARP's latency monitor ---- */

static void test_latency_histogram(void **state)
{
    (void)state;
    /* exact below 16 us, then 8 buckets per power of two */
    for (uint64_t v = 0; v < 16; v++) assert_int_equal(sharp_latency_bucket(v), v);
    assert_int_equal(sharp_latency_bucket(16), 16);
    assert_int_equal(sharp_latency_bucket(17), 16);
    assert_int_equal(sharp_latency_bucket(18), 17);
    assert_int_equal(sharp_latency_bucket(31), 23);
    assert_int_equal(sharp_latency_bucket(32), 24);
    assert_int_equal(sharp_latency_bucket(UINT32_MAX), SHARP_LATENCY_BUCKETS - 1);
    assert_int_equal(sharp_latency_bucket(UINT64_MAX), SHARP_LATENCY_BUCKETS - 1);
    /* every value lies in its bucket's range, and the ranges tile */
    uint64_t prev_high = 0;
    for (uint32_t b = 0; b < SHARP_LATENCY_BUCKETS; b++) {
        uint64_t lo, hi;
        sharp_latency_bucket_range(b, &lo, &hi);
        assert_int_equal(lo, prev_high);
        assert_true(hi > lo);
        assert_int_equal(sharp_latency_bucket(lo), b);
        assert_int_equal(sharp_latency_bucket(hi - 1), b);
        prev_high = hi;
    }
    /* percentiles within 6.25% of the truth: 1..1000 ms uniformly */
    sharp_latency_hist_t h;
    memset(&h, 0, sizeof h);
    for (uint64_t ms = 1; ms <= 1000; ms++) sharp_latency_record(&h, ms * 1000);
    uint32_t counts[SHARP_LATENCY_BUCKETS];
    uint64_t n = sharp_latency_take(&h, counts);
    assert_int_equal(n, 1000);
    static const double pcts[] = {1, 50, 90, 95, 99, 100};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(pcts); i++) {
        double want = pcts[i] * 10 * 1000, got = sharp_latency_percentile(counts, n, pcts[i]);
        assert_true(fabs(got - want) <= 0.0625 * want);
    }
    /* taking empties it */
    assert_int_equal(sharp_latency_take(&h, counts), 0);
    assert_true(sharp_latency_percentile(counts, 0, 95) < 0);
    /* small values are exact; one value is every percentile */
    sharp_latency_record(&h, 7);
    n = sharp_latency_take(&h, counts);
    assert_true(sharp_latency_percentile(counts, n, 1) == 7 && sharp_latency_percentile(counts, n, 100) == 7);
}

static sharp_outlier_config_t latency_cfg(void)
{
    sharp_outlier_config_t cfg = rate_cfg();
    cfg.latency.enabled = true;
    cfg.latency.request_volume = 20;
    cfg.latency.consecutive_intervals = 2;
    return cfg;
}

/* One interval of the latency monitor: host i answered n[i] tries taking
 * lat_ms[i] ms each, give or take 10% (a deterministic spread), then the
 * monitor runs at `now`. Through the workers' entry point. */
static void latency_round(fixture_t *f, const int *n, const double *lat_ms, uint64_t now)
{
    for (uint32_t i = 0; i < f->c.nhosts; i++)
        for (int k = 0; k < n[i]; k++) {
            double spread = 0.9 + 0.2 * (double)(k % 11) / 10;
            sharp_outlier_put_latency(&f->c, &f->h[i], (uint64_t)(lat_ms[i] * 1000 * spread), true);
            sharp_outlier_put_http(&f->c, &f->h[i], 200);
        }
    sharp_outlier_on_interval(f->od, now);
}

static const int VOL[3] = {60, 60, 60};
static const double FAST[3] = {10, 12, 11}, ONE_SLOW[3] = {10, 12, 150};

static void test_latency_verdict(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = latency_cfg();
    const sharp_outlier_latency_config_t *l = &cfg.latency;
    assert_true(sharp_outlier_latency_verdict(l, 90000, 10000));
    assert_true(sharp_outlier_latency_verdict(l, 30000, 10000));  /* exactly 3 times */
    assert_false(sharp_outlier_latency_verdict(l, 29000, 10000));
    assert_false(sharp_outlier_latency_verdict(l, 15000, 1000));  /* 15 times, under the 20 ms floor */
    assert_false(sharp_outlier_latency_verdict(l, 90000, -1));    /* no median */
    sharp_outlier_latency_config_t low = *l;
    low.min_latency_us = 0;
    low.factor = 1.5;
    assert_true(sharp_outlier_latency_verdict(&low, 1500, 1000));
}

static void test_latency_ejects_slow_host(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = latency_cfg();
    cfg.interval_ms = 1000;
    fixture_t *f = setup(3, &cfg);
    latency_round(f, VOL, ONE_SLOW, 1000);
    assert_false(ejected(f, 2)); /* one interval of two */
    assert_true(fabs(f->od->latency_median_us - 12000) <= 0.07 * 12000);
    assert_true(f->od->hosts[2]->latency_pct_us > 150000);
    latency_round(f, VOL, ONE_SLOW, 2000);
    assert_true(ejected(f, 2));
    assert_false(ejected(f, 0) || ejected(f, 1));
    assert_int_equal(counter(f, "ejections_detected_latency"), 1);
    assert_int_equal(counter(f, "ejections_enforced_latency"), 1);
    assert_int_equal(counter(f, "ejections_enforced_total"), 1);
    assert_int_equal(gauge(f, "ejections_active"), 1);
    assert_int_equal(f->od->hosts[2]->type, SHARP_OUTLIER_LATENCY);
    /* the diagnosis names the host and the figures */
    const char *d = sharp_diag_host_text(&f->h[2]);
    assert_non_null(strstr(d, "latency: 10.0.0.3:80 slow (p95 "));
    assert_non_null(strstr(d, "vs cluster median 1"));
    assert_string_equal(sharp_diag_host_text(&f->h[0]), "");
    /* ejected, it is neither judged nor part of the median; its half-open
     * probe after base_ejection_time must answer within 3 x the median */
    assert_true(atomic_load(&f->od->hosts[2]->probe_latency_limit_us) >= 30000);
    static const int TWO[3] = {60, 60, 0};
    latency_round(f, TWO, FAST, 3000);
    latency_round(f, TWO, FAST, 31000);
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_OPEN);
    latency_round(f, TWO, FAST, 32000);
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_HALF_OPEN);
    /* a slow probe (a 200, 150 ms) fails it: re-ejected for twice as long */
    sharp_outlier_put_latency(&f->c, &f->h[2], 150000, true);
    sharp_outlier_put_http(&f->c, &f->h[2], 200);
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_OPEN);
    sharp_outlier_process_pending(f->od, 32100);
    assert_true(ejected(f, 2));
    assert_int_equal(f->od->hosts[2]->backoff, 2);
    assert_int_equal(counter(f, "ejections_enforced_latency"), 2);
    /* after 60 s, a fast probe closes it */
    latency_round(f, TWO, FAST, 93000);
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_HALF_OPEN);
    sharp_outlier_put_latency(&f->c, &f->h[2], 11000, true);
    sharp_outlier_put_http(&f->c, &f->h[2], 200);
    assert_int_equal(breaker(f, 2), SHARP_HOST_BREAKER_CLOSED);
    teardown(f);
}

static void test_latency_no_false_positive(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = latency_cfg();
    cfg.latency.consecutive_intervals = 1;
    fixture_t *f = setup(3, &cfg);
    /* hosts twice as slow as each other, and all slow together */
    static const double spread[3] = {10, 20, 25}, all_slow[3] = {400, 500, 450};
    for (int i = 0; i < 6; i++) latency_round(f, VOL, i % 2 ? spread : all_slow, 1000 * (i + 1));
    /* 15 times the median but under the 20 ms floor */
    static const double tiny[3] = {0.5, 0.6, 9};
    for (int i = 0; i < 3; i++) latency_round(f, VOL, tiny, 7000 + 1000 * i);
    for (uint32_t i = 0; i < 3; i++) assert_false(ejected(f, i));
    assert_int_equal(counter(f, "ejections_detected_latency"), 0);
    teardown(f);
}

static void test_latency_volume_and_hosts(void **state)
{
    (void)state;
    sharp_outlier_config_t cfg = latency_cfg();
    cfg.latency.consecutive_intervals = 3;
    fixture_t *f = setup(3, &cfg);
    /* slow, slow, then an interval with too few tries: neither counts nor
     * breaks the run, so the next slow interval ejects */
    latency_round(f, VOL, ONE_SLOW, 1000);
    latency_round(f, VOL, ONE_SLOW, 2000);
    static const int FEW[3] = {60, 60, 19};
    latency_round(f, FEW, ONE_SLOW, 3000);
    assert_false(ejected(f, 2));
    assert_true(f->od->hosts[2]->latency_pct_us < 0);
    latency_round(f, VOL, ONE_SLOW, 4000);
    assert_true(ejected(f, 2));
    teardown(f);
    /* a fast interval breaks the run */
    f = setup(3, &cfg);
    latency_round(f, VOL, ONE_SLOW, 1000);
    latency_round(f, VOL, ONE_SLOW, 2000);
    latency_round(f, VOL, FAST, 3000);
    latency_round(f, VOL, ONE_SLOW, 4000);
    latency_round(f, VOL, ONE_SLOW, 5000);
    assert_false(ejected(f, 2));
    latency_round(f, VOL, ONE_SLOW, 6000);
    assert_true(ejected(f, 2));
    teardown(f);
    /* two hosts with traffic are fewer than minimum_hosts (3): nobody */
    cfg.latency.consecutive_intervals = 1;
    f = setup(3, &cfg);
    static const int NO0[3] = {0, 60, 60};
    for (int i = 0; i < 3; i++) latency_round(f, NO0, ONE_SLOW, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    assert_true(f->od->latency_median_us < 0);
    teardown(f);
    /* timeouts count with the time waited: a host that hangs is slow */
    f = setup(3, &cfg);
    for (uint32_t i = 0; i < 3; i++)
        for (int k = 0; k < 30; k++)
            sharp_outlier_put_latency(&f->c, &f->h[i], i == 2 ? 1000000 : 5000 + (uint64_t)k * 100, i != 2);
    sharp_outlier_on_interval(f->od, 1000);
    assert_true(ejected(f, 2));
    teardown(f);
}

static void test_latency_machinery_limits(void **state)
{
    (void)state;
    /* max_ejection_percent (Envoy's default 10% of 3 hosts: none) */
    sharp_outlier_config_t cfg = latency_cfg();
    cfg.max_ejection_percent = 10;
    fixture_t *f = setup(3, &cfg);
    for (int i = 0; i < 2; i++) latency_round(f, VOL, ONE_SLOW, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_detected_latency"), 1);
    assert_int_equal(counter(f, "ejections_overflow"), 1);
    assert_string_equal(sharp_diag_host_text(&f->h[2]), "");
    teardown(f);
    /* enforcing 0: detected, not ejected */
    cfg = latency_cfg();
    cfg.enforcing[SHARP_OUTLIER_LATENCY] = 0;
    f = setup(3, &cfg);
    for (int i = 0; i < 2; i++) latency_round(f, VOL, ONE_SLOW, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    assert_int_equal(counter(f, "ejections_detected_latency"), 1);
    assert_int_equal(counter(f, "ejections_enforced_latency"), 0);
    teardown(f);
    /* without the monitor: no histogram, nothing recorded, no stats */
    cfg = rate_cfg();
    f = setup(3, &cfg);
    assert_null(f->od->hosts[0]->latency);
    for (int i = 0; i < 4; i++) latency_round(f, VOL, ONE_SLOW, 1000 * (i + 1));
    assert_false(ejected(f, 2));
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    assert_int_not_equal(sharp_stats_find(f->stats, "cluster.c.outlier_detection.ejections_detected_latency", &id, &kind), 0);
    teardown(f);
}

static void test_latency_config(void **state)
{
    (void)state;
    sharp_config_types_register();
    sharp_kernel_set_mode(SHARP_KERNEL_MODE_OFF); /* the latency monitor does not need the kernel signals */
    fixture_t *f = setup(3, NULL);
    char path[256], msg[256];
    Envoy__Config__Cluster__V3__OutlierDetection pb = ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT;
    Sharp__Extensions__OutlierDetectionMonitors__Latency__V1__LatencyOutlier lo =
        SHARP__EXTENSIONS__OUTLIER_DETECTION_MONITORS__LATENCY__V1__LATENCY_OUTLIER__INIT;
    Google__Protobuf__Any any;
    Envoy__Config__Core__V3__TypedExtensionConfig tec, *tecs[2];
    uint8_t buf[256];
    char url[200];
    tecs[0] = monitor_of(&lo.base, &any, &tec, buf, url);
    pb.n_monitors = 1;
    pb.monitors = tecs;
    assert_int_equal(configure(f, &pb, path, msg), 0);
    const sharp_outlier_latency_config_t *l = &f->od->cfg.latency;
    assert_true(l->enabled);
    assert_true(l->percentile == 95 && l->factor == 3);
    assert_int_equal(l->min_latency_us, 20000);
    assert_int_equal(l->request_volume, 50);
    assert_int_equal(l->consecutive_intervals, 3);
    assert_int_equal(l->minimum_hosts, 3);
    assert_int_equal(f->od->cfg.enforcing[SHARP_OUTLIER_LATENCY], 100);
    assert_non_null(f->od->hosts[0]->latency);
    counter(f, "ejections_detected_latency");
    counter(f, "ejections_enforced_latency");
    Google__Protobuf__DoubleValue pct = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT, factor = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    Google__Protobuf__UInt32Value vol = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, n = GOOGLE__PROTOBUF__UINT32_VALUE__INIT,
                                  hosts = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, enf = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__Duration min = GOOGLE__PROTOBUF__DURATION__INIT;
    pct.value = 99.9, factor.value = 2, vol.value = 200, n.value = 4, hosts.value = 5, enf.value = 40,
    min.nanos = 7500000;
    lo.percentile = &pct, lo.factor = &factor, lo.request_volume = &vol, lo.consecutive_intervals = &n;
    lo.minimum_hosts = &hosts, lo.enforcing = &enf, lo.min_latency = &min;
    monitor_of(&lo.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), 0);
    l = &f->od->cfg.latency;
    assert_true(l->percentile == 99.9 && l->factor == 2);
    assert_int_equal(l->min_latency_us, 7500);
    assert_int_equal(l->request_volume, 200);
    assert_int_equal(l->consecutive_intervals, 4);
    assert_int_equal(l->minimum_hosts, 5);
    assert_int_equal(f->od->cfg.enforcing[SHARP_OUTLIER_LATENCY], 40);
    /* bad values, each naming its field */
    static const struct {
        double pct, factor;
        uint32_t vol, n, hosts, enf;
        const char *field, *msg;
    } bad[] = {
        {0, 2, 1, 1, 1, 0, "percentile", "must be in (0, 100]"},
        {100.5, 2, 1, 1, 1, 0, "percentile", "must be in (0, 100]"},
        {99, 0.9, 1, 1, 1, 0, "factor", "must be at least 1"},
        {99, 2, 0, 1, 1, 0, "request_volume", "must be at least 1"},
        {99, 2, 1, 0, 1, 0, "consecutive_intervals", "must be at least 1"},
        {99, 2, 1, 1, 0, 0, "minimum_hosts", "must be at least 1"},
        {99, 2, 1, 1, 1, 101, "enforcing", "must be at most 100"},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(bad); i++) {
        pct.value = bad[i].pct, factor.value = bad[i].factor, vol.value = bad[i].vol, n.value = bad[i].n;
        hosts.value = bad[i].hosts, enf.value = bad[i].enf;
        monitor_of(&lo.base, &any, &tec, buf, url);
        assert_int_equal(configure(f, &pb, path, msg), -1);
        char want[200];
        snprintf(want, sizeof want, "static_resources.clusters[0].outlier_detection.monitors[0].typed_config.%s",
                 bad[i].field);
        assert_string_equal(path, want);
        assert_string_equal(msg, bad[i].msg);
    }
    pct.value = 99, factor.value = 2, vol.value = 1, n.value = 1, hosts.value = 1, enf.value = 100;
    min.nanos = -1;
    monitor_of(&lo.base, &any, &tec, buf, url);
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[0].typed_config.min_latency");
    min.nanos = 0;
    /* twice */
    Google__Protobuf__Any any2;
    Envoy__Config__Core__V3__TypedExtensionConfig tec2;
    uint8_t buf2[256];
    char url2[200];
    monitor_of(&lo.base, &any, &tec, buf, url);
    tecs[1] = monitor_of(&lo.base, &any2, &tec2, buf2, url2);
    pb.n_monitors = 2;
    assert_int_equal(configure(f, &pb, path, msg), -1);
    assert_string_equal(path, "static_resources.clusters[0].outlier_detection.monitors[1].typed_config");
    assert_string_equal(msg, "the latency monitor is configured twice");
    /* with the kernel monitor beside it */
    sharp_kernel_set_mode(SHARP_KERNEL_MODE_AUTO);
    Sharp__Extensions__OutlierDetectionMonitors__Kernel__V1__KernelSignals ks =
        SHARP__EXTENSIONS__OUTLIER_DETECTION_MONITORS__KERNEL__V1__KERNEL_SIGNALS__INIT;
    tecs[1] = monitor_of(&ks.base, &any2, &tec2, buf2, url2);
    assert_int_equal(configure(f, &pb, path, msg), 0);
    assert_true(f->od->cfg.latency.enabled && f->od->cfg.kernel.enabled);
    teardown(f);
}

int main(void)
{
    sharp_log_set_all(SHARP_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consecutive_5xx_trip_and_reset),
        cmocka_unit_test(test_gateway_failure_only_502_503_504),
        cmocka_unit_test(test_local_origin_not_split),
        cmocka_unit_test(test_local_origin_split),
        cmocka_unit_test(test_success_rate_threshold_math),
        cmocka_unit_test(test_success_rate_ejection),
        cmocka_unit_test(test_success_rate_gating),
        cmocka_unit_test(test_failure_percentage),
        cmocka_unit_test(test_local_origin_success_rate),
        cmocka_unit_test(test_max_ejection_percent),
        cmocka_unit_test(test_enforcing_0_and_100),
        cmocka_unit_test(test_ejection_time_growth_and_cap),
        cmocka_unit_test(test_unejection_and_backoff_decrement),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_half_open_probe_success),
        cmocka_unit_test(test_half_open_probe_failure),
        cmocka_unit_test(test_half_open_stuck_probe),
        cmocka_unit_test(test_half_open_panic),
        cmocka_unit_test(test_health_check_uneject),
        cmocka_unit_test(test_no_detector),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_kernel_verdict),
        cmocka_unit_test(test_kernel_ejects_after_consecutive_intervals),
        cmocka_unit_test(test_kernel_run_broken_and_unknown),
        cmocka_unit_test(test_kernel_no_false_positive),
        cmocka_unit_test(test_kernel_run_names_its_cause),
        cmocka_unit_test(test_kernel_latency_and_settings),
        cmocka_unit_test(test_kernel_machinery_limits),
        cmocka_unit_test(test_kernel_config),
        cmocka_unit_test(test_latency_histogram),
        cmocka_unit_test(test_latency_verdict),
        cmocka_unit_test(test_latency_ejects_slow_host),
        cmocka_unit_test(test_latency_no_false_positive),
        cmocka_unit_test(test_latency_volume_and_hosts),
        cmocka_unit_test(test_latency_machinery_limits),
        cmocka_unit_test(test_latency_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The HPA baseline (proxy/agent/hpa.c) against the worked examples of the
 * Kubernetes documentation (tasks/run-application/horizontal-pod-autoscale:
 * the algorithm details, the scaling policies, the stabilization window,
 * the default behavior) and the cases of the controller's own
 * replica_calculator_test.go (unready, hot-CPU, missing, failed, deleted
 * and pending pods; the tolerance), each with its numbers worked out in a
 * comment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "agent/hpa.h"

#define NOW 10000.0

/* A pod running for an hour, ready for most of it, with a fresh metric. */
static sharp_hpa_pod_t pod(int64_t usage_m, int64_t request_m)
{
    sharp_hpa_pod_t p;
    memset(&p, 0, sizeof p);
    p.phase = SHARP_HPA_POD_RUNNING;
    p.has_start_time = true;
    p.start_s = NOW - 3600;
    p.has_ready_condition = true;
    p.ready = true;
    p.ready_transition_s = NOW - 3500;
    p.has_metric = true;
    p.usage_m = usage_m;
    p.metric_ts = NOW;
    p.metric_window_s = 15;
    p.request_m = request_m;
    return p;
}

static sharp_hpa_pod_t unready(sharp_hpa_pod_t p)
{
    /* started a minute ago, not ready yet */
    p.start_s = NOW - 60;
    p.ready = false;
    p.ready_transition_s = NOW - 60;
    return p;
}

static sharp_hpa_pod_t missing(sharp_hpa_pod_t p)
{
    p.has_metric = false;
    return p;
}

static void config(sharp_hpa_config_t *c, int target, int min, int max)
{
    sharp_hpa_config_default(c);
    c->target_utilization = target;
    c->min_replicas = min;
    c->max_replicas = max;
}

static int32_t calc(int target, int32_t current, const sharp_hpa_pod_t *pods, int n, sharp_hpa_calc_t *out)
{
    sharp_hpa_config_t c;
    config(&c, target, 1, 1000);
    char err[160] = "";
    sharp_hpa_calc_t local;
    if (!out)
        out = &local;
    if (sharp_hpa_replica_calc(&c, NOW, current, pods, n, out, err, sizeof err) != 0)
        fail_msg("replica calculation failed: %s", err);
    return out->replicas;
}

/* ---- the documentation's algorithm details ---- */

static void doc_ratio_doubles_and_halves(void **state)
{
    (void)state;
    /* "if the current metric value is 200m, and the desired value is 100m,
     * the number of replicas will be doubled ... If the current value is
     * instead 50m, you'll halve the number of replicas": a target of 10%
     * of a 1000m request is 100m. */
    sharp_hpa_pod_t p[4];
    for (int i = 0; i < 4; i++)
        p[i] = pod(200, 1000);
    sharp_hpa_calc_t r;
    assert_int_equal(calc(10, 4, p, 4, &r), 8);
    assert_int_equal(r.utilization, 20);
    assert_true(r.usage_ratio == 2.0);
    for (int i = 0; i < 4; i++)
        p[i] = pod(50, 1000);
    assert_int_equal(calc(10, 4, p, 4, &r), 2);
    assert_true(r.usage_ratio == 0.5);
}

static void doc_tolerance(void **state)
{
    (void)state;
    /* "The control plane skips any scaling action if the ratio is
     * sufficiently close to 1.0 (within a globally-configurable tolerance,
     * 0.1 by default)." Both ends are inside: 1 - 0.1 <= ratio <= 1 + 0.1
     * (Kubernetes 1.33's Tolerances.isWithin; the older |1 - ratio| <= 0.1
     * left 77/70 = 1.1000000000000001 outside by rounding). */
    sharp_hpa_pod_t p[10];
    for (int i = 0; i < 10; i++)
        p[i] = pod(770, 1000);
    assert_int_equal(calc(70, 10, p, 10, NULL), 10); /* 77/70 */
    for (int i = 0; i < 10; i++)
        p[i] = pod(780, 1000);
    assert_int_equal(calc(70, 10, p, 10, NULL), 12); /* ceil(78/70 x 10) = ceil(11.14) */
    for (int i = 0; i < 10; i++)
        p[i] = pod(630, 1000);
    assert_int_equal(calc(70, 10, p, 10, NULL), 10); /* 63/70 = 0.9 */
    for (int i = 0; i < 10; i++)
        p[i] = pod(620, 1000);
    assert_int_equal(calc(70, 10, p, 10, NULL), 9); /* ceil(0.8857 x 10) */
}

static void utilization_is_an_integer_percentage(void **state)
{
    (void)state;
    /* sum(usage) * 100 / sum(requests) truncates: 100m of 300m is 33%, a
     * ratio of 33/50 = 0.66 (not 0.6667); 3 pods x 0.66 = 1.98 -> 2. */
    sharp_hpa_pod_t p[3] = {pod(100, 100), pod(0, 100), pod(0, 100)};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(50, 3, p, 3, &r), 2);
    assert_int_equal(r.utilization, 33);
}

/* ---- the controller's replica calculator cases ---- */

static void upstream_scale_up(void **state)
{
    (void)state;
    /* TestReplicaCalcScaleUp: 300+500+700 of 3000 = 50% against 30%:
     * ceil(5/3 x 3) = 5. */
    sharp_hpa_pod_t p[3] = {pod(300, 1000), pod(500, 1000), pod(700, 1000)};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(30, 3, p, 3, &r), 5);
    assert_int_equal(r.utilization, 50);
}

static void upstream_unready_less_scale(void **state)
{
    (void)state;
    /* TestReplicaCalcScaleUpUnreadyLessScale: the unready pod (300) is set
     * aside: (500+700)/2000 = 60% -> ratio 2 > 1, so it comes back as 0%:
     * 1200/3000 = 40% -> 1.333; ceil(1.333 x 3) = 4. */
    sharp_hpa_pod_t p[3] = {unready(pod(300, 1000)), pod(500, 1000), pod(700, 1000)};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(30, 3, p, 3, &r), 4);
    assert_int_equal(r.utilization, 60);
    assert_int_equal(r.unready, 1);
    assert_true(r.rebalanced);
}

static void upstream_unready_no_scale(void **state)
{
    (void)state;
    /* TestReplicaCalcScaleUpUnreadyNoScale: 400/1000 = 40% -> 1.333 up;
     * with the two unready pods at 0: 400/3000 = 13% -> 0.433, the
     * direction reverses: no change. */
    sharp_hpa_pod_t p[3] = {pod(400, 1000), unready(pod(500, 1000)), unready(pod(700, 1000))};
    assert_int_equal(calc(30, 3, p, 3, NULL), 3);
}

static void upstream_hot_cpu(void **state)
{
    (void)state;
    /* TestReplicaCalcScaleUpHotCpuLessScale: a pod ready, but whose metric
     * window began before it turned ready, within the CPU initialization
     * period, counts as unready: the same 4 as above. */
    sharp_hpa_pod_t hot = pod(300, 1000);
    hot.start_s = NOW - 60;
    hot.ready_transition_s = NOW - 10; /* metric window 15 s: began before */
    sharp_hpa_pod_t p[3] = {hot, pod(500, 1000), pod(700, 1000)};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(30, 3, p, 3, &r), 4);
    assert_int_equal(r.unready, 1);
    /* one full window after turning ready it counts: 1500/3000 = 50% */
    p[0].ready_transition_s = NOW - 15;
    assert_int_equal(calc(30, 3, p, 3, &r), 5);
    assert_int_equal(r.unready, 0);
    /* past the initialization period an unready pod that was ready before
     * (its last transition well after its start) counts with its metric */
    sharp_hpa_pod_t old = pod(300, 1000);
    old.ready = false;
    old.ready_transition_s = NOW - 100; /* started an hour ago */
    p[0] = old;
    assert_int_equal(calc(30, 3, p, 3, &r), 5);
    /* ... but one never ready since it started is set aside */
    old.ready_transition_s = old.start_s + 10;
    p[0] = old;
    assert_int_equal(calc(30, 3, p, 3, &r), 4);
}

static void upstream_scale_down(void **state)
{
    (void)state;
    /* TestReplicaCalcScaleDown: 1400/5000 = 28% against 50%: ceil(0.56 x 5)
     * = 3. */
    sharp_hpa_pod_t p[5] = {pod(100, 1000), pod(300, 1000), pod(500, 1000), pod(250, 1000), pod(250, 1000)};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(50, 5, p, 5, &r), 3);
    assert_int_equal(r.utilization, 28);
    /* TestReplicaCalcScaleDownExcludeUnreadyPods: the last two unready:
     * 900/3000 = 30% -> ceil(0.6 x 3) = 2 (unready pods do not count on a
     * scale-down). */
    p[3] = unready(p[3]);
    p[4] = unready(p[4]);
    assert_int_equal(calc(50, 5, p, 5, &r), 2);
    assert_int_equal(r.utilization, 30);
}

static void upstream_pending_failed_deleted(void **state)
{
    (void)state;
    /* TestReplicaCalcScaleDownExcludeUnscheduledPods: four pending pods:
     * 100/1000 = 10% -> ceil(0.2 x 1) = 1. */
    sharp_hpa_pod_t p[7];
    p[0] = pod(100, 1000);
    for (int i = 1; i < 5; i++) {
        p[i] = missing(pod(0, 1000));
        p[i].phase = SHARP_HPA_POD_PENDING;
    }
    assert_int_equal(calc(50, 5, p, 5, NULL), 1);
    /* TestReplicaCalcScaleUpIgnoresFailedPods: 2 running at 500 and 700,
     * 2 failed: 60% against 30% -> ceil(2 x 2) = 4. */
    p[0] = pod(500, 1000);
    p[1] = pod(700, 1000);
    p[2] = missing(pod(0, 1000));
    p[2].phase = SHARP_HPA_POD_FAILED;
    p[3] = p[2];
    sharp_hpa_calc_t r;
    assert_int_equal(calc(30, 2, p, 4, &r), 4);
    assert_int_equal(r.ignored, 2);
    /* TestReplicaCalcScaleUpIgnoresDeletionPods: the same with 2 pods being
     * deleted. */
    p[2] = pod(900, 1000);
    p[2].deleting = true;
    p[3] = p[2];
    assert_int_equal(calc(30, 2, p, 4, &r), 4);
    assert_int_equal(r.ignored, 2);
}

static void upstream_tolerance(void **state)
{
    (void)state;
    /* TestReplicaCalcTolerance: (1010+1030+1020)/(900+1000+1100) = 102%
     * against 100%: within the tolerance. */
    sharp_hpa_pod_t p[3] = {pod(1010, 900), pod(1030, 1000), pod(1020, 1100)};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(100, 3, p, 3, &r), 3);
    assert_int_equal(r.utilization, 102);
}

static void upstream_missing_metrics(void **state)
{
    (void)state;
    /* TestReplicaCalcMissingMetrics: 4 pods, metrics for 2 (400, 95):
     * 495/2000 = 24% -> scale-down, so the 2 missing count as 100%:
     * 2495/4000 = 62% -> ceil(0.62 x 4) = 3. */
    sharp_hpa_pod_t p[4] = {pod(400, 1000), pod(95, 1000), missing(pod(0, 1000)), missing(pod(0, 1000))};
    sharp_hpa_calc_t r;
    assert_int_equal(calc(100, 4, p, 4, &r), 3);
    assert_int_equal(r.utilization, 24);
    assert_int_equal(r.missing, 2);
    /* TestReplicaCalcMissingMetricsNoChangeEq/Gt/Lt: 2 pods, one metric of
     * 1000 (100%), 1900 (190%: with the missing one at 0%, 95%: within),
     * 600 (60%: with the missing one at 100%, 80%... 1600/2000 = 80% ->
     * 0.8, then ceil(0.8 x 2) = 2). */
    sharp_hpa_pod_t q[2] = {pod(1000, 1000), missing(pod(0, 1000))};
    assert_int_equal(calc(100, 2, q, 2, NULL), 2);
    q[0] = pod(1900, 1000);
    assert_int_equal(calc(100, 2, q, 2, NULL), 2);
    q[0] = pod(600, 1000);
    assert_int_equal(calc(100, 2, q, 2, NULL), 2);
    /* on a scale-down with a target above 100%, missing pods use the
     * target: 2 pods, 100m of 1000m and a missing one, target 150%:
     * 10% -> 0.067; (100 + 1500)/2000 = 80% -> 0.533; ceil(1.07) = 2 */
    q[0] = pod(100, 1000);
    assert_int_equal(calc(150, 2, q, 2, &r), 2);
    assert_true(fabs(r.new_usage_ratio - 80.0 / 150.0) < 1e-12);
}

static void upstream_missing_and_unready(void **state)
{
    (void)state;
    /* TestReplicaCalcMissingMetricsUnreadyChange: unready (100), ready
     * (450), missing: 45% against 50% -> 0.9 down; the missing pod at 100%:
     * 1450/2000 = 72% -> 1.44: the direction reverses, no change. */
    sharp_hpa_pod_t p[3] = {unready(pod(100, 1000)), pod(450, 1000), missing(pod(0, 1000))};
    assert_int_equal(calc(50, 3, p, 3, NULL), 3);
    /* TestReplicaCalcMissingMetricsUnreadyScaleUp: ready at 2000: 200% ->
     * 4 up; missing and unready at 0%: 2000/3000 = 66% -> 1.32;
     * ceil(1.32 x 3) = 4. */
    p[1] = pod(2000, 1000);
    assert_int_equal(calc(50, 3, p, 3, NULL), 4);
}

static void calculator_errors(void **state)
{
    (void)state;
    sharp_hpa_config_t c;
    config(&c, 50, 1, 10);
    sharp_hpa_calc_t r;
    char err[160];
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 1, NULL, 0, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "no pods"));
    sharp_hpa_pod_t p[2] = {unready(pod(100, 1000)), missing(pod(0, 1000))};
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 2, p, 2, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "did not receive metrics"));
    p[0] = pod(100, 1000);
    p[1] = pod(100, 0);
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 2, p, 2, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing request"));
    /* values no machine has are refused rather than overflowed */
    p[1] = pod(INT64_MAX, 1000);
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 2, p, 2, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "out of range"));
    p[1] = pod(-1, 1000);
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 2, p, 2, &r, err, sizeof err), -1);
    p[1] = pod(100, INT64_MAX);
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 2, p, 2, &r, err, sizeof err), -1);
    /* the largest usage on a tiny request: the count saturates */
    p[0] = pod((int64_t)1 << 40, 1);
    p[1] = pod((int64_t)1 << 40, 1);
    assert_int_equal(sharp_hpa_replica_calc(&c, NOW, 2, p, 2, &r, err, sizeof err), 0);
    assert_true(r.replicas > 0);
}

/* ---- behavior: rates, stabilization, bounds ---- */

/* n ready pods at the same usage. */
static void fill(sharp_hpa_pod_t *p, int n, int64_t usage)
{
    for (int i = 0; i < n; i++)
        p[i] = pod(usage, 1000);
}

static void doc_default_scale_up_rate(void **state)
{
    (void)state;
    /* "There are 2 policies where 4 pods or a 100% of the currently running
     * replicas will be added every 15 seconds till the HPA reaches its
     * steady state": from 1 pod at 1000% of a 10% target (desired 10):
     * max(1 + 4, 2 x 1) = 5, then 15 s later max(5 + 4, 10) = 10. From 10
     * (desired 50): max(14, 20) = 20. */
    sharp_hpa_config_t c;
    config(&c, 10, 1, 100);
    sharp_hpa_t *h = sharp_hpa_new(&c);
    sharp_hpa_pod_t p[64];
    sharp_hpa_decision_t d;
    fill(p, 1, 1000);
    assert_int_equal(sharp_hpa_sync(h, 0, 1, p, 1, &d), 5);
    assert_int_equal(d.metric_desired, 10);
    assert_string_equal(d.limit_reason, "ScaleUpLimit");
    /* within the period the limit is taken from its start: 1 */
    assert_int_equal(sharp_hpa_scale_up_limit(h, 0, 5), 5);
    fill(p, 5, 200);
    assert_int_equal(sharp_hpa_sync(h, 15, 5, p, 5, &d), 10);
    sharp_hpa_free(h);

    h = sharp_hpa_new(&c);
    fill(p, 10, 500);
    assert_int_equal(sharp_hpa_sync(h, 0, 10, p, 10, &d), 20);
    /* no stabilization on the way up: the lowest recent recommendation is
     * not waited for */
    assert_string_equal(d.able_reason, "ReadyForNewScale");
    sharp_hpa_free(h);
}

static void doc_scale_down_policies(void **state)
{
    (void)state;
    /* The documentation's example: policies of 4 pods and of 10% per 60 s,
     * the larger change selected; 80 replicas to be scaled down to 10:
     * "during the first step 8 replicas will be reduced. In the next
     * iteration when the number of replicas is 72, 10% of the pods is 7.2
     * but the number is rounded up to 8 ... When the number of replicas
     * falls below 40 the first policy (Pods) is applied and 4 replicas will
     * be reduced at a time." Syncs one period apart; the pods idle, so the
     * metric asks for fewer than 10 (min_replicas 10 stands for the target
     * of 10) and the stabilization window holds nothing higher. */
    sharp_hpa_config_t c;
    config(&c, 50, 10, 100);
    c.scale_down.n_policies = 2;
    c.scale_down.policies[0] = (sharp_hpa_policy_t){SHARP_HPA_POLICY_PODS, 4, 60};
    c.scale_down.policies[1] = (sharp_hpa_policy_t){SHARP_HPA_POLICY_PERCENT, 10, 60};
    sharp_hpa_t *h = sharp_hpa_new(&c);
    assert_non_null(h);
    static const int expect[] = {72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10, 10};
    int current = 80;
    sharp_hpa_pod_t p[80];
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        fill(p, current, 0);
        sharp_hpa_decision_t d;
        int next = sharp_hpa_sync(h, 60.0 * (double)i, current, p, current, &d);
        assert_int_equal(d.metric_desired, 0);
        assert_string_equal(d.limit_reason, next > 10 ? "ScaleDownLimit" : "TooFewReplicas");
        if (next != expect[i])
            fail_msg("step %zu: %d -> %d, expected %d", i, current, next, expect[i]);
        current = next;
    }
    sharp_hpa_free(h);
}

static void rate_limit_spans_the_period(void **state)
{
    (void)state;
    /* With 15 s syncs and a 60 s policy, the 10% taken at t=0 is counted
     * until t=60 (an event counts while strictly after now - period): no
     * further scale-down at 15, 30, 45; the next 10% at 60. */
    sharp_hpa_config_t c;
    config(&c, 50, 1, 100);
    c.scale_down.stabilization_window_s = 0;
    c.scale_down.policies[0] = (sharp_hpa_policy_t){SHARP_HPA_POLICY_PERCENT, 10, 60};
    sharp_hpa_t *h = sharp_hpa_new(&c);
    sharp_hpa_pod_t p[100];
    sharp_hpa_decision_t d;
    int current = 100;
    static const int expect[] = {90, 90, 90, 90, 81};
    for (int i = 0; i < 5; i++) {
        fill(p, current, 100); /* 10% against 50%: desired far below */
        int next = sharp_hpa_sync(h, 15.0 * i, current, p, current, &d);
        if (next != expect[i])
            fail_msg("t=%d: %d -> %d, expected %d", 15 * i, current, next, expect[i]);
        current = next;
    }
    assert_string_equal(d.limit_reason, "ScaleDownLimit");
    /* the scale-down made at 60 counts against both directions: each
     * period starts from 81 + 9 = 90 (the 10 removed at 0 is out) */
    assert_int_equal(sharp_hpa_scale_down_limit(h, 61, 81), 81);
    assert_int_equal(sharp_hpa_scale_up_limit(h, 61, 81), 180); /* +100% of 90 beats +4 */
    sharp_hpa_free(h);
}

static void doc_stabilization_window(void **state)
{
    (void)state;
    /* "When the metrics indicate that the target should be scaled down the
     * algorithm looks into previously computed desired states, and uses
     * the highest value from the specified interval": default 300 s. A
     * recommendation of 10 at t=0, then 4: the count stays 10 until the 10
     * leaves the window (strictly after now - 300), at t=300. */
    sharp_hpa_config_t c;
    config(&c, 50, 1, 100);
    sharp_hpa_t *h = sharp_hpa_new(&c);
    sharp_hpa_pod_t p[10];
    sharp_hpa_decision_t d;
    fill(p, 10, 500);
    assert_int_equal(sharp_hpa_sync(h, 0, 10, p, 10, &d), 10);
    fill(p, 10, 200); /* desired 4 */
    for (int t = 15; t < 300; t += 15) {
        assert_int_equal(sharp_hpa_sync(h, t, 10, p, 10, &d), 10);
        assert_int_equal(d.metric_desired, 4);
        assert_string_equal(d.able_reason, "ScaleDownStabilized");
    }
    assert_int_equal(sharp_hpa_sync(h, 300, 10, p, 10, &d), 4);
    sharp_hpa_free(h);

    /* a lower recommendation in the window does not pull a higher one down:
     * 10, then 6, then 8 -> max(6, 8) over the window after 10 leaves */
    h = sharp_hpa_new(&c);
    fill(p, 10, 500);
    sharp_hpa_sync(h, 0, 10, p, 10, &d);
    fill(p, 10, 300); /* desired 6 */
    sharp_hpa_sync(h, 100, 10, p, 10, &d);
    fill(p, 10, 400); /* desired 8 */
    sharp_hpa_sync(h, 200, 10, p, 10, &d);
    assert_int_equal(d.desired, 10);
    fill(p, 10, 100); /* desired 2 */
    assert_int_equal(sharp_hpa_sync(h, 301, 10, p, 10, &d), 8);
    sharp_hpa_free(h);
}

static void scale_up_stabilization(void **state)
{
    (void)state;
    /* With a scale-up window the lowest recommendation of the window is
     * used: 10 (t=0), then 20 at t=30 with a 60 s window -> stays 10 until
     * the 10 leaves the window, then 20. */
    sharp_hpa_config_t c;
    config(&c, 50, 1, 100);
    c.scale_up.stabilization_window_s = 60;
    sharp_hpa_t *h = sharp_hpa_new(&c);
    sharp_hpa_pod_t p[10];
    sharp_hpa_decision_t d;
    fill(p, 10, 500); /* 50%: the current 10 */
    assert_int_equal(sharp_hpa_sync(h, 0, 10, p, 10, &d), 10);
    fill(p, 10, 1000); /* desired 20 */
    assert_int_equal(sharp_hpa_sync(h, 30, 10, p, 10, &d), 10);
    assert_int_equal(d.metric_desired, 20);
    assert_string_equal(d.able_reason, "ScaleUpStabilized");
    assert_int_equal(sharp_hpa_sync(h, 61, 10, p, 10, &d), 20);
    sharp_hpa_free(h);

    /* without one (the default) the first sync already goes the whole way
     * down: nothing is in the scale-down window yet */
    config(&c, 50, 1, 100);
    h = sharp_hpa_new(&c);
    fill(p, 10, 100); /* desired 2 */
    assert_int_equal(sharp_hpa_sync(h, 0, 10, p, 10, &d), 2);
    sharp_hpa_free(h);
}

static void bounds_and_disabled(void **state)
{
    (void)state;
    sharp_hpa_config_t c;
    config(&c, 50, 2, 12);
    sharp_hpa_t *h = sharp_hpa_new(&c);
    sharp_hpa_pod_t p[20];
    sharp_hpa_decision_t d;
    /* above max or below min: brought back without the metrics */
    fill(p, 20, 10);
    assert_int_equal(sharp_hpa_sync(h, 0, 20, p, 20, &d), 12);
    assert_string_equal(d.limit_reason, "TooManyReplicas");
    assert_int_equal(d.metric_desired, -1);
    fill(p, 1, 1000);
    assert_int_equal(sharp_hpa_sync(h, 15, 1, p, 1, &d), 2);
    assert_string_equal(d.limit_reason, "TooFewReplicas");
    /* a desired count above max is cut to it */
    fill(p, 8, 1000); /* desired 16 */
    assert_int_equal(sharp_hpa_sync(h, 100, 8, p, 8, &d), 12);
    assert_string_equal(d.limit_reason, "TooManyReplicas");
    /* zero replicas: scaling disabled */
    assert_int_equal(sharp_hpa_sync(h, 200, 0, p, 0, &d), 0);
    assert_string_equal(d.limit_reason, "ScalingDisabled");
    /* a metric failure changes nothing */
    sharp_hpa_pod_t u[2] = {unready(pod(100, 1000)), unready(pod(100, 1000))};
    assert_int_equal(sharp_hpa_sync(h, 215, 2, u, 2, &d), 2);
    assert_false(d.metrics_ok);
    assert_non_null(strstr(d.error, "did not receive metrics"));
    sharp_hpa_free(h);

    c.scale_up.select = SHARP_HPA_SELECT_DISABLED;
    h = sharp_hpa_new(&c);
    fill(p, 4, 1000);
    assert_int_equal(sharp_hpa_sync(h, 0, 4, p, 4, &d), 4);
    sharp_hpa_free(h);

    /* selectPolicy Min picks the smaller change: 4 pods vs 100% of 10 */
    config(&c, 50, 1, 100);
    c.scale_up.select = SHARP_HPA_SELECT_MIN;
    h = sharp_hpa_new(&c);
    fill(p, 10, 1000);
    assert_int_equal(sharp_hpa_sync(h, 0, 10, p, 10, &d), 14);
    sharp_hpa_free(h);
}

static void advice_records_no_scale_event(void **state)
{
    (void)state;
    sharp_hpa_config_t c;
    config(&c, 50, 1, 100);
    sharp_hpa_t *h = sharp_hpa_new(&c);
    sharp_hpa_pod_t p[10];
    sharp_hpa_decision_t d;
    fill(p, 10, 1000);
    assert_int_equal(sharp_hpa_advise(h, 0, 10, p, 10, &d), 20);
    /* not applied: the period still starts from 10 */
    assert_int_equal(sharp_hpa_scale_up_limit(h, 1, 10), 20);
    sharp_hpa_record_scale(h, 0, 10, 20);
    assert_int_equal(sharp_hpa_scale_up_limit(h, 1, 20), 20);
    sharp_hpa_free(h);
}

static void config_validation(void **state)
{
    (void)state;
    sharp_hpa_config_t c;
    sharp_hpa_config_default(&c);
    assert_null(sharp_hpa_config_check(&c));
    assert_int_equal(c.scale_up.policies[0].value, 4);
    assert_int_equal(c.scale_up.policies[1].value, 100);
    assert_int_equal(c.scale_down.stabilization_window_s, 300);
    c.max_replicas = 0;
    assert_non_null(sharp_hpa_config_check(&c));
    assert_null(sharp_hpa_new(&c));
    sharp_hpa_config_default(&c);
    c.scale_down.policies[0].period_s = 1801;
    assert_non_null(sharp_hpa_config_check(&c));
    sharp_hpa_config_default(&c);
    c.scale_up.n_policies = 0;
    assert_non_null(sharp_hpa_config_check(&c));
    sharp_hpa_config_default(&c);
    c.target_utilization = 0;
    assert_non_null(sharp_hpa_config_check(&c));
    sharp_hpa_config_default(&c);
    c.scale_up.stabilization_window_s = 3601;
    assert_non_null(sharp_hpa_config_check(&c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(doc_ratio_doubles_and_halves),
        cmocka_unit_test(doc_tolerance),
        cmocka_unit_test(utilization_is_an_integer_percentage),
        cmocka_unit_test(upstream_scale_up),
        cmocka_unit_test(upstream_unready_less_scale),
        cmocka_unit_test(upstream_unready_no_scale),
        cmocka_unit_test(upstream_hot_cpu),
        cmocka_unit_test(upstream_scale_down),
        cmocka_unit_test(upstream_pending_failed_deleted),
        cmocka_unit_test(upstream_tolerance),
        cmocka_unit_test(upstream_missing_metrics),
        cmocka_unit_test(upstream_missing_and_unready),
        cmocka_unit_test(calculator_errors),
        cmocka_unit_test(doc_default_scale_up_rate),
        cmocka_unit_test(doc_scale_down_policies),
        cmocka_unit_test(rate_limit_spans_the_period),
        cmocka_unit_test(doc_stabilization_window),
        cmocka_unit_test(scale_up_stabilization),
        cmocka_unit_test(bounds_and_disabled),
        cmocka_unit_test(advice_records_no_scale_event),
        cmocka_unit_test(config_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

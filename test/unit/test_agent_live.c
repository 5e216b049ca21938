/* The scaling agent on live signals (proxy/agent/live.c): the observation
 * built from recorded raw signals, value by value in the simulator's units;
 * missing values; and the controller's decisions in every mode: the policy
 * through the guardian (ACTIVE), the HPA rule applied with the policy's
 * proposal reported (SHADOW), the HPA rule alone (OFF), the fallback for
 * observations outside the trained range and without a policy, the
 * utilization the HPA rule reads, and the count in force following the
 * recommendations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* |a - b| <= tol, with both values in the message. */
#define assert_near(a, b, tol) \
    do { \
        double a_ = (a), b_ = (b); \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g", #a, a_, b_); \
    } while (0)

#include "agent/live.h"
#include "agent/rng.h"

static sharp_scaling_live_config_t config(sharp_scaling_mode_t mode)
{
    sharp_scaling_live_config_t c = {
        .mode = mode,
        .min_replicas = 2,
        .max_replicas = 20,
        .initial_replicas = 4,
        .sync_period_s = 15.0,
        .target_utilization = 50,
        .per_replica_concurrency = 4,
        .slo_p99_s = 0.5,
        .slo_error_rate = 0.01,
    };
    return c;
}

/* A minute of a cluster at 400 requests/s: recorded values. */
static sharp_scaling_signals_t recorded(void)
{
    sharp_scaling_signals_t s = {0};
    s.cluster_present = true;
    s.seconds = 15.0;
    s.offered = 6000.0; /* 400/s */
    s.errors = 30.0;
    s.shed = 60.0;
    s.has_p99 = true;
    s.p99_s = 0.180;
    s.inflight_mean = 6.0;
    s.ready = 3;
    s.replicas = 4;
    s.has_prev = true;
    s.prev_rate = 320.0;
    return s;
}

static void observation_free_of_scale(void **state)
{
    (void)state;
    sharp_scaling_live_config_t c = config(SHARP_SCALING_ACTIVE); /* 4 requests at once per replica, p99 0.5 s */
    sharp_scaling_signals_t s = recorded();
    double obs[SHARP_SCALE_OBS_N];
    bool present[SHARP_SCALE_OBS_N];
    sharp_scaling_live_observe(&c, &s, obs, present);
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++)
        assert_true(present[i]);
    assert_near(obs[SHARP_SCALE_OBS_UTIL], 6.0 / (3 * 4), 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_UTIL_ASKED], 6.0 / (4 * 4), 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_RATE_CHANGE], log(400.0 / 320.0), 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_P99], 0.180 / 0.5, 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_ERROR_RATE], 30.0 / 6000.0, 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_SHED_RATE], 60.0 / 6000.0, 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_BOOTING], 0.25, 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_INV_REPLICAS], 0.25, 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_FROM_PEAK], 0.0, 0); /* no peak above the rate */
    s.peak_rate = 800.0;
    sharp_scaling_live_observe(&c, &s, obs, present);
    assert_near(obs[SHARP_SCALE_OBS_FROM_PEAK], log(0.5), 1e-12);
    /* ten times the cluster, the load and its concurrency: the same
     * observation */
    double big[SHARP_SCALE_OBS_N];
    s.offered *= 10;
    s.errors *= 10;
    s.shed *= 10;
    s.prev_rate *= 10;
    s.peak_rate *= 10;
    s.inflight_mean *= 10;
    s.ready *= 10;
    s.replicas *= 10;
    sharp_scaling_live_observe(&c, &s, big, present);
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++)
        if (i != SHARP_SCALE_OBS_INV_REPLICAS)
            assert_near(big[i], obs[i], 1e-12);
    /* deep overload and a jump are capped */
    s.inflight_mean = 1e6;
    s.p99_s = 30.0;
    s.prev_rate = 1.0;
    sharp_scaling_live_observe(&c, &s, obs, present);
    assert_near(obs[SHARP_SCALE_OBS_UTIL], SHARP_SCALE_OBS_CAP, 0);
    assert_near(obs[SHARP_SCALE_OBS_UTIL_ASKED], SHARP_SCALE_OBS_CAP, 0);
    assert_near(obs[SHARP_SCALE_OBS_P99], SHARP_SCALE_OBS_CAP, 0);
    assert_near(obs[SHARP_SCALE_OBS_RATE_CHANGE], SHARP_SCALE_OBS_CHANGE_CAP, 0);
    s.prev_rate = 1e9;
    sharp_scaling_live_observe(&c, &s, obs, present);
    assert_near(obs[SHARP_SCALE_OBS_RATE_CHANGE], -SHARP_SCALE_OBS_CHANGE_CAP, 0);
}

static void first_period_and_missing_values(void **state)
{
    (void)state;
    sharp_scaling_live_config_t c = config(SHARP_SCALING_ACTIVE);
    sharp_scaling_signals_t s = recorded();
    s.has_prev = false; /* as the simulator's first step: no change */
    s.has_p99 = false;  /* no request completed in any second */
    s.offered = 0.0;
    s.errors = s.shed = 0.0;
    s.replicas = 0;
    s.ready = 0;
    double obs[SHARP_SCALE_OBS_N];
    bool present[SHARP_SCALE_OBS_N];
    sharp_scaling_live_observe(&c, &s, obs, present);
    assert_near(obs[SHARP_SCALE_OBS_RATE_CHANGE], 0.0, 0);
    assert_false(present[SHARP_SCALE_OBS_P99]);
    assert_near(obs[SHARP_SCALE_OBS_P99], 0.0, 0);
    assert_true(present[SHARP_SCALE_OBS_UTIL]);
    /* no division by zero: shares of nothing are 0, a count of 0 divides as 1 */
    assert_near(obs[SHARP_SCALE_OBS_ERROR_RATE], 0.0, 0);
    assert_near(obs[SHARP_SCALE_OBS_SHED_RATE], 0.0, 0);
    assert_near(obs[SHARP_SCALE_OBS_UTIL], 6.0 / 4, 1e-12);
    assert_near(obs[SHARP_SCALE_OBS_BOOTING], 0.0, 0);
    assert_near(obs[SHARP_SCALE_OBS_INV_REPLICAS], 1.0, 0);
    /* traffic that stopped, and traffic from nothing */
    s.has_prev = true;
    sharp_scaling_live_observe(&c, &s, obs, present);
    assert_near(obs[SHARP_SCALE_OBS_RATE_CHANGE], -SHARP_SCALE_OBS_CHANGE_CAP, 0);
    s.prev_rate = 0.0;
    s.offered = 15.0;
    sharp_scaling_live_observe(&c, &s, obs, present);
    assert_near(obs[SHARP_SCALE_OBS_RATE_CHANGE], SHARP_SCALE_OBS_CHANGE_CAP, 0);
    /* a cluster that is not there: nothing measured */
    s.cluster_present = false;
    sharp_scaling_live_observe(&c, &s, obs, present);
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++)
        assert_false(present[i]);
}

/* A small policy of the scaling environment's shape whose most probable
 * action is `action` for every observation (the actor's output biases),
 * trained range [lo, hi] of the utilization and wide for the rest. */
static sharp_policy_t *policy_for(int action, double util_lo, double util_hi)
{
    int hidden[1] = {8};
    sharp_policy_t *p = sharp_policy_new(SHARP_SCALE_OBS_N, SHARP_SCALE_ACTIONS, hidden, 1, false, 10.0);
    assert_non_null(p);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 7);
    sharp_policy_init_weights(p, &rng);
    /* the actor's last layer: 8 x 10 weights then 10 biases, after the
     * first layer's SHARP_SCALE_OBS_N x 8 + 8 */
    size_t last = (size_t)SHARP_SCALE_OBS_N * 8 + 8;
    for (size_t i = 0; i < 8 * SHARP_SCALE_ACTIONS; i++)
        p->params[last + i] = 0.0;
    for (int a = 0; a < SHARP_SCALE_ACTIONS; a++)
        p->params[last + 8 * SHARP_SCALE_ACTIONS + (size_t)a] = a == action ? 3.0 : 0.0;
    p->has_range = true;
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++) {
        p->range_lo[i] = -1e9;
        p->range_hi[i] = 1e9;
    }
    p->range_lo[SHARP_SCALE_OBS_UTIL] = util_lo;
    p->range_hi[SHARP_SCALE_OBS_UTIL] = util_hi;
    return p;
}

static sharp_scaling_live_t *make(sharp_scaling_mode_t mode, sharp_policy_t *p, const char *perr)
{
    sharp_scaling_live_config_t c = config(mode);
    char err[256];
    sharp_scaling_live_t *l = sharp_scaling_live_new(&c, p, perr, err, sizeof err);
    if (!l)
        fail_msg("%s", err);
    return l;
}

/* Signals whose utilization is 100% of 4 ready replicas x 4: the HPA rule
 * at a 50% target asks for twice as many. */
static sharp_scaling_signals_t busy(void)
{
    sharp_scaling_signals_t s = recorded();
    s.ready = 4;
    s.inflight_mean = 16.0;
    return s;
}

static void recent_peak(void **state)
{
    (void)state;
    /* 5 minutes of 15 s periods: 20 */
    assert_int_equal(sharp_scale_peak_keep(15.0), 20);
    assert_int_equal(sharp_scale_peak_keep(1.0), SHARP_SCALE_PEAK_SLOTS);
    assert_int_equal(sharp_scale_peak_keep(600.0), 1);
    sharp_scale_peak_t w;
    sharp_scale_peak_reset(&w);
    assert_near(sharp_scale_peak_push(&w, 100.0, 3), 100.0, 0);
    assert_near(sharp_scale_peak_push(&w, 400.0, 3), 400.0, 0);
    assert_near(sharp_scale_peak_push(&w, 200.0, 3), 400.0, 0);
    assert_near(sharp_scale_peak_push(&w, 150.0, 3), 400.0, 0);
    assert_near(sharp_scale_peak_push(&w, 120.0, 3), 200.0, 0); /* 400 left the window */
    assert_near(sharp_scale_peak_push(&w, NAN, 3), 150.0, 0);

    /* the controller keeps the window: a burst, then the lull after it */
    sharp_scaling_live_t *l = make(SHARP_SCALING_OFF, NULL, NULL);
    sharp_scaling_signals_t s = recorded();
    sharp_scaling_step_t d;
    sharp_scaling_live_step(l, 0.0, &s, &d);
    assert_near(d.obs[SHARP_SCALE_OBS_FROM_PEAK], 0.0, 0); /* at its own peak */
    s.offered = 4 * 6000.0;
    sharp_scaling_live_step(l, 15.0, &s, &d);
    assert_near(d.obs[SHARP_SCALE_OBS_FROM_PEAK], 0.0, 0);
    s.offered = 6000.0;
    sharp_scaling_live_step(l, 30.0, &s, &d);
    assert_near(d.obs[SHARP_SCALE_OBS_FROM_PEAK], log(0.25), 1e-12);
    /* 20 periods later the burst is out of the window */
    for (int i = 0; i < 19; i++)
        sharp_scaling_live_step(l, 45.0 + 15 * i, &s, &d);
    assert_near(d.obs[SHARP_SCALE_OBS_FROM_PEAK], 0.0, 0);
    /* a period without the cluster starts the window over */
    s.offered = 4 * 6000.0;
    sharp_scaling_live_step(l, 400.0, &s, &d);
    s.cluster_present = false;
    sharp_scaling_live_step(l, 415.0, &s, &d);
    s.cluster_present = true;
    s.offered = 6000.0;
    sharp_scaling_live_step(l, 430.0, &s, &d);
    assert_near(d.obs[SHARP_SCALE_OBS_FROM_PEAK], 0.0, 0);
    sharp_scaling_live_free(l);
}

static void active_applies_the_policy_through_the_guardian(void **state)
{
    (void)state;
    /* +25% of 4 is 5 */
    sharp_scaling_live_t *l = make(SHARP_SCALING_ACTIVE, policy_for(7, 0.0, 1e6), NULL);
    assert_int_equal(sharp_scaling_live_current(l), 4);
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    int rec = sharp_scaling_live_step(l, 1000.0, &s, &d);
    assert_true(d.ran_policy);
    assert_int_equal(d.action, 7);
    assert_string_equal(sharp_scale_action_name(d.action), "+25%");
    double sum = 0.0;
    for (int i = 0; i < SHARP_SCALE_ACTIONS; i++) {
        sum += d.probs[i];
        if (i != 7)
            assert_true(d.probs[i] < d.probs[7]);
    }
    assert_near(sum, 1.0, 1e-9);
    assert_true(d.guarded);
    assert_int_equal(d.guard.verdict, SHARP_GUARD_ACCEPT);
    assert_int_equal(rec, 5);
    assert_int_equal(d.recommendation, 5);
    /* the HPA rule read 100% against 50%: 8, reported but not applied */
    assert_near(d.utilization, 100.0, 1e-9);
    assert_true(d.hpa.metrics_ok);
    assert_int_equal(d.hpa.desired, 8);
    /* the count in force follows: the next +25% is of 5 */
    assert_int_equal(sharp_scaling_live_current(l), 5);
    s.ready = 5;
    s.inflight_mean = 10.0;
    rec = sharp_scaling_live_step(l, 1015.0, &s, &d);
    assert_int_equal(d.current, 5);
    assert_near(d.obs[SHARP_SCALE_OBS_INV_REPLICAS], 1.0 / 5, 1e-12);
    assert_int_equal(rec, 7);
    sharp_scaling_live_free(l);
}

static void active_is_clamped_by_the_guardian(void **state)
{
    (void)state;
    /* +100% of 4 is 8: doubling, accepted */
    sharp_scaling_live_t *l = make(SHARP_SCALING_ACTIVE, policy_for(9, 0.0, 1e6), NULL);
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    assert_int_equal(sharp_scaling_live_step(l, 0.0, &s, &d), 8);
    assert_int_equal(d.guard.verdict, SHARP_GUARD_ACCEPT);
    /* 16 within the minute after 4 is more than doubling: held at 8 */
    assert_int_equal(sharp_scaling_live_step(l, 15.0, &s, &d), 8);
    assert_int_equal(d.guard.verdict, SHARP_GUARD_CLAMP);
    assert_int_equal(d.guard.agent, 16);
    assert_true(d.guard.rules & SHARP_GUARD_RULE_GROWTH);
    /* a minute after the 4, 16 is allowed */
    assert_int_equal(sharp_scaling_live_step(l, 75.0, &s, &d), 16);
    /* 20 at most */
    assert_int_equal(sharp_scaling_live_step(l, 150.0, &s, &d), 20);
    assert_true(d.guard.rules & SHARP_GUARD_RULE_MAX);
    sharp_scaling_live_free(l);
}

/* In an overload whose requests queue, the HPA rule's utilization (in
 * flight over the ready replicas' concurrency) passes 100% and the rule
 * doubles the count every sync; the controller's guardian lets the agent
 * grow as fast (growth_to_hpa), where the minute's doubling alone would
 * hold it at 8. */
static void active_grows_as_fast_as_the_hpa_rule(void **state)
{
    (void)state;
    sharp_scaling_live_t *l = make(SHARP_SCALING_ACTIVE, policy_for(9, 0.0, 1e6), NULL);
    sharp_scaling_signals_t s = busy();
    s.inflight_mean = 4 * 4 * 4.0; /* 400% of 4 ready x 4 */
    sharp_scaling_step_t d;
    assert_int_equal(sharp_scaling_live_step(l, 0.0, &s, &d), 8);
    assert_int_equal(d.hpa.desired, 8); /* its own limit: +100% */
    s.ready = 8;
    s.inflight_mean = 8 * 4 * 4.0;
    assert_int_equal(sharp_scaling_live_step(l, 15.0, &s, &d), 16);
    assert_int_equal(d.hpa.desired, 16);
    assert_int_equal(d.guard.verdict, SHARP_GUARD_ACCEPT);
    /* never past the HPA's: +100% of 16 is 32, the rule says 20 (max) */
    s.ready = 16;
    s.inflight_mean = 16 * 4 * 4.0;
    assert_int_equal(sharp_scaling_live_step(l, 30.0, &s, &d), 20);
    sharp_scaling_live_free(l);
}

static void shadow_applies_the_hpa_rule(void **state)
{
    (void)state;
    sharp_scaling_live_t *l = make(SHARP_SCALING_SHADOW, policy_for(0, 0.0, 1e6), NULL);
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    for (int i = 0; i < 6; i++) {
        int rec = sharp_scaling_live_step(l, 15.0 * i, &s, &d);
        assert_true(d.ran_policy);
        assert_int_equal(d.action, 0); /* -50% proposed ... */
        assert_int_equal(d.guard.verdict, SHARP_GUARD_SHADOW);
        assert_int_equal(rec, d.hpa.desired); /* ... the HPA rule's count applied */
        assert_int_equal(sharp_scaling_live_current(l), d.hpa.desired);
        s.ready = rec; /* the replicas come up */
        s.inflight_mean = 2.0 * rec;
    }
    /* at 2 in flight per replica of 4 the utilization is the target: held */
    assert_near(d.utilization, 50.0, 1e-9);
    assert_int_equal(d.recommendation, 8);
    sharp_scaling_live_free(l);
}

static void off_runs_only_the_hpa_rule(void **state)
{
    (void)state;
    sharp_scaling_live_t *l = make(SHARP_SCALING_OFF, policy_for(9, 0.0, 1e6), NULL);
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    assert_int_equal(sharp_scaling_live_step(l, 0.0, &s, &d), 8);
    assert_false(d.ran_policy);
    assert_int_equal(d.action, -1);
    assert_false(d.guarded);
    assert_non_null(strstr(d.guard.reason, "mode OFF"));
    sharp_scaling_live_free(l);
}

static void fallback_outside_the_trained_range(void **state)
{
    (void)state;
    /* trained on utilizations up to 0.9; 100% is outside */
    sharp_scaling_live_t *l = make(SHARP_SCALING_ACTIVE, policy_for(9, 0.0, 0.9), NULL);
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    int rec = sharp_scaling_live_step(l, 0.0, &s, &d);
    assert_true(d.ran_policy); /* it ran and its answer was not trusted */
    assert_int_equal(d.guard.verdict, SHARP_GUARD_FALLBACK);
    assert_int_equal(d.guard.obs_index, SHARP_SCALE_OBS_UTIL);
    assert_int_equal(rec, d.hpa.desired);
    assert_int_equal(rec, 8);
    /* a missing p99 (no request in any second) falls back too, the policy
     * not run on a made-up value */
    s.has_p99 = false;
    s.inflight_mean = 8.0;
    rec = sharp_scaling_live_step(l, 15.0, &s, &d);
    assert_false(d.ran_policy);
    assert_int_equal(d.guard.verdict, SHARP_GUARD_FALLBACK);
    assert_int_equal(d.guard.obs_index, SHARP_SCALE_OBS_P99);
    assert_int_equal(rec, d.hpa.desired);
    sharp_scaling_live_free(l);
}

static void no_policy_falls_back_with_the_reason(void **state)
{
    (void)state;
    sharp_scaling_live_t *l = make(SHARP_SCALING_ACTIVE, NULL, "weights file 'x.pol': bad magic");
    assert_string_equal(sharp_scaling_live_policy_error(l), "weights file 'x.pol': bad magic");
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    assert_int_equal(sharp_scaling_live_step(l, 0.0, &s, &d), 8);
    assert_false(d.ran_policy);
    assert_int_equal(d.guard.verdict, SHARP_GUARD_FALLBACK);
    assert_non_null(strstr(d.guard.reason, "bad magic"));
    /* no cluster: the HPA has no pods and keeps the count */
    s.cluster_present = false;
    assert_int_equal(sharp_scaling_live_step(l, 15.0, &s, &d), 8);
    assert_false(d.hpa.metrics_ok);
    sharp_scaling_live_free(l);
}

static void objective_violations(void **state)
{
    (void)state;
    sharp_scaling_live_t *l = make(SHARP_SCALING_OFF, NULL, NULL);
    sharp_scaling_signals_t s = busy();
    sharp_scaling_step_t d;
    s.errors = s.shed = 0.0;
    s.p99_s = 0.4;
    sharp_scaling_live_step(l, 0.0, &s, &d);
    assert_false(d.violated);
    s.p99_s = 0.6; /* above 500 ms */
    sharp_scaling_live_step(l, 15.0, &s, &d);
    assert_true(d.violated);
    s.p99_s = 0.4;
    s.shed = 61.0; /* 61 of 6000 > 1% */
    sharp_scaling_live_step(l, 30.0, &s, &d);
    assert_true(d.violated);
    s.shed = 30.0;
    s.errors = 30.0; /* exactly 1%: not more */
    sharp_scaling_live_step(l, 45.0, &s, &d);
    assert_false(d.violated);
    sharp_scaling_live_free(l);
}

static void config_and_policy_checks(void **state)
{
    (void)state;
    char err[256];
    sharp_scaling_live_config_t c = config(SHARP_SCALING_ACTIVE);
    assert_null(sharp_scaling_live_config_check(&c));
    c.max_replicas = 1;
    assert_non_null(strstr(sharp_scaling_live_config_check(&c), "max_replicas"));
    assert_null(sharp_scaling_live_new(&c, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "max_replicas must not be less than min_replicas"));
    c = config(SHARP_SCALING_ACTIVE);
    c.initial_replicas = 30;
    assert_non_null(strstr(sharp_scaling_live_config_check(&c), "initial_replicas"));
    c = config(SHARP_SCALING_ACTIVE);
    c.per_replica_concurrency = 0;
    assert_non_null(strstr(sharp_scaling_live_config_check(&c), "per_replica_concurrency"));
    /* a policy of another environment (CartPole's 4 observations, 2 actions) */
    int hidden[1] = {4};
    sharp_policy_t *p = sharp_policy_new(4, 2, hidden, 1, false, 10.0);
    c = config(SHARP_SCALING_ACTIVE);
    assert_null(sharp_scaling_live_new(&c, p, NULL, err, sizeof err));
    assert_non_null(strstr(err, "4 observations and 2 actions"));
    sharp_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(observation_free_of_scale),
        cmocka_unit_test(recent_peak),
        cmocka_unit_test(first_period_and_missing_values),
        cmocka_unit_test(active_applies_the_policy_through_the_guardian),
        cmocka_unit_test(active_is_clamped_by_the_guardian),
        cmocka_unit_test(active_grows_as_fast_as_the_hpa_rule),
        cmocka_unit_test(shadow_applies_the_hpa_rule),
        cmocka_unit_test(off_runs_only_the_hpa_rule),
        cmocka_unit_test(fallback_outside_the_trained_range),
        cmocka_unit_test(no_policy_falls_back_with_the_reason),
        cmocka_unit_test(objective_violations),
        cmocka_unit_test(config_and_policy_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The scaling guardian (proxy/agent/guardian.c) on its own: every rule
 * with the verdict and reason it gives (min/max replicas, maximum step up
 * and down, no more than doubling within a minute (or up to the HPA's
 * scale-up), the scale-down
 * cooldown, the capacity rules on the load and its window, the HPA
 * ceiling), the fallback to the HPA for missing, stale, non-numeric and
 * out-of-range observations, shadow mode and its log, the history bound,
 * and the config checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "agent/guardian.h"

static sharp_guardian_config_t base_config(void)
{
    sharp_guardian_config_t c;
    sharp_guardian_config_default(&c);
    c.min_replicas = 2;
    c.max_replicas = 100;
    c.max_step_up = 32;
    c.max_step_down = 16;
    c.max_growth = 2.0;
    c.growth_window_s = 60.0;
    c.scale_down_cooldown_s = 120.0;
    c.scale_down_interval_s = 30.0;
    c.stale_after_s = 30.0;
    return c;
}

static sharp_guardian_t *make(const sharp_guardian_config_t *c)
{
    sharp_guardian_t *g = sharp_guardian_new(c);
    assert_non_null(g);
    return g;
}

static void expect(const sharp_guardian_decision_t *d, int applied, sharp_guardian_verdict_t v, unsigned rules,
                   const char *reason_part)
{
    if (d->applied != applied || d->verdict != v || d->rules != rules ||
        (reason_part && !strstr(d->reason, reason_part)))
        fail_msg("got applied %d verdict %s rules 0x%x reason '%s'; expected %d %s 0x%x '%s'", d->applied,
                 sharp_guardian_verdict_name(d->verdict), d->rules, d->reason, applied,
                 sharp_guardian_verdict_name(v), rules, reason_part ? reason_part : "");
}

static void accepts_within_limits(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    assert_int_equal(sharp_guardian_decide(g, 0, 10, 15, 11, NULL, &d), 15);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, "accepted");
    assert_int_equal(d.agent, 15);
    assert_int_equal(d.hpa, 11);
    assert_int_equal(d.obs_index, -1);
    /* holding is always accepted, even in the cooldown */
    sharp_guardian_decide(g, 15, 15, 15, 11, NULL, &d);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_free(g);
}

static void min_and_max_replicas(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    sharp_guardian_decide(g, 0, 3, 1, 3, NULL, &d);
    expect(&d, 2, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_MIN, "min_replicas: 1 raised to 2");
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 90, 110, 90, NULL, &d);
    expect(&d, 100, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_MAX, "max_replicas: 110 lowered to 100");
    /* max wins over the cooldown: a count above max comes down at once */
    sharp_guardian_decide(g, 15, 120, 120, 120, NULL, &d);
    expect(&d, 100, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_MAX, "max_replicas");
    /* and min over a scale-down the cooldown would refuse anyway */
    sharp_guardian_decide(g, 30, 1, 1, 1, NULL, &d);
    expect(&d, 2, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_MIN, "min_replicas");
    /* absurd counts are bounded, not overflowed */
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 50, INT32_MAX, -5, NULL, &d);
    assert_int_equal(d.applied, 82);
    sharp_guardian_decide(g, 15, INT32_MAX, INT32_MIN, INT32_MAX, NULL, &d);
    assert_int_equal(d.applied, 100);
    sharp_guardian_free(g);
}

static void maximum_steps(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    c.max_growth = 10.0; /* isolate the step rules */
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    sharp_guardian_decide(g, 0, 40, 80, 40, NULL, &d);
    expect(&d, 72, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_STEP_UP, "max_step_up: +40 limited to +32");
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 80, 40, 80, NULL, &d);
    expect(&d, 64, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_STEP_DOWN, "max_step_down: -40 limited to -16");
    sharp_guardian_reset(g);
    /* exactly the step is allowed */
    sharp_guardian_decide(g, 0, 40, 72, 40, NULL, &d);
    expect(&d, 72, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_free(g);
}

static void doubling_within_a_minute(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    /* 8 in force at 0, 15, 30; at 45 the agent wants 30: at most 16 */
    for (int t = 0; t <= 30; t += 15)
        sharp_guardian_decide(g, t, 8, 8, 8, NULL, &d);
    sharp_guardian_decide(g, 45, 8, 30, 8, NULL, &d);
    expect(&d, 16, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 30 > 2 x 8");
    /* 15 s later 16 is in force, but 8 was within the last minute: no more */
    sharp_guardian_decide(g, 60, 16, 30, 16, NULL, &d);
    expect(&d, 16, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "the lowest count of the last 60 s");
    sharp_guardian_decide(g, 75, 16, 30, 16, NULL, &d);
    expect(&d, 16, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, NULL);
    sharp_guardian_decide(g, 90, 16, 30, 16, NULL, &d);
    expect(&d, 16, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, NULL);
    /* at 105 the minute since 16 took over (at 45) has passed: the 8 in
     * force before it is out of the window (strictly after now - 60 is in) */
    sharp_guardian_decide(g, 105, 16, 30, 16, NULL, &d);
    expect(&d, 30, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_decide(g, 120, 30, 60, 30, NULL, &d);
    expect(&d, 32, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 60 > 2 x 16");
    /* both limits at once: the step first, then the growth */
    sharp_guardian_decide(g, 135, 32, 70, 32, NULL, &d);
    expect(&d, 32, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_STEP_UP | SHARP_GUARD_RULE_GROWTH,
           "max_step_up: +38 limited to +32; growth: 64 > 2 x 16");
    sharp_guardian_free(g);

    /* a dip counts: 20 -> 10 -> back up is bounded by 2 x 10 */
    c.scale_down_cooldown_s = 0;
    c.scale_down_interval_s = 0;
    g = make(&c);
    sharp_guardian_decide(g, 0, 20, 10, 20, NULL, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_decide(g, 15, 10, 40, 10, NULL, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "2 x 10");
    /* the growth rule never forces a scale-down (a count raised by someone
     * else stays) */
    sharp_guardian_decide(g, 30, 50, 60, 20, NULL, &d);
    expect(&d, 50, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, NULL);
    sharp_guardian_free(g);
}

/* growth_to_hpa: the growth rule allows at least the HPA rule's scale-up
 * (never a count above both), and only a scale-up of the HPA's raises it. */
static void growth_up_to_the_hpa(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    assert_false(c.growth_to_hpa); /* not the default */
    c.growth_to_hpa = true;
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    for (int t = 0; t <= 30; t += 15)
        sharp_guardian_decide(g, t, 4, 4, 4, NULL, &d);
    /* 4 in force: 2 x 4 (or + 4) is 8, the HPA asks for 8: 8 */
    sharp_guardian_decide(g, 45, 4, 16, 8, NULL, &d);
    expect(&d, 8, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 16 > 2 x 4");
    /* 15 s later the HPA rule doubles again (16): the agent may follow,
     * where the lowest count of the minute (4) alone allows 8 */
    sharp_guardian_decide(g, 60, 8, 16, 16, NULL, &d);
    expect(&d, 16, SHARP_GUARD_ACCEPT, 0, NULL);
    /* asking for more than the HPA's is bounded by it */
    sharp_guardian_decide(g, 75, 16, 40, 32, NULL, &d);
    expect(&d, 32, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 40 > the HPA's 32");
    /* an HPA holding leaves the minute's rule: 2 x 8 (4 out of the window
     * from 105 on), which 32 in force already passes: no forced cut */
    sharp_guardian_decide(g, 105, 32, 40, 32, NULL, &d);
    expect(&d, 32, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 40 > 2 x 8");
    sharp_guardian_free(g);

    /* off: the minute's rule alone */
    c.growth_to_hpa = false;
    g = make(&c);
    for (int t = 0; t <= 30; t += 15)
        sharp_guardian_decide(g, t, 4, 4, 4, NULL, &d);
    sharp_guardian_decide(g, 45, 4, 16, 8, NULL, &d);
    expect(&d, 8, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, NULL);
    sharp_guardian_decide(g, 60, 8, 16, 16, NULL, &d);
    expect(&d, 8, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 16 > 2 x 4");
    sharp_guardian_free(g);
}

static void scale_down_cooldown(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    /* nothing changed yet: a scale-down goes */
    sharp_guardian_decide(g, 0, 20, 18, 20, NULL, &d);
    expect(&d, 18, SHARP_GUARD_ACCEPT, 0, NULL);
    /* after a fall (at 0), the next fall waits 30 s: the interval */
    sharp_guardian_decide(g, 15, 18, 15, 18, NULL, &d);
    expect(&d, 18, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_INTERVAL, "scale_down_interval: the count fell 15 s ago");
    sharp_guardian_decide(g, 29.5, 18, 15, 18, NULL, &d);
    expect(&d, 18, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_INTERVAL, "(< 30 s)");
    sharp_guardian_decide(g, 30, 18, 15, 18, NULL, &d);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, NULL);
    /* holding does not restart it */
    sharp_guardian_decide(g, 45, 15, 15, 15, NULL, &d);
    sharp_guardian_decide(g, 60, 15, 14, 15, NULL, &d);
    expect(&d, 14, SHARP_GUARD_ACCEPT, 0, NULL);
    /* neither rule holds back a scale-up */
    sharp_guardian_decide(g, 61, 14, 18, 14, NULL, &d);
    expect(&d, 18, SHARP_GUARD_ACCEPT, 0, NULL);
    /* after a rise, no scale-down for 120 s (flapping), even once the
     * interval since the last fall is over */
    sharp_guardian_decide(g, 121, 18, 15, 18, NULL, &d);
    expect(&d, 18, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_COOLDOWN, "scale_down_cooldown: the count rose 60 s ago");
    sharp_guardian_decide(g, 180.5, 18, 15, 18, NULL, &d);
    expect(&d, 18, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_COOLDOWN, "(< 120 s)");
    /* a rise restarts it */
    sharp_guardian_decide(g, 180.75, 18, 20, 18, NULL, &d);
    expect(&d, 20, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_decide(g, 261, 20, 15, 20, NULL, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_COOLDOWN, "80.25 s ago");
    sharp_guardian_decide(g, 300.75, 20, 15, 20, NULL, &d);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, NULL);
    /* the interval and the step combine: after it, the step still holds */
    sharp_guardian_decide(g, 315, 15, 2, 15, NULL, &d);
    expect(&d, 15, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_INTERVAL, NULL);
    sharp_guardian_decide(g, 400, 15, 2, 15, NULL, &d);
    expect(&d, 2, SHARP_GUARD_ACCEPT, 0, NULL);
    /* from 2, growth allows the HPA's 4 pods: 6, not 2 x 2 */
    sharp_guardian_decide(g, 420, 2, 20, 2, NULL, &d);
    expect(&d, 6, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, "growth: 20 > 2 x 2 (or + 4)");
    sharp_guardian_free(g);
    /* both at 0: every scale-down goes at once */
    c.scale_down_cooldown_s = 0;
    c.scale_down_interval_s = 0;
    g = make(&c);
    sharp_guardian_decide(g, 0, 20, 30, 20, NULL, &d);
    sharp_guardian_decide(g, 1, 30, 25, 30, NULL, &d);
    expect(&d, 25, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_decide(g, 2, 25, 20, 25, NULL, &d);
    expect(&d, 20, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_free(g);
    c.scale_down_interval_s = NAN;
    assert_non_null(sharp_guardian_config_check(&c));
    c.scale_down_interval_s = -1;
    assert_non_null(sharp_guardian_config_check(&c));
}

static void fallback_on_bad_observations(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    c.n_obs = 3;
    c.has_range = true;
    c.lo[0] = 0;
    c.hi[0] = 20000; /* a request rate */
    c.lo[1] = 0;
    c.hi[1] = 2; /* a p99 */
    c.lo[2] = -1;
    c.hi[2] = 1; /* a time-of-day coordinate */
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    double v[3] = {5000, 0.2, 0.5}, age[3] = {5, 5, 5};
    bool present[3] = {true, true, true};
    sharp_guardian_obs_t obs = {.value = v, .age_s = age, .present = present};

    sharp_guardian_decide(g, 0, 10, 30, 12, &obs, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_GROWTH, NULL); /* all good: the agent's, guarded */

    present[1] = false;
    sharp_guardian_decide(g, 15, 20, 30, 12, &obs, &d);
    expect(&d, 12, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_MISSING, "observation 1 missing");
    assert_int_equal(d.obs_index, 1);
    assert_int_equal(d.agent, 30);
    assert_non_null(strstr(d.reason, "acting on the HPA's 12"));
    present[1] = true;

    age[2] = 31;
    sharp_guardian_decide(g, 30, 12, 30, 14, &obs, &d);
    expect(&d, 14, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_STALE, "observation 2 stale (31 s old, limit 30 s)");
    age[2] = 30; /* the limit itself is fresh enough */
    sharp_guardian_decide(g, 45, 14, 14, 14, &obs, &d);
    expect(&d, 14, SHARP_GUARD_ACCEPT, 0, NULL);
    age[2] = NAN;
    sharp_guardian_decide(g, 50, 14, 14, 14, &obs, &d);
    expect(&d, 14, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_STALE, "stale");
    age[2] = 5;

    v[0] = NAN;
    sharp_guardian_decide(g, 60, 14, 30, 16, &obs, &d);
    expect(&d, 16, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_NAN, "observation 0 is not a number");
    v[0] = INFINITY;
    sharp_guardian_decide(g, 75, 16, 30, 16, &obs, &d);
    expect(&d, 16, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_NAN, NULL);
    v[0] = 25000;
    sharp_guardian_decide(g, 90, 16, 30, 18, &obs, &d);
    expect(&d, 18, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_RANGE,
           "observation 0 = 25000 outside the trained range [0, 20000]");
    v[0] = -1;
    sharp_guardian_decide(g, 105, 18, 30, 18, &obs, &d);
    expect(&d, 18, SHARP_GUARD_FALLBACK, SHARP_GUARD_RULE_OBS_RANGE, NULL);
    /* several at once: the first is named, every kind has its bit */
    v[0] = NAN;
    present[2] = false;
    v[1] = 5;
    sharp_guardian_decide(g, 120, 18, 30, 18, &obs, &d);
    expect(&d, 18, SHARP_GUARD_FALLBACK,
           SHARP_GUARD_RULE_OBS_NAN | SHARP_GUARD_RULE_OBS_RANGE | SHARP_GUARD_RULE_OBS_MISSING, "observation 0");
    assert_int_equal(d.obs_index, 0);
    /* the HPA's answer is still bounded by min/max */
    v[0] = NAN;
    sharp_guardian_decide(g, 135, 18, 30, 500, &obs, &d);
    assert_int_equal(d.applied, 100);
    assert_int_equal(d.verdict, SHARP_GUARD_FALLBACK);
    assert_true(d.rules & SHARP_GUARD_RULE_MAX);
    assert_non_null(strstr(d.reason, "bounded by min/max"));
    /* missing arrays count as missing */
    sharp_guardian_obs_t none = {.value = NULL};
    sharp_guardian_decide(g, 150, 18, 30, 18, &none, &d);
    expect(&d, 18, SHARP_GUARD_FALLBACK,
           SHARP_GUARD_RULE_OBS_MISSING, "observation 0 missing");
    sharp_guardian_free(g);

    /* without a range, any finite fresh value passes */
    c.has_range = false;
    g = make(&c);
    v[0] = 1e12;
    v[1] = 0.2;
    present[2] = true;
    sharp_guardian_decide(g, 0, 10, 12, 10, &obs, &d);
    expect(&d, 12, SHARP_GUARD_ACCEPT, 0, NULL);
    sharp_guardian_free(g);
}

typedef struct {
    int calls;
    char last[512];
} log_t;

static void capture(void *arg, const sharp_guardian_decision_t *d)
{
    log_t *l = arg;
    l->calls++;
    sharp_guardian_format(d, l->last, sizeof l->last);
}

static void shadow_mode(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    c.shadow = true;
    sharp_guardian_t *g = make(&c);
    log_t l = {0};
    sharp_guardian_set_log(g, capture, &l);
    sharp_guardian_decision_t d;
    /* the agent's proposal is computed and reported, the HPA's applied */
    sharp_guardian_decide(g, 0, 10, 15, 12, NULL, &d);
    expect(&d, 12, SHARP_GUARD_SHADOW, SHARP_GUARD_RULE_SHADOW, "shadow: acting on the HPA's 12");
    assert_int_equal(d.agent, 15);
    assert_int_equal(d.agent_guarded, 15);
    assert_int_equal(l.calls, 1);
    assert_non_null(strstr(l.last, "t=0 current=10 agent=15 guarded=15 hpa=12 applied=12 verdict=shadow"));
    /* the rules are applied to the proposal for the report (10 was in
     * force until the HPA's 12 replaced it at 0) */
    sharp_guardian_decide(g, 15, 12, 40, 13, NULL, &d);
    expect(&d, 13, SHARP_GUARD_SHADOW, SHARP_GUARD_RULE_SHADOW | SHARP_GUARD_RULE_GROWTH, "growth: 40 > 2 x 10");
    assert_int_equal(d.agent_guarded, 20);
    assert_int_equal(l.calls, 2);
    assert_non_null(strstr(l.last, "agent=40 guarded=20 hpa=13 applied=13"));
    /* the HPA's own count is bounded */
    sharp_guardian_decide(g, 30, 13, 13, 1, NULL, &d);
    assert_int_equal(d.applied, 2);
    assert_true(d.rules & SHARP_GUARD_RULE_MIN);
    sharp_guardian_free(g);
}

static void logs_every_decision(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    sharp_guardian_t *g = make(&c);
    log_t l = {0};
    sharp_guardian_set_log(g, capture, &l);
    sharp_guardian_decision_t d;
    sharp_guardian_decide(g, 0, 10, 11, 10, NULL, &d);
    assert_non_null(strstr(l.last, "verdict=accept reason=accepted"));
    sharp_guardian_decide(g, 15, 11, 1, 10, NULL, &d);
    assert_non_null(strstr(l.last, "verdict=clamp reason=scale_down_cooldown"));
    assert_int_equal(l.calls, 2);
    sharp_guardian_free(g);
}

static void long_history_stays_conservative(void **state)
{
    (void)state;
    /* decisions every second over a 10 minute growth window: more than the
     * history holds; the lowest count must still bind */
    sharp_guardian_config_t c = base_config();
    c.growth_window_s = 600;
    c.scale_down_cooldown_s = 0;
    c.scale_down_interval_s = 0;
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    sharp_guardian_decide(g, 0, 10, 5, 10, NULL, &d);
    assert_int_equal(d.applied, 5);
    for (int t = 1; t < 500; t++) {
        /* the cluster stays at 5 (it does not follow): 2 x 5 each time */
        sharp_guardian_decide(g, t, 5, 50, 5, NULL, &d);
        if (d.applied != 10)
            fail_msg("t=%d: %d, expected 2 x 5 while 5 was in force within the window", t, d.applied);
    }
    /* 5 was in force until the decision at 499: it leaves the window
     * (strictly after now - 600) at 1099, then 2 x 10 */
    sharp_guardian_decide(g, 1098, 10, 50, 10, NULL, &d);
    assert_int_equal(d.applied, 10);
    sharp_guardian_decide(g, 1099, 10, 50, 10, NULL, &d);
    assert_int_equal(d.applied, 20);
    sharp_guardian_free(g);
}

static void config_checks(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    assert_null(sharp_guardian_config_check(&c));
    c.min_replicas = 0;
    assert_non_null(sharp_guardian_config_check(&c));
    assert_null(sharp_guardian_new(&c));
    c = base_config();
    c.max_replicas = 1;
    assert_non_null(sharp_guardian_config_check(&c));
    c = base_config();
    c.max_step_up = 0;
    assert_non_null(sharp_guardian_config_check(&c));
    c = base_config();
    c.max_growth = 0.5;
    assert_non_null(sharp_guardian_config_check(&c));
    c = base_config();
    c.max_growth = NAN;
    assert_non_null(sharp_guardian_config_check(&c));
    c = base_config();
    c.stale_after_s = 0;
    assert_non_null(sharp_guardian_config_check(&c));
    c = base_config();
    c.n_obs = SHARP_GUARDIAN_MAX_OBS + 1;
    assert_non_null(sharp_guardian_config_check(&c));
    c = base_config();
    c.n_obs = 1;
    c.has_range = true;
    c.lo[0] = 2;
    c.hi[0] = 1;
    assert_non_null(sharp_guardian_config_check(&c));
    c.hi[0] = NAN;
    assert_non_null(sharp_guardian_config_check(&c));
}

static void capacity_rules(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    /* the defaults: no cut above the HPA's 70% target, no scale-up below
     * it with its 10% tolerance (77%), the load of the last 60 s */
    assert_true(c.scale_down_max_utilization == 0.7 && c.scale_up_min_utilization == 0.77);
    assert_true(c.scale_down_window_s == 60.0 && c.hpa_ceiling);
    /* the last period's load only (the window has its own test) */
    c.scale_down_window_s = 0.0;
    c.scale_down_max_utilization = 0.85;
    c.scale_up_min_utilization = 0.7;
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    /* 17 busy replicas' worth on 20: a cut to 10 would run them at 170%;
     * the fewest at 85% are ceil(17 / 0.85) = 20: held */
    sharp_guardian_obs_t load = {.has_load = true, .busy = 17.0};
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "utilization_floor");
    /* 12.75 busy: 15 carry it at 85%; the cut to 10 stops there */
    load.busy = 12.75;
    sharp_guardian_decide(g, 15, 20, 10, 20, &load, &d);
    expect(&d, 15, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "15 kept");
    /* 8 busy on 15 (53%): a cut to 10 (80%) is within the ceiling, and
     * the interval after the last cut has passed */
    load.busy = 8.0;
    sharp_guardian_decide(g, 45, 15, 10, 15, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* 5 busy on 10 (50% < 70%) meeting the objective: no scale-up */
    load.busy = 5.0;
    sharp_guardian_decide(g, 60, 10, 15, 10, &load, &d);
    expect(&d, 10, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_IDLE_UP, "idle_scale_up");
    /* the same load missing the objective: the scale-up goes through */
    load.violated = true;
    sharp_guardian_decide(g, 75, 10, 15, 10, &load, &d);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* 14 busy on 15 (93%) meeting the objective: up is allowed */
    load.violated = false;
    load.busy = 14.0;
    sharp_guardian_decide(g, 90, 15, 20, 15, &load, &d);
    expect(&d, 20, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* a load that just grew by half counts as growing again: 4 busy on 10
     * would be 6 (60%), idle; 5 would be 7.5 (75%), not */
    sharp_guardian_reset(g);
    load.busy = 4.0;
    load.growth = 1.5;
    sharp_guardian_decide(g, 0, 10, 12, 10, &load, &d);
    expect(&d, 10, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_IDLE_UP, "would run at 60%");
    load.busy = 5.0;
    sharp_guardian_decide(g, 15, 10, 12, 10, &load, &d);
    expect(&d, 12, SHARP_GUARD_ACCEPT, 0, "accepted");
    load.growth = 0.0; /* not known: as 1 */
    /* without the load (or with a bad one) neither rule applies */
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 10, 20, NULL, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    load.busy = NAN;
    sharp_guardian_decide(g, 15, 10, 15, 10, &load, &d);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_free(g);
    /* 0 turns each off */
    c.scale_down_max_utilization = 0.0;
    c.scale_up_min_utilization = 0.0;
    g = make(&c);
    load.busy = 17.0;
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    load.busy = 1.0;
    sharp_guardian_decide(g, 30, 10, 15, 10, &load, &d);
    expect(&d, 15, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_free(g);
    c.scale_up_min_utilization = 1.5;
    assert_non_null(sharp_guardian_config_check(&c));
    c.scale_up_min_utilization = 0.0;
    c.scale_down_max_utilization = -0.1;
    assert_non_null(sharp_guardian_config_check(&c));
    c.scale_down_max_utilization = 0.0;
    c.growth_min_pods = -1;
    assert_non_null(sharp_guardian_config_check(&c));
}

static void utilization_floor_window(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    assert_true(c.scale_down_window_s == 60.0 && c.scale_down_max_utilization == 0.7);
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    sharp_guardian_obs_t load = {.has_load = true, .busy = 14.0};
    /* 14 busy on 20 (70%): a cut to 10 is held at ceil(14 / 0.7) = 20 */
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "14 busy replicas' worth");
    /* the load falls to 7: the 14 of 15 s ago still counts, held */
    load.busy = 7.0;
    sharp_guardian_decide(g, 15, 20, 10, 20, &load, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "20 kept");
    /* at 45 s the decision at 0 is still within the window */
    sharp_guardian_decide(g, 45, 20, 10, 20, &load, &d);
    expect(&d, 20, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "20 kept");
    /* at 60 s it is not (a record counts when strictly after now - 60):
     * 7 busy need ceil(7 / 0.7) = 10, the cut goes through */
    sharp_guardian_decide(g, 60, 20, 10, 20, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* a load above the count then in force counts as that count: 30 busy
     * on 10 (an overload queueing) weighs as 10, and a cut from 20 at 7
     * busy stops at ceil(10 / 0.7) = 15, not at the 20 that 30 would keep */
    sharp_guardian_reset(g);
    load.busy = 30.0;
    sharp_guardian_decide(g, 0, 10, 10, 10, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    load.busy = 7.0;
    sharp_guardian_decide(g, 15, 20, 10, 20, &load, &d);
    expect(&d, 15, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "15 kept");
    sharp_guardian_free(g);
    /* decisions every second over a 10 minute window, more than the
     * history holds: the highest load still binds until it leaves it */
    c.scale_down_window_s = 600.0;
    c.scale_down_interval_s = 0.0;
    g = make(&c);
    load.busy = 14.0;
    sharp_guardian_decide(g, 0, 20, 20, 20, &load, &d);
    load.busy = 7.0;
    for (int t = 1; t < 500; t++) {
        sharp_guardian_decide(g, t, 20, 10, 20, &load, &d);
        if (d.applied != 20)
            fail_msg("t=%d: %d, expected 20 while 14 busy were within the window", t, d.applied);
    }
    sharp_guardian_decide(g, 599, 20, 10, 20, &load, &d);
    assert_int_equal(d.applied, 20);
    /* the folded load moved to a later decision at most: it has left the
     * window once every decision up to 499 has */
    sharp_guardian_decide(g, 1099, 20, 10, 20, &load, &d);
    assert_int_equal(d.applied, 10);
    sharp_guardian_free(g);
    c.scale_down_interval_s = 30.0;
    /* a window of 0: the last period's load alone */
    c.scale_down_window_s = 0.0;
    g = make(&c);
    load.busy = 14.0;
    sharp_guardian_decide(g, 0, 20, 20, 20, &load, &d);
    load.busy = 7.0;
    sharp_guardian_decide(g, 15, 20, 10, 20, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_free(g);
    c.scale_down_window_s = -1.0;
    assert_non_null(sharp_guardian_config_check(&c));
    c.scale_down_window_s = INFINITY;
    assert_non_null(sharp_guardian_config_check(&c));
}

/* utilization_floor on a rising load: the period's load counts as it would
 * be if it grew again as it just did, the projection idle_scale_up makes;
 * a falling or unknown growth counts as none, the window's loads as they
 * were, and the floor still never raises the count. */
static void utilization_floor_rising(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    c.scale_down_window_s = 0.0; /* the period's load alone first */
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    /* 7 busy on 20, steady: a cut to 10 (70%) goes through */
    sharp_guardian_obs_t load = {.has_load = true, .busy = 7.0, .growth = 1.0};
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* the same 7 after a rise of 30%: 9.1 next period need
     * ceil(9.1 / 0.7) = 13, the cut stops there and says why */
    sharp_guardian_reset(g);
    load.growth = 1.3;
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 13, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "9 busy replicas' worth (the load rising");
    /* a falling load counts as it is (not lower): the cut to 10 */
    sharp_guardian_reset(g);
    load.growth = 0.6;
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* growth not a number: none */
    sharp_guardian_reset(g);
    load.growth = NAN;
    sharp_guardian_decide(g, 0, 20, 10, 20, &load, &d);
    expect(&d, 10, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* a projection past the count keeps the count, never more: 9 busy on
     * 10 tripling would need 39 */
    sharp_guardian_reset(g);
    load.busy = 9.0;
    load.growth = 3.0;
    sharp_guardian_decide(g, 0, 10, 5, 10, &load, &d);
    expect(&d, 10, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "10 kept");
    /* a huge growth is bounded, no overflow: still the count */
    sharp_guardian_reset(g);
    load.growth = 1e300;
    sharp_guardian_decide(g, 0, 10, 5, 10, &load, &d);
    assert_int_equal(d.applied, 10);
    sharp_guardian_free(g);
    /* with the window: the highest of the window's loads and the
     * projection binds; the window's is taken as it was measured */
    c.scale_down_window_s = 60.0;
    g = make(&c);
    load.busy = 10.5;
    load.growth = 1.0;
    sharp_guardian_decide(g, 0, 20, 20, 20, &load, &d); /* 10.5 busy: 15 at 70% */
    load.busy = 7.0;
    load.growth = 1.2; /* 8.4: 12 at 70% */
    sharp_guardian_decide(g, 15, 20, 10, 20, &load, &d);
    expect(&d, 15, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "above 70%; 15 kept");
    assert_null(strstr(d.reason, "rising"));
    /* once the 10.5 has left the window, the projection binds: 12 */
    sharp_guardian_decide(g, 75, 15, 10, 15, &load, &d);
    expect(&d, 12, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_UTIL_FLOOR, "(the load rising as in the period)");
    sharp_guardian_free(g);
}

static void hpa_ceiling(void **state)
{
    (void)state;
    sharp_guardian_config_t c = base_config();
    sharp_guardian_t *g = make(&c);
    sharp_guardian_decision_t d;
    /* 9 busy on 20, the objective met, the HPA for 15: the agent's +2 is
     * lowered to the HPA's count */
    sharp_guardian_obs_t load = {.has_load = true, .busy = 9.0};
    sharp_guardian_decide(g, 0, 20, 22, 15, &load, &d);
    expect(&d, 15, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_HPA_CEILING, "hpa_ceiling: 22 lowered to the HPA's 15");
    assert_int_equal(d.agent_guarded, 15);
    /* holding is lowered too; a deeper cut than the HPA's is the agent's */
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 20, 15, &load, &d);
    expect(&d, 15, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_HPA_CEILING, "hpa_ceiling: 20 lowered");
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 13, 15, &load, &d);
    expect(&d, 13, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* the rules on a scale-down still hold the cut: the utilization floor
     * (9 busy need 13) and, after a rise, the cooldown */
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 20, 10, &load, &d);
    expect(&d, 13, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_HPA_CEILING | SHARP_GUARD_RULE_UTIL_FLOOR, "13 kept");
    sharp_guardian_reset(g);
    load.busy = 18.0;
    sharp_guardian_decide(g, 0, 20, 24, 24, &load, &d);
    expect(&d, 24, SHARP_GUARD_ACCEPT, 0, "accepted");
    load.busy = 9.0;
    sharp_guardian_decide(g, 15, 24, 24, 15, &load, &d);
    expect(&d, 24, SHARP_GUARD_CLAMP, SHARP_GUARD_RULE_HPA_CEILING | SHARP_GUARD_RULE_COOLDOWN,
           "scale_down_cooldown");
    /* a period that missed the objective lifts it */
    sharp_guardian_reset(g);
    load.violated = true;
    sharp_guardian_decide(g, 0, 20, 22, 15, &load, &d);
    expect(&d, 22, SHARP_GUARD_ACCEPT, 0, "accepted");
    /* so does an HPA that holds or scales up, and a decision without the
     * load */
    load.violated = false;
    load.busy = 18.0;
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 22, 20, &load, &d);
    expect(&d, 22, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 22, 25, &load, &d);
    expect(&d, 22, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_reset(g);
    sharp_guardian_decide(g, 0, 20, 22, 15, NULL, &d);
    expect(&d, 22, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_free(g);
    /* in shadow mode the guarded proposal shows it, the HPA acts */
    c.shadow = true;
    g = make(&c);
    load.busy = 9.0;
    sharp_guardian_decide(g, 0, 20, 22, 15, &load, &d);
    assert_int_equal(d.agent_guarded, 15);
    assert_int_equal(d.applied, 15);
    assert_int_equal(d.verdict, SHARP_GUARD_SHADOW);
    assert_true(d.rules & SHARP_GUARD_RULE_HPA_CEILING);
    sharp_guardian_free(g);
    /* off */
    c.shadow = false;
    c.hpa_ceiling = false;
    g = make(&c);
    sharp_guardian_decide(g, 0, 20, 20, 15, &load, &d);
    expect(&d, 20, SHARP_GUARD_ACCEPT, 0, "accepted");
    sharp_guardian_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_within_limits),
        cmocka_unit_test(min_and_max_replicas),
        cmocka_unit_test(maximum_steps),
        cmocka_unit_test(doubling_within_a_minute),
        cmocka_unit_test(growth_up_to_the_hpa),
        cmocka_unit_test(scale_down_cooldown),
        cmocka_unit_test(fallback_on_bad_observations),
        cmocka_unit_test(shadow_mode),
        cmocka_unit_test(logs_every_decision),
        cmocka_unit_test(long_history_stays_conservative),
        cmocka_unit_test(config_checks),
        cmocka_unit_test(capacity_rules),
        cmocka_unit_test(utilization_floor_window),
        cmocka_unit_test(utilization_floor_rising),
        cmocka_unit_test(hpa_ceiling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

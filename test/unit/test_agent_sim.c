/* The scaling simulator (proxy/agent/traces.c, scaling_sim.c,
 * scaling_env.c): traces that are a function of their seed, the reference
 * flash crowd's shape, the Erlang C formula against closed forms, the
 * physics (more replicas, lower latency; the boot delay; every request
 * accounted for; overload turned into shedding by the adaptive limit, into
 * queueing and timeouts without it), the pods the HPA sees, the
 * environment's observations, rewards and determinism, and a short PPO
 * training on it that beats the untrained policy (bounded time, also under
 * ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/policy_file.h"
#include "agent/ppo.h"
#include "agent/scaling_env.h"
#include "agent/train.h"

/* ---------------- traces ---------------- */

static void traces_are_functions_of_their_seed(void **state)
{
    (void)state;
    for (int k = 0; k < SHARP_TRACE_KINDS; k++) {
        sharp_trace_t a, b, c;
        sharp_trace_generate(&a, (sharp_trace_kind_t)k, 7, false, 3600);
        sharp_trace_generate(&b, (sharp_trace_kind_t)k, 7, false, 3600);
        sharp_trace_generate(&c, (sharp_trace_kind_t)k, 8, false, 3600);
        assert_int_equal(a.kind, b.kind);
        assert_memory_equal(a.rate, b.rate, 3600 * sizeof(double));
        assert_true(memcmp(a.rate, c.rate, 3600 * sizeof(double)) != 0);
        for (int t = 0; t < 3600; t++)
            if (!isfinite(a.rate[t]) || a.rate[t] < 1.0)
                fail_msg("%s: rate %g at %d", sharp_trace_name(a.kind), a.rate[t], t);
        assert_true(a.start_tod >= 0 && a.start_tod < SHARP_TRACE_DAY_S);
        sharp_trace_free(&a);
        sharp_trace_free(&b);
        sharp_trace_free(&c);
    }
    /* mixed draws every kind */
    int seen[SHARP_TRACE_MIXED] = {0};
    for (uint64_t s = 0; s < 64; s++) {
        sharp_trace_t t;
        sharp_trace_generate(&t, SHARP_TRACE_MIXED, s, false, 60);
        assert_true(t.kind != SHARP_TRACE_MIXED);
        seen[t.kind]++;
        sharp_trace_free(&t);
    }
    for (int k = 0; k < SHARP_TRACE_MIXED; k++)
        assert_true(seen[k] > 0);
    sharp_trace_kind_t k;
    assert_int_equal(sharp_trace_parse("diurnal", &k), 0);
    assert_int_equal(k, SHARP_TRACE_DIURNAL);
    assert_int_equal(sharp_trace_parse("weekly", &k), -1);
    assert_int_equal(sharp_trace_parse(NULL, &k), -1);
}

static void reference_flash_crowd(void **state)
{
    (void)state;
    /* 1,000 requests/s rising to 10,000 within 60 s (at 600 s), within the
     * noise (a few percent) */
    sharp_trace_t tr;
    sharp_trace_generate(&tr, SHARP_TRACE_FLASH, 3, true, 3600);
    assert_true(tr.base == 1000.0 && tr.peak == 10000.0 && tr.event_at == 600.0 && tr.ramp_s == 60.0);
    double before = 0, plateau = 0;
    for (int t = 300; t < 600; t++)
        before += tr.rate[t] / 300;
    for (int t = 700; t < 1000; t++)
        plateau += tr.rate[t] / 300;
    assert_true(fabs(before - 1000) < 100);
    assert_true(fabs(plateau - 10000) < 1000);
    assert_true(tr.rate[630] > 4000 && tr.rate[630] < 7000); /* half way up */
    assert_true(tr.rate[665] > 8500);
    sharp_trace_free(&tr);
}

/* ---------------- queueing ---------------- */

static void erlang_c_closed_forms(void **state)
{
    (void)state;
    /* M/M/1: the probability of waiting is the utilization */
    for (double a = 0.05; a < 1.0; a += 0.1)
        assert_true(fabs(sharp_erlang_c(1, a) - a) < 1e-12);
    /* M/M/2: C = a^2 / (2 + a) (a = 1: 1/3; a = 1.5: 9/14) */
    assert_true(fabs(sharp_erlang_c(2, 1.0) - 1.0 / 3.0) < 1e-12);
    assert_true(fabs(sharp_erlang_c(2, 1.5) - 9.0 / 14.0) < 1e-12);
    assert_true(sharp_erlang_c(8, 0.0) == 0.0);
    assert_true(sharp_erlang_c(8, 8.0) == 1.0);
    /* more servers at the same utilization wait less */
    assert_true(sharp_erlang_c(16, 12.8) < sharp_erlang_c(8, 6.4));
}

/* A trace of a constant rate. */
static void constant_trace(sharp_trace_t *tr, double rate, int seconds)
{
    sharp_trace_generate(tr, SHARP_TRACE_STEP, 1, true, seconds);
    for (int t = 0; t < seconds; t++)
        tr->rate[t] = rate;
}

static void more_replicas_lower_latency(void **state)
{
    (void)state;
    sharp_sim_config_t c;
    sharp_sim_config_default(&c);
    sharp_trace_t tr;
    constant_trace(&tr, 5000, 120);
    double last_p99 = INFINITY, last_shed = INFINITY;
    /* 5000 requests/s on 20 to 60 replicas of 200/s */
    for (int n = 20; n <= 60; n += 2) {
        sharp_sim_t s;
        sharp_sim_init(&s, &c, &tr, n);
        for (int i = 0; i < 120; i++)
            sharp_sim_second(&s);
        double shed = s.second.shed / s.second.offered;
        if (!(s.second.p99 <= last_p99 + 1e-12) || !(shed <= last_shed + 1e-12))
            fail_msg("%d replicas: p99 %g (fewer had %g), shed %g (fewer had %g)", n, s.second.p99, last_p99, shed,
                     last_shed);
        last_p99 = s.second.p99;
        last_shed = shed;
        sharp_sim_free(&s);
    }
    /* and at the extremes: saturated (25 < 5000/200) sheds and misses the
     * objective; 50 replicas (50% busy) meet it with a low p99 */
    sharp_sim_t s;
    sharp_sim_init(&s, &c, &tr, 25);
    for (int i = 0; i < 120; i++)
        sharp_sim_second(&s);
    assert_true(s.second.shed > 0.05 * s.second.offered);
    assert_int_equal(s.second.violation_s, 1);
    sharp_sim_free(&s);
    sharp_sim_init(&s, &c, &tr, 50);
    for (int i = 0; i < 120; i++)
        sharp_sim_second(&s);
    assert_true(s.second.shed == 0.0 && s.second.errors == 0.0);
    assert_true(s.second.p99 < 0.15);
    assert_true(fabs(s.second.busy - 0.5) < 1e-9);
    assert_int_equal(s.second.violation_s, 0);
    sharp_sim_free(&s);
    sharp_trace_free(&tr);
}

static void boot_delay_is_respected(void **state)
{
    (void)state;
    sharp_sim_config_t c;
    sharp_sim_config_default(&c);
    sharp_trace_t tr;
    constant_trace(&tr, 1000, 200);
    sharp_sim_t s;
    sharp_sim_init(&s, &c, &tr, 4);
    for (int i = 0; i < 10; i++)
        sharp_sim_second(&s);
    sharp_sim_set_replicas(&s, 10);
    assert_int_equal(s.n, 10);
    /* ready exactly boot_s (30 s) after they were asked for */
    for (int i = 0; i < 30; i++) {
        assert_int_equal(sharp_sim_ready(&s), 4);
        sharp_sim_second(&s);
        /* booting replicas take no traffic: 1000/s saturate the 4 ready
         * ones (800/s) */
        assert_true(s.second.busy > 0.85);
        assert_true(s.second.shed > 0);
        assert_int_equal(s.second.ready, 4);
        assert_true(s.second.replica_s == 10); /* but they cost */
    }
    assert_int_equal(sharp_sim_ready(&s), 10);
    sharp_sim_second(&s);
    assert_int_equal(s.second.ready, 10);
    assert_true(fabs(s.second.busy - 0.5) < 1e-9);
    /* removal takes booting replicas first, then the newest ready ones */
    sharp_sim_set_replicas(&s, 14);
    sharp_sim_set_replicas(&s, 12);
    assert_int_equal(sharp_sim_ready(&s), 10);
    sharp_sim_set_replicas(&s, 6);
    assert_int_equal(sharp_sim_ready(&s), 6);
    assert_true(s.ready_at[0] < 0); /* the first ones, running from the start, stay */
    assert_int_equal(s.changes, 4);
    /* bounds */
    sharp_sim_set_replicas(&s, 0);
    assert_int_equal(s.n, 1);
    sharp_sim_set_replicas(&s, 100000);
    assert_int_equal(s.n, c.max_replicas);
    sharp_sim_free(&s);
    sharp_trace_free(&tr);
}

/* offered = shed + served + errors + what is still waiting */
static void check_conservation(const sharp_sim_t *s)
{
    const sharp_sim_stats_t *t = &s->total;
    double out = t->shed + t->served + t->errors + s->backlog;
    if (fabs(t->offered - out) > 1e-9 * t->offered)
        fail_msg("offered %.6f, accounted %.6f (shed %.3f served %.3f errors %.3f backlog %.3f)", t->offered, out,
                 t->shed, t->served, t->errors, s->backlog);
    assert_true(fabs(t->admitted - (t->served + t->errors + s->backlog)) <= 1e-9 * t->offered);
}

static void requests_are_conserved(void **state)
{
    (void)state;
    /* The flash crowd on a cluster that scales late: with the adaptive
     * limit (overload shed), without it on a small cluster (queueing up to
     * the circuit breaker, past the timeout), and with every replica
     * restarting at once for a while (nothing served, the admitted fail). */
    for (int variant = 0; variant < 3; variant++) {
        sharp_sim_config_t c;
        sharp_sim_config_default(&c);
        c.adaptive_concurrency = variant != 1;
        sharp_trace_t tr;
        sharp_trace_generate(&tr, SHARP_TRACE_FLASH, 5, true, 1800);
        sharp_sim_t s;
        sharp_sim_init(&s, &c, &tr, variant == 1 ? 4 : 8);
        double seen_backlog = 0;
        while (!sharp_sim_done(&s)) {
            if (s.t == 900)
                sharp_sim_set_replicas(&s, 70);
            if (variant == 2 && s.t == 300)
                for (int i = 0; i < s.n; i++)
                    s.ready_at[i] = 330; /* all restarting */
            double served = s.total.served;
            sharp_sim_step(&s, NULL);
            if (variant == 2 && s.t > 300 && s.t <= 330) {
                assert_int_equal(s.step.ready, 0);
                assert_true(s.total.served == served);
                assert_true(s.step.p99 >= c.timeout_s);
            }
            if (s.backlog > seen_backlog)
                seen_backlog = s.backlog;
            check_conservation(&s);
        }
        assert_int_equal(s.t, 1800);
        assert_true(s.total.shed > 0);
        if (variant == 0)
            assert_true(s.total.errors == 0);
        else
            assert_true(s.total.errors > 0);
        if (variant == 1)
            assert_true(seen_backlog > 100);
        sharp_sim_free(&s);
        sharp_trace_free(&tr);
    }
}

static void adaptive_limit_bounds_queueing(void **state)
{
    (void)state;
    /* Twice the capacity: with the gradient controller the limit comes down
     * and latency stays near its minimum while the excess is shed; without
     * it requests queue until the circuit breaker (1024) sheds. */
    sharp_sim_config_t c;
    sharp_sim_config_default(&c);
    sharp_trace_t tr;
    constant_trace(&tr, 4000, 300);
    sharp_sim_t s;
    sharp_sim_init(&s, &c, &tr, 10);
    for (int i = 0; i < 300; i++)
        sharp_sim_second(&s);
    assert_true(s.second.limit < 200);
    assert_true(s.second.p50 < 2 * c.base_p50_s);
    assert_true(s.second.shed > 0.5 * s.second.offered);
    assert_true(s.second.errors == 0);
    sharp_sim_free(&s);
    c.adaptive_concurrency = false;
    sharp_sim_init(&s, &c, &tr, 10);
    for (int i = 0; i < 300; i++)
        sharp_sim_second(&s);
    assert_true(s.second.limit == 1024);
    assert_true(s.second.inflight > 1000);
    assert_true(s.second.p99 > 0.4); /* a backlog of ~790 requests at 1900/s */
    sharp_sim_free(&s);
    sharp_trace_free(&tr);
}

static void simulation_is_deterministic(void **state)
{
    (void)state;
    sharp_sim_config_t c;
    sharp_sim_config_default(&c);
    sharp_trace_t tr;
    sharp_trace_generate(&tr, SHARP_TRACE_NOISY, 11, false, 900);
    sharp_sim_stats_t runs[2];
    for (int r = 0; r < 2; r++) {
        sharp_sim_t s;
        sharp_sim_init(&s, &c, &tr, 12);
        while (!sharp_sim_done(&s)) {
            sharp_sim_set_replicas(&s, 8 + (s.t / 15) % 9);
            sharp_sim_step(&s, NULL);
        }
        runs[r] = s.total;
        sharp_sim_free(&s);
    }
    assert_memory_equal(&runs[0], &runs[1], sizeof runs[0]);
    sharp_trace_free(&tr);
}

static void hpa_sees_booting_and_fresh_pods_as_unready(void **state)
{
    (void)state;
    sharp_scaling_config_t sc;
    sharp_scaling_config_default(&sc);
    sharp_trace_t tr;
    constant_trace(&tr, 1400, 300); /* 10 replicas at 70% */
    sharp_sim_t s;
    sharp_sim_init(&s, &sc.sim, &tr, 10);
    for (int i = 0; i < 30; i++)
        sharp_sim_second(&s);
    sharp_hpa_pod_t pods[32];
    int n = sharp_sim_hpa_pods(&s, pods, 32);
    assert_int_equal(n, 10);
    for (int i = 0; i < n; i++) {
        assert_true(pods[i].ready && pods[i].has_metric);
        assert_int_equal(pods[i].usage_m, 700);
        assert_int_equal(pods[i].request_m, 1000);
    }
    sharp_hpa_t *h = sharp_hpa_new(&sc.hpa);
    sharp_hpa_decision_t d;
    assert_int_equal(sharp_hpa_sync(h, s.t, s.n, pods, n, &d), 10); /* on target */
    sharp_sim_set_replicas(&s, 14);
    for (int i = 0; i < 20; i++)
        sharp_sim_second(&s);
    n = sharp_sim_hpa_pods(&s, pods, 32);
    assert_int_equal(n, 14);
    assert_false(pods[13].ready);
    assert_true(pods[13].has_metric); /* scraped for 20 s */
    sharp_hpa_calc_t r;
    char err[160];
    assert_int_equal(sharp_hpa_replica_calc(&sc.hpa, s.t, s.n, pods, n, &r, err, sizeof err), 0);
    assert_int_equal(r.ready, 10);
    assert_int_equal(r.unready, 4);
    /* ready at 60 (asked for at 30), counted once a whole metrics window
     * followed: at 75 */
    while (s.t < 74)
        sharp_sim_second(&s);
    n = sharp_sim_hpa_pods(&s, pods, 32);
    assert_int_equal(sharp_hpa_replica_calc(&sc.hpa, s.t, s.n, pods, n, &r, err, sizeof err), 0);
    assert_int_equal(r.unready, 4);
    sharp_sim_second(&s);
    n = sharp_sim_hpa_pods(&s, pods, 32);
    assert_int_equal(sharp_hpa_replica_calc(&sc.hpa, s.t, s.n, pods, n, &r, err, sizeof err), 0);
    assert_int_equal(r.ready, 14);
    assert_int_equal(r.utilization, 50); /* 1400/s over 14 x 200 */
    sharp_hpa_free(h);
    sharp_sim_free(&s);
    sharp_trace_free(&tr);
}

/* SHARP's own HPA rule reads requests in flight over the ready replicas'
 * concurrency, queued ones included (live.h); with hpa_inflight the
 * simulator gives its HPA that metric: about the CPU's below saturation,
 * past 100% in overload, where the CPU stops at the replicas' 95%. */
static void hpa_inflight_counts_the_queue(void **state)
{
    (void)state;
    for (int overload = 0; overload < 2; overload++) {
        sharp_sim_config_t c;
        sharp_sim_config_default(&c);
        c.adaptive_concurrency = false; /* overload queues */
        c.timeout_s = 5.0;
        c.max_requests = 100000;
        sharp_trace_t tr;
        constant_trace(&tr, overload ? 3000 : 1400, 120); /* 10 replicas of 200/s: 150% or 70% */
        long long usage[2];
        double inflight = 0.0;
        for (int m = 0; m < 2; m++) {
            c.hpa_inflight = m == 1;
            sharp_sim_t s;
            sharp_sim_init(&s, &c, &tr, 10);
            for (int i = 0; i < 30; i++)
                sharp_sim_second(&s);
            sharp_hpa_pod_t pods[16];
            int n = sharp_sim_hpa_pods(&s, pods, 16);
            assert_int_equal(n, 10);
            usage[m] = pods[0].usage_m;
            for (int i = 1; i < n; i++)
                assert_int_equal(pods[i].usage_m, usage[m]);
            if (m == 1) {
                /* the mean of the metrics window's seconds */
                for (int i = 1; i <= 15; i++)
                    inflight += s.inflight_hist[(s.t - i) % 64];
                inflight /= 15;
            }
            sharp_sim_free(&s);
        }
        assert_true(usage[1] == llround(inflight / (10.0 * c.workers) * 1000.0));
        if (overload) {
            assert_true(usage[0] <= 950); /* the CPU stops at the replicas' 95% */
            assert_true(usage[1] > 2000); /* 15 s of a growing queue */
        } else {
            assert_int_equal(usage[0], 700);
            /* in service plus the M/M/k queue: a little above the CPU */
            assert_true(usage[1] >= 700 && usage[1] < 800);
        }
        sharp_trace_free(&tr);
    }
}

/* Training draws each episode's boot delay, timeout, first utilization and
 * max_requests within their ranges when set, after the earlier draws, and
 * nothing when unset (a command without them trains as before). */
static void episode_draws_stay_within_their_ranges(void **state)
{
    (void)state;
    sharp_scaling_config_t base;
    sharp_scaling_config_default(&base);
    base.slo_p99_lo = 0.2;
    base.slo_p99_hi = 0.6;
    base.no_adaptive_share = 0.25;
    /* unset: the stream advances as before, nothing else changes */
    sharp_rng_t r1, r2;
    sharp_rng_seed(&r1, 9);
    sharp_rng_seed(&r2, 9);
    sharp_scaling_config_t a = base, b = base;
    b.boot_lo = 20;
    b.boot_hi = 60;
    b.timeout_lo = 1;
    b.timeout_hi = 5;
    b.init_util_lo = 0.2;
    b.init_util_hi = 0.8;
    b.max_requests_lo = 512;
    b.max_requests_hi = 12288;
    assert_null(sharp_scaling_config_check(&b));
    sharp_scaling_draw_episode(&a, false, &r1);
    assert_true(a.sim.boot_s == base.sim.boot_s && a.sim.timeout_s == base.sim.timeout_s &&
                a.initial_utilization == base.initial_utilization && a.sim.max_requests == base.sim.max_requests);
    sharp_scaling_draw_episode(&b, false, &r2);
    /* the earlier draws are the same with the new ones set */
    assert_true(a.sim.slo_p99_s == b.sim.slo_p99_s && a.sim.adaptive_concurrency == b.sim.adaptive_concurrency);
    double boot_lo = 1e9, boot_hi = 0, to_lo = 1e9, to_hi = 0, u_lo = 1e9, u_hi = 0;
    int mr_lo = 1 << 30, mr_hi = 0;
    for (int i = 0; i < 2000; i++) {
        sharp_scaling_draw_episode(&b, false, &r2);
        assert_null(sharp_scaling_config_check(&b));
        boot_lo = fmin(boot_lo, b.sim.boot_s), boot_hi = fmax(boot_hi, b.sim.boot_s);
        to_lo = fmin(to_lo, b.sim.timeout_s), to_hi = fmax(to_hi, b.sim.timeout_s);
        u_lo = fmin(u_lo, b.initial_utilization), u_hi = fmax(u_hi, b.initial_utilization);
        mr_lo = b.sim.max_requests < mr_lo ? b.sim.max_requests : mr_lo;
        mr_hi = b.sim.max_requests > mr_hi ? b.sim.max_requests : mr_hi;
    }
    assert_true(boot_lo >= 20 && boot_lo < 21 && boot_hi <= 60 && boot_hi > 59);
    assert_true(to_lo >= 1 && to_lo < 1.1 && to_hi <= 5 && to_hi > 4.9);
    assert_true(u_lo >= 0.2 && u_lo < 0.21 && u_hi <= 0.8 && u_hi > 0.79);
    assert_true(mr_lo >= 512 && mr_lo < 600 && mr_hi <= 12288 && mr_hi > 12200);
    /* bad ranges are refused */
    sharp_scaling_config_t bad = base;
    bad.boot_lo = 60;
    bad.boot_hi = 20;
    assert_non_null(sharp_scaling_config_check(&bad));
    bad = base;
    bad.timeout_lo = 0;
    bad.timeout_hi = 5;
    assert_non_null(sharp_scaling_config_check(&bad));
    bad = base;
    bad.init_util_lo = 0.5;
    bad.init_util_hi = 1.5;
    assert_non_null(sharp_scaling_config_check(&bad));
    bad = base;
    bad.max_requests_lo = 0;
    bad.max_requests_hi = 10;
    assert_non_null(sharp_scaling_config_check(&bad));
}

/* ---------------- the environment ---------------- */

static void actions_map_to_counts(void **state)
{
    (void)state;
    static const int from10[SHARP_SCALE_ACTIONS] = {5, 7, 9, 9, 10, 11, 11, 13, 15, 20};
    for (int a = 0; a < SHARP_SCALE_ACTIONS; a++)
        assert_int_equal(sharp_scale_action_target(a, 10), from10[a]);
    /* a relative step moves at least one replica */
    assert_int_equal(sharp_scale_action_target(0, 1), 0);
    assert_int_equal(sharp_scale_action_target(6, 2), 3);
    assert_int_equal(sharp_scale_action_target(SHARP_SCALE_ACTION_HOLD, 7), 7);
    assert_int_equal(sharp_scale_action_target(-1, 7), 7);
    assert_string_equal(sharp_scale_action_name(9), "+100%");
}

static void env_episode(uint64_t seed, double *ret, double *obs_sum, int *steps)
{
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    sharp_scaling_factory_t f;
    sharp_scaling_factory_init(&f, &cfg);
    sharp_env_t *e = sharp_scaling_factory(&f, 0, seed);
    assert_non_null(e);
    assert_int_equal(e->obs_dim, SHARP_SCALE_OBS_N);
    assert_int_equal(e->n_actions, SHARP_SCALE_ACTIONS);
    double obs[SHARP_SCALE_OBS_N];
    sharp_env_reset(e, obs);
    *ret = 0;
    *obs_sum = 0;
    *steps = 0;
    for (;;) {
        double r;
        bool term, trunc;
        int a = (*steps * 7) % SHARP_SCALE_ACTIONS; /* any fixed sequence */
        sharp_env_step(e, a, obs, &r, &term, &trunc);
        assert_false(term);
        assert_true(r <= 0.0 && r >= -0.2011);
        for (int i = 0; i < SHARP_SCALE_OBS_N; i++) {
            assert_true(isfinite(obs[i]));
            assert_true(obs[i] >= f.lo[i] && obs[i] <= f.hi[i]);
            *obs_sum += obs[i];
        }
        /* shares and ratios within their caps */
        assert_true(obs[SHARP_SCALE_OBS_BOOTING] >= 0.0 && obs[SHARP_SCALE_OBS_BOOTING] <= 1.0);
        assert_true(obs[SHARP_SCALE_OBS_INV_REPLICAS] >= 1.0 / cfg.guardian.max_replicas &&
                    obs[SHARP_SCALE_OBS_INV_REPLICAS] <= 1.0 / cfg.guardian.min_replicas);
        assert_true(obs[SHARP_SCALE_OBS_UTIL_ASKED] <= obs[SHARP_SCALE_OBS_UTIL]);
        assert_true(obs[SHARP_SCALE_OBS_UTIL] >= 0.0 && obs[SHARP_SCALE_OBS_UTIL] <= SHARP_SCALE_OBS_CAP);
        assert_true(obs[SHARP_SCALE_OBS_P99] > 0.0 && obs[SHARP_SCALE_OBS_P99] <= SHARP_SCALE_OBS_CAP);
        assert_true(fabs(obs[SHARP_SCALE_OBS_RATE_CHANGE]) <= SHARP_SCALE_OBS_CHANGE_CAP);
        assert_true(obs[SHARP_SCALE_OBS_SHED_RATE] >= 0.0 && obs[SHARP_SCALE_OBS_SHED_RATE] <= 1.0);
        *ret += r;
        (*steps)++;
        if (trunc)
            break;
    }
    assert_true(f.seen);
    sharp_env_destroy(e);
}

static void env_episodes_are_deterministic(void **state)
{
    (void)state;
    double r1, r2, r3, s1, s2, s3;
    int n1, n2, n3;
    env_episode(42, &r1, &s1, &n1);
    env_episode(42, &r2, &s2, &n2);
    env_episode(43, &r3, &s3, &n3);
    /* an hour of 15 s decisions after the first step */
    assert_int_equal(n1, 3600 / 15 - 1);
    assert_int_equal(n1, n2);
    assert_true(r1 == r2 && s1 == s2);
    assert_true(s1 != s3);
    (void)r3;
    (void)n3;
}

static void reward_weighs_violations_cost_and_changes(void **state)
{
    (void)state;
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    sharp_sim_stats_t st;
    memset(&st, 0, sizeof st);
    st.seconds = 15;
    st.replica_s = 15 * 50; /* 50 replicas */
    assert_true(fabs(sharp_scaling_reward(&cfg, &st, false) - (-0.05)) < 1e-12);
    assert_true(fabs(sharp_scaling_reward(&cfg, &st, true) - (-0.051)) < 1e-12);
    st.violation_s = 15;
    assert_true(fabs(sharp_scaling_reward(&cfg, &st, false) - (-0.15)) < 1e-12);
    /* a violating second weighs as much as 100 replicas for it */
    sharp_sim_stats_t a = st, b = st;
    a.violation_s = 1;
    a.replica_s = 0;
    b.violation_s = 0;
    b.replica_s = 100;
    assert_true(fabs(sharp_scaling_reward(&cfg, &a, false) - sharp_scaling_reward(&cfg, &b, false)) < 1e-12);
}

static void excess_cost_charges_replicas_above_need(void **state)
{
    (void)state;
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    cfg.w_cost = 0.0;
    cfg.w_excess = 0.2;
    cfg.w_change = 0.0;
    sharp_sim_stats_t st;
    memset(&st, 0, sizeof st);
    st.seconds = 15;
    st.replica_s = 15 * 50; /* 50 replicas */
    st.rate = 6000.0;       /* needs 30 of 200 requests/s */
    assert_true(fabs(sharp_sim_capacity(&cfg.sim) - 200.0) < 1e-12);
    assert_true(fabs(sharp_scaling_reward(&cfg, &st, false) - (-0.2 * 20 / 100)) < 1e-12);
    /* at or under the need nothing is charged: only violations are */
    st.rate = 10000.0;
    assert_true(sharp_scaling_reward(&cfg, &st, false) == 0.0);
    st.rate = 12000.0;
    st.violation_s = 15;
    assert_true(fabs(sharp_scaling_reward(&cfg, &st, false) - (-0.1)) < 1e-12);
    /* both cost terms add up */
    cfg.w_cost = 0.1;
    st.violation_s = 0;
    st.rate = 6000.0;
    assert_true(fabs(sharp_scaling_reward(&cfg, &st, false) - (-0.05 - 0.04)) < 1e-12);
    cfg.w_excess = -1.0;
    assert_non_null(sharp_scaling_config_check(&cfg));
}

static void trace_kind_sets(void **state)
{
    (void)state;
    int k[SHARP_TRACE_MIXED] = {0};
    char buf[64];
    assert_int_equal(sharp_scaling_parse_kinds("flash,step", k), 0);
    assert_true(k[SHARP_TRACE_FLASH] == 1 && k[SHARP_TRACE_STEP] == 1 && k[SHARP_TRACE_DIURNAL] == 0 &&
                k[SHARP_TRACE_NOISY] == 0);
    assert_string_equal(sharp_scaling_kinds_name(k, buf, sizeof buf), "flash + step");
    assert_int_equal(sharp_scaling_parse_kinds("noisy", k), 0);
    assert_true(k[SHARP_TRACE_NOISY] == 1 && k[SHARP_TRACE_FLASH] == 0);
    assert_int_equal(sharp_scaling_parse_kinds("mixed", k), 0);
    assert_string_equal(sharp_scaling_kinds_name(k, buf, sizeof buf), "flash + diurnal + step + noisy + walk");
    assert_int_equal(sharp_scaling_parse_kinds("flash,step,flash,mixed", k), 0);
    assert_string_equal(sharp_scaling_kinds_name(k, buf, sizeof buf), "3 flash + diurnal + 2 step + noisy + walk");
    assert_int_equal(sharp_scaling_parse_kinds("flash,flash,flash,flash,flash,flash,flash,flash,"
                                               "flash,flash,flash,flash,flash,flash,flash,step", k), 0);
    assert_true(k[SHARP_TRACE_FLASH] == 15 && k[SHARP_TRACE_STEP] == 1);
    k[0] = 77;
    assert_int_equal(sharp_scaling_parse_kinds("flash,flash,flash,flash,flash,flash,flash,flash,"
                                               "flash,flash,flash,flash,flash,flash,flash,step,step", k), -1);
    assert_int_equal(sharp_scaling_parse_kinds("flash,", k), -1);
    assert_int_equal(sharp_scaling_parse_kinds(",step", k), -1);
    assert_int_equal(sharp_scaling_parse_kinds("flash,weekly", k), -1);
    assert_int_equal(sharp_scaling_parse_kinds("", k), -1);
    assert_int_equal(sharp_scaling_parse_kinds(NULL, k), -1);
    assert_int_equal(k[0], 77); /* untouched on errors */

    /* the weights: about three flash crowds for a step */
    int w[SHARP_TRACE_MIXED] = {0};
    w[SHARP_TRACE_FLASH] = 3;
    w[SHARP_TRACE_STEP] = 1;
    sharp_rng_t r;
    sharp_rng_seed(&r, 5);
    int drawn[SHARP_TRACE_KINDS] = {0};
    for (int i = 0; i < 4000; i++)
        drawn[sharp_scaling_draw_kind(w, &r)]++;
    assert_int_equal(drawn[SHARP_TRACE_FLASH] + drawn[SHARP_TRACE_STEP], 4000);
    assert_true(drawn[SHARP_TRACE_FLASH] > 2850 && drawn[SHARP_TRACE_FLASH] < 3150);

    /* A training environment's episodes are traces of the set's kinds,
     * drawn from its seed: the first observation's rate is the mean of
     * the first step's seconds of the trace it should have drawn. */
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    cfg.kinds[SHARP_TRACE_FLASH] = 1;
    cfg.kinds[SHARP_TRACE_NOISY] = 1;
    cfg.trace = SHARP_TRACE_STEP; /* overridden by the set */
    sharp_scaling_factory_t f;
    sharp_scaling_factory_init(&f, &cfg);
    sharp_env_t *e = sharp_scaling_factory(&f, 0, 9);
    assert_non_null(e);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 9);
    int seen[SHARP_TRACE_KINDS] = {0};
    for (int ep = 0; ep < 12; ep++) {
        double obs[SHARP_SCALE_OBS_N];
        sharp_env_reset(e, obs);
        sharp_trace_kind_t kind = sharp_scaling_draw_kind(cfg.kinds, &rng);
        sharp_trace_t tr;
        sharp_trace_generate(&tr, kind, sharp_rng_next(&rng), false, cfg.episode_s);
        /* the episode starts on this trace: its count, no change yet */
        assert_true(obs[SHARP_SCALE_OBS_INV_REPLICAS] == 1.0 / sharp_scaling_initial_replicas(&cfg, &tr));
        assert_true(obs[SHARP_SCALE_OBS_RATE_CHANGE] == 0.0);
        assert_int_equal(tr.kind, kind);
        seen[kind]++;
        sharp_trace_free(&tr);
    }
    sharp_env_destroy(e);
    assert_true(seen[SHARP_TRACE_FLASH] > 0 && seen[SHARP_TRACE_NOISY] > 0);
    assert_int_equal(seen[SHARP_TRACE_FLASH] + seen[SHARP_TRACE_NOISY], 12);
    cfg.kinds[SHARP_TRACE_NOISY] = -1;
    assert_non_null(sharp_scaling_config_check(&cfg));
}

static void controllers_on_the_reference_flash_crowd(void **state)
{
    (void)state;
    /* The HPA alone falls behind the flash crowd (readiness and its
     * saturated metric); a fixed maximum never violates but costs the
     * most; both are reproducible. */
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    cfg.trace = SHARP_TRACE_FLASH;
    cfg.reference = true;
    char err[256];
    sharp_controller_t hpa = {.kind = SHARP_CTL_HPA}, fixed = {.kind = SHARP_CTL_FIXED, .fixed = 100};
    sharp_episode_result_t h, h2, f;
    assert_int_equal(sharp_scaling_episode(&cfg, 1, &hpa, &h, err, sizeof err), 0);
    assert_int_equal(sharp_scaling_episode(&cfg, 1, &hpa, &h2, err, sizeof err), 0);
    assert_int_equal(sharp_scaling_episode(&cfg, 1, &fixed, &f, err, sizeof err), 0);
    printf("# reference flash crowd: hpa %d violation s, %.0f replica-s, %d actions; fixed 100: %d, %.0f\n",
           h.violation_s, h.replica_s, h.actions, f.violation_s, f.replica_s);
    assert_memory_equal(&h, &h2, sizeof h);
    assert_true(h.violation_s > 120);
    assert_true(h.peak_replicas >= 60 && h.peak_replicas <= 100);
    assert_int_equal(f.violation_s, 0);
    assert_int_equal(f.actions, 0);
    assert_true(f.replica_s == 100.0 * 3600);
    assert_true(h.replica_s < f.replica_s);
    assert_int_equal(h.decisions, 239);
    /* a policy of another shape is refused */
    int hidden[1] = {8};
    sharp_policy_t *p = sharp_policy_new(4, 2, hidden, 1, true, 10.0);
    sharp_controller_t bad = {.kind = SHARP_CTL_AGENT, .policy = p};
    assert_int_equal(sharp_scaling_episode(&cfg, 1, &bad, &h, err, sizeof err), -1);
    assert_non_null(strstr(err, "not one for the scaling simulator"));
    sharp_policy_free(p);
}

/* ---------------- training ---------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double greedy_return(sharp_policy_t *p, const sharp_scaling_config_t *cfg)
{
    double sum = 0;
    char err[256];
    for (uint64_t s = 100; s < 104; s++) {
        sharp_controller_t ctl = {.kind = SHARP_CTL_AGENT, .policy = p};
        sharp_episode_result_t r;
        assert_int_equal(sharp_scaling_episode(cfg, s, &ctl, &r, err, sizeof err), 0);
        sum += r.reward;
    }
    return sum / 4;
}

static void short_training_improves_on_the_untrained_policy(void **state)
{
    (void)state;
    /* 48 updates of 8 x 256 decisions on randomized flash crowds (about
     * 400 episodes of an hour): the mean return of the last 100 training
     * episodes must beat that of the first ones by a clear margin (the
     * untrained policy picks its actions about uniformly); training is
     * bit-reproducible and the policy file keeps the trained range. */
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    cfg.trace = SHARP_TRACE_FLASH;
    /* the learning, not the guardian: without its capacity rules, which
     * hold an untrained policy's random scale-ups and cuts to a sensible
     * band by themselves */
    cfg.guardian.scale_down_max_utilization = 0.0;
    cfg.guardian.scale_up_min_utilization = 0.0;
    sharp_ppo_config_t pc;
    sharp_ppo_config_default(&pc);
    pc.seed = 1;
    pc.n_envs = 8;
    pc.n_steps = 256;
    pc.lr = 1e-3;              /* as sharp-train scaling */
    pc.total_steps = 1000000;  /* the learning rate's horizon: barely annealed here */
    sharp_scaling_factory_t f;
    sharp_scaling_factory_init(&f, &cfg);
    char err[256];
    sharp_ppo_t *ppo = sharp_ppo_new(&pc, sharp_scaling_factory, &f, err, sizeof err);
    if (!ppo)
        fail_msg("%s", err);
    sharp_policy_t *p = sharp_ppo_policy(ppo);
    double t0 = now_s();
    sharp_ppo_stats_t st;
    double first = 0;
    for (int u = 0; u < 48; u++) {
        sharp_ppo_iterate(ppo, &st);
        if (u == 3)
            first = st.mean_return; /* the first 32 episodes */
    }
    double secs = now_s() - t0;
    printf("# %lld decisions, %lld episodes in %.1fs: mean return %.3f over the first %d episodes, %.3f over the "
           "last %d\n",
           st.steps, st.episodes, secs, first, 32, st.mean_return, st.window);
    assert_true(st.episodes >= 400);
    assert_true(st.mean_return > first + 2.0);

    /* the trained range, through the policy file */
    sharp_scaling_factory_range(&f, p);
    assert_true(p->has_range);
    assert_true(p->range_lo[SHARP_SCALE_OBS_UTIL] < 0.7 && p->range_hi[SHARP_SCALE_OBS_UTIL] > 0.9);
    assert_true(p->range_lo[SHARP_SCALE_OBS_INV_REPLICAS] >= 0.01 && p->range_hi[SHARP_SCALE_OBS_INV_REPLICAS] <= 0.5);
    char path[] = "/tmp/sharp-agent-scaling-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sharp_policy_save(p, path, err, sizeof err), 0);
    sharp_policy_t *q = sharp_policy_load(path, err, sizeof err);
    if (!q)
        fail_msg("%s", err);
    assert_true(q->has_range);
    assert_memory_equal(q->range_lo, p->range_lo, SHARP_SCALE_OBS_N * sizeof(double));
    assert_memory_equal(q->range_hi, p->range_hi, SHARP_SCALE_OBS_N * sizeof(double));
    assert_true(greedy_return(q, &cfg) == greedy_return(p, &cfg));
    /* a range with lo > hi is refused, even with a valid checksum */
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    static unsigned char buf[1 << 18];
    size_t len = fread(buf, 1, sizeof buf, fp);
    assert_true(len > 100 && len < sizeof buf);
    double lo_gt_hi = 1e300;
    uint64_t bits;
    memcpy(&bits, &lo_gt_hi, 8);
    for (int i = 0; i < 8; i++) /* the first observation's lowest value, little-endian */
        buf[64 + 16 * SHARP_SCALE_OBS_N + i] = (unsigned char)(bits >> (8 * i));
    uint32_t crc = sharp_crc32(0, buf, len - 4);
    for (int i = 0; i < 4; i++)
        buf[len - 4 + i] = (unsigned char)(crc >> (8 * i));
    rewind(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    sharp_policy_t *bad = sharp_policy_load(path, err, sizeof err);
    assert_null(bad);
    assert_non_null(strstr(err, "invalid trained range for observation 0"));
    unlink(path);
    sharp_policy_free(q);
    sharp_ppo_free(ppo);

    /* the same seed, the same weights */
    sharp_scaling_factory_t f2;
    sharp_scaling_factory_init(&f2, &cfg);
    sharp_ppo_t *x = sharp_ppo_new(&pc, sharp_scaling_factory, &f2, err, sizeof err);
    sharp_ppo_t *y = sharp_ppo_new(&pc, sharp_scaling_factory, &f2, err, sizeof err);
    sharp_ppo_iterate(x, NULL);
    sharp_ppo_iterate(x, NULL);
    sharp_ppo_iterate(y, NULL);
    sharp_ppo_iterate(y, NULL);
    assert_memory_equal(sharp_ppo_policy(x)->params, sharp_ppo_policy(y)->params,
                        sharp_ppo_policy(x)->n_params * sizeof(double));
    sharp_ppo_free(x);
    sharp_ppo_free(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(traces_are_functions_of_their_seed),
        cmocka_unit_test(reference_flash_crowd),
        cmocka_unit_test(erlang_c_closed_forms),
        cmocka_unit_test(more_replicas_lower_latency),
        cmocka_unit_test(boot_delay_is_respected),
        cmocka_unit_test(requests_are_conserved),
        cmocka_unit_test(adaptive_limit_bounds_queueing),
        cmocka_unit_test(simulation_is_deterministic),
        cmocka_unit_test(hpa_sees_booting_and_fresh_pods_as_unready),
        cmocka_unit_test(hpa_inflight_counts_the_queue),
        cmocka_unit_test(episode_draws_stay_within_their_ranges),
        cmocka_unit_test(actions_map_to_counts),
        cmocka_unit_test(env_episodes_are_deterministic),
        cmocka_unit_test(reward_weighs_violations_cost_and_changes),
        cmocka_unit_test(excess_cost_charges_replicas_above_need),
        cmocka_unit_test(trace_kind_sets),
        cmocka_unit_test(controllers_on_the_reference_flash_crowd),
        cmocka_unit_test(short_training_improves_on_the_untrained_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

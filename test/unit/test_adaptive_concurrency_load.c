/* test_adaptive_concurrency_load.c: the concurrency controllers under load:
 * a queueing-server simulation on a fake clock (3x overload, a slowdown and
 * its recovery) and the cross-thread admission bound. Set AC_SIM_DEBUG=1 to
 * print the simulation's trace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ac_test.h"

/* ---- A queueing server: N slots, FIFO, service time S ---- */

typedef struct {
    sharp_ac_controller_t *c;
    fake_clock_t clk;
    unsigned slots;
    uint64_t service_ns;
    uint64_t slot_end[64], slot_start[64];
    uint64_t queue[4096];
    unsigned qhead, qlen;
    uint64_t admitted, rejected, completed;
    uint32_t limit_min, limit_max;
    double lat_sum;
    uint64_t rng; /* when set, service times vary uniformly by +-50% */
} sim_t;

static uint64_t sim_service(sim_t *s)
{
    if (!s->rng) return s->service_ns;
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    double u = (double)(s->rng >> 11) / 9007199254740992.0;
    /* whole milliseconds: completions are seen on millisecond steps */
    return MS((uint64_t)((double)s->service_ns * (0.5 + u) / 1e6 + 0.5));
}

static void sim_start_queued(sim_t *s)
{
    for (unsigned i = 0; i < s->slots && s->qlen; i++) {
        if (s->slot_end[i]) continue;
        s->slot_start[i] = s->queue[s->qhead];
        s->slot_end[i] = s->clk.now + sim_service(s);
        s->qhead = (s->qhead + 1) % 4096;
        s->qlen--;
    }
}

/* Runs `ms` milliseconds with `per_ms` arrivals each millisecond; limit
 * extremes are recorded once `record` is set. */
static void sim_run(sim_t *s, unsigned ms, unsigned per_ms, bool record)
{
    for (unsigned t = 0; t < ms; t++) {
        s->clk.now += MS(1);
        for (unsigned i = 0; i < s->slots; i++) {
            if (!s->slot_end[i] || s->slot_end[i] > s->clk.now) continue;
            uint64_t lat = s->clk.now - s->slot_start[i];
            sharp_ac_release(s->c, 0, s->slot_start[i], lat, SHARP_AC_OK, true);
            s->slot_end[i] = 0;
            if (record) {
                s->completed++;
                s->lat_sum += (double)lat;
            }
        }
        sim_start_queued(s);
        for (unsigned k = 0; k < per_ms; k++) {
            uint64_t st;
            if (sharp_ac_try_acquire(s->c, 0, &st)) {
                assert_true(s->qlen < 4096);
                s->queue[(s->qhead + s->qlen++) % 4096] = st;
                if (record) s->admitted++;
            } else if (record) {
                s->rejected++;
            }
        }
        sim_start_queued(s);
        if (getenv("AC_SIM_DEBUG") && t % 100 == 0) {
            sharp_ac_snapshot_t sn = snap(s->c);
            fprintf(stderr, "t=%.1f limit=%u inflight=%u base=%.2f sample=%.2f q=%u\n",
                    (double)s->clk.now / 1e9, sn.concurrency_limit, sn.in_flight,
                    (double)sn.min_rtt_ns / 1e6, (double)sn.sample_rtt_ns / 1e6, s->qlen);
        }
        if (record) {
            uint32_t l = limit_of(s->c);
            s->limit_min = SHARP_MIN(s->limit_min, l);
            s->limit_max = SHARP_MAX(s->limit_max, l);
        }
    }
}

static void sim_reset_stats(sim_t *s)
{
    s->admitted = s->rejected = s->completed = 0;
    s->lat_sum = 0;
    s->limit_min = UINT32_MAX;
    s->limit_max = 0;
}

/* 3x overload of a 20-slot, 10 ms server (capacity 2000/s), 10 minutes:
 * the limit settles around 1.3-1.5x the slots and stays there, the baseline
 * does not creep up, admitted latency stays within the tolerance, goodput
 * stays at capacity. Then the service time doubles: the limit dips briefly
 * and recovers, the baseline follows within seconds. */
static void test_aimd_overload_sim(void **state)
{
    (void)state;
    sim_t *s = calloc(1, sizeof *s);
    s->clk.now = SEC(1);
    s->slots = 20;
    s->service_ns = MS(10);
    s->rng = 1;
    sharp_aimd_config_t cfg;
    sharp_aimd_config_default(&cfg);
    s->c = sharp_ac_aimd_create(&cfg, 1, fake_clock, &s->clk, 7);
    sim_run(s, 5000, 6, false);
    for (int minute = 0; minute < 10; minute++) {
        sim_reset_stats(s);
        sim_run(s, 60000, 6, true);
        double goodput = (double)s->completed / 60.0;
        double mean_lat = s->lat_sum / (double)s->completed;
        sharp_ac_snapshot_t sn = snap(s->c);
        if (s->limit_min < 20 || s->limit_max > 40 || goodput < 0.97 * 2000 || mean_lat > MS(16) ||
            sn.min_rtt_ns < MS(9) || sn.min_rtt_ns > MS(11))
            fail_msg("minute %d: limit %u..%u goodput %.0f/s mean latency %.1f ms baseline "
                     "%.2f ms",
                     minute, s->limit_min, s->limit_max, goodput, mean_lat / 1e6,
                     (double)sn.min_rtt_ns / 1e6);
    }

    s->service_ns = MS(20);
    sim_reset_stats(s);
    sim_run(s, 3000, 6, true);
    sharp_ac_snapshot_t sn = snap(s->c);
    if (s->limit_min < 14 || sn.min_rtt_ns < MS(18) || sn.min_rtt_ns > MS(23))
        fail_msg("slowdown: limit min %u, baseline %.2f ms", s->limit_min,
                 (double)sn.min_rtt_ns / 1e6);
    sim_reset_stats(s);
    sim_run(s, 30000, 6, true);
    double goodput = (double)s->completed / 30.0;
    if (s->limit_min < 20 || goodput < 0.97 * 1000)
        fail_msg("after slowdown: limit %u..%u goodput %.0f/s", s->limit_min, s->limit_max,
                 goodput);

    /* Recovery: the faster service is believed at once. */
    s->service_ns = MS(10);
    sim_reset_stats(s);
    sim_run(s, 5000, 6, true);
    sn = snap(s->c);
    if (sn.min_rtt_ns > MS(11) || sn.concurrency_limit < 20)
        fail_msg("recovery: limit %u baseline %.2f ms", sn.concurrency_limit,
                 (double)sn.min_rtt_ns / 1e6);
    sharp_ac_destroy(s->c);
    free(s);
}

/* The gradient controller on the same server: it holds the load too, but
 * pins the limit to 3 while measuring minRTT. */
static void test_gradient_overload_sim(void **state)
{
    (void)state;
    sim_t *s = calloc(1, sizeof *s);
    s->clk.now = SEC(1);
    s->slots = 20;
    s->service_ns = MS(10);
    s->rng = 1;
    sharp_gradient_config_t cfg = gcfg();
    s->c = sharp_ac_gradient_create(&cfg, 1, fake_clock, &s->clk, 7);
    sim_run(s, 5000, 6, false);
    sim_reset_stats(s);
    sim_run(s, 120000, 6, true);
    double goodput = (double)s->completed / 120.0;
    if (s->limit_min != 3 || s->limit_max > 60 || goodput < 0.8 * 2000)
        fail_msg("limit %u..%u goodput %.0f/s", s->limit_min, s->limit_max, goodput);
    sharp_ac_destroy(s->c);
    free(s);
}

/* ---- Threads ---- */

typedef struct {
    sharp_ac_controller_t *c;
    unsigned shard, iters;
    _Atomic int *cur, *max;
    _Atomic uint64_t *rejected;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    for (unsigned i = 0; i < a->iters; i++) {
        uint64_t st;
        if (!sharp_ac_try_acquire(a->c, a->shard, &st)) {
            atomic_fetch_add(a->rejected, 1);
            continue;
        }
        int v = atomic_fetch_add(a->cur, 1) + 1;
        int m = atomic_load(a->max);
        while (v > m && !atomic_compare_exchange_weak(a->max, &m, v)) {
        }
        if (i % 7 == 0) sched_yield();
        atomic_fetch_sub(a->cur, 1);
        sharp_ac_release(a->c, a->shard, st, US(100 + i % 900), SHARP_AC_OK, true);
    }
    return NULL;
}

/* Runs nthreads workers (shard = thread index) and returns the highest
 * number of admitted requests seen in flight at once. */
static int run_threads(sharp_ac_controller_t *c, unsigned nthreads, unsigned iters,
                       uint64_t *rejected)
{
    pthread_t th[32];
    worker_arg_t args[32];
    _Atomic int cur = 0, max = 0;
    _Atomic uint64_t rej = 0;
    assert_true(nthreads <= 32);
    for (unsigned i = 0; i < nthreads; i++) {
        args[i] = (worker_arg_t){c, i, iters, &cur, &max, &rej};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(snap(c).in_flight, 0);
    *rejected = atomic_load(&rej);
    return atomic_load(&max);
}

/* With a constant limit L, 16 threads never have more than L admitted
 * requests in flight: the bound is exact, not L + nthreads - 1. */
static void test_threads_limit_bound(void **state)
{
    (void)state;
    fake_clock_t clk = {SEC(5)}; /* frozen: no update changes the limit */
    sharp_gradient_config_t g = gcfg();
    g.fixed_value_ns = MS(1);
    g.min_concurrency = 5;
    sharp_aimd_config_t a = acfg();
    a.initial_limit = 5;
    sharp_ac_controller_t *cs[2] = {sharp_ac_gradient_create(&g, 16, fake_clock, &clk, 1),
                                    sharp_ac_aimd_create(&a, 16, fake_clock, &clk, 1)};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(limit_of(cs[k]), 5);
        uint64_t rejected;
        int max = run_threads(cs[k], 16, 50000, &rejected);
        assert_true(max <= 5);
        assert_true(max >= 2);
        assert_true(rejected > 0);
        sharp_ac_destroy(cs[k]);
    }
}

/* Real clock, short windows: updates run on worker threads while others
 * admit and release. The limit stays within its bounds, admitted requests
 * never exceed the highest limit, and in-flight returns to 0. */
static void test_threads_updates(void **state)
{
    (void)state;
    sharp_gradient_config_t g = gcfg();
    g.concurrency_update_interval_ns = MS(1);
    g.min_rtt_calc_interval_ns = MS(20);
    g.request_count = 20;
    g.max_concurrency_limit = 50;
    sharp_aimd_config_t a = acfg();
    a.update_interval_ns = MS(1);
    a.max_limit = 50;
    a.slow_start = true;
    sharp_ac_controller_t *cs[2] = {sharp_ac_gradient_create(&g, 8, NULL, NULL, 1),
                                    sharp_ac_aimd_create(&a, 8, NULL, NULL, 1)};
    for (int k = 0; k < 2; k++) {
        uint64_t rejected;
        int max = run_threads(cs[k], 8, 200000, &rejected);
        assert_true(max <= 50);
        sharp_ac_snapshot_t s = snap(cs[k]);
        assert_true(s.concurrency_limit >= 3 && s.concurrency_limit <= 50);
        assert_true(s.windows > 0);
        sharp_ac_destroy(cs[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aimd_overload_sim),
        cmocka_unit_test(test_gradient_overload_sim),
        cmocka_unit_test(test_threads_limit_bound),
        cmocka_unit_test(test_threads_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

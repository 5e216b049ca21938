/* ac_test.h: helpers of the adaptive concurrency controller tests: a fake
 * clock, scripted requests and default test configs. */
#ifndef SHARP_TEST_AC_TEST_H
#define SHARP_TEST_AC_TEST_H

#include "filters/adaptive_concurrency/controller.h"

#define US(x) ((uint64_t)(x)*1000ull)
#define MS(x) ((uint64_t)(x)*1000000ull)
#define SEC(x) ((uint64_t)(x)*1000000000ull)

typedef struct {
    uint64_t now;
} fake_clock_t;

static inline uint64_t fake_clock(void *arg)
{
    return ((fake_clock_t *)arg)->now;
}

static inline sharp_ac_snapshot_t snap(sharp_ac_controller_t *c)
{
    sharp_ac_snapshot_t s;
    sharp_ac_snapshot(c, &s);
    return s;
}

static inline uint32_t limit_of(sharp_ac_controller_t *c)
{
    return snap(c).concurrency_limit;
}

/* n requests one after another, each admitted and answered at once with
 * `latency`. Returns how many were admitted. */
static inline unsigned serial(sharp_ac_controller_t *c, unsigned n, uint64_t latency,
                              sharp_ac_outcome_t outcome)
{
    unsigned ok = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t st;
        if (!sharp_ac_try_acquire(c, 0, &st)) continue;
        sharp_ac_release(c, 0, st, latency, outcome, true);
        ok++;
    }
    return ok;
}

/* n requests in batches of `width` concurrent ones (so in-flight reaches
 * min(width, limit) and attempts beyond the limit are rejected). */
static inline void batches(sharp_ac_controller_t *c, unsigned width, unsigned n, uint64_t latency,
                           sharp_ac_outcome_t outcome)
{
    uint64_t starts[2048];
    assert_true(width <= 2048);
    for (unsigned done = 0; done < n;) {
        unsigned batch = SHARP_MIN(width, n - done), k = 0;
        for (unsigned i = 0; i < batch; i++)
            if (sharp_ac_try_acquire(c, 0, &starts[k])) k++;
        for (unsigned i = 0; i < k; i++)
            sharp_ac_release(c, 0, starts[i], latency, outcome, true);
        done += batch;
    }
}

static inline void advance(sharp_ac_controller_t *c, fake_clock_t *clk, uint64_t dt)
{
    clk->now += dt;
    sharp_ac_tick(c);
}

static inline sharp_gradient_config_t gcfg(void)
{
    sharp_gradient_config_t g;
    sharp_gradient_config_default(&g);
    g.concurrency_update_interval_ns = MS(100);
    g.min_rtt_calc_interval_ns = SEC(60);
    return g;
}

static inline sharp_aimd_config_t acfg(void)
{
    sharp_aimd_config_t a;
    sharp_aimd_config_default(&a);
    a.slow_start = false;
    return a;
}

#endif

/* test_lb.c: load balancer policies, health filtering and panic mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "upstream/lb.h"

#define MAXH 8

typedef struct {
    sharp_host_t h[MAXH];
    sharp_host_t *ptr[MAXH];
    uint32_t n;
} hostset_t;

static void hosts_init(hostset_t *s, uint32_t n, const uint32_t *weights)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(s->h[i].address, sizeof s->h[i].address, "10.0.0.%u:80", i + 1);
        s->h[i].weight = weights ? weights[i] : 1;
        s->ptr[i] = &s->h[i];
    }
}

static int index_of(const hostset_t *s, const sharp_host_t *h)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->ptr[i] == h) return (int)i;
    return -1;
}

static void count(sharp_lb_t *lb, const hostset_t *s, int picks, int *out)
{
    memset(out, 0, sizeof(int) * MAXH);
    for (int i = 0; i < picks; i++) {
        sharp_host_t *h = sharp_lb_choose(lb);
        assert_non_null(h);
        out[index_of(s, h)]++;
    }
}

static void test_empty(void **state)
{
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, NULL, 0, 1);
    assert_null(sharp_lb_choose(&lb));
    sharp_lb_destroy(&lb);
}

static void test_rr_rotation(void **state)
{
    hostset_t s;
    hosts_init(&s, 4, NULL);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 42);
    int prev = index_of(&s, sharp_lb_choose(&lb));
    for (int i = 0; i < 20; i++) {
        int cur = index_of(&s, sharp_lb_choose(&lb));
        assert_int_equal(cur, (prev + 1) % 4);
        prev = cur;
    }
    sharp_lb_destroy(&lb);
}

static void test_rr_start_differs_by_seed(void **state)
{
    hostset_t s;
    hosts_init(&s, 8, NULL);
    bool seen[MAXH] = {false};
    for (uint64_t seed = 0; seed < 64; seed++) {
        sharp_lb_t lb;
        sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, seed);
        seen[index_of(&s, sharp_lb_choose(&lb))] = true;
        sharp_lb_destroy(&lb);
    }
    int distinct = 0;
    for (int i = 0; i < MAXH; i++)
        distinct += seen[i];
    assert_true(distinct >= 4);
}

static void test_rr_weighted_exact_and_spread(void **state)
{
    hostset_t s;
    uint32_t w[] = {5, 1, 1};
    hosts_init(&s, 3, w);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 7);
    int c[MAXH];
    count(&lb, &s, 7000, c);
    assert_int_equal(c[0], 5000);
    assert_int_equal(c[1], 1000);
    assert_int_equal(c[2], 1000);
    /* spread: the light hosts never come back to back within a cycle */
    int last = -1, runs = 0;
    for (int i = 0; i < 70; i++) {
        int cur = index_of(&s, sharp_lb_choose(&lb));
        if (cur != 0 && last != 0 && last >= 0) runs++;
        last = cur;
    }
    assert_int_equal(runs, 0);
    sharp_lb_destroy(&lb);
}

static void test_rr_skips_unhealthy(void **state)
{
    hostset_t s;
    hosts_init(&s, 3, NULL);
    sharp_host_health_store(&s.h[1], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 3);
    int c[MAXH];
    count(&lb, &s, 100, c);
    assert_int_equal(c[1], 0);
    assert_int_equal(c[0], 50);
    assert_int_equal(c[2], 50);
    assert_false(lb.in_panic);
    /* recovery is seen on the next choice */
    sharp_host_health_store(&s.h[1], 0);
    count(&lb, &s, 99, c);
    assert_int_equal(c[1], 33);
    sharp_lb_destroy(&lb);
}

static void test_panic_threshold(void **state)
{
    hostset_t s;
    hosts_init(&s, 4, NULL);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 3);
    int c[MAXH];
    /* 2 of 4 healthy = 50%: not below the threshold, unhealthy hosts skipped */
    sharp_host_health_store(&s.h[0], SHARP_HOST_FAILED_OUTLIER);
    sharp_host_health_store(&s.h[1], SHARP_HOST_FAILED_OUTLIER);
    count(&lb, &s, 100, c);
    assert_int_equal(c[0] + c[1], 0);
    assert_false(lb.in_panic);
    /* 1 of 4 healthy = 25% < 50%: panic, every host gets traffic */
    sharp_host_health_store(&s.h[2], SHARP_HOST_FAILED_EDS_HEALTH);
    count(&lb, &s, 100, c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(c[i], 25);
    assert_true(lb.in_panic);
    /* none healthy: still panic */
    sharp_host_health_store(&s.h[3], SHARP_HOST_FAILED_ACTIVE_HC);
    count(&lb, &s, 100, c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(c[i], 25);
    /* panic disabled (threshold 0): no host at all */
    lb.panic_threshold = 0;
    assert_null(sharp_lb_choose(&lb));
    /* threshold 0 with one healthy host: only that one */
    sharp_host_health_store(&s.h[3], 0);
    count(&lb, &s, 10, c);
    assert_int_equal(c[3], 10);
    assert_false(lb.in_panic);
    /* 1 of 4 healthy = 25%: in panic from a threshold above it only */
    lb.panic_threshold = 25;
    count(&lb, &s, 10, c);
    assert_int_equal(c[3], 10);
    assert_false(lb.in_panic);
    lb.panic_threshold = 26;
    count(&lb, &s, 100, c);
    assert_int_equal(c[0], 25);
    assert_true(lb.in_panic);
    sharp_lb_destroy(&lb);
}

static void test_random_distribution(void **state)
{
    hostset_t s;
    hosts_init(&s, 4, NULL);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_RANDOM, s.ptr, s.n, 99);
    int c[MAXH];
    count(&lb, &s, 40000, c);
    for (int i = 0; i < 4; i++)
        assert_in_range(c[i], 9000, 11000);
    sharp_lb_destroy(&lb);
}

static void test_p2c_prefers_less_loaded(void **state)
{
    hostset_t s;
    hosts_init(&s, 3, NULL);
    atomic_store(&s.h[0].active_rq, 50);
    atomic_store(&s.h[1].active_rq, 5);
    atomic_store(&s.h[2].active_rq, 0);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_LEAST_REQUEST, s.ptr, s.n, 5);
    int c[MAXH];
    count(&lb, &s, 9000, c);
    /* with two samples out of three, host 0 wins only when sampled twice
     * (1/9), host 2 whenever sampled (5/9) */
    assert_in_range(c[0], 700, 1300);
    assert_in_range(c[1], 2600, 3400);
    assert_in_range(c[2], 4600, 5400);
    /* more choices concentrate on the idle host */
    lb.choice_count = 5;
    count(&lb, &s, 9000, c);
    assert_true(c[2] > 7500);
    sharp_lb_destroy(&lb);
}

static void test_least_request_weighted(void **state)
{
    hostset_t s;
    uint32_t w[] = {2, 1};
    hosts_init(&s, 2, w);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_LEAST_REQUEST, s.ptr, s.n, 5);
    int c[MAXH];
    count(&lb, &s, 3000, c);
    assert_int_equal(c[0], 2000);
    assert_int_equal(c[1], 1000);
    /* host 0 busy: effective weight 2/(3+1) = 0.5 against 1 */
    atomic_store(&s.h[0].active_rq, 3);
    count(&lb, &s, 3000, c);
    assert_in_range(c[0], 950, 1050);
    assert_in_range(c[1], 1950, 2050);
    sharp_lb_destroy(&lb);
}

static void test_priorities(void **state)
{
    hostset_t s;
    hosts_init(&s, 4, NULL);
    s.h[2].priority = 1;
    s.h[3].priority = 1;
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 11);
    int c[MAXH];
    count(&lb, &s, 1000, c);
    assert_int_equal(c[0] + c[1], 1000);
    /* P0 half healthy: health min(100, 1.4 * 50) = 70%, the rest spills to P1 */
    sharp_host_health_store(&s.h[0], SHARP_HOST_FAILED_ACTIVE_HC);
    count(&lb, &s, 10000, c);
    assert_int_equal(c[0], 0);
    assert_in_range(c[1], 6600, 7400);
    assert_in_range(c[2] + c[3], 2600, 3400);
    /* P0 all down: everything to P1 */
    sharp_host_health_store(&s.h[1], SHARP_HOST_FAILED_ACTIVE_HC);
    count(&lb, &s, 1000, c);
    assert_int_equal(c[2] + c[3], 1000);
    sharp_lb_destroy(&lb);
}

static void test_random_is_deterministic_per_seed(void **state)
{
    sharp_lb_t a, b;
    sharp_lb_init(&a, SHARP_LB_RANDOM, NULL, 0, 1234);
    sharp_lb_init(&b, SHARP_LB_RANDOM, NULL, 0, 1234);
    for (int i = 0; i < 10; i++)
        assert_true(sharp_lb_random(&a) == sharp_lb_random(&b));
    sharp_lb_destroy(&b);
    sharp_lb_init(&b, SHARP_LB_RANDOM, NULL, 0, 1235);
    assert_true(sharp_lb_random(&a) != sharp_lb_random(&b));
    sharp_lb_destroy(&a);
    sharp_lb_destroy(&b);
}


/* Envoy's priority load, with its documented examples
 * (arch_overview/upstream/load_balancing/priority, overprovisioning 1.4):
 * two levels, P=1 fully healthy, P=0's healthy share varying. */
static void test_priority_load_envoy_examples(void **state)
{
    (void)state;
    static const struct {
        uint32_t healthy0, p0, p1;
    } ex[] = {{100, 100, 0}, {72, 100, 0}, {71, 99, 1}, {50, 70, 30}, {25, 35, 65}, {0, 0, 100}};
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        uint32_t total[2] = {100, 100}, healthy[2] = {ex[i].healthy0, 100}, load[2];
        assert_int_equal(sharp_lb_priority_load(2, total, healthy, 50, load), 0);
        assert_int_equal(load[0], ex[i].p0);
        assert_int_equal(load[1], ex[i].p1);
    }
    /* normalized total health: P=0 and P=1 both 20% healthy (health 28
     * each, 56 in all) split 50/50 instead of leaving 44% unassigned; with
     * the default panic threshold both are in panic: the host counts (equal
     * here) decide */
    uint32_t total[3] = {100, 100, 100}, healthy[3] = {20, 20, 0}, load[3];
    assert_int_equal(sharp_lb_priority_load(2, total, healthy, 0, load), 0);
    assert_int_equal(load[0], 50);
    assert_int_equal(load[1], 50);
    assert_int_equal(sharp_lb_priority_load(2, total, healthy, 50, load), 1);
    assert_int_equal(load[0], 50);
    assert_int_equal(load[1], 50);
    /* an aggregate's linearized levels: primary P0 (4 hosts, 1 healthy:
     * health 35), primary P1 (2 hosts, both down), secondary P0 (fully
     * healthy): 35 / 0 / 65 */
    uint32_t t3[3] = {4, 2, 3}, h3[3] = {1, 0, 3};
    assert_int_equal(sharp_lb_priority_load(3, t3, h3, 50, load), 0);
    assert_int_equal(load[0], 35);
    assert_int_equal(load[1], 0);
    assert_int_equal(load[2], 65);
    /* rounding: health 33 + 33 + 33 = 99, each gets 33 * 100 / 99 = 33,
     * the remainder (1) goes to the first level with health */
    uint32_t t4[3] = {100, 100, 100}, h4[3] = {24, 24, 24};
    assert_int_equal(sharp_lb_priority_load(3, t4, h4, 0, load), 0);
    assert_int_equal(load[0], 34);
    assert_int_equal(load[1], 33);
    assert_int_equal(load[2], 33);
}

/* Total panic: nothing available at all, or every level under the panic
 * threshold: the load follows the host counts (Envoy's
 * recalculateLoadInTotalPanic); with panic off and nothing available, all
 * of it on P=0, where no host can be chosen. */
static void test_priority_load_total_panic(void **state)
{
    (void)state;
    uint32_t total[2] = {3, 1}, none[2] = {0, 0}, load[2];
    assert_int_equal(sharp_lb_priority_load(2, total, none, 50, load), 1);
    assert_int_equal(load[0], 75);
    assert_int_equal(load[1], 25);
    assert_int_equal(sharp_lb_priority_load(2, total, none, 0, load), -1);
    assert_int_equal(load[0], 100);
    assert_int_equal(load[1], 0);
    /* one level above the threshold: no total panic, health decides
     * (84 and 14 of 98: 85 and 14, the remainder to level 0) */
    uint32_t t2[2] = {10, 10}, h2[2] = {6, 1};
    assert_int_equal(sharp_lb_priority_load(2, t2, h2, 50, load), 0);
    assert_int_equal(load[0], 86);
    assert_int_equal(load[1], 14);
    /* thirds round down; the remainder to level 0 */
    uint32_t t3[3] = {1, 1, 1}, h3[3] = {0, 0, 0}, l3[3];
    assert_int_equal(sharp_lb_priority_load(3, t3, h3, 50, l3), 1);
    assert_int_equal(l3[0], 34);
    assert_int_equal(l3[1], 33);
    assert_int_equal(l3[2], 33);
    /* the level a random number falls in */
    uint32_t ld[3] = {35, 0, 65};
    assert_int_equal(sharp_lb_pick_level(ld, 3, 0), 0);
    assert_int_equal(sharp_lb_pick_level(ld, 3, 34), 0);
    assert_int_equal(sharp_lb_pick_level(ld, 3, 35), 2);
    assert_int_equal(sharp_lb_pick_level(ld, 3, 199), 2);
}

/* An aggregate forces a level: the choice stays there even when another
 * level is healthier, and the level's own panic applies. */
static void test_choose_level(void **state)
{
    (void)state;
    hostset_t s;
    hosts_init(&s, 4, NULL);
    s.h[2].priority = s.h[3].priority = 1;
    s.h[0].health_flags = SHARP_HOST_FAILED_ACTIVE_HC;
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 7);
    uint32_t t[2], h[2];
    sharp_lb_level_counts(&lb, t, h);
    assert_int_equal(t[0], 2);
    assert_int_equal(h[0], 1);
    assert_int_equal(t[1], 2);
    assert_int_equal(h[1], 2);
    for (int i = 0; i < 20; i++) assert_ptr_equal(sharp_lb_choose_level(&lb, 0), &s.h[1]);
    for (int i = 0; i < 20; i++) {
        sharp_host_t *x = sharp_lb_choose_level(&lb, 1);
        assert_true(x == &s.h[2] || x == &s.h[3]);
    }
    /* level 0 with no healthy host: in panic (0% < 50%), any of its hosts */
    sharp_host_health_store(&s.h[1], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_host_t *x = sharp_lb_choose_level(&lb, 0);
    assert_true(x == &s.h[0] || x == &s.h[1]);
    assert_true(lb.in_panic);
    assert_null(sharp_lb_choose_level(&lb, 2)); /* no such level */
    sharp_lb_destroy(&lb);
}

/* The pick cache: the level's usable hosts in host order, as the scan over
 * every host listed them, kept while no host's health or breaker changes;
 * a change (a health flag, an outlier breaker opened by a failed probe with
 * no flag yet) is seen at the next pick, and a half-open host's probe
 * budget is respected (no cache then). */
static void test_pick_cache_follows_health_and_breakers(void **state)
{
    (void)state;
    hostset_t s;
    hosts_init(&s, 8, NULL);
    s.h[6].priority = s.h[7].priority = 1;
    sharp_host_health_store(&s.h[2], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, s.ptr, s.n, 5);
    /* level 0: hosts 0, 1, 3, 4, 5 in rotation, in host order */
    static const int usable[] = {0, 1, 3, 4, 5};
    int first = index_of(&s, sharp_lb_choose(&lb)), k = 0;
    while (usable[k] != first) k++;
    for (int i = 1; i < 20; i++)
        assert_int_equal(index_of(&s, sharp_lb_choose(&lb)), usable[(k + i) % 5]);
    int c[MAXH];
    /* host 4's breaker opens (a failed probe; the flag comes later) */
    sharp_host_breaker_store(&s.h[4], SHARP_HOST_BREAKER_OPEN);
    count(&lb, &s, 100, c);
    assert_int_equal(c[4], 0);
    assert_int_equal(c[2], 0);
    /* 4 of level 0's 6 hosts healthy: 93% of the load (overprovisioning
     * 1.4) stays at level 0, drawn per pick */
    assert_in_range(c[0] + c[1] + c[3] + c[5], 85, 99);
    /* half-open with 2 probes: picked exactly twice */
    atomic_store(&s.h[4].probe_budget, 2);
    sharp_host_breaker_store(&s.h[4], SHARP_HOST_BREAKER_HALF_OPEN);
    count(&lb, &s, 50, c);
    assert_int_equal(c[4], 2);
    /* closed again, and host 2 recovers: both back at the next pick */
    assert_true(sharp_host_breaker_cas(&s.h[4], SHARP_HOST_BREAKER_HALF_OPEN, SHARP_HOST_BREAKER_CLOSED));
    sharp_host_health_store(&s.h[2], 0);
    count(&lb, &s, 60, c);
    for (int i = 0; i < 6; i++) assert_int_equal(c[i], 10);
    assert_int_equal(c[6] + c[7], 0);
    /* level 0 below the panic threshold (1 of 6 healthy): panic, all six
     * of its hosts, still in host order */
    for (int i = 0; i < 5; i++) sharp_host_health_store(&s.h[i], SHARP_HOST_FAILED_OUTLIER);
    uint32_t t[2], h[2];
    sharp_lb_level_counts(&lb, t, h);
    assert_int_equal(h[0], 1);
    /* level 0 forced (as an aggregate cluster does): every host of it in
     * turn */
    memset(c, 0, sizeof c);
    for (int i = 0; i < 12; i++) {
        sharp_host_t *x = sharp_lb_choose_level(&lb, 0);
        assert_true(lb.in_panic);
        c[index_of(&s, x)]++;
    }
    for (int i = 0; i < 6; i++) assert_int_equal(c[i], 2);
    sharp_lb_destroy(&lb);
}

/* The shape a host set carries: its levels and weights, as a balancer
 * made from the hosts alone would find them. */
static void test_shape_levels_and_weights(void **state)
{
    hostset_t s;
    uint32_t w[] = {1, 1, 3, 1, 1};
    hosts_init(&s, 5, w);
    s.h[0].priority = 2;
    s.h[1].priority = 0;
    s.h[2].priority = 2;
    s.h[3].priority = 5;
    s.h[4].priority = 0;
    sharp_lb_shape_t *sh = sharp_lb_shape_new(s.ptr, s.n);
    assert_int_equal(sh->nlevels, 3);
    assert_false(sh->all_equal_weights);
    uint32_t want_level[] = {1, 0, 1, 2, 0}, want_total[] = {2, 2, 1};
    for (uint32_t i = 0; i < 5; i++) assert_int_equal(sh->level_of[i], want_level[i]);
    for (uint32_t l = 0; l < 3; l++) assert_int_equal(sh->level_total[l], want_total[l]);
    sharp_lb_shape_free(sh);
    hosts_init(&s, 3, NULL);
    sh = sharp_lb_shape_new(s.ptr, s.n);
    assert_int_equal(sh->nlevels, 1);
    assert_true(sh->all_equal_weights);
    sharp_lb_shape_free(sh);
}

/* A balancer over a borrowed shape chooses exactly as one that made its
 * own, for every policy, with priorities and unequal weights. */
static void test_shaped_chooses_as_unshaped(void **state)
{
    hostset_t s;
    uint32_t w[] = {4, 1, 2, 1, 3, 1};
    hosts_init(&s, 6, w);
    s.h[3].priority = 1;
    s.h[4].priority = 1;
    sharp_host_health_store(&s.h[0], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_lb_shape_t *sh = sharp_lb_shape_new(s.ptr, s.n);
    sharp_lb_policy_t policies[] = {SHARP_LB_ROUND_ROBIN, SHARP_LB_LEAST_REQUEST, SHARP_LB_RANDOM};
    for (int k = 0; k < 3; k++) {
        sharp_lb_t own, shared;
        sharp_lb_init(&own, policies[k], s.ptr, s.n, 99);
        sharp_lb_init_shaped(&shared, policies[k], s.ptr, s.n, 99, sh, NULL);
        assert_null(shared.own_shape);
        for (int i = 0; i < 500; i++) assert_ptr_equal(sharp_lb_choose(&own), sharp_lb_choose(&shared));
        sharp_lb_destroy(&own);
        sharp_lb_destroy(&shared);
    }
    sharp_lb_shape_free(sh);
}

/* A balancer moved to another set (sharp_lb_destroy_keep, then init with
 * reuse) keeps its scratch memory when the new set is no larger, and starts
 * weighted round robin afresh; a shape made for another host count is not
 * used (the balancer makes its own). */
static void test_reinit_reuses_scratch(void **state)
{
    hostset_t big, small;
    uint32_t w[] = {5, 1, 1};
    hosts_init(&big, 8, NULL);
    hosts_init(&small, 3, w);
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, big.ptr, big.n, 3);
    assert_null(lb.current); /* equal weights: no credits */
    uint32_t *scratch = lb.scratch;
    int c[MAXH];
    count(&lb, &big, 80, c);
    for (int i = 0; i < 8; i++) assert_int_equal(c[i], 10);

    sharp_lb_shape_t *sh = sharp_lb_shape_new(small.ptr, small.n);
    sharp_lb_destroy_keep(&lb);
    sharp_lb_init_shaped(&lb, SHARP_LB_ROUND_ROBIN, small.ptr, small.n, 4, sh, &lb);
    assert_ptr_equal(lb.scratch, scratch);
    assert_true(lb.scratch_cap >= 8);
    assert_non_null(lb.current);
    count(&lb, &small, 700, c);
    assert_int_equal(c[0], 500);
    assert_int_equal(c[1], 100);
    assert_int_equal(c[2], 100);

    /* larger again, through a shape made for another count: its own */
    sharp_lb_destroy_keep(&lb);
    sharp_lb_init_shaped(&lb, SHARP_LB_ROUND_ROBIN, big.ptr, big.n, 5, sh, &lb);
    assert_non_null(lb.own_shape);
    assert_true(lb.scratch_cap >= 8);
    count(&lb, &big, 80, c);
    for (int i = 0; i < 8; i++) assert_int_equal(c[i], 10);
    sharp_lb_destroy(&lb);
    sharp_lb_shape_free(sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_rr_rotation),
        cmocka_unit_test(test_rr_start_differs_by_seed),
        cmocka_unit_test(test_rr_weighted_exact_and_spread),
        cmocka_unit_test(test_rr_skips_unhealthy),
        cmocka_unit_test(test_panic_threshold),
        cmocka_unit_test(test_random_distribution),
        cmocka_unit_test(test_p2c_prefers_less_loaded),
        cmocka_unit_test(test_least_request_weighted),
        cmocka_unit_test(test_priorities),
        cmocka_unit_test(test_priority_load_envoy_examples),
        cmocka_unit_test(test_priority_load_total_panic),
        cmocka_unit_test(test_choose_level),
        cmocka_unit_test(test_pick_cache_follows_health_and_breakers),
        cmocka_unit_test(test_random_is_deterministic_per_seed),
        cmocka_unit_test(test_shape_levels_and_weights),
        cmocka_unit_test(test_shaped_chooses_as_unshaped),
        cmocka_unit_test(test_reinit_reuses_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

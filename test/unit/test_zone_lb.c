/* test_zone_lb.c: zone-aware routing (upstream/zone_lb.h): the locality
 * plan and the sampling of a pick, with cases of Envoy's
 * round_robin_lb_test (ZoneAwareResidualsMismatched,
 * ZoneAwareZonesMismatched, ZoneAwareSmallCluster,
 * ZoneAwareDifferentZoneSize), then the balancer over real host sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "upstream/cluster.h"
#include "upstream/lb.h"
#include "upstream/zone_lb.h"

/* Random numbers from a script, as Envoy's tests mock random(). */
typedef struct {
    const uint64_t *v;
    uint32_t n, at;
} script_t;

static uint64_t scripted(void *arg)
{
    script_t *s = arg;
    assert_true(s->at < s->n);
    return s->v[s->at++];
}

static uint32_t pick(const sharp_zone_plan_t *p, uint64_t a, uint64_t b, sharp_zone_pick_t *what)
{
    uint64_t v[2] = {a, b};
    script_t s = {v, 2, 0};
    return sharp_zone_pick(p, scripted, &s, what);
}

static void test_percentage(void **state)
{
    (void)state;
    assert_int_equal(sharp_zone_percentage(1, 3), 3333);
    assert_int_equal(sharp_zone_percentage(3, 8), 3750);
    assert_int_equal(sharp_zone_percentage(0, 5), 0);
    assert_int_equal(sharp_zone_percentage(2, 0), 0);
}

/* Local zone A. A: 2 local, 1 upstream; B: 2 local, no upstream; C: 1
 * local, 3 upstream; D: 1 local, 3 upstream; E: no local, 1 upstream. */
static void test_residuals_mismatched(void **state)
{
    (void)state;
    uint32_t up[] = {1, 3, 3, 1}, local[] = {2, 1, 1, 0}; /* A, C, D, E */
    sharp_zone_input_t in = {.nloc = 4, .up_has_local = true, .up_healthy = up, .local_healthy = local,
                             .local_healthy_total = 6, .local_nloc = 4, .local_has_local = true,
                             .min_cluster_size = 6};
    sharp_zone_plan_t p;
    sharp_zone_exit_t why;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(why, SHARP_ZONE_EXIT_NONE);
    assert_int_equal(p.state, SHARP_ZONE_RESIDUAL);
    /* 3/8 of the traffic stays in A */
    assert_int_equal(p.local_percent_to_route, 3750);
    assert_int_equal(p.residual[0], 0);
    assert_int_equal(p.residual[1], 2084);
    assert_int_equal(p.residual[2], 4168);
    assert_int_equal(p.residual[3], 5418);
    sharp_zone_pick_t what;
    assert_int_equal(pick(&p, 0, 0, &what), 0);
    assert_int_equal(what, SHARP_ZONE_PICK_SAMPLED);
    assert_int_equal(pick(&p, 3749, 0, &what), 0);
    assert_int_equal(what, SHARP_ZONE_PICK_SAMPLED);
    /* the rest by residual capacity: C [0, 2083], D [2084, 4167], E [4168, 5417] */
    assert_int_equal(pick(&p, 3750, 0, &what), 1);
    assert_int_equal(what, SHARP_ZONE_PICK_CROSS);
    assert_int_equal(pick(&p, 3750, 2083, &what), 1);
    assert_int_equal(pick(&p, 9999, 2084, &what), 2);
    assert_int_equal(pick(&p, 9999, 4167, &what), 2);
    assert_int_equal(pick(&p, 9999, 4168, &what), 3);
    assert_int_equal(pick(&p, 9999, 5417, &what), 3);
    /* 5418 wraps around to C */
    assert_int_equal(pick(&p, 9999, 5418, &what), 1);
}

/* Zone A: 1 local, 1 upstream; B: 1 local, 0 upstream; C: 0 local, 1
 * upstream. From A everything stays in A; from B (no upstream host there)
 * everything goes to C, which has the residual capacity. */
static void test_zones_mismatched(void **state)
{
    (void)state;
    sharp_zone_plan_t p;
    sharp_zone_exit_t why;
    sharp_zone_pick_t what;
    uint32_t up_a[] = {1, 1}, local_a[] = {1, 0}; /* A, C */
    sharp_zone_input_t in = {.nloc = 2, .up_has_local = true, .up_healthy = up_a, .local_healthy = local_a,
                             .local_healthy_total = 2, .local_nloc = 2, .local_has_local = true,
                             .min_cluster_size = 2};
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(p.state, SHARP_ZONE_DIRECT);
    assert_int_equal(pick(&p, 0, 0, &what), 0);
    assert_int_equal(what, SHARP_ZONE_PICK_DIRECT);

    uint32_t up_b[] = {1, 1}, local_b[] = {1, 0}; /* A, C; the node is in B */
    in.up_has_local = false;
    in.up_healthy = up_b;
    in.local_healthy = local_b;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(p.state, SHARP_ZONE_RESIDUAL);
    assert_int_equal(p.local_percent_to_route, 0);
    assert_int_equal(pick(&p, 0, 0, &what), 1);
    assert_int_equal(what, SHARP_ZONE_PICK_CROSS);
    assert_int_equal(pick(&p, 0, 4999, &what), 1);
}

/* Local zone B: B and A have one proxy each; the upstream has one host
 * in each of B, A and C: 2/3 of the traffic stays in B. */
static void test_different_zone_size(void **state)
{
    (void)state;
    uint32_t up[] = {1, 1, 1}, local[] = {1, 1, 0}; /* B, A, C */
    sharp_zone_input_t in = {.nloc = 3, .up_has_local = true, .up_healthy = up, .local_healthy = local,
                             .local_healthy_total = 2, .local_nloc = 2, .local_has_local = true,
                             .min_cluster_size = 3};
    sharp_zone_plan_t p;
    sharp_zone_exit_t why;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(p.state, SHARP_ZONE_RESIDUAL);
    assert_int_equal(p.local_percent_to_route, 6666);
    sharp_zone_pick_t what;
    assert_int_equal(pick(&p, 6665, 0, &what), 0);
    assert_int_equal(what, SHARP_ZONE_PICK_SAMPLED);
    /* A has 3333 of upstream for 5000 local: no residual; C all of its 3333 */
    assert_int_equal(p.residual[1], 0);
    assert_int_equal(p.residual[2], 3333);
    assert_int_equal(pick(&p, 6666, 0, &what), 2);
    assert_int_equal(what, SHARP_ZONE_PICK_CROSS);
}

static void test_early_exits(void **state)
{
    (void)state;
    sharp_zone_plan_t p;
    sharp_zone_exit_t why;
    /* three upstream hosts, min_cluster_size 7 */
    uint32_t up[] = {1, 1, 1}, local[] = {1, 1, 1};
    sharp_zone_input_t in = {.nloc = 3, .up_has_local = true, .up_healthy = up, .local_healthy = local,
                             .local_healthy_total = 3, .local_nloc = 3, .local_has_local = true,
                             .min_cluster_size = 7};
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(p.state, SHARP_ZONE_NONE);
    assert_int_equal(why, SHARP_ZONE_EXIT_TOO_SMALL);
    in.min_cluster_size = 1;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(p.state, SHARP_ZONE_DIRECT);
    /* the local cluster does not list this proxy's locality */
    in.local_has_local = false;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(why, SHARP_ZONE_EXIT_LOCAL_NOT_OK);
    /* a single locality on either side */
    in.local_has_local = true;
    in.local_nloc = 1;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(why, SHARP_ZONE_EXIT_FEW_LOCALITIES);
    in.force_direct = true; /* force_locality_direct_routing lifts the local-cluster condition */
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(p.state, SHARP_ZONE_DIRECT);
    in.force_direct = false;
    in.local_nloc = 3;
    in.nloc = 1;
    sharp_zone_plan(&in, &p, &why);
    assert_int_equal(why, SHARP_ZONE_EXIT_FEW_LOCALITIES);
}

/* Rounding can leave no locality with spare capacity: a random locality. */
static void test_no_capacity_left(void **state)
{
    (void)state;
    sharp_zone_plan_t p = {.state = SHARP_ZONE_RESIDUAL, .nloc = 3, .local_percent_to_route = 100};
    sharp_zone_pick_t what;
    assert_int_equal(pick(&p, 500, 7, &what), 1);
    assert_int_equal(what, SHARP_ZONE_PICK_NO_CAPACITY);
}

static void test_locality_order(void **state)
{
    (void)state;
    uint32_t a = sharp_locality_intern("r", "a", ""), b = sharp_locality_intern("r", "b", "");
    assert_int_equal(sharp_locality_intern("r", "a", ""), a);
    assert_int_not_equal(a, b);
    assert_int_equal(sharp_locality_intern("", "", ""), 0);
    assert_true(sharp_locality_cmp(a, b) < 0);
    assert_true(sharp_locality_cmp(b, a) > 0);
    assert_true(sharp_locality_cmp(0, a) < 0);
    assert_true(sharp_locality_cmp(sharp_locality_intern("q", "z", ""), a) < 0); /* region first */
}

/* ---- the balancer ---- */

typedef struct {
    sharp_host_t h[16];
    sharp_host_t *ptr[16];
    uint32_t n;
} hosts_t;

static void add_host(hosts_t *s, uint32_t locality)
{
    sharp_host_t *h = &s->h[s->n];
    memset(h, 0, sizeof *h);
    snprintf(h->address, sizeof h->address, "10.0.%u.%u:80", locality, s->n + 1);
    h->weight = 1;
    h->locality = locality;
    s->ptr[s->n] = h;
    s->n++;
}

/* Upstream: one host in zone a, three in zone b. Local cluster: one proxy
 * in each zone; this proxy is in a. Zone a has 25% of the upstream for
 * 50% of the proxies: half of this proxy's picks stay in a, the other half
 * go to b. */
static void test_balancer_residual_split(void **state)
{
    (void)state;
    uint32_t za = sharp_locality_intern("", "za", ""), zb = sharp_locality_intern("", "zb", "");
    hosts_t up = {0}, loc = {0};
    add_host(&up, zb); /* listed out of order: the balancer puts its own zone first */
    add_host(&up, za);
    add_host(&up, zb);
    add_host(&up, zb);
    add_host(&loc, za);
    add_host(&loc, zb);
    sharp_hostset_t *ls = sharp_hostset_new(loc.ptr, loc.n, 1);
    sharp_zone_config_t zc = {.routing_enabled = 100, .min_cluster_size = 1};
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, up.ptr, up.n, 42);
    sharp_lb_set_zone(&lb, &zc, za, &ls);
    int in_a = 0, n = 20000;
    for (int i = 0; i < n; i++) {
        sharp_host_t *h = sharp_lb_choose(&lb);
        assert_non_null(h);
        if (h->locality == za) in_a++;
    }
    assert_int_equal(lb.plan.state, SHARP_ZONE_RESIDUAL);
    assert_true(in_a > n * 45 / 100 && in_a < n * 55 / 100);

    /* with two upstream hosts in a (40% for 50% of the proxies): 80% stay */
    add_host(&up, za);
    sharp_lb_destroy(&lb);
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, up.ptr, up.n, 43);
    sharp_lb_set_zone(&lb, &zc, za, &ls);
    in_a = 0;
    for (int i = 0; i < n; i++)
        if (sharp_lb_choose(&lb)->locality == za) in_a++;
    assert_true(in_a > n * 75 / 100 && in_a < n * 85 / 100);

    /* the proxy in b fails (50% healthy: not below the panic threshold):
     * all healthy proxies are in a, which has 40% of the upstream, so 40%
     * of the picks stay there and the plan is remade from the new counts */
    sharp_host_health_store(&loc.h[1], SHARP_HOST_FAILED_ACTIVE_HC);
    in_a = 0;
    for (int i = 0; i < n; i++)
        if (sharp_lb_choose(&lb)->locality == za) in_a++;
    assert_true(in_a > n * 35 / 100 && in_a < n * 45 / 100);
    sharp_lb_destroy(&lb);
    sharp_hostset_unref(ls);
}

/* Enough upstream capacity in the local zone: every pick stays there,
 * unless the local cluster is in panic, then the healthy hosts of every
 * zone are used (or none, with fail_traffic_on_panic). */
/* 70 localities of one host each, more than a plan holds: zone routing
 * is off for the set, and every host takes picks (none is left out). */
static void test_balancer_too_many_localities(void **state)
{
    (void)state;
    enum { N = SHARP_ZONE_MAX_LOCALITIES + 6 };
    static sharp_host_t h[N];
    sharp_host_t *ptr[N];
    for (uint32_t i = 0; i < N; i++) {
        char zone[16];
        snprintf(zone, sizeof zone, "z%02u", i);
        memset(&h[i], 0, sizeof h[i]);
        snprintf(h[i].address, sizeof h[i].address, "10.1.0.%u:80", i + 1);
        h[i].weight = 1;
        h[i].locality = sharp_locality_intern("", zone, "");
        ptr[i] = &h[i];
    }
    hosts_t loc = {0};
    add_host(&loc, h[0].locality);
    add_host(&loc, h[1].locality);
    sharp_hostset_t *ls = sharp_hostset_new(loc.ptr, loc.n, 1);
    sharp_zone_config_t zc = {.routing_enabled = 100, .min_cluster_size = 1};
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, ptr, N, 7);
    sharp_lb_set_zone(&lb, &zc, h[0].locality, &ls);
    assert_int_equal(lb.nloc, 0);
    bool seen[N] = {false};
    for (int i = 0; i < 4 * N; i++) {
        sharp_host_t *p = sharp_lb_choose(&lb);
        assert_non_null(p);
        seen[p - h] = true;
    }
    for (uint32_t i = 0; i < N; i++) assert_true(seen[i]);
    sharp_lb_destroy(&lb);
    sharp_hostset_unref(ls);
}

static void test_balancer_direct_and_local_panic(void **state)
{
    (void)state;
    uint32_t za = sharp_locality_intern("", "za", ""), zb = sharp_locality_intern("", "zb", "");
    hosts_t up = {0}, loc = {0};
    for (int i = 0; i < 3; i++) add_host(&up, za);
    for (int i = 0; i < 3; i++) add_host(&up, zb);
    add_host(&loc, za);
    add_host(&loc, zb);
    add_host(&loc, zb);
    sharp_hostset_t *ls = sharp_hostset_new(loc.ptr, loc.n, 1);
    sharp_zone_config_t zc = {.routing_enabled = 100, .min_cluster_size = 6};
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_RANDOM, up.ptr, up.n, 7);
    sharp_lb_set_zone(&lb, &zc, za, &ls);
    for (int i = 0; i < 1000; i++) assert_int_equal(sharp_lb_choose(&lb)->locality, za);
    assert_int_equal(lb.plan.state, SHARP_ZONE_DIRECT);
    /* two of three proxies fail: the local cluster is in panic */
    sharp_host_health_store(&loc.h[1], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_host_health_store(&loc.h[2], SHARP_HOST_FAILED_ACTIVE_HC);
    int in_b = 0;
    for (int i = 0; i < 1000; i++)
        if (sharp_lb_choose(&lb)->locality == zb) in_b++;
    assert_true(in_b > 400 && in_b < 600);
    zc.fail_traffic_on_panic = true;
    assert_null(sharp_lb_choose(&lb));
    /* one upstream host fails: 5 healthy, below min_cluster_size 6: no
     * locality routing at all */
    zc.fail_traffic_on_panic = false;
    sharp_host_health_store(&loc.h[1], 0);
    sharp_host_health_store(&loc.h[2], 0);
    sharp_host_health_store(&up.h[5], SHARP_HOST_FAILED_ACTIVE_HC);
    in_b = 0;
    for (int i = 0; i < 1000; i++)
        if (sharp_lb_choose(&lb)->locality == zb) in_b++;
    assert_int_equal(lb.plan.state, SHARP_ZONE_NONE);
    assert_true(in_b > 300 && in_b < 500);
    sharp_lb_destroy(&lb);
    sharp_hostset_unref(ls);
}


/* Locality-weighted balancing, the example of Envoy's docs
 * (arch_overview/upstream/load_balancing/locality_weight): localities X
 * (weight 1) and Y (weight 2, fully healthy), X's healthy share varying;
 * the EDF schedule over the effective weights gives X the documented
 * percentage of 3000 picks (to within one point: the docs round). */
static void test_locality_weights_envoy_example(void **state)
{
    (void)state;
    static const struct {
        uint32_t healthy_x, pct_x;
    } ex[] = {{100, 33}, {70, 33}, {69, 32}, {50, 26}, {25, 15}, {0, 0}};
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        double w[2] = {sharp_locality_effective_weight(1, ex[i].healthy_x, 100),
                       sharp_locality_effective_weight(2, 100, 100)}, deadline[2], now;
        sharp_edf_reset(2, w, deadline, &now);
        uint32_t x = 0;
        for (int k = 0; k < 3000; k++) {
            int pick = sharp_edf_pick(2, w, deadline, &now);
            assert_true(pick == 0 || pick == 1);
            x += pick == 0;
        }
        double pct = 100.0 * x / 3000;
        assert_true(pct > ex[i].pct_x - 1.0 && pct < ex[i].pct_x + 1.0);
    }
    /* no weight (unset, or no hosts): never picked; none at all: -1 */
    assert_true(sharp_locality_effective_weight(0, 5, 5) == 0.0);
    assert_true(sharp_locality_effective_weight(3, 0, 0) == 0.0);
    assert_true(sharp_locality_effective_weight(3, 5, 5) == 3.0);
    double w[3] = {0, 2, 0}, d[3], now;
    sharp_edf_reset(3, w, d, &now);
    for (int k = 0; k < 5; k++) assert_int_equal(sharp_edf_pick(3, w, d, &now), 1);
    double z[2] = {0, 0};
    sharp_edf_reset(2, z, d, &now);
    assert_int_equal(sharp_edf_pick(2, z, d, &now), -1);
    /* EDF spreads picks: 1:2 gives Y X Y, Y X Y, ... never X twice in a row */
    double w12[2] = {1, 2};
    sharp_edf_reset(2, w12, d, &now);
    int last = -1;
    for (int k = 0; k < 30; k++) {
        int pick = sharp_edf_pick(2, w12, d, &now);
        assert_false(pick == 0 && last == 0);
        last = pick;
    }
}

/* The balancer: localities by weight and health at the chosen level, the
 * hosts of the picked locality by the policy, all hosts in panic. */
static void test_balancer_locality_weighted(void **state)
{
    (void)state;
    enum { N = 6 };
    sharp_host_t h[N];
    sharp_host_t *p[N];
    memset(h, 0, sizeof h);
    uint32_t za = sharp_locality_intern("r", "lw-a", ""), zb = sharp_locality_intern("r", "lw-b", "");
    for (int i = 0; i < N; i++) {
        p[i] = &h[i];
        h[i].weight = 1;
        h[i].locality = i < 2 ? za : zb; /* a: 2 hosts weight 1; b: 4 hosts weight 3 */
        h[i].locality_weight = i < 2 ? 1 : 3;
    }
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, p, N, 3);
    sharp_lb_set_locality_weighted(&lb);
    uint32_t in_a = 0;
    for (int k = 0; k < 400; k++) in_a += sharp_lb_choose(&lb) - h < 2;
    assert_int_equal(in_a, 100); /* 1 : 3, exactly over whole cycles */
    /* b half healthy: 3 * 0.7 = 2.1 against 1 */
    sharp_host_health_store(&h[2], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_host_health_store(&h[3], SHARP_HOST_FAILED_ACTIVE_HC);
    atomic_fetch_add(&sharp_host_health_epoch, 1);
    in_a = 0;
    for (int k = 0; k < 3100; k++) {
        sharp_host_t *x = sharp_lb_choose(&lb);
        assert_true(x != &h[2] && x != &h[3]);
        in_a += x - h < 2;
    }
    assert_true(in_a >= 990 && in_a <= 1010); /* 1 / 3.1 */
    sharp_lb_destroy(&lb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentage),
        cmocka_unit_test(test_residuals_mismatched),
        cmocka_unit_test(test_zones_mismatched),
        cmocka_unit_test(test_different_zone_size),
        cmocka_unit_test(test_early_exits),
        cmocka_unit_test(test_no_capacity_left),
        cmocka_unit_test(test_locality_order),
        cmocka_unit_test(test_balancer_residual_split),
        cmocka_unit_test(test_balancer_direct_and_local_panic),
        cmocka_unit_test(test_balancer_too_many_localities),
        cmocka_unit_test(test_locality_weights_envoy_example),
        cmocka_unit_test(test_balancer_locality_weighted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

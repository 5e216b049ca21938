/* test_shard_lb.c: the shuffle-shard balancer (shard membership, failover,
 * spill, previous hosts, half-open probes, counters) and the hash-policy key. */
#include <setjmp.h>
#include "net.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/hash_policy.h"
#include "upstream/shard_lb.h"

#define N 8

typedef struct {
    sharp_host_t h[N];
    sharp_host_t *ptr[N];
    sharp_stats_t *stats;
    sharp_stats_shard_t *sh;
    sharp_shard_policy_t *p;
    sharp_lb_t lb;
    uint32_t order[N];
} fixture_t;

static void setup(fixture_t *f, uint32_t shard_size, sharp_shard_on_unhealthy_t on,
                  sharp_shard_pick_t pick)
{
    memset(f, 0, sizeof *f);
    const char *ids[N];
    for (uint32_t i = 0; i < N; i++) {
        snprintf(f->h[i].address, sizeof f->h[i].address, "10.0.0.%u:80", i + 1);
        snprintf(f->h[i].hostname, sizeof f->h[i].hostname, "cell%u", i);
        f->h[i].weight = 1;
        f->h[i].index = i;
        f->ptr[i] = &f->h[i];
        ids[i] = f->h[i].hostname;
    }
    f->stats = sharp_stats_create(2);
    f->sh = sharp_stats_shard(f->stats, 1);
    f->p = sharp_calloc(1, sizeof *f->p);
    f->p->ss = sharp_shuffle_shard_create(ids, N, shard_size, 7);
    f->p->shard_size = sharp_shuffle_shard_size(f->p->ss);
    f->p->on_unhealthy = on;
    f->p->pick = pick;
    sharp_shard_policy_stats_init(f->p, f->stats, "c");
    sharp_lb_init(&f->lb, SHARP_LB_LEAST_REQUEST, f->ptr, N, 99);
    assert_int_equal(sharp_shuffle_shard_order(f->p->ss, "acme", 4, f->order, N), N);
}

static void teardown(fixture_t *f)
{
    sharp_lb_destroy(&f->lb);
    sharp_shard_policy_free(f->p);
    sharp_stats_destroy(f->stats);
}

static sharp_host_t *choose(fixture_t *f, sharp_host_t *const *avoid, uint32_t navoid)
{
    return sharp_shard_lb_choose(f->p, &f->lb, "acme", 4, avoid, navoid, f->sh);
}

static uint64_t count(fixture_t *f, sharp_stat_id_t id)
{
    return sharp_stats_counter_value(f->stats, id);
}

static sharp_host_t *cell(fixture_t *f, uint32_t rank)
{
    return &f->h[f->order[rank]];
}

static void test_least_request_stays_in_shard(void **state)
{
    fixture_t f;
    setup(&f, 2, SHARP_SHARD_FAIL, SHARP_SHARD_PICK_LEAST_REQUEST);
    int hits[2] = {0, 0};
    for (int i = 0; i < 400; i++) {
        sharp_host_t *h = choose(&f, NULL, 0);
        assert_true(h == cell(&f, 0) || h == cell(&f, 1));
        hits[h == cell(&f, 1)]++;
    }
    assert_true(hits[0] > 100 && hits[1] > 100);
    /* power of two choices: the loaded cell loses every comparison it is in */
    atomic_store(&cell(&f, 0)->active_rq, 10);
    for (int i = 0; i < 50; i++)
        hits[choose(&f, NULL, 0) == cell(&f, 1)] += 1000;
    assert_true(hits[1] >= 1000 * 30);
    assert_int_equal(count(&f, f.p->st_failover), 0);
    teardown(&f);
}

static void test_first_healthy_failover_and_fail(void **state)
{
    fixture_t f;
    setup(&f, 2, SHARP_SHARD_FAIL, SHARP_SHARD_PICK_FIRST_HEALTHY);
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 0));
    sharp_host_health_store(cell(&f, 0), SHARP_HOST_FAILED_ACTIVE_HC);
    assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 1));
    assert_int_equal(count(&f, f.p->st_failover), 1);
    sharp_host_health_store(cell(&f, 1), SHARP_HOST_FAILED_OUTLIER);
    assert_null(choose(&f, NULL, 0));
    assert_int_equal(count(&f, f.p->st_no_healthy), 1);
    assert_int_equal(count(&f, f.p->st_spill), 0);
    const sharp_host_t *peek = sharp_shard_lb_peek(f.p, f.ptr, f.order, N);
    assert_null(peek);
    teardown(&f);
}

static void test_spill_in_customer_order(void **state)
{
    fixture_t f;
    setup(&f, 3, SHARP_SHARD_SPILL, SHARP_SHARD_PICK_LEAST_REQUEST);
    for (int r = 0; r < 3; r++)
        sharp_host_health_store(cell(&f, r), SHARP_HOST_FAILED_ACTIVE_HC);
    assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 3));
    assert_ptr_equal(sharp_shard_lb_peek(f.p, f.ptr, f.order, N), cell(&f, 3));
    sharp_host_health_store(cell(&f, 3), SHARP_HOST_FAILED_EDS_HEALTH);
    assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 4));
    assert_int_equal(count(&f, f.p->st_spill), 2);
    assert_int_equal(count(&f, f.p->st_failover), 0);
    /* the shard comes back: no more spill */
    sharp_host_health_store(cell(&f, 1), 0);
    assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 1));
    assert_int_equal(count(&f, f.p->st_spill), 2);
    assert_int_equal(count(&f, f.p->st_failover), 1);
    teardown(&f);
}

static void test_previous_hosts_stay_in_shard(void **state)
{
    fixture_t f;
    setup(&f, 2, SHARP_SHARD_SPILL, SHARP_SHARD_PICK_LEAST_REQUEST);
    sharp_host_t *tried[2] = {cell(&f, 0), NULL};
    for (int i = 0; i < 20; i++)
        assert_ptr_equal(choose(&f, tried, 1), cell(&f, 1));
    assert_int_equal(count(&f, f.p->st_failover), 20);
    /* every shard cell tried: one of them again, never a spill */
    tried[1] = cell(&f, 1);
    for (int i = 0; i < 20; i++) {
        sharp_host_t *h = choose(&f, tried, 2);
        assert_true(h == cell(&f, 0) || h == cell(&f, 1));
    }
    assert_int_equal(count(&f, f.p->st_spill), 0);
    teardown(&f);
}

static void test_half_open_needs_a_probe(void **state)
{
    fixture_t f;
    setup(&f, 2, SHARP_SHARD_FAIL, SHARP_SHARD_PICK_FIRST_HEALTHY);
    sharp_host_breaker_store(cell(&f, 0), SHARP_HOST_BREAKER_HALF_OPEN);
    atomic_store(&cell(&f, 0)->probe_budget, 1);
    assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 0)); /* takes the probe */
    assert_int_equal(atomic_load(&cell(&f, 0)->probe_budget), 0);
    assert_ptr_equal(choose(&f, NULL, 0), cell(&f, 1));
    assert_int_equal(count(&f, f.p->st_failover), 1);
    sharp_host_breaker_store(cell(&f, 1), SHARP_HOST_BREAKER_OPEN);
    assert_null(choose(&f, NULL, 0));
    teardown(&f);
}

static void test_same_key_same_shard_other_key_spread(void **state)
{
    fixture_t f;
    setup(&f, 2, SHARP_SHARD_FAIL, SHARP_SHARD_PICK_FIRST_HEALTHY);
    int first[N] = {0};
    for (int k = 0; k < 800; k++) {
        char key[16];
        int n = snprintf(key, sizeof key, "k%d", k);
        sharp_host_t *a = sharp_shard_lb_choose(f.p, &f.lb, key, (size_t)n, NULL, 0, f.sh);
        sharp_host_t *b = sharp_shard_lb_choose(f.p, &f.lb, key, (size_t)n, NULL, 0, f.sh);
        assert_ptr_equal(a, b);
        first[a->index]++;
    }
    for (int i = 0; i < N; i++)
        assert_true(first[i] > 40); /* about 100 each */
    teardown(&f);
}

static void key_of(const sharp_hash_policy_t *hp, uint32_t n, sharp_headers_t *h, const char *want)
{
    sharp_sbuf_t b = {0};
    bool got = sharp_hash_policy_key(hp, n, h, "192.0.2.7:4242", &b);
    if (!want) {
        assert_false(got);
        assert_int_equal(b.len, 0);
    } else {
        assert_true(got);
        assert_string_equal(sharp_sbuf_cstr(&b), want);
    }
    sharp_sbuf_free(&b);
}

static void test_hash_policy_key(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":path", "/a?x=1&tenant=t%201&y&tenant=second");
    sharp_headers_add_cstr(&h, "x-customer-id", "zeta");
    sharp_headers_add_cstr(&h, "cookie", "a=1; sid=\"s-9\"");
    sharp_headers_add_cstr(&h, "X-Customer-Id", "alpha");
    sharp_hash_policy_t header = {SHARP_HASH_HEADER, "x-customer-id", false};
    sharp_hash_policy_t missing = {SHARP_HASH_HEADER, "x-none", false};
    sharp_hash_policy_t cookie = {SHARP_HASH_COOKIE, "sid", false};
    sharp_hash_policy_t query = {SHARP_HASH_QUERY_PARAMETER, "tenant", false};
    sharp_hash_policy_t bare = {SHARP_HASH_QUERY_PARAMETER, "y", false};
    sharp_hash_policy_t ip = {SHARP_HASH_SOURCE_IP, NULL, false};
    key_of(&header, 1, &h, "alpha,zeta"); /* every value, sorted */
    key_of(&missing, 1, &h, NULL);
    key_of(&cookie, 1, &h, "s-9");
    key_of(&query, 1, &h, "t%201"); /* first, not decoded */
    key_of(&bare, 1, &h, "");
    key_of(&ip, 1, &h, "192.0.2.7");
    sharp_hash_policy_t list[3] = {missing, cookie, ip};
    key_of(list, 3, &h, "s-9\n192.0.2.7");
    list[1].terminal = true;
    key_of(list, 3, &h, "s-9");
    list[0].terminal = true; /* no value yet: not the end */
    key_of(list, 3, &h, "s-9");
    /* a Unix socket peer has no IP: no source-IP hash (SourceIpHashMethod) */
    sharp_sbuf_t b = {0};
    assert_false(sharp_hash_policy_key(&ip, 1, &h, "/run/envoy.sock", &b));
    assert_false(sharp_hash_policy_key(&ip, 1, &h, "@abstract", &b));
    assert_int_equal(b.len, 0);
    assert_true(sharp_hash_policy_key(list, 3, &h, "/run/envoy.sock", &b));
    assert_string_equal(sharp_sbuf_cstr(&b), "s-9");
    sharp_sbuf_free(&b);
    sharp_str_t v6 = sharp_addr_without_port("[::1]:80");
    assert_int_equal(v6.len, 3);
    assert_memory_equal(v6.p, "::1", 3);
    sharp_headers_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_least_request_stays_in_shard),
        cmocka_unit_test(test_first_healthy_failover_and_fail),
        cmocka_unit_test(test_spill_in_customer_order),
        cmocka_unit_test(test_previous_hosts_stay_in_shard),
        cmocka_unit_test(test_half_open_needs_a_probe),
        cmocka_unit_test(test_same_key_same_shard_other_key_spread),
        cmocka_unit_test(test_hash_policy_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

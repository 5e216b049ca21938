/* test_dfp: the dynamic forward proxy's DNS cache (upstream/dfp.h) without
 * a loop, the main thread's steps driven by hand with a fake clock: host
 * keys, lookups (loading, in the cache, overflow past max_hosts), the
 * circuit breaker of pending requests, resolutions (an address sticks
 * through failures, changes wake the workers), host_ttl expiry at refresh
 * time and the failure back-off. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "net.h"
#include "upstream/dfp.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static sharp_dfp_cache_t *cache(uint32_t max_hosts, uint32_t max_pending, uint64_t ttl_ms)
{
    sharp_dfp_settings_t s;
    sharp_dfp_default_settings(&s);
    s.max_hosts = max_hosts;
    s.max_pending = max_pending;
    s.host_ttl_ms = ttl_ms;
    return sharp_dfp_cache_new("c", &s);
}

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
    struct sockaddr_storage a;
    socklen_t len;
    assert_int_equal(sharp_addr_parse(ip, port, &a, &len), 0);
    return a;
}

/* The main thread's part: takes the one queued entry. */
static sharp_dfp_entry_t *take(sharp_dfp_cache_t *c)
{
    sharp_dfp_entry_t *e[4];
    assert_int_equal(sharp_dfp_take_queued(c, e, 4), 1);
    return e[0];
}

static void normalize(void **state)
{
    (void)state;
    char out[64];
    assert_true(sharp_dfp_normalize("a.test", 6, 80, out, sizeof out));
    assert_string_equal(out, "a.test:80");
    assert_true(sharp_dfp_normalize("a.test:8080", 11, 443, out, sizeof out));
    assert_string_equal(out, "a.test:8080");
    assert_true(sharp_dfp_normalize("[::1]", 5, 443, out, sizeof out));
    assert_string_equal(out, "[::1]:443");
    assert_true(sharp_dfp_normalize("[::1]:90", 8, 443, out, sizeof out));
    assert_string_equal(out, "[::1]:90");
    assert_true(sharp_dfp_normalize("::1", 3, 80, out, sizeof out));
    assert_string_equal(out, "[::1]:80");
    assert_false(sharp_dfp_normalize("", 0, 80, out, sizeof out));
    assert_false(sharp_dfp_normalize("a-long-name.test", 16, 80, out, 8));
}

static void load_then_resolve(void **state)
{
    (void)state;
    sharp_dfp_cache_t *c = cache(8, 8, 1000);
    sharp_dfp_result_t r;
    assert_int_equal(sharp_dfp_load(c, NULL, "a.test:80", 0, &r), SHARP_DFP_LOADING);
    /* a second request for it waits too, without a second entry */
    assert_int_equal(sharp_dfp_load(c, NULL, "a.test:80", 1, &r), SHARP_DFP_LOADING);
    assert_int_equal(sharp_dfp_nhosts(c), 1);
    assert_false(sharp_dfp_settled(c, "a.test:80"));
    sharp_dfp_entry_t *e = take(c);
    assert_string_equal(e->name, "a.test");
    assert_int_equal(e->port, 80);
    struct sockaddr_storage a = v4("127.0.0.2", 80);
    assert_true(sharp_dfp_resolved(c, e, true, &a, "cares_success")); /* first: wake */
    assert_true(sharp_dfp_settled(c, "a.test:80"));
    assert_int_equal(sharp_dfp_load(c, NULL, "a.test:80", 2, &r), SHARP_DFP_IN_CACHE);
    assert_true(r.has_addr);
    assert_true(sharp_addr_equal(&r.addr, &a));
    assert_true(sharp_dfp_current(c, "a.test:80", &a));
    /* the same answer again changes nothing */
    assert_false(sharp_dfp_resolved(c, e, true, &a, "cares_success"));
    /* a failure keeps the address */
    assert_false(sharp_dfp_resolved(c, e, false, NULL, "resolve_timeout"));
    assert_int_equal(sharp_dfp_load(c, NULL, "a.test:80", 3, &r), SHARP_DFP_IN_CACHE);
    assert_true(r.has_addr);
    /* a new address: workers are told */
    struct sockaddr_storage b = v4("127.0.0.3", 80);
    assert_true(sharp_dfp_resolved(c, e, true, &b, "cares_success"));
    assert_false(sharp_dfp_current(c, "a.test:80", &a));
    assert_true(sharp_dfp_current(c, "a.test:80", &b));
    sharp_dfp_cache_free(c);
}

static void failure_is_cached_with_details(void **state)
{
    (void)state;
    sharp_dfp_cache_t *c = cache(8, 8, 1000);
    sharp_dfp_result_t r;
    assert_int_equal(sharp_dfp_load(c, NULL, "nx.test:80", 0, &r), SHARP_DFP_LOADING);
    sharp_dfp_entry_t *e = take(c);
    assert_true(sharp_dfp_resolved(c, e, false, NULL, "cares_norecords:Domain_name_not_found"));
    assert_int_equal(sharp_dfp_load(c, NULL, "nx.test:80", 1, &r), SHARP_DFP_IN_CACHE);
    assert_false(r.has_addr);
    assert_string_equal(r.details, "cares_norecords:Domain_name_not_found");
    struct sockaddr_storage out;
    assert_false(sharp_dfp_address(c, "nx.test:80", 1, &out));
    sharp_dfp_cache_free(c);
}

static void max_hosts_overflow(void **state)
{
    (void)state;
    sharp_dfp_cache_t *c = cache(2, 8, 1000);
    sharp_dfp_result_t r;
    assert_int_equal(sharp_dfp_load(c, NULL, "a:80", 0, &r), SHARP_DFP_LOADING);
    assert_int_equal(sharp_dfp_load(c, NULL, "b:80", 0, &r), SHARP_DFP_LOADING);
    /* a third host overflows; the known ones still load */
    assert_int_equal(sharp_dfp_load(c, NULL, "c:80", 0, &r), SHARP_DFP_OVERFLOW);
    assert_int_equal(sharp_dfp_load(c, NULL, "a:80", 0, &r), SHARP_DFP_LOADING);
    assert_int_equal(sharp_dfp_nhosts(c), 2);
    sharp_dfp_entry_t *e[4];
    assert_int_equal(sharp_dfp_take_queued(c, e, 4), 2);
    /* once one expires there is room again */
    assert_true(sharp_dfp_expire(c, e[0], 1001 + 1));
    sharp_dfp_entry_free(e[0]);
    assert_int_equal(sharp_dfp_load(c, NULL, "c:80", 1100, &r), SHARP_DFP_LOADING);
    assert_int_equal(sharp_dfp_nhosts(c), 2);
    sharp_dfp_cache_free(c);
}

static void host_ttl_at_refresh(void **state)
{
    (void)state;
    sharp_dfp_cache_t *c = cache(8, 8, 5000);
    sharp_dfp_result_t r;
    sharp_dfp_load(c, NULL, "a:80", 1000, &r);
    sharp_dfp_entry_t *e = take(c);
    struct sockaddr_storage a = v4("127.0.0.2", 80);
    sharp_dfp_resolved(c, e, true, &a, "cares_success");
    /* used at 1000: kept while now - used <= host_ttl */
    assert_false(sharp_dfp_expire(c, e, 3000));
    assert_false(sharp_dfp_expire(c, e, 6000));
    /* a use at 5500 moves the deadline */
    assert_int_equal(sharp_dfp_load(c, NULL, "a:80", 5500, &r), SHARP_DFP_IN_CACHE);
    assert_false(sharp_dfp_expire(c, e, 10000));
    /* the cluster's lookup counts as a use too */
    struct sockaddr_storage out;
    assert_true(sharp_dfp_address(c, "a:80", 10400, &out));
    assert_false(sharp_dfp_expire(c, e, 15000));
    assert_true(sharp_dfp_expire(c, e, 15401));
    assert_true(e->removed);
    /* gone: settled for a waiter, unknown to the cluster, loading anew */
    assert_true(sharp_dfp_settled(c, "a:80"));
    assert_false(sharp_dfp_current(c, "a:80", &a));
    assert_int_equal(sharp_dfp_nhosts(c), 0);
    sharp_dfp_entry_free(e);
    assert_int_equal(sharp_dfp_load(c, NULL, "a:80", 16000, &r), SHARP_DFP_LOADING);
    sharp_dfp_cache_free(c);
}

static void pending_breaker(void **state)
{
    (void)state;
    sharp_dfp_cache_t *c = cache(8, 2, 1000);
    assert_true(sharp_dfp_breaker_acquire(c, NULL));
    assert_true(sharp_dfp_breaker_acquire(c, NULL));
    assert_false(sharp_dfp_breaker_acquire(c, NULL));
    sharp_dfp_breaker_release(c);
    assert_true(sharp_dfp_breaker_acquire(c, NULL));
    assert_false(sharp_dfp_breaker_acquire(c, NULL));
    sharp_dfp_breaker_release(c);
    sharp_dfp_breaker_release(c);
    sharp_dfp_cache_free(c);
    /* zero: every request overflows */
    c = cache(8, 0, 1000);
    assert_false(sharp_dfp_breaker_acquire(c, NULL));
    sharp_dfp_cache_free(c);
}

static void refresh_delays(void **state)
{
    (void)state;
    sharp_dfp_settings_t s;
    sharp_dfp_default_settings(&s);
    assert_int_equal(s.refresh_ms, 60000);
    assert_int_equal(s.host_ttl_ms, 300000);
    assert_int_equal(s.max_hosts, 1024);
    assert_int_equal(s.max_pending, 1024);
    assert_int_equal(s.query_timeout_ms, 5000);
    s.refresh_ms = 2000;
    sharp_dfp_cache_t *c = sharp_dfp_cache_new("c", &s);
    sharp_dfp_result_t r;
    sharp_dfp_load(c, NULL, "a:80", 0, &r);
    sharp_dfp_entry_t *e = take(c);
    /* without dns_failure_refresh_rate a failure waits the refresh rate */
    assert_int_equal(sharp_dfp_next_delay(c, e, false), 2000);
    assert_int_equal(sharp_dfp_next_delay(c, e, true), 2000);
    sharp_dfp_cache_free(c);
    s.has_failure_rate = true;
    s.failure_base_ms = 100;
    s.failure_max_ms = 1000;
    c = sharp_dfp_cache_new("c", &s);
    sharp_dfp_load(c, NULL, "a:80", 0, &r);
    e = take(c);
    for (int i = 0; i < 20; i++) {
        uint64_t d = sharp_dfp_next_delay(c, e, false);
        assert_true(d <= 1000);
    }
    assert_int_equal(sharp_dfp_next_delay(c, e, true), 2000);
    sharp_dfp_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(normalize),
        cmocka_unit_test(load_then_resolve),
        cmocka_unit_test(failure_is_cached_with_details),
        cmocka_unit_test(max_hosts_overflow),
        cmocka_unit_test(host_ttl_at_refresh),
        cmocka_unit_test(pending_breaker),
        cmocka_unit_test(refresh_delays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

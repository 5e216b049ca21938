/* The algorithms of DNS clusters (proxy/upstream/dns.c): how an answer
 * becomes a target's hosts (identity kept for unchanged addresses, former
 * hosts reused, duplicates dropped), and the delay before the next
 * resolution (refresh rate, TTL, jitter, failure back-off). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/backoff.h"
#include "net.h"
#include "upstream/dns.h"

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(sharp_addr_parse(ip, port, &ss, &len), 0);
    return ss;
}

static sharp_dns_target_t target(void)
{
    sharp_dns_target_t t;
    memset(&t, 0, sizeof t);
    t.name = "svc.test";
    strcpy(t.hostname, "svc.test");
    t.port = 80;
    t.weight = 3;
    t.priority = 1;
    return t;
}

static void new_answer_makes_hosts(void **state)
{
    (void)state;
    sharp_dns_target_t t = target();
    struct sockaddr_storage a[] = {v4("10.0.0.1", 80), v4("10.0.0.2", 80), v4("10.0.0.1", 80)};
    sharp_host_t *out[3];
    bool changed = false;
    uint32_t n = sharp_dns_merge_hosts(&t, NULL, 0, NULL, 0, a, 3, out, &changed);
    assert_int_equal(n, 2); /* the duplicate address is one host */
    assert_true(changed);
    assert_string_equal(out[0]->address, "10.0.0.1:80");
    assert_string_equal(out[1]->address, "10.0.0.2:80");
    assert_string_equal(out[0]->hostname, "svc.test");
    assert_int_equal(out[0]->weight, 3);
    assert_int_equal(out[0]->priority, 1);
    free(out[0]);
    free(out[1]);
}

static void unchanged_addresses_keep_their_hosts(void **state)
{
    (void)state;
    sharp_dns_target_t t = target();
    struct sockaddr_storage a[] = {v4("10.0.0.1", 80), v4("10.0.0.2", 80)};
    sharp_host_t *old[2], *out[2];
    bool changed;
    assert_int_equal(sharp_dns_merge_hosts(&t, NULL, 0, NULL, 0, a, 2, old, &changed), 2);
    /* the same answer in another order: same hosts, no change */
    struct sockaddr_storage b[] = {v4("10.0.0.2", 80), v4("10.0.0.1", 80)};
    assert_int_equal(sharp_dns_merge_hosts(&t, old, 2, NULL, 0, b, 2, out, &changed), 2);
    assert_false(changed);
    assert_ptr_equal(out[0], old[1]);
    assert_ptr_equal(out[1], old[0]);
    /* one address replaced: the other host stays the same object */
    struct sockaddr_storage c[] = {v4("10.0.0.2", 80), v4("10.0.0.3", 80)};
    assert_int_equal(sharp_dns_merge_hosts(&t, old, 2, NULL, 0, c, 2, out, &changed), 2);
    assert_true(changed);
    assert_ptr_equal(out[0], old[1]);
    assert_ptr_not_equal(out[1], old[0]);
    assert_string_equal(out[1]->address, "10.0.0.3:80");
    free(out[1]);
    /* fewer addresses is a change */
    assert_int_equal(sharp_dns_merge_hosts(&t, old, 2, NULL, 0, c, 1, out, &changed), 1);
    assert_true(changed);
    free(old[0]);
    free(old[1]);
}

static void former_hosts_come_back(void **state)
{
    (void)state;
    sharp_dns_target_t t = target();
    struct sockaddr_storage a[] = {v4("10.0.0.1", 80)};
    sharp_host_t *gone[1], *out[1];
    bool changed;
    sharp_dns_merge_hosts(&t, NULL, 0, NULL, 0, a, 1, gone, &changed);
    sharp_host_health_store(gone[0], SHARP_HOST_FAILED_OUTLIER);
    t.weight = 7;
    /* not in the target's hosts any more, but the cluster still has it */
    assert_int_equal(sharp_dns_merge_hosts(&t, NULL, 0, gone, 1, a, 1, out, &changed), 1);
    assert_true(changed);
    assert_ptr_equal(out[0], gone[0]);
    assert_int_equal(out[0]->weight, 7);
    assert_int_equal(atomic_load(&out[0]->health_flags), 0);
    /* another port is another host */
    struct sockaddr_storage b[] = {v4("10.0.0.1", 81)};
    assert_int_equal(sharp_dns_merge_hosts(&t, NULL, 0, gone, 1, b, 1, out, &changed), 1);
    assert_ptr_not_equal(out[0], gone[0]);
    free(out[0]);
    free(gone[0]);
}

static uint64_t fixed(void *arg)
{
    return *(uint64_t *)arg;
}

static void refresh_interval_choice(void **state)
{
    (void)state;
    sharp_dns_cluster_t dc;
    memset(&dc, 0, sizeof dc);
    dc.refresh_ms = 5000;
    /* success: the refresh rate, the TTL ignored without respect_dns_ttl */
    assert_int_equal(sharp_dns_next_delay(&dc, NULL, true, 30, 0), 5000);
    dc.respect_ttl = true;
    assert_int_equal(sharp_dns_next_delay(&dc, NULL, true, 30, 0), 30000);
    /* no TTL in the answer: the refresh rate */
    assert_int_equal(sharp_dns_next_delay(&dc, NULL, true, 0, 0), 5000);
    /* dns_jitter: random % jitter more */
    dc.jitter_ms = 1000;
    assert_int_equal(sharp_dns_next_delay(&dc, NULL, true, 0, 2500), 5500);
    assert_int_equal(sharp_dns_next_delay(&dc, NULL, true, 2, 999), 2999);
    dc.jitter_ms = 0;
    /* failure without dns_failure_refresh_rate: the refresh rate */
    assert_int_equal(sharp_dns_next_delay(&dc, NULL, false, 0, 0), 5000);
    /* with it: the jittered exponential back-off, reset by a success */
    uint64_t r = UINT64_MAX;
    sharp_backoff_t b;
    sharp_backoff_init(&b, 100, 400, fixed, &r);
    dc.has_failure_rate = true;
    assert_int_equal(sharp_dns_next_delay(&dc, &b, false, 0, 0), UINT64_MAX % 100);
    assert_int_equal(sharp_dns_next_delay(&dc, &b, false, 0, 0), UINT64_MAX % 200);
    assert_int_equal(sharp_dns_next_delay(&dc, &b, false, 0, 0), UINT64_MAX % 400);
    assert_int_equal(sharp_dns_next_delay(&dc, &b, false, 0, 0), UINT64_MAX % 400);
    assert_int_equal(sharp_dns_next_delay(&dc, &b, true, 0, 0), 5000);
    assert_int_equal(sharp_dns_next_delay(&dc, &b, false, 0, 0), UINT64_MAX % 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_answer_makes_hosts),
        cmocka_unit_test(unchanged_addresses_keep_their_hosts),
        cmocka_unit_test(former_hosts_come_back),
        cmocka_unit_test(refresh_interval_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

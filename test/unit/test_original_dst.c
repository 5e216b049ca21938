/* test_original_dst: ORIGINAL_DST clusters (upstream/original_dst.h): the
 * header's address as Envoy parses it, the destination's precedence and
 * port override, and the hosts' life: made on demand, published, removed
 * by the cleanup once unused for a whole interval, made anew after. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/headers.h"
#include "net.h"
#include "upstream/cluster.h"
#include "upstream/original_dst.h"
#include "worker.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static const char *str(const struct sockaddr_storage *a)
{
    static char buf[SHARP_ADDR_STRLEN];
    return sharp_addr_str((const struct sockaddr *)a, buf, sizeof buf);
}

static bool parse(const char *s, struct sockaddr_storage *a)
{
    return sharp_odst_parse_address(s, strlen(s), a);
}

static void parses_what_envoy_parses(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    assert_true(parse("10.195.16.237:8888", &a));
    assert_string_equal(str(&a), "10.195.16.237:8888");
    assert_true(parse("[::1]:80", &a));
    assert_string_equal(str(&a), "[::1]:80");
    assert_true(parse("[2001:db8::1]:0", &a));
    assert_string_equal(str(&a), "[2001:db8::1]:0");
    assert_true(parse("127.0.0.1:65535", &a));
    assert_true(parse("127.0.0.1:+80", &a)); /* absl::SimpleAtoi takes a sign and white space */
    assert_string_equal(str(&a), "127.0.0.1:80");
    assert_true(parse("127.0.0.1: 80 ", &a));
    assert_string_equal(str(&a), "127.0.0.1:80");
}

static void refuses_the_rest(void **state)
{
    (void)state;
    struct sockaddr_storage a;
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:8x",
                         "localhost:80", "::1:80", "[::1]", "[::1]:", "[]:80", "[127.0.0.1]:80", "1.2.3:80",
                         "[::1]:99999", ":80", "127.0.0.1:80:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (parse(bad[i], &a)) fail_msg("accepted '%s'", bad[i]);
    }
}

static sharp_cluster_t *odst_cluster(const char *header, uint32_t port_override, uint64_t cleanup_ms)
{
    sharp_cluster_t *c = calloc(1, sizeof *c);
    c->name = strdup("odst");
    c->stat_name = strdup("odst");
    c->type = SHARP_CLUSTER_ORIGINAL_DST;
    c->odst = sharp_odst_new();
    c->odst->cleanup_ms = cleanup_ms;
    if (header) c->odst->header = strdup(header);
    if (port_override) {
        c->odst->has_port_override = true;
        c->odst->port_override = port_override;
    }
    c->hosts = calloc(1, sizeof *c->hosts);
    sharp_cluster_init_hostset(c);
    return c;
}

static void destination_precedence(void **state)
{
    (void)state;
    sharp_cluster_t *c = odst_cluster("x-envoy-original-dst-host", 0, 5000);
    sharp_headers_t h;
    sharp_headers_init(&h);
    struct sockaddr_storage restored, out;
    assert_true(parse("10.0.0.1:443", &restored));
    /* no header, no restored address: none */
    assert_false(sharp_odst_destination(c, NULL, &h, NULL, &out));
    assert_false(sharp_odst_destination(c, NULL, NULL, NULL, &out));
    assert_true(sharp_odst_destination(c, NULL, &h, &restored, &out));
    assert_string_equal(str(&out), "10.0.0.1:443");
    /* the header first; only its first value counts */
    sharp_headers_add_cstr(&h, "x-envoy-original-dst-host", "10.0.0.2:80");
    sharp_headers_add_cstr(&h, "x-envoy-original-dst-host", "10.0.0.3:80");
    assert_true(sharp_odst_destination(c, NULL, &h, &restored, &out));
    assert_string_equal(str(&out), "10.0.0.2:80");
    /* an invalid value: the restored address, else nothing */
    sharp_headers_free(&h);
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-envoy-original-dst-host", "nonsense");
    assert_true(sharp_odst_destination(c, NULL, &h, &restored, &out));
    assert_string_equal(str(&out), "10.0.0.1:443");
    assert_false(sharp_odst_destination(c, NULL, &h, NULL, &out));
    /* the port override applies to either */
    c->odst->has_port_override = true;
    c->odst->port_override = 8080;
    assert_true(sharp_odst_destination(c, NULL, &h, &restored, &out));
    assert_string_equal(str(&out), "10.0.0.1:8080");
    sharp_headers_free(&h);
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-envoy-original-dst-host", "[::1]:1");
    assert_true(sharp_odst_destination(c, NULL, &h, NULL, &out));
    assert_string_equal(str(&out), "[::1]:8080");
    /* without use_http_header the header is not read */
    free(c->odst->header);
    c->odst->header = NULL;
    assert_false(sharp_odst_destination(c, NULL, &h, NULL, &out));
    sharp_headers_free(&h);
    sharp_cluster_free(c);
}

static void hosts_made_published_and_cleaned(void **state)
{
    (void)state;
    sharp_cluster_t *c = odst_cluster(NULL, 0, 1000);
    sharp_cluster_local_t cl = {.cluster = c};
    struct sockaddr_storage a, b;
    assert_true(parse("10.0.0.1:80", &a));
    assert_true(parse("10.0.0.2:80", &b));
    sharp_host_t *ha = sharp_odst_choose(&cl, NULL, NULL, &a);
    assert_non_null(ha);
    assert_string_equal(ha->address, "10.0.0.1:80");
    assert_string_equal(ha->hostname, "odst10.0.0.1:80");
    assert_ptr_equal(sharp_odst_choose(&cl, NULL, NULL, &a), ha); /* the worker's map */
    sharp_host_t *hb = sharp_odst_choose(&cl, NULL, NULL, &b);
    assert_ptr_not_equal(ha, hb);
    assert_null(sharp_odst_choose(&cl, NULL, NULL, NULL));
    /* the main thread adopts and publishes them; the first cleanup is due
     * one interval after the first pass */
    assert_int_equal(c->nhosts, 0);
    sharp_odst_sync(c, 10000);
    assert_int_equal(c->nhosts, 2);
    assert_int_equal(c->nall_hosts, 2);
    /* the first cleanup keeps both (chosen since), clearing their marks */
    sharp_odst_sync(c, 11000);
    assert_int_equal(c->nhosts, 2);
    /* b is used again, a is idle but has a connection: both stay */
    assert_ptr_equal(sharp_odst_choose(&cl, NULL, NULL, &b), hb);
    atomic_store(&ha->active_cx, 1);
    sharp_odst_sync(c, 11500); /* not due yet */
    sharp_odst_sync(c, 12000);
    assert_int_equal(c->nhosts, 2);
    /* neither chosen nor connected for an interval: a goes, b (chosen) stays */
    atomic_store(&ha->active_cx, 0);
    assert_ptr_equal(sharp_odst_choose(&cl, NULL, NULL, &b), hb);
    sharp_odst_sync(c, 13000);
    assert_int_equal(c->nhosts, 1);
    assert_ptr_equal(c->hosts[0], hb);
    assert_true(atomic_load(&ha->odst_removed));
    assert_false(atomic_load(&hb->odst_removed));
    /* the worker's map lets go of it (its entry counted as a pool) */
    assert_int_equal(atomic_load(&ha->npools), 1);
    sharp_odst_local_sweep(&cl);
    assert_int_equal(atomic_load(&ha->npools), 0);
    /* the address is used again: a new host */
    sharp_host_t *ha2 = sharp_odst_choose(&cl, NULL, NULL, &a);
    assert_non_null(ha2);
    assert_ptr_not_equal(ha2, ha);
    sharp_odst_sync(c, 13100);
    assert_int_equal(c->nhosts, 2);
    assert_int_equal(c->nall_hosts, 3); /* a's old host waits for sharp_cluster_collect_departed */
    sharp_odst_local_free(&cl, true);
    sharp_cluster_free(c);
}

static void a_removed_host_is_replaced_at_once(void **state)
{
    (void)state;
    sharp_cluster_t *c = odst_cluster(NULL, 0, 1000);
    sharp_cluster_local_t cl = {.cluster = c};
    struct sockaddr_storage a;
    assert_true(parse("10.0.0.1:80", &a));
    sharp_host_t *h = sharp_odst_choose(&cl, NULL, NULL, &a);
    sharp_odst_sync(c, 1);
    sharp_odst_sync(c, 1001);
    sharp_odst_sync(c, 2001);
    assert_true(atomic_load(&h->odst_removed));
    /* the worker has not swept yet: its next choice does not take the removed host */
    sharp_host_t *h2 = sharp_odst_choose(&cl, NULL, NULL, &a);
    assert_ptr_not_equal(h, h2);
    assert_int_equal(atomic_load(&h->npools), 0);
    sharp_odst_local_free(&cl, true);
    /* a host made and never adopted is freed with the cluster */
    sharp_cluster_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_what_envoy_parses),
        cmocka_unit_test(refuses_the_rest),
        cmocka_unit_test(destination_precedence),
        cmocka_unit_test(hosts_made_published_and_cleaned),
        cmocka_unit_test(a_removed_host_is_replaced_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

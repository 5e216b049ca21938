/* Filter chain selection (proxy/listener_match.c): Envoy's order of
 * criteria, the most specific match at each, the documented consequence that
 * a matching destination port rules out chains without one, and the overlap
 * check the loader uses to refuse ambiguous listeners. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <string.h>

#include "listener_match.h"

static struct sockaddr_in sin4(const char *ip, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static sharp_cidr_t cidr(const char *ip, uint32_t len)
{
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse(ip, len, &c), 0);
    return c;
}

/* Selects for a connection from `src` to `dst` among chains[0..n). */
static int pick(sharp_fc_match_t *chains, uint32_t n, const char *src, uint16_t sport, const char *dst,
                uint16_t dport)
{
    const sharp_fc_match_t *p[8];
    for (uint32_t i = 0; i < n; i++) p[i] = &chains[i];
    struct sockaddr_in l = sin4(dst, dport), r = sin4(src, sport);
    sharp_fc_conn_t c = {.local = (struct sockaddr *)&l, .remote = (struct sockaddr *)&r,
                         .direct_remote = (struct sockaddr *)&r, .server_name = "",
                         .transport_protocol = "raw_buffer"};
    return sharp_fc_select(p, n, &c);
}

static void longest_prefix_wins(void **state)
{
    (void)state;
    sharp_cidr_t wide = cidr("10.0.0.0", 8), narrow = cidr("10.1.0.0", 16), one = cidr("10.1.2.3", 32);
    sharp_fc_match_t m[4] = {
        {0},                                          /* any destination */
        {.prefix_ranges = &wide, .nprefix_ranges = 1},
        {.prefix_ranges = &narrow, .nprefix_ranges = 1},
        {.prefix_ranges = &one, .nprefix_ranges = 1},
    };
    assert_int_equal(pick(m, 4, "1.1.1.1", 5000, "10.1.2.3", 80), 3);
    assert_int_equal(pick(m, 4, "1.1.1.1", 5000, "10.1.9.9", 80), 2);
    assert_int_equal(pick(m, 4, "1.1.1.1", 5000, "10.9.9.9", 80), 1);
    assert_int_equal(pick(m, 4, "1.1.1.1", 5000, "192.168.0.1", 80), 0);
    /* without the catch-all, an address outside every range has no chain */
    assert_int_equal(pick(m + 1, 3, "1.1.1.1", 5000, "192.168.0.1", 80), -1);
}

/* Destination port comes first: a chain naming the port rules out every
 * chain without one, even when its later criteria then fail. */
static void port_rules_out_wildcards(void **state)
{
    (void)state;
    uint32_t port1 = 1111;
    sharp_fc_match_t m[2] = {
        {.destination_port = 80, .source_ports = &port1, .nsource_ports = 1},
        {0},
    };
    assert_int_equal(pick(m, 2, "1.1.1.1", 1111, "10.0.0.1", 80), 0);
    assert_int_equal(pick(m, 2, "1.1.1.1", 2222, "10.0.0.1", 80), -1);
    assert_int_equal(pick(m, 2, "1.1.1.1", 2222, "10.0.0.1", 81), 1);
}

static void source_criteria(void **state)
{
    (void)state;
    sharp_cidr_t lan = cidr("192.168.0.0", 16), host = cidr("192.168.1.7", 32);
    uint32_t ports[] = {4000, 4001};
    sharp_fc_match_t m[4] = {
        {.source_prefix_ranges = &lan, .nsource_prefix_ranges = 1},
        {.source_prefix_ranges = &host, .nsource_prefix_ranges = 1},
        {.source_prefix_ranges = &host, .nsource_prefix_ranges = 1, .source_ports = ports, .nsource_ports = 2},
        {.source_type = SHARP_FC_SOURCE_EXTERNAL},
    };
    /* source type comes before source IP: an external peer takes chain 3 */
    assert_int_equal(pick(m, 4, "192.168.1.7", 4001, "10.0.0.1", 80), 3);
    /* a loopback peer is local: chain 3 is out, the /32 and then the port decide */
    sharp_fc_match_t local[3] = {m[0], m[1], m[2]};
    sharp_cidr_t lo = cidr("127.0.0.0", 8), lo2 = cidr("127.0.0.2", 32);
    local[0].source_prefix_ranges = &lo;
    local[1].source_prefix_ranges = &lo2;
    local[2].source_prefix_ranges = &lo2;
    assert_int_equal(pick(local, 3, "127.0.0.2", 4000, "127.0.0.1", 80), 2);
    assert_int_equal(pick(local, 3, "127.0.0.2", 5000, "127.0.0.1", 80), 1);
    assert_int_equal(pick(local, 3, "127.0.0.3", 4000, "127.0.0.1", 80), 0);
    sharp_fc_match_t only_local = {.source_type = SHARP_FC_SOURCE_LOCAL};
    assert_int_equal(pick(&only_local, 1, "127.0.0.9", 1, "127.0.0.1", 80), 0);
    assert_int_equal(pick(&only_local, 1, "10.0.0.5", 1, "10.0.0.5", 80), 0); /* same IP */
    assert_int_equal(pick(&only_local, 1, "10.0.0.6", 1, "10.0.0.5", 80), -1);
}

static void transport_and_server_name(void **state)
{
    (void)state;
    char raw[] = "raw_buffer", tls[] = "tls";
    sharp_fc_match_t m[2] = {{.transport_protocol = tls}, {.transport_protocol = raw}};
    assert_int_equal(pick(m, 2, "1.1.1.1", 1, "2.2.2.2", 80), 1);
    char exact[] = "www.example.com", wild[] = "*.example.com", wider[] = "*.com";
    char *n0[] = {wider}, *n1[] = {wild}, *n2[] = {exact};
    sharp_fc_match_t s[4] = {{.server_names = n0, .nserver_names = 1},
                             {.server_names = n1, .nserver_names = 1},
                             {.server_names = n2, .nserver_names = 1},
                             {0}};
    const sharp_fc_match_t *p[4] = {&s[0], &s[1], &s[2], &s[3]};
    struct sockaddr_in l = sin4("2.2.2.2", 443), r = sin4("1.1.1.1", 1);
    sharp_fc_conn_t c = {.local = (struct sockaddr *)&l, .remote = (struct sockaddr *)&r, .server_name = "WWW.example.com"};
    assert_int_equal(sharp_fc_select(p, 4, &c), 2);
    c.server_name = "api.example.com";
    assert_int_equal(sharp_fc_select(p, 4, &c), 1);
    c.server_name = "a.b.example.com";
    assert_int_equal(sharp_fc_select(p, 4, &c), 1);
    c.server_name = "example.org";
    assert_int_equal(sharp_fc_select(p, 4, &c), 3);
    c.server_name = "";
    assert_int_equal(sharp_fc_select(p, 4, &c), 3);
}

static void overlap(void **state)
{
    (void)state;
    sharp_cidr_t a = cidr("10.0.0.0", 8), b = cidr("10.0.0.0", 8), c = cidr("10.0.0.0", 16);
    uint32_t p1[] = {1, 2}, p2[] = {2, 3}, p3[] = {4};
    sharp_fc_match_t x = {.prefix_ranges = &a, .nprefix_ranges = 1, .source_ports = p1, .nsource_ports = 2};
    sharp_fc_match_t y = {.prefix_ranges = &b, .nprefix_ranges = 1, .source_ports = p2, .nsource_ports = 2};
    sharp_fc_match_t z = {.prefix_ranges = &b, .nprefix_ranges = 1, .source_ports = p3, .nsource_ports = 1};
    sharp_fc_match_t w = {.prefix_ranges = &c, .nprefix_ranges = 1, .source_ports = p1, .nsource_ports = 2};
    sharp_fc_match_t e1 = {0}, e2 = {0}, port = {.destination_port = 80};
    assert_true(sharp_fc_overlap(&x, &y));   /* 10/8 and port 2 in both */
    assert_false(sharp_fc_overlap(&x, &z));  /* no shared source port */
    assert_false(sharp_fc_overlap(&x, &w));  /* different prefixes are different keys */
    assert_true(sharp_fc_overlap(&e1, &e2)); /* two catch-alls */
    assert_false(sharp_fc_overlap(&e1, &port));
    assert_false(sharp_fc_overlap(&e1, &x));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(longest_prefix_wins),       cmocka_unit_test(port_rules_out_wildcards),
        cmocka_unit_test(source_criteria),           cmocka_unit_test(transport_and_server_name),
        cmocka_unit_test(overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_net.c: CIDR ranges (internal_address_config.cidr_ranges). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "net.h"

#include <arpa/inet.h>

static bool in_range(const sharp_cidr_t *c, const char *ip)
{
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(sharp_addr_parse(ip, 80, &ss, &len), 0);
    return sharp_cidr_contains(c, (const struct sockaddr *)&ss);
}

static void test_ipv4_ranges(void **state)
{
    (void)state;
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse("10.1.2.3", 8, &c), 0); /* masked to 10.0.0.0/8 */
    assert_true(in_range(&c, "10.0.0.1"));
    assert_true(in_range(&c, "10.255.255.255"));
    assert_false(in_range(&c, "11.0.0.1"));
    assert_false(in_range(&c, "::ffff:10.0.0.1")); /* other family */
    assert_int_equal(sharp_cidr_parse("172.16.0.0", 12, &c), 0);
    assert_true(in_range(&c, "172.31.255.1"));
    assert_false(in_range(&c, "172.32.0.1"));
    assert_false(in_range(&c, "172.15.255.255"));
    assert_int_equal(sharp_cidr_parse("127.0.0.1", 32, &c), 0);
    assert_true(in_range(&c, "127.0.0.1"));
    assert_false(in_range(&c, "127.0.0.2"));
    assert_int_equal(sharp_cidr_parse("0.0.0.0", 0, &c), 0);
    assert_true(in_range(&c, "203.0.113.9"));
}

static void test_ipv6_ranges(void **state)
{
    (void)state;
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse("fd00::", 8, &c), 0);
    assert_true(in_range(&c, "fd12:3456::1"));
    assert_false(in_range(&c, "fc00::1"));
    assert_false(in_range(&c, "10.0.0.1"));
    assert_int_equal(sharp_cidr_parse("2001:db8::", 33, &c), 0);
    assert_true(in_range(&c, "2001:db8:7fff::1"));
    assert_false(in_range(&c, "2001:db8:8000::1"));
    assert_int_equal(sharp_cidr_parse("::1", 128, &c), 0);
    assert_true(in_range(&c, "::1"));
    assert_false(in_range(&c, "::2"));
}

static void test_invalid(void **state)
{
    (void)state;
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse("10.0.0.0", 33, &c), -1);
    assert_int_equal(sharp_cidr_parse("::", 129, &c), -1);
    assert_int_equal(sharp_cidr_parse("localhost", 8, &c), -1);
    assert_int_equal(sharp_cidr_parse("", 0, &c), -1);
    assert_int_equal(sharp_cidr_parse("10.0.0.0/8", 8, &c), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_ranges),
        cmocka_unit_test(test_ipv6_ranges),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

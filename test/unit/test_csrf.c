/* test_csrf.c: envoy.filters.http.csrf's origin rules: the host and port
 * of an Origin or Referer value as Envoy's hostAndPort reads it (an
 * absolute URL's authority without userinfo, an IPv6 host with its
 * brackets, anything else as it is) and the methods it checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "filters/csrf/filter.h"

static char *hp(const char *v)
{
    static char buf[256];
    sharp_str_t r = sharp_csrf_host_and_port((sharp_str_t){v, strlen(v)});
    snprintf(buf, sizeof buf, "%.*s", (int)r.len, r.p);
    return buf;
}

static void test_host_and_port(void **state)
{
    (void)state;
    assert_string_equal(hp("http://example.com"), "example.com");
    assert_string_equal(hp("https://example.com:8443"), "example.com:8443");
    assert_string_equal(hp("http://example.com/a/b?c=d#e"), "example.com");
    assert_string_equal(hp("http://example.com:80/x"), "example.com:80");
    assert_string_equal(hp("http://user:pw@example.com:81/"), "example.com:81");
    assert_string_equal(hp("http://[::1]:8080/p"), "[::1]:8080");
    assert_string_equal(hp("http://[2001:db8::1]"), "[2001:db8::1]");
    assert_string_equal(hp("http://127.0.0.1:10000"), "127.0.0.1:10000");
    assert_string_equal(hp("http://a.b?x"), "a.b");
    /* not absolute URLs: as they are */
    assert_string_equal(hp("null"), "null");
    assert_string_equal(hp("example.com"), "example.com");
    assert_string_equal(hp("example.com:80"), "example.com:80");
    assert_string_equal(hp("http//example.com"), "http//example.com");
    assert_string_equal(hp("http://"), "http://");
    assert_string_equal(hp("http://host:"), "http://host:");
    assert_string_equal(hp("http://host:99999"), "http://host:99999");
    assert_string_equal(hp("http://a@b@c"), "http://a@b@c");
    assert_string_equal(hp("http://[::1"), "http://[::1");
    assert_string_equal(hp("http://ex ample.com"), "http://ex ample.com");
    assert_string_equal(hp("h2c://x"), "h2c://x");
    assert_string_equal(hp(""), "");
}

static bool mut(const char *m)
{
    return sharp_csrf_mutating((sharp_str_t){m, strlen(m)});
}

static void test_methods(void **state)
{
    (void)state;
    assert_true(mut("POST"));
    assert_true(mut("PUT"));
    assert_true(mut("DELETE"));
    assert_true(mut("PATCH"));
    assert_false(mut("GET"));
    assert_false(mut("HEAD"));
    assert_false(mut("OPTIONS"));
    assert_false(mut("post"));
    assert_false(mut(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_and_port),
        cmocka_unit_test(test_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

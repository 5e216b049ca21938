/* test_shadow.c: the shadow host of request mirroring, as Envoy's
 * shadowAppendedHost builds it (HeaderUtility::getPortStart), and the
 * fractional percent evaluation mirroring shares with route matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http/route.h"
#include "upstream/shadow.h"

static void expect_host(const char *in, const char *want)
{
    char out[256];
    size_t n = sharp_shadow_host((sharp_str_t){in, strlen(in)}, out, sizeof out);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void test_shadow_host(void **state)
{
    (void)state;
    expect_host("example.com", "example.com-shadow");
    expect_host("example.com:8080", "example.com-shadow:8080");
    expect_host("10.0.0.1:80", "10.0.0.1-shadow:80");
    expect_host("[::1]:443", "[::1]-shadow:443");
    expect_host("[::1]", "[::1]-shadow"); /* the colons are inside the brackets */
    expect_host("host:", "host-shadow:");
    expect_host("", "-shadow");
    char small[8];
    size_t n = sharp_shadow_host((sharp_str_t){"abcdefgh", 8}, small, sizeof small);
    assert_int_equal(n, 7); /* truncated, still terminated */
    assert_int_equal(small[7], '\0');
}

static void test_fraction(void **state)
{
    (void)state;
    sharp_runtime_fraction_t f = {.numerator = 5, .denominator = 10000};
    int hits = 0;
    for (uint64_t r = 0; r < 20000; r++) hits += sharp_fraction_enabled(&f, r);
    assert_int_equal(hits, 10);
    f = (sharp_runtime_fraction_t){.numerator = 0, .denominator = 100};
    for (uint64_t r = 0; r < 200; r++) assert_false(sharp_fraction_enabled(&f, r));
    f = (sharp_runtime_fraction_t){.numerator = 150, .denominator = 100}; /* above 100%: always */
    for (uint64_t r = 0; r < 200; r++) assert_true(sharp_fraction_enabled(&f, r));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shadow_host),
        cmocka_unit_test(test_fraction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

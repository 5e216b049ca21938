/* test_parse_util: the number, hex and percent-decoding helpers the config,
 * the filters and the tracers share (common.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common.h"

static sharp_str_t str(const char *s)
{
    return (sharp_str_t){s, strlen(s)};
}

static void decimal(void **state)
{
    (void)state;
    uint64_t v = 7;
    assert_true(sharp_parse_dec("0", 1, UINT64_MAX, &v) && v == 0);
    assert_true(sharp_parse_dec("18446744073709551615", 20, UINT64_MAX, &v) && v == UINT64_MAX);
    assert_false(sharp_parse_dec("18446744073709551616", 20, UINT64_MAX, &v));
    assert_true(sharp_parse_dec("255", 3, 255, &v) && v == 255);
    assert_false(sharp_parse_dec("256", 3, 255, &v));
    assert_false(sharp_parse_dec("", 0, UINT64_MAX, &v));
    assert_false(sharp_parse_dec("+1", 2, UINT64_MAX, &v)); /* digits only */
    assert_false(sharp_parse_dec(" 1", 2, UINT64_MAX, &v));
    assert_true(sharp_parse_dec("12", 1, UINT64_MAX, &v) && v == 1); /* only n bytes */
    /* absl::SimpleAtoi: blanks around and a '+' */
    assert_true(sharp_simple_atou(str(" +42\t"), UINT64_MAX, &v) && v == 42);
    assert_true(sharp_simple_atou(str("\r\n9\v\f"), UINT64_MAX, &v) && v == 9);
    const char *bad[] = {"", " ", "+", "-1", "1.5", "0x10", "12a", "1 2", "++1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(sharp_simple_atou(str(bad[i]), UINT64_MAX, &v));
    assert_false(sharp_simple_atou(str("4294967296"), UINT32_MAX, &v));
}

static void hex(void **state)
{
    (void)state;
    assert_int_equal(sharp_hexval('0'), 0);
    assert_int_equal(sharp_hexval('f'), 15);
    assert_int_equal(sharp_hexval('A'), 10);
    assert_int_equal(sharp_hexval('g'), -1);
    assert_int_equal(sharp_hexval(0xc3), -1);
    uint64_t v = 0;
    assert_true(sharp_parse_hex64("ffffffffffffffff", 16, &v) && v == UINT64_MAX);
    assert_true(sharp_parse_hex64("0A", 2, &v) && v == 10);
    assert_false(sharp_parse_hex64("10000000000000000", 17, &v)); /* 17 digits */
    assert_false(sharp_parse_hex64("", 0, &v));
    assert_false(sharp_parse_hex64("0x1", 3, &v));
    assert_false(sharp_parse_hex64("-1", 2, &v));
}

static void percent(void **state)
{
    (void)state;
    char out[64];
    const char *in = "a%20b%2Fc%zz%4+%%41%4";
    size_t n = sharp_percent_decode(in, strlen(in), out);
    assert_string_equal(out, "a b/c%zz%4+%A%4");
    assert_int_equal(n, strlen("a b/c%zz%4+%A%4"));
    /* a decoded NUL stays in the output */
    n = sharp_percent_decode("x%00y", 5, out);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "x\0y", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decimal),
        cmocka_unit_test(hex),
        cmocka_unit_test(percent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

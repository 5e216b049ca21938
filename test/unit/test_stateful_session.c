/* test_stateful_session.c: envoy.filters.http.stateful_session's session
 * values (the cookie's envoy.Cookie message in base64 with its plain
 * base64 fallback, the header's base64 address, hostile values), the
 * cookie's path rule and its Set-Cookie line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "filters/stateful_session/session.h"
#include "http/tracing.h"

static char addr[SHARP_SESSION_ADDR_MAX + 1];

static bool cdec(const char *v, uint64_t now)
{
    memset(addr, 0, sizeof addr);
    return sharp_session_cookie_decode(v, strlen(v), now, addr);
}

static void test_cookie_encode(void **unused)
{
    (void)unused;
    sharp_sbuf_t b = {0};
    sharp_session_cookie_encode(&b, "127.0.0.1:8080", 14, 0);
    assert_string_equal(sharp_sbuf_cstr(&b), "Cg4xMjcuMC4wLjE6ODA4MA=="); /* {address} */
    sharp_sbuf_reset(&b);
    sharp_session_cookie_encode(&b, "127.0.0.1:8080", 14, 300);
    assert_string_equal(sharp_sbuf_cstr(&b),
                        "Cg4xMjcuMC4wLjE6ODA4MBCsAg=="); /* {address, expires 300} */
    sharp_sbuf_free(&b);
}

static void test_cookie_decode(void **unused)
{
    (void)unused;
    assert_true(cdec("Cg4xMjcuMC4wLjE6ODA4MA==", 1000));
    assert_string_equal(addr, "127.0.0.1:8080");
    /* expires 300: good until then, ignored after */
    assert_true(cdec("Cg4xMjcuMC4wLjE6ODA4MBCsAg==", 300));
    assert_string_equal(addr, "127.0.0.1:8080");
    assert_false(cdec("Cg4xMjcuMC4wLjE6ODA4MBCsAg==", 301));
    /* the plain format: base64 of the address */
    assert_true(cdec("MTI3LjAuMC4xOjgwODA=", 0));
    assert_string_equal(addr, "127.0.0.1:8080");
    /* a message without address names nothing */
    assert_false(cdec("EKwC", 0));
    /* round trip with a large expires and an IPv6 address */
    sharp_sbuf_t b = {0};
    sharp_session_cookie_encode(&b, "[::1]:10001", 11, UINT64_MAX);
    assert_true(cdec(sharp_sbuf_cstr(&b), UINT64_MAX));
    assert_string_equal(addr, "[::1]:10001");
    /* unknown fields are skipped, the last address wins */
    sharp_sbuf_t raw = {0}, enc = {0};
    sharp_sbuf_append(&raw,
                      "\x0a\x03"
                      "a:1"
                      "\x1a\x02xy"
                      "\x25\x01\x02\x03\x04"
                      "\x0a\x0b"
                      "10.0.0.1:80",
                      27);
    sharp_sw_base64(&enc, raw.data, raw.len);
    assert_true(cdec(sharp_sbuf_cstr(&enc), 0));
    assert_string_equal(addr, "10.0.0.1:80");
    sharp_sbuf_free(&b);
    sharp_sbuf_free(&raw);
    sharp_sbuf_free(&enc);
}

static void test_cookie_hostile(void **unused)
{
    (void)unused;
    assert_false(cdec("", 0));
    assert_false(cdec("%%%%", 0));
    assert_false(cdec("Cg4xMjcuMC4wLjE6ODA4MA", 0)); /* unpadded: Envoy's decode wants padding */
    assert_false(cdec("Cg4xMjcuMC4wLjE6ODA4MA=", 0));
    assert_false(cdec("====", 0));
    assert_false(cdec("A===", 0));
    assert_false(cdec("AA==", 0)); /* a NUL byte */
    /* a message whose length runs past its end: taken as a plain address
     * of raw bytes, which names no host but must not crash */
    sharp_sbuf_t raw = {0}, enc = {0};
    sharp_sbuf_append(&raw,
                      "\x0a\x7f"
                      "abc",
                      5);
    sharp_sw_base64(&enc, raw.data, raw.len);
    assert_true(cdec(sharp_sbuf_cstr(&enc), 0));
    assert_int_equal(strlen(addr), 5);
    /* a varint longer than 10 bytes, a group, field 0 */
    sharp_sbuf_reset(&raw);
    sharp_sbuf_reset(&enc);
    sharp_sbuf_append(&raw, "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12);
    sharp_sw_base64(&enc, raw.data, raw.len);
    assert_true(cdec(sharp_sbuf_cstr(&enc), 0)); /* not a message: the bytes themselves */
    assert_int_equal(strlen(addr), 12);
    /* too long an address is refused, message or plain */
    char big[400];
    memset(big, '1', sizeof big);
    sharp_sbuf_reset(&enc);
    sharp_session_cookie_encode(&enc, big, sizeof big, 0);
    assert_false(cdec(sharp_sbuf_cstr(&enc), 0));
    sharp_sbuf_reset(&enc);
    sharp_sw_base64(&enc, big, sizeof big);
    assert_false(cdec(sharp_sbuf_cstr(&enc), 0));
    /* a huge base64 value: decoded and refused, nothing kept */
    size_t n = 1 << 20;
    char *huge = malloc(n + 1);
    memset(huge, 'A', n);
    huge[n] = '\0';
    assert_false(cdec(huge, 0));
    free(huge);
    sharp_sbuf_free(&raw);
    sharp_sbuf_free(&enc);
}

static void test_header_value(void **unused)
{
    (void)unused;
    sharp_sbuf_t b = {0};
    sharp_session_header_encode(&b, "1.2.3.4:80", 10);
    assert_string_equal(sharp_sbuf_cstr(&b), "MS4yLjMuNDo4MA=="); /* Envoy's documented example */
    assert_true(sharp_session_header_decode(b.data, b.len, addr));
    assert_string_equal(addr, "1.2.3.4:80");
    assert_false(sharp_session_header_decode("", 0, addr));
    assert_false(sharp_session_header_decode("!!!!", 4, addr));
    assert_false(sharp_session_header_decode("MS4yLjMuNDo4MA", 14, addr));
    sharp_sbuf_free(&b);
}

static bool pm(const char *cookie_path, const char *path)
{
    return sharp_session_path_match(cookie_path, strlen(cookie_path), path, strlen(path));
}

static void test_path_match(void **unused)
{
    (void)unused;
    assert_true(pm("", "/anything"));
    assert_true(pm("/path", "/path"));
    assert_true(pm("/path", "/path/x"));
    assert_true(pm("/path", "/path?q=1"));
    assert_true(pm("/path", "/path#f"));
    assert_false(pm("/path", "/pathx"));
    assert_false(pm("/path", "/pat"));
    assert_false(pm("/path", "/other"));
    assert_false(pm("/path", ""));
    assert_true(pm("/path/", "/path/"));
    assert_true(pm("/path/", "/path/xyz"));
    assert_false(pm("/path/", "/path"));
    assert_true(pm("/", "/x"));
}

static void test_set_cookie(void **unused)
{
    (void)unused;
    sharp_sbuf_t b = {0};
    sharp_session_set_cookie(&b, "global-session-cookie", "abc=", 4, 120, "/path");
    assert_string_equal(sharp_sbuf_cstr(&b),
                        "global-session-cookie=\"abc=\"; Max-Age=120; Path=/path; HttpOnly");
    sharp_sbuf_reset(&b);
    sharp_session_set_cookie(&b, "s", "v", 1, 0, "");
    assert_string_equal(sharp_sbuf_cstr(&b), "s=\"v\"; HttpOnly");
    sharp_sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cookie_encode),  cmocka_unit_test(test_cookie_decode),
        cmocka_unit_test(test_cookie_hostile), cmocka_unit_test(test_header_value),
        cmocka_unit_test(test_path_match),     cmocka_unit_test(test_set_cookie),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

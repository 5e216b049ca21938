/* gRPC helpers: Envoy's status mapping, names, grpc-message encoding and
 * grpc-timeout parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "http/grpc.h"

static void request_content_types(void **state)
{
    (void)state;
    const char *yes[] = {"application/grpc", "application/grpc+proto", "application/grpc;charset=utf-8",
                         "Application/GRPC"};
    const char *no[] = {"application/grpcx", "application/grpc-web", "application/json", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        sharp_headers_t h;
        sharp_headers_init(&h);
        sharp_headers_add_cstr(&h, "content-type", yes[i]);
        assert_true(sharp_grpc_is_request(&h));
        sharp_headers_free(&h);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        sharp_headers_t h;
        sharp_headers_init(&h);
        sharp_headers_add_cstr(&h, "content-type", no[i]);
        assert_false(sharp_grpc_is_request(&h));
        sharp_headers_free(&h);
    }
    assert_false(sharp_grpc_is_request(NULL));
}

static void http_to_grpc(void **state)
{
    (void)state;
    assert_int_equal(sharp_grpc_status_from_http(400), 13);
    assert_int_equal(sharp_grpc_status_from_http(401), 16);
    assert_int_equal(sharp_grpc_status_from_http(403), 7);
    assert_int_equal(sharp_grpc_status_from_http(404), 12);
    assert_int_equal(sharp_grpc_status_from_http(429), 14);
    assert_int_equal(sharp_grpc_status_from_http(502), 14);
    assert_int_equal(sharp_grpc_status_from_http(503), 14);
    assert_int_equal(sharp_grpc_status_from_http(504), 14);
    assert_int_equal(sharp_grpc_status_from_http(500), 2);
    assert_int_equal(sharp_grpc_status_from_http(200), 2);
}

static void response_status_order(void **state)
{
    (void)state;
    sharp_headers_t t, h;
    sharp_headers_init(&t);
    sharp_headers_init(&h);
    int64_t code = 99;
    assert_false(sharp_grpc_response_status(&t, &h, 0, &code));
    assert_true(sharp_grpc_response_status(&t, &h, 503, &code));
    assert_int_equal(code, 14);
    sharp_headers_add_cstr(&h, "grpc-status", "5");
    assert_true(sharp_grpc_response_status(&t, &h, 200, &code));
    assert_int_equal(code, 5);
    sharp_headers_add_cstr(&t, "grpc-status", "0");
    assert_true(sharp_grpc_response_status(&t, &h, 200, &code));
    assert_int_equal(code, 0);
    sharp_headers_set_cstr(&t, "grpc-status", "x1");
    assert_true(sharp_grpc_response_status(&t, &h, 200, &code));
    assert_int_equal(code, -1);
    sharp_headers_free(&t);
    sharp_headers_free(&h);
}

static void names(void **state)
{
    (void)state;
    assert_string_equal(sharp_grpc_status_name(4, false), "DeadlineExceeded");
    assert_string_equal(sharp_grpc_status_name(4, true), "DEADLINE_EXCEEDED");
    assert_string_equal(sharp_grpc_status_name(1, false), "Canceled");
    assert_string_equal(sharp_grpc_status_name(1, true), "CANCELLED");
    assert_string_equal(sharp_grpc_status_name(16, false), "Unauthenticated");
    assert_null(sharp_grpc_status_name(17, false));
    assert_null(sharp_grpc_status_name(-1, true));
}

static void percent_encoding(void **state)
{
    (void)state;
    sharp_sbuf_t b = {0};
    sharp_grpc_percent_encode(&b, "no healthy upstream", 19);
    sharp_grpc_percent_encode(&b, " 100%\n\xc3\xa9", 8);
    assert_int_equal(b.len, 19 + 16);
    assert_memory_equal(b.data, "no healthy upstream 100%25%0A%C3%A9", b.len);
    sharp_sbuf_free(&b);
}

static void timeouts(void **state)
{
    (void)state;
    uint64_t ms = 0;
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("1S"), &ms));
    assert_int_equal(ms, 1000);
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("2H"), &ms));
    assert_int_equal(ms, 7200000);
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("3M"), &ms));
    assert_int_equal(ms, 180000);
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("250m"), &ms));
    assert_int_equal(ms, 250);
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("1500u"), &ms));
    assert_int_equal(ms, 2); /* rounded up, as Envoy */
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("1n"), &ms));
    assert_int_equal(ms, 1);
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("0m"), &ms));
    assert_int_equal(ms, 0);
    assert_true(sharp_grpc_timeout_ms(SHARP_STR("99999999S"), &ms));
    assert_false(sharp_grpc_timeout_ms(SHARP_STR("100000000S"), &ms)); /* 9 digits */
    assert_false(sharp_grpc_timeout_ms(SHARP_STR("S"), &ms));
    assert_false(sharp_grpc_timeout_ms(SHARP_STR("10"), &ms));
    assert_false(sharp_grpc_timeout_ms(SHARP_STR("1x"), &ms));
    assert_false(sharp_grpc_timeout_ms(SHARP_STR("-1S"), &ms));
    assert_false(sharp_grpc_timeout_ms(SHARP_STR(""), &ms));
}

static void grpc_to_http(void **state)
{
    (void)state;
    static const uint32_t want[] = {200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401};
    for (int64_t i = 0; i <= 16; i++) assert_int_equal(sharp_grpc_status_to_http(i), want[i]);
    assert_int_equal(sharp_grpc_status_to_http(17), 500);
    assert_int_equal(sharp_grpc_status_to_http(-1), 500); /* InvalidCode */
}

static void timeout_format(void **state)
{
    (void)state;
    char t[10];
    size_t n = sharp_grpc_timeout_format(0, t);
    assert_memory_equal(t, "0m", n);
    n = sharp_grpc_timeout_format(300, t);
    assert_memory_equal(t, "300m", n);
    n = sharp_grpc_timeout_format(99999999, t);
    assert_memory_equal(t, "99999999m", n);
    n = sharp_grpc_timeout_format(100000000, t);
    assert_memory_equal(t, "100000S", n);
    n = sharp_grpc_timeout_format(UINT64_MAX, t);
    assert_memory_equal(t, "99999999H", n); /* clipped */
    assert_int_equal(n, 9);
    uint64_t ms;
    n = sharp_grpc_timeout_format(123456, t);
    assert_true(sharp_grpc_timeout_ms((sharp_str_t){t, n}, &ms));
    assert_int_equal(ms, 123456);
}

static void health_messages(void **state)
{
    (void)state;
    sharp_sbuf_t b = {0};
    sharp_grpc_health_request(&b, "svc.A");
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "\0\0\0\0\x07\x0a\x05svc.A", 12);
    sharp_sbuf_free(&b);
    sharp_grpc_health_request(&b, "");
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "\0\0\0\0\0", 5);
    sharp_sbuf_free(&b);

    uint64_t st = 99;
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x02\x08\x01", 7, &st), 0);
    assert_int_equal(st, 1); /* SERVING */
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x02\x08\x02", 7, &st), 0);
    assert_int_equal(st, 2);
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\0", 5, &st), 0);
    assert_int_equal(st, 0); /* empty message: UNKNOWN */
    /* an unknown string field before the status is skipped */
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x05\x12\x01x\x08\x01", 10, &st), 0);
    assert_int_equal(st, 1);
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x02\x08", 6, &st), -1);   /* short */
    assert_int_equal(sharp_grpc_health_response_status("\x01\0\0\0\x02\x08\x01", 7, &st), -1); /* compressed */
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x01\x08", 6, &st), -1);   /* truncated varint */
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x02\x12\x05", 7, &st), -1); /* overlong */
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x01\x0b", 6, &st), -1);   /* group */
    /* two messages: a unary call has one */
    assert_int_equal(sharp_grpc_health_response_status("\0\0\0\0\x02\x08\x01\0\0\0\0\0", 12, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_content_types), cmocka_unit_test(http_to_grpc),
        cmocka_unit_test(response_status_order), cmocka_unit_test(names),
        cmocka_unit_test(percent_encoding),      cmocka_unit_test(timeouts),
        cmocka_unit_test(timeout_format),        cmocka_unit_test(health_messages),
        cmocka_unit_test(grpc_to_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

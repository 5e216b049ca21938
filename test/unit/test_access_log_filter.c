/* Unit tests: AccessLogFilter translation and evaluation (the predicate the
 * access log's `filter` and local reply mappers share), and the local reply
 * rewrite (mappers, body formats). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config/access_log_filter_config.h"
#include "config/local_reply_config.h"
#include "config/mapper.h"
#include "http/access_log_filter.h"
#include "http/local_reply.h"

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"

static sharp_config_doc_t *doc;

/* A filter from YAML, or NULL with the translator's message in err. */
static sharp_alf_t *filter_from(const char *yaml, char *err, size_t errlen)
{
    sharp_config_error_t e = {{0}};
    doc = sharp_config_parse(yaml, strlen(yaml), "f.yaml",
                             &envoy__config__accesslog__v3__access_log_filter__descriptor, &e);
    if (!doc) {
        snprintf(err, errlen, "%s", e.msg);
        return NULL;
    }
    sharp_alf_t *f = sharp_config_access_log_filter((const void *)sharp_config_doc_message(doc),
                                                    "filter", err, errlen);
    sharp_config_doc_free(doc);
    doc = NULL;
    return f;
}

static sharp_alf_t *must(const char *yaml)
{
    char err[512] = "";
    sharp_alf_t *f = filter_from(yaml, err, sizeof err);
    if (!f) fail_msg("%s", err);
    return f;
}

static uint64_t fixed_random_value;
static unsigned random_calls;
static uint64_t fixed_random(void *ctx)
{
    (void)ctx;
    random_calls++;
    return fixed_random_value;
}

static bool eval(const sharp_alf_t *f, const sharp_stream_info_t *si)
{
    return sharp_alf_evaluate(f, si, fixed_random, NULL);
}

static void status_code_filter(void **state)
{
    (void)state;
    sharp_stream_info_t si = {0};
    sharp_alf_t *ge = must("status_code_filter: { comparison: { op: GE, value: { default_value: "
                           "500, runtime_key: k } } }");
    sharp_alf_t *le = must("status_code_filter: { comparison: { op: LE, value: { default_value: "
                           "399, runtime_key: k } } }");
    sharp_alf_t *eq0 = must("status_code_filter: { comparison: {} }");
    si.response_code = 503;
    assert_true(eval(ge, &si));
    assert_false(eval(le, &si));
    assert_false(eval(eq0, &si));
    si.response_code = 500;
    assert_true(eval(ge, &si));
    si.response_code = 200;
    assert_false(eval(ge, &si));
    assert_true(eval(le, &si));
    /* no response: the code counts as 0 */
    si.response_code = 0;
    assert_true(eval(eq0, &si));
    assert_true(eval(le, &si));
    sharp_alf_free(ge);
    sharp_alf_free(le);
    sharp_alf_free(eq0);
}

static void duration_filter(void **state)
{
    (void)state;
    sharp_stream_info_t si = {0};
    sharp_alf_t *f = must("duration_filter: { comparison: { op: GE, value: { default_value: 100, "
                          "runtime_key: k } } }");
    si.start_ns = 1000000000ull;
    si.end_ns = si.start_ns + 99 * 1000000ull;
    assert_false(eval(f, &si));
    si.end_ns = si.start_ns + 100 * 1000000ull;
    assert_true(eval(f, &si));
    /* an open stream: its duration so far */
    si.start_ns = sharp_now_ns() - 200 * 1000000ull;
    si.end_ns = 0;
    assert_true(eval(f, &si));
    sharp_alf_free(f);
}

static void not_health_check_and_response_flags(void **state)
{
    (void)state;
    sharp_stream_info_t si = {0};
    sharp_alf_t *nhc = must("not_health_check_filter: {}");
    sharp_alf_t *any = must("response_flag_filter: {}");
    sharp_alf_t *some = must("response_flag_filter: { flags: [UH, NR] }");
    sharp_alf_t *dr = must("response_flag_filter: { flags: [DR] }");
    assert_true(eval(nhc, &si));
    si.health_check = true;
    assert_false(eval(nhc, &si));
    assert_false(eval(any, &si));
    assert_false(eval(some, &si));
    si.response_flags = SHARP_RF_UPSTREAM_CONNECTION_FAILURE;
    assert_true(eval(any, &si));
    assert_false(eval(dr, &si)); /* a flag SHARP never sets matches nothing */
    assert_false(eval(some, &si));
    si.response_flags |= SHARP_RF_NO_ROUTE_FOUND;
    assert_true(eval(some, &si));
    sharp_alf_free(nhc);
    sharp_alf_free(any);
    sharp_alf_free(some);
    sharp_alf_free(dr);
}

static void header_filter_reads_request_headers(void **state)
{
    (void)state;
    sharp_headers_t req;
    sharp_headers_init(&req);
    sharp_stream_info_t si = {0};
    sharp_alf_t *f =
        must("header_filter: { header: { name: X-Tenant, string_match: { prefix: acme } } }");
    sharp_alf_t *inv = must(
        "header_filter: { header: { name: x-tenant, present_match: true, invert_match: true } }");
    /* no request headers at all: an empty map */
    assert_false(eval(f, &si));
    assert_true(eval(inv, &si));
    si.request_headers = &req;
    sharp_headers_add_cstr(&req, "x-tenant", "acme-eu");
    assert_true(eval(f, &si));
    assert_false(eval(inv, &si));
    sharp_alf_free(f);
    sharp_alf_free(inv);
    sharp_headers_free(&req);
}

static void and_or_short_circuit(void **state)
{
    (void)state;
    sharp_stream_info_t si = {.response_code = 503};
    sharp_alf_t *and_f =
        must("and_filter: { filters: ["
             " { status_code_filter: { comparison: { op: GE, value: { default_value: 500, "
             "runtime_key: a } } } },"
             " { runtime_filter: { runtime_key: r, percent_sampled: { numerator: 100 } } } ] }");
    sharp_alf_t *or_f =
        must("or_filter: { filters: ["
             " { status_code_filter: { comparison: { op: GE, value: { default_value: 500, "
             "runtime_key: a } } } },"
             " { runtime_filter: { runtime_key: r, use_independent_randomness: true } } ] }");
    random_calls = 0;
    fixed_random_value = 7;
    assert_true(eval(and_f, &si));
    assert_int_equal(random_calls, 1); /* the second filter ran */
    random_calls = 0;
    assert_true(eval(or_f, &si));
    assert_int_equal(random_calls, 0); /* stopped at the first true */
    si.response_code = 200;
    assert_false(eval(and_f, &si));
    assert_int_equal(random_calls, 0); /* stopped at the first false */
    assert_false(eval(or_f, &si));     /* 0% sampled */
    assert_int_equal(random_calls, 1);
    sharp_alf_free(and_f);
    sharp_alf_free(or_f);
}

static void runtime_filter_uses_request_id(void **state)
{
    (void)state;
    sharp_headers_t req;
    sharp_headers_init(&req);
    sharp_stream_info_t si = {.request_headers = &req};
    sharp_alf_t *half = must("runtime_filter: { runtime_key: r, percent_sampled: { numerator: 50, "
                             "denominator: HUNDRED } }");
    sharp_alf_t *indep =
        must("runtime_filter: { runtime_key: r, percent_sampled: { numerator: 50 },"
             " use_independent_randomness: true }");
    sharp_alf_t *million = must("runtime_filter: { runtime_key: r, percent_sampled: { numerator: "
                                "10, denominator: MILLION } }");
    /* 0x31 = 49 -> 49 % 100 < 50 */
    sharp_headers_add_cstr(&req, "x-request-id", "00000031-aaaa-4bbb-8ccc-dddddddddddd");
    random_calls = 0;
    fixed_random_value = 99;
    assert_true(eval(half, &si));
    assert_int_equal(random_calls, 0);
    /* independent randomness ignores the id: 99 % 100 >= 50 */
    assert_false(eval(indep, &si));
    assert_int_equal(random_calls, 1);
    /* 0x31 % 1000000 = 49 >= 10 */
    assert_false(eval(million, &si));
    sharp_headers_set_cstr(&req, "x-request-id", "00000009-aaaa");
    assert_true(eval(million, &si));
    /* 0x32 = 50 -> not sampled */
    sharp_headers_set_cstr(&req, "x-request-id", "00000032-aaaa-4bbb-8ccc-dddddddddddd");
    assert_false(eval(half, &si));
    /* not hex, or too short: a random number decides */
    random_calls = 0;
    fixed_random_value = 3;
    sharp_headers_set_cstr(&req, "x-request-id", "zzzzzzzz-1");
    assert_true(eval(half, &si));
    sharp_headers_set_cstr(&req, "x-request-id", "1234");
    assert_true(eval(half, &si));
    assert_int_equal(random_calls, 2);
    sharp_alf_free(half);
    sharp_alf_free(indep);
    sharp_alf_free(million);
    sharp_headers_free(&req);
}

static void bad_filters_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *expect;
    } cases[] = {
        {"{}", "filter: one of the filter kinds"},
        {"and_filter: { filters: [ { not_health_check_filter: {} } ] }",
         "filter.and_filter.filters: needs at least 2"},
        {"or_filter: { filters: [ { not_health_check_filter: {} }, {} ] }",
         "filter.or_filter.filters[1]: one of"},
        {"response_flag_filter: { flags: [UH, BOGUS] }",
         "flags[1]: unknown response flag \"BOGUS\""},
        {"status_code_filter: {}", "status_code_filter.comparison: is required"},
        {"header_filter: {}", "header_filter.header: is required"},
        {"traceable_filter: {}", "not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        sharp_alf_t *f = filter_from(cases[i].yaml, err, sizeof err);
        if (f) fail_msg("accepted: %s", cases[i].yaml);
        if (!strstr(err, cases[i].expect)) fail_msg("%s: got \"%s\"", cases[i].yaml, err);
    }
}

/* ---- local reply rewrite ---- */

static sharp_local_reply_t *local_reply_from(const char *yaml)
{
    sharp_config_error_t e = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(
        yaml, strlen(yaml), "lr.yaml",
        &envoy__extensions__filters__network__http_connection_manager__v3__local_reply_config__descriptor,
        &e);
    if (!d) fail_msg("%s", e.msg);
    char err[512] = "";
    sharp_local_reply_t *lr =
        sharp_config_local_reply((const void *)sharp_config_doc_message(d), err, sizeof err);
    sharp_config_doc_free(d);
    if (!lr) fail_msg("%s", err);
    return lr;
}

static void local_reply_first_matching_mapper_wins(void **state)
{
    (void)state;
    sharp_local_reply_t *lr = local_reply_from(
        "mappers:\n"
        "- filter: { status_code_filter: { comparison: { op: EQ, value: { default_value: 404, "
        "runtime_key: a } } } }\n"
        "  status_code: 410\n"
        "  body: { inline_string: gone }\n"
        "  headers_to_add: [ { header: { key: x-was, value: \"%RESPONSE_CODE%\" } } ]\n"
        "- filter: { status_code_filter: { comparison: { op: GE, value: { default_value: 400, "
        "runtime_key: b } } } }\n"
        "  body: { inline_string: second }\n"
        "body_format: { text_format: \"%RESPONSE_CODE%:%LOCAL_REPLY_BODY%\" }\n");
    sharp_stream_info_t si = {0};
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_sbuf_t body = {0};
    uint32_t code = 404;
    const char *ct = NULL;
    sharp_local_reply_rewrite(lr, &si, &resp, &code, &body, &ct, fixed_random, NULL);
    assert_int_equal(code, 410);
    assert_int_equal(si.response_code, 410);
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(&resp, ":status", &v));
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.p, "410", 3);
    /* headers_to_add is evaluated before the status rewrite, as in Envoy */
    assert_true(sharp_headers_get_cstr(&resp, "x-was", &v));
    assert_memory_equal(v.p, "404", 3);
    assert_int_equal(body.len, strlen("410:gone"));
    assert_memory_equal(body.data, "410:gone", body.len);
    assert_string_equal(ct, "text/plain");
    assert_null(si.local_reply_body);

    sharp_headers_clear(&resp);
    sharp_sbuf_reset(&body);
    sharp_sbuf_append(&body, "orig", 4);
    code = 503;
    sharp_local_reply_rewrite(lr, &si, &resp, &code, &body, &ct, fixed_random, NULL);
    assert_int_equal(code, 503);
    assert_int_equal(body.len, strlen("503:second"));
    assert_memory_equal(body.data, "503:second", body.len);

    /* nothing matches: only the body format applies */
    sharp_headers_clear(&resp);
    sharp_sbuf_reset(&body);
    sharp_sbuf_append(&body, "orig", 4);
    code = 200;
    sharp_local_reply_rewrite(lr, &si, &resp, &code, &body, &ct, fixed_random, NULL);
    assert_int_equal(body.len, strlen("200:orig"));
    assert_memory_equal(body.data, "200:orig", body.len);
    sharp_sbuf_free(&body);
    sharp_headers_free(&resp);
    sharp_local_reply_free(lr);
}

static void local_reply_json_override_and_default(void **state)
{
    (void)state;
    sharp_local_reply_t *lr = local_reply_from(
        "mappers:\n"
        "- filter: { not_health_check_filter: {} }\n"
        "  body_format_override: { json_format: { m: \"%LOCAL_REPLY_BODY%\", c: "
        "\"%RESPONSE_CODE%\","
        " x: \"%REQ(x-none)%\", y: \"a%REQ(x-none)%\", z: \"%REQ(x-none)%%REQ(x-none)%\" },"
        " omit_empty_values: true }\n");
    sharp_stream_info_t si = {0};
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_sbuf_t body = {0};
    sharp_sbuf_append(&body, "say \"hi\"", 8);
    uint32_t code = 429;
    const char *ct = NULL;
    sharp_local_reply_rewrite(lr, &si, &resp, &code, &body, &ct, fixed_random, NULL);
    /* only a missing single operator (null) is left out; text pieces render "" */
    const char *want = "{\"c\":429,\"m\":\"say \\\"hi\\\"\",\"y\":\"a\",\"z\":\"\"}\n";
    assert_int_equal(body.len, strlen(want));
    assert_memory_equal(body.data, want, body.len);
    assert_string_equal(ct, "application/json");
    sharp_local_reply_free(lr);

    /* no local_reply_config: the body is left alone, text/plain */
    sharp_headers_clear(&resp);
    code = 503;
    sharp_local_reply_rewrite(NULL, &si, &resp, &code, &body, &ct, fixed_random, NULL);
    assert_int_equal(body.len, strlen(want));
    assert_string_equal(ct, "text/plain");
    assert_int_equal(si.response_code, 503);
    sharp_sbuf_free(&body);
    sharp_headers_free(&resp);
}

static void local_reply_nested_json_format(void **state)
{
    (void)state;
    sharp_local_reply_t *lr = local_reply_from(
        "body_format:\n"
        "  json_format:\n"
        "    v: 2\n"
        "    error:\n"
        "      msg: \"%LOCAL_REPLY_BODY%\"\n"
        "      code: \"%RESPONSE_CODE%\"\n"
        "      tags: [ a, \"%RESPONSE_CODE%\", 1.5, { k: \"%REQ(x-none)%\" }, -0.1 ]\n");
    sharp_stream_info_t si = {0};
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_sbuf_t body = {0};
    sharp_sbuf_append(&body, "boom", 4);
    uint32_t code = 503;
    const char *ct = NULL;
    sharp_local_reply_rewrite(lr, &si, &resp, &code, &body, &ct, fixed_random, NULL);
    const char *want = "{\"error\":{\"code\":503,\"msg\":\"boom\",\"tags\":[\"a\",503,1.5,{\"k\":"
                       "null},-0.1]},\"v\":2}\n";
    assert_string_equal(sharp_sbuf_cstr(&body), want);
    assert_string_equal(ct, "application/json");
    sharp_sbuf_free(&body);
    sharp_headers_free(&resp);
    sharp_local_reply_free(lr);

    /* bools have no format meaning: Envoy's error */
    sharp_config_error_t e = {{0}};
    const char *bad = "body_format: { json_format: { a: { b: [ \"x\", true ] } } }\n";
    sharp_config_doc_t *d = sharp_config_parse(
        bad, strlen(bad), "lr.yaml",
        &envoy__extensions__filters__network__http_connection_manager__v3__local_reply_config__descriptor,
        &e);
    assert_non_null(d);
    char err[512] = "";
    assert_null(
        sharp_config_local_reply((const void *)sharp_config_doc_message(d), err, sizeof err));
    sharp_config_doc_free(d);
    assert_non_null(strstr(
        err, "json_format.a.b[1]: Only string values, nested structs, list values and number"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_code_filter),
        cmocka_unit_test(duration_filter),
        cmocka_unit_test(not_health_check_and_response_flags),
        cmocka_unit_test(header_filter_reads_request_headers),
        cmocka_unit_test(and_or_short_circuit),
        cmocka_unit_test(runtime_filter_uses_request_id),
        cmocka_unit_test(bad_filters_are_refused),
        cmocka_unit_test(local_reply_first_matching_mapper_wins),
        cmocka_unit_test(local_reply_json_override_and_default),
        cmocka_unit_test(local_reply_nested_json_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_tracing.c: Envoy's tracing decision in x-request-id, B3 context
 * extraction (multi-header and single b3, malformed values), Zipkin spans,
 * B3 injection and the Zipkin v2 JSON of a span (escaping); W3C
 * traceparent parsing (malformed values) and formatting, OpenTelemetry
 * spans, their attributes and status, and their OTLP encoding; SkyWalking's
 * sw8 (parsing as cpp2sky, malformed values, base64), segments, their tags
 * and their SegmentObject encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http/tracing.h"
#include "http/skywalking.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "skywalking/v3/tracing.pb-c.h"

static sharp_headers_t H;

static sharp_headers_t *hdrs(const char *const *kv)
{
    sharp_headers_free(&H);
    sharp_headers_init(&H);
    for (size_t i = 0; kv && kv[i]; i += 2) sharp_headers_add_cstr(&H, kv[i], kv[i + 1]);
    return &H;
}

#define HDRS(...) hdrs((const char *const[]){__VA_ARGS__, NULL})

/* ---- x-request-id ---- */

static void request_id_reason(void **state)
{
    (void)state;
    char rid[] = "0000000a-0000-4000-8000-000000000000";
    assert_int_equal(sharp_request_id_reason(rid, 36), SHARP_TRACE_NOT_TRACEABLE);
    sharp_request_id_set_reason(rid, 36, SHARP_TRACE_SAMPLING);
    assert_int_equal(rid[14], '9');
    assert_int_equal(sharp_request_id_reason(rid, 36), SHARP_TRACE_SAMPLING);
    sharp_request_id_set_reason(rid, 36, SHARP_TRACE_SERVICE_FORCED);
    assert_int_equal(sharp_request_id_reason(rid, 36), SHARP_TRACE_SERVICE_FORCED);
    sharp_request_id_set_reason(rid, 36, SHARP_TRACE_CLIENT_FORCED);
    assert_int_equal(rid[14], 'b');
    sharp_request_id_set_reason(rid, 36, SHARP_TRACE_NOT_TRACEABLE);
    assert_int_equal(rid[14], '4');
    /* not a UUID: no reason read, none written */
    char short_id[] = "abc-9";
    assert_int_equal(sharp_request_id_reason(short_id, 5), SHARP_TRACE_NOT_TRACEABLE);
    sharp_request_id_set_reason(short_id, 5, SHARP_TRACE_SAMPLING);
    assert_string_equal(short_id, "abc-9");
    uint64_t v;
    assert_true(sharp_request_id_integer(rid, 36, &v));
    assert_int_equal(v, 10);
    assert_false(sharp_request_id_integer("0000000", 7, &v));
    assert_false(sharp_request_id_integer("zzzzzzzz-", 9, &v));
}

static sharp_trace_sampling_t cfg(uint32_t client, uint32_t random, uint32_t overall)
{
    return (sharp_trace_sampling_t){client, 100, random, 10000, overall, 10000};
}

static sharp_trace_reason_t decide(const sharp_trace_sampling_t *tc, char *rid, bool client, bool force, bool *d)
{
    sharp_trace_inputs_t in = {.client_trace_id = client, .force_trace = force, .client_random = 0};
    return sharp_tracing_decide(tc, rid, rid ? strlen(rid) : 0, &in, d);
}

static void decision(void **state)
{
    (void)state;
    bool d;
    sharp_trace_sampling_t all = cfg(100, 10000, 10000), none = cfg(100, 0, 10000);
    char rid[] = "00000064-0000-4000-8000-000000000000"; /* 0x64 = 100: result 100 */
    assert_int_equal(decide(&all, rid, false, false, &d), SHARP_TRACE_SAMPLING);
    assert_true(d);
    assert_int_equal(rid[14], '9');
    /* an id already carrying a decision keeps it */
    assert_int_equal(decide(&none, rid, false, false, &d), SHARP_TRACE_SAMPLING);
    assert_int_equal(rid[14], '9');
    rid[14] = '4';
    assert_int_equal(decide(&none, rid, false, false, &d), SHARP_TRACE_NOT_TRACEABLE);
    assert_int_equal(rid[14], '4');
    /* random_sampling is out of 10000, drawn from the id: 100 < 101 */
    sharp_trace_sampling_t r100 = cfg(100, 100, 10000), r101 = cfg(100, 101, 10000);
    assert_int_equal(decide(&r100, rid, false, false, &d), SHARP_TRACE_NOT_TRACEABLE);
    assert_int_equal(decide(&r101, rid, false, false, &d), SHARP_TRACE_SAMPLING);
    rid[14] = '4';
    /* x-client-trace-id first, then x-envoy-force-trace */
    assert_int_equal(decide(&none, rid, true, true, &d), SHARP_TRACE_CLIENT_FORCED);
    assert_int_equal(rid[14], 'b');
    rid[14] = '4';
    sharp_trace_sampling_t noclient = cfg(0, 0, 10000);
    assert_int_equal(decide(&noclient, rid, true, true, &d), SHARP_TRACE_SERVICE_FORCED);
    assert_int_equal(rid[14], 'a');
    /* overall_sampling vetoes every reason, forced ones too */
    sharp_trace_sampling_t veto = cfg(100, 10000, 0);
    assert_int_equal(decide(&veto, rid, false, false, &d), SHARP_TRACE_NOT_TRACEABLE);
    assert_int_equal(rid[14], '4');
    assert_int_equal(decide(&veto, rid, true, false, &d), SHARP_TRACE_NOT_TRACEABLE);
    assert_int_equal(rid[14], '4');
    /* no id, or one that is not hex: no decision */
    assert_int_equal(decide(&all, NULL, true, true, &d), SHARP_TRACE_NOT_TRACEABLE);
    assert_false(d);
    char bad[] = "not-a-hex-request-id";
    assert_int_equal(decide(&all, bad, false, true, &d), SHARP_TRACE_NOT_TRACEABLE);
    assert_false(d);
    /* any id with 8 hex digits is decided, even if it cannot carry the reason */
    char other[] = "0000000100";
    assert_int_equal(decide(&all, other, false, false, &d), SHARP_TRACE_SAMPLING);
    assert_true(d);
    assert_string_equal(other, "0000000100");
    /* a route's fractions: any denominator (random is the id modulo 10000) */
    sharp_trace_sampling_t route = {100, 100, 101, 1000000, 100, 100};
    rid[14] = '4';
    assert_int_equal(decide(&route, rid, false, false, &d), SHARP_TRACE_SAMPLING);
    route.random_num = 100;
    rid[14] = '4';
    assert_int_equal(decide(&route, rid, false, false, &d), SHARP_TRACE_NOT_TRACEABLE);
}

/* ---- B3 ---- */

static void b3_sampled(void **state)
{
    (void)state;
    assert_int_equal(sharp_b3_sampled(HDRS("x-b3-sampled", "1")), 1);
    assert_int_equal(sharp_b3_sampled(HDRS("x-b3-sampled", "true")), 1);
    assert_int_equal(sharp_b3_sampled(HDRS("x-b3-sampled", "0")), 0);
    assert_int_equal(sharp_b3_sampled(HDRS("x-b3-sampled", "yes")), 0);
    assert_int_equal(sharp_b3_sampled(HDRS("x-b3-flags", "1")), -1); /* flags are not read, as in Envoy */
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "0")), 0);
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "d")), 1);
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "x")), -1);
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-0")), 0);
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")), 1);
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1")), -1);
    /* b3 wins over x-b3-sampled */
    assert_int_equal(sharp_b3_sampled(HDRS("b3", "0", "x-b3-sampled", "1")), 0);
    assert_int_equal(sharp_b3_sampled(HDRS("user-agent", "x")), -1);
}

static void expect_ctx(const sharp_headers_t *h, uint64_t hi, uint64_t lo, uint64_t span, uint64_t parent)
{
    sharp_b3_context_t c;
    const char *why = NULL;
    assert_int_equal(sharp_b3_extract(h, true, &c, &why), 1);
    assert_true(c.trace_hi == hi && c.trace_lo == lo && c.span_id == span && c.parent_id == parent);
    assert_true(c.sampled);
}

static void expect_bad(const sharp_headers_t *h)
{
    sharp_b3_context_t c;
    const char *why = NULL;
    assert_int_equal(sharp_b3_extract(h, true, &c, &why), -1);
    assert_non_null(why);
}

static void b3_multi(void **state)
{
    (void)state;
    expect_ctx(HDRS("x-b3-traceid", "463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312"), 0, 0x463ac35c9f6413adull,
               0xa2fb4a1d1a96d312ull, 0);
    expect_ctx(HDRS("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124", "x-b3-spanid", "A2FB4A1D1A96D312",
                    "x-b3-parentspanid", "0020000000000001"),
               0x463ac35c9f6413adull, 0x48485a3953bb6124ull, 0xa2fb4a1d1a96d312ull, 0x20000000000001ull);
    expect_ctx(HDRS("x-b3-traceid", "1", "x-b3-spanid", "2", "x-b3-parentspanid", ""), 0, 1, 2, 0);
    /* no context without both ids */
    sharp_b3_context_t c;
    assert_int_equal(sharp_b3_extract(HDRS("x-b3-traceid", "1"), true, &c, NULL), 0);
    assert_int_equal(sharp_b3_extract(HDRS("x-b3-spanid", "1"), true, &c, NULL), 0);
    expect_bad(HDRS("x-b3-traceid", "xyz", "x-b3-spanid", "1"));
    expect_bad(HDRS("x-b3-traceid", "", "x-b3-spanid", "1"));
    expect_bad(HDRS("x-b3-traceid", "11112222333344445", "x-b3-spanid", "1")); /* 17 digits */
    expect_bad(HDRS("x-b3-traceid", "463ac35c9f6413ad48485a3953bb612g", "x-b3-spanid", "1"));
    expect_bad(HDRS("x-b3-traceid", "1", "x-b3-spanid", "-1"));
    expect_bad(HDRS("x-b3-traceid", "1", "x-b3-spanid", "2", "x-b3-parentspanid", "0x3"));
}

static void b3_single(void **state)
{
    (void)state;
    expect_ctx(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1"), 0, 0x80f198ee56343ba8ull, 0xe457b5a2e4d86bd1ull, 0);
    expect_ctx(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1"), 0, 0x80f198ee56343ba8ull, 0xe457b5a2e4d86bd1ull, 0);
    expect_ctx(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90"), 0, 0x80f198ee56343ba8ull,
               0xe457b5a2e4d86bd1ull, 0x05e3ac9a4f6e3b90ull);
    expect_ctx(HDRS("b3", "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90"),
               0x463ac35c9f6413adull, 0x48485a3953bb6124ull, 0xe457b5a2e4d86bd1ull, 0x05e3ac9a4f6e3b90ull);
    /* the single header wins over x-b3-* */
    expect_ctx(HDRS("b3", "0000000000000001-0000000000000002", "x-b3-traceid", "9", "x-b3-spanid", "9"), 0, 1, 2, 0);
    sharp_b3_context_t c;
    assert_int_equal(sharp_b3_extract(HDRS("b3", "1"), true, &c, NULL), 0); /* a sampling decision only */
    assert_int_equal(sharp_b3_extract(HDRS("b3", "d"), true, &c, NULL), 0);
    expect_bad(HDRS("b3", ""));
    expect_bad(HDRS("b3", "x"));
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd")); /* truncated */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-00000")); /* too long */
    expect_bad(HDRS("b3", "80f198ee56343ba8+e457b5a2e4d86bd1"));                        /* no span id */
    expect_bad(HDRS("b3", "80f198ee56343bz8-e457b5a2e4d86bd1"));                        /* bad trace id */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bq1"));                        /* bad span id */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-"));                       /* truncated */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1+1"));                      /* no sampling field */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-x"));                      /* bad flag */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-11"));                     /* truncated */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9"));      /* short parent */
    expect_bad(HDRS("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3bxx"));     /* bad parent */
}

/* ---- spans ---- */

static uint64_t counter(void *arg)
{
    return ++*(uint64_t *)arg;
}

static void span_kinds(void **state)
{
    (void)state;
    sharp_zipkin_config_t z = {.shared_span_context = true};
    sharp_tracing_config_t tc = {.zipkin = &z};
    sharp_b3_context_t ctx = {.trace_lo = 0x10, .span_id = 0x20, .parent_id = 0x30, .sampled = true};
    uint64_t n = 100;
    sharp_span_t sp;
    /* ingress with a context, shared: the caller's span id and parent */
    sharp_span_start(&sp, &tc, &ctx, true, "h", 1, 0, 0, counter, &n);
    assert_true(sp.server && sp.id == 0x20 && sp.has_parent && sp.parent_id == 0x30 && sp.trace_lo == 0x10);
    sharp_span_free(&sp);
    /* not shared: a CLIENT child of the caller's span */
    z.shared_span_context = false;
    sharp_span_start(&sp, &tc, &ctx, true, "h", 1, 0, 0, counter, &n);
    assert_true(!sp.server && sp.id == 101 && sp.has_parent && sp.parent_id == 0x20);
    sharp_span_free(&sp);
    /* egress: a child too */
    z.shared_span_context = true;
    tc.egress = true;
    sharp_span_start(&sp, &tc, &ctx, true, "h", 1, 0, 0, counter, &n);
    assert_true(!sp.server && sp.id == 102 && sp.parent_id == 0x20);
    sharp_span_free(&sp);
    /* a root: the span id is the trace id; 128-bit adds the high half */
    z.trace_id_128bit = true;
    tc.egress = false;
    sharp_span_start(&sp, &tc, NULL, false, "h", 1, 0, 0, counter, &n);
    assert_true(sp.server && !sp.has_parent && sp.id == 103 && sp.trace_lo == 103 && sp.trace_hi == 104);
    assert_false(sp.sampled);
    sharp_headers_t *h = HDRS("x-b3-parentspanid", "old");
    sharp_span_inject(&sp, h);
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(h, "x-b3-traceid", &v));
    assert_int_equal(v.len, 32);
    assert_memory_equal(v.p, "00000000000000680000000000000067", 32);
    assert_true(sharp_headers_get_cstr(h, "x-b3-spanid", &v));
    assert_memory_equal(v.p, "0000000000000067", 16);
    assert_true(sharp_headers_get_cstr(h, "x-b3-sampled", &v));
    assert_memory_equal(v.p, "0", 1);
    /* with no parent, the caller's x-b3-parentspanid is left as it came */
    assert_true(sharp_headers_get_cstr(h, "x-b3-parentspanid", &v));
    assert_memory_equal(v.p, "old", 3);
    sharp_span_free(&sp);
}

static void expect_json(const char *in, size_t n, const char *want)
{
    sharp_sbuf_t b = {0};
    sharp_json_string(&b, in, n);
    if (b.len != strlen(want)) print_error("got %.*s for %s\n", (int)b.len, b.data, want);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    sharp_sbuf_free(&b);
}

static void json_escaping(void **state)
{
    (void)state;
    expect_json("plain", 5, "\"plain\"");
    expect_json("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    expect_json("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    expect_json("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\"");
    expect_json("a\0b", 3, "\"a\\u0000b\"");
    expect_json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    /* a sequence cut short */
    expect_json("\xf0\x9f\x98", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    expect_json("\xff", 1, "\"\\ufffd\"");
    expect_json("\xc3", 1, "\"\\ufffd\"");                /* truncated sequence */
    expect_json("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");      /* overlong */
    expect_json("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* a surrogate */
    expect_json("", 0, "\"\"");
}

static void span_json(void **state)
{
    (void)state;
    sharp_zipkin_config_t z = {.shared_span_context = true};
    sharp_tracing_config_t tc = {.zipkin = &z};
    sharp_b3_context_t ctx = {.trace_hi = 1, .trace_lo = 2, .span_id = 3, .parent_id = 4, .sampled = true};
    uint64_t n = 0;
    sharp_span_t sp;
    sharp_span_start(&sp, &tc, &ctx, true, "host", 4, 1700000000000000ull, 5, counter, &n);
    sharp_span_set_name(&sp, "op \"x\"", 6);
    sharp_span_tag_cstr(&sp, "component", "proxy");
    sharp_span_tag_cstr(&sp, "zone", ""); /* empty: not kept */
    sharp_span_tag_cstr(&sp, "user_agent", "a\\b");
    sharp_span_tag_cstr(&sp, "error", "true");
    sharp_span_tag_cstr(&sp, "error", "false"); /* a later tag of a key replaces the earlier */
    assert_true(sharp_span_has_tag(&sp, "error"));
    assert_false(sharp_span_has_tag(&sp, "zone"));
    sharp_sbuf_t b = {0};
    sharp_span_json(&sp, 1700000000000042ull, 42, "10.0.0.1", "front", true, &b);
    const char *want = "{\"traceId\":\"00000000000000010000000000000002\",\"parentId\":\"0000000000000004\","
                       "\"id\":\"0000000000000003\",\"kind\":\"SERVER\",\"name\":\"op \\\"x\\\"\","
                       "\"timestamp\":1700000000000000,\"duration\":42,"
                       "\"localEndpoint\":{\"ipv4\":\"10.0.0.1\",\"port\":0,\"serviceName\":\"front\"},"
                       "\"tags\":{\"component\":\"proxy\",\"user_agent\":\"a\\\\b\",\"error\":\"false\"},\"shared\":true,"
                       "\"annotations\":[{\"timestamp\":1700000000000042,\"value\":\"ss\"}]}";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    sharp_sbuf_free(&b);
    sharp_span_free(&sp);
    /* a CLIENT root span: no parent, no shared, no tags, an IPv6 endpoint */
    tc.egress = true;
    sharp_span_start(&sp, &tc, NULL, true, "", 0, 7, 0, counter, &n);
    sharp_span_json(&sp, 9, 0, "::1", "", true, &b);
    want = "{\"traceId\":\"0000000000000001\",\"id\":\"0000000000000001\",\"kind\":\"CLIENT\","
           "\"timestamp\":7,\"duration\":0,\"localEndpoint\":{\"ipv6\":\"::1\",\"port\":0},"
           "\"annotations\":[{\"timestamp\":9,\"value\":\"cr\"}]}";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    sharp_sbuf_free(&b);
    sharp_span_free(&sp);
}

/* ---- W3C trace context and OpenTelemetry spans ---- */

static int tp(const char *v, sharp_w3c_context_t *c, const char **why)
{
    return sharp_traceparent_parse(v, strlen(v), c, why);
}

static void traceparent_parse(void **state)
{
    (void)state;
    sharp_w3c_context_t c;
    const char *why = "";
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c, &why), 0);
    assert_true(c.trace_hi == 0x0af7651916cd43ddULL && c.trace_lo == 0x8448eb211c80319cULL);
    assert_true(c.parent_id == 0xb7ad6b7169203331ULL);
    assert_true(c.sampled);
    /* flags: bit 0 only; upper case hex and another version are accepted, as Envoy */
    assert_int_equal(tp("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-02", &c, &why), 0);
    assert_false(c.sampled);
    assert_int_equal(tp("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", &c, &why), 0);
    assert_true(c.sampled);
    /* malformed */
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0", &c, &why), -1);
    assert_string_equal(why, "invalid traceparent header length");
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-011", &c, &why), -1);
    assert_int_equal(tp("", &c, &why), -1);
    assert_int_equal(tp("00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c, &why), -1);
    assert_string_equal(why, "invalid traceparent hyphenation");
    assert_int_equal(tp("000-af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c, &why), -1);
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", &c, &why), -1);
    assert_string_equal(why, "invalid traceparent header hex");
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333x-01", &c, &why), -1);
    assert_int_equal(tp("0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &c, &why), -1);
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz", &c, &why), -1);
    assert_int_equal(tp("00-00000000000000000000000000000000-b7ad6b7169203331-01", &c, &why), -1);
    assert_string_equal(why, "invalid trace id");
    assert_int_equal(tp("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", &c, &why), -1);
    assert_string_equal(why, "invalid parent id");
}

static void traceparent_format(void **state)
{
    (void)state;
    char out[56];
    sharp_traceparent_format(0x0af7651916cd43ddULL, 0x8448eb211c80319cULL, 1, true, out);
    assert_string_equal(out, "00-0af7651916cd43dd8448eb211c80319c-0000000000000001-01");
    sharp_traceparent_format(0, 2, 0xffffffffffffffffULL, false, out);
    assert_string_equal(out, "00-00000000000000000000000000000002-ffffffffffffffff-00");
    sharp_w3c_context_t c;
    assert_int_equal(sharp_traceparent_parse(out, 55, &c, NULL), 0);
    assert_true(c.trace_lo == 2 && c.parent_id == 0xffffffffffffffffULL && !c.sampled);
}

static void otel_span(void **state)
{
    (void)state;
    uint64_t n = 0;
    sharp_span_t sp;
    /* a new trace: random 128-bit trace id and span id, no parent */
    sharp_span_start_otel(&sp, false, NULL, NULL, 0, true, "ingress", 7, 1, 0, counter, &n);
    assert_true(sp.otel && sp.server && sp.sampled && !sp.has_parent);
    assert_true(sp.trace_hi == 1 && sp.trace_lo == 2 && sp.id == 3);
    sharp_span_inject_w3c(&sp, HDRS("x", "y"));
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(&H, "traceparent", &v));
    assert_int_equal(v.len, 55);
    assert_memory_equal(v.p, "00-00000000000000010000000000000002-0000000000000003-01", 55);
    assert_false(sharp_headers_get_cstr(&H, "tracestate", &v));
    /* attributes: empty values kept, a key set again replaced; 4xx is no
     * error on a SERVER span, 5xx is */
    sharp_span_tag_cstr(&sp, "a", "1");
    sharp_span_tag(&sp, "empty", "", 0);
    sharp_span_tag(&sp, "", "x", 1);
    sharp_span_tag_cstr(&sp, "a", "2");
    assert_int_equal(sp.nattrs, 2);
    assert_string_equal(sp.avals[0], "2");
    assert_true(sharp_span_has_tag(&sp, "empty"));
    sharp_span_tag_cstr(&sp, "http.status_code", "404");
    assert_false(sp.status_error);
    sharp_span_tag_cstr(&sp, "http.status_code", "503");
    assert_true(sp.status_error);
    sharp_span_tag_cstr(&sp, "http.status_code", "5x3");
    assert_true(sp.status_error);
    /* grpc.status_code sets the status either way (SERVER: 5 is no error) */
    sharp_span_tag_cstr(&sp, "grpc.status_code", "5");
    assert_false(sp.status_error);
    sharp_span_tag_cstr(&sp, "grpc.status_code", "14");
    assert_true(sp.status_error);
    sharp_span_tag_cstr(&sp, "grpc.status_code", "x");
    assert_false(sp.status_error);
    sharp_span_free(&sp);
    /* a child of the caller's span: its trace, its flags, its tracestate */
    sharp_w3c_context_t c = {.trace_hi = 7, .trace_lo = 8, .parent_id = 9, .sampled = false};
    sharp_span_start_otel(&sp, true, &c, "k=v", 3, true, "egress h", 8, 1, 0, counter, &n);
    assert_true(!sp.server && !sp.sampled && sp.has_parent && sp.parent_id == 9 && sp.trace_lo == 8 && sp.id == 4);
    sharp_span_tag_cstr(&sp, "http.status_code", "404");
    assert_true(sp.status_error); /* a CLIENT span: 4xx is an error */
    sharp_span_tag_cstr(&sp, "grpc.status_code", "0");
    assert_false(sp.status_error);
    sharp_span_tag_cstr(&sp, "grpc.status_code", "5");
    assert_true(sp.status_error); /* a CLIENT span: any status but OK */
    sharp_span_inject_w3c(&sp, HDRS("traceparent", "old"));
    assert_true(sharp_headers_get_cstr(&H, "traceparent", &v));
    assert_memory_equal(v.p, "00-00000000000000070000000000000008-0000000000000004-00", 55);
    assert_true(sharp_headers_get_cstr(&H, "tracestate", &v));
    assert_int_equal(v.len, 3);
    sharp_span_free(&sp);
}

static void otlp_encoding(void **state)
{
    (void)state;
    uint64_t n = 0;
    sharp_span_t sp;
    sharp_w3c_context_t c = {.trace_hi = 0x0102030405060708ULL, .trace_lo = 0x090a0b0c0d0e0f10ULL, .parent_id = 0x2a,
                             .sampled = true};
    sharp_span_start_otel(&sp, true, &c, "s", 1, true, "op", 2, 1, 0, counter, &n);
    sharp_span_tag_cstr(&sp, "k", "v");
    sharp_span_tag_cstr(&sp, "http.status_code", "500");
    sharp_sbuf_t b = {0};
    sharp_span_otlp(&sp, 0x100, &b);
    static const unsigned char want[] = {
        0x0a, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, /* trace_id */
        0x12, 8, 0, 0, 0, 0, 0, 0, 0, 1,                                 /* span_id */
        0x1a, 1, 's',                                                    /* trace_state */
        0x22, 8, 0, 0, 0, 0, 0, 0, 0, 0x2a,                              /* parent_span_id */
        0x2a, 2, 'o', 'p',                                               /* name */
        0x30, 3,                                                         /* kind CLIENT */
        0x39, 0xe8, 3, 0, 0, 0, 0, 0, 0,                                 /* start: 1 us */
        0x41, 0, 1, 0, 0, 0, 0, 0, 0,                                    /* end */
        0x4a, 8, 0x0a, 1, 'k', 0x12, 3, 0x0a, 1, 'v',                    /* attributes */
        0x4a, 25, 0x0a, 16, 'h', 't', 't', 'p', '.', 's', 't', 'a', 't', 'u', 's', '_', 'c', 'o', 'd', 'e', 0x12,
        5, 0x0a, 3, '5', '0', '0',
        0x7a, 2, 0x18, 2, /* status: STATUS_CODE_ERROR */
    };
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    /* the request around it */
    sharp_sbuf_t spans = {0}, req = {0};
    sharp_otlp_frame_span(&spans, "", 0);
    sharp_otlp_request("svc", spans.data, spans.len, &req);
    static const unsigned char want_req[] = {
        0x0a, 38,                   /* resource_spans */
        0x0a, 23, 0x0a, 21,         /* resource { attributes */
        0x0a, 12, 's', 'e', 'r', 'v', 'i', 'c', 'e', '.', 'n', 'a', 'm', 'e', 0x12, 5, 0x0a, 3, 's', 'v', 'c',
        0x12, 11,                   /* scope_spans */
        0x0a, 7, 0x0a, 5, 'e', 'n', 'v', 'o', 'y', /* scope { name } */
        0x12, 0,                    /* one (empty) span */
    };
    assert_int_equal(req.len, sizeof want_req);
    assert_memory_equal(req.data, want_req, sizeof want_req);
    sharp_sbuf_free(&spans);
    sharp_sbuf_free(&req);
    sharp_sbuf_free(&b);
    sharp_span_free(&sp);
}

/* The hand encoding read back by protobuf-c's code generated from OTLP's
 * protos. */
static void otlp_decodes(void **state)
{
    (void)state;
    uint64_t n = 100;
    sharp_span_t a, b;
    sharp_w3c_context_t c = {.trace_hi = 5, .trace_lo = 6, .parent_id = 7, .sampled = true};
    sharp_span_start_otel(&a, false, &c, "x=y", 3, true, "ingress", 7, 1000, 0, counter, &n);
    sharp_span_tag_cstr(&a, "http.method", "GET");
    sharp_span_tag_cstr(&a, "http.status_code", "502");
    sharp_span_start_otel(&b, true, NULL, NULL, 0, true, "egress h", 8, 2000, 0, counter, &n);
    sharp_sbuf_t sa = {0}, sb = {0}, spans = {0}, req = {0};
    sharp_span_otlp(&a, 5000000, &sa);
    sharp_span_otlp(&b, 6000000, &sb);
    sharp_otlp_frame_span(&spans, sa.data, sa.len);
    sharp_otlp_frame_span(&spans, sb.data, sb.len);
    sharp_otlp_request("svc", spans.data, spans.len, &req);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, req.len,
                                                                                          (const uint8_t *)req.data);
    assert_non_null(r);
    assert_int_equal(r->n_resource_spans, 1);
    const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = r->resource_spans[0];
    assert_int_equal(rs->resource->n_attributes, 1);
    assert_string_equal(rs->resource->attributes[0]->key, "service.name");
    assert_string_equal(rs->resource->attributes[0]->value->string_value, "svc");
    assert_int_equal(rs->n_scope_spans, 1);
    assert_string_equal(rs->scope_spans[0]->scope->name, "envoy");
    assert_int_equal(rs->scope_spans[0]->n_spans, 2);
    const Opentelemetry__Proto__Trace__V1__Span *x = rs->scope_spans[0]->spans[0];
    static const uint8_t tid[16] = {0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6};
    static const uint8_t pid[8] = {0, 0, 0, 0, 0, 0, 0, 7}, sid[8] = {0, 0, 0, 0, 0, 0, 0, 101};
    assert_int_equal(x->trace_id.len, 16);
    assert_memory_equal(x->trace_id.data, tid, 16);
    assert_int_equal(x->parent_span_id.len, 8);
    assert_memory_equal(x->parent_span_id.data, pid, 8);
    assert_memory_equal(x->span_id.data, sid, 8);
    assert_string_equal(x->trace_state, "x=y");
    assert_string_equal(x->name, "ingress");
    assert_int_equal(x->kind, OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER);
    assert_int_equal(x->start_time_unix_nano, 1000000);
    assert_int_equal(x->end_time_unix_nano, 5000000);
    assert_int_equal(x->n_attributes, 2);
    assert_string_equal(x->attributes[1]->key, "http.status_code");
    assert_string_equal(x->attributes[1]->value->string_value, "502");
    assert_non_null(x->status);
    assert_int_equal(x->status->code, OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR);
    const Opentelemetry__Proto__Trace__V1__Span *y = rs->scope_spans[0]->spans[1];
    assert_int_equal(y->kind, OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_CLIENT);
    assert_int_equal(y->parent_span_id.len, 0);
    assert_int_equal(y->trace_id.len, 16);
    assert_string_equal(y->name, "egress h");
    assert_string_equal(y->trace_state, "");
    assert_null(y->status);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(r, NULL);
    sharp_sbuf_free(&sa);
    sharp_sbuf_free(&sb);
    sharp_sbuf_free(&spans);
    sharp_sbuf_free(&req);
    sharp_span_free(&a);
    sharp_span_free(&b);
}

/* ---- SkyWalking ---- */

static void sw_base64(void **state)
{
    (void)state;
    sharp_sbuf_t b = {0};
    sharp_sw_base64(&b, "a", 1);
    sharp_sw_base64(&b, "-", 1);
    sharp_sw_base64(&b, "ab", 2);
    sharp_sw_base64(&b, "abc", 3);
    sharp_sbuf_append(&b, "", 1);
    assert_string_equal(b.data, "YQ==LQ==YWI=YWJj");
    sharp_sbuf_free(&b);
    const char *ok[][2] = {{"YQ==", "a"}, {"YQ", "a"}, {"YWI=", "ab"}, {"YWJj", "abc"}, {"", ""}, {"Lw==", "/"}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *d = sharp_sw_base64_decode(ok[i][0], strlen(ok[i][0]));
        assert_string_equal(d, ok[i][1]);
        free(d);
    }
    /* invalid: "" (cpp2sky's decodeWithoutPadding) */
    const char *bad[] = {"Y", "YR==", "YQ=a", "Y*Q=", "YQ===", "YWJjZ"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *d = sharp_sw_base64_decode(bad[i], strlen(bad[i]));
        assert_string_equal(d, "");
        free(d);
    }
}

static void sw8_parse(void **state)
{
    (void)state;
    sharp_sw8_t c;
    const char *why = NULL;
    const char *v = "1-dHJhY2U=-c2Vn-3-c3Zj-aW5zdA==-L2VwCg==-MTAuMC4wLjE6ODA=";
    assert_int_equal(sharp_sw8_parse(v, strlen(v), &c, &why), 0);
    assert_string_equal(c.trace_id, "trace");
    assert_string_equal(c.segment_id, "seg");
    assert_int_equal(c.span_id, 3);
    assert_string_equal(c.service, "svc");
    assert_string_equal(c.instance, "inst");
    assert_string_equal(c.endpoint, "/ep\n");
    assert_string_equal(c.target, "10.0.0.1:80");
    sharp_sw8_free(&c);
    /* sample 0 is accepted (and ignored); empty and invalid fields decode as
     * ""; the span id as std::stoi reads it */
    v = "0--!!-  +7x-a-b-c-d";
    assert_int_equal(sharp_sw8_parse(v, strlen(v), &c, &why), 0);
    assert_int_equal(c.span_id, 7);
    assert_string_equal(c.trace_id, "");
    assert_string_equal(c.segment_id, "");
    sharp_sw8_free(&c);
    const char *bad[] = {"", "1", "1-a-b-1-c-d-e", "1-a-b-1-c-d-e-f-g", "2-a-b-1-c-d-e-f", "10-a-b-1-c-d-e-f",
                         "-a-b-1-c-d-e-f", "1-a-b--c-d-e-f", "1-a-b-x-c-d-e-f", "1-a-b-99999999999-c-d-e-f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        assert_int_equal(sharp_sw8_parse(bad[i], strlen(bad[i]), &c, &why), -1);
        assert_non_null(why);
    }
}

static uint64_t counter_random(void *arg)
{
    uint64_t *n = arg;
    return ++*n * 0x9e3779b97f4a7c15ull;
}

static void sw_segment(void **state)
{
    (void)state;
    sharp_skywalking_config_t sc = {.service_name = "svc", .instance_name = "inst"};
    uint64_t n = 0;
    /* without a caller: a new trace (a UUID), an Entry span */
    sharp_span_t *e = sharp_sw_start(&sc, NULL, "/a?b", 4, true, 5000000, 0, counter_random, &n);
    sharp_sw_segment_t *seg = e->seg;
    assert_int_equal(strlen(seg->trace_id), 36);
    assert_int_equal(seg->trace_id[14], '4');
    assert_int_equal(strlen(seg->segment_id), 36);
    assert_string_not_equal(seg->trace_id, seg->segment_id);
    assert_int_equal(e->sw_id, 0);
    assert_int_equal(e->sw_parent, -1);
    /* the Entry span injects nothing (cpp2sky's createSW8HeaderValue) */
    sharp_sbuf_t v = {0};
    assert_false(sharp_sw8_format(seg, "h:1", 3, &v));
    /* the decorator does not rename it; tags are mapped and kept in order */
    sharp_span_set_name(e, "deco", 4);
    assert_string_equal(e->name, "/a?b");
    sharp_span_tag_cstr(e, "zone", "");
    sharp_span_tag_cstr(e, "http.url", "http://h/a?b");
    sharp_span_tag_cstr(e, "http.status_code", "503");
    sharp_span_tag_cstr(e, "peer.address", "10.1.1.1");
    sharp_span_tag_cstr(e, "error", "true");
    sharp_span_tag_cstr(e, "error", "true");
    assert_int_equal(e->nattrs, 5);
    assert_string_equal(e->akeys[1], "url");
    assert_string_equal(e->akeys[2], "status_code");
    assert_string_equal(e->peer, "10.1.1.1");
    assert_true(e->status_error);
    /* an Exit span: its context goes out */
    sharp_span_t *x = sharp_sw_exit_start(e, 6000000);
    assert_int_equal(x->sw_id, 1);
    assert_int_equal(x->sw_parent, 0);
    assert_string_equal(x->name, "/a?b");
    assert_true(sharp_sw8_format(seg, "10.0.0.2:80", 11, &v));
    sharp_sbuf_append(&v, "", 1);
    sharp_sw8_t c;
    const char *why;
    assert_int_equal(sharp_sw8_parse(v.data, v.len - 1, &c, &why), 0);
    assert_string_equal(c.trace_id, seg->trace_id);
    assert_string_equal(c.segment_id, seg->segment_id);
    assert_int_equal(c.span_id, 1);
    assert_string_equal(c.service, "svc");
    assert_string_equal(c.instance, "inst");
    assert_string_equal(c.endpoint, "/a?b");
    assert_string_equal(c.target, "10.0.0.2:80");
    assert_int_equal(v.data[0], '1');
    sharp_sbuf_free(&v);
    /* the segment is ready once both spans end, in any order */
    assert_false(sharp_sw_span_finish(e, 9000000));
    assert_false(sharp_sw_span_finish(e, 9000000));
    assert_true(sharp_sw_span_finish(x, 8000000));
    sharp_sw_segment_free(seg);
    /* a callee's segment: the caller's trace, its reference on every span */
    c.span_id = 4;
    e = sharp_sw_start(&sc, &c, "/b", 2, false, 1000, 0, counter_random, &n);
    seg = e->seg;
    assert_null(c.trace_id); /* moved into the segment */
    x = sharp_sw_exit_start(e, 2000);
    sharp_span_tag_cstr(x, "peer.address", "10.0.0.3:81");
    sharp_sw_span_finish(x, 3000);
    sharp_sw_span_finish(e, 4000);
    sharp_sbuf_t m = {0};
    sharp_sw_segment_encode(seg, &m);
    assert_true(m.len > 5);
    assert_int_equal(m.data[0], 0);
    uint32_t len = (uint32_t)(uint8_t)m.data[1] << 24 | (uint32_t)(uint8_t)m.data[2] << 16 |
                   (uint32_t)(uint8_t)m.data[3] << 8 | (uint8_t)m.data[4];
    assert_int_equal(len, m.len - 5);
    Skywalking__V3__SegmentObject *so =
        skywalking__v3__segment_object__unpack(NULL, len, (const uint8_t *)m.data + 5);
    assert_non_null(so);
    assert_string_equal(so->traceid, seg->trace_id);
    assert_string_equal(so->tracesegmentid, seg->segment_id);
    assert_string_equal(so->service, "svc");
    assert_string_equal(so->serviceinstance, "inst");
    assert_int_equal(so->n_spans, 2);
    const Skywalking__V3__SpanObject *s0 = so->spans[0], *s1 = so->spans[1];
    assert_int_equal(s0->spanid, 0);
    assert_int_equal(s0->parentspanid, -1);
    assert_int_equal(s0->spantype, SKYWALKING__V3__SPAN_TYPE__Entry);
    assert_int_equal(s0->spanlayer, SKYWALKING__V3__SPAN_LAYER__Unknown);
    assert_int_equal(s0->componentid, 9000);
    assert_int_equal(s0->starttime, 1);
    assert_int_equal(s0->endtime, 4);
    assert_string_equal(s0->operationname, "/b");
    assert_int_equal(s1->spanid, 1);
    assert_int_equal(s1->parentspanid, 0);
    assert_int_equal(s1->spantype, SKYWALKING__V3__SPAN_TYPE__Exit);
    assert_string_equal(s1->peer, "10.0.0.3:81");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(so->spans[i]->n_refs, 1);
        const Skywalking__V3__SegmentReference *r = so->spans[i]->refs[0];
        assert_int_equal(r->reftype, SKYWALKING__V3__REF_TYPE__CrossProcess);
        assert_string_equal(r->traceid, seg->trace_id);
        assert_int_equal(r->parentspanid, 4);
        assert_string_equal(r->parentendpoint, "/a?b");
        assert_string_equal(r->networkaddressusedatpeer, "10.0.0.2:80");
    }
    skywalking__v3__segment_object__free_unpacked(so, NULL);
    sharp_sbuf_free(&m);
    sharp_sw_segment_free(seg);
}

int main(void)
{
    sharp_headers_init(&H);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_id_reason), cmocka_unit_test(decision), cmocka_unit_test(b3_sampled),
        cmocka_unit_test(b3_multi),          cmocka_unit_test(b3_single), cmocka_unit_test(span_kinds),
        cmocka_unit_test(json_escaping),     cmocka_unit_test(span_json),
        cmocka_unit_test(traceparent_parse), cmocka_unit_test(traceparent_format), cmocka_unit_test(otel_span),
        cmocka_unit_test(otlp_encoding),     cmocka_unit_test(otlp_decodes),
        cmocka_unit_test(sw_base64),         cmocka_unit_test(sw8_parse),         cmocka_unit_test(sw_segment),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sharp_headers_free(&H);
    return rc;
}

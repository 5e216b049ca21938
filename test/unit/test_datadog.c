/* test_datadog.c: the msgpack encoder (each format family at its
 * boundaries, against the spec's bytes), Datadog context extraction
 * (x-datadog-* headers, x-datadog-tags, W3C traceparent and tracestate,
 * malformed values), the sampling priority of a new span, injection
 * (Datadog and W3C headers, tracestate sanitizing and its 256-byte limit),
 * and a span's Datadog tags and its encoded trace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http/datadog.h"
#include "msgpack.h"

static sharp_headers_t H;

static sharp_headers_t *hdrs(const char *const *kv)
{
    sharp_headers_free(&H);
    sharp_headers_init(&H);
    for (size_t i = 0; kv && kv[i]; i += 2)
        sharp_headers_add_cstr(&H, kv[i], kv[i + 1]);
    return &H;
}

#define HDRS(...) hdrs((const char *const[]){__VA_ARGS__, NULL})

/* out's bytes equal `hex` (two digits a byte), then out is reset. */
static void expect_hex(sharp_sbuf_t *out, const char *hex)
{
    char got[512] = "";
    for (size_t i = 0; i < out->len && 2 * i + 2 < sizeof got; i++)
        snprintf(got + 2 * i, 3, "%02x", (unsigned char)out->data[i]);
    assert_string_equal(got, hex);
    sharp_sbuf_reset(out);
}

/* ---- msgpack ---- */

static void msgpack_ints(void **state)
{
    (void)state;
    sharp_sbuf_t b = {0};
    sharp_msgpack_uint(&b, 0);
    expect_hex(&b, "00");
    sharp_msgpack_uint(&b, 127);
    expect_hex(&b, "7f");
    sharp_msgpack_uint(&b, 128);
    expect_hex(&b, "cc80");
    sharp_msgpack_uint(&b, 255);
    expect_hex(&b, "ccff");
    sharp_msgpack_uint(&b, 256);
    expect_hex(&b, "cd0100");
    sharp_msgpack_uint(&b, 65536);
    expect_hex(&b, "ce00010000");
    sharp_msgpack_uint(&b, 0x100000000ull);
    expect_hex(&b, "cf0000000100000000");
    sharp_msgpack_uint(&b, UINT64_MAX);
    expect_hex(&b, "cfffffffffffffffff");
    sharp_msgpack_int(&b, 5);
    expect_hex(&b, "05");
    sharp_msgpack_int(&b, -1);
    expect_hex(&b, "ff");
    sharp_msgpack_int(&b, -32);
    expect_hex(&b, "e0");
    sharp_msgpack_int(&b, -33);
    expect_hex(&b, "d0df");
    sharp_msgpack_int(&b, -128);
    expect_hex(&b, "d080");
    sharp_msgpack_int(&b, -129);
    expect_hex(&b, "d1ff7f");
    sharp_msgpack_int(&b, -32769);
    expect_hex(&b, "d2ffff7fff");
    sharp_msgpack_int(&b, INT64_MIN);
    expect_hex(&b, "d38000000000000000");
    sharp_msgpack_nil(&b);
    sharp_msgpack_bool(&b, true);
    sharp_msgpack_bool(&b, false);
    expect_hex(&b, "c0c3c2");
    sharp_msgpack_double(&b, 1.0);
    expect_hex(&b, "cb3ff0000000000000");
    sharp_msgpack_double(&b, -2.5);
    expect_hex(&b, "cbc004000000000000");
    sharp_sbuf_free(&b);
}

static void msgpack_strings_and_containers(void **state)
{
    (void)state;
    sharp_sbuf_t b = {0};
    sharp_msgpack_cstr(&b, "");
    expect_hex(&b, "a0");
    sharp_msgpack_cstr(&b, "abc");
    expect_hex(&b, "a3616263");
    char s[70000];
    memset(s, 'x', sizeof s);
    sharp_msgpack_str(&b, s, 31);
    assert_int_equal((unsigned char)b.data[0], 0xbf);
    assert_int_equal(b.len, 32);
    sharp_sbuf_reset(&b);
    sharp_msgpack_str(&b, s, 32);
    assert_int_equal((unsigned char)b.data[0], 0xd9);
    assert_int_equal((unsigned char)b.data[1], 32);
    assert_int_equal(b.len, 34);
    sharp_sbuf_reset(&b);
    sharp_msgpack_str(&b, s, 256);
    assert_memory_equal(b.data, "\xda\x01\x00", 3);
    assert_int_equal(b.len, 259);
    sharp_sbuf_reset(&b);
    sharp_msgpack_str(&b, s, 65536);
    assert_memory_equal(b.data, "\xdb\x00\x01\x00\x00", 5);
    assert_int_equal(b.len, 65541);
    sharp_sbuf_reset(&b);
    sharp_msgpack_array(&b, 0);
    sharp_msgpack_array(&b, 15);
    sharp_msgpack_array(&b, 16);
    sharp_msgpack_array(&b, 70000);
    expect_hex(&b, "909fdc0010dd00011170");
    sharp_msgpack_map(&b, 1);
    sharp_msgpack_map(&b, 15);
    sharp_msgpack_map(&b, 16);
    sharp_msgpack_map(&b, 65536);
    expect_hex(&b, "818fde0010df00010000");
    /* {"a": [1, -1]} */
    sharp_msgpack_map(&b, 1);
    sharp_msgpack_cstr(&b, "a");
    sharp_msgpack_array(&b, 2);
    sharp_msgpack_int(&b, 1);
    sharp_msgpack_int(&b, -1);
    expect_hex(&b, "81a1619201ff");
    sharp_sbuf_free(&b);
}

/* ---- extraction ---- */

static void extract_datadog_headers(void **state)
{
    (void)state;
    sharp_dd_context_t c;
    const char *why = NULL;
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "1234", "x-datadog-parent-id", "5678",
                              "x-datadog-sampling-priority", "-1", "x-datadog-origin", "synthetics",
                              "x-datadog-tags", "_dd.p.dm=-4,foo=bar,_dd.p.tid=640cfd8d00000000"),
                         &c, &why),
        1);
    assert_int_equal(c.trace_lo, 1234);
    assert_int_equal(c.trace_hi, 0x640cfd8d00000000ull);
    assert_int_equal(c.parent_id, 5678);
    assert_true(c.has_priority);
    assert_int_equal(c.priority, -1);
    assert_string_equal(c.origin, "synthetics");
    assert_int_equal(c.tags.n, 2); /* foo is not a propagation tag */
    assert_string_equal(c.tags.keys[0], "_dd.p.dm");
    assert_string_equal(c.tags.vals[0], "-4");
    assert_null(c.prop_error);
    sharp_dd_context_free(&c);
    /* the largest id */
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "18446744073709551615",
                                           "x-datadog-parent-id", "1"),
                                      &c, &why),
                     1);
    assert_int_equal(c.trace_lo, UINT64_MAX);
    assert_false(c.has_priority);
    sharp_dd_context_free(&c);
    /* nothing to extract */
    assert_int_equal(sharp_dd_extract(HDRS("x-other", "1"), &c, &why), 0);
    /* malformed: a new trace */
    const char *bad[][2] = {{"x-datadog-trace-id", "12ab"},
                            {"x-datadog-trace-id", "18446744073709551616"},
                            {"x-datadog-trace-id", "-1"},
                            {"x-datadog-trace-id", ""}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        assert_int_equal(
            sharp_dd_extract(HDRS(bad[i][0], bad[i][1], "x-datadog-parent-id", "5"), &c, &why), -1);
        assert_non_null(strstr(why, "trace ID"));
    }
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "1", "x-datadog-parent-id", "x"), &c, &why),
        -1);
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "1", "x-datadog-parent-id", "2",
                                           "x-datadog-sampling-priority", "one"),
                                      &c, &why),
                     -1);
    assert_non_null(strstr(why, "sampling priority"));
    /* a trace without a parent: an error, unless it has an origin */
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "1"), &c, &why), -1);
    /* a parent without a trace, a zero trace id */
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-parent-id", "1"), &c, &why), -1);
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "0", "x-datadog-parent-id", "1"), &c, &why),
        -1);
    assert_non_null(strstr(why, "zero"));
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "9", "x-datadog-origin", "rum"), &c, &why), 1);
    assert_int_equal(c.parent_id, 0);
    sharp_dd_context_free(&c);
    /* x-datadog-tags that do not decode: kept out, the error noted */
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "1", "x-datadog-parent-id", "2",
                                           "x-datadog-tags", "_dd.p.dm=-4,novalue"),
                                      &c, &why),
                     1);
    assert_int_equal(c.tags.n, 0);
    assert_string_equal(c.prop_error, "decoding_error");
    sharp_dd_context_free(&c);
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "1", "x-datadog-parent-id", "2",
                                           "x-datadog-tags", "_dd.p.tid=xyz"),
                                      &c, &why),
                     1);
    assert_string_equal(c.prop_error, "malformed_tid xyz");
    assert_int_equal(c.trace_hi, 0);
    sharp_dd_context_free(&c);
}

static void decode_encode_tags(void **state)
{
    (void)state;
    sharp_dd_tags_t t = {0};
    assert_true(sharp_dd_decode_tags("", 0, &t));
    assert_true(sharp_dd_decode_tags("_dd.p.a=1,x=2,_dd.p.b=x=y", 25, &t));
    assert_int_equal(t.n, 2);
    assert_string_equal(t.vals[1], "x=y");
    assert_false(sharp_dd_decode_tags("=1", 2, &t));
    assert_false(sharp_dd_decode_tags("_dd.p.c", 7, &t));
    assert_int_equal(t.n, 2);
    sharp_sbuf_t b = {0};
    sharp_dd_encode_tags(&t, &b);
    assert_string_equal(sharp_sbuf_cstr(&b), "_dd.p.a=1,_dd.p.b=x=y");
    sharp_sbuf_free(&b);
    sharp_dd_tags_free(&t);
}

static void extract_w3c_headers(void **state)
{
    (void)state;
    sharp_dd_context_t c;
    const char *why = NULL;
    assert_int_equal(
        sharp_dd_extract(
            HDRS("traceparent", " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
                 "tracestate", "vendor=1, dd=s:2;o:a~b;t.dm:-3;p:0000000000000001;x:y ,z=3"),
            &c, &why),
        1);
    assert_int_equal(c.trace_hi, 0x0af7651916cd43ddull);
    assert_int_equal(c.trace_lo, 0x8448eb211c80319cull);
    assert_int_equal(c.parent_id, 0xb7ad6b7169203331ull);
    assert_int_equal(c.priority, 2);
    assert_string_equal(c.origin, "a=b");
    assert_int_equal(c.tags.n, 2);
    assert_string_equal(c.tags.keys[0], "_dd.p.dm");
    assert_string_equal(c.tags.keys[1], "_dd.p.tid"); /* the trace's high half */
    assert_string_equal(c.tags.vals[1], "0af7651916cd43dd");
    assert_string_equal(c.w3c_extra, "vendor=1,z=3");
    assert_string_equal(c.dd_w3c_extra, "x:y");
    assert_string_equal(c.dd_parent, "0000000000000001");
    sharp_dd_context_free(&c);
    /* Datadog headers of the same trace take W3C's tracestate */
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "9532127138774266268", "x-datadog-parent-id",
                              "5", "x-datadog-tags", "_dd.p.tid=0af7651916cd43dd", "traceparent",
                              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                              "tracestate", "dd=s:1;p:00000000000000aa;x:y,v=1"),
                         &c, &why),
        1);
    assert_int_equal(c.parent_id, 5);
    assert_string_equal(c.dd_parent, "00000000000000aa");
    assert_string_equal(c.w3c_extra, "v=1");
    assert_string_equal(c.dd_w3c_extra, "x:y");
    assert_null(c.prop_error);
    sharp_dd_context_free(&c);
    /* ... but not those of another trace; a malformed traceparent is noted */
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "7", "x-datadog-parent-id", "5",
                                           "traceparent", "00-xyz", "tracestate", "v=1"),
                                      &c, &why),
                     1);
    assert_null(c.w3c_extra);
    assert_int_equal(c.dd_parent[0], 0);
    assert_string_equal(c.w3c_error, "malformed_traceparent");
    sharp_dd_context_free(&c);
    /* a _dd.p.tid that is malformed or says another high half */
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "7", "x-datadog-parent-id", "5",
                                           "x-datadog-tags", "_dd.p.tid=12"),
                                      &c, &why),
                     1);
    assert_string_equal(c.prop_error, "malformed_tid 12");
    assert_int_equal(c.tags.n, 0);
    sharp_dd_context_free(&c);
    assert_int_equal(
        sharp_dd_extract(HDRS("traceparent",
                              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                              "tracestate", "dd=t.tid:1111111111111111"),
                         &c, &why),
        1);
    assert_string_equal(c.prop_error, "inconsistent_tid 1111111111111111");
    assert_string_equal(c.tags.vals[0], "0af7651916cd43dd");
    sharp_dd_context_free(&c);
    /* the flag wins over an inconsistent s: */
    assert_int_equal(
        sharp_dd_extract(HDRS("traceparent",
                              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                              "tracestate", "dd=s:2"),
                         &c, &why),
        1);
    assert_int_equal(c.priority, 0);
    sharp_dd_context_free(&c);
    /* Datadog headers with a trace come first */
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "7", "x-datadog-parent-id", "8", "traceparent",
                              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                         &c, &why),
        1);
    assert_int_equal(c.trace_lo, 7);
    assert_int_equal(c.trace_hi, 0);
    sharp_dd_context_free(&c);
    /* malformed traceparents give no context */
    const char *bad[] = {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
                         "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                         "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                         "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                         "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                         "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sharp_dd_extract(HDRS("traceparent", bad[i]), &c, &why), 0);
    /* a later version may have more fields */
    assert_int_equal(
        sharp_dd_extract(
            HDRS("traceparent", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"),
            &c, &why),
        1);
    sharp_dd_context_free(&c);
}

/* ---- spans ---- */

static uint64_t seq(void *arg)
{
    uint64_t *n = arg;
    return (*n)++;
}

static void new_span_priority(void **state)
{
    (void)state;
    uint64_t n = 0x8000000000000042ull;
    sharp_span_t sp;
    /* a new trace, traced: kept by the default rate */
    sharp_dd_span_start(&sp, NULL, true, NULL, "ingress", 7, "envoy v", 1700000000123456ull,
                        1, seq, &n);
    assert_int_equal(sp.trace_lo, 0x42); /* 63 bits */
    assert_int_equal(sp.id, sp.trace_lo);
    assert_int_equal(sp.trace_hi, 1700000000ull << 32);
    assert_int_equal(sp.dd->priority, 1);
    assert_true(sp.dd->local_decision);
    sharp_headers_t *h = HDRS("x", "y");
    sharp_dd_inject(&sp, h);
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(h, "x-datadog-tags", &v));
    assert_memory_equal(v.p, "_dd.p.tid=6553f10000000000,_dd.p.dm=-0", v.len);
    assert_true(sharp_headers_get_cstr(h, "traceparent", &v));
    assert_memory_equal(v.p, "00-6553f100000000000000000000000042-0000000000000042-01", v.len);
    assert_true(sharp_headers_get_cstr(h, "tracestate", &v));
    assert_memory_equal(v.p, "dd=s:1;p:0000000000000042;t.dm:-0", v.len);
    sharp_span_free(&sp);
    /* not traced: Envoy's user drop, no decision maker */
    sharp_dd_context_t c;
    const char *why;
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                                           "x-datadog-tags", "_dd.p.dm=-1"),
                                      &c, &why),
                     1);
    sharp_dd_span_start(&sp, &c, false, NULL, "ingress", 7, NULL, 1, 1, seq, &n);
    sharp_dd_context_free(&c);
    assert_int_equal(sp.dd->priority, -1);
    assert_int_equal(sp.dd->tags.n, 0);
    assert_int_equal(sp.parent_id, 6);
    h = HDRS("x-datadog-tags", "stale");
    sharp_dd_inject(&sp, h);
    assert_true(sharp_headers_get_cstr(h, "x-datadog-sampling-priority", &v));
    assert_memory_equal(v.p, "-1", 2);
    assert_true(sharp_headers_get_cstr(h, "traceparent", &v));
    assert_memory_equal(v.p + 53, "00", 2);
    sharp_span_free(&sp);
    /* the caller's priority stays, whatever the decision */
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                              "x-datadog-sampling-priority", "2", "x-datadog-tags", "_dd.p.dm=-3"),
                         &c, &why),
        1);
    sharp_dd_span_start(&sp, &c, false, NULL, "ingress", 7, NULL, 1, 1, seq, &n);
    assert_int_equal(sp.dd->priority, 2);
    assert_false(sp.dd->local_decision);
    assert_string_equal(sp.dd->tags.vals[0], "-3");
    sharp_span_free(&sp);
}

static void tracestate_encoding(void **state)
{
    (void)state;
    uint64_t n = 1;
    sharp_dd_context_t c;
    const char *why;
    assert_int_equal(sharp_dd_extract(HDRS("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                                           "x-datadog-sampling-priority", "1", "x-datadog-origin",
                                           "a;b=c", "x-datadog-tags", "_dd.p.k;x=v~w"),
                                      &c, &why),
                     1);
    sharp_span_t sp;
    sharp_dd_span_start(&sp, &c, true, NULL, "r", 1, NULL, 1, 1, seq, &n);
    sharp_sbuf_t b = {0};
    sharp_dd_tracestate(&sp, &b);
    assert_string_equal(sharp_sbuf_cstr(&b), "dd=s:1;p:0000000000000001;o:a_b~c;t.k_x:v_w");
    sharp_span_free(&sp);
    /* at most 256 bytes: whole fields dropped from the end */
    char big[400];
    memset(big, 'v', 200);
    strcpy(big + 200, ",_dd.p.b=");
    memset(big + 209, 'w', 100);
    big[309] = '\0';
    memcpy(big, "_dd.p.a=", 8);
    assert_int_equal(
        sharp_dd_extract(HDRS("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                              "x-datadog-sampling-priority", "1", "x-datadog-tags", big),
                         &c, &why),
        1);
    sharp_dd_span_start(&sp, &c, true, NULL, "r", 1, NULL, 1, 1, seq, &n);
    sharp_sbuf_reset(&b);
    sharp_dd_tracestate(&sp, &b);
    assert_true(b.len <= 256);
    assert_non_null(strstr(sharp_sbuf_cstr(&b), ";t.a:"));
    assert_null(strstr(sharp_sbuf_cstr(&b), ";t.b:"));
    /* x-datadog-tags over 512 bytes: not sent, the error on the span */
    sharp_headers_t *h = HDRS("a", "b");
    sharp_dd_span_tag(&sp, "k", "v", 1);
    char more[600];
    memset(more, 'm', sizeof more - 1);
    more[sizeof more - 1] = '\0';
    sharp_dd_tags_t t = {0};
    char kv[620];
    snprintf(kv, sizeof kv, "_dd.p.c=%s", more);
    assert_true(sharp_dd_decode_tags(kv, strlen(kv), &t));
    sp.dd->tags.keys = sharp_realloc(sp.dd->tags.keys, (sp.dd->tags.n + 1) * sizeof(char *));
    sp.dd->tags.vals = sharp_realloc(sp.dd->tags.vals, (sp.dd->tags.n + 1) * sizeof(char *));
    sp.dd->tags.keys[sp.dd->tags.n] = t.keys[0];
    sp.dd->tags.vals[sp.dd->tags.n++] = t.vals[0];
    free(t.keys);
    free(t.vals);
    sharp_dd_inject(&sp, h);
    assert_false(sharp_headers_get_cstr(h, "x-datadog-tags", NULL));
    bool found = false;
    for (uint32_t i = 0; i < sp.nattrs; i++)
        if (!strcmp(sp.akeys[i], "_dd.propagation_error"))
            found = !strcmp(sp.avals[i], "inject_max_size");
    assert_true(found);
    sharp_span_free(&sp);
    sharp_sbuf_free(&b);
}

/* The service's rate, resolved from the sampler as a reporter does once
 * per answer. */
static const sharp_dd_rate_t *rate_of(const sharp_dd_sampler_t *s, const char *service)
{
    static sharp_dd_rate_t r;
    sharp_dd_sampler_rate(s, service, &r);
    return &r;
}

static void agent_rates(void **state)
{
    (void)state;
    sharp_dd_sampler_t smp = {0};
    /* before any answer: rate 1, mechanism DEFAULT */
    const char *ok = " {\"other\": [1, {\"a\": \"b\\\"c\\u00e9\"}, true, null, -2.5e3],"
                     " \"rate_by_service\": {\"service:,env:\": 0.5, \"service:svc,env:\": 0, "
                     "\"service:svc,env:prod\": 1}} ";
    assert_true(sharp_dd_sampler_update(&smp, ok, strlen(ok)));
    assert_int_equal(smp.n, 3);
    assert_true(smp.has_default);
    assert_true(smp.default_rate == 0.5);
    /* the rates resolved per service: its own, else the default */
    assert_true(rate_of(&smp, "svc")->rate == 0.0 && rate_of(&smp, "svc")->mechanism == 1);
    assert_true(rate_of(&smp, "other")->rate == 0.5 && rate_of(&smp, "other")->mechanism == 1);
    sharp_dd_sampler_t empty = {0};
    assert_true(rate_of(&empty, "svc")->rate == 1.0 && rate_of(&empty, "svc")->mechanism == 0);
    /* the service's own rate 0: dropped, no decision maker */
    uint64_t n = 1;
    sharp_span_t sp;
    sharp_dd_span_start(&sp, NULL, true, rate_of(&smp, "svc"), "r", 1, NULL, 1, 1, seq, &n);
    assert_int_equal(sp.dd->priority, 0);
    assert_true(sp.dd->local_decision && sp.dd->rate == 0.0);
    assert_null(sp.dd->tags.n > 1 ? sp.dd->tags.keys[1] : NULL);
    sharp_span_free(&sp);
    /* another service: the default 0.5, by the Knuth hash of the trace id */
    n = 1; /* 1 * 1111111111111111111 is under half of 2^64: kept */
    sharp_dd_span_start(&sp, NULL, true, rate_of(&smp, "other"), "r", 1, NULL, 1, 1, seq, &n);
    assert_int_equal(sp.dd->priority, 1);
    assert_true(sp.dd->rate == 0.5);
    assert_string_equal(sp.dd->tags.vals[1], "-1"); /* AGENT_RATE */
    sharp_span_free(&sp);
    n = 9; /* 9999999999999999999 is over it: dropped */
    sharp_dd_span_start(&sp, NULL, true, rate_of(&smp, "other"), "r", 1, NULL, 1, 1, seq, &n);
    assert_int_equal(sp.dd->priority, 0);
    sharp_span_free(&sp);
    /* answers that are not rates change nothing */
    const char *bad[] = {"",
                         "{",
                         "nope",
                         "{\"rate_by_service\": {\"service:,env:\": 1.5}}",
                         "{\"rate_by_service\": {\"service:,env:\": \"1\"}}",
                         "{\"rate_by_service\": []}",
                         "{\"rate_by_service\": {}} x",
                         "{\"a\": [1,]}",
                         "{\"a\": \"\\q\"}",
                         "{\"rate_by_service\": {\"service:,env:\": -0.1}}",
                         "{\"rate_by_service\": {\"k\": nan}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(sharp_dd_sampler_update(&smp, bad[i], strlen(bad[i])));
        assert_int_equal(smp.n, 3);
    }
    char deep[300];
    for (int i = 0; i < 100; i++)
        deep[i] = '[';
    memcpy(deep + 100, "", 1);
    char nested[320];
    snprintf(nested, sizeof nested, "{\"a\": %s}", deep);
    assert_false(sharp_dd_sampler_update(&smp, nested, strlen(nested)));
    /* no rate_by_service: nothing changes, not an error */
    assert_true(sharp_dd_sampler_update(&smp, "{\"x\": 1}", 8));
    assert_int_equal(smp.n, 3);
    /* new rates replace the old; the default stays until another comes */
    const char *next = "{\"rate_by_service\": {\"service:svc,env:\": 1}}";
    assert_true(sharp_dd_sampler_update(&smp, next, strlen(next)));
    assert_int_equal(smp.n, 1);
    assert_true(smp.has_default && smp.default_rate == 0.5);
    sharp_dd_sampler_free(&smp);
}

/* Where the bytes of a string literal (NULs included) are in b. */
static size_t find_n(const sharp_sbuf_t *b, const char *needle, size_t n)
{
    for (size_t i = 0; i + n <= b->len; i++)
        if (!memcmp(b->data + i, needle, n)) return i;
    return (size_t)-1;
}
#define find(b, lit) find_n(b, lit, sizeof(lit) - 1)

static void span_tags_and_trace(void **state)
{
    (void)state;
    uint64_t n = 7;
    sharp_span_t sp;
    sharp_dd_span_start(&sp, NULL, true, NULL, "ingress", 7, "envoy x", 1000000, 1, seq, &n);
    sharp_span_set_name(&sp, "checkout", 8);
    sharp_span_tag_cstr(&sp, "zone", ""); /* an empty value is kept */
    sharp_span_tag_cstr(&sp, "http.status_code", "500");
    assert_false(sharp_span_has_tag(&sp, "error"));
    sharp_span_tag_cstr(&sp, "error", "true");
    assert_true(sharp_span_has_tag(&sp, "error"));
    sharp_span_tag_cstr(&sp, "error.reason", "boom");
    sharp_span_tag_cstr(&sp, "http.status_code", "503"); /* replaces */
    sharp_span_tag_cstr(&sp, "_dd.p.dm", "mine"); /* the span's own wins over the trace tag */
    sharp_span_tag_cstr(&sp, "resource.name", "res");
    assert_string_equal(sp.name, "res");
    sharp_sbuf_t b = {0};
    sharp_dd_encode_trace(&sp, "svc", 1500, "rid", 42, &b);
    /* an array of one map of 12 */
    assert_int_equal((unsigned char)b.data[0], 0x91);
    assert_int_equal((unsigned char)b.data[1], 0x8c);
    assert_true(find(&b, "\xa7service\xa3svc") != (size_t)-1);
    assert_true(find(&b, "\xa4name\xab"
                         "envoy.proxy") != (size_t)-1);
    assert_true(find(&b, "\xa8resource\xa3res") != (size_t)-1);
    assert_true(find(&b, "\xa8trace_id\x07") != (size_t)-1);
    assert_true(find(&b, "\xa7span_id\x07") != (size_t)-1);
    assert_true(find(&b, "\xa9parent_id\x00") != (size_t)-1);
    assert_true(find(&b, "\xa5start\xce\x3b\x9a\xca\x00") != (size_t)-1); /* 1 s in ns */
    assert_true(find(&b, "\xa8"
                         "duration\xcd\x05\xdc") != (size_t)-1);
    assert_true(find(&b, "\xa5"
                         "error\x01") != (size_t)-1);
    assert_true(find(&b, "\xa4type\xa3web") != (size_t)-1);
    assert_true(find(&b, "\xa4zone\xa0") != (size_t)-1);
    assert_true(find(&b, "\xb0http.status_code\xa3"
                         "503") != (size_t)-1);
    assert_true(find(&b, "\xa5"
                         "error\xa4true") == (size_t)-1); /* not a meta */
    assert_true(find(&b, "\xad"
                         "error.message\xa4"
                         "boom") != (size_t)-1);
    assert_true(find(&b, "\xac"
                         "error.reason\xa4"
                         "boom") != (size_t)-1);
    assert_true(find(&b, "\xa8_dd.p.dm\xa4mine") != (size_t)-1);
    assert_true(find(&b, "\xa9_dd.p.tid\xb0") != (size_t)-1);
    assert_true(find(&b, "\xa8language\xa3"
                         "cpp") != (size_t)-1);
    assert_true(find(&b, "\xaaruntime-id\xa3rid") != (size_t)-1);
    assert_true(find(&b, "\xa7version\xa7"
                         "envoy x") != (size_t)-1);
    assert_true(find(&b, "\xa7metrics\x83") != (size_t)-1);
    assert_true(find(&b, "\xb5_sampling_priority_v1\xcb\x3f\xf0") != (size_t)-1);
    assert_true(find(&b, "\xad_dd.agent_psr\xcb\x3f\xf0") != (size_t)-1);
    assert_true(find(&b, "\xaaprocess_id\xcb\x40\x45") != (size_t)-1); /* 42.0 */
    sharp_sbuf_free(&b);
    sharp_span_free(&sp);
}

/* Arbitrary header values through extraction, a span, injection and the
 * encoding: no crash, no leak (the sanitizer build), and what is injected
 * is always well formed. A fixed xorshift sequence keeps it repeatable. */
static void hostile_headers(void **state)
{
    (void)state;
    static const char alphabet[] = "0123456789abcdefABCDEF-=,;:~ .t_dposx\xff";
    static const char *names[] = {
        "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
        "x-datadog-origin",   "x-datadog-tags",      "traceparent",
        "tracestate"};
    uint64_t r = 0x9E3779B97F4A7C15ull, ids = 1;
    for (int iter = 0; iter < 20000; iter++) {
        sharp_headers_free(&H);
        sharp_headers_init(&H);
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            if (r % 3 == 0) continue;
            char v[700];
            size_t n = (r >> 8) % (k == 4 ? 600 : 80);
            if (k == 5 && (r >> 20) % 2) {
                /* a well formed traceparent now and then */
                snprintf(v, sizeof v, "0%c-%032llx-%016llx-0%c", (int)('0' + (r >> 30) % 3),
                         (unsigned long long)(r >> 1), (unsigned long long)(r >> 3),
                         (int)('0' + (r >> 40) % 2));
                n = strlen(v);
            } else {
                for (size_t i = 0; i < n; i++) {
                    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                    v[i] = alphabet[r % (sizeof alphabet - 1)];
                }
                v[n] = '\0';
            }
            sharp_headers_add_cstr(&H, names[k], v);
        }
        sharp_dd_context_t c;
        const char *why = NULL;
        int rc = sharp_dd_extract(&H, &c, &why);
        assert_true(rc >= -1 && rc <= 1);
        if (rc < 0) assert_non_null(why);
        sharp_span_t sp;
        sharp_dd_span_start(&sp, rc > 0 ? &c : NULL, iter % 2, NULL, "ingress", 7, "v",
                            1000000, 1, seq, &ids);
        if (rc > 0) sharp_dd_context_free(&c);
        sharp_dd_inject(&sp, &H);
        sharp_str_t tp, ts;
        assert_true(sharp_headers_get_cstr(&H, "traceparent", &tp));
        assert_int_equal(tp.len, 55);
        assert_true(sharp_headers_get_cstr(&H, "tracestate", &ts));
        assert_true(ts.len >= 5 && !memcmp(ts.p, "dd=s:", 5));
        sharp_sbuf_t b = {0};
        sharp_dd_encode_trace(&sp, "svc", 1, "rid", 1, &b);
        assert_int_equal((unsigned char)b.data[0], 0x91);
        sharp_sbuf_free(&b);
        sharp_span_free(&sp);
    }
}

/* Client-supplied lists cost linear time: 100,000 trace tags (a quadratic
 * insert takes minutes), duplicates set once with the last value in the
 * first one's place, and a tracestate read to its 32nd list member. */
static void large_tag_lists(void **state)
{
    (void)state;
    enum { N = 100000 };
    sharp_sbuf_t v = {0};
    for (int i = 0; i < N; i++)
        sharp_sbuf_printf(&v, "%s_dd.p.k%d=%d", i ? "," : "", i, i);
    sharp_sbuf_printf(&v, ",_dd.p.k0=last");
    sharp_dd_tags_t t = {0};
    uint64_t t0 = sharp_now_ns();
    assert_true(sharp_dd_decode_tags(v.data, v.len, &t));
    assert_int_equal(t.n, N);
    assert_string_equal(t.keys[0], "_dd.p.k0");
    assert_string_equal(t.vals[0], "last");
    assert_string_equal(t.vals[N - 1], "99999");
    /* a second decode into the same tags replaces values, adds nothing */
    assert_true(sharp_dd_decode_tags("_dd.p.k5=x,_dd.p.new=y", 22, &t));
    assert_int_equal(t.n, N + 1);
    assert_string_equal(t.vals[5], "x");
    assert_string_equal(t.keys[N], "_dd.p.new");

    /* the span's meta take each trace tag once, its own meta kept */
    sharp_headers_free(&H);
    sharp_headers_init(&H);
    sharp_headers_add(&H, "x-datadog-trace-id", 18, "5", 1);
    sharp_headers_add(&H, "x-datadog-parent-id", 19, "6", 1);
    sharp_headers_add(&H, "x-datadog-tags", 14, v.data, v.len);
    sharp_dd_context_t c;
    const char *why = NULL;
    assert_int_equal(sharp_dd_extract(&H, &c, &why), 1);
    assert_int_equal(c.tags.n, N);
    uint64_t ids = 1;
    sharp_span_t sp;
    sharp_dd_span_start(&sp, &c, true, NULL, "ingress", 7, "v", 1000000, 1, seq, &ids);
    sharp_dd_context_free(&c);
    sharp_sbuf_t b = {0};
    sharp_dd_encode_trace(&sp, "svc", 1, "rid", 1, &b);
    uint32_t found = 0;
    for (uint32_t i = 0; i < sp.nattrs; i++)
        found += !strncmp(sp.akeys[i], "_dd.p.k", 7);
    assert_int_equal(found, N);
    sharp_sbuf_free(&b);
    sharp_span_free(&sp);
    assert_true(sharp_now_ns() - t0 < 5000000000ull);
    sharp_dd_tags_free(&t);
    sharp_sbuf_free(&v);

    /* tracestate: 40 members, the 33rd on not read */
    sharp_sbuf_t ts = {0};
    for (int i = 0; i < 40; i++)
        sharp_sbuf_printf(&ts, "%sv%d=%d", i ? "," : "", i, i);
    sharp_sbuf_puts(&ts, ",dd=s:2");
    assert_int_equal(
        sharp_dd_extract(HDRS("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                              "tracestate", sharp_sbuf_cstr(&ts)),
                         &c, &why),
        1);
    assert_int_equal(c.priority, 1); /* dd= was past the 32nd member */
    assert_non_null(strstr(c.w3c_extra, ",v31=31"));
    assert_null(strstr(c.w3c_extra, "v32"));
    sharp_dd_context_free(&c);
    sharp_sbuf_free(&ts);
}

int main(void)
{
    sharp_headers_init(&H);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(msgpack_ints),
        cmocka_unit_test(msgpack_strings_and_containers),
        cmocka_unit_test(extract_datadog_headers),
        cmocka_unit_test(decode_encode_tags),
        cmocka_unit_test(extract_w3c_headers),
        cmocka_unit_test(new_span_priority),
        cmocka_unit_test(tracestate_encoding),
        cmocka_unit_test(span_tags_and_trace),
        cmocka_unit_test(hostile_headers),
        cmocka_unit_test(large_tag_lists),
        cmocka_unit_test(agent_rates),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sharp_headers_free(&H);
    return rc;
}

/* test_access_log.c: access-log formats (text and JSON), response flags and
 * the batching file writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <fcntl.h>
#include <unistd.h>

#include "http/access_log.h"
#include "http/metadata.h"

/* 2016-04-15T20:17:00.310Z, Envoy's documentation example. */
#define START_US (1460751420ull * 1000000 + 310000)
#define START_NS 1000000000ull

typedef struct {
    sharp_headers_t req, resp, trailers;
    sharp_stream_info_t si;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    sharp_headers_init(&f->req);
    sharp_headers_init(&f->resp);
    sharp_headers_init(&f->trailers);
    sharp_headers_add_cstr(&f->req, ":method", "POST");
    sharp_headers_add_cstr(&f->req, ":path", "/api/v1/locations");
    sharp_headers_add_cstr(&f->req, ":authority", "locations");
    sharp_headers_add_cstr(&f->req, "x-forwarded-for", "10.0.35.28");
    sharp_headers_add_cstr(&f->req, "user-agent", "nsq2http");
    sharp_headers_add_cstr(&f->req, "x-request-id", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2");
    sharp_headers_add_cstr(&f->resp, ":status", "204");
    sharp_headers_add_cstr(&f->resp, "x-envoy-upstream-service-time", "100");
    sharp_headers_add_cstr(&f->trailers, "grpc-status", "0");
    sharp_stream_info_t *si = &f->si;
    si->start_wall_us = START_US;
    si->start_ns = START_NS;
    si->end_ns = START_NS + 226 * 1000000ull + 999999; /* 226.99 ms: truncated */
    si->request_complete_ns = START_NS + 12 * 1000000ull;
    si->upstream_first_byte_ns = START_NS + 120 * 1000000ull;
    si->protocol = "HTTP/2";
    si->response_code = 204;
    si->bytes_received = 154;
    si->bytes_sent = 0;
    snprintf(si->upstream_host, sizeof si->upstream_host, "10.0.2.1:80");
    snprintf(si->upstream_local_address, sizeof si->upstream_local_address, "10.0.0.9:40000");
    snprintf(si->downstream_remote_address, sizeof si->downstream_remote_address,
             "[2001:db8::1]:5555");
    snprintf(si->downstream_local_address, sizeof si->downstream_local_address, "10.0.0.9:10000");
    si->upstream_cluster = "locations_cluster";
    si->route_name = "loc_route";
    si->response_code_details = "via_upstream";
    si->request_headers = &f->req;
    si->response_headers = &f->resp;
    si->response_trailers = &f->trailers;
    si->attempt_count = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sharp_headers_free(&f->req);
    sharp_headers_free(&f->resp);
    sharp_headers_free(&f->trailers);
    free(f);
    return 0;
}

/* Compiles, renders and compares; the rendering must equal `want`. */
static void expect(const sharp_stream_info_t *si, const char *fmt, const char *want)
{
    char err[256] = "";
    sharp_access_log_format_t *f = sharp_access_log_format_compile(fmt, err, sizeof err);
    if (!f) fail_msg("compile '%s': %s", fmt, err);
    sharp_sbuf_t out = {0};
    sharp_access_log_format_render(f, si, &out);
    assert_string_equal(sharp_sbuf_cstr(&out), want);
    sharp_sbuf_free(&out);
    sharp_access_log_format_free(f);
}

static void expect_error(const char *fmt, const char *needle)
{
    char err[256] = "";
    sharp_access_log_format_t *f = sharp_access_log_format_compile(fmt, err, sizeof err);
    assert_null(f);
    if (!strstr(err, needle))
        fail_msg("error for '%s' was '%s', expected to contain '%s'", fmt, err, needle);
}

static void test_default_format_line(void **state)
{
    fixture_t *f = *state;
    expect(&f->si, SHARP_ACCESS_LOG_DEFAULT_FORMAT,
           "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations HTTP/2\" 204 - 154 0 226 100 "
           "\"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" \"locations\" "
           "\"10.0.2.1:80\"\n");
    /* NULL compiles the default format too */
    char err[64];
    sharp_access_log_format_t *d = sharp_access_log_format_compile(NULL, err, sizeof err);
    assert_non_null(d);
    sharp_access_log_format_free(d);
}

static void test_default_format_missing_values(void **state)
{
    sharp_stream_info_t si = {0};
    sharp_headers_t req;
    sharp_headers_init(&req);
    sharp_headers_add_cstr(&req, ":method", "GET");
    sharp_headers_add_cstr(&req, ":path", "/x");
    sharp_headers_add_cstr(&req, "x-envoy-original-path", "/orig");
    si.start_wall_us = 0;
    si.start_ns = 5;
    si.end_ns = 5;
    si.protocol = "HTTP/1.1";
    si.response_code = 0;
    si.response_flags =
        SHARP_RF_UPSTREAM_CONNECTION_FAILURE | SHARP_RF_UPSTREAM_RETRY_LIMIT_EXCEEDED;
    si.request_headers = &req;
    expect(&si, SHARP_ACCESS_LOG_DEFAULT_FORMAT,
           "[1970-01-01T00:00:00.000Z] \"GET /orig HTTP/1.1\" 0 UF,URX 0 0 0 - \"-\" \"-\" \"-\" "
           "\"-\" \"-\"\n");
    sharp_headers_free(&req);
}

static void test_start_time_formats(void **state)
{
    fixture_t *f = *state;
    f->si.start_wall_us = START_US + 123; /* .310123 */
    expect(&f->si, "%START_TIME%", "2016-04-15T20:17:00.310Z");
    expect(&f->si, "%START_TIME(%Y/%m/%d %H:%M:%S)%", "2016/04/15 20:17:00");
    expect(&f->si, "%START_TIME(%s)%", "1460751420");
    expect(&f->si, "%START_TIME(%s.%3f)%", "1460751420.310");
    expect(&f->si, "%START_TIME(%s.%6f)%", "1460751420.310123");
    expect(&f->si, "%START_TIME(%s.%9f)%", "1460751420.310123000");
    expect(&f->si, "%START_TIME(%f)%", "310123000");
    expect(&f->si, "%START_TIME(%E6S)%", "00.310123");
    expect(&f->si, "%START_TIME(%E*S)%", "00.310123");
    expect(&f->si, "%START_TIME(%E3f)%", "310");
    expect(&f->si, "%START_TIME(%Y-%m-%dT%H:%M:%S%Ez)%", "2016-04-15T20:17:00+00:00");
    expect(&f->si, "%START_TIME(100%% %H)%", "100% 20");
    f->si.start_wall_us = START_US - 310000;
    expect(&f->si, "%START_TIME(%E*S)%", "00");
}

static void test_headers_and_truncation(void **state)
{
    fixture_t *f = *state;
    expect(&f->si, "%REQ(:METHOD)% %REQ(:path)% %REQ(User-Agent)%",
           "POST /api/v1/locations nsq2http");
    expect(&f->si, "%REQ(X-MISSING)%|%REQ(X-MISSING?USER-AGENT)%|%REQ(USER-AGENT?X-MISSING)%",
           "-|nsq2http|nsq2http");
    expect(&f->si, "%REQ(USER-AGENT):3%|%REQ(X-MISSING):3%|%REQ(:PATH):100%",
           "nsq|-|/api/v1/locations");
    expect(&f->si, "%REQUEST_HEADER(:AUTHORITY)%", "locations");
    expect(&f->si,
           "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %RESP(:STATUS)% %RESPONSE_HEADER(X-NONE)%",
           "100 204 -");
    expect(&f->si, "%TRAILER(GRPC-STATUS)% %RESPONSE_TRAILER(GRPC-MESSAGE)%", "0 -");
    sharp_headers_add_cstr(&f->req, "x-empty", "");
    expect(&f->si, "[%REQ(X-EMPTY)%]", "[]");
    f->si.response_headers = NULL;
    expect(&f->si, "%RESP(:STATUS)%", "-");
}

static void test_numeric_and_string_commands(void **state)
{
    fixture_t *f = *state;
    expect(&f->si,
           "%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %REQUEST_DURATION% "
           "%RESPONSE_DURATION%",
           "204 154 0 226 12 120");
    expect(&f->si, "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %PROTOCOL% %ROUTE_NAME%",
           "- via_upstream HTTP/2 loc_route");
    expect(&f->si,
           "%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% "
           "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
           "10.0.2.1:80 locations_cluster 10.0.0.9:40000 -");
    expect(&f->si, "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
           "[2001:db8::1]:5555 2001:db8::1");
    expect(&f->si,
           "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% "
           "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
           "10.0.0.9:10000 10.0.0.9 1");
    expect(&f->si, "%DOWNSTREAM_LOCAL_PORT% %DOWNSTREAM_REMOTE_PORT%", "10000 5555");
    /* Envoy's formatter makes the reason one token: spaces become '_' */
    f->si.upstream_transport_failure_reason = "TLS error: a b";
    f->si.request_complete_ns = 0;
    f->si.upstream_first_byte_ns = 0;
    f->si.upstream_cluster = NULL;
    f->si.route_name = "";
    f->si.upstream_host[0] = '\0';
    expect(&f->si,
           "%UPSTREAM_TRANSPORT_FAILURE_REASON%|%REQUEST_DURATION%|%RESPONSE_DURATION%|%UPSTREAM_"
           "CLUSTER%|%ROUTE_NAME%|%UPSTREAM_HOST%",
           "TLS_error:_a_b|-|-|-|-|-");
    expect(&f->si, "100%% done %%%RESPONSE_CODE%%%", "100% done %204%");
    char host[256] = "";
    gethostname(host, sizeof host);
    char want[300];
    snprintf(want, sizeof want, "host=%s", host);
    expect(&f->si, "host=%HOSTNAME%", want);
    expect(NULL, "%RESPONSE_CODE% %REQ(:PATH)%", "- -");
}

static void render_json(const sharp_stream_info_t *si, const char *const *keys,
                        const char *const *fmts, size_t n, const char *want);

/* SHARP's %UPSTREAM_HOST_DIAGNOSIS%: the host's diagnosis as the router
 * captured it, "-" (JSON null) when the host had none. */
static void test_upstream_host_diagnosis(void **state)
{
    fixture_t *f = *state;
    expect(&f->si, "%UPSTREAM_HOST% [%UPSTREAM_HOST_DIAGNOSIS%]", "10.0.2.1:80 [-]");
    f->si.upstream_host_diagnosis = "network: packet loss to 10.0.2.1:80 (retransmits 4.8% vs cluster 0.0%)";
    expect(&f->si, "%UPSTREAM_HOST% [%UPSTREAM_HOST_DIAGNOSIS%]",
           "10.0.2.1:80 [network: packet loss to 10.0.2.1:80 (retransmits 4.8% vs cluster 0.0%)]");
    const char *keys[] = {"d"};
    const char *fmts[] = {"%UPSTREAM_HOST_DIAGNOSIS%"};
    render_json(&f->si, keys, fmts, 1,
                "{\"d\":\"network: packet loss to 10.0.2.1:80 (retransmits 4.8% vs cluster 0.0%)\"}\n");
    f->si.upstream_host_diagnosis = NULL;
    render_json(&f->si, keys, fmts, 1, "{\"d\":null}\n");
    expect_error("%UPSTREAM_HOST_DIAGNOSIS(x)%", "takes no argument");
}

/* %DYNAMIC_METADATA(NS:KEY...):N%, Envoy's MetadataFormatter: a string as
 * it is, other values as JSON (keys sorted), the namespace alone as its
 * struct, a path through nested structs, absent or null as "-", cut to N;
 * alone in a JSON format it keeps its type and is not cut. */
static void test_dynamic_metadata(void **state)
{
    fixture_t *f = *state;
    expect(&f->si, "[%DYNAMIC_METADATA(envoy.lb:version)%]", "[-]");
    sharp_md_value_t v, inner = {.kind = SHARP_MD_STRUCT}, n = {.kind = SHARP_MD_NUMBER, .number = 1e6};
    sharp_md_struct_set(&inner, "n", 1, &n);
    n = (sharp_md_value_t){.kind = SHARP_MD_BOOL, .b = true};
    sharp_md_struct_set(&inner, "b", 1, &n);
    sharp_md_value_string(&v, "1.0-beta", 8);
    sharp_dynamic_metadata_set(&f->si.dynamic_metadata, "envoy.lb", 8, "version", 7, &v);
    sharp_dynamic_metadata_set(&f->si.dynamic_metadata, "envoy.lb", 8, "obj", 3, &inner);
    v = (sharp_md_value_t){.kind = SHARP_MD_NULL};
    sharp_dynamic_metadata_set(&f->si.dynamic_metadata, "envoy.lb", 8, "nul", 3, &v);
    expect(&f->si, "%DYNAMIC_METADATA(envoy.lb:version)% %DYNAMIC_METADATA(envoy.lb:version):3%", "1.0-beta 1.0");
    expect(&f->si, "%DYNAMIC_METADATA(envoy.lb:obj)% %DYNAMIC_METADATA(envoy.lb:obj:n)%",
           "{\"b\":true,\"n\":1e+06} 1e+06");
    expect(&f->si, "%DYNAMIC_METADATA(envoy.lb)%",
           "{\"nul\":null,\"obj\":{\"b\":true,\"n\":1e+06},\"version\":\"1.0-beta\"}");
    expect(&f->si, "%DYNAMIC_METADATA(envoy.lb:obj):4%", "{\"b\"");
    expect(&f->si, "[%DYNAMIC_METADATA(envoy.lb:nul)%|%DYNAMIC_METADATA(envoy.lb:version:x)%|"
                   "%DYNAMIC_METADATA(envoy.lb:obj:zz)%|%DYNAMIC_METADATA(other)%]",
           "[-|-|-|-]");
    const char *keys[] = {"all", "cut", "num", "s"};
    const char *fmts[] = {"%DYNAMIC_METADATA(envoy.lb:obj)%", "%DYNAMIC_METADATA(envoy.lb:version):2%",
                          "%DYNAMIC_METADATA(envoy.lb:obj:n)%", "%DYNAMIC_METADATA(x:y)%"};
    render_json(&f->si, keys, fmts, 4,
                "{\"all\":{\"b\":true,\"n\":1e+06},\"cut\":\"1.0-beta\",\"num\":1e+06,\"s\":null}\n");
    sharp_dynamic_metadata_free(f->si.dynamic_metadata);
    f->si.dynamic_metadata = NULL;
    expect_error("%DYNAMIC_METADATA%", "requires a namespace");
}

/* Without an upstream TLS connection (plaintext, or no upstream) every
 * UPSTREAM_TLS_* / _PEER_* / _LOCAL_* operator is absent, as in Envoy; the
 * values themselves are test_tls's and the integration tests'. */
static void test_upstream_tls_operators_absent(void **state)
{
    fixture_t *f = *state;
    expect(&f->si,
           "%UPSTREAM_TLS_VERSION% %UPSTREAM_TLS_CIPHER% %UPSTREAM_TLS_SESSION_ID% %UPSTREAM_PEER_SUBJECT% "
           "%UPSTREAM_PEER_ISSUER% %UPSTREAM_PEER_CERT% %UPSTREAM_PEER_URI_SAN% %UPSTREAM_PEER_DNS_SAN% "
           "%UPSTREAM_PEER_IP_SAN% %UPSTREAM_LOCAL_URI_SAN% %UPSTREAM_LOCAL_DNS_SAN% %UPSTREAM_LOCAL_IP_SAN% "
           "%UPSTREAM_PEER_CERT_V_START% %UPSTREAM_PEER_CERT_V_END(%s)%",
           "- - - - - - - - - - - - - -");
    const char *keys[] = {"v", "end"};
    const char *fmts[] = {"%UPSTREAM_TLS_VERSION%", "%UPSTREAM_PEER_CERT_V_END(%Y)%"};
    render_json(&f->si, keys, fmts, 2, "{\"end\":null,\"v\":null}\n");
    expect_error("%UPSTREAM_TLS_VERSION(x)%", "takes no argument");
    expect_error("%UPSTREAM_PEER_SUBJECT:10%", "takes no length");
}

static void test_response_flags(void **state)
{
    char b[128];
    assert_int_equal(sharp_response_flags_str(0, b, sizeof b), 1);
    assert_string_equal(b, "-");
    sharp_response_flags_str(SHARP_RF_UPSTREAM_RETRY_LIMIT_EXCEEDED | SHARP_RF_NO_HEALTHY_UPSTREAM |
                                 SHARP_RF_DNS_RESOLUTION_FAILURE,
                             b, sizeof b);
    assert_string_equal(b, "UH,URX,DF");
    sharp_response_flags_str(0xffffffffu, b, sizeof b);
    assert_string_equal(b,
                        "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,"
                        "NFCF,DT,UPE,NC,OM,DF,DO,DR");
    char small[6];
    sharp_response_flags_str(SHARP_RF_LOCAL_RESET | SHARP_RF_UPSTREAM_OVERFLOW |
                                 SHARP_RF_NO_ROUTE_FOUND,
                             small, sizeof small);
    assert_string_equal(small, "LR,UO"); /* truncated at whole codes */
}

static void test_compile_errors(void **state)
{
    expect_error("%FOO%", "unknown command operator %FOO%");
    expect_error("abc %REQ(:PATH)% %NOPE(x)%", "%NOPE%");
    expect_error("%REQ%", "requires a header name");
    expect_error("%REQ()%", "requires a header name");
    expect_error("%RESPONSE_CODE(x)%", "takes no argument");
    expect_error("%RESPONSE_CODE:3%", "takes no length");
    expect_error("%REQ(A?B?C)%", "more than one alternative");
    expect_error("%REQ(X", "unterminated");
    expect_error("100% sure", "offset 3");
    expect_error("%REQ(X):%", "length");
}

static void render_json(const sharp_stream_info_t *si, const char *const *keys,
                        const char *const *fmts, size_t n, const char *want)
{
    char err[256] = "";
    sharp_access_log_format_t *f =
        sharp_access_log_format_compile_json(keys, fmts, n, err, sizeof err);
    if (!f) fail_msg("json compile: %s", err);
    sharp_sbuf_t out = {0};
    sharp_access_log_format_render(f, si, &out);
    assert_string_equal(sharp_sbuf_cstr(&out), want);
    sharp_sbuf_free(&out);
    sharp_access_log_format_free(f);
}

static void test_json_format(void **state)
{
    fixture_t *f = *state;
    sharp_headers_add_cstr(&f->req, "x-quote", "a \"b\"\\c\n");
    const char *keys[] = {"status",   "path",   "method_path", "missing", "missing_text", "start",
                          "duration", "quoted", "agent_short", "flags",   "literal"};
    const char *fmts[] = {"%RESPONSE_CODE%",
                          "%REQ(:PATH)%",
                          "%REQ(:METHOD)% %REQ(:PATH)%",
                          "%REQ(X-NONE)%",
                          "x=%REQ(X-NONE)%",
                          "%START_TIME%",
                          "%DURATION%",
                          "%REQ(X-QUOTE)%",
                          "%REQ(USER-AGENT):3%",
                          "%RESPONSE_FLAGS%",
                          "plain"};
    render_json(
        &f->si, keys, fmts, SHARP_ARRAY_SIZE(keys),
        "{\"agent_short\":\"nsq\",\"duration\":226,\"flags\":\"-\",\"literal\":\"plain\","
        "\"method_path\":\"POST /api/v1/locations\",\"missing\":null,\"missing_text\":\"x=-\","
        "\"path\":\"/api/v1/locations\",\"quoted\":\"a \\\"b\\\"\\\\c\\n\","
        "\"start\":\"2016-04-15T20:17:00.310Z\",\"status\":204}\n");
    f->si.request_complete_ns = 0;
    const char *k2[] = {"rq_ms", "code"};
    const char *f2[] = {"%REQUEST_DURATION%", "%RESPONSE_CODE%.0"};
    render_json(&f->si, k2, f2, 2, "{\"code\":\"204.0\",\"rq_ms\":null}\n");
    render_json(&f->si, NULL, NULL, 0, "{}\n");
}

static void test_json_errors(void **state)
{
    char err[256];
    const char *keys[] = {"a", "b"};
    const char *bad[] = {"%RESPONSE_CODE%", "%WHAT%"};
    assert_null(sharp_access_log_format_compile_json(keys, bad, 2, err, sizeof err));
    assert_non_null(strstr(err, "json_format.b"));
    assert_non_null(strstr(err, "%WHAT%"));
    const char *dup_keys[] = {"a", "a"};
    const char *ok[] = {"x", "y"};
    assert_null(sharp_access_log_format_compile_json(dup_keys, ok, 2, err, sizeof err));
    assert_non_null(strstr(err, "duplicate"));
}

static void test_header_flavour(void **state)
{
    fixture_t *f = *state;
    char err[128];
    sharp_access_log_format_t *fmt = sharp_access_log_format_compile(
        "%REQ(X-NONE)%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", err, sizeof err);
    assert_non_null(fmt);
    sharp_sbuf_t out = {0};
    sharp_access_log_format_render_header(fmt, &f->si, &out);
    assert_string_equal(sharp_sbuf_cstr(&out), "|2001:db8::1");
    sharp_sbuf_free(&out);
    sharp_access_log_format_free(fmt);
}

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void test_file_writer(void **state)
{
    fixture_t *f = *state;
    char path[] = "/tmp/sharp_test_access_log_XXXXXX";
    int tfd = mkstemp(path);
    assert_true(tfd >= 0);
    close(tfd);
    char err[256];
    sharp_access_log_file_t *file = sharp_access_log_file_open(path, err, sizeof err);
    assert_non_null(file);
    sharp_access_log_format_t *fmt =
        sharp_access_log_format_compile("%RESPONSE_CODE% %REQ(:PATH)%\n", err, sizeof err);
    sharp_access_log_writer_t w1, w2;
    sharp_access_log_writer_init(&w1, file);
    sharp_access_log_writer_init(&w2, file);
    sharp_access_log_writer_log(&w1, fmt, &f->si);
    sharp_access_log_writer_append(&w2, "second\n", 7);
    assert_string_equal(read_all(path), ""); /* buffered */
    assert_int_equal(sharp_access_log_writer_flush(&w2), 0);
    assert_int_equal(sharp_access_log_writer_flush(&w1), 0);
    assert_string_equal(read_all(path), "second\n204 /api/v1/locations\n");
    /* past 64 KiB the writer flushes by itself, whole lines only */
    char line[101];
    memset(line, 'x', 99);
    line[99] = '\n';
    line[100] = '\0';
    int n = 0;
    while (w1.buf.len + 100 < SHARP_ACCESS_LOG_FLUSH_BYTES) {
        sharp_access_log_writer_append(&w1, line, 100);
        n++;
    }
    assert_int_equal(strlen(read_all(path)), 29);
    sharp_access_log_writer_append(&w1, line, 100);
    assert_int_equal(w1.buf.len, 0);
    assert_int_equal(strlen(read_all(path)), 29 + (size_t)(n + 1) * 100);
    sharp_access_log_writer_log(&w1, fmt, &f->si);
    sharp_access_log_writer_destroy(&w1); /* flushes */
    sharp_access_log_writer_destroy(&w2);
    assert_int_equal(strlen(read_all(path)), 29 + (size_t)(n + 1) * 100 + 22);
    assert_int_equal(atomic_load(&file->write_errors), 0);
    sharp_access_log_format_free(fmt);
    sharp_access_log_file_close(file);
    /* O_APPEND: a second opening appends after what is there */
    file = sharp_access_log_file_open(path, err, sizeof err);
    sharp_access_log_writer_init(&w1, file);
    sharp_access_log_writer_append(&w1, "end\n", 4);
    sharp_access_log_writer_destroy(&w1);
    sharp_access_log_file_close(file);
    const char *all = read_all(path);
    assert_string_equal(all + strlen(all) - 4, "end\n");
    unlink(path);
}

static void test_file_open_errors_and_std(void **state)
{
    char err[256] = "";
    assert_null(sharp_access_log_file_open("/nonexistent-dir/x/log", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent-dir/x/log"));
    sharp_access_log_file_t *o = sharp_access_log_file_open("/dev/stdout", err, sizeof err);
    sharp_access_log_file_t *e = sharp_access_log_file_open("/dev/stderr", err, sizeof err);
    assert_non_null(o);
    assert_non_null(e);
    assert_true(o->fd > 2 && e->fd > 2);
    sharp_access_log_writer_t w;
    sharp_access_log_writer_init(&w, e);
    sharp_access_log_writer_append(&w, "# access log to stderr works\n", 29);
    assert_int_equal(sharp_access_log_writer_flush(&w), 0);
    sharp_access_log_writer_destroy(&w);
    sharp_access_log_file_close(o);
    sharp_access_log_file_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_format_line, setup, teardown),
        cmocka_unit_test(test_default_format_missing_values),
        cmocka_unit_test_setup_teardown(test_start_time_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_and_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numeric_and_string_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_host_diagnosis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_tls_operators_absent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dynamic_metadata, setup, teardown),
        cmocka_unit_test(test_response_flags),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test_setup_teardown(test_json_format, setup, teardown),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test_setup_teardown(test_header_flavour, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_writer, setup, teardown),
        cmocka_unit_test(test_file_open_errors_and_std),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_fault.c: the fault injection filter's settings and decisions
 * (filters/fault/fault_config.c) as Envoy's FaultSettings and
 * filters/common/fault make them: the config's checks and runtime key
 * defaults, absl::SimpleAtoi on the fault headers, the percentage draws
 * (fixed, header-controlled and capped by the config, runtime overrides,
 * a downstream cluster's keys), the abort's HTTP-then-gRPC status order,
 * the targets, and the response rate limiter's token bucket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "filters/fault/fault_config.h"
#include "runtime.h"

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

typedef Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort abort_pb_t;
typedef Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay delay_pb_t;
typedef Envoy__Extensions__Filters__Common__Fault__V3__FaultRateLimit rate_pb_t;

#define MS 1000000ull

static sharp_str_t str(const char *s)
{
    return (sharp_str_t){s, strlen(s)};
}

static sharp_fault_settings_t *build(const sharp_fault_pb_t *pb, char *err)
{
    err[0] = 0;
    return sharp_fault_settings_create(pb, err, 256);
}

static void simple_atoi(void **state)
{
    (void)state;
    uint64_t v = 7;
    assert_true(sharp_simple_atou(str("503"), UINT64_MAX, &v) && v == 503);
    assert_true(sharp_simple_atou(str(" +42\t"), UINT64_MAX, &v) && v == 42);
    assert_true(sharp_simple_atou(str("0"), UINT64_MAX, &v) && v == 0);
    assert_true(sharp_simple_atou(str("4294967295"), UINT32_MAX, &v) && v == UINT32_MAX);
    assert_false(sharp_simple_atou(str("4294967296"), UINT32_MAX, &v));
    assert_true(sharp_simple_atou(str("18446744073709551615"), UINT64_MAX, &v) &&
                v == UINT64_MAX);
    assert_false(sharp_simple_atou(str("18446744073709551616"), UINT64_MAX, &v));
    const char *bad[] = {"", " ", "+", "-1", "1.5", "0x10", "12a", "1 2", "++1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(sharp_simple_atou(str(bad[i]), 100000, &v));
}

static void config_checks(void **state)
{
    (void)state;
    char err[256];
    sharp_fault_pb_t pb = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
    /* an empty HTTPFault is valid: it injects nothing */
    sharp_fault_settings_t *s = build(&pb, err);
    assert_non_null(s);
    assert_false(s->has_delay || s->has_abort || s->has_rate_limit);
    assert_string_equal(s->delay_percent_rt, "fault.http.delay.fixed_delay_percent");
    assert_string_equal(s->abort_percent_rt, "fault.http.abort.abort_percent");
    assert_string_equal(s->delay_duration_rt, "fault.http.delay.fixed_duration_ms");
    assert_string_equal(s->abort_http_status_rt, "fault.http.abort.http_status");
    assert_string_equal(s->abort_grpc_status_rt, "fault.http.abort.grpc_status");
    assert_string_equal(s->max_active_rt, "fault.http.max_active_faults");
    assert_string_equal(s->rate_percent_rt, "fault.http.rate_limit.response_percent");
    assert_int_equal(sharp_fault_max_active(s), UINT64_MAX);
    sharp_fault_settings_free(s);

    abort_pb_t ab = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__INIT;
    pb.abort = &ab;
    assert_null(build(&pb, err));
    assert_string_equal(err, "abort.error_type: value is required");
    ab.error_type_case =
        ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS;
    ab.http_status = 199;
    assert_null(build(&pb, err));
    assert_non_null(strstr(err, "abort.http_status"));
    ab.http_status = 503;
    pb.abort_percent_runtime = "my.key";
    s = build(&pb, err);
    assert_non_null(s);
    assert_string_equal(s->abort_percent_rt, "my.key");
    /* no percentage: the message's default, 0% */
    assert_int_equal(s->abort_pct.numerator, 0);
    assert_int_equal(s->abort_pct.denominator, 100);
    sharp_fault_settings_free(s);
    /* a denominator the enum does not define is refused, as Envoy's
     * validation (enum defined_only) refuses it, never read as HUNDRED */
    Envoy__Type__V3__FractionalPercent bad = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__INIT;
    bad.numerator = 5;
    bad.denominator = 3;
    ab.percentage = &bad;
    assert_null(build(&pb, err));
    assert_string_equal(err, "abort.percentage.denominator: unknown");
    bad.denominator = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND;
    s = build(&pb, err);
    assert_non_null(s);
    assert_int_equal(s->abort_pct.numerator, 5);
    assert_int_equal(s->abort_pct.denominator, 10000);
    sharp_fault_settings_free(s);
    ab.percentage = NULL;
    pb.abort = NULL;

    delay_pb_t d = ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__INIT;
    pb.delay = &d;
    assert_null(build(&pb, err));
    assert_string_equal(err, "delay.fault_delay_secifier: value is required");
    Google__Protobuf__Duration dur = GOOGLE__PROTOBUF__DURATION__INIT;
    d.fault_delay_secifier_case =
        ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY;
    d.fixed_delay = &dur;
    assert_null(build(&pb, err));
    assert_string_equal(err, "delay.fixed_delay: value must be greater than 0s");
    dur.seconds = 1;
    dur.nanos = 250999999;
    s = build(&pb, err);
    assert_non_null(s);
    assert_int_equal(s->delay_ms, 1250); /* whole milliseconds */
    sharp_fault_settings_free(s);
    pb.delay = NULL;

    rate_pb_t r = ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__INIT;
    Envoy__Extensions__Filters__Common__Fault__V3__FaultRateLimit__FixedLimit fl =
        ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__FIXED_LIMIT__INIT;
    pb.response_rate_limit = &r;
    assert_null(build(&pb, err));
    assert_string_equal(err, "response_rate_limit.limit_type: value is required");
    r.limit_type_case =
        ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__LIMIT_TYPE_FIXED_LIMIT;
    r.fixed_limit = &fl;
    assert_null(build(&pb, err));
    assert_non_null(strstr(err, "limit_kbps"));
    pb.response_rate_limit = NULL;

    /* filter_metadata: a struct kept for the namespace; empty without it */
    s = build(&pb, err);
    assert_non_null(s);
    assert_int_equal(s->metadata.kind, SHARP_MD_STRUCT);
    assert_int_equal(s->metadata.n, 0);
    sharp_fault_settings_free(s);
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v.string_value = "injected";
    Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    fe.key = "fault";
    fe.value = &v;
    Google__Protobuf__Struct__FieldsEntry *fes[] = {&fe};
    Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
    st.n_fields = 1;
    st.fields = fes;
    pb.filter_metadata = &st;
    s = build(&pb, err);
    assert_non_null(s);
    const sharp_md_value_t *got = sharp_md_struct_get(&s->metadata, "fault", 5);
    assert_non_null(got);
    assert_string_equal(got->s, "injected");
    /* it replaces the namespace of a stream's metadata, whatever was there */
    sharp_dynamic_metadata_t *md = NULL;
    sharp_md_value_t old;
    sharp_md_value_string(&old, "x", 1);
    sharp_dynamic_metadata_set(&md, "ns", 2, "before", 6, &old);
    sharp_dynamic_metadata_replace(&md, "ns", 2, &s->metadata);
    const sharp_md_value_t *ns = sharp_dynamic_metadata_ns(md, "ns", 2);
    assert_int_equal(ns->n, 1);
    assert_null(sharp_md_struct_get(ns, "before", 6));
    assert_string_equal(sharp_md_struct_get(ns, "fault", 5)->s, "injected");
    sharp_dynamic_metadata_free(md);
    sharp_fault_settings_free(s);
}

/* A settings with a fixed abort and delay at n out of 100, or header ones. */
static sharp_fault_settings_t *settings(bool from_header, uint32_t pct, uint32_t den_enum)
{
    sharp_fault_pb_t pb = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
    Envoy__Type__V3__FractionalPercent p = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__INIT;
    p.numerator = pct;
    p.denominator = den_enum;
    abort_pb_t ab = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__INIT;
    Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort__HeaderAbort ha =
        ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__HEADER_ABORT__INIT;
    delay_pb_t d = ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__INIT;
    Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay__HeaderDelay hd =
        ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__HEADER_DELAY__INIT;
    Google__Protobuf__Duration dur = GOOGLE__PROTOBUF__DURATION__INIT;
    dur.nanos = 300 * 1000000;
    rate_pb_t r = ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__INIT;
    Envoy__Extensions__Filters__Common__Fault__V3__FaultRateLimit__FixedLimit fl =
        ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__FIXED_LIMIT__INIT;
    Envoy__Extensions__Filters__Common__Fault__V3__FaultRateLimit__HeaderLimit hl =
        ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__HEADER_LIMIT__INIT;
    fl.limit_kbps = 64;
    if (from_header) {
        ab.error_type_case =
            ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HEADER_ABORT;
        ab.header_abort = &ha;
        d.fault_delay_secifier_case =
            ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_HEADER_DELAY;
        d.header_delay = &hd;
        r.limit_type_case =
            ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__LIMIT_TYPE_HEADER_LIMIT;
        r.header_limit = &hl;
    } else {
        ab.error_type_case =
            ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS;
        ab.http_status = 503;
        d.fault_delay_secifier_case =
            ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY;
        d.fixed_delay = &dur;
        r.limit_type_case =
            ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__LIMIT_TYPE_FIXED_LIMIT;
        r.fixed_limit = &fl;
    }
    ab.percentage = d.percentage = r.percentage = &p;
    pb.abort = &ab;
    pb.delay = &d;
    pb.response_rate_limit = &r;
    char err[256];
    sharp_fault_settings_t *s = build(&pb, err);
    assert_non_null(s);
    return s;
}

static void fixed_percentages(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_fault_settings_t *s =
        settings(false, 30, ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED);
    uint64_t ms = 0, kbps = 0;
    uint32_t http = 0;
    int64_t grpc = 0;
    /* random % 100 < 30 */
    assert_true(sharp_fault_delay(s, &h, NULL, 129, &ms) && ms == 300);
    assert_false(sharp_fault_delay(s, &h, NULL, 130, &ms));
    assert_true(sharp_fault_abort(s, &h, NULL, 29, &http, &grpc) && http == 503 && grpc == -1);
    assert_false(sharp_fault_abort(s, &h, NULL, 30, &http, &grpc));
    assert_true(sharp_fault_rate(s, &h, 0, &kbps) && kbps == 64);
    assert_false(sharp_fault_rate(s, &h, 99, &kbps));
    /* the header percentages only apply to header-controlled faults */
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-request-percentage", "0");
    assert_true(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc));
    sharp_fault_settings_free(s);
    /* MILLION: 1 in a million */
    s = settings(false, 1, ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__MILLION);
    assert_true(sharp_fault_abort(s, &h, NULL, 3000000, &http, &grpc));
    assert_false(sharp_fault_abort(s, &h, NULL, 3000001, &http, &grpc));
    sharp_fault_settings_free(s);
    sharp_headers_free(&h);
}

static void header_faults(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_fault_settings_t *s =
        settings(true, 5000, ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND);
    uint64_t ms = 0, kbps = 0;
    uint32_t http = 0;
    int64_t grpc = 0;
    /* without the headers: nothing, though the percentage is drawn */
    assert_false(sharp_fault_delay(s, &h, NULL, 0, &ms));
    assert_false(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc));
    assert_false(sharp_fault_rate(s, &h, 0, &kbps));
    sharp_headers_add_cstr(&h, "x-envoy-fault-delay-request", "250");
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-grpc-request", "14");
    sharp_headers_add_cstr(&h, "x-envoy-fault-throughput-response", "0");
    assert_true(sharp_fault_delay(s, &h, NULL, 4999, &ms) && ms == 250);
    assert_false(sharp_fault_delay(s, &h, NULL, 5000, &ms));
    /* no HTTP status header: the gRPC one, with HTTP 200 */
    assert_true(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc) && http == 200 && grpc == 14);
    /* a throughput of 0 is no limit */
    assert_false(sharp_fault_rate(s, &h, 0, &kbps));
    sharp_headers_free(&h);

    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-request", "429");
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-grpc-request", "14");
    sharp_headers_add_cstr(&h, "x-envoy-fault-throughput-response", "10");
    /* the HTTP status wins */
    assert_true(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc) && http == 429 && grpc == -1);
    assert_true(sharp_fault_rate(s, &h, 0, &kbps) && kbps == 10);
    /* the header's percentage is over the config's denominator, capped by its numerator */
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-request-percentage", "10");
    sharp_headers_add_cstr(&h, "x-envoy-fault-throughput-response-percentage", "9000");
    assert_true(sharp_fault_abort(s, &h, NULL, 9, &http, &grpc));
    assert_false(sharp_fault_abort(s, &h, NULL, 10, &http, &grpc));
    assert_true(sharp_fault_rate(s, &h, 4999, &kbps));
    assert_false(sharp_fault_rate(s, &h, 5000, &kbps));
    sharp_headers_free(&h);

    /* an HTTP status outside [200, 600) is no status; a bad gRPC one none */
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-request", "600");
    assert_false(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc));
    sharp_headers_add_cstr(&h, "x-envoy-fault-abort-grpc-request", "x");
    assert_false(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc));
    sharp_headers_free(&h);
    sharp_fault_settings_free(s);
}

static void runtime_overrides(void **state)
{
    (void)state;
    sharp_runtime_t *rt = sharp_runtime_create();
    char err[128];
    assert_int_equal(
        sharp_runtime_add_layer(rt, "admin", SHARP_RUNTIME_LAYER_ADMIN, err, sizeof err), 0);
    sharp_runtime_load(rt);
    const char *keys[] = {
        "fault.http.abort.abort_percent",     "fault.http.abort.http_status",
        "fault.http.delay.fixed_duration_ms", "fault.http.web.delay.fixed_duration_ms",
        "fault.http.web.abort.abort_percent", "fault.http.max_active_faults"};
    const char *vals[] = {"100", "418", "20", "7", "0", "3"};
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 6, err, sizeof err), 0);
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_fault_settings_t *s =
        settings(false, 0, ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED);
    uint64_t ms = 0;
    uint32_t http = 0;
    int64_t grpc = 0;
    /* the runtime's 100% over the config's 0%, and its status */
    assert_true(sharp_fault_abort(s, &h, NULL, 99, &http, &grpc) && http == 418);
    assert_int_equal(sharp_fault_max_active(s), 3);
    /* a downstream cluster's percent key replaces the default one */
    sharp_fault_dc_keys_t dc;
    assert_true(sharp_fault_dc_keys_init(&dc, s, str("web")));
    assert_string_equal(dc.delay_percent, "fault.http.web.delay.fixed_delay_percent");
    assert_string_equal(dc.abort_grpc_status, "fault.http.web.abort.grpc_status");
    assert_false(sharp_fault_abort(s, &h, &dc, 0, &http, &grpc));
    sharp_fault_settings_free(s);
    /* durations: the default key, then the cluster's */
    s = settings(false, 100, ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED);
    assert_true(sharp_fault_delay(s, &h, NULL, 0, &ms) && ms == 20);
    assert_true(sharp_fault_delay(s, &h, &dc, 0, &ms) && ms == 7);
    sharp_fault_dc_keys_free(&dc);
    assert_true(sharp_fault_dc_keys_init(&dc, s, str("other")));
    assert_true(sharp_fault_delay(s, &h, &dc, 0, &ms) && ms == 20);
    /* a runtime status that is not one keeps the configured status */
    const char *k2[] = {"fault.http.abort.http_status"}, *v2[] = {"0"};
    assert_int_equal(sharp_runtime_merge_admin(rt, k2, v2, 1, err, sizeof err), 0);
    assert_true(sharp_fault_abort(s, &h, NULL, 0, &http, &grpc) && http == 503);
    sharp_fault_dc_keys_free(&dc);
    sharp_fault_settings_free(s);
    /* only the keys the settings read are built: none without a delay or
     * an abort, the delay's without an abort */
    sharp_fault_pb_t pb = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
    s = build(&pb, err);
    assert_non_null(s);
    assert_false(sharp_fault_dc_keys_init(&dc, s, str("web")));
    assert_null(dc.delay_percent);
    assert_null(dc.abort_percent);
    s->has_delay = true;
    assert_true(sharp_fault_dc_keys_init(&dc, s, str("web")));
    assert_string_equal(dc.delay_duration, "fault.http.web.delay.fixed_duration_ms");
    assert_null(dc.abort_http_status);
    sharp_fault_dc_keys_free(&dc);
    sharp_fault_settings_free(s);
    sharp_headers_free(&h);
    sharp_runtime_free(rt);
}

static void targets(void **state)
{
    (void)state;
    char err[256];
    sharp_fault_pb_t pb = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
    char *nodes[] = {"a", "bb"};
    pb.downstream_nodes = nodes;
    pb.n_downstream_nodes = 2;
    pb.upstream_cluster = "up";
    sharp_fault_settings_t *s = build(&pb, err);
    assert_non_null(s);
    sharp_headers_t h;
    sharp_headers_init(&h);
    assert_false(sharp_fault_matches(s, &h, "up")); /* no node header */
    sharp_headers_add_cstr(&h, "x-envoy-downstream-service-node", "bb");
    assert_true(sharp_fault_matches(s, &h, "up"));
    assert_false(sharp_fault_matches(s, &h, "upx"));
    assert_false(sharp_fault_matches(s, &h, NULL));
    sharp_headers_free(&h);
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-envoy-downstream-service-node", "b");
    assert_false(sharp_fault_matches(s, &h, "up"));
    sharp_headers_free(&h);
    sharp_fault_settings_free(s);
}

static void rate_bucket(void **state)
{
    (void)state;
    sharp_fault_bucket_t b;
    uint64_t t0 = 1000 * 1000 * MS;
    sharp_fault_bucket_init(&b, 100, t0);
    /* one fill interval's worth at first: 100 KiB/s * 50 ms */
    assert_int_equal(sharp_fault_bucket_take(&b, 1 << 20, t0), 5120);
    assert_int_equal(sharp_fault_bucket_take(&b, 1 << 20, t0), 0);
    /* 50 ms later, another 5120 bytes; a smaller want takes only that */
    assert_int_equal(sharp_fault_bucket_take(&b, 1000, t0 + 50 * MS), 1000);
    assert_int_equal(sharp_fault_bucket_take(&b, 1 << 20, t0 + 50 * MS), 4120);
    /* a long idle time fills it to a second's worth, no more */
    assert_int_equal(sharp_fault_bucket_take(&b, 1 << 30, t0 + 3600000 * MS), 102400);
    /* fractions of a byte wait for the next whole one */
    uint64_t t = t0 + 3600000 * MS;
    assert_int_equal(sharp_fault_bucket_take(&b, 10, t + 5000), 0);
    assert_int_equal(sharp_fault_bucket_take(&b, 10, t + 10000), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_atoi),       cmocka_unit_test(config_checks),
        cmocka_unit_test(fixed_percentages), cmocka_unit_test(header_faults),
        cmocka_unit_test(runtime_overrides), cmocka_unit_test(targets),
        cmocka_unit_test(rate_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

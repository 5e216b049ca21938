/* fault_config.c: the fault injection filter's settings and decisions, as
 * Envoy's FaultSettings (fault_filter.cc) and filters/common/fault
 * (fault_config.cc) make them. */
#include "filters/fault/fault_config.h"
#include "config/route_config.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort abort_pb_t;
typedef Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay delay_pb_t;
typedef Envoy__Extensions__Filters__Common__Fault__V3__FaultRateLimit rate_pb_t;

/* Envoy's header names (x-envoy- prefix) */
#define H_ABORT "x-envoy-fault-abort-request"
#define H_ABORT_PCT "x-envoy-fault-abort-request-percentage"
#define H_ABORT_GRPC "x-envoy-fault-abort-grpc-request"
#define H_DELAY "x-envoy-fault-delay-request"
#define H_DELAY_PCT "x-envoy-fault-delay-request-percentage"
#define H_RATE "x-envoy-fault-throughput-response"
#define H_RATE_PCT "x-envoy-fault-throughput-response-percentage"
#define H_NODE "x-envoy-downstream-service-node"

/* A percentage field; false (with the error) for a denominator the enum does
 * not define, which Envoy's validation refuses. */
static bool percent_from(const Envoy__Type__V3__FractionalPercent *p, const char *field,
                         sharp_fault_percent_t *out, char *err, size_t errlen)
{
    /* an absent percentage is the message's default: 0 out of 100 */
    *out = (sharp_fault_percent_t){0, 100};
    if (!p) return true;
    out->denominator = sharp_fractional_denominator(p->denominator);
    if (!out->denominator) {
        snprintf(err, errlen, "%s.percentage.denominator: unknown", field);
        return false;
    }
    out->numerator = p->numerator;
    return true;
}

static char *key_or(const char *configured, const char *envoy_default)
{
    return sharp_strdup(configured && configured[0] ? configured : envoy_default);
}

void sharp_fault_settings_free(sharp_fault_settings_t *s)
{
    if (!s) return;
    for (uint32_t i = 0; i < s->nheaders; i++) {
        free(s->headers[i].name);
        sharp_string_matcher_free(&s->headers[i].sm);
    }
    free(s->headers);
    for (uint32_t i = 0; i < s->ndownstream_nodes; i++)
        free(s->downstream_nodes[i]);
    free(s->downstream_nodes);
    free(s->downstream_node_lens);
    free(s->upstream_cluster);
    free(s->delay_percent_rt);
    free(s->abort_percent_rt);
    free(s->delay_duration_rt);
    free(s->abort_http_status_rt);
    free(s->abort_grpc_status_rt);
    free(s->max_active_rt);
    free(s->rate_percent_rt);
    sharp_md_value_clear(&s->metadata);
    free(s);
}

sharp_fault_settings_t *sharp_fault_settings_create(const sharp_fault_pb_t *pb, char *err,
                                                    size_t errlen)
{
    sharp_fault_settings_t *s = sharp_calloc(1, sizeof *s);
    s->metadata.kind = SHARP_MD_STRUCT;
    if (pb->filter_metadata && !sharp_md_value_from_struct(pb->filter_metadata, &s->metadata)) {
        snprintf(err, errlen, "filter_metadata: a string is not valid UTF-8");
        goto fail;
    }
    const delay_pb_t *d = pb->delay;
    if (d) {
        switch (d->fault_delay_secifier_case) {
        case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY: {
            const Google__Protobuf__Duration *fd = d->fixed_delay;
            int64_t ns = fd ? fd->seconds * 1000000000ll + fd->nanos : 0;
            if (ns <= 0) {
                snprintf(err, errlen, "delay.fixed_delay: value must be greater than 0s");
                goto fail;
            }
            s->delay_ms = (uint64_t)ns / 1000000; /* PROTOBUF_GET_MS_REQUIRED */
            break;
        }
        case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_HEADER_DELAY:
            s->delay_from_header = true;
            break;
        default:
            snprintf(err, errlen, "delay.fault_delay_secifier: value is required");
            goto fail;
        }
        s->has_delay = true;
        if (!percent_from(d->percentage, "delay", &s->delay_pct, err, errlen)) goto fail;
    }
    const abort_pb_t *a = pb->abort;
    if (a) {
        switch (a->error_type_case) {
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS:
            if (a->http_status < 200 || a->http_status >= 600) {
                snprintf(err, errlen, "abort.http_status: value must be inside range [200, 600)");
                goto fail;
            }
            s->abort_kind = SHARP_FAULT_ABORT_HTTP;
            s->abort_status = a->http_status;
            break;
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS:
            s->abort_kind = SHARP_FAULT_ABORT_GRPC;
            s->abort_status = a->grpc_status;
            break;
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HEADER_ABORT:
            s->abort_kind = SHARP_FAULT_ABORT_HEADER;
            break;
        default:
            snprintf(err, errlen, "abort.error_type: value is required");
            goto fail;
        }
        s->has_abort = true;
        if (!percent_from(a->percentage, "abort", &s->abort_pct, err, errlen)) goto fail;
    }
    const rate_pb_t *r = pb->response_rate_limit;
    if (r) {
        switch (r->limit_type_case) {
        case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__LIMIT_TYPE_FIXED_LIMIT:
            if (!r->fixed_limit || r->fixed_limit->limit_kbps < 1) {
                snprintf(err, errlen,
                         "response_rate_limit.fixed_limit.limit_kbps: value must be greater than "
                         "or equal "
                         "to 1");
                goto fail;
            }
            s->rate_kbps = r->fixed_limit->limit_kbps;
            break;
        case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_RATE_LIMIT__LIMIT_TYPE_HEADER_LIMIT:
            s->rate_from_header = true;
            break;
        default:
            snprintf(err, errlen, "response_rate_limit.limit_type: value is required");
            goto fail;
        }
        s->has_rate_limit = true;
        if (!percent_from(r->percentage, "response_rate_limit", &s->rate_pct, err, errlen)) goto fail;
    }
    if (pb->upstream_cluster && pb->upstream_cluster[0])
        s->upstream_cluster = sharp_strdup(pb->upstream_cluster);
    s->headers = sharp_calloc(pb->n_headers ? pb->n_headers : 1, sizeof *s->headers);
    for (size_t i = 0; i < pb->n_headers; i++) {
        char path[32];
        snprintf(path, sizeof path, "headers[%zu]", i);
        s->nheaders++;
        if (sharp_config_header_matcher(pb->headers[i], path, &s->headers[i], err, errlen) < 0)
            goto fail;
    }
    s->downstream_nodes =
        sharp_calloc(pb->n_downstream_nodes ? pb->n_downstream_nodes : 1, sizeof(char *));
    s->downstream_node_lens =
        sharp_calloc(pb->n_downstream_nodes ? pb->n_downstream_nodes : 1, sizeof(size_t));
    for (size_t i = 0; i < pb->n_downstream_nodes; i++) {
        s->downstream_node_lens[s->ndownstream_nodes] = strlen(pb->downstream_nodes[i]);
        s->downstream_nodes[s->ndownstream_nodes++] = sharp_strdup(pb->downstream_nodes[i]);
    }
    if (pb->max_active_faults) {
        s->has_max_active = true;
        s->max_active = pb->max_active_faults->value;
    }
    s->delay_percent_rt = key_or(pb->delay_percent_runtime, "fault.http.delay.fixed_delay_percent");
    s->abort_percent_rt = key_or(pb->abort_percent_runtime, "fault.http.abort.abort_percent");
    s->delay_duration_rt = key_or(pb->delay_duration_runtime, "fault.http.delay.fixed_duration_ms");
    s->abort_http_status_rt = key_or(pb->abort_http_status_runtime, "fault.http.abort.http_status");
    s->abort_grpc_status_rt = key_or(pb->abort_grpc_status_runtime, "fault.http.abort.grpc_status");
    s->max_active_rt = key_or(pb->max_active_faults_runtime, "fault.http.max_active_faults");
    s->rate_percent_rt =
        key_or(pb->response_rate_limit_percent_runtime, "fault.http.rate_limit.response_percent");
    s->disable_downstream_cluster_stats = pb->disable_downstream_cluster_stats;
    return s;
fail:
    sharp_fault_settings_free(s);
    return NULL;
}


bool sharp_fault_matches(const sharp_fault_settings_t *s, const sharp_headers_t *h,
                         const char *route_cluster)
{
    /* Envoy: the route entry's cluster name must be upstream_cluster */
    if (s->upstream_cluster && (!route_cluster || strcmp(route_cluster, s->upstream_cluster) != 0))
        return false;
    if (s->ndownstream_nodes) {
        sharp_str_t node;
        if (!sharp_headers_get_cstr(h, H_NODE, &node)) return false;
        bool found = false;
        for (uint32_t i = 0; i < s->ndownstream_nodes && !found; i++)
            found = s->downstream_node_lens[i] == node.len &&
                    !memcmp(s->downstream_nodes[i], node.p, node.len);
        if (!found) return false;
    }
    for (uint32_t i = 0; i < s->nheaders; i++)
        if (!sharp_header_matcher_match(&s->headers[i], h)) return false;
    return true;
}

static char *keyf(const char *fmt, sharp_str_t c)
{
    sharp_sbuf_t b = {0};
    sharp_sbuf_printf(&b, fmt, (int)c.len, c.p);
    return b.data;
}

bool sharp_fault_dc_keys_init(sharp_fault_dc_keys_t *k, const sharp_fault_settings_t *s, sharp_str_t c)
{
    memset(k, 0, sizeof *k);
    if (s->has_delay) {
        k->delay_percent = keyf("fault.http.%.*s.delay.fixed_delay_percent", c);
        k->delay_duration = keyf("fault.http.%.*s.delay.fixed_duration_ms", c);
    }
    if (s->has_abort) {
        k->abort_percent = keyf("fault.http.%.*s.abort.abort_percent", c);
        k->abort_http_status = keyf("fault.http.%.*s.abort.http_status", c);
        k->abort_grpc_status = keyf("fault.http.%.*s.abort.grpc_status", c);
    }
    return s->has_delay || s->has_abort;
}

void sharp_fault_dc_keys_free(sharp_fault_dc_keys_t *k)
{
    free(k->delay_percent);
    free(k->abort_percent);
    free(k->delay_duration);
    free(k->abort_http_status);
    free(k->abort_grpc_status);
    memset(k, 0, sizeof *k);
}

/* HeaderPercentageProvider: with a header-controlled fault, the header's
 * numerator (at most the configured one) over the configured denominator;
 * the configured percentage when the header is absent or not a number. */
static sharp_fault_percent_t header_percent(sharp_fault_percent_t p, const sharp_headers_t *h,
                                            const char *name)
{
    sharp_str_t v;
    uint64_t n;
    if (!sharp_headers_get_cstr(h, name, &v) || !sharp_simple_atou(v, UINT32_MAX, &n))
        return p;
    if (n < p.numerator) p.numerator = (uint32_t)n;
    return p;
}

static bool enabled(const char *key, sharp_fault_percent_t p, uint64_t random)
{
    return sharp_runtime_fraction_enabled(key, p.numerator, p.denominator, random);
}

bool sharp_fault_delay(const sharp_fault_settings_t *s, const sharp_headers_t *h,
                       const sharp_fault_dc_keys_t *dc, uint64_t random, uint64_t *ms)
{
    if (!s->has_delay) return false;
    sharp_fault_percent_t p =
        s->delay_from_header ? header_percent(s->delay_pct, h, H_DELAY_PCT) : s->delay_pct;
    /* a downstream cluster's key replaces the percentage key (Envoy's isDelayEnabled) */
    if (!enabled(dc ? dc->delay_percent : s->delay_percent_rt, p, random)) return false;
    uint64_t d = s->delay_ms;
    if (s->delay_from_header) {
        sharp_str_t v;
        if (!sharp_headers_get_cstr(h, H_DELAY, &v) || !sharp_simple_atou(v, UINT64_MAX, &d))
            return false;
    }
    d = sharp_runtime_get_u64(s->delay_duration_rt, d);
    if (dc) d = sharp_runtime_get_u64(dc->delay_duration, d);
    if (d == 0) return false;
    *ms = d;
    return true;
}

bool sharp_fault_abort(const sharp_fault_settings_t *s, const sharp_headers_t *h,
                       const sharp_fault_dc_keys_t *dc, uint64_t random, uint32_t *http,
                       int64_t *grpc)
{
    if (!s->has_abort) return false;
    bool from_header = s->abort_kind == SHARP_FAULT_ABORT_HEADER;
    sharp_fault_percent_t p =
        from_header ? header_percent(s->abort_pct, h, H_ABORT_PCT) : s->abort_pct;
    if (!enabled(dc ? dc->abort_percent : s->abort_percent_rt, p, random)) return false;
    /* the HTTP status first: a fixed http_status, or the header's in [200, 600) */
    uint64_t code = 0;
    bool has_http = false;
    if (s->abort_kind == SHARP_FAULT_ABORT_HTTP) {
        code = s->abort_status;
        has_http = true;
    } else if (from_header) {
        sharp_str_t v;
        has_http = sharp_headers_get_cstr(h, H_ABORT, &v) &&
                   sharp_simple_atou(v, UINT64_MAX, &code) && code >= 200 && code < 600;
    }
    if (has_http) {
        /* a downstream cluster's key replaces the status key, both defaulting
         * to the configured status; Envoy leaves a runtime status unchecked,
         * SHARP keeps the configured one when the runtime's is not a status */
        uint64_t rt =
            sharp_runtime_get_u64(dc ? dc->abort_http_status : s->abort_http_status_rt, code);
        *http = rt >= 200 && rt < 600 ? (uint32_t)rt : (uint32_t)code;
        *grpc = -1;
        return true;
    }
    uint64_t g = 0;
    bool has_grpc = false;
    if (s->abort_kind == SHARP_FAULT_ABORT_GRPC) {
        g = s->abort_status;
        has_grpc = true;
    } else if (from_header) {
        sharp_str_t v;
        has_grpc = sharp_headers_get_cstr(h, H_ABORT_GRPC, &v) &&
                   sharp_simple_atou(v, UINT32_MAX, &g);
    }
    if (!has_grpc) return false;
    uint64_t rt = sharp_runtime_get_u64(dc ? dc->abort_grpc_status : s->abort_grpc_status_rt, g);
    *http = 200;
    *grpc = (int64_t)(rt <= UINT32_MAX ? rt : g);
    return true;
}

bool sharp_fault_rate(const sharp_fault_settings_t *s, const sharp_headers_t *h, uint64_t random,
                      uint64_t *kbps)
{
    if (!s->has_rate_limit) return false;
    sharp_fault_percent_t p =
        s->rate_from_header ? header_percent(s->rate_pct, h, H_RATE_PCT) : s->rate_pct;
    if (!enabled(s->rate_percent_rt, p, random)) return false;
    uint64_t k = s->rate_kbps;
    if (s->rate_from_header) {
        sharp_str_t v;
        if (!sharp_headers_get_cstr(h, H_RATE, &v) || !sharp_simple_atou(v, UINT64_MAX, &k) ||
            k == 0)
            return false;
    }
    /* SHARP: bytes per second must fit the bucket's arithmetic */
    if (k > UINT64_MAX / 1024 / 1000) k = UINT64_MAX / 1024 / 1000;
    *kbps = k;
    return true;
}

uint64_t sharp_fault_max_active(const sharp_fault_settings_t *s)
{
    return sharp_runtime_get_u64(s->max_active_rt, s->has_max_active ? s->max_active : UINT64_MAX);
}

void sharp_fault_bucket_init(sharp_fault_bucket_t *b, uint64_t kbps, uint64_t now_ns)
{
    b->max = (double)kbps * 1024.0;
    b->per_ns = b->max / 1e9;
    b->tokens = b->max * SHARP_FAULT_FILL_INTERVAL_MS / 1000.0;
    b->last_ns = now_ns;
}

uint64_t sharp_fault_bucket_take(sharp_fault_bucket_t *b, uint64_t want, uint64_t now_ns)
{
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) * b->per_ns;
        if (b->tokens > b->max) b->tokens = b->max;
        b->last_ns = now_ns;
    }
    uint64_t have = b->tokens >= 1.0 ? (uint64_t)b->tokens : 0;
    uint64_t take = want < have ? want : have;
    b->tokens -= (double)take;
    return take;
}

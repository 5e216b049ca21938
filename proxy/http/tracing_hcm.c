/* tracing_hcm.c: tracing in the connection manager (Envoy's
 * ActiveStream::traceRequest, the router's injectContext and
 * HttpTracerUtility::finalizeDownstreamSpan); see tracing.h. */
#include "http/conn_internal.h"
#include "http/stream.h"
#include "http/tracing.h"
#include "http/datadog.h"
#include "http/otel.h"
#include "http/skywalking.h"
#include "http/zipkin.h"
#include "log.h"
#include "upstream/shadow.h"
#include "worker.h"

#include <stdio.h>
#include <strings.h>
#include <unistd.h>

static uint64_t stream_random(void *w)
{
    return w ? sharp_worker_random(w) : sharp_now_ns();
}

/* Envoy's chargeTracingStats. */
static void charge(sharp_stream_t *s, const sharp_tracing_config_t *tc, sharp_trace_reason_t r)
{
    if (!s->conn) return;
    sharp_stats_shard_t *sh = sharp_stream_worker(s)->stats;
    switch (r) {
    case SHARP_TRACE_CLIENT_FORCED: sharp_counter_inc(sh, tc->st.client_enabled); break;
    case SHARP_TRACE_SAMPLING: sharp_counter_inc(sh, tc->st.random_sampling); break;
    case SHARP_TRACE_SERVICE_FORCED: sharp_counter_inc(sh, tc->st.service_forced); break;
    case SHARP_TRACE_HEALTH_CHECK: sharp_counter_inc(sh, tc->st.health_check); break;
    default: sharp_counter_inc(sh, tc->st.not_traceable); break;
    }
}

void sharp_tracing_begin(sharp_stream_t *s)
{
    const sharp_tracing_config_t *tc = s->hcm->tracing;
    if (!tc) return;
    sharp_worker_t *w = s->conn ? sharp_stream_worker(s) : NULL;
    sharp_headers_t *h = &s->req;
    /* the decision, carried in x-request-id */
    sharp_trace_inputs_t in = {
        .client_trace_id = sharp_headers_get_cstr(h, "x-client-trace-id", NULL),
        .force_trace = sharp_headers_get_cstr(h, "x-envoy-force-trace", NULL),
        .client_random = stream_random(w),
    };
    /* the decision reads the id's first 8 characters and, in a 36-byte
     * UUID, its 15th, which it may rewrite: a copy of the start is enough */
    char rid[40];
    sharp_str_t v = {"", 0};
    bool have = sharp_headers_get_cstr(h, "x-request-id", &v);
    if (have) memcpy(rid, v.p, v.len < sizeof rid ? v.len : sizeof rid);
    bool decided;
    /* a route's tracing replaces the connection manager's fractions */
    const sharp_trace_sampling_t *f = s->route && s->route->has_tracing ? &s->route->tracing : &tc->sampling;
    sharp_trace_reason_t reason = sharp_tracing_decide(f, have ? rid : NULL, v.len, &in, &decided);
    if (decided && v.len == 36 && memcmp(rid, v.p, 36) != 0) {
        sharp_headers_set(h, "x-request-id", 12, rid, 36);
        sharp_copy_str(s->info.request_id, sizeof s->info.request_id, rid, 36);
    }
    /* Envoy's shouldTraceRequest */
    if (s->info.health_check) reason = SHARP_TRACE_HEALTH_CHECK;
    charge(s, tc, reason);
    bool traced = reason == SHARP_TRACE_SAMPLING || reason == SHARP_TRACE_SERVICE_FORCED ||
                  reason == SHARP_TRACE_CLIENT_FORCED;
    /* the span: the request's B3 sampling flag wins over the decision */
    if (tc->zipkin) {
        int flag = sharp_b3_sampled(h);
        bool sampled = flag >= 0 ? flag == 1 : traced;
        sharp_b3_context_t ctx;
        const char *why = "";
        int rc = sharp_b3_extract(h, sampled, &ctx, &why);
        if (rc < 0) {
            /* Envoy's NullSpan: no span, nothing injected */
            sharp_debug(http, "[C%llu][S%llu] no span: %s", s->conn_id, s->id, why);
        } else {
            sharp_str_t host = {"", 0};
            sharp_headers_get_cstr(h, ":authority", &host);
            s->span = sharp_calloc(1, sizeof *s->span);
            sharp_span_start(s->span, tc, rc ? &ctx : NULL, sampled, host.p, host.len, s->info.start_wall_us,
                             s->info.start_ns, stream_random, w);
            sharp_span_tag_cstr(s->span, "node_id", tc->node_id);
            sharp_span_tag_cstr(s->span, "zone", tc->zone);
        }
    } else if (tc->otel) {
        /* Envoy's OpenTelemetry Driver::startSpan: a traceparent that does
         * not parse gives no span (a NullSpan); without one, a new trace
         * sampled as decided */
        sharp_str_t tp, ts = {"", 0};
        bool have_tp = sharp_headers_get_cstr(h, "traceparent", &tp);
        sharp_w3c_context_t ctx;
        const char *why = "";
        if (have_tp && sharp_traceparent_parse(tp.p, tp.len, &ctx, &why) < 0) {
            sharp_debug(http, "[C%llu][S%llu] no span: %s", s->conn_id, s->id, why);
        } else {
            if (have_tp) sharp_headers_get_cstr(h, "tracestate", &ts);
            /* the operation name: "ingress", or "egress <host>" */
            sharp_str_t host = {"", 0};
            sharp_headers_get_cstr(h, ":authority", &host);
            char name[300];
            int n = tc->egress ? snprintf(name, sizeof name, "egress %.*s", (int)(host.len < 280 ? host.len : 280), host.p)
                               : snprintf(name, sizeof name, "ingress");
            s->span = sharp_calloc(1, sizeof *s->span);
            sharp_span_start_otel(s->span, tc->egress, have_tp ? &ctx : NULL, ts.p, ts.len, traced, name, (size_t)n,
                                  s->info.start_wall_us, s->info.start_ns, stream_random, w);
            sharp_span_tag_cstr(s->span, "node_id", tc->node_id);
            sharp_span_tag_cstr(s->span, "zone", tc->zone);
        }
    } else if (tc->datadog) {
        /* Envoy's Datadog Tracer::startSpan: the caller's context (Datadog,
         * then W3C headers), else a new trace; a context that does not
         * parse starts a new trace too. Every request has a span: the
         * decision is its sampling priority. The operation name ("ingress",
         * "egress <host>") is the span's resource. */
        sharp_dd_context_t ctx;
        const char *why = "";
        int rc = sharp_dd_extract(h, &ctx, &why);
        if (rc < 0)
            sharp_debug(http, "[C%llu][S%llu] Unable to extract span context. Creating a new trace instead: %s",
                        s->conn_id, s->id, why);
        sharp_str_t host = {"", 0};
        sharp_headers_get_cstr(h, ":authority", &host);
        char name[300];
        int n = tc->egress ? snprintf(name, sizeof name, "egress %.*s", (int)(host.len < 280 ? host.len : 280), host.p)
                           : snprintf(name, sizeof name, "ingress");
        s->span = sharp_calloc(1, sizeof *s->span);
        sharp_dd_span_start(s->span, rc > 0 ? &ctx : NULL, traced, w ? sharp_datadog_rate(w, tc->datadog) : NULL,
                            name, (size_t)n, "envoy sharp/" SHARP_VERSION "/Clean/RELEASE/OpenSSL",
                            s->info.start_wall_us, s->info.start_ns, stream_random, w);
        if (rc > 0) sharp_dd_context_free(&ctx);
        sharp_span_tag_cstr(s->span, "node_id", tc->node_id);
        sharp_span_tag_cstr(s->span, "zone", tc->zone);
    } else if (tc->skywalking) {
        /* Envoy's SkyWalking Driver::startSpan: the caller's sw8 context
         * makes a segment whatever the decision (its sampling flag is not
         * read); without one (or one that does not parse) only a traced
         * request has a segment. The entry span is named by the path. */
        sharp_str_t sw;
        sharp_sw8_t ctx;
        bool parsed = false;
        if (sharp_headers_get_cstr(h, "sw8", &sw)) {
            const char *why = "";
            parsed = sharp_sw8_parse(sw.p, sw.len, &ctx, &why) == 0;
            if (!parsed)
                sharp_warn(http, "[C%llu][S%llu] New SkyWalking Span/Segment with previous span context cannot be "
                           "created for error: %s", s->conn_id, s->id, why);
        }
        if (parsed || traced) {
            sharp_str_t path = {"", 0};
            sharp_headers_get_cstr(h, ":path", &path);
            bool http = s->info.protocol && strstr(s->info.protocol, "HTTP");
            s->span = sharp_sw_start(tc->skywalking, parsed ? &ctx : NULL, path.p, path.len, http,
                                     s->info.start_wall_us, s->info.start_ns, stream_random, w);
            sharp_span_tag_cstr(s->span, "node_id", tc->node_id);
            sharp_span_tag_cstr(s->span, "zone", tc->zone);
        }
    }
    /* the route's decorator names the span */
    if (s->route && s->route->decorator_operation && s->route->decorator_operation[0]) {
        if (s->span) sharp_span_set_name(s->span, s->route->decorator_operation, strlen(s->route->decorator_operation));
        s->decorated_operation = s->route->decorator_operation;
        s->decorated_propagate = s->route->decorator_propagate;
    }
    if (tc->egress) {
        /* passed on for the receiving service's server span */
        if (s->decorated_operation && s->decorated_propagate)
            sharp_headers_set_cstr(h, "x-envoy-decorator-operation", s->decorated_operation);
    } else if (sharp_headers_get_cstr(h, "x-envoy-decorator-operation", &v)) {
        /* the caller's operation overrides the decorator's */
        if (v.len) {
            if (s->span) sharp_span_set_name(s->span, v.p, v.len);
            s->decorated_operation = NULL;
        }
        sharp_headers_remove_cstr(h, "x-envoy-decorator-operation");
    }
    /* a SkyWalking context goes out from the router's child span, once the
     * try has its host (sharp_tracing_child_inject) */
    if (s->span && !s->span->sw) {
        if (s->span->otel) sharp_span_inject_w3c(s->span, h);
        else if (s->span->dd) sharp_dd_inject(s->span, h);
        else sharp_span_inject(s->span, h);
    }
}

void sharp_tracing_response_headers(sharp_stream_t *s, sharp_headers_t *h)
{
    const sharp_tracing_config_t *tc = s->hcm->tracing;
    if (!tc) return;
    if (!tc->egress) {
        if (s->decorated_operation && s->decorated_propagate)
            sharp_headers_set_cstr(h, "x-envoy-decorator-operation", s->decorated_operation);
        return;
    }
    sharp_str_t v;
    if (sharp_headers_get_cstr(h, "x-envoy-decorator-operation", &v)) {
        if (v.len && s->span) sharp_span_set_name(s->span, v.p, v.len);
        sharp_headers_remove_cstr(h, "x-envoy-decorator-operation");
    }
}

static void tag_header(sharp_span_t *sp, const char *key, const sharp_headers_t *h, const char *name)
{
    sharp_str_t v;
    if (h && sharp_headers_get_cstr(h, name, &v)) sharp_span_tag(sp, key, v.p, v.len);
}

/* Envoy's addGrpcResponseTags: the status and message, and error for the
 * statuses that are the server's fault. */
static void grpc_response_tags(sharp_span_t *sp, const sharp_headers_t *h)
{
    sharp_str_t st;
    if (!h || !sharp_headers_get_cstr(h, "grpc-status", &st)) return;
    sharp_span_tag(sp, "grpc.status_code", st.p, st.len);
    tag_header(sp, "grpc.message", h, "grpc-message");
    char buf[8];
    if (!st.len || st.len >= sizeof buf) return;
    memcpy(buf, st.p, st.len);
    buf[st.len] = '\0';
    char *end;
    unsigned long code = strtoul(buf, &end, 10);
    if (*end) return;
    if (sharp_span_has_tag(sp, "error")) return;
    switch (code) {
    case 2:  /* Unknown */
    case 4:  /* DeadlineExceeded */
    case 8:  /* ResourceExhausted */
    case 12: /* Unimplemented */
    case 13: /* Internal */
    case 14: /* Unavailable */
    case 15: /* DataLoss */
        sharp_span_tag_cstr(sp, "error", "true");
        break;
    default: break;
    }
}

/* Envoy's CustomTag::applySpan: a tag whose value is empty is not set. */
static void custom_tags(sharp_span_t *sp, const sharp_custom_tags_t *t, const sharp_custom_tags_t *skip,
                        const sharp_headers_t *h)
{
    for (uint32_t i = 0; i < t->n; i++) {
        const sharp_custom_tag_t *ct = &t->p[i];
        bool overridden = false;
        for (uint32_t k = 0; skip && k < skip->n && !overridden; k++) overridden = !strcmp(skip->p[k].tag, ct->tag);
        if (overridden) continue;
        sharp_str_t v;
        if (ct->header && sharp_headers_get_cstr(h, ct->header, &v)) sharp_span_tag(sp, ct->tag, v.p, v.len);
        else sharp_span_tag_cstr(sp, ct->tag, ct->value);
    }
}

/* The address without its port ("10.0.0.1:5000" -> "10.0.0.1", "[::1]:80"
 * -> "::1"); a pipe's path as it is. */
static size_t address_ip(const char *a, const char **start)
{
    *start = a;
    if (a[0] == '[') {
        const char *e = strchr(a, ']');
        *start = a + 1;
        return e ? (size_t)(e - a - 1) : strlen(a + 1);
    }
    const char *colon = strrchr(a, ':');
    if (!colon || a[0] == '/' || a[0] == '@') return strlen(a);
    return (size_t)(colon - a);
}

/* A SkyWalking span ends; the segment goes to the worker's reporter once
 * all its spans have (Envoy's Tracer::sendSegment and readyToSend). */
static void sw_finish(sharp_stream_t *s, sharp_span_t *sp)
{
    sharp_sw_segment_t *seg = sp->seg;
    if (!s->conn) seg->discard = true;
    if (!sharp_sw_span_finish(sp, sharp_wall_us())) return;
    if (seg->discard) sharp_sw_segment_free(seg);
    else sharp_skywalking_report(sharp_stream_worker(s), s->hcm->tracing->skywalking, seg);
}

void sharp_tracing_finish(sharp_stream_t *s)
{
    sharp_span_t *sp = s->span;
    if (!sp) return;
    s->span = NULL;
    const sharp_tracing_config_t *tc = s->hcm->tracing;
    const sharp_stream_info_t *si = &s->info;
    const sharp_headers_t *h = &s->req;
    if (!sp->sampled || !s->conn) goto out; /* Envoy's Tracer::reportSpan reports sampled spans only */
    /* HttpTracerUtility::finalizeDownstreamSpan */
    tag_header(sp, "guid:x-request-id", h, "x-request-id");
    sharp_str_t path;
    if (sharp_headers_get_cstr(h, "x-envoy-original-path", &path) || sharp_headers_get_cstr(h, ":path", &path)) {
        /* buildOriginalUri: scheme, host and the path cut at max_path_tag_length */
        sharp_str_t proto = {"", 0}, host = {"", 0};
        sharp_headers_get_cstr(h, "x-forwarded-proto", &proto);
        sharp_headers_get_cstr(h, ":authority", &host);
        if (path.len > tc->max_path_tag_length) path.len = tc->max_path_tag_length;
        sharp_sbuf_t url = {0};
        sharp_sbuf_append(&url, proto.p, proto.len);
        sharp_sbuf_puts(&url, "://");
        sharp_sbuf_append(&url, host.p, host.len);
        sharp_sbuf_append(&url, path.p, path.len);
        sharp_span_tag(sp, "http.url", url.data, url.len);
        sharp_sbuf_free(&url);
    }
    tag_header(sp, "http.method", h, ":method");
    sharp_str_t v;
    if (sharp_headers_get_cstr(h, "x-envoy-downstream-service-cluster", &v)) sharp_span_tag(sp, "downstream_cluster", v.p, v.len);
    else sharp_span_tag_cstr(sp, "downstream_cluster", "-");
    if (sharp_headers_get_cstr(h, "user-agent", &v)) sharp_span_tag(sp, "user_agent", v.p, v.len);
    else sharp_span_tag_cstr(sp, "user_agent", "-");
    sharp_span_tag_cstr(sp, "http.protocol", si->protocol ? si->protocol : "-");
    const char *ip;
    size_t iplen = address_ip(si->downstream_direct_remote_address, &ip);
    sharp_span_tag(sp, "peer.address", ip, iplen);
    tag_header(sp, "guid:x-client-trace-id", h, "x-client-trace-id");
    sharp_str_t ct;
    if (sharp_headers_get_cstr(h, "content-type", &ct) && ct.len >= 16 && strncasecmp(ct.p, "application/grpc", 16) == 0 &&
        (ct.len == 16 || ct.p[16] == '+' || ct.p[16] == ';')) {
        tag_header(sp, "grpc.path", h, ":path");
        tag_header(sp, "grpc.authority", h, ":authority");
        tag_header(sp, "grpc.content_type", h, "content-type");
        tag_header(sp, "grpc.timeout", h, "grpc-timeout");
    }
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)si->bytes_received);
    sharp_span_tag_cstr(sp, "request_size", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)si->bytes_sent);
    sharp_span_tag_cstr(sp, "response_size", num);
    /* setCommonTags */
    sharp_span_tag_cstr(sp, "component", "proxy");
    if (si->upstream_cluster_raw) {
        sharp_span_tag_cstr(sp, "upstream_cluster", si->upstream_cluster_raw);
        sharp_span_tag_cstr(sp, "upstream_cluster.name", si->upstream_cluster ? si->upstream_cluster : si->upstream_cluster_raw);
    }
    snprintf(num, sizeof num, "%u", si->response_code);
    sharp_span_tag_cstr(sp, "http.status_code", num);
    char flags[128];
    sharp_response_flags_str(si->response_flags, flags, sizeof flags);
    sharp_span_tag_cstr(sp, "response_flags", flags);
    if (!si->response_code || (si->response_code >= 500 && si->response_code < 600))
        sharp_span_tag_cstr(sp, "error", "true");
    /* the route's custom tags, then the connection manager's not named by them */
    const sharp_custom_tags_t *rt = s->route && s->route->has_tracing ? &s->route->tracing_tags : NULL;
    custom_tags(sp, &tc->custom_tags, rt, h);
    if (rt) custom_tags(sp, rt, NULL, h);
    grpc_response_tags(sp, si->response_headers);
    grpc_response_tags(sp, si->response_trailers);
    if (tc->zipkin) {
        uint64_t now = sharp_now_ns();
        sharp_sbuf_t json = {0};
        sharp_span_json(sp, sharp_wall_us(), now > sp->start_ns ? (now - sp->start_ns) / 1000 : 0, sharp_local_address(),
                        tc->service_name, tc->zipkin->shared_span_context, &json);
        sharp_zipkin_report(sharp_stream_worker(s), tc->zipkin, &json);
    } else if (tc->otel) {
        sharp_sbuf_t span = {0};
        sharp_span_otlp(sp, sharp_wall_us() * 1000, &span);
        sharp_otel_report(sharp_stream_worker(s), tc->otel, &span);
    } else if (tc->datadog && sp->dd) {
        uint64_t now = sharp_now_ns();
        sharp_sbuf_t trace = {0};
        sharp_dd_encode_trace(sp, tc->datadog->service, now > sp->start_ns ? now - sp->start_ns : 0,
                              sharp_dd_runtime_id(), (int64_t)getpid(), &trace);
        sharp_datadog_report(sharp_stream_worker(s), tc->datadog, &trace);
    }
out:
    if (sp->sw) {
        sw_finish(s, sp);
        return;
    }
    sharp_span_free(sp);
    free(sp);
}

/* ---- the router's child spans (SkyWalking's Exit spans) ---- */

sharp_span_t *sharp_tracing_child_start(sharp_stream_t *s, uint32_t attempt)
{
    if (!s->span || !s->span->sw) return NULL;
    sharp_span_t *c = sharp_sw_exit_start(s->span, sharp_wall_us());
    if (attempt > 1) {
        char n[16];
        snprintf(n, sizeof n, "%u", attempt - 1);
        sharp_span_tag_cstr(c, "retry.count", n);
    }
    return c;
}

void sharp_tracing_child_inject(sharp_stream_t *s, sharp_span_t *child, const char *host_address, sharp_headers_t *req)
{
    (void)s;
    sharp_sbuf_t v = {0};
    if (sharp_sw8_format(child->seg, host_address, strlen(host_address), &v)) {
        sharp_headers_set(req, "sw8", 3, v.data, v.len);
        /* the Exit span takes the upstream request's path as its name */
        sharp_str_t path;
        if (sharp_headers_get_cstr(req, ":path", &path)) {
            free(child->name);
            child->name = sharp_strndup(path.p, path.len);
        }
    }
    sharp_sbuf_free(&v);
}

void sharp_tracing_child_response(sharp_span_t *child, const sharp_headers_t *h)
{
    grpc_response_tags(child, h);
}

void sharp_tracing_child_reset(sharp_span_t *child, const char *reason)
{
    sharp_span_tag_cstr(child, "error", "true");
    sharp_span_tag_cstr(child, "error.reason", reason);
}

void sharp_tracing_child_finish(sharp_stream_t *s, sharp_span_t *child, const char *protocol,
                                const char *host_address, uint32_t code, const char *flags, bool canceled)
{
    const sharp_stream_info_t *si = &s->info;
    if (canceled) sharp_span_tag_cstr(child, "canceled", "true");
    /* HttpTracerUtility::finalizeUpstreamSpan with the try's own stream
     * info: its protocol, host, cluster and status */
    sharp_span_tag_cstr(child, "http.protocol", protocol ? protocol : "-");
    if (host_address) {
        sharp_span_tag_cstr(child, "upstream_address", host_address);
        sharp_span_tag_cstr(child, "peer.address", host_address);
    }
    sharp_span_tag_cstr(child, "component", "proxy");
    if (si->upstream_cluster_raw) {
        sharp_span_tag_cstr(child, "upstream_cluster", si->upstream_cluster_raw);
        sharp_span_tag_cstr(child, "upstream_cluster.name",
                            si->upstream_cluster ? si->upstream_cluster : si->upstream_cluster_raw);
    }
    char num[16];
    snprintf(num, sizeof num, "%u", code);
    sharp_span_tag_cstr(child, "http.status_code", num);
    sharp_span_tag_cstr(child, "response_flags", flags ? flags : "-");
    if (!code || (code >= 500 && code < 600)) sharp_span_tag_cstr(child, "error", "true");
    sw_finish(s, child);
}

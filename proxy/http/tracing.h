/* tracing.h: Envoy's HTTP tracing in the connection manager, with the Zipkin
 * tracer (envoy.tracers.zipkin) and the OpenTelemetry tracer
 * (envoy.tracers.opentelemetry: W3C trace context, OTLP spans exported by
 * the worker's exporters, otel.h) as its providers.
 *
 * The sampling decision is Envoy's (ConnectionManagerUtility::
 * mutateTracingRequestHeader): the trace reason travels in the
 * x-request-id UUID (its version digit: '9' sampled, 'a' forced by
 * x-envoy-force-trace, 'b' forced by the client's x-client-trace-id, '4'
 * not traced), the random draws are the UUID's first 8 hex digits modulo
 * 10000. The span is Envoy's Zipkin span: B3 context from the request
 * (x-b3-* or the single b3 header), a SERVER span sharing the caller's
 * span id on ingress (shared_span_context) or a CLIENT child, Envoy's tags,
 * B3 headers injected into the request to the upstream. Finished spans
 * are encoded as Zipkin v2 JSON at once and handed to the worker's
 * reporter (zipkin.h), which batches them to the collector cluster.
 *
 * The functions without a stream (UUID, decision, B3 parsing, JSON) are
 * pure and unit tested (test/unit/test_tracing.c). */
#ifndef SHARP_HTTP_TRACING_H
#define SHARP_HTTP_TRACING_H

#include "common.h"
#include "http/headers.h"
#include "http/route.h"
#include "sbuf.h"
#include "stats.h"

/* Envoy's Tracing::Reason. */
typedef enum {
    SHARP_TRACE_NOT_TRACEABLE,
    SHARP_TRACE_HEALTH_CHECK,
    SHARP_TRACE_SAMPLING,
    SHARP_TRACE_SERVICE_FORCED,
    SHARP_TRACE_CLIENT_FORCED,
} sharp_trace_reason_t;

/* ZipkinConfig, translated. Its stats are the process-wide
 * tracing.zipkin.* counters (every Zipkin provider shares them, as in
 * Envoy, whose drivers count in the server's scope). */
typedef struct sharp_zipkin_config {
    char *cluster;  /* collector_cluster */
    char *endpoint; /* collector_endpoint: the path POSTed to */
    char *hostname; /* collector_hostname, default the cluster's name: :authority */
    bool trace_id_128bit;
    bool shared_span_context; /* default true */
    struct {
        sharp_stat_id_t spans_sent, timer_flushed, reports_skipped_no_cluster, reports_sent, reports_dropped,
            reports_failed;
    } st;
} sharp_zipkin_config_t;

/* OpenTelemetryConfig, translated: spans as OTLP, exported by POSTing a
 * protobuf ExportTraceServiceRequest (http_service) or by the unary gRPC
 * call TraceService/Export (grpc_service) to the collector cluster. Its
 * stats are the process-wide tracing.opentelemetry.* counters. */
typedef struct sharp_otel_config {
    bool grpc;         /* grpc_service, else http_service */
    char *cluster;     /* envoy_grpc.cluster_name or http_uri.cluster */
    char *path;        /* the Export method or the uri's path */
    char *authority;   /* envoy_grpc.authority (default the cluster) or the uri's host */
    uint64_t timeout_ms; /* grpc_service.timeout or http_uri.timeout; 0: none */
    char *service_name;  /* default "unknown_service:envoy" */
    /* request_headers_to_add (http) or initial_metadata (grpc): set on
     * every export, replacing a header of the same name */
    char **hdr_names, **hdr_values;
    uint32_t nhdrs;
    struct {
        sharp_stat_id_t spans_sent, timer_flushed, http_reports_sent, http_reports_success, http_reports_failed;
    } st;
} sharp_otel_config_t;

/* SkyWalkingConfig, translated: one TraceSegmentReportService/collect
 * stream per worker to the collector cluster (skywalking.h). Its stats are
 * the process-wide tracing.skywalking.* counters. */
typedef struct sharp_skywalking_config {
    char *cluster;       /* grpc_service.envoy_grpc.cluster_name */
    char *authority;     /* envoy_grpc.authority, default the cluster */
    char *service_name;  /* client_config.service_name, else node.cluster, else "EnvoyProxy" */
    char *instance_name; /* client_config.instance_name, else node.id, else "EnvoyProxy" */
    char *token;         /* client_config.backend_token (the authentication metadata), NULL: none */
    uint32_t max_cache_size; /* default 1024 */
    /* grpc_service.initial_metadata, on the stream */
    char **hdr_names, **hdr_values;
    uint32_t nhdrs;
    struct {
        sharp_stat_id_t segments_sent, segments_dropped, cache_flushed, segments_flushed;
    } st;
} sharp_skywalking_config_t;

/* DatadogConfig, translated: traces as msgpack to the Datadog agent
 * behind the collector cluster (datadog.h). Its stats are the
 * process-wide tracing.datadog.* counters. */
typedef struct sharp_datadog_config {
    char *cluster;  /* collector_cluster */
    char *hostname; /* collector_hostname, default the cluster's name: :authority */
    char *service;  /* service_name */
    struct {
        sharp_stat_id_t reports_skipped_no_cluster, reports_sent, reports_dropped, reports_failed;
    } st;
    /* per worker (by index, made by the first worker that asks): its
     * reporter for this configuration and the service's rate resolved
     * from it (datadog.c); a cache, written by each worker in its slot */
    _Atomic(struct sharp_dd_worker_slot *) slots;
} sharp_datadog_config_t;

/* HttpConnectionManager.tracing, translated. */
typedef struct sharp_tracing_config {
    bool egress;               /* the listener's traffic_direction is OUTBOUND: CLIENT spans, "egress" */
    /* client_sampling out of 100, random_sampling and overall_sampling out
     * of 10000 (a route's tracing replaces them) */
    sharp_trace_sampling_t sampling;
    uint32_t max_path_tag_length; /* default 256 */
    sharp_custom_tags_t custom_tags; /* a route's tags of the same name win */
    sharp_zipkin_config_t *zipkin; /* NULL: no provider, decisions only (Envoy's null tracer) */
    sharp_otel_config_t *otel;     /* the OpenTelemetry provider (exclusive with zipkin) */
    sharp_skywalking_config_t *skywalking; /* the SkyWalking provider (exclusive with the others) */
    sharp_datadog_config_t *datadog;       /* the Datadog provider (exclusive with the others) */
    const char *node_id, *zone, *service_name; /* node.id, node.locality.zone, node.cluster (owned) */
    /* http.<stat_prefix>.tracing.* */
    struct {
        sharp_stat_id_t random_sampling, service_forced, client_enabled, not_traceable, health_check;
    } st;
} sharp_tracing_config_t;

void sharp_tracing_config_free(sharp_tracing_config_t *tc);
void sharp_zipkin_config_free(sharp_zipkin_config_t *zc);
void sharp_otel_config_free(sharp_otel_config_t *oc);
void sharp_skywalking_config_free(sharp_skywalking_config_t *sc);
void sharp_datadog_config_free(sharp_datadog_config_t *dc);

/* ---- x-request-id (Envoy's UUIDRequestIDExtension) ---- */

/* The reason a request id carries: NOT_TRACEABLE unless it is 36 bytes
 * long with '9', 'a' or 'b' at position 14. */
sharp_trace_reason_t sharp_request_id_reason(const char *rid, size_t len);
/* Writes reason into a 36-byte request id (others are left alone). */
void sharp_request_id_set_reason(char *rid, size_t len, sharp_trace_reason_t r);
/* The request id's first 8 characters as a hex number (getInteger). */
bool sharp_request_id_integer(const char *rid, size_t len, uint64_t *out);

/* The decision's inputs besides the request id. */
typedef struct {
    bool client_trace_id;  /* the request has x-client-trace-id */
    bool force_trace;      /* ... x-envoy-force-trace (removed before when the request is external) */
    uint64_t client_random; /* the draw of tracing.client_enabled (a fresh random number) */
} sharp_trace_inputs_t;

/* Envoy's mutateTracingRequestHeader with these fractions (the connection
 * manager's or the route's): the final reason, written into the request id
 * (rid, len: a writable copy of x-request-id; NULL or malformed: no
 * decision is made and NOT_TRACEABLE is returned with *decided false). */
sharp_trace_reason_t sharp_tracing_decide(const sharp_trace_sampling_t *f, char *rid, size_t len,
                                          const sharp_trace_inputs_t *in, bool *decided);

/* ---- B3 propagation (Envoy's Zipkin SpanContextExtractor) ---- */

typedef struct {
    uint64_t trace_hi, trace_lo, span_id, parent_id;
    bool sampled;
} sharp_b3_context_t;

/* The sampling flag the request carries: the b3 header's (when it has a
 * valid flag where its length says it is), else x-b3-sampled ("1" or
 * "true" is sampled, anything else is not). -1: none. */
int sharp_b3_sampled(const sharp_headers_t *h);
/* The context of the request: 1 found (out filled, out->sampled =
 * sampled), 0 none, -1 malformed (*why says how). The single b3 header
 * wins when present. */
int sharp_b3_extract(const sharp_headers_t *h, bool sampled, sharp_b3_context_t *out, const char **why);

/* ---- W3C trace context (Envoy's OpenTelemetry SpanContextExtractor) ---- */

typedef struct {
    uint64_t trace_hi, trace_lo, parent_id;
    bool sampled; /* the trace flags' bit 0 */
} sharp_w3c_context_t;

/* A traceparent value: 0 parsed, -1 malformed (*why says how), as Envoy
 * checks it: 55 bytes, four '-' separated parts of 2, 32, 16 and 2 hex
 * digits, a trace id and a parent id not all zeros. The version is not
 * checked further. */
int sharp_traceparent_parse(const char *v, size_t len, sharp_w3c_context_t *out, const char **why);
/* "00-<32 hex trace id>-<16 hex span id>-<01|00>" into out (56 bytes). */
void sharp_traceparent_format(uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id, bool sampled, char out[56]);

/* ---- spans ---- */

typedef struct sharp_span {
    uint64_t trace_hi, trace_lo, id, parent_id;
    bool has_parent;
    bool server;  /* kind SERVER (Envoy's SR annotation), else CLIENT (CS) */
    bool sampled;
    uint64_t start_wall_us; /* timestamp */
    uint64_t start_ns;      /* monotonic, for the duration */
    char *name;
    /* the tags as JSON ("key":"value", escaped, one after the other) and
     * where each is; a later tag of the same key replaces an earlier one,
     * as in Envoy's JSON (a map) */
    sharp_sbuf_t tags;
    struct sharp_span_tag_ref {
        uint32_t off, klen, len; /* klen: the quoted key's length */
    } *tag_refs;
    uint32_t ntags, cap_tags;
    /* an OpenTelemetry span: its attributes as they are (a later value of
     * a key replaces the earlier one, as Envoy's Span::setTag), its
     * tracestate, its status (ERROR from http.status_code) */
    bool otel;
    bool status_error;
    char *tracestate;
    char **akeys, **avals;
    uint32_t nattrs, cap_attrs;
    /* a SkyWalking span (cpp2sky's TracingSpan): its tags in the order they
     * are set, a repeated key kept (the attributes above), http.url and
     * http.status_code as url and status_code, peer.address as its peer,
     * error setting status_error too; owned by its segment */
    bool sw;
    bool sw_exit;     /* Exit (the router's child), else Entry */
    bool sw_finished;
    bool sw_http;     /* layer Http, else Unknown */
    /* a Datadog span (datadog.h): its meta are the attributes above (a
     * later value of a key replaces the earlier one), the rest is here */
    struct sharp_dd_span *dd;
    int32_t sw_id, sw_parent;
    uint64_t end_wall_us;
    char *peer;
    struct sharp_sw_segment *seg;
} sharp_span_t;

/* A new span for a request with context ctx (NULL: a root span), as
 * Envoy's Zipkin Tracer::startSpan. ids come from random(). */
void sharp_span_start(sharp_span_t *sp, const sharp_tracing_config_t *tc, const sharp_b3_context_t *ctx,
                      bool sampled, const char *name, size_t name_len, uint64_t start_wall_us, uint64_t start_ns,
                      uint64_t (*random)(void *), void *rarg);
/* An OpenTelemetry span as Envoy's OpenTelemetry Tracer::startSpan: named
 * name, kind SERVER (ingress) or CLIENT (egress); without ctx a new trace
 * (128-bit id) sampled as `sampled`, else a child of the caller's span
 * (ctx->parent_id) in its trace, sampled as its flags say, keeping
 * tracestate (NULL: none). */
void sharp_span_start_otel(sharp_span_t *sp, bool egress, const sharp_w3c_context_t *ctx, const char *tracestate,
                           size_t ts_len, bool sampled, const char *name, size_t name_len, uint64_t start_wall_us,
                           uint64_t start_ns, uint64_t (*random)(void *), void *rarg);
/* Sets traceparent and, when the span has one, tracestate (Envoy's
 * OpenTelemetry Span::injectContext). */
void sharp_span_inject_w3c(const sharp_span_t *sp, sharp_headers_t *h);
/* The OTLP Span message (opentelemetry.proto.trace.v1.Span, encoded,
 * without its own tag) of an OpenTelemetry span ending at end_unix_ns. */
void sharp_span_otlp(const sharp_span_t *sp, uint64_t end_unix_ns, sharp_sbuf_t *out);
/* An ExportTraceServiceRequest of one ResourceSpans (resource attribute
 * service.name, scope "envoy") holding `spans`: Span messages each
 * already framed as field 2 of ScopeSpans (sharp_otlp_frame_span). */
void sharp_otlp_request(const char *service_name, const char *spans, size_t spans_len, sharp_sbuf_t *out);
/* Appends span (an encoded Span) as ScopeSpans.spans (field 2). */
void sharp_otlp_frame_span(sharp_sbuf_t *out, const char *span, size_t len);
void sharp_span_set_name(sharp_span_t *sp, const char *name, size_t len);
/* Envoy's Span::setTag: a tag with an empty name or value is not kept. */
void sharp_span_tag(sharp_span_t *sp, const char *key, const char *value, size_t vlen);
static inline void sharp_span_tag_cstr(sharp_span_t *sp, const char *key, const char *value)
{
    sharp_span_tag(sp, key, value, strlen(value));
}
/* Whether a tag of this key (one needing no JSON escape) was set. */
bool sharp_span_has_tag(const sharp_span_t *sp, const char *key);
void sharp_span_free(sharp_span_t *sp);
/* Sets x-b3-traceid, x-b3-spanid, x-b3-parentspanid (when the span has a
 * parent) and x-b3-sampled (1/0), as Envoy's ZipkinSpan::injectContext. */
void sharp_span_inject(const sharp_span_t *sp, sharp_headers_t *h);

/* The Zipkin v2 JSON object of a span finished at end_wall_us after
 * duration_us, as Envoy's JsonV2Serializer writes it: traceId, parentId,
 * id, kind, name, timestamp, duration, localEndpoint {ipv4|ipv6, port 0,
 * serviceName}, tags, shared: true for a SERVER span when
 * shared_span_context, and the annotation Envoy's Span::finish adds
 * (SERVER: "ss", CLIENT: "cr", at end_wall_us), which the serializer lists
 * in annotations. */
void sharp_span_json(const sharp_span_t *sp, uint64_t end_wall_us, uint64_t duration_us, const char *local_ip,
                     const char *service_name, bool shared_span_context, sharp_sbuf_t *out);
/* ---- SkyWalking (cpp2sky's TracingContext and sw8 propagation) ---- */

/* An sw8 header's context: sample-traceId-segmentId-spanId-service-
 * instance-endpoint-target, the strings base64 (decoded here). */
typedef struct sharp_sw8 {
    char *trace_id, *segment_id, *service, *instance, *endpoint, *target;
    int32_t span_id;
} sharp_sw8_t;

/* Parses an sw8 value as cpp2sky's SpanContextImpl: 0, or -1 with *why
 * ("It must have 8 fields", "sample field must be 0 or 1", a span id that
 * is not a number). A field that is not base64 decodes as "". */
int sharp_sw8_parse(const char *v, size_t len, sharp_sw8_t *out, const char **why);
void sharp_sw8_free(sharp_sw8_t *c);
/* Standard base64 with padding, appended to out. */
void sharp_sw_base64(sharp_sbuf_t *out, const char *p, size_t n);
/* cpp2sky's Base64::decodeWithoutPadding: "" for anything invalid. */
char *sharp_sw_base64_decode(const char *p, size_t n);
/* A version 4 UUID string from two random words. */
void sharp_sw_uuid(uint64_t a, uint64_t b, char out[37]);

typedef struct sharp_sw_segment {
    char *trace_id;
    char segment_id[37];
    sharp_sw8_t parent; /* the incoming context, when has_parent */
    bool has_parent;
    const char *service, *instance; /* the config's */
    sharp_span_t **spans;
    uint32_t nspans, open; /* open: spans not finished */
    bool discard;          /* sent nowhere (the stream had no worker) */
} sharp_sw_segment_t;

/* A new segment with its Entry span (id 0, parent -1) named `name` (the
 * request's path), layer Http when the protocol names HTTP; `parent` (may
 * be NULL) is moved into the segment. */
sharp_span_t *sharp_sw_start(const sharp_skywalking_config_t *sc, sharp_sw8_t *parent, const char *name,
                             size_t name_len, bool http, uint64_t start_wall_us, uint64_t start_ns,
                             uint64_t (*random)(void *), void *rarg);
/* An Exit span of the segment of `entry` (cpp2sky's createExitSpan): the
 * next id, parent the entry's, the entry's name and layer. */
sharp_span_t *sharp_sw_exit_start(sharp_span_t *entry, uint64_t start_wall_us);
/* The sw8 value for the segment's last span if it is an Exit span (else
 * false, nothing written): "1-" and the trace id, segment id, that span's
 * id, service, instance, the first span's name and target_address. */
bool sharp_sw8_format(const sharp_sw_segment_t *seg, const char *target, size_t target_len, sharp_sbuf_t *out);
/* Ends a span; true when it was the segment's last open one (the segment
 * is ready to send, then to free). */
bool sharp_sw_span_finish(sharp_span_t *sp, uint64_t end_wall_us);
void sharp_sw_segment_free(sharp_sw_segment_t *seg);

/* ---- the connection manager's side (tracing_hcm.c) ---- */

struct sharp_stream;
/* Once the route is known: the decision (x-request-id rewritten, stats),
 * the span, the decorator and the B3 headers of the upstream request. */
void sharp_tracing_begin(struct sharp_stream *s);
/* The response head going downstream: x-envoy-decorator-operation. */
void sharp_tracing_response_headers(struct sharp_stream *s, sharp_headers_t *h);
/* The stream's end: the span's tags, its JSON to the worker's reporter. */
void sharp_tracing_finish(struct sharp_stream *s);

/* The router's child span of an upstream try (Router.start_child_span):
 * NULL unless the stream's span takes children (SkyWalking's). `attempt`
 * counts from 1 (retry.count on a retry). */
sharp_span_t *sharp_tracing_child_start(struct sharp_stream *s, uint32_t attempt);
/* The try has its connection to `host_address` (ip:port): the child's
 * context into the upstream request (sw8), its name the request's path. */
void sharp_tracing_child_inject(struct sharp_stream *s, sharp_span_t *child, const char *host_address,
                                sharp_headers_t *req);
/* The try's response headers or trailers: gRPC status tags. */
void sharp_tracing_child_response(sharp_span_t *child, const sharp_headers_t *h);
/* The try was reset (error, error.reason). */
void sharp_tracing_child_reset(sharp_span_t *child, const char *reason);
/* The try's end (Envoy's finalizeUpstreamSpan): protocol (NULL: "-"), the
 * host's address, the cluster, the try's status (0: none) and response
 * flags (NULL: "-"); `canceled` when the proxy gave up on it before it
 * ended (Envoy's UpstreamRequest::resetStream). */
void sharp_tracing_child_finish(struct sharp_stream *s, sharp_span_t *child, const char *protocol,
                                const char *host_address, uint32_t code, const char *flags, bool canceled);

/* Appends s as a JSON string (quoted, escaped; invalid UTF-8 becomes
 * U+FFFD). */
void sharp_json_string(sharp_sbuf_t *out, const char *s, size_t n);

#endif

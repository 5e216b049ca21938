/* datadog.h: Envoy's Datadog tracer (envoy.tracers.datadog, built on
 * dd-trace-cpp): Datadog spans, their propagation and the worker's agent
 * reporters.
 *
 * Spans. Every request the connection manager traces has a span, whatever
 * the sampling decision: the decision travels as the trace's sampling
 * priority and the agent gets every trace (it counts the dropped ones for
 * its statistics). The span's name is "envoy.proxy", its resource Envoy's
 * operation name ("ingress", "egress <host>", or the decorator's), its
 * service the config's service_name, its type "web". Its tags are its
 * meta, but for "error" ("true" sets the span's error flag), "error.reason"
 * (also meta error.message) and "resource.name" (the resource). Every span
 * also carries meta language "cpp", runtime-id (one per process), version
 * ("envoy " and the server's version string), _dd.origin when the trace
 * has an origin, and metric process_id; the trace's local root (here the
 * span itself) the trace tags (_dd.p.*) and the metrics
 * _sampling_priority_v1 and, for a priority decided here, _dd.agent_psr.
 *
 * Propagation: dd-trace-cpp's default styles, Datadog then W3C trace
 * context, for extraction and injection.
 *  - Extraction reads x-datadog-trace-id, x-datadog-parent-id (decimal),
 *    x-datadog-sampling-priority, x-datadog-origin and x-datadog-tags (its
 *    _dd.p.* tags; _dd.p.tid holds the high 64 bits of a 128-bit trace
 *    id), and traceparent and tracestate (its dd= entry: s: priority, o:
 *    origin, p: last parent, t.*: trace tags); the first style with a
 *    trace id is the context, the W3C one adding its tracestate to a
 *    Datadog context of the same trace. A trace id without a parent is a
 *    root of that trace only with an origin; a Datadog header that does
 *    not parse, a parent without a trace or a zero trace id is an error and
 *    the request starts a new trace, as in Envoy.
 *  - Injection sets x-datadog-trace-id (the low 64 bits), x-datadog-parent-id
 *    (the span's id), x-datadog-sampling-priority, x-datadog-origin,
 *    x-datadog-tags (the trace tags, at most 512 bytes, else none and meta
 *    _dd.propagation_error inject_max_size), traceparent (flags 01 for a
 *    priority above 0) and tracestate (dd=s:..;p:..;o:..;t.*:.., at most
 *    256 bytes, then the other vendors' entries).
 *  - Sampling: a priority the request carries is kept; else Envoy's
 *    decision: not traced is USER_DROP (-1), traced is dd-trace-cpp's
 *    trace sampler without rules: the agent's rate for the service (its
 *    last answer's rate_by_service, "service:<name>,env:"), else its
 *    default ("service:,env:"; decision maker "-1"), else 1 before any
 *    answer ("-0"); the trace is kept (AUTO_KEEP, 1) when the Knuth hash
 *    of its low 64 bits is within the rate, else dropped (AUTO_DROP, 0);
 *    the rate is the span's _dd.agent_psr. Each worker has its own rates,
 *    as Envoy's thread-local tracers.
 *    New traces have 128-bit ids (the high half: the start time's seconds
 *    in its top 32 bits) and 63-bit span ids, as dd-trace-cpp makes them.
 *
 * Reporting (Envoy's AgentHTTPClient under dd-trace-cpp's DatadogAgent):
 * each worker has one reporter per collector (cluster, hostname), made
 * when the worker takes a configuration naming it and kept until the
 * worker stops. Finished traces wait in it and are sent every 2 s as one
 * msgpack array of traces (each an array of spans) in a POST to
 * /v0.4/traces at collector_hostname, with Content-Type
 * application/msgpack, Datadog-Meta-Lang cpp, Datadog-Meta-Lang-Version,
 * Datadog-Meta-Tracer-Version and X-Datadog-Trace-Count, timed out after
 * 2 s; a request of the worker on the collector cluster as the Zipkin
 * reporter's (zipkin.h). A 200 answer's rate_by_service updates the
 * reporter's sampler.
 *
 * Stats (Envoy's, process-wide): tracing.datadog.reports_sent (the agent
 * answered 200), reports_dropped (any other answer, the router's own
 * included: 503 for a dead agent or full breakers, 504 for the timeout),
 * reports_failed (a reset or the timeout after the response began),
 * reports_skipped_no_cluster (the worker has no such cluster).
 *
 * Memory is bounded: a reporter keeps at most 1000 traces between two
 * flushes (a trace beyond that is dropped), the reports in flight are
 * bounded by the cluster's circuit breakers and the timeout.
 *
 * The functions without a worker (extraction, injection, encoding) are
 * pure and unit tested (test/unit/test_datadog.c). */
#ifndef SHARP_HTTP_DATADOG_H
#define SHARP_HTTP_DATADOG_H

#include "http/tracing.h"
#include "worker.h"

#define SHARP_DD_TRACES_PATH "/v0.4/traces"
#define SHARP_DD_FLUSH_MS 2000
#define SHARP_DD_TIMEOUT_MS 2000
/* a reporter holds at most this many traces, and this many bytes of them,
 * between flushes; more are dropped (reports_dropped) */
#define SHARP_DD_MAX_TRACES 1000
#define SHARP_DD_MAX_PENDING_BYTES (4u << 20)
#define SHARP_DD_TAGS_HEADER_MAX 512
#define SHARP_DD_TRACESTATE_MAX 256
/* dd-trace-cpp's tracer signature: the library's version and the C++
 * standard Envoy builds it with */
#define SHARP_DD_TRACER_VERSION "v2.0.0"
#define SHARP_DD_LANG_VERSION "202002"

/* Sampling priorities. */
#define SHARP_DD_USER_DROP (-1)
#define SHARP_DD_AUTO_KEEP 1

/* _dd.p.* trace tags, in order. */
typedef struct sharp_dd_tags {
    char **keys, **vals;
    uint32_t n;
} sharp_dd_tags_t;

/* What a request's headers carry (dd-trace-cpp's ExtractedData). */
typedef struct sharp_dd_context {
    uint64_t trace_hi, trace_lo, parent_id;
    bool has_trace, has_parent, has_priority;
    int priority;
    char *origin; /* NULL: none */
    sharp_dd_tags_t tags;
    char *w3c_extra;    /* tracestate's entries other than dd= */
    char *dd_w3c_extra; /* the dd= entry's fields not understood */
    /* the dd= entry's p: (the last Datadog parent; 16 zeros without one),
     * meta _dd.parent_id, when traceparent gave the trace */
    char dd_parent[17];
    /* meta for the span: _dd.propagation_error (x-datadog-tags that did
     * not decode, a malformed or inconsistent _dd.p.tid) and
     * _dd.w3c_extraction_error (a traceparent that did not parse) */
    char *prop_error;
    const char *w3c_error;
} sharp_dd_context_t;

/* The agent's sampling rates (dd-trace-cpp's TraceSampler without rules):
 * the rate_by_service of its last answer, and the default it gave last. */
typedef struct sharp_dd_sampler {
    char **keys; /* "service:<service>,env:<env>" */
    double *rates;
    uint32_t n;
    bool has_default; /* "service:,env:" given once */
    double default_rate;
} sharp_dd_sampler_t;

/* Takes the rates of an agent's answer ({"rate_by_service": {key: rate}},
 * each rate in [0, 1]): false when it is not such JSON (nothing changed);
 * an answer without rate_by_service changes nothing. */
bool sharp_dd_sampler_update(sharp_dd_sampler_t *s, const char *body, size_t len);
void sharp_dd_sampler_free(sharp_dd_sampler_t *s);

/* One service's rate, resolved from a sampler once per agent answer (not
 * per request): the agent's rate for the service (no env), else its
 * default, else 1 with mechanism DEFAULT. */
typedef struct sharp_dd_rate {
    double rate;
    int mechanism; /* 0 DEFAULT, 1 AGENT_RATE */
} sharp_dd_rate_t;

void sharp_dd_sampler_rate(const sharp_dd_sampler_t *s, const char *service, sharp_dd_rate_t *out);

/* The span's Datadog state. */
typedef struct sharp_dd_span {
    int priority;
    bool local_decision; /* decided here by a rate: _dd.agent_psr */
    double rate;         /* that rate */
    bool error;
    char *origin;
    sharp_dd_tags_t tags;
    char *w3c_extra, *dd_w3c_extra;
} sharp_dd_span_t;

/* Reads the request's context: 1 found (out filled; free it with
 * sharp_dd_context_free unless it is moved into a span), 0 none, -1 an
 * error (*why says which): no span to continue, a new trace. out is
 * freed on 0 and -1. */
int sharp_dd_extract(const sharp_headers_t *h, sharp_dd_context_t *out, const char **why);
void sharp_dd_context_free(sharp_dd_context_t *c);

/* Decodes an x-datadog-tags value ("k=v,k=v"): the _dd.p.* ones appended
 * to out; false when it does not decode (out unchanged). */
bool sharp_dd_decode_tags(const char *v, size_t n, sharp_dd_tags_t *out);
/* "k=v,k=v" of the tags, appended to out. */
void sharp_dd_encode_tags(const sharp_dd_tags_t *t, sharp_sbuf_t *out);
/* The tracestate value of a span (dd-trace-cpp's encode_tracestate). */
void sharp_dd_tracestate(const sharp_span_t *sp, sharp_sbuf_t *out);
void sharp_dd_tags_free(sharp_dd_tags_t *t);

/* A new span named "envoy.proxy" with resource `name`: a child of ctx's
 * parent in its trace (ctx moved into the span), or without ctx a new
 * trace. `traced` is Envoy's decision, used when ctx has no priority: not
 * traced is USER_DROP, traced the decision by `rate` (the service's, from
 * sharp_dd_sampler_rate; NULL: no rates yet, keep). `version` is the
 * span's version meta. */
void sharp_dd_span_start(sharp_span_t *sp, sharp_dd_context_t *ctx, bool traced,
                         const sharp_dd_rate_t *rate, const char *name,
                         size_t name_len, const char *version, uint64_t start_wall_us,
                         uint64_t start_ns, uint64_t (*random)(void *), void *rarg);
/* Envoy's Datadog Span::setTag. */
void sharp_dd_span_tag(sharp_span_t *sp, const char *key, const char *value, size_t vlen);
bool sharp_dd_span_error(const sharp_span_t *sp);
/* Sets the Datadog and W3C headers of the span's context into h. */
void sharp_dd_inject(sharp_span_t *sp, sharp_headers_t *h);
/* The finished span as one trace (a msgpack array of its one span map),
 * appended to out: the process-wide meta (runtime_id, pid) added. */
void sharp_dd_encode_trace(sharp_span_t *sp, const char *service, uint64_t duration_ns,
                           const char *runtime_id, int64_t pid, sharp_sbuf_t *out);
void sharp_dd_span_free(sharp_dd_span_t *d);

/* This process's runtime id (a version 4 UUID made once). */
const char *sharp_dd_runtime_id(void);

/* ---- the worker's reporters ---- */

void sharp_datadog_sync(sharp_worker_t *w, const sharp_snapshot_t *snap);
/* dc's service rate from the worker's reporter for dc's agent (NULL once
 * the worker stops). The reporter is found once per worker and
 * configuration, the rate resolved once per agent answer. */
const sharp_dd_rate_t *sharp_datadog_rate(sharp_worker_t *w, const sharp_datadog_config_t *dc);
/* Hands one encoded trace (moved out of *trace) to the worker's reporter
 * for dc's collector. */
void sharp_datadog_report(sharp_worker_t *w, const sharp_datadog_config_t *dc, sharp_sbuf_t *trace);
/* Worker shutdown: pending traces dropped, reporters freed. */
void sharp_datadog_stop_all(sharp_worker_t *w);

#endif

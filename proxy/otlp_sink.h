/* otlp_sink.h: Envoy's OpenTelemetry stats sink (envoy.stat_sinks.
 * open_telemetry, envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig).
 *
 * At every stats flush (the bootstrap's stats_flush_interval, main thread)
 * the sink makes one opentelemetry.proto.collector.metrics.v1.
 * ExportMetricsServiceRequest and sends it as a unary call
 * /opentelemetry.proto.collector.metrics.v1.MetricsService/Export to a
 * static HTTP/2 cluster, through SHARP's gRPC client (grpc/client.h). As
 * Envoy's OtlpMetricsFlusherImpl (without custom_metric_conversions):
 * - one ResourceMetrics whose resource has Envoy's attributes
 *   (telemetry.sdk.language "cpp", telemetry.sdk.name "envoy",
 *   telemetry.sdk.version: SHARP's version) merged with those of the
 *   static_config resource detectors, and one ScopeMetrics without
 *   a scope, holding one Metric per used stat: gauges, then counters, then
 *   histograms;
 * - a gauge is a Gauge of one as_int point; a counter a monotonic Sum of one
 *   as_int point, CUMULATIVE (the value) or, with report_counters_as_deltas,
 *   DELTA (the change since the previous flush); a histogram a Histogram
 *   of one point, CUMULATIVE (all values since start) or, with
 *   report_histograms_as_deltas, DELTA (the flush interval), with count, sum,
 *   explicit_bounds (Envoy's default bucket bounds or stats_config.
 *   histogram_bucket_settings) and the disjoint bucket counts, the last one
 *   the values above the last bound;
 * - every point has time_unix_nano, the flush's wall-clock time; a DELTA
 *   point's start_time_unix_nano is the previous flush's (the sink's
 *   creation for the first), a CUMULATIVE point's the sink's creation; a
 *   gauge point has none;
 * - the metric's name is prefix + "." (when prefix is set) + the
 *   tag-extracted name ("cluster.upstream_rq_total"), or with
 *   use_tag_extracted_name false the full name; with emit_tags_as_attributes
 *   (the default) the tags are the point's string attributes
 *   ("envoy.cluster_name" = "x").
 * The collector's answer is only logged (debug). Each flush is its own
 * call: a dead collector costs one failed call per flush, nothing else.
 * At most SHARP_OTLP_MAX_INFLIGHT calls are outstanding (a collector that
 * takes calls and never answers them): a flush finding them all pending is
 * dropped and counted, so memory stays bounded. */
#ifndef SHARP_OTLP_SINK_H
#define SHARP_OTLP_SINK_H

#include "common.h"
#include "http/headers.h"
#include "snapshot.h"
#include "stats.h"
#include "upstream/env.h"

#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"

#define SHARP_OTLP_MAX_INFLIGHT 4

typedef struct {
    bool counters_as_deltas;   /* report_counters_as_deltas */
    bool histograms_as_deltas; /* report_histograms_as_deltas */
    bool tags_as_attributes;   /* emit_tags_as_attributes (default true) */
    bool tag_extracted_name;   /* use_tag_extracted_name (default true) */
    const char *prefix;        /* prefix ("" or NULL: none) */
    /* resource attributes from resource_detectors (static_config), merged
     * over Envoy's telemetry.sdk.* ones in this order (a later key
     * replaces an earlier one); copied by the flusher */
    const char *const *resource_keys;
    const char *const *resource_values;
    size_t nresource;
} sharp_otlp_options_t;

/* ---- the flusher: the request of one flush ---- */

typedef struct sharp_otlp_flusher sharp_otlp_flusher_t;
/* start_ns: the wall-clock time of the sink's creation (the cumulative
 * points' start, and the first delta points'). */
sharp_otlp_flusher_t *sharp_otlp_flusher_create(const sharp_otlp_options_t *o, uint64_t start_ns);
void sharp_otlp_flusher_free(sharp_otlp_flusher_t *f);
/* Fills req for one flush of `s` at wall-clock time now_ns (call after
 * sharp_stats_flush: delta histograms send the interval it closed). What
 * it points to belongs to the flusher and stays valid until the next build
 * or free. Returns the number of metrics (0: req has no ResourceMetrics,
 * as Envoy's for a flush without used stats). */
size_t sharp_otlp_flusher_build(
    sharp_otlp_flusher_t *f, sharp_stats_t *s, uint64_t now_ns,
    Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest *req);

/* ---- the sink ---- */

typedef struct sharp_otlp_sink sharp_otlp_sink_t;
/* envoy_grpc's cluster and authority (NULL or "": the cluster name), the
 * GrpcService's initial_metadata (may be NULL) and timeout (0: none), the
 * deadline of each Export call. */
sharp_otlp_sink_t *sharp_otlp_sink_create(const char *cluster, const char *authority,
                                          const sharp_headers_t *metadata, uint64_t timeout_ms,
                                          const sharp_otlp_options_t *o);
void sharp_otlp_sink_free(sharp_otlp_sink_t *k);
/* The cluster must exist in the bootstrap's snapshot ("Unknown gRPC client
 * cluster") and speak HTTP/2. 0, or -1 with the reason in err. */
int sharp_otlp_sink_check(const sharp_otlp_sink_t *k, sharp_snapshot_t *snap, char *err,
                          size_t errlen);
/* One flush (main thread, loop running, after sharp_stats_flush); the
 * client is made on the first one from `snap` and `env`. */
void sharp_otlp_sink_flush(sharp_otlp_sink_t *k, sharp_stats_t *s, const sharp_upstream_env_t *env,
                           sharp_snapshot_t *snap);
/* Cancels the pending calls and closes the client (shutdown, loop still
 * running); later flushes do nothing. */
void sharp_otlp_sink_stop(sharp_otlp_sink_t *k);

#endif

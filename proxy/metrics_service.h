/* metrics_service.h: Envoy's gRPC metrics service stats sink
 * (envoy.stat_sinks.metrics_service, envoy.config.metrics.v3.
 * MetricsServiceConfig).
 *
 * At every stats flush (the bootstrap's stats_flush_interval, main thread)
 * the sink sends one envoy.service.metrics.v3.StreamMetricsMessage on a
 * client-streaming call /envoy.service.metrics.v3.MetricsService/
 * StreamMetrics to a static HTTP/2 cluster, through SHARP's gRPC client
 * (grpc/client.h). As Envoy's GrpcMetricsStreamerImpl:
 * - the stream is opened by the flush that finds none; that flush's
 *   message, the first of the stream, carries identifier.node (the
 *   bootstrap's node as every gRPC request names it), the later ones
 *   do not;
 * - when the stream ends (the collector closed it, or could not be
 *   reached), the next flush opens a new one: a dead collector costs one
 *   stream attempt per flush interval, nothing else;
 * - the collector's responses are ignored.
 * A message the stream cannot take (its send queue, 1 MiB, is full: a
 * collector that does not read) is dropped and counted in the log at debug
 * level (Envoy has no stat for it), so memory stays bounded.
 *
 * envoy_metrics is one io.prometheus.client.MetricFamily per metric, in
 * Envoy's MetricsFlusher order: used counters (COUNTER: the value, or the
 * change since the previous flush with report_counters_as_deltas), used
 * gauges (GAUGE), then used histograms as a SUMMARY (interval quantiles
 * P0..P100, sample count and sum) and/or a HISTOGRAM (the interval's
 * cumulative counts at the histogram's bucket bounds: Envoy's default ones
 * or stats_config.histogram_bucket_settings), per histogram_emit_mode.
 * Every metric has timestamp_ms, the flush's wall-clock time. The family
 * name is the full stat name ("cluster.x.upstream_rq_total"), or with
 * emit_tags_as_labels the tag-extracted name ("cluster.upstream_rq_total")
 * with the tags as labels ("envoy.cluster_name" = "x"), neither prefixed
 * nor sanitized, as Envoy sends them. */
#ifndef SHARP_METRICS_SERVICE_H
#define SHARP_METRICS_SERVICE_H

#include "common.h"
#include "http/headers.h"
#include "snapshot.h"
#include "stats.h"
#include "upstream/env.h"

#include "envoy/service/metrics/v3/metrics_service.pb-c.h"

typedef enum {
    SHARP_MS_SUMMARY_AND_HISTOGRAM = 0, /* Envoy's HistogramEmitMode values */
    SHARP_MS_SUMMARY = 1,
    SHARP_MS_HISTOGRAM = 2,
} sharp_ms_histogram_mode_t;

typedef struct {
    bool counters_as_deltas; /* report_counters_as_deltas */
    bool tags_as_labels;     /* emit_tags_as_labels */
    sharp_ms_histogram_mode_t histogram_mode;
} sharp_ms_options_t;

/* ---- the flusher: the envoy_metrics of one flush ---- */

typedef struct sharp_ms_flusher sharp_ms_flusher_t;
sharp_ms_flusher_t *sharp_ms_flusher_create(const sharp_ms_options_t *o);
void sharp_ms_flusher_free(sharp_ms_flusher_t *f);
/* Fills msg->envoy_metrics (n_envoy_metrics) for one flush of `s` (call
 * after sharp_stats_flush: histograms send the interval it closed), every
 * metric stamped with timestamp_ms. What it points to belongs to the
 * flusher and stays valid until the next build or free. Returns the number
 * of families. */
size_t sharp_ms_flusher_build(sharp_ms_flusher_t *f, sharp_stats_t *s, int64_t timestamp_ms,
                              Envoy__Service__Metrics__V3__StreamMetricsMessage *msg);

/* ---- the sink ---- */

typedef struct sharp_metrics_sink sharp_metrics_sink_t;
/* envoy_grpc's cluster and authority (NULL or "": the cluster name) and
 * the GrpcService's initial_metadata (may be NULL), sent on every stream. */
sharp_metrics_sink_t *sharp_metrics_sink_create(const char *cluster, const char *authority,
                                                const sharp_headers_t *metadata,
                                                const sharp_ms_options_t *o);
void sharp_metrics_sink_free(sharp_metrics_sink_t *k);
/* Envoy's rule for the cluster (checked once the bootstrap's snapshot is
 * built): it must exist there ("Unknown gRPC client cluster"), and, for
 * SHARP's gRPC client, speak HTTP/2. 0, or -1 with the reason in err. */
int sharp_metrics_sink_check(const sharp_metrics_sink_t *k, sharp_snapshot_t *snap, char *err,
                             size_t errlen);
/* One flush (main thread, loop running, after sharp_stats_flush): the
 * client is made on the first one from `snap` (the bootstrap's snapshot)
 * and `env`; `node` is the identifier's node. */
void sharp_metrics_sink_flush(sharp_metrics_sink_t *k, sharp_stats_t *s,
                              const sharp_upstream_env_t *env, sharp_snapshot_t *snap,
                              const ProtobufCMessage *node);
/* Cancels the stream and closes the client (shutdown, loop still running);
 * later flushes do nothing. */
void sharp_metrics_sink_stop(sharp_metrics_sink_t *k);

/* For logs and tests: messages handed to a stream, and flushes dropped. */
uint64_t sharp_metrics_sink_sent(const sharp_metrics_sink_t *k);
uint64_t sharp_metrics_sink_dropped(const sharp_metrics_sink_t *k);

#endif

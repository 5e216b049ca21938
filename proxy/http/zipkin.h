/* zipkin.h: the worker's Zipkin reporters (Envoy's ReporterImpl).
 *
 * Each worker has one reporter per collector (cluster, endpoint, hostname)
 * of its configuration, made when the worker takes a configuration naming
 * it (as Envoy's thread-local reporters, made with the driver, whose flush
 * timers run from then on) and kept until the worker stops. A reporter keeps the
 * finished spans' JSON (tracing.h) and POSTs them as one Zipkin v2 JSON
 * array (content-type application/json) to the collector cluster when
 * runtime tracing.zipkin.min_flush_spans (default 5) are pending, and
 * every tracing.zipkin.flush_interval_ms (default 5000). The report is a
 * request of the worker on the collector cluster, as the shadow writer's
 * (upstream/shadow.h): a host from the cluster's balancer, its DEFAULT
 * circuit breakers, its pools, the runtime's tracing.zipkin.request_timeout
 * (default 5000 ms). Nothing of it reaches proxied traffic.
 *
 * Stats (Envoy's): tracing.zipkin.spans_sent (spans in reports sent),
 * timer_flushed, reports_skipped_no_cluster (the worker has no such
 * cluster), reports_sent (the collector answered 202), reports_dropped
 * (any other answer, the router's own included as Envoy's async client
 * delivers them: 503 without a healthy host, with full breakers, for a
 * connection failure or a reset before the response, 504 for the timeout),
 * reports_failed (the response was cut: a reset or the timeout after its
 * headers).
 *
 * Memory is bounded: a reporter holds at most the min_flush_spans it read
 * when it was made (as Envoy sizes its span buffer; a span beyond that is
 * dropped), and the reports in flight are bounded by the collector
 * cluster's circuit breakers (max_requests, max_pending_requests) and their
 * timeout. */
#ifndef SHARP_HTTP_ZIPKIN_H
#define SHARP_HTTP_ZIPKIN_H

#include "http/tracing.h"
#include "worker.h"

/* Makes the reporters of the collectors snap's connection managers name
 * that the worker does not have yet. */
void sharp_zipkin_sync(sharp_worker_t *w, const sharp_snapshot_t *snap);
/* Hands the JSON of one sampled span (moved out of *json) to the worker's
 * reporter for zc's collector. */
void sharp_zipkin_report(sharp_worker_t *w, const sharp_zipkin_config_t *zc, sharp_sbuf_t *json);
/* Worker shutdown: reports in flight are reset, pending spans dropped,
 * reporters freed (their timers' close callbacks). Before the pools go. */
void sharp_zipkin_stop_all(sharp_worker_t *w);

#endif

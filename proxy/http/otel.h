/* otel.h: the worker's OpenTelemetry exporters (Envoy's OpenTelemetry
 * Tracer with its OTLP trace exporters).
 *
 * Each worker has one exporter per collector of its configuration (kind,
 * cluster, path, authority, timeout, headers, service name), made when the
 * worker takes a configuration naming it and kept until the worker stops,
 * as Envoy's thread-local tracers. An exporter keeps the finished sampled
 * spans as encoded OTLP Span messages and sends them as one
 * ExportTraceServiceRequest (resource attribute service.name, scope
 * "envoy") when runtime tracing.opentelemetry.min_flush_spans (default 5)
 * are pending, and every tracing.opentelemetry.flush_interval_ms (default
 * 5000):
 *  - http_service: a POST of the protobuf (content-type
 *    application/x-protobuf) to the uri's path, :authority the uri's host,
 *    the request_headers_to_add set on it, timed out after http_uri.timeout;
 *  - grpc_service: the unary call
 *    /opentelemetry.proto.collector.trace.v1.TraceService/Export over the
 *    cluster's pools (HTTP/2 for a cluster configured for it), the message
 *    in one gRPC frame, initial_metadata sent, grpc-timeout and a deadline
 *    from grpc_service.timeout.
 * An export is a request of the worker on the collector cluster, as the
 * Zipkin reporter's (zipkin.h): a host from its balancer, its DEFAULT
 * circuit breakers, its pools. Nothing of it reaches proxied traffic.
 *
 * Stats (Envoy's, process-wide): tracing.opentelemetry.spans_sent,
 * timer_flushed, and for http_service http_reports_sent (an export was
 * handed to the cluster), http_reports_success (a response came, the
 * router's own local replies included, as Envoy's async client delivers
 * them), http_reports_failed (the response was cut: a reset or the timeout
 * after its headers). The gRPC exporter counts nothing else, as Envoy's.
 *
 * Memory is bounded: an exporter holds at most 1024 spans (a span beyond
 * that is dropped), the exports in flight are bounded by the collector
 * cluster's circuit breakers and their timeout (none when it is 0 or
 * unset, as in Envoy). */
#ifndef SHARP_HTTP_OTEL_H
#define SHARP_HTTP_OTEL_H

#include "http/tracing.h"
#include "worker.h"

void sharp_otel_sync(sharp_worker_t *w, const sharp_snapshot_t *snap);
/* Hands one sampled span's encoded Span message (moved out of *span) to
 * the worker's exporter for oc's collector. */
void sharp_otel_report(sharp_worker_t *w, const sharp_otel_config_t *oc, sharp_sbuf_t *span);
/* Worker shutdown: exports in flight are reset, pending spans dropped. */
void sharp_otel_stop_all(sharp_worker_t *w);

#endif

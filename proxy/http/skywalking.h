/* skywalking.h: the worker's SkyWalking reporters (Envoy's
 * TraceSegmentReporter).
 *
 * Each worker has one reporter per collector of its configuration (the
 * SkyWalkingConfig's cluster, authority, names, token, cache size and
 * metadata), made when the worker takes a configuration naming it and kept
 * until the worker stops, as Envoy's thread-local tracers. A reporter
 * holds one gRPC client stream /skywalking.v3.TraceSegmentReportService/
 * collect to the collector cluster over HTTP/2 (upstream/async_post.h: the
 * cluster's balancer, breakers and pools; no deadline), opened at once, and
 * sends each finished segment on it as one SegmentObject message.
 *
 * While there is no stream (it closed: the collector answered, reset it or
 * could not be reached), segments wait in a cache of at most
 * client_config.max_cache_size (default 1024); a segment beyond that
 * pushes the oldest out. A closed stream is opened again after a jittered
 * exponential back-off of 500 ms to 30 s (grpc/backoff.h), reset whenever a
 * stream opens; a new stream first takes the cached segments. Segments
 * sent on a stream that then fails are lost, as in Envoy.
 *
 * Stats (Envoy's, process-wide): tracing.skywalking.segments_sent (sent on
 * a stream, flushed ones included), segments_dropped (pushed out of the
 * cache, or refused by a stream whose 4 MiB send buffer is full: a
 * collector that does not read), segments_flushed (sent from the cache),
 * cache_flushed (the cache was sent on a new stream). */
#ifndef SHARP_HTTP_SKYWALKING_H
#define SHARP_HTTP_SKYWALKING_H

#include "http/tracing.h"
#include "worker.h"

#define SHARP_SKYWALKING_COLLECT_PATH "/skywalking.v3.TraceSegmentReportService/collect"

void sharp_skywalking_sync(sharp_worker_t *w, const sharp_snapshot_t *snap);
/* The segment as a gRPC message (length-prefixed SegmentObject), appended
 * to out. */
void sharp_sw_segment_encode(const sharp_sw_segment_t *seg, sharp_sbuf_t *out);
/* Hands a finished segment to the worker's reporter for sc's collector
 * and frees it. */
void sharp_skywalking_report(sharp_worker_t *w, const sharp_skywalking_config_t *sc, sharp_sw_segment_t *seg);
/* Worker shutdown: the streams are reset, cached segments dropped. */
void sharp_skywalking_stop_all(sharp_worker_t *w);

#endif

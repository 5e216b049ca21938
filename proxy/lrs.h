/* lrs.h: Envoy's load reporting service client (LoadStatsReporterImpl):
 * the bootstrap's cluster_manager.load_stats_config, a gRPC
 * ApiConfigSource whose one envoy_grpc service names a static, non-EDS,
 * HTTP/2 cluster.
 *
 * On the main thread, through SHARP's gRPC client (grpc/client.h), a
 * bidirectional /envoy.service.load_stats.v3.LoadReportingService/
 * StreamLoadStats stream, as Envoy's:
 * - every LoadStatsRequest carries the node (the one xDS requests name,
 *   with the client feature "envoy.lrs.supports_send_all_clusters"); the
 *   first one of a stream is sent at once, with the clusters still tracked
 *   from an earlier stream (none at first);
 * - each LoadStatsResponse starts a load report period: the clusters it
 *   names (or, with send_all_clusters, every cluster of the current
 *   snapshot) are tracked from then on, a cluster newly tracked having its
 *   hosts' counts reset; one already tracked keeps its interval start, so
 *   nothing between two reports is lost; the report timer is set to its
 *   load_reporting_interval;
 * - each report (the timer) holds one ClusterStats per tracked cluster that
 *   exists: per priority and locality of its hosts, the requests completed
 *   without a 5xx (total_successful_requests), those that failed with one
 *   or with a local upstream failure (total_error_requests), those issued
 *   (total_issued_requests), all since the previous report, and those in
 *   flight now (total_requests_in_progress), a locality sent only when one
 *   of these is not zero (the runtime guards
 *   envoy.reloadable_features.report_load_for_non_zero_stats, default on,
 *   and ...report_load_when_rq_active_is_non_zero, default on, the latter
 *   used only with the former off; with both off, only localities with
 *   issued requests); with report_endpoint_granularity, each endpoint's
 *   own counts too; the requests maintenance mode refused since the
 *   previous report (total_dropped_requests, Envoy's upstream_rq_dropped);
 *   the time since the cluster's previous report (load_report_interval);
 *   then the next period starts with the same response;
 * - when the stream ends (whatever its status), it is opened again after
 *   Envoy's fixed 5 s (RETRY_DELAY_MS), and the reporting goes on with the
 *   last response's clusters and interval.
 * Stats: load_reporter.requests (responses received), .responses (reports
 * sent), .errors (streams that ended with a status other than OK or could
 * not open), .retries (streams re-opened).
 *
 * The counts are the hosts' own atomics, which the workers' routers keep
 * (upstream/host.h: rq_total, rq_success, rq_error, active_rq); "since the
 * previous report" is the difference with the values the reporter latched
 * into the host, main-thread fields nothing else reads. ORCA load metrics
 * (load_metric_stats) are not collected: SHARP parses no ORCA reports. */
#ifndef SHARP_LRS_H
#define SHARP_LRS_H

#include "common.h"
#include "snapshot.h"

#include <protobuf-c/protobuf-c.h>

struct sharp_server;
typedef struct sharp_lrs sharp_lrs_t;

/* The bootstrap's load_stats_config (an ApiConfigSource) with Envoy's
 * checks, its cluster looked up in `snap` (the bootstrap's). NULL with the
 * reason, naming the field, in err. */
sharp_lrs_t *sharp_lrs_create(struct sharp_server *srv, const ProtobufCMessage *api_config_source,
                              const sharp_snapshot_t *snap, char *err, size_t errlen);
/* Opens the stream (main loop running; the node is sharp_xds_node's). */
void sharp_lrs_start(sharp_lrs_t *l);
/* Cancels the stream and closes the timers (shutdown, loop running). */
void sharp_lrs_stop(sharp_lrs_t *l);
/* After the loop has run the timers' close callbacks. */
void sharp_lrs_free(sharp_lrs_t *l);

#endif

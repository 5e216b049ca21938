/* cluster.h: a cluster as the data path sees it: immutable settings, its
 * hosts, and the stat ids of Envoy's cluster.<name>.* stats. Built on the
 * main thread from envoy.config.cluster.v3.Cluster and shared by all workers
 * through the config snapshot; each worker keeps its own load balancer and
 * connection pools for it (sharp_cluster_local_t). */
#ifndef SHARP_UPSTREAM_CLUSTER_H
#define SHARP_UPSTREAM_CLUSTER_H

#include "common.h"
#include "stats.h"
#include "upstream/host.h"
#include "upstream/lb.h"

#include <stdatomic.h>

typedef enum {
    SHARP_CLUSTER_STATIC,
    SHARP_CLUSTER_STRICT_DNS,
    SHARP_CLUSTER_LOGICAL_DNS,
    SHARP_CLUSTER_EDS,
} sharp_cluster_type_t;

/* Circuit breaker thresholds for the DEFAULT priority (Envoy's defaults). */
typedef struct {
    uint32_t max_connections;      /* 1024 */
    uint32_t max_pending_requests; /* 1024 */
    uint32_t max_requests;         /* 1024 */
    uint32_t max_retries;          /* 3 */
} sharp_cb_thresholds_t;

typedef struct sharp_cluster_stats {
    sharp_stat_id_t rq_total, rq_xx[6], rq_time, rq_timeout, rq_active, rq_pending_total,
        rq_pending_active, rq_pending_overflow, rq_cancelled, rq_rx_reset, rq_tx_reset,
        rq_completed, cx_total, cx_active, cx_connect_fail, cx_connect_timeout, cx_destroy,
        cx_destroy_local, cx_destroy_remote, cx_rx_bytes_total, cx_tx_bytes_total, cx_overflow,
        cx_protocol_error, cx_idle_timeout, cx_max_requests, membership_total, membership_healthy,
        lb_healthy_panic, upstream_rq_per_try_timeout, rq_retry, rq_maintenance_mode;
} sharp_cluster_stats_t;

typedef struct sharp_cluster {
    char *name;
    uint32_t index; /* position in the snapshot's cluster array */
    sharp_cluster_type_t type;
    uint64_t connect_timeout_ms;        /* default 5000 */
    sharp_lb_policy_t lb_policy;
    uint32_t choice_count;              /* least_request_lb_config.choice_count, default 2 */
    double panic_threshold;             /* common_lb_config.healthy_panic_threshold, default 50 */
    uint32_t per_connection_buffer_limit; /* default 1 MiB */
    uint32_t max_requests_per_connection; /* 0 = unlimited */
    uint64_t idle_timeout_ms;           /* upstream connection idle timeout, default 1h */
    sharp_cb_thresholds_t cb;
    sharp_host_t **hosts;
    uint32_t nhosts;
    sharp_cluster_stats_t st;
    /* upstream_rq_<code> ids, registered on first use of each code (a
     * registration takes the stats lock once per code, never again). */
    _Atomic sharp_stat_id_t rq_code[600];
    sharp_stats_t *stats;
    _Atomic int64_t rq_open; /* requests in flight on all workers (max_requests breaker) */
} sharp_cluster_t;

/* Registers the cluster's stats (cluster.<name>.*) in the store. */
void sharp_cluster_stats_init(sharp_cluster_t *c, sharp_stats_t *stats);
void sharp_cluster_free(sharp_cluster_t *c);
/* Counts a completed upstream response code into upstream_rq_<class>xx. */
void sharp_cluster_count_response(sharp_cluster_t *c, sharp_stats_shard_t *sh, uint32_t code);

#endif

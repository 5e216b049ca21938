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
#include "upstream/host_index.h"
#include "upstream/lb.h"

#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <uv.h>

/* The hosts of a cluster at one moment: an immutable, refcounted array.
 * The main thread publishes a new set when a DNS cluster's membership
 * changes; each worker holds a reference to the set its load balancer and
 * pools were built over, and moves to the newer one between two events of
 * its loop (worker.c). A STATIC cluster has one set for its whole life.
 * Hosts themselves belong to the cluster (sharp_cluster_t.all_hosts):
 * streams, retries and retired pools may still point at a host that a
 * newer set no longer lists, so one that left is freed only once nothing
 * uses it (sharp_cluster_collect_departed), else with the cluster. */
typedef struct sharp_hostset {
    _Atomic uint32_t refs;
    uint64_t generation; /* 1 for the first set of a cluster, +1 per publication */
    /* lb_subset_config: the set's subsets (upstream/subset.h), made with it
     * on the main thread; NULL without */
    struct sharp_subset_plan *subsets;
    /* What every worker's balancer over the set reads (lb.h), made with
     * the set on the main thread */
    sharp_lb_shape_t *lb_shape;
    /* prev[i]: where hosts[i] was in the set of generation - 1, or -1 (a
     * new host); NULL for a first set. A worker moving from that set moves
     * its pools by it, with no search. */
    int32_t *prev;
    struct sharp_hostset *next_free; /* sharp_hostset_release's list */
    uint32_t nhosts;
    sharp_host_t *hosts[];
} sharp_hostset_t;

sharp_hostset_t *sharp_hostset_new(sharp_host_t *const *hosts, uint32_t n, uint64_t generation);
static inline sharp_hostset_t *sharp_hostset_ref(sharp_hostset_t *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}
/* Any thread; the last reference frees the array (never the hosts). */
void sharp_hostset_unref(sharp_hostset_t *s);
/* A worker's unref: a last reference does not free the set there (a
 * decrement of every host's nsets, the subsets, the arrays: work in
 * proportion to the set) but leaves it to the main thread, which frees
 * what was left at its next sharp_hostset_reap (each publication, the
 * housekeeping). Before sharp_hostset_defer_frees(true) and after (false),
 * the same as sharp_hostset_unref. No lock: a push on a lock-free list. */
void sharp_hostset_release(sharp_hostset_t *s);
/* Main thread; sharp_cluster_free reaps first, so a released set never
 * outlives its cluster's hosts. */
void sharp_hostset_reap(void);
/* Main thread: on while workers run; off (after they are joined) reaps. */
void sharp_hostset_defer_frees(bool on);

typedef enum {
    SHARP_CLUSTER_STATIC,
    SHARP_CLUSTER_STRICT_DNS,
    SHARP_CLUSTER_LOGICAL_DNS,
    SHARP_CLUSTER_EDS,
    SHARP_CLUSTER_ORIGINAL_DST, /* hosts made on demand (upstream/original_dst.h) */
} sharp_cluster_type_t;

/* core.v3.RoutingPriority: a route's priority picks the circuit breaker
 * thresholds (and, as in Envoy, the connection pools) its requests use. */
typedef enum {
    SHARP_PRIORITY_DEFAULT = 0,
    SHARP_PRIORITY_HIGH = 1,
} sharp_priority_t;
#define SHARP_NPRIORITIES 2

/* Circuit breaker thresholds of one priority (Envoy's defaults, the same
 * for both priorities). */
typedef struct {
    uint32_t max_connections;      /* 1024 */
    uint32_t max_pending_requests; /* 1024 */
    uint32_t max_requests;         /* 1024 */
    uint32_t max_retries;          /* 3 */
    bool has_retry_budget;         /* retry_budget: replaces max_retries */
    double budget_percent;         /* of active + pending requests, default 20 */
    uint32_t min_retry_concurrency; /* default 3 */
    bool track_remaining;
} sharp_cb_thresholds_t;

/* The runtime keys Envoy's resource manager reads over the thresholds:
 * "circuit_breakers.<cluster>.<default|high>.<name>". */
typedef enum {
    SHARP_CB_MAX_CONNECTIONS,
    SHARP_CB_MAX_PENDING_REQUESTS,
    SHARP_CB_MAX_REQUESTS,
    SHARP_CB_MAX_RETRIES,
    SHARP_CB_BUDGET_PERCENT,        /* retry_budget.budget_percent (a double) */
    SHARP_CB_MIN_RETRY_CONCURRENCY, /* retry_budget.min_retry_concurrency */
    SHARP_CB_NKEYS
} sharp_cb_key_t;

typedef struct sharp_cluster_stats {
    sharp_stat_id_t rq_total, rq_xx[6], rq_time, rq_timeout, rq_active, rq_pending_total,
        rq_pending_active, rq_pending_overflow, rq_cancelled, rq_rx_reset, rq_tx_reset,
        rq_completed, cx_total, cx_active, cx_connect_fail, cx_connect_timeout, cx_destroy,
        cx_destroy_local, cx_destroy_remote, cx_rx_bytes_total, cx_tx_bytes_total, cx_overflow,
        cx_connect_attempts_exceeded, cx_none_healthy,
        cx_protocol_error, cx_idle_timeout, cx_max_requests, cx_max_duration_reached, rq_max_duration_reached, membership_total, membership_healthy,
        lb_healthy_panic, upstream_rq_per_try_timeout, rq_retry, rq_maintenance_mode,
        rq_retry_success, rq_retry_overflow, rq_retry_limit_exceeded, rq_retry_backoff_exponential,
        cx_connect_ms, cx_length_ms, retry_or_shadow_abandoned, cx_http1_total, cx_http2_total,
        cx_close_notify, original_dst_host_invalid, membership_change, update_attempt, update_success, update_failure, update_empty,
        update_no_rebuild;
    /* Envoy's ClusterLbStats of zone-aware routing (upstream/zone_lb.h);
     * lb_zone_number_differs stays 0, as in Envoy since localities are
     * matched by name rather than by position */
    sharp_stat_id_t lb_recalculate_zone_structures, lb_zone_cluster_too_small, lb_zone_routing_all_directly,
        lb_zone_routing_sampled, lb_zone_routing_cross_zone, lb_local_cluster_not_ok, lb_zone_number_differs,
        lb_zone_no_capacity_left;
    /* Envoy's ClusterLbStats of subset load balancing (upstream/subset.h);
     * lb_subsets_active counts the current host set's subsets */
    sharp_stat_id_t lb_subsets_active, lb_subsets_created, lb_subsets_removed, lb_subsets_selected,
        lb_subsets_fallback, lb_subsets_fallback_panic, lb_subsets_single_host_per_subset_duplicate;
    /* cluster.<name>.ssl.*, registered for TLS clusters only (Envoy's
     * client context stats in the cluster's scope); ciphers.<name>,
     * versions.<v> and curves.<name> are registered on first use */
    struct {
        sharp_stat_id_t connection_error, handshake, session_reused, no_certificate, fail_verify_error,
            fail_verify_san, fail_verify_cert_hash, fail_verify_no_cert;
    } ssl;
    /* cluster.<name>.http2.*, registered for HTTP/2 clusters only (Envoy
     * creates them with the first HTTP/2 codec) */
    struct {
        sharp_stat_id_t rx_reset, tx_reset, trailers, keepalive_timeout, stream_refused_errors,
            rx_messaging_error, header_overflow, outbound_flood, outbound_control_flood,
            inbound_empty_frames_flood, inbound_priority_frames_flood, inbound_window_update_frames_flood,
            streams_active;
    } h2;
    /* cluster.<name>.kernel.*: SHARP's kernel TCP signals summed over the
     * hosts, registered unless they are off (kernel/kernel.h) */
    struct {
        bool on;
        sharp_stat_id_t segments_out, retransmits, syn_retransmits, resets_received, resets_sent, connects,
            connect_failures, closes, rtt_median_us, retransmit_rate_median_ppm, retransmit_rate_max_ppm;
    } kernel;
} sharp_cluster_stats_t;

/* Http2ProtocolOptions of an HTTP/2 cluster or a connection manager
 * (Envoy's defaults in the comments; validated by the support table). */
typedef struct sharp_h2_options {
    uint32_t hpack_table_size;               /* 4096 */
    uint32_t max_concurrent_streams;         /* 2147483647 */
    uint32_t initial_stream_window_size;     /* 268435456 */
    uint32_t initial_connection_window_size; /* 268435456 */
    uint32_t max_outbound_frames;            /* 10000 */
    uint32_t max_outbound_control_frames;    /* 1000 */
    uint32_t max_consecutive_inbound_frames_with_empty_payload; /* 1 */
    uint32_t max_inbound_priority_frames_per_stream;            /* 100 */
    uint32_t max_inbound_window_update_frames_per_data_frame_sent; /* 10 */
    /* a malformed HTTP message resets only its stream (true) or closes the
     * connection (false, Envoy's default) */
    bool stream_error_on_invalid_http_message;
    /* allow_connect (false): SETTINGS_ENABLE_CONNECT_PROTOCOL is sent as
     * this value; a connection manager takes extended CONNECT (RFC 8441)
     * only with it */
    bool allow_connect;
    /* connection_keepalive: a PING every interval (0: none), jittered by
     * interval_jitter percent of it; no answer within timeout closes. */
    bool has_keepalive; /* connection_keepalive set (its timeout is required) */
    uint64_t keepalive_interval_ms, keepalive_timeout_ms;
    double keepalive_jitter_percent;         /* 15 */
} sharp_h2_options_t;

/* The cluster-wide counts one priority's thresholds limit, shared by all
 * workers. */
typedef struct {
    _Atomic int64_t rq_open;         /* requests in flight (max_requests) */
    _Atomic int64_t rq_retry_open;   /* retries scheduled or in flight (max_retries / retry_budget) */
    _Atomic int64_t cx_open;         /* upstream connections (max_connections) */
    _Atomic int64_t rq_pending_open; /* requests waiting for a connection (max_pending_requests) */
} sharp_cb_counts_t;

typedef struct sharp_cluster {
    char *name;
    /* alt_stat_name, else the name: Envoy's observability name, which
     * cluster.<stat_name>.* stats, %UPSTREAM_CLUSTER% and the admin's
     * observability_name say (the runtime keys keep the name) */
    char *stat_name;
    uint32_t index; /* position in the snapshot's cluster array */
    sharp_cluster_type_t type;
    uint64_t connect_timeout_ms;        /* default 5000 */
    sharp_lb_policy_t lb_policy;
    uint32_t choice_count;              /* least_request_lb_config.choice_count, default 2 */
    double active_request_bias;         /* LeastRequest.active_request_bias, default 1.0 */
    /* Zone-aware routing (upstream/zone_lb.h): on for the round robin,
     * least request and random balancers when the bootstrap names a local
     * cluster (zone_local_cluster) or the cluster's zone-aware settings ask
     * for fail_traffic_on_panic; local_locality is node.locality's id. */
    bool zone_on, has_zone_config;
    /* locality_weighted_lb_config (common_lb_config's, or a typed policy's
     * locality_lb_config): localities by weight and health, then hosts
     * (upstream/lb.h); zone-aware routing is then off, as in Envoy, whose
     * locality choice comes first */
    bool locality_weighted;
    sharp_zone_config_t zone;
    uint32_t local_locality;
    char *zone_local_cluster;
    double panic_threshold;             /* common_lb_config.healthy_panic_threshold, default 50 */
    uint32_t per_connection_buffer_limit; /* default 1 MiB */
    /* health_checks' close_connections_on_host_health_failure: the TCP
     * proxy's connections to a host that fails closes (http/tcp_proxy.c) */
    bool close_connections_on_host_health_failure;
    uint32_t max_requests_per_connection; /* 0 = unlimited */
    uint64_t idle_timeout_ms;           /* upstream connection idle timeout, default 1h */
    sharp_cb_thresholds_t cb[SHARP_NPRIORITIES]; /* indexed by sharp_priority_t */
    char *cb_keys[SHARP_NPRIORITIES][SHARP_CB_NKEYS]; /* set by sharp_cluster_stats_init */
    char *maintenance_key; /* "upstream.maintenance_mode.<name>", likewise */
    /* common_http_protocol_options, upstream side (Envoy's ClusterInfo). */
    uint32_t max_response_headers_count; /* max_headers_count, default 100 */
    sharp_h1_key_format_t h1_keys;       /* HTTP/1 http_protocol_options.header_key_format */
    bool has_max_connection_duration;    /* max_connection_duration set (0s included) */
    uint64_t max_connection_duration_ms;
    uint64_t max_stream_duration_ms;     /* max_stream_duration of each try, 0 = none */
    /* upstream_connection_options.tcp_keepalive: SO_KEEPALIVE on every
     * upstream socket, and each of TCP_KEEPCNT / TCP_KEEPIDLE / TCP_KEEPINTVL
     * that is configured (0 = not configured: the OS default stays). */
    bool tcp_keepalive;
    /* the source address of health check connections (an HDS cluster's
     * upstream_bind_config.source_address, hds.c); bind_addrlen 0: none */
    struct sockaddr_storage bind_addr;
    socklen_t bind_addrlen;
    uint32_t keepalive_probes, keepalive_time_s, keepalive_interval_s;
    /* HTTP/2 to the hosts (http2_protocol_options, or the HttpProtocolOptions
     * extension's explicit_http_config.http2_protocol_options). With
     * downstream_protocol it is Envoy's HTTP2 feature instead (the
     * use_downstream_protocol_config has http2_protocol_options), which
     * only gRPC health checking reads. */
    bool http2;
    /* use_downstream_protocol_config (Envoy's USE_DOWNSTREAM_PROTOCOL): a
     * request that came over HTTP/2 goes to the host over HTTP/2 with h2,
     * any other (HTTP/1.1, HTTP/1.0) over HTTP/1.1; each worker keeps one
     * pool per protocol for each host (worker.h). */
    bool downstream_protocol;
    /* auto_config (Envoy's AutoHttpConfig, TLS clusters only): offered
     * ALPN h2 and http/1.1, each connection runs the codec ALPN picked (h2,
     * else HTTP/1.1); the pools start as HTTP/1.1 ones and take the
     * protocol the host last negotiated for their estimates */
    bool auto_http;
    sharp_h2_options_t h2; /* options of the HTTP/2 pools */
    /* The main thread's current host set (cluster.h's sharp_hostset_t) and,
     * for the code that runs there (health checks, outlier detection, the
     * admin, the gRPC client), its array: hosts == set->hosts. Workers never
     * read these: they use their own reference (worker.h). */
    sharp_hostset_t *set;
    sharp_host_t **hosts;
    uint32_t nhosts;
    /* The hosts the cluster has and those that left it but may still be
     * in use (a DNS or EDS update adds one per new address; one that comes
     * back while still here is reused); freed when unused
     * (sharp_cluster_collect_departed) or with the cluster. */
    sharp_host_t **all_hosts;
    uint32_t nall_hosts, all_hosts_cap;
    sharp_host_index_t all_index; /* all_hosts by address (main thread) */
    /* STRICT_DNS / LOGICAL_DNS resolution settings and state, NULL for
     * STATIC clusters (upstream/dns.h). */
    struct sharp_dns_cluster *dns;
    /* ORIGINAL_DST: its settings and shared host map, NULL for other types */
    struct sharp_odst *odst;
    /* cluster_type envoy.clusters.aggregate: its members (upstream/
     * aggregate.h), NULL for other clusters; an aggregate has no hosts and
     * its type says STATIC */
    struct sharp_aggregate *aggregate;
    /* transport_socket envoy.transport_sockets.tls (UpstreamTlsContext):
     * the client context, built at load (rebuilt when an SDS secret rotates,
     * tls/sds.h) and shared by every worker's
     * connections (it keeps the sessions for resumption); NULL for
     * plaintext (proxy/tls/upstream.h) */
    struct sharp_tls_slot *tls;
    /* health_checks[0], NULL without active health checking (upstream/health_check.h) */
    struct sharp_hc_config *health_check;
    sharp_cluster_stats_t st;
    /* upstream_rq_<code> ids plus one (0: not registered yet), registered
     * on first use of each code (a registration takes the stats lock once
     * per code, never again, also when the stats matcher rejects it). */
    _Atomic sharp_stat_id_t rq_code[600];
    /* the UDP proxy's cluster.<name>.udp.* counters (udp/udp_proxy.c), the
     * same way: ids plus one, registered by the first session's worker */
    _Atomic sharp_stat_id_t udp_st[5];
    /* circuit_breakers.<priority>.* gauges, [0] default, [1] high */
    struct {
        sharp_stat_id_t cx_open, cx_pool_open, rq_pending_open, rq_open, rq_retry_open, remaining_cx,
            remaining_pending, remaining_rq, remaining_retries, remaining_cx_pools;
    } cbg[2];
    sharp_stats_t *stats;
    sharp_cb_counts_t open[SHARP_NPRIORITIES]; /* what cb[] limits, per priority */
    /* Envoy's load report stat upstream_rq_dropped: requests maintenance
     * mode refused (any worker), and the load reporter's latch of it
     * (lrs.h, main thread) */
    _Atomic uint64_t rq_dropped;
    uint64_t lrs_dropped;
    struct sharp_outlier *outlier; /* outlier_detection, NULL without it (upstream/outlier.h) */
    /* lb_subset_config with selectors, NULL without (upstream/subset.h) */
    struct sharp_subset_config *subset;
    /* load_balancing_policy ShuffleShard, NULL for the other balancers (upstream/shard_lb.h) */
    struct sharp_shard_policy *shuffle_shard;
    /* References: each snapshot that lists the cluster, each worker's
     * cluster view and each pool over its hosts (pools outlive a retired
     * view until their last connection closes), each mirrored request. The
     * last one frees the cluster on the main thread (sharp_cluster_unref),
     * so a cluster that CDS changed or removed lives exactly as long as
     * something in flight uses it. */
    _Atomic uint32_t refs;
    /* Per worker: a newer host set the worker takes at its next wake-up
     * (sharp_worker_set_hostset), NULL when none; nworkers entries. */
    _Atomic(sharp_hostset_t *) *pending;
    uint32_t npending;
    /* Per worker: the cluster is on the worker's list of clusters with a
     * pending set (queued), and the next one on that list (queue_next), so
     * a wake-up visits those clusters only, not every cluster of its view. */
    atomic_bool *queued;
    struct sharp_cluster **queue_next;
    /* EDS: the name the cluster's endpoints are published under
     * (eds_cluster_config.service_name, else the cluster's name) and the
     * subscription that feeds them (xds/xds.h); NULL for other types */
    char *eds_service_name;
    bool eds_service_name_set; /* service_name given (Envoy's edsServiceName, the load reports') */
    struct sharp_xds_eds *eds;
    /* For the admin: the version of the CDS update that built the cluster
     * and when ("" and 0 for a static cluster). */
    char *version_info;
    uint64_t last_updated_us;
    const ProtobufCMessage *pb; /* the Cluster message it was built from (owned by its source) */
} sharp_cluster_t;

/* The number of workers: sized the per-worker slots of clusters built
 * from now on (the server sets it before loading the configuration). */
void sharp_cluster_set_nworkers(uint32_t n);
static inline sharp_cluster_t *sharp_cluster_ref(sharp_cluster_t *c)
{
    if (c) atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}
/* Any thread. The last reference frees the cluster: at once when no
 * release hook is set (before the workers run, after they are joined),
 * else through the hook, which the server points at its main loop (an
 * outlier detector's handles are closed there). */
void sharp_cluster_unref(sharp_cluster_t *c);
void sharp_cluster_set_release_hook(void (*fn)(void *arg, sharp_cluster_t *c), void *arg);

/* The cluster's socket options (upstream_connection_options.tcp_keepalive,
 * as Envoy's buildTcpKeepaliveOptions: SO_KEEPALIVE, then each configured
 * value) on a socket that exists but is not connected yet. Envoy applies
 * them to every connection to the cluster's hosts, health checks' included.
 * Returns 0 or a negative errno. */
int sharp_cluster_socket_options(const sharp_cluster_t *c, uv_tcp_t *tcp);
/* Makes the hosts the loader put in c->hosts the cluster's first set (and
 * its own, in all_hosts). Called once, when the cluster is built. */
void sharp_cluster_init_hostset(sharp_cluster_t *c);
/* Main thread: makes hosts[0..n) the cluster's current set (hosts that are
 * not in all_hosts yet are added to it), rewrites their index, and tells
 * the workers (sharp_cluster_set_hostset_notify). */
void sharp_cluster_publish_hosts(sharp_cluster_t *c, sharp_host_t *const *hosts, uint32_t n);
/* Adds a host to all_hosts (the cluster owns it from then on). */
void sharp_cluster_adopt_host(sharp_cluster_t *c, sharp_host_t *h);
/* Main thread, periodically: frees the hosts that left the cluster (an
 * EDS or DNS update) and that nothing uses any more: no host set lists
 * them, no pool (retired ones included) and no try has them, on two
 * collections in a row; through retire.h, as a worker may still hold the
 * pointer in a running callback. An address that comes back later gets a
 * new host. Without it, every address a cluster ever had would stay
 * (pod churn under EDS). */
void sharp_cluster_collect_departed(sharp_cluster_t *c);
/* The function that hands a cluster's new set to the workers (set by the
 * server once the workers run; NULL before, when workers build their view
 * from c->set when they start). Main thread. */
void sharp_cluster_set_hostset_notify(void (*fn)(void *arg, sharp_cluster_t *c), void *arg);
/* Registers the cluster's stats (cluster.<name>.*) in the store. */
void sharp_cluster_stats_init(sharp_cluster_t *c, sharp_stats_t *stats);
void sharp_cluster_free(sharp_cluster_t *c);
/* Sets the circuit_breakers.* gauges from the cluster-wide counters (main
 * thread: housekeeping and before admin renders stats). */
void sharp_cluster_refresh_gauges(sharp_cluster_t *c);
/* Counts a completed upstream response code into upstream_rq_<class>xx. */
void sharp_cluster_count_response(sharp_cluster_t *c, sharp_stats_shard_t *sh, uint32_t code);
/* A threshold of one priority as Envoy's ResourceImpl::max(): the thread's
 * runtime value of its key, else the configured one. */
uint64_t sharp_cluster_cb_max(const sharp_cluster_t *c, sharp_priority_t prio, sharp_cb_key_t k);
/* One priority's thresholds with the runtime applied (admin output). */
void sharp_cluster_cb_effective(const sharp_cluster_t *c, sharp_priority_t prio, sharp_cb_thresholds_t *out);
/* Takes one unit of a cluster-wide breaker counter unless it is at `limit`.
 * Any thread; the count never exceeds the limit. */
static inline bool sharp_cluster_slot_acquire(_Atomic int64_t *open, uint64_t limit)
{
    int64_t cur = atomic_load_explicit(open, memory_order_relaxed);
    do {
        if (cur >= 0 && (uint64_t)cur >= limit) return false;
    } while (!atomic_compare_exchange_weak_explicit(open, &cur, cur + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* Envoy's postThreadLocalHealthFailure: a host that active health checking
 * has just marked failed, or that outlier detection has just ejected, gets
 * its connection pools drained on every worker (Envoy's
 * DrainExistingConnections: idle connections close, busy ones close once
 * their request is done; requests in flight are not reset). Main thread. */
void sharp_host_drain_connections(sharp_host_t *h);
/* The same from any thread, without waking the workers: each acts at its
 * next request to the host or its next 1 s tick. */
void sharp_host_request_drain(sharp_host_t *h);
/* The function that wakes the workers to act on drains (set once by the
 * server before the first drain can happen, cleared at shutdown). */
void sharp_upstream_set_drain_notify(void (*fn)(void *arg), void *arg);
/* Changes whenever some host asked for a drain: workers compare it with the
 * value of their last pass over their pools. Any thread. */
uint64_t sharp_upstream_drain_epoch(void);

/* Takes one retry slot of the priority's max_retries (or retry_budget)
 * breaker; false when it is full. Any thread. */
bool sharp_cluster_retry_acquire(sharp_cluster_t *c, sharp_priority_t prio);
void sharp_cluster_retry_release(sharp_cluster_t *c, sharp_priority_t prio);

#endif

/* server.h: the main thread: options, bootstrap, snapshot, workers, admin,
 * signals and the drain/shutdown sequence. */
#ifndef SHARP_SERVER_H
#define SHARP_SERVER_H

#include "common.h"
#include "snapshot.h"
#include "stats.h"
#include "worker.h"

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

typedef struct sharp_options {
    const char *config_path;
    const char *config_yaml;
    bool validate_only;
    unsigned concurrency;
    int log_level;
    const char *component_log_level; /* "upstream:debug,connection:trace", NULL if none */
    const char *log_format;          /* NULL: SHARP_DEFAULT_LOG_FORMAT */
    const char *log_path;
    unsigned restart_epoch;          /* always 0: hot restart is refused */
    unsigned base_id;
    const char *service_cluster;
    const char *service_node;
    unsigned drain_time_s;            /* default 600 as Envoy; SIGTERM drain bound */
    unsigned parent_shutdown_time_s;  /* default 900 */
    int kernel_signals;               /* sharp_kernel_mode_t (kernel/kernel.h), auto by default */
    unsigned main_thread_nice;        /* nice levels the main thread runs below the workers (0: as Envoy) */
} sharp_options_t;

typedef enum {
    SHARP_SERVER_LIVE,
    SHARP_SERVER_DRAINING,
    SHARP_SERVER_PRE_INITIALIZING,
    SHARP_SERVER_INITIALIZING,
} sharp_server_state_t;

struct sharp_config;

typedef struct sharp_server {
    sharp_options_t opts;
    uv_loop_t *loop;
    sharp_stats_t *stats;
    sharp_snapshot_t *snap;
    struct sharp_config *config; /* parsed bootstrap and its runtime translation */
    struct sharp_runtime *runtime; /* layered_runtime loader (runtime.h), main thread */
    sharp_worker_t *workers;
    unsigned nworkers;
    sharp_server_state_t state;
    bool healthcheck_failed;
    bool workers_started; /* after the first round of health checks, if any */
    bool listeners_stopped; /* /drain_listeners or a drain: no listener is added any more */
    bool checks_started; /* the first round of health checks has begun (CDS clusters join it later) */
    bool shutting_down;
    uint64_t start_wall_s;
    uint64_t start_ns;
    uint64_t last_flush_ns;
    uv_signal_t sigterm, sigint, sigusr1, sighup;
    uv_timer_t housekeeping; /* uptime gauge, drain progress */
    uv_timer_t stats_flush;  /* stats_flush_interval: histogram intervals, stats sinks */
    sharp_dispatcher_stats_t dispatcher_stats; /* enable_dispatcher_stats: the main thread's */
    bool stats_flush_on_admin; /* no flush timer: the admin's stats endpoints flush */
    uv_timer_t drain_deadline;
    struct sharp_admin *admin;
    struct sharp_grpc_registry *grpc;         /* gRPC services on the admin listener */
    struct sharp_grpc_health *grpc_health;    /* grpc.health.v1.Health, in `grpc` */
    struct sharp_scaling *scaling;            /* the scaling agent (scaling.h), NULL without one */
    struct sharp_lrs *lrs;                    /* the load reporter (lrs.h), NULL without load_stats_config */
    struct sharp_hds *hds;                    /* the health discovery client (hds.h), NULL without hds_config */
    struct sharp_health_checker *health_checker; /* active health checks, NULL without any */
    uint32_t dns_awaiting; /* DNS clusters whose first resolution is not done yet (+1 while starting them) */
    /* The main thread's upstream env, for the pools of SHARP's own clients
     * (grpc/client.h): its loop, stats shard 0, and stopping once the
     * server shuts down. They do not drain with the listeners: a control
     * plane stream keeps working through a drain, as in Envoy. */
    sharp_upstream_env_t upstream_env;
    uint64_t rng;
    /* xDS (xds/xds.h): the dynamic clusters, endpoints and route tables,
     * and their file subscriptions */
    struct sharp_xds *xds;
    /* clusters whose last reference went while the workers ran, freed on
     * the main loop (their outlier detectors' handles close there) */
    uv_async_t released_async;
    uv_mutex_t released_mu;
    sharp_cluster_t **released;
    uint32_t nreleased, released_cap;
    sharp_cluster_t **closing; /* outlier handles closing; freed once closed */
    uint32_t nclosing;
    char node_id[256], node_cluster[256];
    struct {
        sharp_stat_id_t live, uptime, concurrency, state, version, total_connections,
            days_until_first_cert_expiring, memory_allocated, memory_heap_size, hot_restart_epoch,
            drain_listeners, active_clusters, listeners_active, listener_create_success, listener_create_failure;
        bool has_cert_expiry; /* days_until_first_cert_expiring is registered (there are certificates) */
    } st;
    int exit_code;
} sharp_server_t;

/* Loads the bootstrap, builds the snapshot. With --mode validate, returns
 * after validation. Returns 0 or -1 (message already printed). */
int sharp_server_init(sharp_server_t *s, const sharp_options_t *opts);
/* Binds listeners, starts workers and admin, runs until shutdown. Returns
 * the process exit code. */
int sharp_server_run(sharp_server_t *s);
void sharp_server_free(sharp_server_t *s);

/* Envoy's stats flush: closes the histograms' interval, then sends every
 * stats sink. Every stats_flush_interval (5 s by default), or, with
 * stats_flush_on_admin, at each request to /stats or /stats/prometheus.
 * Main thread. */
void sharp_server_flush_stats(sharp_server_t *s);

/* Admin actions (main thread). */
void sharp_server_drain_listeners(sharp_server_t *s);
/* Wakes every running worker (their wake-up looks at what changed). */
void sharp_server_wake_workers(sharp_server_t *s);
/* Makes snap the current configuration: the admin's, and, from their next
 * wake-up, the workers' for new streams (xds/xds.h). Main thread; takes a
 * reference of its own. */
void sharp_server_set_snapshot(sharp_server_t *s, sharp_snapshot_t *snap);
void sharp_server_shutdown(sharp_server_t *s, bool drain);
int64_t sharp_server_downstream_connections(sharp_server_t *s);
/* Reopens every access log file and the --log-path file (SIGUSR1,
 * /reopen_logs). Returns 0, or -1 when one could not be reopened (logged;
 * the others are reopened all the same). */
int sharp_server_reopen_logs(sharp_server_t *s);
/* Sets server.live and server.state from the state and the health check
 * flag (/healthcheck/fail), as Envoy does. Main thread. */
void sharp_server_update_state_gauges(sharp_server_t *s);
/* server.version: the bootstrap's stats_server_version_override when set,
 * else SHARP's version as major * 1000000 + minor * 1000 + patch. */
uint64_t sharp_server_version_number(const sharp_server_t *s);

#endif

/* The loaded bootstrap message (for /config_dump), NULL before init. */
const ProtobufCMessage *sharp_server_bootstrap(const sharp_server_t *s);
/* Admin listener address from the bootstrap, "" when there is none. */
const char *sharp_server_admin_address(const sharp_server_t *s);

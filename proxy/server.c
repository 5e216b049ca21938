/* server.c: the main thread. Startup: load and validate the bootstrap, build
 * the snapshot, open every listening socket (so a busy port fails the start
 * with a clear message), start the workers and the admin listener. Shutdown:
 * SIGTERM/SIGINT drain (stop accepting, let in-flight requests finish, close
 * idle keep-alive connections) bounded by --drain-time-s, then stop. */
#include "server.h"
#include "statsd.h"
#include "lrs.h"
#include "hds.h"
#include "metrics_service.h"
#include "otlp_sink.h"
#include "scaling.h"
#include "admin/admin.h"
#include "config/bootstrap.h"
#include "http/access_log.h"
#include "config/runtime_config.h"
#include "http/access_log_emit.h"
#include "http/filter.h"
#include "listen_socket.h"
#include "log.h"
#include "overload.h"
#include "retire.h"
#include "tls/sds.h"
#include "upstream/outlier.h"
#include "kernel/kernel.h"
#include "upstream/dns.h"
#include "upstream/dfp.h"
#include "upstream/original_dst.h"
#include "upstream/health_check.h"
#include "grpc/health.h"
#include "grpc/server.h"
#include "xds/xds.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <unistd.h>

const ProtobufCMessage *sharp_server_bootstrap(const sharp_server_t *s)
{
    return s->config ? s->config->bootstrap : NULL;
}

const char *sharp_server_admin_address(const sharp_server_t *s)
{
    return s->config && s->config->has_admin ? s->config->admin_address : "";
}

uint64_t sharp_server_version_number(const sharp_server_t *s)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs =
        s->config ? (const Envoy__Config__Bootstrap__V3__Bootstrap *)s->config->bootstrap : NULL;
    if (bs && bs->stats_server_version_override && bs->stats_server_version_override->value > 0)
        return bs->stats_server_version_override->value;
    unsigned major = 0, minor = 0, patch = 0;
    sscanf(SHARP_VERSION, "%u.%u.%u", &major, &minor, &patch);
    return (uint64_t)major * 1000000 + (uint64_t)minor * 1000 + patch;
}

/* Envoy's Memory::Stats from the allocator (heap.h): allocated = bytes in
 * use, heap size = bytes taken from the system. */
static void update_memory_gauges(sharp_server_t *s)
{
    sharp_heap_stats_t hs;
    sharp_heap_stats(&hs);
    sharp_gauge_set(s->stats, s->st.memory_allocated, (int64_t)hs.allocated);
    /* server.days_until_first_cert_expiring: absent without certificates,
     * as Envoy leaves it unset then */
    int64_t days = sharp_snapshot_certs(s->snap, NULL);
    if (days >= 0) {
        if (!s->st.has_cert_expiry) {
            s->st.days_until_first_cert_expiring = sharp_stats_gauge(s->stats, "server.days_until_first_cert_expiring");
            s->st.has_cert_expiry = true;
        }
        sharp_gauge_set(s->stats, s->st.days_until_first_cert_expiring, days);
    }
    sharp_gauge_set(s->stats, s->st.memory_heap_size, (int64_t)hs.heap_size);
}

/* grpc.health.v1's SERVING for the server itself: what server.live says
 * (live, health check not failed), while not initializing. */
static bool grpc_serving(void *arg)
{
    const sharp_server_t *s = arg;
    return s->state == SHARP_SERVER_LIVE && !s->healthcheck_failed && !s->shutting_down;
}

void sharp_server_update_state_gauges(sharp_server_t *s)
{
    /* Envoy: live is the inverse of the health-check-failed flag (set at
     * initialization, so it is 1 while initializing); state is the init
     * state, with a failed health check turning LIVE into DRAINING. SHARP's
     * SIGTERM drain also counts as draining. */
    bool draining = s->state == SHARP_SERVER_DRAINING;
    sharp_gauge_set(s->stats, s->st.live, !s->healthcheck_failed && !draining);
    int64_t st;
    switch (s->state) {
    case SHARP_SERVER_LIVE: st = s->healthcheck_failed ? 1 : 0; break;
    case SHARP_SERVER_DRAINING: st = 1; break;
    case SHARP_SERVER_PRE_INITIALIZING: st = 2; break;
    default: st = 3; break;
    }
    sharp_gauge_set(s->stats, s->st.state, st);
    /* grpc.health.v1 Watch calls follow the same state */
    sharp_grpc_health_changed(s->grpc_health);
}

int sharp_server_init(sharp_server_t *s, const sharp_options_t *opts)
{
    memset(s, 0, sizeof *s);
    s->opts = *opts;
    s->state = SHARP_SERVER_PRE_INITIALIZING;
    s->start_ns = sharp_now_ns();
    s->start_wall_s = sharp_wall_us() / 1000000;
    s->nworkers = opts->concurrency;
    s->stats = sharp_stats_create(s->nworkers + 1);
    sharp_filters_register_builtin();
    sharp_cluster_set_nworkers(s->nworkers);
    /* before the clusters are built: they register kernel.* stats unless off */
    sharp_kernel_set_mode((sharp_kernel_mode_t)opts->kernel_signals);
    s->xds = sharp_xds_new(s);
    char err[2048];
    const char *what = opts->config_path ? opts->config_path : opts->config_yaml ? "--config-yaml" : "<default>";
    if (sharp_config_load(opts, &s->config, err, sizeof err) < 0) {
        fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
        return -1;
    }
    /* the ADS source before the listeners and clusters that use it */
    if (sharp_xds_configure(s->xds, s->config->bootstrap, err, sizeof err) < 0) {
        fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
        return -1;
    }
    s->snap = sharp_config_build_snapshot(s->config, s, err, sizeof err);
    if (!s->snap || sharp_xds_check_sources(s->xds, s->snap, err, sizeof err) < 0) {
        fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
        return -1;
    }
    for (size_t i = 0; i < s->config->nstats_sinks; i++) {
        if (sharp_statsd_sink_check(s->config->stats_sinks[i], s->snap, sharp_xds_node(s->xds), err, sizeof err) < 0) {
            fprintf(stderr, "error initializing configuration '%s': stats_sinks: %s\n", what, err);
            return -1;
        }
    }
    for (size_t i = 0; i < s->config->nmetrics_sinks; i++) {
        if (sharp_metrics_sink_check(s->config->metrics_sinks[i], s->snap, err, sizeof err) < 0) {
            fprintf(stderr, "error initializing configuration '%s': stats_sinks: %s\n", what, err);
            return -1;
        }
    }
    for (size_t i = 0; i < s->config->notlp_sinks; i++) {
        if (sharp_otlp_sink_check(s->config->otlp_sinks[i], s->snap, err, sizeof err) < 0) {
            fprintf(stderr, "error initializing configuration '%s': stats_sinks: %s\n", what, err);
            return -1;
        }
    }
    /* cluster_manager.load_stats_config: the load reporter, on a static
     * cluster of the bootstrap */
    const Envoy__Config__Bootstrap__V3__Bootstrap *bsc = (const void *)s->config->bootstrap;
    if (bsc->cluster_manager && bsc->cluster_manager->load_stats_config) {
        s->lrs = sharp_lrs_create(s, &bsc->cluster_manager->load_stats_config->base, s->snap, err, sizeof err);
        if (!s->lrs) {
            fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
            return -1;
        }
    }
    /* hds_config: the health discovery service client, on a static
     * cluster of the bootstrap */
    if (bsc->hds_config) {
        s->hds = sharp_hds_create(s, &bsc->hds_config->base, s->snap, err, sizeof err);
        if (!s->hds) {
            fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
            return -1;
        }
    }
    /* Envoy's init order: static clusters, the RTDS layers, CDS (and the
     * EDS of its clusters), then LDS and the RDS of its listeners (the
     * bootstrap's listeners read theirs while it was built); the files are
     * read now, so the workers start with all of it */
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs = (const void *)s->config->bootstrap;
    const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr = bs->layered_runtime;
    for (size_t i = 0; lr && i < lr->n_layers; i++) {
        if (lr->layers[i]->layer_specifier_case !=
            ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_RTDS_LAYER)
            continue;
        char field[96];
        snprintf(field, sizeof field, "layered_runtime.layers[%zu].rtds_layer", i);
        if (sharp_xds_rtds_subscribe(s->xds, (int)i, &lr->layers[i]->rtds_layer->base, field, err, sizeof err) < 0) {
            fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
            return -1;
        }
    }
    if (bs->dynamic_resources && bs->dynamic_resources->cds_config &&
        sharp_xds_cds_subscribe(s->xds, &bs->dynamic_resources->cds_config->base, "dynamic_resources.cds_config", err,
                                sizeof err) < 0) {
        fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
        return -1;
    }
    sharp_xds_publish(s->xds); /* LDS's routes are checked against these clusters */
    /* the listener manager's stats, which Envoy always has; its
     * listener_added counts the bootstrap's listeners too */
    static const char *const lm_counters[] = {"listener_added", "listener_modified", "listener_removed",
                                              "listener_in_place_updated"};
    static const char *const lm_gauges[] = {"total_listeners_warming", "total_listeners_draining",
                                            "total_filter_chains_draining"};
    for (size_t i = 0; i < sizeof lm_counters / sizeof *lm_counters; i++)
        sharp_stats_counterf(s->stats, "listener_manager.%s", lm_counters[i]);
    for (size_t i = 0; i < sizeof lm_gauges / sizeof *lm_gauges; i++)
        sharp_stats_gaugef(s->stats, "listener_manager.%s", lm_gauges[i]);
    sharp_counter_add(sharp_stats_shard(s->stats, 0), sharp_stats_counter(s->stats, "listener_manager.listener_added"),
                      s->snap->nlisteners);
    if (bs->dynamic_resources && bs->dynamic_resources->lds_config &&
        sharp_xds_lds_subscribe(s->xds, &bs->dynamic_resources->lds_config->base, "dynamic_resources.lds_config", err,
                                sizeof err) < 0) {
        fprintf(stderr, "error initializing configuration '%s': %s\n", what, err);
        return -1;
    }
    sharp_xds_publish(s->xds);
    if (opts->validate_only) {
        printf("configuration '%s' OK\n", what);
        return 0;
    }
    s->st.live = sharp_stats_gauge(s->stats, "server.live");
    s->st.uptime = sharp_stats_gauge(s->stats, "server.uptime");
    s->st.concurrency = sharp_stats_gauge(s->stats, "server.concurrency");
    s->st.state = sharp_stats_gauge(s->stats, "server.state");
    s->st.version = sharp_stats_gauge(s->stats, "server.version");
    s->st.total_connections = sharp_stats_gauge(s->stats, "server.total_connections");
    s->st.memory_allocated = sharp_stats_gauge(s->stats, "server.memory_allocated");
    s->st.memory_heap_size = sharp_stats_gauge(s->stats, "server.memory_heap_size");
    s->st.active_clusters = sharp_stats_gauge(s->stats, "cluster_manager.active_clusters");
    s->st.listeners_active = sharp_stats_gauge(s->stats, "listener_manager.total_listeners_active");
    s->st.hot_restart_epoch = sharp_stats_gauge(s->stats, "server.hot_restart_epoch");
    s->st.drain_listeners = sharp_stats_counter(s->stats, "listener_manager.listener_stopped");
    s->st.listener_create_success = sharp_stats_counter(s->stats, "listener_manager.listener_create_success");
    s->st.listener_create_failure = sharp_stats_counter(s->stats, "listener_manager.listener_create_failure");
    sharp_gauge_set(s->stats, s->st.concurrency, s->nworkers);
    sharp_gauge_set(s->stats, s->st.hot_restart_epoch, opts->restart_epoch);
    sharp_gauge_set(s->stats, s->st.version, (int64_t)sharp_server_version_number(s));
    sharp_gauge_set(s->stats, s->st.active_clusters, s->snap->nclusters);
    sharp_gauge_set(s->stats, s->st.listeners_active, 0); /* until the workers serve */
    update_memory_gauges(s);
    sharp_server_update_state_gauges(s);
    return 0;
}

int64_t sharp_server_downstream_connections(sharp_server_t *s)
{
    int64_t n = 0;
    for (unsigned i = 0; i < s->nworkers; i++)
        n += atomic_load_explicit(&s->workers[i].active_connections, memory_order_relaxed);
    return n;
}

static void stop_everything(sharp_server_t *s)
{
    if (s->shutting_down) return;
    s->shutting_down = true;
    sharp_log_info("shutting down");
    if (s->workers_started)
        for (unsigned i = 0; i < s->nworkers; i++) sharp_worker_stop(&s->workers[i]);
    if (s->admin) sharp_admin_stop(s->admin);
    sharp_overload_stop();
    s->admin = NULL;
    sharp_health_checker_stop(s->health_checker); /* frees itself once its handles are closed */
    if (s->snap) sharp_sds_stop(s->snap->sds);
    sharp_xds_stop(s->xds);
    for (size_t i = 0; s->config && i < s->config->nmetrics_sinks; i++) sharp_metrics_sink_stop(s->config->metrics_sinks[i]);
    for (size_t i = 0; s->config && i < s->config->nstats_sinks; i++) sharp_statsd_sink_stop(s->config->stats_sinks[i]);
    for (size_t i = 0; s->config && i < s->config->notlp_sinks; i++) sharp_otlp_sink_stop(s->config->otlp_sinks[i]);
    sharp_lrs_stop(s->lrs);
    sharp_hds_stop(s->hds);
    sharp_kernel_stop();
    s->health_checker = NULL;
    for (uint32_t c = 0; s->snap && c < s->snap->nclusters; c++) sharp_dns_stop(s->snap->clusters[c]);
    sharp_dfp_stop();
    sharp_scaling_stop(s->scaling);
    uv_timer_stop(&s->housekeeping);
    uv_timer_stop(&s->stats_flush);
    uv_timer_stop(&s->drain_deadline);
    uv_close((uv_handle_t *)&s->housekeeping, NULL);
    uv_close((uv_handle_t *)&s->stats_flush, NULL);
    uv_close((uv_handle_t *)&s->drain_deadline, NULL);
    sharp_dispatcher_stats_stop(&s->dispatcher_stats);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigusr1, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
}

static void free_closed_clusters(sharp_server_t *s);
static void wake_workers_for_drain(void *arg);

void sharp_server_flush_stats(sharp_server_t *s)
{
    s->last_flush_ns = sharp_now_ns();
    sharp_stats_flush(s->stats);
    /* the bootstrap's snapshot: a TCP statsd sink's cluster is a static one */
    sharp_snapshot_t *boot = s->snap ? (s->snap->base ? s->snap->base : s->snap) : NULL;
    for (size_t i = 0; i < s->config->nstats_sinks; i++)
        sharp_statsd_sink_flush(s->config->stats_sinks[i], s->stats, &s->upstream_env, boot);
    if (!s->snap || (!s->config->nmetrics_sinks && !s->config->notlp_sinks)) return;
    /* the bootstrap's snapshot: the collector's cluster is a static one */
    sharp_snapshot_t *base = s->snap->base ? s->snap->base : s->snap;
    for (size_t i = 0; i < s->config->nmetrics_sinks; i++)
        sharp_metrics_sink_flush(s->config->metrics_sinks[i], s->stats, &s->upstream_env, base, sharp_xds_node(s->xds));
    for (size_t i = 0; i < s->config->notlp_sinks; i++)
        sharp_otlp_sink_flush(s->config->otlp_sinks[i], s->stats, &s->upstream_env, base);
}

static void on_stats_flush(uv_timer_t *t)
{
    sharp_server_flush_stats(t->data);
}

static void on_housekeeping(uv_timer_t *t)
{
    sharp_server_t *s = t->data;
    sharp_gauge_set(s->stats, s->st.uptime, (int64_t)((sharp_now_ns() - s->start_ns) / 1000000000ull));
    sharp_gauge_set(s->stats, s->st.total_connections, sharp_server_downstream_connections(s));
    sharp_heap_thread_tick(); /* the main thread's heap (mimalloc) */
    update_memory_gauges(s);
    sharp_heap_release_idle();
    sharp_hostset_reap(); /* before the departed hosts are counted */
    for (uint32_t i = 0; s->snap && i < s->snap->nclusters; i++) {
        sharp_cluster_refresh_gauges(s->snap->clusters[i]);
        sharp_odst_sync(s->snap->clusters[i], uv_now(s->loop)); /* ORIGINAL_DST hosts and their cleanup */
        sharp_cluster_collect_departed(s->snap->clusters[i]);
    }
    free_closed_clusters(s);
    /* SDS consumers of listeners and clusters from LDS and CDS that are
     * gone, and the secrets nobody uses any more */
    if (s->snap) sharp_sds_sweep(s->snap->sds);
    if (s->state == SHARP_SERVER_DRAINING && !s->shutting_down && sharp_server_downstream_connections(s) == 0) {
        sharp_log_info("drain complete");
        stop_everything(s);
    }
}

static void on_drain_deadline(uv_timer_t *t)
{
    sharp_server_t *s = t->data;
    sharp_log_info("drain time elapsed with %lld connections open",
                   (long long)sharp_server_downstream_connections(s));
    stop_everything(s);
}

void sharp_server_wake_workers(sharp_server_t *s)
{
    wake_workers_for_drain(s);
}

void sharp_server_drain_listeners(sharp_server_t *s)
{
    s->listeners_stopped = true; /* LDS adds no listener from now on */
    if (!s->workers_started) return;
    sharp_counter_inc(sharp_stats_shard(s->stats, 0), s->st.drain_listeners);
    for (unsigned i = 0; i < s->nworkers; i++) sharp_worker_drain(&s->workers[i]);
}

void sharp_server_shutdown(sharp_server_t *s, bool drain)
{
    if (s->shutting_down) return;
    if (!drain || !s->workers_started) { /* nothing served yet: nothing to drain */
        stop_everything(s);
        return;
    }
    if (s->state == SHARP_SERVER_DRAINING) return;
    s->state = SHARP_SERVER_DRAINING;
    sharp_server_update_state_gauges(s);
    sharp_log_info("draining: %lld connections open, drain time %us",
                   (long long)sharp_server_downstream_connections(s), s->opts.drain_time_s);
    sharp_server_drain_listeners(s);
    uv_timer_start(&s->housekeeping, on_housekeeping, 50, 100);
    uv_timer_start(&s->drain_deadline, on_drain_deadline, (uint64_t)s->opts.drain_time_s * 1000, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    sharp_server_t *s = h->data;
    sharp_log_info("caught %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    if (s->state == SHARP_SERVER_DRAINING) stop_everything(s); /* a second signal: stop now */
    else sharp_server_shutdown(s, true);
}

int sharp_server_reopen_logs(sharp_server_t *s)
{
    int rc = 0;
    char err[512];
    const sharp_snapshot_t *snap = s->snap;
    /* the connection managers' files, shared by path (access_log_emit.h) */
    if (sharp_access_log_files_reopen(err, sizeof err) < 0) {
        sharp_error(file, "%s", err);
        rc = -1;
    }
    for (uint32_t k = 0; snap && k < snap->nadmin_access_logs; k++) {
        if (sharp_access_log_reopen(snap->admin_access_logs[k], err, sizeof err) < 0) {
            sharp_error(file, "%s", err);
            rc = -1;
        }
    }
    if (snap && snap->outlier_event_log &&
        sharp_access_log_file_reopen(snap->outlier_event_log, err, sizeof err) < 0) {
        sharp_error(file, "%s", err);
        rc = -1;
    }
    if (sharp_log_reopen() < 0) {
        sharp_error(file, "cannot reopen log path '%s': %s", s->opts.log_path, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* SIGUSR1 reopens the access logs and the log file (logrotate's
 * postrotate); SIGHUP is eaten, as Envoy does: neither stops the server. */
static void on_signal_logs(uv_signal_t *h, int signum)
{
    sharp_server_t *s = h->data;
    if (signum == SIGHUP) {
        sharp_warn(main, "caught and eating SIGHUP. See documentation for how to hot restart.");
        return;
    }
    sharp_info(main, "caught SIGUSR1. Reopening access logs.");
    sharp_server_reopen_logs(s);
}

/* Undoes the setup of workers [0, n) that never started (the listening
 * sockets no worker took close with their listeners). */
static void release_unstarted_workers(sharp_server_t *s, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        sharp_snapshot_unref(s->workers[k].snap);
        sharp_runtime_snapshot_unref(s->workers[k].runtime);
    }
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
}

/* Starts the workers (they accept on their listening sockets) and goes LIVE. */
static void wake_workers_for_drain(void *arg);

/* --main-thread-nice: the main thread's work (an xDS update's parse and
 * apply, health checks, admin, stats flushes) yields the CPU to the
 * workers when they compete for it. Set once the workers run (a thread
 * takes its creator's nice value, and theirs must stay) and on this
 * thread alone (setpriority on a thread id is per thread on Linux). */
static void lower_main_thread(sharp_server_t *s)
{
    if (!s->opts.main_thread_nice) return;
    id_t tid = (id_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, tid);
    if (cur == -1 && errno) cur = 0;
    int want = SHARP_MIN(cur + (int)s->opts.main_thread_nice, 19);
    if (setpriority(PRIO_PROCESS, tid, want) < 0)
        sharp_log_warn("--main-thread-nice: cannot set the main thread's nice value to %d: %s", want,
                       strerror(errno));
    else
        sharp_log_info("main thread at nice %d, workers at %d", want, cur);
}

static void start_serving(sharp_server_t *s)
{
    sharp_snapshot_t *snap = s->snap;
    if (s->shutting_down || s->workers_started) return;
    /* before the first accept: the global connection limit and the
     * actions' first states are in place when connections arrive */
    /* reduce_timeouts' state changes reach the workers as host drains do */
    sharp_overload_set_waker(wake_workers_for_drain, s);
    sharp_overload_start(s->loop, snap->overload, s->stats);
    /* a TLS context replaced from now on waits for the workers' wake-ups */
    sharp_retire_start(s->loop, s->nworkers, wake_workers_for_drain, s);
    /* the host sets workers let go of are freed here (upstream/cluster.h) */
    sharp_hostset_defer_frees(true);
    for (unsigned i = 0; i < s->nworkers; i++) {
        if (sharp_worker_start(&s->workers[i]) != 0) {
            fprintf(stderr, "error: worker %u failed to start\n", i);
            for (unsigned k = i; k < s->nworkers; k++) { /* never started */
                sharp_snapshot_unref(s->workers[k].snap);
                sharp_runtime_snapshot_unref(s->workers[k].runtime);
            }
            s->nworkers = i;
            s->workers_started = true;
            s->exit_code = 1;
            stop_everything(s);
            return;
        }
    }
    s->workers_started = true;
    lower_main_thread(s);
    s->state = SHARP_SERVER_LIVE;
    sharp_server_update_state_gauges(s);
    sharp_gauge_set(s->stats, s->st.listeners_active, snap->nlisteners);
    for (uint32_t l = 0; l < snap->nlisteners; l++)
        sharp_log_info("listener '%s' on %s", snap->listeners[l]->name, snap->listeners[l]->address);
    if (s->config->has_admin)
        sharp_log_info(s->config->admin_addr.ss_family == AF_UNIX ? "admin on unix:%s" : "admin on http://%s/",
                       s->config->admin_address);
    sharp_log_info("sharp started: %u workers", s->nworkers);
}

/* A new runtime snapshot (/runtime_modify, a disk layer's symlink swap):
 * regexes compiled from now on (the admin's ?filter=) use its RE2 limits,
 * and every worker gets it. Workers not started yet read w->runtime when
 * they start; stopping workers need nothing more. */
static void on_runtime_update(void *arg, sharp_runtime_snapshot_t *snap)
{
    sharp_server_t *s = arg;
    char p[16], m[16];
    sharp_config_runtime_regex_limits(s->runtime, NULL, false, p, sizeof p, m, sizeof m);
    if (s->shutting_down || !s->workers) return;
    for (unsigned i = 0; i < s->nworkers; i++) {
        sharp_worker_t *w = &s->workers[i];
        if (s->workers_started) {
            sharp_worker_set_runtime(w, snap);
        } else {
            sharp_runtime_snapshot_unref(w->runtime);
            w->runtime = sharp_runtime_snapshot_ref(snap);
        }
    }
}

/* A host asked for its connections to be drained (upstream/cluster.h):
 * wake the workers, which own the pools. Main thread, as the health checker
 * and the outlier detector that call it; workers that have not started yet
 * create their pools after the request and have nothing to drain. */
static void wake_workers_for_drain(void *arg)
{
    sharp_server_t *s = arg;
    if (!s->workers_started || s->shutting_down) return;
    for (unsigned i = 0; i < s->nworkers; i++) uv_async_send(&s->workers[i].wakeup);
}

void sharp_server_set_snapshot(sharp_server_t *s, sharp_snapshot_t *snap)
{
    sharp_snapshot_t *old = s->snap;
    s->snap = sharp_snapshot_ref(snap);
    sharp_gauge_set(s->stats, s->st.active_clusters, snap->nclusters);
    sharp_kernel_snapshot_changed(); /* new clusters' hosts watched before workers see them */
    for (unsigned i = 0; s->workers && !s->shutting_down && i < s->nworkers; i++) {
        sharp_worker_t *w = &s->workers[i];
        if (!s->workers_started) { /* they set up from w->snap when they start */
            sharp_snapshot_unref(w->snap);
            w->snap = sharp_snapshot_ref(snap);
            continue;
        }
        /* a new cluster's host set first: the worker builds its pools over
         * it when it takes the snapshot */
        for (uint32_t c = 0; c < snap->nclusters; c++) {
            int32_t k = old ? sharp_snapshot_cluster_index(old, snap->clusters[c]->name) : -1;
            if (k < 0 || old->clusters[k] != snap->clusters[c]) sharp_worker_set_hostset(w, snap->clusters[c]);
        }
        sharp_worker_set_snapshot(w, snap);
    }
    sharp_snapshot_unref(old);
}

/* A cluster's last reference went (upstream/cluster.h), maybe on a worker:
 * the main loop frees it. */
static void on_cluster_released(void *arg, sharp_cluster_t *c)
{
    sharp_server_t *s = arg;
    uv_mutex_lock(&s->released_mu);
    if (s->nreleased == s->released_cap) {
        s->released_cap = s->released_cap ? 2 * s->released_cap : 8;
        s->released = sharp_realloc(s->released, s->released_cap * sizeof *s->released);
    }
    s->released[s->nreleased++] = c;
    uv_mutex_unlock(&s->released_mu);
    uv_async_send(&s->released_async);
}

static void free_closed_clusters(sharp_server_t *s)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->nclosing; i++) {
        if (sharp_outlier_closing(s->closing[i]) || sharp_dns_closing(s->closing[i])) s->closing[k++] = s->closing[i];
        else sharp_cluster_free(s->closing[i]);
    }
    s->nclosing = k;
}

static void on_released_async(uv_async_t *a)
{
    sharp_server_t *s = a->data;
    uv_mutex_lock(&s->released_mu);
    sharp_cluster_t **r = s->released;
    uint32_t n = s->nreleased;
    s->released = NULL;
    s->nreleased = s->released_cap = 0;
    uv_mutex_unlock(&s->released_mu);
    for (uint32_t i = 0; i < n; i++) {
        sharp_log_debug("cluster '%s' released", r[i]->name);
        sharp_dns_stop(r[i]);
        sharp_outlier_close(r[i]);
        s->closing = sharp_realloc(s->closing, (s->nclosing + 1) * sizeof *s->closing);
        s->closing[s->nclosing++] = r[i];
    }
    free(r);
    free_closed_clusters(s);
}

static void on_initial_health_checks(void *arg)
{
    sharp_server_t *s = arg;
    sharp_log_info("first round of health checks done");
    start_serving(s);
}

/* A DNS cluster's membership changed: outlier detection and health
 * checking follow first (a new checked host is failed until its first
 * check passes, before any worker can choose it), then every running
 * worker gets the new host set (worker.h). Workers not started yet build
 * their view from the cluster's current set when they start. */
/* A DNS cache settled or removed hosts: the workers look at their waiting
 * streams (upstream/dfp.h). */
static void wake_workers_for_dfp(void *arg)
{
    sharp_server_t *s = arg;
    if (s->shutting_down || !s->workers_started) return;
    for (unsigned i = 0; i < s->nworkers; i++) uv_async_send(&s->workers[i].wakeup);
}

static void hand_hostset_to_workers(void *arg, sharp_cluster_t *c)
{
    sharp_server_t *s = arg;
    if (s->shutting_down) return;
    /* outlier state first: the checker's first round may end here and
     * start the workers */
    sharp_outlier_hosts_changed(c);
    sharp_kernel_hosts_changed(c); /* watched before any worker connects */
    sharp_health_checker_hosts_changed(s->health_checker, c);
    if (!s->workers_started) return;
    for (unsigned i = 0; i < s->nworkers; i++) sharp_worker_set_hostset(&s->workers[i], c);
}

/* Cluster initialization, second stage: the health checks' first round
 * (the hosts of DNS clusters are known by now). */
static void start_health_checks(sharp_server_t *s)
{
    s->health_checker = sharp_health_checker_start(s->loop, s->snap, s->stats, on_initial_health_checks, s);
    s->checks_started = true;
    /* CDS clusters that began warming meanwhile join (their own round) */
    sharp_xds_checks_started(s->xds);
    if (!sharp_health_checker_initializing(s->health_checker)) start_serving(s);
    else sharp_log_info("waiting for the first round of health checks");
}

/* The initial fetch of every gRPC xDS subscription is over (or there was
 * none): the clusters CDS and EDS gave are in the snapshot, their health
 * checks come next. */
static void on_xds_initialized(void *arg)
{
    sharp_server_t *s = arg;
    if (!s->shutting_down) start_health_checks(s);
}

/* Envoy's cluster manager initialization: every STRICT_DNS / LOGICAL_DNS
 * cluster's first resolution is done (answered or failed: c-ares' own
 * timeout and tries bound it) before anything else; then the xDS streams
 * open on those static clusters, and the workers wait for their initial
 * fetch, as Envoy's init manager waits for CDS, EDS, LDS and RDS. */
static void on_dns_cluster_ready(void *arg)
{
    sharp_server_t *s = arg;
    if (s->dns_awaiting && --s->dns_awaiting == 0 && !s->shutting_down) {
        sharp_log_info("first DNS resolution of every DNS cluster done");
        /* Envoy starts the load reporter with the secondary clusters */
        sharp_lrs_start(s->lrs);
        sharp_hds_start(s->hds);
        sharp_xds_initialize(s->xds, on_xds_initialized, s);
    }
}

int sharp_server_run(sharp_server_t *s)
{
    char err[512];
    sharp_snapshot_t *snap = s->snap;
    s->loop = uv_default_loop();
    sharp_heap_log_allocator();
    static const bool never = false;
    s->rng = 0x2545F4914F6CDD1Dull ^ sharp_now_ns();
    s->upstream_env = (sharp_upstream_env_t){s->loop, sharp_stats_shard(s->stats, 0), &s->rng, &never, &s->shutting_down};
    s->workers = sharp_calloc(s->nworkers, sizeof *s->workers);
    for (unsigned i = 0; i < s->nworkers; i++) {
        sharp_worker_t *w = &s->workers[i];
        w->index = i;
        w->server = s;
        w->stats = sharp_stats_shard(s->stats, i + 1);
        w->snap = sharp_snapshot_ref(snap);
        w->runtime = sharp_runtime_snapshot_ref(s->runtime->current);
    }
    /* the bootstrap's listening sockets, each worker's bound now so that a
     * busy port fails the start cleanly (listen_socket.h) */
    for (uint32_t l = 0; l < snap->nlisteners; l++) {
        sharp_listener_config_t *lc = snap->listeners[l];
        if (lc->sock) continue; /* LDS's, bound as its file was read */
        lc->sock = sharp_lsock_open(&lc->addr, lc->addrlen, lc->pipe_mode, lc->sock_flags, lc->udp != NULL, lc->address,
                                    s->nworkers,
                                    err, sizeof err);
        if (!lc->sock) {
            sharp_log_error("listener '%s': %s", lc->name, err);
            fprintf(stderr, "error: listener '%s': %s\n", lc->name, err);
            release_unstarted_workers(s, s->nworkers);
            return 1;
        }
    }
    /* SDS secrets from files: their sources and the files they name */
    if (snap->sds && sharp_sds_start(snap->sds, s->loop, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        sharp_sds_stop(snap->sds);
        release_unstarted_workers(s, s->nworkers);
        uv_run(s->loop, UV_RUN_NOWAIT);
        return 1;
    }
    if (s->config->has_admin) {
        s->grpc = sharp_grpc_registry_new();
        s->grpc_health = sharp_grpc_health_register(s->grpc, grpc_serving, s);
        s->admin = sharp_admin_start(s, s->loop, (const struct sockaddr *)&s->config->admin_addr,
                                     s->config->admin_addrlen, s->config->admin_pipe_mode, err, sizeof err);
        if (!s->admin) {
            fprintf(stderr, "error: admin listener %s: %s\n", s->config->admin_address, err);
            release_unstarted_workers(s, s->nworkers);
            uv_run(s->loop, UV_RUN_NOWAIT);
            return 1;
        }
    }
    /* the scaling agent: its KEDA service joins the gRPC server */
    if (s->config->scaling) s->scaling = sharp_scaling_start(s, s->config->scaling, s->grpc);
    /* the xDS files: watched from now on */
    if (sharp_xds_start(s->xds, s->loop, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        sharp_scaling_stop(s->scaling);
        sharp_xds_stop(s->xds);
        sharp_sds_stop(snap->sds);
        if (s->admin) sharp_admin_stop(s->admin);
        s->admin = NULL;
        release_unstarted_workers(s, s->nworkers);
        uv_run(s->loop, UV_RUN_NOWAIT);
        return 1;
    }
    uv_mutex_init(&s->released_mu);
    uv_async_init(s->loop, &s->released_async, on_released_async);
    s->released_async.data = s;
    uv_unref((uv_handle_t *)&s->released_async);
    sharp_cluster_set_release_hook(on_cluster_released, s);
    s->runtime->on_update = on_runtime_update;
    s->runtime->on_update_arg = s;
    sharp_runtime_watch(s->runtime, s->loop);
    uv_timer_init(s->loop, &s->housekeeping);
    uv_timer_init(s->loop, &s->stats_flush);
    uv_timer_init(s->loop, &s->drain_deadline);
    s->housekeeping.data = s->stats_flush.data = s->drain_deadline.data = s;
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_init(s->loop, &s->sigusr1);
    uv_signal_init(s->loop, &s->sighup);
    s->sigusr1.data = s->sighup.data = s;
    uv_signal_start(&s->sigusr1, on_signal_logs, SIGUSR1);
    uv_signal_start(&s->sighup, on_signal_logs, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    /* Outlier detectors: started before the workers can report results and
     * closed only after they are joined (their wake-ups outlive the loop
     * run; both handles are unreferenced). */
    for (uint32_t c = 0; c < snap->nclusters; c++) sharp_outlier_start(snap->clusters[c], s->loop);
    /* kernel TCP signals: the source is chosen (one log line) before any
     * upstream connection exists */
    sharp_kernel_start(s, s->loop);
    uv_timer_start(&s->housekeeping, on_housekeeping, 1000, 1000);
    if (s->config->enable_dispatcher_stats)
        sharp_dispatcher_stats_start(&s->dispatcher_stats, s->loop, s->stats, sharp_stats_shard(s->stats, 0),
                                     "server.dispatcher.");
    s->stats_flush_on_admin = s->config->stats_flush_on_admin;
    if (!s->stats_flush_on_admin)
        uv_timer_start(&s->stats_flush, on_stats_flush, s->config->stats_flush_interval_ms,
                       s->config->stats_flush_interval_ms);
    /* Envoy's cluster initialization: with active health checks the
     * workers start once every checked host has had its first result, so
     * the first requests see real health rather than panic routing. */
    s->state = SHARP_SERVER_INITIALIZING;
    sharp_server_update_state_gauges(s);
    sharp_upstream_set_drain_notify(wake_workers_for_drain, s);
    sharp_cluster_set_hostset_notify(hand_hostset_to_workers, s);
    /* the dynamic forward proxy's DNS caches resolve on this loop */
    if (sharp_dfp_start(s->loop, s->stats, wake_workers_for_dfp, s, err, sizeof err) < 0) {
        sharp_log_error("%s", err);
        fprintf(stderr, "error: %s\n", err);
        s->exit_code = 1;
        stop_everything(s);
    }
    /* one count for the loop below, so that a cluster answered at once
     * does not start the checks before the others have begun */
    s->dns_awaiting = 1;
    for (uint32_t c = 0; c < snap->nclusters; c++) {
        if (!snap->clusters[c]->dns) continue;
        /* wait_for_warm_on_init false: the cluster resolves, nobody waits */
        bool wait = snap->clusters[c]->dns->wait_for_warm;
        if (wait) s->dns_awaiting++;
        if (sharp_dns_start(snap->clusters[c], s->loop, wait ? on_dns_cluster_ready : NULL, s, err, sizeof err) < 0) {
            sharp_log_error("%s", err);
            fprintf(stderr, "error: %s\n", err);
            s->exit_code = 1;
            s->dns_awaiting = 0;
            stop_everything(s);
            break;
        }
    }
    if (s->dns_awaiting > 1) sharp_log_info("waiting for the first DNS resolution of the DNS clusters");
    on_dns_cluster_ready(s);
    uv_run(s->loop, UV_RUN_DEFAULT);
    if (s->workers_started)
        for (unsigned i = 0; i < s->nworkers; i++) sharp_worker_join(&s->workers[i]);
    else
        release_unstarted_workers(s, s->nworkers);
    sharp_retire_stop(); /* no worker reads a TLS slot any more */
    sharp_hostset_defer_frees(false);
    sharp_upstream_set_drain_notify(NULL, NULL);
    sharp_cluster_set_hostset_notify(NULL, NULL);
    /* the workers are gone: a last reference frees at once from now on */
    sharp_cluster_set_release_hook(NULL, NULL);
    on_released_async(&s->released_async);
    uv_close((uv_handle_t *)&s->released_async, NULL);
    uv_mutex_destroy(&s->released_mu);
    for (uint32_t c = 0; c < s->snap->nclusters; c++) sharp_outlier_close(s->snap->clusters[c]);
    return s->exit_code;
}

void sharp_server_free(sharp_server_t *s)
{
    if (s->workers) {
        for (unsigned i = 0; i < s->nworkers; i++) {
            sharp_snapshot_unref(s->workers[i].snap);
            sharp_runtime_snapshot_unref(s->workers[i].runtime);
        }
        free(s->workers);
    }
    sharp_runtime_free(s->runtime); /* after the workers: closes its watches */
    sharp_grpc_registry_free(s->grpc); /* the admin connections, and their calls, are gone */
    s->grpc = NULL;
    s->grpc_health = NULL;
    s->runtime = NULL;
    if (s->loop) {
        uv_run(s->loop, UV_RUN_NOWAIT);
        uv_loop_close(s->loop);
    }
    sharp_dfp_free_all(); /* the DNS caches: their handles are closed */
    sharp_scaling_free(s->scaling); /* its timer closed in the run above */
    sharp_lrs_free(s->lrs); /* likewise */
    s->lrs = NULL;
    sharp_hds_free(s->hds);
    s->hds = NULL;
    s->scaling = NULL;
    free_closed_clusters(s);
    free(s->closing);
    sharp_snapshot_unref(s->snap);
    s->snap = NULL;
    sharp_xds_free(s->xds); /* after the snapshots: the static EDS clusters' subscriptions are its */
    sharp_access_log_files_close_all(); /* no worker buffers lines any more */
    if (s->config) sharp_config_free(s->config);
    if (s->stats) sharp_stats_destroy(s->stats);
    memset(s, 0, sizeof *s);
}

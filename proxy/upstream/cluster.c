/* cluster.c: cluster stats registration and teardown. */
#include "upstream/cluster.h"
#include "upstream/subset.h"
#include "log.h"
#include "retire.h"
#include "runtime.h"
#include "upstream/health_check.h"
#include "upstream/outlier.h"
#include "upstream/diagnosis.h"
#include "upstream/locality_md.h"
#include "upstream/dns.h"
#include "upstream/aggregate.h"
#include "upstream/original_dst.h"
#include "upstream/shard_lb.h"
#include "kernel/kernel.h"
#include "tls/context.h"
#include "xds/xds.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static uint64_t retry_limit(sharp_cluster_t *c, sharp_priority_t prio);

static void runtime_keys_init(sharp_cluster_t *c)
{
    static const char *const names[SHARP_CB_NKEYS] = {
        [SHARP_CB_MAX_CONNECTIONS] = "max_connections",
        [SHARP_CB_MAX_PENDING_REQUESTS] = "max_pending_requests",
        [SHARP_CB_MAX_REQUESTS] = "max_requests",
        [SHARP_CB_MAX_RETRIES] = "max_retries",
        [SHARP_CB_BUDGET_PERCENT] = "retry_budget.budget_percent",
        [SHARP_CB_MIN_RETRY_CONCURRENCY] = "retry_budget.min_retry_concurrency",
    };
    if (!c->maintenance_key) {
        size_t n = strlen(c->name) + sizeof "upstream.maintenance_mode.";
        c->maintenance_key = sharp_calloc(n, 1);
        snprintf(c->maintenance_key, n, "upstream.maintenance_mode.%s", c->name);
    }
    static const char *const prio_names[SHARP_NPRIORITIES] = {"default", "high"};
    for (int p = 0; p < SHARP_NPRIORITIES; p++)
        for (int k = 0; k < SHARP_CB_NKEYS; k++) {
            if (c->cb_keys[p][k]) continue;
            size_t n = strlen(c->name) + strlen(names[k]) + sizeof "circuit_breakers..default.";
            c->cb_keys[p][k] = sharp_calloc(n, 1);
            snprintf(c->cb_keys[p][k], n, "circuit_breakers.%s.%s.%s", c->name, prio_names[p], names[k]);
        }
}

static uint64_t cb_configured(const sharp_cb_thresholds_t *cb, sharp_cb_key_t k)
{
    switch (k) {
    case SHARP_CB_MAX_CONNECTIONS: return cb->max_connections;
    case SHARP_CB_MAX_PENDING_REQUESTS: return cb->max_pending_requests;
    case SHARP_CB_MAX_REQUESTS: return cb->max_requests;
    case SHARP_CB_MAX_RETRIES: return cb->max_retries;
    case SHARP_CB_MIN_RETRY_CONCURRENCY: return cb->min_retry_concurrency;
    default: return 0;
    }
}

uint64_t sharp_cluster_cb_max(const sharp_cluster_t *c, sharp_priority_t prio, sharp_cb_key_t k)
{
    return sharp_runtime_get_u64(c->cb_keys[prio][k], cb_configured(&c->cb[prio], k));
}

static double budget_percent(const sharp_cluster_t *c, sharp_priority_t prio)
{
    return sharp_runtime_get_double(c->cb_keys[prio][SHARP_CB_BUDGET_PERCENT], c->cb[prio].budget_percent);
}

static uint32_t cap32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

void sharp_cluster_cb_effective(const sharp_cluster_t *c, sharp_priority_t prio, sharp_cb_thresholds_t *out)
{
    *out = c->cb[prio];
    out->max_connections = cap32(sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_CONNECTIONS));
    out->max_pending_requests = cap32(sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_PENDING_REQUESTS));
    out->max_requests = cap32(sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_REQUESTS));
    out->max_retries = cap32(sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_RETRIES));
    out->budget_percent = budget_percent(c, prio);
    out->min_retry_concurrency = cap32(sharp_cluster_cb_max(c, prio, SHARP_CB_MIN_RETRY_CONCURRENCY));
}

int sharp_cluster_socket_options(const sharp_cluster_t *c, uv_tcp_t *tcp)
{
    if (!c->tcp_keepalive) return 0;
    uv_os_fd_t fd;
    int rc = uv_fileno((uv_handle_t *)tcp, &fd);
    if (rc < 0) return rc;
    struct {
        int level, name;
        uint32_t value; /* 0: not configured, the OS default stays */
    } opts[] = {
        {SOL_SOCKET, SO_KEEPALIVE, 1},
        {IPPROTO_TCP, TCP_KEEPCNT, c->keepalive_probes},
        {IPPROTO_TCP, TCP_KEEPINTVL, c->keepalive_interval_s},
        {IPPROTO_TCP, TCP_KEEPIDLE, c->keepalive_time_s},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(opts); i++) {
        if (!opts[i].value) continue;
        int v = (int)opts[i].value;
        if (setsockopt(fd, opts[i].level, opts[i].name, &v, sizeof v) < 0) return -errno;
    }
    return 0;
}

static _Atomic uint64_t drain_epoch;
static void (*drain_notify)(void *arg);
static void *drain_notify_arg;

void sharp_upstream_set_drain_notify(void (*fn)(void *arg), void *arg)
{
    drain_notify = fn;
    drain_notify_arg = arg;
}

uint64_t sharp_upstream_drain_epoch(void)
{
    return atomic_load_explicit(&drain_epoch, memory_order_acquire);
}

void sharp_host_request_drain(sharp_host_t *h)
{
    atomic_fetch_add_explicit(&h->drain_gen, 1, memory_order_release);
    atomic_fetch_add_explicit(&drain_epoch, 1, memory_order_release);
}

void sharp_host_drain_connections(sharp_host_t *h)
{
    sharp_host_request_drain(h);
    if (drain_notify) drain_notify(drain_notify_arg);
}

void sharp_cluster_stats_init(sharp_cluster_t *c, sharp_stats_t *s)
{
    runtime_keys_init(c);
    c->stats = s;
    sharp_cluster_stats_t *st = &c->st;
    const char *n = c->stat_name;
#define C(field, stat) st->field = sharp_stats_counterf(s, "cluster.%s." stat, n)
#define G(field, stat) st->field = sharp_stats_gaugef(s, "cluster.%s." stat, n)
    C(rq_total, "upstream_rq_total");
    for (int i = 1; i <= 5; i++) st->rq_xx[i] = sharp_stats_counterf(s, "cluster.%s.upstream_rq_%dxx", n, i);
    st->rq_time = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "cluster.%s.upstream_rq_time", n);
    st->cx_connect_ms = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "cluster.%s.upstream_cx_connect_ms", n);
    st->cx_length_ms = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "cluster.%s.upstream_cx_length_ms", n);
    C(rq_timeout, "upstream_rq_timeout");
    G(rq_active, "upstream_rq_active");
    C(rq_pending_total, "upstream_rq_pending_total");
    G(rq_pending_active, "upstream_rq_pending_active");
    C(rq_pending_overflow, "upstream_rq_pending_overflow");
    C(rq_cancelled, "upstream_rq_cancelled");
    C(rq_rx_reset, "upstream_rq_rx_reset");
    C(rq_tx_reset, "upstream_rq_tx_reset");
    C(rq_completed, "upstream_rq_completed");
    C(cx_total, "upstream_cx_total");
    G(cx_active, "upstream_cx_active");
    C(cx_connect_fail, "upstream_cx_connect_fail");
    C(cx_connect_timeout, "upstream_cx_connect_timeout");
    C(cx_destroy, "upstream_cx_destroy");
    C(cx_destroy_local, "upstream_cx_destroy_local");
    C(cx_destroy_remote, "upstream_cx_destroy_remote");
    C(cx_rx_bytes_total, "upstream_cx_rx_bytes_total");
    C(cx_tx_bytes_total, "upstream_cx_tx_bytes_total");
    C(cx_overflow, "upstream_cx_overflow");
    C(cx_connect_attempts_exceeded, "upstream_cx_connect_attempts_exceeded");
    C(cx_none_healthy, "upstream_cx_none_healthy");
    C(cx_protocol_error, "upstream_cx_protocol_error");
    C(cx_idle_timeout, "upstream_cx_idle_timeout");
    C(cx_max_duration_reached, "upstream_cx_max_duration_reached");
    C(rq_max_duration_reached, "upstream_rq_max_duration_reached");
    C(cx_max_requests, "upstream_cx_max_requests");
    G(membership_total, "membership_total");
    G(membership_healthy, "membership_healthy");
    /* Envoy's ClusterStats of membership updates, every cluster has them
     * (a STATIC cluster counts its one initial update). */
    C(membership_change, "membership_change");
    C(update_attempt, "update_attempt");
    C(update_success, "update_success");
    C(update_failure, "update_failure");
    C(update_empty, "update_empty");
    C(update_no_rebuild, "update_no_rebuild");
    C(lb_healthy_panic, "lb_healthy_panic");
    C(lb_recalculate_zone_structures, "lb_recalculate_zone_structures");
    C(lb_zone_cluster_too_small, "lb_zone_cluster_too_small");
    C(lb_zone_routing_all_directly, "lb_zone_routing_all_directly");
    C(lb_zone_routing_sampled, "lb_zone_routing_sampled");
    C(lb_zone_routing_cross_zone, "lb_zone_routing_cross_zone");
    C(lb_local_cluster_not_ok, "lb_local_cluster_not_ok");
    C(lb_zone_number_differs, "lb_zone_number_differs");
    C(lb_zone_no_capacity_left, "lb_zone_no_capacity_left");
    G(lb_subsets_active, "lb_subsets_active");
    C(lb_subsets_created, "lb_subsets_created");
    C(lb_subsets_removed, "lb_subsets_removed");
    C(lb_subsets_selected, "lb_subsets_selected");
    C(lb_subsets_fallback, "lb_subsets_fallback");
    C(lb_subsets_fallback_panic, "lb_subsets_fallback_panic");
    C(upstream_rq_per_try_timeout, "upstream_rq_per_try_timeout");
    C(rq_retry, "upstream_rq_retry");
    C(rq_maintenance_mode, "upstream_rq_maintenance_mode");
    C(rq_retry_success, "upstream_rq_retry_success");
    C(rq_retry_overflow, "upstream_rq_retry_overflow");
    C(rq_retry_limit_exceeded, "upstream_rq_retry_limit_exceeded");
    C(rq_retry_backoff_exponential, "upstream_rq_retry_backoff_exponential");
    C(retry_or_shadow_abandoned, "retry_or_shadow_abandoned");
    C(original_dst_host_invalid, "original_dst_host_invalid");
    C(cx_http1_total, "upstream_cx_http1_total");
    C(cx_http2_total, "upstream_cx_http2_total");
    C(cx_close_notify, "upstream_cx_close_notify");
    if (c->http2 || c->downstream_protocol || c->auto_http) {
        C(h2.rx_reset, "http2.rx_reset");
        C(h2.tx_reset, "http2.tx_reset");
        C(h2.trailers, "http2.trailers");
        C(h2.keepalive_timeout, "http2.keepalive_timeout");
        C(h2.stream_refused_errors, "http2.stream_refused_errors");
        C(h2.rx_messaging_error, "http2.rx_messaging_error");
        C(h2.header_overflow, "http2.header_overflow");
        C(h2.outbound_flood, "http2.outbound_flood");
        C(h2.outbound_control_flood, "http2.outbound_control_flood");
        C(h2.inbound_empty_frames_flood, "http2.inbound_empty_frames_flood");
        C(h2.inbound_priority_frames_flood, "http2.inbound_priority_frames_flood");
        C(h2.inbound_window_update_frames_flood, "http2.inbound_window_update_frames_flood");
        G(h2.streams_active, "http2.streams_active");
    }
    if (c->tls) {
        C(ssl.connection_error, "ssl.connection_error");
        C(ssl.handshake, "ssl.handshake");
        C(ssl.session_reused, "ssl.session_reused");
        C(ssl.no_certificate, "ssl.no_certificate");
        C(ssl.fail_verify_error, "ssl.fail_verify_error");
        C(ssl.fail_verify_san, "ssl.fail_verify_san");
        C(ssl.fail_verify_cert_hash, "ssl.fail_verify_cert_hash");
        C(ssl.fail_verify_no_cert, "ssl.fail_verify_no_cert");
    }
#undef C
#undef G
    sharp_kernel_cluster_stats_init(c, s);
    /* deferred_stat_options: the ones of Envoy's ClusterTrafficStats stay out
     * of the admin views until the cluster first uses one of them. */
    if (sharp_stats_deferred_creation(s)) {
        const sharp_stat_id_t traffic[] = {
            st->rq_total, st->rq_timeout, st->rq_active, st->rq_pending_total,
            st->rq_pending_active, st->rq_pending_overflow, st->rq_cancelled, st->rq_rx_reset,
            st->rq_tx_reset, st->rq_completed, st->cx_total, st->cx_active, st->cx_connect_fail,
            st->cx_connect_timeout, st->cx_destroy, st->cx_destroy_local, st->cx_destroy_remote,
            st->cx_rx_bytes_total, st->cx_tx_bytes_total, st->cx_overflow, st->cx_connect_attempts_exceeded, st->cx_none_healthy,
            st->cx_protocol_error,
            st->cx_idle_timeout, st->cx_max_requests, st->upstream_rq_per_try_timeout, st->rq_retry,
            st->rq_maintenance_mode, st->rq_retry_success, st->rq_retry_overflow,
            st->rq_retry_limit_exceeded, st->rq_retry_backoff_exponential, st->cx_connect_ms,
            st->cx_length_ms, st->retry_or_shadow_abandoned, st->cx_http1_total, st->cx_http2_total,
            st->cx_close_notify, st->original_dst_host_invalid,
        };
        uint32_t group = sharp_stats_new_group(s);
        for (size_t i = 0; i < SHARP_ARRAY_SIZE(traffic); i++)
            sharp_stats_defer(s, traffic[i], group);
    }
    static const char *const prio[SHARP_NPRIORITIES] = {"default", "high"};
    for (int i = 0; i < SHARP_NPRIORITIES; i++) {
#define B(field, stat) c->cbg[i].field = sharp_stats_gaugef(s, "cluster.%s.circuit_breakers.%s." stat, n, prio[i])
        B(cx_open, "cx_open");
        B(cx_pool_open, "cx_pool_open");
        B(rq_pending_open, "rq_pending_open");
        B(rq_open, "rq_open");
        B(rq_retry_open, "rq_retry_open");
        if (c->cb[i].track_remaining) {
            B(remaining_cx, "remaining_cx");
            B(remaining_pending, "remaining_pending");
            B(remaining_rq, "remaining_rq");
            B(remaining_retries, "remaining_retries");
            B(remaining_cx_pools, "remaining_cx_pools");
        }
#undef B
    }
    sharp_cluster_refresh_gauges(c);
    /* a STATIC cluster's hosts arrive once, at load: Envoy counts that one
     * membership change (and no update_attempt); DNS clusters count theirs
     * as answers come (upstream/dns.c) */
    if (c->type == SHARP_CLUSTER_STATIC && c->nhosts) sharp_counter_inc(sharp_stats_shard(s, 0), st->membership_change);
    sharp_gauge_set(s, st->membership_total, c->nhosts);
    if (c->set && c->set->subsets) {
        /* the first host set's subsets, made before the stats existed */
        sharp_counter_add(sharp_stats_shard(s, 0), st->lb_subsets_created, c->set->subsets->n);
        sharp_gauge_set(s, st->lb_subsets_active, c->set->subsets->n);
    }
    if (c->subset) {
        /* Envoy makes it with a subset balancer's first update */
        st->lb_subsets_single_host_per_subset_duplicate =
            sharp_stats_gaugef(s, "cluster.%s.lb_subsets_single_host_per_subset_duplicate", n);
        if (c->set && c->set->subsets)
            sharp_gauge_set(s, st->lb_subsets_single_host_per_subset_duplicate, c->set->subsets->single_duplicates);
    }
    uint32_t healthy = 0;
    for (uint32_t i = 0; i < c->nhosts; i++) healthy += sharp_host_healthy(c->hosts[i]);
    sharp_gauge_set(s, st->membership_healthy, healthy);
}

/* Counts upstream_rq_<class>xx and, as Envoy does, upstream_rq_<code>. */
void sharp_cluster_count_response(sharp_cluster_t *c, sharp_stats_shard_t *sh, uint32_t code)
{
    if (code < 100 || code >= 600) return;
    sharp_counter_inc(sh, c->st.rq_xx[code / 100]);
    /* The slot holds id + 1: a stat the stats matcher rejects gets id 0
     * (the placeholder), and must not be registered again per response. */
    sharp_stat_id_t id1 = atomic_load_explicit(&c->rq_code[code], memory_order_acquire);
    if (!id1) {
        id1 = sharp_stats_counterf(c->stats, "cluster.%s.upstream_rq_%u", c->stat_name, code) + 1;
        atomic_store_explicit(&c->rq_code[code], id1, memory_order_release);
    }
    sharp_counter_inc(sh, id1 - 1);
}

/* Envoy's retry budget: the concurrent retries allowed are budget_percent of
 * the priority's active plus pending requests, but at least
 * min_retry_concurrency. */
static uint64_t retry_limit(sharp_cluster_t *c, sharp_priority_t prio)
{
    if (!c->cb[prio].has_retry_budget) return sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_RETRIES);
    int64_t active = atomic_load_explicit(&c->open[prio].rq_open, memory_order_relaxed);
    uint64_t budget = (uint64_t)((double)(active > 0 ? active : 0) * budget_percent(c, prio) / 100.0);
    uint64_t min = sharp_cluster_cb_max(c, prio, SHARP_CB_MIN_RETRY_CONCURRENCY);
    return budget > min ? budget : min;
}

bool sharp_cluster_retry_acquire(sharp_cluster_t *c, sharp_priority_t prio)
{
    return sharp_cluster_slot_acquire(&c->open[prio].rq_retry_open, retry_limit(c, prio));
}

void sharp_cluster_retry_release(sharp_cluster_t *c, sharp_priority_t prio)
{
    atomic_fetch_sub_explicit(&c->open[prio].rq_retry_open, 1, memory_order_relaxed);
}

static void breaker_gauges(sharp_cluster_t *c, int i)
{
    sharp_stats_t *s = c->stats;
    const sharp_cb_thresholds_t *cb = &c->cb[i];
    int64_t cx = atomic_load(&c->open[i].cx_open), pending = atomic_load(&c->open[i].rq_pending_open),
            rq = atomic_load(&c->open[i].rq_open), retries = atomic_load(&c->open[i].rq_retry_open);
    sharp_priority_t prio = (sharp_priority_t)i;
    uint64_t cx_max = sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_CONNECTIONS),
             pending_max = sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_PENDING_REQUESTS),
             rq_max = sharp_cluster_cb_max(c, prio, SHARP_CB_MAX_REQUESTS), retries_max = retry_limit(c, prio);
#define OPEN(v, max) ((v) > 0 && (uint64_t)(v) >= (max) ? 1 : 0)
#define LEFT(v, max) ((v) > 0 ? ((uint64_t)(v) >= (max) ? 0 : (int64_t)((max) - (uint64_t)(v))) : (int64_t)(max))
    sharp_gauge_set(s, c->cbg[i].cx_open, OPEN(cx, cx_max));
    sharp_gauge_set(s, c->cbg[i].cx_pool_open, 0);
    sharp_gauge_set(s, c->cbg[i].rq_pending_open, OPEN(pending, pending_max));
    sharp_gauge_set(s, c->cbg[i].rq_open, OPEN(rq, rq_max));
    sharp_gauge_set(s, c->cbg[i].rq_retry_open, OPEN(retries, retries_max));
    if (cb->track_remaining) {
        sharp_gauge_set(s, c->cbg[i].remaining_cx, LEFT(cx, cx_max));
        sharp_gauge_set(s, c->cbg[i].remaining_pending, LEFT(pending, pending_max));
        sharp_gauge_set(s, c->cbg[i].remaining_rq, LEFT(rq, rq_max));
        sharp_gauge_set(s, c->cbg[i].remaining_retries, LEFT(retries, retries_max));
        sharp_gauge_set(s, c->cbg[i].remaining_cx_pools, (int64_t)UINT32_MAX);
    }
#undef OPEN
#undef LEFT
}

void sharp_cluster_refresh_gauges(sharp_cluster_t *c)
{
    if (!c->stats) return;
    for (int i = 0; i < SHARP_NPRIORITIES; i++) breaker_gauges(c, i);
}

static uint32_t cluster_nworkers;
static void (*release_hook)(void *arg, sharp_cluster_t *c);
static void *release_hook_arg;

sharp_hostset_t *sharp_hostset_new(sharp_host_t *const *hosts, uint32_t n, uint64_t generation)
{
    sharp_hostset_t *s = sharp_calloc(1, sizeof *s + (n ? n : 1) * sizeof s->hosts[0]);
    atomic_init(&s->refs, 1);
    s->generation = generation;
    s->nhosts = n;
    if (n) memcpy(s->hosts, hosts, n * sizeof *hosts);
    for (uint32_t i = 0; i < n; i++) atomic_fetch_add_explicit(&hosts[i]->nsets, 1, memory_order_relaxed);
    s->lb_shape = sharp_lb_shape_new(s->hosts, n);
    return s;
}

static void hostset_free(sharp_hostset_t *s)
{
    for (uint32_t i = 0; i < s->nhosts; i++) atomic_fetch_sub_explicit(&s->hosts[i]->nsets, 1, memory_order_release);
    sharp_subset_plan_free(s->subsets);
    sharp_lb_shape_free(s->lb_shape);
    free(s->prev);
    free(s);
}

void sharp_hostset_unref(sharp_hostset_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    hostset_free(s);
}

static _Atomic(sharp_hostset_t *) released_sets;
static atomic_bool defer_frees;

void sharp_hostset_release(sharp_hostset_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    if (!atomic_load_explicit(&defer_frees, memory_order_acquire)) {
        hostset_free(s);
        return;
    }
    s->next_free = atomic_load_explicit(&released_sets, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&released_sets, &s->next_free, s, memory_order_release,
                                                  memory_order_relaxed))
        ;
}

void sharp_hostset_reap(void)
{
    sharp_hostset_t *s = atomic_exchange_explicit(&released_sets, NULL, memory_order_acquire);
    while (s) {
        sharp_hostset_t *next = s->next_free;
        hostset_free(s);
        s = next;
    }
}

void sharp_hostset_defer_frees(bool on)
{
    atomic_store_explicit(&defer_frees, on, memory_order_release);
    if (!on) sharp_hostset_reap();
}

static void free_departed_host(void *p)
{
    sharp_host_t *h = p;
    if (h->outlier) { /* the detector let go of it (sharp_outlier_forget_host) */
        free(h->outlier->latency);
        free(h->outlier);
    }
    sharp_diag_host_destroy(h);
    sharp_host_locality_md_destroy(h);
    free(h->lb_meta);
    free(h);
}

void sharp_cluster_collect_departed(sharp_cluster_t *c)
{
    if (!c->set || c->nall_hosts <= c->set->nhosts) return; /* nothing left the set */
    uint32_t kept = 0, freed = 0;
    for (uint32_t i = 0; i < c->nall_hosts; i++) {
        sharp_host_t *h = c->all_hosts[i];
        bool unused = atomic_load_explicit(&h->nsets, memory_order_acquire) == 0 &&
                      atomic_load_explicit(&h->npools, memory_order_acquire) == 0 &&
                      atomic_load_explicit(&h->active_rq, memory_order_acquire) == 0;
        /* two passes apart (a second or more): what the main thread closed
         * for it (a health check's connection) has finished closing */
        if (!unused || ++h->unused_passes < 2) {
            if (!unused) h->unused_passes = 0;
            c->all_hosts[kept++] = h;
            continue;
        }
        /* no set, pool or try has it: gone from the index now (an address
         * that comes back gets a new host), freed once no worker can hold
         * the pointer it loaded in a callback still running */
        sharp_outlier_forget_host(c->outlier, h);
        sharp_retire(h, free_departed_host);
        freed++;
    }
    if (!freed) return;
    c->nall_hosts = kept;
    sharp_host_index_free(&c->all_index);
    memset(&c->all_index, 0, sizeof c->all_index);
    for (uint32_t i = 0; i < kept; i++) sharp_host_index_add(&c->all_index, c->all_hosts[i]);
    sharp_debug(upstream, "cluster '%s': %u host(s) that left it freed, %u kept", c->name, freed, kept);
}

void sharp_cluster_adopt_host(sharp_cluster_t *c, sharp_host_t *h)
{
    sharp_host_t *known = sharp_host_index_find(&c->all_index, &h->addr);
    if (known == h) return;
    /* another host with this address: a static cluster may list one
     * address twice, each its own host (the index holds the first) */
    if (known && sharp_host_listed(h, c->all_hosts, c->nall_hosts)) return;
    if (c->nall_hosts == c->all_hosts_cap) {
        c->all_hosts_cap = c->all_hosts_cap ? 2 * c->all_hosts_cap : 8;
        c->all_hosts = sharp_realloc(c->all_hosts, c->all_hosts_cap * sizeof *c->all_hosts);
    }
    c->all_hosts[c->nall_hosts++] = h;
    sharp_host_index_add(&c->all_index, h);
}

void sharp_cluster_init_hostset(sharp_cluster_t *c)
{
    atomic_init(&c->refs, 1);
    c->npending = cluster_nworkers;
    c->pending = sharp_calloc(c->npending ? c->npending : 1, sizeof *c->pending);
    c->queued = sharp_calloc(c->npending ? c->npending : 1, sizeof *c->queued);
    c->queue_next = sharp_calloc(c->npending ? c->npending : 1, sizeof *c->queue_next);
    for (uint32_t i = 0; i < c->nhosts; i++) {
        sharp_cluster_adopt_host(c, c->hosts[i]);
        /* its position, as sharp_cluster_publish_hosts keeps it */
        atomic_store_explicit(&c->hosts[i]->index, i, memory_order_relaxed);
    }
    c->set = sharp_hostset_new(c->hosts, c->nhosts, 1);
    if (c->subset) c->set->subsets = sharp_subset_plan_build(c->subset, c->set->hosts, c->nhosts);
    free(c->hosts);
    c->hosts = c->set->hosts;
}

static void (*hostset_notify)(void *arg, sharp_cluster_t *c);
static void *hostset_notify_arg;

void sharp_cluster_set_hostset_notify(void (*fn)(void *arg, sharp_cluster_t *c), void *arg)
{
    hostset_notify = fn;
    hostset_notify_arg = arg;
}

void sharp_cluster_publish_hosts(sharp_cluster_t *c, sharp_host_t *const *hosts, uint32_t n)
{
    sharp_hostset_reap(); /* what workers left since the last one */
    sharp_hostset_t *old = c->set;
    /* a host's index is its position in the newest set: the old one's,
     * for a host it lists, until it is stored below */
    int32_t *prev = old ? sharp_calloc(n ? n : 1, sizeof *prev) : NULL;
    for (uint32_t i = 0; i < n; i++) {
        sharp_cluster_adopt_host(c, hosts[i]);
        if (prev) {
            uint32_t at = atomic_load_explicit(&hosts[i]->index, memory_order_relaxed);
            prev[i] = at < old->nhosts && old->hosts[at] == hosts[i] ? (int32_t)at : -1;
        }
        atomic_store_explicit(&hosts[i]->index, i, memory_order_relaxed);
    }
    c->set = sharp_hostset_new(hosts, n, old ? old->generation + 1 : 1);
    c->set->prev = prev;
    c->hosts = c->set->hosts;
    c->nhosts = n;
    if (c->subset) {
        /* Envoy's refreshSubsets and purgeEmptySubsets: subsets that gain
         * their first host are created, those that lose their last removed */
        c->set->subsets = sharp_subset_plan_build(c->subset, c->set->hosts, n);
        uint32_t created, removed;
        sharp_subset_plan_diff(old ? old->subsets : NULL, c->set->subsets, &created, &removed);
        if (c->stats) {
            sharp_stats_shard_t *sh = sharp_stats_shard(c->stats, 0);
            sharp_counter_add(sh, c->st.lb_subsets_created, created);
            sharp_counter_add(sh, c->st.lb_subsets_removed, removed);
            sharp_gauge_set(c->stats, c->st.lb_subsets_active, c->set->subsets->n);
            sharp_gauge_set(c->stats, c->st.lb_subsets_single_host_per_subset_duplicate,
                            c->set->subsets->single_duplicates);
        }
    }
    sharp_hostset_unref(old);
    if (c->stats) {
        sharp_gauge_set(c->stats, c->st.membership_total, n);
        uint32_t healthy = 0;
        for (uint32_t i = 0; i < n; i++) healthy += sharp_host_healthy(hosts[i]);
        sharp_gauge_set(c->stats, c->st.membership_healthy, healthy);
    }
    if (hostset_notify) hostset_notify(hostset_notify_arg, c);
}


void sharp_cluster_set_nworkers(uint32_t n)
{
    cluster_nworkers = n;
}

void sharp_cluster_set_release_hook(void (*fn)(void *arg, sharp_cluster_t *c), void *arg)
{
    release_hook = fn;
    release_hook_arg = arg;
}

void sharp_cluster_unref(sharp_cluster_t *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    if (release_hook) release_hook(release_hook_arg, c);
    else sharp_cluster_free(c);
}

void sharp_cluster_free(sharp_cluster_t *c)
{
    if (!c) return;
    /* a set a worker released is on the list before the worker let go of
     * the cluster: freed now, while its hosts are still there */
    sharp_hostset_reap();
    for (uint32_t i = 0; c->pending && i < c->npending; i++)
        sharp_hostset_unref(atomic_exchange(&c->pending[i], NULL));
    free((void *)c->pending);
    free((void *)c->queued);
    free(c->queue_next);
    free(c->zone_local_cluster);
    free(c->eds_service_name);
    free(c->version_info);
    sharp_xds_eds_free(c->eds);
    sharp_outlier_free(c->outlier); /* before the hosts: it clears their state pointers */
    c->outlier = NULL;
    if (c->set) {
        sharp_hostset_unref(c->set);
    } else { /* not built to the end: the loader's array */
        for (uint32_t i = 0; i < c->nhosts; i++)
            if (!sharp_host_listed(c->hosts[i], c->all_hosts, c->nall_hosts)) {
                sharp_host_locality_md_destroy(c->hosts[i]);
                free(c->hosts[i]->lb_meta);
                free(c->hosts[i]);
            }
        free(c->hosts);
    }
    for (uint32_t i = 0; i < c->nall_hosts; i++) {
        sharp_diag_host_destroy(c->all_hosts[i]);
        sharp_host_locality_md_destroy(c->all_hosts[i]);
        free(c->all_hosts[i]->lb_meta);
        free(c->all_hosts[i]);
    }
    free(c->all_hosts);
    sharp_host_index_free(&c->all_index);
    sharp_dns_cluster_free(c->dns);
    sharp_odst_free(c->odst);
    sharp_aggregate_free(c->aggregate);
    sharp_hc_config_free(c->health_check);
    sharp_outlier_free(c->outlier);
    sharp_shard_policy_free(c->shuffle_shard);
    sharp_subset_config_free(c->subset);
    sharp_tls_slot_free(c->tls);
    for (int p = 0; p < SHARP_NPRIORITIES; p++)
        for (int k = 0; k < SHARP_CB_NKEYS; k++) free(c->cb_keys[p][k]);
    free(c->maintenance_key);
    free(c->stat_name);
    free(c->name);
    free(c);
}

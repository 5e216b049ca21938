/* cluster.c: cluster stats registration and teardown. */
#include "upstream/cluster.h"

void sharp_cluster_stats_init(sharp_cluster_t *c, sharp_stats_t *s)
{
    c->stats = s;
    sharp_cluster_stats_t *st = &c->st;
    const char *n = c->name;
#define C(field, stat) st->field = sharp_stats_counterf(s, "cluster.%s." stat, n)
#define G(field, stat) st->field = sharp_stats_gaugef(s, "cluster.%s." stat, n)
    C(rq_total, "upstream_rq_total");
    for (int i = 1; i <= 5; i++) st->rq_xx[i] = sharp_stats_counterf(s, "cluster.%s.upstream_rq_%dxx", n, i);
    st->rq_time = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "cluster.%s.upstream_rq_time", n);
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
    C(cx_protocol_error, "upstream_cx_protocol_error");
    C(cx_idle_timeout, "upstream_cx_idle_timeout");
    C(cx_max_requests, "upstream_cx_max_requests");
    G(membership_total, "membership_total");
    G(membership_healthy, "membership_healthy");
    C(lb_healthy_panic, "lb_healthy_panic");
    C(upstream_rq_per_try_timeout, "upstream_rq_per_try_timeout");
    C(rq_retry, "upstream_rq_retry");
    C(rq_maintenance_mode, "upstream_rq_maintenance_mode");
#undef C
#undef G
    sharp_gauge_set(s, st->membership_total, c->nhosts);
    uint32_t healthy = 0;
    for (uint32_t i = 0; i < c->nhosts; i++) healthy += sharp_host_healthy(c->hosts[i]);
    sharp_gauge_set(s, st->membership_healthy, healthy);
}

/* Counts upstream_rq_<class>xx and, as Envoy does, upstream_rq_<code>. */
void sharp_cluster_count_response(sharp_cluster_t *c, sharp_stats_shard_t *sh, uint32_t code)
{
    if (code < 100 || code >= 600) return;
    sharp_counter_inc(sh, c->st.rq_xx[code / 100]);
    sharp_stat_id_t id = atomic_load_explicit(&c->rq_code[code], memory_order_acquire);
    if (!id) {
        id = sharp_stats_counterf(c->stats, "cluster.%s.upstream_rq_%u", c->name, code);
        atomic_store_explicit(&c->rq_code[code], id, memory_order_release);
    }
    sharp_counter_inc(sh, id);
}

void sharp_cluster_free(sharp_cluster_t *c)
{
    if (!c) return;
    for (uint32_t i = 0; i < c->nhosts; i++) free(c->hosts[i]);
    free(c->hosts);
    free(c->name);
    free(c);
}

/* snapshot.c: reference counting of config snapshots. */
#include "snapshot.h"
#include "matcher.h"
#include "http/tracing.h"
#include "http/access_log.h"
#include "http/access_log_emit.h"
#include "http/local_reply.h"
#include "overload.h"
#include "tls/context.h"
#include "tls/sds.h"
#include "listen_socket.h"
#include "udp/udp_proxy.h"
#include "filters/rbac/filter.h"

sharp_snapshot_t *sharp_snapshot_ref(sharp_snapshot_t *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void sharp_hcm_config_free(sharp_hcm_config_t *h)
{
    if (!h) return;
    for (uint32_t i = 0; i < h->nfilters; i++) {
        if (h->filters[i].factory && h->filters[i].factory->destroy_config && h->filters[i].config)
            h->filters[i].factory->destroy_config(h->filters[i].config);
        free(h->filters[i].name);
    }
    free(h->filters);
    for (uint32_t i = 0; i < h->nnet_rbac; i++) sharp_net_rbac_free(h->net_rbac[i]);
    free(h->net_rbac);
    for (uint32_t i = 0; i < h->naccess_logs; i++) sharp_access_log_free(h->access_logs[i]);
    free(h->access_logs);
    if (h->routes) sharp_route_table_free(h->routes);
    free(h->stat_prefix);
    sharp_tracing_config_free(h->tracing);
    free(h->server_name);
    free(h->via);
    free(h->scheme_to_set);
    free(h->user_agent);
    free(h->user_agent_node);
    free(h->default_host_for_http_10);
    free(h->internal_cidrs);
    sharp_local_reply_free(h->local_reply);
    for (uint32_t i = 0; i < h->nupgrades; i++) free(h->upgrades[i].type);
    free(h->upgrades);
    if (h->tcp_proxy) {
        for (uint32_t i = 0; i < h->tcp_proxy->nclusters; i++) {
            free(h->tcp_proxy->clusters[i].name);
            free(h->tcp_proxy->clusters[i].metadata_match);
        }
        free(h->tcp_proxy->clusters);
        free(h->tcp_proxy->stat_prefix);
        sharp_tcp_tunnel_config_t *tn = h->tcp_proxy->tunnel;
        if (tn) {
            free(tn->hostname);
            free(tn->post_path);
            if (tn->host_fmt) sharp_access_log_format_free(tn->host_fmt);
            sharp_header_ops_free(&tn->headers);
            free(tn);
        }
        free(h->tcp_proxy);
    }
    free(h);
}

sharp_rds_table_t *sharp_rds_table_ref(sharp_rds_table_t *t)
{
    if (t) atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void sharp_rds_table_unref(sharp_rds_table_t *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1) return;
    sharp_route_table_free(t->table);
    if (t->pb) protobuf_c_message_free_unpacked(t->pb, NULL);
    free(t->version_info);
    free(t);
}

sharp_filter_chain_config_t *sharp_filter_chain_ref(sharp_filter_chain_config_t *fc)
{
    if (fc) atomic_fetch_add_explicit(&fc->refs, 1, memory_order_relaxed);
    return fc;
}

void sharp_filter_chain_unref(sharp_filter_chain_config_t *fc)
{
    if (!fc || atomic_fetch_sub_explicit(&fc->refs, 1, memory_order_acq_rel) != 1) return;
    sharp_hcm_config_free(fc->hcm);
    sharp_fc_match_free(&fc->match);
    sharp_tls_slot_free(fc->tls);
    free(fc->name);
    free(fc);
}

sharp_listener_config_t *sharp_listener_ref(sharp_listener_config_t *l)
{
    if (l) atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    return l;
}

void sharp_listener_unref(sharp_listener_config_t *l)
{
    if (!l || atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1) return;
    for (uint32_t k = 0; l->chains && k < l->nchains + l->has_default_chain; k++)
        sharp_filter_chain_unref(l->chains[k]);
    free(l->chains);
    free(l->matches);
    sharp_matcher_free(l->fc_matcher);
    for (uint32_t k = 0; k < l->npp_rules; k++) {
        free(l->pp_rules[k].ns);
        free(l->pp_rules[k].key);
    }
    free(l->pp_rules);
    free(l->name);
    sharp_udp_proxy_config_free(l->udp);
    sharp_lsock_unref(l->sock);
    free(l);
}

sharp_snapshot_t *sharp_snapshot_derive(sharp_snapshot_t *base, sharp_listener_config_t *const *listeners,
                                        uint32_t nlisteners, sharp_cluster_t *const *clusters, uint32_t nclusters,
                                        sharp_rds_table_t *const *rds, uint32_t nrds, uint64_t version)
{
    if (base->base) base = base->base;
    sharp_snapshot_t *s = sharp_calloc(1, sizeof *s);
    *s = *base;
    atomic_init(&s->refs, 1);
    s->version = version;
    s->base = sharp_snapshot_ref(base);
    s->listeners = sharp_calloc(nlisteners ? nlisteners : 1, sizeof *s->listeners);
    for (uint32_t i = 0; i < nlisteners; i++) s->listeners[i] = sharp_listener_ref(listeners[i]);
    s->nlisteners = nlisteners;
    s->clusters = sharp_calloc(nclusters ? nclusters : 1, sizeof *s->clusters);
    for (uint32_t i = 0; i < nclusters; i++) s->clusters[i] = sharp_cluster_ref(clusters[i]);
    s->nclusters = nclusters;
    s->cluster_names = NULL; /* the base's are of the base's clusters */
    s->cluster_index = (sharp_name_index_t){0};
    sharp_snapshot_index_clusters(s);
    s->rds = sharp_calloc(nrds ? nrds : 1, sizeof *s->rds);
    for (uint32_t i = 0; i < nrds; i++) s->rds[i] = sharp_rds_table_ref(rds[i]);
    s->nrds = nrds;
    return s;
}

void sharp_snapshot_unref(sharp_snapshot_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (uint32_t i = 0; i < s->nlisteners; i++) sharp_listener_unref(s->listeners[i]);
    free(s->listeners);
    for (uint32_t i = 0; i < s->nclusters; i++) sharp_cluster_unref(s->clusters[i]);
    free(s->clusters);
    sharp_name_index_free(&s->cluster_index);
    free(s->cluster_names);
    for (uint32_t i = 0; i < s->nrds; i++) sharp_rds_table_unref(s->rds[i]);
    free(s->rds);
    if (s->base) { /* the rest is the base's */
        sharp_snapshot_unref(s->base);
        free(s);
        return;
    }
    sharp_sds_free(s->sds);
    for (uint32_t i = 0; i < s->nadmin_access_logs; i++) sharp_access_log_free(s->admin_access_logs[i]);
    free(s->admin_access_logs);
    if (s->outlier_event_log) sharp_access_log_file_close(s->outlier_event_log);
    sharp_overload_config_free(s->overload);
    free(s);
}

const sharp_filter_chain_config_t *sharp_listener_select_chain(const sharp_listener_config_t *l,
                                                               const struct sockaddr *local,
                                                               const struct sockaddr *remote)
{
    /* no listener filter has looked at the bytes: no SNI, no ALPN, and the
     * transport protocol is Envoy's default, raw_buffer */
    return sharp_listener_select_chain_inspected(l, local, remote, remote, "", "raw_buffer", NULL, 0);
}

const sharp_filter_chain_config_t *sharp_listener_select_chain_inspected(
    const sharp_listener_config_t *l, const struct sockaddr *local, const struct sockaddr *remote,
    const struct sockaddr *direct_remote, const char *server_name, const char *transport_protocol,
    const char *const *alpn, uint32_t nalpn)
{
    if (l->match_any) return l->chains[0];
    sharp_fc_conn_t conn = {.local = local, .remote = remote, .direct_remote = direct_remote, .server_name = server_name,
                            .transport_protocol = transport_protocol, .application_protocols = alpn,
                            .napplication_protocols = nalpn};
    if (l->fc_matcher) {
        /* Envoy's findFilterChainUsingMatcher: a match names the chain (a
         * name no chain has: none, not the default); no match: the
         * default chain */
        sharp_match_data_t d = {.conn = &conn};
        const void *action;
        if (sharp_matcher_evaluate(l->fc_matcher, &d, &action) == SHARP_MATCH_ACTION) {
            int32_t at = *(const int32_t *)action;
            return at >= 0 ? l->chains[at] : NULL;
        }
        return l->has_default_chain ? l->chains[l->nchains] : NULL;
    }
    int i = sharp_fc_select(l->matches, l->nchains, &conn);
    if (i >= 0) return l->chains[i];
    return l->has_default_chain ? l->chains[l->nchains] : NULL;
}

/* Appends one context to /certs (json) or takes its fewest days. */
static void certs_of(sharp_tls_ctx_t *ctx, sharp_sbuf_t *json, bool *first, int64_t *min)
{
    int64_t d;
    if (!ctx) return; /* its SDS secret has not come yet */
    if (json) {
        if (!*first) sharp_sbuf_puts(json, ",");
        d = sharp_tls_ctx_certs_json(ctx, json);
    } else {
        d = sharp_tls_ctx_days_until_first_expiry(ctx);
        if (d < 0) d = INT64_MAX;
    }
    *first = false;
    if (d < *min) *min = d;
}

int64_t sharp_snapshot_certs(const sharp_snapshot_t *s, sharp_sbuf_t *json)
{
    int64_t min = INT64_MAX;
    bool first = true;
    for (uint32_t i = 0; s && i < s->nlisteners; i++) {
        const sharp_listener_config_t *l = s->listeners[i];
        for (uint32_t k = 0; l->chains && k < l->nchains + l->has_default_chain; k++)
            if (l->chains[k]->tls) certs_of(sharp_tls_slot_get(l->chains[k]->tls), json, &first, &min);
    }
    for (uint32_t i = 0; s && i < s->nclusters; i++)
        if (s->clusters[i]->tls) certs_of(sharp_tls_slot_get(s->clusters[i]->tls), json, &first, &min);
    return min == INT64_MAX ? -1 : min;
}

void sharp_snapshot_index_clusters(sharp_snapshot_t *s)
{
    sharp_name_index_free(&s->cluster_index);
    free(s->cluster_names);
    s->cluster_names = sharp_calloc(s->nclusters ? s->nclusters : 1, sizeof *s->cluster_names);
    for (uint32_t i = 0; i < s->nclusters; i++) s->cluster_names[i] = s->clusters[i]->name;
    sharp_name_index_init(&s->cluster_index, s->cluster_names, s->nclusters);
}

int32_t sharp_snapshot_cluster_index(const sharp_snapshot_t *s, const char *name)
{
    if (!s->cluster_index.slots) { /* while the bootstrap's clusters are being built */
        for (uint32_t i = 0; i < s->nclusters; i++)
            if (strcmp(s->clusters[i]->name, name) == 0) return (int32_t)i;
        return -1;
    }
    return sharp_name_index_find(&s->cluster_index, name);
}

sharp_cluster_t *sharp_snapshot_cluster(const sharp_snapshot_t *s, const char *name)
{
    int32_t i = sharp_snapshot_cluster_index(s, name);
    return i < 0 ? NULL : s->clusters[i];
}

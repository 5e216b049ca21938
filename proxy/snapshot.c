/* snapshot.c: reference counting of config snapshots. */
#include "snapshot.h"
#include "http/access_log.h"
#include "http/access_log_emit.h"
#include "http/local_reply.h"
#include "overload.h"

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
    for (uint32_t i = 0; i < h->naccess_logs; i++) sharp_access_log_free(h->access_logs[i]);
    free(h->access_logs);
    if (h->routes) sharp_route_table_free(h->routes);
    free(h->stat_prefix);
    free(h->server_name);
    free(h->via);
    free(h->default_host_for_http_10);
    free(h->internal_cidrs);
    sharp_local_reply_free(h->local_reply);
    for (uint32_t i = 0; i < h->nupgrades; i++) free(h->upgrades[i].type);
    free(h->upgrades);
    free(h);
}

void sharp_snapshot_unref(sharp_snapshot_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (uint32_t i = 0; i < s->nlisteners; i++) {
        sharp_hcm_config_free(s->listeners[i].hcm);
        free(s->listeners[i].name);
    }
    free(s->listeners);
    for (uint32_t i = 0; i < s->nclusters; i++) sharp_cluster_free(s->clusters[i]);
    free(s->clusters);
    for (uint32_t i = 0; i < s->nadmin_access_logs; i++) sharp_access_log_free(s->admin_access_logs[i]);
    free(s->admin_access_logs);
    if (s->outlier_event_log) sharp_access_log_file_close(s->outlier_event_log);
    sharp_overload_config_free(s->overload);
    free(s);
}

sharp_cluster_t *sharp_snapshot_cluster(const sharp_snapshot_t *s, const char *name)
{
    for (uint32_t i = 0; i < s->nclusters; i++)
        if (strcmp(s->clusters[i]->name, name) == 0) return s->clusters[i];
    return NULL;
}

/* xds.c: see xds.h. */
#include "xds/xds.h"

#include "config/bootstrap.h"
#include "config/route_config.h"
#include "http/route.h"
#include "log.h"
#include "server.h"
#include "snapshot.h"
#include "tls/sds.h"
#include "upstream/cluster.h"
#include "upstream/dns.h"
#include "upstream/health_check.h"
#include "upstream/outlier.h"
#include "xds/path_source.h"
#include "xds/lds.h"

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef Envoy__Config__Core__V3__ConfigSource config_source_t;
typedef Envoy__Config__Cluster__V3__Cluster cluster_pb_t;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla_t;
typedef Envoy__Config__Route__V3__RouteConfiguration rc_t;

/* ---- the file transport: one watched file, its stats ---- */

typedef struct sub {
    sharp_xds_t *x;
    const ProtobufCMessageDescriptor *type;
    char *path, *wdir;
    sharp_path_source_t *watch;
    sharp_xds_watcher_t watcher;
    struct {
        sharp_stat_id_t update_attempt, update_success, update_failure, update_rejected, update_time, version;
    } st;
    char *version; /* of the last accepted update, NULL before */
    uint64_t last_updated_us;
    struct sub *next; /* in x->subs */
} sub_t;

typedef struct rds {
    char *name, *path;
    sub_t *sub;
    sharp_rds_table_t *cur; /* NULL until the resource arrives */
} rds_t;

typedef struct dyn_cluster {
    sharp_cluster_t *c; /* a reference */
    ProtobufCMessage *pb;
    uint8_t *packed; /* to tell an unchanged resource */
    size_t len;
    char *version;
    uint64_t last_updated_us;
} dyn_cluster_t;

/* A cluster from CDS that is not used yet (Envoy's warming): a DNS
 * cluster's first resolution, then active health checks' first round. */
typedef struct warm {
    struct sharp_xds *x;
    dyn_cluster_t d;
    bool dns_wait;   /* its first resolution runs */
    bool hc_pending; /* waits for the server's health checks to start */
    struct warm *next;
} warm_t;

struct sharp_xds_eds {
    sharp_xds_t *x;
    sharp_cluster_t *c; /* not a reference: the cluster owns its subscription */
    sub_t *sub;
};

struct sharp_xds {
    sharp_server_t *srv;
    uv_loop_t *loop; /* set once started: new subscriptions watch at once */
    sub_t *subs;
    rds_t **rds;
    uint32_t nrds;
    sub_t *cds;
    dyn_cluster_t *clusters;
    uint32_t nclusters;
    warm_t *warming; /* new versions of clusters not used yet */
    uint32_t next_cluster_index;
    uint64_t version; /* of the snapshots it makes */
    /* LDS: the listener manager and its subscription */
    sharp_lds_t *lds;
    sub_t *lds_sub;
    /* while held (an LDS update builds listeners whose RDS files are read),
     * publishing waits for the release */
    uint32_t hold;
    bool publish_pending;
    struct {
        sharp_stat_id_t cluster_added, cluster_modified, cluster_removed, warming_clusters;
    } st;
};

static sharp_stats_shard_t *shard0(sharp_xds_t *x)
{
    return sharp_stats_shard(x->srv->stats, 0);
}

int sharp_xds_config_source_path(const ProtobufCMessage *config_source, const char *field, const char **path,
                                 const char **wdir, char *err, size_t errlen)
{
    const config_source_t *cs = (const config_source_t *)config_source;
    *path = NULL;
    *wdir = NULL;
    if (cs && cs->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        /* Envoy removed the v2 xDS API: its resources are not v3 ones */
        snprintf(err, errlen, "%s.resource_api_version: V2 xDS resources are not supported (the v2 xDS major "
                 "version has been removed); V3 (or AUTO) is", field);
        return -1;
    }
    switch (cs ? cs->config_source_specifier_case : 0) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH:
        *path = cs->path;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE:
        *path = cs->path_config_source->path;
        if (cs->path_config_source->watched_directory) *wdir = cs->path_config_source->watched_directory->path;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE:
        snprintf(err, errlen, "%s.api_config_source: xDS from a management server (gRPC or REST) is not supported "
                 "by SHARP yet (gRPC xDS comes next); only path_config_source (a file) is", field);
        return -1;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS:
        snprintf(err, errlen, "%s.ads: xDS over ADS (gRPC xDS) is not supported by SHARP yet; only "
                 "path_config_source (a file) is", field);
        return -1;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF:
        snprintf(err, errlen, "%s.self: xDS from the resource's own server (gRPC xDS) is not supported by SHARP "
                 "yet; only path_config_source (a file) is", field);
        return -1;
    default:
        snprintf(err, errlen, "%s: a config source (path_config_source) is required", field);
        return -1;
    }
    if (!*path || !**path) {
        snprintf(err, errlen, "%s: the path is empty", field);
        return -1;
    }
    return 0;
}

static void on_file_changed(void *ud);

static int sub_watch(sub_t *s, char *err, size_t errlen)
{
    if (s->watch || !s->x->loop) return 0;
    s->watch = sharp_path_source_watch(s->x->loop, s->path, s->wdir, on_file_changed, s, err, errlen);
    return s->watch ? 0 : -1;
}

/* Envoy's checkFilesystemSubscriptionBackingPath, then the stats under
 * `prefix` (cluster_manager.cds, http.<p>.rds.<name>, cluster.<name>). */
static sub_t *sub_new(sharp_xds_t *x, const ProtobufCMessageDescriptor *type, const char *path, const char *wdir,
                      const char *prefix, const char *field, sharp_xds_watcher_t w, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: paths must refer to an existing path in the system: '%s' does not exist", field,
                 path);
        return NULL;
    }
    if (wdir && (stat(wdir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(err, errlen, "%s.watched_directory.path: '%s' is not a directory", field, wdir);
        return NULL;
    }
    sub_t *s = sharp_calloc(1, sizeof *s);
    s->x = x;
    s->type = type;
    s->path = sharp_strdup(path);
    s->wdir = wdir ? sharp_strdup(wdir) : NULL;
    s->watcher = w;
    sharp_stats_t *stats = x->srv->stats;
#define C(f) s->st.f = sharp_stats_counterf(stats, "%s." #f, prefix)
    C(update_attempt);
    C(update_success);
    C(update_failure);
    C(update_rejected);
#undef C
    s->st.update_time = sharp_stats_gaugef(stats, "%s.update_time", prefix);
    s->st.version = sharp_stats_gaugef(stats, "%s.version", prefix);
    if (sub_watch(s, err, errlen) < 0) {
        free(s->path);
        free(s->wdir);
        free(s);
        return NULL;
    }
    s->next = x->subs;
    x->subs = s;
    return s;
}

static void sub_free(sub_t *s)
{
    if (!s) return;
    sharp_xds_t *x = s->x;
    for (sub_t **p = &x->subs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    sharp_path_source_free(s->watch);
    free(s->path);
    free(s->wdir);
    free(s->version);
    free(s);
}

/* One read of the file: Envoy's FilesystemSubscriptionImpl::refresh. A
 * file that cannot be read or parsed is update_failure; one whose
 * resources the watcher refuses is update_rejected; either keeps what the
 * previous update gave. */
static int sub_read(sub_t *s, char *err, size_t errlen)
{
    sharp_stats_shard_t *sh = shard0(s->x);
    sharp_counter_inc(sh, s->st.update_attempt);
    sharp_discovery_t d;
    bool parsed;
    char why[1024];
    if (sharp_path_source_read(s->path, s->type, &d, &parsed, why, sizeof why) < 0) {
        /* Envoy: an unknown field is UnknownProtoFieldException, counted
         * as rejected even though the file did not parse */
        if (strstr(why, "unknown field")) parsed = true;
        sharp_counter_inc(sh, parsed ? s->st.update_rejected : s->st.update_failure);
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    if (s->watcher.on_update(s->watcher.ud, d.resources, d.nresources, d.version_info, why, sizeof why) < 0) {
        sharp_counter_inc(sh, s->st.update_rejected);
        snprintf(err, errlen, "%s", why);
        sharp_discovery_free(&d);
        return -1;
    }
    free(s->version);
    s->version = sharp_strdup(d.version_info);
    s->last_updated_us = sharp_wall_us();
    sharp_counter_inc(sh, s->st.update_success);
    sharp_gauge_set(s->x->srv->stats, s->st.update_time, (int64_t)(s->last_updated_us / 1000));
    sharp_gauge_set(s->x->srv->stats, s->st.version, (int64_t)sharp_xxhash64(s->version, strlen(s->version)));
    sharp_discovery_free(&d);
    return 0;
}

static void on_file_changed(void *ud)
{
    sub_t *s = ud;
    char err[1024];
    if (s->x->srv->shutting_down) return;
    if (sub_read(s, err, sizeof err) < 0)
        sharp_log_warn("%s: update rejected, the previous configuration stays: %s", s->path, err);
    else
        sharp_log_info("%s: version '%s' applied", s->path, s->version);
}

/* ---- the manager ---- */

sharp_xds_t *sharp_xds_new(sharp_server_t *srv)
{
    sharp_xds_t *x = sharp_calloc(1, sizeof *x);
    x->srv = srv;
    x->version = 1;
    return x;
}

int sharp_xds_start(sharp_xds_t *x, uv_loop_t *loop, char *err, size_t errlen)
{
    x->loop = loop;
    for (sub_t *s = x->subs; s; s = s->next)
        if (sub_watch(s, err, errlen) < 0) return -1;
    return 0;
}

void sharp_xds_stop(sharp_xds_t *x)
{
    if (!x) return;
    sharp_lds_stop(x->lds);
    for (warm_t *w = x->warming; w; w = w->next) sharp_dns_stop(w->d.c); /* not in any snapshot */
    for (sub_t *s = x->subs; s; s = s->next) {
        sharp_path_source_free(s->watch);
        s->watch = NULL;
    }
    x->loop = NULL;
}

void sharp_xds_free(sharp_xds_t *x)
{
    if (!x) return;
    for (uint32_t i = 0; i < x->nrds; i++) {
        sub_free(x->rds[i]->sub);
        sharp_rds_table_unref(x->rds[i]->cur);
        free(x->rds[i]->name);
        free(x->rds[i]->path);
        free(x->rds[i]);
    }
    free(x->rds);
    for (uint32_t i = 0; i < x->nclusters; i++) {
        dyn_cluster_t *d = &x->clusters[i];
        sharp_xds_eds_free(d->c->eds);
        d->c->eds = NULL;
        sharp_cluster_unref(d->c);
        protobuf_c_message_free_unpacked(d->pb, NULL);
        free(d->packed);
        free(d->version);
    }
    free(x->clusters);
    while (x->warming) {
        warm_t *w = x->warming;
        x->warming = w->next;
        sharp_xds_eds_free(w->d.c->eds);
        w->d.c->eds = NULL;
        sharp_cluster_unref(w->d.c);
        protobuf_c_message_free_unpacked(w->d.pb, NULL);
        free(w->d.packed);
        free(w->d.version);
        free(w);
    }
    sub_free(x->cds);
    sub_free(x->lds_sub);
    sharp_lds_free(x->lds);
    while (x->subs) sub_free(x->subs); /* EDS subscriptions of clusters still referenced */
    free(x);
}

void sharp_xds_hold(sharp_xds_t *x)
{
    x->hold++;
}

void sharp_xds_release(sharp_xds_t *x)
{
    if (--x->hold || !x->publish_pending) return;
    x->publish_pending = false;
    if (x->srv->snap) sharp_xds_publish(x);
}

void sharp_xds_publish(sharp_xds_t *x)
{
    if (x->hold) {
        x->publish_pending = true;
        return;
    }
    sharp_server_t *srv = x->srv;
    sharp_snapshot_t *base = srv->snap->base ? srv->snap->base : srv->snap;
    /* the bootstrap's listeners, then LDS's */
    sharp_listener_config_t **dl;
    size_t ndl = sharp_lds_listeners(x->lds, &dl);
    uint32_t nl = base->nlisteners + (uint32_t)ndl;
    sharp_listener_config_t **ls = sharp_calloc(nl ? nl : 1, sizeof *ls);
    for (uint32_t i = 0; i < base->nlisteners; i++) ls[i] = base->listeners[i];
    for (size_t i = 0; i < ndl; i++) ls[base->nlisteners + i] = dl[i];
    uint32_t n = base->nclusters + x->nclusters;
    sharp_cluster_t **cl = sharp_calloc(n ? n : 1, sizeof *cl);
    for (uint32_t i = 0; i < base->nclusters; i++) cl[i] = base->clusters[i];
    for (uint32_t i = 0; i < x->nclusters; i++) cl[base->nclusters + i] = x->clusters[i].c;
    sharp_rds_table_t **rds = sharp_calloc(x->nrds ? x->nrds : 1, sizeof *rds);
    for (uint32_t i = 0; i < x->nrds; i++) rds[i] = x->rds[i]->cur;
    sharp_snapshot_t *s = sharp_snapshot_derive(base, ls, nl, cl, n, rds, x->nrds, ++x->version);
    free(ls);
    free(cl);
    free(rds);
    sharp_server_set_snapshot(srv, s);
    sharp_snapshot_unref(s);
}

/* ---- RDS ---- */

static int rds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, char *err, size_t errlen)
{
    rds_t *r = ud;
    sharp_xds_t *x = r->sub->x;
    ProtobufCMessage *found = NULL;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const rc_t *rc = (const rc_t *)res[i];
        if (strcmp(rc->name, r->name) != 0) continue; /* another route configuration of the file */
        if (found) {
            snprintf(err, errlen, "duplicate RouteConfiguration '%s' (resources[%zu] and [%zu])", r->name, at, i);
            return -1;
        }
        found = res[i];
        at = i;
    }
    if (!found) {
        /* the state of the world without this route configuration: Envoy's
         * RDS keeps the one it has (a route is never removed by absence) */
        sharp_log_info("RDS %s: no RouteConfiguration '%s' in version '%s'", r->path, r->name, version);
        return 0;
    }
    char rerr[1024] = "";
    sharp_route_table_t *t = sharp_route_table_create((const rc_t *)found, rerr, sizeof rerr);
    if (!t) {
        snprintf(err, errlen, "resources[%zu]: RouteConfiguration '%s': %s", at, r->name, rerr);
        return -1;
    }
    sharp_rds_table_t *nt = sharp_calloc(1, sizeof *nt);
    atomic_init(&nt->refs, 1);
    nt->table = t;
    nt->pb = found;
    res[at] = NULL; /* kept for /config_dump */
    nt->version_info = sharp_strdup(version);
    nt->last_updated_us = sharp_wall_us();
    sharp_rds_table_unref(r->cur);
    r->cur = nt;
    if (x->srv->snap) sharp_xds_publish(x);
    return 0;
}

int sharp_xds_rds_subscribe(sharp_xds_t *x, const ProtobufCMessage *rds_msg, const char *stat_prefix,
                            const char *field, char *err, size_t errlen)
{
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds = (const void *)rds_msg;
    const char *path, *wdir;
    char f[1024];
    snprintf(f, sizeof f, "%s.config_source", field);
    if (sharp_xds_config_source_path(&rds->config_source->base, f, &path, &wdir, err, errlen) < 0) return -1;
    /* Envoy's RdsRouteConfigProviderImpl is shared by source and name */
    for (uint32_t i = 0; i < x->nrds; i++)
        if (!strcmp(x->rds[i]->name, rds->route_config_name) && !strcmp(x->rds[i]->path, path)) return (int)i;
    rds_t *r = sharp_calloc(1, sizeof *r);
    r->name = sharp_strdup(rds->route_config_name);
    r->path = sharp_strdup(path);
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "http.%s.rds.%s", stat_prefix, rds->route_config_name);
    sharp_xds_watcher_t w = {rds_update, r};
    r->sub = sub_new(x, &envoy__config__route__v3__route_configuration__descriptor, path, wdir, prefix, f, w, err,
                     errlen);
    if (!r->sub) {
        free(r->name);
        free(r->path);
        free(r);
        return -1;
    }
    x->rds = sharp_realloc(x->rds, (x->nrds + 1) * sizeof *x->rds);
    x->rds[x->nrds++] = r;
    char why[1024];
    if (sub_read(r->sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: route configuration '%s' from %s: %s", f, rds->route_config_name, path, why);
        return -1;
    }
    return (int)(x->nrds - 1);
}

/* ---- EDS ---- */

static int eds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, char *err, size_t errlen)
{
    sharp_xds_eds_t *e = ud;
    sharp_cluster_t *c = e->c;
    sharp_stats_shard_t *sh = shard0(e->x);
    (void)version;
    /* Envoy's EdsClusterImpl: no resource is update_empty and changes
     * nothing; more than one, or another cluster's, is refused */
    if (n == 0) {
        sharp_counter_inc(sh, c->st.update_empty);
        sharp_log_info("EDS %s: missing ClusterLoadAssignment for %s", e->sub->path, c->eds_service_name);
        return 0;
    }
    if (n > 1) {
        snprintf(err, errlen, "Unexpected EDS resource length: %zu (expected 1)", n);
        return -1;
    }
    const cla_t *cla = (const cla_t *)res[0];
    if (strcmp(cla->cluster_name, c->eds_service_name) != 0) {
        snprintf(err, errlen, "Unexpected EDS cluster (expecting %s): %s", c->eds_service_name, cla->cluster_name);
        return -1;
    }
    sharp_host_t **hosts;
    uint32_t nhosts;
    bool changed = false;
    if (sharp_config_cla_hosts(c, cla, "resources[0]", &hosts, &nhosts, &changed, err, errlen) < 0) return -1;
    if (!c->set) { /* the first read, while the cluster is built: its first set */
        free(c->hosts);
        c->hosts = hosts;
        c->nhosts = nhosts;
        return 0;
    }
    if (!changed) {
        sharp_counter_inc(sh, c->st.update_no_rebuild);
        free(hosts);
        return 0;
    }
    sharp_counter_inc(sh, c->st.membership_change);
    sharp_cluster_publish_hosts(c, hosts, nhosts);
    free(hosts);
    return 0;
}

int sharp_xds_eds_subscribe(sharp_xds_t *x, sharp_cluster_t *c, const ProtobufCMessage *eds_cluster_config,
                            const char *field, char *err, size_t errlen)
{
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = (const void *)eds_cluster_config;
    char f[1024];
    if (!ec) {
        snprintf(err, errlen, "%s: an EDS cluster needs eds_cluster_config with an eds_config", field);
        return -1;
    }
    snprintf(f, sizeof f, "%s.eds_config", field);
    const char *path, *wdir;
    if (sharp_xds_config_source_path(&ec->eds_config->base, f, &path, &wdir, err, errlen) < 0) return -1;
    c->eds_service_name = sharp_strdup(ec->service_name[0] ? ec->service_name : c->name);
    sharp_xds_eds_t *e = sharp_calloc(1, sizeof *e);
    e->x = x;
    e->c = c;
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "cluster.%s", c->name);
    sharp_xds_watcher_t w = {eds_update, e};
    e->sub = sub_new(x, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, path, wdir, prefix, f, w,
                     err, errlen);
    if (!e->sub) {
        free(e);
        return -1;
    }
    c->eds = e;
    char why[1024];
    if (sub_read(e->sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: endpoints of cluster '%s' from %s: %s", f, c->name, path, why);
        return -1;
    }
    return 0;
}

void sharp_xds_eds_free(sharp_xds_eds_t *e)
{
    if (!e) return;
    sub_free(e->sub);
    free(e);
}

/* ---- CDS ---- */

static bool is_static(const sharp_xds_t *x, const char *name)
{
    const sharp_snapshot_t *base = x->srv->snap ? (x->srv->snap->base ? x->srv->snap->base : x->srv->snap) : NULL;
    return base && sharp_snapshot_cluster(base, name) != NULL;
}

/* A cluster that leaves the active set (removed, or replaced by a new
 * version): its EDS subscription, DNS resolution and health checks stop
 * now, its memory goes once no request uses it. */
static void cluster_leaves(sharp_xds_t *x, dyn_cluster_t *o)
{
    sharp_xds_eds_free(o->c->eds);
    o->c->eds = NULL;
    sharp_dns_stop(o->c);
    sharp_health_checker_remove_cluster(x->srv->health_checker, o->c);
    sharp_cluster_unref(o->c);
    protobuf_c_message_free_unpacked(o->pb, NULL);
    free(o->packed);
    free(o->version);
    memset(o, 0, sizeof *o);
}

static void warm_free(warm_t *w)
{
    sharp_dns_stop(w->d.c);
    sharp_health_checker_remove_cluster(w->x->srv->health_checker, w->d.c);
    sharp_xds_eds_free(w->d.c->eds);
    w->d.c->eds = NULL;
    sharp_cluster_unref(w->d.c);
    if (w->d.pb) protobuf_c_message_free_unpacked(w->d.pb, NULL);
    free(w->d.packed);
    free(w->d.version);
    free(w);
}

static void warming_gauge(sharp_xds_t *x)
{
    int64_t n = 0;
    for (warm_t *w = x->warming; w; w = w->next) n++;
    sharp_gauge_set(x->srv->stats, x->st.warming_clusters, n);
}

/* A warming cluster is ready: it replaces the active version of its name
 * (or joins the active set), and the next snapshot has it. */
static void warm_done(warm_t *w)
{
    sharp_xds_t *x = w->x;
    for (warm_t **p = &x->warming; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    uint32_t at = x->nclusters;
    for (uint32_t k = 0; k < x->nclusters; k++)
        if (!strcmp(x->clusters[k].c->name, w->d.c->name)) at = k;
    if (at < x->nclusters) {
        cluster_leaves(x, &x->clusters[at]);
    } else {
        x->clusters = sharp_realloc(x->clusters, (x->nclusters + 1) * sizeof *x->clusters);
        x->nclusters++;
    }
    x->clusters[at] = w->d;
    sharp_log_info("CDS: cluster '%s' warmed: in use from now on", w->d.c->name);
    free(w);
    warming_gauge(x);
    if (x->srv->snap) sharp_xds_publish(x);
}

static void on_warm_hc(void *arg)
{
    warm_done(arg);
}

/* Warming, second step: the health checks' first round (once the server's
 * checks have started: before, at sharp_xds_checks_started). */
static void warm_hc(warm_t *w)
{
    sharp_server_t *srv = w->x->srv;
    sharp_cluster_t *c = w->d.c;
    w->dns_wait = false;
    if (c->health_check) {
        if (!srv->checks_started) {
            w->hc_pending = true;
            return;
        }
        w->hc_pending = false;
        if (sharp_health_checker_add_cluster(&srv->health_checker, srv->loop, srv->stats, c, on_warm_hc, w) > 0)
            return;
    }
    warm_done(w);
}

static void on_warm_dns(void *arg)
{
    warm_hc(arg);
}

/* Warming, first step: a DNS cluster's first resolution (unless
 * wait_for_warm_on_init is false), as Envoy's cluster initialization. */
static void warm_begin(warm_t *w)
{
    sharp_cluster_t *c = w->d.c;
    if (c->dns) {
        char err[512];
        bool wait = c->dns->wait_for_warm;
        w->dns_wait = wait;
        if (sharp_dns_start(c, w->x->loop, wait ? on_warm_dns : NULL, w, err, sizeof err) < 0) {
            sharp_log_error("CDS: cluster '%s': %s; it has no hosts", c->name, err);
            wait = false;
        }
        if (wait) return;
    }
    warm_hc(w);
}

void sharp_xds_checks_started(sharp_xds_t *x)
{
    if (!x) return;
    warm_t *w = x->warming;
    while (w) {
        warm_t *next = w->next; /* w may be done and freed */
        if (w->hc_pending) warm_hc(w);
        w = next;
    }
}

/* Envoy's CDS: every cluster of the update is kept (the same resource),
 * added or modified; one the update no longer names is removed. A new
 * version of a cluster that needs warming (a DNS cluster's first
 * resolution, active health checks' first round) is not used until it is
 * warm: the version it replaces stays in use meanwhile. All or nothing: a
 * cluster that cannot be built rejects the update. */
static int cds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, char *err, size_t errlen)
{
    sharp_xds_t *x = ud;
    sharp_stats_shard_t *sh = shard0(x);
    /* the active set after the update; `fresh` entries are built by it,
     * the others moved from the current set */
    dyn_cluster_t *next = sharp_calloc(n ? n : 1, sizeof *next);
    bool *fresh = sharp_calloc(n ? n : 1, sizeof *fresh);
    int *from = sharp_calloc(n ? n : 1, sizeof *from); /* resource index of a fresh entry */
    uint32_t nnext = 0;
    bool *moved = sharp_calloc(x->nclusters ? x->nclusters : 1, sizeof *moved);
    warm_t **neww = sharp_calloc(n ? n : 1, sizeof *neww);
    int *wfrom = sharp_calloc(n ? n : 1, sizeof *wfrom);
    uint32_t nneww = 0;
    uint32_t nold_warm = 0;
    for (warm_t *w = x->warming; w; w = w->next) nold_warm++;
    warm_t **keepw = sharp_calloc(nold_warm ? nold_warm : 1, sizeof *keepw);
    uint32_t nkeepw = 0;
    uint32_t added = 0, modified = 0, kept = 0;
    uint64_t now = sharp_wall_us();
    /* the names, read before the resources are taken */
    const char **names = sharp_calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) names[i] = ((const cluster_pb_t *)res[i])->name;
    for (size_t i = 0; i < n; i++) {
        const cluster_pb_t *pb = (const cluster_pb_t *)res[i];
        char where[64];
        snprintf(where, sizeof where, "resources[%zu]", i);
        if (!pb->name[0]) {
            snprintf(err, errlen, "%s.name: a cluster needs a name", where);
            goto bad;
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(((const cluster_pb_t *)res[k])->name, pb->name)) {
                snprintf(err, errlen, "%s: duplicate cluster '%s' (resources[%zu] has it too)", where, pb->name, k);
                goto bad;
            }
        if (is_static(x, pb->name)) {
            snprintf(err, errlen, "%s: cluster '%s' is a static cluster, which CDS cannot update", where, pb->name);
            goto bad;
        }
        size_t len = protobuf_c_message_get_packed_size(res[i]);
        uint8_t *packed = sharp_realloc(NULL, len ? len : 1);
        protobuf_c_message_pack(res[i], packed);
        int32_t a = -1;
        for (uint32_t k = 0; k < x->nclusters; k++)
            if (!strcmp(x->clusters[k].c->name, pb->name)) a = (int32_t)k;
        warm_t *w = NULL;
        for (warm_t *c = x->warming; c && !w; c = c->next)
            if (!strcmp(c->d.c->name, pb->name)) w = c;
        bool same_warm = w && w->d.len == len && !memcmp(w->d.packed, packed, len);
        bool same_active = a >= 0 && x->clusters[a].len == len && !memcmp(x->clusters[a].packed, packed, len);
        if (same_warm || same_active) {
            /* unchanged: the same cluster object, hosts and pools (a
             * warming one keeps warming; an active one cancels the warming
             * of another version) */
            free(packed);
            if (same_warm) keepw[nkeepw++] = w;
            if (a >= 0) {
                next[nnext++] = x->clusters[a];
                moved[a] = true;
            }
            kept++;
            continue;
        }
        sharp_cluster_t *c = sharp_config_build_cluster(x->srv, &pb->base, x->next_cluster_index, x->cds->path,
                                                        where, err, errlen);
        if (!c) {
            free(packed);
            goto bad;
        }
        dyn_cluster_t d = {.c = c, .pb = res[i], .packed = packed, .len = len, .version = sharp_strdup(version),
                           .last_updated_us = now};
        if (x->loop && (c->dns || c->health_check)) {
            /* warms first; the version it replaces stays in use meanwhile */
            warm_t *nw = sharp_calloc(1, sizeof *nw);
            nw->x = x;
            nw->d = d;
            wfrom[nneww] = (int)i;
            neww[nneww++] = nw;
            if (a >= 0) {
                next[nnext++] = x->clusters[a];
                moved[a] = true;
            }
        } else {
            from[nnext] = (int)i;
            fresh[nnext] = true;
            next[nnext++] = d;
        }
        if (a >= 0 || w) modified++;
        else added++;
    }
    /* accepted: the resources of new versions are kept for /config_dump */
    for (uint32_t k = 0; k < nnext; k++)
        if (fresh[k]) res[from[k]] = NULL;
    for (uint32_t k = 0; k < nneww; k++) res[wfrom[k]] = NULL;
    /* warming versions the update replaced or removed stop */
    warm_t **wp = &x->warming;
    while (*wp) {
        warm_t *w = *wp;
        bool keep = false;
        for (uint32_t k = 0; k < nkeepw && !keep; k++) keep = keepw[k] == w;
        if (keep) {
            wp = &w->next;
            continue;
        }
        *wp = w->next;
        sharp_log_info("CDS: warming cluster '%s' %s", w->d.c->name, "replaced or removed before it warmed");
        warm_free(w);
    }
    /* active clusters that left or were replaced: their EDS subscription,
     * resolution and checks stop now, their memory goes once no request
     * uses them */
    uint32_t removed = 0;
    for (uint32_t k = 0; k < x->nclusters; k++) {
        if (moved[k]) continue;
        dyn_cluster_t *o = &x->clusters[k];
        bool gone = true;
        for (size_t i = 0; i < n && gone; i++) gone = strcmp(names[i], o->c->name) != 0;
        removed += gone;
        sharp_log_info("CDS: cluster '%s' %s", o->c->name, gone ? "removed" : "modified");
        cluster_leaves(x, o);
    }
    free(x->clusters);
    for (uint32_t k = 0; k < nnext; k++) {
        if (!fresh[k]) continue;
        next[k].c->pb = next[k].pb;
        next[k].c->version_info = sharp_strdup(next[k].version);
        next[k].c->last_updated_us = next[k].last_updated_us;
        x->next_cluster_index++;
        if (x->loop) sharp_outlier_start(next[k].c, x->loop);
    }
    x->clusters = next;
    x->nclusters = nnext;
    for (uint32_t k = 0; k < nneww; k++) {
        warm_t *w = neww[k];
        w->d.c->pb = w->d.pb;
        w->d.c->version_info = sharp_strdup(w->d.version);
        w->d.c->last_updated_us = w->d.last_updated_us;
        x->next_cluster_index++;
        sharp_outlier_start(w->d.c, x->loop);
        w->next = x->warming;
        x->warming = w;
        sharp_log_info("CDS: cluster '%s' warming (its first %s)", w->d.c->name,
                       w->d.c->dns ? "DNS resolution" : "round of health checks");
    }
    sharp_counter_add(sh, x->st.cluster_added, added);
    sharp_counter_add(sh, x->st.cluster_modified, modified);
    sharp_counter_add(sh, x->st.cluster_removed, removed);
    sharp_log_info("CDS version '%s': %u clusters (%u added, %u modified, %u removed, %u unchanged, %u warming)",
                   version, x->nclusters, added, modified, removed, kept, nneww);
    free(fresh);
    free(from);
    free(moved);
    free(wfrom);
    free(keepw);
    free(names);
    warming_gauge(x);
    if (x->srv->snap) sharp_xds_publish(x);
    /* now that the update is in place: warming may end at once */
    for (uint32_t k = 0; k < nneww; k++) warm_begin(neww[k]);
    free(neww);
    return 0;
bad:
    for (uint32_t k = 0; k < nnext; k++) {
        if (!fresh[k]) continue;
        sharp_xds_eds_free(next[k].c->eds);
        next[k].c->eds = NULL;
        sharp_cluster_unref(next[k].c);
        free(next[k].packed);
        free(next[k].version);
    }
    for (uint32_t k = 0; k < nneww; k++) {
        neww[k]->d.pb = NULL; /* still the resource's */
        warm_free(neww[k]);
    }
    free(next);
    free(fresh);
    free(from);
    free(moved);
    free(neww);
    free(wfrom);
    free(keepw);
    free(names);
    return -1;
}

int sharp_xds_cds_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *field, char *err,
                            size_t errlen)
{
    const char *path, *wdir;
    if (sharp_xds_config_source_path(config_source, field, &path, &wdir, err, errlen) < 0) return -1;
    sharp_stats_t *s = x->srv->stats;
    x->st.cluster_added = sharp_stats_counter(s, "cluster_manager.cluster_added");
    x->st.cluster_modified = sharp_stats_counter(s, "cluster_manager.cluster_modified");
    x->st.cluster_removed = sharp_stats_counter(s, "cluster_manager.cluster_removed");
    x->st.warming_clusters = sharp_stats_gauge(s, "cluster_manager.warming_clusters");
    sharp_xds_watcher_t w = {cds_update, x};
    x->cds = sub_new(x, &envoy__config__cluster__v3__cluster__descriptor, path, wdir, "cluster_manager.cds", field, w,
                     err, errlen);
    if (!x->cds) return -1;
    char why[1024];
    if (sub_read(x->cds, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: clusters from %s: %s", field, path, why);
        return -1;
    }
    return 0;
}

/* ---- LDS ---- */

int sharp_xds_lds_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *field, char *err,
                            size_t errlen)
{
    const char *path, *wdir;
    if (sharp_xds_config_source_path(config_source, field, &path, &wdir, err, errlen) < 0) return -1;
    x->lds = sharp_lds_new(x->srv, path);
    sharp_xds_watcher_t w = {sharp_lds_update, x->lds};
    x->lds_sub = sub_new(x, &envoy__config__listener__v3__listener__descriptor, path, wdir, "listener_manager.lds",
                         field, w, err, errlen);
    if (!x->lds_sub) return -1;
    char why[4096];
    if (sub_read(x->lds_sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: listeners from %s: %s", field, path, why);
        return -1;
    }
    return 0;
}

const struct sharp_lds *sharp_xds_lds(const sharp_xds_t *x)
{
    return x ? x->lds : NULL;
}

/* ---- the admin ---- */

size_t sharp_xds_dynamic_clusters(const sharp_xds_t *x, sharp_xds_dump_entry_t **out)
{
    *out = NULL;
    if (!x || !x->nclusters) return 0;
    *out = sharp_calloc(x->nclusters, sizeof **out);
    for (uint32_t i = 0; i < x->nclusters; i++)
        (*out)[i] = (sharp_xds_dump_entry_t){x->clusters[i].version, x->clusters[i].pb,
                                             x->clusters[i].last_updated_us};
    return x->nclusters;
}

size_t sharp_xds_warming_clusters(const sharp_xds_t *x, sharp_xds_dump_entry_t **out)
{
    *out = NULL;
    size_t n = 0;
    for (const warm_t *w = x ? x->warming : NULL; w; w = w->next) n++;
    if (!n) return 0;
    *out = sharp_calloc(n, sizeof **out);
    n = 0;
    for (const warm_t *w = x->warming; w; w = w->next)
        (*out)[n++] = (sharp_xds_dump_entry_t){w->d.version, w->d.pb, w->d.last_updated_us};
    return n;
}

size_t sharp_xds_dynamic_routes(const sharp_xds_t *x, sharp_xds_dump_entry_t **out)
{
    *out = NULL;
    size_t n = 0;
    if (!x || !x->nrds) return 0;
    *out = sharp_calloc(x->nrds, sizeof **out);
    for (uint32_t i = 0; i < x->nrds; i++)
        if (x->rds[i]->cur)
            (*out)[n++] = (sharp_xds_dump_entry_t){x->rds[i]->cur->version_info, x->rds[i]->cur->pb,
                                                   x->rds[i]->cur->last_updated_us};
    return n;
}

const char *sharp_xds_cds_version(const sharp_xds_t *x)
{
    return x && x->cds && x->cds->version ? x->cds->version : "";
}

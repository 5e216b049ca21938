/* lrs.c: the load reporting service client (lrs.h). */
#include "lrs.h"
#include "api_source.h"
#include "grpc/client.h"
#include "log.h"
#include "runtime.h"
#include "server.h"
#include "upstream/cluster.h"
#include "upstream/host.h"
#include "upstream/zone_lb.h"
#include "xds/xds.h"

#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/service/load_stats/v3/lrs.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/un.h>

#define LRS_PATH "/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats"
#define LRS_RETRY_DELAY_MS 5000 /* Envoy's RETRY_DELAY_MS */
#define LRS_FEATURE "envoy.lrs.supports_send_all_clusters"
#define LRS_FIELD "cluster_manager.load_stats_config"

/* A cluster the reports cover: its name and when its current interval
 * began (Envoy's clusters_ map). */
typedef struct {
    char *name;
    uint64_t start_us;
} tracked_t;

struct sharp_lrs {
    sharp_server_t *srv;
    sharp_grpc_target_t target; /* the management server's cluster */
    sharp_grpc_client_t *client;
    sharp_grpc_stream_t *stream;
    uv_timer_t retry_timer, response_timer;
    bool started, stopped;
    /* the node with Envoy's LRS client feature added (a shallow copy of
     * sharp_xds_node's, made at start) */
    Envoy__Config__Core__V3__Node node;
    char **features;
    /* the last LoadStatsResponse (Envoy's message_) */
    bool has_response;
    char **resp_clusters;
    size_t nresp_clusters;
    bool send_all, endpoint_granularity;
    uint64_t interval_ms;
    tracked_t *tracked;
    size_t ntracked;
    struct {
        sharp_stat_id_t requests, responses, errors, retries;
    } st;
};

static uint64_t now_us(void)
{
    return sharp_now_ns() / 1000;
}

static void count(sharp_lrs_t *l, sharp_stat_id_t id)
{
    sharp_counter_inc(sharp_stats_shard(l->srv->stats, 0), id);
}

/* ---- configuration: Envoy's checkTransportVersion, checkApiConfigSourceNames,
 * factoryForGrpcApiConfigSource and checkApiConfigSourceSubscriptionBackingCluster ---- */

sharp_lrs_t *sharp_lrs_create(sharp_server_t *srv, const ProtobufCMessage *pb,
                              const sharp_snapshot_t *snap, char *err, size_t errlen)
{
    sharp_grpc_target_t target;
    if (sharp_grpc_api_source_target((const Envoy__Config__Core__V3__ApiConfigSource *)pb, LRS_FIELD, snap, &target, err,
                                     errlen) < 0)
        return NULL;
    sharp_lrs_t *l = sharp_calloc(1, sizeof *l);
    l->srv = srv;
    l->target = target;
    sharp_stats_t *s = srv->stats;
    l->st.requests = sharp_stats_counter(s, "load_reporter.requests");
    l->st.responses = sharp_stats_counter(s, "load_reporter.responses");
    l->st.errors = sharp_stats_counter(s, "load_reporter.errors");
    l->st.retries = sharp_stats_counter(s, "load_reporter.retries");
    return l;
}

/* ---- tracking (Envoy's clusters_) ---- */

/* l->tracked is sorted by name, so that a response naming many clusters
 * (up to the 4 MiB a message may have) costs n log n, not n^2. */
static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_tracked(const void *a, const void *b)
{
    return strcmp(((const tracked_t *)a)->name, ((const tracked_t *)b)->name);
}

static tracked_t *find_tracked(sharp_lrs_t *l, const char *name)
{
    tracked_t key = {.name = (char *)name};
    return l->ntracked ? bsearch(&key, l->tracked, l->ntracked, sizeof key, cmp_tracked) : NULL;
}

static void free_tracked(tracked_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

static sharp_snapshot_t *current(sharp_lrs_t *l)
{
    return l->srv->snap;
}

/* The counts since the host's previous latch (Envoy's Counter::latch). */
static uint64_t latch(_Atomic uint64_t *v, uint64_t *last)
{
    uint64_t cur = atomic_load_explicit(v, memory_order_relaxed);
    uint64_t d = cur - *last;
    *last = cur;
    return d;
}

static void latch_cluster(sharp_cluster_t *c)
{
    for (uint32_t i = 0; i < c->nhosts; i++) {
        sharp_host_t *h = c->hosts[i];
        latch(&h->rq_success, &h->lrs_success);
        latch(&h->rq_error, &h->lrs_error);
        latch(&h->rq_total, &h->lrs_total);
    }
    latch(&c->rq_dropped, &c->lrs_dropped);
}

static void on_report(uv_timer_t *t);

/* Envoy's startLoadReportPeriod: the clusters of the last response (or
 * every cluster of the snapshot) are tracked from now on; those already
 * tracked keep their interval start and their counts, a newly tracked one
 * that exists starts from zero; then the report timer is set. */
static void start_period(sharp_lrs_t *l)
{
    uint64_t now = now_us();
    sharp_snapshot_t *snap = current(l);
    size_t n = l->send_all ? snap->nclusters : l->nresp_clusters;
    const char **names = sharp_calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = l->send_all ? snap->clusters[i]->name : l->resp_clusters[i];
    qsort(names, n, sizeof *names, cmp_name);
    tracked_t *t = sharp_calloc(n ? n : 1, sizeof *t);
    size_t nt = 0;
    for (size_t i = 0; i < n; i++) {
        if (nt && !strcmp(t[nt - 1].name, names[i])) continue; /* a name listed twice */
        tracked_t *old = find_tracked(l, names[i]);
        t[nt].name = sharp_strdup(names[i]);
        t[nt].start_us = old ? old->start_us : now;
        nt++;
        sharp_cluster_t *c = sharp_snapshot_cluster(snap, names[i]);
        if (c && !old) latch_cluster(c);
    }
    free(names);
    free_tracked(l->tracked, l->ntracked);
    l->tracked = t;
    l->ntracked = nt;
    /* from now: the loop's time was read before this turn's callbacks, and
     * a report due from then would measure a shorter interval than the
     * server asked for */
    uv_update_time(l->response_timer.loop);
    uv_timer_start(&l->response_timer, on_report, l->interval_ms, 0);
}

/* ---- a report (Envoy's sendLoadStatsRequest) ---- */

typedef struct {
    uint32_t priority, locality;
    uint64_t success, error, active, issued;
    size_t first, nendpoints; /* endpoint stats of the group, in ep[] */
} group_t;

typedef struct {
    sharp_host_t *h;
    uint64_t success, error, active, issued;
} endpoint_t;


/* Hosts by priority, then locality, then address (a stable order). */
static int cmp_host(const void *a, const void *b)
{
    const sharp_host_t *x = *(const sharp_host_t *const *)a, *y = *(const sharp_host_t *const *)b;
    if (x->priority != y->priority) return x->priority < y->priority ? -1 : 1;
    if (x->locality != y->locality) return sharp_locality_cmp(x->locality, y->locality);
    return strcmp(x->address, y->address);
}

static Envoy__Config__Endpoint__V3__ClusterStats *
cluster_stats(sharp_lrs_t *l, sharp_arena_t *a, sharp_cluster_t *c, tracked_t *t, uint64_t now)
{
    Envoy__Config__Endpoint__V3__ClusterStats *cs = sharp_arena_alloc(a, sizeof *cs);
    envoy__config__endpoint__v3__cluster_stats__init(cs);
    cs->cluster_name = c->name;
    /* Envoy's edsServiceName: eds_cluster_config.service_name, if given */
    cs->cluster_service_name = c->eds_service_name_set ? c->eds_service_name : (char *)"";
    /* the runtime guards of Envoy's locality rule (both on by default) */
    bool non_zero =
        sharp_runtime_get_bool("envoy.reloadable_features.report_load_for_non_zero_stats", true);
    bool active_non_zero = sharp_runtime_get_bool(
        "envoy.reloadable_features.report_load_when_rq_active_is_non_zero", true);
    /* the hosts grouped by priority and locality (sorted by both, so that
     * a large host set costs n log n), each group's endpoints next to each
     * other in ep[] */
    uint32_t nh = c->nhosts;
    sharp_host_t **hs = sharp_calloc(nh ? nh : 1, sizeof *hs);
    memcpy(hs, c->hosts, nh * sizeof *hs);
    qsort(hs, nh, sizeof *hs, cmp_host);
    group_t *g = sharp_calloc(nh ? nh : 1, sizeof *g);
    endpoint_t *ep = sharp_calloc(nh ? nh : 1, sizeof *ep);
    size_t ng = 0, ne = 0;
    for (uint32_t i = 0; i < nh; i++) {
        sharp_host_t *h = hs[i];
        if (!ng || g[ng - 1].priority != h->priority || g[ng - 1].locality != h->locality) {
            g[ng].priority = h->priority;
            g[ng].locality = h->locality;
            g[ng].first = ne;
            ng++;
        }
        group_t *k = &g[ng - 1];
        endpoint_t e = {.h = h};
        e.success = latch(&h->rq_success, &h->lrs_success);
        e.error = latch(&h->rq_error, &h->lrs_error);
        e.issued = latch(&h->rq_total, &h->lrs_total);
        int64_t act = atomic_load_explicit(&h->active_rq, memory_order_relaxed);
        e.active = act > 0 ? (uint64_t)act : 0;
        if (!(e.success | e.error | e.active | e.issued)) continue; /* no update: left out */
        k->success += e.success;
        k->error += e.error;
        k->active += e.active;
        k->issued += e.issued;
        ep[ne++] = e;
        k->nendpoints++;
    }
    free(hs);
    cs->upstream_locality_stats = sharp_arena_alloc(a, (ng ? ng : 1) * sizeof *cs->upstream_locality_stats);
    for (size_t k = 0; k < ng; k++) {
        bool send = g[k].issued != 0;
        if (non_zero)
            send = g[k].success || g[k].error || g[k].active || g[k].issued;
        else if (active_non_zero)
            send = g[k].issued || g[k].active;
        if (!send) continue;
        Envoy__Config__Endpoint__V3__UpstreamLocalityStats *ls = sharp_arena_alloc(a, sizeof *ls);
        envoy__config__endpoint__v3__upstream_locality_stats__init(ls);
        Envoy__Config__Core__V3__Locality *loc = sharp_arena_alloc(a, sizeof *loc);
        envoy__config__core__v3__locality__init(loc);
        const char *region, *zone, *sub_zone;
        sharp_locality_get(g[k].locality, &region, &zone, &sub_zone);
        loc->region = (char *)region;
        loc->zone = (char *)zone;
        loc->sub_zone = (char *)sub_zone;
        ls->locality = loc;
        ls->priority = g[k].priority;
        ls->total_successful_requests = g[k].success;
        ls->total_error_requests = g[k].error;
        ls->total_requests_in_progress = g[k].active;
        ls->total_issued_requests = g[k].issued;
        if (l->has_response && l->endpoint_granularity && g[k].nendpoints) {
            ls->upstream_endpoint_stats =
                sharp_arena_alloc(a, g[k].nendpoints * sizeof *ls->upstream_endpoint_stats);
            for (size_t j = 0; j < g[k].nendpoints; j++) {
                const endpoint_t *e = &ep[g[k].first + j];
                Envoy__Config__Endpoint__V3__UpstreamEndpointStats *es = sharp_arena_alloc(a, sizeof *es);
                envoy__config__endpoint__v3__upstream_endpoint_stats__init(es);
                es->address = sharp_pb_host_address(a, e->h);
                es->total_successful_requests = e->success;
                es->total_error_requests = e->error;
                es->total_requests_in_progress = e->active;
                es->total_issued_requests = e->issued;
                ls->upstream_endpoint_stats[ls->n_upstream_endpoint_stats++] = es;
            }
        }
        cs->upstream_locality_stats[cs->n_upstream_locality_stats++] = ls;
    }
    free(g);
    free(ep);
    cs->total_dropped_requests = latch(&c->rq_dropped, &c->lrs_dropped);
    Google__Protobuf__Duration *d = sharp_arena_alloc(a, sizeof *d);
    google__protobuf__duration__init(d);
    uint64_t us = now - t->start_us;
    d->seconds = (int64_t)(us / 1000000);
    d->nanos = (int32_t)(us % 1000000) * 1000;
    cs->load_report_interval = d;
    t->start_us = now;
    return cs;
}

static void send_report(sharp_lrs_t *l)
{
    sharp_arena_t a = {0};
    Envoy__Service__LoadStats__V3__LoadStatsRequest req =
        ENVOY__SERVICE__LOAD_STATS__V3__LOAD_STATS_REQUEST__INIT;
    req.node = &l->node;
    req.cluster_stats = sharp_arena_alloc(&a, (l->ntracked ? l->ntracked : 1) * sizeof *req.cluster_stats);
    uint64_t now = now_us();
    for (size_t i = 0; i < l->ntracked; i++) {
        sharp_cluster_t *c = sharp_snapshot_cluster(current(l), l->tracked[i].name);
        if (!c) {
            sharp_debug(upstream, "load reporter: cluster %s does not exist", l->tracked[i].name);
            continue;
        }
        req.cluster_stats[req.n_cluster_stats++] = cluster_stats(l, &a, c, &l->tracked[i], now);
    }
    sharp_debug(upstream, "load reporter: sending a report of %zu clusters", req.n_cluster_stats);
    if (sharp_grpc_stream_send(l->stream, &req.base) == SHARP_GRPC_SEND_REFUSED)
        sharp_debug(
            upstream,
            "load reporter: the stream to cluster '%s' cannot take the report (%zu bytes queued)",
            l->target.cluster, sharp_grpc_stream_queued(l->stream));
    sharp_arena_free(&a);
    count(l, l->st.responses);
    /* on a new stream before any response, no period starts */
    if (l->has_response) start_period(l);
}

static void on_report(uv_timer_t *t)
{
    sharp_lrs_t *l = t->data;
    if (l->stream) send_report(l);
}

/* ---- the stream ---- */

static void on_message(void *arg, const ProtobufCMessage *m)
{
    sharp_lrs_t *l = arg;
    const Envoy__Service__LoadStats__V3__LoadStatsResponse *r = (const void *)m;
    /* Envoy's DurationUtil::durationToMilliseconds throws for a negative
     * interval or one past what int64 nanoseconds hold (9223372036 s, about
     * 292 years), or nanos past 999999999: such a response is refused
     * (its epoch not started, the previous one kept) */
    const Google__Protobuf__Duration *d = r->load_reporting_interval;
    if (d && (d->seconds < 0 || d->nanos < 0 || d->nanos > 999999999 ||
              d->seconds > INT64_MAX / 1000000000)) {
        sharp_log_warn("load reporter: LoadStatsResponse refused: load_reporting_interval "
                       "%lld s %d ns is out of range",
                       (long long)d->seconds, (int)d->nanos);
        return;
    }
    for (size_t i = 0; i < l->nresp_clusters; i++)
        free(l->resp_clusters[i]);
    free(l->resp_clusters);
    l->resp_clusters = sharp_calloc(r->n_clusters ? r->n_clusters : 1, sizeof *l->resp_clusters);
    for (size_t i = 0; i < r->n_clusters; i++)
        l->resp_clusters[i] = sharp_strdup(r->clusters[i]);
    l->nresp_clusters = r->n_clusters;
    l->send_all = r->send_all_clusters;
    l->endpoint_granularity = r->report_endpoint_granularity;
    /* DurationUtil::durationToMilliseconds, in range (checked above) */
    l->interval_ms = d ? (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000 : 0;
    l->has_response = true;
    sharp_debug(upstream, "load reporter: new load report epoch: %zu clusters%s, every %llu ms",
                l->nresp_clusters, l->send_all ? " (all)" : "", (unsigned long long)l->interval_ms);
    start_period(l);
    count(l, l->st.requests);
}

static void on_retry(uv_timer_t *t);

static void handle_failure(sharp_lrs_t *l)
{
    count(l, l->st.errors);
    sharp_log_info("load reporter stats stream/connection will retry in %d ms.",
                   LRS_RETRY_DELAY_MS);
    uv_timer_start(&l->retry_timer, on_retry, LRS_RETRY_DELAY_MS, 0);
}

static void on_close(void *arg, int status, const char *message, const sharp_headers_t *trailers)
{
    (void)trailers;
    sharp_lrs_t *l = arg;
    l->stream = NULL;
    uv_timer_stop(&l->response_timer);
    if (status != 0) {
        sharp_log_warn("%s gRPC config stream closed: %d, %s", &LRS_PATH[1], status, message);
        handle_failure(l);
    } else {
        sharp_debug(upstream, "%s gRPC config stream closed gracefully, %s", &LRS_PATH[1], message);
        sharp_log_info("load reporter stats stream/connection will retry in %d ms.",
                       LRS_RETRY_DELAY_MS);
        uv_timer_start(&l->retry_timer, on_retry, LRS_RETRY_DELAY_MS, 0);
    }
}

static const sharp_grpc_stream_callbacks_t lrs_callbacks = {
    .on_message = on_message,
    .on_close = on_close,
};

static void establish(sharp_lrs_t *l)
{
    sharp_debug(upstream, "load reporter: establishing a new gRPC bidi stream for %s",
                &LRS_PATH[1]);
    l->stream = sharp_grpc_stream_start(
        l->client, LRS_PATH, &envoy__service__load_stats__v3__load_stats_response__descriptor, 0,
        NULL, &lrs_callbacks, l);
    if (!l->stream) {
        sharp_log_warn("load reporter: unable to establish new stream");
        handle_failure(l);
        return;
    }
    send_report(l);
}

static void on_retry(uv_timer_t *t)
{
    sharp_lrs_t *l = t->data;
    if (l->stopped) return;
    count(l, l->st.retries);
    establish(l);
}

void sharp_lrs_start(sharp_lrs_t *l)
{
    if (!l || l->started || l->stopped) return;
    sharp_server_t *s = l->srv;
    l->started = true;
    uv_timer_init(s->loop, &l->retry_timer);
    uv_timer_init(s->loop, &l->response_timer);
    l->retry_timer.data = l->response_timer.data = l;
    /* the node of every request, with Envoy's client feature */
    const Envoy__Config__Core__V3__Node *n = (const void *)sharp_xds_node(s->xds);
    if (n)
        l->node = *n;
    else
        envoy__config__core__v3__node__init(&l->node);
    l->features = sharp_calloc(l->node.n_client_features + 1, sizeof *l->features);
    for (size_t i = 0; i < l->node.n_client_features; i++)
        l->features[i] = l->node.client_features[i];
    l->features[l->node.n_client_features] = (char *)LRS_FEATURE;
    l->node.client_features = l->features;
    l->node.n_client_features++;
    char err[512];
    l->client = sharp_grpc_target_client(&l->target, s, err, sizeof err);
    if (!l->client) {
        /* checked at load */
        sharp_log_error("load reporter: %s", err);
        return;
    }
    establish(l);
}

void sharp_lrs_stop(sharp_lrs_t *l)
{
    if (!l || l->stopped) return;
    l->stopped = true;
    if (l->stream) sharp_grpc_stream_cancel(l->stream);
    l->stream = NULL;
    sharp_grpc_client_destroy(l->client);
    l->client = NULL;
    if (l->started) {
        uv_close((uv_handle_t *)&l->retry_timer, NULL);
        uv_close((uv_handle_t *)&l->response_timer, NULL);
    }
}

void sharp_lrs_free(sharp_lrs_t *l)
{
    if (!l) return;
    sharp_lrs_stop(l);
    for (size_t i = 0; i < l->nresp_clusters; i++)
        free(l->resp_clusters[i]);
    free(l->resp_clusters);
    free_tracked(l->tracked, l->ntracked);
    free(l->features);
    sharp_grpc_target_free(&l->target);
    free(l);
}

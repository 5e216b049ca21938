/* filter.c: envoy.filters.http.health_check, the endpoint a load balancer in
 * front of SHARP probes.
 *
 * A request whose headers all match `headers` is a health check. Without
 * pass_through_mode the filter answers it itself: 200, or 503 with the
 * FailedLocalHealthCheck flag (LH) while the server fails health checks
 * (admin POST /healthcheck/fail, or SHARP's SIGTERM drain), or while a
 * cluster of cluster_min_healthy_percentages has too few healthy hosts.
 * With pass_through_mode the check goes on to the upstream unless the
 * server is failing, in which case the filter answers 503 the same way.
 * Answers to health checks carry x-envoy-upstream-healthchecked-cluster
 * (the node's cluster); every other response carries
 * x-envoy-immediate-health-check-fail: true while the server is failing, so
 * an Envoy downstream of SHARP drops this host at once. As in Envoy the
 * answer waits for the end of the request. */
#include "filters/health_check/filter.h"
#include "config/route_config.h"
#include "server.h"
#include "worker.h"

#include "envoy/extensions/filters/http/health_check/v3/health_check.pb-c.h"

#include <stdio.h>

typedef Envoy__Extensions__Filters__Http__HealthCheck__V3__HealthCheck hc_pb_t;
typedef Envoy__Extensions__Filters__Http__HealthCheck__V3__HealthCheck__ClusterMinHealthyPercentagesEntry
    min_pb_t;

typedef struct {
    char *cluster;
    uint64_t percent; /* Envoy truncates the configured percentage to an integer */
} min_healthy_t;

typedef struct hcf_config {
    const sharp_server_t *server;
    bool pass_through;
    sharp_header_matcher_t *headers;
    uint32_t nheaders;
    min_healthy_t *min_healthy;
    uint32_t nmin_healthy;
} hcf_config_t;

typedef struct hcf_state {
    bool health_check; /* the request matched */
    bool handling;     /* the filter answers it */
} hcf_state_t;

static void destroy_config(void *p)
{
    hcf_config_t *c = p;
    for (uint32_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].name);
        sharp_string_matcher_free(&c->headers[i].sm);
    }
    free(c->headers);
    for (uint32_t i = 0; i < c->nmin_healthy; i++)
        free(c->min_healthy[i].cluster);
    free(c->min_healthy);
    free(c);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    const hc_pb_t *pb = (const hc_pb_t *)msg;
    if (!pb || !pb->pass_through_mode) {
        snprintf(err, errlen, "pass_through_mode: is required");
        return NULL;
    }
    bool pass_through = pb->pass_through_mode->value;
    if (pb->cache_time && (pb->cache_time->seconds || pb->cache_time->nanos)) {
        if (!pass_through)
            snprintf(err, errlen,
                     "cache_time_ms must not be set when path_through_mode is disabled");
        else
            snprintf(err, errlen, "cache_time: not supported yet");
        return NULL;
    }
    hcf_config_t *c = sharp_calloc(1, sizeof *c);
    c->server = ctx->server;
    c->pass_through = pass_through;
    c->headers = sharp_calloc(pb->n_headers ? pb->n_headers : 1, sizeof *c->headers);
    for (size_t i = 0; i < pb->n_headers; i++) {
        char path[64];
        snprintf(path, sizeof path, "headers[%zu]", i);
        c->nheaders++;
        if (sharp_config_header_matcher(pb->headers[i], path, &c->headers[i], err, errlen) < 0)
            goto bad;
    }
    /* Envoy reads the percentages only without pass-through */
    size_t n = pass_through ? 0 : pb->n_cluster_min_healthy_percentages;
    c->min_healthy = sharp_calloc(n ? n : 1, sizeof *c->min_healthy);
    for (size_t i = 0; i < n; i++) {
        const min_pb_t *e = pb->cluster_min_healthy_percentages[i];
        double v = e->value ? e->value->value : 0.0;
        if (!(v >= 0.0 && v <= 100.0)) {
            snprintf(err, errlen, "cluster_min_healthy_percentages.%s: must be in [0, 100]",
                     e->key);
            goto bad;
        }
        c->min_healthy[c->nmin_healthy].cluster = sharp_strdup(e->key);
        c->min_healthy[c->nmin_healthy++].percent = (uint64_t)v;
    }
    return c;
bad:
    destroy_config(c);
    return NULL;
}

/* The server's health check state. Workers read the main thread's flags
 * with relaxed atomic loads: a change shows up within a request or two,
 * which is all a health check endpoint needs. Draining (SHARP's SIGTERM
 * drain) fails health checks too, so balancers stop sending new work. */
static bool server_failed(const sharp_server_t *srv)
{
    return __atomic_load_n(&srv->healthcheck_failed, __ATOMIC_RELAXED) ||
           __atomic_load_n(&srv->state, __ATOMIC_RELAXED) == SHARP_SERVER_DRAINING;
}

static bool is_health_check(const hcf_config_t *c, const sharp_headers_t *h)
{
    for (uint32_t i = 0; i < c->nheaders; i++)
        if (!sharp_header_matcher_match(&c->headers[i], h)) return false;
    return true;
}

/* cluster_min_healthy_percentages against the worker's snapshot: 200 with
 * details health_check_ok_cluster_healthy, or 503 and why. */
static uint32_t clusters_status(sharp_filter_t *f, const hcf_config_t *c, const char **details)
{
    const sharp_worker_view_t *view = sharp_stream_worker(f->stream)->view;
    for (uint32_t i = 0; i < c->nmin_healthy; i++) {
        *details = "health_check_ok_cluster_healthy";
        sharp_cluster_local_t *local = NULL;
        const sharp_cluster_t *cl = view ? sharp_view_cluster(view, c->min_healthy[i].cluster, &local) : NULL;
        if (!cl) {
            *details = "health_check_failed_no_cluster_found";
            return 503;
        }
        /* the worker's host set of the cluster (a DNS cluster's changes) */
        const sharp_hostset_t *set = local->set;
        uint64_t total = set->nhosts, healthy = 0;
        if (total == 0) {
            if (c->min_healthy[i].percent == 0) continue;
            *details = "health_check_failed_cluster_empty";
            return 503;
        }
        for (uint32_t k = 0; k < set->nhosts; k++)
            healthy += sharp_host_healthy(set->hosts[k]);
        if (100 * healthy < total * c->min_healthy[i].percent) {
            *details = "health_check_failed_cluster_unhealthy";
            return 503;
        }
    }
    return 200;
}

/* The filter's own answer, once the request is complete. */
static void reply(sharp_filter_t *f)
{
    const hcf_config_t *c = f->config;
    uint32_t status = 200, flag = 0;
    const char *details = "health_check_ok";
    if (server_failed(c->server)) {
        status = 503;
        details = "health_check_failed";
    } else if (c->nmin_healthy) {
        status = clusters_status(f, c, &details);
    }
    if (status != 200) flag = SHARP_RF_FAILED_LOCAL_HEALTHCHECK;
    const char *const headers[] = {"x-envoy-upstream-healthchecked-cluster",
                                   c->server->node_cluster, NULL};
    sharp_stream_send_local_reply_ex(f, status, NULL, flag, details, headers);
}

static sharp_filter_status_t hcf_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                bool end_stream)
{
    const hcf_config_t *c = f->config;
    hcf_state_t *st = f->state;
    if (is_health_check(c, h)) {
        st->health_check = true;
        /* what the access log's not_health_check_filter reads */
        sharp_stream_info(f->stream)->health_check = true;
        st->handling = !c->pass_through || server_failed(c->server);
    }
    if (!st->handling) return SHARP_FILTER_CONTINUE;
    if (end_stream) reply(f);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t hcf_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                             bool end_stream)
{
    hcf_state_t *st = f->state;
    if (!st->handling) return SHARP_FILTER_CONTINUE;
    if (end_stream) reply(f);
    /* the body of a request it answers goes nowhere (Envoy's
     * StopIterationNoBuffer): nothing is held, whatever its size */
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t hcf_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    hcf_state_t *st = f->state;
    if (!st->handling) return SHARP_FILTER_CONTINUE;
    reply(f);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t hcf_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                bool end_stream)
{
    const hcf_config_t *c = f->config;
    hcf_state_t *st = f->state;
    if (st->health_check)
        sharp_headers_set_cstr(h, "x-envoy-upstream-healthchecked-cluster",
                               c->server->node_cluster);
    else if (server_failed(c->server))
        sharp_headers_set_cstr(h, "x-envoy-immediate-health-check-fail", "true");
    return SHARP_FILTER_CONTINUE;
}

const sharp_filter_factory_t sharp_health_check_filter = {
    .name = "envoy.filters.http.health_check",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
    .config_desc = &envoy__extensions__filters__http__health_check__v3__health_check__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(hcf_state_t),
    .decode_headers = hcf_decode_headers,
    .decode_data = hcf_decode_data,
    .decode_trailers = hcf_decode_trailers,
    .encode_headers = hcf_encode_headers,
};

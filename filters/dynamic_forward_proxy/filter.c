/* filter.c: envoy.filters.http.dynamic_forward_proxy, Envoy's ProxyFilter.
 *
 * For a request whose route goes to an envoy.clusters.dynamic_forward_proxy
 * cluster, the filter applies the route's PerRouteConfig (host_rewrite_literal
 * or the first value of host_rewrite_header becomes the :authority), then
 * asks the DNS cache (upstream/dfp.h) for the host, ":port" added when the
 * authority has none (443 when the cluster's transport socket is TLS, else
 * 80). A host whose first resolution is complete goes on at once (to the
 * cluster, which connects to the cache's address); a new one pauses the
 * request until the main thread's resolution settles it, holding one slot of
 * the cache's dns_cache_circuit_breaker meanwhile. Local replies, as Envoy's:
 * 503 "DNS cache overflow" (dns_cache_overflow) past max_hosts, 503 "Dynamic
 * forward proxy pending request overflow"
 * (dynamic_forward_proxy_pending_request_overflow) past max_pending_requests,
 * 503 "DNS resolution failure" with response flag DF and details
 * dns_resolution_failure{<the cache's details>} for a host without address,
 * 400 "Empty host header" (empty_host_header). Other routes pass. */
#include "filters/dynamic_forward_proxy/filter.h"
#include "config/bootstrap.h"
#include "http/route.h"
#include "http/stream.h"
#include "log.h"
#include "upstream/cluster.h"
#include "upstream/dfp.h"
#include "upstream/original_dst.h"
#include "worker.h"

#include "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.pb-c.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__DynamicForwardProxy__V3__FilterConfig dfp_pb_t;
typedef Envoy__Extensions__Filters__Http__DynamicForwardProxy__V3__PerRouteConfig dfp_route_pb_t;

typedef struct dfp_config {
    sharp_dfp_cache_t *cache;
} dfp_config_t;

typedef struct dfp_route_config {
    char *host_rewrite;        /* host_rewrite_literal, NULL: none */
    char *host_rewrite_header; /* lower case, NULL: none */
} dfp_route_config_t;

typedef struct dfp_state {
    sharp_dfp_waiter_t wait; /* first: the waiter's done finds the state */
    sharp_filter_t *f;
    bool breaker; /* holds a slot of the cache's circuit breaker */
    bool waiting;
} dfp_state_t;

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    const dfp_pb_t *pb = (const dfp_pb_t *)msg;
    if (!pb) {
        snprintf(err, errlen, "dns_cache_config: value is required");
        return NULL;
    }
    if (pb->implementation_specifier_case ==
        ENVOY__EXTENSIONS__FILTERS__HTTP__DYNAMIC_FORWARD_PROXY__V3__FILTER_CONFIG__IMPLEMENTATION_SPECIFIER_SUB_CLUSTER_CONFIG) {
        snprintf(
            err, errlen,
            "sub_cluster_config: sub clusters are not supported by SHARP (use dns_cache_config)");
        return NULL;
    }
    if (pb->save_upstream_address) {
        snprintf(err, errlen,
                 "save_upstream_address: the envoy.stream.upstream_address filter state is not "
                 "supported by SHARP");
        return NULL;
    }
    if (!pb->dns_cache_config) {
        snprintf(err, errlen, "dns_cache_config: value is required");
        return NULL;
    }
    sharp_dfp_cache_t *cache =
        sharp_config_dns_cache(&pb->dns_cache_config->base, ctx ? ctx->server : NULL, err, errlen);
    if (!cache) return NULL;
    dfp_config_t *c = sharp_calloc(1, sizeof *c);
    c->cache = cache;
    return c;
}

static void destroy_config(void *config)
{
    free(config); /* the cache is the registry's */
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    const dfp_route_pb_t *pb = (const dfp_route_pb_t *)msg;
    dfp_route_config_t *rc = sharp_calloc(1, sizeof *rc);
    if (pb &&
        pb->host_rewrite_specifier_case ==
            ENVOY__EXTENSIONS__FILTERS__HTTP__DYNAMIC_FORWARD_PROXY__V3__PER_ROUTE_CONFIG__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL &&
        pb->host_rewrite_literal[0])
        rc->host_rewrite = sharp_strdup(pb->host_rewrite_literal);
    if (pb &&
        pb->host_rewrite_specifier_case ==
            ENVOY__EXTENSIONS__FILTERS__HTTP__DYNAMIC_FORWARD_PROXY__V3__PER_ROUTE_CONFIG__HOST_REWRITE_SPECIFIER_HOST_REWRITE_HEADER &&
        pb->host_rewrite_header[0]) {
        rc->host_rewrite_header = sharp_strdup(pb->host_rewrite_header);
        for (char *p = rc->host_rewrite_header; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    return rc;
}

static void destroy_route_config(void *config)
{
    dfp_route_config_t *rc = config;
    if (!rc) return;
    free(rc->host_rewrite);
    free(rc->host_rewrite_header);
    free(rc);
}

static uint64_t now_ms(void)
{
    return sharp_now_ns() / 1000000;
}

static void release_breaker(dfp_state_t *st, const dfp_config_t *c)
{
    if (!st->breaker) return;
    st->breaker = false;
    sharp_dfp_breaker_release(c->cache);
}

static void resolution_failed(sharp_filter_t *f, const char *details)
{
    char d[160];
    snprintf(d, sizeof d, "dns_resolution_failure{%s}",
             details && details[0] ? details : "no_host");
    for (char *p = d; *p; p++)
        if (*p == ' ' || *p == '\t') *p = '_';
    sharp_stream_send_local_reply(f, 503, "DNS resolution failure", SHARP_RF_DNS_RESOLUTION_FAILURE,
                                  d);
}

/* The host's state in the cache: continue, stop to wait, or a local reply. */
static sharp_filter_status_t load(sharp_filter_t *f, bool resumed);

static void on_settled(sharp_dfp_waiter_t *w)
{
    dfp_state_t *st = (dfp_state_t *)w;
    sharp_filter_t *f = st->f;
    st->waiting = false;
    if (load(f, true) == SHARP_FILTER_CONTINUE) sharp_stream_continue_decoding(f);
}

static sharp_filter_status_t load(sharp_filter_t *f, bool resumed)
{
    dfp_state_t *st = f->state;
    const dfp_config_t *c = f->config;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    sharp_dfp_result_t r;
    switch (sharp_dfp_load(c->cache, w->stats, st->wait.key, now_ms(), &r)) {
    case SHARP_DFP_IN_CACHE:
        release_breaker(st, c);
        if (!r.has_addr) {
            resolution_failed(f, r.details);
            return SHARP_FILTER_STOP;
        }
        return SHARP_FILTER_CONTINUE;
    case SHARP_DFP_LOADING:
        sharp_debug(http, "waiting to load DNS cache entry %s", st->wait.key);
        st->waiting = true;
        sharp_dfp_wait(w, &st->wait);
        return SHARP_FILTER_STOP;
    case SHARP_DFP_OVERFLOW:
        release_breaker(st, c);
        (void)resumed;
        sharp_stream_send_local_reply(f, 503, "DNS cache overflow", 0, "dns_cache_overflow");
        return SHARP_FILTER_STOP;
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    (void)end_stream;
    dfp_state_t *st = f->state;
    const dfp_config_t *c = f->config;
    sharp_stream_t *s = f->stream;
    st->f = f;
    const sharp_route_t *route = sharp_stream_route(s);
    const char *cname = sharp_stream_route_cluster(s);
    if (!route || !cname) return SHARP_FILTER_CONTINUE;
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *cluster = sharp_view_cluster(s->view, cname, &cl);
    /* only a dynamic forward proxy cluster's hosts are looked up */
    if (!cluster || !cluster->odst || !cluster->odst->dfp) return SHARP_FILTER_CONTINUE;
    const dfp_route_config_t *rc = sharp_stream_route_config(f);
    if (rc && rc->host_rewrite) sharp_headers_set_cstr(h, ":authority", rc->host_rewrite);
    if (rc && rc->host_rewrite_header) {
        /* an untrusted header: its first value only */
        sharp_str_t v;
        if (sharp_headers_get_cstr(h, rc->host_rewrite_header, &v)) {
            char *copy = sharp_calloc(1, v.len + 1);
            memcpy(copy, v.p, v.len);
            sharp_headers_set_cstr(h, ":authority", copy);
            free(copy);
        }
    }
    sharp_worker_t *w = sharp_stream_worker(s);
    if (!sharp_dfp_breaker_acquire(c->cache, w->stats)) {
        sharp_debug(http, "pending request overflow");
        sharp_stream_send_local_reply(f, 503, "Dynamic forward proxy pending request overflow", 0,
                                      "dynamic_forward_proxy_pending_request_overflow");
        return SHARP_FILTER_STOP;
    }
    st->breaker = true;
    sharp_str_t auth = {0};
    sharp_headers_get_cstr(h, ":authority", &auth);
    if (!auth.len) {
        release_breaker(st, c);
        sharp_stream_send_local_reply(f, 400, "Empty host header", 0, "empty_host_header");
        return SHARP_FILTER_STOP;
    }
    if (!sharp_dfp_normalize(auth.p, auth.len, cluster->odst->dfp_default_port, st->wait.key,
                             sizeof st->wait.key)) {
        /* longer than any DNS name */
        release_breaker(st, c);
        resolution_failed(f, "host_too_long");
        return SHARP_FILTER_STOP;
    }
    /* the filter's cache, as Envoy's: the cluster finds the host only when
     * both name the same cache */
    st->wait.cache = c->cache;
    st->wait.done = on_settled;
    return load(f, false);
}

static void on_destroy(sharp_filter_t *f)
{
    dfp_state_t *st = f->state;
    if (st->waiting) sharp_dfp_wait_cancel(&st->wait);
    st->waiting = false;
    release_breaker(st, f->config);
}

const sharp_filter_factory_t sharp_dynamic_forward_proxy_filter = {
    .name = "envoy.filters.http.dynamic_forward_proxy",
    .type_url =
        "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
    .config_desc =
        &envoy__extensions__filters__http__dynamic_forward_proxy__v3__filter_config__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(dfp_state_t),
    .decode_headers = decode_headers,
    .on_destroy = on_destroy,
    .route_type_url =
        "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.PerRouteConfig",
    .route_config_desc =
        &envoy__extensions__filters__http__dynamic_forward_proxy__v3__per_route_config__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_route_config,
};

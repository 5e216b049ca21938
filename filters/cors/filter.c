/* filter.c: envoy.filters.http.cors, Envoy's CORS filter.
 *
 * The filter's own config (Cors) has no fields; what it does comes from
 * the CORS policies of the request's route (http/cors.h): the CorsPolicy
 * entries of typed_per_filter_config under the filter's config name at
 * every level, the most specific first, or, only when no level has one,
 * the deprecated `cors` field of the route and then of its virtual host.
 * A request without a route entry (no route, a direct response or a
 * redirect) passes untouched, as in Envoy.
 *
 * In decode_headers, the first policy's filter_enabled (100% when absent)
 * and shadow_enabled (0% when absent) are drawn once for the request. A
 * request with an Origin header is evaluated when either is on and counts
 * in http.<stat_prefix>.cors.origin_valid or origin_invalid; in shadow
 * mode (shadow on, enabled off) nothing else happens. Enabled, a preflight
 * (OPTIONS with Origin and Access-Control-Request-Method) is answered here
 * with a 200 without body (response code details "cors_response"), unless
 * its origin is not allowed and forward_not_matching_preflights (true when
 * absent) sends it upstream. Any other CORS request goes on, and when its
 * origin was allowed the response gets access-control-allow-origin,
 * -allow-credentials and -expose-headers in encode_headers. The preflight
 * answer passes the encode side of every filter, this one included, as
 * Envoy's decoder-filter encodeHeaders does (sharp_stream_respond_headers). */
#include "filters/cors/filter.h"
#include "config/cors_config.h"
#include "http/cors.h"
#include "http/route.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cors_config {
    sharp_stat_id_t st_valid, st_invalid;
} cors_config_t;

typedef struct cors_state {
    sharp_cors_policies_t policies;
    char *origin; /* the allowed origin of a CORS request, for its response */
    size_t origin_len;
} cors_state_t;

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    (void)msg, (void)err, (void)errlen;
    cors_config_t *c = sharp_calloc(1, sizeof *c);
    sharp_stats_t *s = ctx->server->stats;
    c->st_valid = sharp_stats_counterf(s, "http.%s.cors.origin_valid", ctx->stat_prefix);
    c->st_invalid = sharp_stats_counterf(s, "http.%s.cors.origin_invalid", ctx->stat_prefix);
    return c;
}

static void destroy_config(void *p)
{
    free(p);
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    return sharp_config_cors_policy(
        (const Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy *)msg, "", err, errlen);
}

static void destroy_route_config(void *p)
{
    sharp_cors_policy_free(p);
}

/* Envoy's initializeCorsPolicies. */
static void policies_of(sharp_filter_t *f, sharp_cors_policies_t *ps)
{
    ps->n = sharp_stream_route_configs(f, (const void **)ps->v, SHARP_CORS_MAX_POLICIES);
    if (ps->n) return;
    const sharp_route_t *r = sharp_stream_route(f->stream);
    const sharp_vhost_t *vh = sharp_stream_vhost(f->stream);
    if (r && r->cors) ps->v[ps->n++] = r->cors;
    if (vh && vh->cors) ps->v[ps->n++] = vh->cors;
}

static sharp_filter_status_t cors_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                 bool end_stream)
{
    (void)end_stream;
    const cors_config_t *c = f->config;
    cors_state_t *st = f->state;
    const sharp_route_t *r = sharp_stream_route(f->stream);
    if (!r || r->action != SHARP_ROUTE_ACTION_ROUTE) return SHARP_FILTER_CONTINUE;
    policies_of(f, &st->policies);
    if (!st->policies.n) return SHARP_FILTER_CONTINUE;
    const sharp_cors_policy_t *first = st->policies.v[0];
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    bool enabled = !first->has_filter_enabled ||
                   sharp_fraction_enabled(&first->filter_enabled, sharp_worker_random(w));
    bool shadow = first->has_shadow_enabled &&
                  sharp_fraction_enabled(&first->shadow_enabled, sharp_worker_random(w));
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_cors_decision_t d = sharp_cors_decide(&st->policies, h, enabled, shadow, &resp);
    if (d.counted) sharp_counter_inc(w->stats, d.origin_allowed ? c->st_valid : c->st_invalid);
    /* Envoy's latched origin: the response of a CORS request (a preflight
     * answered here too, which passes this filter's encode_headers as in
     * Envoy) gets the allowed origin's headers */
    if (d.action != SHARP_CORS_PASS && d.origin_allowed) {
        sharp_str_t o = {"", 0};
        sharp_headers_get_cstr(h, "origin", &o);
        st->origin = sharp_strndup(o.p, o.len);
        st->origin_len = o.len;
    }
    if (d.action != SHARP_CORS_PREFLIGHT) {
        sharp_headers_free(&resp);
        return SHARP_FILTER_CONTINUE;
    }
    sharp_stream_respond_headers(f, &resp, "cors_response");
    sharp_headers_free(&resp);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t cors_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                 bool end_stream)
{
    (void)end_stream;
    cors_state_t *st = f->state;
    if (st->origin)
        sharp_cors_response_headers(&st->policies, (sharp_str_t){st->origin, st->origin_len}, h);
    return SHARP_FILTER_CONTINUE;
}

static void cors_on_destroy(sharp_filter_t *f)
{
    cors_state_t *st = f->state;
    free(st->origin);
    st->origin = NULL;
}

const sharp_filter_factory_t sharp_cors_filter = {
    .name = "envoy.filters.http.cors",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
    .config_desc = &envoy__extensions__filters__http__cors__v3__cors__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(cors_state_t),
    .decode_headers = cors_decode_headers,
    .encode_headers = cors_encode_headers,
    .on_destroy = cors_on_destroy,
    .route_type_url = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
    .route_config_desc = &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_route_config,
};

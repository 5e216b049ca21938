/* filter.c: envoy.filters.http.ratelimit, Envoy's global rate limit HTTP
 * filter, with a rate limit service speaking
 * envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit over gRPC
 * (rate_limit_service.grpc_service.envoy_grpc).
 *
 * decode_headers builds the request's descriptors from the rate_limits of
 * its route and virtual host (http/ratelimit_policy.h) whose stage is the
 * filter's: the route's, then the virtual host's when the route has none
 * (OVERRIDE), always (INCLUDE: the route's include_vh_rate_limits, or a
 * RateLimitPerRoute vh_rate_limits INCLUDE) or never (IGNORE); a RateLimit
 * whose disable_key is off in the runtime (ratelimit.<key>.http_filter_enabled)
 * is skipped; the most specific RateLimitPerRoute's own rate_limits, when
 * it has some, replace all of these (Envoy's RateLimitConfig path: no stage
 * or disable_key there, and each RateLimit's hits_addend goes with its
 * descriptor). A RateLimit with apply_on_stream_done is left out at the
 * request and asked for when the stream ends, in a call nobody waits for
 * (upstream/async_post.h). Nothing is asked without a route to a cluster that exists,
 * for a request request_type excludes (x-envoy-internal: true is internal),
 * with ratelimit.http_filter_enabled off, or without descriptors.
 * Otherwise the request stops and a ShouldRateLimit call with the domain
 * (the most specific RateLimitPerRoute's domain, else the filter's) goes to
 * the service's cluster through the worker's pools (the ext_authz filter's
 * side call, filters/ext_authz/call.h), with the filter's timeout (20 ms
 * by default) as its deadline.
 *
 * The answer: OK (or UNKNOWN) lets the request go on with the answer's
 * request_headers_to_add; OVER_LIMIT answers rate_limited_status (429)
 * with the answer's raw_body, response flag RL and details
 * request_rate_limited, x-envoy-ratelimited: true (unless
 * disable_x_envoy_ratelimited_header) and response_headers_to_add, gRPC
 * status RESOURCE_EXHAUSTED under rate_limited_as_resource_exhausted
 * (else UNAVAILABLE from the HTTP status), unless
 * ratelimit.http_filter_enforcing is off. A failed call (no cluster or
 * host, connect failure, reset, timeout, a gRPC status other than OK, an
 * unreadable answer) is an error: the request goes on, unless
 * failure_mode_deny answers status_on_error (500) with response flag RLSE
 * and details rate_limiter_error. The answer's response_headers_to_add go
 * on the client's response (the local reply too), with the
 * x-ratelimit-limit/-remaining/-reset headers of enable_x_ratelimit_headers
 * (DRAFT_VERSION_03) from the descriptor statuses; its dynamic_metadata
 * goes into the stream's namespace envoy.filters.http.ratelimit.
 *
 * Stats: cluster.<route cluster>.ratelimit.[<stat_prefix>.]{ok,over_limit,
 * error,failure_mode_allowed}, registered on first use; OVER_LIMIT also
 * counts rate_limited_status in the route cluster's upstream_rq_<code>. */
#include "upstream/locality_md.h"
#include "filters/ratelimit/filter.h"
#include "config/route_config.h"
#include "filters/ext_authz/call.h"
#include "upstream/async_post.h"
#include "grpc/framing.h"
#include "http/grpc.h"
#include "http/metadata.h"
#include "http/ratelimit_policy.h"
#include "http/route.h"
#include "http/stream.h"
#include "log.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/ratelimit/v3/rate_limit.pb-c.h"
#include "envoy/service/ratelimit/v3/rls.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef Envoy__Extensions__Filters__Http__Ratelimit__V3__RateLimit rl_pb_t;
typedef Envoy__Extensions__Filters__Http__Ratelimit__V3__RateLimitPerRoute rl_route_pb_t;
typedef Envoy__Service__Ratelimit__V3__RateLimitResponse rls_resp_t;

enum { REQ_BOTH, REQ_INTERNAL, REQ_EXTERNAL };
enum { VH_OVERRIDE, VH_INCLUDE, VH_IGNORE };

typedef struct rl_config {
    char *domain;
    uint32_t stage;
    int request_type;
    uint64_t timeout_ms;
    bool failure_mode_deny;
    bool resource_exhausted;
    char *cluster, *authority;
    sharp_headers_t initial_metadata;
    bool x_ratelimit_headers;
    bool x_envoy_ratelimited; /* !disable_x_envoy_ratelimited_header */
    uint32_t rate_limited_status, status_on_error;
    sharp_header_ops_t resp_ops; /* response_headers_to_add, on a rate limited request's reply */
    char *stat_prefix;           /* "ratelimit." or "ratelimit.<stat_prefix>." */
    char *local_cluster;
    sharp_stats_t *stats;
} rl_config_t;

typedef struct rl_route_config {
    int vh_rate_limits;
    char *domain;                    /* NULL: the filter's */
    sharp_rate_limits_t *rate_limits; /* NULL: the route's and virtual host's */
} rl_route_config_t;

typedef struct rl_state {
    sharp_ext_authz_call_t *call;
    sharp_headers_t resp_add; /* for the client's response */
    bool has_resp_add;
    bool decoded; /* decode_headers ran: the stream's end may ask too (apply_on_stream_done) */
} rl_state_t;

/* ---- config ---- */

static void config_free(void *p)
{
    rl_config_t *c = p;
    if (!c) return;
    free(c->domain);
    free(c->cluster);
    free(c->authority);
    sharp_headers_free(&c->initial_metadata);
    sharp_header_ops_free(&c->resp_ops);
    free(c->stat_prefix);
    free(c->local_cluster);
    free(c);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    const rl_pb_t *pb = (const rl_pb_t *)msg;
    if (!pb || !pb->domain || !pb->domain[0]) {
        snprintf(err, errlen, "domain: value length must be at least 1 characters");
        return NULL;
    }
    if (pb->stage > 10) {
        snprintf(err, errlen, "stage: value must be less than or equal to 10");
        return NULL;
    }
    int request_type = REQ_BOTH;
    if (pb->request_type && pb->request_type[0]) {
        if (strcmp(pb->request_type, "internal") == 0)
            request_type = REQ_INTERNAL;
        else if (strcmp(pb->request_type, "external") == 0)
            request_type = REQ_EXTERNAL;
        else if (strcmp(pb->request_type, "both") != 0) {
            snprintf(err, errlen, "request_type: value must be in list [internal external both ]");
            return NULL;
        }
    }
    const Envoy__Config__Ratelimit__V3__RateLimitServiceConfig *svc = pb->rate_limit_service;
    if (!svc) {
        snprintf(err, errlen, "rate_limit_service: value is required");
        return NULL;
    }
    if (svc->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3) {
        snprintf(err, errlen, "rate_limit_service.transport_api_version: only V3 is supported");
        return NULL;
    }
    const Envoy__Config__Core__V3__GrpcService *gs = svc->grpc_service;
    if (!gs) {
        snprintf(err, errlen, "rate_limit_service.grpc_service: value is required");
        return NULL;
    }
    if (gs->target_specifier_case !=
            ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        !gs->envoy_grpc) {
        snprintf(err, errlen,
                 "rate_limit_service.grpc_service.envoy_grpc: is required by SHARP (its own gRPC "
                 "client)");
        return NULL;
    }
    if (gs->envoy_grpc->retry_policy) {
        snprintf(err, errlen,
                 "rate_limit_service.grpc_service.envoy_grpc.retry_policy: not supported by SHARP "
                 "(retries of the ShouldRateLimit call)");
        return NULL;
    }
    rl_config_t *c = sharp_calloc(1, sizeof *c);
    c->domain = sharp_strdup(pb->domain);
    c->stage = pb->stage;
    c->request_type = request_type;
    c->timeout_ms =
        pb->timeout ? (uint64_t)pb->timeout->seconds * 1000 + (uint64_t)pb->timeout->nanos / 1000000
                    : 20;
    c->failure_mode_deny = pb->failure_mode_deny;
    c->resource_exhausted = pb->rate_limited_as_resource_exhausted;
    c->x_ratelimit_headers =
        pb->enable_x_ratelimit_headers ==
        ENVOY__EXTENSIONS__FILTERS__HTTP__RATELIMIT__V3__RATE_LIMIT__XRATE_LIMIT_HEADERS_RFCVERSION__DRAFT_VERSION_03;
    c->x_envoy_ratelimited = !pb->disable_x_envoy_ratelimited_header;
    /* Envoy: a rate_limited_status below 400 is 429; a status_on_error
     * outside 100..511 is 500 */
    uint32_t rls = pb->rate_limited_status ? (uint32_t)pb->rate_limited_status->code : 0;
    c->rate_limited_status = rls >= 400 ? rls : 429;
    uint32_t soe = pb->status_on_error ? (uint32_t)pb->status_on_error->code : 0;
    c->status_on_error = soe >= 100 && soe <= 511 ? soe : 500;
    c->cluster = sharp_strdup(gs->envoy_grpc->cluster_name ? gs->envoy_grpc->cluster_name : "");
    c->authority = sharp_strdup(gs->envoy_grpc->authority && gs->envoy_grpc->authority[0]
                                    ? gs->envoy_grpc->authority
                                    : c->cluster);
    sharp_headers_init(&c->initial_metadata);
    for (size_t i = 0; i < gs->n_initial_metadata; i++)
        sharp_headers_add_cstr(&c->initial_metadata, gs->initial_metadata[i]->key,
                               gs->initial_metadata[i]->value ? gs->initial_metadata[i]->value
                                                              : "");
    if (pb->n_response_headers_to_add > 10) {
        snprintf(err, errlen,
                 "response_headers_to_add: value must contain no more than 10 item(s)");
        config_free(c);
        return NULL;
    }
    if (sharp_config_header_ops("", "response_headers_to_add", pb->response_headers_to_add,
                                pb->n_response_headers_to_add, "", NULL, 0, &c->resp_ops, err,
                                errlen) < 0) {
        config_free(c);
        return NULL;
    }
    size_t n = pb->stat_prefix ? strlen(pb->stat_prefix) : 0;
    c->stat_prefix = sharp_calloc(1, n + 12);
    snprintf(c->stat_prefix, n + 12, n ? "ratelimit.%s." : "ratelimit.", pb->stat_prefix);
    c->local_cluster = sharp_strdup(ctx->server->node_cluster);
    c->stats = ctx->server->stats;
    return c;
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const rl_route_pb_t *pb = (const rl_route_pb_t *)msg;
    /* Envoy declares override_option and implements nothing for it: it is
     * accepted with the same (no) effect, and said so */
    if (pb->override_option)
        sharp_warn(config, "RateLimitPerRoute.override_option has no effect (Envoy does not implement it either)");
    rl_route_config_t *c = sharp_calloc(1, sizeof *c);
    if (sharp_config_rate_limits(pb->rate_limits, pb->n_rate_limits, "", &c->rate_limits, err, errlen) < 0) {
        if (c->rate_limits) sharp_rate_limits_free(c->rate_limits);
        free(c->rate_limits);
        free(c);
        return NULL;
    }
    switch (pb->vh_rate_limits) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__RATELIMIT__V3__RATE_LIMIT_PER_ROUTE__VH_RATE_LIMITS_OPTIONS__INCLUDE:
        c->vh_rate_limits = VH_INCLUDE;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__RATELIMIT__V3__RATE_LIMIT_PER_ROUTE__VH_RATE_LIMITS_OPTIONS__IGNORE:
        c->vh_rate_limits = VH_IGNORE;
        break;
    default:
        c->vh_rate_limits = VH_OVERRIDE;
        break;
    }
    if (pb->domain && pb->domain[0]) c->domain = sharp_strdup(pb->domain);
    return c;
}

static void route_config_free(void *p)
{
    rl_route_config_t *c = p;
    if (!c) return;
    free(c->domain);
    if (c->rate_limits) sharp_rate_limits_free(c->rate_limits);
    free(c->rate_limits);
    free(c);
}

/* ---- the call ---- */

/* cluster.<route cluster>.ratelimit.[<stat_prefix>.]<name>, registered on
 * first use. */
static void count_cluster(sharp_filter_t *f, const char *name)
{
    const rl_config_t *c = f->config;
    sharp_stream_t *s = f->stream;
    if (!s->route_cluster) return;
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *rc = sharp_view_cluster(s->view, s->route_cluster, &cl);
    if (!rc) return;
    sharp_counter_inc(
        sharp_stream_worker(s)->stats,
        sharp_stats_counterf(c->stats, "cluster.%s.%s%s", rc->stat_name, c->stat_prefix, name));
}

/* The route's or virtual host's rate_limits of the filter's stage that
 * apply now: at the request, or at the stream's end (on_stream_done). */
static void populate(sharp_filter_t *f, const sharp_rate_limits_t *rls, const sharp_rl_input_t *in,
                     bool on_stream_done, sharp_rl_descriptors_t *out)
{
    const rl_config_t *c = f->config;
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    for (uint32_t i = 0; rls && i < rls->n; i++) {
        const sharp_rate_limit_t *rl = &rls->v[i];
        if (rl->stage != c->stage || rl->apply_on_stream_done != on_stream_done) continue;
        if (rl->disable_key) {
            char key[512];
            snprintf(key, sizeof key, "ratelimit.%s.http_filter_enabled", rl->disable_key);
            if (!sharp_runtime_percent_enabled(key, 100, sharp_worker_random(w))) continue;
        }
        sharp_rate_limit_populate(rl, in, out);
    }
}

/* The ShouldRateLimit request, gRPC-framed. */
static void build_request(const char *domain, const sharp_rl_descriptors_t *d, sharp_sbuf_t *out)
{
    Envoy__Service__Ratelimit__V3__RateLimitRequest req =
        ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_REQUEST__INIT;
    req.domain = (char *)domain;
    req.n_descriptors = d->n;
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor *ds =
        sharp_calloc(d->n ? d->n : 1, sizeof *ds);
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor **dp =
        sharp_calloc(d->n ? d->n : 1, sizeof *dp);
    Google__Protobuf__UInt64Value *hits = sharp_calloc(d->n ? d->n : 1, sizeof *hits);
    for (uint32_t i = 0; i < d->n; i++)
        google__protobuf__uint64_value__init(&hits[i]);
    size_t nentries = 0;
    for (uint32_t i = 0; i < d->n; i++)
        nentries += d->d[i].n;
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor__Entry *es =
        sharp_calloc(nentries ? nentries : 1, sizeof *es);
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor__Entry **ep =
        sharp_calloc(nentries ? nentries : 1, sizeof *ep);
    size_t k = 0;
    for (uint32_t i = 0; i < d->n; i++) {
        envoy__extensions__common__ratelimit__v3__rate_limit_descriptor__init(&ds[i]);
        ds[i].n_entries = d->d[i].n;
        ds[i].entries = &ep[k];
        if (d->d[i].has_hits_addend) {
            hits[i].value = d->d[i].hits_addend;
            ds[i].hits_addend = &hits[i];
        }
        for (uint32_t j = 0; j < d->d[i].n; j++, k++) {
            envoy__extensions__common__ratelimit__v3__rate_limit_descriptor__entry__init(&es[k]);
            es[k].key = d->d[i].entries[j].key;
            es[k].value = d->d[i].entries[j].value;
            ep[k] = &es[k];
        }
        dp[i] = &ds[i];
    }
    req.descriptors = dp;
    sharp_grpc_frame_message(out, &req.base);
    free(ep);
    free(es);
    free(dp);
    free(ds);
    free(hits);
}

enum { RL_OK, RL_OVER_LIMIT, RL_ERROR };

/* The call's answer: one RateLimitResponse with gRPC status OK, else an
 * error (Envoy's onFailure). */
static rls_resp_t *decode_answer(const sharp_ext_authz_result_t *r)
{
    if (r->failed) return NULL;
    int64_t gs;
    if (!sharp_grpc_response_status(r->trailers->n ? r->trailers : NULL, r->headers,
                                    sharp_headers_status(r->headers), &gs) ||
        gs != 0)
        return NULL;
    sharp_grpc_frame_t fr;
    if (sharp_grpc_deframe((const uint8_t *)r->body->data, r->body->len, (uint32_t)r->body->len,
                           &fr) != SHARP_GRPC_FRAME_OK ||
        fr.compressed || fr.used != r->body->len)
        return NULL;
    return envoy__service__ratelimit__v3__rate_limit_response__unpack(NULL, fr.len, fr.msg);
}

static uint32_t unit_seconds(Envoy__Service__Ratelimit__V3__RateLimitResponse__RateLimit__Unit u)
{
    switch (u) {
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__RATE_LIMIT__UNIT__SECOND:
        return 1;
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__RATE_LIMIT__UNIT__MINUTE:
        return 60;
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__RATE_LIMIT__UNIT__HOUR:
        return 3600;
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__RATE_LIMIT__UNIT__DAY:
        return 86400;
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__RATE_LIMIT__UNIT__MONTH:
        return 30u * 86400;
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__RATE_LIMIT__UNIT__YEAR:
        return 365u * 86400;
    default:
        return 0;
    }
}

/* Envoy's XRateLimitHeaderUtils::create (draft 03): the status with a
 * current_limit closest to its limit gives the limit, remaining and reset;
 * every status with a current_limit and a known unit adds its quota policy
 * to x-ratelimit-limit. */
static void x_ratelimit_headers(const rls_resp_t *a, sharp_headers_t *out)
{
    const Envoy__Service__Ratelimit__V3__RateLimitResponse__DescriptorStatus *min = NULL;
    sharp_sbuf_t policy = {0};
    for (size_t i = 0; i < a->n_statuses; i++) {
        const Envoy__Service__Ratelimit__V3__RateLimitResponse__DescriptorStatus *st =
            a->statuses[i];
        if (!st->current_limit) continue;
        if (!min || st->limit_remaining < min->limit_remaining) min = st;
        uint32_t window = unit_seconds(st->current_limit->unit);
        if (!window) continue;
        char buf[64];
        int n =
            snprintf(buf, sizeof buf, ", %u;w=%u", st->current_limit->requests_per_unit, window);
        sharp_sbuf_append(&policy, buf, (size_t)n);
        if (st->current_limit->name && st->current_limit->name[0]) {
            sharp_sbuf_append(&policy, ";name=\"", 7);
            sharp_sbuf_append(&policy, st->current_limit->name, strlen(st->current_limit->name));
            sharp_sbuf_append(&policy, "\"", 1);
        }
    }
    if (min) {
        char buf[32];
        sharp_sbuf_t limit = {0};
        int n = snprintf(buf, sizeof buf, "%u", min->current_limit->requests_per_unit);
        sharp_sbuf_append(&limit, buf, (size_t)n);
        if (policy.len) sharp_sbuf_append(&limit, policy.data, policy.len);
        sharp_headers_add(out, "x-ratelimit-limit", 17, limit.data, limit.len);
        snprintf(buf, sizeof buf, "%u", min->limit_remaining);
        sharp_headers_add_cstr(out, "x-ratelimit-remaining", buf);
        snprintf(buf, sizeof buf, "%lld",
                 (long long)(min->duration_until_reset ? min->duration_until_reset->seconds : 0));
        sharp_headers_add_cstr(out, "x-ratelimit-reset", buf);
        sharp_sbuf_free(&limit);
    }
    sharp_sbuf_free(&policy);
}

/* A header of the answer into `out`: the name lower-cased (Envoy's
 * LowerCaseString); one that is not a token, or a value with CR, LF or
 * NUL, is dropped rather than written to a client or upstream. So are the
 * message's framing (content-length) and the connection-specific fields
 * (transfer-encoding, connection, ...): the codecs frame by their own
 * view of the message, and a second length or a chunked coding beside it
 * would make the peer read the message (and the ones after it on the
 * connection) differently; a second Host (the request's is its
 * :authority) would let two readers see two authorities. */
static void answer_header(const Envoy__Config__Core__V3__HeaderValue *hv, sharp_headers_t *out)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    const char *k = hv->key ? hv->key : "", *v = hv->value ? hv->value : "";
    size_t n = strlen(k);
    if (!n || n > 256) return;
    char name[257];
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              strchr(tchar, ch)))
            return;
        name[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    if (strpbrk(v, "\r\n")) return;
    sharp_str_t nm = {name, n};
    if ((n == 14 && !memcmp(name, "content-length", 14)) || (n == 4 && !memcmp(name, "host", 4)) ||
        sharp_header_is_connection_specific(nm))
        return;
    sharp_headers_add(out, name, n, v, strlen(v));
}

static void on_done(void *ctx, const sharp_ext_authz_result_t *r)
{
    sharp_filter_t *f = ctx;
    const rl_config_t *c = f->config;
    rl_state_t *st = f->state;
    sharp_stream_t *s = f->stream;
    st->call = NULL;
    rls_resp_t *a = decode_answer(r);
    /* the answer's dynamic_metadata goes into the stream's namespace
     * envoy.filters.http.ratelimit (Envoy's setDynamicMetadata); a string
     * that is not UTF-8 would have failed protobuf's parse: an error */
    sharp_md_value_t md = {0};
    if (a && a->dynamic_metadata && !sharp_md_value_from_struct(a->dynamic_metadata, &md)) {
        envoy__service__ratelimit__v3__rate_limit_response__free_unpacked(a, NULL);
        a = NULL;
    }
    if (md.kind == SHARP_MD_STRUCT && md.n) {
        static const char ns[] = "envoy.filters.http.ratelimit";
        sharp_dynamic_metadata_t **dm = &sharp_stream_info(s)->dynamic_metadata;
        for (uint32_t i = 0; i < md.n; i++)
            sharp_dynamic_metadata_set(dm, ns, sizeof ns - 1, md.keys[i], strlen(md.keys[i]),
                                       &md.items[i]);
    }
    sharp_md_value_clear(&md);
    int status =
        !a ? RL_ERROR
        : a->overall_code == ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__CODE__OVER_LIMIT
            ? RL_OVER_LIMIT
            : RL_OK;
    sharp_headers_t *add = &st->resp_add;
    for (size_t i = 0; a && i < a->n_response_headers_to_add; i++)
        answer_header(a->response_headers_to_add[i], add);
    switch (status) {
    case RL_OK:
        count_cluster(f, "ok");
        break;
    case RL_ERROR:
        sharp_debug(http, "[C%llu][S%llu] ratelimit: the call failed (%s)", s->conn_id, s->id,
                    r->failed ? r->reason : "a gRPC error or an unreadable answer");
        count_cluster(f, "error");
        break;
    case RL_OVER_LIMIT: {
        count_cluster(f, "over_limit");
        sharp_cluster_local_t *cl = NULL;
        sharp_cluster_t *rc =
            s->route_cluster ? sharp_view_cluster(s->view, s->route_cluster, &cl) : NULL;
        if (rc)
            sharp_cluster_count_response(rc, sharp_stream_worker(s)->stats, c->rate_limited_status);
        if (c->x_envoy_ratelimited) sharp_headers_set_cstr(add, "x-envoy-ratelimited", "true");
        break;
    }
    }
    if (c->x_ratelimit_headers && a) x_ratelimit_headers(a, add);
    st->has_resp_add = add->n > 0;
    if (status == RL_OVER_LIMIT &&
        sharp_runtime_percent_enabled("ratelimit.http_filter_enforcing", 100,
                                      sharp_worker_random(sharp_stream_worker(s)))) {
        sharp_debug(http, "[C%llu][S%llu] ratelimit: over the limit", s->conn_id, s->id);
        const char **hdrs = sharp_calloc(2 * (size_t)add->n + 3, sizeof *hdrs);
        char **owned = sharp_calloc(2 * (size_t)add->n + 1, sizeof *owned);
        size_t k = 0;
        for (uint32_t i = 0; i < add->n; i++) {
            sharp_str_t n = sharp_headers_name(add, i), v = sharp_headers_value(add, i);
            owned[k] = sharp_strndup(n.p, n.len);
            hdrs[k] = owned[k];
            k++;
            owned[k] = sharp_strndup(v.p, v.len);
            hdrs[k] = owned[k];
            k++;
        }
        if (c->resource_exhausted && sharp_grpc_is_request(sharp_stream_request_headers(s))) {
            hdrs[k++] = "grpc-status";
            hdrs[k++] = "8";
        }
        st->has_resp_add = false;
        sharp_stream_send_local_reply_body_ops(
            f, c->rate_limited_status, (const char *)a->raw_body.data, a->raw_body.len,
            SHARP_RF_RATE_LIMITED, "request_rate_limited", hdrs, &c->resp_ops);
        for (size_t i = 0; i < 2 * (size_t)add->n; i++)
            free(owned[i]);
        free(owned);
        free(hdrs);
        envoy__service__ratelimit__v3__rate_limit_response__free_unpacked(a, NULL);
        return;
    }
    if (status == RL_ERROR && c->failure_mode_deny) {
        st->has_resp_add = false;
        sharp_stream_send_local_reply(f, c->status_on_error, NULL, SHARP_RF_RATELIMIT_SERVICE_ERROR,
                                      "rate_limiter_error");
        return;
    }
    if (status == RL_ERROR) count_cluster(f, "failure_mode_allowed");
    sharp_headers_t *req = sharp_stream_request_headers(s);
    for (size_t i = 0; a && i < a->n_request_headers_to_add; i++)
        answer_header(a->request_headers_to_add[i], req);
    if (a) envoy__service__ratelimit__v3__rate_limit_response__free_unpacked(a, NULL);
    sharp_stream_continue_decoding(f);
}

/* The request's descriptors that apply now (at the request, or at the
 * stream's end): the most specific RateLimitPerRoute's rate_limits when it
 * has some (Envoy's RateLimitConfig path: no stage, no disable_key), else
 * the route's and virtual host's of the filter's stage as vh_rate_limits
 * says. None without a route to a cluster that exists. */
static void descriptors_for(sharp_filter_t *f, const sharp_headers_t *h, bool on_stream_done,
                            sharp_rl_descriptors_t *d)
{
    const rl_config_t *c = f->config;
    sharp_stream_t *s = f->stream;
    const sharp_route_t *r = sharp_stream_route(s);
    if (!r || r->action != SHARP_ROUTE_ACTION_ROUTE || !s->route_cluster) return;
    sharp_cluster_local_t *cl = NULL;
    if (!sharp_view_cluster(s->view, s->route_cluster, &cl)) return;
    const rl_route_config_t *rc = sharp_stream_route_config(f);
    sharp_rl_input_t in = {
        .headers = h,
        .local_cluster = c->local_cluster,
        .route_cluster = s->route_cluster,
        .remote_address = sharp_stream_info(s)->downstream_remote_address,
        .dynamic_metadata = sharp_stream_info(s)->dynamic_metadata,
        .route_metadata = r->metadata,
        .locality_metadata = sharp_locality_md_of(sharp_stream_info(s)->upstream_locality_md),
    };
    if (rc && rc->rate_limits && rc->rate_limits->n) {
        for (uint32_t i = 0; i < rc->rate_limits->n; i++)
            if (rc->rate_limits->v[i].apply_on_stream_done == on_stream_done)
                sharp_rate_limit_populate(&rc->rate_limits->v[i], &in, d);
        return;
    }
    int vh = r->include_vh_rate_limits ? VH_INCLUDE : rc ? rc->vh_rate_limits : VH_OVERRIDE;
    populate(f, r->rate_limits, &in, on_stream_done, d);
    const sharp_rate_limits_t *vrl = s->vhost ? s->vhost->rate_limits : NULL;
    if (vh == VH_INCLUDE || (vh == VH_OVERRIDE && !(r->rate_limits && r->rate_limits->n)))
        populate(f, vrl, &in, on_stream_done, d);
}

static const char *domain_of(sharp_filter_t *f)
{
    const rl_config_t *c = f->config;
    const rl_route_config_t *rc = sharp_stream_route_config(f);
    return rc && rc->domain ? rc->domain : c->domain;
}

/* The ShouldRateLimit call's head and body for the descriptors that apply
 * now; false when there are none (nothing to ask). */
static bool call_request(sharp_filter_t *f, const sharp_headers_t *h, bool on_stream_done, sharp_headers_t *rh,
                         sharp_sbuf_t *body)
{
    const rl_config_t *c = f->config;
    sharp_rl_descriptors_t d = {0};
    descriptors_for(f, h, on_stream_done, &d);
    if (!d.n) {
        sharp_rl_descriptors_free(&d);
        return false;
    }
    build_request(domain_of(f), &d, body);
    sharp_rl_descriptors_free(&d);
    sharp_headers_init(rh);
    sharp_ext_authz_grpc_head(rh, "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", c->authority,
                              c->timeout_ms, &c->initial_metadata);
    return true;
}

static sharp_filter_status_t rl_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    const rl_config_t *c = f->config;
    rl_state_t *st = f->state;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    sharp_headers_init(&st->resp_add);
    /* as Envoy, whose stream-end descriptors need only that the headers
     * were seen, whatever the runtime switch and request_type say */
    st->decoded = true;
    if (!sharp_runtime_percent_enabled("ratelimit.http_filter_enabled", 100,
                                       sharp_worker_random(w)))
        return SHARP_FILTER_CONTINUE;
    sharp_str_t v;
    bool internal = sharp_headers_get_cstr(h, "x-envoy-internal", &v) && sharp_str_eq(v, "true", 4);
    if ((internal && c->request_type == REQ_EXTERNAL) ||
        (!internal && c->request_type == REQ_INTERNAL))
        return SHARP_FILTER_CONTINUE;
    sharp_headers_t rh;
    sharp_sbuf_t body = {0};
    if (!call_request(f, h, false, &rh, &body)) return SHARP_FILTER_CONTINUE;
    sharp_cluster_local_t *scl = NULL;
    sharp_cluster_t *sc = sharp_view_cluster(s->view, c->cluster, &scl);
    if (!sc)
        sharp_debug(http, "[C%llu][S%llu] ratelimit cluster '%s' does not exist", s->conn_id, s->id,
                    c->cluster);
    sharp_ext_authz_call_args_t a = {
        .worker = w,
        .cluster = sc,
        .view = s->view,
        .cl = scl,
        .headers = &rh,
        .body = body.data,
        .body_len = body.len,
        .http2 = true,
        .timeout_ms = c->timeout_ms,
        .max_response_bytes = sharp_stream_buffer_limit(s),
        .conn_id = s->conn_id,
        .stream_id = s->id,
        .done = on_done,
        .ctx = f,
        .what = "ratelimit",
    };
    st->call = sharp_ext_authz_call_start(&a);
    sharp_headers_free(&rh);
    sharp_sbuf_free(&body);
    return SHARP_FILTER_STOP;
}

/* The stream ended: the descriptors of the rate limits with
 * apply_on_stream_done go to the service in a call nobody waits for
 * (Envoy's OnStreamDoneCallBack), which outlives the stream and ends with
 * its answer, its timeout or the worker's stop. */
static void stream_done_call(sharp_filter_t *f)
{
    const rl_config_t *c = f->config;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    if (w->stopping) return;
    /* most requests' rate limits have nothing for the stream's end: no
     * second pass over them */
    const sharp_route_t *r = sharp_stream_route(s);
    const rl_route_config_t *rc = sharp_stream_route_config(f);
    if (!r) return;
    if (rc && rc->rate_limits && rc->rate_limits->n) {
        if (!rc->rate_limits->any_on_stream_done) return;
    } else if (!(r->rate_limits && r->rate_limits->any_on_stream_done) &&
               !(s->vhost && s->vhost->rate_limits && s->vhost->rate_limits->any_on_stream_done)) {
        return;
    }
    sharp_headers_t rh;
    sharp_sbuf_t body = {0};
    if (!call_request(f, sharp_stream_request_headers(s), true, &rh, &body)) return;
    sharp_debug(http, "[C%llu][S%llu] ratelimit: the stream's end asks too", s->conn_id, s->id);
    static const sharp_async_post_counts_t uncounted = {0};
    /* takes over the head and body, whatever the outcome */
    sharp_async_post(w, c->cluster, "HTTP/2", &rh, &body, c->timeout_ms, &uncounted, "ratelimit");
}

static sharp_filter_status_t rl_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    rl_state_t *st = f->state;
    if (!st->has_resp_add) return SHARP_FILTER_CONTINUE;
    for (uint32_t i = 0; i < st->resp_add.n; i++) {
        sharp_str_t n = sharp_headers_name(&st->resp_add, i),
                    v = sharp_headers_value(&st->resp_add, i);
        sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
    st->has_resp_add = false;
    return SHARP_FILTER_CONTINUE;
}

static void rl_on_destroy(sharp_filter_t *f)
{
    rl_state_t *st = f->state;
    if (st->call)
        sharp_ext_authz_call_cancel(st->call);
    else if (st->decoded)
        stream_done_call(f);
    st->call = NULL;
    sharp_headers_free(&st->resp_add);
}

const sharp_filter_factory_t sharp_ratelimit_filter = {
    .name = "envoy.filters.http.ratelimit",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
    .config_desc = &envoy__extensions__filters__http__ratelimit__v3__rate_limit__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .state_size = sizeof(rl_state_t),
    .decode_headers = rl_decode_headers,
    .encode_headers = rl_encode_headers,
    .on_destroy = rl_on_destroy,
    .route_type_url =
        "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
    .route_config_desc =
        &envoy__extensions__filters__http__ratelimit__v3__rate_limit_per_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = route_config_free,
};

/* filter.c: envoy.filters.http.local_ratelimit, Envoy's HTTP local rate
 * limit filter.
 *
 * Each filter config (the connection manager's, and each per-route
 * LocalRateLimit in typed_per_filter_config, whose bucket is then the
 * route's own) holds one token bucket (token_bucket.c) shared by every
 * worker of the process, as Envoy shares it. A request takes one token in
 * decode_headers, when the filter is enabled for it (filter_enabled, 0%
 * when absent: the filter then does nothing). Without a token the request
 * is rate limited: when enforced (filter_enforced, 0% when absent) it gets
 * the local reply "local_rate_limited" with `status` (429; below 400 means
 * 429), response flag RL, response_headers_to_add and, for gRPC, status
 * UNAVAILABLE or RESOURCE_EXHAUSTED; when not enforced it goes upstream
 * with request_headers_to_add_when_not_enforced. With
 * enable_x_ratelimit_headers the response (the local reply too) gets
 * x-ratelimit-limit/-remaining/-reset of the bucket used. A config without
 * a token bucket (allowed at the connection manager only) lets every
 * request through. With local_rate_limit_per_downstream_connection each
 * downstream connection has its own bucket instead. With descriptors, a
 * request whose route and virtual host rate_limits (the config's stage)
 * make a configured descriptor takes a token from that descriptor's bucket
 * (the slowest filling first), then from the default bucket unless
 * always_consume_default_token_bucket is false. Stats:
 * <stat_prefix>.http_local_rate_limit.{enabled, enforced,rate_limited,ok} of the effective config
 * (a per-route config's own). */
#include "upstream/locality_md.h"
#include "filters/local_ratelimit/filter.h"
#include "config/route_config.h"
#include "runtime.h"
#include "filters/local_ratelimit/token_bucket.h"
#include "http/grpc.h"
#include "http/ratelimit_policy.h"
#include "http/route.h"
#include "http/stream.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.pb-c.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__LocalRatelimit__V3__LocalRateLimit lrl_pb_t;

#define MIN_FILL_INTERVAL_NS (50ull * 1000 * 1000)

/* One of `descriptors`: its entries and its own bucket. */
typedef struct {
    sharp_rl_descriptor_t d;
    sharp_token_bucket_t bucket;
    double fill_rate; /* tokens_per_fill / fill_interval: the order buckets are taken in */
} lrl_descriptor_t;

enum { LRL_VH_OVERRIDE, LRL_VH_INCLUDE, LRL_VH_IGNORE };

typedef struct lrl_config {
    bool has_bucket;
    sharp_token_bucket_t bucket;
    uint32_t tokens_per_fill;
    uint64_t fill_interval_ns;
    bool per_connection; /* local_rate_limit_per_downstream_connection */
    bool has_enabled, has_enforced;
    sharp_runtime_fraction_t enabled, enforced;
    uint32_t status;
    sharp_header_ops_t resp_ops, req_ops;
    bool x_ratelimit_headers;
    bool resource_exhausted;
    lrl_descriptor_t *descs; /* descriptors, matched against the route rate_limits' */
    uint32_t ndescs;
    uint32_t stage;
    int vh_rate_limits;
    bool always_consume_default; /* always_consume_default_token_bucket (default true) */
    char *local_cluster;         /* the filter-level config's: source_cluster */
    /* <stat_prefix>.http_local_rate_limit.*: the connection manager's
     * config registers them at load (and keeps the store for the per-route
     * configs); a per-route config, built without the store, on the first
     * request it decides (st_ready), two workers racing storing the same ids */
    sharp_stats_t *stats;
    char *stat_prefix;
    _Atomic bool st_ready;
    _Atomic sharp_stat_id_t st_enabled, st_enforced, st_rate_limited, st_ok;
} lrl_config_t;

typedef struct lrl_state {
    /* the bucket this request used when its response gets x-ratelimit
     * headers, else NULL; a config's or the connection's, both outlive the
     * stream */
    const sharp_token_bucket_t *used;
} lrl_state_t;

static void config_free(void *p)
{
    lrl_config_t *c = p;
    if (!c) return;
    free(c->enabled.key);
    free(c->enforced.key);
    free(c->stat_prefix);
    sharp_header_ops_free(&c->resp_ops);
    sharp_header_ops_free(&c->req_ops);
    for (uint32_t i = 0; i < c->ndescs; i++) {
        for (uint32_t j = 0; j < c->descs[i].d.n; j++) {
            free(c->descs[i].d.entries[j].key);
            free(c->descs[i].d.entries[j].value);
        }
        free(c->descs[i].d.entries);
    }
    free(c->descs);
    free(c->local_cluster);
    free(c);
}

/* "k=v, k=v": Envoy's LocalDescriptor::toString. */
static void descriptor_text(const sharp_rl_descriptor_t *d, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < d->n && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s=%s", i ? ", " : "", d->entries[i].key,
                              d->entries[i].value);
}

static bool same_descriptor(const sharp_rl_descriptor_t *a, const sharp_rl_descriptor_t *b)
{
    if (a->n != b->n) return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (strcmp(a->entries[i].key, b->entries[i].key) != 0 ||
            strcmp(a->entries[i].value, b->entries[i].value) != 0)
            return false;
    return true;
}

/* descriptors: each an exact list of entries with its own bucket (Envoy's
 * LocalRateLimiterImpl). An empty value (Envoy's wildcard, a bucket per
 * value seen) is refused. */
static int descriptors_from(const lrl_pb_t *pb, lrl_config_t *c, char *err, size_t errlen)
{
    c->descs = sharp_calloc(pb->n_descriptors, sizeof *c->descs);
    for (size_t i = 0; i < pb->n_descriptors; i++) {
        const Envoy__Extensions__Common__Ratelimit__V3__LocalRateLimitDescriptor *dp =
            pb->descriptors[i];
        lrl_descriptor_t *d = &c->descs[c->ndescs++];
        if (!dp->n_entries) {
            snprintf(err, errlen, "descriptors[%zu].entries: value must contain at least 1 item(s)",
                     i);
            return -1;
        }
        d->d.entries = sharp_calloc(dp->n_entries, sizeof *d->d.entries);
        for (size_t j = 0; j < dp->n_entries; j++) {
            const char *k = dp->entries[j]->key ? dp->entries[j]->key : "",
                       *v = dp->entries[j]->value ? dp->entries[j]->value : "";
            if (!k[0]) {
                snprintf(
                    err, errlen,
                    "descriptors[%zu].entries[%zu].key: value length must be at least 1 characters",
                    i, j);
                return -1;
            }
            if (!v[0]) {
                snprintf(err, errlen,
                         "descriptors[%zu].entries[%zu].value: an empty value is not supported by "
                         "SHARP (wildcard "
                         "descriptors, a bucket per value)",
                         i, j);
                return -1;
            }
            d->d.entries[d->d.n].key = sharp_strdup(k);
            d->d.entries[d->d.n].value = sharp_strdup(v);
            d->d.n++;
        }
        const Envoy__Type__V3__TokenBucket *tb = dp->token_bucket;
        if (!tb) {
            snprintf(err, errlen, "descriptors[%zu].token_bucket: value is required", i);
            return -1;
        }
        if (tb->max_tokens == 0) {
            snprintf(err, errlen,
                     "descriptors[%zu].token_bucket.max_tokens: value must be greater than 0", i);
            return -1;
        }
        if (tb->tokens_per_fill && tb->tokens_per_fill->value == 0) {
            snprintf(err, errlen,
                     "descriptors[%zu].token_bucket.tokens_per_fill: value must be greater than 0",
                     i);
            return -1;
        }
        int64_t ns = tb->fill_interval
                         ? tb->fill_interval->seconds * 1000000000ll + tb->fill_interval->nanos
                         : 0;
        if ((uint64_t)(ns > 0 ? ns : 0) / 1000000 * 1000000 < MIN_FILL_INTERVAL_NS) {
            snprintf(err, errlen,
                     "local rate limit descriptor token bucket fill timer must be >= 50ms");
            return -1;
        }
        uint32_t per_fill = tb->tokens_per_fill ? tb->tokens_per_fill->value : 1;
        sharp_token_bucket_init(&d->bucket, tb->max_tokens, per_fill, (uint64_t)ns, sharp_now_ns());
        d->fill_rate = (double)per_fill / (double)ns;
        for (uint32_t k = 0; k + 1 < c->ndescs; k++) {
            if (same_descriptor(&c->descs[k].d, &d->d)) {
                char txt[512];
                descriptor_text(&d->d, txt, sizeof txt);
                snprintf(err, errlen, "duplicate descriptor in the local rate descriptor: %s", txt);
                return -1;
            }
        }
    }
    return 0;
}

/* Envoy's FilterConfig: its checks and defaults. Fields SHARP does not
 * implement are refused here with the reason. */
static lrl_config_t *config_build(const lrl_pb_t *pb, bool per_route, char *err, size_t errlen)
{
    if (!pb->stat_prefix || !pb->stat_prefix[0]) {
        snprintf(err, errlen, "stat_prefix: value length must be at least 1 characters");
        return NULL;
    }
    if (per_route && !pb->token_bucket) {
        snprintf(err, errlen, "local rate limit token bucket must be set for per filter configs");
        return NULL;
    }
    if (pb->n_descriptors && pb->local_rate_limit_per_downstream_connection) {
        snprintf(
            err, errlen,
            "descriptors: not supported by SHARP with local_rate_limit_per_downstream_connection "
            "(descriptor buckets per downstream connection)");
        return NULL;
    }
    if (pb->local_cluster_rate_limit) {
        snprintf(err, errlen, "local_cluster_rate_limit: not supported by SHARP (sharing the bucket across the local "
                              "cluster)");
        return NULL;
    }
    if (pb->stage > 10) {
        snprintf(err, errlen, "stage: value must be less than or equal to 10");
        return NULL;
    }
    if (pb->n_response_headers_to_add > 10 || pb->n_request_headers_to_add_when_not_enforced > 10) {
        snprintf(err, errlen, "%s: value must contain no more than 10 item(s)",
                 pb->n_response_headers_to_add > 10 ? "response_headers_to_add"
                                                    : "request_headers_to_add_when_not_enforced");
        return NULL;
    }
    lrl_config_t *c = sharp_calloc(1, sizeof *c);
    const Envoy__Type__V3__TokenBucket *tb = pb->token_bucket;
    if (tb) {
        if (tb->max_tokens == 0) {
            snprintf(err, errlen, "token_bucket.max_tokens: value must be greater than 0");
            goto fail;
        }
        if (tb->tokens_per_fill && tb->tokens_per_fill->value == 0) {
            snprintf(err, errlen, "token_bucket.tokens_per_fill: value must be greater than 0");
            goto fail;
        }
        if (!tb->fill_interval) {
            snprintf(err, errlen, "token_bucket.fill_interval: value is required");
            goto fail;
        }
        int64_t ns = tb->fill_interval->seconds * 1000000000ll + tb->fill_interval->nanos;
        if (ns <= 0) {
            snprintf(err, errlen, "token_bucket.fill_interval: value must be greater than 0s");
            goto fail;
        }
        /* Envoy compares whole milliseconds */
        if ((uint64_t)ns / 1000000 * 1000000 < MIN_FILL_INTERVAL_NS) {
            snprintf(err, errlen, "local rate limit token bucket fill timer must be >= 50ms");
            goto fail;
        }
        c->has_bucket = true;
        c->tokens_per_fill = tb->tokens_per_fill ? tb->tokens_per_fill->value : 1;
        c->fill_interval_ns = (uint64_t)ns;
        sharp_token_bucket_init(&c->bucket, tb->max_tokens, c->tokens_per_fill, c->fill_interval_ns,
                                sharp_now_ns());
    }
    if (pb->filter_enabled) {
        if (sharp_config_runtime_fraction(pb->filter_enabled, "filter_enabled", &c->enabled, err, errlen) < 0) goto fail;
        c->has_enabled = true;
    }
    if (pb->filter_enforced) {
        if (sharp_config_runtime_fraction(pb->filter_enforced, "filter_enforced", &c->enforced, err, errlen) < 0) goto fail;
        c->has_enforced = true;
    }
    /* HttpStatus: Envoy's toErrorCode, a status below 400 is 429 */
    c->status = pb->status && pb->status->code >= 400 ? (uint32_t)pb->status->code : 429;
    if (sharp_config_header_ops("", "response_headers_to_add", pb->response_headers_to_add,
                                pb->n_response_headers_to_add, NULL, NULL, 0, &c->resp_ops, err, errlen) < 0 ||
        sharp_config_header_ops("", "request_headers_to_add_when_not_enforced",
                                pb->request_headers_to_add_when_not_enforced,
                                pb->n_request_headers_to_add_when_not_enforced, NULL, NULL, 0, &c->req_ops, err,
                                errlen) < 0)
        goto fail;
    c->x_ratelimit_headers =
        pb->enable_x_ratelimit_headers == ENVOY__EXTENSIONS__COMMON__RATELIMIT__V3__XRATE_LIMIT_HEADERS_RFCVERSION__DRAFT_VERSION_03;
    c->resource_exhausted = pb->rate_limited_as_resource_exhausted;
    c->per_connection = pb->local_rate_limit_per_downstream_connection;
    c->stage = pb->stage;
    c->vh_rate_limits =
        pb->vh_rate_limits ==
                ENVOY__EXTENSIONS__COMMON__RATELIMIT__V3__VH_RATE_LIMITS_OPTIONS__INCLUDE
            ? LRL_VH_INCLUDE
        : pb->vh_rate_limits ==
                ENVOY__EXTENSIONS__COMMON__RATELIMIT__V3__VH_RATE_LIMITS_OPTIONS__IGNORE
            ? LRL_VH_IGNORE
            : LRL_VH_OVERRIDE;
    c->always_consume_default =
        !pb->always_consume_default_token_bucket || pb->always_consume_default_token_bucket->value;
    if (pb->n_descriptors && descriptors_from(pb, c, err, errlen) < 0) goto fail;
    return c;
fail:
    config_free(c);
    return NULL;
}

static void register_stats(lrl_config_t *c, sharp_stats_t *s)
{
    const char *pre = c->stat_prefix;
    atomic_store_explicit(&c->st_enabled, sharp_stats_counterf(s, "%s.http_local_rate_limit.enabled", pre),
                          memory_order_relaxed);
    atomic_store_explicit(&c->st_enforced, sharp_stats_counterf(s, "%s.http_local_rate_limit.enforced", pre),
                          memory_order_relaxed);
    atomic_store_explicit(&c->st_rate_limited,
                          sharp_stats_counterf(s, "%s.http_local_rate_limit.rate_limited", pre),
                          memory_order_relaxed);
    atomic_store_explicit(&c->st_ok, sharp_stats_counterf(s, "%s.http_local_rate_limit.ok", pre),
                          memory_order_relaxed);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err, size_t errlen)
{
    if (!msg) {
        snprintf(err, errlen, "stat_prefix: value length must be at least 1 characters");
        return NULL;
    }
    const lrl_pb_t *pb = (const lrl_pb_t *)msg;
    lrl_config_t *c = config_build(pb, false, err, errlen);
    if (!c) return NULL;
    c->stat_prefix = sharp_strdup(pb->stat_prefix);
    c->local_cluster = sharp_strdup(ctx->server->node_cluster);
    c->stats = ctx->server->stats;
    register_stats(c, c->stats);
    return c;
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    lrl_config_t *c = config_build((const lrl_pb_t *)msg, true, err, errlen);
    if (c) c->stat_prefix = sharp_strdup(((const lrl_pb_t *)msg)->stat_prefix);
    return c;
}

/* The config whose counters a request counts in: the effective one, as
 * Envoy counts in its effective config's stats. */
static const lrl_config_t *stats_of(const lrl_config_t *fc, const lrl_config_t *c)
{
    if (c != fc && !atomic_load_explicit(&c->st_ready, memory_order_acquire)) {
        lrl_config_t *m = (lrl_config_t *)c;
        register_stats(m, fc->stats);
        atomic_store_explicit(&m->st_ready, true, memory_order_release);
    }
    return c;
}

static bool fraction_on(sharp_filter_t *f, bool has, const sharp_runtime_fraction_t *fr)
{
    return has && sharp_fraction_enabled(fr, sharp_worker_random(sharp_stream_worker(f->stream)));
}

/* x-ratelimit-limit/-remaining/-reset (draft 03) of the bucket used:
 * name/value pairs into `out` (6 strings), values in `buf`. */
static void x_ratelimit(const sharp_token_bucket_t *b, char buf[3][24], const char *out[6])
{
    uint64_t now = sharp_now_ns();
    snprintf(buf[0], 24, "%.0f", b->max_tokens);
    snprintf(buf[1], 24, "%llu", (unsigned long long)sharp_token_bucket_remaining(b, now));
    /* Envoy: whole milliseconds, divided by 1000 as integers */
    snprintf(buf[2], 24, "%llu",
             (unsigned long long)(sharp_token_bucket_next_token_ns(b, now) / 1000000 / 1000));
    out[0] = "x-ratelimit-limit";
    out[1] = buf[0];
    out[2] = "x-ratelimit-remaining";
    out[3] = buf[1];
    out[4] = "x-ratelimit-reset";
    out[5] = buf[2];
}

/* The bucket a request of `c` takes from: the config's, or with
 * local_rate_limit_per_downstream_connection the connection's, made from
 * the first config that needs one (Envoy keeps one per connection under a
 * single filter state key, whichever config made it). */
static sharp_token_bucket_t *bucket_for(sharp_filter_t *f, const lrl_config_t *c)
{
    if (!c->per_connection) return (sharp_token_bucket_t *)&c->bucket;
    static const char key = 0;
    sharp_token_bucket_t *b = sharp_stream_connection_data(f->stream, &key);
    if (b) return b;
    b = sharp_calloc(1, sizeof *b);
    sharp_token_bucket_init(b, (uint32_t)c->bucket.max_tokens, c->tokens_per_fill, c->fill_interval_ns, sharp_now_ns());
    if (sharp_stream_set_connection_data(f->stream, &key, b, free)) return b;
    free(b);
    return (sharp_token_bucket_t *)&c->bucket;
}

/* The request's descriptors from the route and virtual host rate_limits of
 * the config's stage (Envoy's local filter skips those with a
 * disable_key). */
static void request_descriptors(sharp_filter_t *f, const lrl_config_t *fc, const lrl_config_t *c,
                                sharp_headers_t *h, sharp_rl_descriptors_t *out)
{
    sharp_stream_t *s = f->stream;
    const sharp_route_t *r = sharp_stream_route(s);
    if (!r || r->action != SHARP_ROUTE_ACTION_ROUTE) return;
    sharp_rl_input_t in = {
        .headers = h,
        .local_cluster = fc->local_cluster ? fc->local_cluster : "",
        .route_cluster = s->route_cluster,
        .remote_address = sharp_stream_info(s)->downstream_remote_address,
        .dynamic_metadata = sharp_stream_info(s)->dynamic_metadata,
        .route_metadata = r->metadata,
        .locality_metadata = sharp_locality_md_of(sharp_stream_info(s)->upstream_locality_md),
    };
    int vh = r->include_vh_rate_limits ? LRL_VH_INCLUDE : c->vh_rate_limits;
    const sharp_rate_limits_t *levels[2] = {
        r->rate_limits,
        vh == LRL_VH_INCLUDE || (vh == LRL_VH_OVERRIDE && !(r->rate_limits && r->rate_limits->n))
            ? (s->vhost ? s->vhost->rate_limits : NULL)
            : NULL,
    };
    for (int l = 0; l < 2; l++) {
        for (uint32_t i = 0; levels[l] && i < levels[l]->n; i++) {
            const sharp_rate_limit_t *rl = &levels[l]->v[i];
            if (rl->stage != c->stage || rl->disable_key) continue;
            sharp_rate_limit_populate(rl, &in, out);
        }
    }
}

/* Envoy's LocalRateLimiterImpl::requestAllowed with descriptors: each
 * configured descriptor the request has gives a token, the slowest filling
 * first; then the default bucket, when nothing matched or under
 * always_consume_default_token_bucket. *used: the bucket whose state the
 * x-ratelimit headers show (the one that refused, else the first matched,
 * else the default). */
static bool descriptors_allow(sharp_filter_t *f, const lrl_config_t *fc, const lrl_config_t *c,
                              sharp_headers_t *h, sharp_token_bucket_t **used)
{
    sharp_rl_descriptors_t rd = {0};
    request_descriptors(f, fc, c, h, &rd);
    /* one per request descriptor at most (as many as the route's
     * rate_limits): every matched bucket is asked, however many */
    lrl_descriptor_t *stackbuf[16], **matched = rd.n <= 16 ? stackbuf : sharp_calloc(rd.n, sizeof *matched);
    uint32_t n = 0;
    for (uint32_t i = 0; i < rd.n; i++) {
        for (uint32_t k = 0; k < c->ndescs; k++) {
            if (!same_descriptor(&c->descs[k].d, &rd.d[i])) continue;
            matched[n++] = &c->descs[k];
            break;
        }
    }
    sharp_rl_descriptors_free(&rd);
    for (uint32_t i = 1; i < n; i++) /* by fill rate, ascending (few entries: insertion sort) */
        for (uint32_t j = i; j > 0 && matched[j]->fill_rate < matched[j - 1]->fill_rate; j--) {
            lrl_descriptor_t *t = matched[j];
            matched[j] = matched[j - 1];
            matched[j - 1] = t;
        }
    uint64_t now = sharp_now_ns();
    for (uint32_t i = 0; i < n; i++) {
        if (!sharp_token_bucket_consume(&matched[i]->bucket, now)) {
            *used = &matched[i]->bucket;
            if (matched != stackbuf) free(matched);
            return false;
        }
    }
    sharp_token_bucket_t *def = *used;
    if (n) *used = &matched[0]->bucket;
    if (matched != stackbuf) free(matched);
    if ((!n || c->always_consume_default) && def) return sharp_token_bucket_consume(def, now);
    return true;
}

static sharp_filter_status_t lrl_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    (void)end_stream;
    const lrl_config_t *fc = f->config;
    const lrl_config_t *rc = sharp_stream_route_config(f);
    const lrl_config_t *c = rc ? rc : fc;
    lrl_state_t *st = f->state;
    sharp_stats_shard_t *sh = sharp_stream_worker(f->stream)->stats;
    if (!fraction_on(f, c->has_enabled, &c->enabled)) return SHARP_FILTER_CONTINUE;
    const lrl_config_t *sc = stats_of(fc, c);
    sharp_counter_inc(sh, atomic_load_explicit(&sc->st_enabled, memory_order_relaxed));
    sharp_token_bucket_t *b = c->has_bucket ? bucket_for(f, c) : NULL;
    bool allowed = c->ndescs ? descriptors_allow(f, fc, c, h, &b)
                             : !b || sharp_token_bucket_consume(b, sharp_now_ns());
    if (allowed) {
        if (b && c->x_ratelimit_headers) st->used = b;
        sharp_counter_inc(sh, atomic_load_explicit(&sc->st_ok, memory_order_relaxed));
        return SHARP_FILTER_CONTINUE;
    }
    if (c->x_ratelimit_headers) st->used = b;
    sharp_counter_inc(sh, atomic_load_explicit(&sc->st_rate_limited, memory_order_relaxed));
    if (!fraction_on(f, c->has_enforced, &c->enforced)) {
        sharp_header_ops_apply_si(&c->req_ops, h, sharp_stream_info(f->stream));
        return SHARP_FILTER_CONTINUE;
    }
    sharp_counter_inc(sh, atomic_load_explicit(&sc->st_enforced, memory_order_relaxed));
    const char *hdrs[9] = {0};
    char buf[3][24];
    size_t n = 0;
    if (c->x_ratelimit_headers) {
        x_ratelimit(b, buf, hdrs);
        n = 6;
    }
    /* gRPC: Envoy's rate_limited_grpc_status; otherwise the status maps to
     * UNAVAILABLE as for any local reply */
    if (c->resource_exhausted && sharp_grpc_is_request(h)) {
        hdrs[n++] = "grpc-status";
        hdrs[n++] = "8";
    }
    /* the local reply passes only the filters before this one: the
     * x-ratelimit headers go with it here */
    st->used = NULL;
    sharp_stream_send_local_reply_ops(f, c->status, "local_rate_limited", SHARP_RF_RATE_LIMITED, "local_rate_limited",
                                      hdrs, &c->resp_ops);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t lrl_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    (void)end_stream;
    lrl_state_t *st = f->state;
    if (!st->used) return SHARP_FILTER_CONTINUE;
    const char *hdrs[6];
    char buf[3][24];
    x_ratelimit(st->used, buf, hdrs);
    for (int i = 0; i < 6; i += 2) sharp_headers_add_cstr(h, hdrs[i], hdrs[i + 1]);
    return SHARP_FILTER_CONTINUE;
}

const sharp_filter_factory_t sharp_local_ratelimit_filter = {
    .name = "envoy.filters.http.local_ratelimit",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    .config_desc = &envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .state_size = sizeof(lrl_state_t),
    .decode_headers = lrl_decode_headers,
    .encode_headers = lrl_encode_headers,
    .route_type_url = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    .route_config_desc = &envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = config_free,
};

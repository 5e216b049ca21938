/* filter.c: envoy.filters.http.fault, Envoy's fault injection filter.
 *
 * For a request that is a target of the settings (the filter's HTTPFault,
 * or the route's in typed_per_filter_config, which replaces it whole;
 * fault_config.c decides), in Envoy's order: a response rate limit is set
 * up, then a delay holds the request on a deadline of the worker's loop
 * (response flag DI) and, when it ends, an abort may follow; without a
 * delay the abort comes at once. An abort is the local reply "fault filter
 * abort" (details fault_filter_abort, response flag FI) with the HTTP
 * status, or for a gRPC status HTTP 200 whose trailers-only answer carries
 * that grpc-status. Each request counts as one active fault while any of
 * its faults is (a delay until it ends, unless a rate limit was set up; a
 * rate limit or an abort until the stream ends); max_active_faults bounds
 * them across all workers with one atomic count per filter config, which
 * Envoy, too, checks only loosely (no compare-and-swap). A stream reset
 * during the delay stops its deadline in on_destroy, which frees
 * everything.
 *
 * The response rate limit is Envoy's StreamRateLimiter: the response body
 * is taken (SHARP_FILTER_CONSUMED) into a buffer and passed on as a token
 * bucket of kbps KiB per second allows, one deadline every 50 ms. When the
 * buffer holds more than the stream's buffer limit, the router pauses its
 * upstream (sharp_stream_encoder_watermark) until half of it is gone.
 *
 * Stats (http.<stat_prefix>.fault.): delays_injected, aborts_injected,
 * response_rl_injected, faults_overflow, the active_faults gauge, and per
 * x-envoy-downstream-service-cluster <cluster>.delays_injected and
 * <cluster>.aborts_injected unless disable_downstream_cluster_stats. A
 * delay or an abort sets the filter's dynamic metadata namespace (its
 * config name) to filter_metadata, as Envoy does. */
#include "filters/fault/filter.h"
#include "filters/fault/fault_config.h"
#include "http/grpc.h"
#include "log.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fault_config {
    sharp_fault_settings_t *settings;
    _Atomic uint64_t active; /* faults active now, all workers */
    sharp_stats_t *stats;
    char *prefix; /* "http.<stat_prefix>.fault" */
    sharp_stat_id_t st_delays, st_aborts, st_overflow, st_rl, st_active;
} fault_config_t;

typedef struct fault_state {
    sharp_filter_t *f;
    const fault_config_t *fc;
    const sharp_fault_settings_t *s;
    bool active; /* counted in fc->active */
    sharp_deadline_t delay;
    bool has_dc;
    sharp_fault_dc_keys_t dc;
    char *dc_stat; /* the downstream cluster for its stats, NULL: none */
    /* response rate limit */
    bool limiting;
    sharp_fault_bucket_t bucket;
    sharp_sbuf_t buf;
    size_t off;   /* buf[off, len) waits */
    bool saw_end; /* the response's end is in buf */
    bool above;   /* the router was told to pause */
    sharp_deadline_t tick;
} fault_state_t;

static void config_free(void *p)
{
    fault_config_t *c = p;
    if (!c) return;
    sharp_fault_settings_free(c->settings);
    free(c->prefix);
    free(c);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    sharp_fault_pb_t empty = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
    const sharp_fault_pb_t *pb = msg ? (const sharp_fault_pb_t *)msg : &empty;
    sharp_fault_settings_t *s = sharp_fault_settings_create(pb, err, errlen);
    if (!s) return NULL;
    fault_config_t *c = sharp_calloc(1, sizeof *c);
    c->settings = s;
    c->stats = ctx->server->stats;
    sharp_sbuf_t b = {0};
    sharp_sbuf_printf(&b, "http.%s.fault", ctx->stat_prefix ? ctx->stat_prefix : "");
    c->prefix = b.data;
    c->st_delays = sharp_stats_counterf(c->stats, "%s.delays_injected", c->prefix);
    c->st_aborts = sharp_stats_counterf(c->stats, "%s.aborts_injected", c->prefix);
    c->st_overflow = sharp_stats_counterf(c->stats, "%s.faults_overflow", c->prefix);
    c->st_rl = sharp_stats_counterf(c->stats, "%s.response_rl_injected", c->prefix);
    c->st_active = sharp_stats_gaugef(c->stats, "%s.active_faults", c->prefix);
    return c;
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    return sharp_fault_settings_create((const sharp_fault_pb_t *)msg, err, errlen);
}

static void destroy_route_config(void *p)
{
    sharp_fault_settings_free(p);
}

static sharp_stats_shard_t *shard(fault_state_t *st)
{
    return sharp_stream_worker(st->f->stream)->stats;
}

static uint64_t rnd(fault_state_t *st)
{
    return sharp_worker_random(sharp_stream_worker(st->f->stream));
}

/* Envoy's tryIncActiveFaults: one active fault per request, however many
 * faults it gets; the limit is checked only when a fault is to begin. */
static bool try_activate(fault_state_t *st)
{
    if (st->active) return true;
    fault_config_t *fc = (fault_config_t *)st->fc;
    if (atomic_load_explicit(&fc->active, memory_order_relaxed) >= sharp_fault_max_active(st->s)) {
        sharp_counter_inc(shard(st), fc->st_overflow);
        return false;
    }
    atomic_fetch_add_explicit(&fc->active, 1, memory_order_relaxed);
    sharp_gauge_add(shard(st), fc->st_active, 1);
    st->active = true;
    return true;
}

static void deactivate(fault_state_t *st)
{
    if (!st->active) return;
    fault_config_t *fc = (fault_config_t *)st->fc;
    atomic_fetch_sub_explicit(&fc->active, 1, memory_order_relaxed);
    sharp_gauge_add(shard(st), fc->st_active, -1);
    st->active = false;
}

/* <stat_prefix>.fault.<downstream cluster>.<name>: made when first used,
 * as Envoy makes them */
static void count_dc(fault_state_t *st, const char *name)
{
    if (!st->dc_stat) return;
    sharp_stat_id_t id =
        sharp_stats_counterf(st->fc->stats, "%s.%s.%s", st->fc->prefix, st->dc_stat, name);
    sharp_counter_inc(shard(st), id);
}

/* Envoy sets the filter's namespace (its config name) to filter_metadata
 * (an empty struct without it) when a delay or an abort begins. */
static void set_metadata(fault_state_t *st)
{
    const char *ns = st->f->name ? st->f->name : st->f->factory->name;
    sharp_dynamic_metadata_replace(&sharp_stream_info(st->f->stream)->dynamic_metadata, ns,
                                   strlen(ns), &st->s->metadata);
}

static void abort_with(fault_state_t *st, uint32_t http, int64_t grpc)
{
    sharp_counter_inc(shard(st), st->fc->st_aborts);
    count_dc(st, "aborts_injected");
    set_metadata(st);
    /* a gRPC status is sent to gRPC requests only (Envoy's sendLocalReply
     * ignores it for others, which get the HTTP 200) */
    const char *hdrs[3] = {NULL, NULL, NULL};
    char gs[24];
    if (grpc >= 0 && sharp_grpc_is_request(sharp_stream_request_headers(st->f->stream))) {
        snprintf(gs, sizeof gs, "%lld", (long long)grpc);
        hdrs[0] = "grpc-status";
        hdrs[1] = gs;
    }
    sharp_stream_send_local_reply_ex(st->f, http, "fault filter abort", SHARP_RF_FAULT_INJECTED,
                                     "fault_filter_abort", hdrs);
}

static bool maybe_abort(fault_state_t *st, const sharp_headers_t *h)
{
    uint32_t http;
    int64_t grpc;
    if (!sharp_fault_abort(st->s, h, st->has_dc ? &st->dc : NULL, rnd(st), &http, &grpc))
        return false;
    if (!try_activate(st)) return false;
    abort_with(st, http, grpc);
    return true;
}

static void on_delay_end(sharp_deadline_t *d)
{
    fault_state_t *st = sharp_container_of(d, fault_state_t, delay);
    /* delays can be followed by aborts */
    uint32_t http;
    int64_t grpc;
    const sharp_headers_t *h = sharp_stream_request_headers(st->f->stream);
    if (sharp_fault_abort(st->s, h, st->has_dc ? &st->dc : NULL, rnd(st), &http, &grpc)) {
        abort_with(st, http, grpc);
        return;
    }
    /* the delay is over: no longer an active fault unless a rate limit may be */
    if (!st->s->has_rate_limit) deactivate(st);
    sharp_stream_continue_decoding(st->f);
}

static void maybe_rate_limit(fault_state_t *st, const sharp_headers_t *h)
{
    uint64_t kbps;
    if (!sharp_fault_rate(st->s, h, rnd(st), &kbps) || !try_activate(st)) return;
    sharp_counter_inc(shard(st), st->fc->st_rl);
    st->limiting = true;
    sharp_fault_bucket_init(&st->bucket, kbps, sharp_now_ns());
}

static sharp_filter_status_t fault_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                  bool end_stream)
{
    (void)end_stream;
    fault_state_t *st = f->state;
    st->f = f;
    st->fc = f->config;
    const sharp_fault_settings_t *rs = sharp_stream_route_config(f);
    st->s = rs ? rs : st->fc->settings;
    if (!sharp_fault_matches(st->s, h, sharp_stream_route_cluster(f->stream)))
        return SHARP_FILTER_CONTINUE;
    sharp_str_t dc;
    /* the cluster's runtime keys and stats serve delays and aborts only */
    if ((st->s->has_delay || st->s->has_abort) &&
        sharp_headers_get_cstr(h, "x-envoy-downstream-service-cluster", &dc)) {
        st->has_dc = sharp_fault_dc_keys_init(&st->dc, st->s, dc);
        if (dc.len && !st->s->disable_downstream_cluster_stats) {
            st->dc_stat = sharp_calloc(1, dc.len + 1);
            memcpy(st->dc_stat, dc.p, dc.len);
        }
    }
    maybe_rate_limit(st, h);
    uint64_t ms;
    if (sharp_fault_delay(st->s, h, st->has_dc ? &st->dc : NULL, rnd(st), &ms) &&
        try_activate(st)) {
        sharp_debug(http, "fault: delaying request %llums", (unsigned long long)ms);
        sharp_deadline_start(sharp_stream_worker(f->stream), &st->delay, on_delay_end, ms);
        sharp_counter_inc(shard(st), st->fc->st_delays);
        count_dc(st, "delays_injected");
        sharp_stream_info(f->stream)->response_flags |= SHARP_RF_DELAY_INJECTED;
        set_metadata(st);
        return SHARP_FILTER_STOP;
    }
    if (maybe_abort(st, h)) return SHARP_FILTER_STOP;
    return SHARP_FILTER_CONTINUE;
}

/* ---- response rate limit ---- */

static void on_tick(sharp_deadline_t *d)
{
    fault_state_t *st = sharp_container_of(d, fault_state_t, tick);
    size_t pending = st->buf.len - st->off;
    uint64_t take = sharp_fault_bucket_take(&st->bucket, pending, sharp_now_ns());
    bool end = st->saw_end && take == pending;
    /* what is left waits for the next fill */
    if (take < pending)
        sharp_deadline_start(sharp_stream_worker(st->f->stream), &st->tick, on_tick,
                             SHARP_FAULT_FILL_INTERVAL_MS);
    if (!take && !end) return;
    sharp_sbuf_t out = {0};
    if (take) sharp_sbuf_append(&out, st->buf.data + st->off, take);
    st->off += take;
    if (st->off == st->buf.len) {
        st->buf.len = st->off = 0;
    } else if (st->off >= 65536 && st->off * 2 >= st->buf.len) {
        memmove(st->buf.data, st->buf.data + st->off, st->buf.len - st->off);
        st->buf.len -= st->off;
        st->off = 0;
    }
    sharp_filter_t *f = st->f;
    /* Envoy's watermark buffer: low at half the limit */
    if (st->above && st->buf.len - st->off <= sharp_stream_buffer_limit(f->stream) / 2) {
        st->above = false;
        sharp_stream_encoder_watermark(f, false);
    }
    if (end) st->saw_end = false;
    /* the stream may end, and this state go, in here */
    sharp_stream_encode_data(f, out.data, out.len, end);
    sharp_sbuf_free(&out);
}

static sharp_filter_status_t fault_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                               bool end_stream)
{
    fault_state_t *st = f->state;
    if (!st->limiting) return SHARP_FILTER_CONTINUE;
    if (n) sharp_sbuf_append(&st->buf, p, n);
    if (end_stream) st->saw_end = true;
    /* above the limit: the router pauses (this filter is one source of
     * its pause; saying it again changes nothing) */
    if (st->buf.len - st->off > sharp_stream_buffer_limit(f->stream)) {
        st->above = true;
        sharp_stream_encoder_watermark(f, true);
    }
    /* Envoy's writeData: the first pass runs once the stack unwinds */
    if (!sharp_deadline_pending(&st->tick))
        sharp_deadline_start(sharp_stream_worker(f->stream), &st->tick, on_tick, 0);
    return SHARP_FILTER_CONSUMED;
}

static uint64_t fault_buffered_bytes(sharp_filter_t *f)
{
    fault_state_t *st = f->state;
    return st->buf.len - st->off;
}

static void fault_on_destroy(sharp_filter_t *f)
{
    fault_state_t *st = f->state;
    sharp_deadline_stop(&st->delay);
    sharp_deadline_stop(&st->tick);
    sharp_sbuf_free(&st->buf);
    if (st->has_dc) sharp_fault_dc_keys_free(&st->dc);
    free(st->dc_stat);
    if (st->f) deactivate(st);
}

const sharp_filter_factory_t sharp_fault_filter = {
    .name = "envoy.filters.http.fault",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    .config_desc = &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .state_size = sizeof(fault_state_t),
    .decode_headers = fault_decode_headers,
    .encode_data = fault_encode_data,
    .on_destroy = fault_on_destroy,
    .buffered_bytes = fault_buffered_bytes,
    .route_type_url = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    .route_config_desc = &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_route_config,
};

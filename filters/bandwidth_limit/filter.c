/* filter.c: envoy.filters.http.bandwidth_limit, Envoy's bandwidth limit
 * filter.
 *
 * The effective config of a stream is the most specific per-route one
 * (typed_per_filter_config, the same BandwidthLimit message, where
 * limit_kbps is required), else the filter's. When its runtime_enabled
 * flag is on and its enable_mode covers a direction, that direction's body
 * goes through Envoy's StreamRateLimiter: the data is taken
 * (SHARP_FILTER_CONSUMED) into a buffer and passed on as the config's token
 * bucket allows, one pass on a deadline of the worker's loop every
 * fill_interval (the first once the stack unwinds). The bucket holds
 * limit_kbps KiB, starts full and refills at limit_kbps KiB/s; one bucket
 * per config serves all its streams on every worker, so they share the
 * bandwidth, as in Envoy. When a buffer holds more than the stream's buffer
 * limit, the source is paused until half of it is gone: the downstream
 * stops being read (request), the router pauses its upstream (response).
 * Request trailers wait until the body before them is through; response
 * trailers follow the body as the connection manager sends them.
 *
 * With enable_response_trailers the response ends with trailers
 * bandwidth-request-delay-ms and bandwidth-response-delay-ms
 * (response_trailer_prefix and "-" before them), the milliseconds each
 * direction's body took through the filter, each only when above zero.
 *
 * Stats <stat_prefix>.http_bandwidth_limit.* of the effective config
 * (registered on its first stream for a per-route config): counters
 * request_enabled, response_enabled, request_enforced, response_enforced
 * (a pass that left data waiting), request_incoming_total_size,
 * response_incoming_total_size, request_allowed_total_size,
 * response_allowed_total_size; gauges request_pending, response_pending
 * (streams whose body is being limited), request_incoming_size,
 * response_incoming_size (the last data taken), request_allowed_size,
 * response_allowed_size (the last pass); histograms
 * request_transfer_duration, response_transfer_duration (ms). */
#include "filters/bandwidth_limit/filter.h"
#include "filters/bandwidth_limit/bucket.h"
#include "runtime.h"
#include "sbuf.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/bandwidth_limit/v3/bandwidth_limit.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__BandwidthLimit__V3__BandwidthLimit bw_pb_t;

#define BW_REQUEST 1u
#define BW_RESPONSE 2u
#define BW_DEFAULT_FILL_MS 50

enum {
    ST_REQ_ENABLED,
    ST_RESP_ENABLED,
    ST_REQ_ENFORCED,
    ST_RESP_ENFORCED,
    ST_REQ_PENDING,
    ST_RESP_PENDING,
    ST_REQ_INCOMING,
    ST_RESP_INCOMING,
    ST_REQ_ALLOWED,
    ST_RESP_ALLOWED,
    ST_REQ_INCOMING_TOTAL,
    ST_RESP_INCOMING_TOTAL,
    ST_REQ_ALLOWED_TOTAL,
    ST_RESP_ALLOWED_TOTAL,
    ST_REQ_DURATION,
    ST_RESP_DURATION,
    ST_COUNT
};

static const struct {
    const char *name;
    char kind; /* c(ounter), g(auge), h(istogram) */
} stat_names[ST_COUNT] = {
    {"request_enabled", 'c'},
    {"response_enabled", 'c'},
    {"request_enforced", 'c'},
    {"response_enforced", 'c'},
    {"request_pending", 'g'},
    {"response_pending", 'g'},
    {"request_incoming_size", 'g'},
    {"response_incoming_size", 'g'},
    {"request_allowed_size", 'g'},
    {"response_allowed_size", 'g'},
    {"request_incoming_total_size", 'c'},
    {"response_incoming_total_size", 'c'},
    {"request_allowed_total_size", 'c'},
    {"response_allowed_total_size", 'c'},
    {"request_transfer_duration", 'h'},
    {"response_transfer_duration", 'h'},
};

typedef struct bw_config {
    uint32_t mode; /* BW_REQUEST | BW_RESPONSE */
    uint64_t limit_kbps;
    uint64_t fill_ms;
    bool enabled;      /* runtime_enabled's default_value */
    char *enabled_key; /* its runtime_key, NULL: none */
    bool trailers;
    char *req_trailer, *resp_trailer;
    char *stat_prefix;
    sharp_bw_bucket_t bucket;
    sharp_stats_t *stats; /* the filter's config: set; a per-route one: on first use */
    pthread_mutex_t st_mu;
    _Atomic bool st_ready;
    sharp_stat_id_t st[ST_COUNT];
} bw_config_t;

/* One direction's StreamRateLimiter. */
typedef struct bw_dir {
    bool on;
    bool timing; /* the transfer began and has not finished */
    bool saw_end, saw_trailers;
    bool above; /* the source was paused */
    uint64_t start_ns;
    sharp_sbuf_t buf;
    size_t off; /* buf[off, len) waits */
    sharp_deadline_t tick;
} bw_dir_t;

typedef struct bw_state {
    sharp_filter_t *f;
    bw_config_t *c; /* effective config */
    bw_dir_t req, resp;
    uint64_t req_ms; /* the request body's transfer time, once finished */
} bw_state_t;

static void config_free(void *p)
{
    bw_config_t *c = p;
    if (!c) return;
    sharp_bw_bucket_destroy(&c->bucket);
    pthread_mutex_destroy(&c->st_mu);
    free(c->enabled_key);
    free(c->req_trailer);
    free(c->resp_trailer);
    free(c->stat_prefix);
    free(c);
}

/* response_trailer_prefix: HTTP_HEADER_NAME with strict false, i.e. no
 * NUL, CR or LF (Envoy's validation). */
static bool header_name_ok(const char *s)
{
    return !strpbrk(s, "\r\n");
}

static char *trailer_name(const char *prefix, const char *name)
{
    sharp_sbuf_t b = {0};
    if (prefix && prefix[0])
        sharp_sbuf_printf(&b, "%s-%s", prefix, name);
    else
        sharp_sbuf_printf(&b, "%s", name);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] >= 'A' && b.data[i] <= 'Z') b.data[i] = (char)(b.data[i] - 'A' + 'a');
    return b.data;
}

static bw_config_t *config_build(const bw_pb_t *pb, bool per_route, char *err, size_t errlen)
{
    if (!pb->stat_prefix || !pb->stat_prefix[0]) {
        snprintf(err, errlen, "stat_prefix: value length must be at least 1 characters");
        return NULL;
    }
    if (per_route && !pb->limit_kbps) {
        snprintf(err, errlen,
                 "bandwidthlimitfilter: limit must be set for per route filter config");
        return NULL;
    }
    if (pb->response_trailer_prefix && !header_name_ok(pb->response_trailer_prefix)) {
        snprintf(err, errlen, "response_trailer_prefix: not a valid HTTP header name");
        return NULL;
    }
    uint64_t fill_ms = BW_DEFAULT_FILL_MS;
    if (pb->fill_interval)
        fill_ms = (uint64_t)pb->fill_interval->seconds * 1000 +
                  (uint64_t)pb->fill_interval->nanos / 1000000;
    bw_config_t *c = sharp_calloc(1, sizeof *c);
    c->mode = (uint32_t)pb->enable_mode & (BW_REQUEST | BW_RESPONSE);
    c->limit_kbps = pb->limit_kbps ? pb->limit_kbps->value : 0;
    c->fill_ms = fill_ms;
    const Envoy__Config__Core__V3__RuntimeFeatureFlag *ff = pb->runtime_enabled;
    c->enabled = !ff || !ff->default_value || ff->default_value->value;
    if (ff && ff->runtime_key && ff->runtime_key[0]) c->enabled_key = sharp_strdup(ff->runtime_key);
    c->trailers = pb->enable_response_trailers;
    c->req_trailer = trailer_name(pb->response_trailer_prefix, "bandwidth-request-delay-ms");
    c->resp_trailer = trailer_name(pb->response_trailer_prefix, "bandwidth-response-delay-ms");
    c->stat_prefix = sharp_strdup(pb->stat_prefix);
    sharp_bw_bucket_init(&c->bucket, c->limit_kbps, sharp_now_ns());
    pthread_mutex_init(&c->st_mu, NULL);
    return c;
}

static void register_stats(bw_config_t *c, sharp_stats_t *s)
{
    pthread_mutex_lock(&c->st_mu);
    if (!atomic_load_explicit(&c->st_ready, memory_order_acquire)) {
        c->stats = s;
        for (int i = 0; i < ST_COUNT; i++) {
            const char *n = stat_names[i].name;
            const char *p = c->stat_prefix;
            switch (stat_names[i].kind) {
            case 'c':
                c->st[i] = sharp_stats_counterf(s, "%s.http_bandwidth_limit.%s", p, n);
                break;
            case 'g':
                c->st[i] = sharp_stats_gaugef(s, "%s.http_bandwidth_limit.%s", p, n);
                break;
            default:
                c->st[i] = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS,
                                                  "%s.http_bandwidth_limit.%s", p, n);
            }
        }
        atomic_store_explicit(&c->st_ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&c->st_mu);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    if (!msg) {
        snprintf(err, errlen, "stat_prefix: value length must be at least 1 characters");
        return NULL;
    }
    bw_config_t *c = config_build((const bw_pb_t *)msg, false, err, errlen);
    if (c) register_stats(c, ctx->server->stats);
    return c;
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    return config_build((const bw_pb_t *)msg, true, err, errlen);
}

static sharp_stats_shard_t *shard(bw_state_t *st)
{
    return sharp_stream_worker(st->f->stream)->stats;
}

static void count(bw_state_t *st, int id, uint64_t n)
{
    sharp_counter_add(shard(st), st->c->st[id], n);
}

/* The stream's config, resolved once, with its stats registered. */
static bw_config_t *config_of(sharp_filter_t *f)
{
    bw_state_t *st = f->state;
    if (st->c) return st->c;
    st->f = f;
    bw_config_t *c = (bw_config_t *)sharp_stream_route_config(f);
    if (!c) c = (bw_config_t *)f->config;
    if (!atomic_load_explicit(&c->st_ready, memory_order_acquire))
        register_stats(c, ((const bw_config_t *)f->config)->stats);
    st->c = c;
    return c;
}

static bool enabled(const bw_config_t *c)
{
    return c->enabled_key ? sharp_runtime_get_bool(c->enabled_key, c->enabled) : c->enabled;
}

/* Envoy's updateStatsOnDecodeFinish/updateStatsOnEncodeFinish. */
static uint64_t finish_timing(bw_state_t *st, bw_dir_t *d, bool response)
{
    if (!d->timing) return 0;
    d->timing = false;
    uint64_t ms = (sharp_now_ns() - d->start_ns) / 1000000;
    sharp_histogram_record(shard(st), st->c->st[response ? ST_RESP_DURATION : ST_REQ_DURATION], ms);
    sharp_gauge_add(shard(st), st->c->st[response ? ST_RESP_PENDING : ST_REQ_PENDING], -1);
    return ms;
}

static void set_trailers(bw_state_t *st, uint64_t resp_ms)
{
    sharp_headers_t *t = sharp_stream_response_trailers(st->f->stream);
    char v[24];
    if (st->req_ms > 0) {
        snprintf(v, sizeof v, "%llu", (unsigned long long)st->req_ms);
        sharp_headers_set_cstr(t, st->c->req_trailer, v);
    }
    if (resp_ms > 0) {
        snprintf(v, sizeof v, "%llu", (unsigned long long)resp_ms);
        sharp_headers_set_cstr(t, st->c->resp_trailer, v);
    }
}

static void pause_source(bw_state_t *st, bool response, bool pause)
{
    if (response)
        sharp_stream_encoder_watermark(st->f, pause);
    else
        sharp_stream_decoder_watermark(st->f, pause); /* the filters before it (a decompressor) pause too */
}

/* Takes `take` bytes off the front of d's buffer into out. */
static void drain(bw_dir_t *d, sharp_sbuf_t *out, uint64_t take)
{
    if (take) sharp_sbuf_append(out, d->buf.data + d->off, take);
    d->off += take;
    if (d->off == d->buf.len) {
        d->buf.len = d->off = 0;
    } else if (d->off >= 65536 && d->off * 2 >= d->buf.len) {
        memmove(d->buf.data, d->buf.data + d->off, d->buf.len - d->off);
        d->buf.len -= d->off;
        d->off = 0;
    }
}

static void on_req_tick(sharp_deadline_t *dl);
static void on_resp_tick(sharp_deadline_t *dl);

/* Envoy's StreamRateLimiter::onTokenTimer. */
static void tick(bw_state_t *st, bool response)
{
    bw_dir_t *d = response ? &st->resp : &st->req;
    sharp_filter_t *f = st->f;
    size_t pending = d->buf.len - d->off;
    uint64_t take = sharp_bw_bucket_take(&st->c->bucket, pending, sharp_now_ns());
    size_t left = pending - take;
    sharp_gauge_set(st->c->stats, st->c->st[response ? ST_RESP_ALLOWED : ST_REQ_ALLOWED],
                    (int64_t)take);
    count(st, response ? ST_RESP_ALLOWED_TOTAL : ST_REQ_ALLOWED_TOTAL, take);
    if (left) {
        count(st, response ? ST_RESP_ENFORCED : ST_REQ_ENFORCED, 1);
        sharp_deadline_start(sharp_stream_worker(f->stream), &d->tick,
                             response ? on_resp_tick : on_req_tick, st->c->fill_ms);
    }
    sharp_sbuf_t out = {0};
    drain(d, &out, take);
    /* Envoy's watermark buffer: low at half the limit */
    if (d->above && left <= sharp_stream_buffer_limit(f->stream) / 2) {
        d->above = false;
        pause_source(st, response, false);
    }
    bool done = d->saw_end && !left;
    if (!response) {
        bool end = done && !d->saw_trailers;
        if (done) st->req_ms = finish_timing(st, d, false);
        if (take || end) sharp_stream_decode_data(f, out.data, out.len, end);
        sharp_sbuf_free(&out);
        /* the trailers held behind the body go on */
        if (done && d->saw_trailers) {
            d->saw_trailers = false;
            sharp_stream_continue_decoding(f);
        }
        if (done) d->saw_end = false;
        return;
    }
    if (done) {
        d->saw_end = false;
        uint64_t ms = finish_timing(st, d, true);
        if (st->c->trailers) {
            set_trailers(st, ms);
            if (!sharp_stream_has_response_trailers(f->stream) &&
                sharp_stream_response_trailers(f->stream)->n > 0) {
                /* the added trailers end the response (Envoy's addEncodedTrailers) */
                sharp_stream_encode_data(f, out.data, out.len, false);
                sharp_sbuf_free(&out);
                sharp_stream_encode_trailers(f, sharp_stream_response_trailers(f->stream));
                return;
            }
        }
    }
    /* the stream may end in here; its state stays until the loop turns */
    if (take || done) sharp_stream_encode_data(f, out.data, out.len, done);
    sharp_sbuf_free(&out);
}

static void on_req_tick(sharp_deadline_t *dl)
{
    tick(sharp_container_of(dl, bw_state_t, req.tick), false);
}

static void on_resp_tick(sharp_deadline_t *dl)
{
    tick(sharp_container_of(dl, bw_state_t, resp.tick), true);
}

/* Envoy's writeData, after decodeData/encodeData counted the data. */
static void write_data(bw_state_t *st, bool response, const char *p, size_t n, bool end)
{
    bw_dir_t *d = response ? &st->resp : &st->req;
    if (!d->timing && !d->saw_end) {
        d->timing = true;
        d->start_ns = sharp_now_ns();
        sharp_gauge_add(shard(st), st->c->st[response ? ST_RESP_PENDING : ST_REQ_PENDING], 1);
    }
    sharp_gauge_set(st->c->stats, st->c->st[response ? ST_RESP_INCOMING : ST_REQ_INCOMING],
                    (int64_t)n);
    count(st, response ? ST_RESP_INCOMING_TOTAL : ST_REQ_INCOMING_TOTAL, n);
    if (n) sharp_sbuf_append(&d->buf, p, n);
    if (end) d->saw_end = true;
    /* above the limit: the source pauses (this filter is one source of
     * its pause; saying it again changes nothing) */
    if (d->buf.len - d->off > sharp_stream_buffer_limit(st->f->stream)) {
        d->above = true;
        pause_source(st, response, true);
    }
    if (!sharp_deadline_pending(&d->tick))
        sharp_deadline_start(sharp_stream_worker(st->f->stream), &d->tick,
                             response ? on_resp_tick : on_req_tick, 0);
}

static sharp_filter_status_t bw_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)h;
    (void)end_stream;
    bw_state_t *st = f->state;
    bw_config_t *c = config_of(f);
    if (enabled(c) && (c->mode & BW_REQUEST)) {
        count(st, ST_REQ_ENABLED, 1);
        st->req.on = true;
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t bw_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    bw_state_t *st = f->state;
    if (!st->req.on) return SHARP_FILTER_CONTINUE;
    write_data(st, false, p, n, end_stream);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t bw_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    (void)t;
    bw_state_t *st = f->state;
    if (!st->req.on) return SHARP_FILTER_CONTINUE;
    /* Envoy's onTrailers: they wait for the body still held */
    if (st->req.buf.len - st->req.off > 0 || sharp_deadline_pending(&st->req.tick)) {
        st->req.saw_end = true;
        st->req.saw_trailers = true;
        return SHARP_FILTER_STOP;
    }
    st->req_ms = finish_timing(st, &st->req, false);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t bw_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)h;
    (void)end_stream;
    bw_state_t *st = f->state;
    bw_config_t *c = config_of(f);
    if (enabled(c) && (c->mode & BW_RESPONSE)) {
        count(st, ST_RESP_ENABLED, 1);
        st->resp.on = true;
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t bw_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    bw_state_t *st = f->state;
    if (!st->resp.on) return SHARP_FILTER_CONTINUE;
    write_data(st, true, p, n, end_stream);
    return SHARP_FILTER_CONSUMED;
}

static uint64_t bw_buffered_bytes(sharp_filter_t *f)
{
    bw_state_t *st = f->state;
    return (st->req.buf.len - st->req.off) + (st->resp.buf.len - st->resp.off);
}

static void bw_on_destroy(sharp_filter_t *f)
{
    bw_state_t *st = f->state;
    bw_dir_t *dirs[2] = {&st->req, &st->resp};
    for (int i = 0; i < 2; i++) {
        sharp_deadline_stop(&dirs[i]->tick);
        sharp_sbuf_free(&dirs[i]->buf);
        if (st->c && dirs[i]->timing) {
            /* a stream reset mid-transfer leaves the pending gauge */
            dirs[i]->timing = false;
            sharp_gauge_add(shard(st), st->c->st[i ? ST_RESP_PENDING : ST_REQ_PENDING], -1);
        }
    }
}

const sharp_filter_factory_t sharp_bandwidth_limit_filter = {
    .name = "envoy.filters.http.bandwidth_limit",
    .type_url =
        "type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit",
    .config_desc =
        &envoy__extensions__filters__http__bandwidth_limit__v3__bandwidth_limit__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .state_size = sizeof(bw_state_t),
    .decode_headers = bw_decode_headers,
    .decode_data = bw_decode_data,
    .decode_trailers = bw_decode_trailers,
    .encode_headers = bw_encode_headers,
    .encode_data = bw_encode_data,
    .on_destroy = bw_on_destroy,
    .buffered_bytes = bw_buffered_bytes,
    .route_type_url =
        "type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit",
    .route_config_desc =
        &envoy__extensions__filters__http__bandwidth_limit__v3__bandwidth_limit__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = config_free,
};

/* filter.c: envoy.filters.http.decompressor, Envoy's decompressor filter
 * with the gzip and brotli libraries (filters/compressor/decodec.c).
 *
 * Request side (decode_headers): when response decompression is enabled
 * (its runtime flag) and advertise_accept_encoding (true when unset), the
 * library's encoding is added to Accept-Encoding (Envoy's
 * addEncodingToAcceptEncoding: moved to the end, its q-value dropped), so
 * the upstream may compress what this filter will decompress. A request
 * with a body is then decompressed when the request direction is enabled,
 * cache-control has no no-transform (unless ignore_no_transform_header)
 * and the first coding of content-encoding is the library's: content-length
 * goes (the codec frames the new body), the first coding is taken off
 * content-encoding (the header goes with the last one). The response side
 * (encode_headers) makes the same decision for a response with a body.
 *
 * Bodies are decompressed as they flow, in steps of bounded output passed
 * on at once; each data event's output is bounded to max_inflate_ratio
 * times its input (decodec.h): a decompression bomb is cut there, counted
 * as the library's error (zlib_data_error, brotli_error), and the rest of
 * the body is dropped, as Envoy does. Back-pressure: while request data
 * held after the filter is above the stream's buffer limit
 * (sharp_stream_decoder_above_limit), or the downstream is above its write
 * watermark for responses, the filter inflates nothing and keeps the
 * compressed input (pausing the peer once that is above the limit too);
 * on_decoder_drained and on_downstream_watermark resume it. So a peer's
 * in-flight window of compressed data never becomes ratio times as much
 * held memory.
 * A truncated or corrupt body is no error of the stream: what could be
 * decompressed goes on and the library's error stat counts the rest.
 *
 * At the end of a decompressed body, trailers carry the byte counts
 * (x-envoy-decompressor-<library name>-compressed-bytes and
 * -uncompressed-bytes), added to the stream's trailers or ending it with
 * new ones, as Envoy's ByteTracker (an HTTP/1 peer does not get them).
 *
 * Stats are Envoy's: http.<stat_prefix>.decompressor.<library name>.
 * <library>.{request,response}.{decompressed,not_decompressed,
 * total_compressed_bytes,total_uncompressed_bytes} and the library's
 * ...<library>.decompressor_library.{zlib_*,brotli_error}. */
#include "filters/decompressor/filter.h"
#include "filters/compressor/decodec.h"
#include "filters/compressor/negotiate.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/decompressor/v3/decompressor.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

typedef Envoy__Extensions__Filters__Http__Decompressor__V3__Decompressor decomp_pb_t;
typedef Envoy__Extensions__Filters__Http__Decompressor__V3__Decompressor__CommonDirectionConfig
    common_pb_t;

typedef struct direction {
    bool enabled;      /* enabled.default_value (true when unset) */
    char *enabled_key; /* enabled.runtime_key: the runtime's value wins */
    bool ignore_no_transform;
    sharp_stat_id_t decompressed, not_decompressed, total_uncompressed_bytes,
        total_compressed_bytes;
} direction_t;

typedef struct decomp_config {
    sharp_decompressor_lib_t lib;
    direction_t req, resp;
    bool advertise_accept_encoding;
    char *trailer_compressed, *trailer_uncompressed;
    /* the library's: zlib_errno, _stream_error, _data_error, _mem_error,
     * _buf_error, _version_error; brotli_error */
    sharp_stat_id_t zlib_errno, zlib_stream_error, zlib_data_error, zlib_mem_error, zlib_buf_error,
        zlib_version_error, brotli_error;
} decomp_config_t;

typedef struct side {
    sharp_decompressor_t *d;
    uint64_t compressed, uncompressed; /* Envoy's ByteTracker */
    /* compressed input not yet taken, held while what it would make has
     * nowhere to go */
    sharp_sbuf_t in;
    size_t in_off;
    /* the data events `in` holds, in order (small ones merged, as one read
     * would have brought them): the ratio bounds each one's output, as
     * when it is decompressed at once */
    struct held_event {
        size_t left, len;
    } *ev;
    uint32_t nev, capev;
    bool ev_started;     /* ev[0] is being taken: allowance is its */
    uint64_t allowance;  /* output the current event still allows (the ratio) */
    bool end;            /* the body ended: after `in`, the byte counts */
    bool paused_peer;    /* `in` is above the buffer limit: the peer is paused */
    bool pumping;        /* in pump (the output's way on may call back) */
    sharp_headers_t *trailers; /* the stream's trailers, held behind `in` */
} side_t;

typedef struct decomp_state {
    side_t req, resp;
    sharp_sbuf_t out;  /* one step's decompressed output */
} decomp_state_t;

/* ---- header rules (exported for the unit tests) ---- */

static sharp_str_t trim(sharp_str_t s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.len--;
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

void sharp_decomp_accept_encoding(sharp_str_t value, const char *encoding, sharp_sbuf_t *out)
{
    size_t elen = strlen(encoding);
    const char *p = value.p, *end = value.p + value.len;
    while (p <= end && value.len) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        sharp_str_t entry = trim((sharp_str_t){p, (size_t)(stop - p)});
        if (entry.len) {
            /* the coding: before any ';', trimmed; compared exactly */
            const char *semi = memchr(entry.p, ';', entry.len);
            sharp_str_t coding =
                trim((sharp_str_t){entry.p, semi ? (size_t)(semi - entry.p) : entry.len});
            if (!sharp_str_eq(coding, encoding, elen)) {
                if (out->len) sharp_sbuf_append(out, ",", 1);
                sharp_sbuf_append(out, entry.p, entry.len);
            }
        }
        if (!comma) break;
        p = comma + 1;
    }
    if (out->len) sharp_sbuf_append(out, ",", 1);
    sharp_sbuf_append(out, encoding, elen);
}

bool sharp_decomp_encoding_matches(sharp_str_t value, const char *encoding)
{
    const char *comma = memchr(value.p, ',', value.len);
    sharp_str_t first = trim((sharp_str_t){value.p, comma ? (size_t)(comma - value.p) : value.len});
    size_t elen = strlen(encoding);
    return first.len == elen && strncasecmp(first.p, encoding, elen) == 0;
}

bool sharp_decomp_remaining_codings(sharp_str_t value, sharp_str_t *rest)
{
    sharp_str_t all = trim(value);
    const char *comma = memchr(all.p, ',', all.len);
    if (!comma) return false;
    *rest = trim((sharp_str_t){comma + 1, (size_t)(all.p + all.len - comma - 1)});
    return true;
}

/* ---- config ---- */

static void destroy_config(void *p)
{
    decomp_config_t *c = p;
    if (!c) return;
    free(c->req.enabled_key);
    free(c->resp.enabled_key);
    free(c->trailer_compressed);
    free(c->trailer_uncompressed);
    free(c);
}

static void direction_init(direction_t *d, const common_pb_t *cc, sharp_stats_t *s,
                           const char *prefix, const char *dir)
{
    const Envoy__Config__Core__V3__RuntimeFeatureFlag *en = cc ? cc->enabled : NULL;
    d->enabled = !en || !en->default_value || en->default_value->value;
    if (en && en->runtime_key && en->runtime_key[0]) d->enabled_key = sharp_strdup(en->runtime_key);
    d->ignore_no_transform = cc && cc->ignore_no_transform_header;
    d->decompressed = sharp_stats_counterf(s, "%s%s.decompressed", prefix, dir);
    d->not_decompressed = sharp_stats_counterf(s, "%s%s.not_decompressed", prefix, dir);
    d->total_uncompressed_bytes =
        sharp_stats_counterf(s, "%s%s.total_uncompressed_bytes", prefix, dir);
    d->total_compressed_bytes = sharp_stats_counterf(s, "%s%s.total_compressed_bytes", prefix, dir);
}

static char *dup_printf(const char *fmt, const char *a)
{
    int n = snprintf(NULL, 0, fmt, a);
    char *s = sharp_calloc(1, (size_t)n + 1);
    snprintf(s, (size_t)n + 1, fmt, a);
    return s;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    const decomp_pb_t *pb = (const decomp_pb_t *)msg;
    if (!pb || !pb->decompressor_library) {
        snprintf(err, errlen, "decompressor_library: is required");
        return NULL;
    }
    decomp_config_t *c = sharp_calloc(1, sizeof *c);
    if (sharp_decompressor_lib_init(&c->lib, pb->decompressor_library, err, errlen) < 0) {
        destroy_config(c);
        return NULL;
    }
    const char *name = pb->decompressor_library->name ? pb->decompressor_library->name : "";
    sharp_stats_t *s = ctx->server->stats;
    /* http.<stat_prefix>.decompressor.<library name>.<library>. */
    char prefix[512];
    snprintf(prefix, sizeof prefix, "http.%s.decompressor.%s.%s.", ctx->stat_prefix, name,
             c->lib.stats_prefix);
    const Envoy__Extensions__Filters__Http__Decompressor__V3__Decompressor__RequestDirectionConfig
        *rq = pb->request_direction_config;
    direction_init(&c->req, rq ? rq->common_config : NULL, s, prefix, "request");
    direction_init(&c->resp,
                   pb->response_direction_config ? pb->response_direction_config->common_config
                                                 : NULL,
                   s, prefix, "response");
    c->advertise_accept_encoding =
        !rq || !rq->advertise_accept_encoding || rq->advertise_accept_encoding->value;
    c->trailer_compressed = dup_printf("x-envoy-decompressor-%s-compressed-bytes", name);
    c->trailer_uncompressed = dup_printf("x-envoy-decompressor-%s-uncompressed-bytes", name);
    if (c->lib.kind == SHARP_DECOMPRESSOR_GZIP) {
        c->zlib_errno = sharp_stats_counterf(s, "%sdecompressor_library.zlib_errno", prefix);
        c->zlib_stream_error =
            sharp_stats_counterf(s, "%sdecompressor_library.zlib_stream_error", prefix);
        c->zlib_data_error =
            sharp_stats_counterf(s, "%sdecompressor_library.zlib_data_error", prefix);
        c->zlib_mem_error =
            sharp_stats_counterf(s, "%sdecompressor_library.zlib_mem_error", prefix);
        c->zlib_buf_error =
            sharp_stats_counterf(s, "%sdecompressor_library.zlib_buf_error", prefix);
        c->zlib_version_error =
            sharp_stats_counterf(s, "%sdecompressor_library.zlib_version_error", prefix);
    } else {
        c->brotli_error = sharp_stats_counterf(s, "%sdecompressor_library.brotli_error", prefix);
    }
    return c;
}

/* ---- decisions ---- */

static sharp_stats_shard_t *shard(sharp_filter_t *f)
{
    return sharp_stream_worker(f->stream)->stats;
}

static bool direction_enabled(const direction_t *d)
{
    return sharp_runtime_get_bool(d->enabled_key, d->enabled);
}

/* Every line of a header, joined by ',' (as Envoy keeps these headers). */
static bool header_joined(const sharp_headers_t *h, const char *name, sharp_sbuf_t *out)
{
    size_t nl = strlen(name);
    bool any = false;
    for (int i = sharp_headers_find(h, name, nl, 0); i >= 0;
         i = sharp_headers_find(h, name, nl, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(h, (uint32_t)i);
        if (any) sharp_sbuf_append(out, ",", 1);
        sharp_sbuf_append(out, v.p, v.len);
        any = true;
    }
    return any;
}

/* Envoy's maybeInitDecompress for one direction's headers. */
static void maybe_init(sharp_filter_t *f, const direction_t *d, side_t *side, sharp_headers_t *h)
{
    const decomp_config_t *c = f->config;
    sharp_sbuf_t ce = {0}, cc = {0};
    bool has_ce = header_joined(h, "content-encoding", &ce);
    bool no_transform =
        header_joined(h, "cache-control", &cc) &&
        sharp_ae_has_token((sharp_str_t){cc.data ? cc.data : "", cc.len}, "no-transform", true);
    sharp_str_t cev = {ce.data ? ce.data : "", ce.len};
    if (direction_enabled(d) && (!no_transform || d->ignore_no_transform) && has_ce &&
        sharp_decomp_encoding_matches(cev, c->lib.encoding) &&
        (side->d = sharp_decompressor_new(&c->lib))) {
        sharp_counter_inc(shard(f), d->decompressed);
        sharp_headers_remove_cstr(h, "content-length");
        sharp_str_t rest;
        if (sharp_decomp_remaining_codings(cev, &rest)) {
            char *v = sharp_strndup(rest.p, rest.len); /* cev points into ce, not into h */
            sharp_headers_set(h, "content-encoding", 16, v, rest.len);
            free(v);
        } else {
            sharp_headers_remove_cstr(h, "content-encoding");
        }
    } else {
        sharp_counter_inc(shard(f), d->not_decompressed);
    }
    sharp_sbuf_free(&ce);
    sharp_sbuf_free(&cc);
}

static void collect(void *arg, const char *p, size_t n)
{
    sharp_sbuf_append(arg, p, n);
}

/* Counts a step's result: the library's error stat past a bomb or an
 * error. */
static void count_result(sharp_filter_t *f, sharp_decompress_result_t r, int zerr)
{
    const decomp_config_t *c = f->config;
    if (r == SHARP_DECOMPRESS_OK) return;
    sharp_stats_shard_t *sh = shard(f);
    if (c->lib.kind == SHARP_DECOMPRESSOR_BROTLI) {
        sharp_counter_inc(sh, c->brotli_error);
        return;
    }
    /* a bomb counts as a data error, as in Envoy */
    sharp_stat_id_t id = c->zlib_data_error;
    if (r == SHARP_DECOMPRESS_ERROR) {
        switch (zerr) {
        case Z_ERRNO:
            id = c->zlib_errno;
            break;
        case Z_STREAM_ERROR:
            id = c->zlib_stream_error;
            break;
        case Z_MEM_ERROR:
            id = c->zlib_mem_error;
            break;
        case Z_BUF_ERROR:
            id = c->zlib_buf_error;
            break;
        case Z_VERSION_ERROR:
            id = c->zlib_version_error;
            break;
        default:
            break;
        }
    }
    sharp_counter_inc(sh, id);
}

/* Envoy's ByteTracker::reportTotalBytes: appended to the trailers. */
static void report_bytes(const decomp_config_t *c, const side_t *side, sharp_headers_t *t)
{
    char num[21];
    size_t n = sharp_u64_to_str(side->compressed, num);
    sharp_headers_add(t, c->trailer_compressed, strlen(c->trailer_compressed), num, n);
    n = sharp_u64_to_str(side->uncompressed, num);
    sharp_headers_add(t, c->trailer_uncompressed, strlen(c->trailer_uncompressed), num, n);
}

/* The step's output is large only for a large limit: a buffer grown by
 * one is given back rather than kept for the stream's life. */
static void release_out(decomp_state_t *st)
{
    if (st->out.cap > 256 * 1024) sharp_sbuf_free(&st->out);
}

/* Whether what this side makes has nowhere to go now: request data held
 * after the filter above the stream's buffer limit, or a response-side
 * pause (a downstream above its write watermark, a filter before this one
 * holding response data above the limit). */
static bool side_blocked(sharp_filter_t *f, bool req)
{
    return req ? sharp_stream_decoder_above_limit(f) : sharp_stream_encoder_paused(f);
}

/* The peer (the downstream for requests, the upstream through the router
 * for responses) is paused while the compressed input held is above the
 * buffer limit, and resumed once it is taken. */
static void pause_peer(sharp_filter_t *f, bool req, side_t *side, bool pause)
{
    if (side->paused_peer == pause) return;
    side->paused_peer = pause;
    if (req) sharp_stream_read_disable(f, pause);
    else sharp_stream_encoder_watermark(f, pause);
}

/* Keeps n bytes of a data event not taken yet, behind those held. */
static void hold(side_t *side, const char *p, size_t n)
{
    if (!n) return;
    sharp_sbuf_append(&side->in, p, n);
    struct held_event *last = side->nev ? &side->ev[side->nev - 1] : NULL;
    if (last && last->len < 4096 && !(side->nev == 1 && side->ev_started)) {
        last->len += n;
        last->left += n;
        return;
    }
    if (side->nev == side->capev) {
        side->capev = side->capev ? side->capev * 2 : 4;
        side->ev = sharp_realloc(side->ev, side->capev * sizeof *side->ev);
    }
    side->ev[side->nev++] = (struct held_event){n, n};
}

/* Decompresses what the side holds, then the n bytes at p, in steps of a
 * bounded output, each passed on at once; stops while the output has
 * nowhere to go (side_blocked) and keeps the input not taken. So a stream
 * pins at most its buffer limit of output held after the filter, one
 * step, and the compressed input held here, whatever the ratio. At the
 * body's end, once all is taken, the byte counts go in trailers. */
static void pump(sharp_filter_t *f, bool req, const char *p, size_t n)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    side_t *side = req ? &st->req : &st->resp;
    const direction_t *d = req ? &c->req : &c->resp;
    /* the event goes behind what is held (a call back from our own
     * output's way on included): the loop below takes it in order */
    hold(side, p, n);
    if (side->pumping) return;
    side->pumping = true;
    uint32_t limit = sharp_stream_buffer_limit(f->stream);
    uint64_t step = SHARP_MAX((uint64_t)c->lib.chunk_size, SHARP_MIN((uint64_t)limit, 64 * 1024));
    while (side->d && !side_blocked(f, req)) {
        const char *src = NULL;
        size_t avail = 0;
        if (sharp_decompressor_has_more(side->d)) {
            /* output of input already taken comes first */
        } else if (side->nev && side->ev_started && side->ev[0].left) {
            src = side->in.data + side->in_off;
            avail = side->ev[0].left;
        } else if (side->nev && side->ev_started) {
            /* the current event is all taken: the next one */
            memmove(side->ev, side->ev + 1, (side->nev - 1) * sizeof *side->ev);
            side->nev--;
            side->ev_started = false;
            side->allowance = 0;
            continue;
        } else if (side->nev) {
            side->ev_started = true;
            side->allowance = (uint64_t)c->lib.max_inflate_ratio * side->ev[0].len;
            continue;
        } else {
            break;
        }
        sharp_sbuf_reset(&st->out);
        size_t used = 0;
        int zerr = 0;
        sharp_decompress_result_t r = sharp_decompressor_decompress_some(side->d, src, avail, &used, step,
                                                                         &side->allowance, collect, &st->out, &zerr);
        if (src) {
            side->in_off += used;
            side->ev[0].left -= used;
        }
        side->uncompressed += st->out.len;
        sharp_counter_add(shard(f), d->total_uncompressed_bytes, st->out.len);
        count_result(f, r, zerr);
        if (st->out.len) {
            if (req) sharp_stream_decode_data(f, st->out.data, st->out.len, false);
            else sharp_stream_encode_data(f, st->out.data, st->out.len, false);
        }
        release_out(st);
    }
    if (!side->d) {
        /* done (or ended): what is held is dropped */
        side->nev = 0;
        side->ev_started = false;
        sharp_sbuf_reset(&side->in);
        side->in_off = 0;
    }
    if (side->in_off == side->in.len) {
        sharp_sbuf_reset(&side->in);
        side->in_off = 0;
        if (side->in.cap > 64 * 1024) sharp_sbuf_free(&side->in);
    } else if (side->in_off > side->in.len / 2) {
        /* taken bytes go once they are most of it: each byte moves O(1) times */
        memmove(side->in.data, side->in.data + side->in_off, side->in.len - side->in_off);
        side->in.len -= side->in_off;
        side->in_off = 0;
    }
    side->pumping = false;
    size_t held = side->in.len - side->in_off;
    pause_peer(f, req, side, held > limit);
    if (!side->d || held || !side->end || sharp_decompressor_has_more(side->d)) return;
    /* all taken: the body ends with the byte counts, in the trailers it
     * had or in new ones */
    sharp_headers_t own, *t = side->trailers;
    if (!t) {
        sharp_headers_init(&own);
        t = &own;
    }
    report_bytes(c, side, t);
    sharp_decompressor_free(side->d);
    side->d = NULL;
    side->end = false;
    side->trailers = NULL;
    /* the stream may have been reset by the data: the trailers' way checks */
    if (req) sharp_stream_decode_trailers(f, t);
    else sharp_stream_encode_trailers(f, t);
    if (t == &own) sharp_headers_free(&own);
}

/* A data event of a decompressed body. */
static sharp_filter_status_t side_data(sharp_filter_t *f, bool req, const char *p, size_t n, bool end_stream)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    side_t *side = req ? &st->req : &st->resp;
    const direction_t *d = req ? &c->req : &c->resp;
    side->compressed += n;
    sharp_counter_add(shard(f), d->total_compressed_bytes, n);
    if (end_stream) side->end = true;
    pump(f, req, p, n);
    return SHARP_FILTER_CONSUMED;
}

/* Trailers after a decompressed body: they follow its last output, now or
 * once the input held is taken. */
static sharp_filter_status_t side_trailers(sharp_filter_t *f, bool req, sharp_headers_t *t)
{
    decomp_state_t *st = f->state;
    side_t *side = req ? &st->req : &st->resp;
    side->end = true;
    side->trailers = t;
    if (side->in.len == side->in_off && !sharp_decompressor_has_more(side->d)) {
        report_bytes(f->config, side, t);
        sharp_decompressor_free(side->d);
        side->d = NULL;
        side->end = false;
        side->trailers = NULL;
        return SHARP_FILTER_CONTINUE;
    }
    pump(f, req, NULL, 0);
    return SHARP_FILTER_CONSUMED;
}

/* ---- callbacks ---- */

static sharp_filter_status_t dc_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    if (direction_enabled(&c->resp) && c->advertise_accept_encoding) {
        sharp_sbuf_t ae = {0}, v = {0};
        header_joined(h, "accept-encoding", &ae);
        sharp_decomp_accept_encoding((sharp_str_t){ae.data ? ae.data : "", ae.len}, c->lib.encoding,
                                     &v);
        sharp_headers_set(h, "accept-encoding", 15, v.data, v.len);
        sharp_sbuf_free(&ae);
        sharp_sbuf_free(&v);
    }
    /* a request without a body is not decompressed, nor counted */
    if (end_stream) return SHARP_FILTER_CONTINUE;
    maybe_init(f, &c->req, &st->req, h);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t dc_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    decomp_state_t *st = f->state;
    if (!st->req.d) return SHARP_FILTER_CONTINUE;
    return side_data(f, true, p, n, end_stream);
}

static sharp_filter_status_t dc_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    decomp_state_t *st = f->state;
    if (!st->req.d) return SHARP_FILTER_CONTINUE;
    return side_trailers(f, true, t);
}

static sharp_filter_status_t dc_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    /* new response headers (a local reply after a stop) start afresh */
    sharp_decompressor_free(st->resp.d);
    st->resp.d = NULL;
    st->resp.compressed = st->resp.uncompressed = 0;
    sharp_sbuf_reset(&st->resp.in);
    st->resp.in_off = 0;
    st->resp.nev = 0;
    st->resp.ev_started = false;
    st->resp.allowance = 0;
    st->resp.end = false;
    st->resp.trailers = NULL;
    if (end_stream) return SHARP_FILTER_CONTINUE;
    maybe_init(f, &c->resp, &st->resp, h);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t dc_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    decomp_state_t *st = f->state;
    if (!st->resp.d) return SHARP_FILTER_CONTINUE;
    return side_data(f, false, p, n, end_stream);
}

static sharp_filter_status_t dc_encode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    decomp_state_t *st = f->state;
    if (!st->resp.d) return SHARP_FILTER_CONTINUE;
    return side_trailers(f, false, t);
}

/* What is held after the filter drained, or the downstream took its
 * writes: the held input goes on. */
static void dc_on_decoder_drained(sharp_filter_t *f)
{
    decomp_state_t *st = f->state;
    if (st->req.d) pump(f, true, NULL, 0);
}

static void dc_on_downstream_watermark(sharp_filter_t *f, bool above)
{
    decomp_state_t *st = f->state;
    if (!above && st->resp.d) pump(f, false, NULL, 0);
}

static uint64_t dc_buffered_bytes(sharp_filter_t *f)
{
    decomp_state_t *st = f->state;
    return st->req.in.len + st->resp.in.len + st->out.cap;
}

static void dc_on_destroy(sharp_filter_t *f)
{
    decomp_state_t *st = f->state;
    sharp_decompressor_free(st->req.d);
    sharp_decompressor_free(st->resp.d);
    st->req.d = st->resp.d = NULL;
    sharp_sbuf_free(&st->out);
    sharp_sbuf_free(&st->req.in);
    sharp_sbuf_free(&st->resp.in);
    free(st->req.ev);
    free(st->resp.ev);
}

const sharp_filter_factory_t sharp_decompressor_filter = {
    .name = "envoy.filters.http.decompressor",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
    .config_desc = &envoy__extensions__filters__http__decompressor__v3__decompressor__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(decomp_state_t),
    .decode_headers = dc_decode_headers,
    .decode_data = dc_decode_data,
    .decode_trailers = dc_decode_trailers,
    .encode_headers = dc_encode_headers,
    .encode_data = dc_encode_data,
    .encode_trailers = dc_encode_trailers,
    .on_downstream_watermark = dc_on_downstream_watermark,
    .on_decoder_drained = dc_on_decoder_drained,
    .on_destroy = dc_on_destroy,
    .buffered_bytes = dc_buffered_bytes,
};

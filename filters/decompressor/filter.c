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
 * Bodies are decompressed as they flow: each data event goes through the
 * decompressor and on at once, so a stream holds only the library's window
 * and one event's output, which the library bounds to max_inflate_ratio
 * times the event's input (decodec.h): a decompression bomb is cut there,
 * counted as the library's error (zlib_data_error, brotli_error), and the
 * rest of the body is dropped, as Envoy does. Back-pressure is the
 * connection's: the event's output goes to the next filter as one piece,
 * and above the buffer limit the peer stops being read, as for any body.
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
} side_t;

typedef struct decomp_state {
    side_t req, resp;
    sharp_sbuf_t out; /* one event's decompressed output */
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

/* Runs one event's body through the side's decompressor: the output lands
 * in st->out; stats and the byte tracker count it. */
static void decompress_event(sharp_filter_t *f, const direction_t *d, side_t *side, const char *p,
                             size_t n)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    sharp_sbuf_reset(&st->out);
    int zerr = 0;
    sharp_decompress_result_t r =
        sharp_decompressor_decompress(side->d, p, n, collect, &st->out, &zerr);
    sharp_stats_shard_t *sh = shard(f);
    side->compressed += n;
    side->uncompressed += st->out.len;
    sharp_counter_add(sh, d->total_compressed_bytes, n);
    sharp_counter_add(sh, d->total_uncompressed_bytes, st->out.len);
    if (r == SHARP_DECOMPRESS_OK) return;
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

/* The event's output is large only for a large input: a buffer grown by
 * one is given back rather than kept for the stream's life. */
static void release_out(decomp_state_t *st)
{
    if (st->out.cap > 256 * 1024) sharp_sbuf_free(&st->out);
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
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    if (!st->req.d) return SHARP_FILTER_CONTINUE;
    decompress_event(f, &c->req, &st->req, p, n);
    if (!end_stream) {
        sharp_stream_decode_data(f, st->out.data, st->out.len, false);
        release_out(st);
        return SHARP_FILTER_CONSUMED;
    }
    /* the body ends with the byte counts in new trailers */
    sharp_headers_t t;
    sharp_headers_init(&t);
    report_bytes(c, &st->req, &t);
    sharp_decompressor_free(st->req.d);
    st->req.d = NULL;
    sharp_stream_decode_data(f, st->out.data, st->out.len, false);
    sharp_stream_decode_trailers(f, &t);
    sharp_headers_free(&t);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t dc_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    if (!st->req.d) return SHARP_FILTER_CONTINUE;
    report_bytes(c, &st->req, t);
    sharp_decompressor_free(st->req.d);
    st->req.d = NULL;
    return SHARP_FILTER_CONTINUE;
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
    if (end_stream) return SHARP_FILTER_CONTINUE;
    maybe_init(f, &c->resp, &st->resp, h);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t dc_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    if (!st->resp.d) return SHARP_FILTER_CONTINUE;
    decompress_event(f, &c->resp, &st->resp, p, n);
    if (!end_stream) {
        sharp_stream_encode_data(f, st->out.data, st->out.len, false);
        release_out(st);
        return SHARP_FILTER_CONSUMED;
    }
    sharp_headers_t t;
    sharp_headers_init(&t);
    report_bytes(c, &st->resp, &t);
    sharp_decompressor_free(st->resp.d);
    st->resp.d = NULL;
    sharp_stream_encode_data(f, st->out.data, st->out.len, false);
    /* the stream may have been reset by the data: encode_trailers checks */
    sharp_stream_encode_trailers(f, &t);
    sharp_headers_free(&t);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t dc_encode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    const decomp_config_t *c = f->config;
    decomp_state_t *st = f->state;
    if (!st->resp.d) return SHARP_FILTER_CONTINUE;
    report_bytes(c, &st->resp, t);
    sharp_decompressor_free(st->resp.d);
    st->resp.d = NULL;
    return SHARP_FILTER_CONTINUE;
}

static void dc_on_destroy(sharp_filter_t *f)
{
    decomp_state_t *st = f->state;
    sharp_decompressor_free(st->req.d);
    sharp_decompressor_free(st->resp.d);
    st->req.d = st->resp.d = NULL;
    sharp_sbuf_free(&st->out);
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
    .on_destroy = dc_on_destroy,
};

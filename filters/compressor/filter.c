/* filter.c: envoy.filters.http.compressor, Envoy's compressor filter with
 * the gzip, brotli and zstd libraries (codec.c).
 *
 * Response side (encode_headers): the response is compressed when the
 * filter is enabled (runtime flag), a content-length is at least
 * min_content_length, the response is no upgrade, its content type is
 * listed, cache-control has no no-transform, there is no ETag with
 * disable_on_etag_header, no content-encoding yet, its status is not in
 * uncompressible_response_codes, no compressing transfer-encoding, the
 * response has a body (headers without end of
 * stream), and the client's Accept-Encoding picks this filter's encoding
 * among the compressor filters of the chain (negotiate.c). Then
 * content-length goes (the codec frames the body: chunked over HTTP/1.1,
 * DATA frames over HTTP/2), content-encoding is set, a strong ETag is
 * dropped, and every compressible response gets "vary: accept-encoding",
 * compressed or not. The body is compressed as it flows: each data event
 * goes through the compressor and on at once (gzip and brotli flush every
 * event, zstd emits as its blocks fill), so nothing but the library's own
 * window is held: memory stays bounded whatever the body's size, and the
 * downstream's back-pressure reaches the router as for any response.
 *
 * Request side (decode_headers), only with request_direction_config: a
 * request body is compressed under the same rules (without the
 * Accept-Encoding part) before it goes upstream.
 *
 * Per route (CompressorPerRoute in typed_per_filter_config, the most
 * specific level's): disabled turns response compression off there;
 * overrides.response_direction_config, when present, turns it on whatever
 * the enabled flag says, and may replace remove_accept_encoding_header.
 *
 * All compressor filters of a chain make one decision per stream: the
 * first that needs it chooses among them all (content types filtered) and
 * keeps it in its state; the others find it there. Stats are Envoy's:
 * http.<stat_prefix>.compressor.<library name>.<library>.[request.|response.]*. */
#include "filters/compressor/filter.h"
#include "filters/compressor/codec.h"
#include "filters/compressor/negotiate.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/compressor/v3/compressor.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef Envoy__Extensions__Filters__Http__Compressor__V3__Compressor comp_pb_t;
typedef Envoy__Extensions__Filters__Http__Compressor__V3__Compressor__CommonDirectionConfig common_pb_t;

/* Envoy's defaultContentEncoding(): the types compressed when a direction
 * lists none. */
static const char *const default_types[] = {
    "text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
    "text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript", "text/x-js",
    "application/ecmascript", "application/x-json", "application/xml", "application/json", "image/svg+xml",
    "text/xml", "application/xhtml+xml", "application/grpc-web", "application/grpc-web+proto",
};

typedef struct direction {
    bool enabled;      /* enabled.default_value (true when unset) */
    char *enabled_key; /* enabled.runtime_key: the runtime's value wins */
    uint64_t min_length;
    char **types;
    size_t ntypes;
    sharp_stat_id_t compressed, not_compressed, total_uncompressed_bytes, total_compressed_bytes,
        content_length_too_small;
} direction_t;

typedef struct comp_config {
    sharp_compressor_lib_t lib;
    bool choose_first;
    bool request_set; /* request_direction_config given: request compression possible */
    direction_t req, resp;
    bool disable_on_etag_header, remove_accept_encoding_header;
    uint32_t *uncompressible_codes; /* response_direction_config.uncompressible_response_codes */
    size_t n_uncompressible_codes;
    sharp_stat_id_t no_accept_header, header_identity, header_compressor_used, header_compressor_overshadowed,
        header_wildcard, header_not_valid, not_compressed_etag;
} comp_config_t;

/* CompressorPerRoute (Envoy's CompressorPerRouteFilterConfig): either
 * response compression off on the route (disabled), or overrides whose
 * response_direction_config, when present, turns response compression on
 * whatever the filter's enabled flag says, and may replace
 * remove_accept_encoding_header. */
typedef struct comp_route {
    bool has_enabled, enabled;
    bool has_remove_ae, remove_ae;
} comp_route_t;

typedef struct comp_state {
    sharp_compressor_t *req_c, *resp_c;
    char *accept_encoding; /* the request's, all its lines joined by ',' */
    size_t accept_encoding_len;
    bool has_accept_encoding;
    bool decided; /* this filter made the chain's encoding decision */
    const char *decision;
    sharp_ae_stat_t decision_stat;
    sharp_sbuf_t out; /* one event's compressed output */
} comp_state_t;

/* ---- config ---- */

static void direction_free(direction_t *d)
{
    free(d->enabled_key);
    for (size_t i = 0; i < d->ntypes; i++) free(d->types[i]);
    free(d->types);
}

static void destroy_config(void *p)
{
    comp_config_t *c = p;
    if (!c) return;
    direction_free(&c->req);
    direction_free(&c->resp);
    free(c->uncompressible_codes);
    sharp_compressor_lib_free(&c->lib);
    free(c);
}

/* One direction's settings from its CommonDirectionConfig (or, for the
 * response without response_direction_config, the deprecated top-level
 * fields). */
static void direction_init(direction_t *d, const Envoy__Config__Core__V3__RuntimeFeatureFlag *enabled,
                           const Google__Protobuf__UInt32Value *min_length, char *const *types, size_t ntypes)
{
    d->enabled = !enabled || !enabled->default_value || enabled->default_value->value;
    if (enabled && enabled->runtime_key && enabled->runtime_key[0]) d->enabled_key = sharp_strdup(enabled->runtime_key);
    /* 0 (or unset) means Envoy's default of 30 */
    d->min_length = min_length && min_length->value ? min_length->value : 30;
    const char *const *src = ntypes ? (const char *const *)types : default_types;
    size_t n = ntypes ? ntypes : sizeof default_types / sizeof default_types[0];
    d->types = sharp_calloc(n, sizeof *d->types);
    for (size_t i = 0; i < n; i++) d->types[i] = sharp_strdup(src[i]);
    d->ntypes = n;
}

static void direction_stats(direction_t *d, sharp_stats_t *s, const char *prefix)
{
    d->compressed = sharp_stats_counterf(s, "%scompressed", prefix);
    d->not_compressed = sharp_stats_counterf(s, "%snot_compressed", prefix);
    d->total_uncompressed_bytes = sharp_stats_counterf(s, "%stotal_uncompressed_bytes", prefix);
    d->total_compressed_bytes = sharp_stats_counterf(s, "%stotal_compressed_bytes", prefix);
    d->content_length_too_small = sharp_stats_counterf(s, "%scontent_length_too_small", prefix);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err, size_t errlen)
{
    const comp_pb_t *pb = (const comp_pb_t *)msg;
    if (!pb || !pb->compressor_library) {
        snprintf(err, errlen, "compressor_library: is required");
        return NULL;
    }
    comp_config_t *c = sharp_calloc(1, sizeof *c);
    if (sharp_compressor_lib_init(&c->lib, pb->compressor_library, err, errlen) < 0) {
        destroy_config(c);
        return NULL;
    }
    c->choose_first = pb->choose_first;
    c->request_set = pb->request_direction_config != NULL;
    const common_pb_t *rq = pb->request_direction_config ? pb->request_direction_config->common_config : NULL;
    direction_init(&c->req, rq ? rq->enabled : NULL, rq ? rq->min_content_length : NULL, rq ? rq->content_type : NULL,
                   rq ? rq->n_content_type : 0);
    const Envoy__Extensions__Filters__Http__Compressor__V3__Compressor__ResponseDirectionConfig *rd =
        pb->response_direction_config;
    if (rd) {
        /* response_direction_config replaces the deprecated fields */
        const common_pb_t *cc = rd->common_config;
        direction_init(&c->resp, cc ? cc->enabled : NULL, cc ? cc->min_content_length : NULL,
                       cc ? cc->content_type : NULL, cc ? cc->n_content_type : 0);
        c->disable_on_etag_header = rd->disable_on_etag_header;
        c->remove_accept_encoding_header = rd->remove_accept_encoding_header;
        /* Envoy's rules: unique, each in [200, 600) */
        for (size_t i = 0; i < rd->n_uncompressible_response_codes; i++) {
            uint32_t code = rd->uncompressible_response_codes[i];
            bool dup = false;
            for (size_t j = 0; j < i; j++) dup = dup || rd->uncompressible_response_codes[j] == code;
            if (code < 200 || code >= 600 || dup) {
                snprintf(err, errlen,
                         "response_direction_config.uncompressible_response_codes[%zu]: %u %s", i, code,
                         dup ? "is repeated: the codes must be unique" : "must be in [200, 600)");
                destroy_config(c);
                return NULL;
            }
        }
        if (rd->n_uncompressible_response_codes) {
            c->n_uncompressible_codes = rd->n_uncompressible_response_codes;
            c->uncompressible_codes = sharp_calloc(c->n_uncompressible_codes, sizeof *c->uncompressible_codes);
            memcpy(c->uncompressible_codes, rd->uncompressible_response_codes,
                   c->n_uncompressible_codes * sizeof *c->uncompressible_codes);
        }
    } else {
        direction_init(&c->resp, pb->runtime_enabled, pb->content_length, pb->content_type, pb->n_content_type);
        c->disable_on_etag_header = pb->disable_on_etag_header;
        c->remove_accept_encoding_header = pb->remove_accept_encoding_header;
    }
    /* http.<stat_prefix>.compressor.<library name>.<library>. */
    sharp_stats_t *s = ctx->server->stats;
    char prefix[512];
    snprintf(prefix, sizeof prefix, "http.%s.compressor.%s.%s.", ctx->stat_prefix, pb->compressor_library->name,
             c->lib.stats_prefix);
    char dp[600];
    snprintf(dp, sizeof dp, "%srequest.", prefix);
    direction_stats(&c->req, s, dp);
    snprintf(dp, sizeof dp, "%s%s", prefix, rd ? "response." : "");
    direction_stats(&c->resp, s, dp);
    c->no_accept_header = sharp_stats_counterf(s, "%sno_accept_header", prefix);
    c->header_identity = sharp_stats_counterf(s, "%sheader_identity", prefix);
    c->header_compressor_used = sharp_stats_counterf(s, "%sheader_compressor_used", prefix);
    c->header_compressor_overshadowed = sharp_stats_counterf(s, "%sheader_compressor_overshadowed", prefix);
    c->header_wildcard = sharp_stats_counterf(s, "%sheader_wildcard", prefix);
    c->header_not_valid = sharp_stats_counterf(s, "%sheader_not_valid", prefix);
    c->not_compressed_etag = sharp_stats_counterf(s, "%snot_compressed_etag", prefix);
    return c;
}

/* ---- header tests ---- */

static sharp_stats_shard_t *shard(sharp_filter_t *f)
{
    return sharp_stream_worker(f->stream)->stats;
}

static bool direction_enabled(const direction_t *d)
{
    return sharp_runtime_get_bool(d->enabled_key, d->enabled);
}

/* Envoy's compressionEnabled and removeAcceptEncodingHeader: the route's
 * override when it has one, else the filter's. */
static bool response_enabled(const comp_config_t *c, const comp_route_t *r)
{
    return r && r->has_enabled ? r->enabled : direction_enabled(&c->resp);
}

static bool remove_accept_encoding(const comp_config_t *c, const comp_route_t *r)
{
    return r && r->has_remove_ae ? r->remove_ae : c->remove_accept_encoding_header;
}

/* Every line of a header, joined by ',' (as Envoy keeps these headers). */
static bool header_joined(const sharp_headers_t *h, const char *name, sharp_sbuf_t *out)
{
    size_t nl = strlen(name);
    bool any = false;
    for (int i = sharp_headers_find(h, name, nl, 0); i >= 0; i = sharp_headers_find(h, name, nl, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(h, (uint32_t)i);
        if (any) sharp_sbuf_append(out, ",", 1);
        sharp_sbuf_append(out, v.p, v.len);
        any = true;
    }
    return any;
}

static bool header_has_token(const sharp_headers_t *h, const char *name, const char *token)
{
    sharp_sbuf_t b = {0};
    bool r = header_joined(h, name, &b) && sharp_ae_has_token((sharp_str_t){b.data ? b.data : "", b.len}, token, true);
    sharp_sbuf_free(&b);
    return r;
}

/* Envoy's Utility::isUpgrade: an Upgrade header and "upgrade" in Connection. */
static bool is_upgrade(const sharp_headers_t *h)
{
    return sharp_headers_get_cstr(h, "upgrade", NULL) && header_has_token(h, "connection", "upgrade");
}

/* isMinimumContentLength: a content-length, when there is one, of at least
 * min_content_length (a smaller or unreadable one is counted). */
static bool min_length_ok(sharp_filter_t *f, const direction_t *d, const sharp_headers_t *h)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, "content-length", &v)) return true;
    uint64_t n;
    if (sharp_ae_parse_length(v, &n) && n >= d->min_length) return true;
    sharp_counter_inc(shard(f), d->content_length_too_small);
    return false;
}

static bool type_allowed(const direction_t *d, const sharp_headers_t *h)
{
    sharp_str_t ct;
    if (!sharp_headers_get_cstr(h, "content-type", &ct)) return true;
    return sharp_ae_type_listed(sharp_ae_media_type(ct), d->types, d->ntypes);
}

static bool transfer_encoding_ok(const comp_config_t *c, const sharp_headers_t *h)
{
    for (int i = sharp_headers_find(h, "transfer-encoding", 17, 0); i >= 0;
         i = sharp_headers_find(h, "transfer-encoding", 17, (uint32_t)i + 1))
        if (sharp_ae_transfer_encoding_compressed(sharp_headers_value(h, (uint32_t)i), c->lib.encoding)) return false;
    return true;
}

/* The chain's decision, made by the first compressor filter that needs it:
 * every compressor filter of the chain whose content types take the
 * response offers its encoding (a filter a route disabled is not part of
 * it; one whose CompressorPerRoute turns compression off still offers its
 * encoding, as in Envoy's registry of the chain's compressors). */
static const char *chain_decision(sharp_filter_t *f, const sharp_headers_t *h, sharp_ae_stat_t *stat)
{
    sharp_stream_t *s = f->stream;
    uint32_t n = sharp_stream_nfilters(s);
    for (uint32_t i = 0; i < n; i++) {
        sharp_filter_t *o = sharp_stream_filter(s, i);
        const comp_state_t *os = o->state;
        if (o->factory == &sharp_compressor_filter && os->decided) {
            *stat = os->decision_stat;
            return os->decision;
        }
    }
    sharp_str_t ct = {"", 0};
    bool has_ct = sharp_headers_get_cstr(h, "content-type", &ct);
    sharp_str_t media = has_ct ? sharp_ae_media_type(ct) : (sharp_str_t){"", 0};
    sharp_ae_offer_t *offers = sharp_calloc(n ? n : 1, sizeof *offers);
    size_t noffers = 0;
    for (uint32_t i = 0; i < n; i++) {
        sharp_filter_t *o = sharp_stream_filter(s, i);
        /* a filter the route disabled is not in Envoy's chain */
        if (o->factory != &sharp_compressor_filter || o->off) continue;
        const comp_config_t *oc = o->config;
        if (media.len && !sharp_ae_type_listed(media, oc->resp.types, oc->resp.ntypes)) continue;
        offers[noffers++] = (sharp_ae_offer_t){oc->lib.encoding, oc->choose_first};
    }
    comp_state_t *st = f->state;
    st->decision = sharp_ae_choose((sharp_str_t){st->accept_encoding ? st->accept_encoding : "", st->accept_encoding_len},
                                   offers, noffers, &st->decision_stat);
    st->decided = true;
    free(offers);
    *stat = st->decision_stat;
    return st->decision;
}

/* isAcceptEncodingAllowed: whether the client's Accept-Encoding chose this
 * filter; counts which kind of entry decided. */
static bool accept_encoding_allows(sharp_filter_t *f, bool maybe, const sharp_headers_t *h)
{
    const comp_config_t *c = f->config;
    comp_state_t *st = f->state;
    if (!maybe) return false;
    if (!st->has_accept_encoding) {
        sharp_counter_inc(shard(f), c->no_accept_header);
        return false;
    }
    sharp_ae_stat_t stat;
    const char *enc = chain_decision(f, h, &stat);
    bool mine = strcasecmp(enc, c->lib.encoding) == 0;
    sharp_stat_id_t id = stat == SHARP_AE_COMPRESSOR ? (mine ? c->header_compressor_used : c->header_compressor_overshadowed)
                         : stat == SHARP_AE_IDENTITY ? c->header_identity
                         : stat == SHARP_AE_WILDCARD ? c->header_wildcard
                                                     : c->header_not_valid;
    sharp_counter_inc(shard(f), id);
    return mine;
}

/* "vary: accept-encoding", added to what is there unless already named
 * (compared as Envoy's findToken does: exactly). */
static void insert_vary(sharp_headers_t *h)
{
    sharp_sbuf_t b = {0};
    if (header_joined(h, "vary", &b)) {
        if (!sharp_ae_has_token((sharp_str_t){b.data ? b.data : "", b.len}, "accept-encoding", false)) {
            sharp_sbuf_puts(&b, ", accept-encoding");
            sharp_headers_set(h, "vary", 4, b.data, b.len);
        }
    } else {
        sharp_headers_set_cstr(h, "vary", "accept-encoding");
    }
    sharp_sbuf_free(&b);
}

/* ---- data ---- */

static void collect(void *arg, const char *p, size_t n)
{
    sharp_sbuf_append(arg, p, n);
}

/* Runs one event's body through `comp`: the output lands in st->out.
 * Returns false when the library failed. */
static bool compress_event(sharp_filter_t *f, sharp_compressor_t *comp, const direction_t *d, const char *p, size_t n,
                           bool end)
{
    comp_state_t *st = f->state;
    sharp_sbuf_reset(&st->out);
    sharp_counter_add(shard(f), d->total_uncompressed_bytes, n);
    if (sharp_compressor_compress(comp, p, n, end, collect, &st->out) < 0) return false;
    sharp_counter_add(shard(f), d->total_compressed_bytes, st->out.len);
    return true;
}

/* The output buffer is reused from event to event; one grown by a large
 * event is given back rather than kept for the stream's life. */
static void release_out(comp_state_t *st)
{
    if (st->out.cap > 256 * 1024) sharp_sbuf_free(&st->out);
}

/* ---- callbacks ---- */

static sharp_filter_status_t comp_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    const comp_config_t *c = f->config;
    comp_state_t *st = f->state;
    sharp_sbuf_t ae = {0};
    st->has_accept_encoding = header_joined(h, "accept-encoding", &ae);
    if (st->has_accept_encoding) {
        st->accept_encoding = sharp_calloc(1, ae.len + 1);
        if (ae.len) memcpy(st->accept_encoding, ae.data, ae.len);
        st->accept_encoding_len = ae.len;
    }
    sharp_sbuf_free(&ae);
    const comp_route_t *r = sharp_stream_route_config(f);
    if (response_enabled(c, r) && remove_accept_encoding(c, r)) sharp_headers_remove_cstr(h, "accept-encoding");

    if (!end_stream && c->request_set && direction_enabled(&c->req) && !is_upgrade(h) && min_length_ok(f, &c->req, h) &&
        type_allowed(&c->req, h) && !sharp_headers_get_cstr(h, "content-encoding", NULL) &&
        transfer_encoding_ok(c, h)) {
        st->req_c = sharp_compressor_new(&c->lib);
    }
    if (st->req_c) {
        sharp_headers_remove_cstr(h, "content-length");
        sharp_headers_set_cstr(h, "content-encoding", c->lib.encoding);
        sharp_counter_inc(shard(f), c->req.compressed);
    } else {
        sharp_counter_inc(shard(f), c->req.not_compressed);
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t comp_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end_stream)
{
    const comp_config_t *c = f->config;
    comp_state_t *st = f->state;
    if (!st->req_c) return SHARP_FILTER_CONTINUE;
    bool ok = compress_event(f, st->req_c, &c->req, p, n, end_stream);
    if (end_stream || !ok) {
        sharp_compressor_free(st->req_c);
        st->req_c = NULL;
    }
    if (!ok) {
        sharp_stream_send_local_reply(f, 500, "request compression failed", 0, "compressor_failed");
        return SHARP_FILTER_STOP;
    }
    sharp_stream_decode_data(f, st->out.data, st->out.len, end_stream);
    release_out(st);
    return SHARP_FILTER_CONSUMED;
}

/* The trailers end the body: the compressor's last bytes go first. */
static sharp_filter_status_t comp_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    (void)t;
    const comp_config_t *c = f->config;
    comp_state_t *st = f->state;
    if (!st->req_c) return SHARP_FILTER_CONTINUE;
    bool ok = compress_event(f, st->req_c, &c->req, NULL, 0, true);
    sharp_compressor_free(st->req_c);
    st->req_c = NULL;
    if (!ok) {
        sharp_stream_send_local_reply(f, 500, "request compression failed", 0, "compressor_failed");
        return SHARP_FILTER_STOP;
    }
    if (st->out.len) sharp_stream_decode_data(f, st->out.data, st->out.len, false);
    return SHARP_FILTER_CONTINUE;
}

/* Envoy's isResponseCodeCompressible: the last of the response tests; a
 * response without a usable :status passes. */
static bool code_compressible(const comp_config_t *c, const sharp_headers_t *h)
{
    if (!c->n_uncompressible_codes) return true;
    uint32_t code = sharp_headers_status(h);
    for (size_t i = 0; i < c->n_uncompressible_codes; i++)
        if (c->uncompressible_codes[i] == code) return false;
    return true;
}

static sharp_filter_status_t comp_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    const comp_config_t *c = f->config;
    comp_state_t *st = f->state;
    /* new response headers (a local reply after a stop) start afresh */
    sharp_compressor_free(st->resp_c);
    st->resp_c = NULL;
    /* the tests in Envoy's order: each counts only when reached */
    bool big_enough = response_enabled(c, sharp_stream_route_config(f)) && min_length_ok(f, &c->resp, h);
    bool compressible = big_enough && !is_upgrade(h) && type_allowed(&c->resp, h) &&
                        !header_has_token(h, "cache-control", "no-transform");
    if (compressible && c->disable_on_etag_header && sharp_headers_get_cstr(h, "etag", NULL)) {
        sharp_counter_inc(shard(f), c->not_compressed_etag);
        compressible = false;
    }
    compressible = compressible && !sharp_headers_get_cstr(h, "content-encoding", NULL) && code_compressible(c, h);
    if (!end_stream && accept_encoding_allows(f, big_enough, h) && compressible && transfer_encoding_ok(c, h))
        st->resp_c = sharp_compressor_new(&c->lib);
    if (st->resp_c) {
        sharp_str_t etag;
        if (sharp_headers_get_cstr(h, "etag", &etag) && !sharp_ae_etag_kept(etag)) sharp_headers_remove_cstr(h, "etag");
        sharp_headers_remove_cstr(h, "content-length");
        sharp_headers_set_cstr(h, "content-encoding", c->lib.encoding);
        sharp_counter_inc(shard(f), c->resp.compressed);
    } else {
        sharp_counter_inc(shard(f), c->resp.not_compressed);
    }
    /* a cache in front must know the response depends on Accept-Encoding,
     * even when this one was not compressed */
    if (compressible) insert_vary(h);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t comp_encode_data(sharp_filter_t *f, const char *p, size_t n, bool end_stream)
{
    const comp_config_t *c = f->config;
    comp_state_t *st = f->state;
    if (!st->resp_c) return SHARP_FILTER_CONTINUE;
    bool ok = compress_event(f, st->resp_c, &c->resp, p, n, end_stream);
    if (end_stream || !ok) {
        sharp_compressor_free(st->resp_c);
        st->resp_c = NULL;
    }
    if (!ok) {
        /* the response has started: it can only be cut short */
        sharp_stream_reset(f->stream, 0);
        return SHARP_FILTER_CONSUMED;
    }
    /* the stream may end inside: st->out is not touched after this */
    sharp_stream_encode_data(f, st->out.data, st->out.len, end_stream);
    return SHARP_FILTER_CONSUMED;
}

static void comp_on_destroy(sharp_filter_t *f)
{
    comp_state_t *st = f->state;
    sharp_compressor_free(st->req_c);
    sharp_compressor_free(st->resp_c);
    st->req_c = st->resp_c = NULL;
    free(st->accept_encoding);
    st->accept_encoding = NULL;
    sharp_sbuf_free(&st->out);
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const Envoy__Extensions__Filters__Http__Compressor__V3__CompressorPerRoute *pb = (const void *)msg;
    comp_route_t *r = sharp_calloc(1, sizeof *r);
    switch (pb->override_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__COMPRESSOR__V3__COMPRESSOR_PER_ROUTE__OVERRIDE_DISABLED:
        if (!pb->disabled) {
            snprintf(err, errlen, "invalid CompressorPerRoute.Disabled: value must equal true");
            free(r);
            return NULL;
        }
        r->has_enabled = true;
        r->enabled = false;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__COMPRESSOR__V3__COMPRESSOR_PER_ROUTE__OVERRIDE_OVERRIDES:
        if (pb->overrides && pb->overrides->response_direction_config) {
            /* present, even empty: response compression on (Envoy) */
            r->has_enabled = r->enabled = true;
            const Google__Protobuf__BoolValue *rm = pb->overrides->response_direction_config->remove_accept_encoding_header;
            if (rm) {
                r->has_remove_ae = true;
                r->remove_ae = rm->value;
            }
        }
        break;
    default:
        snprintf(err, errlen, "invalid CompressorPerRoute.Override: value is required (one of disabled, overrides)");
        free(r);
        return NULL;
    }
    return r;
}

const sharp_filter_factory_t sharp_compressor_filter = {
    .name = "envoy.filters.http.compressor",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
    .config_desc = &envoy__extensions__filters__http__compressor__v3__compressor__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(comp_state_t),
    .decode_headers = comp_decode_headers,
    .decode_data = comp_decode_data,
    .decode_trailers = comp_decode_trailers,
    .encode_headers = comp_encode_headers,
    .encode_data = comp_encode_data,
    .on_destroy = comp_on_destroy,
    .route_type_url = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute",
    .route_config_desc = &envoy__extensions__filters__http__compressor__v3__compressor_per_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = free,
};

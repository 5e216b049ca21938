/* reverse_bridge.c: envoy.filters.http.grpc_http1_reverse_bridge, Envoy's
 * gRPC HTTP/1.1 reverse bridge: a gRPC client calls an upstream that speaks
 * plain HTTP (content_type bodies, no gRPC framing, no trailers).
 *
 * A gRPC request with a body (not one that ends with its headers), on a
 * route whose most specific FilterConfigPerRoute is not disabled, is
 * bridged: its content-type and accept become content_type (the original
 * content-type is kept for the response). With withhold_grpc_frames its
 * content-length (a nonzero number) loses the 5 bytes of the frame header,
 * and the body's first data loses them; first data shorter than that is
 * answered as Envoy does (a gRPC local reply, grpc-status 2 Unknown,
 * "invalid request body", details grpc_bridge_data_too_small), and so is a
 * content-length below 5, which no frame fits (Envoy would pass it on
 * wrapped around below zero). The rest of the body streams.
 *
 * The response must have exactly content_type as its content-type, else it
 * becomes a gRPC local reply (grpc-status 2, "envoy reverse bridge: upstream
 * responded with unsupported content-type <it>, status code <it>" or "...
 * with no content-type header, status code <it>", details
 * grpc_bridge_content_type_wrong). Its content-type becomes the request's
 * original one and its grpc-status is taken from the HTTP status (200: 0,
 * others as Envoy's httpToGrpcStatus); the HTTP status itself stays. The
 * grpc-status goes into the response's trailers, added when the upstream
 * sent none. With withhold_grpc_frames the body becomes one gRPC frame:
 * - with response_size_header, the upstream names the message's length in
 *   that header (its first value up to a ','); content-length becomes it
 *   plus 5 and the body streams behind a frame header of that length. A
 *   missing or malformed header gives a gRPC local reply (grpc-status 13,
 *   "envoy reverse bridge: upstream did not set content length", details
 *   grpc_bridge_content_length_missing); a body of another length resets
 *   the stream at its end (Envoy's local reply after the headers went out;
 *   details grpc_bridge_content_length_wrong);
 * - without it, the body is held whole (bounded by the stream's buffer
 *   limit: beyond it, a 500 local reply or a reset once the headers went
 *   out) and sent at its end behind its frame header; a content-length
 *   (nonzero) grows by 5.
 * Only unary calls bridge, as in Envoy. Unlike Envoy, the route is not
 * chosen again after the content-type rewrite (SHARP does not clear the
 * route cache). */
#include "filters/grpc_bridge/bridge.h"
#include "http/grpc.h"

#include "envoy/extensions/filters/http/grpc_http1_reverse_bridge/v3/config.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__GrpcHttp1ReverseBridge__V3__FilterConfig config_pb_t;
typedef Envoy__Extensions__Filters__Http__GrpcHttp1ReverseBridge__V3__FilterConfigPerRoute
    route_pb_t;

typedef struct {
    char *content_type;
    bool withhold;
    char *size_header; /* lower-case; NULL: none */
} rb_config_t;

typedef struct {
    bool disabled;
} rb_route_t;

typedef struct {
    bool enabled;
    bool prefix_stripped;
    bool frame_added;
    bool failed; /* a local reply or reset ended the response */
    uint32_t grpc_status;
    char *content_type;      /* the request's */
    uint64_t message_length; /* from response_size_header */
    uint64_t upstream_bytes;
    sharp_sbuf_t buf; /* the held response body, frame header room first */
} rb_state_t;

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    (void)ctx;
    const config_pb_t *pb = (const config_pb_t *)msg;
    if (!pb || !pb->content_type[0]) {
        snprintf(err, errlen, "content_type: value length must be at least 1 characters");
        return NULL;
    }
    const char *sh = pb->response_size_header;
    for (const char *c = sh; *c; c++)
        if (*c == '\r' || *c == '\n') {
            snprintf(err, errlen, "response_size_header: not a valid HTTP header name");
            return NULL;
        }
    rb_config_t *c = sharp_calloc(1, sizeof *c);
    c->content_type = sharp_strdup(pb->content_type);
    c->withhold = pb->withhold_grpc_frames;
    if (sh[0]) {
        c->size_header = sharp_strdup(sh);
        for (char *p = c->size_header; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    }
    return c;
}

static void destroy_config(void *config)
{
    rb_config_t *c = config;
    if (!c) return;
    free(c->content_type);
    free(c->size_header);
    free(c);
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    const route_pb_t *pb = (const route_pb_t *)msg;
    rb_route_t *r = sharp_calloc(1, sizeof *r);
    r->disabled = pb && pb->disabled;
    return r;
}

static void destroy_route_config(void *config)
{
    free(config);
}

/* A gRPC local reply: HTTP 200, grpc-status `code`, the message as
 * grpc-message (the stream was a gRPC request when the filters first saw
 * it). */
static void grpc_reply(sharp_filter_t *f, uint32_t code, const char *message, const char *details)
{
    rb_state_t *st = f->state;
    st->failed = true;
    char gs[12];
    snprintf(gs, sizeof gs, "%u", code);
    const char *hdrs[] = {"grpc-status", gs, NULL};
    sharp_stream_send_local_reply_ex(f, 200, message, 0, details, hdrs);
}

static sharp_filter_status_t rb_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    const rb_config_t *c = f->config;
    rb_state_t *st = f->state;
    if (end_stream) return SHARP_FILTER_CONTINUE;
    const rb_route_t *r = sharp_stream_route(f->stream) ? sharp_stream_route_config(f) : NULL;
    if (r && r->disabled) return SHARP_FILTER_CONTINUE;
    if (!sharp_grpc_is_request(h) || !sharp_headers_get_cstr(h, ":path", NULL))
        return SHARP_FILTER_CONTINUE;
    st->enabled = true;
    sharp_str_t ct;
    sharp_headers_get_cstr(h, "content-type", &ct);
    st->content_type = sharp_strndup(ct.p, ct.len);
    sharp_headers_set_cstr(h, "content-type", c->content_type);
    sharp_headers_set_cstr(h, "accept", c->content_type);
    if (c->withhold && !sharp_grpc_bridge_adjust_content_length(h, -SHARP_GRPC_FRAME_HEADER_SIZE)) {
        st->enabled = false;
        grpc_reply(f, 2, "invalid request body", "grpc_bridge_data_too_small");
        return SHARP_FILTER_STOP;
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t rb_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    const rb_config_t *c = f->config;
    rb_state_t *st = f->state;
    if (!st->enabled || !c->withhold || st->prefix_stripped) return SHARP_FILTER_CONTINUE;
    if (n < SHARP_GRPC_FRAME_HEADER_SIZE) {
        st->enabled = false;
        grpc_reply(f, 2, "invalid request body", "grpc_bridge_data_too_small");
        return SHARP_FILTER_STOP;
    }
    st->prefix_stripped = true;
    sharp_stream_decode_data(f, p + SHARP_GRPC_FRAME_HEADER_SIZE, n - SHARP_GRPC_FRAME_HEADER_SIZE,
                             end_stream);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t rb_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    const rb_config_t *c = f->config;
    rb_state_t *st = f->state;
    if (!st->enabled) return SHARP_FILTER_CONTINUE;
    sharp_str_t ct, status = {"", 0};
    bool has_ct = sharp_headers_get_cstr(h, "content-type", &ct);
    sharp_headers_get_cstr(h, ":status", &status);
    if (!has_ct || ct.len != strlen(c->content_type) ||
        memcmp(ct.p, c->content_type, ct.len) != 0) {
        char msg[512];
        if (has_ct)
            snprintf(msg, sizeof msg,
                     "envoy reverse bridge: upstream responded with unsupported content-type %.*s, "
                     "status code %.*s",
                     (int)SHARP_MIN(ct.len, 256), ct.p, (int)SHARP_MIN(status.len, 16), status.p);
        else
            snprintf(msg, sizeof msg,
                     "envoy reverse bridge: upstream responded with no content-type header, status "
                     "code %.*s",
                     (int)SHARP_MIN(status.len, 16), status.p);
        grpc_reply(f, 2, msg, "grpc_bridge_content_type_wrong");
        return SHARP_FILTER_STOP;
    }
    sharp_headers_set_cstr(h, "content-type", st->content_type);
    if (c->withhold) {
        if (c->size_header) {
            if (!sharp_grpc_bridge_size_header(h, c->size_header, &st->message_length) ||
                st->message_length > UINT32_MAX) {
                grpc_reply(f, 13, "envoy reverse bridge: upstream did not set content length",
                           "grpc_bridge_content_length_missing");
                return SHARP_FILTER_STOP;
            }
            char cl[24];
            snprintf(cl, sizeof cl, "%llu",
                     (unsigned long long)(st->message_length + SHARP_GRPC_FRAME_HEADER_SIZE));
            sharp_headers_set_cstr(h, "content-length", cl);
        } else {
            sharp_grpc_bridge_adjust_content_length(h, SHARP_GRPC_FRAME_HEADER_SIZE);
        }
    }
    st->grpc_status = sharp_grpc_bridge_status_from_http(sharp_headers_status(h));
    return SHARP_FILTER_CONTINUE;
}

static void status_trailers(rb_state_t *st, sharp_headers_t *t)
{
    char gs[12];
    snprintf(gs, sizeof gs, "%u", st->grpc_status);
    sharp_headers_set_cstr(t, "grpc-status", gs);
}

/* The held body behind its frame header. */
static void frame_held(rb_state_t *st)
{
    if (!st->buf.len) {
        uint8_t room[SHARP_GRPC_FRAME_HEADER_SIZE] = {0};
        sharp_sbuf_append(&st->buf, (const char *)room, sizeof room);
    }
    sharp_grpc_bridge_frame_header((uint8_t *)st->buf.data,
                                   (uint32_t)(st->buf.len - SHARP_GRPC_FRAME_HEADER_SIZE));
}

static sharp_filter_status_t rb_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    const rb_config_t *c = f->config;
    rb_state_t *st = f->state;
    st->upstream_bytes += n;
    if (st->failed) return SHARP_FILTER_CONSUMED;
    if (!st->enabled) return SHARP_FILTER_CONTINUE;
    sharp_stream_t *s = f->stream;
    if (c->withhold && c->size_header) {
        /* the body streams behind a frame header of the announced length */
        if (!st->frame_added) {
            st->frame_added = true;
            uint8_t hdr[SHARP_GRPC_FRAME_HEADER_SIZE];
            sharp_grpc_bridge_frame_header(hdr, (uint32_t)st->message_length);
            sharp_stream_encode_data(f, (const char *)hdr, sizeof hdr, false);
            if (st->failed) return SHARP_FILTER_CONSUMED;
        }
        if (end_stream && st->upstream_bytes != st->message_length) {
            st->failed = true;
            grpc_reply(f, 13, "envoy reverse bridge: upstream set incorrect content length",
                       "grpc_bridge_content_length_wrong");
            return SHARP_FILTER_CONSUMED;
        }
        if (!end_stream) {
            if (n) sharp_stream_encode_data(f, p, n, false);
            return SHARP_FILTER_CONSUMED;
        }
        if (n) sharp_stream_encode_data(f, p, n, false);
    } else if (c->withhold) {
        if (!st->buf.len) frame_held(st);
        if (st->buf.len - SHARP_GRPC_FRAME_HEADER_SIZE + n > sharp_stream_buffer_limit(s)) {
            sharp_sbuf_free(&st->buf);
            st->failed = true;
            sharp_stream_response_too_large(f);
            return SHARP_FILTER_CONSUMED;
        }
        sharp_sbuf_append(&st->buf, p, n);
        if (!end_stream) return SHARP_FILTER_CONSUMED;
        frame_held(st);
        sharp_sbuf_t b = st->buf;
        memset(&st->buf, 0, sizeof st->buf);
        sharp_stream_encode_data(f, b.data, b.len, false);
        sharp_sbuf_free(&b);
    } else {
        if (!end_stream) return SHARP_FILTER_CONTINUE;
        if (n) sharp_stream_encode_data(f, p, n, false);
    }
    /* the response ended without trailers: Envoy adds them */
    if (st->failed) return SHARP_FILTER_CONSUMED;
    sharp_headers_t t;
    sharp_headers_init(&t);
    status_trailers(st, &t);
    sharp_stream_encode_trailers(f, &t);
    sharp_headers_free(&t);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t rb_encode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    const rb_config_t *c = f->config;
    rb_state_t *st = f->state;
    if (!st->enabled || st->failed) return SHARP_FILTER_CONTINUE;
    status_trailers(st, t);
    if (c->withhold && !c->size_header) {
        frame_held(st);
        sharp_sbuf_t b = st->buf;
        memset(&st->buf, 0, sizeof st->buf);
        sharp_stream_encode_data(f, b.data, b.len, false);
        sharp_sbuf_free(&b);
    }
    return SHARP_FILTER_CONTINUE;
}

static uint64_t rb_buffered(sharp_filter_t *f)
{
    rb_state_t *st = f->state;
    return st->buf.len;
}

static void rb_on_destroy(sharp_filter_t *f)
{
    rb_state_t *st = f->state;
    sharp_sbuf_free(&st->buf);
    free(st->content_type);
    st->content_type = NULL;
}

const sharp_filter_factory_t sharp_grpc_http1_reverse_bridge_filter = {
    .name = "envoy.filters.http.grpc_http1_reverse_bridge",
    .type_url = "type.googleapis.com/"
                "envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig",
    .config_desc =
        &envoy__extensions__filters__http__grpc_http1_reverse_bridge__v3__filter_config__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(rb_state_t),
    .decode_headers = rb_decode_headers,
    .decode_data = rb_decode_data,
    .encode_headers = rb_encode_headers,
    .encode_data = rb_encode_data,
    .encode_trailers = rb_encode_trailers,
    .buffered_bytes = rb_buffered,
    .on_destroy = rb_on_destroy,
    .route_type_url =
        "type.googleapis.com/"
        "envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfigPerRoute",
    .route_config_desc =
        &envoy__extensions__filters__http__grpc_http1_reverse_bridge__v3__filter_config_per_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_route_config,
};

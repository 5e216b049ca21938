/* http1_bridge.c: envoy.filters.http.grpc_http1_bridge, Envoy's gRPC HTTP/1.1
 * bridge: an HTTP/1 client without response trailers calls a gRPC server.
 *
 * A request from an HTTP/1 downstream whose content-type is gRPC's
 * (application/grpc, application/grpc+<fmt>, application/grpc;<params>) is
 * bridged. With upgrade_protobuf_to_grpc, a request whose content-type is
 * exactly application/x-protobuf becomes one first: its content-type is set
 * to application/grpc, its content-length removed, and its body is held
 * (bounded by the stream's buffer limit: beyond it the request is answered
 * 413, as Envoy's buffer overflow) and passed on as one gRPC frame (flag 0,
 * the length) at its end; the response body then loses the frame's 5-byte
 * header. With ignore_query_parameters a bridged request's :path loses its
 * query ('?' on).
 *
 * A bridged response is held whole (bounded by the buffer limit: beyond it
 * the response becomes a 500 local reply, as Envoy's buffer overflow);
 * when its trailers arrive, their grpc-status is copied into the response
 * headers (and :status becomes 503 unless it is the number 0), so is
 * grpc-message, and content-length becomes the body's length; the trailers
 * themselves go no further (an HTTP/1 client gets none, as Envoy's HTTP/1
 * codec drops them). A response that ends without trailers passes as it
 * came; one that ends with its headers is not held. Because the response
 * is held whole, only unary calls bridge.
 *
 * Unlike Envoy, the route is not chosen again after the content-type
 * rewrite (SHARP does not clear the route cache): routes matching on
 * content-type see the request as the client sent it. */
#include "filters/grpc_bridge/bridge.h"
#include "http/grpc.h"
#include "http/stream_info.h"

#include "envoy/extensions/filters/http/grpc_http1_bridge/v3/config.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__GrpcHttp1Bridge__V3__Config config_pb_t;

typedef struct {
    bool upgrade_protobuf, ignore_query;
} h1b_config_t;

typedef struct {
    bool bridging;        /* an HTTP/1 gRPC request: its response is bridged */
    bool framing;         /* an upgraded application/x-protobuf request */
    bool holding_headers; /* encode_headers stopped */
    uint32_t resp_strip;  /* bytes of the response's frame header still to drop */
    sharp_sbuf_t req;     /* the upgraded request body */
    sharp_sbuf_t resp;    /* the held response body */
} h1b_state_t;

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    const config_pb_t *pb = (const config_pb_t *)msg;
    h1b_config_t *c = sharp_calloc(1, sizeof *c);
    if (pb) {
        c->upgrade_protobuf = pb->upgrade_protobuf_to_grpc;
        c->ignore_query = pb->ignore_query_parameters;
    }
    return c;
}

static void destroy_config(void *c)
{
    free(c);
}

static sharp_filter_status_t h1b_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                bool end_stream)
{
    (void)end_stream;
    const h1b_config_t *c = f->config;
    h1b_state_t *st = f->state;
    if (c->upgrade_protobuf && sharp_grpc_bridge_is_protobuf(h)) {
        st->framing = true;
        sharp_headers_set_cstr(h, "content-type", "application/grpc");
        /* the message length is part of the gRPC frame */
        sharp_headers_remove_cstr(h, "content-length");
    }
    const char *proto = sharp_stream_info(f->stream)->protocol;
    bool http1 = proto && strncmp(proto, "HTTP/1", 6) == 0;
    if (http1 && sharp_grpc_is_request(h) && sharp_headers_get_cstr(h, ":path", NULL))
        st->bridging = true;
    if (st->bridging && c->ignore_query) {
        sharp_str_t path;
        if (sharp_headers_get_cstr(h, ":path", &path)) {
            const char *q = memchr(path.p, '?', path.len);
            if (q) {
                size_t n = (size_t)(q - path.p);
                char *p = sharp_strndup(path.p, n);
                sharp_headers_set(h, ":path", 5, p, n);
                free(p);
            }
        }
    }
    if (st->bridging && st->framing) st->resp_strip = SHARP_GRPC_FRAME_HEADER_SIZE;
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t h1b_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                             bool end_stream)
{
    h1b_state_t *st = f->state;
    if (!st->bridging || !st->framing) return SHARP_FILTER_CONTINUE;
    if (st->req.len + n > sharp_stream_buffer_limit(f->stream)) {
        sharp_sbuf_free(&st->req);
        st->framing = false;
        st->bridging = false;
        sharp_stream_request_too_large(f);
        return SHARP_FILTER_STOP;
    }
    if (!st->req.len) {
        uint8_t hdr[SHARP_GRPC_FRAME_HEADER_SIZE] = {0};
        sharp_sbuf_append(&st->req, (const char *)hdr, sizeof hdr);
    }
    sharp_sbuf_append(&st->req, p, n);
    if (!end_stream) return SHARP_FILTER_CONSUMED;
    sharp_grpc_bridge_frame_header((uint8_t *)st->req.data,
                                   (uint32_t)(st->req.len - SHARP_GRPC_FRAME_HEADER_SIZE));
    sharp_sbuf_t b = st->req;
    memset(&st->req, 0, sizeof st->req);
    sharp_stream_decode_data(f, b.data, b.len, true);
    sharp_sbuf_free(&b);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t h1b_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                bool end_stream)
{
    (void)h;
    h1b_state_t *st = f->state;
    if (!st->bridging || end_stream) return SHARP_FILTER_CONTINUE;
    st->holding_headers = true;
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t h1b_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                             bool end_stream)
{
    h1b_state_t *st = f->state;
    if (!st->holding_headers) return st->bridging ? SHARP_FILTER_CONSUMED : SHARP_FILTER_CONTINUE;
    /* an upgraded request's response loses its frame header */
    size_t drop = n < st->resp_strip ? n : (size_t)st->resp_strip;
    st->resp_strip -= (uint32_t)drop;
    p += drop;
    n -= drop;
    if (st->resp.len + n > sharp_stream_buffer_limit(f->stream)) {
        sharp_sbuf_free(&st->resp);
        st->holding_headers = false;
        sharp_stream_response_too_large(f);
        return SHARP_FILTER_CONSUMED;
    }
    sharp_sbuf_append(&st->resp, p, n);
    if (!end_stream) return SHARP_FILTER_CONSUMED;
    /* the response ended without trailers: it goes on as it came, less a
     * frame header dropped above */
    st->holding_headers = false;
    if (st->framing) {
        /* the body lost the frame header: a content-length must follow */
        sharp_headers_t *resp = sharp_stream_held_response_headers(f->stream);
        if (sharp_headers_get_cstr(resp, "content-length", NULL)) {
            char cl[24];
            snprintf(cl, sizeof cl, "%zu", st->resp.len);
            sharp_headers_set_cstr(resp, "content-length", cl);
        }
    }
    sharp_sbuf_t b = st->resp;
    memset(&st->resp, 0, sizeof st->resp);
    sharp_stream_continue_encoding_body(f, b.data, b.len);
    sharp_sbuf_free(&b);
    return SHARP_FILTER_CONSUMED;
}

static sharp_filter_status_t h1b_encode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    h1b_state_t *st = f->state;
    if (!st->holding_headers) return SHARP_FILTER_CONTINUE;
    st->holding_headers = false;
    sharp_grpc_bridge_merge_trailers(sharp_stream_held_response_headers(f->stream), t,
                                     st->resp.len);
    sharp_sbuf_t b = st->resp;
    memset(&st->resp, 0, sizeof st->resp);
    /* the body ends the response: the trailers go no further */
    sharp_stream_continue_encoding_body(f, b.data, b.len);
    sharp_sbuf_free(&b);
    return SHARP_FILTER_CONTINUE;
}

static uint64_t h1b_buffered(sharp_filter_t *f)
{
    h1b_state_t *st = f->state;
    return st->req.len + st->resp.len;
}

static void h1b_on_destroy(sharp_filter_t *f)
{
    h1b_state_t *st = f->state;
    sharp_sbuf_free(&st->req);
    sharp_sbuf_free(&st->resp);
}

const sharp_filter_factory_t sharp_grpc_http1_bridge_filter = {
    .name = "envoy.filters.http.grpc_http1_bridge",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config",
    .config_desc = &envoy__extensions__filters__http__grpc_http1_bridge__v3__config__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(h1b_state_t),
    .decode_headers = h1b_decode_headers,
    .decode_data = h1b_decode_data,
    .encode_headers = h1b_encode_headers,
    .encode_data = h1b_encode_data,
    .encode_trailers = h1b_encode_trailers,
    .buffered_bytes = h1b_buffered,
    .on_destroy = h1b_on_destroy,
};

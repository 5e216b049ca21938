/* filter.h: the HTTP filter API.
 *
 * A filter is a vtable registered under its Envoy name and typed_config type
 * URL. Its config is created once from the protobuf-c message on the main
 * thread and is immutable afterwards (shared by all workers). Per stream the
 * connection manager allocates `state_size` zeroed bytes for it and calls its
 * callbacks in chain order: decode_* on the way in (first to last), encode_*
 * on the way out (last to first). The last filter of a chain must be a
 * terminal filter (the router).
 *
 * Contract of the status a callback returns:
 * - SHARP_FILTER_CONTINUE: the connection manager passes the event on to the
 *   next filter at once.
 * - SHARP_FILTER_STOP: iteration stops here; the filter resumes it later with
 *   sharp_stream_continue_decoding()/..._encoding() (from a timer or an
 *   asynchronous answer), or ends the stream with a local reply. Request data
 *   that arrives meanwhile still reaches the filters up to the stopped one
 *   and is then held by the connection manager (bounded by the connection's
 *   buffer limit, beyond which the downstream stops being read); on continue
 *   it goes on to the filters after it. A filter that returns STOP from
 *   decode_data for that data wants the whole body (Envoy's
 *   StopIterationAndBuffer): above the limit the request is answered with
 *   a 413 (details request_payload_too_large, counted in
 *   http.<stat_prefix>.downstream_rq_too_large; a reset once the response
 *   has started) instead; CONTINUE from decode_data leaves the data held
 *   behind a stop on headers (Envoy's StopIterationAndWatermark). The
 *   terminal filter returns STOP from every callback: it consumes what it
 *   is given.
 *   On the response side a STOP from encode_headers holds the response the
 *   same way: its data reaches the filters up to the stopped one and waits
 *   behind it. Above the stream's buffer limit the filters after it (the
 *   router) pause until it continues (Envoy's StopIterationAndWatermark),
 *   unless it returned STOP from encode_data for that data: it wants the
 *   whole body (Envoy's StopIterationAndBuffer), and above the limit the
 *   response is replaced by a 500 (details response_payload_too_large,
 *   counted in http.<stat_prefix>.rs_too_large). Otherwise encode_data's
 *   STOP is advisory: response data flows.
 * - SHARP_FILTER_CONSUMED (decode_data and encode_data only): the filter took
 *   the data, and the end of stream with it, and passes on what it makes of
 *   it itself with sharp_stream_decode_data()/sharp_stream_encode_data() (a
 *   filter transforming bodies, such as the compressor). Iteration stops
 *   here for this data; the filter's own data goes on from the next filter.
 * - SHARP_FILTER_CONSUMED from decode_trailers and encode_trailers: the
 *   filter took the trailers (the stream's own, which stay valid) and
 *   passes them on later with sharp_stream_decode_trailers() or
 *   sharp_stream_encode_trailers(), after data it still has to pass on.
 * A filter may call sharp_stream_send_local_reply() from any callback; it then
 *   returns SHARP_FILTER_STOP. A filter never frees its stream: the connection
 *   manager owns it and calls on_destroy exactly once, after on_complete.
 */
#ifndef SHARP_HTTP_FILTER_H
#define SHARP_HTTP_FILTER_H

#include "common.h"
#include "http/headers.h"
#include "http/stream_info.h"

#include <protobuf-c/protobuf-c.h>

typedef struct sharp_stream sharp_stream_t;
typedef struct sharp_filter sharp_filter_t;
typedef struct sharp_filter_factory sharp_filter_factory_t;
struct sharp_server;

typedef enum {
    SHARP_FILTER_CONTINUE,
    SHARP_FILTER_STOP,
    SHARP_FILTER_CONSUMED,
} sharp_filter_status_t;

/* What a filter's create_config may use from the server (main thread). */
typedef struct sharp_filter_config_ctx {
    struct sharp_server *server;
    const char *stat_prefix; /* the connection manager's stat_prefix: stats go under "http.<it>." */
    const struct sharp_tracing_config *tracing; /* the connection manager's tracing, NULL: none */
} sharp_filter_config_ctx_t;

struct sharp_filter_factory {
    const char *name;     /* "envoy.filters.http.router" */
    const char *type_url; /* "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" */
    const ProtobufCMessageDescriptor *config_desc;
    bool terminal;
    /* Builds the immutable config from the typed_config message (NULL when the
     * filter had no typed_config). Returns NULL and fills err on a bad config. */
    void *(*create_config)(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen);
    void (*destroy_config)(void *config);
    size_t state_size;
    sharp_filter_status_t (*decode_headers)(sharp_filter_t *f, sharp_headers_t *h, bool end_stream);
    sharp_filter_status_t (*decode_data)(sharp_filter_t *f, const char *p, size_t n, bool end_stream);
    sharp_filter_status_t (*decode_trailers)(sharp_filter_t *f, sharp_headers_t *t);
    sharp_filter_status_t (*encode_headers)(sharp_filter_t *f, sharp_headers_t *h, bool end_stream);
    sharp_filter_status_t (*encode_data)(sharp_filter_t *f, const char *p, size_t n, bool end_stream);
    /* Response trailers: a filter with encode_trailers gets the response's
     * last data through encode_data without end_stream, then the trailers
     * (one without it gets encode_data with end_stream, and
     * sharp_stream_has_response_trailers tells it trailers follow). It
     * reads them; its status is ignored (it cannot hold them). */
    sharp_filter_status_t (*encode_trailers)(sharp_filter_t *f, sharp_headers_t *t);
    /* The response data this filter passes on has nowhere to go (above:
     * the downstream above its write watermark, or a filter before it or
     * the connection manager holding response data above the stream's
     * buffer limit) or has room again (the last such pause ended): a
     * filter producing response data (the router) pauses or resumes it.
     * Pauses are counted per filter (Envoy's high watermark count): the
     * filter hears only the first beginning and the last end. */
    void (*on_downstream_watermark)(sharp_filter_t *f, bool above);
    /* Request data held after this filter (by the connection manager
     * behind a stopped filter, or by a filter after it such as the router
     * waiting for its upstream) went back to or below the stream's buffer
     * limit (Envoy's low watermark): a filter that makes request data out
     * of less (the decompressor) and stopped making it while
     * sharp_stream_decoder_above_limit said so may go on. A hint: the
     * filter asks sharp_stream_decoder_above_limit again. */
    void (*on_decoder_drained)(sharp_filter_t *f);
    /* The stream is finished (response complete, or reset); info is final. */
    void (*on_complete)(sharp_filter_t *f, const sharp_stream_info_t *si);
    /* Release per-stream resources (timers, upstream requests). Always called once. */
    void (*on_destroy)(sharp_filter_t *f);
    /* Optional: bytes of buffers the filter holds for its stream (bodies,
     * queued upstream writes), for reset_high_memory_stream. */
    uint64_t (*buffered_bytes)(sharp_filter_t *f);
    /* Optional: the filter's per-route config (Envoy's route specific filter
     * config, from typed_per_filter_config). route_type_url is the type it
     * takes there; create_route_config builds the immutable config from that
     * message on the main thread (NULL and err on a bad one);
     * destroy_route_config frees it. A filter without them refuses per-route
     * configs other than FilterConfig's enable/disable. */
    const char *route_type_url;
    const ProtobufCMessageDescriptor *route_config_desc;
    void *(*create_route_config)(const ProtobufCMessage *msg, char *err, size_t errlen);
    void (*destroy_route_config)(void *config);
    /* Optional: a filter that runs another one (ExtensionWithMatcher)
     * returns that filter's factory for its config: per-route configs
     * under its name may be the wrapped filter's, as in Envoy. */
    const sharp_filter_factory_t *(*wrapped_factory)(const void *config);
};

/* One filter instance in one stream's chain. */
struct sharp_filter {
    const sharp_filter_factory_t *factory;
    const void *config;
    sharp_stream_t *stream;
    void *state; /* factory->state_size zeroed bytes */
    uint32_t index;
    const char *name; /* its config name (HttpFilter.name), the key of typed_per_filter_config */
    /* Not in this stream's chain: HttpFilter.disabled, or a per-route
     * FilterConfig.disabled, decided when the route is resolved (Envoy
     * creates no such filter). The connection manager calls none of its
     * callbacks. */
    bool off;
    /* the request data this filter holds is above the stream's buffer
     * limit (sharp_stream_decoder_watermark) */
    bool dec_above;
    /* the filter pauses the downstream's reads (sharp_stream_read_disable) */
    bool read_paused;
    /* the response data this filter holds is above the stream's buffer
     * limit (sharp_stream_encoder_watermark) */
    bool enc_above;
    /* Response-side pauses that apply to this filter (the downstream
     * above its write watermark, a filter before it or the connection
     * manager holding response data above the buffer limit), counted: the
     * filter's on_downstream_watermark hears when the first begins and
     * when the last ends (sharp_stream_encoder_paused). */
    uint32_t enc_pauses;
};

/* Registry (populated at startup by sharp_filters_register_builtin()). */
void sharp_filter_register(const sharp_filter_factory_t *f);
const sharp_filter_factory_t *sharp_filter_find_by_name(const char *name);
const sharp_filter_factory_t *sharp_filter_find_by_type_url(const char *type_url, size_t len);
/* Envoy's getFactoryByType for per-route configs: the filter whose typed_config
 * or per-route type is the Any's type; *is_route tells which matched. */
const sharp_filter_factory_t *sharp_filter_find_for_route_type(const char *type_url, size_t len, bool *is_route);
void sharp_filters_register_builtin(void);

/* ---- What filters may call on their stream ---- */

/* Resumes the decode chain after the filter `f` that returned STOP. */
void sharp_stream_continue_decoding(sharp_filter_t *f);
void sharp_stream_continue_encoding(sharp_filter_t *f);
/* Sends a response generated by the proxy (Envoy's local reply): status,
 * text/plain body, response flag for the access log and details string. The
 * encode chain of the filters before `f` sees it. */
void sharp_stream_send_local_reply(sharp_filter_t *f, uint32_t status, const char *body,
                                   uint32_t response_flag, const char *details);
/* The same with extra response headers: name, value, ..., NULL. */
void sharp_stream_send_local_reply_ex(sharp_filter_t *f, uint32_t status, const char *body,
                                      uint32_t response_flag, const char *details, const char *const *headers);
/* The same with a body of `blen` bytes (which may hold NULs). Every local
 * reply goes through here: the route's response_headers_to_add (route,
 * virtual host, route table) when the stream has a route, then `headers`,
 * then the connection manager's local_reply_config. */
void sharp_stream_send_local_reply_body(sharp_filter_t *f, uint32_t status, const char *body, size_t blen,
                                        uint32_t response_flag, const char *details, const char *const *headers);
/* The same with header operations (a filter's response_headers_to_add)
 * applied after `headers`, with their append actions and %VAR% values. */
struct sharp_header_ops;
void sharp_stream_send_local_reply_ops(sharp_filter_t *f, uint32_t status, const char *body, uint32_t response_flag,
                                       const char *details, const char *const *headers,
                                       const struct sharp_header_ops *ops);
/* The same with a body of `blen` bytes. */
void sharp_stream_send_local_reply_body_ops(sharp_filter_t *f, uint32_t status, const char *body, size_t blen,
                                            uint32_t response_flag, const char *details, const char *const *headers,
                                            const struct sharp_header_ops *ops);
/* A filter answers the request itself with a headers-only response `h`
 * (Envoy's decoder filter encodeHeaders(headers, true, details), as the
 * CORS filter answers a preflight): not a local reply, so neither the
 * route's response headers nor local_reply_config apply, and the response
 * passes every filter's encode_headers from the last one to the first,
 * `f` included, as in Envoy. The request goes no further than `f`; its
 * filter returns SHARP_FILTER_STOP. */
void sharp_stream_respond_headers(sharp_filter_t *f, sharp_headers_t *h, const char *details);
/* The same with a body of `n` bytes (a cache hit, Envoy's decoder-filter
 * encodeHeaders and encodeData): the headers end the stream when n is 0 or
 * the request is HEAD, else the body follows through the same filters. */
void sharp_stream_respond(sharp_filter_t *f, sharp_headers_t *h, const char *body, size_t n,
                          const char *details);
/* A filter that stopped the response headers (SHARP_FILTER_STOP from
 * encode_headers) resumes them with a body of its own in place of what the
 * upstream sent (a validated 304 becoming the cached response, as Envoy's
 * cache filter adds the cached body with addEncodedData): the headers, as
 * the filter left them, go on to the filters before it, without end of
 * stream unless n is 0 or the request is HEAD, then the body ends the
 * stream. Response data or trailers held behind the filter are dropped; the
 * filter consumes (SHARP_FILTER_CONSUMED) any that arrive later. */
void sharp_stream_continue_encoding_body(sharp_filter_t *f, const char *body, size_t n);
/* The response headers a filter holds after returning SHARP_FILTER_STOP
 * from encode_headers (a copy the stream keeps): the filter may change them
 * until it resumes them. */
sharp_headers_t *sharp_stream_held_response_headers(sharp_stream_t *s);
/* Whether the response has trailers (known once encode_data sees the end). */
bool sharp_stream_has_response_trailers(sharp_stream_t *s);
/* The response trailers, which a filter holding the response's end may
 * add to (the upstream's when sharp_stream_has_response_trailers, else
 * empty); a filter that adds some to a response without them ends it with
 * sharp_stream_encode_trailers (Envoy's addEncodedTrailers). */
sharp_headers_t *sharp_stream_response_trailers(sharp_stream_t *s);
/* The terminal filter injects the upstream response: the encode chain runs
 * from the filter before `f` back to the first one, then the codec. */
void sharp_stream_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream);
void sharp_stream_encode_data(sharp_filter_t *f, const char *p, size_t n, bool end_stream);
void sharp_stream_encode_trailers(sharp_filter_t *f, sharp_headers_t *t);
/* A filter that consumed request data (SHARP_FILTER_CONSUMED) passes its own
 * on to the filters after `f`; held there like any request data while one
 * of them stops the chain. */
void sharp_stream_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end_stream);
/* A filter that consumed the request's last data (SHARP_FILTER_CONSUMED
 * with end of stream) ends the request with trailers `t` instead, after
 * its own last data (sharp_stream_decode_data without end of stream):
 * they reach the filters after `f` through decode_trailers (Envoy's
 * addDecodedTrailers). */
void sharp_stream_decode_trailers(sharp_filter_t *f, sharp_headers_t *t);
/* A filter holding response data (the fault filter's response rate
 * limit) tells the filters after it that its buffer went above the
 * stream's buffer limit (above) or drained (below): the router pauses or
 * resumes its upstream, as on the downstream connection's watermarks.
 * Each filter is one source of the pause, held or not (saying the same
 * twice changes nothing): the router resumes only once no source holds
 * it (the downstream connection, the codec, other filters). */
void sharp_stream_encoder_watermark(sharp_filter_t *f, bool above);
/* A filter that buffers the response body itself (the gRPC bridges) and
 * finds it above the stream's buffer limit answers as the connection
 * manager does for a held body (Envoy's responseDataTooLarge): counted in
 * http.<stat_prefix>.rs_too_large, a 500 local reply with details
 * response_payload_too_large (a reset once the response has started). The
 * filter then returns SHARP_FILTER_CONSUMED or SHARP_FILTER_STOP. */
void sharp_stream_response_too_large(sharp_filter_t *f);
/* A filter that buffers the request body itself (ext_authz's
 * max_request_bytes, the gRPC-HTTP/1 bridge) and finds it above its limit
 * answers as the connection manager does for a held body (Envoy's
 * requestDataTooLarge): counted in http.<stat_prefix>.downstream_rq_too_large,
 * a 413 local reply with details request_payload_too_large (a reset once the
 * response has started). The filter then returns SHARP_FILTER_STOP. */
void sharp_stream_request_too_large(sharp_filter_t *f);
/* Whether a response-side pause applies to f (see on_downstream_watermark):
 * a filter that starts producing response data (the router binding an
 * upstream) begins paused. */
bool sharp_stream_encoder_paused(sharp_filter_t *f);
/* A filter holding request data (the router's body while its upstream
 * connects, or while the upstream's write buffer is full) tells that it
 * went above the stream's buffer limit (above) or drained (below): the
 * downstream stops or resumes being read, and on below the filters before
 * it get on_decoder_drained. The filter is one source of the downstream's
 * read pause (see sharp_stream_read_disable). */
void sharp_stream_decoder_watermark(sharp_filter_t *f, bool above);
/* Whether request data held after `f` is above the stream's buffer limit:
 * the connection manager's buffer behind a stopped filter after f, or a
 * filter after f that said so with sharp_stream_decoder_watermark. A
 * filter that makes much request data out of little (the decompressor)
 * holds its input meanwhile, until on_decoder_drained. */
bool sharp_stream_decoder_above_limit(sharp_filter_t *f);
/* The filter f stops/resumes reading the downstream (request body
 * backpressure). Reading is paused by sources, counted as Envoy's
 * readDisable: the connection manager's held request data, each filter's
 * decoder watermark and each filter's read_disable; it resumes only once
 * no source holds it. A filter holds it at most once (disabling twice is
 * one hold, and one enable releases it). */
void sharp_stream_read_disable(sharp_filter_t *f, bool disable);
/* Resets the stream (closes an HTTP/1 connection) after a failure mid-response. */
void sharp_stream_reset(sharp_stream_t *s, uint32_t response_flag);

/* Data a filter keeps for the stream's downstream connection (Envoy's
 * filter state with the connection's life span), one per key: NULL when
 * none was set. Set takes `data` (freed with free_fn when the connection
 * ends); false, and nothing taken, when the stream has no connection. */
void *sharp_stream_connection_data(sharp_stream_t *s, const void *key);
bool sharp_stream_set_connection_data(sharp_stream_t *s, const void *key, void *data, void (*free_fn)(void *));

/* Accessors. */
sharp_stream_info_t *sharp_stream_info(sharp_stream_t *s);
const struct sharp_route *sharp_stream_route(sharp_stream_t *s);
/* The route entry's cluster (the weighted cluster picked with the route,
 * Envoy's routeEntry()->clusterName()); NULL without a route entry (no
 * route, a direct response or redirect). */
const char *sharp_stream_route_cluster(sharp_stream_t *s);
struct sharp_worker *sharp_stream_worker(sharp_stream_t *s);
/* The connection's original destination when the original_dst listener
 * filter restored its local address (Envoy's localAddressRestored), else
 * NULL: what an ORIGINAL_DST cluster connects to. */
const struct sockaddr_storage *sharp_stream_restored_local(sharp_stream_t *s);
sharp_headers_t *sharp_stream_request_headers(sharp_stream_t *s);
bool sharp_stream_request_complete(sharp_stream_t *s);
bool sharp_stream_is_head(sharp_stream_t *s);
uint32_t sharp_stream_buffer_limit(sharp_stream_t *s);
const struct sharp_hcm_config *sharp_stream_hcm(sharp_stream_t *s);
/* The most specific per-route config of f's filter for the stream's route
 * (Envoy's mostSpecificPerFilterConfig: the picked weighted cluster, the
 * route, its virtual host, the route table), found by f's config name and
 * made by f's factory; NULL when none. */
const void *sharp_stream_route_config(sharp_filter_t *f);
/* The downstream connection's peer address and the accepted socket's own
 * address (NULL when unknown). The trusted client address (Envoy's
 * downstream remote address, from x-forwarded-for) is the stream info's
 * downstream_remote_address. */
struct sockaddr;
const struct sockaddr *sharp_stream_downstream_peer(sharp_stream_t *s);
/* The socket's peer (Envoy's directRemoteAddress): the peer address above
 * unless a PROXY protocol header gave the connection another source. */
const struct sockaddr *sharp_stream_downstream_direct_peer(sharp_stream_t *s);
/* The connection's peer address above, printed ("" when unknown). */
const char *sharp_stream_downstream_peer_str(sharp_stream_t *s);
const struct sockaddr *sharp_stream_downstream_local(sharp_stream_t *s);
/* Every per-route config of f's filter for the stream's route, the most
 * specific first (Envoy's getAllPerFilterConfig, reversed), at most `cap`:
 * their number. */
uint32_t sharp_stream_route_configs(sharp_filter_t *f, const void **out, uint32_t cap);
/* The virtual host of the stream's route (NULL without one). */
struct sharp_vhost;
const struct sharp_vhost *sharp_stream_vhost(sharp_stream_t *s);
/* The stream's filter chain, in chain order (filters that work together
 * within one stream, such as several compressors, find each other here). */
uint32_t sharp_stream_nfilters(sharp_stream_t *s);
sharp_filter_t *sharp_stream_filter(sharp_stream_t *s, uint32_t i);

#endif

/* stream.h: one HTTP request/response exchange inside the connection manager
 * (private to proxy/http; filters use the accessors in filter.h). */
#ifndef SHARP_HTTP_STREAM_H
#define SHARP_HTTP_STREAM_H

#include "http/filter.h"
#include "http/route.h"
#include "sbuf.h"
#include "snapshot.h"
#include "worker.h"

#include <uv.h>

struct sharp_conn;

struct sharp_stream {
    struct sharp_conn *conn;
    sharp_dlist_t conn_link; /* in conn->streams */
    unsigned long long id, conn_id; /* "[C<conn_id>][S<id>]" in log lines */
    sharp_snapshot_t *snap; /* the connection's (borrowed: the connection outlives the stream) */
    const sharp_hcm_config_t *hcm;
    /* The worker's view when the stream began (a reference): the clusters,
     * pools and RDS route table this request uses, whatever later updates
     * do. NULL for a stream without a worker. */
    sharp_worker_view_t *view;
    const sharp_route_table_t *routes; /* the connection manager's route table on that view */
    const sharp_vhost_t *vhost;
    const sharp_route_t *route;
    /* The route entry's cluster, picked when the route is resolved (Envoy's
     * weighted cluster route entry): route_wc among weighted clusters (its
     * typed_per_filter_config is the most specific level), route_cluster
     * the name (NULL when runtime weights add up to 0). */
    const sharp_weighted_cluster_t *route_wc;
    const char *route_cluster;
    bool route_cluster_picked;
    sharp_stream_info_t info;
    sharp_headers_t req;
    sharp_headers_t resp;
    sharp_headers_t req_trailers;
    sharp_headers_t resp_trailers;
    bool has_req_trailers;   /* the request ended with req_trailers (HTTP/2) */
    bool has_resp_trailers;  /* the response ends with resp_trailers */
    void *codec_state;       /* the codec's per-stream state (HTTP/2) */
    sharp_filter_t *filters;
    uint32_t nfilters;
    /* decode side: filters [0, dec_next) have seen the request headers; the
     * chain is stopped at dec_next - 1 while dec_stopped */
    uint32_t dec_next;
    bool dec_stopped;
    bool dec_end_sent;        /* end of request passed through the whole chain */
    int32_t dec_data_stop;    /* filter that stopped on data (buffering), -1 if none */
    sharp_sbuf_t dec_buf;     /* request body held while the chain is stopped */
    bool dec_end_pending;     /* end of request not yet passed through the chain */
    /* The filter holding the request returned STOP from decode_data for
     * the data it last saw: it wants the whole body (Envoy's
     * StopIterationAndBuffer), so above the buffer limit the request is
     * answered with a 413 (downstream_rq_too_large) rather than the
     * downstream being paused. CONTINUE (held by the chain's stop on
     * headers, Envoy's StopIterationAndWatermark) clears it. */
    bool dec_buffering;
    /* encode side: filters (enc_next, nfilters) have seen the response headers,
     * counting down; enc_next == -1 when all have */
    int32_t enc_next;
    bool enc_stopped;
    sharp_sbuf_t enc_buf;     /* response body held behind the filter holding the headers */
    bool enc_end_pending;
    bool enc_headers_end;
    /* The filter holding the response headers returned STOP for the data
     * held behind it: it wants the whole body (Envoy's
     * StopIterationAndBuffer), so above the buffer limit the response is a
     * 500 (rs_too_large) rather than a pause of the upstream. */
    bool enc_buffering;
    /* The response was replaced by that 500: what the terminal filter
     * still passes on is dropped. */
    bool enc_replaced;
    /* Downstream read pause, counted as Envoy's readDisable is: the
     * number of sources that hold it (the codec stops reading the stream
     * while it is not 0). The sources are dec_buf_paused (request data
     * held behind a stopped filter above the buffer limit) and each
     * filter's dec_above (sharp_stream_decoder_watermark) and read_paused
     * (sharp_stream_read_disable); each holds it at most once. */
    uint32_t read_pauses;
    bool dec_buf_paused;
    /* Response-side pause sources, each counted in the filters it pauses
     * (sharp_filter_t.enc_pauses): the connection's write watermark as
     * this stream has seen it (conn_above), the codec's own buffer of this
     * stream's response (codec_above, HTTP/2), and the response data held
     * behind the filter holding the headers above the buffer limit
     * (enc_buf_above, pausing the filters after enc_buf_at). Filters'
     * own are sharp_filter_t.enc_above. */
    bool conn_above, codec_above, enc_buf_above;
    int32_t enc_buf_at;
    bool request_complete;
    bool response_started;    /* codec wrote the response head */
    bool response_complete;
    bool local_reply;
    uint32_t local_reply_code; /* the status asked for, before local_reply_config rewrote it */
    bool is_head;
    /* Envoy's is_grpc_request: decided from the request headers as the
     * filters first see them (a filter rewriting content-type, as the gRPC
     * bridges do, does not change how local replies are sent) */
    bool grpc_known, grpc_request;
    bool destroyed;
    bool finish_scheduled;
    bool resp_chunked;
    bool resp_close_delimited;
    bool closes_connection;
    /* Envoy's saw_connection_close: the client asked for the close (or the
     * response is a 400 local reply); with the request complete there is
     * nothing left to read, so the close is not delayed. */
    bool saw_connection_close;
    bool force_delayed_close; /* protocol error: always the delayed close */
    /* HTTP upgrades (WebSocket): the request carries Connection: upgrade and
     * an Upgrade header (the codec strips h2c); the connection manager
     * accepted it (upgrade_configs); the upstream's 101 went downstream and
     * bytes now flow both ways unframed. */
    bool upgrade_request;
    /* HTTP/1: :scheme came from an absolute-form URL; otherwise the
     * connection manager sets it from x-forwarded-proto once that is
     * sanitized, as Envoy does */
    bool scheme_from_url;
    /* the response code details a filter gave (its own copy: a filter may
     * build them in a buffer of its own, and the access log reads them
     * after that filter's call has returned) */
    char *details_copy;
    bool upgrade_accepted;
    bool upgraded;
    /* a CONNECT request (no :path, :authority is the target): an upgrade of
     * type "CONNECT" whose 2xx answer starts the tunnel */
    bool is_connect;
    bool reset_local; /* the proxy reset the stream (sharp_codec_reset) */
    /* tracing (http/tracing.h): the span, NULL without one; the route
     * decorator's operation while it may still go out in
     * x-envoy-decorator-operation */
    struct sharp_span *span;
    const char *decorated_operation;
    bool decorated_propagate;
    /* The upstream host a filter asks for ("ip:port", "" for none; Envoy's
     * setUpstreamOverrideHost, filters/stateful_session): the router's
     * first try takes it when the route's cluster has it healthy, else
     * balances as usual, or with override_host_strict answers 503. */
    char override_host[SHARP_ADDR_STRLEN];
    bool override_host_strict;
    uint64_t idle_timeout_ms; /* stream_idle_timeout, or the route's idle_timeout */
    /* stream_idle_timeout runs on the connection's stream_idle_timer: the
     * stream is due at idle_since_ns (last activity) plus the scaled
     * timeout, unless idle_expired (it fired; activity re-arms it) */
    uint64_t idle_since_ns;
    bool idle_expired;
    /* Defers the finish or reset to the next loop turn (a 0 ms deadline,
     * worker.h) */
    sharp_deadline_t defer;
    /* Never started: its close callback frees the stream (with the
     * optional timers below). */
    uv_timer_t defer_timer;
    uv_timer_t request_timer; /* request_timeout */
    uv_timer_t duration_timer; /* max_stream_duration */
    uv_timer_t headers_timer;  /* request_headers_timeout: first byte to headers complete */
    int timers_open;
};

#endif

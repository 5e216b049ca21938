/* http2_client.c: the HTTP/2 client codec of upstream connections (nghttp2
 * client session, cleartext with prior knowledge), as Envoy's
 * Http2::ClientConnectionImpl.
 *
 * Every request is a stream of the connection's session. Flow control ties
 * both directions to backpressure without unbounded buffers:
 * - response: the session is made with no automatic WINDOW_UPDATE; the
 *   bytes a stream delivers are given back (nghttp2_session_consume) only
 *   while the router reads them, so a stream whose downstream is above its
 *   watermark (read_disable) stops being sent to once its window is used;
 * - request: the body waits in the stream until a data provider hands it
 *   to the session, which defers while the socket's write queue is above
 *   the cluster's buffer limit; the router is paused while the stream holds
 *   more than that limit.
 *
 * Re-entrancy: session callbacks run only from the socket's read callback or
 * from the connection's flush timer, never inside a call from the router:
 * the send_* calls queue frames and schedule a flush. So a stream's reset
 * never reaches the router while it is calling into the stream. */
#include "upstream/codec.h"
#include "http/hpack_hint.h"
#include "http/nv_pin.h"
#include "log.h"
#include "net.h"
#include "small.h"
#include "sbuf.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <strings.h>

/* Response header bytes a stream may get (as the HTTP/1 codec's limit). */
#define H2_MAX_HEADER_BYTES (96 * 1024)

typedef struct h2_conn h2_conn_t;

typedef struct h2_stream {
    sharp_upstream_cx_t s; /* s.req: the bound request, NULL once it let go */
    h2_conn_t *hc;
    sharp_dlist_t link;    /* in hc->streams */
    int32_t id;            /* 0 until the request is submitted */
    sharp_headers_t resp;  /* response headers */
    sharp_headers_t resp_trailers;
    sharp_sbuf_t body;     /* request body not yet taken by the session */
    size_t body_off;
    sharp_headers_t trailers; /* request trailers, sent after the body */
    bool has_trailers;
    bool body_end;         /* the request's end is known (body or trailers) */
    bool deferred;         /* the data provider waits for body or socket room */
    bool headers_done;     /* the final response headers went to the request */
    bool response_complete;
    bool is_head;
    bool read_disabled;
    bool above_watermark;
    bool remote_reset;     /* the upstream sent RST_STREAM */
    bool protocol_error;   /* the response broke HTTP (or a limit) */
    bool closed;           /* the session is done with it (or never had it) */
    bool counted;          /* counts in the pool's active streams */
    size_t unconsumed;     /* response DATA bytes not given back to the window */
    /* an HTTP/1.1 upgrade sent as an extended CONNECT (RFC 8441): its
     * Upgrade token, for the 101 its 200 becomes (a small block) */
    char *upgrade;
    size_t upgrade_len;
    sharp_reset_reason_t fail_why; /* a local failure to report from the flush timer */
    const char *fail_detail;
} h2_stream_t;

struct h2_conn {
    sharp_upstream_conn_t *c;
    nghttp2_session *ng;
    sharp_dlist_t streams;
    uint32_t nstreams;     /* bound streams (the pool's nactive for this connection) */
    uv_timer_t flush_timer, ping_timer, ping_timeout;
    bool flush_scheduled;
    bool fails_pending; /* a stream has a fail_detail to report (a scan of the streams finds it) */
    sharp_sbuf_t batch; /* frames of one flush, written together */
    sharp_hpack_hint_t hpack;
    bool in_recv;
    bool goaway;
    bool peer_settings;    /* the peer's first SETTINGS arrived */
    int32_t settings_next_id; /* the next stream id then: the ids below were submitted before */
    bool ping_outstanding;
    bool local_error;      /* the session sent a GOAWAY with an error code */
    /* flood accounting, as Envoy's codec */
    uint32_t outbound_frames, outbound_control_frames; /* queued while the socket is backed up */
    uint32_t empty_frames;  /* consecutive inbound frames with an empty payload */
    uint64_t priority_frames, window_update_frames, data_frames_sent, opened_streams;
    sharp_reset_reason_t close_why;
    const char *close_detail;
    sharp_nv_pin_t *pins; /* header blocks nghttp2 has not sent yet (nv_pin.h) */
};

#define HC(conn) ((h2_conn_t *)(conn)->codec_state)
#define STREAM(link_ptr) sharp_container_of(link_ptr, h2_stream_t, link)

static void flush(h2_conn_t *hc);
static void on_flush_timer(uv_timer_t *t);
static void on_ping_timer(uv_timer_t *t);

static const sharp_h2_options_t *opts(const h2_conn_t *hc)
{
    return &hc->c->pool->cluster->h2;
}

static const sharp_cluster_stats_t *st(const h2_conn_t *hc)
{
    return &hc->c->pool->cluster->st;
}

static sharp_stats_shard_t *sh(const h2_conn_t *hc)
{
    return sharp_upstream_conn_shard(hc->c);
}

static bool conn_closing(const h2_conn_t *hc)
{
    return hc->c->state == CX_CLOSING;
}

static void schedule_flush(h2_conn_t *hc)
{
    if (hc->flush_scheduled || conn_closing(hc)) return;
    hc->flush_scheduled = true;
    uv_timer_start(&hc->flush_timer, on_flush_timer, 0, 0);
}

/* Closes the connection for a connection-level reason the streams hear. */
static void conn_fail(h2_conn_t *hc, sharp_reset_reason_t why, const char *detail)
{
    if (conn_closing(hc)) return;
    hc->close_why = why;
    hc->close_detail = detail;
    sharp_upstream_conn_close(hc->c);
}

static void stream_free(h2_stream_t *s)
{
    sharp_dlist_remove(&s->link);
    sharp_headers_free(&s->resp);
    sharp_headers_free(&s->resp_trailers);
    sharp_headers_free(&s->trailers);
    sharp_sbuf_free(&s->body);
    sharp_small_free(s->upgrade);
    sharp_small_free(s);
}

/* The stream no longer counts in the connection's active streams; its
 * memory goes too when `release` (the request let go of it). The pool hears
 * of it last: it may close the connection (and so free the other streams)
 * or start the next waiting request. */
static void stream_done(h2_stream_t *s, bool release)
{
    h2_conn_t *hc = s->hc;
    bool counted = s->counted;
    if (counted) {
        s->counted = false;
        hc->nstreams--;
        sharp_gauge_add(sh(hc), st(hc)->h2.streams_active, -1);
    }
    if (release) stream_free(s);
    if (counted) sharp_upstream_conn_stream_done(hc->c, true);
}

/* Tells the bound request its stream failed and lets go of it. */
static void stream_reset_notify(h2_stream_t *s, sharp_reset_reason_t why, const char *detail)
{
    sharp_upstream_request_t *r = s->s.req;
    if (!r) return;
    s->s.req = NULL;
    r->cx = NULL;
    r->cb->on_reset(r->ctx, why, detail);
}

/* ---- session callbacks ---- */

static h2_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ud;
    h2_stream_t *s = stream_of(ng, frame->hd.stream_id);
    /* a block after the final response headers is the trailers' */
    if (s) sharp_headers_clear(s->headers_done ? &s->resp_trailers : &s->resp);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    h2_conn_t *hc = ud;
    h2_stream_t *s = stream_of(ng, frame->hd.stream_id);
    if (!s) return 0;
    sharp_headers_t *h = s->headers_done ? &s->resp_trailers : &s->resp;
    sharp_headers_add(h, (const char *)name, namelen, (const char *)value, valuelen);
    /* max_headers_count (:status aside) and the header size limit, as the
     * HTTP/1 codec: the stream is reset and answered as a protocol error */
    if (h->n > hc->c->pool->cluster->max_response_headers_count + 1 ||
        sharp_headers_byte_size(h) > H2_MAX_HEADER_BYTES) {
        sharp_counter_inc(sh(hc), st(hc)->h2.header_overflow);
        s->protocol_error = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static void deliver_headers(h2_conn_t *hc, h2_stream_t *s, bool end_stream)
{
    /* nghttp2 checked :status: three digits */
    unsigned code = sharp_headers_status(&s->resp);
    if (!code) {
        s->protocol_error = true;
        nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
        return;
    }
    if (code >= 100 && code < 200) {
        /* 100 Continue and friends: swallowed (nghttp2 allows more HEADERS) */
        sharp_headers_clear(&s->resp);
        return;
    }
    sharp_headers_t *h = &s->resp;
    if (s->upgrade && code == 200) {
        /* Envoy's transformUpgradeResponseFromH2toH1: the extended
         * CONNECT's 200 is the upgrade's 101 */
        sharp_headers_set_cstr(h, ":status", "101");
        sharp_headers_set(h, "upgrade", 7, s->upgrade, s->upgrade_len);
        sharp_headers_set_cstr(h, "connection", "upgrade");
    }
    /* :status first, as the HTTP/1 codec delivers it */
    int at = sharp_headers_find(h, ":status", 7, 0);
    if (at > 0) {
        sharp_header_entry_t e = h->e[at];
        memmove(&h->e[1], &h->e[0], (size_t)at * sizeof e);
        h->e[0] = e;
    }
    s->headers_done = true;
    if (end_stream) s->response_complete = true;
    sharp_upstream_request_t *r = s->s.req;
    if (r) r->cb->on_headers(r->ctx, h, end_stream);
}

/* Every frame's header, CONTINUATION included, before its payload:
 * Envoy's check on consecutive frames with an empty payload (DATA, HEADERS
 * or CONTINUATION without END_STREAM), a connection error. */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    (void)ng;
    h2_conn_t *hc = ud;
    bool empty = (hd->type == NGHTTP2_DATA || hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION) &&
                 hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM);
    if (!empty) {
        hc->empty_frames = 0;
        return 0;
    }
    if (++hc->empty_frames > opts(hc)->max_consecutive_inbound_frames_with_empty_payload) {
        sharp_debug(pool, "[C%llu] too many consecutive frames with an empty payload", hc->c->id);
        sharp_counter_inc(sh(hc), st(hc)->h2.inbound_empty_frames_flood);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    h2_conn_t *hc = ud;
    (void)ng;
    /* Envoy's inbound flood checks (connection errors), counted against
     * the streams opened (request HEADERS sent) and the DATA frames sent:
     * PRIORITY frames beyond max_inbound_priority_frames_per_stream *
     * (1 + opened), WINDOW_UPDATE frames beyond 1 + 2 * (opened +
     * max_inbound_window_update_frames_per_data_frame_sent * DATA sent) */
    if (frame->hd.type == NGHTTP2_PRIORITY &&
        ++hc->priority_frames > (uint64_t)opts(hc)->max_inbound_priority_frames_per_stream * (1 + hc->opened_streams)) {
        sharp_counter_inc(sh(hc), st(hc)->h2.inbound_priority_frames_flood);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (frame->hd.type == NGHTTP2_WINDOW_UPDATE &&
        ++hc->window_update_frames >
            1 + 2 * (hc->opened_streams +
                     (uint64_t)opts(hc)->max_inbound_window_update_frames_per_data_frame_sent * hc->data_frames_sent)) {
        sharp_counter_inc(sh(hc), st(hc)->h2.inbound_window_update_frames_flood);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        /* the peer's SETTINGS_MAX_CONCURRENT_STREAMS may have changed */
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            if (!hc->peer_settings) {
                hc->peer_settings = true;
                hc->settings_next_id = nghttp2_session_get_next_stream_id(ng);
            }
            sharp_upstream_conn_capacity_changed(hc->c);
        }
        return 0;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            hc->ping_outstanding = false;
            uv_timer_stop(&hc->ping_timeout);
        }
        return 0;
    case NGHTTP2_GOAWAY:
        /* Envoy's onGoAway: the connection drains. Streams above the last
         * stream id were not processed: the session closes them with
         * REFUSED_STREAM, which the router may retry. */
        sharp_debug(pool, "[C%llu] GOAWAY received (last stream %d, error %u)", hc->c->id,
                    frame->goaway.last_stream_id, frame->goaway.error_code);
        if (!hc->goaway) {
            hc->goaway = true;
            sharp_counter_inc(sh(hc), st(hc)->cx_close_notify);
            hc->c->draining = true;
            sharp_upstream_conn_capacity_changed(hc->c);
        }
        return 0;
    case NGHTTP2_RST_STREAM: {
        h2_stream_t *s = stream_of(ng, frame->hd.stream_id);
        sharp_counter_inc(sh(hc), st(hc)->h2.rx_reset);
        if (s) s->remote_reset = true;
        return 0;
    }
    case NGHTTP2_HEADERS: {
        h2_stream_t *s = stream_of(ng, frame->hd.stream_id);
        if (!s) return 0;
        bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
        if (!s->headers_done) {
            deliver_headers(hc, s, end);
        } else {
            /* trailers */
            sharp_counter_inc(sh(hc), st(hc)->h2.trailers);
            s->response_complete = true;
            sharp_upstream_request_t *r = s->s.req;
            if (r) {
                if (r->cb->on_trailers) r->cb->on_trailers(r->ctx, &s->resp_trailers);
                else r->cb->on_data(r->ctx, NULL, 0, true);
            }
        }
        return 0;
    }
    case NGHTTP2_DATA: {
        h2_stream_t *s = stream_of(ng, frame->hd.stream_id);
        if (!s || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) || !s->headers_done) return 0;
        s->response_complete = true;
        sharp_upstream_request_t *r = s->s.req;
        if (r) r->cb->on_data(r->ctx, NULL, 0, true);
        return 0;
    }
    default:
        return 0;
    }
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                              void *ud)
{
    (void)flags;
    h2_conn_t *hc = ud;
    sharp_counter_add(sh(hc), st(hc)->cx_rx_bytes_total, len);
    h2_stream_t *s = stream_of(ng, id);
    if (!s || !s->s.req) {
        /* nobody reads it: give the window back at once */
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    s->s.req->cb->on_data(s->s.req->ctx, (const char *)data, len, false);
    /* the router may have let go, or paused reading, meanwhile */
    if (s->s.req && s->read_disabled) s->unconsumed += len;
    else nghttp2_session_consume(ng, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    h2_conn_t *hc = ud;
    h2_stream_t *s = stream_of(ng, id);
    if (!s) return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    s->closed = true;
    /* DATA the router never read back: the connection window gets it */
    if (s->unconsumed) {
        nghttp2_session_consume_connection(ng, s->unconsumed);
        s->unconsumed = 0;
    }
    if (s->s.req && !s->response_complete) {
        sharp_reset_reason_t why;
        const char *detail;
        if (s->protocol_error) {
            why = SHARP_RESET_PROTOCOL_ERROR;
            detail = "protocol error";
        } else if (error_code == NGHTTP2_REFUSED_STREAM) {
            /* RST_STREAM REFUSED_STREAM, or above a GOAWAY's last stream */
            why = SHARP_RESET_REFUSED_STREAM;
            detail = "remote refused stream reset";
            sharp_counter_inc(sh(hc), st(hc)->h2.stream_refused_errors);
            /* submitted before the peer said how many streams it takes:
             * above a limit SHARP could not know (the router sends it
             * again). One submitted before but still queued when the
             * SETTINGS came was held to the limit by nghttp2 when sent. */
            if (!hc->peer_settings || id < hc->settings_next_id) s->s.req->refused_unknown_limit = true;
        } else if (s->remote_reset) {
            why = SHARP_RESET_REMOTE;
            detail = "remote reset";
        } else {
            why = SHARP_RESET_PROTOCOL_ERROR;
            detail = "protocol error";
        }
        sharp_debug(pool, "[C%llu] stream %d closed before the response ended (error %u: %s)", hc->c->id, id,
                    error_code, detail);
        stream_reset_notify(s, why, detail);
    }
    /* a complete response stays with its request until it lets go */
    stream_done(s, !s->s.req);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ng;
    h2_conn_t *hc = ud;
    sharp_nv_pin_release(&hc->pins, frame);
    if (frame->hd.type == NGHTTP2_DATA) hc->data_frames_sent++;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) hc->opened_streams++;
    if (frame->hd.type == NGHTTP2_RST_STREAM) sharp_counter_inc(sh(hc), st(hc)->h2.tx_reset);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* the session found a connection error of its own (HPACK, flow
         * control, a frame out of place) and ends the connection */
        sharp_debug(pool, "[C%llu] GOAWAY sent (error %u)", hc->c->id, frame->goaway.error_code);
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR) hc->local_error = true;
    }
    /* Envoy's outbound flood checks: frames pending in the output (made
     * since it was last written out completely), all types and control
     * frames (PING, SETTINGS, RST_STREAM) */
    bool control = frame->hd.type == NGHTTP2_PING || frame->hd.type == NGHTTP2_SETTINGS ||
                   frame->hd.type == NGHTTP2_RST_STREAM;
    if (++hc->outbound_frames > opts(hc)->max_outbound_frames) {
        sharp_debug(pool, "[C%llu] too many pending outbound frames", hc->c->id);
        sharp_counter_inc(sh(hc), st(hc)->h2.outbound_flood);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (control && ++hc->outbound_control_frames > opts(hc)->max_outbound_control_frames) {
        sharp_debug(pool, "[C%llu] too many pending outbound control frames", hc->c->id);
        sharp_counter_inc(sh(hc), st(hc)->h2.outbound_control_flood);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* A frame nghttp2 gave up on (a request whose stream was cancelled while
 * it waited for a slot, a GOAWAY that came first): a pinned header block
 * goes. */
static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error_code, void *ud)
{
    (void)ng;
    (void)lib_error_code;
    h2_conn_t *hc = ud;
    sharp_nv_pin_release(&hc->pins, frame);
    return 0;
}

static int on_invalid_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error_code, void *ud)
{
    h2_conn_t *hc = ud;
    h2_stream_t *s = stream_of(ng, frame->hd.stream_id);
    sharp_debug(pool, "[C%llu] invalid frame (type %u, stream %d) from upstream: %s", hc->c->id, frame->hd.type,
                frame->hd.stream_id, nghttp2_strerror(lib_error_code));
    if (s) s->protocol_error = true;
    if (lib_error_code == NGHTTP2_ERR_HTTP_MESSAGING || lib_error_code == NGHTTP2_ERR_HTTP_HEADER) {
        sharp_counter_inc(sh(hc), st(hc)->h2.rx_messaging_error);
        /* Envoy's default: a malformed message is a connection error */
        if (!opts(hc)->stream_error_on_invalid_http_message) return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* ---- request body: the data provider ---- */

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *data_flags,
                               nghttp2_data_source *source, void *ud)
{
    (void)ng;
    (void)id;
    h2_conn_t *hc = ud;
    h2_stream_t *s = source->ptr;
    size_t avail = s->body.len - s->body_off;
    if (avail == 0 && !s->body_end) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    /* the socket is backed up: wait for its drain */
    if (avail && hc->c->writer.queued > hc->c->pool->cluster->per_connection_buffer_limit) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (n) memcpy(buf, s->body.data + s->body_off, n); /* an empty end has no buffer */
    s->body_off += n;
    if (s->body_off == s->body.len) {
        s->body_off = 0;
        s->body.len = 0;
    } else if (s->body_off > 64 * 1024 && s->body_off * 2 > s->body.len) {
        memmove(s->body.data, s->body.data + s->body_off, s->body.len - s->body_off);
        s->body.len -= s->body_off;
        s->body_off = 0;
    }
    sharp_counter_add(sh(hc), st(hc)->cx_tx_bytes_total, n);
    if (s->body.len == 0 && s->body_end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->has_trailers) {
            nghttp2_nv nv[64];
            size_t nn = 0;
            for (uint32_t i = 0; i < s->trailers.n && nn < SHARP_ARRAY_SIZE(nv); i++) {
                sharp_str_t k = sharp_headers_name(&s->trailers, i), v = sharp_headers_value(&s->trailers, i);
                if (!k.len || k.p[0] == ':') continue;
                nv[nn++] = (nghttp2_nv){(uint8_t *)k.p, (uint8_t *)v.p, k.len, v.len, NGHTTP2_NV_FLAG_NONE};
            }
            sharp_nv_pin_t *pin = sharp_nv_pin(&hc->pins, nv, nn, 0, s->trailers.buf, s->trailers.blen);
            if (nn && nghttp2_submit_trailer(hc->ng, s->id, nv, nn) == 0) *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            else sharp_nv_pin_drop(&hc->pins, pin);
        }
    }
    /* below the buffer limit again: the router may send more */
    if (s->above_watermark && s->body.len - s->body_off <= hc->c->pool->cluster->per_connection_buffer_limit / 2) {
        s->above_watermark = false;
        if (s->s.req && s->s.req->cb->on_write_watermark) s->s.req->cb->on_write_watermark(s->s.req->ctx, false);
    }
    return (ssize_t)n;
}

/* ---- writing ---- */

static void flush(h2_conn_t *hc)
{
    if (conn_closing(hc)) return;
    /* everything made before has been written out: nothing is pending */
    if (hc->c->writer.queued == 0) hc->outbound_frames = hc->outbound_control_frames = 0;
    /* nghttp2 hands out about a frame per call: the frames of one flush go
     * to the socket in one write (up to 64 KiB at a time), not a system
     * call each */
    sharp_sbuf_t *batch = &hc->batch;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(hc->ng, &data);
        if (conn_closing(hc)) {
            sharp_sbuf_reset(batch);
            return;
        }
        if (n < 0) {
            sharp_debug(pool, "[C%llu] HTTP/2 send failed: %s", hc->c->id, nghttp2_strerror((int)n));
            sharp_sbuf_reset(batch);
            conn_fail(hc, SHARP_RESET_PROTOCOL_ERROR, "protocol error");
            return;
        }
        if (n > 0) sharp_sbuf_append(batch, (const char *)data, (size_t)n);
        if ((n == 0 || batch->len >= 64 * 1024) && batch->len) {
            uv_buf_t b = uv_buf_init(batch->data, (unsigned)batch->len);
            sharp_writer_write(&hc->c->writer, &b, 1);
            sharp_sbuf_reset(batch);
            if (conn_closing(hc)) return;
        }
        if (n == 0) break;
    }
    /* neither side wants more: a drained connection is done */
    if (!nghttp2_session_want_read(hc->ng) && !nghttp2_session_want_write(hc->ng) && hc->c->writer.queued == 0) {
        sharp_debug(pool, "[C%llu] HTTP/2 session done (%u streams)", hc->c->id, hc->nstreams);
        if (hc->local_error) {
            sharp_counter_inc(sh(hc), st(hc)->cx_protocol_error);
            conn_fail(hc, SHARP_RESET_PROTOCOL_ERROR, "protocol error");
        } else {
            conn_fail(hc, SHARP_RESET_CONNECTION_TERMINATION, "connection termination");
        }
    }
}

static void on_flush_timer(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    h2_conn_t *hc = HC(c);
    hc->flush_scheduled = false;
    if (conn_closing(hc)) return;
    /* local failures found while the router was calling in: each report
     * may change the list (a retry starts a stream), so look again. Most
     * flushes have none, and a scan of every stream per flush was a
     * per-request cost growing with the streams in flight. */
    bool again = hc->fails_pending;
    hc->fails_pending = false;
    while (again) {
        again = false;
        for (sharp_dlist_t *n = hc->streams.next; n != &hc->streams; n = n->next) {
            h2_stream_t *s = STREAM(n);
            if (!s->fail_detail) continue;
            const char *d = s->fail_detail;
            s->fail_detail = NULL;
            stream_reset_notify(s, s->fail_why, d);
            /* never submitted: the session never had it */
            if (s->id <= 0) stream_done(s, true);
            if (conn_closing(hc)) return;
            again = true;
            break;
        }
    }
    flush(hc);
}

static void h2_on_write_drain(sharp_upstream_conn_t *c)
{
    h2_conn_t *hc = HC(c);
    hc->outbound_frames = hc->outbound_control_frames = 0;
    /* deferred bodies may go on now */
    for (sharp_dlist_t *n = hc->streams.next; n != &hc->streams; n = n->next) {
        h2_stream_t *s = STREAM(n);
        if (s->deferred && s->id > 0 && !s->closed && (s->body.len || s->body_end)) {
            s->deferred = false;
            nghttp2_session_resume_data(hc->ng, s->id);
        }
    }
    flush(hc);
}

/* ---- keepalive ---- */

static void arm_ping(h2_conn_t *hc)
{
    const sharp_h2_options_t *o = opts(hc);
    if (!o->keepalive_interval_ms) return;
    uint64_t ms = o->keepalive_interval_ms;
    /* Envoy adds a random jitter of up to interval_jitter percent */
    uint64_t jitter = (uint64_t)((double)ms * o->keepalive_jitter_percent / 100.0);
    if (jitter) ms += sharp_upstream_env_random(hc->c->pool->env) % (jitter + 1);
    uv_timer_start(&hc->ping_timer, on_ping_timer, ms, 0);
}

static void on_ping_timeout(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    h2_conn_t *hc = HC(c);
    sharp_debug(pool, "[C%llu] HTTP/2 keepalive timeout: no PING answer", c->id);
    sharp_counter_inc(sh(hc), st(hc)->h2.keepalive_timeout);
    conn_fail(hc, SHARP_RESET_CONNECTION_TERMINATION, "connection termination");
}

static void on_ping_timer(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    h2_conn_t *hc = HC(c);
    if (conn_closing(hc)) return;
    if (!hc->ping_outstanding) {
        hc->ping_outstanding = true;
        nghttp2_submit_ping(hc->ng, NGHTTP2_FLAG_NONE, NULL);
        uv_timer_start(&hc->ping_timeout, on_ping_timeout, opts(hc)->keepalive_timeout_ms, 0);
        flush(hc);
    }
    if (!conn_closing(hc)) arm_ping(hc);
}

/* ---- codec operations ---- */

static nghttp2_session_callbacks *callbacks;

__attribute__((constructor)) static void init_callbacks(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, on_frame_not_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame_recv);
}

__attribute__((destructor)) static void free_callbacks(void)
{
    nghttp2_session_callbacks_del(callbacks);
}

static void h2_init(sharp_upstream_conn_t *c)
{
    h2_conn_t *hc = sharp_calloc(1, sizeof *hc);
    hc->c = c;
    sharp_dlist_init(&hc->streams);
    c->codec_state = hc;
    uv_loop_t *loop = c->pool->env->loop;
    uv_timer_t *timers[] = {&hc->flush_timer, &hc->ping_timer, &hc->ping_timeout};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(timers); i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = c;
        c->handles_open++;
    }
    const sharp_h2_options_t *o = &c->pool->cluster->h2;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* the window reopens only as the router reads (see the top) */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* until the peer's SETTINGS arrive, the configured limit applies */
    nghttp2_option_set_peer_max_concurrent_streams(opt, o->max_concurrent_streams);
    nghttp2_option_set_max_outbound_ack(opt, o->max_outbound_control_frames);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_session_client_new3(&hc->ng, callbacks, hc, opt, sharp_small_nghttp2_mem());
    nghttp2_option_del(opt);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, o->hpack_table_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->initial_stream_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_BYTES},
        /* allow_connect, as Envoy's codec sends it on both sides (0 or 1;
         * a server ignores it, RFC 8441 section 3) */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, o->allow_connect ? 1u : 0u},
    };
    nghttp2_submit_settings(hc->ng, NGHTTP2_FLAG_NONE, iv, SHARP_ARRAY_SIZE(iv));
    /* the connection window: Envoy raises it with a WINDOW_UPDATE */
    if (o->initial_connection_window_size > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(hc->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)o->initial_connection_window_size);
    arm_ping(hc);
    schedule_flush(hc);
}

static void h2_destroy(sharp_upstream_conn_t *c)
{
    h2_conn_t *hc = HC(c);
    while (!sharp_dlist_empty(&hc->streams)) stream_free(STREAM(hc->streams.next));
    if (hc->ng) nghttp2_session_del(hc->ng);
    sharp_nv_pin_free_all(&hc->pins); /* frames the session never sent */
    sharp_sbuf_free(&hc->batch);
    free(hc);
    c->codec_state = NULL;
}

/* The connection closes: every stream still bound is reset with the
 * connection's reason; the streams go with the connection. */
static void h2_on_close(sharp_upstream_conn_t *c)
{
    h2_conn_t *hc = HC(c);
    uv_timer_t *timers[] = {&hc->flush_timer, &hc->ping_timer, &hc->ping_timeout};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(timers); i++) {
        uv_timer_stop(timers[i]);
        uv_close((uv_handle_t *)timers[i], sharp_upstream_conn_handle_closed);
    }
    sharp_reset_reason_t why = hc->close_detail ? hc->close_why : SHARP_RESET_LOCAL;
    const char *detail = hc->close_detail ? hc->close_detail : "connection closed";
    while (!sharp_dlist_empty(&hc->streams)) {
        h2_stream_t *s = STREAM(hc->streams.next);
        if (s->counted) {
            s->counted = false;
            hc->nstreams--;
            sharp_gauge_add(sh(hc), st(hc)->h2.streams_active, -1);
        }
        if (s->id > 0) nghttp2_session_set_stream_user_data(hc->ng, s->id, NULL);
        sharp_upstream_request_t *r = s->s.req;
        bool complete = s->response_complete;
        stream_free(s);
        if (r) {
            r->cx = NULL;
            /* a complete response needs no reset */
            if (!complete) r->cb->on_reset(r->ctx, why, detail);
        }
    }
}

static uint32_t h2_capacity(const sharp_upstream_conn_t *c)
{
    const h2_conn_t *hc = HC(c);
    if (hc->goaway) return 0;
    uint32_t peer = nghttp2_session_get_remote_settings(hc->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t lim = opts(hc)->max_concurrent_streams;
    if (peer < lim) lim = peer;
    /* stream ids run out at 2^31 */
    int32_t next = nghttp2_session_get_next_stream_id(hc->ng);
    if (next < 0 || next > INT32_MAX - 2 * 1024) return 0;
    return hc->nstreams >= lim ? 0 : lim - hc->nstreams;
}

static sharp_upstream_cx_t *h2_new_stream(sharp_upstream_conn_t *c, sharp_upstream_request_t *r)
{
    h2_conn_t *hc = HC(c);
    h2_stream_t *s = sharp_small_calloc(1, sizeof *s);
    s->s.conn = c;
    s->s.req = r;
    s->hc = hc;
    sharp_headers_init(&s->resp);
    sharp_headers_init(&s->resp_trailers);
    sharp_headers_init(&s->trailers);
    sharp_dlist_push(&hc->streams, &s->link);
    s->counted = true;
    hc->nstreams++;
    sharp_gauge_add(sh(hc), st(hc)->h2.streams_active, 1);
    return &s->s;
}

/* The request let go of its stream. An open stream is reset (CANCEL)
 * unless both sides have ended; its memory goes once the session is done
 * with it. */
static void h2_cancel(sharp_upstream_cx_t *x)
{
    h2_stream_t *s = (h2_stream_t *)x;
    h2_conn_t *hc = s->hc;
    s->fail_detail = NULL;
    if (s->closed || s->id <= 0) {
        /* never submitted, or already closed by the session */
        stream_done(s, true);
        return;
    }
    if (!s->response_complete || !s->body_end || s->body.len) {
        nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        schedule_flush(hc);
    }
    /* on_stream_close frees it */
}

static void fail_later(h2_stream_t *s, sharp_reset_reason_t why, const char *detail)
{
    s->fail_why = why;
    s->fail_detail = detail;
    s->hc->fails_pending = true;
    schedule_flush(s->hc);
}

/* Envoy's HTTP/1 to HTTP/2 header translation: hop-by-hop headers go
 * (connection, keep-alive, proxy-connection, transfer-encoding, upgrade),
 * Host becomes :authority, te stays only as "trailers". */
static bool connection_specific(sharp_str_t n, sharp_str_t v)
{
    if (sharp_header_is_connection_specific(n) || sharp_str_eq(n, "host", 4)) return true;
    if (n.len == 2 && strncasecmp(n.p, "te", 2) == 0) return !(v.len == 8 && strncasecmp(v.p, "trailers", 8) == 0);
    return false;
}

static void h2_send_headers(sharp_upstream_cx_t *x, const sharp_headers_t *h, bool end_stream)
{
    h2_stream_t *s = (h2_stream_t *)x;
    h2_conn_t *hc = s->hc;
    sharp_request_head_t rh;
    sharp_request_head_scan(h, &rh);
    sharp_str_t method = rh.method.p ? rh.method : SHARP_STR("GET"), path = rh.path.p ? rh.path : SHARP_STR("/"),
                authority = rh.authority.p ? rh.authority : rh.host.p ? rh.host : SHARP_STR(""),
                scheme = rh.scheme.p ? rh.scheme : SHARP_STR("http");
    s->is_head = sharp_str_eq(method, "HEAD", 4);
    /* Envoy's transformUpgradeRequestFromH1toH2: an HTTP/1.1 upgrade
     * (Connection: upgrade and an Upgrade header) goes as an extended
     * CONNECT (RFC 8441) whose :protocol is the Upgrade token, with its
     * :scheme and :path; Upgrade and Connection go with the other
     * hop-by-hop headers, a content-length of 0 too. As in Envoy, whatever
     * the upstream's SETTINGS_ENABLE_CONNECT_PROTOCOL: a server that did
     * not offer it refuses the stream. */
    bool ext_connect = rh.upgrade.p && rh.connection.p && sharp_header_value_has_token(rh.connection, "upgrade");
    if (ext_connect) {
        method = SHARP_STR("CONNECT");
        sharp_small_free(s->upgrade);
        s->upgrade = sharp_small_alloc(rh.upgrade.len ? rh.upgrade.len : 1);
        memcpy(s->upgrade, rh.upgrade.p, rh.upgrade.len);
        s->upgrade_len = rh.upgrade.len;
    }
    bool drop_cl = ext_connect && rh.content_length.p && sharp_str_eq(rh.content_length, "0", 1);
    /* nghttp2 copies the list when the request is submitted: a request of
     * usual size needs no allocation for it. Names are the map's, which
     * stores them lower-case (headers.h), as HTTP/2 wants them; names and
     * values are pinned (nv_pin.h), since the request can wait in the
     * session for a stream slot longer than the map lives. */
    nghttp2_nv nv_local[32];
    nghttp2_nv *nv = h->n + 5 <= 32 ? nv_local : sharp_calloc(h->n + 5, sizeof *nv);
    size_t nn = 0;
#define NV(k_, kl_, v_, vl_) nv[nn++] = (nghttp2_nv){(uint8_t *)(k_), (uint8_t *)(v_), (kl_), (vl_), NGHTTP2_NV_FLAG_NONE}
    /* a CONNECT (the TCP proxy's tunnel) has only :method and :authority
     * (RFC 9113 section 8.5) */
    bool connect = sharp_str_eq(method, "CONNECT", 7) && !ext_connect;
    NV(":method", 7, method.p, method.len);
    if (ext_connect) NV(":protocol", 9, s->upgrade, s->upgrade_len);
    if (!connect) NV(":scheme", 7, scheme.p, scheme.len);
    NV(":authority", 10, authority.p, authority.len);
    if (!connect) NV(":path", 5, path.p, path.len);
    size_t pseudo = nn; /* the fields after these are the map's */
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        if (!n.len || n.p[0] == ':' || connection_specific(n, v)) continue;
        if (drop_cl && sharp_str_eq(n, "content-length", 14)) continue;
        NV(n.p, n.len, v.p, v.len);
        if (sharp_hpack_no_index(&hc->hpack, n, v)) nv[nn - 1].flags = NGHTTP2_NV_FLAG_NO_INDEX;
    }
#undef NV
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_body};
    sharp_nv_pin_t *pin = sharp_nv_pin(&hc->pins, nv, nn, pseudo, h->buf, h->blen);
    int32_t id = nghttp2_submit_request(hc->ng, NULL, nv, nn, end_stream ? NULL : &prd, s);
    if (id < 0) sharp_nv_pin_drop(&hc->pins, pin);
    if (nv != nv_local) free(nv);
    if (id < 0) {
        fail_later(s, SHARP_RESET_LOCAL, nghttp2_strerror(id));
        return;
    }
    s->id = id;
    if (end_stream) s->body_end = true;
    sharp_trace(pool, "[C%llu] stream %d: request headers submitted (end_stream=%s)", hc->c->id, id,
                end_stream ? "true" : "false");
    schedule_flush(hc);
}

static void resume_body(h2_stream_t *s)
{
    if (s->deferred && s->id > 0 && !s->closed) {
        s->deferred = false;
        nghttp2_session_resume_data(s->hc->ng, s->id);
    }
    schedule_flush(s->hc);
}

static void h2_send_data(sharp_upstream_cx_t *x, const char *p, size_t n, bool end_stream)
{
    h2_stream_t *s = (h2_stream_t *)x;
    if (s->id <= 0 || s->closed || s->body_end) return;
    if (n) sharp_sbuf_append(&s->body, p, n);
    if (end_stream) s->body_end = true;
    resume_body(s);
    size_t limit = s->hc->c->pool->cluster->per_connection_buffer_limit;
    if (!s->above_watermark && s->body.len - s->body_off > limit) {
        s->above_watermark = true;
        if (s->s.req && s->s.req->cb->on_write_watermark) s->s.req->cb->on_write_watermark(s->s.req->ctx, true);
    }
}

static void h2_send_trailers(sharp_upstream_cx_t *x, const sharp_headers_t *t)
{
    h2_stream_t *s = (h2_stream_t *)x;
    if (s->id <= 0 || s->closed || s->body_end) return;
    sharp_headers_copy(&s->trailers, t);
    s->has_trailers = t->n > 0;
    s->body_end = true;
    resume_body(s);
}

static void h2_read_disable(sharp_upstream_cx_t *x, bool disable)
{
    h2_stream_t *s = (h2_stream_t *)x;
    if (s->read_disabled == disable) return;
    s->read_disabled = disable;
    if (disable || s->closed || s->id <= 0) return;
    /* the router reads again: what it took reopens the window */
    if (s->unconsumed) {
        nghttp2_session_consume(s->hc->ng, s->id, s->unconsumed);
        s->unconsumed = 0;
        schedule_flush(s->hc);
    }
}

static size_t h2_queued(const sharp_upstream_cx_t *x)
{
    const h2_stream_t *s = (const h2_stream_t *)x;
    return s->body.len - s->body_off;
}

static void h2_on_read(sharp_upstream_conn_t *c, ssize_t nread, const uv_buf_t *buf)
{
    h2_conn_t *hc = HC(c);
    if (nread < 0) {
        sharp_debug(connection, "[C%llu] remote close (%s)", c->id, uv_err_name((int)nread));
        if (hc->nstreams) sharp_counter_inc(sharp_upstream_conn_shard(c), c->pool->cluster->st.cx_destroy_remote);
        conn_fail(hc, nread == UV_ECONNRESET ? SHARP_RESET_REMOTE : SHARP_RESET_CONNECTION_TERMINATION,
                  nread == UV_ECONNRESET ? "remote reset" : "connection termination");
        return;
    }
    hc->in_recv = true;
    ssize_t rv = nghttp2_session_mem_recv(hc->ng, (const uint8_t *)buf->base, (size_t)nread);
    hc->in_recv = false;
    if (conn_closing(hc)) return;
    if (rv < 0) {
        sharp_debug(connection, "[C%llu] HTTP/2 protocol error from upstream: %s", c->id, nghttp2_strerror((int)rv));
        sharp_counter_inc(sharp_upstream_conn_shard(c), c->pool->cluster->st.cx_protocol_error);
        /* the session's own queue of control frames to answer (PING and
         * SETTINGS acknowledgements) over max_outbound_control_frames */
        if (rv == NGHTTP2_ERR_FLOODED) sharp_counter_inc(sharp_upstream_conn_shard(c), c->pool->cluster->st.h2.outbound_control_flood);
        /* tell the peer why, best effort, before closing */
        nghttp2_session_terminate_session(hc->ng, NGHTTP2_PROTOCOL_ERROR);
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(hc->ng, &data);
        if (n > 0 && !conn_closing(hc)) {
            uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
            sharp_writer_write(&c->writer, &b, 1);
        }
        conn_fail(hc, SHARP_RESET_PROTOCOL_ERROR, "protocol error");
        return;
    }
    flush(hc);
}

const sharp_client_codec_t sharp_http2_client_codec = {
    .name = "HTTP/2",
    .init = h2_init,
    .destroy = h2_destroy,
    .on_close = h2_on_close,
    .capacity = h2_capacity,
    .new_stream = h2_new_stream,
    .cancel = h2_cancel,
    .on_read = h2_on_read,
    .on_write_drain = h2_on_write_drain,
    .send_headers = h2_send_headers,
    .send_data = h2_send_data,
    .send_trailers = h2_send_trailers,
    .read_disable = h2_read_disable,
    .queued = h2_queued,
};

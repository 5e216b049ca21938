/* http2_server.c: the HTTP/2 server codec (Debian's libnghttp2).
 *
 * Many streams per connection. nghttp2 parses frames and validates HTTP
 * messaging (pseudo-headers, connection-specific headers, content-length
 * against DATA); a request head is complete when its HEADERS (and
 * CONTINUATIONs) end, and only then reaches the filter chain, so a refused
 * head never produces an upstream byte.
 *
 * Memory is bounded per stream, in both directions:
 * - request bodies: window updates are manual. The connection window is
 *   given back as soon as DATA arrives (its bytes are already in a stream's
 *   buffers), a stream's window only when the filter chain took the bytes
 *   and the stream is not read-disabled. The advertised stream window is
 *   the configured one clamped to the listener's buffer limit, so a stream
 *   can never be sent more than that ahead of its upstream (Envoy's 256 MiB
 *   default lets a client park 256 MiB per stream).
 * - responses: each stream holds what nghttp2 has not taken yet (the peer's
 *   window, or the socket, is full); above the buffer limit the stream's
 *   filters are told (the router stops reading its upstream), below half of
 *   it they resume. The socket's own write queue pauses every stream.
 * Frames leave in batches: nghttp2_session_mem_send runs at the end of the
 * loop turn (sharp_conn_defer_flush); while the socket's write queue is
 * above its limit DATA waits (the data source defers) and the other frames
 * still go out, as into Envoy's output buffer.
 *
 * Hostile peers are answered as Envoy's codec answers them, with its stats
 * (http2.*): the outbound frame limits count frames handed to the socket and
 * not yet written (max_outbound_frames, max_outbound_control_frames); the
 * inbound ones count empty frames, PRIORITY and WINDOW_UPDATE frames against
 * Envoy's formulas (ProtocolConstraints); an invalid HTTP message closes the
 * connection unless stream errors are configured; the premature-reset rule
 * of Envoy's connection manager closes a rapid-reset connection;
 * connection_keepalive sends PINGs and closes a connection that does not
 * answer them. */
#include "http/conn_internal.h"
#include "http/hpack_hint.h"
#include "http/nv_pin.h"
#include "log.h"
#include "overload.h"
#include "runtime.h"
#include "small.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define STATS(c) SHARP_CONN_STATS(c)
#define HCM(c) SHARP_CONN_HCM(c)

/* A frame serialized and handed to the socket: it is still queued until
 * the socket has taken every byte up to `end`. */
typedef struct {
    uint64_t end;
    bool control;
} h2_outq_entry_t;

/* connection_keepalive's timers. They outlive the connection's own handles
 * (released in their close callback), so they are allocated apart. */
typedef struct {
    uv_timer_t send, timeout;
    int open;
} h2_timers_t;

struct sharp_h2_conn {
    nghttp2_session *session;
    bool goaway_final; /* the last GOAWAY went out: close once streams end */
    bool notice_sent;  /* drain's shutdown notice (GOAWAY with the highest id) */
    size_t header_bytes;
    sharp_sbuf_t batch;    /* frames serialized in this flush, not yet written */
    sharp_hpack_hint_t hpack;
    bool socket_blocked;   /* DATA deferred while the socket's queue was full */
    /* Envoy's ProtocolConstraints. Outbound: frames handed to the socket
     * and not yet written (a ring of their end offsets); inbound: counts
     * over the connection's life. */
    h2_outq_entry_t *outq;
    size_t outq_head, outq_len, outq_cap;
    uint32_t out_frames, out_control;
    uint32_t sent_frames, sent_control; /* on_frame_send during one nghttp2_session_mem_send */
    uint64_t consecutive_empty, priority_frames, window_update_frames, opened_streams, outbound_data_frames;
    bool flood;            /* a limit was exceeded: the connection ends */
    /* premature resets (Envoy's HCM: CVE-2023-44487) */
    uint64_t closed_streams, premature_resets;
    h2_timers_t *ka;       /* connection_keepalive */
    sharp_nv_pin_t *pins;  /* header blocks nghttp2 has not sent yet (nv_pin.h) */
};

/* A stream's HTTP/2 state (stream->codec_state). */
typedef struct h2_stream {
    int32_t id;
    /* response body nghttp2 has not taken yet: [out_off, out_len) of
     * out, a small block (small.h) for the usual short body */
    char *out;
    size_t out_len, out_cap, out_off;
    bool out_end;       /* the body ends after `out` */
    bool submitted;     /* response headers submitted */
    bool deferred;      /* the data source said "deferred" */
    bool closed;        /* nghttp2 closed the stream */
    bool read_disabled;
    bool above;         /* `out` above the buffer limit: filters told */
    bool trailers_pending;
    sharp_headers_t trailers;
    size_t unconsumed;  /* request bytes received and not yet given back to the window */
    size_t header_bytes;
    bool peer_reset;    /* closed by the peer (or by nghttp2 for the peer's error), not by us */
} h2_stream_t;

static h2_stream_t *H2S(sharp_stream_t *s)
{
    return s->codec_state;
}

static void h2_schedule(sharp_conn_t *c)
{
    if (!c->closing) sharp_conn_defer_flush(c);
}

static size_t out_pending(const h2_stream_t *h)
{
    return h->out_len - h->out_off;
}

/* What was taken moves out of the way before the buffer grows, so its
 * size follows what is pending (bounded by the watermarks), not what
 * went through. */
static void out_append(h2_stream_t *h, const char *p, size_t n)
{
    if (h->out_len + n > h->out_cap && h->out_off) {
        memmove(h->out, h->out + h->out_off, out_pending(h));
        h->out_len -= h->out_off;
        h->out_off = 0;
    }
    if (h->out_len + n > h->out_cap) {
        size_t cap = h->out_cap ? h->out_cap : 256;
        while (cap < h->out_len + n) cap *= 2;
        h->out = sharp_small_realloc(h->out, cap);
        h->out_cap = cap;
    }
    memcpy(h->out + h->out_len, p, n);
    h->out_len += n;
}

/* ---- Envoy's ProtocolConstraints ---- */

/* An inbound limit was exceeded: counted once, and the dispatch fails. */
static int inbound_flood(sharp_conn_t *c, sharp_stat_id_t stat, const char *what)
{
    if (!c->h2->flood) {
        c->h2->flood = true;
        sharp_counter_inc(STATS(c), stat);
        sharp_debug(http2, "[C%llu] %s: closing the connection", c->id, what);
    }
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* checkInboundFrameLimits, after each frame is counted. */
static int check_inbound(sharp_conn_t *c)
{
    struct sharp_h2_conn *h2 = c->h2;
    const sharp_h2_options_t *o = &HCM(c)->h2;
    const sharp_hcm_stats_t *st = &HCM(c)->st;
    if (h2->consecutive_empty > o->max_consecutive_inbound_frames_with_empty_payload)
        return inbound_flood(c, st->http2_inbound_empty_frames_flood, "too many consecutive frames with an empty payload");
    if (h2->priority_frames > (uint64_t)o->max_inbound_priority_frames_per_stream * (1 + h2->opened_streams))
        return inbound_flood(c, st->http2_inbound_priority_frames_flood, "too many PRIORITY frames");
    if (h2->window_update_frames >
        5 + 2 * (h2->opened_streams +
                 (uint64_t)o->max_inbound_window_update_frames_per_data_frame_sent * h2->outbound_data_frames))
        return inbound_flood(c, st->http2_inbound_window_update_frames_flood, "too many WINDOW_UPDATE frames");
    return 0;
}

/* trackInboundFrame: HEADERS, CONTINUATION and DATA without payload and
 * without END_STREAM count as empty (padding is payload for the first
 * two, as Envoy sees them before their padding is known). */
static int track_inbound(sharp_conn_t *c, uint8_t type, uint8_t flags, size_t payload)
{
    struct sharp_h2_conn *h2 = c->h2;
    if (h2->flood) return NGHTTP2_ERR_CALLBACK_FAILURE;
    switch (type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
    case NGHTTP2_DATA: {
        bool end_stream = type != NGHTTP2_CONTINUATION && (flags & NGHTTP2_FLAG_END_STREAM);
        if (payload == 0 && !end_stream) h2->consecutive_empty++;
        else h2->consecutive_empty = 0;
        break;
    }
    case NGHTTP2_PRIORITY:
        h2->priority_frames++;
        break;
    case NGHTTP2_WINDOW_UPDATE:
        h2->window_update_frames++;
        break;
    default:
        return 0;
    }
    return check_inbound(c);
}

/* Frames the socket has written leave the outbound count. */
static void outq_release(sharp_conn_t *c)
{
    struct sharp_h2_conn *h2 = c->h2;
    uint64_t written = sharp_writer_plain_written(&c->writer);
    while (h2->outq_len && h2->outq[h2->outq_head].end <= written) {
        h2_outq_entry_t *e = &h2->outq[h2->outq_head];
        h2->out_frames--;
        if (e->control) h2->out_control--;
        h2->outq_head = (h2->outq_head + 1) % h2->outq_cap;
        h2->outq_len--;
    }
}

static void outq_push(struct sharp_h2_conn *h2, uint64_t end, bool control)
{
    if (h2->outq_len == h2->outq_cap) {
        /* an idle connection sends a handful of frames (SETTINGS, its
         * WINDOW_UPDATE, the SETTINGS ACK): the queue starts small and
         * doubles while streams keep more frames in flight */
        size_t cap = h2->outq_cap ? h2->outq_cap * 2 : 4;
        h2_outq_entry_t *q = sharp_calloc(cap, sizeof *q);
        for (size_t i = 0; i < h2->outq_len; i++) q[i] = h2->outq[(h2->outq_head + i) % h2->outq_cap];
        free(h2->outq);
        h2->outq = q;
        h2->outq_cap = cap;
        h2->outq_head = 0;
    }
    h2->outq[(h2->outq_head + h2->outq_len) % h2->outq_cap] = (h2_outq_entry_t){end, control};
    h2->outq_len++;
    h2->out_frames++;
    if (control) h2->out_control++;
}

/* checkOutboundFrameLimits: true (counted once) when the peer lets more
 * frames pile up than max_outbound_frames, or more PING/SETTINGS
 * acknowledgements and RST_STREAMs than max_outbound_control_frames. */
static bool outbound_flooded(sharp_conn_t *c)
{
    struct sharp_h2_conn *h2 = c->h2;
    const sharp_h2_options_t *o = &HCM(c)->h2;
    if (h2->flood) return true;
    sharp_stat_id_t stat;
    if (h2->out_frames > o->max_outbound_frames) stat = HCM(c)->st.http2_outbound_flood;
    else if (h2->out_control > o->max_outbound_control_frames) stat = HCM(c)->st.http2_outbound_control_flood;
    else return false;
    h2->flood = true;
    sharp_counter_inc(STATS(c), stat);
    sharp_debug(http2, "[C%llu] too many frames in the outbound queue (%u, %u control): closing the connection", c->id,
                h2->out_frames, h2->out_control);
    return true;
}

static void pending_send_add(sharp_conn_t *c, int64_t n)
{
    if (n) sharp_gauge_add(STATS(c), HCM(c)->st.http2_pending_send_bytes, n);
}

/* ---- nghttp2 callbacks: receiving ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    sharp_conn_t *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (c->h2->goaway_final) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    c->h2->opened_streams++;
    sharp_stream_t *s = sharp_conn_stream_create(c);
    sharp_gauge_add(STATS(c), HCM(c)->st.http2_streams_active, 1);
    h2_stream_t *h = sharp_small_calloc(1, sizeof *h);
    h->id = frame->hd.stream_id;
    sharp_headers_init(&h->trailers);
    s->codec_state = h;
    s->info.protocol = "HTTP/2";
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    (void)flags;
    sharp_conn_t *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    sharp_stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s || s->destroyed) return 0;
    h2_stream_t *h = H2S(s);
    h->header_bytes += namelen + valuelen;
    const sharp_hcm_config_t *hcm = HCM(c);
    /* max_request_headers_kb and max_headers_count hold for HTTP/2 too:
     * the stream is reset, as Envoy's codec does */
    if (h->header_bytes > (size_t)hcm->max_request_headers_kb * 1024) {
        sharp_debug(http2, "[C%llu][S%llu] headers over max_request_headers_kb", c->id, s->id);
        sharp_counter_inc(STATS(c), hcm->st.http2_header_overflow);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    bool trailers = frame->headers.cat != NGHTTP2_HCAT_REQUEST;
    sharp_headers_t *dst = trailers ? &s->req_trailers : &s->req;
    if (dst->n >= hcm->max_headers_count) {
        sharp_debug(http2, "[C%llu][S%llu] more headers than max_headers_count", c->id, s->id);
        sharp_counter_inc(STATS(c), hcm->st.http2_header_overflow);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (namelen && memchr(name, '_', namelen) && hcm->headers_with_underscores_action) {
        if (hcm->headers_with_underscores_action == 2) { /* DROP_HEADER */
            sharp_counter_inc(STATS(c), hcm->st.http2_dropped_headers_with_underscores);
            return 0;
        }
        sharp_counter_inc(STATS(c), hcm->st.http2_requests_rejected_with_underscores);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    sharp_headers_add(dst, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

/* The request head is complete: Envoy's pseudo-header order with
 * :authority (from Host when the client sent none) and on to the chain. */
static void request_head_done(sharp_conn_t *c, sharp_stream_t *s, bool end_stream)
{
    sharp_headers_t *h = &s->req;
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, ":authority", &v)) {
        if (!sharp_headers_get_cstr(h, "host", &v)) {
            /* nghttp2 requires :authority or host for a non-CONNECT request */
            sharp_codec_reset(s);
            return;
        }
        char host[512];
        size_t n = SHARP_MIN(v.len, sizeof host);
        memcpy(host, v.p, n);
        sharp_headers_add(h, ":authority", 10, host, n);
    }
    sharp_headers_remove_cstr(h, "host");
    sharp_str_t method = {"", 0};
    sharp_headers_get_cstr(h, ":method", &method);
    s->is_head = sharp_str_eq(method, "HEAD", 4);
    sharp_str_t protocol = {"", 0};
    sharp_headers_get_cstr(h, ":protocol", &protocol);
    if (sharp_str_eq(method, "CONNECT", 7) && protocol.len && !sharp_str_eq(protocol, "bytestream", 10)) {
        /* an extended CONNECT (RFC 8441): nghttp2 takes :protocol only
         * after SETTINGS_ENABLE_CONNECT_PROTOCOL went out (allow_connect)
         * and checked :scheme, :path and :authority. Envoy's
         * isH2UpgradeRequest and transformUpgradeRequestFromH2toH1: the
         * request is the HTTP/1.1 upgrade it stands for, which
         * upgrade_configs decide on as one. */
        /* the value moves: the map's storage may move under it */
        char local[64];
        size_t plen = protocol.len;
        char *proto = plen <= sizeof local ? local : sharp_calloc(1, plen);
        memcpy(proto, protocol.p, plen);
        sharp_headers_remove_cstr(h, ":protocol");
        sharp_headers_set_cstr(h, ":method", "GET");
        sharp_headers_set(h, "upgrade", 7, proto, plen);
        sharp_headers_set_cstr(h, "connection", "upgrade");
        if (proto != local) free(proto);
        s->upgrade_request = true;
    } else if (sharp_str_eq(method, "CONNECT", 7)) {
        /* a CONNECT (RFC 9113 section 8.5: :method and :authority only,
         * nghttp2 checked it; or an extended one whose :protocol is empty
         * or "bytestream", which Envoy takes as a CONNECT too): an upgrade
         * of type "CONNECT" whose DATA frames are the tunnel's bytes */
        s->upgrade_request = s->is_connect = true;
    }
    sharp_str_t expect;
    if (sharp_headers_get_cstr(h, "expect", &expect) && expect.len == 12 &&
        strncasecmp(expect.p, "100-continue", 12) == 0) {
        sharp_headers_remove_cstr(h, "expect");
        sharp_codec_send_continue(s);
    }
    if (end_stream) {
        s->request_complete = true;
        s->info.request_complete_ns = sharp_now_ns();
    }
    if (SHARP_LOG_ON(http2, SHARP_LOG_DEBUG)) {
        sharp_sbuf_t d = {0};
        sharp_headers_dump(h, &d);
        sharp_debug(http2, "[C%llu][S%llu] request headers complete (end_stream=%s):%s", s->conn_id, s->id,
                    end_stream ? "true" : "false", d.data ? d.data : "");
        sharp_sbuf_free(&d);
    }
    sharp_hcm_decode_headers(s, end_stream, (const struct sockaddr *)&c->remote_ss);
    /* request_timeout waits for a whole request, which an accepted CONNECT
     * never completes (as on HTTP/1, Envoy does not apply it to upgrades) */
    if (s->upgrade_accepted) uv_timer_stop(&s->request_timer);
}

/* ---- connection_keepalive (Envoy's ConnectionImpl keepalive) ---- */

static void on_keepalive_send(uv_timer_t *t);

/* A PING ACK came (or the connection starts): no PING is outstanding, and
 * the next goes out after the interval plus up to interval_jitter percent
 * of it. */
static void keepalive_response(sharp_conn_t *c)
{
    h2_timers_t *ka = c->h2->ka;
    if (!ka) return;
    uv_timer_stop(&ka->timeout);
    const sharp_h2_options_t *o = &HCM(c)->h2;
    if (!o->keepalive_interval_ms) return;
    uint64_t ms = o->keepalive_interval_ms;
    uint64_t jitter = (uint64_t)(o->keepalive_jitter_percent * (double)ms / 100);
    if (jitter) ms += sharp_worker_random(c->worker) % jitter;
    uv_timer_start(&ka->send, on_keepalive_send, ms, 0);
}

static void on_keepalive_timeout(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->closing) return;
    sharp_debug(http2, "[C%llu] closing the connection: no PING acknowledgement within the keepalive timeout", c->id);
    sharp_counter_inc(STATS(c), HCM(c)->st.http2_keepalive_timeout);
    sharp_conn_close(c);
}

static void on_keepalive_send(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->closing || c->shutdown) return;
    h2_timers_t *ka = c->h2->ka;
    if (uv_is_active((uv_handle_t *)&ka->timeout)) return; /* still waiting on the last one */
    uint64_t ms = sharp_wall_us() / 1000; /* the payload: when it left, for debugging */
    uint8_t opaque[8];
    for (int i = 7; i >= 0; i--, ms >>= 8) opaque[i] = (uint8_t)ms;
    nghttp2_submit_ping(c->h2->session, NGHTTP2_FLAG_NONE, opaque);
    uv_timer_start(&ka->timeout, on_keepalive_timeout, HCM(c)->h2.keepalive_timeout_ms, 0);
    h2_schedule(c);
}

static void on_ka_timer_closed(uv_handle_t *h)
{
    h2_timers_t *ka = h->data;
    if (--ka->open == 0) free(ka);
}

/* Every frame header that arrives: Envoy's onBeforeFrameReceived. Any
 * frame but a PING ACK shows the peer alive and extends an outstanding
 * keepalive timeout (the ACK may be queued behind it); frames other than
 * DATA (counted once their padding is known) are tracked. */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user)
{
    (void)session;
    sharp_conn_t *c = user;
    if (hd->type == NGHTTP2_PING && (hd->flags & NGHTTP2_FLAG_ACK)) return 0;
    h2_timers_t *ka = c->h2->ka;
    if (ka && uv_is_active((uv_handle_t *)&ka->timeout))
        uv_timer_start(&ka->timeout, on_keepalive_timeout, HCM(c)->h2.keepalive_timeout_ms, 0);
    if (hd->type == NGHTTP2_DATA) return 0;
    return track_inbound(c, hd->type, hd->flags, hd->length);
}

/* The request's last frame (END_STREAM on DATA or on trailers): the end
 * goes through the filter chain, with the trailers when there are some
 * (an HTTP/1 upstream drops them). */
static void request_end(sharp_stream_t *s, bool trailers)
{
    if (s->request_complete || s->destroyed) return;
    s->request_complete = true;
    s->info.request_complete_ns = sharp_now_ns();
    uv_timer_stop(&s->request_timer);
    if (s->response_complete) return;
    if (trailers) dec_run_trailers(s, 0);
    else dec_run_data(s, 0, NULL, 0, true);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    sharp_conn_t *c = user;
    sharp_stream_t *s = frame->hd.stream_id ? nghttp2_session_get_stream_user_data(session, frame->hd.stream_id) : NULL;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_DATA) {
        int rv = track_inbound(c, NGHTTP2_DATA, frame->hd.flags, frame->hd.length - frame->data.padlen);
        if (rv) return rv;
    }
    switch (frame->hd.type) {
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) keepalive_response(c);
        break;
    case NGHTTP2_RST_STREAM:
        if (s && !s->destroyed) sharp_counter_inc(STATS(c), HCM(c)->st.http2_rx_reset);
        break;
    case NGHTTP2_HEADERS:
        if (!s || s->destroyed) return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            request_head_done(c, s, end);
        } else if (end) {
            request_end(s, true);
        }
        break;
    case NGHTTP2_DATA:
        if (s && end) request_end(s, false);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user)
{
    (void)flags;
    sharp_conn_t *c = user;
    /* the connection's window comes back at once: these bytes now count
     * against their stream's window only */
    nghttp2_session_consume_connection(session, len);
    sharp_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || s->destroyed) return 0;
    h2_stream_t *h = H2S(s);
    s->info.bytes_received += len;
    sharp_conn_stream_touch(s);
    if (!s->response_complete && !s->finish_scheduled) dec_run_data(s, 0, (const char *)data, len, false);
    if (s->destroyed) return 0;
    if (h->read_disabled) h->unconsumed += len;
    else nghttp2_session_consume_stream(session, stream_id, len);
    h2_schedule(c);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
    sharp_conn_t *c = user;
    sharp_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s) return 0;
    h2_stream_t *h = H2S(s);
    h->closed = true;
    if (s->destroyed || s->finish_scheduled) return 0;
    if (!s->response_complete) {
        h->peer_reset = true;
        /* the client reset the stream (or the connection failed it) */
        sharp_debug(http2, "[C%llu][S%llu] stream closed by the peer (%s)", c->id, s->id,
                    nghttp2_http2_strerror(error_code));
        s->info.response_flags |= SHARP_RF_DOWNSTREAM_REMOTE_RESET;
        sharp_counter_inc(STATS(c), HCM(c)->st.rq_rx_reset);
        sharp_codec_reset(s);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    sharp_conn_t *c = user;
    /* the frame is in the batch being serialized (h2_flush queues it) */
    sharp_nv_pin_release(&c->h2->pins, frame);
    uint8_t type = frame->hd.type;
    c->h2->sent_frames++;
    if (((type == NGHTTP2_PING || type == NGHTTP2_SETTINGS) && (frame->hd.flags & NGHTTP2_FLAG_ACK)) ||
        type == NGHTTP2_RST_STREAM)
        c->h2->sent_control++;
    if (type == NGHTTP2_DATA) c->h2->outbound_data_frames++;
    if (type == NGHTTP2_RST_STREAM) sharp_counter_inc(STATS(c), HCM(c)->st.http2_tx_reset);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        /* nghttp2 ends the connection for a protocol error of the client's */
        sharp_debug(http2, "[C%llu] GOAWAY %s", c->id, nghttp2_http2_strerror(frame->goaway.error_code));
        sharp_counter_inc(STATS(c), HCM(c)->st.cx_protocol_error);
        return 0;
    }
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    sharp_stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s || s->destroyed) return 0;
    /* the response's last frame is out: the stream can finish */
    s->response_complete = true;
    sharp_conn_stream_maybe_finish(s);
    return 0;
}

/* Envoy's onInvalidFrame: an invalid HTTP message (a bad header, a
 * content-length that DATA contradicts) is counted, and closes the
 * connection unless stream errors were asked for; nghttp2 has queued the
 * stream's RST_STREAM either way. */
static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int lib_error, void *user)
{
    (void)session;
    sharp_conn_t *c = user;
    sharp_debug(http2, "[C%llu] invalid frame type %u on stream %d: %s", c->id, frame->hd.type, frame->hd.stream_id,
                nghttp2_strerror(lib_error));
    if (lib_error == NGHTTP2_ERR_HTTP_HEADER || lib_error == NGHTTP2_ERR_HTTP_MESSAGING) {
        sharp_counter_inc(STATS(c), HCM(c)->st.http2_rx_messaging_error);
        if (!HCM(c)->h2.stream_error_on_invalid_http_message) return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* ---- the response ---- */

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
    (void)source;
    sharp_conn_t *c = user;
    sharp_stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h2_stream_t *h = H2S(s);
    if (out_pending(h) && c->writer.queued + c->h2->batch.len > c->listener->buffer_limit) {
        /* the socket's queue is full: DATA waits (other frames still go
         * out, and are what the outbound frame limits count) */
        h->deferred = true;
        c->h2->socket_blocked = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = SHARP_MIN(length, out_pending(h));
    pending_send_add(c, -(int64_t)n);
    if (n) {
        memcpy(buf, h->out + h->out_off, n);
        h->out_off += n;
        if (h->out_off == h->out_len) h->out_off = h->out_len = 0;
    }
    if (h->above && out_pending(h) <= s->conn->listener->buffer_limit / 2) {
        h->above = false;
        sharp_hcm_codec_watermark(s, false);
    }
    if (!out_pending(h) && h->out_end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (h->trailers_pending) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            /* nghttp2 copies the list: gRPC's two or three trailers need
             * no allocation for it; the fields are pinned (nv_pin.h) */
            nghttp2_nv nv_local[8];
            nghttp2_nv *nv = h->trailers.n <= 8 ? nv_local : sharp_calloc(h->trailers.n, sizeof *nv);
            size_t nn = 0;
            for (uint32_t i = 0; i < h->trailers.n; i++) {
                sharp_str_t k = sharp_headers_name(&h->trailers, i), v = sharp_headers_value(&h->trailers, i);
                if (k.len && k.p[0] == ':') continue;
                nv[nn++] = (nghttp2_nv){(uint8_t *)k.p, (uint8_t *)v.p, k.len, v.len, NGHTTP2_NV_FLAG_NONE};
            }
            sharp_nv_pin_t *pin = sharp_nv_pin(&c->h2->pins, nv, nn, 0, h->trailers.buf, h->trailers.blen);
            if (nghttp2_submit_trailer(session, stream_id, nv, nn) != 0) sharp_nv_pin_drop(&c->h2->pins, pin);
            if (nv != nv_local) free(nv);
            h->trailers_pending = false;
        }
        return (ssize_t)n;
    }
    if (!n) {
        h->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void h2_encode_headers(sharp_stream_t *s, sharp_headers_t *hd, bool end_stream)
{
    sharp_conn_t *c = s->conn;
    h2_stream_t *h = H2S(s);
    if (c->closing || s->response_started || h->closed) return;
    uint32_t code = sharp_headers_status(hd);
    if (!code) code = 200;
    /* Envoy's transformUpgradeResponseFromH1toH2 for a response that is an
     * upgrade (Connection: upgrade and an Upgrade header): its 101 is the
     * extended CONNECT's 200, and a content-length of 0 goes (nghttp2
     * refuses DATA after it); Upgrade and Connection are dropped below */
    sharp_str_t conn_v, cl;
    bool upgrade = sharp_headers_get_cstr(hd, "upgrade", NULL) && sharp_headers_get_cstr(hd, "connection", &conn_v) &&
                   sharp_header_value_has_token(conn_v, "upgrade");
    bool drop_cl = upgrade && sharp_headers_get_cstr(hd, "content-length", &cl) && sharp_str_eq(cl, "0", 1);
    /* the stream's code stays 101, as Envoy's connection manager saw it
     * (access log, stats): only the wire has 200 */
    s->info.response_code = code;
    if (upgrade && code == 101) code = 200;
    s->response_started = true;
    /* disable_http_keepalive (Envoy's encodeHeaders): over HTTP/2 the drain
     * starts, its GOAWAY ahead of this response */
    if (!c->close_after_response && !HCM(c)->bypass_overload_manager &&
        sharp_overload_take(SHARP_OL_DISABLE_HTTP_KEEPALIVE, sharp_worker_random(c->worker))) {
        sharp_counter_inc(STATS(c), HCM(c)->st.cx_overload_disable_keepalive);
        sharp_conn_start_drain(c);
    }
    char status[4] = {(char)('0' + code / 100 % 10), (char)('0' + code / 10 % 10), (char)('0' + code % 10), 0};
    /* nghttp2 copies the list when the response is submitted: a response
     * of usual size needs no allocation for it. The names and values are
     * pinned (nv_pin.h): one copy of the map's bytes that lives until the
     * frame has gone, instead of nghttp2's copy and lower-casing of each. */
    nghttp2_nv nv_local[32];
    nghttp2_nv *nv = hd->n + 1 <= 32 ? nv_local : sharp_calloc(hd->n + 1, sizeof *nv);
    size_t nn = 0;
    nv[nn++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (uint32_t i = 0; i < hd->n; i++) {
        sharp_str_t k = sharp_headers_name(hd, i), v = sharp_headers_value(hd, i);
        if ((k.len && k.p[0] == ':') || sharp_header_is_connection_specific(k)) continue;
        if (drop_cl && sharp_str_eq(k, "content-length", 14)) continue;
        nv[nn++] = (nghttp2_nv){(uint8_t *)k.p, (uint8_t *)v.p, k.len, v.len,
                                sharp_hpack_no_index(&c->h2->hpack, k, v) ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE};
    }
    /* a HEAD response, a 204 and a 304 have no body on the wire */
    bool no_body = s->is_head || code == 204 || code == 304;
    h->submitted = true;
    sharp_nv_pin_t *pin = sharp_nv_pin(&c->h2->pins, nv, nn, 1, hd->buf, hd->blen);
    int rv;
    if (end_stream || no_body) {
        h->out_end = true;
        rv = nghttp2_submit_response(c->h2->session, h->id, nv, nn, NULL);
    } else {
        nghttp2_data_provider dp = {.source = {.ptr = NULL}, .read_callback = read_body};
        rv = nghttp2_submit_response(c->h2->session, h->id, nv, nn, &dp);
    }
    if (rv != 0) sharp_nv_pin_drop(&c->h2->pins, pin);
    if (nv != nv_local) free(nv);
    h2_schedule(c);
}

static void h2_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end_stream)
{
    sharp_conn_t *c = s->conn;
    h2_stream_t *h = H2S(s);
    if (c->closing || !s->response_started || h->out_end || h->closed) return;
    sharp_conn_stream_touch(s); /* Envoy resets the stream idle timer on response data too */
    uint32_t code = s->info.response_code;
    if (s->is_head || code == 204 || code == 304) n = 0;
    if (n) {
        s->info.bytes_sent += n;
        out_append(h, p, n);
        pending_send_add(c, (int64_t)n);
    }
    if (end_stream) h->out_end = true;
    if (!h->above && out_pending(h) > c->listener->buffer_limit) {
        h->above = true;
        sharp_hcm_codec_watermark(s, true);
    }
    if (h->deferred) {
        h->deferred = false;
        nghttp2_session_resume_data(c->h2->session, h->id);
    }
    h2_schedule(c);
}

static void h2_encode_trailers(sharp_stream_t *s, sharp_headers_t *t)
{
    h2_stream_t *h = H2S(s);
    if (!s->response_started || h->out_end || h->closed) return;
    sharp_headers_copy(&h->trailers, t);
    h->trailers_pending = h->trailers.n > 0;
    h2_encode_data(s, NULL, 0, true);
}

static void h2_send_continue(sharp_stream_t *s)
{
    sharp_conn_t *c = s->conn;
    h2_stream_t *h = H2S(s);
    if (s->response_started || h->closed) return;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(c->h2->session, NGHTTP2_FLAG_NONE, h->id, NULL, &nv, 1, NULL);
    h2_schedule(c);
}

static void h2_read_disable(sharp_stream_t *s, bool disable)
{
    sharp_conn_t *c = s->conn;
    h2_stream_t *h = H2S(s);
    h->read_disabled = disable;
    if (!disable && h->unconsumed && !h->closed) {
        nghttp2_session_consume_stream(c->h2->session, h->id, h->unconsumed);
        h->unconsumed = 0;
        h2_schedule(c);
    }
}

/* ---- connection ---- */

/* Serializes what nghttp2 has to send, in batches, while the socket's
 * write queue has room. */
static void h2_flush(sharp_conn_t *c)
{
    if (c->closing || !c->h2) return;
    struct sharp_h2_conn *h2 = c->h2;
    nghttp2_session *ss = h2->session;
    uint32_t limit = c->listener->buffer_limit;
    if (h2->socket_blocked && c->writer.queued <= limit) {
        /* the socket has room again: the streams whose DATA waited go on */
        h2->socket_blocked = false;
        for (sharp_dlist_t *n = c->streams.next; n != &c->streams; n = n->next) {
            sharp_stream_t *s = sharp_container_of(n, sharp_stream_t, conn_link);
            h2_stream_t *h = s->codec_state;
            if (h && h->deferred && !h->closed && (out_pending(h) || h->out_end)) {
                h->deferred = false;
                nghttp2_session_resume_data(ss, h->id);
            }
        }
    }
    while (!c->closing) {
        const uint8_t *data;
        h2->sent_frames = h2->sent_control = 0;
        ssize_t n = nghttp2_session_mem_send(ss, &data);
        if (n < 0) {
            sharp_debug(http2, "[C%llu] nghttp2_session_mem_send: %s", c->id, nghttp2_strerror((int)n));
            sharp_sbuf_reset(&h2->batch);
            sharp_conn_close(c);
            return;
        }
        if (n > 0) sharp_sbuf_append(&h2->batch, (const char *)data, (size_t)n);
        if (h2->sent_frames) {
            /* frames end with these bytes; the control ones are the last */
            uint64_t end = c->writer.plain_total + h2->batch.len;
            for (uint32_t i = 0; i < h2->sent_frames; i++) outq_push(h2, end, i >= h2->sent_frames - h2->sent_control);
            outq_release(c);
            if (outbound_flooded(c)) {
                /* the peer does not read: nothing more is worth writing
                 * (Envoy closes without flushing) */
                sharp_sbuf_reset(&h2->batch);
                sharp_conn_close(c);
                return;
            }
        }
        if (n == 0 || h2->batch.len >= 64 * 1024) {
            if (h2->batch.len) {
                uv_buf_t b = uv_buf_init(h2->batch.data, (unsigned)h2->batch.len);
                sharp_conn_write(c, &b, 1);
                sharp_sbuf_reset(&h2->batch);
            }
            if (n == 0) break;
        }
    }
    if (c->closing) return;
    if (h2->socket_blocked && c->writer.queued <= limit) h2_schedule(c); /* the socket took it all */
    if (!nghttp2_session_want_read(ss) && !nghttp2_session_want_write(ss)) {
        /* a GOAWAY (ours or the peer's) ended the session */
        sharp_conn_close_after_write(c, false);
        return;
    }
    if (h2->goaway_final && !c->nstreams && !nghttp2_session_want_write(ss)) sharp_conn_close_after_write(c, false);
}

static void h2_dispatch(sharp_conn_t *c, const char *p, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(c->h2->session, (const uint8_t *)p, n);
    if (r < 0 && c->h2->flood) {
        /* an inbound limit (counted): what is already written is flushed,
         * then the connection closes (Envoy's FlushWriteAndDelay) */
        if (!c->closing) sharp_conn_close_after_write(c, true);
        return;
    }
    if (r < 0) {
        /* a connection error: nghttp2 has queued its GOAWAY */
        sharp_debug(http2, "[C%llu] dispatch error: %s", c->id, nghttp2_strerror((int)r));
        sharp_counter_inc(STATS(c), HCM(c)->st.cx_protocol_error);
        h2_flush(c);
        if (!c->closing) sharp_conn_close_after_write(c, true);
        return;
    }
    h2_schedule(c);
}

static bool h2_peer_closed(sharp_conn_t *c, ssize_t err)
{
    (void)c;
    (void)err;
    return false;
}

/* Envoy's isPrematureRstStream: the stream lived no longer than
 * overload.premature_reset_min_stream_lifetime_seconds (whole seconds) and
 * no response was sent. */
static bool premature_reset(const sharp_stream_t *s)
{
    uint64_t lifetime_s = (sharp_now_ns() - s->info.start_ns) / 1000000000ull;
    if (lifetime_s > sharp_runtime_get_u64("overload.premature_reset_min_stream_lifetime_seconds", 1)) return false;
    return s->info.response_code == 0;
}

/* Envoy's maybeDrainDueToPrematureResets (CVE-2023-44487, rapid reset):
 * once overload.premature_reset_total_stream_count streams (500) have
 * closed, a connection where half of them were reset prematurely is
 * closed; before that count, as soon as the premature ones reach half of
 * it. Envoy aborts the connection (no GOAWAY, nothing flushed). */
static void maybe_close_for_premature_resets(sharp_conn_t *c)
{
    struct sharp_h2_conn *h2 = c->h2;
    if (!h2->closed_streams) return;
    uint64_t limit = sharp_runtime_get_u64("overload.premature_reset_total_stream_count", 500);
    if (h2->closed_streams < limit) {
        if (h2->premature_resets * 2 < limit) return;
    } else if (h2->premature_resets * 2 < h2->closed_streams) {
        return;
    }
    if (c->closing || c->shutdown) return;
    sharp_counter_inc(STATS(c), HCM(c)->st.rq_too_many_premature_resets);
    sharp_debug(http2, "[C%llu] closing the connection: %llu of %llu streams reset prematurely", c->id,
                (unsigned long long)h2->premature_resets, (unsigned long long)h2->closed_streams);
    sharp_conn_close(c);
}

static void h2_stream_done(sharp_conn_t *c, sharp_stream_t *s, bool reset)
{
    h2_stream_t *h = H2S(s);
    nghttp2_session *ss = c->h2->session;
    /* every stream counts but those the proxy reset itself (Envoy's
     * internally destroyed ones) and those the connection's close ends */
    bool counted = !reset || h->peer_reset;
    bool premature = counted && premature_reset(s);
    if (!h->closed) {
        if (reset)
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_INTERNAL_ERROR);
        else if (!s->request_complete)
            /* the response is complete before the request: the rest of it
             * is not wanted (RFC 9113 section 8.1) */
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_NO_ERROR);
    }
    sharp_conn_stream_destroy(s);
    if (c->closing) return;
    if (counted) {
        c->h2->closed_streams++;
        if (premature) c->h2->premature_resets++;
        maybe_close_for_premature_resets(c);
        if (c->closing) return;
    }
    if (!c->nstreams) sharp_conn_arm_idle(c);
    h2_schedule(c);
}

static bool h2_busy(const sharp_conn_t *c)
{
    (void)c;
    return false;
}

static bool h2_read_blocked(const sharp_conn_t *c)
{
    (void)c;
    return false;
}

static uint64_t h2_buffered(const sharp_conn_t *c, const sharp_stream_t *s)
{
    (void)c;
    const h2_stream_t *h = s->codec_state;
    return h ? h->out_cap + h->unconsumed : 0;
}

static void h2_stream_released(sharp_stream_t *s)
{
    h2_stream_t *h = H2S(s);
    if (!h) return;
    sharp_conn_t *c = s->conn;
    if (c->h2 && c->h2->session && !h->closed) nghttp2_session_set_stream_user_data(c->h2->session, h->id, NULL);
    pending_send_add(c, -(int64_t)out_pending(h));
    sharp_gauge_add(STATS(c), HCM(c)->st.http2_streams_active, -1);
    sharp_small_free(h->out);
    sharp_headers_free(&h->trailers);
    sharp_small_free(h);
    s->codec_state = NULL;
}

/* Drain (Envoy's HTTP/2 drain sequence): a GOAWAY with the highest stream
 * id tells the client to open no more streams; the final GOAWAY, with the
 * last stream the server took, follows when the connection is closed. */
static void h2_drain(sharp_conn_t *c)
{
    if (c->h2->notice_sent || c->closing) return;
    c->h2->notice_sent = true;
    nghttp2_submit_shutdown_notice(c->h2->session);
    h2_schedule(c);
}

/* A frame nghttp2 gave up on (its stream closed first): a pinned header
 * block goes. */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int lib_error, void *user)
{
    (void)session;
    (void)lib_error;
    sharp_conn_t *c = user;
    sharp_nv_pin_release(&c->h2->pins, frame);
    return 0;
}

static void h2_goaway(sharp_conn_t *c)
{
    if (c->h2->goaway_final || c->closing) return;
    c->h2->goaway_final = true;
    nghttp2_submit_goaway(c->h2->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->h2->session), NGHTTP2_NO_ERROR, NULL, 0);
    h2_flush(c);
}

static void h2_release(sharp_conn_t *c)
{
    if (!c->h2) return;
    nghttp2_session_del(c->h2->session);
    sharp_nv_pin_free_all(&c->h2->pins); /* frames the session never sent */
    h2_timers_t *ka = c->h2->ka;
    if (ka) {
        /* the timers' memory goes with their close; they never see c again */
        ka->send.data = ka->timeout.data = ka;
        uv_close((uv_handle_t *)&ka->send, on_ka_timer_closed);
        uv_close((uv_handle_t *)&ka->timeout, on_ka_timer_closed);
    }
    sharp_sbuf_free(&c->h2->batch);
    free(c->h2->outq);
    free(c->h2);
    c->h2 = NULL;
}

static nghttp2_session_callbacks *callbacks;

__attribute__((constructor)) static void init_callbacks(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, on_frame_not_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
}

__attribute__((destructor)) static void free_callbacks(void)
{
    nghttp2_session_callbacks_del(callbacks);
}

const sharp_server_codec_t sharp_http2_server_codec;

void sharp_http2_server_init(sharp_conn_t *c)
{
    const sharp_hcm_config_t *hcm = HCM(c);
    const sharp_h2_options_t *o = &hcm->h2;
    c->codec = &sharp_http2_server_codec;
    c->h2 = sharp_calloc(1, sizeof *c->h2);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Envoy's nghttp2 options: its own outbound accounting
     * (max_outbound_control_frames, in h2_flush) comes first, nghttp2's
     * queue limit is the old 10000; CONTINUATIONs are capped at 512 per
     * header block (a CONTINUATION flood closes the connection) */
    nghttp2_option_set_max_outbound_ack(opt, 10000);
    nghttp2_option_set_max_continuations(opt, 512);
    nghttp2_session_server_new3(&c->h2->session, callbacks, c, opt, sharp_small_nghttp2_mem());
    nghttp2_option_del(opt);
    uint32_t limit = c->listener->buffer_limit;
    uint32_t stream_window = SHARP_MAX(SHARP_MIN(o->initial_stream_window_size, limit), 65535u);
    uint32_t conn_window = SHARP_MAX(o->initial_connection_window_size, stream_window);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, o->hpack_table_size},
        /* allow_connect, as Envoy sends it (0 or 1): nghttp2 takes a
         * :protocol only once it is 1 */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, o->allow_connect ? 1u : 0u},
    };
    nghttp2_submit_settings(c->h2->session, NGHTTP2_FLAG_NONE, iv, SHARP_ARRAY_SIZE(iv));
    if (conn_window > 65535)
        nghttp2_session_set_local_window_size(c->h2->session, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
    if (o->has_keepalive) {
        h2_timers_t *ka = sharp_calloc(1, sizeof *ka);
        uv_timer_init(&c->worker->loop, &ka->send);
        uv_timer_init(&c->worker->loop, &ka->timeout);
        ka->send.data = ka->timeout.data = c;
        ka->open = 2;
        c->h2->ka = ka;
        keepalive_response(c); /* the first interval, with jitter */
    }
    h2_schedule(c);
}

const sharp_server_codec_t sharp_http2_server_codec = {
    .name = "HTTP/2",
    .dispatch = h2_dispatch,
    .peer_closed = h2_peer_closed,
    .encode_headers = h2_encode_headers,
    .encode_data = h2_encode_data,
    .encode_trailers = h2_encode_trailers,
    .send_continue = h2_send_continue,
    .read_disable = h2_read_disable,
    .stream_done = h2_stream_done,
    .busy = h2_busy,
    .read_blocked = h2_read_blocked,
    .flush = h2_flush,
    .buffered = h2_buffered,
    .release = h2_release,
    .stream_released = h2_stream_released,
    .drain = h2_drain,
    .goaway = h2_goaway,
};

/* conn_manager.c: downstream HTTP/1.1 connections and their streams.
 *
 * One stream at a time per connection (HTTP/1). Pipelined requests are
 * parsed only after the current stream ends: the parser pauses at each
 * message end and the bytes after it wait in `pipeline`. Memory of a
 * connection is released in its close callback, of a stream once its
 * timers have closed; neither is freed inside a callback that may still
 * touch it (the `busy` guard defers a close requested during parsing). */
#include "http/conn_manager.h"
#include "http/hcm_internal.h"
#include "http/stream.h"
#include "http/access_log_emit.h"
#include "log.h"
#include "net.h"
#include "overload.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

typedef struct sharp_conn {
    uv_tcp_t tcp;
    uv_timer_t idle_timer;     /* idle timeout, drain timeout, delayed close */
    uv_timer_t duration_timer; /* max_connection_duration */
    sharp_worker_t *worker;
    const sharp_listener_config_t *listener;
    sharp_snapshot_t *snap;
    sharp_dlist_t link;
    llhttp_t parser;
    sharp_writer_t writer;
    sharp_stream_t *stream;
    sharp_sbuf_t url;
    sharp_sbuf_t pipeline; /* unparsed bytes after a paused message */
    sharp_sbuf_t head;     /* a response head waiting to go out with the first body bytes */
    sharp_dlist_t flush_link; /* in worker->flush_list while head is pending */
    size_t header_bytes;
    bool in_value;
    bool closing;
    bool close_after_response;
    bool read_stopped;
    bool read_disabled_by_stream;
    bool above_watermark;
    bool parsing;           /* inside llhttp_execute */
    bool paused;            /* parser paused at a message end */
    bool shutdown;          /* closing once written data has left */
    bool rejected;          /* a parser callback answered and stopped the parser */
    bool delayed_close;     /* after the flush, wait for the peer's FIN (delayed_close_timeout) */
    bool flushed;           /* the shutdown completed: everything written has left */
    bool peer_closed;       /* FIN seen while the flush was still pending */
    bool duration_draining; /* max_connection_duration reached: drain like a server drain */
    bool underscore_rejected; /* headers_with_underscores_action REJECT_REQUEST hit */
    /* A parser callback refused the request head: the answer (code and
     * Envoy's response code details) is sent once llhttp_execute returns. */
    uint32_t reject_code;
    const char *reject_details;
    /* Header value bookkeeping for the checks llhttp 8.1 does not make:
     * a value that arrives without a name (": x") and obs-fold. */
    bool value_done;        /* the last header's value is complete */
    bool value_spans;       /* the current value has had a span */
    bool value_at_buf_end;  /* ...which ended where its read buffer ended */
    unsigned value_gen;     /* exec_gen of that span */
    const char *value_end;  /* where that span ended */
    unsigned exec_gen;      /* one per llhttp_execute call */
    const char *exec_begin, *exec_end;
    bool tail_lf_ws;        /* the bytes fed so far end in LF and SP/HTAB only */
    /* A request line that ends without a version: llhttp waits for one
     * more byte before it reports it (HTTP/0.9), so conn_execute looks for
     * the line end itself. */
    bool version_done;      /* on_version_complete was called */
    bool head_done;         /* the head went to the filter chain: fields now are trailers */
    const char *url_end;    /* where the last URL span ended */
    unsigned url_gen;       /* exec_gen of that span */
    bool tunnel;            /* upgraded: bytes after the request go to the stream unparsed */
    bool peer_eof;          /* the peer half-closed a tunnel: nothing more to read */
    int handles_open;
    unsigned long long id; /* "[C<id>]" in log lines */
    uint64_t start_ns;
    uint64_t idle_since_ns; /* the idle timeout was armed (reduce_timeouts re-arms from it) */
    char remote[SHARP_ADDR_STRLEN], local[SHARP_ADDR_STRLEN];
    struct sockaddr_storage remote_ss;
} sharp_conn_t;

static llhttp_settings_t settings;
static void conn_close(sharp_conn_t *c);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void conn_update_reading(sharp_conn_t *c);
static void stream_destroy(sharp_stream_t *s);
static void stream_maybe_finish(sharp_stream_t *s);
static void stream_touch(sharp_stream_t *s);
static int h1_request_head(struct sharp_conn *c, sharp_stream_t *s, llhttp_t *p);
static void conn_resume_pipeline(sharp_conn_t *c);

#define STATS(c) ((c)->worker->stats)
#define HCM(c) ((c)->listener->hcm)

/* ------------------------------------------------------------------ */
/* connection                                                           */

static void on_conn_handle_closed(uv_handle_t *h)
{
    sharp_conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    sharp_sbuf_free(&c->url);
    sharp_sbuf_free(&c->pipeline);
    sharp_sbuf_free(&c->head);
    sharp_snapshot_unref(c->snap);
    if (c->listener) sharp_overload_connection_closed(); /* admitted: counted in the global limit */
    atomic_fetch_sub_explicit(&c->worker->active_connections, 1, memory_order_relaxed);
    free(c);
}

static void conn_close(sharp_conn_t *c)
{
    if (c->closing) return;
    c->closing = true;
    const sharp_listener_config_t *l = c->listener;
    sharp_stats_shard_t *sh = STATS(c);
    sharp_gauge_add(sh, HCM(c)->st.cx_active, -1);
    sharp_gauge_add(sh, HCM(c)->st.cx_http1_active, -1);
    sharp_counter_inc(sh, HCM(c)->st.cx_destroy);
    sharp_gauge_add(sh, l->cx_active, -1);
    sharp_counter_inc(sh, l->cx_destroy);
    uint64_t length_ms = (sharp_now_ns() - c->start_ns) / 1000000;
    sharp_histogram_record(sh, l->cx_length_ms, length_ms);
    sharp_histogram_record(sh, HCM(c)->st.cx_length, length_ms);
    sharp_debug(connection, "[C%llu] closing downstream connection after %llu ms", c->id,
                (unsigned long long)length_ms);
    if (c->stream) {
        sharp_stream_t *s = c->stream;
        /* a reset of our own (a timeout, an upstream failure) is not the
         * client going away */
        if (!s->response_complete && !s->reset_local) {
            s->info.response_flags |= SHARP_RF_DOWNSTREAM_CONNECTION_TERMINATION;
            sharp_counter_inc(sh, HCM(c)->st.rq_rx_reset);
        }
        stream_destroy(s);
    }
    sharp_dlist_remove(&c->link);
    sharp_dlist_remove(&c->flush_link);
    uv_timer_stop(&c->idle_timer);
    uv_timer_stop(&c->duration_timer);
    uv_close((uv_handle_t *)&c->idle_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->duration_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_conn_idle(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->stream) return;
    sharp_debug(connection, "[C%llu] idle timeout", c->id);
    sharp_counter_inc(STATS(c), HCM(c)->st.cx_idle_timeout);
    conn_close(c);
}

static void on_drain_idle(uv_timer_t *t);
static void on_conn_max_duration(uv_timer_t *t);

static void conn_arm_idle(sharp_conn_t *c)
{
    if (c->close_after_response && (c->worker->draining || c->duration_draining) && HCM(c)->drain_timeout_ms) {
        uv_timer_start(&c->idle_timer, on_drain_idle, HCM(c)->drain_timeout_ms, 0);
        return;
    }
    uint64_t ms = HCM(c)->idle_timeout_ms;
    if (!ms) return;
    c->idle_since_ns = sharp_now_ns();
    /* reduce_timeouts may shorten it (and re-arm it as its state changes) */
    uv_timer_start(&c->idle_timer, on_conn_idle,
                   sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, ms, 0), 0);
}

static void on_conn_max_duration(uv_timer_t *t);
static void on_stream_idle(uv_timer_t *t);

/* reduce_timeouts changed state: every scaled timer (connection idle,
 * stream idle, connection max duration) is due at its start plus the newly
 * scaled timeout (Envoy's scaled range timers move with the action's
 * state), now if that has passed. */
static void rescale_timers(sharp_worker_t *w)
{
    uint64_t now = sharp_now_ns();
    for (sharp_dlist_t *n = w->connections.next; n != &w->connections; n = n->next) {
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        if (c->closing || c->shutdown) continue;
        if (uv_is_active((uv_handle_t *)&c->duration_timer) && !c->close_after_response) {
            uint64_t elapsed = (now - c->start_ns) / 1000000;
            uv_timer_start(&c->duration_timer, on_conn_max_duration,
                           sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_MAX,
                                                             HCM(c)->max_connection_duration_ms, elapsed), 0);
        }
        sharp_stream_t *s = c->stream;
        if (s && !s->destroyed && !s->finish_scheduled && s->idle_timeout_ms &&
            uv_is_active((uv_handle_t *)&s->idle_timer)) {
            uint64_t elapsed = (now - s->idle_since_ns) / 1000000;
            uv_timer_start(&s->idle_timer, on_stream_idle,
                           sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_STREAM_IDLE, s->idle_timeout_ms, elapsed), 0);
        }
        if (c->stream || !uv_is_active((uv_handle_t *)&c->idle_timer) || c->idle_timer.timer_cb != on_conn_idle)
            continue;
        uint64_t elapsed = (now - c->idle_since_ns) / 1000000;
        uv_timer_start(&c->idle_timer, on_conn_idle,
                       sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, HCM(c)->idle_timeout_ms,
                                                         elapsed), 0);
    }
}

/* Bytes a stream holds in buffers: the filter chain's, each filter's (the
 * router's body kept for retries and not yet sent, its upstream
 * connection's write queue) and, for HTTP/1 where the connection carries
 * this one stream, the downstream write queue. Allocated capacity counts,
 * as Envoy charges its accounts with slice capacity. */
static uint64_t stream_memory(sharp_conn_t *c, sharp_stream_t *s)
{
    uint64_t n = s->dec_buf.cap + s->enc_buf.cap + c->writer.queued + c->pipeline.cap + c->head.cap;
    for (uint32_t i = 0; i < s->nfilters; i++) {
        sharp_filter_t *f = &s->filters[i];
        if (f->factory->buffered_bytes) n += f->factory->buffered_bytes(f);
    }
    return n;
}

/* reset_high_memory_stream (Envoy's resetAccountsGivenPressure): the
 * streams in the top classes_to_reset memory classes are reset, largest
 * first, at most SHARP_OL_MAX_RESETS_PER_UPDATE per state change. Envoy
 * picks within a class in hash order; SHARP takes the largest first.
 * Unlike Envoy, whose HTTP/1 codec keeps no account, HTTP/1 streams are
 * tracked too: a slow reader pins as much memory over HTTP/1. */
static void reset_high_memory_streams(sharp_worker_t *w, uint32_t state_ppm)
{
    uint32_t classes = sharp_overload_classes_to_reset(state_ppm);
    if (!classes) return;
    int lowest = 8 - (int)classes;
    typedef struct { sharp_conn_t *c; uint64_t bytes; } victim_t;
    victim_t *v = NULL;
    size_t nv = 0, cap = 0;
    for (sharp_dlist_t *n = w->connections.next; n != &w->connections; n = n->next) {
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        sharp_stream_t *s = c->stream;
        if (c->closing || !s || s->destroyed || s->finish_scheduled) continue;
        uint64_t bytes = stream_memory(c, s);
        if (sharp_overload_memory_class(bytes) < lowest) continue;
        if (nv == cap) {
            cap = cap ? cap * 2 : 16;
            v = sharp_realloc(v, cap * sizeof *v);
        }
        v[nv++] = (victim_t){c, bytes};
    }
    uint64_t reset = 0;
    while (reset < SHARP_OL_MAX_RESETS_PER_UPDATE && nv) {
        size_t best = 0;
        for (size_t i = 1; i < nv; i++)
            if (v[i].bytes > v[best].bytes) best = i;
        sharp_conn_t *c = v[best].c;
        v[best] = v[--nv];
        sharp_stream_t *s = c->stream;
        sharp_log_warn("[C%llu] overload: resetting a stream holding %llu bytes of buffers", c->id,
                       (unsigned long long)v[best].bytes);
        s->info.response_code_details = "overload";
        sharp_stream_reset(s, SHARP_RF_OVERLOAD_MANAGER);
        reset++;
    }
    free(v);
    sharp_overload_count_resets(w->stats, reset);
}

void sharp_conn_overload_update(sharp_worker_t *w)
{
    rescale_timers(w);
    uint32_t st = sharp_overload_state(SHARP_OL_RESET_HIGH_MEMORY_STREAM);
    if (st != w->overload_reset_state) {
        w->overload_reset_state = st;
        reset_high_memory_streams(w, st);
    }
}

static void on_delayed_close_timeout(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    sharp_counter_inc(STATS(c), HCM(c)->st.cx_delayed_close_timeout);
    conn_close(c);
}

/* Everything written has left and our FIN is sent. A delayed close now
 * waits delayed_close_timeout for the peer's FIN (the timer restarts: the
 * flush was progress), unless that FIN already came. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    sharp_conn_t *c = req->data;
    free(req);
    c->flushed = true;
    if (status == 0 && c->delayed_close && !c->peer_closed && !c->closing) {
        uv_timer_start(&c->idle_timer, on_delayed_close_timeout, HCM(c)->delayed_close_timeout_ms, 0);
        return;
    }
    conn_close(c);
}

/* Closes once everything written has left (used after "connection: close").
 * With `delay` (Envoy's FlushWriteAndDelay) and a delayed_close_timeout, the
 * socket then stays open, reading and discarding, until the peer closes or
 * the timeout passes: closing a socket with unread bytes in it sends a RST,
 * which can destroy the response before the client has read it. The timer
 * also runs while the flush is pending, so a peer that stops reading does
 * not hold the connection forever. */
static void conn_close_after_write(sharp_conn_t *c, bool delay)
{
    if (c->closing || c->shutdown) return;
    c->shutdown = true;
    uint64_t ms = HCM(c)->delayed_close_timeout_ms;
    c->delayed_close = delay && ms > 0;
    uv_timer_stop(&c->idle_timer);
    if (c->delayed_close) {
        if (c->read_stopped) {
            c->read_stopped = false;
            uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
        }
        uv_timer_start(&c->idle_timer, on_delayed_close_timeout, ms, 0);
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = true;
    }
    uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(req);
        conn_close(c);
    }
}

static void on_writer_drain(sharp_writer_t *w)
{
    sharp_conn_t *c = sharp_container_of(w, sharp_conn_t, writer);
    if (!c->above_watermark) return;
    c->above_watermark = false;
    sharp_stream_t *s = c->stream;
    if (!s) return;
    for (uint32_t i = 0; i < s->nfilters; i++)
        if (s->filters[i].factory->on_downstream_watermark)
            s->filters[i].factory->on_downstream_watermark(&s->filters[i], false);
}

static void on_writer_error(sharp_writer_t *w, int status)
{
    (void)status;
    sharp_conn_t *c = sharp_container_of(w, sharp_conn_t, writer);
    conn_close(c);
}

static void check_write_watermark(sharp_conn_t *c)
{
    if (c->above_watermark || c->writer.queued <= c->listener->buffer_limit) return;
    c->above_watermark = true;
    sharp_stream_t *s = c->stream;
    if (!s) return;
    for (uint32_t i = 0; i < s->nfilters; i++)
        if (s->filters[i].factory->on_downstream_watermark)
            s->filters[i].factory->on_downstream_watermark(&s->filters[i], true);
}

/* Sends a 400/413/431-style error for a request that never became a stream
 * (or whose stream cannot continue) and closes the connection. */
/* A request rejected by the codec still gets its request line into the
 * access log when it had one ("GET /x HTTP/1.0" 426), as in Envoy. */
static void stream_fill_request_line(sharp_conn_t *c, sharp_stream_t *s)
{
    sharp_str_t v;
    if (!c->url.len || sharp_headers_get_cstr(&s->req, ":method", &v)) return;
    if (!s->info.protocol && c->parser.http_major == 1)
        s->info.protocol = c->parser.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    const char *method = llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->parser));
    sharp_headers_add(&s->req, ":method", 7, method, strlen(method));
    sharp_headers_add(&s->req, ":path", 5, c->url.data, c->url.len);
    if (sharp_headers_get_cstr(&s->req, "host", &v)) sharp_headers_add(&s->req, ":authority", 10, v.p, v.len);
}

static void conn_protocol_error_ex(sharp_conn_t *c, uint32_t code, const char *body, const char *details)
{
    sharp_counter_inc(STATS(c), HCM(c)->st.cx_protocol_error);
    sharp_stream_t *s = c->stream;
    sharp_debug(http, "[C%llu] dispatch error: %u %s", c->id, code, details);
    if (s) stream_fill_request_line(c, s);
    if (s && !s->response_started) {
        s->info.response_flags |= SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR;
        s->closes_connection = true;
        s->force_delayed_close = true; /* Envoy's codec error close: FlushWriteAndDelay */
        c->close_after_response = true;
        sharp_filter_t *first = s->nfilters ? &s->filters[0] : NULL;
        if (first) {
            s->request_complete = true; /* nothing more will be read */
            sharp_stream_send_local_reply(first, code, body, SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR,
                                          details);
            return;
        }
    }
    /* No stream yet: answer directly. */
    sharp_sbuf_t out = {0};
    sharp_sbuf_printf(&out, "HTTP/1.1 %u %s\r\ncontent-length: %zu\r\ncontent-type: text/plain\r\n"
                      "connection: close\r\n\r\n%s", code, sharp_h1_reason(code), strlen(body), body);
    uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
    sharp_writer_write(&c->writer, &b, 1);
    sharp_sbuf_free(&out);
    if (s) {
        s->info.response_code = code;
        s->info.response_flags |= SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR;
        s->response_complete = s->request_complete = true;
        stream_destroy(s);
    }
    conn_close_after_write(c, true);
}

static void conn_protocol_error(sharp_conn_t *c, uint32_t code, const char *details)
{
    conn_protocol_error_ex(c, code, details, details);
}

/* Upgrade payload from the client: request data of the upgraded stream,
 * never parsed. */
static void tunnel_data(sharp_conn_t *c, const char *p, size_t n)
{
    sharp_stream_t *s = c->stream;
    if (!s || s->destroyed || s->response_complete) return;
    s->info.bytes_received += n;
    stream_touch(s);
    dec_run_data(s, 0, p, n, false);
}

/* Whether bytes that follow earlier ones (which ended so when `before`)
 * end in a line feed followed by nothing but spaces and tabs. */
static bool ends_in_line_break(const char *p, size_t n, bool before)
{
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    return n ? p[n - 1] == '\n' : before;
}

/* Feeds bytes to the parser. The parser pauses at the end of every request;
 * when that request's stream has already finished (a fast local reply, say),
 * parsing goes straight on with the rest, otherwise the rest waits. */
static void conn_execute(sharp_conn_t *c, const char *p, size_t n)
{
    sharp_sbuf_t own = {0};
    for (;;) {
        c->parsing = true;
        c->exec_gen++;
        c->exec_begin = p;
        c->exec_end = p + n;
        llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
        c->parsing = false;
        if (c->closing || c->shutdown) break;
        c->tail_lf_ws = ends_in_line_break(p, n, c->tail_lf_ws);
        if (e == HPE_OK && c->stream && !c->version_done && c->url.len) {
            const char *from = c->url_gen == c->exec_gen ? c->url_end : p;
            if (from >= p && from <= p + n && memchr(from, '\n', (size_t)(p + n - from))) {
                conn_protocol_error_ex(c, 400, "Bad Request", "http1.codec_error");
                break;
            }
        }
        if (c->tunnel && (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)) {
            /* the upgrade request's HTTP part is over: what follows it is
             * the upgrade payload, which goes to the stream as it is */
            const char *pos = llhttp_get_error_pos(&c->parser);
            c->paused = true;
            if (pos && pos >= p && pos < p + n) tunnel_data(c, pos, (size_t)(p + n - pos));
            break;
        }
        if (e == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            c->paused = true;
            if (pos && pos >= p && pos < p + n) sharp_sbuf_append(&c->pipeline, pos, (size_t)(p + n - pos));
            if (c->stream) break;
            /* the stream is done: continue with what followed it */
            c->paused = false;
            llhttp_resume(&c->parser);
            sharp_sbuf_free(&own);
            own = c->pipeline;
            memset(&c->pipeline, 0, sizeof c->pipeline);
            if (!own.len) break;
            p = own.data;
            n = own.len;
            continue;
        }
        if (e == HPE_OK) break;
        if (c->underscore_rejected) {
            conn_protocol_error_ex(c, 400, "Bad Request", "http1.unexpected_underscore");
            break;
        }
        if (c->reject_code) {
            conn_protocol_error_ex(c, c->reject_code, sharp_h1_reason(c->reject_code), c->reject_details);
            break;
        }
        /* llhttp turns an error returned from on_headers_complete into
         * HPE_CB_HEADERS_COMPLETE and drops our reason: the flag says the
         * request was already answered, so no second response is sent. */
        if (c->rejected) break;
        if (e == HPE_PAUSED_UPGRADE) {
            conn_protocol_error(c, 403, "upgrade not supported");
            break;
        }
        if (e == HPE_USER) {
            const char *r = llhttp_get_error_reason(&c->parser);
            if (r && strcmp(r, "431") == 0) {
                conn_protocol_error(c, 431, "request headers too large");
                break;
            }
            if (r && strcmp(r, "stop") == 0) break;
        }
        /* Everything else llhttp refuses is Envoy's generic codec error,
         * except the framing errors Envoy names itself: a transfer coding
         * other than a lone "chunked" (501) and Content-Length together
         * with Transfer-Encoding (400). */
        uint32_t code = 400;
        const char *details = "http1.codec_error";
        if (e == HPE_INVALID_TRANSFER_ENCODING) {
            code = 501;
            details = "http1.invalid_transfer_encoding";
        } else if (e == HPE_UNEXPECTED_CONTENT_LENGTH) {
            const char *r = llhttp_get_error_reason(&c->parser);
            if (r && strstr(r, "Transfer-Encoding")) details = "http1.content_length_and_chunked_not_allowed";
        }
        sharp_debug(http, "[C%llu] llhttp: %s (%s)", c->id, llhttp_errno_name(e),
                    llhttp_get_error_reason(&c->parser) ? llhttp_get_error_reason(&c->parser) : "");
        conn_protocol_error_ex(c, code, sharp_h1_reason(code), details);
        break;
    }
    sharp_sbuf_free(&own);
    conn_update_reading(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sharp_conn_t *c = st->data;
    if (nread > 0) sharp_trace(connection, "[C%llu] read %zd bytes", c->id, nread);
    if (c->shutdown) {
        /* delayed close: what the peer still sends is dropped; its FIN
         * ends the wait (once our own data has left) */
        if (nread < 0 && !c->closing) {
            uv_read_stop(st);
            c->read_stopped = true;
            if (c->flushed) conn_close(c);
            else c->peer_closed = true;
        }
        return;
    }
    if (nread > 0 && !c->closing) {
        sharp_counter_add(STATS(c), HCM(c)->st.rx_bytes_total, (uint64_t)nread);
        uv_timer_stop(&c->idle_timer);
        if (c->tunnel) {
            tunnel_data(c, buf->base, (size_t)nread);
            conn_update_reading(c);
        } else if (c->paused) {
            sharp_sbuf_append(&c->pipeline, buf->base, (size_t)nread);
            conn_update_reading(c);
        } else {
            conn_execute(c, buf->base, (size_t)nread);
        }
    } else if (nread < 0 && !c->closing) {
        sharp_debug(connection, "[C%llu] remote close (%s)", c->id, uv_err_name((int)nread));
        sharp_stream_t *ts = c->stream;
        if (c->tunnel && nread == UV_EOF && ts && !ts->destroyed && !ts->response_complete) {
            /* Half-close of a tunnel: the end of the request goes upstream
             * (as a FIN) and the response keeps flowing until it ends. */
            c->peer_eof = true;
            conn_update_reading(c);
            ts->request_complete = true;
            dec_run_data(ts, 0, NULL, 0, true);
            return;
        }
        if (c->stream && !c->stream->request_complete && nread == UV_EOF) {
            /* Let llhttp end a request whose body runs to EOF (HTTP/1.0). */
            c->parsing = true;
            llhttp_finish(&c->parser);
            c->parsing = false;
        }
        if (!c->closing) {
            if (c->stream) {
                sharp_counter_inc(STATS(c), HCM(c)->st.cx_destroy_remote);
                conn_close(c); /* downstream went away mid-stream */
            } else {
                conn_close(c);
            }
        }
    }
}

/* Reading stops while the stream asked for it (backpressure) or while
 * pipelined bytes wait beyond a small bound. */
static void conn_update_reading(sharp_conn_t *c)
{
    if (c->closing) return;
    if (c->shutdown) return;
    bool stop = c->read_disabled_by_stream || c->peer_eof || (c->paused && !c->tunnel && c->pipeline.len > 65536);
    if (stop && !c->read_stopped) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = true;
    } else if (!stop && c->read_stopped) {
        c->read_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
    }
}

void sharp_conn_accept(sharp_worker_t *w, const sharp_listener_config_t *l, uv_stream_t *server)
{
    sharp_conn_t *c = sharp_calloc(1, sizeof *c);
    uv_tcp_init(&w->loop, &c->tcp);
    int arc = uv_accept(server, (uv_stream_t *)&c->tcp);
    /* the overload manager's accept checks (Envoy's TcpListenerImpl): a
     * refused connection is closed before anything is read from it */
    sharp_ol_admit_t adm = arc < 0 ? SHARP_OL_ADMIT
                                   : sharp_overload_admit_connection(l->ignore_global_conn_limit,
                                                                     l->bypass_overload_manager, sharp_worker_random(w));
    if (adm != SHARP_OL_ADMIT) {
        sharp_counter_inc(w->stats, adm == SHARP_OL_REJECT_GLOBAL_LIMIT ? l->cx_global_overflow : l->cx_overload_reject);
        sharp_debug(conn_handler, "closing an accepted connection on listener '%s': %s", l->name,
                    adm == SHARP_OL_REJECT_GLOBAL_LIMIT ? "global connection limit reached" : "overloaded");
    }
    if (arc < 0 || adm != SHARP_OL_ADMIT) {
        c->tcp.data = c;
        c->handles_open = 1;
        sharp_dlist_init(&c->flush_link);
        c->worker = w;
        c->snap = sharp_snapshot_ref(w->snap);
        atomic_fetch_add_explicit(&w->active_connections, 1, memory_order_relaxed);
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
        return;
    }
    c->worker = w;
    c->listener = l;
    c->snap = sharp_snapshot_ref(w->snap);
    c->id = sharp_log_next_connection_id();
    c->start_ns = sharp_now_ns();
    atomic_fetch_add_explicit(&w->active_connections, 1, memory_order_relaxed);
    uv_timer_init(&w->loop, &c->idle_timer);
    uv_timer_init(&w->loop, &c->duration_timer);
    c->tcp.data = c->idle_timer.data = c->duration_timer.data = c;
    c->handles_open = 3;
    sharp_dlist_init(&c->link);
    sharp_dlist_init(&c->flush_link);
    sharp_dlist_push(&w->connections, &c->link);
    sharp_writer_init(&c->writer, (uv_stream_t *)&c->tcp, on_writer_drain, on_writer_error);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    struct sockaddr_storage ss = {0}; /* zeroed: an abstract Unix name is not NUL-terminated */
    int len = sizeof ss;
    if (sharp_stream_peer(&c->tcp, &c->remote_ss) == 0)
        sharp_addr_str((struct sockaddr *)&c->remote_ss, c->remote, sizeof c->remote);
    len = sizeof ss;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        sharp_addr_str((struct sockaddr *)&ss, c->local, sizeof c->local);
    uv_tcp_nodelay(&c->tcp, 1);
    sharp_debug(conn_handler, "[C%llu] new connection from %s on listener '%s'", c->id, c->remote, l->name);
    sharp_stats_shard_t *sh = STATS(c);
    sharp_counter_inc(sh, l->cx_total);
    sharp_gauge_add(sh, l->cx_active, 1);
    sharp_counter_inc(sh, l->hcm->st.cx_total);
    sharp_gauge_add(sh, l->hcm->st.cx_active, 1);
    sharp_counter_inc(sh, l->hcm->st.cx_http1_total);
    sharp_gauge_add(sh, l->hcm->st.cx_http1_active, 1);
    if (w->draining) c->close_after_response = true;
    if (l->hcm->has_max_connection_duration)
        uv_timer_start(&c->duration_timer, on_conn_max_duration,
                       sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_MAX,
                                                         l->hcm->max_connection_duration_ms, 0), 0);
    conn_arm_idle(c);
    uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
}

static void on_drain_idle(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->stream || c->parsing) return;
    /* a server drain counts downstream_cx_drain_close; a max duration drain
     * was counted as downstream_cx_max_duration_reached */
    if (!c->duration_draining) sharp_counter_inc(STATS(c), HCM(c)->st.cx_drain_close);
    conn_close(c);
}

/* max_connection_duration (Envoy's onConnectionDurationTimeout): the HTTP/1
 * drain sequence. Every later response carries "connection: close" and the
 * connection closes after it; an idle connection is closed once the HCM's
 * drain_timeout has passed. With http1_safe_max_connection_duration only
 * the next response closes it: an idle connection is left to its client. */
static void on_conn_max_duration(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->closing || c->shutdown) return;
    sharp_counter_inc(STATS(c), HCM(c)->st.cx_max_duration_reached);
    if (c->close_after_response) return; /* already draining */
    c->close_after_response = true;
    if (HCM(c)->http1_safe_max_connection_duration) return;
    c->duration_draining = true;
    if (!c->stream && !c->parsing) {
        uint64_t ms = HCM(c)->drain_timeout_ms;
        if (ms == 0) on_drain_idle(&c->idle_timer);
        else uv_timer_start(&c->idle_timer, on_drain_idle, ms, 0);
    }
}

/* Drain, as Envoy does for HTTP/1: every further response carries
 * "connection: close" and its connection closes after it; a connection that
 * stays idle for the HCM's drain_timeout is closed. Closing idle connections
 * at once would race with clients that are just sending their next request. */
void sharp_conn_drain_all(sharp_worker_t *w)
{
    sharp_dlist_t *n = w->connections.next;
    while (n != &w->connections) {
        sharp_dlist_t *next = n->next;
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        c->close_after_response = true;
        if (!c->stream && !c->parsing && !c->shutdown) {
            uint64_t ms = HCM(c)->drain_timeout_ms;
            if (ms == 0) on_drain_idle(&c->idle_timer);
            else uv_timer_start(&c->idle_timer, on_drain_idle, ms, 0);
        }
        n = next;
    }
}

void sharp_conn_close_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->connections))
        conn_close(sharp_container_of(w->connections.next, sharp_conn_t, link));
}

/* ------------------------------------------------------------------ */
/* stream lifecycle                                                     */

static void on_stream_timer_closed(uv_handle_t *h)
{
    sharp_stream_t *s = h->data;
    if (--s->timers_open > 0) return;
    sharp_snapshot_unref(s->snap);
    free(s);
}

static void on_stream_idle(uv_timer_t *t)
{
    sharp_stream_t *s = t->data;
    sharp_counter_inc(STATS(s->conn), s->hcm->st.rq_idle_timeout);
    if (!s->response_started && s->nfilters) {
        s->closes_connection = true;
        sharp_stream_send_local_reply(&s->filters[0], 408, "stream timeout",
                                      SHARP_RF_STREAM_IDLE_TIMEOUT, "stream_idle_timeout");
    } else {
        sharp_stream_reset(s, SHARP_RF_STREAM_IDLE_TIMEOUT);
    }
}

static void on_request_timeout(uv_timer_t *t)
{
    sharp_stream_t *s = t->data;
    if (s->request_complete) return;
    sharp_counter_inc(STATS(s->conn), s->hcm->st.rq_timeout);
    s->closes_connection = true;
    if (!s->response_started && s->nfilters)
        sharp_stream_send_local_reply(&s->filters[0], 408, "request timeout", 0,
                                      "request_overall_timeout");
    else
        sharp_stream_reset(s, 0);
}

/* request_headers_timeout (Envoy's onRequestHeaderTimeout): the stream
 * began with the request's first byte and its headers are still not
 * complete. The 408 closes the connection: the request was not read whole. */
static void on_request_headers_timeout(uv_timer_t *t)
{
    sharp_stream_t *s = t->data;
    if (s->destroyed || s->finish_scheduled || s->response_started) return;
    sharp_counter_inc(STATS(s->conn), s->hcm->st.rq_header_timeout);
    s->closes_connection = true;
    if (s->nfilters)
        sharp_stream_send_local_reply(&s->filters[0], 408, "request header timeout", 0,
                                      "request_header_timeout");
    else
        sharp_stream_reset(s, 0);
}

void sharp_codec_request_headers_done(sharp_stream_t *s)
{
    if (!s->destroyed) uv_timer_stop(&s->headers_timer);
}

/* max_stream_duration (Envoy's onStreamMaxDurationReached): a local reply
 * while no response has started, 504 once the request is complete (the
 * wait is upstream's), 408 while it is still arriving; a reset after. */
static void on_stream_max_duration(uv_timer_t *t)
{
    sharp_stream_t *s = t->data;
    if (s->destroyed || s->finish_scheduled) return;
    sharp_counter_inc(STATS(s->conn), s->hcm->st.rq_max_duration_reached);
    if (!s->response_started && s->nfilters) {
        sharp_stream_send_local_reply(&s->filters[0], s->request_complete ? 504 : 408,
                                      "downstream duration timeout", 0, "max_duration_timeout");
    } else {
        s->info.response_code_details = "max_duration_timeout";
        sharp_stream_reset(s, 0);
    }
}

static void stream_touch(sharp_stream_t *s)
{
    if (s->destroyed || s->finish_scheduled) return;
    if (s->idle_timeout_ms) {
        s->idle_since_ns = sharp_now_ns();
        uv_timer_start(&s->idle_timer, on_stream_idle,
                       sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_STREAM_IDLE, s->idle_timeout_ms, 0), 0);
    } else {
        uv_timer_stop(&s->idle_timer);
    }
}

void sharp_codec_touch(sharp_stream_t *s)
{
    stream_touch(s);
}

static sharp_stream_t *stream_create(sharp_conn_t *c)
{
    const sharp_hcm_config_t *hcm = HCM(c);
    size_t state_bytes = 0;
    for (uint32_t i = 0; i < hcm->nfilters; i++)
        state_bytes += (hcm->filters[i].factory->state_size + 15) & ~(size_t)15;
    size_t fbytes = hcm->nfilters * sizeof(sharp_filter_t);
    sharp_stream_t *s = sharp_calloc(1, sizeof *s + fbytes + state_bytes + 16);
    s->conn = c;
    s->conn_id = c->id;
    s->id = sharp_log_next_stream_id();
    sharp_debug(http, "[C%llu][S%llu] new stream", s->conn_id, s->id);
    s->snap = sharp_snapshot_ref(c->snap);
    s->hcm = hcm;
    s->nfilters = hcm->nfilters;
    s->filters = (sharp_filter_t *)(s + 1);
    char *state = (char *)(s->filters + hcm->nfilters);
    state = (char *)(((uintptr_t)state + 15) & ~(uintptr_t)15);
    for (uint32_t i = 0; i < hcm->nfilters; i++) {
        sharp_filter_t *f = &s->filters[i];
        f->factory = hcm->filters[i].factory;
        f->config = hcm->filters[i].config;
        f->stream = s;
        f->index = i;
        f->state = state;
        state += (f->factory->state_size + 15) & ~(size_t)15;
    }
    s->dec_data_stop = -1;
    s->enc_next = (int32_t)hcm->nfilters - 1;
    sharp_headers_init(&s->req);
    sharp_headers_init(&s->resp);
    sharp_headers_init(&s->req_trailers);
    s->info.start_wall_us = sharp_wall_us();
    s->info.start_ns = sharp_now_ns();
    s->info.request_headers = &s->req;
    snprintf(s->info.downstream_remote_address, sizeof s->info.downstream_remote_address, "%s",
             c->remote);
    snprintf(s->info.downstream_direct_remote_address, sizeof s->info.downstream_direct_remote_address, "%s",
             c->remote);
    snprintf(s->info.downstream_local_address, sizeof s->info.downstream_local_address, "%s",
             c->local);
    uv_timer_init(&c->worker->loop, &s->idle_timer);
    uv_timer_init(&c->worker->loop, &s->request_timer);
    uv_timer_init(&c->worker->loop, &s->duration_timer);
    uv_timer_init(&c->worker->loop, &s->headers_timer);
    s->idle_timer.data = s->request_timer.data = s->duration_timer.data = s->headers_timer.data = s;
    s->timers_open = 4;
    s->idle_timeout_ms = hcm->stream_idle_timeout_ms;
    sharp_stats_shard_t *sh = STATS(c);
    sharp_counter_inc(sh, hcm->st.rq_total);
    sharp_counter_inc(sh, hcm->st.rq_http1_total);
    sharp_gauge_add(sh, hcm->st.rq_active, 1);
    stream_touch(s);
    if (hcm->request_timeout_ms) uv_timer_start(&s->request_timer, on_request_timeout, hcm->request_timeout_ms, 0);
    if (hcm->max_stream_duration_ms)
        uv_timer_start(&s->duration_timer, on_stream_max_duration, hcm->max_stream_duration_ms, 0);
    if (hcm->request_headers_timeout_ms)
        uv_timer_start(&s->headers_timer, on_request_headers_timeout, hcm->request_headers_timeout_ms, 0);
    return s;
}

/* Final accounting, access logs, filter completion and release. Runs once,
 * whether the stream completed or was reset. */
static void stream_destroy(sharp_stream_t *s)
{
    if (s->destroyed) return;
    s->destroyed = true;
    sharp_conn_t *c = s->conn;
    s->info.end_ns = sharp_now_ns();
    s->info.response_headers = s->response_started ? &s->resp : NULL;
    sharp_stats_shard_t *sh = STATS(c);
    sharp_gauge_add(sh, s->hcm->st.rq_active, -1);
    if (s->upgrade_accepted) sharp_gauge_add(sh, s->hcm->st.cx_upgrades_active, -1);
    if (s->response_complete) {
        uint32_t code = s->info.response_code;
        if (code >= 100 && code < 600) sharp_counter_inc(sh, s->hcm->st.rq_xx[code / 100]);
        sharp_counter_inc(sh, s->hcm->st.rq_completed);
    } else {
        sharp_counter_inc(sh, s->hcm->st.rq_tx_reset);
    }
    sharp_histogram_record(sh, s->hcm->st.rq_time, (s->info.end_ns - s->info.start_ns) / 1000000);
    for (uint32_t i = 0; i < s->nfilters; i++)
        if (s->filters[i].factory->on_complete) s->filters[i].factory->on_complete(&s->filters[i], &s->info);
    sharp_access_log_emit_all(c->worker, s->hcm, &s->info);
    for (uint32_t i = 0; i < s->nfilters; i++)
        if (s->filters[i].factory->on_destroy) s->filters[i].factory->on_destroy(&s->filters[i]);
    if (c->stream == s) c->stream = NULL;
    sharp_headers_free(&s->req);
    sharp_headers_free(&s->resp);
    sharp_headers_free(&s->req_trailers);
    sharp_sbuf_free(&s->dec_buf);
    sharp_sbuf_free(&s->enc_buf);
    uv_timer_stop(&s->idle_timer);
    uv_timer_stop(&s->request_timer);
    uv_timer_stop(&s->duration_timer);
    uv_timer_stop(&s->headers_timer);
    uv_close((uv_handle_t *)&s->idle_timer, on_stream_timer_closed);
    uv_close((uv_handle_t *)&s->request_timer, on_stream_timer_closed);
    uv_close((uv_handle_t *)&s->duration_timer, on_stream_timer_closed);
    uv_close((uv_handle_t *)&s->headers_timer, on_stream_timer_closed);
}

/* A stream is done when its response is complete. Finishing is deferred to
 * the next loop turn: the call usually comes from deep inside a filter's
 * callback (the router delivering the last byte), and the stream, its
 * filters and their state must outlive that callback. */
static void on_stream_finish(uv_timer_t *t)
{
    sharp_stream_t *s = t->data;
    sharp_conn_t *c = s->conn;
    /* If the request was not complete (an early response), the connection
     * cannot carry another request. */
    /* Close only when the response said so: a drain that began after the
     * response head went out must not close under a client that was told
     * keep-alive and may be sending its next request; that connection gets
     * "connection: close" on its next response, or the drain idle timer. */
    bool close = s->closes_connection || !s->request_complete;
    /* Envoy delays the close (FlushWriteAndDelay) unless the client asked
     * for it and sent its whole request, or the response is framed by the
     * close: then nothing is left unread to turn the close into a RST. */
    bool delay = s->force_delayed_close ||
                 !(s->saw_connection_close && (s->request_complete || s->resp_close_delimited));
    /* a tunnel whose client half-closed has nothing left to read */
    if (c->peer_eof) delay = false;
    if (!s->request_complete) sharp_counter_inc(STATS(c), s->hcm->st.rq_response_before_rq_complete);
    c->read_disabled_by_stream = false;
    stream_destroy(s);
    if (c->closing) return;
    if (close) {
        conn_close_after_write(c, delay);
        return;
    }
    conn_arm_idle(c);
    if (c->paused) conn_resume_pipeline(c);
    else conn_update_reading(c);
}

static void stream_maybe_finish(sharp_stream_t *s)
{
    if (!s->response_complete || s->destroyed || s->finish_scheduled) return;
    s->finish_scheduled = true;
    uv_timer_stop(&s->request_timer);
    uv_timer_stop(&s->duration_timer);
    uv_timer_stop(&s->headers_timer);
    uv_timer_start(&s->idle_timer, on_stream_finish, 0, 0);
}

/* Parses pipelined bytes held while the previous stream ran. Runs from the
 * loop (not from inside the finishing stream's callbacks). */
static void conn_resume_pipeline(sharp_conn_t *c)
{
    c->paused = false;
    llhttp_resume(&c->parser);
    if (c->pipeline.len) {
        sharp_sbuf_t pending = c->pipeline;
        memset(&c->pipeline, 0, sizeof c->pipeline);
        conn_execute(c, pending.data, pending.len);
        sharp_sbuf_free(&pending);
        return;
    }
    conn_update_reading(c);
}

/* ------------------------------------------------------------------ */
/* request parsing                                                      */

static int p_on_message_begin(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    if (c->stream) return -1; /* cannot happen: the parser pauses between messages */
    c->stream = stream_create(c);
    c->header_bytes = 0;
    c->in_value = false;
    c->value_done = false;
    c->value_spans = false;
    c->version_done = false;
    c->head_done = false;
    c->reject_code = 0;
    c->url_end = NULL;
    /* llhttp sets the version only when it parses one: a request line
     * without a version must not inherit the previous request's. */
    p->http_major = p->http_minor = 0;
    sharp_sbuf_reset(&c->url);
    uv_timer_stop(&c->idle_timer);
    return 0;
}

static int too_large(llhttp_t *p)
{
    llhttp_set_error_reason(p, "431");
    return HPE_USER;
}

/* Refuses the request from a parser callback; conn_execute answers once
 * llhttp has returned (it replaces the reason of a *_complete callback's
 * error, so the answer cannot travel in the parser). */
static int reject(llhttp_t *p, uint32_t code, const char *details)
{
    sharp_conn_t *c = p->data;
    if (!c->reject_code) {
        c->reject_code = code;
        c->reject_details = details;
    }
    llhttp_set_error_reason(p, "reject");
    return HPE_USER;
}

/* A request line without an HTTP version ("GET /x" and CRLF) is HTTP/0.9
 * to llhttp, which then waits for headers that such a client never sends.
 * llhttp sets version 0.9 just before this callback on that path only (it
 * comes once a byte follows the line end; conn_execute catches a line end
 * with nothing after it). */
static int p_on_url_complete(llhttp_t *p)
{
    if (p->http_major == 0 && p->http_minor == 9) return reject(p, 400, "http1.codec_error");
    return 0;
}

static int p_on_url(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    c->header_bytes += n;
    if (c->header_bytes > (size_t)HCM(c)->max_request_headers_kb * 1024) return too_large(p);
    sharp_sbuf_append(&c->url, at, n);
    c->url_end = at + n;
    c->url_gen = c->exec_gen;
    return 0;
}

static int p_on_version_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    c->version_done = true;
    return 0;
}

static int p_on_header_field(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    c->header_bytes += n;
    if (c->header_bytes > (size_t)HCM(c)->max_request_headers_kb * 1024) return too_large(p);
    /* Trailers of a chunked request are dropped, as by Envoy's codec
     * without enable_trailers: merged into the header map they would
     * reach the upstream as header fields (a second Host, say). */
    if (c->head_done) return 0;
    sharp_headers_t *h = &c->stream->req;
    c->value_done = false;
    c->value_spans = false;
    if (c->in_value || h->n == 0) {
        if (h->n >= HCM(c)->max_headers_count) return too_large(p);
        sharp_headers_add(h, at, n, "", 0);
        c->in_value = false;
    } else {
        sharp_headers_append_last_name(h, at, n);
    }
    return 0;
}

static int p_on_header_value(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    c->header_bytes += n;
    if (c->header_bytes > (size_t)HCM(c)->max_request_headers_kb * 1024) return too_large(p);
    if (c->head_done) return 0; /* a trailer */
    /* llhttp 8.1 accepts a header line without a name (": x"); its value
     * would be glued to the previous header. */
    if (c->value_done || c->stream->req.n == 0) return reject(p, 400, "http1.codec_error");
    /* A value comes in one span per read buffer. A second span that does
     * not continue the first where it (and its buffer) ended skipped a line
     * break: obs-fold, which llhttp 8.1 accepts and RFC 9112 lets a server
     * reject with 400, as Envoy's parsers do. */
    if (c->value_spans) {
        bool contiguous = c->value_gen == c->exec_gen ? at == c->value_end
                                                      : c->value_at_buf_end && at == c->exec_begin;
        if (!contiguous) return reject(p, 400, "http1.codec_error");
    }
    /* A fold after an empty first line ("Name:", CRLF, " value") has no
     * span before it, and llhttp starts the span after the fold's
     * whitespace: a line break before that whitespace gives it away.
     * (An empty value gets an empty span after its own line break.) */
    if (n && ends_in_line_break(c->exec_begin, (size_t)(at - c->exec_begin), c->tail_lf_ws))
        return reject(p, 400, "http1.codec_error");
    c->value_spans = true;
    c->value_gen = c->exec_gen;
    c->value_end = at + n;
    c->value_at_buf_end = at + n == c->exec_end;
    c->in_value = true;
    sharp_headers_append_last_value(&c->stream->req, at, n);
    return 0;
}

/* common_http_protocol_options.headers_with_underscores_action, checked
 * once a header is complete as Envoy's HTTP/1 codec does. */
static int p_on_header_value_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    if (c->head_done) return 0; /* a trailer */
    sharp_headers_t *h = &c->stream->req;
    c->in_value = true; /* an empty value gets no on_header_value call */
    c->value_done = true;
    c->value_spans = false;
    if (h->n == 0) return reject(p, 400, "http1.codec_error");
    sharp_str_t name = sharp_headers_name(h, h->n - 1);
    if (name.len == 0) return reject(p, 400, "http1.codec_error");
    /* llhttp's strict mode already refuses control characters in values;
     * checked again here because a value that reaches the filter chain
     * must hold no NUL, CR or LF whatever the parser lets through
     * (Envoy's headerValueIsValid, "http1.invalid_characters"). */
    sharp_str_t value = sharp_headers_value(h, h->n - 1);
    for (size_t i = 0; i < value.len; i++) {
        unsigned char ch = (unsigned char)value.p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return reject(p, 400, "http1.invalid_characters");
    }
    int action = HCM(c)->headers_with_underscores_action;
    if (action == 0) return 0;
    if (!memchr(name.p, '_', name.len)) return 0;
    if (action == 2) { /* DROP_HEADER */
        sharp_counter_inc(STATS(c), HCM(c)->st.http1_dropped_headers_with_underscores);
        h->n--;
        return 0;
    }
    sharp_counter_inc(STATS(c), HCM(c)->st.http1_requests_rejected_with_underscores);
    /* llhttp replaces the reason of a *_complete callback's error */
    c->underscore_rejected = true;
    return HPE_USER;
}

static bool token_is(sharp_str_t v, const char *tok)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t')) v.p++, v.len--;
    while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t')) v.len--;
    return v.len == strlen(tok) && strncasecmp(v.p, tok, v.len) == 0;
}

/* Validation of the whole request head, done before the stream reaches the
 * filter chain: once sharp_hcm_decode_headers runs, the router may already
 * have written the request upstream, so nothing about the head may be
 * refused later. llhttp's only check after on_headers_complete (a request
 * whose Transfer-Encoding does not end in chunked) is a subset of the
 * transfer coding check here. Returns 0 or the response code, with
 * Envoy's response code details in *details. */
static uint32_t h1_validate_head(sharp_conn_t *c, llhttp_t *p, const char **details)
{
    const sharp_headers_t *h = &c->stream->req;
    *details = "http1.codec_error";
    /* llhttp refuses 1.2 and up but takes 0.9 and 2.0 */
    if (p->http_major != 1 || p->http_minor > 1) return 400;
    int host = sharp_headers_find(h, "host", 4, 0);
    if (host >= 0 && sharp_headers_find(h, "host", 4, (uint32_t)host + 1) >= 0) return 400;
    int te = sharp_headers_find(h, "transfer-encoding", 17, 0);
    if (te >= 0 || (p->flags & F_TRANSFER_ENCODING)) {
        if ((p->flags & F_CONTENT_LENGTH) || sharp_headers_find(h, "content-length", 14, 0) >= 0) {
            *details = "http1.content_length_and_chunked_not_allowed";
            return 400;
        }
        /* Envoy supports exactly one coding, chunked, and answers any
         * other (gzip, "gzip, chunked", a second Transfer-Encoding line)
         * with 501 (RFC 9112 section 6.1); a CONNECT has no body to code. */
        *details = "http1.invalid_transfer_encoding";
        if (te < 0 || sharp_headers_find(h, "transfer-encoding", 17, (uint32_t)te + 1) >= 0) return 501;
        if (!token_is(sharp_headers_value(h, (uint32_t)te), "chunked")) return 501;
        if (!(p->flags & F_CHUNKED) || llhttp_get_method(p) == HTTP_CONNECT) return 501;
        *details = "http1.codec_error";
    }
    /* Content-Length is a signed 64-bit count in Envoy (and upstream
     * peers); llhttp takes values up to 2^64 - 1. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)INT64_MAX) return 400;
    return 0;
}

static int p_on_headers_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    sharp_stream_t *s = c->stream;
    const char *details;
    uint32_t code = h1_validate_head(c, p, &details);
    if (code) return reject(p, code, details);
    c->head_done = true;
    c->header_bytes = 0; /* trailers have a limit of their own, as in Envoy */
    if (h1_request_head(c, s, p) != 0 || c->closing || c->shutdown || !c->stream) {
        c->rejected = true;
        llhttp_set_error_reason(p, "stop");
        return HPE_USER;
    }
    return 0;
}

/* Removes an h2c upgrade (Envoy's HTTP/1 codec): Upgrade, HTTP2-Settings
 * and their tokens in Connection; Connection goes when nothing is left. */
static void strip_h2c(sharp_headers_t *h)
{
    sharp_headers_remove_cstr(h, "upgrade");
    sharp_headers_remove_cstr(h, "http2-settings");
    sharp_str_t conn;
    if (!sharp_headers_get_cstr(h, "connection", &conn)) return;
    sharp_sbuf_t out = {0};
    sharp_str_t rest = conn, tok;
    while (sharp_list_next(&rest, &tok)) {
        if ((tok.len == 7 && strncasecmp(tok.p, "upgrade", 7) == 0) ||
            (tok.len == 14 && strncasecmp(tok.p, "http2-settings", 14) == 0))
            continue;
        if (out.len) sharp_sbuf_append(&out, ",", 1);
        sharp_sbuf_append(&out, tok.p, tok.len);
    }
    if (out.len) sharp_headers_set(h, "connection", 10, out.data, out.len);
    else sharp_headers_remove_cstr(h, "connection");
    sharp_sbuf_free(&out);
}

/* Turns the HTTP/1 request line and Host into Envoy's pseudo-headers and
 * hands the stream to the filter chain. Returns -1 when the request was
 * rejected (a local reply is on its way). */
static int h1_request_head(sharp_conn_t *c, sharp_stream_t *s, llhttp_t *p)
{
    const sharp_hcm_config_t *hcm = HCM(c);
    sharp_headers_t *h = &s->req;
    s->info.protocol = p->http_minor == 0 && p->http_major == 1 ? "HTTP/1.0" : "HTTP/1.1";
    const char *method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    s->is_head = strcmp(method, "HEAD") == 0;
    if (llhttp_get_method(p) == HTTP_CONNECT) {
        conn_protocol_error(c, 403, "upgrade not supported");
        return -1;
    }
    /* llhttp's upgrade: "Connection: upgrade" and an Upgrade header, as
     * Envoy's Utility::isUpgrade. An h2c upgrade is not supported: as Envoy's
     * codec, drop its headers and serve the request as HTTP/1.1. */
    if (p->upgrade) {
        sharp_str_t up;
        if (sharp_headers_get_cstr(h, "upgrade", &up) && up.len == 3 && strncasecmp(up.p, "h2c", 3) == 0) {
            strip_h2c(h);
            p->upgrade = 0;
        } else {
            s->upgrade_request = true;
        }
    }
    if (p->http_major == 1 && p->http_minor == 0 && !hcm->accept_http_10) {
        conn_protocol_error(c, 426, "Upgrade Required");
        return -1;
    }
    const char *url = sharp_sbuf_cstr(&c->url);
    size_t ulen = c->url.len;
    const char *path = url;
    size_t plen = ulen;
    sharp_str_t authority = {NULL, 0};
    if (ulen && url[0] != '/' && !(ulen == 1 && url[0] == '*')) {
        /* absolute-form: scheme://authority/path */
        const char *sep = strstr(url, "://");
        if (!sep) {
            conn_protocol_error(c, 400, "Bad Request");
            return -1;
        }
        const char *a = sep + 3;
        const char *slash = strchr(a, '/');
        authority = (sharp_str_t){a, slash ? (size_t)(slash - a) : strlen(a)};
        path = slash ? slash : "/";
        plen = slash ? (size_t)(url + ulen - slash) : 1;
    }
    sharp_str_t host;
    bool has_host = sharp_headers_get_cstr(h, "host", &host);
    char hostbuf[512];
    size_t hlen = 0;
    if (authority.p) {
        hlen = SHARP_MIN(authority.len, sizeof hostbuf);
        memcpy(hostbuf, authority.p, hlen);
    } else if (has_host) {
        hlen = SHARP_MIN(host.len, sizeof hostbuf);
        memcpy(hostbuf, host.p, hlen);
    } else if (p->http_minor == 0 && hcm->default_host_for_http_10) {
        hlen = SHARP_MIN(strlen(hcm->default_host_for_http_10), sizeof hostbuf);
        memcpy(hostbuf, hcm->default_host_for_http_10, hlen);
    } else {
        conn_protocol_error(c, 400, "missing required header: :authority");
        return -1;
    }
    sharp_headers_remove_cstr(h, "host");
    /* pseudo-headers first, as in an HTTP/2 header block */
    uint32_t before = h->n;
    /* `path` points into c->url, not into the header map, so it stays valid
     * while the map grows. */
    sharp_headers_add(h, ":method", 7, method, strlen(method));
    sharp_headers_add(h, ":path", 5, path, plen);
    sharp_headers_add(h, ":authority", 10, hostbuf, hlen);
    sharp_headers_add(h, ":scheme", 7, "http", 4);
    sharp_header_entry_t pseudo[4];
    memcpy(pseudo, &h->e[before], sizeof pseudo);
    memmove(&h->e[4], &h->e[0], before * sizeof pseudo[0]);
    memcpy(&h->e[0], pseudo, sizeof pseudo);

    sharp_str_t expect;
    if (sharp_headers_get_cstr(h, "expect", &expect) && expect.len == 12 &&
        strncasecmp(expect.p, "100-continue", 12) == 0) {
        sharp_headers_remove_cstr(h, "expect");
        if (p->http_minor >= 1) sharp_codec_send_continue(s);
    }
    /* an upgrade request goes on with its payload until the connection ends */
    bool end_stream = !s->upgrade_request && !(p->flags & F_CHUNKED) &&
                      !((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    /* A body-less request is complete with its headers (llhttp reports the
     * message end right after), so a reply given now keeps the connection. */
    if (end_stream) s->request_complete = true;
    if (SHARP_LOG_ON(http, SHARP_LOG_DEBUG)) {
        sharp_sbuf_t d = {0};
        sharp_headers_dump(h, &d);
        sharp_debug(http, "[C%llu][S%llu] request headers complete (end_stream=%s):%s", s->conn_id, s->id,
                    end_stream ? "true" : "false", d.data ? d.data : "");
        sharp_sbuf_free(&d);
    }
    sharp_hcm_decode_headers(s, end_stream, (const struct sockaddr *)&c->remote_ss);
    /* request_timeout waits for a whole request, which an upgrade never
     * completes (Envoy does not apply it to upgrades either) */
    if (s->upgrade_accepted) uv_timer_stop(&s->request_timer);
    return 0;
}

static int p_on_body(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    sharp_stream_t *s = c->stream;
    if (!s || s->destroyed) return 0;
    s->info.bytes_received += n;
    stream_touch(s);
    if (s->response_complete) return 0; /* answered already: discard */
    dec_run_data(s, 0, at, n, false);
    if (c->closing) {
        llhttp_set_error_reason(p, "stop");
        return HPE_USER;
    }
    return 0;
}

static int p_on_message_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    sharp_stream_t *s = c->stream;
    if (!s) return HPE_PAUSED;
    if (s->upgrade_request) {
        /* Envoy's codec swallows the end of an upgrade request: the
         * upgrade payload follows as stream data. A refused upgrade was
         * answered and its connection closes. */
        if (s->upgrade_accepted && !s->response_complete) c->tunnel = true;
        return HPE_PAUSED;
    }
    s->request_complete = true;
    s->info.request_complete_ns = sharp_now_ns();
    uv_timer_stop(&s->request_timer);
    if (!llhttp_should_keep_alive(p)) s->closes_connection = s->saw_connection_close = true;
    if (!s->response_complete) {
        dec_run_data(s, 0, NULL, 0, true);
    }
    if (c->closing) {
        llhttp_set_error_reason(p, "stop");
        return HPE_USER;
    }
    stream_maybe_finish(s);
    return HPE_PAUSED;
}

__attribute__((constructor)) static void init_settings(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = p_on_message_begin;
    settings.on_url = p_on_url;
    settings.on_url_complete = p_on_url_complete;
    settings.on_version_complete = p_on_version_complete;
    settings.on_header_field = p_on_header_field;
    settings.on_header_value = p_on_header_value;
    settings.on_header_value_complete = p_on_header_value_complete;
    settings.on_headers_complete = p_on_headers_complete;
    settings.on_body = p_on_body;
    settings.on_message_complete = p_on_message_complete;
}

/* ------------------------------------------------------------------ */
/* codec: response encoding                                             */

static const struct {
    uint32_t code;
    const char *reason;
} reasons[] = {
    {100, "Continue"}, {101, "Switching Protocols"}, {200, "OK"}, {201, "Created"},
    {202, "Accepted"}, {203, "Non-Authoritative Information"}, {204, "No Content"},
    {205, "Reset Content"}, {206, "Partial Content"}, {300, "Multiple Choices"},
    {301, "Moved Permanently"}, {302, "Found"}, {303, "See Other"}, {304, "Not Modified"},
    {307, "Temporary Redirect"}, {308, "Permanent Redirect"}, {400, "Bad Request"},
    {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"}, {405, "Method Not Allowed"},
    {406, "Not Acceptable"}, {408, "Request Timeout"}, {409, "Conflict"}, {410, "Gone"},
    {411, "Length Required"}, {412, "Precondition Failed"}, {413, "Payload Too Large"},
    {414, "URI Too Long"}, {415, "Unsupported Media Type"}, {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"}, {421, "Misdirected Request"}, {422, "Unprocessable Entity"},
    {426, "Upgrade Required"}, {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"}, {500, "Internal Server Error"},
    {501, "Not Implemented"}, {502, "Bad Gateway"}, {503, "Service Unavailable"},
    {504, "Gateway Timeout"}, {505, "HTTP Version Not Supported"},
};

const char *sharp_h1_reason(uint32_t code)
{
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(reasons); i++)
        if (reasons[i].code == code) return reasons[i].reason;
    return "Unknown";
}

static void conn_write(sharp_conn_t *c, const uv_buf_t *b, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += b[i].len;
    sharp_counter_add(STATS(c), HCM(c)->st.tx_bytes_total, total);
    if (sharp_writer_write(&c->writer, b, n) < 0) return; /* the read side sees the close */
    check_write_watermark(c);
}

void sharp_codec_send_continue(sharp_stream_t *s)
{
    uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
    conn_write(s->conn, &b, 1);
}

static bool is_connection_specific(sharp_str_t n)
{
    return sharp_str_eq(n, "connection", 10) || sharp_str_eq(n, "transfer-encoding", 17) ||
           sharp_str_eq(n, "keep-alive", 10) || sharp_str_eq(n, "proxy-connection", 16) ||
           sharp_str_eq(n, "upgrade", 7);
}

/* Writes the status line and headers and decides the body framing:
 * no body (HEAD, 1xx, 204, 304), content-length as given, chunked for an
 * HTTP/1.1 peer, or delimited by closing the connection for HTTP/1.0. */
void sharp_codec_encode_headers(sharp_stream_t *s, sharp_headers_t *h, bool end_stream)
{
    sharp_conn_t *c = s->conn;
    if (c->closing || s->response_started) return;
    sharp_str_t st = SHARP_STR("200");
    sharp_headers_get_cstr(h, ":status", &st);
    uint32_t code = 0;
    for (size_t i = 0; i < st.len && i < 3; i++) code = code * 10 + (uint32_t)(st.p[i] - '0');
    s->info.response_code = code;
    s->response_started = true;
    /* Envoy's onLocalReply: a 400 means a messaging error, after which an
     * HTTP/1 connection is not trusted with another request. */
    if (s->local_reply && s->local_reply_code == 400) s->closes_connection = s->saw_connection_close = true;
    bool http10 = s->info.protocol && strcmp(s->info.protocol, "HTTP/1.0") == 0;
    bool no_body = s->is_head || code == 204 || code == 304 || (code >= 100 && code < 200);
    /* An accepted upgrade answered 101: its Connection and Upgrade headers
     * go to the client and the bytes that follow are the tunnel's. */
    bool upgrade = s->upgrade_accepted && code == 101 && !end_stream;
    if (upgrade) {
        s->upgraded = true;
        uv_timer_stop(&s->request_timer);
    }
    bool has_cl = sharp_headers_get_cstr(h, "content-length", NULL);
    s->resp_chunked = false;
    s->resp_close_delimited = false;
    if (!no_body && !has_cl) {
        if (end_stream) sharp_headers_add(h, "content-length", 14, "0", 1);
        else if (!http10) s->resp_chunked = true;
        else s->resp_close_delimited = true;
    }
    /* disable_http_keepalive (Envoy's encodeHeaders): this response closes its connection */
    if (!c->close_after_response && !upgrade && !HCM(c)->bypass_overload_manager &&
        sharp_overload_take(SHARP_OL_DISABLE_HTTP_KEEPALIVE, sharp_worker_random(c->worker))) {
        c->close_after_response = true;
        sharp_counter_inc(STATS(c), HCM(c)->st.cx_overload_disable_keepalive);
    }
    if (c->close_after_response || s->resp_close_delimited) s->closes_connection = true;
    sharp_sbuf_t *out = &c->head;
    sharp_sbuf_reset(out);
    char status[8] = {(char)('0' + code / 100 % 10), (char)('0' + code / 10 % 10), (char)('0' + code % 10), ' '};
    sharp_sbuf_append(out, "HTTP/1.1 ", 9);
    sharp_sbuf_append(out, status, 4);
    sharp_sbuf_puts(out, sharp_h1_reason(code));
    sharp_sbuf_append(out, "\r\n", 2);
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        if ((n.len && n.p[0] == ':') ||
            (is_connection_specific(n) &&
             !(upgrade && (sharp_str_eq(n, "connection", 10) || sharp_str_eq(n, "upgrade", 7)))))
            continue;
        sharp_sbuf_append(out, n.p, n.len);
        sharp_sbuf_append(out, ": ", 2);
        sharp_sbuf_append(out, v.p, v.len);
        sharp_sbuf_append(out, "\r\n", 2);
    }
    if (s->resp_chunked) sharp_sbuf_puts(out, "transfer-encoding: chunked\r\n");
    if (upgrade) {
        /* the tunnel ends the connection; the 101 says nothing about it */
        s->closes_connection = true;
    } else if (s->closes_connection || !s->request_complete) {
        /* an early response ends the connection: say so */
        if (!s->request_complete) s->closes_connection = true;
        sharp_sbuf_puts(out, "connection: close\r\n");
    } else if (http10) {
        sharp_sbuf_puts(out, "connection: keep-alive\r\n");
    }
    sharp_sbuf_append(out, "\r\n", 2);
    if (end_stream) {
        uv_buf_t b = uv_buf_init(c->head.data, (unsigned)c->head.len);
        conn_write(c, &b, 1);
        sharp_sbuf_reset(&c->head);
        s->response_complete = true;
        stream_maybe_finish(s);
    } else {
        /* Held back to share one write with the first body bytes; the
         * worker's check handle writes it if none come this loop turn. */
        sharp_dlist_remove(&c->flush_link);
        sharp_dlist_push(&c->worker->flush_list, &c->flush_link);
    }
}

static void conn_flush_head(sharp_conn_t *c)
{
    sharp_dlist_remove(&c->flush_link);
    if (!c->head.len) return;
    uv_buf_t b = uv_buf_init(c->head.data, (unsigned)c->head.len);
    conn_write(c, &b, 1);
    sharp_sbuf_reset(&c->head);
}

void sharp_conn_flush_pending(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->flush_list))
        conn_flush_head(sharp_container_of(w->flush_list.next, sharp_conn_t, flush_link));
}

void sharp_codec_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end_stream)
{
    sharp_conn_t *c = s->conn;
    if (c->closing || !s->response_started || s->response_complete) return;
    stream_touch(s); /* Envoy resets the stream idle timer on response data too */
    uint32_t code = s->info.response_code;
    bool no_body = s->is_head || code == 204 || code == 304;
    if (no_body) n = 0;
    uv_buf_t b[4];
    unsigned nb = 0;
    char head[24];
    bool with_head = c->head.len > 0;
    if (with_head) {
        b[nb++] = uv_buf_init(c->head.data, (unsigned)c->head.len);
        sharp_dlist_remove(&c->flush_link);
    }
    if (n) {
        s->info.bytes_sent += n;
        if (s->resp_chunked) {
            int hl = snprintf(head, sizeof head, "%zx\r\n", n);
            b[nb++] = uv_buf_init(head, (unsigned)hl);
        }
        b[nb++] = uv_buf_init((char *)p, (unsigned)n);
        if (s->resp_chunked) b[nb++] = end_stream ? uv_buf_init("\r\n0\r\n\r\n", 7) : uv_buf_init("\r\n", 2);
    } else if (end_stream && s->resp_chunked) {
        b[nb++] = uv_buf_init("0\r\n\r\n", 5);
    }
    if (nb) conn_write(c, b, nb);
    if (with_head) sharp_sbuf_reset(&c->head);
    if (end_stream) {
        s->response_complete = true;
        stream_maybe_finish(s);
    }
}

void sharp_codec_read_disable(sharp_stream_t *s, bool disable)
{
    sharp_conn_t *c = s->conn;
    c->read_disabled_by_stream = disable;
    conn_update_reading(c);
}

bool sharp_codec_downstream_above_watermark(sharp_stream_t *s)
{
    return s->conn->above_watermark;
}

static void on_stream_reset(uv_timer_t *t)
{
    sharp_stream_t *s = t->data;
    conn_close(s->conn);
}

/* Resets a stream whose response cannot be completed: on HTTP/1 the only
 * way to tell the client is to close the connection. Deferred, like
 * finishing, so the caller's filter state stays valid. */
void sharp_codec_reset(sharp_stream_t *s)
{
    if (s->destroyed || s->finish_scheduled) return;
    s->finish_scheduled = true;
    s->reset_local = true;
    s->closes_connection = true;
    uv_timer_stop(&s->request_timer);
    uv_timer_stop(&s->duration_timer);
    uv_timer_stop(&s->headers_timer);
    uv_timer_start(&s->idle_timer, on_stream_reset, 0, 0);
}

sharp_worker_t *sharp_stream_worker(sharp_stream_t *s)
{
    return s->conn->worker;
}

uint32_t sharp_stream_buffer_limit(sharp_stream_t *s)
{
    return s->conn->listener->buffer_limit;
}

/* conn_manager.c: downstream connections and their streams, whatever the
 * protocol: accept, the socket's reads and writes with their watermark,
 * idle, drain, max duration and delayed-close timers, the overload
 * manager's per-connection actions, and each stream's lifecycle (creation,
 * timers, finish, access logs). The wire protocol is the codec's
 * (conn_internal.h): HTTP/1 in http1_server.c.
 *
 * Memory of a connection is released in its close callback, of a stream
 * once its timers have closed; neither is freed inside a callback that may
 * still touch it (finishing and resets are deferred to the next loop turn). */
#include "http/conn_manager.h"
#include "http/conn_internal.h"
#include "http/access_log_emit.h"
#include "http/tracing.h"
#include "http/grpc.h"
#include "http/metadata.h"
#include "upstream/locality_md.h"
#include "http/tcp_proxy.h"
#include "log.h"
#include "net.h"
#include "overload.h"
#include "small.h"
#include "tls/context.h"
#include "tls/downstream.h"
#include "listener_inspect.h"
#include "proxy_protocol.h"
#include "filters/rbac/filter.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void stream_touch(sharp_stream_t *s);

#define STATS(c) SHARP_CONN_STATS(c)
#define HCM(c) SHARP_CONN_HCM(c)

/* ------------------------------------------------------------------ */
/* connection                                                           */

static void on_conn_handle_closed(uv_handle_t *h)
{
    sharp_conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    if (c->codec) c->codec->release(c);
    sharp_conn_tls_free(c); /* TLS */
    sharp_snapshot_unref(c->snap);
    if (c->listener) sharp_overload_connection_closed(); /* admitted: counted in the global limit */
    atomic_fetch_sub_explicit(&c->worker->active_connections, 1, memory_order_relaxed);
    sharp_writer_release(&c->writer);
    free(c->inspect_buf);
    sharp_tls_inspector_free(&c->tls_inspect);
    free(c->inspected_sni);
    sharp_dynamic_metadata_free(c->conn_metadata);
    sharp_conn_data_free(c);
    free(c);
}

void sharp_conn_close(sharp_conn_t *c)
{
    if (c->closing) return;
    c->closing = true;
    const sharp_listener_config_t *l = c->listener;
    sharp_stats_shard_t *sh = STATS(c);
    bool http = !HCM(c)->tcp_proxy; /* a TCP proxy keeps no HTTP connection stats */
    if (c->tcp_session) sharp_tcp_proxy_end(c);
    if (http) {
        sharp_gauge_add(sh, HCM(c)->st.cx_active, -1);
        if (c->codec == &sharp_http1_server_codec) sharp_gauge_add(sh, HCM(c)->st.cx_http1_active, -1);
        else if (c->codec == &sharp_http2_server_codec) sharp_gauge_add(sh, HCM(c)->st.cx_http2_active, -1);
        sharp_counter_inc(sh, HCM(c)->st.cx_destroy);
    }
    sharp_gauge_add(sh, l->cx_active, -1);
    sharp_counter_inc(sh, l->cx_destroy);
    uint64_t length_ms = (sharp_now_ns() - c->start_ns) / 1000000;
    sharp_histogram_record(sh, l->cx_length_ms, length_ms);
    if (http) sharp_histogram_record(sh, HCM(c)->st.cx_length, length_ms);
    sharp_debug(connection, "[C%llu] closing downstream connection after %llu ms", c->id,
                (unsigned long long)length_ms);
    while (!sharp_dlist_empty(&c->streams)) {
        sharp_stream_t *s = sharp_container_of(c->streams.next, sharp_stream_t, conn_link);
        /* a reset of our own (a timeout, an upstream failure) is not the
         * client going away */
        if (!s->response_complete && !s->reset_local) {
            s->info.response_flags |= SHARP_RF_DOWNSTREAM_CONNECTION_TERMINATION;
            sharp_counter_inc(sh, HCM(c)->st.rq_rx_reset);
        }
        sharp_conn_stream_destroy(s);
    }
    sharp_dlist_remove(&c->link);
    sharp_dlist_remove(&c->flush_link);
    if (c->tls) sharp_conn_tls_close(c); /* TLS: close_notify, best effort */
    uv_timer_stop(&c->idle_timer);
    uv_timer_stop(&c->duration_timer);
    uv_timer_stop(&c->stream_idle_timer);
    uv_close((uv_handle_t *)&c->idle_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->duration_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->stream_idle_timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

/* Closes a connection with no stream (idle timeout, the end of a drain):
 * a codec with a last word says it first (HTTP/2's GOAWAY, as Envoy), then
 * the connection closes once it is written. */
static void conn_close_idle(sharp_conn_t *c)
{
    if (c->codec->goaway) {
        c->codec->goaway(c);
        if (!c->closing) sharp_conn_close_after_write(c, false);
        return;
    }
    sharp_conn_close(c);
}

/* The connection idle timer is not stopped when a stream starts: it comes
 * due at or before the idle deadline (idle_since_ns plus the scaled
 * timeout), does nothing while streams are open (sharp_conn_arm_idle starts
 * it again when the last one ends) and re-arms for what is left when the
 * connection was busy in between. */
static void on_conn_idle(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->nstreams) return;
    uint64_t left = sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, HCM(c)->idle_timeout_ms,
                                                      (sharp_now_ns() - c->idle_since_ns) / 1000000);
    if (left) {
        uv_timer_start(&c->idle_timer, on_conn_idle, left, 0);
        return;
    }
    sharp_debug(connection, "[C%llu] idle timeout", c->id);
    sharp_counter_inc(STATS(c), HCM(c)->st.cx_idle_timeout);
    conn_close_idle(c);
}

static void on_drain_idle(uv_timer_t *t);
static void on_conn_max_duration(uv_timer_t *t);

/* A codec with a GOAWAY (HTTP/2) drains as Envoy's startDrainSequence: the
 * drain timer runs from the start of the drain, streams or not, and neither
 * a new stream nor the end of one moves it; otherwise a client that keeps
 * opening streams after the shutdown notice would hold the connection open
 * for ever. */
static bool drain_timer_pending(sharp_conn_t *c)
{
    return c->codec->goaway && uv_is_active((uv_handle_t *)&c->idle_timer) && c->idle_timer.timer_cb == on_drain_idle;
}

void sharp_conn_arm_idle(sharp_conn_t *c)
{
    if (c->close_after_response && (c->worker->draining || c->duration_draining) && HCM(c)->drain_timeout_ms) {
        if (drain_timer_pending(c)) return;
        uv_timer_start(&c->idle_timer, on_drain_idle, HCM(c)->drain_timeout_ms, 0);
        return;
    }
    uint64_t ms = HCM(c)->idle_timeout_ms;
    if (!ms) return;
    c->idle_since_ns = sharp_now_ns();
    /* still armed from an earlier idle period: due early, it re-arms */
    if (uv_is_active((uv_handle_t *)&c->idle_timer) && c->idle_timer.timer_cb == on_conn_idle) return;
    /* reduce_timeouts may shorten it (and re-arm it as its state changes) */
    uv_timer_start(&c->idle_timer, on_conn_idle,
                   sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, ms, 0), 0);
}

static void on_conn_max_duration(uv_timer_t *t);
static void conn_stream_idle_schedule(sharp_conn_t *c, bool fire);
static void on_conn_stream_idle(uv_timer_t *t);

/* The loop's clock (uv_now, cached once per loop turn) in nanoseconds:
 * what the stream idle timer measures activity with. */
static uint64_t loop_ns(const sharp_stream_t *s)
{
    return uv_now(&s->conn->worker->loop) * 1000000ull;
}

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
        if (c->tcp_session) continue; /* the TCP proxy's timers are not scaled */
        if (uv_is_active((uv_handle_t *)&c->duration_timer) && !c->close_after_response) {
            uint64_t elapsed = (now - c->start_ns) / 1000000;
            uv_timer_start(&c->duration_timer, on_conn_max_duration,
                           sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_MAX,
                                                             HCM(c)->max_connection_duration_ms, elapsed), 0);
        }
        conn_stream_idle_schedule(c, false);
        /* also while streams are open: the lazily kept timer must not come
         * due after the newly scaled deadline */
        if (!uv_is_active((uv_handle_t *)&c->idle_timer) || c->idle_timer.timer_cb != on_conn_idle)
            continue;
        uint64_t elapsed = (now - c->idle_since_ns) / 1000000;
        uv_timer_start(&c->idle_timer, on_conn_idle,
                       sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_IDLE, HCM(c)->idle_timeout_ms,
                                                         elapsed), 0);
    }
}

/* Bytes a stream holds in buffers: the filter chain's, each filter's (the
 * router's body kept for retries and not yet sent, its upstream
 * connection's write queue) and, for a connection that carries this one
 * stream (HTTP/1), the downstream write queue and the codec's buffers.
 * Allocated capacity counts, as Envoy charges its accounts with slice
 * capacity. */
static uint64_t stream_memory(sharp_conn_t *c, sharp_stream_t *s)
{
    uint64_t n = s->dec_buf.cap + s->enc_buf.cap + c->codec->buffered(c, s);
    if (c->nstreams == 1) n += c->writer.queued;
    for (uint32_t i = 0; i < s->nfilters; i++) {
        sharp_filter_t *f = &s->filters[i];
        if (!f->off && f->factory->buffered_bytes) n += f->factory->buffered_bytes(f);
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
    typedef struct { sharp_stream_t *s; uint64_t bytes; } victim_t;
    victim_t *v = NULL;
    size_t nv = 0, cap = 0;
    for (sharp_dlist_t *n = w->connections.next; n != &w->connections; n = n->next) {
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        if (c->closing) continue;
        for (sharp_dlist_t *sn = c->streams.next; sn != &c->streams; sn = sn->next) {
            sharp_stream_t *s = sharp_container_of(sn, sharp_stream_t, conn_link);
            if (s->destroyed || s->finish_scheduled) continue;
            uint64_t bytes = stream_memory(c, s);
            if (sharp_overload_memory_class(bytes) < lowest) continue;
            if (nv == cap) {
                cap = cap ? cap * 2 : 16;
                v = sharp_realloc(v, cap * sizeof *v);
            }
            v[nv++] = (victim_t){s, bytes};
        }
    }
    uint64_t reset = 0;
    while (reset < SHARP_OL_MAX_RESETS_PER_UPDATE && nv) {
        size_t best = 0;
        for (size_t i = 1; i < nv; i++)
            if (v[i].bytes > v[best].bytes) best = i;
        sharp_stream_t *s = v[best].s;
        sharp_log_warn("[C%llu][S%llu] overload: resetting a stream holding %llu bytes of buffers", s->conn_id,
                       s->id, (unsigned long long)v[best].bytes);
        v[best] = v[--nv];
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
    if (!HCM(c)->tcp_proxy) sharp_counter_inc(STATS(c), HCM(c)->st.cx_delayed_close_timeout);
    sharp_conn_close(c);
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
    sharp_conn_close(c);
}

/* Closes once everything written has left (used after "connection: close").
 * With `delay` (Envoy's FlushWriteAndDelay) and a delayed_close_timeout, the
 * socket then stays open, reading and discarding, until the peer closes or
 * the timeout passes: closing a socket with unread bytes in it sends a RST,
 * which can destroy the response before the client has read it. The timer
 * also runs while the flush is pending, so a peer that stops reading does
 * not hold the connection forever. */
void sharp_conn_close_after_write(sharp_conn_t *c, bool delay)
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
    if (c->tls) sharp_conn_tls_shutdown(c); /* TLS: close_notify goes before the FIN */
    if (!c->delayed_close && c->writer.queued == 0 && c->codec == &sharp_http1_server_codec && !c->nstreams) {
        /* HTTP/1 with its last response written: everything is already in
         * the kernel and nothing waits for the peer, so close(2) sends the
         * FIN after those bytes, as Envoy's closeSocket does, without a
         * shutdown(2) and another pass of the loop first. (HTTP/1 closes
         * connections from its callbacks already; the other codecs and the
         * TCP proxy keep the asynchronous path.) */
        c->flushed = true;
        sharp_conn_close(c);
        return;
    }
    uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(req);
        sharp_conn_close(c);
    }
}

static void on_half_shutdown(uv_shutdown_t *req, int status)
{
    sharp_conn_t *c = req->data;
    free(req);
    if (status == UV_ECANCELED || c->closing) return;
    c->half_closed_done = true;
    if (c->peer_eof) sharp_conn_close(c);
}

void sharp_conn_half_close(sharp_conn_t *c)
{
    if (c->closing || c->shutdown || c->half_closed) return;
    c->half_closed = true;
    if (c->tls) sharp_conn_tls_shutdown(c); /* TLS: close_notify goes before the FIN */
    uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_half_shutdown) < 0) {
        free(req);
        sharp_conn_close(c);
    }
}

/* The connection's write queue crossed its watermark: every stream
 * takes it as one source of its response-side pause (the router pauses or
 * resumes its upstream once no other source holds it), or the TCP proxy
 * hears it. */
static void notify_watermark(sharp_conn_t *c, bool above)
{
    if (c->tcp_session) sharp_tcp_proxy_downstream_watermark(c, above);
    for (sharp_dlist_t *n = c->streams.next; n != &c->streams;) {
        sharp_stream_t *s = sharp_container_of(n, sharp_stream_t, conn_link);
        n = n->next;
        if (!s->destroyed) sharp_hcm_downstream_watermark(s, above);
    }
}

static void on_writer_drain(sharp_writer_t *w)
{
    sharp_conn_t *c = sharp_container_of(w, sharp_conn_t, writer);
    if (!c->above_watermark) return;
    c->above_watermark = false;
    notify_watermark(c, false);
    /* a codec that stopped serializing while the queue was full goes on */
    sharp_conn_defer_flush(c);
}

static void on_writer_error(sharp_writer_t *w, int status)
{
    (void)status;
    sharp_conn_t *c = sharp_container_of(w, sharp_conn_t, writer);
    sharp_conn_close(c);
}

static void check_write_watermark(sharp_conn_t *c)
{
    if (c->above_watermark || c->writer.queued <= c->listener->buffer_limit) return;
    c->above_watermark = true;
    notify_watermark(c, true);
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
            if (c->flushed) sharp_conn_close(c);
            else c->peer_closed = true;
        }
        return;
    }
    if (nread > 0 && !c->closing) {
        sharp_counter_add(STATS(c), HCM(c)->st.rx_bytes_total, (uint64_t)nread);
        if (c->tls) sharp_conn_tls_read(c, buf->base, (size_t)nread); /* TLS: plaintext reaches dispatch */
        else if (sharp_conn_net_rbac_allows(c)) c->codec->dispatch(c, buf->base, (size_t)nread);
    } else if (nread < 0 && !c->closing) {
        sharp_conn_remote_closed(c, nread);
    }
}

bool sharp_conn_net_rbac_allows(sharp_conn_t *c)
{
    const sharp_hcm_config_t *h = HCM(c);
    /* after the first data only CONTINUOUS filters look again: no input
     * to build for every read */
    if (!h->nnet_rbac || (c->net_rbac_checked && !h->net_rbac_continuous)) return true;
    bool first = !c->net_rbac_checked;
    c->net_rbac_checked = true;
    const sharp_downstream_tls_info_t *tls = sharp_conn_tls_info(c);
    const struct sockaddr *peer = c->remote_ss.ss_family ? (const struct sockaddr *)&c->remote_ss : NULL;
    const struct sockaddr *direct =
        c->direct_remote_ss.ss_family ? (const struct sockaddr *)&c->direct_remote_ss : peer;
    sharp_rbac_input_t in = {
        .conn_remote = peer,
        .direct_remote = direct,
        .remote = peer,
        .local = c->have_local ? (const struct sockaddr *)&c->local_ss : NULL,
        .sni = tls ? tls->sni : c->inspected_sni,
        .tls = tls != NULL,
        .uri_sans = tls ? (const char *const *)tls->peer_uri_sans : NULL,
        .dns_sans = tls ? (const char *const *)tls->peer_dns_sans : NULL,
        .subject = tls ? tls->peer_subject : NULL,
    };
    /* a TCP proxy connection's metadata is its access log's */
    sharp_stream_info_t *si = sharp_tcp_proxy_info(c);
    in.metadata = si ? si->dynamic_metadata : c->conn_metadata;
    for (uint32_t i = 0; i < h->nnet_rbac; i++) {
        if (sharp_net_rbac_on_data(h->net_rbac[i], STATS(c), &in, si ? &si->dynamic_metadata : NULL, first))
            continue;
        sharp_debug(connection, "[C%llu] closing: denied by the network RBAC filter", c->id);
        sharp_conn_close(c);
        return false;
    }
    return true;
}

void sharp_conn_remote_closed(sharp_conn_t *c, ssize_t err)
{
    if (c->closing) return;
    sharp_debug(connection, "[C%llu] remote close (%s)", c->id, uv_err_name((int)err));
    if (c->codec->peer_closed(c, err)) return;
    if (!c->closing) {
        /* downstream went away mid-stream */
        if (c->nstreams) sharp_counter_inc(STATS(c), HCM(c)->st.cx_destroy_remote);
        sharp_conn_close(c);
    }
}

/* Reading stops while a stream asked for it (backpressure), after a
 * tunnel's half-close, or while the codec holds bytes it cannot parse yet. */
void sharp_conn_update_reading(sharp_conn_t *c)
{
    if (c->closing) return;
    if (c->shutdown) return;
    bool stop = c->read_disabled_by_stream || c->peer_eof || c->codec->read_blocked(c);
    if (stop && !c->read_stopped) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = true;
    } else if (!stop && c->read_stopped) {
        c->read_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
    }
}

/* Installs the connection's codec and counts the connection for it. */
static void start_codec(sharp_conn_t *c, bool http2)
{
    sharp_stats_shard_t *sh = STATS(c);
    if (http2) {
        sharp_http2_server_init(c);
        sharp_counter_inc(sh, HCM(c)->st.cx_http2_total);
        sharp_gauge_add(sh, HCM(c)->st.cx_http2_active, 1);
    } else {
        sharp_http1_server_init(c);
        sharp_counter_inc(sh, HCM(c)->st.cx_http1_total);
        sharp_gauge_add(sh, HCM(c)->st.cx_http1_active, 1);
    }
    sharp_debug(connection, "[C%llu] codec %s", c->id, c->codec->name);
}

/* codec_type AUTO without ALPN: HTTP/2 when the connection starts with
 * the HTTP/2 preface, HTTP/1 as soon as a byte differs. */
static const char h2_preface[24] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void detect_dispatch(sharp_conn_t *c, const char *p, size_t n)
{
    size_t take = SHARP_MIN(n, sizeof c->sniff - c->nsniff);
    memcpy(c->sniff + c->nsniff, p, take);
    c->nsniff = (uint8_t)(c->nsniff + take);
    bool prefix = memcmp(c->sniff, h2_preface, c->nsniff) == 0;
    if (prefix && c->nsniff < sizeof c->sniff) return; /* not decided yet */
    start_codec(c, prefix);
    char first[sizeof c->sniff];
    size_t nfirst = c->nsniff;
    memcpy(first, c->sniff, nfirst);
    c->codec->dispatch(c, first, nfirst);
    if (!c->closing && n > take) c->codec->dispatch(c, p + take, n - take);
}

static bool detect_peer_closed(sharp_conn_t *c, ssize_t err)
{
    (void)c;
    (void)err;
    return false;
}

static bool detect_false(const sharp_conn_t *c)
{
    (void)c;
    return false;
}

static uint64_t detect_buffered(const sharp_conn_t *c, const sharp_stream_t *s)
{
    (void)c;
    (void)s;
    return 0;
}

static void detect_nothing(sharp_conn_t *c)
{
    (void)c;
}

/* No stream exists before the codec is known: only the connection-level
 * entries are ever called. */
static const sharp_server_codec_t detect_codec = {
    .name = "AUTO (undecided)",
    .dispatch = detect_dispatch,
    .peer_closed = detect_peer_closed,
    .busy = detect_false,
    .read_blocked = detect_false,
    .flush = detect_nothing,
    .buffered = detect_buffered,
    .release = detect_nothing,
};

void sharp_conn_select_codec(sharp_conn_t *c, const char *alpn)
{
    if (c->hcm->tcp_proxy) {
        sharp_tcp_proxy_begin(c);
        return;
    }
    switch (c->hcm->codec_type) {
    case SHARP_CODEC_HTTP1:
        start_codec(c, false);
        break;
    case SHARP_CODEC_HTTP2:
        start_codec(c, true);
        break;
    default:
        /* AUTO (Envoy's determineNextProtocol): a negotiated protocol
         * decides, else the first bytes */
        if (alpn && *alpn) start_codec(c, strcmp(alpn, "h2") == 0);
        else c->codec = &detect_codec;
        break;
    }
}

/* A connection that has its filter chain: counted, its timers, its codec
 * (or TLS first). False when it was closed at once (a TLS engine that
 * could not be made). The caller starts reading. */
static bool conn_begin(sharp_conn_t *c, sharp_worker_t *w, const sharp_listener_config_t *l,
                       const sharp_filter_chain_config_t *chain)
{
    c->worker = w;
    c->listener = l;
    c->chain = chain;
    c->hcm = chain->hcm;
    if (!c->snap) { /* an inspected connection has both already */
        c->snap = sharp_snapshot_ref(w->snap);
        atomic_fetch_add_explicit(&w->active_connections, 1, memory_order_relaxed);
    }
    c->id = sharp_log_next_connection_id();
    c->start_ns = sharp_now_ns();
    uv_timer_init(&w->loop, &c->idle_timer);
    uv_timer_init(&w->loop, &c->duration_timer);
    uv_timer_init(&w->loop, &c->stream_idle_timer);
    c->tcp.data = c->idle_timer.data = c->duration_timer.data = c->stream_idle_timer.data = c;
    c->handles_open += 4;
    sharp_dlist_init(&c->link);
    sharp_dlist_init(&c->flush_link);
    sharp_dlist_init(&c->streams);
    sharp_dlist_push(&w->connections, &c->link);
    sharp_writer_init(&c->writer, (uv_stream_t *)&c->tcp, on_writer_drain, on_writer_error);
    if (c->remote_ss.ss_family) sharp_addr_str((struct sockaddr *)&c->remote_ss, c->remote, sizeof c->remote);
    if (c->proxied) sharp_addr_str((struct sockaddr *)&c->direct_remote_ss, c->direct_remote, sizeof c->direct_remote);
    else SHARP_COPY_CSTR(c->direct_remote, c->remote);
    if (c->have_local) sharp_addr_str((struct sockaddr *)&c->local_ss, c->local, sizeof c->local);
    uv_tcp_nodelay(&c->tcp, 1);
    sharp_debug(conn_handler, "[C%llu] new connection from %s on listener '%s'", c->id, c->remote, l->name);
    sharp_stats_shard_t *sh = STATS(c);
    sharp_counter_inc(sh, l->cx_total);
    sharp_gauge_add(sh, l->cx_active, 1);
    sharp_counter_inc(sh, c->hcm->st.cx_total);
    if (!c->hcm->tcp_proxy) sharp_gauge_add(sh, c->hcm->st.cx_active, 1);
    if (w->draining) c->close_after_response = true;
    if (c->hcm->has_max_connection_duration)
        uv_timer_start(&c->duration_timer, on_conn_max_duration,
                       sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_CONNECTION_MAX,
                                                         c->hcm->max_connection_duration_ms, 0), 0);
    if (chain->tls) {
        /* TLS: the codec is chosen once the handshake is done (ALPN) */
        c->codec = &detect_codec;
        /* the chain's current context: a rotated secret applies from the next accept */
        if (!sharp_conn_tls_start(c, sharp_tls_slot_get(chain->tls))) return false;
    } else {
        sharp_conn_select_codec(c, NULL);
    }
    sharp_conn_arm_idle(c);
    /* a chain a listener update removed: accepted before this worker took
     * the update, or after listener filters ran on a removed listener */
    if (atomic_load_explicit(&((sharp_filter_chain_config_t *)chain)->drain_state, memory_order_acquire) !=
        SHARP_DRAIN_NONE)
        sharp_conn_start_drain(c);
    return true;
}

/* ---- listener filters: the TLS and HTTP inspectors ---- */

/* Closes a connection that never got a filter chain (nothing counted but
 * the listener's no_filter_chain_match or pre-connection stats). */
static void inspect_close(sharp_conn_t *c)
{
    if (c->inspecting) {
        c->inspecting = false;
        sharp_dlist_remove(&c->link);
        sharp_gauge_add(c->worker->stats, c->listener->pre_cx_active, -1);
        uv_timer_stop(&c->inspect_timer);
        uv_close((uv_handle_t *)&c->inspect_timer, on_conn_handle_closed);
    }
    c->handles_open++; /* the socket: conn_begin would have counted it */
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

/* Envoy's sanitizeUtf8String for a TLV's value as a metadata string:
 * every byte that does not belong to a valid UTF-8 sequence becomes '!'. */
static char *utf8_sanitized(const uint8_t *p, size_t n)
{
    char *out = sharp_calloc(1, n + 1);
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x80 ? 1 : (p[i] & 0xe0) == 0xc0 ? 2 : (p[i] & 0xf0) == 0xe0 ? 3 : (p[i] & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = k && i + k <= n && !(k == 2 && p[i] < 0xc2) && !(k == 4 && p[i] > 0xf4);
        for (size_t j = 1; ok && j < k; j++) ok = (p[i + j] & 0xc0) == 0x80;
        if (ok && k == 3) ok = !(p[i] == 0xe0 && p[i + 1] < 0xa0) && !(p[i] == 0xed && p[i + 1] >= 0xa0);
        if (ok && k == 4) ok = !(p[i] == 0xf0 && p[i + 1] < 0x90) && !(p[i] == 0xf4 && p[i + 1] >= 0x90);
        if (!ok) k = 1;
        for (size_t j = 0; j < k; j++) out[i + j] = ok ? (char)p[i + j] : '!';
        i += k;
    }
    out[n] = 0;
    return out;
}

/* The PROXY protocol filter over the bytes read so far (Envoy's
 * Filter::onData). True once it is done: the header is dropped from the
 * bytes and the connection has its addresses. False while it waits for
 * more, or when it closed the connection (a malformed header, none where
 * one is required, a disallowed version). `final` (the timeout with
 * continue_on_listener_filters_timeout) gives up on an incomplete header:
 * the connection goes on with its own addresses and all its bytes. */
static bool pp_run(sharp_conn_t *c, bool final)
{
    const sharp_listener_config_t *l = c->listener;
    sharp_stats_shard_t *sh = c->worker->stats;
    sharp_pp_header_t h;
    sharp_pp_result_t r = sharp_pp_parse(c->inspect_buf, c->inspect_len, &l->pp_opts, &h);
    int v = h.version - 1;
    switch (r) {
    case SHARP_PP_NEED_MORE:
        if (!final) return false;
        c->pp_done = true;
        return true;
    case SHARP_PP_DENIED:
        sharp_counter_inc(sh, l->pp_stats.found[v]);
        sharp_counter_inc(sh, l->pp_stats.disallowed[v]);
        sharp_debug(conn_handler, "closing a connection on listener '%s': PROXY protocol v%d is disallowed", l->name,
                    h.version);
        inspect_close(c);
        return false;
    case SHARP_PP_ERROR:
        sharp_counter_inc(sh, v >= 0 ? l->pp_stats.error[v] : l->pp_stats.not_found_disallowed);
        sharp_counter_inc(sh, l->pp_stats.cx_error);
        sharp_debug(conn_handler, "closing a connection on listener '%s': %s", l->name,
                    v >= 0 ? "malformed PROXY protocol header" : "no PROXY protocol header");
        inspect_close(c);
        return false;
    case SHARP_PP_DONE:
        break;
    }
    c->pp_done = true;
    if (v < 0) {
        sharp_counter_inc(sh, l->pp_stats.not_found_allowed);
        return true;
    }
    sharp_counter_inc(sh, l->pp_stats.found[v]);
    if (!h.local) {
        /* Envoy's setRemoteAddress, and restoreLocalAddress when the
         * destination differs from the socket's own address */
        c->remote_ss = h.src;
        c->proxied = true;
        if (!c->have_local || !sharp_addr_equal(&c->local_ss, &h.dst)) {
            c->local_ss = h.dst;
            c->have_local = true;
            c->local_restored = true;
        }
        size_t at = 0;
        sharp_pp_tlv_t t;
        while (l->npp_rules && sharp_pp_tlv_next(&h, &at, &t)) {
            /* one rule per type: the last one configured (Envoy's map) */
            const struct sharp_pp_rule *rule = NULL;
            for (uint32_t i = 0; i < l->npp_rules; i++)
                if (l->pp_rules[i].tlv_type == t.type) rule = &l->pp_rules[i];
            if (!rule) continue;
            char *val = utf8_sanitized(t.value, t.len);
            sharp_md_value_t mv = {0};
            sharp_md_value_string(&mv, val, t.len);
            free(val);
            sharp_dynamic_metadata_set(&c->conn_metadata, rule->ns, strlen(rule->ns), rule->key, strlen(rule->key),
                                       &mv);
        }
    }
    sharp_debug(conn_handler, "listener '%s': PROXY protocol v%d header of %zu bytes%s", l->name, h.version, h.len,
                h.local ? " (LOCAL: the connection's own addresses)" : "");
    memmove(c->inspect_buf, c->inspect_buf + h.len, c->inspect_len - h.len);
    c->inspect_len -= h.len;
    return true;
}

/* Runs the listener filters over what has been read: the PROXY protocol
 * first, then the inspectors over the bytes after its header; `final` (the
 * timeout with continue_on_listener_filters_timeout, or the peer's end)
 * takes what is known. Chooses the chain once all are done and replays
 * the bytes. */
static void inspect_run(sharp_conn_t *c, bool final)
{
    const sharp_listener_config_t *l = c->listener;
    sharp_stats_shard_t *sh = c->worker->stats;
    if (l->proxy_protocol && !c->pp_done && !pp_run(c, final)) return;
    /* the inspectors need bytes of the payload to say anything */
    if ((l->inspect_tls || l->inspect_http) && !c->inspect_len && !final) return;
    const char *transport = "raw_buffer";
    sharp_client_hello_t hello;
    const char *alpn[SHARP_INSPECT_MAX_ALPN];
    uint32_t nalpn = 0;
    const char *sni = "";
    if (l->inspect_tls) {
        switch (sharp_tls_inspector_feed(&c->tls_inspect, c->inspect_buf, c->inspect_len, &hello)) {
        case SHARP_INSPECT_NEED_MORE:
            if (!final) return;
            sharp_counter_inc(sh, l->tls_inspector.tls_not_found);
            break;
        case SHARP_INSPECT_TOO_LARGE:
            sharp_counter_inc(sh, l->tls_inspector.client_hello_too_large);
            sharp_debug(conn_handler, "closing a connection on listener '%s': ClientHello too large", l->name);
            inspect_close(c);
            return;
        case SHARP_INSPECT_NOT_FOUND:
            sharp_counter_inc(sh, l->tls_inspector.tls_not_found);
            break;
        case SHARP_INSPECT_FOUND:
            transport = "tls";
            sni = hello.server_name;
            sharp_counter_inc(sh, l->tls_inspector.tls_found);
            sharp_counter_inc(sh, sni[0] ? l->tls_inspector.sni_found : l->tls_inspector.sni_not_found);
            sharp_counter_inc(sh, hello.nalpn ? l->tls_inspector.alpn_found : l->tls_inspector.alpn_not_found);
            for (uint32_t i = 0; i < hello.nalpn; i++) alpn[nalpn++] = hello.alpn[i];
            break;
        }
    }
    /* the HTTP inspector looks at plaintext only (Envoy's skips a
     * connection whose transport protocol another filter has set) */
    if (l->inspect_http && strcmp(transport, "tls") != 0) {
        const char *proto = NULL;
        switch (sharp_inspect_http(c->inspect_buf, c->inspect_len, &proto)) {
        case SHARP_INSPECT_NEED_MORE:
            if (!final) return;
            /* fall through */
        case SHARP_INSPECT_NOT_FOUND:
        case SHARP_INSPECT_TOO_LARGE:
            sharp_counter_inc(sh, l->http_inspector.http_not_found);
            break;
        case SHARP_INSPECT_FOUND:
            alpn[nalpn++] = proto;
            sharp_counter_inc(sh, proto[0] == 'h' && proto[1] == '2' ? l->http_inspector.http2_found
                                  : strcmp(proto, "http/1.0") == 0 ? l->http_inspector.http10_found
                                                                   : l->http_inspector.http11_found);
            break;
        }
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    const sharp_filter_chain_config_t *chain = sharp_listener_select_chain_inspected(
        l, c->have_local ? (struct sockaddr *)&c->local_ss : NULL,
        c->remote_ss.ss_family ? (struct sockaddr *)&c->remote_ss : NULL,
        c->direct_remote_ss.ss_family ? (struct sockaddr *)&c->direct_remote_ss : NULL, sni, transport, alpn, nalpn);
    if (!chain) {
        sharp_counter_inc(sh, l->no_filter_chain_match);
        sharp_debug(conn_handler, "closing a connection on listener '%s': no filter chain matches it", l->name);
        inspect_close(c);
        return;
    }
    c->inspecting = false;
    sharp_dlist_remove(&c->link);
    sharp_gauge_add(sh, l->pre_cx_active, -1);
    uv_timer_stop(&c->inspect_timer);
    uv_close((uv_handle_t *)&c->inspect_timer, on_conn_handle_closed); /* counted in handles_open */
    /* a TCP proxy passing TLS through logs the server name the TLS
     * inspector found (%REQUESTED_SERVER_NAME%, as Envoy) */
    if (sni[0] && chain->hcm->tcp_proxy && !chain->tls) c->inspected_sni = sharp_strdup(sni);
    if (!conn_begin(c, c->worker, l, chain)) return;
    /* a TCP proxy reads nothing before its upstream is there (read_stopped) */
    if (!c->read_stopped) uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
    /* the bytes the inspectors read go first, as a read would give them */
    uint8_t *buf = c->inspect_buf;
    size_t n = c->inspect_len;
    c->inspect_buf = NULL;
    c->inspect_len = c->inspect_cap = 0;
    sharp_tls_inspector_free(&c->tls_inspect);
    if (n && !c->closing) {
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
        on_read((uv_stream_t *)&c->tcp, (ssize_t)n, &b);
    }
    free(buf);
}

static void on_inspect_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sharp_conn_t *c = st->data;
    if (!c->inspecting) return;
    if (nread < 0) {
        /* the peer went away before the filters were done: Envoy closes */
        inspect_close(c);
        return;
    }
    if (nread == 0) return;
    /* room for the largest PROXY protocol header and, after it, the
     * largest ClientHello the TLS inspector reads: once it is filled the
     * filters take what they have. A read is kept whole (the bytes go to
     * the filter chain after the filters), so this bounds the buffer to
     * the room and one read. */
    size_t room = (c->listener->proxy_protocol ? SHARP_PP_V2_MAX : 0) + SHARP_INSPECT_MAX_BYTES + 16 * 1024;
    if (c->inspect_len + (size_t)nread > c->inspect_cap) {
        /* grown by doubling: a peer sending a byte at a time costs no
         * copy of all it sent per read */
        size_t cap = c->inspect_cap ? c->inspect_cap : 4096;
        while (cap < c->inspect_len + (size_t)nread) cap *= 2;
        c->inspect_buf = sharp_realloc(c->inspect_buf, cap);
        c->inspect_cap = cap;
    }
    memcpy(c->inspect_buf + c->inspect_len, buf->base, (size_t)nread);
    c->inspect_len += (size_t)nread;
    inspect_run(c, c->inspect_len >= room);
}

/* listener_filters_timeout: Envoy closes the socket (downstream_pre_cx_timeout),
 * or with continue_on_listener_filters_timeout chooses the chain from what
 * the filters found so far. */
static void on_inspect_timeout(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (!c->inspecting) return;
    sharp_counter_inc(c->worker->stats, c->listener->pre_cx_timeout);
    if (!c->listener->continue_on_listener_filters_timeout) {
        sharp_debug(conn_handler, "closing a connection on listener '%s': listener filters timed out",
                    c->listener->name);
        inspect_close(c);
        return;
    }
    inspect_run(c, true);
}

static void inspect_start(sharp_conn_t *c, sharp_worker_t *w, const sharp_listener_config_t *l)
{
    c->worker = w;
    c->listener = l; /* admitted: released from the global limit when closed */
    c->snap = sharp_snapshot_ref(w->snap);
    atomic_fetch_add_explicit(&w->active_connections, 1, memory_order_relaxed);
    sharp_dlist_init(&c->flush_link);
    c->tcp.data = c;
    uv_timer_init(&w->loop, &c->inspect_timer);
    c->inspect_timer.data = c;
    c->handles_open = 1; /* the timer; the socket is counted by conn_begin or inspect_close */
    c->inspecting = true;
    sharp_dlist_push(&w->inspecting, &c->link);
    sharp_gauge_add(w->stats, l->pre_cx_active, 1);
    if (l->listener_filters_timeout_ms)
        uv_timer_start(&c->inspect_timer, on_inspect_timeout, l->listener_filters_timeout_ms, 0);
    uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_inspect_read);
}
void sharp_conn_accept(sharp_worker_t *w, const sharp_listener_config_t *l, sharp_listen_entry_t *e, int fd,
                       const struct sockaddr_storage *accepted_peer)
{
    sharp_conn_t *c = sharp_calloc(1, sizeof *c);
    uv_tcp_init(&w->loop, &c->tcp);
    int arc = fd < 0 ? uv_accept(&e->h.stream, (uv_stream_t *)&c->tcp) : uv_tcp_open(&c->tcp, fd);
    if (arc < 0 && fd >= 0) close(fd); /* not the handle's */
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
    /* the filter chain: from the addresses alone, before anything is
     * counted or read, unless listener filters read the first bytes */
    struct sockaddr_storage local = {0}, peer = {0};
    int llen = sizeof local;
    bool have_local;
    if (e->fixed_local && !l->original_dst) {
        local = e->local;
        have_local = true;
    } else {
        have_local = uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &llen) == 0;
    }
    bool have_peer;
    if (accepted_peer && accepted_peer->ss_family != AF_UNSPEC) {
        peer = *accepted_peer;
        have_peer = true;
    } else {
        have_peer = sharp_stream_peer(&c->tcp, &peer) == 0;
    }
    if (l->sock_flags & SHARP_SOCK_V4COMPAT) {
        /* an IPv4 client of an ipv4_compat listener is its IPv4 address */
        sharp_addr_unmap_v4(&local);
        sharp_addr_unmap_v4(&peer);
    }
    if (have_peer) c->remote_ss = c->direct_remote_ss = peer;
    /* the original_dst listener filter: the address before an iptables
     * REDIRECT becomes the connection's local address; with
     * use_original_dst the listener bound to it takes the connection */
    uv_os_fd_t sock = -1;
    if (have_local && l->original_dst && uv_fileno((uv_handle_t *)&c->tcp, &sock) == 0 &&
        sharp_original_dst(sock, &local, &local) == 0) {
        c->local_restored = true;
        if (l->use_original_dst) {
            const sharp_listener_config_t *to = sharp_worker_listener_for(w, &local);
            if (to && to != l) {
                sharp_debug(conn_handler, "listener '%s': handing a connection to %s over to listener '%s'",
                            l->name, to->address, to->name);
                l = to;
            }
        }
    }
    if (have_local) c->local_ss = local;
    c->have_local = have_local;
    if (l->inspect_tls || l->inspect_http || l->proxy_protocol) {
        inspect_start(c, w, l);
        return;
    }
    const sharp_filter_chain_config_t *chain = sharp_listener_select_chain(
        l, have_local ? (struct sockaddr *)&local : NULL, have_peer ? (struct sockaddr *)&peer : NULL);
    if (!chain) {
        sharp_counter_inc(w->stats, l->no_filter_chain_match);
        sharp_debug(conn_handler, "closing a connection on listener '%s': no filter chain matches it", l->name);
        c->tcp.data = c;
        c->handles_open = 1;
        sharp_dlist_init(&c->flush_link);
        c->worker = w;
        c->listener = l; /* admitted: released from the global limit when closed */
        c->snap = sharp_snapshot_ref(w->snap);
        atomic_fetch_add_explicit(&w->active_connections, 1, memory_order_relaxed);
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
        return;
    }
    if (!conn_begin(c, w, l, chain)) return;
    /* a TCP proxy reads nothing before its upstream is there (read_stopped) */
    if (!c->read_stopped) uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
}

static void on_drain_idle(uv_timer_t *t)
{
    sharp_conn_t *c = t->data;
    if (c->nstreams || c->codec->busy(c)) {
        /* Envoy's onDrainTimeout: the final GOAWAY now, the codec closes the
         * connection once its streams end */
        if (c->codec->goaway) c->codec->goaway(c);
        return;
    }
    /* a server drain counts downstream_cx_drain_close; a max duration drain
     * was counted as downstream_cx_max_duration_reached */
    if (!c->duration_draining) sharp_counter_inc(STATS(c), HCM(c)->st.cx_drain_close);
    conn_close_idle(c);
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
    if (c->codec->drain) c->codec->drain(c);
    if (HCM(c)->http1_safe_max_connection_duration && c->codec == &sharp_http1_server_codec) return;
    c->duration_draining = true;
    if ((!c->nstreams && !c->codec->busy(c)) || c->codec->goaway) {
        uint64_t ms = HCM(c)->drain_timeout_ms;
        if (ms == 0) on_drain_idle(&c->idle_timer);
        else uv_timer_start(&c->idle_timer, on_drain_idle, ms, 0);
    }
}

/* Envoy's startDrainSequence for one connection, as disable_http_keepalive
 * starts it over HTTP/2: the codec's shutdown notice, then the drain timer;
 * counted as downstream_cx_drain_close when it starts, as Envoy does. */
void sharp_conn_start_drain(sharp_conn_t *c)
{
    if (c->close_after_response || c->closing || c->shutdown) return;
    c->close_after_response = true;
    c->duration_draining = true; /* counted now, not again at the close */
    if (!HCM(c)->tcp_proxy) sharp_counter_inc(STATS(c), HCM(c)->st.cx_drain_close);
    if (c->codec->drain) c->codec->drain(c);
    uint64_t ms = HCM(c)->drain_timeout_ms;
    if (ms == 0) on_drain_idle(&c->idle_timer);
    else uv_timer_start(&c->idle_timer, on_drain_idle, ms, 0);
}

/* Drain, as Envoy does for HTTP/1: every further response carries
 * "connection: close" and its connection closes after it; a connection that
 * stays idle for the HCM's drain_timeout is closed. Closing idle connections
 * at once would race with clients that are just sending their next request. */
void sharp_conn_drain_all(sharp_worker_t *w)
{
    /* sockets still in their listener filters belong to the listener that
     * is going away (Envoy closes them with it) */
    while (!sharp_dlist_empty(&w->inspecting))
        inspect_close(sharp_container_of(w->inspecting.next, sharp_conn_t, link));
    sharp_dlist_t *n = w->connections.next;
    while (n != &w->connections) {
        sharp_dlist_t *next = n->next;
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        c->close_after_response = true;
        if (c->codec->drain && !c->shutdown) c->codec->drain(c);
        if (((!c->nstreams && !c->codec->busy(c)) || c->codec->goaway) && !c->shutdown) {
            uint64_t ms = HCM(c)->drain_timeout_ms;
            if (ms == 0) on_drain_idle(&c->idle_timer);
            else uv_timer_start(&c->idle_timer, on_drain_idle, ms, 0);
        }
        n = next;
    }
}

void sharp_conn_drain_listeners(sharp_worker_t *w)
{
    sharp_dlist_t *n = w->inspecting.next;
    while (n != &w->inspecting) {
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        n = n->next;
        if (atomic_load_explicit(&((sharp_listener_config_t *)c->listener)->drain_state, memory_order_acquire) ==
            SHARP_DRAIN_CLOSING)
            inspect_close(c);
    }
    n = w->connections.next;
    while (n != &w->connections) {
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        n = n->next;
        uint8_t st = atomic_load_explicit(&((sharp_filter_chain_config_t *)c->chain)->drain_state,
                                          memory_order_acquire);
        if (st == SHARP_DRAIN_CLOSING) {
            /* the drain time is over (Envoy removes the listener or chain
             * from the worker, closing what is left) */
            sharp_debug(connection, "[C%llu] closing: its listener's drain time is over", c->id);
            sharp_conn_close(c);
        } else if (st == SHARP_DRAIN_DRAINING) {
            sharp_conn_start_drain(c);
        }
    }
}

void sharp_conn_tcp_proxy_check_hosts(sharp_worker_t *w)
{
    sharp_dlist_t *n = w->connections.next;
    while (n != &w->connections) {
        sharp_conn_t *c = sharp_container_of(n, sharp_conn_t, link);
        n = n->next;
        if (c->tcp_session) sharp_tcp_proxy_check_host(c);
    }
}

void sharp_conn_close_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->inspecting))
        inspect_close(sharp_container_of(w->inspecting.next, sharp_conn_t, link));
    while (!sharp_dlist_empty(&w->connections))
        sharp_conn_close(sharp_container_of(w->connections.next, sharp_conn_t, link));
}
/* ------------------------------------------------------------------ */
/* stream lifecycle                                                     */

static void on_stream_timer_closed(uv_handle_t *h)
{
    sharp_stream_t *s = h->data;
    if (--s->timers_open > 0) return;
    sharp_small_free(s);
}

/* stream_idle_timeout reached (Envoy's onIdleTimeout): a 408 while no
 * response has started, a reset after. */
static void stream_idle_expired(sharp_stream_t *s)
{
    s->idle_expired = true;
    sharp_counter_inc(STATS(s->conn), s->hcm->st.rq_idle_timeout);
    if (!s->response_started && s->nfilters) {
        s->closes_connection = true;
        sharp_stream_send_local_reply(&s->filters[0], 408, "stream timeout",
                                      SHARP_RF_STREAM_IDLE_TIMEOUT, "stream_idle_timeout");
    } else {
        sharp_stream_reset(s, SHARP_RF_STREAM_IDLE_TIMEOUT);
    }
}

/* Arms the connection's stream idle timer to come due in `ms` at the
 * latest. */
static void conn_stream_idle_arm(sharp_conn_t *c, uint64_t ms)
{
    uint64_t due = uv_now(&c->worker->loop) + ms;
    if (uv_is_active((uv_handle_t *)&c->stream_idle_timer) && c->stream_idle_due <= due) return;
    c->stream_idle_due = due;
    uv_timer_start(&c->stream_idle_timer, on_conn_stream_idle, ms, 0);
}

/* Walks the connection's streams: with `fire`, those whose idle deadline
 * (last activity plus the timeout scaled by reduce_timeouts) has passed
 * time out; the timer is then due at the earliest deadline left. Activity
 * only moves a stream's idle_since_ns: the timer comes due early and goes
 * on for what is left. */
static void conn_stream_idle_schedule(sharp_conn_t *c, bool fire)
{
    uint64_t now = uv_now(&c->worker->loop) * 1000000ull, next = UINT64_MAX;
    sharp_stream_t *due_one = NULL, **due = NULL;
    size_t ndue = 0, cap = 0;
    for (sharp_dlist_t *n = c->streams.next; n != &c->streams; n = n->next) {
        sharp_stream_t *s = sharp_container_of(n, sharp_stream_t, conn_link);
        if (s->destroyed || s->finish_scheduled || !s->idle_timeout_ms || s->idle_expired) continue;
        uint64_t elapsed = now > s->idle_since_ns ? (now - s->idle_since_ns) / 1000000 : 0;
        uint64_t left = sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_STREAM_IDLE, s->idle_timeout_ms, elapsed);
        if (left || !fire) {
            next = SHARP_MIN(next, left);
            continue;
        }
        /* timed out: collected first, as a timeout may change the list */
        if (!due_one) {
            due_one = s;
            continue;
        }
        if (ndue == cap) {
            cap = cap ? cap * 2 : 8;
            due = sharp_realloc(due, cap * sizeof *due);
        }
        due[ndue++] = s;
    }
    uv_timer_stop(&c->stream_idle_timer);
    if (next != UINT64_MAX) conn_stream_idle_arm(c, next);
    /* stream memory outlives this callback (freed by a close callback) */
    for (size_t i = 0; due_one && i <= ndue && !c->closing; i++) {
        sharp_stream_t *s = i == 0 ? due_one : due[i - 1];
        if (!s->destroyed && !s->finish_scheduled) stream_idle_expired(s);
    }
    free(due);
}

static void on_conn_stream_idle(uv_timer_t *t)
{
    conn_stream_idle_schedule(t->data, true);
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
        /* a gRPC client gets DEADLINE_EXCEEDED, as Envoy's local reply sets it */
        static const char *const grpc_deadline[] = {"grpc-status", "4", NULL};
        sharp_stream_send_local_reply_ex(&s->filters[0], s->request_complete ? 504 : 408,
                                         "downstream duration timeout", 0, "max_duration_timeout",
                                         sharp_grpc_is_request(&s->req) ? grpc_deadline : NULL);
    } else {
        s->info.response_code_details = "max_duration_timeout";
        sharp_stream_reset(s, 0);
    }
}

/* (Re)starts the stream's idle timeout for the whole timeout from now (or
 * takes the stream out of it when the timeout is 0): at the stream's start
 * and when the route changes the timeout. */
static void stream_rearm_idle(sharp_stream_t *s)
{
    if (s->destroyed || s->finish_scheduled || !s->idle_timeout_ms) return;
    s->idle_since_ns = loop_ns(s);
    s->idle_expired = false;
    conn_stream_idle_arm(s->conn, sharp_overload_timer_remaining_ms(SHARP_OL_TIMER_STREAM_IDLE, s->idle_timeout_ms, 0));
}

/* Activity on the stream (a body chunk either way): only the time is
 * noted; the connection's timer, when it comes due, re-arms itself for
 * what is left. Re-arming on every chunk would cost two timer heap
 * operations per read and write. */
static void stream_touch(sharp_stream_t *s)
{
    if (s->destroyed || s->finish_scheduled || !s->idle_timeout_ms) return;
    s->idle_since_ns = loop_ns(s);
    if (s->idle_expired || !uv_is_active((uv_handle_t *)&s->conn->stream_idle_timer)) stream_rearm_idle(s);
}

void sharp_codec_touch(sharp_stream_t *s)
{
    stream_rearm_idle(s);
}

void sharp_conn_stream_touch(sharp_stream_t *s)
{
    stream_touch(s);
}

static void stream_timer_init(sharp_stream_t *s, uv_timer_t *t)
{
    uv_timer_init(&s->conn->worker->loop, t);
    t->data = s;
    s->timers_open++;
}

sharp_stream_t *sharp_conn_stream_create(sharp_conn_t *c)
{
    const sharp_hcm_config_t *hcm = HCM(c);
    size_t state_bytes = 0;
    for (uint32_t i = 0; i < hcm->nfilters; i++)
        state_bytes += (hcm->filters[i].factory->state_size + 15) & ~(size_t)15;
    size_t fbytes = hcm->nfilters * sizeof(sharp_filter_t);
    sharp_stream_t *s = sharp_small_calloc(1, sizeof *s + fbytes + state_bytes + 16);
    s->conn = c;
    sharp_dlist_push(&c->streams, &s->conn_link);
    c->nstreams++;
    /* a connection with a stream is not idle (Envoy disables its idle
     * timer on a new stream; frames without one, an HTTP/2 PING or
     * WINDOW_UPDATE, do not count as activity): the idle timeout's timer
     * stays armed and ignores a connection with streams (on_conn_idle), an
     * HTTP/2 drain timer keeps running (drain_timer_pending); the others
     * (an HTTP/1 drain, delayed close) stop */
    if (c->idle_timer.timer_cb != on_conn_idle && !drain_timer_pending(c)) uv_timer_stop(&c->idle_timer);
    s->conn_id = c->id;
    s->id = sharp_log_next_stream_id();
    sharp_debug(http, "[C%llu][S%llu] new stream", s->conn_id, s->id);
    /* The connection's reference: the connection keeps its snapshot for its
     * whole life and outlives every use of its streams' (nothing reads
     * s->snap once the stream is destroyed), so a stream takes no
     * reference of its own (an atomic add and subtract per request). */
    s->snap = c->snap;
    s->hcm = hcm;
    s->view = c->worker->view;
    if (s->view) s->view->refs++;
    s->nfilters = hcm->nfilters;
    s->filters = (sharp_filter_t *)(s + 1);
    char *state = (char *)(s->filters + hcm->nfilters);
    state = (char *)(((uintptr_t)state + 15) & ~(uintptr_t)15);
    for (uint32_t i = 0; i < hcm->nfilters; i++) {
        sharp_filter_t *f = &s->filters[i];
        f->factory = hcm->filters[i].factory;
        f->config = hcm->filters[i].config;
        f->name = hcm->filters[i].name;
        f->off = hcm->filters[i].disabled;
        f->stream = s;
        f->index = i;
        f->state = state;
        state += (f->factory->state_size + 15) & ~(size_t)15;
    }
    s->dec_data_stop = -1;
    s->enc_next = (int32_t)hcm->nfilters - 1;
    /* Envoy's addCallbacksHelper: a stream of a connection above its write
     * watermark starts paused */
    if (c->above_watermark) sharp_hcm_stream_begin_above(s);
    sharp_headers_init(&s->req);
    sharp_headers_init(&s->resp);
    sharp_headers_init(&s->req_trailers);
    sharp_headers_init(&s->resp_trailers);
    s->info.start_wall_us = sharp_wall_us();
    s->info.start_ns = sharp_now_ns();
    s->info.request_headers = &s->req;
    SHARP_COPY_CSTR(s->info.downstream_remote_address, c->remote);
    SHARP_COPY_CSTR(s->info.downstream_direct_remote_address, c->direct_remote);
    SHARP_COPY_CSTR(s->info.downstream_local_address, c->local);
    s->info.downstream_tls = sharp_conn_tls_info(c); /* TLS */
    /* The defer timer always exists (it defers finishing and resets, and
     * its close frees the stream); the others only when configured: a
     * stream pays for the timers it uses. An unused one stays zeroed,
     * which uv_timer_stop and uv_is_active take as inactive. */
    uv_timer_init(&c->worker->loop, &s->defer_timer);
    s->defer_timer.data = s;
    s->timers_open = 1;
    if (hcm->request_timeout_ms) stream_timer_init(s, &s->request_timer);
    if (hcm->max_stream_duration_ms) stream_timer_init(s, &s->duration_timer);
    if (hcm->request_headers_timeout_ms) stream_timer_init(s, &s->headers_timer);
    s->idle_timeout_ms = hcm->stream_idle_timeout_ms;
    sharp_stats_shard_t *sh = STATS(c);
    sharp_counter_inc(sh, hcm->st.rq_total);
    sharp_counter_inc(sh, c->codec == &sharp_http2_server_codec ? hcm->st.rq_http2_total : hcm->st.rq_http1_total);
    sharp_gauge_add(sh, hcm->st.rq_active, 1);
    stream_rearm_idle(s);
    if (hcm->request_timeout_ms) uv_timer_start(&s->request_timer, on_request_timeout, hcm->request_timeout_ms, 0);
    if (hcm->max_stream_duration_ms)
        uv_timer_start(&s->duration_timer, on_stream_max_duration, hcm->max_stream_duration_ms, 0);
    if (hcm->request_headers_timeout_ms)
        uv_timer_start(&s->headers_timer, on_request_headers_timeout, hcm->request_headers_timeout_ms, 0);
    return s;
}

/* Final accounting, access logs, filter completion and release. Runs once,
 * whether the stream completed or was reset. */
void sharp_conn_stream_destroy(sharp_stream_t *s)
{
    if (s->destroyed) return;
    s->destroyed = true;
    sharp_conn_t *c = s->conn;
    s->info.end_ns = sharp_now_ns();
    s->info.response_headers = s->response_started ? &s->resp : NULL;
    s->info.response_trailers = s->has_resp_trailers ? &s->resp_trailers : NULL;
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
        if (!s->filters[i].off && s->filters[i].factory->on_complete)
            s->filters[i].factory->on_complete(&s->filters[i], &s->info);
    sharp_access_log_emit_all(c->worker, s->hcm, &s->info);
    if (s->span) sharp_tracing_finish(s);
    for (uint32_t i = 0; i < s->nfilters; i++)
        if (!s->filters[i].off && s->filters[i].factory->on_destroy) s->filters[i].factory->on_destroy(&s->filters[i]);
    sharp_dlist_remove(&s->conn_link);
    c->nstreams--;
    if (c->h1.stream == s) c->h1.stream = NULL;
    sharp_headers_free(&s->req);
    sharp_headers_free(&s->resp);
    sharp_headers_free(&s->req_trailers);
    sharp_headers_free(&s->resp_trailers);
    sharp_dynamic_metadata_free(s->info.dynamic_metadata);
    s->info.dynamic_metadata = NULL;
    sharp_locality_md_put(s->info.upstream_locality_md);
    s->info.upstream_locality_md = NULL;
    if (c->codec->stream_released) c->codec->stream_released(s);
    /* after the filters: the router's cluster and pools may be the view's last users */
    sharp_view_unref(s->view);
    s->view = NULL;
    s->routes = NULL;
    sharp_sbuf_free(&s->dec_buf);
    sharp_sbuf_free(&s->enc_buf);
    sharp_small_free(s->details_copy);
    s->details_copy = NULL;
    s->info.response_code_details = NULL;
    sharp_deadline_stop(&s->defer);
    uv_timer_stop(&s->request_timer);
    uv_timer_stop(&s->duration_timer);
    uv_timer_stop(&s->headers_timer);
    uv_close((uv_handle_t *)&s->defer_timer, on_stream_timer_closed);
    if (s->request_timer.loop) uv_close((uv_handle_t *)&s->request_timer, on_stream_timer_closed);
    if (s->duration_timer.loop) uv_close((uv_handle_t *)&s->duration_timer, on_stream_timer_closed);
    if (s->headers_timer.loop) uv_close((uv_handle_t *)&s->headers_timer, on_stream_timer_closed);
}

/* A stream is done when its response is complete. Finishing is deferred
 * (a 0 ms deadline, which the worker's check phase runs after the turn's
 * flush): the call usually comes from deep inside a filter's callback (the
 * router delivering the last byte), and the stream, its filters and their
 * state must outlive that callback. */
static void on_stream_finish(sharp_deadline_t *d)
{
    sharp_stream_t *s = sharp_container_of(d, sharp_stream_t, defer);
    if (!s->request_complete) sharp_counter_inc(STATS(s->conn), s->hcm->st.rq_response_before_rq_complete);
    s->conn->codec->stream_done(s->conn, s, false);
}

void sharp_conn_stream_maybe_finish(sharp_stream_t *s)
{
    if (!s->response_complete || s->destroyed || s->finish_scheduled) return;
    s->finish_scheduled = true;
    uv_timer_stop(&s->request_timer);
    uv_timer_stop(&s->duration_timer);
    uv_timer_stop(&s->headers_timer);
    sharp_deadline_start(s->conn->worker, &s->defer, on_stream_finish, 0);
}

void sharp_conn_write(sharp_conn_t *c, const uv_buf_t *b, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += b[i].len;
    sharp_counter_add(STATS(c), HCM(c)->st.tx_bytes_total, total);
    if (sharp_writer_write(&c->writer, b, n) < 0) return; /* the read side sees the close */
    check_write_watermark(c);
}

/* ---- the stream side's calls (hcm_internal.h), dispatched to the codec ---- */

void sharp_codec_encode_headers(sharp_stream_t *s, sharp_headers_t *h, bool end_stream)
{
    s->conn->codec->encode_headers(s, h, end_stream);
}

void sharp_codec_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end_stream)
{
    s->conn->codec->encode_data(s, p, n, end_stream);
}

void sharp_codec_encode_trailers(sharp_stream_t *s, sharp_headers_t *t)
{
    s->conn->codec->encode_trailers(s, t);
}

void sharp_codec_send_continue(sharp_stream_t *s)
{
    s->conn->codec->send_continue(s);
}

void sharp_codec_read_disable(sharp_stream_t *s, bool disable)
{
    s->conn->codec->read_disable(s, disable);
}

static void on_stream_reset(sharp_deadline_t *d)
{
    sharp_stream_t *s = sharp_container_of(d, sharp_stream_t, defer);
    s->conn->codec->stream_done(s->conn, s, true);
}

/* Resets a stream whose response cannot be completed. Deferred, like
 * finishing, so the caller's filter state stays valid; the codec then ends
 * it on the wire (HTTP/1 can only close the connection). */
void sharp_codec_reset(sharp_stream_t *s)
{
    if (s->destroyed || s->finish_scheduled) return;
    s->finish_scheduled = true;
    s->reset_local = true;
    s->closes_connection = true;
    uv_timer_stop(&s->request_timer);
    uv_timer_stop(&s->duration_timer);
    uv_timer_stop(&s->headers_timer);
    sharp_deadline_start(s->conn->worker, &s->defer, on_stream_reset, 0);
}

void sharp_conn_defer_flush(sharp_conn_t *c)
{
    sharp_dlist_remove(&c->flush_link);
    sharp_dlist_push(&c->worker->flush_list, &c->flush_link);
    sharp_worker_want_flush(c->worker);
}

void sharp_conn_cancel_flush(sharp_conn_t *c)
{
    sharp_dlist_remove(&c->flush_link);
}

void sharp_conn_flush_pending(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->flush_list)) {
        sharp_conn_t *c = sharp_container_of(w->flush_list.next, sharp_conn_t, flush_link);
        sharp_dlist_remove(&c->flush_link);
        c->codec->flush(c);
        if (c->tls && !c->closing) sharp_conn_tls_flush(c); /* TLS */
    }
}

sharp_worker_t *sharp_stream_worker(sharp_stream_t *s)
{
    return s->conn->worker;
}

const struct sockaddr_storage *sharp_stream_restored_local(sharp_stream_t *s)
{
    return s->conn && s->conn->local_restored ? &s->conn->local_ss : NULL;
}

uint32_t sharp_stream_buffer_limit(sharp_stream_t *s)
{
    return s->conn->listener->buffer_limit;
}

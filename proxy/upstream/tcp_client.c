/* tcp_client.c: the client codec of the TCP proxy's upstream connections.
 * No protocol: the bytes the TCP proxy sends go to the socket (through
 * the cluster's TLS when it has one) and every byte read goes back to it.
 * A connection carries one stream for its whole life and is never reused:
 * the pool gives the TCP proxy connect, connect timeout, circuit breaker,
 * TLS, outlier detection and the upstream_cx_* stats, as Envoy's TCP
 * connection pool does for its TCP proxy. */
#include "upstream/codec.h"
#include "tls/upstream.h"
#include "log.h"
#include "stats.h"

#include <stdlib.h>

typedef struct {
    sharp_upstream_cx_t s; /* first: the stream handle */
    bool bound, used;
    bool above_watermark;
    bool read_disabled;
    bool write_closed; /* our FIN is queued */
    bool eof;          /* the peer's FIN came */
} tcp_cx_t;

#define TCP(c) ((tcp_cx_t *)(c)->codec_state)

static sharp_cluster_t *cluster_of(const sharp_upstream_conn_t *c)
{
    return c->pool->cluster;
}

static void tcp_init(sharp_upstream_conn_t *c)
{
    tcp_cx_t *cx = sharp_calloc(1, sizeof *cx);
    cx->s.conn = c;
    c->codec_state = cx;
}

static void tcp_destroy(sharp_upstream_conn_t *c)
{
    free(c->codec_state);
    c->codec_state = NULL;
}

/* The connection closes: the stream learns of it unless it is the one
 * closing it (cancel detaches it first). */
static void tcp_on_close(sharp_upstream_conn_t *c)
{
    tcp_cx_t *cx = TCP(c);
    sharp_upstream_request_t *r = cx->s.req;
    cx->bound = false;
    if (!r) return;
    cx->s.req = NULL;
    r->cx = NULL;
    r->cb->on_reset(r->ctx, SHARP_RESET_LOCAL, "connection closed");
}

static uint32_t tcp_capacity(const sharp_upstream_conn_t *c)
{
    return TCP(c)->used ? 0 : 1;
}

static sharp_upstream_cx_t *tcp_new_stream(sharp_upstream_conn_t *c, sharp_upstream_request_t *r)
{
    tcp_cx_t *cx = TCP(c);
    cx->s.req = r;
    cx->bound = cx->used = true;
    return &cx->s;
}

static void on_flush_timeout(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    sharp_debug(connection, "[C%llu] upstream flush timed out", c->id);
    sharp_upstream_conn_close(c);
}

static void on_flushed(uv_shutdown_t *req, int status)
{
    sharp_upstream_conn_t *c = req->data;
    free(req);
    if (status != UV_ECANCELED && c->state != CX_CLOSING) sharp_upstream_conn_close(c);
}

/* The TCP proxy lets go (its connection is over): the upstream connection
 * closes with it, never to be reused; bytes still queued for it are sent
 * first, with our FIN, as Envoy's FlushWrite close. */
static void tcp_cancel(sharp_upstream_cx_t *s)
{
    tcp_cx_t *cx = (tcp_cx_t *)s;
    sharp_upstream_conn_t *c = cx->s.conn;
    if (c->state == CX_CLOSING) return;
    cx->bound = false;
    if (c->writer.queued && !cx->write_closed && !c->writer.failed) {
        cx->write_closed = true;
        sharp_upstream_conn_read_stop(c);
        uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
        req->data = c;
        if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_flushed) == 0) {
            /* an upstream that stops reading holds it no longer than an
             * idle connection (an hour without an idle_timeout) */
            uint64_t ms = cluster_of(c)->idle_timeout_ms ? cluster_of(c)->idle_timeout_ms : 3600 * 1000;
            uv_timer_start(&c->timer, on_flush_timeout, ms, 0);
            return;
        }
        free(req);
    }
    sharp_upstream_conn_close(c);
}

static void tcp_on_read(sharp_upstream_conn_t *c, ssize_t nread, const uv_buf_t *buf)
{
    tcp_cx_t *cx = TCP(c);
    sharp_upstream_request_t *r = cx->s.req;
    if (nread > 0) {
        sharp_counter_add(sharp_upstream_conn_shard(c), cluster_of(c)->st.cx_rx_bytes_total, (uint64_t)nread);
        if (r) r->cb->on_data(r->ctx, buf->base, (size_t)nread, false);
        else sharp_upstream_conn_close(c);
        return;
    }
    sharp_debug(connection, "[C%llu] remote close (%s)", c->id, uv_err_name((int)nread));
    if (nread == UV_EOF && r && !cx->eof) {
        /* a half-close: the other direction stays open */
        cx->eof = true;
        sharp_upstream_conn_read_stop(c);
        r->cb->on_data(r->ctx, NULL, 0, true);
        return;
    }
    sharp_counter_inc(sharp_upstream_conn_shard(c), cluster_of(c)->st.cx_destroy_remote);
    if (r) {
        cx->s.req = NULL;
        r->cx = NULL;
        sharp_upstream_conn_close(c);
        r->cb->on_reset(r->ctx, nread == UV_ECONNRESET ? SHARP_RESET_REMOTE : SHARP_RESET_CONNECTION_TERMINATION,
                        nread == UV_ECONNRESET ? "remote reset" : "connection termination");
        return;
    }
    sharp_upstream_conn_close(c);
}

static void tcp_on_write_drain(sharp_upstream_conn_t *c)
{
    tcp_cx_t *cx = TCP(c);
    if (!cx->above_watermark) return;
    cx->above_watermark = false;
    if (cx->s.req && cx->s.req->cb->on_write_watermark) cx->s.req->cb->on_write_watermark(cx->s.req->ctx, false);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

static void tcp_send_headers(sharp_upstream_cx_t *s, const sharp_headers_t *h, bool end_stream)
{
    (void)s;
    (void)h;
    (void)end_stream;
}

static void tcp_send_data(sharp_upstream_cx_t *s, const char *p, size_t n, bool end_stream)
{
    tcp_cx_t *cx = (tcp_cx_t *)s;
    sharp_upstream_conn_t *c = cx->s.conn;
    if (c->state == CX_CLOSING || cx->write_closed) return;
    if (n) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        sharp_writer_write(&c->writer, &b, 1);
        sharp_counter_add(sharp_upstream_conn_shard(c), cluster_of(c)->st.cx_tx_bytes_total, n);
    }
    if (end_stream) {
        /* the downstream half-closed: our FIN follows what was written
         * (over TLS, after close_notify, as the downstream side does) */
        cx->write_closed = true;
        if (c->tls) sharp_upstream_tls_shutdown(c);
        uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
        if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) free(req);
    }
    if (!cx->above_watermark && c->writer.queued > cluster_of(c)->per_connection_buffer_limit) {
        cx->above_watermark = true;
        if (cx->s.req && cx->s.req->cb->on_write_watermark) cx->s.req->cb->on_write_watermark(cx->s.req->ctx, true);
    }
}

static void tcp_send_trailers(sharp_upstream_cx_t *s, const sharp_headers_t *t)
{
    (void)t;
    tcp_send_data(s, NULL, 0, true);
}

static void tcp_read_disable(sharp_upstream_cx_t *s, bool disable)
{
    tcp_cx_t *cx = (tcp_cx_t *)s;
    sharp_upstream_conn_t *c = cx->s.conn;
    if (cx->read_disabled == disable) return;
    cx->read_disabled = disable;
    if (cx->eof) return;
    if (disable) sharp_upstream_conn_read_stop(c);
    else sharp_upstream_conn_read_start(c);
}

static size_t tcp_queued(const sharp_upstream_cx_t *s)
{
    return s->conn->writer.queued;
}

const sharp_client_codec_t sharp_tcp_client_codec = {
    .name = "TCP",
    .init = tcp_init,
    .destroy = tcp_destroy,
    .on_close = tcp_on_close,
    .capacity = tcp_capacity,
    .new_stream = tcp_new_stream,
    .cancel = tcp_cancel,
    .on_read = tcp_on_read,
    .on_write_drain = tcp_on_write_drain,
    .send_headers = tcp_send_headers,
    .send_data = tcp_send_data,
    .send_trailers = tcp_send_trailers,
    .read_disable = tcp_read_disable,
    .queued = tcp_queued,
};

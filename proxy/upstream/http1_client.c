/* http1_client.c: the HTTP/1.1 client codec of upstream connections
 * (llhttp, strict mode): request encoding, response parsing, upgrades.
 *
 * An HTTP/1 connection carries one stream at a time. Re-entrancy: the bound
 * request's callbacks may cancel the request or reset the connection from
 * inside an llhttp callback; the connection is then marked closing and the
 * parser callbacks stop. */
#include "upstream/codec.h"
#include "log.h"
#include "net.h"

#include <llhttp.h>
#include <stdio.h>

typedef struct h1_cx {
    sharp_upstream_cx_t s; /* the stream handle: s.req is the bound request */
    llhttp_t parser;
    sharp_headers_t resp;
    bool bound;        /* a stream is in progress (the pool counts it active) */
    bool in_value;
    bool preserve_case; /* the cluster's header_key_format preserve_case (read per name) */
    bool chunked_request;
    bool request_complete;
    bool response_started;
    bool response_complete;
    bool end_sent; /* end_stream already delivered */
    bool informational;
    bool read_disabled;
    bool above_watermark;
    bool is_head;      /* the bound request is HEAD: its response has no body */
    bool keep_alive;   /* decided at message completion */
    bool in_execute;   /* inside llhttp_execute: parser state must not be reset */
    /* HTTP upgrade: the bound request asked for one (such a connection is
     * never reused), the upstream answered 101, and its bytes now flow
     * unparsed both ways */
    bool upgrade_request;
    bool connect_request; /* a CONNECT: a 2xx opens the tunnel (RFC 9110 section 9.3.6) */
    bool upgraded;
    bool tunnel;
    /* why the codec closes the connection: told to the bound request */
    sharp_reset_reason_t reset_why;
    const char *reset_detail;
} h1_cx_t;

static llhttp_settings_t parser_settings;
/* the same with on_status, for a cluster that forwards reason phrases */
static llhttp_settings_t parser_settings_reason;

#define H1(conn) ((h1_cx_t *)(conn)->codec_state)

static sharp_upstream_conn_t *conn_of(const h1_cx_t *cx)
{
    return cx->s.conn;
}

static bool closing(const h1_cx_t *cx)
{
    return cx->s.conn->state == CX_CLOSING;
}

static sharp_cluster_t *cluster_of(const h1_cx_t *cx)
{
    return cx->s.conn->pool->cluster;
}

static void h1_init(sharp_upstream_conn_t *c)
{
    h1_cx_t *cx = sharp_calloc(1, sizeof *cx);
    cx->s.conn = c;
    sharp_headers_init(&cx->resp);
    c->codec_state = cx;
}

static void h1_destroy(sharp_upstream_conn_t *c)
{
    h1_cx_t *cx = H1(c);
    sharp_headers_free(&cx->resp);
    free(cx);
    c->codec_state = NULL;
}

/* The connection closes: a bound request learns of it through on_reset
 * unless it is the one closing it (cancel clears s.req first). */
static void h1_on_close(sharp_upstream_conn_t *c)
{
    h1_cx_t *cx = H1(c);
    sharp_upstream_request_t *r = cx->s.req;
    cx->bound = false;
    if (!r) return;
    cx->s.req = NULL;
    r->cx = NULL;
    r->cb->on_reset(r->ctx, cx->reset_detail ? cx->reset_why : SHARP_RESET_LOCAL,
                    cx->reset_detail ? cx->reset_detail : "connection closed");
}

static void reset_bound(h1_cx_t *cx, sharp_reset_reason_t why, const char *detail)
{
    cx->reset_why = why;
    cx->reset_detail = detail;
    sharp_upstream_conn_close(conn_of(cx));
}

static uint32_t h1_capacity(const sharp_upstream_conn_t *c)
{
    return H1(c)->bound ? 0 : 1;
}

static sharp_upstream_cx_t *h1_new_stream(sharp_upstream_conn_t *c, sharp_upstream_request_t *r)
{
    h1_cx_t *cx = H1(c);
    cx->s.req = r;
    cx->bound = true;
    cx->request_complete = cx->response_started = cx->response_complete = false;
    cx->end_sent = cx->informational = cx->chunked_request = false;
    cx->upgrade_request = cx->connect_request = cx->upgraded = cx->tunnel = false;
    sharp_headers_clear(&cx->resp);
    const sharp_h1_key_format_t *k = &cluster_of(cx)->h1_keys;
    cx->preserve_case = k->mode == SHARP_H1_KEYS_PRESERVE;
    llhttp_init(&cx->parser, HTTP_RESPONSE,
                k->mode == SHARP_H1_KEYS_PRESERVE && k->forward_reason ? &parser_settings_reason : &parser_settings);
    cx->parser.data = cx;
    if (cx->read_disabled) {
        cx->read_disabled = false;
        sharp_upstream_conn_read_start(c);
    }
    return &cx->s;
}

static void h1_on_write_drain(sharp_upstream_conn_t *c)
{
    h1_cx_t *cx = H1(c);
    if (cx->above_watermark) {
        cx->above_watermark = false;
        if (cx->s.req && cx->s.req->cb->on_write_watermark)
            cx->s.req->cb->on_write_watermark(cx->s.req->ctx, false);
    }
}

/* After a complete response: reuse the connection when both sides allow it
 * and nothing unexpected followed the response, else close it. */
static void finish_response(h1_cx_t *cx, bool extra_bytes)
{
    sharp_upstream_request_t *r = cx->s.req;
    if (r) { /* the request owner did not release it: do it for them */
        cx->s.req = NULL;
        r->cx = NULL;
    }
    sharp_upstream_conn_t *c = conn_of(cx);
    sharp_debug(pool, "[C%llu] response complete", c->id);
    bool reusable = cx->keep_alive && cx->request_complete && !extra_bytes && !cx->upgrade_request;
    if (!reusable || c->draining || *c->pool->env->draining)
        sharp_debug(pool, "[C%llu] not reusable (%s)", c->id,
                    !cx->keep_alive ? "connection: close" : !cx->request_complete ? "request not complete"
                    : extra_bytes ? "bytes after the response" : cx->upgrade_request ? "upgrade request"
                    : "draining");
    cx->bound = false;
    sharp_upstream_conn_stream_done(c, reusable);
}

static void h1_cancel(sharp_upstream_cx_t *s)
{
    h1_cx_t *cx = (h1_cx_t *)s;
    if (closing(cx)) return;
    /* mid-response, or an upgrade: cannot be reused */
    if (!cx->response_complete || cx->upgrade_request) sharp_upstream_conn_close(conn_of(cx));
    else if (!cx->in_execute) finish_response(cx, false);
    /* else on_read finishes it once the parser returns */
}

/* Upstream bytes of an upgraded connection: response data, unparsed. */
static void tunnel_data(h1_cx_t *cx, const char *p, size_t n)
{
    sharp_counter_add(sharp_upstream_conn_shard(conn_of(cx)), cluster_of(cx)->st.cx_rx_bytes_total, n);
    if (cx->s.req) cx->s.req->cb->on_data(cx->s.req->ctx, p, n, false);
}

static void h1_on_read(sharp_upstream_conn_t *c, ssize_t nread, const uv_buf_t *buf)
{
    h1_cx_t *cx = H1(c);
    if (nread > 0) {
        if (!cx->bound) {
            /* Bytes on an idle connection: the server broke the protocol. */
            sharp_debug(connection, "[C%llu] unexpected bytes on an idle connection", c->id);
            sharp_upstream_conn_close(c);
        } else if (cx->tunnel) {
            tunnel_data(cx, buf->base, (size_t)nread);
        } else {
            cx->in_execute = true;
            llhttp_errno_t e = llhttp_execute(&cx->parser, buf->base, (size_t)nread);
            cx->in_execute = false;
            if (closing(cx)) {
                /* a callback closed it */
            } else if (cx->upgraded && (e == HPE_PAUSED_UPGRADE || e == HPE_PAUSED)) {
                /* after the 101 the bytes are the tunnel's */
                cx->tunnel = true;
                const char *pos = llhttp_get_error_pos(&cx->parser);
                if (pos && pos >= buf->base && pos < buf->base + nread)
                    tunnel_data(cx, pos, (size_t)(buf->base + nread - pos));
            } else if (e == HPE_PAUSED && cx->response_complete) {
                const char *end = llhttp_get_error_pos(&cx->parser);
                bool extra = end && end < buf->base + nread;
                finish_response(cx, extra);
            } else if (e != HPE_OK) {
                sharp_counter_inc(sharp_upstream_conn_shard(c), cluster_of(cx)->st.cx_protocol_error);
                reset_bound(cx, SHARP_RESET_PROTOCOL_ERROR,
                            e == HPE_PAUSED_UPGRADE ? "upgrade not supported" : llhttp_errno_name(e));
            }
        }
        return;
    }
    sharp_debug(connection, "[C%llu] remote close (%s)", c->id, uv_err_name((int)nread));
    if (cx->bound && cx->tunnel && nread == UV_EOF && cx->s.req) {
        /* the upstream ended the tunnel: the end of the response */
        cx->response_complete = cx->end_sent = true;
        sharp_counter_inc(sharp_upstream_conn_shard(c), cluster_of(cx)->st.cx_destroy_remote);
        sharp_upstream_request_t *r = cx->s.req;
        r->cb->on_data(r->ctx, NULL, 0, true);
    }
    if (cx->bound && cx->tunnel && cx->response_complete) {
        /* ended: closed below */
    } else if (cx->bound) {
        if (nread == UV_EOF && cx->response_started && !cx->response_complete) {
            cx->in_execute = true;
            llhttp_finish(&cx->parser); /* ends a close-delimited body */
            cx->in_execute = false;
            if (!closing(cx) && cx->response_complete) finish_response(cx, false);
        }
        if (!closing(cx) && cx->bound && !cx->response_complete) {
            sharp_counter_inc(sharp_upstream_conn_shard(c), cluster_of(cx)->st.cx_destroy_remote);
            reset_bound(cx, nread == UV_ECONNRESET ? SHARP_RESET_REMOTE : SHARP_RESET_CONNECTION_TERMINATION,
                        nread == UV_ECONNRESET ? "remote reset" : "connection termination");
        }
    }
    if (!closing(cx)) {
        /* a finished response whose request holds on: nothing to tell */
        sharp_upstream_request_t *r = cx->s.req;
        if (r) {
            cx->s.req = NULL;
            r->cx = NULL;
        }
        sharp_upstream_conn_close(c);
    }
}

/* ---- request encoding ---- */

static bool skip_request_header(sharp_str_t n)
{
    /* Pseudo-headers are written as the request line and Host; hop-by-hop
     * headers were removed by the connection manager. */
    return n.len && n.p[0] == ':';
}

static void on_upstream_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* The client half-closed its upgrade request: so do we, once what was
 * written has left; the response keeps coming. */
static void upgrade_half_close(h1_cx_t *cx)
{
    uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
    if (uv_shutdown(req, (uv_stream_t *)&conn_of(cx)->tcp, on_upstream_shutdown) < 0) free(req);
}

static void h1_send_headers(sharp_upstream_cx_t *s, const sharp_headers_t *h, bool end_stream)
{
    h1_cx_t *cx = (h1_cx_t *)s;
    sharp_upstream_conn_t *c = conn_of(cx);
    sharp_trace(pool, "[C%llu] encoding request headers (end_stream=%s)", c->id, end_stream ? "true" : "false");
    sharp_request_head_t rh;
    sharp_request_head_scan(h, &rh);
    sharp_str_t method = rh.method.p ? rh.method : SHARP_STR("GET"), path = rh.path.p ? rh.path : SHARP_STR("/"),
                authority = rh.authority.p ? rh.authority : SHARP_STR("");
    bool has_cl = rh.content_length.p != NULL;
    /* The connection manager keeps Upgrade (and Connection) only on an
     * accepted upgrade request. Its payload follows the head unframed, as
     * Envoy's HTTP/1 encoder sends it: never chunked. */
    cx->upgrade_request = rh.upgrade.p && rh.connection.p && sharp_header_value_has_token(rh.connection, "upgrade");
    /* A CONNECT (the TCP proxy's tunnel): "CONNECT host:port HTTP/1.1",
     * its payload unframed both ways once a 2xx answers it, as an upgrade */
    cx->connect_request = sharp_str_eq(method, "CONNECT", 7);
    if (cx->connect_request) {
        cx->upgrade_request = true;
        path = authority;
    }
    cx->chunked_request = !end_stream && !has_cl && !cx->upgrade_request;
    cx->is_head = sharp_str_eq(method, "HEAD", 4);
    size_t cap = method.len + path.len + authority.len + 64 + sharp_headers_byte_size(h) + 4 * h->n;
    char stackbuf[8192];
    char *out = cap <= sizeof stackbuf ? stackbuf : sharp_calloc(1, cap);
    size_t o = 0;
#define PUT(p_, n_)                                                                                \
    do {                                                                                           \
        memcpy(out + o, (p_), (n_));                                                               \
        o += (n_);                                                                                 \
    } while (0)
    /* header_key_format: names formatted as written (the request's
     * remembered spellings, else the cluster's proper_case_words); the
     * default path writes them as stored */
    bool proper = cluster_of(cx)->h1_keys.mode == SHARP_H1_KEYS_PROPER, fmt = proper || h->cases;
#define FMT(n_)                                                                                    \
    do {                                                                                           \
        if (fmt) sharp_header_name_format(h, proper, out + o - (n_), (n_));                        \
    } while (0)
    PUT(method.p, method.len);
    PUT(" ", 1);
    PUT(path.p, path.len);
    PUT(" HTTP/1.1\r\n", 11);
    PUT("host", 4);
    FMT(4);
    PUT(": ", 2);
    PUT(authority.p, authority.len);
    PUT("\r\n", 2);
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        if (skip_request_header(n)) continue;
        PUT(n.p, n.len);
        FMT(n.len);
        PUT(": ", 2);
        PUT(v.p, v.len);
        PUT("\r\n", 2);
    }
    if (cx->chunked_request) {
        PUT("transfer-encoding", 17);
        FMT(17);
        PUT(": chunked\r\n", 11);
    }
#undef FMT
    PUT("\r\n", 2);
#undef PUT
    uv_buf_t b = uv_buf_init(out, (unsigned)o);
    sharp_writer_write(&c->writer, &b, 1);
    sharp_counter_add(sharp_upstream_conn_shard(c), cluster_of(cx)->st.cx_tx_bytes_total, o);
    if (out != stackbuf) free(out);
    if (end_stream) cx->request_complete = true;
    if (end_stream && cx->upgrade_request) upgrade_half_close(cx);
}

static void h1_send_data(sharp_upstream_cx_t *s, const char *p, size_t n, bool end_stream)
{
    h1_cx_t *cx = (h1_cx_t *)s;
    sharp_upstream_conn_t *c = conn_of(cx);
    uv_buf_t bufs[3];
    unsigned nb = 0;
    char head[24];
    if (cx->chunked_request && n) {
        int hl = snprintf(head, sizeof head, "%zx\r\n", n);
        bufs[nb++] = uv_buf_init(head, (unsigned)hl);
    }
    if (n) bufs[nb++] = uv_buf_init((char *)p, (unsigned)n);
    if (cx->chunked_request) {
        if (n && end_stream) bufs[nb++] = uv_buf_init("\r\n0\r\n\r\n", 7);
        else if (n) bufs[nb++] = uv_buf_init("\r\n", 2);
        else if (end_stream) bufs[nb++] = uv_buf_init("0\r\n\r\n", 5);
    }
    if (nb) sharp_writer_write(&c->writer, bufs, nb);
    sharp_counter_add(sharp_upstream_conn_shard(c), cluster_of(cx)->st.cx_tx_bytes_total, n);
    if (end_stream) cx->request_complete = true;
    if (end_stream && cx->upgrade_request) upgrade_half_close(cx);
    if (!cx->above_watermark && c->writer.queued > cluster_of(cx)->per_connection_buffer_limit) {
        cx->above_watermark = true;
        if (cx->s.req && cx->s.req->cb->on_write_watermark)
            cx->s.req->cb->on_write_watermark(cx->s.req->ctx, true);
    }
}

/* Request trailers: Envoy's HTTP/1 client codec sends them only with
 * enable_trailers in its http_protocol_options (which SHARP refuses), so
 * they are dropped and the body ends, as there. */
static void h1_send_trailers(sharp_upstream_cx_t *s, const sharp_headers_t *t)
{
    (void)t;
    h1_send_data(s, NULL, 0, true);
}

static void h1_read_disable(sharp_upstream_cx_t *s, bool disable)
{
    h1_cx_t *cx = (h1_cx_t *)s;
    if (closing(cx) || disable == cx->read_disabled) return;
    cx->read_disabled = disable;
    if (disable) sharp_upstream_conn_read_stop(conn_of(cx));
    else sharp_upstream_conn_read_start(conn_of(cx));
}

static size_t h1_queued(const sharp_upstream_cx_t *s)
{
    return s->conn->writer.queued;
}

/* ---- response parsing ---- */

static int on_message_begin(llhttp_t *ps)
{
    h1_cx_t *cx = ps->data;
    sharp_headers_clear(&cx->resp);
    cx->in_value = false;
    cx->response_started = true;
    return 0;
}

/* preserve_case on the cluster: the response's spellings (and with
 * forward_reason_phrase its reason phrase) remembered for the downstream
 * HTTP/1 encoder. Only installed when configured (h1_settings). */
static int on_status(llhttp_t *ps, const char *at, size_t n)
{
    h1_cx_t *cx = ps->data;
    const sharp_h1_key_format_t *k = &cluster_of(cx)->h1_keys;
    if (!cx->resp.cases) sharp_headers_case_enable(&cx->resp, k->proper_others, k->forward_reason);
    sharp_headers_case_reason(&cx->resp, at, n);
    return 0;
}

static int on_header_field(llhttp_t *ps, const char *at, size_t n)
{
    h1_cx_t *cx = ps->data;
    bool first = cx->in_value || cx->resp.n == 0;
    if (first) {
        sharp_headers_add(&cx->resp, at, n, "", 0);
        cx->in_value = false;
    } else {
        sharp_headers_append_last_name(&cx->resp, at, n);
    }
    if (cx->preserve_case) {
        const sharp_h1_key_format_t *k = &cluster_of(cx)->h1_keys;
        if (!cx->resp.cases) sharp_headers_case_enable(&cx->resp, k->proper_others, k->forward_reason);
        sharp_headers_case_name(&cx->resp, at, n, first);
    }
    /* max_headers_count: Envoy's codec fails the response once it has more
     * header lines than that (a protocol error: 502 UPE). */
    if (cx->resp.n > cluster_of(cx)->max_response_headers_count ||
        sharp_headers_byte_size(&cx->resp) > 96 * 1024)
        return -1;
    return 0;
}

static int on_header_value(llhttp_t *ps, const char *at, size_t n)
{
    h1_cx_t *cx = ps->data;
    cx->in_value = true;
    sharp_headers_append_last_value(&cx->resp, at, n);
    if (sharp_headers_byte_size(&cx->resp) > 96 * 1024) return -1;
    return 0;
}

static int on_headers_complete(llhttp_t *ps)
{
    h1_cx_t *cx = ps->data;
    unsigned status = ps->status_code;
    /* Envoy's client codec (onHeadersCompleteBase): a 1xx or 204 response
     * has no body, so transfer-encoding in it, or a content-length other
     * than 0, is a protocol error (502 UPE); a content-length of 0 is
     * dropped. Forwarded as they were, they would tell the client to expect
     * a body the proxy never frames as one (after a 101, the tunnel's). */
    if (status < 200 || status == 204) {
        if (sharp_headers_get_cstr(&cx->resp, "transfer-encoding", NULL)) return -1;
        sharp_str_t cl;
        if (sharp_headers_get_cstr(&cx->resp, "content-length", &cl)) {
            if (!sharp_str_eq(cl, "0", 1)) return -1;
            sharp_headers_remove_cstr(&cx->resp, "content-length");
        }
    }
    if (status >= 100 && status < 200 && status != 101) {
        cx->informational = true; /* 100 Continue and friends: swallowed */
        return 0;
    }
    cx->informational = false;
    if (!cx->s.req) return -1;
    if (status == 101) {
        /* a 101 answers only an upgrade request; its bytes then belong to
         * the tunnel (on_read hands them over when llhttp stops) */
        if (!cx->upgrade_request) return -1;
        /* ... and is itself an upgrade (Envoy's codec switches only when
         * Utility::isUpgrade holds for the response): a 101 without Upgrade
         * and Connection: upgrade would be tunnelled to a client that keeps
         * parsing HTTP, so what follows it could be read as a response the
         * proxy never framed. SHARP answers it as a protocol error. */
        sharp_str_t up, conn;
        if (!sharp_headers_get_cstr(&cx->resp, "upgrade", &up) || !up.len ||
            !sharp_headers_get_cstr(&cx->resp, "connection", &conn) ||
            !sharp_header_value_has_token(conn, "upgrade"))
            return -1;
        cx->upgraded = true;
    }
    /* a 2xx to a CONNECT: any Content-Length or Transfer-Encoding in it is
     * ignored (RFC 9110 section 9.3.6, as Envoy) and the tunnel follows */
    if (cx->connect_request && status >= 200 && status < 300) cx->upgraded = true;
    char code[20];
    size_t cl = sharp_u64_to_str(status, code);
    /* :status goes first, as in an HTTP/2 header block. */
    sharp_headers_t *h = &cx->resp;
    sharp_headers_add(h, ":status", 7, code, cl);
    if (h->n > 1) {
        sharp_header_entry_t st = h->e[h->n - 1];
        memmove(&h->e[1], &h->e[0], (h->n - 1) * sizeof st);
        h->e[0] = st;
    }
    bool is_head = cx->is_head; /* HEAD responses have no body whatever they say */
    bool no_body = !cx->upgraded && (status == 204 || status == 304 || is_head ||
                   ((ps->flags & F_CONTENT_LENGTH) && ps->content_length == 0 && !(ps->flags & F_CHUNKED)));
    cx->end_sent = no_body;
    /* A body-less response is complete now: a release from inside on_headers
     * must keep the connection for reuse, not close it. */
    if (no_body) cx->response_complete = true;
    sharp_upstream_request_t *r = cx->s.req;
    r->cb->on_headers(r->ctx, h, no_body);
    if (closing(cx)) return -1;
    if (cx->connect_request && cx->upgraded) return 2; /* no body: the tunnel's bytes follow */
    return no_body ? 1 : 0;
}

static int on_body(llhttp_t *ps, const char *at, size_t n)
{
    h1_cx_t *cx = ps->data;
    if (cx->informational) return 0;
    sharp_counter_add(sharp_upstream_conn_shard(conn_of(cx)), cluster_of(cx)->st.cx_rx_bytes_total, n);
    if (!cx->s.req) return -1;
    cx->s.req->cb->on_data(cx->s.req->ctx, at, n, false);
    return closing(cx) ? -1 : 0;
}

static int on_message_complete(llhttp_t *ps)
{
    h1_cx_t *cx = ps->data;
    if (cx->informational) {
        cx->informational = false;
        return 0;
    }
    if (cx->upgraded) return HPE_PAUSED; /* not an end: the tunnel follows */
    cx->response_complete = true;
    cx->keep_alive = llhttp_should_keep_alive(ps);
    /* upstream_cx_close_notify: the upstream said it closes (connection:
     * close, or an HTTP/1.0 response without keep-alive) */
    if (!cx->keep_alive) sharp_counter_inc(sharp_upstream_conn_shard(conn_of(cx)), cluster_of(cx)->st.cx_close_notify);
    sharp_upstream_request_t *r = cx->s.req;
    if (r && !cx->end_sent) {
        cx->end_sent = true;
        r->cb->on_data(r->ctx, NULL, 0, true);
    }
    /* One response per request: stop here; on_read decides about reuse. */
    return closing(cx) ? -1 : HPE_PAUSED;
}

__attribute__((constructor)) static void init_settings(void)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    parser_settings_reason = parser_settings;
    parser_settings_reason.on_status = on_status;
}

const sharp_client_codec_t sharp_http1_client_codec = {
    .name = "HTTP/1.1",
    .init = h1_init,
    .destroy = h1_destroy,
    .on_close = h1_on_close,
    .capacity = h1_capacity,
    .new_stream = h1_new_stream,
    .cancel = h1_cancel,
    .on_read = h1_on_read,
    .on_write_drain = h1_on_write_drain,
    .send_headers = h1_send_headers,
    .send_data = h1_send_data,
    .send_trailers = h1_send_trailers,
    .read_disable = h1_read_disable,
    .queued = h1_queued,
};

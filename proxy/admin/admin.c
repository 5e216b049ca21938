/* admin.c: the admin listener and its HTTP/1.1 connections on the main
 * thread's loop. Requests are parsed with llhttp; bodies are read and
 * dropped; one request is answered at a time per connection, in order, with
 * keep-alive unless the client asked to close. handlers.c builds the
 * responses.
 *
 * Lifetimes: the sharp_admin_t lives until sharp_admin_stop has been called
 * and the listener and every connection have finished closing. A connection
 * owns two handles (its socket and a timer) and is freed when both close
 * callbacks have run; nothing else frees it.
 *
 * Flow control: the parser is paused after every complete request, so a
 * read buffer holding several pipelined requests is worked through one
 * response at a time. While the socket's write queue is above a high-water
 * mark the connection stops reading and parsing, and resumes from the write
 * callback; a client that pipelines requests without reading responses
 * therefore costs bounded memory.
 *
 * Access logs (admin.access_log, admin.access_log_path): every answered
 * request, including one refused by the parser, is logged once its response
 * is queued, as Envoy's connection manager logs an admin stream when it
 * ends. The request headers are kept in a header map for the formatter, with
 * the pseudo-headers Envoy's HTTP/1 codec makes (:method, :path,
 * :authority from Host); their size is bounded by ADMIN_MAX_REQUEST. */
#include "admin/admin.h"
#include "admin/handlers.h"
#include "grpc/server.h"
#include "http/access_log_emit.h"
#include "log.h"
#include "net.h"
#include "sbuf.h"

#include <llhttp.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_MAX_REQUEST (64 * 1024) /* request line + headers + body */
#define ADMIN_READ_BUF (16 * 1024)
#define ADMIN_WRITE_HIGH (1024 * 1024) /* stop parsing while more is queued */
#define ADMIN_IDLE_MS (5 * 60 * 1000)  /* close connections idle this long */
#define ADMIN_LINGER_MS 2000           /* drain input this long before a close */

struct sharp_admin {
    sharp_server_t *srv;
    uv_tcp_t listener;
    sharp_dlist_t conns;
    unsigned open; /* the listener plus connections not yet freed */
    bool stopping; /* sharp_admin_stop was called (or start failed) */
};

typedef struct admin_conn {
    sharp_dlist_t link; /* in admin->conns while not closing */
    sharp_admin_t *admin;
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout, then the linger bound */
    uv_shutdown_t shutdown_req;
    llhttp_t parser;
    sharp_sbuf_t url;          /* target of the request being parsed */
    sharp_sbuf_t req_body;     /* its body (bounded by ADMIN_MAX_REQUEST), for form values */
    size_t req_bytes;          /* URL + header bytes + body bytes of that request */
    unsigned fail_status;      /* set by a callback that rejected the request */
    char hname[8], hvalue[16]; /* current header, kept only while short */
    uint8_t hname_len, hvalue_len;
    bool expect_continue; /* the request carries Expect: 100-continue */
    sharp_headers_t req_headers; /* of the request being parsed, for access logs */
    bool new_header;             /* the next header-name byte starts a new header */
    bool in_message;             /* a request has begun and is not answered yet */
    bool headers_done;           /* its headers are complete */
    uint64_t start_wall_us, start_ns, body_bytes;
    char remote[SHARP_ADDR_STRLEN], local[SHARP_ADDR_STRLEN]; /* downstream addresses, "ip:port" */
    unsigned handles;     /* handles still open (tcp, timer) */
    bool reading;         /* uv_read_start is in effect */
    bool finishing;       /* last response queued: read no more requests */
    bool lingering;       /* FIN sent: reading and discarding until EOF */
    bool closing;         /* uv_close called on both handles */
    bool proto_known;     /* HTTP/1 or HTTP/2 decided from the first bytes */
    sharp_grpc_conn_t *h2; /* an HTTP/2 connection: gRPC (grpc/server.h) */
    bool quit_pending;     /* /quitquitquit over HTTP/2: shut down once written */
    char rbuf[ADMIN_READ_BUF];
    size_t roff, rlen; /* unparsed bytes are rbuf[roff, rlen) */
} admin_conn_t;

typedef struct admin_write {
    uv_write_t req;
    admin_conn_t *conn;
    sharp_sbuf_t head, body;
    bool quit_after;
} admin_write_t;

static llhttp_settings_t parser_settings;
static bool parser_settings_ready;

static void conn_process(admin_conn_t *c);
static void conn_update_reading(admin_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* ---- lifetime -------------------------------------------------------------- */

static void admin_maybe_free(sharp_admin_t *a)
{
    if (a->stopping && a->open == 0) free(a);
}

static void on_listener_close(uv_handle_t *h)
{
    sharp_admin_t *a = sharp_container_of((uv_tcp_t *)h, sharp_admin_t, listener);
    a->open--;
    admin_maybe_free(a);
}

static void on_conn_handle_close(uv_handle_t *h)
{
    admin_conn_t *c = h->data;
    if (--c->handles) return;
    sharp_admin_t *a = c->admin;
    sharp_sbuf_free(&c->url);
    sharp_sbuf_free(&c->req_body);
    sharp_headers_free(&c->req_headers);
    free(c);
    a->open--;
    admin_maybe_free(a);
}

/* Closes both handles; pending writes complete with UV_ECANCELED first. Safe
 * to call more than once and from any callback of the connection. */
static void conn_close(admin_conn_t *c)
{
    if (c->closing) return;
    c->closing = true;
    sharp_dlist_remove(&c->link);
    /* calls end now: handlers drop their handles before the admin goes */
    sharp_grpc_conn_free(c->h2);
    c->h2 = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

static void on_timer(uv_timer_t *t)
{
    admin_conn_t *c = t->data;
    /* an HTTP/2 connection with calls in progress (a health Watch) is not
     * idle */
    if (c->h2 && !c->lingering && sharp_grpc_conn_busy(c->h2)) {
        uv_timer_start(&c->timer, on_timer, ADMIN_IDLE_MS, 0);
        return;
    }
    conn_close(c);
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_conn_t *c = s->data;
    if (nread < 0) conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    admin_conn_t *c = req->data;
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* Closing a socket with unread input makes the kernel send a reset,
     * which can destroy the response still in flight to the client (a 413
     * while it is still sending its body). Read and drop until the client
     * closes, for a bounded time. */
    c->lingering = true;
    c->roff = c->rlen = 0;
    uv_timer_start(&c->timer, on_timer, ADMIN_LINGER_MS, 0);
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_linger_read) != 0) conn_close(c);
}

/* No more requests on this connection: send FIN once every queued response
 * is written, then linger (see on_shutdown). */
static void conn_finish(admin_conn_t *c)
{
    if (c->finishing || c->closing) return;
    c->finishing = true;
    conn_update_reading(c);
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

/* ---- responses ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    admin_write_t *w = sharp_container_of(req, admin_write_t, req);
    admin_conn_t *c = w->conn;
    sharp_server_t *srv = c->admin->srv;
    bool quit = w->quit_after;
    sharp_sbuf_free(&w->head);
    sharp_sbuf_free(&w->body);
    free(w);
    if (c->quit_pending && (status < 0 || c->tcp.write_queue_size == 0)) {
        c->quit_pending = false; /* written, or never will be: it counts */
        quit = true;
    }
    if (status < 0) {
        conn_close(c);
    } else if (c->h2) {
        if (!c->closing && !c->finishing) {
            sharp_grpc_conn_flush(c->h2);
            conn_update_reading(c);
        }
    } else if (!c->closing && !c->finishing && c->tcp.write_queue_size < ADMIN_WRITE_HIGH) {
        conn_process(c);
    }
    /* Last: the shutdown may stop the admin server and close this
     * connection, which stays allocated until its close callbacks. */
    if (quit) sharp_server_shutdown(srv, false);
}

static void http_date(char *out, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Writes the admin access log entries for the request being answered. The
 * request headers are given only once complete (a request refused by the
 * parser before that logs "-" for them, as in Envoy). */
static void conn_access_log(admin_conn_t *c, unsigned status, uint64_t bytes_sent)
{
    const sharp_snapshot_t *snap = c->admin->srv->snap;
    if (!c->in_message) return;
    c->in_message = false;
    if (!snap || !snap->nadmin_access_logs) return;
    sharp_stream_info_t si = {0};
    si.start_wall_us = c->start_wall_us;
    si.start_ns = c->start_ns;
    si.end_ns = si.request_complete_ns = sharp_now_ns();
    si.protocol = llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0
                      ? "HTTP/1.0"
                      : "HTTP/1.1";
    si.response_code = status;
    si.bytes_received = c->body_bytes;
    si.bytes_sent = bytes_sent;
    snprintf(si.downstream_remote_address, sizeof si.downstream_remote_address, "%s", c->remote);
    snprintf(si.downstream_local_address, sizeof si.downstream_local_address, "%s", c->local);
    si.request_headers = c->headers_done ? &c->req_headers : NULL;
    for (uint32_t i = 0; i < snap->nadmin_access_logs; i++)
        sharp_access_log_write_now(snap->admin_access_logs[i], &si);
}

/* Queues one response. Takes the body (rsp->body is left empty). With
 * `head_only` (HEAD requests) the body is counted in content-length but not
 * sent. */
static void conn_respond(admin_conn_t *c, sharp_admin_response_t *rsp, bool keep_alive, bool http10,
                         bool head_only)
{
    if (c->closing) {
        sharp_sbuf_free(&rsp->body);
        return;
    }
    admin_write_t *w = sharp_calloc(1, sizeof *w);
    w->conn = c;
    w->quit_after = rsp->quit_after;
    w->body = rsp->body;
    memset(&rsp->body, 0, sizeof rsp->body);
    char date[64];
    http_date(date, sizeof date);
    sharp_sbuf_printf(&w->head,
                      "HTTP/1.1 %u %s\r\n"
                      "content-type: %s\r\n"
                      "cache-control: no-cache, max-age=0\r\n"
                      "x-content-type-options: nosniff\r\n"
                      "date: %s\r\n"
                      "server: sharp\r\n"
                      "content-length: %zu\r\n",
                      rsp->status, sharp__admin_reason(rsp->status),
                      rsp->content_type ? rsp->content_type : SHARP_ADMIN_CT_TEXT, date,
                      w->body.len);
    if (!keep_alive)
        sharp_sbuf_puts(&w->head, "connection: close\r\n");
    else if (http10)
        sharp_sbuf_puts(&w->head, "connection: keep-alive\r\n");
    sharp_sbuf_puts(&w->head, "\r\n");
    uv_buf_t bufs[2] = {uv_buf_init(w->head.data, (unsigned)w->head.len),
                        uv_buf_init(w->body.data, (unsigned)w->body.len)};
    unsigned nbufs = head_only || w->body.len == 0 ? 1 : 2;
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
    if (r != 0) {
        /* The socket is unusable; the quit request still counts. */
        bool quit = w->quit_after;
        sharp_sbuf_free(&w->head);
        sharp_sbuf_free(&w->body);
        free(w);
        sharp_server_t *srv = c->admin->srv;
        conn_close(c);
        if (quit) sharp_server_shutdown(srv, false);
        return;
    }
    if (!keep_alive) conn_finish(c);
}

/* Sends an error for a request that could not be parsed and ends the
 * connection. */
static void conn_fail(admin_conn_t *c, unsigned status)
{
    sharp_admin_response_t rsp = {.status = status, .content_type = SHARP_ADMIN_CT_TEXT};
    sharp_sbuf_printf(&rsp.body, "%s\n", sharp__admin_reason(status));
    conn_access_log(c, status, rsp.body.len);
    conn_respond(c, &rsp, false, false, false);
}

/* ---- request parsing ------------------------------------------------------- */

static int count_bytes(admin_conn_t *c, size_t n, unsigned status)
{
    c->req_bytes += n;
    if (c->req_bytes > ADMIN_MAX_REQUEST) {
        c->fail_status = status;
        return -1;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    sharp_sbuf_reset(&c->url);
    sharp_sbuf_reset(&c->req_body);
    c->req_bytes = 0;
    c->hname_len = c->hvalue_len = 0;
    c->expect_continue = false;
    sharp_headers_clear(&c->req_headers);
    c->new_header = true; /* the first field starts a new header */
    c->in_message = true;
    c->headers_done = false;
    c->body_bytes = 0;
    c->start_wall_us = sharp_wall_us();
    c->start_ns = sharp_now_ns();
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    admin_conn_t *c = p->data;
    if (count_bytes(c, n, 431) < 0) return -1;
    sharp_sbuf_append(&c->url, at, n);
    return 0;
}

static int on_header_bytes(llhttp_t *p, const char *at, size_t n)
{
    return count_bytes(p->data, n + 2, 431);
}

/* Keeps up to cap-1 bytes of a header name or value (llhttp may deliver one
 * in pieces); a longer one is marked by len == cap and never matches. */
static void keep_short(char *buf, uint8_t *len, size_t cap, const char *at, size_t n)
{
    if (*len + n >= cap) {
        *len = (uint8_t)cap;
        return;
    }
    memcpy(buf + *len, at, n);
    *len = (uint8_t)(*len + n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    admin_conn_t *c = p->data;
    keep_short(c->hname, &c->hname_len, sizeof c->hname, at, n);
    if (on_header_bytes(p, at, n) < 0) return -1;
    if (c->new_header) /* a new header (a name may arrive in pieces) */
        sharp_headers_add(&c->req_headers, at, n, "", 0);
    else
        sharp_headers_append_last_name(&c->req_headers, at, n);
    c->new_header = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    admin_conn_t *c = p->data;
    keep_short(c->hvalue, &c->hvalue_len, sizeof c->hvalue, at, n);
    if (on_header_bytes(p, at, n) < 0) return -1;
    sharp_headers_append_last_value(&c->req_headers, at, n);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    if (c->hname_len == 6 && strncasecmp(c->hname, "expect", 6) == 0 && c->hvalue_len == 12 &&
        strncasecmp(c->hvalue, "100-continue", 12) == 0)
        c->expect_continue = true;
    c->hname_len = c->hvalue_len = 0;
    c->new_header = true;
    return 0;
}

/* The pseudo-headers Envoy's HTTP/1 codec makes, for %REQ(:METHOD)%,
 * %REQ(:PATH)% and %REQ(:AUTHORITY)% in the access logs: :path is the
 * request target (an absolute-form target reduced to its path and query),
 * :authority the Host header, which it replaces. */
static void add_pseudo_headers(admin_conn_t *c, llhttp_t *p)
{
    sharp_headers_t *h = &c->req_headers;
    const char *url = sharp_sbuf_cstr(&c->url);
    size_t len = c->url.len;
    const char *scheme = len > 3 && url[0] != '/' ? memchr(url, ':', len) : NULL;
    if (scheme && scheme + 3 <= url + len && memcmp(scheme, "://", 3) == 0) {
        const char *slash = memchr(scheme + 3, '/', (size_t)(url + len - scheme - 3));
        len = slash ? (size_t)(url + len - slash) : 1;
        url = slash ? slash : "/";
    }
    sharp_str_t host;
    if (sharp_headers_get_cstr(h, "host", &host)) {
        /* host points into the map's buffer, which adding may move */
        char *v = sharp_strndup(host.p, host.len);
        sharp_headers_remove_cstr(h, "host");
        sharp_headers_set(h, ":authority", 10, v, host.len);
        free(v);
    }
    sharp_headers_set_cstr(h, ":method", llhttp_method_name((llhttp_method_t)llhttp_get_method(p)));
    sharp_headers_set(h, ":path", 5, url, len);
}

/* A client that waits for "100 Continue" before sending its body gets it at
 * once: bodies are read (and dropped) on every endpoint. */
static int on_headers_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    c->hname_len = c->hvalue_len = 0;
    add_pseudo_headers(c, p);
    c->headers_done = true;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > ADMIN_MAX_REQUEST - c->req_bytes) {
        c->fail_status = 413; /* refuse before the body is sent or read */
        return -1;
    }
    if (!c->expect_continue || c->closing) return 0;
    c->expect_continue = false;
    admin_write_t *w = sharp_calloc(1, sizeof *w);
    w->conn = c;
    sharp_sbuf_puts(&w->head, "HTTP/1.1 100 Continue\r\n\r\n");
    uv_buf_t b = uv_buf_init(w->head.data, (unsigned)w->head.len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        sharp_sbuf_free(&w->head);
        free(w);
        return -1; /* the socket is gone; the parse error ends the connection */
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    admin_conn_t *c = p->data;
    c->body_bytes += n;
    if (count_bytes(c, n, 413) < 0) return -1;
    sharp_sbuf_append(&c->req_body, at, n);
    return 0;
}

/* The request target as a path: origin-form as is; absolute-form
 * ("http://host/path") reduced to its path. */
static void target_path(const char *url, size_t len, sharp_str_t *path, sharp_str_t *query)
{
    const char *scheme = len > 3 ? memchr(url, ':', len) : NULL;
    if (url[0] != '/' && scheme && scheme + 3 <= url + len && memcmp(scheme, "://", 3) == 0) {
        const char *host = scheme + 3;
        const char *slash = memchr(host, '/', (size_t)(url + len - host));
        if (!slash) {
            sharp_url_split("/", 1, path, query);
            return;
        }
        len -= (size_t)(slash - url);
        url = slash;
    }
    sharp_url_split(url, len, path, query);
}

/* The path and its query, as they came (contiguous in the request line
 * or :path). */
static sharp_str_t target_of(sharp_str_t path, sharp_str_t query)
{
    sharp_str_t t = path;
    if (query.len && query.p > path.p) t.len = (size_t)(query.p + query.len - path.p);
    return t;
}

static int on_message_complete(llhttp_t *p)
{
    admin_conn_t *c = p->data;
    sharp_admin_request_t rq = {.srv = c->admin->srv};
    rq.method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    sharp_str_t query;
    target_path(sharp_sbuf_cstr(&c->url), c->url.len, &rq.path, &query);
    rq.target = target_of(rq.path, query);
    sharp_query_parse(query.p, query.len, &rq.query);
    /* form values, which /runtime_modify reads as Envoy does: only with
     * exactly this content type */
    sharp_str_t ct;
    if (c->req_body.len && sharp_headers_get_cstr(&c->req_headers, "content-type", &ct) &&
        ct.len == 33 && memcmp(ct.p, "application/x-www-form-urlencoded", 33) == 0)
        sharp_query_parse(c->req_body.data, c->req_body.len, &rq.form);
    sharp_admin_response_t rsp = {0};
    sharp__admin_handle(&rq, &rsp);
    conn_access_log(c, rsp.status, llhttp_get_method(p) == HTTP_HEAD ? 0 : rsp.body.len);
    sharp_log_debug("admin: %s %.*s -> %u", rq.method, (int)c->url.len, c->url.data, rsp.status);
    sharp_query_free(&rq.query);
    sharp_query_free(&rq.form);
    bool keep_alive = llhttp_should_keep_alive(p) && !p->upgrade && !c->admin->stopping;
    bool http10 = llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0;
    conn_respond(c, &rsp, keep_alive, http10, llhttp_get_method(p) == HTTP_HEAD);
    return HPE_PAUSED; /* one request at a time; conn_process resumes */
}

/* Feeds buffered input to the parser until it is used up, the connection
 * ends, or too much output is queued. */
static void conn_process(admin_conn_t *c)
{
    while (!c->closing && !c->finishing && c->roff < c->rlen) {
        if (c->tcp.write_queue_size >= ADMIN_WRITE_HIGH) break;
        const char *p = c->rbuf + c->roff;
        size_t n = c->rlen - c->roff;
        llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
        if (e == HPE_OK) {
            c->roff = c->rlen;
        } else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            size_t used = pos && pos >= p && pos <= p + n ? (size_t)(pos - p) : n;
            c->roff += used;
            llhttp_resume(&c->parser);
            if (e == HPE_PAUSED_UPGRADE) conn_finish(c);
        } else {
            if (!c->closing && !c->finishing) {
                sharp_log_debug("admin: bad request: %s", llhttp_errno_name(e));
                conn_fail(c, c->fail_status ? c->fail_status : 400);
            }
            c->roff = c->rlen;
        }
    }
    if (c->roff >= c->rlen) c->roff = c->rlen = 0;
    conn_update_reading(c);
}

/* ---- HTTP/2: gRPC ---------------------------------------------------------- */

/* The client connection preface (RFC 9113 section 3.4): a connection that
 * starts with it is HTTP/2 with prior knowledge (gRPC clients, curl
 * --http2-prior-knowledge); everything else is HTTP/1 as before. gRPC calls
 * go to the gRPC server's registry, other requests to the admin handlers. */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof h2_preface - 1)

static void h2_write(void *ctx, sharp_sbuf_t *bytes)
{
    admin_conn_t *c = ctx;
    if (c->closing) {
        sharp_sbuf_free(bytes);
        return;
    }
    admin_write_t *w = sharp_calloc(1, sizeof *w);
    w->conn = c;
    w->body = *bytes;
    memset(bytes, 0, sizeof *bytes);
    uv_buf_t b = uv_buf_init(w->body.data, (unsigned)w->body.len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        sharp_sbuf_free(&w->body);
        free(w);
        conn_close(c);
    }
}

static size_t h2_write_queued(void *ctx)
{
    admin_conn_t *c = ctx;
    return c->tcp.write_queue_size;
}

static void h2_done(void *ctx)
{
    conn_finish(ctx);
}

/* /quitquitquit over HTTP/2: its response's last bytes have been handed to
 * h2_write; the server shuts down once they are written, as on HTTP/1. */
static void h2_quit(void *arg)
{
    admin_conn_t *c = arg;
    if (c->closing || c->tcp.write_queue_size == 0)
        sharp_server_shutdown(c->admin->srv, false);
    else
        c->quit_pending = true;
}

/* An admin page over HTTP/2: the same handlers as HTTP/1, the same access
 * logs (with the request's own pseudo-headers, protocol HTTP/2). */
static void h2_plain(void *ctx, const sharp_headers_t *req, const char *body, size_t len,
                     sharp_grpc_plain_response_t *out)
{
    admin_conn_t *c = ctx;
    uint64_t start_wall_us = sharp_wall_us(), start_ns = sharp_now_ns();
    sharp_admin_request_t rq = {.srv = c->admin->srv};
    sharp_str_t m = {0}, target = {0}, ct, query;
    sharp_headers_get_cstr(req, ":method", &m);
    sharp_headers_get_cstr(req, ":path", &target);
    char method[24];
    snprintf(method, sizeof method, "%.*s", (int)SHARP_MIN(m.len, sizeof method - 1), m.p);
    rq.method = method;
    if (!target.len) target = SHARP_STR("/");
    sharp_url_split(target.p, target.len, &rq.path, &query);
    rq.target = target_of(rq.path, query);
    sharp_query_parse(query.p, query.len, &rq.query);
    if (len && sharp_headers_get_cstr(req, "content-type", &ct) && ct.len == 33 &&
        memcmp(ct.p, "application/x-www-form-urlencoded", 33) == 0)
        sharp_query_parse(body, len, &rq.form);
    sharp_admin_response_t rsp = {0};
    sharp__admin_handle(&rq, &rsp);
    sharp_query_free(&rq.query);
    sharp_query_free(&rq.form);
    sharp_log_debug("admin: HTTP/2 %s %.*s -> %u", method, (int)target.len, target.p, rsp.status);
    const sharp_snapshot_t *snap = c->admin->srv->snap;
    if (snap && snap->nadmin_access_logs) {
        sharp_stream_info_t si = {0};
        si.start_wall_us = start_wall_us;
        si.start_ns = start_ns;
        si.end_ns = si.request_complete_ns = sharp_now_ns();
        si.protocol = "HTTP/2";
        si.response_code = rsp.status;
        si.bytes_received = len;
        si.bytes_sent = strcmp(method, "HEAD") == 0 ? 0 : rsp.body.len;
        snprintf(si.downstream_remote_address, sizeof si.downstream_remote_address, "%s", c->remote);
        snprintf(si.downstream_local_address, sizeof si.downstream_local_address, "%s", c->local);
        si.request_headers = req;
        for (uint32_t i = 0; i < snap->nadmin_access_logs; i++)
            sharp_access_log_write_now(snap->admin_access_logs[i], &si);
    }
    out->status = rsp.status;
    out->content_type = rsp.content_type ? rsp.content_type : SHARP_ADMIN_CT_TEXT;
    out->body = rsp.body;
    if (rsp.quit_after) {
        out->after = h2_quit;
        out->after_arg = c;
    }
}

static bool h2_allowed(void *ctx, sharp_str_t path)
{
    admin_conn_t *c = ctx;
    return sharp__admin_allowed(c->admin->srv, path);
}

static const sharp_grpc_conn_io_t h2_io = {h2_write, h2_write_queued, h2_done, h2_plain, h2_allowed};

/* Decides the protocol from the first bytes read. Returns -1 while they are
 * a proper beginning of the preface (more is needed). */
static int conn_sniff(admin_conn_t *c)
{
    size_t n = SHARP_MIN(c->rlen, H2_PREFACE_LEN);
    if (memcmp(c->rbuf, h2_preface, n) != 0) {
        c->proto_known = true; /* HTTP/1 */
        return 0;
    }
    if (n < H2_PREFACE_LEN) return -1;
    c->proto_known = true;
    if (!c->admin->srv->grpc) return 0; /* no gRPC server: llhttp refuses it */
    c->h2 = sharp_grpc_conn_new(c->admin->srv->grpc, c->tcp.loop, &h2_io, c);
    sharp_log_debug("admin: HTTP/2 connection from %s", c->remote);
    return 0;
}

/* ---- reading --------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    admin_conn_t *c = h->data;
    if (c->lingering) {
        /* Input after our FIN is dropped: reuse the whole buffer. */
        *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
        return;
    }
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(sizeof c->rbuf - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_conn_t *c = s->data;
    if (c->closing) return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            conn_close(c);
            return;
        }
        /* The client half-closed: answer what is complete, then close. A
         * request cut short is dropped without an answer. */
        c->reading = false;
        uv_read_stop(s);
        conn_finish(c);
        return;
    }
    if (nread == 0) return;
    uv_timer_start(&c->timer, on_timer, ADMIN_IDLE_MS, 0);
    c->rlen += (size_t)nread;
    if (!c->proto_known && conn_sniff(c) != 0) return; /* a preface's first bytes only */
    if (c->h2) {
        size_t n = c->rlen;
        c->roff = c->rlen = 0;
        if (sharp_grpc_conn_recv(c->h2, (const uint8_t *)c->rbuf, n) != 0) return; /* `done` follows */
        conn_update_reading(c);
        return;
    }
    conn_process(c);
}

/* Reads only when every buffered byte has been parsed and the connection
 * still takes requests; an HTTP/2 connection reads while its output is
 * below the high-water mark (nghttp2 answers PINGs and SETTINGS itself, so
 * a client that does not read must not be able to queue more). */
static void conn_update_reading(admin_conn_t *c)
{
    if (c->closing || c->lingering) return;
    bool want = !c->finishing && c->roff >= c->rlen;
    if (c->h2) want = !c->finishing && c->tcp.write_queue_size < ADMIN_WRITE_HIGH;
    if (want == c->reading) return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want;
}

static void on_connection(uv_stream_t *server, int status)
{
    sharp_admin_t *a = sharp_container_of((uv_tcp_t *)server, sharp_admin_t, listener);
    if (status < 0) {
        sharp_log_warn("admin: accept failed: %s", uv_strerror(status));
        return;
    }
    if (a->stopping) return;
    admin_conn_t *c = sharp_calloc(1, sizeof *c);
    c->admin = a;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    a->open++;
    sharp_dlist_init(&c->link);
    sharp_dlist_push(&a->conns, &c->link);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage ss;
    if (sharp_stream_peer(&c->tcp, &ss) == 0)
        sharp_addr_str((struct sockaddr *)&ss, c->remote, sizeof c->remote);
    if (ss.ss_family != AF_UNIX) uv_tcp_nodelay(&c->tcp, 1);
    memset(&ss, 0, sizeof ss);
    int sl = sizeof ss;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
        sharp_addr_str((struct sockaddr *)&ss, c->local, sizeof c->local);
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    uv_timer_start(&c->timer, on_timer, ADMIN_IDLE_MS, 0);
    conn_update_reading(c);
}

/* ---- public API ------------------------------------------------------------ */

/* Binds and listens; on failure the half-made admin is closed through the
 * loop (it frees itself once the listener's close callback runs) and NULL is
 * returned with the reason in `err`. */
sharp_admin_t *sharp_admin_start(sharp_server_t *srv, uv_loop_t *loop, const struct sockaddr *addr,
                                 socklen_t addrlen, uint32_t pipe_mode, char *err, size_t errlen)
{
    if (!parser_settings_ready) {
        llhttp_settings_init(&parser_settings);
        parser_settings.on_message_begin = on_message_begin;
        parser_settings.on_url = on_url;
        parser_settings.on_header_field = on_header_field;
        parser_settings.on_header_value = on_header_value;
        parser_settings.on_header_value_complete = on_header_value_complete;
        parser_settings.on_headers_complete = on_headers_complete;
        parser_settings.on_body = on_body;
        parser_settings.on_message_complete = on_message_complete;
        parser_settings_ready = true;
    }
    sharp_admin_t *a = sharp_calloc(1, sizeof *a);
    a->srv = srv;
    sharp_dlist_init(&a->conns);
    int r = uv_tcp_init(loop, &a->listener);
    if (r != 0) {
        snprintf(err, errlen, "uv_tcp_init: %s", uv_strerror(r));
        free(a);
        return NULL;
    }
    a->open = 1;
    if (addr->sa_family == AF_UNIX) {
        /* Bound as a listener's Unix socket is (stale path unlinked, mode
         * applied); libuv then listens and accepts on it through the TCP
         * handle, which only sees a stream fd. */
        char lerr[256];
        int fd = sharp_listen_socket(addr, addrlen, pipe_mode, 0, sharp_server_admin_address(srv), lerr,
                                     sizeof lerr);
        if (fd < 0) {
            snprintf(err, errlen, "%s", lerr);
            a->stopping = true;
            uv_close((uv_handle_t *)&a->listener, on_listener_close);
            return NULL;
        }
        r = uv_tcp_open(&a->listener, fd);
        if (r != 0) close(fd);
    } else {
        r = uv_tcp_bind(&a->listener, addr, 0);
    }
    if (r == 0) r = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    if (r != 0) {
        snprintf(err, errlen, "cannot listen on admin address: %s", uv_strerror(r));
        a->stopping = true;
        uv_close((uv_handle_t *)&a->listener, on_listener_close);
        return NULL;
    }
    return a;
}

void sharp_admin_stop(sharp_admin_t *a)
{
    if (!a || a->stopping) return;
    a->stopping = true;
    uv_close((uv_handle_t *)&a->listener, on_listener_close);
    while (!sharp_dlist_empty(&a->conns)) {
        admin_conn_t *c = sharp_container_of(a->conns.next, admin_conn_t, link);
        conn_close(c); /* unlinks c */
    }
}

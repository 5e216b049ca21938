/* pool.c: per-worker HTTP/1.1 connection pool and upstream client codec.
 *
 * A connection is in exactly one of the pool's lists: connecting, idle or
 * busy (bound to a request). Re-entrancy: the bound request's callbacks may
 * cancel the request or reset the connection from inside an llhttp callback;
 * the connection is then marked closing and the parser callbacks stop, and
 * its memory is freed only in the uv_close callback. */
#include "upstream/pool.h"
#include "upstream/outlier.h"
#include "log.h"
#include "net.h"

#include <llhttp.h>
#include <stdio.h>

typedef enum { CX_CONNECTING, CX_IDLE, CX_BUSY, CX_CLOSING } cx_state_t;

struct sharp_upstream_cx {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t timer; /* connect timeout, then idle timeout */
    uv_timer_t duration_timer; /* max_connection_duration, initialized only when configured */
    sharp_pool_t *pool;
    sharp_dlist_t link;
    cx_state_t state;
    llhttp_t parser;
    sharp_writer_t writer;
    sharp_upstream_request_t *req;
    sharp_headers_t resp;
    bool in_value;
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
    bool connected;
    bool connect_error; /* uv_tcp_connect failed at once: the timer reports it */
    bool connected_at_once; /* a Unix socket connected in new_connection: the timer reports it */
    /* HTTP upgrade: the bound request asked for one (such a connection is
     * never reused), the upstream answered 101, and its bytes now flow
     * unparsed both ways */
    bool upgrade_request;
    bool upgraded;
    bool tunnel;
    bool draining;      /* the host's pool was drained: close after the current request */
    uint32_t requests;
    int handles_open;
    unsigned long long id;       /* "[C<id>]" in log lines */
    uint64_t start_ns, connected_ns;
    char local_addr[SHARP_ADDR_STRLEN];
};

struct sharp_pool {
    sharp_worker_t *worker;
    sharp_cluster_t *cluster;
    sharp_host_t *host;
    sharp_priority_t priority; /* whose circuit breaker counts its connections and waiters */
    sharp_cb_counts_t *open;   /* cluster->open[priority] */
    sharp_dlist_t connecting, idle, busy, pending;
    uint32_t nconnecting, npending, ncx;
    uint32_t drain_gen; /* the host's drain_gen this pool last acted on */
    bool destroying;
};

static llhttp_settings_t parser_settings;
static void cx_close(sharp_upstream_cx_t *cx);
static void maybe_connect(sharp_pool_t *p);
static void cx_start_reading(sharp_upstream_cx_t *cx);

#define CX(link_ptr) sharp_container_of(link_ptr, sharp_upstream_cx_t, link)
#define REQ(link_ptr) sharp_container_of(link_ptr, sharp_upstream_request_t, link)

static sharp_stats_shard_t *shard(sharp_pool_t *p)
{
    return p->worker->stats;
}

sharp_pool_t *sharp_pool_create(sharp_worker_t *w, sharp_cluster_t *c, sharp_host_t *h, sharp_priority_t prio)
{
    sharp_pool_t *p = sharp_calloc(1, sizeof *p);
    p->worker = w;
    p->cluster = c;
    p->host = h;
    p->priority = prio;
    p->open = &c->open[prio];
    p->drain_gen = atomic_load_explicit(&h->drain_gen, memory_order_acquire);
    sharp_dlist_init(&p->connecting);
    sharp_dlist_init(&p->idle);
    sharp_dlist_init(&p->busy);
    sharp_dlist_init(&p->pending);
    return p;
}

static void fail_pending(sharp_pool_t *p, sharp_pool_failure_t why, const char *detail)
{
    sharp_upstream_request_t *r = REQ(p->pending.next);
    sharp_dlist_remove(&r->link);
    r->pending = false;
    p->npending--;
    atomic_fetch_sub_explicit(&p->open->rq_pending_open, 1, memory_order_relaxed);
    sharp_gauge_add(shard(p), p->cluster->st.rq_pending_active, -1);
    r->cb->on_pool_failure(r->ctx, why, detail);
}

static void maybe_free_pool(sharp_pool_t *p)
{
    if (p->destroying && p->ncx == 0) free(p);
}

void sharp_pool_destroy(sharp_pool_t *p)
{
    p->destroying = true;
    while (p->npending) fail_pending(p, SHARP_POOL_FAIL_CONNECT, "pool removed");
    sharp_dlist_t *lists[] = {&p->connecting, &p->idle, &p->busy};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(lists); i++) {
        sharp_dlist_t *n = lists[i]->next;
        while (n != lists[i]) {
            sharp_dlist_t *next = n->next;
            cx_close(CX(n));
            n = next;
        }
    }
    maybe_free_pool(p);
}

void sharp_pool_close_idle(sharp_pool_t *p)
{
    while (!sharp_dlist_empty(&p->idle)) cx_close(CX(p->idle.next));
}

/* Envoy's drainConnections(DrainExistingConnections): idle connections
 * close now; connections still connecting close unless requests wait for
 * them; busy ones serve their current request and then close. */
void sharp_pool_check_drain(sharp_pool_t *p)
{
    uint32_t gen = atomic_load_explicit(&p->host->drain_gen, memory_order_acquire);
    if (gen == p->drain_gen) return;
    p->drain_gen = gen;
    sharp_debug(pool, "draining connections to %s", p->host->address);
    sharp_pool_close_idle(p);
    if (!p->npending)
        while (!sharp_dlist_empty(&p->connecting)) cx_close(CX(p->connecting.next));
    for (sharp_dlist_t *n = p->busy.next; n != &p->busy; n = n->next) CX(n)->draining = true;
}

/* ---- connection lifecycle ---- */

static void on_handle_closed(uv_handle_t *h)
{
    sharp_upstream_cx_t *cx = h->data;
    if (--cx->handles_open > 0) return;
    sharp_pool_t *p = cx->pool;
    sharp_headers_free(&cx->resp);
    free(cx);
    p->ncx--;
    maybe_free_pool(p);
}

static void move_to(sharp_upstream_cx_t *cx, sharp_dlist_t *list, cx_state_t st)
{
    sharp_dlist_remove(&cx->link);
    sharp_dlist_push(list, &cx->link);
    cx->state = st;
}

/* Closes the connection; a bound request learns of it through on_reset
 * unless it is the one closing it (cancel clears cx->req first). */
static void cx_close(sharp_upstream_cx_t *cx)
{
    if (cx->state == CX_CLOSING) return;
    sharp_pool_t *p = cx->pool;
    bool was_connected = cx->state != CX_CONNECTING;
    sharp_debug(connection, "[C%llu] closing upstream connection to %s (%u requests)", cx->id,
                p->host->address, cx->requests);
    if (cx->state == CX_CONNECTING) p->nconnecting--;
    sharp_dlist_remove(&cx->link);
    cx->state = CX_CLOSING;
    sharp_stats_shard_t *sh = shard(p);
    sharp_gauge_add(sh, p->cluster->st.cx_active, -1);
    sharp_counter_inc(sh, p->cluster->st.cx_destroy);
    if (cx->connected)
        sharp_histogram_record(sh, p->cluster->st.cx_length_ms, (sharp_now_ns() - cx->connected_ns) / 1000000);
    atomic_fetch_sub_explicit(&p->host->active_cx, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&p->open->cx_open, 1, memory_order_relaxed);
    uv_timer_stop(&cx->timer);
    uv_close((uv_handle_t *)&cx->timer, on_handle_closed);
    if (p->cluster->has_max_connection_duration) uv_close((uv_handle_t *)&cx->duration_timer, on_handle_closed);
    uv_close((uv_handle_t *)&cx->tcp, on_handle_closed);
    /* Requests still waiting may now get a connection; not after a failed
     * connect, whose caller fails the waiting requests next. */
    if (was_connected) maybe_connect(p);
}

static void reset_bound(sharp_upstream_cx_t *cx, sharp_reset_reason_t why, const char *detail)
{
    sharp_upstream_request_t *r = cx->req;
    cx_close(cx);
    if (r) {
        cx->req = NULL;
        r->cx = NULL;
        r->cb->on_reset(r->ctx, why, detail);
    }
}

static void on_idle_timeout(uv_timer_t *t)
{
    sharp_upstream_cx_t *cx = t->data;
    sharp_debug(pool, "[C%llu] idle timeout", cx->id);
    sharp_counter_inc(shard(cx->pool), cx->pool->cluster->st.cx_idle_timeout);
    cx_close(cx);
}

/* Envoy's onConnectionDurationTimeout: the connection drains (no new
 * request; closed now if idle, else once its request is done). */
static void on_duration_timeout(uv_timer_t *t)
{
    sharp_upstream_cx_t *cx = t->data;
    if (cx->state == CX_CLOSING || cx->draining) return;
    sharp_debug(pool, "[C%llu] max connection duration reached, draining", cx->id);
    sharp_counter_inc(shard(cx->pool), cx->pool->cluster->st.cx_max_duration_reached);
    cx->draining = true;
    if (cx->state == CX_IDLE) cx_close(cx);
}

static void bind_request(sharp_upstream_cx_t *cx, sharp_upstream_request_t *r)
{
    sharp_pool_t *p = cx->pool;
    uv_timer_stop(&cx->timer);
    move_to(cx, &p->busy, CX_BUSY);
    cx->req = r;
    r->cx = cx;
    cx->request_complete = cx->response_started = cx->response_complete = false;
    cx->end_sent = cx->informational = cx->chunked_request = false;
    cx->upgrade_request = cx->upgraded = cx->tunnel = false;
    cx->requests++;
    /* Envoy's pool-ready result: the try has a connection (split mode
     * counts it as a local-origin success; otherwise it is ignored). */
    sharp_outlier_put_local(p->cluster, p->host, SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS);
    sharp_headers_clear(&cx->resp);
    llhttp_init(&cx->parser, HTTP_RESPONSE, &parser_settings);
    cx->parser.data = cx;
    if (cx->read_disabled) {
        cx->read_disabled = false;
        cx_start_reading(cx);
    }
    sharp_debug(pool, "[C%llu] attaching to next stream (request %u on this connection)", cx->id, cx->requests);
    r->cb->on_ready(r->ctx, cx);
}

/* Gives an idle connection to the oldest pending request, if any. */
static bool serve_pending(sharp_upstream_cx_t *cx)
{
    sharp_pool_t *p = cx->pool;
    if (!p->npending) return false;
    sharp_upstream_request_t *r = REQ(p->pending.next);
    sharp_dlist_remove(&r->link);
    r->pending = false;
    p->npending--;
    atomic_fetch_sub_explicit(&p->open->rq_pending_open, 1, memory_order_relaxed);
    sharp_gauge_add(shard(p), p->cluster->st.rq_pending_active, -1);
    bind_request(cx, r);
    return true;
}

static void make_idle(sharp_upstream_cx_t *cx)
{
    sharp_pool_t *p = cx->pool;
    move_to(cx, &p->idle, CX_IDLE);
    if (serve_pending(cx)) return;
    if (p->destroying || p->worker->stopping) {
        cx_close(cx);
        return;
    }
    if (p->cluster->idle_timeout_ms)
        uv_timer_start(&cx->timer, on_idle_timeout, p->cluster->idle_timeout_ms, 0);
}

static void on_writer_drain(sharp_writer_t *w)
{
    sharp_upstream_cx_t *cx = sharp_container_of(w, sharp_upstream_cx_t, writer);
    if (cx->above_watermark) {
        cx->above_watermark = false;
        if (cx->req && cx->req->cb->on_write_watermark)
            cx->req->cb->on_write_watermark(cx->req->ctx, false);
    }
}

static void on_writer_error(sharp_writer_t *w, int status)
{
    sharp_upstream_cx_t *cx = sharp_container_of(w, sharp_upstream_cx_t, writer);
    if (cx->state == CX_CLOSING) return;
    reset_bound(cx, SHARP_RESET_CONNECTION_TERMINATION, uv_strerror(status));
}

/* After a complete response: reuse the connection when both sides allow it
 * and nothing unexpected followed the response, else close it. */
static void finish_response(sharp_upstream_cx_t *cx, bool extra_bytes)
{
    sharp_upstream_request_t *r = cx->req;
    if (r) { /* the request owner did not release it: do it for them */
        cx->req = NULL;
        r->cx = NULL;
    }
    sharp_debug(pool, "[C%llu] response complete", cx->id);
    if (cx->keep_alive && cx->request_complete && !extra_bytes && !cx->upgrade_request && !cx->draining &&
        !cx->pool->worker->draining) {
        make_idle(cx);
    } else {
        sharp_debug(pool, "[C%llu] not reusable (%s)", cx->id,
                    !cx->keep_alive ? "connection: close" : !cx->request_complete ? "request not complete"
                    : extra_bytes ? "bytes after the response" : cx->upgrade_request ? "upgrade request"
                    : "draining");
        cx_close(cx);
    }
}

/* Upstream bytes of an upgraded connection: response data, unparsed. */
static void tunnel_data(sharp_upstream_cx_t *cx, const char *p, size_t n)
{
    sharp_counter_add(shard(cx->pool), cx->pool->cluster->st.cx_rx_bytes_total, n);
    if (cx->req) cx->req->cb->on_data(cx->req->ctx, p, n, false);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sharp_upstream_cx_t *cx = s->data;
    if (nread > 0) sharp_trace(connection, "[C%llu] read %zd bytes", cx->id, nread);
    if (nread > 0 && cx->state != CX_CLOSING) {
        if (cx->state != CX_BUSY) {
            /* Bytes on an idle connection: the server broke the protocol. */
            sharp_debug(connection, "[C%llu] unexpected bytes on an idle connection", cx->id);
            cx_close(cx);
        } else if (cx->tunnel) {
            tunnel_data(cx, buf->base, (size_t)nread);
        } else {
            cx->in_execute = true;
            llhttp_errno_t e = llhttp_execute(&cx->parser, buf->base, (size_t)nread);
            cx->in_execute = false;
            if (cx->state == CX_CLOSING) {
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
                sharp_counter_inc(shard(cx->pool), cx->pool->cluster->st.cx_protocol_error);
                reset_bound(cx, SHARP_RESET_PROTOCOL_ERROR,
                            e == HPE_PAUSED_UPGRADE ? "upgrade not supported" : llhttp_errno_name(e));
            }
        }
    } else if (nread < 0 && cx->state != CX_CLOSING) {
        sharp_debug(connection, "[C%llu] remote close (%s)", cx->id, uv_err_name((int)nread));
        if (cx->state == CX_BUSY && cx->tunnel && nread == UV_EOF && cx->req) {
            /* the upstream ended the tunnel: the end of the response */
            cx->response_complete = cx->end_sent = true;
            sharp_counter_inc(shard(cx->pool), cx->pool->cluster->st.cx_destroy_remote);
            sharp_upstream_request_t *r = cx->req;
            r->cb->on_data(r->ctx, NULL, 0, true);
        }
        if (cx->state == CX_BUSY && cx->tunnel && cx->response_complete) {
            /* ended: closed below */
        } else if (cx->state == CX_BUSY) {
            if (nread == UV_EOF && cx->response_started && !cx->response_complete) {
                cx->in_execute = true;
                llhttp_finish(&cx->parser); /* ends a close-delimited body */
                cx->in_execute = false;
                if (cx->state != CX_CLOSING && cx->response_complete) finish_response(cx, false);
            }
            if (cx->state != CX_CLOSING && !cx->response_complete) {
                sharp_counter_inc(shard(cx->pool), cx->pool->cluster->st.cx_destroy_remote);
                reset_bound(cx, nread == UV_ECONNRESET ? SHARP_RESET_REMOTE
                                                       : SHARP_RESET_CONNECTION_TERMINATION,
                            nread == UV_ECONNRESET ? "remote reset" : "connection termination");
            }
        }
        if (cx->state != CX_CLOSING) cx_close(cx);
    }
}

static void cx_start_reading(sharp_upstream_cx_t *cx)
{
    uv_read_start((uv_stream_t *)&cx->tcp, sharp_read_alloc, on_read);
}

static void on_connect(uv_connect_t *req, int status);

static void on_connect_timeout(uv_timer_t *t)
{
    sharp_upstream_cx_t *cx = t->data;
    if (cx->connected_at_once) {
        cx->connected_at_once = false;
        on_connect(&cx->connect_req, 0);
        return;
    }
    sharp_pool_t *p = cx->pool;
    sharp_stats_shard_t *sh = shard(p);
    sharp_debug(pool, "[C%llu] connect %s to %s", cx->id, cx->connect_error ? "failed" : "timeout",
                p->host->address);
    sharp_counter_inc(sh, p->cluster->st.cx_connect_timeout);
    sharp_counter_inc(sh, p->cluster->st.cx_connect_fail);
    atomic_fetch_add_explicit(&p->host->cx_connect_fail, 1, memory_order_relaxed);
    cx_close(cx);
    if (p->npending) {
        /* One outlier result per request the failure reaches, as Envoy's
         * router reports pool failures. */
        sharp_outlier_put_local(p->cluster, p->host,
                                cx->connect_error ? SHARP_OUTLIER_LOCAL_CONNECT_FAILED
                                                  : SHARP_OUTLIER_LOCAL_TIMEOUT);
        fail_pending(p, SHARP_POOL_FAIL_TIMEOUT, "connection timeout");
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    sharp_upstream_cx_t *cx = req->data;
    if (status == UV_ECANCELED || cx->state == CX_CLOSING) return;
    sharp_pool_t *p = cx->pool;
    if (status < 0) {
        sharp_stats_shard_t *sh = shard(p);
        sharp_counter_inc(sh, p->cluster->st.cx_connect_fail);
        atomic_fetch_add_explicit(&p->host->cx_connect_fail, 1, memory_order_relaxed);
        char detail[128];
        snprintf(detail, sizeof detail, "delayed connect error: %s", uv_err_name(status));
        sharp_debug(connection, "[C%llu] %s (%s)", cx->id, detail, p->host->address);
        cx_close(cx);
        if (p->npending) {
            sharp_outlier_put_local(p->cluster, p->host, SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
            fail_pending(p, SHARP_POOL_FAIL_CONNECT, detail);
        }
        return;
    }
    p->nconnecting--;
    cx->connected = true;
    cx->connected_ns = sharp_now_ns();
    sharp_histogram_record(shard(p), p->cluster->st.cx_connect_ms, (cx->connected_ns - cx->start_ns) / 1000000);
    sharp_debug(connection, "[C%llu] connected to %s", cx->id, p->host->address);
    uv_timer_stop(&cx->timer);
    /* Envoy gives a Unix socket connection no local address (SocketImpl::
     * connect records one for IP only: %UPSTREAM_LOCAL_ADDRESS% is "-")
     * and no TCP_NODELAY. */
    if (p->host->addr.ss_family != AF_UNIX) {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (uv_tcp_getsockname(&cx->tcp, (struct sockaddr *)&ss, &len) == 0)
            sharp_addr_str((struct sockaddr *)&ss, cx->local_addr, sizeof cx->local_addr);
        uv_tcp_nodelay(&cx->tcp, 1);
    }
    /* Envoy starts the duration timer once the connection is up. */
    if (p->cluster->has_max_connection_duration)
        uv_timer_start(&cx->duration_timer, on_duration_timeout, p->cluster->max_connection_duration_ms, 0);
    cx_start_reading(cx);
    move_to(cx, &p->idle, CX_IDLE);
    cx->state = CX_IDLE;
    make_idle(cx);
}

static void new_connection(sharp_pool_t *p)
{
    sharp_cluster_t *c = p->cluster;
    sharp_stats_shard_t *sh = shard(p);
    sharp_upstream_cx_t *cx = sharp_calloc(1, sizeof *cx);
    cx->pool = p;
    cx->id = sharp_log_next_connection_id();
    cx->start_ns = sharp_now_ns();
    sharp_debug(pool, "[C%llu] creating a new connection to %s (cluster '%s')", cx->id, p->host->address,
                c->name);
    sharp_dlist_init(&cx->link);
    sharp_headers_init(&cx->resp);
    /* The socket exists before connect so that options apply to the SYN
     * (Envoy sets its upstream socket options in STATE_PREBIND). */
    int init_rc = uv_tcp_init_ex(&p->worker->loop, &cx->tcp, p->host->addr.ss_family);
    if (init_rc < 0) uv_tcp_init(&p->worker->loop, &cx->tcp);
    uv_timer_init(&p->worker->loop, &cx->timer);
    cx->tcp.data = cx->timer.data = cx->connect_req.data = cx;
    cx->handles_open = 2;
    if (c->has_max_connection_duration) {
        uv_timer_init(&p->worker->loop, &cx->duration_timer);
        cx->duration_timer.data = cx;
        cx->handles_open++;
    }
    sharp_writer_init(&cx->writer, (uv_stream_t *)&cx->tcp, on_writer_drain, on_writer_error);
    p->ncx++;
    p->nconnecting++;
    sharp_dlist_push(&p->connecting, &cx->link);
    cx->state = CX_CONNECTING;
    sharp_counter_inc(sh, c->st.cx_total);
    sharp_gauge_add(sh, c->st.cx_active, 1);
    atomic_fetch_add_explicit(&p->host->cx_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->host->active_cx, 1, memory_order_relaxed);
    /* A Unix socket has no socket before connect and takes no TCP options. */
    bool is_unix = p->host->addr.ss_family == AF_UNIX;
    int rc = init_rc < 0 && !is_unix ? init_rc : 0;
    if (rc == 0 && !is_unix) rc = sharp_cluster_socket_options(c, &cx->tcp);
    if (rc == 0)
        rc = sharp_stream_connect(&cx->tcp, &cx->connect_req, (struct sockaddr *)&p->host->addr, p->host->addrlen,
                                  on_connect, &cx->connected_at_once);
    if (rc == 0 && cx->connected_at_once) {
        /* Reported from the next loop turn, as a callback would be: the
         * caller may be in the middle of queueing the request. */
        uv_timer_start(&cx->timer, on_connect_timeout, 0, 0);
        return;
    }
    if (rc < 0) {
        /* Report asynchronously through the connect timer firing at once. */
        sharp_debug(connection, "[C%llu] connect to %s failed: %s", cx->id, p->host->address, uv_strerror(rc));
        cx->connect_error = true;
        uv_timer_start(&cx->timer, on_connect_timeout, 0, 0);
        return;
    }
    uv_timer_start(&cx->timer, on_connect_timeout, c->connect_timeout_ms, 0);
}

bool sharp_pool_acquire(sharp_pool_t *p, sharp_upstream_request_t *req,
                        const sharp_upstream_callbacks_t *cb, void *ctx)
{
    req->cb = cb;
    req->ctx = ctx;
    req->pool = p;
    req->cx = NULL;
    sharp_dlist_init(&req->link);
    sharp_pool_check_drain(p); /* a drain the worker has not acted on yet */
    if (!sharp_dlist_empty(&p->idle)) {
        sharp_upstream_cx_t *cx = CX(p->idle.next);
        sharp_debug(pool, "[C%llu] using existing connection to %s", cx->id, p->host->address);
        req->pending = false;
        bind_request(cx, req);
        return true;
    }
    if (!sharp_cluster_slot_acquire(&p->open->rq_pending_open, sharp_cluster_cb_max(p->cluster, p->priority, SHARP_CB_MAX_PENDING_REQUESTS)))
        return false;
    sharp_stats_shard_t *sh = shard(p);
    sharp_counter_inc(sh, p->cluster->st.rq_pending_total);
    sharp_gauge_add(sh, p->cluster->st.rq_pending_active, 1);
    sharp_debug(pool, "queueing stream due to no available connections (host %s, %u waiting)",
                p->host->address, p->npending + 1);
    req->pending = true;
    sharp_dlist_push(&p->pending, &req->link);
    p->npending++;
    maybe_connect(p);
    return true;
}

/* Opens a connection for the waiting requests while the cluster's
 * max_connections breaker has room. Otherwise they keep waiting for a
 * connection of this pool to become free (bounded by max_pending_requests
 * and the route timeout), and upstream_cx_overflow counts it, as in Envoy. */
static void maybe_connect(sharp_pool_t *p)
{
    if (p->destroying || p->nconnecting >= p->npending) return;
    if (sharp_cluster_slot_acquire(&p->open->cx_open, sharp_cluster_cb_max(p->cluster, p->priority, SHARP_CB_MAX_CONNECTIONS))) new_connection(p);
    else sharp_counter_inc(shard(p), p->cluster->st.cx_overflow);
}

void sharp_pool_cancel(sharp_upstream_request_t *req)
{
    if (req->pending) {
        sharp_pool_t *p = req->pool;
        sharp_dlist_remove(&req->link);
        req->pending = false;
        p->npending--;
        atomic_fetch_sub_explicit(&p->open->rq_pending_open, 1, memory_order_relaxed);
        sharp_gauge_add(shard(p), p->cluster->st.rq_pending_active, -1);
        return;
    }
    sharp_upstream_cx_t *cx = req->cx;
    if (!cx) return;
    cx->req = NULL;
    req->cx = NULL;
    if (cx->state == CX_CLOSING) return;
    /* mid-response, or an upgrade: cannot be reused */
    if (!cx->response_complete || cx->upgrade_request) cx_close(cx);
    else if (!cx->in_execute) finish_response(cx, false);
    /* else on_read finishes it once the parser returns */
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
static void upgrade_half_close(sharp_upstream_cx_t *cx)
{
    uv_shutdown_t *req = sharp_calloc(1, sizeof *req);
    if (uv_shutdown(req, (uv_stream_t *)&cx->tcp, on_upstream_shutdown) < 0) free(req);
}

void sharp_upstream_cx_send_headers(sharp_upstream_cx_t *cx, const sharp_headers_t *h, bool end_stream)
{
    sharp_trace(pool, "[C%llu] encoding request headers (end_stream=%s)", cx->id, end_stream ? "true" : "false");
    sharp_str_t method = SHARP_STR("GET"), path = SHARP_STR("/"), authority = SHARP_STR("");
    sharp_headers_get_cstr(h, ":method", &method);
    sharp_headers_get_cstr(h, ":path", &path);
    sharp_headers_get_cstr(h, ":authority", &authority);
    bool has_cl = sharp_headers_get_cstr(h, "content-length", NULL);
    /* The connection manager keeps Upgrade (and Connection) only on an
     * accepted upgrade request. Its payload follows the head unframed, as
     * Envoy's HTTP/1 encoder sends it: never chunked. */
    sharp_str_t conn;
    cx->upgrade_request = sharp_headers_get_cstr(h, "upgrade", NULL) &&
                          sharp_headers_get_cstr(h, "connection", &conn) &&
                          sharp_header_value_has_token(conn, "upgrade");
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
    PUT(method.p, method.len);
    PUT(" ", 1);
    PUT(path.p, path.len);
    PUT(" HTTP/1.1\r\nhost: ", 17);
    PUT(authority.p, authority.len);
    PUT("\r\n", 2);
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        if (skip_request_header(n)) continue;
        PUT(n.p, n.len);
        PUT(": ", 2);
        PUT(v.p, v.len);
        PUT("\r\n", 2);
    }
    if (cx->chunked_request) PUT("transfer-encoding: chunked\r\n", 28);
    PUT("\r\n", 2);
#undef PUT
    uv_buf_t b = uv_buf_init(out, (unsigned)o);
    sharp_writer_write(&cx->writer, &b, 1);
    sharp_counter_add(shard(cx->pool), cx->pool->cluster->st.cx_tx_bytes_total, o);
    if (out != stackbuf) free(out);
    if (end_stream) cx->request_complete = true;
    if (end_stream && cx->upgrade_request) upgrade_half_close(cx);
}

void sharp_upstream_cx_send_data(sharp_upstream_cx_t *cx, const char *p, size_t n, bool end_stream)
{
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
    if (nb) sharp_writer_write(&cx->writer, bufs, nb);
    sharp_counter_add(shard(cx->pool), cx->pool->cluster->st.cx_tx_bytes_total, n);
    if (end_stream) cx->request_complete = true;
    if (end_stream && cx->upgrade_request) upgrade_half_close(cx);
    if (!cx->above_watermark && cx->writer.queued > cx->pool->cluster->per_connection_buffer_limit) {
        cx->above_watermark = true;
        if (cx->req && cx->req->cb->on_write_watermark)
            cx->req->cb->on_write_watermark(cx->req->ctx, true);
    }
}

void sharp_upstream_cx_read_disable(sharp_upstream_cx_t *cx, bool disable)
{
    if (cx->state == CX_CLOSING || disable == cx->read_disabled) return;
    cx->read_disabled = disable;
    if (disable) uv_read_stop((uv_stream_t *)&cx->tcp);
    else cx_start_reading(cx);
}

size_t sharp_upstream_cx_queued(const sharp_upstream_cx_t *cx)
{
    return cx->writer.queued;
}

const char *sharp_upstream_cx_local_address(sharp_upstream_cx_t *cx)
{
    return cx->local_addr;
}

/* ---- response parsing ---- */

static int on_message_begin(llhttp_t *ps)
{
    sharp_upstream_cx_t *cx = ps->data;
    sharp_headers_clear(&cx->resp);
    cx->in_value = false;
    cx->response_started = true;
    return 0;
}

static int on_header_field(llhttp_t *ps, const char *at, size_t n)
{
    sharp_upstream_cx_t *cx = ps->data;
    if (cx->in_value || cx->resp.n == 0) {
        sharp_headers_add(&cx->resp, at, n, "", 0);
        cx->in_value = false;
    } else {
        sharp_headers_append_last_name(&cx->resp, at, n);
    }
    /* max_headers_count: Envoy's codec fails the response once it has more
     * header lines than that (a protocol error: 502 UPE). */
    if (cx->resp.n > cx->pool->cluster->max_response_headers_count ||
        sharp_headers_byte_size(&cx->resp) > 96 * 1024)
        return -1;
    return 0;
}

static int on_header_value(llhttp_t *ps, const char *at, size_t n)
{
    sharp_upstream_cx_t *cx = ps->data;
    cx->in_value = true;
    sharp_headers_append_last_value(&cx->resp, at, n);
    if (sharp_headers_byte_size(&cx->resp) > 96 * 1024) return -1;
    return 0;
}

static int on_headers_complete(llhttp_t *ps)
{
    sharp_upstream_cx_t *cx = ps->data;
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
    if (!cx->req) return -1;
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
    char code[16];
    int cl = snprintf(code, sizeof code, "%u", status);
    /* :status goes first, as in an HTTP/2 header block. */
    sharp_headers_t *h = &cx->resp;
    sharp_headers_add(h, ":status", 7, code, (size_t)cl);
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
    sharp_upstream_request_t *r = cx->req;
    r->cb->on_headers(r->ctx, h, no_body);
    if (cx->state == CX_CLOSING) return -1;
    return no_body ? 1 : 0;
}

static int on_body(llhttp_t *ps, const char *at, size_t n)
{
    sharp_upstream_cx_t *cx = ps->data;
    if (cx->informational) return 0;
    sharp_counter_add(shard(cx->pool), cx->pool->cluster->st.cx_rx_bytes_total, n);
    if (!cx->req) return -1;
    cx->req->cb->on_data(cx->req->ctx, at, n, false);
    return cx->state == CX_CLOSING ? -1 : 0;
}

static int on_message_complete(llhttp_t *ps)
{
    sharp_upstream_cx_t *cx = ps->data;
    if (cx->informational) {
        cx->informational = false;
        return 0;
    }
    if (cx->upgraded) return HPE_PAUSED; /* not an end: the tunnel follows */
    cx->response_complete = true;
    cx->keep_alive = llhttp_should_keep_alive(ps);
    uint32_t maxr = cx->pool->cluster->max_requests_per_connection;
    if (maxr && cx->requests >= maxr) {
        cx->keep_alive = false;
        sharp_counter_inc(shard(cx->pool), cx->pool->cluster->st.cx_max_requests);
    }
    sharp_upstream_request_t *r = cx->req;
    if (r && !cx->end_sent) {
        cx->end_sent = true;
        r->cb->on_data(r->ctx, NULL, 0, true);
    }
    /* One response per request: stop here; on_read decides about reuse. */
    return cx->state == CX_CLOSING ? -1 : HPE_PAUSED;
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
}

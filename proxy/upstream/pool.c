/* pool.c: per-worker upstream connection pool (connection management; the
 * protocols live in the client codecs, see codec.h).
 *
 * A connection is in exactly one of the pool's lists: connecting, ready (it
 * can take another stream: an idle HTTP/1 connection, an HTTP/2 connection
 * below its stream limit) or busy. Requests that find no ready connection
 * wait in the pending list, bounded by the max_pending_requests breaker,
 * while connections are opened for them within max_connections.
 * Re-entrancy: a request's callbacks may cancel it or reset the connection
 * from inside a codec callback; the connection is then marked closing and
 * its memory is freed only once all its handles are closed. */
#include "upstream/codec.h"
#include "upstream/outlier.h"
#include "tls/upstream.h"
#include "log.h"
#include "net.h"

#include <stdio.h>

static void maybe_connect(sharp_pool_t *p);
static void conn_serve(sharp_upstream_conn_t *c);

#define CONN(link_ptr) sharp_container_of(link_ptr, sharp_upstream_conn_t, link)
#define REQ(link_ptr) sharp_container_of(link_ptr, sharp_upstream_request_t, link)

static sharp_stats_shard_t *shard(sharp_pool_t *p)
{
    return p->env->stats;
}

static int conn_fd(sharp_upstream_conn_t *c)
{
    uv_os_fd_t fd;
    return uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 ? fd : -1;
}

sharp_pool_t *sharp_pool_create(const sharp_upstream_env_t *env, sharp_cluster_t *c, sharp_host_t *h, sharp_priority_t prio)
{
    sharp_pool_t *p = sharp_calloc(1, sizeof *p);
    p->env = env;
    p->cluster = sharp_cluster_ref(c); /* a retired pool may outlive every view of its cluster */
    p->host = h;
    atomic_fetch_add_explicit(&h->npools, 1, memory_order_relaxed);
    p->priority = prio;
    p->open = &c->open[prio];
    /* a downstream_protocol cluster's pools are HTTP/1.1 unless the worker
     * makes them its HTTP/2 ones (sharp_pool_use_http2) */
    p->codec = c->http2 && !c->downstream_protocol ? &sharp_http2_client_codec : &sharp_http1_client_codec;
    p->drain_gen = atomic_load_explicit(&h->drain_gen, memory_order_acquire);
    sharp_dlist_init(&p->connecting);
    sharp_dlist_init(&p->ready);
    sharp_dlist_init(&p->busy);
    sharp_dlist_init(&p->pending);
    return p;
}

void sharp_pool_use_http2(sharp_pool_t *p)
{
    p->codec = &sharp_http2_client_codec;
}

void sharp_pool_use_tcp(sharp_pool_t *p)
{
    p->codec = &sharp_tcp_client_codec;
}

static sharp_upstream_request_t *pop_pending(sharp_pool_t *p)
{
    sharp_upstream_request_t *r = REQ(p->pending.next);
    sharp_dlist_remove(&r->link);
    r->pending = false;
    p->npending--;
    atomic_fetch_sub_explicit(&p->open->rq_pending_open, 1, memory_order_relaxed);
    sharp_gauge_add(shard(p), p->cluster->st.rq_pending_active, -1);
    return r;
}

static void fail_pending(sharp_pool_t *p, sharp_pool_failure_t why, const char *detail)
{
    sharp_upstream_request_t *r = pop_pending(p);
    r->cb->on_pool_failure(r->ctx, why, detail);
}

static void maybe_free_pool(sharp_pool_t *p)
{
    if ((p->destroying || (p->retired && !p->npending)) && p->ncx == 0) {
        atomic_fetch_sub_explicit(&p->host->npools, 1, memory_order_release);
        sharp_cluster_unref(p->cluster);
        free(p);
    }
}

void sharp_pool_destroy(sharp_pool_t *p)
{
    p->destroying = true;
    while (p->npending) fail_pending(p, SHARP_POOL_FAIL_CONNECT, "pool removed");
    sharp_dlist_t *lists[] = {&p->connecting, &p->ready, &p->busy};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(lists); i++)
        while (!sharp_dlist_empty(lists[i])) sharp_upstream_conn_close(CONN(lists[i]->next));
    maybe_free_pool(p);
}

/* Closes the connections that serve no stream. */
void sharp_pool_close_idle(sharp_pool_t *p)
{
    sharp_dlist_t *n = p->ready.next;
    while (n != &p->ready) {
        sharp_dlist_t *next = n->next;
        if (CONN(n)->nactive == 0) sharp_upstream_conn_close(CONN(n));
        n = next;
    }
}

static void move_to(sharp_upstream_conn_t *c, sharp_dlist_t *list, cx_state_t st)
{
    sharp_dlist_remove(&c->link);
    sharp_dlist_push(list, &c->link);
    c->state = st;
}

/* Streams the connection can still take: the codec's room (HTTP/2: the
 * effective max_concurrent_streams less the open ones), bounded by
 * max_requests_per_connection; none while it drains. */
static uint32_t conn_capacity(const sharp_upstream_conn_t *c)
{
    if (c->draining || c->state == CX_CLOSING || c->state == CX_CONNECTING) return 0;
    uint32_t cap = c->codec->capacity(c);
    uint32_t maxr = c->pool->cluster->max_requests_per_connection;
    if (maxr) {
        uint32_t left = c->requests >= maxr ? 0 : maxr - c->requests;
        if (left < cap) cap = left;
    }
    return cap;
}

static void place(sharp_upstream_conn_t *c)
{
    if (c->state == CX_CLOSING || c->state == CX_CONNECTING) return;
    sharp_pool_t *p = c->pool;
    if (conn_capacity(c) > 0) {
        if (c->state != CX_READY) move_to(c, &p->ready, CX_READY);
    } else if (c->state != CX_BUSY) {
        move_to(c, &p->busy, CX_BUSY);
    }
}

/* Envoy's drainConnections(DrainExistingConnections): idle connections
 * close now; connections still connecting close unless requests wait for
 * them; busy ones serve their current streams and then close. */
void sharp_pool_check_drain(sharp_pool_t *p)
{
    uint32_t gen = atomic_load_explicit(&p->host->drain_gen, memory_order_acquire);
    if (gen == p->drain_gen) return;
    p->drain_gen = gen;
    sharp_debug(pool, "draining connections to %s", p->host->address);
    sharp_pool_close_idle(p);
    if (!p->npending)
        while (!sharp_dlist_empty(&p->connecting)) sharp_upstream_conn_close(CONN(p->connecting.next));
    while (!sharp_dlist_empty(&p->ready)) {
        sharp_upstream_conn_t *c = CONN(p->ready.next);
        c->draining = true;
        place(c);
    }
    for (sharp_dlist_t *n = p->busy.next; n != &p->busy; n = n->next) CONN(n)->draining = true;
}

/* TCP_INFO fallback (kernel/tcpinfo.h): the worker's tick samples the
 * connections with unsampled traffic whose interval is over. */
void sharp_pool_tcpinfo_tick(sharp_pool_t *p)
{
    if (!sharp_tcpinfo_on()) return;
    uint64_t now = uv_now(p->env->loop);
    sharp_dlist_t *lists[] = {&p->ready, &p->busy};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(lists); i++)
        for (sharp_dlist_t *n = lists[i]->next; n != lists[i]; n = n->next) {
            sharp_upstream_conn_t *c = CONN(n);
            sharp_tcpinfo_tick(&p->host->kern, conn_fd(c), &c->tcpi, c->nactive > 0, now);
        }
}

/* A retired pool without waiters has no use for connections still
 * connecting; without connections either, it is done. */
static void retired_settle(sharp_pool_t *p)
{
    if (p->npending) return;
    while (!sharp_dlist_empty(&p->connecting)) sharp_upstream_conn_close(CONN(p->connecting.next));
    maybe_free_pool(p);
}

void sharp_pool_retire(sharp_pool_t *p)
{
    p->retired = true;
    sharp_debug(pool, "retiring the pool of %s (host removed)", p->host->address);
    sharp_pool_close_idle(p);
    while (!sharp_dlist_empty(&p->ready)) {
        sharp_upstream_conn_t *c = CONN(p->ready.next);
        c->draining = true;
        place(c);
    }
    for (sharp_dlist_t *n = p->busy.next; n != &p->busy; n = n->next) CONN(n)->draining = true;
    retired_settle(p);
}

/* ---- connection lifecycle ---- */

void sharp_upstream_conn_handle_closed(uv_handle_t *h)
{
    sharp_upstream_conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    sharp_pool_t *p = c->pool;
    if (c->codec_state) c->codec->destroy(c);
    if (c->tls) sharp_upstream_tls_free(c); /* TLS hook */
    free(c);
    p->ncx--;
    maybe_free_pool(p);
}

void sharp_upstream_conn_close(sharp_upstream_conn_t *c)
{
    if (c->state == CX_CLOSING) return;
    sharp_pool_t *p = c->pool;
    bool was_connected = c->state != CX_CONNECTING;
    sharp_debug(connection, "[C%llu] closing upstream connection to %s (%u requests)", c->id,
                p->host->address, c->requests);
    if (c->state == CX_CONNECTING) p->nconnecting--;
    sharp_dlist_remove(&c->link);
    c->state = CX_CLOSING;
    sharp_stats_shard_t *sh = shard(p);
    sharp_gauge_add(sh, p->cluster->st.cx_active, -1);
    sharp_counter_inc(sh, p->cluster->st.cx_destroy);
    if (c->connected)
        sharp_histogram_record(sh, p->cluster->st.cx_length_ms, (sharp_now_ns() - c->connected_ns) / 1000000);
    atomic_fetch_sub_explicit(&p->host->active_cx, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&p->open->cx_open, 1, memory_order_relaxed);
    /* TCP_INFO fallback: the socket's last sample, while it is open */
    if (c->tcpi.connected && sharp_tcpinfo_on())
        sharp_tcpinfo_closing(&p->host->kern, conn_fd(c), &c->tcpi, uv_now(p->env->loop));
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, sharp_upstream_conn_handle_closed);
    if (p->cluster->has_max_connection_duration) uv_close((uv_handle_t *)&c->duration_timer, sharp_upstream_conn_handle_closed);
    if (c->tls) sharp_upstream_tls_close(c); /* TLS hook: close_notify */
    uv_close((uv_handle_t *)&c->tcp, sharp_upstream_conn_handle_closed);
    /* Requests still waiting may now get a connection; not after a failed
     * connect, whose caller fails the waiting requests next. */
    if (was_connected) maybe_connect(p);
    /* streams still bound learn of it last, once the pool is consistent */
    if (c->codec_state) c->codec->on_close(c);
}

static void on_idle_timeout(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    /* Armed when the connection last went idle from a timer-less state;
     * busy since, or idle again later: not yet due. A busy connection's
     * timer is started again by conn_serve when it next goes idle. */
    if (c->nactive) return;
    uint64_t timeout = c->pool->cluster->idle_timeout_ms, idle = uv_now(t->loop) - c->idle_since_ms;
    if (idle < timeout) {
        uv_timer_start(t, on_idle_timeout, timeout - idle, 0);
        return;
    }
    sharp_debug(pool, "[C%llu] idle timeout", c->id);
    sharp_counter_inc(shard(c->pool), c->pool->cluster->st.cx_idle_timeout);
    sharp_upstream_conn_close(c);
}

/* Envoy's onConnectionDurationTimeout: the connection drains (no new
 * stream; closed now if idle, else once its streams are done). */
static void on_duration_timeout(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    if (c->state == CX_CLOSING || c->draining) return;
    sharp_debug(pool, "[C%llu] max connection duration reached, draining", c->id);
    sharp_counter_inc(shard(c->pool), c->pool->cluster->st.cx_max_duration_reached);
    c->draining = true;
    if (c->nactive == 0) sharp_upstream_conn_close(c);
    else place(c);
}

static void attach(sharp_upstream_conn_t *c, sharp_upstream_request_t *r)
{
    sharp_pool_t *p = c->pool;
    /* The idle timer keeps running (two timer heap operations per request
     * saved): on_idle_timeout ignores a busy connection. */
    if (c->timer.timer_cb != on_idle_timeout) uv_timer_stop(&c->timer);
    c->nactive++;
    c->requests++;
    /* Envoy drains a connection once it has started its last allowed stream
     * (upstream_cx_max_requests counts it then). */
    uint32_t maxr = p->cluster->max_requests_per_connection;
    if (maxr && c->requests >= maxr && !c->draining) {
        c->draining = true;
        sharp_counter_inc(shard(p), p->cluster->st.cx_max_requests);
    }
    sharp_upstream_cx_t *s = c->codec->new_stream(c, r);
    r->cx = s;
    place(c);
    /* Envoy's pool-ready result: the try has a connection (split mode
     * counts it as a local-origin success; otherwise it is ignored). */
    sharp_outlier_put_local(p->cluster, p->host, SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS);
    sharp_debug(pool, "[C%llu] attaching to next stream (request %u on this connection)", c->id, c->requests);
    r->cb->on_ready(r->ctx, s);
}

/* Gives the connection's room to the oldest waiting requests; an unused
 * connection then runs its idle timer (or closes, if nothing may use it). */
static void conn_serve(sharp_upstream_conn_t *c)
{
    sharp_pool_t *p = c->pool;
    while (p->npending && c->state != CX_CLOSING && conn_capacity(c) > 0) attach(c, pop_pending(p));
    if (c->state == CX_CLOSING || c->nactive) return;
    if (c->draining || p->destroying || p->retired || *p->env->stopping) {
        sharp_upstream_conn_close(c);
        return;
    }
    if (p->cluster->idle_timeout_ms) {
        c->idle_since_ms = uv_now(p->env->loop);
        if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer.timer_cb != on_idle_timeout)
            uv_timer_start(&c->timer, on_idle_timeout, p->cluster->idle_timeout_ms, 0);
    }
}

void sharp_upstream_conn_stream_done(sharp_upstream_conn_t *c, bool reusable)
{
    if (c->nactive) c->nactive--;
    if (c->state == CX_CLOSING) return;
    /* TCP_INFO fallback: at most one sample per interval and connection
     * (the descriptor and the clock are looked up only when it is on) */
    if (sharp_tcpinfo_on() && c->tcpi.connected)
        sharp_tcpinfo_maybe_sample(&c->pool->host->kern, conn_fd(c), &c->tcpi, uv_now(c->pool->env->loop));
    if (!reusable || *c->pool->env->draining) c->draining = true;
    if (c->draining && (!reusable || c->nactive == 0)) {
        sharp_upstream_conn_close(c);
        return;
    }
    place(c);
    conn_serve(c);
}

void sharp_upstream_conn_capacity_changed(sharp_upstream_conn_t *c)
{
    if (c->state == CX_CLOSING || c->state == CX_CONNECTING) return;
    place(c);
    conn_serve(c);
}

static void on_writer_drain(sharp_writer_t *w)
{
    sharp_upstream_conn_t *c = sharp_container_of(w, sharp_upstream_conn_t, writer);
    if (c->codec_state) c->codec->on_write_drain(c);
}

static void on_writer_error(sharp_writer_t *w, int status)
{
    sharp_upstream_conn_t *c = sharp_container_of(w, sharp_upstream_conn_t, writer);
    if (c->state == CX_CLOSING || !c->codec_state) return;
    if (status == UV_ECONNRESET && sharp_tcpinfo_on()) sharp_tcpinfo_reset_received(&c->pool->host->kern, &c->tcpi);
    /* the codec sees it as the end of the connection */
    uv_buf_t b = uv_buf_init(NULL, 0);
    c->codec->on_read(c, status < 0 ? status : UV_EPIPE, &b);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sharp_upstream_conn_t *c = s->data;
    if (nread > 0) sharp_trace(connection, "[C%llu] read %zd bytes", c->id, nread);
    if (nread == 0 || c->state == CX_CLOSING) return;
    if (nread == UV_ECONNRESET && sharp_tcpinfo_on()) sharp_tcpinfo_reset_received(&c->pool->host->kern, &c->tcpi);
    if (c->tls) { /* TLS hook: ciphertext to the engine, plaintext to the codec */
        sharp_upstream_tls_read(c, nread, buf);
        return;
    }
    c->codec->on_read(c, nread, buf);
}

void sharp_upstream_conn_read_start(sharp_upstream_conn_t *c)
{
    if (c->reading || c->state == CX_CLOSING) return;
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, sharp_read_alloc, on_read);
}

void sharp_upstream_conn_read_stop(sharp_upstream_conn_t *c)
{
    if (!c->reading || c->state == CX_CLOSING) return;
    c->reading = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_connect(uv_connect_t *req, int status);

static void on_connect_timeout(uv_timer_t *t)
{
    sharp_upstream_conn_t *c = t->data;
    if (c->connected_at_once) {
        c->connected_at_once = false;
        on_connect(&c->connect_req, 0);
        return;
    }
    sharp_pool_t *p = c->pool;
    sharp_stats_shard_t *sh = shard(p);
    sharp_debug(pool, "[C%llu] connect %s to %s", c->id, c->connect_error ? "failed" : "timeout",
                p->host->address);
    sharp_counter_inc(sh, p->cluster->st.cx_connect_timeout);
    sharp_counter_inc(sh, p->cluster->st.cx_connect_fail);
    atomic_fetch_add_explicit(&p->host->cx_connect_fail, 1, memory_order_relaxed);
    /* a TLS handshake that timed out had its TCP connect */
    if (sharp_tcpinfo_on()) sharp_tcpinfo_connect_failed(&p->host->kern, &c->tcpi);
    sharp_upstream_conn_close(c);
    if (p->npending) {
        /* One outlier result per request the failure reaches, as Envoy's
         * router reports pool failures. */
        sharp_outlier_put_local(p->cluster, p->host,
                                c->connect_error ? SHARP_OUTLIER_LOCAL_CONNECT_FAILED
                                                 : SHARP_OUTLIER_LOCAL_TIMEOUT);
        fail_pending(p, SHARP_POOL_FAIL_TIMEOUT, "connection timeout");
    }
}

void sharp_upstream_conn_connect_failed(sharp_upstream_conn_t *c, const char *detail)
{
    sharp_pool_t *p = c->pool;
    sharp_stats_shard_t *sh = shard(p);
    sharp_counter_inc(sh, p->cluster->st.cx_connect_fail);
    atomic_fetch_add_explicit(&p->host->cx_connect_fail, 1, memory_order_relaxed);
    if (sharp_tcpinfo_on()) sharp_tcpinfo_connect_failed(&p->host->kern, &c->tcpi);
    sharp_debug(connection, "[C%llu] %s (%s)", c->id, detail, p->host->address);
    sharp_upstream_conn_close(c);
    if (p->npending) {
        sharp_outlier_put_local(p->cluster, p->host, SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
        fail_pending(p, SHARP_POOL_FAIL_CONNECT, detail);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    sharp_upstream_conn_t *c = req->data;
    if (status == UV_ECANCELED || c->state == CX_CLOSING) return;
    sharp_pool_t *p = c->pool;
    if (status < 0) {
        char detail[128];
        snprintf(detail, sizeof detail, "delayed connect error: %s", uv_err_name(status));
        /* a reset reported as the connect's result came after the
         * handshake (its last ACK answered with a reset): the kernel
         * connected and was reset, as the eBPF probes count it, so the
         * host is reachable; a refused SYN stays a connect failure */
        if (status == UV_ECONNRESET && sharp_tcpinfo_on()) {
            sharp_tcpinfo_connected(&p->host->kern, &c->tcpi, (sharp_now_ns() - c->start_ns) / 1000,
                                    uv_now(p->env->loop));
            sharp_tcpinfo_reset_received(&p->host->kern, &c->tcpi);
        }
        sharp_upstream_conn_connect_failed(c, detail);
        return;
    }
    /* Envoy gives a Unix socket connection no local address (SocketImpl::
     * connect records one for IP only: %UPSTREAM_LOCAL_ADDRESS% is "-")
     * and no TCP_NODELAY. */
    if (p->host->addr.ss_family != AF_UNIX) {
        if (sharp_tcpinfo_on())
            sharp_tcpinfo_connected(&p->host->kern, &c->tcpi, (sharp_now_ns() - c->start_ns) / 1000,
                                    uv_now(p->env->loop));
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
            sharp_addr_str((struct sockaddr *)&ss, c->local_addr, sizeof c->local_addr);
        uv_tcp_nodelay(&c->tcp, 1);
    }
    /* TLS hook: the connection is connected (Envoy's Connected event) once
     * the handshake completes, which calls sharp_upstream_conn_established;
     * the connect timer keeps running over the handshake, as Envoy's. */
    if (p->cluster->tls) {
        sharp_upstream_tls_start(c);
        return;
    }
    sharp_upstream_conn_established(c);
}

void sharp_upstream_conn_established(sharp_upstream_conn_t *c)
{
    sharp_pool_t *p = c->pool;
    p->nconnecting--;
    c->connected = true;
    c->connected_ns = sharp_now_ns();
    sharp_histogram_record(shard(p), p->cluster->st.cx_connect_ms, (c->connected_ns - c->start_ns) / 1000000);
    sharp_debug(connection, "[C%llu] connected to %s", c->id, p->host->address);
    uv_timer_stop(&c->timer);
    /* Envoy starts the duration timer once the connection is up. */
    if (p->cluster->has_max_connection_duration)
        uv_timer_start(&c->duration_timer, on_duration_timeout, p->cluster->max_connection_duration_ms, 0);
    move_to(c, &p->ready, CX_READY);
    c->codec->init(c);
    if (c->state == CX_CLOSING) return;
    sharp_upstream_conn_read_start(c);
    place(c);
    conn_serve(c);
}

static void new_connection(sharp_pool_t *p)
{
    sharp_cluster_t *cl = p->cluster;
    sharp_stats_shard_t *sh = shard(p);
    sharp_upstream_conn_t *c = sharp_calloc(1, sizeof *c);
    c->pool = p;
    c->codec = p->codec;
    c->id = sharp_log_next_connection_id();
    c->start_ns = sharp_now_ns();
    sharp_debug(pool, "[C%llu] creating a new %s connection to %s (cluster '%s')", c->id, c->codec->name,
                p->host->address, cl->name);
    sharp_dlist_init(&c->link);
    /* The socket exists before connect so that options apply to the SYN
     * (Envoy sets its upstream socket options in STATE_PREBIND). */
    int init_rc = uv_tcp_init_ex(p->env->loop, &c->tcp, p->host->addr.ss_family);
    if (init_rc < 0) uv_tcp_init(p->env->loop, &c->tcp);
    uv_timer_init(p->env->loop, &c->timer);
    c->tcp.data = c->timer.data = c->connect_req.data = c;
    c->handles_open = 2;
    if (cl->has_max_connection_duration) {
        uv_timer_init(p->env->loop, &c->duration_timer);
        c->duration_timer.data = c;
        c->handles_open++;
    }
    sharp_writer_init(&c->writer, (uv_stream_t *)&c->tcp, on_writer_drain, on_writer_error);
    p->ncx++;
    p->nconnecting++;
    sharp_dlist_push(&p->connecting, &c->link);
    c->state = CX_CONNECTING;
    sharp_counter_inc(sh, cl->st.cx_total);
    if (cl->auto_http || p->codec == &sharp_tcp_client_codec) {
        /* counted once ALPN picks the codec (tls/upstream.c); a TCP
         * proxy's connection speaks no HTTP */
    } else if (p->codec == &sharp_http2_client_codec) {
        sharp_counter_inc(sh, cl->st.cx_http2_total);
    } else {
        sharp_counter_inc(sh, cl->st.cx_http1_total);
    }
    sharp_gauge_add(sh, cl->st.cx_active, 1);
    atomic_fetch_add_explicit(&p->host->cx_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->host->active_cx, 1, memory_order_relaxed);
    /* A Unix socket has no socket before connect and takes no TCP options. */
    bool is_unix = p->host->addr.ss_family == AF_UNIX;
    int rc = init_rc < 0 && !is_unix ? init_rc : 0;
    if (rc == 0 && !is_unix) rc = sharp_cluster_socket_options(cl, &c->tcp);
    if (rc == 0)
        rc = sharp_stream_connect(&c->tcp, &c->connect_req, (struct sockaddr *)&p->host->addr, p->host->addrlen,
                                  on_connect, &c->connected_at_once);
    if (rc == 0 && c->connected_at_once) {
        /* Reported from the next loop turn, as a callback would be: the
         * caller may be in the middle of queueing the request. */
        uv_timer_start(&c->timer, on_connect_timeout, 0, 0);
        return;
    }
    if (rc < 0) {
        /* Report asynchronously through the connect timer firing at once. */
        sharp_debug(connection, "[C%llu] connect to %s failed: %s", c->id, p->host->address, uv_strerror(rc));
        c->connect_error = true;
        uv_timer_start(&c->timer, on_connect_timeout, 0, 0);
        return;
    }
    uv_timer_start(&c->timer, on_connect_timeout, cl->connect_timeout_ms, 0);
}

bool sharp_pool_acquire(sharp_pool_t *p, sharp_upstream_request_t *req,
                        const sharp_upstream_callbacks_t *cb, void *ctx)
{
    req->cb = cb;
    req->ctx = ctx;
    req->pool = p;
    req->cx = NULL;
    req->refused_unknown_limit = false;
    sharp_dlist_init(&req->link);
    sharp_pool_check_drain(p); /* a drain the worker has not acted on yet */
    if (!sharp_dlist_empty(&p->ready)) {
        /* the connection ready the longest (HTTP/2: it has room for
         * another stream) */
        sharp_upstream_conn_t *c = CONN(p->ready.next);
        sharp_debug(pool, "[C%llu] using existing connection to %s", c->id, p->host->address);
        req->pending = false;
        attach(c, req);
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

/* Streams a connection still connecting will be able to take: Envoy counts
 * the configured max_concurrent_streams (the peer's SETTINGS are not known
 * yet) within max_requests_per_connection. */
static uint64_t connecting_capacity(const sharp_pool_t *p)
{
    uint64_t per = p->codec == &sharp_http2_client_codec ? p->cluster->h2.max_concurrent_streams : 1;
    uint32_t maxr = p->cluster->max_requests_per_connection;
    if (maxr && maxr < per) per = maxr;
    return per * p->nconnecting;
}

/* Opens a connection for the waiting requests while the cluster's
 * max_connections breaker has room. Otherwise they keep waiting for a
 * connection of this pool to become free (bounded by max_pending_requests
 * and the route timeout), and upstream_cx_overflow counts it, as in Envoy. */
static void maybe_connect(sharp_pool_t *p)
{
    if (p->destroying || connecting_capacity(p) >= p->npending) return;
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
        if (p->retired) retired_settle(p);
        return;
    }
    sharp_upstream_cx_t *s = req->cx;
    if (!s) return;
    req->cx = NULL;
    s->req = NULL;
    s->conn->codec->cancel(s);
}

/* ---- the stream handle: dispatched to the connection's codec ---- */

void sharp_upstream_cx_send_headers(sharp_upstream_cx_t *s, const sharp_headers_t *h, bool end_stream)
{
    s->conn->codec->send_headers(s, h, end_stream);
}

void sharp_upstream_cx_send_data(sharp_upstream_cx_t *s, const char *p, size_t n, bool end_stream)
{
    s->conn->codec->send_data(s, p, n, end_stream);
}

void sharp_upstream_cx_send_trailers(sharp_upstream_cx_t *s, const sharp_headers_t *t)
{
    s->conn->codec->send_trailers(s, t);
}

void sharp_upstream_cx_read_disable(sharp_upstream_cx_t *s, bool disable)
{
    s->conn->codec->read_disable(s, disable);
}

size_t sharp_upstream_cx_queued(const sharp_upstream_cx_t *s)
{
    return s->conn->codec->queued(s);
}

const char *sharp_upstream_cx_local_address(sharp_upstream_cx_t *s)
{
    return s->conn->local_addr;
}

const char *sharp_upstream_cx_protocol(const sharp_upstream_cx_t *s)
{
    return s->conn->codec->name;
}

struct sharp_tls_conn *sharp_upstream_cx_tls(sharp_upstream_cx_t *s)
{
    return s->conn->tls ? sharp_upstream_tls_engine(s->conn) : NULL;
}

/* tcp_proxy.c: Envoy's TCP proxy network filter (envoy.filters.network.tcp_proxy).
 *
 * A TCP proxy chain's connection is an ordinary downstream connection of
 * the connection manager (conn_manager.c: the socket, its TLS transport,
 * writes and write watermark, drains, the listener's stats); in place of
 * an HTTP codec it takes the TCP proxy "codec" below, which relays bytes
 * to one upstream connection and back. The upstream connection comes from
 * a pool of the connection's own (upstream/pool.c with the raw client
 * codec upstream/tcp_client.c) for the host the cluster's load balancer
 * picks: connect and its timeout, the max_connections breaker, TLS to the
 * upstream, outlier detection and the upstream_cx_* stats are the pool's.
 *
 * As Envoy's TcpProxy::Filter: the cluster (or one of the weighted
 * clusters) is chosen when the connection begins; no cluster closes it
 * (downstream_cx_no_route, NC); a full max_connections breaker closes it
 * (upstream_cx_overflow, UO); no host closes it (UH); a failed connect is
 * retried with a new pick up to max_connect_attempts, then closes it (UF,
 * upstream_cx_connect_attempts_exceeded). Reading the downstream waits
 * for the upstream connection. A FIN from either side is passed on and
 * the other direction stays open; the connection closes once both sides
 * have ended, or when either side closes or resets (the other is closed
 * after its pending bytes). Each direction stops reading while the other
 * side's write queue is above its buffer limit.
 *
 * With tunneling_config the pool speaks the cluster's HTTP protocol
 * instead, and the bytes go over a CONNECT (or POST) stream of it, as
 * Envoy's HttpUpstream: the session is connected once the answer is a 2xx
 * (HTTP/2: 200); any other answer, or a reset before it, is a failed
 * connect attempt. */
#include "http/tcp_proxy.h"
#include "http/metadata.h"
#include "http/access_log_emit.h"
#include "http/access_log.h"
#include "http/conn_internal.h"
#include "http/route.h"
#include "http/stream_info.h"
#include "log.h"
#include "stats.h"
#include "tls/downstream.h"
#include "upstream/aggregate.h"
#include "upstream/lb.h"
#include "upstream/original_dst.h"
#include "upstream/pool.h"
#include "tls/conn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sharp_tcp_session {
    sharp_conn_t *c;
    const sharp_tcp_proxy_config_t *cfg;
    sharp_worker_view_t *view;      /* a reference while connecting */
    sharp_cluster_t *cluster;       /* a reference */
    sharp_cluster_local_t *cl;
    /* the route's cluster is an aggregate (upstream/aggregate.h): cluster
     * and cl are the member the connection goes to, at this level of it */
    bool agg;
    uint32_t agg_level;
    const sharp_tcp_proxy_cluster_t *route; /* the cluster entry picked (its metadata_match) */
    sharp_pool_t *pool;             /* this connection's own, for the current host */
    sharp_upstream_request_t req;
    sharp_upstream_cx_t *cx;        /* the upstream connection, once connected */
    sharp_upstream_cx_t *tunnel_cx; /* tunneling_config: the stream awaiting its answer */
    sharp_host_t *host;             /* the host of the current attempt (its pool keeps it) */
    uint32_t host_drain_gen;        /* its drain_gen then */
    sharp_host_t *failed_host;      /* the host of the last failed attempt */
    uint32_t attempts;
    sharp_sbuf_t early;             /* downstream bytes read before the upstream connected */
    bool down_eof;                  /* the downstream's FIN was read */
    bool up_eof;                    /* the upstream's FIN was read (and passed on) */
    bool up_above;                  /* the upstream's write queue is above its limit */
    bool down_above;                /* the downstream's write queue is above its limit */
    bool paused;                    /* reading the downstream stopped for the upstream */
    bool ended;                     /* the access log entry is written, the upstream let go */
    uint64_t last_activity_ms;      /* loop time of the last byte either way (idle timeout) */
    sharp_downstream_tls_info_t passthrough; /* TLS passed through: the inspected server name */
    sharp_stream_info_t info;
};

#define SESSION(c) ((c)->tcp_session)

static sharp_stats_shard_t *shard(const sharp_tcp_session_t *t)
{
    return t->c->worker->stats;
}

/* ---- timers (the connection's own: the HCM timers a TCP proxy connection does not use) ---- */

static void on_idle(uv_timer_t *timer)
{
    sharp_conn_t *c = timer->data;
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || c->closing) return;
    uint64_t idle = uv_now(timer->loop) - t->last_activity_ms;
    if (idle < t->cfg->idle_timeout_ms) {
        uv_timer_start(timer, on_idle, t->cfg->idle_timeout_ms - idle, 0);
        return;
    }
    sharp_debug(connection, "[C%llu] TCP proxy session timed out", c->id);
    sharp_counter_inc(shard(t), t->cfg->st.idle_timeout);
    sharp_conn_close(c);
}

static void touch(sharp_tcp_session_t *t)
{
    t->last_activity_ms = uv_now(&t->c->worker->loop);
}

static void on_max_duration(uv_timer_t *timer)
{
    sharp_conn_t *c = timer->data;
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || c->closing) return;
    sharp_debug(connection, "[C%llu] max_downstream_connection_duration reached", c->id);
    sharp_counter_inc(shard(t), t->cfg->st.max_duration);
    sharp_conn_close(c);
}

/* access_log_flush_interval: an entry of the connection so far */
static void on_log_interval(uv_timer_t *timer)
{
    sharp_conn_t *c = timer->data;
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || c->closing || t->ended) return;
    sharp_access_log_emit_all(c->worker, c->hcm, &t->info);
}

/* ---- reading the downstream ---- */

static void update_reading(sharp_tcp_session_t *t)
{
    /* before the upstream connects only the bytes already read are kept
     * (Envoy reads nothing until then); afterwards the upstream's queue */
    bool pause = !t->cx || t->up_above;
    if (pause != t->paused) {
        t->paused = pause;
        if (t->cx) sharp_counter_inc(shard(t), pause ? t->cfg->st.paused_reading_total : t->cfg->st.resumed_reading_total);
    }
    sharp_conn_update_reading(t->c);
}

/* ---- the end ---- */

/* Closes the downstream connection once what was written to it has left
 * (after a half-close, once its FIN has). */
static void close_downstream_flushed(sharp_tcp_session_t *t)
{
    sharp_conn_t *c = t->c;
    if (c->closing) return;
    if (c->half_closed) {
        if (c->half_closed_done) {
            sharp_conn_close(c);
        } else {
            c->peer_eof = true; /* read no more; the half-close's completion closes it */
            sharp_conn_update_reading(c);
        }
        return;
    }
    sharp_conn_close_after_write(c, false);
}

/* ---- the upstream ---- */

static void connect_next(sharp_tcp_session_t *t);

/* The upstream is there: a TCP connection, or a tunnel the upstream
 * accepted. */
static void up_connected(sharp_tcp_session_t *t, sharp_upstream_cx_t *cx)
{
    sharp_conn_t *c = t->c;
    t->cx = cx;
    /* reading starts now, as Envoy's readDisable(false) on connect: not a
     * flow control resume; the early bytes below may pause it again */
    t->paused = false;
    const char *la = sharp_upstream_cx_local_address(cx);
    SHARP_COPY_CSTR(t->info.upstream_local_address, la ? la : "");
    t->info.upstream_tls = sharp_upstream_cx_tls(cx);
    if (t->info.upstream_tls) sharp_tls_conn_ref((struct sharp_tls_conn *)t->info.upstream_tls);
    sharp_debug(connection, "[C%llu] TCP proxy connected to %s (cluster '%s')", c->id, t->info.upstream_host,
                t->cluster->name);
    if (t->view) {
        sharp_view_unref(t->view);
        t->view = NULL;
        t->cl = NULL;
    }
    touch(t);
    if (t->cfg->log_on_connected) sharp_access_log_emit_all(c->worker, c->hcm, &t->info);
    if (t->down_above) sharp_upstream_cx_read_disable(cx, true);
    if (t->early.len) {
        sharp_upstream_cx_send_data(cx, t->early.data, t->early.len, t->down_eof);
        sharp_sbuf_free(&t->early);
    } else if (t->down_eof) {
        sharp_upstream_cx_send_data(cx, NULL, 0, true);
    }
    update_reading(t);
}

/* tunneling_config: the request that opens the tunnel, as Envoy's
 * HttpUpstream: CONNECT with the hostname as its authority (HTTP/1.1
 * "CONNECT host:port", HTTP/2 :method and :authority only), or POST to
 * post_path with :scheme; then headers_to_add. */
static void send_tunnel_request(sharp_tcp_session_t *t, sharp_upstream_cx_t *cx)
{
    const sharp_tcp_tunnel_config_t *tn = t->cfg->tunnel;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", tn->use_post ? "POST" : "CONNECT");
    if (tn->host_fmt) {
        sharp_sbuf_t host = {0};
        sharp_access_log_format_render(tn->host_fmt, &t->info, &host);
        sharp_headers_add(&h, ":authority", 10, host.data ? host.data : "", host.len);
        sharp_sbuf_free(&host);
    } else {
        sharp_headers_add_cstr(&h, ":authority", tn->hostname);
    }
    if (tn->use_post) {
        sharp_headers_add_cstr(&h, ":path", tn->post_path);
        if (t->cluster->http2) sharp_headers_add_cstr(&h, ":scheme", t->cluster->tls ? "https" : "http");
    }
    sharp_header_ops_apply_si(&tn->headers, &h, &t->info);
    sharp_upstream_cx_send_headers(cx, &h, false);
    sharp_headers_free(&h);
}

static void up_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail);

static void up_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    sharp_tcp_session_t *t = ctx;
    if (!t->cfg->tunnel) {
        up_connected(t, cx);
        return;
    }
    sharp_debug(connection, "[C%llu] TCP proxy: opening a tunnel through %s (cluster '%s')", t->c->id,
                t->info.upstream_host, t->cluster->name);
    t->tunnel_cx = cx;
    send_tunnel_request(t, cx);
}

/* The tunnel's request failed (an answer other than Envoy's valid one, or
 * the stream reset before it): a connect failure, as Envoy's
 * RemoteConnectionFailure. */
static void tunnel_failed(sharp_tcp_session_t *t, const char *detail)
{
    sharp_debug(connection, "[C%llu] TCP proxy: tunnel through %s failed (%s)", t->c->id, t->info.upstream_host,
                detail);
    t->tunnel_cx = NULL;
    sharp_pool_cancel(&t->req);
    up_pool_failure(t, SHARP_POOL_FAIL_CONNECT, NULL);
}

static void up_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    sharp_tcp_session_t *t = ctx;
    sharp_conn_t *c = t->c;
    sharp_debug(connection, "[C%llu] TCP proxy: connect to %s failed (%s)", c->id, t->info.upstream_host,
                detail ? detail : why == SHARP_POOL_FAIL_TIMEOUT ? "timeout" : "connect error");
    if (detail && strncmp(detail, "TLS_error", 9) == 0) t->info.upstream_transport_failure_reason = detail;
    t->failed_host = t->host;
    if (t->attempts < t->cfg->max_connect_attempts) {
        connect_next(t);
        return;
    }
    t->info.response_flags |= SHARP_RF_UPSTREAM_CONNECTION_FAILURE;
    sharp_counter_inc(shard(t), t->cluster->st.cx_connect_attempts_exceeded);
    sharp_conn_close(c);
}

static void up_data(void *ctx, const char *p, size_t n, bool end_stream);

/* The answer to the tunnel's request: Envoy's isValidResponse, any 2xx on
 * HTTP/1.1, 200 on HTTP/2. */
static void up_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    sharp_tcp_session_t *t = ctx;
    if (!t->tunnel_cx) return;
    sharp_str_t st = {0};
    unsigned status = 0;
    if (sharp_headers_get_cstr(h, ":status", &st))
        for (size_t i = 0; i < st.len && i < 3 && st.p[i] >= '0' && st.p[i] <= '9'; i++)
            status = status * 10 + (unsigned)(st.p[i] - '0');
    bool ok = t->cluster->http2 ? status == 200 : status >= 200 && status < 300;
    if (!ok) {
        char why[48];
        snprintf(why, sizeof why, "response status %u", status);
        tunnel_failed(t, why);
        return;
    }
    sharp_upstream_cx_t *cx = t->tunnel_cx;
    t->tunnel_cx = NULL;
    up_connected(t, cx);
    if (end_stream && !t->c->closing) up_data(t, NULL, 0, true);
}

static void up_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    sharp_tcp_session_t *t = ctx;
    sharp_conn_t *c = t->c;
    if (c->closing || !t->cx) return;
    touch(t);
    if (n) {
        t->info.bytes_sent += n;
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        sharp_conn_write(c, &b, 1);
    }
    if (end_stream) {
        t->up_eof = true;
        if (t->down_eof) close_downstream_flushed(t);
        else sharp_conn_half_close(c);
    }
}

/* Trailers end a tunnel's upstream direction, as Envoy's. */
static void up_trailers(void *ctx, sharp_headers_t *tr)
{
    (void)tr;
    sharp_tcp_session_t *t = ctx;
    if (t->cx && !t->up_eof) up_data(t, NULL, 0, true);
}

/* The upstream connection closed or was reset: the downstream is closed
 * once what it was sent has left, as Envoy's FlushWrite close. */
static void up_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    sharp_tcp_session_t *t = ctx;
    (void)why;
    if (t->tunnel_cx) {
        t->tunnel_cx = NULL;
        tunnel_failed(t, detail ? detail : "reset");
        return;
    }
    sharp_debug(connection, "[C%llu] TCP proxy: upstream closed (%s)", t->c->id, detail ? detail : "-");
    t->cx = NULL;
    if (t->pool) {
        sharp_pool_destroy(t->pool);
        t->pool = NULL;
    }
    close_downstream_flushed(t);
}

static void up_watermark(void *ctx, bool above)
{
    sharp_tcp_session_t *t = ctx;
    t->up_above = above;
    update_reading(t);
}

static const sharp_upstream_callbacks_t up_callbacks = {
    .on_ready = up_ready,
    .on_pool_failure = up_pool_failure,
    .on_headers = up_headers,
    .on_data = up_data,
    .on_trailers = up_trailers,
    .on_reset = up_reset,
    .on_write_watermark = up_watermark,
};

/* A host from the load balancer; a retry after a failed connect asks
 * again for another host than the one that failed, a few times. */
static sharp_host_t *choose_host(sharp_tcp_session_t *t)
{
    if (t->cluster->odst) /* the connection's original destination */
        return sharp_odst_choose(t->cl, shard(t), NULL, t->c->local_restored ? &t->c->local_ss : NULL);
    sharp_host_t *h = NULL;
    for (int i = 0; i < 4; i++) {
        const sharp_lbmeta_t *m = t->route ? t->route->metadata_match : NULL;
        if (t->agg && !t->cl->subsets.plan) h = sharp_lb_choose_level(&t->cl->lb, t->agg_level);
        else h = sharp_cluster_choose(t->cl, m != NULL, m ? m->b : NULL, m ? m->len : 0);
        if (!h || h != t->failed_host) break;
    }
    return h;
}

/* One connect attempt. */
static void connect_next(sharp_tcp_session_t *t)
{
    sharp_conn_t *c = t->c;
    sharp_stats_shard_t *sh = shard(t);
    if (t->pool) {
        sharp_pool_destroy(t->pool);
        t->pool = NULL;
    }
    /* Envoy checks the breaker first: its TCP pool would queue the
     * connection for a slot no other connection gives back */
    if (sharp_cluster_cb_max(t->cluster, SHARP_PRIORITY_DEFAULT, SHARP_CB_MAX_CONNECTIONS) <=
        (uint64_t)atomic_load_explicit(&t->cluster->open[SHARP_PRIORITY_DEFAULT].cx_open, memory_order_relaxed)) {
        t->info.response_flags |= SHARP_RF_UPSTREAM_OVERFLOW;
        sharp_counter_inc(sh, t->cluster->st.cx_overflow);
        sharp_conn_close(c);
        return;
    }
    sharp_host_t *h = t->cl ? choose_host(t) : NULL;
    if (!h) {
        sharp_debug(connection, "[C%llu] TCP proxy: no healthy host in cluster '%s'", c->id, t->cluster->name);
        t->info.response_flags |= SHARP_RF_NO_HEALTHY_UPSTREAM;
        if (t->cl) sharp_counter_inc(sh, t->cluster->st.cx_none_healthy); /* Envoy's tcpConn */
        sharp_conn_close(c);
        return;
    }
    t->host = h;
    t->host_drain_gen = atomic_load_explicit(&h->drain_gen, memory_order_acquire);
    t->attempts++;
    t->info.attempt_count = t->attempts;
    SHARP_COPY_CSTR(t->info.upstream_host, h->address);
    t->pool = sharp_pool_create(&c->worker->upstream_env, t->cluster, h, SHARP_PRIORITY_DEFAULT);
    /* a tunnel speaks the cluster's HTTP protocol: HTTP/2 when it has
     * HTTP/2 options, HTTP/1.1 else (Envoy's cluster features) */
    if (!t->cfg->tunnel) sharp_pool_use_tcp(t->pool);
    else if (t->cluster->http2) sharp_pool_use_http2(t->pool);
    if (!sharp_pool_acquire(t->pool, &t->req, &up_callbacks, t)) {
        /* the pending-requests breaker is full */
        sharp_counter_inc(sh, t->cluster->st.rq_pending_overflow);
        t->info.response_flags |= SHARP_RF_UPSTREAM_OVERFLOW;
        sharp_conn_close(c);
    }
}

/* Picks the cluster (weighted clusters by weight) and starts connecting. */
static void start(sharp_tcp_session_t *t)
{
    const sharp_tcp_proxy_config_t *cfg = t->cfg;
    sharp_conn_t *c = t->c;
    const sharp_tcp_proxy_cluster_t *route = &cfg->clusters[0];
    if (cfg->nclusters > 1) {
        uint64_t r = sharp_worker_random(c->worker) % cfg->total_weight;
        for (uint32_t i = 0; i < cfg->nclusters; i++) {
            if (r < cfg->clusters[i].weight) {
                route = &cfg->clusters[i];
                break;
            }
            r -= cfg->clusters[i].weight;
        }
    }
    const char *name = route->name;
    t->route = route;
    sharp_cluster_local_t *cl = NULL;
    sharp_worker_view_t *v = c->worker->view;
    sharp_cluster_t *cluster = v ? sharp_view_cluster(v, name, &cl) : NULL;
    if (!cluster) {
        sharp_debug(connection, "[C%llu] TCP proxy: cluster '%s' not found", c->id, name);
        sharp_counter_inc(shard(t), cfg->st.cx_no_route);
        t->info.response_flags |= SHARP_RF_NO_CLUSTER_FOUND;
        sharp_conn_close(c);
        return;
    }
    t->view = v;
    v->refs++;
    t->info.upstream_cluster = cluster->stat_name;
    t->info.upstream_cluster_raw = cluster->name;
    if (cluster->aggregate) {
        /* the member of the connection, chosen once: its attempts stay
         * there (no member with a host: the aggregate's, without one) */
        sharp_cluster_local_t *mcl = NULL;
        sharp_cluster_t *m = sharp_aggregate_choose(v, cluster, cluster->panic_threshold,
                                                    sharp_worker_random(c->worker), &mcl, &t->agg_level);
        t->agg = true;
        cl = m ? mcl : NULL;
        if (m) cluster = m;
    }
    t->cl = cl;
    t->cluster = sharp_cluster_ref(cluster);
    if (cfg->tunnel && cfg->tunnel->use_post && !cluster->http2) {
        /* Envoy's HTTP/1.1 tunnelling POST (its codec's TCP tunnelling
         * mode) is not implemented: refused, never sent chunked */
        sharp_warn(connection,
                   "[C%llu] TCP proxy: tunneling_config.use_post needs an HTTP/2 cluster "
                   "('%s' is HTTP/1.1): closing",
                   c->id, cluster->name);
        t->info.response_flags |= SHARP_RF_UPSTREAM_CONNECTION_FAILURE;
        sharp_conn_close(c);
        return;
    }
    connect_next(t);
}

/* ---- the codec the connection manager drives ---- */

static void tp_dispatch(sharp_conn_t *c, const char *p, size_t n)
{
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || c->closing || t->down_eof) return;
    t->info.bytes_received += n;
    touch(t);
    if (t->cx) sharp_upstream_cx_send_data(t->cx, p, n, false);
    else sharp_sbuf_append(&t->early, p, n);
}

static bool tp_peer_closed(sharp_conn_t *c, ssize_t err)
{
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || err != UV_EOF || t->down_eof) {
        if (t && err == UV_ECONNRESET) t->info.response_flags |= SHARP_RF_DOWNSTREAM_REMOTE_RESET;
        return false;
    }
    /* a half-close: passed on, the upstream's answer keeps coming */
    t->down_eof = true;
    c->peer_eof = true;
    sharp_conn_update_reading(c);
    touch(t);
    if (t->cx) sharp_upstream_cx_send_data(t->cx, NULL, 0, true);
    /* both ended: the connection closes once our own FIN has left (the
     * half-close's completion closes it, sharp_conn_half_close) */
    if (t->up_eof) return !c->half_closed_done;
    return true;
}

static void tp_encode_headers(sharp_stream_t *s, sharp_headers_t *h, bool end_stream)
{
    (void)s;
    (void)h;
    (void)end_stream;
}

static void tp_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end_stream)
{
    (void)s;
    (void)p;
    (void)n;
    (void)end_stream;
}

static void tp_encode_trailers(sharp_stream_t *s, sharp_headers_t *tr)
{
    (void)s;
    (void)tr;
}

static void tp_stream_nothing(sharp_stream_t *s)
{
    (void)s;
}

static void tp_read_disable(sharp_stream_t *s, bool disable)
{
    (void)s;
    (void)disable;
}

static void tp_stream_done(sharp_conn_t *c, sharp_stream_t *s, bool reset)
{
    (void)c;
    (void)s;
    (void)reset;
}

/* A drain leaves a TCP proxy connection alone: it ends when its peers end
 * it, or when the drain time is over and the listener or server closes
 * what is left, as Envoy. */
static bool tp_busy(const sharp_conn_t *c)
{
    (void)c;
    return true;
}

static bool tp_read_blocked(const sharp_conn_t *c)
{
    const sharp_tcp_session_t *t = SESSION(c);
    return !t || t->paused;
}

static void tp_flush(sharp_conn_t *c)
{
    (void)c;
}

static uint64_t tp_buffered(const sharp_conn_t *c, const sharp_stream_t *s)
{
    (void)s;
    const sharp_tcp_session_t *t = SESSION(c);
    return t ? t->early.cap : 0;
}

static void tp_release(sharp_conn_t *c)
{
    sharp_tcp_session_t *t = SESSION(c);
    if (!t) return;
    sharp_tcp_proxy_end(c);
    if (t->info.upstream_tls) sharp_tls_conn_free((struct sharp_tls_conn *)t->info.upstream_tls);
    if (t->cluster) sharp_cluster_unref(t->cluster);
    sharp_sbuf_free(&t->early);
    sharp_dynamic_metadata_free(t->info.dynamic_metadata);
    free(t);
    c->tcp_session = NULL;
}

const sharp_server_codec_t sharp_tcp_proxy_codec = {
    .name = "tcp_proxy",
    .dispatch = tp_dispatch,
    .peer_closed = tp_peer_closed,
    .encode_headers = tp_encode_headers,
    .encode_data = tp_encode_data,
    .encode_trailers = tp_encode_trailers,
    .send_continue = tp_stream_nothing,
    .read_disable = tp_read_disable,
    .stream_done = tp_stream_done,
    .busy = tp_busy,
    .read_blocked = tp_read_blocked,
    .flush = tp_flush,
    .buffered = tp_buffered,
    .release = tp_release,
};

/* ---- what the connection manager calls ---- */

sharp_stream_info_t *sharp_tcp_proxy_info(sharp_conn_t *c)
{
    return c->tcp_session ? &c->tcp_session->info : NULL;
}

void sharp_tcp_proxy_begin(sharp_conn_t *c)
{
    const sharp_tcp_proxy_config_t *cfg = c->hcm->tcp_proxy;
    sharp_tcp_session_t *t = sharp_calloc(1, sizeof *t);
    t->c = c;
    t->cfg = cfg;
    c->tcp_session = t;
    c->codec = &sharp_tcp_proxy_codec;
    t->paused = true;
    sharp_stream_info_t *si = &t->info;
    si->start_wall_us = sharp_wall_us();
    si->start_ns = c->start_ns;
    SHARP_COPY_CSTR(si->downstream_remote_address, c->remote);
    SHARP_COPY_CSTR(si->downstream_direct_remote_address, c->direct_remote);
    /* the connection's dynamic metadata (PROXY protocol TLVs) is the
     * session's: Envoy's TCP proxy logs the connection's stream info */
    for (uint32_t i = 0; c->conn_metadata && i < c->conn_metadata->n; i++)
        sharp_dynamic_metadata_replace(&si->dynamic_metadata, c->conn_metadata->ns[i], strlen(c->conn_metadata->ns[i]),
                                       &c->conn_metadata->structs[i]);
    SHARP_COPY_CSTR(si->downstream_local_address, c->local);
    si->downstream_tls = sharp_conn_tls_info(c);
    if (!si->downstream_tls && c->inspected_sni) {
        t->passthrough.sni = c->inspected_sni;
        si->downstream_tls = &t->passthrough;
    }
    touch(t);
    /* these run from the downstream connection, as Envoy's (onNewConnection);
     * the periodic access log takes the HCM's stream idle timer, unused here */
    if (cfg->log_interval_ms)
        uv_timer_start(&c->stream_idle_timer, on_log_interval, cfg->log_interval_ms, cfg->log_interval_ms);
    if (cfg->idle_timeout_ms) uv_timer_start(&c->idle_timer, on_idle, cfg->idle_timeout_ms, 0);
    if (cfg->max_duration_ms) {
        /* Envoy's jitter: a random part of ceil(duration * percentage) more */
        uint64_t ms = cfg->max_duration_ms;
        uint64_t jitter = (uint64_t)ceil((double)ms * cfg->max_duration_jitter_pct / 100.0);
        if (jitter) ms += sharp_worker_random(c->worker) % jitter;
        uv_timer_start(&c->duration_timer, on_max_duration, ms, 0);
    }
    sharp_debug(connection, "[C%llu] TCP proxy '%s': new connection", c->id, cfg->stat_prefix);
    start(t);
    if (!c->closing) sharp_conn_update_reading(c);
}

void sharp_tcp_proxy_end(sharp_conn_t *c)
{
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || t->ended) return;
    t->ended = true;
    if (t->pool) {
        /* the pool goes once the upstream connection has sent what it
         * still holds (tcp_client.c) */
        sharp_pool_cancel(&t->req);
        sharp_pool_retire(t->pool);
        t->pool = NULL;
    }
    t->cx = NULL;
    t->tunnel_cx = NULL;
    if (t->view) {
        sharp_view_unref(t->view);
        t->view = NULL;
        t->cl = NULL;
    }
    t->info.end_ns = sharp_now_ns();
    sharp_access_log_emit_all(c->worker, c->hcm, &t->info);
}

void sharp_tcp_proxy_check_host(sharp_conn_t *c)
{
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || !t->cx || !t->cluster->close_connections_on_host_health_failure || c->closing) return;
    /* the host's drain generation moves on a health check failure and on
     * an outlier ejection; only the former closes TCP proxy connections */
    if (atomic_load_explicit(&t->host->drain_gen, memory_order_acquire) == t->host_drain_gen ||
        !(atomic_load_explicit(&t->host->health_flags, memory_order_relaxed) & SHARP_HOST_FAILED_ACTIVE_HC))
        return;
    sharp_debug(connection, "[C%llu] TCP proxy: upstream host %s failed its health checks: closing", c->id,
                t->host->address);
    sharp_conn_close(c);
}

void sharp_tcp_proxy_downstream_watermark(sharp_conn_t *c, bool above)
{
    sharp_tcp_session_t *t = SESSION(c);
    if (!t || t->down_above == above) return;
    t->down_above = above;
    if (t->cx) sharp_upstream_cx_read_disable(t->cx, above);
}

/* health_check.c: see health_check.h. The state machine first (pure), then
 * the checker that drives it on the main loop.
 *
 * Lifetimes: the checker owns its sessions (one per checked host; a DNS
 * cluster's new host gets one, a removed host's session is closed) and
 * every connection it opened. A session frees itself once both its timers
 * are closed. A session has two timers for its whole life
 * and at most one connection at a time; a connection the session lets go
 * (timeout, failure, no reuse) is detached from it (conn->s = NULL) and
 * closed, and its memory is released in its close callback. The checker
 * counts its open handles; stop closes them all and the last close callback
 * frees the checker, so stopping never waits and never leaks. */
#include "upstream/health_check.h"
#include "runtime.h"
#include "upstream/outlier.h"
#include "upstream/cluster.h"
#include "log.h"
#include "net.h"
#include "sbuf.h"
#include "snapshot.h"

#include "http/grpc.h"
#include "tls/conn.h"
#include "tls/context.h"

#include <llhttp.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <strings.h>

/* ---- config ---- */

void sharp_hc_config_free(sharp_hc_config_t *cfg)
{
    if (!cfg) return;
    free(cfg->method);
    free(cfg->path);
    free(cfg->host);
    free(cfg->grpc_service);
    free(cfg->grpc_authority);
    free(cfg->expected);
    free(cfg->retriable);
    sharp_header_ops_free(&cfg->headers);
    free(cfg->send.data);
    for (uint32_t i = 0; i < cfg->nreceive; i++)
        free(cfg->receive[i].data);
    free(cfg->receive);
    free(cfg);
}

void sharp_hc_stats_init(sharp_hc_config_t *cfg, sharp_stats_t *s, const char *cluster)
{
    sharp_hc_stats_t *st = &cfg->st;
#define C(f) st->f = sharp_stats_counterf(s, "cluster.%s.health_check." #f, cluster)
#define G(f) st->f = sharp_stats_gaugef(s, "cluster.%s.health_check." #f, cluster)
    C(attempt);
    C(success);
    C(failure);
    C(network_failure);
    C(passive_failure);
    C(verify_cluster);
    G(healthy);
    G(degraded);
#undef C
#undef G
    sharp_gauge_set(s, st->healthy, 0);
    sharp_gauge_set(s, st->degraded, 0);
}

/* ---- state machine (Envoy's ActiveHealthCheckSession) ---- */

void sharp_hc_state_init(sharp_hc_state_t *st)
{
    memset(st, 0, sizeof *st);
    st->failed = true;
    st->first_check = true;
}

/* Success: a failed host becomes healthy on its very first result, or
 * after healthy_threshold consecutive successes. Failure: a healthy host
 * fails at once on an active (status/payload) failure, or after
 * unhealthy_threshold consecutive network failures, timeouts or retriable
 * statuses. The counters compare with == as Envoy's do, so they only count
 * while the host is on the other side. */
sharp_hc_transition_t sharp_hc_state_put(const sharp_hc_config_t *cfg, sharp_hc_state_t *st,
                                         sharp_hc_result_t r)
{
    sharp_hc_transition_t t = SHARP_HC_UNCHANGED;
    if (sharp_hc_result_ok(r)) {
        st->num_unhealthy = 0;
        if (st->failed) {
            if (st->first_check || ++st->num_healthy == cfg->healthy_threshold) {
                st->failed = false;
                st->timeout = false;
                t = SHARP_HC_CHANGED;
            } else {
                t = SHARP_HC_CHANGE_PENDING;
            }
        }
        bool degraded = r == SHARP_HC_DEGRADED;
        if (degraded != st->degraded) {
            st->degraded = degraded;
            if (t == SHARP_HC_UNCHANGED) t = SHARP_HC_CHANGED;
        }
    } else {
        st->num_healthy = 0;
        if (!st->failed) {
            bool counted =
                r == SHARP_HC_NETWORK || r == SHARP_HC_TIMEOUT || r == SHARP_HC_FAILED_RETRIABLE;
            if (!counted || ++st->num_unhealthy == cfg->unhealthy_threshold) {
                st->failed = true;
                t = SHARP_HC_CHANGED;
            } else {
                t = SHARP_HC_CHANGE_PENDING;
            }
        }
        /* Envoy's setUnhealthy: a timeout of a failed host says so, any
         * other failure clears it */
        st->timeout = r == SHARP_HC_TIMEOUT && st->failed;
    }
    st->first_check = false;
    return t;
}

uint64_t sharp_hc_jitter(const sharp_hc_config_t *cfg, uint64_t base_ms, uint64_t jitter_ms,
                         uint64_t *rng)
{
    uint64_t mod = (uint64_t)cfg->interval_jitter_percent * base_ms / 100;
    if (mod) base_ms += sharp_xorshift64s(rng) % mod;
    if (jitter_ms) base_ms += sharp_xorshift64s(rng) % jitter_ms;
    /* Envoy's intervalWithJitter bounds every interval by the runtime keys
     * health_check.min_interval and .max_interval (milliseconds) */
    uint64_t lo = sharp_runtime_get_u64("health_check.min_interval", 0);
    uint64_t hi = sharp_runtime_get_u64("health_check.max_interval", UINT64_MAX);
    base_ms = SHARP_MAX(SHARP_MIN(base_ms, hi), lo);
    return base_ms ? base_ms : 1; /* never 0: a zero interval would spin */
}

uint64_t sharp_hc_interval(const sharp_hc_config_t *cfg, bool has_traffic, bool ok,
                           sharp_hc_transition_t t, uint64_t *rng)
{
    uint64_t base;
    bool pending = t == SHARP_HC_CHANGE_PENDING;
    if (!has_traffic)
        base = ok && !pending ? cfg->no_traffic_healthy_interval_ms : cfg->no_traffic_interval_ms;
    else if (ok)
        base = pending ? cfg->healthy_edge_interval_ms : cfg->interval_ms;
    else
        base = pending ? cfg->unhealthy_edge_interval_ms : cfg->unhealthy_interval_ms;
    return sharp_hc_jitter(cfg, base, cfg->interval_jitter_ms, rng);
}

uint64_t sharp_hc_initial_delay(const sharp_hc_config_t *cfg, uint64_t *rng)
{
    return cfg->initial_jitter_ms ? sharp_hc_jitter(cfg, 0, cfg->initial_jitter_ms, rng) : 0;
}

static bool in_ranges(const sharp_hc_range_t *r, uint32_t n, uint32_t status)
{
    for (uint32_t i = 0; i < n; i++)
        if (status >= r[i].start && status < r[i].end) return true;
    return false;
}

bool sharp_hc_status_expected(const sharp_hc_config_t *cfg, uint32_t status)
{
    if (!cfg->nexpected) return status == 200;
    return in_ranges(cfg->expected, cfg->nexpected, status);
}

bool sharp_hc_status_retriable(const sharp_hc_config_t *cfg, uint32_t status)
{
    return in_ranges(cfg->retriable, cfg->nretriable, status);
}

bool sharp_hc_payload_match(const sharp_hc_payload_t *want, uint32_t nwant, const uint8_t *buf,
                            size_t len)
{
    size_t pos = 0;
    for (uint32_t i = 0; i < nwant; i++) {
        if (!want[i].len) continue;
        if (pos > len) return false;
        const uint8_t *hit = memmem(buf + pos, len - pos, want[i].data, want[i].len);
        if (!hit) return false;
        pos = (size_t)(hit - buf) + want[i].len;
    }
    return true;
}

/* ---- the checker ---- */

typedef struct hc_session hc_session_t;

/* One connection to a host; see the lifetime note at the top. */
typedef struct hc_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    sharp_writer_t writer;
    llhttp_t parser;
    sharp_health_checker_t *hc;
    hc_session_t *s; /* NULL once detached */
    bool closing;
    bool connected;
    /* the HTTP response being parsed */
    bool message_done; /* the parser paused at its end */
    bool keep_alive;
    bool degraded; /* x-envoy-degraded was present */
    uint32_t status;
    char name[32]; /* header name so far (only short names matter) */
    size_t name_len;
    /* TCP: bytes received, matched against the receive payloads; gRPC:
     * the response body */
    sharp_sbuf_t rx;
    /* gRPC: an HTTP/2 session, one stream per check */
    nghttp2_session *h2;
    int32_t stream_id;     /* the check's stream, 0 when none is open */
    bool in_trailers;      /* the header block being received is the trailers */
    bool grpc_type;        /* content-type application/grpc[+...|;...] */
    bool has_grpc_status;  /* from the trailers, or a trailers-only response */
    int64_t grpc_status;
    bool body_overflow;
    bool goaway;           /* the server is going away: no more checks on it */
    size_t req_off;        /* bytes of the request message sent */
    /* a TLS cluster's checks run over its transport socket, as Envoy's:
     * the handshake first, then the check through the engine */
    sharp_tls_conn_t *tls;
    bool tls_open;
} hc_conn_t;

struct hc_session {
    sharp_health_checker_t *hc;
    sharp_cluster_t *cluster;
    sharp_host_t *host;
    const sharp_hc_config_t *cfg;
    uv_timer_t interval_timer;
    uv_timer_t timeout_timer;
    hc_conn_t *conn;
    sharp_hc_state_t st;
    bool in_flight;       /* a check is running (between its start and its result) */
    bool head;            /* the HTTP method is HEAD: answers have no body */
    sharp_sbuf_t request; /* the HTTP request, built once */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint8_t timers_open;  /* the session is freed when both timers are closed */
    bool counts_for_init; /* a host of the first round (the server waits for its first result) */
    bool counts_for_cluster; /* a host of the first round of a cluster added later (its warming) */
};

/* A cluster added after the start (CDS): held until it is removed; its
 * first round ends its warming. */
typedef struct hc_cluster {
    sharp_cluster_t *c; /* a reference */
    uint32_t awaiting;  /* hosts of its first round without a result */
    void (*on_first_round)(void *);
    void *arg;
} hc_cluster_t;

struct sharp_health_checker {
    uv_loop_t *loop;
    sharp_snapshot_t *snap;
    sharp_stats_t *stats;
    sharp_stats_shard_t *shard; /* the main thread's */
    hc_session_t **sessions;
    uint32_t nsessions, cap;
    uint32_t open_handles; /* timers and connections not yet closed */
    bool stopping;
    uint64_t rng;
    uint32_t awaiting_first; /* hosts without a first result yet */
    void (*on_initialized)(void *);
    void *init_arg;
    hc_cluster_t *dyn; /* clusters added after the start */
    uint32_t ndyn;
};

#define RX_LIMIT (64 * 1024)

static llhttp_settings_t parser_settings;
static void conn_close(hc_conn_t *conn);
static void session_send(hc_session_t *s);
static void on_interval(uv_timer_t *t);

static void checker_free(sharp_health_checker_t *hc)
{
    free(hc->sessions); /* the sessions freed themselves */
    for (uint32_t i = 0; i < hc->ndyn; i++) sharp_cluster_unref(hc->dyn[i].c);
    free(hc->dyn);
    sharp_snapshot_unref(hc->snap);
    free(hc);
}

static hc_cluster_t *dyn_cluster(sharp_health_checker_t *hc, const sharp_cluster_t *c)
{
    for (uint32_t i = 0; i < hc->ndyn; i++)
        if (hc->dyn[i].c == c) return &hc->dyn[i];
    return NULL;
}

/* Once every host of a cluster's first round had its first result (or
 * left): the callback, which may add and remove clusters, so never from
 * inside a walk over the sessions. */
static void cluster_maybe_warm(sharp_health_checker_t *hc, const sharp_cluster_t *c)
{
    hc_cluster_t *d = dyn_cluster(hc, c);
    if (!d || d->awaiting || !d->on_first_round) return;
    void (*fn)(void *) = d->on_first_round;
    d->on_first_round = NULL;
    fn(d->arg);
}

/* A host of a cluster's first round had its first result (or left). */
static void cluster_first_result(sharp_health_checker_t *hc, const sharp_cluster_t *c, bool fire)
{
    hc_cluster_t *d = dyn_cluster(hc, c);
    if (!d || !d->awaiting) return;
    d->awaiting--;
    if (fire) cluster_maybe_warm(hc, c);
}

static void handle_closed(sharp_health_checker_t *hc)
{
    if (--hc->open_handles == 0 && hc->stopping) checker_free(hc);
}

static void on_timer_closed(uv_handle_t *h)
{
    hc_session_t *s = h->data;
    sharp_health_checker_t *hc = s->hc;
    if (--s->timers_open == 0) {
        sharp_sbuf_free(&s->request);
        free(s);
    }
    handle_closed(hc);
}

/* Envoy's notion of traffic: the cluster ever opened an upstream connection
 * or moved upstream bytes. Health check connections do not count. */
static bool cluster_has_traffic(sharp_health_checker_t *hc, const sharp_cluster_t *c)
{
    return sharp_stats_used(hc->stats, c->st.cx_total) ||
           sharp_stats_used(hc->stats, c->st.cx_tx_bytes_total) ||
           sharp_stats_used(hc->stats, c->st.cx_rx_bytes_total);
}

/* healthy/degraded gauges of the cluster's checker and the cluster's
 * membership_healthy, recounted after any change. */
static void update_gauges(sharp_health_checker_t *hc, const sharp_cluster_t *c)
{
    int64_t healthy = 0, degraded = 0, members_healthy = 0;
    for (uint32_t i = 0; i < hc->nsessions; i++) {
        const hc_session_t *s = hc->sessions[i];
        if (s->cluster != c) continue;
        healthy += !s->st.failed;
        degraded += s->st.degraded;
    }
    for (uint32_t i = 0; i < c->nhosts; i++)
        members_healthy += sharp_host_healthy(c->hosts[i]);
    sharp_gauge_set(hc->stats, c->health_check->st.healthy, healthy);
    sharp_gauge_set(hc->stats, c->health_check->st.degraded, degraded);
    sharp_gauge_set(hc->stats, c->st.membership_healthy, members_healthy);
}

static const char *result_name(sharp_hc_result_t r)
{
    switch (r) {
    case SHARP_HC_OK:
        return "ok";
    case SHARP_HC_DEGRADED:
        return "degraded";
    case SHARP_HC_FAILED:
        return "unexpected answer";
    case SHARP_HC_FAILED_RETRIABLE:
        return "retriable status";
    case SHARP_HC_NETWORK:
        return "network failure";
    case SHARP_HC_TIMEOUT:
        return "timeout";
    }
    return "?";
}

/* The end of one check: counts it, moves the host's health, and arms the
 * next check. `status` is the HTTP status when there was one (for the log). */
static void session_result(hc_session_t *s, sharp_hc_result_t r, uint32_t status)
{
    sharp_health_checker_t *hc = s->hc;
    if (!s->in_flight || hc->stopping) return;
    s->in_flight = false;
    uv_timer_stop(&s->timeout_timer);
    const sharp_hc_stats_t *st = &s->cfg->st;
    if (sharp_hc_result_ok(r)) {
        sharp_counter_inc(hc->shard, st->success);
    } else {
        sharp_counter_inc(hc->shard, st->failure);
        if (r == SHARP_HC_NETWORK || r == SHARP_HC_TIMEOUT)
            sharp_counter_inc(hc->shard, st->network_failure);
    }
    /* A worker failed the host at once (x-envoy-immediate-health-check-fail
     * from the upstream): from here it needs healthy_threshold passes. */
    if (!s->st.failed && !s->st.first_check &&
        (atomic_load_explicit(&s->host->health_flags, memory_order_relaxed) & SHARP_HOST_FAILED_ACTIVE_HC)) {
        s->st.failed = true;
        s->st.num_healthy = s->st.num_unhealthy = 0;
    }
    bool was_failed = s->st.failed, was_first = s->st.first_check;
    sharp_hc_transition_t t = sharp_hc_state_put(s->cfg, &s->st, r);
    s->host->hc_timeout = s->st.timeout;
    if (s->st.failed != was_failed) {
        if (s->st.failed) {
            sharp_host_health_set(s->host, SHARP_HOST_FAILED_ACTIVE_HC);
            /* Envoy drains the host's HTTP pools on this transition
             * (close_connections_on_host_health_failure or not). */
            sharp_host_drain_connections(s->host);
        } else
            sharp_host_health_clear(s->host, SHARP_HOST_FAILED_ACTIVE_HC);
        if (status)
            sharp_log_info("health check: cluster '%s' host %s is now %s (%s, status %u)",
                           s->cluster->name, s->host->address,
                           s->st.failed ? "unhealthy" : "healthy", result_name(r), status);
        else
            sharp_log_info("health check: cluster '%s' host %s is now %s (%s)", s->cluster->name,
                           s->host->address, s->st.failed ? "unhealthy" : "healthy",
                           result_name(r));
    }
    if (t == SHARP_HC_CHANGED) update_gauges(hc, s->cluster);
    /* Envoy: a passing check of a host not failing active checks un-ejects
     * it (successful_active_health_check_uneject_host). */
    if (sharp_hc_result_ok(r) && !s->st.failed)
        sharp_outlier_on_health_check_success(s->cluster, s->host, uv_now(s->interval_timer.loop));
    uint64_t next = sharp_hc_interval(s->cfg, cluster_has_traffic(hc, s->cluster),
                                      sharp_hc_result_ok(r), t, &hc->rng);
    uv_timer_start(&s->interval_timer, on_interval, next, 0);
    if (was_first && s->counts_for_init) {
        s->counts_for_init = false;
        if (hc->awaiting_first && --hc->awaiting_first == 0 && hc->on_initialized)
            hc->on_initialized(hc->init_arg);
    }
    if (was_first && s->counts_for_cluster) {
        s->counts_for_cluster = false;
        cluster_first_result(hc, s->cluster, true); /* last: may remove clusters */
    }
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *h)
{
    hc_conn_t *conn = h->data;
    sharp_health_checker_t *hc = conn->hc;
    sharp_sbuf_free(&conn->rx);
    if (conn->h2) nghttp2_session_del(conn->h2);
    sharp_tls_conn_free(conn->tls);
    sharp_writer_release(&conn->writer);
    free(conn);
    handle_closed(hc);
}

/* Detaches the connection from its session and closes it (idempotent). A
 * pending connect or write is cancelled by libuv before the close callback;
 * their callbacks see `closing` and do nothing. */
static void conn_close(hc_conn_t *conn)
{
    if (conn->closing) return;
    conn->closing = true;
    if (conn->s && conn->s->conn == conn) conn->s->conn = NULL;
    conn->s = NULL;
    uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
}

/* Ends the running check with a failure and drops the connection. */
static void conn_fail(hc_conn_t *conn, sharp_hc_result_t r)
{
    hc_session_t *s = conn->s;
    conn_close(conn);
    if (s) session_result(s, r, 0);
}

static void on_write_error(sharp_writer_t *w, int status)
{
    (void)status;
    hc_conn_t *conn = sharp_container_of(w, hc_conn_t, writer);
    if (!conn->closing) conn_fail(conn, SHARP_HC_NETWORK);
}

/* ---- HTTP: the response status and two header names, body discarded ---- */

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    hc_conn_t *conn = p->data;
    if (conn->name_len + len <= sizeof conn->name) memcpy(conn->name + conn->name_len, at, len);
    conn->name_len += len;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    hc_conn_t *conn = p->data;
    static const char degraded[] = "x-envoy-degraded";
    if (conn->name_len == sizeof degraded - 1 &&
        strncasecmp(conn->name, degraded, conn->name_len) == 0)
        conn->degraded = true;
    conn->name_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    hc_conn_t *conn = p->data;
    conn->status = p->status_code;
    return conn->s && conn->s->head ? 1 : 0; /* 1: a HEAD answer has no body */
}

static int on_message_complete(llhttp_t *p)
{
    hc_conn_t *conn = p->data;
    if (conn->status >= 100 && conn->status < 200 && conn->status != 101) {
        conn->degraded = false; /* an interim answer: the real one follows */
        return 0;
    }
    conn->message_done = true;
    conn->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* stop here: anything after it is not ours */
}

/* Envoy's HttpActiveHealthCheckSession::healthCheckResult, for both codecs. */
static sharp_hc_result_t http_result(const hc_session_t *s, const hc_conn_t *conn)
{
    uint32_t status = conn->status;
    if (!sharp_hc_status_expected(s->cfg, status))
        return sharp_hc_status_retriable(s->cfg, status) ? SHARP_HC_FAILED_RETRIABLE : SHARP_HC_FAILED;
    return conn->degraded ? SHARP_HC_DEGRADED : SHARP_HC_OK;
}

static void http_done(hc_session_t *s, hc_conn_t *conn)
{
    uint32_t status = conn->status;
    sharp_hc_result_t r = http_result(s, conn);
    if (!s->cfg->reuse_connection || !conn->keep_alive) conn_close(conn);
    session_result(s, r, status);
}

static void http_read(hc_session_t *s, hc_conn_t *conn, const char *p, size_t n, bool eof)
{
    if (!s->in_flight) { /* unsolicited bytes, or the peer closed an idle connection */
        conn_close(conn);
        return;
    }
    llhttp_errno_t e = eof ? llhttp_finish(&conn->parser) : llhttp_execute(&conn->parser, p, n);
    if (conn->message_done) {
        http_done(s, conn);
        if (eof) conn_close(conn);
        return;
    }
    if (eof || e != HPE_OK) conn_fail(conn, SHARP_HC_NETWORK);
}

/* ---- HTTP/2 sessions: gRPC's grpc.health.v1.Health/Check (Envoy's
 * GrpcHealthCheckerImpl) and HTTP checks with codec_client_type HTTP2 ---- */

static bool h2_http(const hc_conn_t *conn)
{
    return conn->s && conn->s->cfg->type == SHARP_HC_HTTP;
}

/* Writes out what the session has to send; false when the connection
 * failed (the check's result is given). */
static bool h2_flush(hc_conn_t *conn)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(conn->h2, &data);
        if (n < 0) {
            conn_fail(conn, SHARP_HC_NETWORK);
            return false;
        }
        if (n == 0) return true;
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
        if (sharp_writer_write(&conn->writer, &b, 1) < 0) {
            conn_fail(conn, SHARP_HC_NETWORK);
            return false;
        }
        if (conn->closing) return false;
    }
}

/* Envoy's onRpcComplete: grpc-status 0 and a SERVING answer pass; any
 * other end of the call is an active failure. */
static sharp_hc_result_t grpc_result(hc_conn_t *conn)
{
    if (!conn->has_grpc_status || conn->grpc_status != 0 || conn->body_overflow) return SHARP_HC_FAILED;
    uint64_t st;
    if (sharp_grpc_health_response_status(conn->rx.data, conn->rx.len, &st) < 0) return SHARP_HC_FAILED;
    return st == 1 ? SHARP_HC_OK : SHARP_HC_FAILED; /* 1: SERVING */
}

/* The check's stream is over (ended, reset, or given up): the result, then
 * the connection kept for the next check or closed. */
static void h2_check_done(hc_conn_t *conn, sharp_hc_result_t r)
{
    hc_session_t *s = conn->s;
    conn->stream_id = 0;
    if (!s || !s->in_flight) return;
    if (!s->cfg->reuse_connection || conn->goaway) conn_close(conn);
    session_result(s, r, conn->status);
}

static int h2_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    (void)ng;
    hc_conn_t *conn = user;
    if (frame->hd.stream_id == conn->stream_id) conn->in_trailers = frame->headers.cat == NGHTTP2_HCAT_HEADERS;
    return 0;
}

static int h2_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    (void)ng;
    (void)flags;
    hc_conn_t *conn = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != conn->stream_id) return 0;
    sharp_str_t v = {(const char *)value, valuelen};
    if (!conn->in_trailers && namelen == 7 && memcmp(name, ":status", 7) == 0) {
        uint32_t code = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++) code = code * 10 + (uint32_t)(value[i] - '0');
        conn->status = code;
    } else if (!conn->in_trailers && namelen == 16 && memcmp(name, "x-envoy-degraded", 16) == 0) {
        conn->degraded = true;
    } else if (!conn->in_trailers && namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        sharp_headers_t h;
        sharp_headers_init(&h);
        sharp_headers_add(&h, "content-type", 12, v.p, v.len);
        conn->grpc_type = sharp_grpc_is_request(&h); /* the same content-type rule */
        sharp_headers_free(&h);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        sharp_headers_t h;
        sharp_headers_init(&h);
        sharp_headers_add(&h, "grpc-status", 11, v.p, v.len);
        conn->has_grpc_status = sharp_grpc_response_status(NULL, &h, 0, &conn->grpc_status);
        sharp_headers_free(&h);
    }
    return 0;
}

static int h2_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                            void *user)
{
    (void)ng;
    (void)flags;
    hc_conn_t *conn = user;
    if (stream_id != conn->stream_id || h2_http(conn)) return 0; /* an HTTP check's body is discarded */
    if (conn->rx.len + len > RX_LIMIT) {
        conn->body_overflow = true;
        return 0;
    }
    sharp_sbuf_append(&conn->rx, (const char *)data, len);
    return 0;
}

static int h2_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    hc_conn_t *conn = user;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        conn->goaway = true;
        return 0;
    }
    if (frame->hd.stream_id != conn->stream_id || !conn->stream_id) return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (h2_http(conn)) {
        /* an interim 1xx answer is followed by the real one */
        if (frame->hd.type == NGHTTP2_HEADERS && !conn->in_trailers && conn->status >= 100 && conn->status < 200) {
            conn->degraded = false;
            return 0;
        }
        if (end && (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA))
            h2_check_done(conn, http_result(conn->s, conn));
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && !conn->in_trailers) {
        /* Envoy decides on the headers when they are not a gRPC answer: a
         * status other than 200 (even with a grpc-status, there is no
         * SERVING message), or a response that goes on without a gRPC
         * content-type; then it drops the stream. A trailers-only answer
         * is judged by its grpc-status below (and fails: no message). */
        bool fail = conn->status != 200 || (!conn->grpc_type && !end);
        if (fail && !end) {
            int32_t id = conn->stream_id;
            h2_check_done(conn, SHARP_HC_FAILED);
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
            return 0;
        }
        if (fail) {
            h2_check_done(conn, SHARP_HC_FAILED);
            return 0;
        }
    }
    if (end && (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA))
        h2_check_done(conn, grpc_result(conn));
    return 0;
}

static int h2_on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *user)
{
    (void)ng;
    (void)error_code;
    hc_conn_t *conn = user;
    /* closed before its end was seen: the server reset the stream */
    if (stream_id == conn->stream_id) h2_check_done(conn, SHARP_HC_NETWORK);
    return 0;
}

static ssize_t h2_read_request(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                               uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
    (void)ng;
    (void)stream_id;
    (void)source;
    hc_conn_t *conn = user;
    const sharp_sbuf_t *req = conn->s ? &conn->s->request : NULL;
    size_t left = req ? req->len - conn->req_off : 0;
    size_t n = SHARP_MIN(left, length);
    if (n) memcpy(buf, req->data + conn->req_off, n);
    conn->req_off += n;
    if (conn->req_off >= (req ? req->len : 0)) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static nghttp2_session_callbacks *h2_callbacks;

static void h2_connected(hc_conn_t *conn)
{
    if (!h2_callbacks) {
        nghttp2_session_callbacks_new(&h2_callbacks);
        nghttp2_session_callbacks_set_on_begin_headers_callback(h2_callbacks, h2_on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, h2_on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_callbacks, h2_on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, h2_on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, h2_on_stream_close);
    }
    nghttp2_session_client_new(&conn->h2, h2_callbacks, conn);
    nghttp2_submit_settings(conn->h2, NGHTTP2_FLAG_NONE, NULL, 0);
}

/* One check: a new stream on the session. */
static void grpc_send(hc_session_t *s, hc_conn_t *conn)
{
    if (conn->goaway) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", "POST");
    sharp_headers_add_cstr(&h, ":scheme", "http");
    sharp_headers_add_cstr(&h, ":path", "/grpc.health.v1.Health/Check");
    sharp_headers_add_cstr(&h, ":authority", s->host->hc.hostname[0] ? s->host->hc.hostname
                                             : s->cfg->grpc_authority ? s->cfg->grpc_authority
                                                                      : s->cluster->name);
    sharp_headers_add_cstr(&h, "content-type", "application/grpc");
    sharp_headers_add_cstr(&h, "te", "trailers");
    sharp_headers_add_cstr(&h, "user-agent", "Envoy/HC");
    sharp_header_ops_apply(&s->cfg->headers, &h);
    nghttp2_nv *nv = sharp_calloc(h.n ? h.n : 1, sizeof *nv);
    size_t nn = 0;
    for (uint32_t i = 0; i < h.n; i++) {
        sharp_str_t n = sharp_headers_name(&h, i), v = sharp_headers_value(&h, i);
        /* initial_metadata may not replace the pseudo-headers */
        if (i >= 4 && n.len && n.p[0] == ':') continue;
        nv[nn++] = (nghttp2_nv){(uint8_t *)n.p, (uint8_t *)v.p, n.len, v.len, NGHTTP2_NV_FLAG_NONE};
    }
    conn->status = 0;
    conn->in_trailers = conn->grpc_type = conn->has_grpc_status = conn->body_overflow = false;
    conn->req_off = 0;
    sharp_sbuf_reset(&conn->rx);
    nghttp2_data_provider prd = {.read_callback = h2_read_request};
    int32_t id = nghttp2_submit_request(conn->h2, NULL, nv, nn, &prd, NULL);
    free(nv);
    sharp_headers_free(&h);
    if (id < 0) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    conn->stream_id = id;
    h2_flush(conn);
}

/* The host header of an HTTP check: the endpoint's health_check_config
 * hostname, else the check's host, else the cluster's name (Envoy's
 * HealthCheckUtility::getHostname). */
static const char *check_host(const hc_session_t *s)
{
    if (s->host->hc.hostname[0]) return s->host->hc.hostname;
    return s->cfg->host ? s->cfg->host : s->cluster->name;
}

/* An HTTP check with codec_client_type HTTP2: one stream per check, as
 * Envoy's HTTP checker sends it (method, path, host as :authority,
 * user-agent Envoy/HC, the configured headers; no body). */
static void h2_http_send(hc_session_t *s, hc_conn_t *conn)
{
    if (conn->goaway) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    const sharp_hc_config_t *cfg = s->cfg;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", cfg->method);
    sharp_headers_add_cstr(&h, ":scheme", "http");
    sharp_headers_add_cstr(&h, ":path", cfg->path);
    sharp_headers_add_cstr(&h, ":authority", check_host(s));
    sharp_headers_add_cstr(&h, "user-agent", "Envoy/HC");
    sharp_header_ops_apply(&cfg->headers, &h);
    nghttp2_nv *nv = sharp_calloc(h.n ? h.n : 1, sizeof *nv);
    size_t nn = 0;
    for (uint32_t i = 0; i < h.n; i++) {
        sharp_str_t n = sharp_headers_name(&h, i), v = sharp_headers_value(&h, i);
        /* request_headers_to_add may not add pseudo-headers, nor ones
         * HTTP/2 forbids */
        if (i >= 4 && n.len && (n.p[0] == ':' || sharp_header_is_connection_specific(n))) continue;
        nv[nn++] = (nghttp2_nv){(uint8_t *)n.p, (uint8_t *)v.p, n.len, v.len, NGHTTP2_NV_FLAG_NONE};
    }
    conn->status = 0;
    conn->in_trailers = conn->degraded = false;
    int32_t id = nghttp2_submit_request(conn->h2, NULL, nv, nn, NULL, NULL);
    free(nv);
    sharp_headers_free(&h);
    if (id < 0) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    conn->stream_id = id;
    h2_flush(conn);
}

static void h2_read(hc_session_t *s, hc_conn_t *conn, const char *p, size_t n, bool eof)
{
    (void)s;
    if (eof) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    ssize_t rv = nghttp2_session_mem_recv(conn->h2, (const uint8_t *)p, n);
    if (conn->closing) return;
    if (rv < 0) {
        nghttp2_session_terminate_session(conn->h2, NGHTTP2_PROTOCOL_ERROR);
        h2_flush(conn);
        if (!conn->closing) conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    if (!h2_flush(conn)) return;
    /* a server that ended the session (GOAWAY and nothing left to do) */
    if (!nghttp2_session_want_read(conn->h2) && !nghttp2_session_want_write(conn->h2))
        conn_fail(conn, SHARP_HC_NETWORK);
}

/* ---- TCP: connect, send, find the receive payloads ---- */

static void tcp_read(hc_session_t *s, hc_conn_t *conn, const char *p, size_t n, bool eof)
{
    if (eof) {
        if (s->in_flight)
            conn_fail(conn, SHARP_HC_NETWORK);
        else
            conn_close(conn);
        return;
    }
    if (conn->rx.len + n > RX_LIMIT) sharp_sbuf_reset(&conn->rx);
    sharp_sbuf_append(&conn->rx, p, n);
    if (!s->in_flight) return;
    const sharp_hc_config_t *cfg = s->cfg;
    if (!sharp_hc_payload_match(cfg->receive, cfg->nreceive, (const uint8_t *)conn->rx.data,
                                conn->rx.len))
        return;
    sharp_sbuf_reset(&conn->rx);
    if (!cfg->reuse_connection) conn_close(conn);
    session_result(s, SHARP_HC_OK, 0);
}

/* Bytes of the check's protocol (plaintext, or decrypted) or its end. */
static void check_read(hc_conn_t *conn, const char *p, size_t n, bool eof)
{
    hc_session_t *s = conn->s;
    if (!s) {
        conn_close(conn);
        return;
    }
    if (s->cfg->type == SHARP_HC_HTTP && !s->cfg->http2)
        http_read(s, conn, p, n, eof);
    else if (s->cfg->type == SHARP_HC_GRPC || s->cfg->type == SHARP_HC_HTTP)
        h2_read(s, conn, p, n, eof); /* an HTTP/2 session */
    else
        tcp_read(s, conn, p, n, eof);
}

static void checks_begin(hc_conn_t *conn);

/* ---- TLS: the cluster's UpstreamTlsContext (Envoy health checks use the
 * cluster's transport socket) ---- */

static int tls_send(hc_conn_t *conn)
{
    return sharp_tls_conn_send(conn->tls, &conn->writer);
}

/* The writer's transport: the check's bytes are encrypted. */
static int tls_write(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs)
{
    hc_conn_t *conn = sharp_container_of(w, hc_conn_t, writer);
    size_t left;
    return sharp_tls_conn_encrypt(conn->tls, w, bufs, nbufs, false, &left);
}

static bool tls_plaintext(void *ud, const uint8_t *p, size_t n)
{
    hc_conn_t *conn = ud;
    if (conn->closing) return false;
    if (!conn->tls_open) {
        conn->tls_open = true;
        checks_begin(conn);
        if (conn->closing) return false;
    }
    check_read(conn, (const char *)p, n, false);
    return !conn->closing;
}

static void tls_read(hc_conn_t *conn, const char *p, size_t n)
{
    size_t off = 0;
    for (;;) {
        size_t took = sharp_tls_conn_feed(conn->tls, p + off, n - off);
        off += took;
        sharp_tls_state_t st = sharp_tls_conn_process(conn->tls);
        if (conn->closing) return;
        if (st != SHARP_TLS_HANDSHAKING && st != SHARP_TLS_FAILED && !conn->tls_open) {
            conn->tls_open = true;
            checks_begin(conn);
            if (conn->closing) return;
        }
        if (tls_send(conn) < 0 || st == SHARP_TLS_FAILED) {
            /* a failed handshake or TLS error: a network failure of the check */
            sharp_debug(hc, "health check TLS: %s", sharp_tls_conn_error(conn->tls));
            conn_fail(conn, SHARP_HC_NETWORK);
            return;
        }
        if (st == SHARP_TLS_PEER_CLOSED) {
            check_read(conn, NULL, 0, true);
            return;
        }
        if (off == n) return;
        if (!took) {
            conn_fail(conn, SHARP_HC_NETWORK);
            return;
        }
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    hc_conn_t *conn = stream->data;
    if (conn->closing || nread == 0) return;
    if (!conn->s) {
        conn_close(conn);
        return;
    }
    bool eof = nread < 0;
    if (conn->tls && !eof) {
        tls_read(conn, buf->base, (size_t)nread);
        return;
    }
    if (conn->tls && !conn->tls_open) {
        conn_fail(conn, SHARP_HC_NETWORK); /* closed during the handshake */
        return;
    }
    check_read(conn, buf->base, eof ? 0 : (size_t)nread, eof);
}

static void on_connect(uv_connect_t *req, int status)
{
    hc_conn_t *conn = req->data;
    if (conn->closing) return;
    hc_session_t *s = conn->s;
    if (status < 0) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    conn->connected = true;
    uv_read_start((uv_stream_t *)&conn->tcp, sharp_read_alloc, on_read);
    if (!s->cluster->tls) {
        checks_begin(conn);
        return;
    }
    sharp_tls_ctx_t *ctx = sharp_tls_slot_get(s->cluster->tls);
    if (!ctx) { /* its SDS secret has not come yet */
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    /* SNI as the cluster's connections send it; ALPN the check's protocol
     * unless the context names its own */
    const sharp_tls_config_t *cfg = sharp_tls_ctx_config(ctx);
    const char *sni = cfg->auto_host_sni && s->host->hostname[0] ? s->host->hostname : NULL;
    conn->tls = sharp_tls_conn_new(ctx, sni, tls_plaintext, conn);
    if (!conn->tls) {
        conn_fail(conn, SHARP_HC_NETWORK);
        return;
    }
    if (!cfg->alpn) {
        static const uint8_t h2[] = "\x02h2", h1[] = "\x08http/1.1";
        bool over_h2 = s->cfg->type == SHARP_HC_GRPC || (s->cfg->type == SHARP_HC_HTTP && s->cfg->http2);
        if (s->cfg->type != SHARP_HC_TCP)
            sharp_tls_conn_set_alpn(conn->tls, over_h2 ? h2 : h1, over_h2 ? sizeof h2 - 1 : sizeof h1 - 1);
    }
    conn->writer.transport = tls_write;
    sharp_tls_state_t st = sharp_tls_conn_process(conn->tls); /* the ClientHello */
    if (tls_send(conn) < 0 || st == SHARP_TLS_FAILED) conn_fail(conn, SHARP_HC_NETWORK);
}

/* The connection is ready for checks (connected, and for TLS the
 * handshake done). */
static void checks_begin(hc_conn_t *conn)
{
    hc_session_t *s = conn->s;
    if (!s) return;
    if (s->cfg->type == SHARP_HC_GRPC || (s->cfg->type == SHARP_HC_HTTP && s->cfg->http2)) h2_connected(conn);
    if (s->cfg->type == SHARP_HC_TCP && !s->cfg->nreceive) {
        /* a connect-only check: the connection was the answer */
        conn_close(conn);
        session_result(s, SHARP_HC_OK, 0);
        return;
    }
    session_send(s);
}

static int conn_open(hc_session_t *s)
{
    sharp_health_checker_t *hc = s->hc;
    hc_conn_t *conn = sharp_calloc(1, sizeof *conn);
    conn->hc = hc;
    conn->s = s;
    /* The socket exists before connect: the cluster's socket options
     * (tcp_keepalive) apply to health check connections too, as in Envoy. */
    int rc = uv_tcp_init_ex(hc->loop, &conn->tcp, ((const struct sockaddr *)&s->addr)->sa_family);
    if (rc < 0) uv_tcp_init(hc->loop, &conn->tcp);
    hc->open_handles++;
    conn->tcp.data = conn;
    conn->connect_req.data = conn;
    s->conn = conn;
    sharp_writer_init(&conn->writer, (uv_stream_t *)&conn->tcp, NULL, on_write_error);
    /* Unix sockets take no TCP options (and have no socket before connect) */
    bool at_once = false;
    if (rc == 0 && s->addr.ss_family != AF_UNIX) rc = sharp_cluster_socket_options(s->cluster, &conn->tcp);
    else rc = 0;
    /* an HDS cluster's upstream_bind_config: connect from its source
     * address (another family cannot connect, as in Envoy) */
    if (rc == 0 && s->cluster->bind_addrlen) {
        if (s->cluster->bind_addr.ss_family != s->addr.ss_family) rc = UV_EAFNOSUPPORT;
        else rc = uv_tcp_bind(&conn->tcp, (const struct sockaddr *)&s->cluster->bind_addr, 0);
    }
    if (rc == 0)
        rc = sharp_stream_connect(&conn->tcp, &conn->connect_req, (const struct sockaddr *)&s->addr,
                                  s->addrlen, on_connect, &at_once);
    if (rc < 0) {
        conn_close(conn);
        return rc;
    }
    if (s->addr.ss_family != AF_UNIX) uv_tcp_nodelay(&conn->tcp, 1);
    /* A Unix socket is connected already; the interval timer's callback
     * (the only caller) may carry on with it at once. */
    if (at_once) on_connect(&conn->connect_req, 0);
    return 0;
}

/* Sends the check on the session's connected connection. */
static void session_send(hc_session_t *s)
{
    hc_conn_t *conn = s->conn;
    const sharp_hc_config_t *cfg = s->cfg;
    uv_buf_t b;
    if (cfg->type == SHARP_HC_GRPC) {
        grpc_send(s, conn);
        return;
    }
    if (cfg->type == SHARP_HC_HTTP && cfg->http2) {
        h2_http_send(s, conn);
        return;
    }
    if (cfg->type == SHARP_HC_HTTP) {
        llhttp_init(&conn->parser, HTTP_RESPONSE, &parser_settings);
        conn->parser.data = conn;
        conn->message_done = conn->keep_alive = conn->degraded = false;
        conn->status = 0;
        conn->name_len = 0;
        b = uv_buf_init(s->request.data, (unsigned)s->request.len);
    } else {
        if (!cfg->send.len) return;
        b = uv_buf_init((char *)cfg->send.data, (unsigned)cfg->send.len);
    }
    if (sharp_writer_write(&conn->writer, &b, 1) < 0) conn_fail(conn, SHARP_HC_NETWORK);
}

/* ---- timers ---- */

static void on_timeout(uv_timer_t *t)
{
    hc_session_t *s = t->data;
    if (s->conn) conn_close(s->conn); /* whatever it was doing is abandoned */
    session_result(s, SHARP_HC_TIMEOUT, 0);
}

/* One check: the timeout covers connecting and the answer. */
static void on_interval(uv_timer_t *t)
{
    hc_session_t *s = t->data;
    sharp_health_checker_t *hc = s->hc;
    if (hc->stopping) return;
    s->in_flight = true;
    sharp_counter_inc(hc->shard, s->cfg->st.attempt);
    uv_timer_start(&s->timeout_timer, on_timeout, s->cfg->timeout_ms, 0);
    if (!s->conn) {
        if (conn_open(s) < 0) session_result(s, SHARP_HC_NETWORK, 0);
        return; /* sent once connected */
    }
    if (s->conn->connected) session_send(s);
}

/* ---- start and stop ---- */

static void build_request(hc_session_t *s)
{
    const sharp_hc_config_t *cfg = s->cfg;
    sharp_sbuf_t *b = &s->request;
    sharp_sbuf_printf(b, "%s %s HTTP/1.1\r\nhost: %s\r\n", cfg->method, cfg->path, check_host(s));
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "user-agent", "Envoy/HC");
    sharp_header_ops_apply(&cfg->headers, &h);
    for (uint32_t i = 0; i < h.n; i++) {
        sharp_str_t n = sharp_headers_name(&h, i), v = sharp_headers_value(&h, i);
        sharp_sbuf_append(b, n.p, n.len);
        sharp_sbuf_append(b, ": ", 2);
        sharp_sbuf_append(b, v.p, v.len);
        sharp_sbuf_append(b, "\r\n", 2);
    }
    sharp_headers_free(&h);
    sharp_sbuf_append(b, "\r\n", 2);
}

static void session_init(sharp_health_checker_t *hc, hc_session_t *s, sharp_cluster_t *c,
                         sharp_host_t *h)
{
    s->hc = hc;
    s->cluster = c;
    s->host = h;
    s->cfg = c->health_check;
    sharp_hc_state_init(&s->st);
    sharp_host_health_set(h, SHARP_HOST_FAILED_ACTIVE_HC);
    /* the endpoint's health_check_config address, else the host's; its
     * port_value, else the check's alt_port, over the port (the loader
     * refuses both together) */
    s->addrlen = h->hc.addrlen ? h->hc.addrlen : h->addrlen;
    memcpy(&s->addr, h->hc.addrlen ? &h->hc.addr : &h->addr, s->addrlen);
    uint32_t port = h->hc.port ? h->hc.port : s->cfg->alt_port;
    if (port && s->addr.ss_family != AF_UNIX) {
        if (s->addr.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&s->addr)->sin6_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in *)&s->addr)->sin_port = htons((uint16_t)port);
    }
    if (s->cfg->type == SHARP_HC_HTTP) {
        s->head = strcmp(s->cfg->method, "HEAD") == 0;
        build_request(s);
    } else if (s->cfg->type == SHARP_HC_GRPC) {
        sharp_grpc_health_request(&s->request, s->cfg->grpc_service);
    }
    uv_timer_init(hc->loop, &s->interval_timer);
    uv_timer_init(hc->loop, &s->timeout_timer);
    hc->open_handles += 2;
    s->timers_open = 2;
    s->interval_timer.data = s->timeout_timer.data = s;
    uv_timer_start(&s->interval_timer, on_interval, sharp_hc_initial_delay(s->cfg, &hc->rng), 0);
}

static hc_session_t *session_add(sharp_health_checker_t *hc, sharp_cluster_t *c, sharp_host_t *h)
{
    if (hc->nsessions == hc->cap) {
        hc->cap = hc->cap ? 2 * hc->cap : 8;
        hc->sessions = sharp_realloc(hc->sessions, hc->cap * sizeof *hc->sessions);
    }
    hc_session_t *s = sharp_calloc(1, sizeof *s);
    hc->sessions[hc->nsessions++] = s;
    session_init(hc, s, c, h);
    return s;
}

/* Stops a session: its connection closes, its timers close, and it frees
 * itself with the last of them. */
static void session_close(hc_session_t *s)
{
    if (s->conn) conn_close(s->conn);
    uv_timer_stop(&s->interval_timer);
    uv_timer_stop(&s->timeout_timer);
    uv_close((uv_handle_t *)&s->interval_timer, on_timer_closed);
    uv_close((uv_handle_t *)&s->timeout_timer, on_timer_closed);
}

static sharp_health_checker_t *checker_new(uv_loop_t *loop, sharp_snapshot_t *snap, sharp_stats_t *stats);

sharp_health_checker_t *sharp_health_checker_start(uv_loop_t *loop, sharp_snapshot_t *snap,
                                                   sharp_stats_t *stats, void (*on_initialized)(void *),
                                                   void *arg)
{
    uint32_t n = 0, nchecked = 0;
    for (uint32_t i = 0; i < snap->nclusters; i++)
        if (snap->clusters[i]->health_check) {
            for (uint32_t k = 0; k < snap->clusters[i]->nhosts; k++) n += !snap->clusters[i]->hosts[k]->hc.disabled;
            nchecked++;
        }
    /* a DNS cluster without hosts yet still needs the checker for the
     * hosts its later answers bring */
    if (!nchecked) return NULL;
    sharp_health_checker_t *hc = checker_new(loop, snap, stats);
    hc->awaiting_first = n;
    hc->on_initialized = on_initialized;
    hc->init_arg = arg;
    for (uint32_t i = 0; i < snap->nclusters; i++) {
        sharp_cluster_t *c = snap->clusters[i];
        if (!c->health_check) continue;
        for (uint32_t k = 0; k < c->nhosts; k++)
            if (!c->hosts[k]->hc.disabled) session_add(hc, c, c->hosts[k])->counts_for_init = true;
        update_gauges(hc, c);
    }
    return hc;
}

bool sharp_health_checker_initializing(const sharp_health_checker_t *hc)
{
    return hc && hc->awaiting_first > 0;
}

/* Whether the checker checks c: a cluster of its starting snapshot or
 * one added since. */
static bool checks(const sharp_health_checker_t *hc, const sharp_cluster_t *c)
{
    for (uint32_t i = 0; hc->snap && i < hc->snap->nclusters; i++)
        if (hc->snap->clusters[i] == c) return true;
    for (uint32_t i = 0; i < hc->ndyn; i++)
        if (hc->dyn[i].c == c) return true;
    return false;
}

void sharp_health_checker_hosts_changed(sharp_health_checker_t *hc, sharp_cluster_t *c)
{
    if (!hc || hc->stopping || !c->health_check || !checks(hc, c)) return;
    uint32_t k = 0;
    for (uint32_t i = 0; i < hc->nsessions; i++) {
        hc_session_t *s = hc->sessions[i];
        if (s->cluster == c && !sharp_host_listed(s->host, c->hosts, c->nhosts)) {
            sharp_log_info("health check: cluster '%s' host %s removed, no longer checked", c->name,
                           s->host->address);
            if (s->counts_for_init && hc->awaiting_first && --hc->awaiting_first == 0 && hc->on_initialized)
                hc->on_initialized(hc->init_arg);
            if (s->counts_for_cluster) {
                s->counts_for_cluster = false;
                cluster_first_result(hc, c, false);
            }
            session_close(s);
            continue;
        }
        hc->sessions[k++] = s;
    }
    hc->nsessions = k;
    for (uint32_t j = 0; j < c->nhosts; j++) {
        bool have = false;
        for (uint32_t i = 0; i < hc->nsessions && !have; i++)
            have = hc->sessions[i]->cluster == c && hc->sessions[i]->host == c->hosts[j];
        /* Envoy: a new host of a checked cluster is unhealthy
         * (FAILED_ACTIVE_HC) until its first check passes */
        if (!have && !c->hosts[j]->hc.disabled) session_add(hc, c, c->hosts[j]);
    }
    update_gauges(hc, c);
    cluster_maybe_warm(hc, c);
}

static sharp_health_checker_t *checker_new(uv_loop_t *loop, sharp_snapshot_t *snap, sharp_stats_t *stats)
{
    if (!parser_settings.on_message_complete) {
        llhttp_settings_init(&parser_settings);
        parser_settings.on_header_field = on_header_field;
        parser_settings.on_header_field_complete = on_header_field_complete;
        parser_settings.on_headers_complete = on_headers_complete;
        parser_settings.on_message_complete = on_message_complete;
    }
    sharp_health_checker_t *hc = sharp_calloc(1, sizeof *hc);
    hc->loop = loop;
    hc->snap = sharp_snapshot_ref(snap);
    hc->stats = stats;
    hc->shard = sharp_stats_shard(stats, 0);
    hc->rng = sharp_now_ns() | 1;
    return hc;
}

uint32_t sharp_health_checker_add_cluster(sharp_health_checker_t **hcp, uv_loop_t *loop, sharp_stats_t *stats,
                                          sharp_cluster_t *c, void (*on_first_round)(void *), void *arg)
{
    if (!c->health_check) return 0;
    if (!*hcp) *hcp = checker_new(loop, NULL, stats);
    sharp_health_checker_t *hc = *hcp;
    if (hc->stopping || checks(hc, c)) return 0;
    hc->dyn = sharp_realloc(hc->dyn, (hc->ndyn + 1) * sizeof *hc->dyn);
    uint32_t n = 0;
    for (uint32_t k = 0; k < c->nhosts; k++) n += !c->hosts[k]->hc.disabled;
    hc->dyn[hc->ndyn++] = (hc_cluster_t){sharp_cluster_ref(c), n, on_first_round, arg};
    for (uint32_t k = 0; k < c->nhosts; k++)
        if (!c->hosts[k]->hc.disabled) session_add(hc, c, c->hosts[k])->counts_for_cluster = true;
    update_gauges(hc, c);
    return n;
}

/* Sessions ordered by locality and address, to find a host's earlier
 * session in n log n. */
static int cmp_session_addr(const void *a, const void *b)
{
    const sharp_host_t *x = (*(hc_session_t *const *)a)->host, *y = (*(hc_session_t *const *)b)->host;
    if (x->locality != y->locality) return x->locality < y->locality ? -1 : 1;
    if (x->addrlen != y->addrlen) return x->addrlen < y->addrlen ? -1 : 1;
    return memcmp(&x->addr, &y->addr, x->addrlen);
}

uint32_t sharp_health_checker_add_cluster_from(sharp_health_checker_t **hcp, uv_loop_t *loop, sharp_stats_t *stats,
                                               sharp_cluster_t *c, const sharp_cluster_t *from, bool same_checks)
{
    uint32_t first = *hcp ? (*hcp)->nsessions : 0;
    uint32_t n = sharp_health_checker_add_cluster(hcp, loop, stats, c, NULL, NULL);
    sharp_health_checker_t *hc = *hcp;
    if (!n || !from) return n;
    hc_session_t **old = sharp_calloc(hc->nsessions, sizeof *old);
    uint32_t nold = 0;
    for (uint32_t i = 0; i < first; i++)
        if (hc->sessions[i]->cluster == from) old[nold++] = hc->sessions[i];
    qsort(old, nold, sizeof *old, cmp_session_addr);
    for (uint32_t i = first; i < hc->nsessions && nold; i++) {
        hc_session_t *s = hc->sessions[i];
        hc_session_t **o = bsearch(&s, old, nold, sizeof *old, cmp_session_addr);
        if (!o) continue;
        /* Envoy keeps the host (its health flags); with the same checks,
         * the session's counts too */
        if (same_checks) {
            s->st = (*o)->st;
        } else {
            s->st.failed = (*o)->st.failed;
            s->st.timeout = (*o)->st.timeout;
            s->st.degraded = (*o)->st.degraded;
        }
        s->host->hc_timeout = s->st.timeout;
        if (!s->st.failed) sharp_host_health_clear(s->host, SHARP_HOST_FAILED_ACTIVE_HC);
    }
    free(old);
    update_gauges(hc, c);
    return n;
}

void sharp_health_checker_remove_cluster(sharp_health_checker_t *hc, sharp_cluster_t *c)
{
    if (!hc || hc->stopping) return;
    uint32_t k = 0;
    for (uint32_t i = 0; i < hc->nsessions; i++) {
        hc_session_t *s = hc->sessions[i];
        if (s->cluster != c) {
            hc->sessions[k++] = s;
            continue;
        }
        /* a cluster of the first round that leaves before it: not waited for */
        if (s->counts_for_init && hc->awaiting_first && --hc->awaiting_first == 0 && hc->on_initialized)
            hc->on_initialized(hc->init_arg);
        session_close(s);
    }
    hc->nsessions = k;
    for (uint32_t i = 0; i < hc->ndyn; i++)
        if (hc->dyn[i].c == c) {
            sharp_cluster_unref(c);
            hc->dyn[i] = hc->dyn[--hc->ndyn];
            break;
        }
}

void sharp_health_checker_stop(sharp_health_checker_t *hc)
{
    if (!hc || hc->stopping) return;
    hc->stopping = true;
    for (uint32_t i = 0; i < hc->nsessions; i++) session_close(hc->sessions[i]);
    if (hc->open_handles == 0) checker_free(hc);
}

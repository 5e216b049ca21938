/* shadow.c: request mirroring; see shadow.h. */
#include "upstream/shadow.h"
#include "upstream/original_dst.h"
#include "log.h"
#include "net.h"
#include "upstream/outlier.h"
#include "upstream/pool.h"
#include "upstream/shard_lb.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>

struct sharp_shadow {
    sharp_dlist_t link; /* in worker->shadows while in flight */
    sharp_worker_t *w;
    sharp_cluster_t *c;
    sharp_host_t *host;
    sharp_shadow_t **owner; /* the router's handle while the request streams */
    sharp_headers_t h;
    sharp_upstream_request_t ureq;
    sharp_sbuf_t pending; /* body waiting for the connection */
    uv_timer_t timer;     /* the route timeout, from the end of the request */
    uint64_t timeout_ms, start_ns;
    uint32_t buffer_limit;
    bool request_end;      /* the whole request was handed to the shadow */
    bool bound;            /* a connection is bound */
    bool over_limit;       /* the connection's write queue is above its limit */
    bool response_headers;
    bool done;
    unsigned long long conn_id, stream_id;
};

static const sharp_upstream_callbacks_t shadow_cbs;

/* ---- the host and x-forwarded-for of a shadow ---- */

/* Envoy's HeaderUtility::getPortStart: the last ':' unless it is inside an
 * IPv6 literal's brackets; the length of the host part. */
static size_t host_part(sharp_str_t a)
{
    const char *colon = a.len ? memrchr(a.p, ':', a.len) : NULL;
    const char *bracket = a.len ? memrchr(a.p, ']', a.len) : NULL;
    return colon && (!bracket || bracket < colon) ? (size_t)(colon - a.p) : a.len;
}

size_t sharp_shadow_host(sharp_str_t a, char *out, size_t cap)
{
    size_t hostlen = host_part(a);
    int n = snprintf(out, cap, "%.*s-shadow%.*s", (int)hostlen, a.p, (int)(a.len - hostlen), a.p + hostlen);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Envoy's async client appends the local node's address to
 * x-forwarded-for: the first non-loopback IPv4 address of the machine's
 * interfaces (Network::Utility::getLocalAddress), else 127.0.0.1. */
static char local_address[INET_ADDRSTRLEN] = "127.0.0.1";
static pthread_once_t local_address_once = PTHREAD_ONCE_INIT;

static void find_local_address(void)
{
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
        const struct in_addr *in = &((const struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if ((ntohl(in->s_addr) >> 24) == 127) continue;
        inet_ntop(AF_INET, in, local_address, sizeof local_address);
        break;
    }
    freeifaddrs(ifs);
}

const char *sharp_local_address(void)
{
    pthread_once(&local_address_once, find_local_address);
    return local_address;
}

static void prepare_headers(sharp_headers_t *h, const sharp_shadow_args_t *a)
{
    sharp_headers_copy(h, a->headers);
    if (a->host_suffix) {
        sharp_str_t auth = {"", 0};
        sharp_headers_get_cstr(h, ":authority", &auth);
        size_t hostlen = host_part(auth);
        sharp_sbuf_t v = {0};
        sharp_sbuf_append(&v, auth.p, hostlen);
        sharp_sbuf_puts(&v, "-shadow");
        sharp_sbuf_append(&v, auth.p + hostlen, auth.len - hostlen);
        sharp_headers_set(h, ":authority", 10, v.data, v.len);
        sharp_sbuf_free(&v);
    }
    /* as Envoy's async client: the copy is an internal request of this proxy */
    sharp_headers_set_cstr(h, "x-envoy-internal", "true");
    sharp_local_address();
    sharp_str_t xff;
    if (sharp_headers_get_cstr(h, "x-forwarded-for", &xff) && xff.len) {
        sharp_sbuf_t v = {0};
        sharp_sbuf_append(&v, xff.p, xff.len);
        sharp_sbuf_puts(&v, ",");
        sharp_sbuf_puts(&v, local_address);
        sharp_headers_set(h, "x-forwarded-for", 15, v.data, v.len);
        sharp_sbuf_free(&v);
    } else {
        sharp_headers_set_cstr(h, "x-forwarded-for", local_address);
    }
}

/* ---- lifetime ---- */

static void free_shadow(uv_handle_t *h)
{
    sharp_shadow_t *sh = h->data;
    sharp_cluster_unref(sh->c); /* CDS may have replaced it while the shadow ran */
    free(sh);
}

/* Ends the shadow: gives back its connection (closed unless its response
 * was complete), its circuit breaker slot and its gauges. Memory goes with
 * the timer's close callback, so a caller up the stack still sees `done`. */
static void finish(sharp_shadow_t *sh)
{
    if (sh->done) return;
    sh->done = true;
    sharp_pool_cancel(&sh->ureq);
    sh->bound = false;
    if (sh->host) {
        sharp_gauge_add(sh->w->stats, sh->c->st.rq_active, -1);
        atomic_fetch_sub_explicit(&sh->host->active_rq, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&sh->c->open[SHARP_PRIORITY_DEFAULT].rq_open, 1, memory_order_relaxed);
    }
    if (sh->owner) *sh->owner = NULL;
    sh->owner = NULL;
    sharp_dlist_remove(&sh->link);
    sharp_headers_free(&sh->h);
    sharp_sbuf_free(&sh->pending);
    uv_timer_stop(&sh->timer);
    uv_close((uv_handle_t *)&sh->timer, free_shadow);
}

/* A locally generated failure counts as that status in the shadow
 * cluster's stats, as for the primary (Envoy's chargeUpstreamCode). */
static void charge(sharp_shadow_t *sh, uint32_t code)
{
    sharp_cluster_count_response(sh->c, sh->w->stats, code);
    atomic_fetch_add_explicit(&sh->host->rq_error, 1, memory_order_relaxed);
}

static void on_timeout(uv_timer_t *t)
{
    sharp_shadow_t *sh = t->data;
    if (sh->done) return;
    sharp_debug(router, "[C%llu][S%llu] shadow request to cluster '%s' timed out (%llu ms)", sh->conn_id,
                sh->stream_id, sh->c->name, (unsigned long long)sh->timeout_ms);
    sharp_counter_inc(sh->w->stats, sh->c->st.rq_timeout);
    atomic_fetch_add_explicit(&sh->host->rq_timeout, 1, memory_order_relaxed);
    if (!sh->response_headers) {
        sharp_outlier_put_local(sh->c, sh->host, SHARP_OUTLIER_LOCAL_TIMEOUT);
        charge(sh, 504);
    }
    finish(sh);
}

static void start_timer(sharp_shadow_t *sh)
{
    if (sh->timeout_ms && !sh->done) uv_timer_start(&sh->timer, on_timeout, sh->timeout_ms, 0);
}

/* ---- upstream callbacks: the response is read and dropped ---- */

static void sh_on_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    sharp_shadow_t *sh = ctx;
    sh->bound = true;
    bool body = sh->pending.len > 0;
    sharp_upstream_cx_send_headers(cx, &sh->h, sh->request_end && !body);
    if (body) {
        sharp_sbuf_t b = sh->pending;
        memset(&sh->pending, 0, sizeof sh->pending);
        sharp_upstream_cx_send_data(cx, b.data, b.len, sh->request_end);
        sharp_sbuf_free(&b);
    }
}

static void sh_on_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    (void)why;
    sharp_shadow_t *sh = ctx;
    sharp_debug(router, "[C%llu][S%llu] shadow connection failure to %s: %s", sh->conn_id, sh->stream_id,
                sh->host->address, detail ? detail : "");
    charge(sh, 503);
    finish(sh);
}

static void complete(sharp_shadow_t *sh)
{
    sharp_histogram_record(sh->w->stats, sh->c->st.rq_time, (sharp_now_ns() - sh->start_ns) / 1000000);
    sharp_counter_inc(sh->w->stats, sh->c->st.rq_completed);
    finish(sh);
}

static void sh_on_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    sharp_shadow_t *sh = ctx;
    uint32_t code = sharp_headers_status(h);
    sharp_debug(router, "[C%llu][S%llu] shadow response from cluster '%s': status %u", sh->conn_id, sh->stream_id,
                sh->c->name, code);
    sharp_cluster_count_response(sh->c, sh->w->stats, code);
    if (code >= 500) atomic_fetch_add_explicit(&sh->host->rq_error, 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&sh->host->rq_success, 1, memory_order_relaxed);
    sharp_outlier_put_http(sh->c, sh->host, code);
    if (sh->c->health_check && sharp_headers_get_cstr(h, "x-envoy-immediate-health-check-fail", NULL))
        sharp_host_health_set(sh->host, SHARP_HOST_FAILED_ACTIVE_HC);
    sh->response_headers = true;
    if (end_stream) complete(sh);
}

static void sh_on_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    (void)p;
    (void)n;
    if (end_stream) complete(ctx);
}

static void sh_on_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    sharp_shadow_t *sh = ctx;
    sharp_debug(router, "[C%llu][S%llu] shadow upstream reset: %s (host %s)", sh->conn_id, sh->stream_id,
                detail ? detail : "", sh->host->address);
    sh->bound = false;
    sharp_counter_inc(sh->w->stats, sh->c->st.rq_rx_reset);
    if (!sh->response_headers) {
        sharp_outlier_put_local(sh->c, sh->host, SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
        charge(sh, why == SHARP_RESET_PROTOCOL_ERROR ? 502 : 503);
    }
    finish(sh);
}

static void sh_on_write_watermark(void *ctx, bool above)
{
    sharp_shadow_t *sh = ctx;
    sh->over_limit = above;
}

static const sharp_upstream_callbacks_t shadow_cbs = {
    .on_ready = sh_on_ready,
    .on_pool_failure = sh_on_pool_failure,
    .on_headers = sh_on_headers,
    .on_data = sh_on_data,
    .on_reset = sh_on_reset,
    .on_write_watermark = sh_on_write_watermark,
};

/* ---- the router's side ---- */

static sharp_host_t *choose_host(const sharp_shadow_args_t *a, sharp_cluster_local_t *cl)
{
    sharp_cluster_t *c = a->cluster;
    if (c->shuffle_shard)
        return a->shard_key ? sharp_shard_lb_choose(c->shuffle_shard, &cl->lb, a->shard_key, a->shard_key_len, NULL,
                                                    0, a->worker->stats)
                            : NULL;
    if (a->agg && !cl->subsets.plan) return sharp_lb_choose_level(&cl->lb, a->agg_level);
    return sharp_cluster_choose(cl, false, NULL, 0);
}

sharp_shadow_t *sharp_shadow_start(const sharp_shadow_args_t *a, sharp_shadow_t **handle)
{
    sharp_worker_t *w = a->worker;
    sharp_cluster_t *c = a->cluster;
    sharp_cluster_local_t *cl = a->cl;
    *handle = NULL;
    /* the copy's headers first: an ORIGINAL_DST cluster's header is read
     * from them, as Envoy's async client stream gives its own headers to
     * the cluster's balancer (and no downstream connection) */
    sharp_headers_t hdrs;
    sharp_headers_init(&hdrs);
    prepare_headers(&hdrs, a);
    sharp_host_t *host = c->odst ? sharp_odst_choose(cl, w->stats, &hdrs, NULL) : choose_host(a, cl);
    if (!host) {
        sharp_headers_free(&hdrs);
        sharp_debug(router, "[C%llu][S%llu] shadow: no healthy host in cluster '%s'", a->conn_id, a->stream_id,
                    c->name);
        return NULL;
    }
    /* shadows run at DEFAULT priority, as Envoy's async client requests */
    if (!sharp_cluster_slot_acquire(&c->open[SHARP_PRIORITY_DEFAULT].rq_open,
                                    sharp_cluster_cb_max(c, SHARP_PRIORITY_DEFAULT, SHARP_CB_MAX_REQUESTS))) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        sharp_debug(router, "[C%llu][S%llu] shadow: cluster '%s' circuit breaker full", a->conn_id, a->stream_id,
                    c->name);
        sharp_headers_free(&hdrs);
        return NULL;
    }
    sharp_shadow_t *sh = sharp_calloc(1, sizeof *sh);
    sh->w = w;
    sh->c = sharp_cluster_ref(c);
    sh->host = host;
    sh->timeout_ms = a->timeout_ms;
    sh->buffer_limit = a->buffer_limit;
    sh->request_end = a->end_stream;
    sh->conn_id = a->conn_id;
    sh->stream_id = a->stream_id;
    sh->start_ns = sharp_now_ns();
    sh->h = hdrs; /* taken over */
    uv_timer_init(&w->loop, &sh->timer);
    sh->timer.data = sh;
    sharp_dlist_init(&sh->link);
    sharp_dlist_push(&w->shadows, &sh->link);
    if (!a->end_stream) {
        sh->owner = handle;
        *handle = sh;
    }
    sharp_counter_inc(w->stats, c->st.rq_total);
    sharp_gauge_add(w->stats, c->st.rq_active, 1);
    atomic_fetch_add_explicit(&host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&host->rq_total, 1, memory_order_relaxed);
    sharp_debug(router, "[C%llu][S%llu] shadowing the request to cluster '%s' (host %s)", a->conn_id, a->stream_id,
                c->name, host->address);
    /* the timeout runs from the end of the request, connecting included, as
     * the route timeout of the primary */
    if (sh->request_end) start_timer(sh);
    /* Envoy's shadows are async client streams, whose stream info says
     * HTTP/1.1: a use_downstream_protocol_config shadow cluster gets them
     * over HTTP/1.1 whatever the primary's downstream protocol. */
    sharp_pool_t *pool = c->odst ? sharp_odst_pool(&w->upstream_env, cl, SHARP_PRIORITY_DEFAULT, host, false)
                                 : sharp_cluster_pool(cl, SHARP_PRIORITY_DEFAULT, host, "HTTP/1.1");
    if (!sharp_pool_acquire(pool, &sh->ureq, &shadow_cbs, sh)) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        finish(sh);
    }
    return *handle;
}

/* The shadow cannot take more body within its limits: it is reset. */
static void give_up(sharp_shadow_t *sh)
{
    sharp_debug(router, "[C%llu][S%llu] shadow request to cluster '%s' abandoned: the body exceeds its buffer limit",
                sh->conn_id, sh->stream_id, sh->c->name);
    sharp_counter_inc(sh->w->stats, sh->c->st.rq_tx_reset);
    finish(sh);
}

bool sharp_shadow_send_data(sharp_shadow_t *sh, const char *p, size_t n, bool end_stream)
{
    if (sh->done) return true;
    if (end_stream) {
        sh->request_end = true;
        if (sh->owner) *sh->owner = NULL; /* detached: it runs on its own now */
        sh->owner = NULL;
    }
    if (end_stream) start_timer(sh);
    if (sh->bound) {
        sharp_upstream_cx_send_data(sh->ureq.cx, p, n, end_stream);
        if (sh->done) return true;
        if (sh->over_limit && !end_stream) {
            give_up(sh);
            return false;
        }
        return true;
    }
    if (n) sharp_sbuf_append(&sh->pending, p, n);
    /* The primary stops reading the client once it holds a buffer limit of
     * body for its own connection, so a shadow connecting about as fast as
     * the primary holds up to that much too; twice that means it cannot
     * keep up. */
    if (!end_stream && sh->pending.len > 2 * (uint64_t)sh->buffer_limit) {
        give_up(sh);
        return false;
    }
    return true;
}

void sharp_shadow_cancel(sharp_shadow_t *sh)
{
    if (sh->done) return;
    sharp_debug(router, "[C%llu][S%llu] shadow request to cluster '%s' reset: the downstream request went away",
                sh->conn_id, sh->stream_id, sh->c->name);
    sharp_counter_inc(sh->w->stats, sh->c->st.rq_tx_reset);
    finish(sh);
}

void sharp_shadow_abort_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->shadows))
        finish(sharp_container_of(w->shadows.next, sharp_shadow_t, link));
}

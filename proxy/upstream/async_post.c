/* async_post.c: a worker's requests to a cluster; see async_post.h. */
#include "upstream/async_post.h"
#include "upstream/aggregate.h"
#include "log.h"
#include "upstream/cluster.h"
#include "upstream/pool.h"
#include "upstream/shadow.h"
#include "worker.h"

#include <stdio.h>

typedef struct sharp_async_stream { /* a post, or a stream */
    sharp_dlist_t link; /* in worker->async_posts */
    sharp_worker_t *w;
    sharp_cluster_t *c;
    sharp_host_t *host;
    sharp_headers_t h;
    sharp_sbuf_t body;
    sharp_sbuf_t resp; /* the response's body, for counts.response */
    sharp_upstream_request_t ureq;
    uv_timer_t timer; /* the timeout */
    uint32_t code;    /* the response's status, once its headers came */
    bool done;
    sharp_async_post_counts_t counts;
    char what[48];
    /* a stream (sharp_async_stream_*): the bytes not handed to the
     * connection yet, its limit, the closing callback (deferred to the
     * timer) */
    bool stream;
    bool opening;  /* inside sharp_async_stream_open */
    bool closing;  /* the close is due from the timer */
    bool above;    /* the connection's write buffer is above its watermark */
    sharp_upstream_cx_t *cx;
    size_t limit;
    sharp_async_stream_closed_cb closed;
    void *closed_arg;
    const char *why;
} post_t;

static const sharp_upstream_callbacks_t post_cbs;

static void free_post(uv_handle_t *h)
{
    post_t *p = h->data;
    sharp_cluster_unref(p->c);
    free(p);
}

static void stream_close_due(uv_timer_t *t);

/* The request's end, as post_start began it: its pool request, its
 * counts and its buffers go (the handle separately). */
static void release_request(post_t *p)
{
    p->done = true;
    sharp_pool_cancel(&p->ureq);
    atomic_fetch_sub_explicit(&p->host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&p->c->open[SHARP_PRIORITY_DEFAULT].rq_open, 1, memory_order_relaxed);
    sharp_gauge_add(p->w->stats, p->c->st.rq_active, -1);
    sharp_headers_free(&p->h);
    sharp_sbuf_free(&p->body);
    sharp_sbuf_free(&p->resp);
}

static void finish(post_t *p)
{
    if (p->done) return;
    release_request(p);
    if (p->stream && p->closed && !p->opening) {
        /* a stream's end reaches its owner from the loop: the handle goes
         * with the callback */
        p->closing = true;
        p->cx = NULL;
        uv_timer_start(&p->timer, stream_close_due, 0, 0);
        return;
    }
    sharp_dlist_remove(&p->link);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, free_post);
}

/* The stream's deferred end: the callback, then the handle goes. */
static void stream_close_due(uv_timer_t *t)
{
    post_t *p = t->data;
    p->closing = false;
    sharp_dlist_remove(&p->link);
    sharp_async_stream_closed_cb cb = p->closed;
    void *arg = p->closed_arg;
    const char *why = p->why ? p->why : "closed";
    uv_close((uv_handle_t *)&p->timer, free_post);
    cb(arg, why);
}

static void count_success(sharp_worker_t *w, const sharp_async_post_counts_t *k, uint32_t code)
{
    if (!k->count) return;
    sharp_counter_inc(w->stats, !k->ok_status || code == k->ok_status ? k->ok : k->other);
}

/* The complete response: the caller's onSuccess. */
static void answered(post_t *p, uint32_t code)
{
    if (p->done) return;
    count_success(p->w, &p->counts, code);
    if (code != (p->counts.ok_status ? p->counts.ok_status : 200))
        sharp_debug(upstream, "%s to cluster '%s': answered %u", p->what, p->c->name, code);
    finish(p);
}

/* The request ends without its response: before the response began, the
 * router's local reply (`local_code`); after, a stream reset (onFailure). */
static void failed(post_t *p, uint32_t local_code, const char *why)
{
    if (p->done) return;
    if (!p->why) p->why = why;
    sharp_debug(upstream, "%s to cluster '%s' failed: %s", p->what, p->c->name, why);
    if (p->code) {
        if (p->counts.count) sharp_counter_inc(p->w->stats, p->counts.failed);
        finish(p);
        return;
    }
    /* counted in the cluster as the router counts its local replies */
    sharp_cluster_count_response(p->c, p->w->stats, local_code);
    atomic_fetch_add_explicit(&p->host->rq_error, 1, memory_order_relaxed);
    answered(p, local_code);
}

static void on_timeout(uv_timer_t *t)
{
    post_t *p = t->data;
    if (!p->code) sharp_counter_inc(p->w->stats, p->c->st.rq_timeout);
    failed(p, 504, "timeout");
}

/* A stream's queued bytes to its connection while it takes them. */
static void stream_flush(post_t *p)
{
    if (!p->cx || p->above || p->done || !p->body.len) return;
    sharp_sbuf_t b = p->body;
    p->body = (sharp_sbuf_t){0};
    sharp_upstream_cx_send_data(p->cx, b.data, b.len, false);
    sharp_sbuf_free(&b);
}

static void on_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    post_t *p = ctx;
    if (p->stream) p->cx = cx;
    sharp_upstream_cx_send_headers(cx, &p->h, false);
    if (p->done) return;
    if (p->stream) {
        stream_flush(p);
        return;
    }
    sharp_upstream_cx_send_data(cx, p->body.data, p->body.len, true);
}

static void on_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    (void)why;
    failed(ctx, 503, detail ? detail : "no connection");
}

static void complete(post_t *p)
{
    if (!p->why) p->why = "the response ended";
    sharp_counter_inc(p->w->stats, p->c->st.rq_completed);
    if (p->counts.response && !p->done) p->counts.response(p->counts.arg, p->code, p->resp.data, p->resp.len);
    answered(p, p->code);
}

static void on_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    post_t *p = ctx;
    uint32_t code = sharp_headers_status(h);
    if (code >= 100 && code < 200) return; /* 1xx: the response follows */
    p->code = code ? code : 502;
    sharp_cluster_count_response(p->c, p->w->stats, p->code);
    if (end_stream) complete(p);
}

static void on_data(void *ctx, const char *d, size_t n, bool end_stream)
{
    post_t *p = ctx;
    if (p->counts.response && p->resp.len < SHARP_ASYNC_POST_MAX_RESPONSE) {
        size_t room = SHARP_ASYNC_POST_MAX_RESPONSE - p->resp.len;
        sharp_sbuf_append(&p->resp, d, n < room ? n : room);
    }
    if (end_stream) complete(ctx);
}

static void on_trailers(void *ctx, sharp_headers_t *t)
{
    (void)t;
    complete(ctx);
}

static void on_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    post_t *p = ctx;
    sharp_counter_inc(p->w->stats, p->c->st.rq_rx_reset);
    failed(p, why == SHARP_RESET_PROTOCOL_ERROR ? 502 : 503, detail ? detail : "reset");
}

static void on_write_watermark(void *ctx, bool above)
{
    post_t *p = ctx;
    if (!p->stream) return; /* a post's whole body is handed over at once */
    p->above = above;
    if (!above) stream_flush(p);
}

static const sharp_upstream_callbacks_t post_cbs = {
    .on_ready = on_ready,
    .on_pool_failure = on_pool_failure,
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_reset = on_reset,
    .on_write_watermark = on_write_watermark,
};

void sharp_async_post_head(sharp_headers_t *h, const char *path, const char *authority, const char *content_type)
{
    sharp_headers_add_cstr(h, ":method", "POST");
    sharp_headers_add_cstr(h, ":path", path);
    sharp_headers_add_cstr(h, ":authority", authority);
    sharp_headers_add_cstr(h, ":scheme", "http");
    sharp_headers_add_cstr(h, "content-type", content_type);
}

/* What a request and a stream share as they start: the headers of an
 * internal request of this proxy (as Envoy's async client sends them), the
 * timer, the worker's list, and the cluster's and host's request counts. */
static void post_start(post_t *p, sharp_worker_t *w, sharp_cluster_t *c, sharp_host_t *host)
{
    sharp_headers_add_cstr(&p->h, "x-envoy-internal", "true");
    sharp_headers_add_cstr(&p->h, "x-forwarded-for", sharp_local_address());
    uv_timer_init(&w->loop, &p->timer);
    p->timer.data = p;
    sharp_dlist_init(&p->link);
    sharp_dlist_push(&w->async_posts, &p->link);
    sharp_counter_inc(w->stats, c->st.rq_total);
    sharp_gauge_add(w->stats, c->st.rq_active, 1);
    atomic_fetch_add_explicit(&host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&host->rq_total, 1, memory_order_relaxed);
}

/* The cluster's host and a breaker slot for a new request or stream (the
 * async client's request: DEFAULT priority, the cluster's breakers), and
 * its post_t holding the headers; NULL with the reason (*why, *counted:
 * a host was found, the breaker said no) otherwise, the headers freed. */
static post_t *post_new(sharp_worker_t *w, const char *cluster, sharp_headers_t *h, const char *what,
                        sharp_cluster_local_t **cl, const char **why)
{
    sharp_cluster_t *c = w->view ? sharp_view_cluster(w->view, cluster, cl) : NULL;
    if (!c || !*cl) {
        *why = "the cluster does not exist";
        sharp_headers_free(h);
        return NULL;
    }
    /* an aggregate cluster: the member its balancer chooses takes the
     * request (upstream/aggregate.h) */
    sharp_host_t *host = sharp_aggregate_host(w->view, &c, cl, sharp_worker_random(w));
    bool slot = host && sharp_cluster_slot_acquire(&c->open[SHARP_PRIORITY_DEFAULT].rq_open,
                                                   sharp_cluster_cb_max(c, SHARP_PRIORITY_DEFAULT,
                                                                        SHARP_CB_MAX_REQUESTS));
    if (!slot) {
        if (host) sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        *why = host ? "the circuit breaker is full" : "no healthy host";
        sharp_headers_free(h);
        return NULL;
    }
    post_t *p = sharp_calloc(1, sizeof *p);
    p->w = w;
    p->c = sharp_cluster_ref(c);
    p->host = host;
    p->h = *h;
    *h = (sharp_headers_t){0};
    snprintf(p->what, sizeof p->what, "%s", what);
    return p;
}

bool sharp_async_post(sharp_worker_t *w, const char *cluster, const char *protocol, sharp_headers_t *h,
                      sharp_sbuf_t *body, uint64_t timeout_ms, const sharp_async_post_counts_t *counts,
                      const char *what)
{
    sharp_cluster_local_t *cl = NULL;
    const char *why;
    post_t *p = post_new(w, cluster, h, what, &cl, &why);
    if (!p) {
        sharp_debug(upstream, "%s to cluster '%s': %s", what, cluster, why);
        sharp_sbuf_free(body);
        if (!cl) return false;
        count_success(w, counts, 503); /* the router's 503 */
        return true;
    }
    sharp_cluster_t *c = p->c;
    sharp_host_t *host = p->host;
    p->body = *body;
    *body = (sharp_sbuf_t){0};
    p->counts = *counts;
    char len[24];
    snprintf(len, sizeof len, "%zu", p->body.len);
    sharp_headers_set_cstr(&p->h, "content-length", len);
    post_start(p, w, c, host);
    if (timeout_ms) uv_timer_start(&p->timer, on_timeout, timeout_ms, 0);
    sharp_pool_t *pool = sharp_cluster_pool(cl, SHARP_PRIORITY_DEFAULT, host, protocol);
    if (!sharp_pool_acquire(pool, &p->ureq, &post_cbs, p)) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        count_success(w, counts, 503); /* the router's 503 (overflow) */
        finish(p);
    }
    return true;
}

sharp_async_stream_t *sharp_async_stream_open(sharp_worker_t *w, const char *cluster, const char *protocol,
                                              sharp_headers_t *h, size_t buffer_limit,
                                              sharp_async_stream_closed_cb closed, void *arg, const char *what,
                                              const char **why)
{
    sharp_cluster_local_t *cl = NULL;
    post_t *p = post_new(w, cluster, h, what, &cl, why);
    if (!p) return NULL;
    sharp_cluster_t *c = p->c;
    sharp_host_t *host = p->host;
    p->stream = true;
    p->limit = buffer_limit;
    p->closed = closed;
    p->closed_arg = arg;
    post_start(p, w, c, host);
    sharp_pool_t *pool = sharp_cluster_pool(cl, SHARP_PRIORITY_DEFAULT, host, protocol);
    /* a failure inside the acquire (or an overflow) is this call's NULL,
     * not a callback */
    p->opening = true;
    bool queued = sharp_pool_acquire(pool, &p->ureq, &post_cbs, p);
    p->opening = false;
    if (!queued) sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
    if (!queued || p->done) {
        *why = !queued ? "the pool is full" : p->why ? p->why : "closed";
        /* no callback for a stream this call did not return (finish is a
         * no-op when the post was finished inside) */
        p->closed = NULL;
        finish(p);
        return NULL;
    }
    return p;
}

bool sharp_async_stream_send(sharp_async_stream_t *st, const char *d, size_t n)
{
    post_t *p = st;
    if (p->done) return false;
    if (p->cx && !p->above && !p->body.len) {
        sharp_upstream_cx_send_data(p->cx, d, n, false);
        return true;
    }
    if (p->body.len + n > p->limit) return false;
    sharp_sbuf_append(&p->body, d, n);
    return true;
}

void sharp_async_stream_cancel(sharp_async_stream_t *st)
{
    post_t *p = st;
    if (p->closing) {
        /* ended already, its callback pending: dropped */
        p->closing = false;
        uv_timer_stop(&p->timer);
        sharp_dlist_remove(&p->link);
        uv_close((uv_handle_t *)&p->timer, free_post);
        return;
    }
    p->closed = NULL;
    finish(p);
}

void sharp_async_post_cancel_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->async_posts)) {
        post_t *p = sharp_container_of(w->async_posts.next, post_t, link);
        if (p->stream) sharp_async_stream_cancel(p);
        else finish(p);
    }
}

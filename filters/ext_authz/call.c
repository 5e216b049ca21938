/* call.c: the ext_authz filter's side request to its authorization
 * cluster; see call.h. */
#include "filters/ext_authz/call.h"
#include "http/grpc.h"
#include "upstream/aggregate.h"
#include "worker.h"
#include "log.h"
#include "upstream/outlier.h"
#include "upstream/pool.h"

#include <stdio.h>

struct sharp_ext_authz_call {
    sharp_worker_t *w;
    sharp_cluster_t *c;
    sharp_host_t *host;
    sharp_headers_t req;
    sharp_sbuf_t body;
    sharp_upstream_request_t ureq;
    uv_timer_t timer; /* the timeout, then the delivery of an early end */
    sharp_headers_t resp, trailers;
    sharp_sbuf_t resp_body;
    size_t max_response_bytes;
    uint64_t timeout_ms, start_ns;
    sharp_ext_authz_done_fn done;
    void *ctx;
    const char *reason; /* the failure, NULL when the response is complete */
    bool slot;          /* holds a circuit breaker slot and the active gauges */
    bool starting;      /* inside sharp_ext_authz_call_start */
    bool ended;         /* the outcome is known (delivered, or waiting for the timer) */
    bool finished;
    unsigned long long conn_id, stream_id;
    const char *what;
};

static void free_call(uv_handle_t *h)
{
    sharp_ext_authz_call_t *c = h->data;
    sharp_headers_free(&c->req);
    sharp_headers_free(&c->resp);
    sharp_headers_free(&c->trailers);
    sharp_sbuf_free(&c->body);
    sharp_sbuf_free(&c->resp_body);
    if (c->c) sharp_cluster_unref(c->c);
    free(c);
}

/* Gives back the connection (closed unless the response was complete), the
 * circuit breaker slot and gauges; memory goes with the timer's close. */
static void finish(sharp_ext_authz_call_t *c)
{
    if (c->finished) return;
    c->finished = true;
    sharp_pool_cancel(&c->ureq);
    if (c->slot) {
        sharp_gauge_add(c->w->stats, c->c->st.rq_active, -1);
        atomic_fetch_sub_explicit(&c->host->active_rq, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&c->c->open[SHARP_PRIORITY_DEFAULT].rq_open, 1,
                                  memory_order_relaxed);
        c->slot = false;
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, free_call);
}

static void deliver(sharp_ext_authz_call_t *c)
{
    sharp_ext_authz_result_t r = {
        .failed = c->reason != NULL,
        .reason = c->reason,
        .headers = &c->resp,
        .body = &c->resp_body,
        .trailers = &c->trailers,
    };
    sharp_ext_authz_done_fn done = c->done;
    void *ctx = c->ctx;
    c->done = NULL;
    finish(c);
    /* the response stays readable until the timer's close callback */
    if (done) done(ctx, &r);
}

static void on_deliver_timer(uv_timer_t *t)
{
    deliver(t->data);
}

/* The outcome is known: `reason` NULL for a complete response. An end
 * reached inside sharp_ext_authz_call_start waits for the loop. */
static void end_call(sharp_ext_authz_call_t *c, const char *reason)
{
    if (c->ended) return;
    c->ended = true;
    c->reason = reason;
    if (reason)
        sharp_debug(router, "[C%llu][S%llu] %s request to cluster '%s' failed: %s", c->conn_id,
                    c->stream_id, c->what, c->c ? c->c->name : "", reason);
    if (c->starting) {
        uv_timer_stop(&c->timer);
        uv_timer_start(&c->timer, on_deliver_timer, 0, 0);
        return;
    }
    deliver(c);
}

/* A locally generated failure counts as that status in the cluster's
 * stats, as for any request (Envoy's chargeUpstreamCode). */
static void charge(sharp_ext_authz_call_t *c, uint32_t code)
{
    sharp_cluster_count_response(c->c, c->w->stats, code);
    atomic_fetch_add_explicit(&c->host->rq_error, 1, memory_order_relaxed);
}

static void on_timeout(uv_timer_t *t)
{
    sharp_ext_authz_call_t *c = t->data;
    if (c->ended) return;
    sharp_counter_inc(c->w->stats, c->c->st.rq_timeout);
    atomic_fetch_add_explicit(&c->host->rq_timeout, 1, memory_order_relaxed);
    if (sharp_headers_status(&c->resp) == 0) {
        sharp_outlier_put_local(c->c, c->host, SHARP_OUTLIER_LOCAL_TIMEOUT);
        charge(c, 504);
    }
    end_call(c, "timeout");
}

static void complete(sharp_ext_authz_call_t *c)
{
    sharp_histogram_record(c->w->stats, c->c->st.rq_time, (sharp_now_ns() - c->start_ns) / 1000000);
    sharp_counter_inc(c->w->stats, c->c->st.rq_completed);
    end_call(c, NULL);
}

static void cb_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    sharp_ext_authz_call_t *c = ctx;
    bool body = c->body.len > 0;
    sharp_upstream_cx_send_headers(cx, &c->req, !body);
    if (body && !c->ended) sharp_upstream_cx_send_data(cx, c->body.data, c->body.len, true);
}

static void cb_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    (void)why;
    (void)detail;
    sharp_ext_authz_call_t *c = ctx;
    c->ureq.cx = NULL;
    charge(c, 503);
    end_call(c, "connection failure");
}

static void cb_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    sharp_ext_authz_call_t *c = ctx;
    if (c->ended) return;
    uint32_t code = sharp_headers_status(h);
    sharp_cluster_count_response(c->c, c->w->stats, code);
    if (code >= 500)
        atomic_fetch_add_explicit(&c->host->rq_error, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&c->host->rq_success, 1, memory_order_relaxed);
    sharp_outlier_put_http(c->c, c->host, code);
    sharp_headers_copy(&c->resp, h);
    if (end_stream) complete(c);
}

static void cb_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    sharp_ext_authz_call_t *c = ctx;
    if (c->ended) return;
    if (c->resp_body.len + n > c->max_response_bytes) {
        sharp_counter_inc(c->w->stats, c->c->st.rq_tx_reset);
        end_call(c, "response body too large");
        return;
    }
    if (n) sharp_sbuf_append(&c->resp_body, p, n);
    if (end_stream) complete(c);
}

static void cb_trailers(void *ctx, sharp_headers_t *t)
{
    sharp_ext_authz_call_t *c = ctx;
    if (c->ended) return;
    sharp_headers_copy(&c->trailers, t);
    complete(c);
}

static void cb_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    (void)detail;
    sharp_ext_authz_call_t *c = ctx;
    if (c->ended) return;
    c->ureq.cx = NULL;
    sharp_counter_inc(c->w->stats, c->c->st.rq_rx_reset);
    if (sharp_headers_status(&c->resp) == 0) {
        sharp_outlier_put_local(c->c, c->host, SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
        charge(c, why == SHARP_RESET_PROTOCOL_ERROR ? 502 : 503);
    }
    end_call(c, "upstream reset");
}

static void cb_write_watermark(void *ctx, bool above)
{
    /* the request is small and written whole: nothing to pause */
    (void)ctx;
    (void)above;
}

static const sharp_upstream_callbacks_t call_cbs = {
    .on_ready = cb_ready,
    .on_pool_failure = cb_pool_failure,
    .on_headers = cb_headers,
    .on_data = cb_data,
    .on_trailers = cb_trailers,
    .on_reset = cb_reset,
    .on_write_watermark = cb_write_watermark,
};

sharp_ext_authz_call_t *sharp_ext_authz_call_start(const sharp_ext_authz_call_args_t *a)
{
    sharp_worker_t *w = a->worker;
    /* the host first: of an aggregate cluster, the member its balancer
     * chooses takes the call, its pools, breakers and stats
     * (upstream/aggregate.h); a shuffle-shard cluster needs a customer key
     * the call has not got, so its balancer is not asked */
    sharp_cluster_t *cluster = a->cluster;
    sharp_cluster_local_t *cl = a->cl;
    sharp_host_t *host = sharp_aggregate_host(a->view, &cluster, &cl, sharp_worker_random(w));
    sharp_ext_authz_call_t *c = sharp_calloc(1, sizeof *c);
    c->w = w;
    c->c = cluster ? sharp_cluster_ref(cluster) : NULL;
    c->done = a->done;
    c->ctx = a->ctx;
    c->timeout_ms = a->timeout_ms;
    c->max_response_bytes = a->max_response_bytes;
    c->conn_id = a->conn_id;
    c->stream_id = a->stream_id;
    c->what = a->what ? a->what : "ext_authz";
    c->start_ns = sharp_now_ns();
    sharp_headers_init(&c->req);
    sharp_headers_init(&c->resp);
    sharp_headers_init(&c->trailers);
    sharp_headers_copy(&c->req, a->headers);
    if (a->body_len) sharp_sbuf_append(&c->body, a->body, a->body_len);
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->starting = true;
    if (!c->c) {
        /* CDS removed it, or it never existed (Envoy checks at request time) */
        end_call(c, "cluster not found");
        c->starting = false;
        return c;
    }
    c->host = host;
    if (!c->host) {
        end_call(c, "no healthy upstream");
        c->starting = false;
        return c;
    }
    /* async client requests run at DEFAULT priority */
    if (!sharp_cluster_slot_acquire(
            &c->c->open[SHARP_PRIORITY_DEFAULT].rq_open,
            sharp_cluster_cb_max(c->c, SHARP_PRIORITY_DEFAULT, SHARP_CB_MAX_REQUESTS))) {
        sharp_counter_inc(w->stats, c->c->st.rq_pending_overflow);
        end_call(c, "circuit breaker full");
        c->starting = false;
        return c;
    }
    c->slot = true;
    sharp_counter_inc(w->stats, c->c->st.rq_total);
    sharp_gauge_add(w->stats, c->c->st.rq_active, 1);
    atomic_fetch_add_explicit(&c->host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->host->rq_total, 1, memory_order_relaxed);
    if (c->timeout_ms) uv_timer_start(&c->timer, on_timeout, c->timeout_ms, 0);
    sharp_pool_t *pool = sharp_cluster_pool(cl, SHARP_PRIORITY_DEFAULT, c->host,
                                            a->http2 ? "HTTP/2" : "HTTP/1.1");
    if (!sharp_pool_acquire(pool, &c->ureq, &call_cbs, c)) {
        sharp_counter_inc(w->stats, c->c->st.rq_pending_overflow);
        end_call(c, "pending requests overflow");
    }
    c->starting = false;
    return c;
}

void sharp_ext_authz_call_cancel(sharp_ext_authz_call_t *c)
{
    if (c->finished) return;
    c->done = NULL;
    if (!c->ended && c->slot) sharp_counter_inc(c->w->stats, c->c->st.rq_tx_reset);
    finish(c);
}

void sharp_ext_authz_grpc_head(sharp_headers_t *h, const char *path, const char *authority, uint64_t timeout_ms,
                               const sharp_headers_t *initial_metadata)
{
    sharp_headers_add_cstr(h, ":method", "POST");
    sharp_headers_add_cstr(h, ":path", path);
    sharp_headers_add_cstr(h, ":authority", authority);
    sharp_headers_add_cstr(h, ":scheme", "http");
    sharp_headers_add_cstr(h, "content-type", "application/grpc");
    sharp_headers_add_cstr(h, "te", "trailers");
    if (timeout_ms) {
        char t[10];
        size_t tl = sharp_grpc_timeout_format(timeout_ms, t);
        sharp_headers_add(h, "grpc-timeout", 12, t, tl);
    }
    for (uint32_t i = 0; initial_metadata && i < initial_metadata->n; i++) {
        sharp_str_t n = sharp_headers_name(initial_metadata, i), v = sharp_headers_value(initial_metadata, i);
        sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
}

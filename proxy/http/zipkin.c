/* zipkin.c: the worker's Zipkin reporters; see zipkin.h. */
#include "http/zipkin.h"
#include "log.h"
#include "runtime.h"
#include "upstream/cluster.h"
#include "upstream/pool.h"
#include "upstream/shadow.h"

#include <stdio.h>

typedef struct reporter {
    sharp_dlist_t link; /* in worker->zipkin_reporters */
    sharp_worker_t *w;
    char *cluster, *endpoint, *hostname;
    sharp_stat_id_t spans_sent, timer_flushed, skipped_no_cluster, sent, dropped, failed;
    sharp_sbuf_t spans; /* the pending spans' JSON, comma separated */
    uint64_t pending, capacity;
    uv_timer_t timer; /* flush_interval_ms */
} reporter_t;

/* One POST to the collector. Its outcome is counted as Envoy's async
 * client reports it to ReporterImpl: a complete response (onSuccess) is
 * reports_sent if it is a 202, else reports_dropped, and the router's own
 * answers are responses too (503 without a healthy host, for a full
 * breaker, a connection failure or a reset before the response; 504 for the
 * timeout), so a dead collector counts reports_dropped; a reset or timeout
 * once the response has begun is a stream reset (onFailure):
 * reports_failed. */
typedef struct report {
    sharp_dlist_t link; /* in worker->zipkin_reports */
    sharp_worker_t *w;
    sharp_cluster_t *c;
    sharp_host_t *host;
    sharp_headers_t h;
    sharp_sbuf_t body;
    sharp_upstream_request_t ureq;
    uv_timer_t timer; /* tracing.zipkin.request_timeout */
    uint32_t code;    /* the response's status, once its headers came */
    bool done;
    sharp_stat_id_t sent, dropped, failed;
} report_t;

static const sharp_upstream_callbacks_t report_cbs;

/* ---- a report's life ---- */

static void free_report(uv_handle_t *h)
{
    report_t *rp = h->data;
    sharp_cluster_unref(rp->c);
    free(rp);
}

static void finish(report_t *rp)
{
    if (rp->done) return;
    rp->done = true;
    sharp_pool_cancel(&rp->ureq);
    atomic_fetch_sub_explicit(&rp->host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&rp->c->open[SHARP_PRIORITY_DEFAULT].rq_open, 1, memory_order_relaxed);
    sharp_gauge_add(rp->w->stats, rp->c->st.rq_active, -1);
    sharp_dlist_remove(&rp->link);
    sharp_headers_free(&rp->h);
    sharp_sbuf_free(&rp->body);
    uv_timer_stop(&rp->timer);
    uv_close((uv_handle_t *)&rp->timer, free_report);
}

/* The complete response: Envoy's ReporterImpl::onSuccess. */
static void answered(report_t *rp, uint32_t code)
{
    if (rp->done) return;
    sharp_counter_inc(rp->w->stats, code == 202 ? rp->sent : rp->dropped);
    if (code != 202) sharp_debug(upstream, "zipkin collector cluster '%s': report answered %u", rp->c->name, code);
    finish(rp);
}

/* The report ends without its response: before the response began, the
 * router's local reply (`local_code`, a dropped report); after, a stream
 * reset (a failed report). */
static void failed(report_t *rp, uint32_t local_code, const char *why)
{
    if (rp->done) return;
    sharp_debug(upstream, "zipkin report to cluster '%s' failed: %s", rp->c->name, why);
    if (rp->code) {
        sharp_counter_inc(rp->w->stats, rp->failed);
        finish(rp);
        return;
    }
    /* counted in the cluster as the router counts its local replies */
    sharp_cluster_count_response(rp->c, rp->w->stats, local_code);
    atomic_fetch_add_explicit(&rp->host->rq_error, 1, memory_order_relaxed);
    answered(rp, local_code);
}

static void on_report_timeout(uv_timer_t *t)
{
    report_t *rp = t->data;
    if (!rp->code) sharp_counter_inc(rp->w->stats, rp->c->st.rq_timeout);
    failed(rp, 504, "timeout");
}

static void rp_on_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    report_t *rp = ctx;
    sharp_upstream_cx_send_headers(cx, &rp->h, false);
    if (rp->done) return;
    sharp_upstream_cx_send_data(cx, rp->body.data, rp->body.len, true);
}

static void rp_on_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    (void)why;
    failed(ctx, 503, detail ? detail : "no connection");
}

static void complete(report_t *rp)
{
    sharp_counter_inc(rp->w->stats, rp->c->st.rq_completed);
    answered(rp, rp->code);
}

static void rp_on_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    report_t *rp = ctx;
    uint32_t code = sharp_headers_status(h);
    if (code >= 100 && code < 200) return; /* 1xx: the response follows */
    rp->code = code ? code : 502;
    sharp_cluster_count_response(rp->c, rp->w->stats, rp->code);
    if (end_stream) complete(rp);
}

static void rp_on_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    (void)p;
    (void)n;
    if (end_stream) complete(ctx);
}

static void rp_on_trailers(void *ctx, sharp_headers_t *t)
{
    (void)t;
    complete(ctx);
}

static void rp_on_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    report_t *rp = ctx;
    sharp_counter_inc(rp->w->stats, rp->c->st.rq_rx_reset);
    failed(rp, why == SHARP_RESET_PROTOCOL_ERROR ? 502 : 503, detail ? detail : "reset");
}

static void rp_on_write_watermark(void *ctx, bool above)
{
    (void)ctx;
    (void)above; /* the whole body is handed over at once */
}

static const sharp_upstream_callbacks_t report_cbs = {
    .on_ready = rp_on_ready,
    .on_pool_failure = rp_on_pool_failure,
    .on_headers = rp_on_headers,
    .on_data = rp_on_data,
    .on_trailers = rp_on_trailers,
    .on_reset = rp_on_reset,
    .on_write_watermark = rp_on_write_watermark,
};

/* Envoy's ReporterImpl::flushSpans: the pending spans as one report. */
static void flush(reporter_t *r)
{
    if (!r->pending) return;
    sharp_worker_t *w = r->w;
    sharp_counter_add(w->stats, r->spans_sent, r->pending);
    sharp_sbuf_t body = {0};
    sharp_sbuf_puts(&body, "[");
    sharp_sbuf_append(&body, r->spans.data, r->spans.len);
    sharp_sbuf_puts(&body, "]");
    sharp_sbuf_reset(&r->spans);
    r->pending = 0;
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *c = w->view ? sharp_view_cluster(w->view, r->cluster, &cl) : NULL;
    if (!c || !cl) {
        sharp_debug(upstream, "zipkin collector cluster '%s' does not exist", r->cluster);
        sharp_counter_inc(w->stats, r->skipped_no_cluster);
        sharp_sbuf_free(&body);
        return;
    }
    /* the async client's request: DEFAULT priority, the cluster's breakers */
    sharp_host_t *host = sharp_lb_choose(&cl->lb);
    if (!host) {
        sharp_debug(upstream, "zipkin collector cluster '%s': no healthy host", c->name);
        sharp_counter_inc(w->stats, r->dropped); /* the router's 503 */
        sharp_sbuf_free(&body);
        return;
    }
    if (!sharp_cluster_slot_acquire(&c->open[SHARP_PRIORITY_DEFAULT].rq_open,
                                    sharp_cluster_cb_max(c, SHARP_PRIORITY_DEFAULT, SHARP_CB_MAX_REQUESTS))) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        sharp_counter_inc(w->stats, r->dropped); /* the router's 503 (overflow) */
        sharp_sbuf_free(&body);
        return;
    }
    report_t *rp = sharp_calloc(1, sizeof *rp);
    rp->w = w;
    rp->c = sharp_cluster_ref(c);
    rp->host = host;
    rp->body = body;
    rp->sent = r->sent;
    rp->dropped = r->dropped;
    rp->failed = r->failed;
    sharp_headers_init(&rp->h);
    sharp_headers_add_cstr(&rp->h, ":method", "POST");
    sharp_headers_add_cstr(&rp->h, ":path", r->endpoint);
    sharp_headers_add_cstr(&rp->h, ":authority", r->hostname);
    sharp_headers_add_cstr(&rp->h, ":scheme", "http");
    sharp_headers_add_cstr(&rp->h, "content-type", "application/json");
    char len[24];
    snprintf(len, sizeof len, "%zu", rp->body.len);
    sharp_headers_add_cstr(&rp->h, "content-length", len);
    /* as Envoy's async client: an internal request of this proxy */
    sharp_headers_add_cstr(&rp->h, "x-envoy-internal", "true");
    sharp_headers_add_cstr(&rp->h, "x-forwarded-for", sharp_local_address());
    uv_timer_init(&w->loop, &rp->timer);
    rp->timer.data = rp;
    sharp_dlist_init(&rp->link);
    sharp_dlist_push(&w->zipkin_reports, &rp->link);
    sharp_counter_inc(w->stats, c->st.rq_total);
    sharp_gauge_add(w->stats, c->st.rq_active, 1);
    atomic_fetch_add_explicit(&host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&host->rq_total, 1, memory_order_relaxed);
    /* a route timeout of 0 is none, for the async client's router too */
    uint64_t timeout_ms = sharp_runtime_get_u64("tracing.zipkin.request_timeout", 5000);
    if (timeout_ms) uv_timer_start(&rp->timer, on_report_timeout, timeout_ms, 0);
    sharp_pool_t *pool = sharp_cluster_pool(cl, SHARP_PRIORITY_DEFAULT, host, "HTTP/1.1");
    if (!sharp_pool_acquire(pool, &rp->ureq, &report_cbs, rp)) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        sharp_counter_inc(w->stats, rp->dropped); /* the router's 503 (overflow) */
        finish(rp);
    }
}

/* ---- reporters ---- */

static void on_flush_timer(uv_timer_t *t)
{
    reporter_t *r = t->data;
    sharp_counter_inc(r->w->stats, r->timer_flushed);
    flush(r);
    uv_timer_start(&r->timer, on_flush_timer, sharp_runtime_get_u64("tracing.zipkin.flush_interval_ms", 5000), 0);
}

static reporter_t *find_reporter(sharp_worker_t *w, const sharp_zipkin_config_t *zc)
{
    for (sharp_dlist_t *i = w->zipkin_reporters.next; i != &w->zipkin_reporters; i = i->next) {
        reporter_t *r = sharp_container_of(i, reporter_t, link);
        if (!strcmp(r->cluster, zc->cluster) && !strcmp(r->endpoint, zc->endpoint) &&
            !strcmp(r->hostname, zc->hostname))
            return r;
    }
    reporter_t *r = sharp_calloc(1, sizeof *r);
    r->w = w;
    r->cluster = sharp_strdup(zc->cluster);
    r->endpoint = sharp_strdup(zc->endpoint);
    r->hostname = sharp_strdup(zc->hostname);
    r->spans_sent = zc->st.spans_sent;
    r->timer_flushed = zc->st.timer_flushed;
    r->skipped_no_cluster = zc->st.reports_skipped_no_cluster;
    r->sent = zc->st.reports_sent;
    r->dropped = zc->st.reports_dropped;
    r->failed = zc->st.reports_failed;
    /* Envoy sizes the span buffer once, from min_flush_spans */
    r->capacity = sharp_runtime_get_u64("tracing.zipkin.min_flush_spans", 5);
    uv_timer_init(&w->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_flush_timer, sharp_runtime_get_u64("tracing.zipkin.flush_interval_ms", 5000), 0);
    sharp_dlist_init(&r->link);
    sharp_dlist_push(&w->zipkin_reporters, &r->link);
    return r;
}

void sharp_zipkin_sync(sharp_worker_t *w, const sharp_snapshot_t *snap)
{
    if (w->stopping) return;
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const sharp_listener_config_t *l = snap->listeners[i];
        for (uint32_t c = 0; c < l->nchains + l->has_default_chain; c++) {
            const sharp_hcm_config_t *h = l->chains[c]->hcm;
            if (h && h->tracing && h->tracing->zipkin) find_reporter(w, h->tracing->zipkin);
        }
    }
}

void sharp_zipkin_report(sharp_worker_t *w, const sharp_zipkin_config_t *zc, sharp_sbuf_t *json)
{
    if (w->stopping) {
        sharp_sbuf_free(json);
        return;
    }
    reporter_t *r = find_reporter(w, zc);
    /* SpanBuffer::addSpan: a full buffer takes no more */
    if (r->pending >= r->capacity) {
        sharp_sbuf_free(json);
        return;
    }
    if (r->pending++) sharp_sbuf_puts(&r->spans, ",");
    sharp_sbuf_append(&r->spans, json->data, json->len);
    sharp_sbuf_free(json);
    if (r->pending >= sharp_runtime_get_u64("tracing.zipkin.min_flush_spans", 5)) flush(r);
}

static void free_reporter(uv_handle_t *h)
{
    reporter_t *r = h->data;
    free(r->cluster);
    free(r->endpoint);
    free(r->hostname);
    sharp_sbuf_free(&r->spans);
    free(r);
}

void sharp_zipkin_stop_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->zipkin_reports))
        finish(sharp_container_of(w->zipkin_reports.next, report_t, link));
    while (!sharp_dlist_empty(&w->zipkin_reporters)) {
        reporter_t *r = sharp_container_of(w->zipkin_reporters.next, reporter_t, link);
        sharp_dlist_remove(&r->link);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, free_reporter);
    }
}

/* otel.c: the worker's OpenTelemetry exporters; see otel.h. */
#include "http/otel.h"
#include "log.h"
#include "runtime.h"
#include "upstream/cluster.h"
#include "upstream/pool.h"
#include "upstream/shadow.h"

#include <stdio.h>

#define OTEL_MAX_SPANS 1024
#define OTEL_GRPC_PATH "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

typedef struct reporter {
    sharp_dlist_t link; /* in worker->otel_reporters */
    sharp_worker_t *w;
    sharp_otel_config_t cfg; /* a copy (strings owned; st copied) */
    sharp_sbuf_t spans;      /* the pending spans, framed as ScopeSpans.spans */
    uint64_t pending;
    uv_timer_t timer; /* flush_interval_ms */
} reporter_t;

/* One export. Its outcome is counted as Envoy's async client reports it
 * (see zipkin.c): any complete response, the router's local replies
 * included (503, 504), is a success; a reset or timeout once the response
 * has begun is a failure. */
typedef struct report {
    sharp_dlist_t link; /* in worker->otel_reports */
    sharp_worker_t *w;
    sharp_cluster_t *c;
    sharp_host_t *host;
    sharp_headers_t h;
    sharp_sbuf_t body;
    sharp_upstream_request_t ureq;
    uv_timer_t timer; /* the export's timeout */
    uint32_t code;    /* the response's status, once its headers came */
    bool done, grpc;
    sharp_stat_id_t success, failed;
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
    atomic_fetch_sub_explicit(&rp->c->open[SHARP_PRIORITY_DEFAULT].rq_open, 1,
                              memory_order_relaxed);
    sharp_gauge_add(rp->w->stats, rp->c->st.rq_active, -1);
    sharp_dlist_remove(&rp->link);
    sharp_headers_free(&rp->h);
    sharp_sbuf_free(&rp->body);
    uv_timer_stop(&rp->timer);
    uv_close((uv_handle_t *)&rp->timer, free_report);
}

/* The complete response: the exporter's onSuccess. */
static void answered(report_t *rp, uint32_t code)
{
    if (rp->done) return;
    if (!rp->grpc) sharp_counter_inc(rp->w->stats, rp->success);
    if (code != 200)
        sharp_debug(upstream, "opentelemetry collector cluster '%s': export answered %u",
                    rp->c->name, code);
    finish(rp);
}

/* The report ends without its response: before the response began, the
 * router's local reply (`local_code`, a dropped report); after, a stream
 * reset (a failed report). */
static void failed(report_t *rp, uint32_t local_code, const char *why)
{
    if (rp->done) return;
    sharp_debug(upstream, "opentelemetry export to cluster '%s' failed: %s", rp->c->name, why);
    if (rp->code) {
        if (!rp->grpc) sharp_counter_inc(rp->w->stats, rp->failed);
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

/* Envoy's Tracer::flushSpans: the pending spans as one export. */
static void flush(reporter_t *r)
{
    if (!r->pending) return;
    sharp_worker_t *w = r->w;
    const sharp_otel_config_t *oc = &r->cfg;
    sharp_counter_add(w->stats, oc->st.spans_sent, r->pending);
    sharp_sbuf_t msg = {0}, body = {0};
    sharp_otlp_request(oc->service_name, r->spans.data, r->spans.len, &msg);
    sharp_sbuf_reset(&r->spans);
    r->pending = 0;
    if (oc->grpc) {
        /* one gRPC message: uncompressed, its length big-endian */
        char pfx[5] = {0, (char)(msg.len >> 24), (char)(msg.len >> 16), (char)(msg.len >> 8),
                       (char)msg.len};
        sharp_sbuf_append(&body, pfx, 5);
    }
    sharp_sbuf_append(&body, msg.data, msg.len);
    sharp_sbuf_free(&msg);
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *c = w->view ? sharp_view_cluster(w->view, oc->cluster, &cl) : NULL;
    if (!c || !cl) {
        /* Envoy's exporter: "Thread local cluster not found for collector" */
        sharp_debug(upstream, "opentelemetry collector cluster '%s' does not exist", oc->cluster);
        sharp_sbuf_free(&body);
        return;
    }
    if (!oc->grpc) sharp_counter_inc(w->stats, oc->st.http_reports_sent);
    sharp_host_t *host = sharp_lb_choose(&cl->lb);
    if (!host) {
        sharp_debug(upstream, "opentelemetry collector cluster '%s': no healthy host", c->name);
        if (!oc->grpc)
            sharp_counter_inc(w->stats, oc->st.http_reports_success); /* the router's 503 */
        sharp_sbuf_free(&body);
        return;
    }
    if (!sharp_cluster_slot_acquire(
            &c->open[SHARP_PRIORITY_DEFAULT].rq_open,
            sharp_cluster_cb_max(c, SHARP_PRIORITY_DEFAULT, SHARP_CB_MAX_REQUESTS))) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        if (!oc->grpc)
            sharp_counter_inc(w->stats, oc->st.http_reports_success); /* the router's 503 */
        sharp_sbuf_free(&body);
        return;
    }
    report_t *rp = sharp_calloc(1, sizeof *rp);
    rp->w = w;
    rp->c = sharp_cluster_ref(c);
    rp->host = host;
    rp->body = body;
    rp->grpc = oc->grpc;
    rp->success = oc->st.http_reports_success;
    rp->failed = oc->st.http_reports_failed;
    sharp_headers_init(&rp->h);
    sharp_headers_add_cstr(&rp->h, ":method", "POST");
    sharp_headers_add_cstr(&rp->h, ":path", oc->path);
    sharp_headers_add_cstr(&rp->h, ":authority", oc->authority);
    sharp_headers_add_cstr(&rp->h, ":scheme", "http");
    if (oc->grpc) {
        sharp_headers_add_cstr(&rp->h, "content-type", "application/grpc");
        sharp_headers_add_cstr(&rp->h, "te", "trailers");
        if (oc->timeout_ms) {
            char t[32];
            snprintf(t, sizeof t, "%llum", (unsigned long long)oc->timeout_ms);
            sharp_headers_add_cstr(&rp->h, "grpc-timeout", t);
        }
    } else {
        sharp_headers_add_cstr(&rp->h, "content-type", "application/x-protobuf");
    }
    char len[24];
    snprintf(len, sizeof len, "%zu", rp->body.len);
    sharp_headers_add_cstr(&rp->h, "content-length", len);
    for (uint32_t i = 0; i < oc->nhdrs; i++)
        sharp_headers_set_cstr(&rp->h, oc->hdr_names[i], oc->hdr_values[i]);
    /* as Envoy's async client: an internal request of this proxy */
    sharp_headers_add_cstr(&rp->h, "x-envoy-internal", "true");
    sharp_headers_add_cstr(&rp->h, "x-forwarded-for", sharp_local_address());
    uv_timer_init(&w->loop, &rp->timer);
    rp->timer.data = rp;
    sharp_dlist_init(&rp->link);
    sharp_dlist_push(&w->otel_reports, &rp->link);
    sharp_counter_inc(w->stats, c->st.rq_total);
    sharp_gauge_add(w->stats, c->st.rq_active, 1);
    atomic_fetch_add_explicit(&host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&host->rq_total, 1, memory_order_relaxed);
    if (oc->timeout_ms) uv_timer_start(&rp->timer, on_report_timeout, oc->timeout_ms, 0);
    sharp_pool_t *pool =
        sharp_cluster_pool(cl, SHARP_PRIORITY_DEFAULT, host, oc->grpc ? "HTTP/2" : "HTTP/1.1");
    if (!sharp_pool_acquire(pool, &rp->ureq, &report_cbs, rp)) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        if (!rp->grpc) sharp_counter_inc(w->stats, rp->success); /* the router's 503 (overflow) */
        finish(rp);
    }
}

/* ---- exporters ---- */

static uint64_t flush_interval(void)
{
    return sharp_runtime_get_u64("tracing.opentelemetry.flush_interval_ms", 5000);
}

static void on_flush_timer(uv_timer_t *t)
{
    reporter_t *r = t->data;
    sharp_counter_inc(r->w->stats, r->cfg.st.timer_flushed);
    flush(r);
    uv_timer_start(&r->timer, on_flush_timer, flush_interval(), 0);
}

static bool str_eq(const char *a, const char *b)
{
    return !strcmp(a, b);
}

static bool same(const sharp_otel_config_t *a, const sharp_otel_config_t *b)
{
    if (a->grpc != b->grpc || a->timeout_ms != b->timeout_ms || a->nhdrs != b->nhdrs ||
        !str_eq(a->cluster, b->cluster) || !str_eq(a->path, b->path) ||
        !str_eq(a->authority, b->authority) || !str_eq(a->service_name, b->service_name))
        return false;
    for (uint32_t i = 0; i < a->nhdrs; i++)
        if (!str_eq(a->hdr_names[i], b->hdr_names[i]) ||
            !str_eq(a->hdr_values[i], b->hdr_values[i]))
            return false;
    return true;
}

static reporter_t *find_reporter(sharp_worker_t *w, const sharp_otel_config_t *oc)
{
    for (sharp_dlist_t *i = w->otel_reporters.next; i != &w->otel_reporters; i = i->next) {
        reporter_t *r = sharp_container_of(i, reporter_t, link);
        if (same(&r->cfg, oc)) return r;
    }
    reporter_t *r = sharp_calloc(1, sizeof *r);
    r->w = w;
    r->cfg = *oc;
    r->cfg.cluster = sharp_strdup(oc->cluster);
    r->cfg.path = sharp_strdup(oc->path);
    r->cfg.authority = sharp_strdup(oc->authority);
    r->cfg.service_name = sharp_strdup(oc->service_name);
    if (oc->nhdrs) {
        r->cfg.hdr_names = sharp_calloc(oc->nhdrs, sizeof(char *));
        r->cfg.hdr_values = sharp_calloc(oc->nhdrs, sizeof(char *));
        for (uint32_t i = 0; i < oc->nhdrs; i++) {
            r->cfg.hdr_names[i] = sharp_strdup(oc->hdr_names[i]);
            r->cfg.hdr_values[i] = sharp_strdup(oc->hdr_values[i]);
        }
    }
    uv_timer_init(&w->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_flush_timer, flush_interval(), 0);
    sharp_dlist_init(&r->link);
    sharp_dlist_push(&w->otel_reporters, &r->link);
    return r;
}

void sharp_otel_sync(sharp_worker_t *w, const sharp_snapshot_t *snap)
{
    if (w->stopping) return;
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const sharp_listener_config_t *l = snap->listeners[i];
        for (uint32_t c = 0; c < l->nchains + l->has_default_chain; c++) {
            const sharp_hcm_config_t *h = l->chains[c]->hcm;
            if (h && h->tracing && h->tracing->otel) find_reporter(w, h->tracing->otel);
        }
    }
}

void sharp_otel_report(sharp_worker_t *w, const sharp_otel_config_t *oc, sharp_sbuf_t *span)
{
    if (w->stopping) {
        sharp_sbuf_free(span);
        return;
    }
    reporter_t *r = find_reporter(w, oc);
    if (r->pending >= OTEL_MAX_SPANS) {
        sharp_sbuf_free(span);
        return;
    }
    sharp_otlp_frame_span(&r->spans, span->data, span->len);
    r->pending++;
    sharp_sbuf_free(span);
    if (r->pending >= sharp_runtime_get_u64("tracing.opentelemetry.min_flush_spans", 5)) flush(r);
}

static void free_reporter(uv_handle_t *h)
{
    reporter_t *r = h->data;
    sharp_otel_config_t *c = &r->cfg;
    free(c->cluster);
    free(c->path);
    free(c->authority);
    free(c->service_name);
    for (uint32_t i = 0; i < c->nhdrs; i++) {
        free(c->hdr_names[i]);
        free(c->hdr_values[i]);
    }
    free(c->hdr_names);
    free(c->hdr_values);
    sharp_sbuf_free(&r->spans);
    free(r);
}

void sharp_otel_stop_all(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->otel_reports))
        finish(sharp_container_of(w->otel_reports.next, report_t, link));
    while (!sharp_dlist_empty(&w->otel_reporters)) {
        reporter_t *r = sharp_container_of(w->otel_reporters.next, reporter_t, link);
        sharp_dlist_remove(&r->link);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, free_reporter);
    }
}

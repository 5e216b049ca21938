/* otel.c: the worker's OpenTelemetry exporters; see otel.h. */
#include "http/otel.h"
#include "log.h"
#include "runtime.h"
#include "upstream/async_post.h"

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
    /* the HTTP exporter counts as Envoy's async client reports to it: any
     * complete response, the router's own answers (503, 504) included, is
     * a success; a reset or timeout once the response began is a failure.
     * The gRPC exporter counts none. */
    sharp_async_post_counts_t counts = {.count = !oc->grpc, .ok = oc->st.http_reports_success,
                                        .other = oc->st.http_reports_success, .failed = oc->st.http_reports_failed};
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_async_post_head(&h, oc->path, oc->authority, oc->grpc ? "application/grpc" : "application/x-protobuf");
    if (oc->grpc) {
        sharp_headers_add_cstr(&h, "te", "trailers");
        if (oc->timeout_ms) {
            char t[32];
            snprintf(t, sizeof t, "%llum", (unsigned long long)oc->timeout_ms);
            sharp_headers_add_cstr(&h, "grpc-timeout", t);
        }
    }
    for (uint32_t i = 0; i < oc->nhdrs; i++) sharp_headers_set_cstr(&h, oc->hdr_names[i], oc->hdr_values[i]);
    /* Envoy's exporter: "Thread local cluster not found for collector" */
    bool sent = sharp_async_post(w, oc->cluster, oc->grpc ? "HTTP/2" : "HTTP/1.1", &h, &body, oc->timeout_ms, &counts,
                                 "opentelemetry export");
    if (sent && !oc->grpc) sharp_counter_inc(w->stats, oc->st.http_reports_sent);
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
    while (!sharp_dlist_empty(&w->otel_reporters)) {
        reporter_t *r = sharp_container_of(w->otel_reporters.next, reporter_t, link);
        sharp_dlist_remove(&r->link);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, free_reporter);
    }
}

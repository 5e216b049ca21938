/* zipkin.c: the worker's Zipkin reporters; see zipkin.h. */
#include "http/zipkin.h"
#include "log.h"
#include "runtime.h"
#include "upstream/async_post.h"

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
    /* counted as Envoy's async client reports to ReporterImpl: a complete
     * response (onSuccess) is reports_sent if it is a 202, else
     * reports_dropped, and the router's own answers are responses too, so
     * a dead collector counts reports_dropped; a reset or timeout once the
     * response has begun (onFailure) is reports_failed */
    sharp_async_post_counts_t counts = {.count = true, .ok_status = 202, .ok = r->sent, .other = r->dropped,
                                        .failed = r->failed};
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_async_post_head(&h, r->endpoint, r->hostname, "application/json");
    /* a route timeout of 0 is none, for the async client's router too */
    uint64_t timeout_ms = sharp_runtime_get_u64("tracing.zipkin.request_timeout", 5000);
    if (!sharp_async_post(w, r->cluster, "HTTP/1.1", &h, &body, timeout_ms, &counts, "zipkin report"))
        sharp_counter_inc(w->stats, r->skipped_no_cluster);
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
    while (!sharp_dlist_empty(&w->zipkin_reporters)) {
        reporter_t *r = sharp_container_of(w->zipkin_reporters.next, reporter_t, link);
        sharp_dlist_remove(&r->link);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, free_reporter);
    }
}

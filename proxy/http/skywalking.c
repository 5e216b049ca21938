/* skywalking.c: SkyWalking segments and the worker's reporters; see
 * skywalking.h. */
#include "http/skywalking.h"
#include "grpc/backoff.h"
#include "grpc/framing.h"
#include "log.h"
#include "upstream/async_post.h"

#include "skywalking/v3/tracing.pb-c.h"

#include <stdio.h>

#define SW_STREAM_BUFFER (4u * 1024 * 1024)
#define SW_RETRY_BASE_MS 500
#define SW_RETRY_MAX_MS 30000
#define SW_COMPONENT_ID 9000 /* cpp2sky's default: C++ */

/* ---- SegmentObject ---- */

void sharp_sw_segment_encode(const sharp_sw_segment_t *seg, sharp_sbuf_t *out)
{
    Skywalking__V3__SegmentObject so = SKYWALKING__V3__SEGMENT_OBJECT__INIT;
    so.traceid = seg->trace_id;
    so.tracesegmentid = (char *)seg->segment_id;
    so.service = (char *)seg->service;
    so.serviceinstance = (char *)seg->instance;
    Skywalking__V3__SegmentReference ref = SKYWALKING__V3__SEGMENT_REFERENCE__INIT;
    Skywalking__V3__SegmentReference *refs[1] = {&ref};
    if (seg->has_parent) {
        /* cpp2sky puts the caller's context on every span of the segment */
        ref.reftype = SKYWALKING__V3__REF_TYPE__CrossProcess;
        ref.traceid = seg->parent.trace_id;
        ref.parenttracesegmentid = seg->parent.segment_id;
        ref.parentspanid = seg->parent.span_id;
        ref.parentservice = seg->parent.service;
        ref.parentserviceinstance = seg->parent.instance;
        ref.parentendpoint = seg->parent.endpoint;
        ref.networkaddressusedatpeer = seg->parent.target;
    }
    Skywalking__V3__SpanObject *spans = sharp_calloc(seg->nspans, sizeof *spans);
    Skywalking__V3__SpanObject **sp = sharp_calloc(seg->nspans, sizeof *sp);
    uint32_t ntags = 0;
    for (uint32_t i = 0; i < seg->nspans; i++) ntags += seg->spans[i]->nattrs;
    Skywalking__V3__KeyStringValuePair *kv = sharp_calloc(ntags ? ntags : 1, sizeof *kv);
    Skywalking__V3__KeyStringValuePair **kvp = sharp_calloc(ntags ? ntags : 1, sizeof *kvp);
    uint32_t k = 0;
    for (uint32_t i = 0; i < seg->nspans; i++) {
        const sharp_span_t *s = seg->spans[i];
        Skywalking__V3__SpanObject *o = &spans[i];
        skywalking__v3__span_object__init(o);
        o->spanid = s->sw_id;
        o->parentspanid = s->sw_parent;
        o->starttime = (int64_t)(s->start_wall_us / 1000);
        o->endtime = (int64_t)(s->end_wall_us / 1000);
        if (seg->has_parent) {
            o->n_refs = 1;
            o->refs = refs;
        }
        o->operationname = s->name ? s->name : (char *)"";
        o->peer = s->peer ? s->peer : (char *)"";
        o->spantype = s->sw_exit ? SKYWALKING__V3__SPAN_TYPE__Exit : SKYWALKING__V3__SPAN_TYPE__Entry;
        o->spanlayer = s->sw_http ? SKYWALKING__V3__SPAN_LAYER__Http : SKYWALKING__V3__SPAN_LAYER__Unknown;
        o->componentid = SW_COMPONENT_ID;
        o->iserror = s->status_error;
        o->tags = &kvp[k];
        o->n_tags = s->nattrs;
        for (uint32_t t = 0; t < s->nattrs; t++, k++) {
            skywalking__v3__key_string_value_pair__init(&kv[k]);
            kv[k].key = s->akeys[t];
            kv[k].value = s->avals[t];
            kvp[k] = &kv[k];
        }
        sp[i] = o;
    }
    so.n_spans = seg->nspans;
    so.spans = sp;
    sharp_grpc_frame_message(out, &so.base);
    free(kvp);
    free(kv);
    free(sp);
    free(spans);
}

/* ---- reporters ---- */

typedef struct cached {
    struct cached *next;
    sharp_sbuf_t msg; /* the framed SegmentObject */
} cached_t;

typedef struct reporter {
    sharp_dlist_t link; /* in worker->skywalking_reporters */
    sharp_worker_t *w;
    sharp_skywalking_config_t cfg; /* a copy (strings owned; st copied) */
    sharp_async_stream_t *stream;
    cached_t *head, *tail; /* Envoy's delayed_segments_cache_ */
    uint32_t ncached;
    sharp_backoff_t backoff;
    uv_timer_t retry;
} reporter_t;

static void establish(reporter_t *r);

static void on_retry(uv_timer_t *t)
{
    establish(t->data);
}

static void set_retry_timer(reporter_t *r)
{
    uv_timer_start(&r->retry, on_retry, sharp_backoff_next(&r->backoff), 0);
}

static void on_closed(void *arg, const char *why)
{
    reporter_t *r = arg;
    r->stream = NULL;
    sharp_debug(upstream, "skywalking: the collect stream to cluster '%s' closed: %s", r->cfg.cluster, why);
    set_retry_timer(r);
}

static void send_one(reporter_t *r, sharp_sbuf_t *msg)
{
    sharp_stats_shard_t *st = r->w->stats;
    if (sharp_async_stream_send(r->stream, msg->data, msg->len)) {
        sharp_counter_inc(st, r->cfg.st.segments_sent);
    } else {
        sharp_counter_inc(st, r->cfg.st.segments_dropped);
        sharp_debug(upstream, "skywalking: the collect stream to cluster '%s' is full: segment dropped",
                    r->cfg.cluster);
    }
}

/* Envoy's flushTraceSegments. */
static void flush_cache(reporter_t *r)
{
    sharp_stats_shard_t *st = r->w->stats;
    while (r->head && r->stream) {
        cached_t *c = r->head;
        r->head = c->next;
        if (!r->head) r->tail = NULL;
        r->ncached--;
        sharp_counter_inc(st, r->cfg.st.segments_flushed);
        send_one(r, &c->msg);
        sharp_sbuf_free(&c->msg);
        free(c);
    }
    sharp_counter_inc(st, r->cfg.st.cache_flushed);
}

/* Envoy's establishNewStream. */
static void establish(reporter_t *r)
{
    const sharp_skywalking_config_t *sc = &r->cfg;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_async_post_head(&h, SHARP_SKYWALKING_COLLECT_PATH, sc->authority, "application/grpc");
    sharp_headers_add_cstr(&h, "te", "trailers");
    for (uint32_t i = 0; i < sc->nhdrs; i++) sharp_headers_set_cstr(&h, sc->hdr_names[i], sc->hdr_values[i]);
    if (sc->token && sc->token[0]) sharp_headers_set_cstr(&h, "authentication", sc->token);
    const char *why = "";
    r->stream = sharp_async_stream_open(r->w, sc->cluster, "HTTP/2", &h, SW_STREAM_BUFFER, on_closed, r,
                                        "skywalking collect", &why);
    if (!r->stream) {
        sharp_debug(upstream, "skywalking: no collect stream to cluster '%s': %s", sc->cluster, why);
        set_retry_timer(r);
        return;
    }
    if (r->head) flush_cache(r);
    sharp_backoff_reset(&r->backoff);
}

static uint64_t reporter_random(void *arg)
{
    return sharp_worker_random(arg);
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static bool same(const sharp_skywalking_config_t *a, const sharp_skywalking_config_t *b)
{
    if (a->max_cache_size != b->max_cache_size || a->nhdrs != b->nhdrs || !str_eq(a->cluster, b->cluster) ||
        !str_eq(a->authority, b->authority) || !str_eq(a->service_name, b->service_name) ||
        !str_eq(a->instance_name, b->instance_name) || !str_eq(a->token, b->token))
        return false;
    for (uint32_t i = 0; i < a->nhdrs; i++)
        if (!str_eq(a->hdr_names[i], b->hdr_names[i]) || !str_eq(a->hdr_values[i], b->hdr_values[i])) return false;
    return true;
}

static char *dup_or_null(const char *s)
{
    return s ? sharp_strdup(s) : NULL;
}

static reporter_t *find_reporter(sharp_worker_t *w, const sharp_skywalking_config_t *sc)
{
    for (sharp_dlist_t *i = w->skywalking_reporters.next; i != &w->skywalking_reporters; i = i->next) {
        reporter_t *r = sharp_container_of(i, reporter_t, link);
        if (same(&r->cfg, sc)) return r;
    }
    reporter_t *r = sharp_calloc(1, sizeof *r);
    r->w = w;
    r->cfg = *sc;
    r->cfg.cluster = sharp_strdup(sc->cluster);
    r->cfg.authority = sharp_strdup(sc->authority);
    r->cfg.service_name = sharp_strdup(sc->service_name);
    r->cfg.instance_name = sharp_strdup(sc->instance_name);
    r->cfg.token = dup_or_null(sc->token);
    if (sc->nhdrs) {
        r->cfg.hdr_names = sharp_calloc(sc->nhdrs, sizeof(char *));
        r->cfg.hdr_values = sharp_calloc(sc->nhdrs, sizeof(char *));
        for (uint32_t i = 0; i < sc->nhdrs; i++) {
            r->cfg.hdr_names[i] = sharp_strdup(sc->hdr_names[i]);
            r->cfg.hdr_values[i] = sharp_strdup(sc->hdr_values[i]);
        }
    }
    sharp_backoff_init(&r->backoff, SW_RETRY_BASE_MS, SW_RETRY_MAX_MS, reporter_random, w);
    uv_timer_init(&w->loop, &r->retry);
    r->retry.data = r;
    sharp_dlist_init(&r->link);
    sharp_dlist_push(&w->skywalking_reporters, &r->link);
    /* the first stream opens from the worker's loop (a worker's first
     * configuration is taken before its thread runs) */
    uv_timer_start(&r->retry, on_retry, 0, 0);
    return r;
}

/* The reporter of each SkyWalking config of the worker's configuration,
 * by the config's address, rebuilt on every new configuration: a segment
 * finds its reporter by comparing pointers instead of every field. Only
 * configs alive in that configuration are listed, so an address cannot
 * stand for another config; a segment of a stream that still holds an
 * older configuration's config finds its reporter by its fields. */
struct sharp_sw_index {
    const sharp_skywalking_config_t **cfgs;
    reporter_t **reporters;
    uint32_t n, cap;
};

static void index_add(sharp_worker_t *w, const sharp_skywalking_config_t *sc, reporter_t *r)
{
    if (!w->skywalking_index) w->skywalking_index = sharp_calloc(1, sizeof *w->skywalking_index);
    struct sharp_sw_index *x = w->skywalking_index;
    for (uint32_t i = 0; i < x->n; i++)
        if (x->cfgs[i] == sc) return;
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 4;
        x->cfgs = sharp_realloc(x->cfgs, x->cap * sizeof *x->cfgs);
        x->reporters = sharp_realloc(x->reporters, x->cap * sizeof *x->reporters);
    }
    x->cfgs[x->n] = sc;
    x->reporters[x->n++] = r;
}

static reporter_t *reporter_for(sharp_worker_t *w, const sharp_skywalking_config_t *sc)
{
    const struct sharp_sw_index *x = w->skywalking_index;
    for (uint32_t i = 0; x && i < x->n; i++)
        if (x->cfgs[i] == sc) return x->reporters[i];
    return find_reporter(w, sc);
}

void sharp_skywalking_sync(sharp_worker_t *w, const sharp_snapshot_t *snap)
{
    if (w->stopping) return;
    if (w->skywalking_index) w->skywalking_index->n = 0;
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const sharp_listener_config_t *l = snap->listeners[i];
        for (uint32_t c = 0; c < l->nchains + l->has_default_chain; c++) {
            const sharp_hcm_config_t *h = l->chains[c]->hcm;
            if (h && h->tracing && h->tracing->skywalking) {
                const sharp_skywalking_config_t *sc = h->tracing->skywalking;
                index_add(w, sc, find_reporter(w, sc));
            }
        }
    }
}

/* Envoy's TraceSegmentReporter::report. */
void sharp_skywalking_report(sharp_worker_t *w, const sharp_skywalking_config_t *sc, sharp_sw_segment_t *seg)
{
    if (w->stopping) {
        sharp_sw_segment_free(seg);
        return;
    }
    reporter_t *r = reporter_for(w, sc);
    sharp_sbuf_t msg = {0};
    sharp_sw_segment_encode(seg, &msg);
    sharp_sw_segment_free(seg);
    if (r->stream) {
        send_one(r, &msg);
        sharp_sbuf_free(&msg);
        return;
    }
    cached_t *c = sharp_calloc(1, sizeof *c);
    c->msg = msg;
    if (r->tail) r->tail->next = c;
    else r->head = c;
    r->tail = c;
    if (++r->ncached > r->cfg.max_cache_size) {
        /* the oldest goes */
        cached_t *old = r->head;
        r->head = old->next;
        if (!r->head) r->tail = NULL;
        r->ncached--;
        sharp_sbuf_free(&old->msg);
        free(old);
        sharp_counter_inc(w->stats, r->cfg.st.segments_dropped);
    }
}

static void free_reporter(uv_handle_t *h)
{
    reporter_t *r = h->data;
    sharp_skywalking_config_t *c = &r->cfg;
    while (r->head) {
        cached_t *n = r->head->next;
        sharp_sbuf_free(&r->head->msg);
        free(r->head);
        r->head = n;
    }
    free(c->cluster);
    free(c->authority);
    free(c->service_name);
    free(c->instance_name);
    free(c->token);
    for (uint32_t i = 0; i < c->nhdrs; i++) {
        free(c->hdr_names[i]);
        free(c->hdr_values[i]);
    }
    free(c->hdr_names);
    free(c->hdr_values);
    free(r);
}

void sharp_skywalking_stop_all(sharp_worker_t *w)
{
    if (w->skywalking_index) {
        free(w->skywalking_index->cfgs);
        free(w->skywalking_index->reporters);
        free(w->skywalking_index);
        w->skywalking_index = NULL;
    }
    while (!sharp_dlist_empty(&w->skywalking_reporters)) {
        reporter_t *r = sharp_container_of(w->skywalking_reporters.next, reporter_t, link);
        sharp_dlist_remove(&r->link);
        if (r->stream) sharp_async_stream_cancel(r->stream);
        r->stream = NULL;
        uv_timer_stop(&r->retry);
        uv_close((uv_handle_t *)&r->retry, free_reporter);
    }
}

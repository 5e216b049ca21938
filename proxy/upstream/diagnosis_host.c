/* diagnosis_host.c: the hosts' side of the diagnosis (diagnosis.h): each
 * signals interval's evidence from the host's counters, the cluster's
 * medians, publishing the text to the workers and the JSON log line. Main
 * thread, except sharp_diag_text_get / _put. */
#include "upstream/diagnosis.h"
#include "kernel/kernel.h"
#include "log.h"
#include "retire.h"
#include "sbuf.h"
#include "upstream/cluster.h"
#include "upstream/outlier.h"

#include <stdio.h>
#include <stdlib.h>

#define RELAXED memory_order_relaxed

/* ---- the published text ---- */

static sharp_diag_text_t *text_new(const char *s)
{
    size_t n = strlen(s);
    sharp_diag_text_t *t = sharp_calloc(1, sizeof *t + n + 1);
    atomic_init(&t->refs, 1);
    memcpy(t->s, s, n + 1);
    return t;
}

void sharp_diag_text_put(sharp_diag_text_t *t)
{
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) free(t);
}

static void text_retired(void *p)
{
    sharp_diag_text_put(p);
}

sharp_diag_text_t *sharp_diag_text_get(const sharp_host_t *h)
{
    /* the main thread retires a replaced text only once every worker has
     * come back to its loop, so the one loaded here lives until the
     * reference is taken */
    sharp_diag_text_t *t = atomic_load_explicit(&((sharp_host_t *)h)->diag.text, memory_order_acquire);
    if (t) atomic_fetch_add_explicit(&t->refs, 1, RELAXED);
    return t;
}

static void publish(sharp_host_t *h)
{
    sharp_host_diag_t *d = &h->diag;
    sharp_diag_text_t *t = d->st.text[0] ? text_new(d->st.text) : NULL;
    sharp_retire(atomic_exchange_explicit(&d->text, t, memory_order_acq_rel), text_retired);
}

void sharp_diag_host_destroy(sharp_host_t *h)
{
    sharp_diag_text_put(atomic_exchange_explicit(&h->diag.text, NULL, RELAXED));
}

const char *sharp_diag_host_text(const sharp_host_t *h)
{
    return h->diag.st.text;
}

/* ---- the log line ---- */

static void json_field(sharp_sbuf_t *b, const char *name, const char *v)
{
    sharp_sbuf_printf(b, ",\"%s\":\"", name);
    sharp_sbuf_json_escape(b, v, strlen(v));
    sharp_sbuf_puts(b, "\"");
}

/* One line whose message is a JSON object, so a --log-format of "%v" makes
 * the log JSON lines. */
static void log_change(const sharp_cluster_t *c, const sharp_host_t *h, sharp_diag_cause_t previous,
                       const char *detector)
{
    if (!SHARP_LOG_ON(upstream, SHARP_LOG_INFO)) return;
    const sharp_host_diag_t *d = &h->diag;
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{\"event\":\"upstream_host_diagnosis\"");
    json_field(&b, "cluster", c->name);
    json_field(&b, "host", h->address);
    json_field(&b, "cause", sharp_diag_cause_name(d->st.cause));
    json_field(&b, "diagnosis", d->st.text);
    json_field(&b, "previous_cause", sharp_diag_cause_name(previous));
    sharp_sbuf_printf(&b, ",\"ejected\":%s",
                      atomic_load_explicit(&h->health_flags, RELAXED) & SHARP_HOST_FAILED_OUTLIER ? "true" : "false");
    if (detector) json_field(&b, "detector", detector);
    sharp_sbuf_puts(&b, "}");
    sharp_info(upstream, "%s", b.data);
    sharp_sbuf_free(&b);
}

/* ---- the interval ---- */

/* The cluster's thresholds: its monitors' where it has them. */
static void cluster_config(const sharp_cluster_t *c, sharp_diag_config_t *cfg)
{
    sharp_diag_config_defaults(cfg);
    const sharp_outlier_t *od = c->outlier;
    if (!od) return;
    const sharp_outlier_kernel_config_t *k = &od->cfg.kernel;
    if (k->enabled) {
        cfg->loss_min_rate = k->min_retransmit_rate;
        cfg->loss_factor = k->retransmit_rate_factor;
        cfg->loss_min_segments = k->min_segments;
        cfg->rtt_factor = k->rtt_ratio;
        cfg->rtt_min_us = (double)k->min_rtt_us;
    }
    const sharp_outlier_latency_config_t *l = &od->cfg.latency;
    if (l->enabled) {
        cfg->latency_factor = l->factor;
        cfg->latency_min_us = (double)l->min_latency_us;
    }
}

static uint64_t diff(uint64_t cur, uint64_t prev)
{
    return cur >= prev ? cur - prev : cur;
}

typedef struct {
    uint64_t lat_count, lat_sum_us, resp_5xx, resets, timeouts, cx_fail;
} counts_t;

static void read_counts(const sharp_host_t *h, counts_t *n)
{
    const sharp_host_diag_t *d = &h->diag;
    n->lat_count = atomic_load_explicit(&d->lat_count, RELAXED);
    n->lat_sum_us = atomic_load_explicit(&d->lat_sum_us, RELAXED);
    n->resp_5xx = atomic_load_explicit(&d->resp_5xx, RELAXED);
    n->resets = atomic_load_explicit(&d->resets, RELAXED);
    n->timeouts = atomic_load_explicit(&h->rq_timeout, RELAXED);
    n->cx_fail = atomic_load_explicit(&h->cx_connect_fail, RELAXED);
}

/* The proxy's part of the evidence: the counters' differences since the
 * last interval. */
static void proxy_input(const sharp_host_t *h, const counts_t *n, sharp_diag_input_t *in)
{
    const sharp_host_diag_t *d = &h->diag;
    uint64_t cnt = diff(n->lat_count, d->prev.lat_count), sum = diff(n->lat_sum_us, d->prev.lat_sum_us);
    in->responses = cnt;
    in->resp_5xx = diff(n->resp_5xx, d->prev.resp_5xx);
    in->resets = diff(n->resets, d->prev.resets);
    in->timeouts = diff(n->timeouts, d->prev.timeouts);
    in->cx_fail = diff(n->cx_fail, d->prev.cx_fail);
    in->latency_mean_us = cnt ? (double)sum / (double)cnt : -1;
    in->in_flight = in->interval_s > 0 ? (double)sum / (in->interval_s * 1e6) : 0;
}

static void kernel_input(const sharp_host_t *h, sharp_diag_input_t *in)
{
    in->kernel = false;
    if (sharp_kernel_source() == SHARP_KERNEL_SOURCE_OFF || !h->kern.has_prev) return;
    const sharp_tcp_signals_t *s = &h->kern.sig;
    in->kernel = true;
    in->segs_out = s->segs_out;
    in->retrans = s->retrans;
    in->rst_rx = s->rst_rx;
    in->connects = s->connects;
    in->connect_fail = s->connect_fail;
    in->rtt_samples = s->rtt_samples;
    in->retrans_rate = s->retrans_rate;
    in->rtt_us = s->rtt_us;
}

static struct {
    double *v[4];
    uint32_t *pos[4];
    size_t cap;
} S;

typedef struct {
    double v;
    uint32_t host;
} item_t;

static int cmp_item(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    return x->v < y->v ? -1 : x->v > y->v;
}

/* Sorts the figures in v[0..n) (hosts[k] owns v[k]) into out[], and sets
 * pos[host] to each host's place in it (UINT32_MAX for hosts without one). */
static void sort_figures(item_t *items, size_t n, double *out, uint32_t *pos, uint32_t nhosts)
{
    qsort(items, n, sizeof *items, cmp_item);
    for (uint32_t i = 0; i < nhosts; i++) pos[i] = UINT32_MAX;
    for (size_t k = 0; k < n; k++) {
        out[k] = items[k].v;
        pos[items[k].host] = (uint32_t)k;
    }
}

void sharp_diag_cluster_interval(sharp_cluster_t *c, uint64_t now_ms)
{
    uint32_t n = c->nhosts;
    if (!n) return;
    if (n > S.cap) {
        S.cap = 2 * n;
        for (int f = 0; f < 4; f++) {
            free(S.v[f]);
            free(S.pos[f]);
            S.v[f] = sharp_calloc(S.cap, sizeof *S.v[f]);
            S.pos[f] = sharp_calloc(S.cap, sizeof *S.pos[f]);
        }
    }
    sharp_diag_config_t cfg;
    cluster_config(c, &cfg);
    /* the evidence of each host; the figures the medians are taken over */
    item_t *items = sharp_calloc(4 * (size_t)n, sizeof *items);
    size_t cnt[4] = {0};
    bool *fresh = sharp_calloc(n, sizeof *fresh);
    for (uint32_t i = 0; i < n; i++) {
        sharp_host_t *h = c->hosts[i];
        sharp_host_diag_t *d = &h->diag;
        counts_t now;
        read_counts(h, &now);
        if (!d->has_prev) {
            sharp_diag_state_init(&d->st);
            d->has_prev = true;
        } else if (now_ms > d->prev_ms) {
            sharp_diag_input_t *in = &d->last;
            memset(in, 0, sizeof *in);
            in->interval_s = (double)(now_ms - d->prev_ms) / 1000;
            proxy_input(h, &now, in);
            kernel_input(h, in);
            fresh[i] = true;
            bool ejected = atomic_load_explicit(&h->health_flags, RELAXED) & SHARP_HOST_FAILED_OUTLIER;
            if (!ejected) { /* ejected hosts are no reference for the others */
                if (in->kernel && in->segs_out >= cfg.loss_min_segments && in->retrans_rate >= 0)
                    items[cnt[0]++] = (item_t){in->retrans_rate, i};
                if (in->kernel && in->rtt_samples && in->rtt_us > 0)
                    items[n + cnt[1]++] = (item_t){in->rtt_us, i};
                if (in->responses >= cfg.min_requests) {
                    items[2 * (size_t)n + cnt[2]++] = (item_t){in->latency_mean_us, i};
                    items[3 * (size_t)n + cnt[3]++] =
                        (item_t){(double)in->resp_5xx / (double)in->responses, i};
                }
            }
        }
        d->prev.lat_count = now.lat_count;
        d->prev.lat_sum_us = now.lat_sum_us;
        d->prev.resp_5xx = now.resp_5xx;
        d->prev.resets = now.resets;
        d->prev.timeouts = now.timeouts;
        d->prev.cx_fail = now.cx_fail;
        d->prev_ms = now_ms;
    }
    for (int f = 0; f < 4; f++) sort_figures(items + (size_t)f * n, cnt[f], S.v[f], S.pos[f], n);
    for (uint32_t i = 0; i < n; i++) {
        if (!fresh[i]) continue;
        sharp_host_t *h = c->hosts[i];
        sharp_host_diag_t *d = &h->diag;
        sharp_diag_context_t *cx = &d->last_cx;
        cx->host = h->address;
        cx->retrans_rate = sharp_diag_median_without(S.v[0], cnt[0], S.pos[0][i]);
        cx->rtt_us = sharp_diag_median_without(S.v[1], cnt[1], S.pos[1][i]);
        cx->latency_us = sharp_diag_median_without(S.v[2], cnt[2], S.pos[2][i]);
        cx->error_share = sharp_diag_median_without(S.v[3], cnt[3], S.pos[3][i]);
        sharp_diag_cause_t before = d->st.cause;
        unsigned ch = sharp_diag_step(&cfg, &d->st, &d->last, cx);
        if (ch & SHARP_DIAG_TEXT_CHANGED) publish(h);
        if (ch & SHARP_DIAG_CAUSE_CHANGED) log_change(c, h, before, NULL);
    }
    free(items);
    free(fresh);
}

void sharp_diag_host_ejected(sharp_cluster_t *c, sharp_host_t *h, sharp_diag_detector_t by, const char *detector,
                             const char *detail)
{
    sharp_host_diag_t *d = &h->diag;
    if (!d->has_prev) {
        sharp_diag_state_init(&d->st);
        d->has_prev = true;
        d->last_cx = (sharp_diag_context_t){h->address, -1, -1, -1, -1};
        d->last.retrans_rate = d->last.rtt_us = d->last.latency_mean_us = -1;
    }
    d->last_cx.host = h->address;
    sharp_diag_config_t cfg;
    cluster_config(c, &cfg);
    /* the last interval's evidence and what came since: a detector that
     * counts each result (consecutive 5xx) trips within an interval */
    sharp_diag_input_t in = d->last;
    counts_t now;
    read_counts(h, &now);
    uint64_t cnt = diff(now.lat_count, d->prev.lat_count), sum = diff(now.lat_sum_us, d->prev.lat_sum_us);
    double last_sum = in.latency_mean_us > 0 ? in.latency_mean_us * (double)in.responses : 0;
    in.responses += cnt;
    in.latency_mean_us = in.responses ? (last_sum + (double)sum) / (double)in.responses : -1;
    in.resp_5xx += diff(now.resp_5xx, d->prev.resp_5xx);
    in.resets += diff(now.resets, d->prev.resets);
    in.timeouts += diff(now.timeouts, d->prev.timeouts);
    in.cx_fail += diff(now.cx_fail, d->prev.cx_fail);
    sharp_diag_cause_t before = d->st.cause;
    unsigned ch = sharp_diag_eject(&cfg, &d->st, &in, &d->last_cx, by, detail);
    if (ch & SHARP_DIAG_TEXT_CHANGED) publish(h);
    log_change(c, h, before, detector);
}

void sharp_diag_host_unejected(sharp_host_t *h)
{
    sharp_diag_uneject(&h->diag.st);
}

/* metrics_service.c: the gRPC metrics service stats sink (metrics_service.h). */
#include "metrics_service.h"
#include "arena.h"
#include "grpc/client.h"
#include "log.h"
#include "stats_config.h"

#include <math.h>
#include <stdio.h>

#define MS_PATH "/envoy.service.metrics.v3.MetricsService/StreamMetrics"
#define MS_MAX_TAGS 32

/* Envoy's supported quantiles (HistogramStatisticsImpl) and default
 * bucket bounds, as the admin views use them (stats_render.c). */
static const double ms_quantiles[] = {0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};
#define MS_NQUANTILES SHARP_ARRAY_SIZE(ms_quantiles)

/* ---- the flusher ---- */

/* What the flusher derives from a stat's name once: the family name and,
 * with emit_tags_as_labels, the labels (which never change either). */
typedef struct {
    char *name;
    size_t nlabels;
    Io__Prometheus__Client__LabelPair *labels;
    Io__Prometheus__Client__LabelPair **label_ptrs;
} ms_names_t;

struct sharp_ms_flusher {
    sharp_ms_options_t o;
    uint64_t *last;    /* counters: value at the previous flush, by id */
    ms_names_t *names; /* by id */
    uint32_t cap;
    sharp_arena_t arena;
    sharp_hist_merged_t *h;
};

sharp_ms_flusher_t *sharp_ms_flusher_create(const sharp_ms_options_t *o)
{
    sharp_ms_flusher_t *f = sharp_calloc(1, sizeof *f);
    f->o = *o;
    return f;
}

void sharp_ms_flusher_free(sharp_ms_flusher_t *f)
{
    if (!f) return;
    for (uint32_t i = 0; i < f->cap; i++) {
        ms_names_t *nm = &f->names[i];
        free(nm->name);
        for (size_t l = 0; l < nm->nlabels; l++) {
            free(nm->labels[l].name);
            free(nm->labels[l].value);
        }
        free(nm->labels);
        free(nm->label_ptrs);
    }
    free(f->names);
    free(f->last);
    free(f->h);
    sharp_arena_free(&f->arena);
    free(f);
}

static void grow(sharp_ms_flusher_t *f, uint32_t n)
{
    if (n <= f->cap) return;
    uint32_t cap = f->cap ? f->cap : 256;
    while (cap < n)
        cap *= 2;
    f->last = sharp_realloc(f->last, cap * sizeof *f->last);
    f->names = sharp_realloc(f->names, cap * sizeof *f->names);
    memset(f->last + f->cap, 0, (cap - f->cap) * sizeof *f->last);
    memset(f->names + f->cap, 0, (cap - f->cap) * sizeof *f->names);
    f->cap = cap;
}

static const ms_names_t *names_of(sharp_ms_flusher_t *f, sharp_stats_t *s, sharp_stat_id_t id,
                                  const char *name)
{
    ms_names_t *nm = &f->names[id];
    if (nm->name) return nm;
    if (!f->o.tags_as_labels) {
        nm->name = sharp_strdup(name);
        return nm;
    }
    sharp_sbuf_t b = {0};
    sharp_stat_tag_t tags[MS_MAX_TAGS];
    size_t nt =
        sharp_stats_config_extract_tags(sharp_stats_get_config(s), name, &b, tags, MS_MAX_TAGS);
    nm->name = sharp_strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
    if (nt) {
        nm->labels = sharp_calloc(nt, sizeof *nm->labels);
        nm->label_ptrs = sharp_calloc(nt, sizeof *nm->label_ptrs);
        for (size_t i = 0; i < nt; i++) {
            Io__Prometheus__Client__LabelPair *lp = &nm->labels[i];
            io__prometheus__client__label_pair__init(lp);
            lp->name = sharp_strdup(tags[i].tag);
            lp->value = sharp_realloc(NULL, tags[i].len + 1);
            memcpy(lp->value, tags[i].value, tags[i].len);
            lp->value[tags[i].len] = '\0';
            nm->label_ptrs[i] = lp;
        }
        nm->nlabels = nt;
    }
    return nm;
}

/* Envoy's populateMetricsFamily: a family of one metric. */
static Io__Prometheus__Client__Metric *family(sharp_ms_flusher_t *f,
                                              Io__Prometheus__Client__MetricFamily **slot,
                                              Io__Prometheus__Client__MetricType type,
                                              const ms_names_t *nm, int64_t ts)
{
    Io__Prometheus__Client__MetricFamily *fam = sharp_arena_alloc(&f->arena, sizeof *fam);
    io__prometheus__client__metric_family__init(fam);
    Io__Prometheus__Client__Metric *m = sharp_arena_alloc(&f->arena, sizeof *m);
    io__prometheus__client__metric__init(m);
    fam->name = nm->name;
    fam->has_type = true;
    fam->type = type;
    fam->metric = sharp_arena_alloc(&f->arena, sizeof *fam->metric);
    fam->metric[0] = m;
    fam->n_metric = 1;
    m->has_timestamp_ms = true;
    m->timestamp_ms = ts;
    m->n_label = nm->nlabels;
    m->label = nm->label_ptrs;
    *slot = fam;
    return m;
}

static void summary(sharp_ms_flusher_t *f, Io__Prometheus__Client__Metric *m,
                    const sharp_hist_merged_t *h)
{
    Io__Prometheus__Client__Summary *sm = sharp_arena_alloc(&f->arena, sizeof *sm);
    io__prometheus__client__summary__init(sm);
    sm->quantile = sharp_arena_alloc(&f->arena, MS_NQUANTILES * sizeof *sm->quantile);
    Io__Prometheus__Client__Quantile *q = sharp_arena_alloc(&f->arena, MS_NQUANTILES * sizeof *q);
    for (size_t i = 0; i < MS_NQUANTILES; i++) {
        io__prometheus__client__quantile__init(&q[i]);
        q[i].has_quantile = q[i].has_value = true;
        q[i].quantile = ms_quantiles[i];
        /* NaN for an interval without values, as Envoy's */
        q[i].value = sharp_hist_merged_quantile(h, ms_quantiles[i]);
        sm->quantile[i] = &q[i];
    }
    sm->n_quantile = MS_NQUANTILES;
    sm->has_sample_count = sm->has_sample_sum = true;
    sm->sample_count = h->count;
    sm->sample_sum = (double)h->sum;
    m->summary = sm;
}

static void histogram(sharp_ms_flusher_t *f, Io__Prometheus__Client__Metric *m,
                      const sharp_hist_merged_t *h, const double *bounds, size_t nb)
{
    Io__Prometheus__Client__Histogram *hg = sharp_arena_alloc(&f->arena, sizeof *hg);
    io__prometheus__client__histogram__init(hg);
    hg->has_sample_count = hg->has_sample_sum = true;
    hg->sample_count = h->count;
    hg->sample_sum = (double)h->sum;
    hg->bucket = sharp_arena_alloc(&f->arena, (nb ? nb : 1) * sizeof *hg->bucket);
    Io__Prometheus__Client__Bucket *b = sharp_arena_alloc(&f->arena, (nb ? nb : 1) * sizeof *b);
    for (size_t i = 0; i < nb; i++) {
        io__prometheus__client__bucket__init(&b[i]);
        b[i].has_upper_bound = b[i].has_cumulative_count = true;
        b[i].upper_bound = bounds[i];
        b[i].cumulative_count = sharp_hist_merged_count_le(h, bounds[i]);
        hg->bucket[i] = &b[i];
    }
    hg->n_bucket = nb;
    m->histogram = hg;
}

size_t sharp_ms_flusher_build(sharp_ms_flusher_t *f, sharp_stats_t *s, int64_t ts,
                              Envoy__Service__Metrics__V3__StreamMetricsMessage *msg)
{
    sharp_arena_reset(&f->arena);
    uint32_t n = sharp_stats_size(s);
    grow(f, n);
    bool summaries = f->o.histogram_mode != SHARP_MS_HISTOGRAM;
    bool histograms = f->o.histogram_mode != SHARP_MS_SUMMARY;
    /* room for every stat, histograms twice */
    Io__Prometheus__Client__MetricFamily **fams =
        sharp_arena_alloc(&f->arena, (2 * (size_t)n + 1) * sizeof *fams);
    size_t nf = 0;
    const sharp_stats_config_t *cfg = sharp_stats_get_config(s);
    /* Envoy's MetricsFlusher order: counters, gauges, histograms */
    for (int pass = 0; pass < 3; pass++) {
        for (sharp_stat_id_t id = 0; id < n; id++) {
            sharp_stat_kind_t kind;
            const char *name = sharp_stats_name(s, id, &kind);
            if (!name || (int)kind != pass) continue;
            if (kind == SHARP_STAT_COUNTER) {
                uint64_t cur = sharp_stats_counter_value(s, id);
                /* after /reset_counters the value starts again from 0 */
                uint64_t delta = cur >= f->last[id] ? cur - f->last[id] : cur;
                f->last[id] = cur;
                if (!sharp_stats_used(s, id)) continue;
                Io__Prometheus__Client__Metric *m =
                    family(f, &fams[nf++], IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER,
                           names_of(f, s, id, name), ts);
                Io__Prometheus__Client__Counter *c = sharp_arena_alloc(&f->arena, sizeof *c);
                io__prometheus__client__counter__init(c);
                c->has_value = true;
                c->value = (double)(f->o.counters_as_deltas ? delta : cur);
                m->counter = c;
            } else if (kind == SHARP_STAT_GAUGE) {
                if (!sharp_stats_used(s, id)) continue;
                Io__Prometheus__Client__Metric *m =
                    family(f, &fams[nf++], IO__PROMETHEUS__CLIENT__METRIC_TYPE__GAUGE,
                           names_of(f, s, id, name), ts);
                Io__Prometheus__Client__Gauge *g = sharp_arena_alloc(&f->arena, sizeof *g);
                io__prometheus__client__gauge__init(g);
                g->has_value = true;
                g->value = (double)sharp_stats_gauge_value(s, id);
                m->gauge = g;
            } else {
                if (!sharp_stats_used(s, id)) continue;
                if (!f->h) f->h = sharp_calloc(1, sizeof *f->h);
                /* the interval the flush closed: Envoy's intervalStatistics */
                if (sharp_stats_histogram_merge(s, id, NULL, f->h) < 0) continue;
                const ms_names_t *nm = names_of(f, s, id, name);
                if (summaries)
                    summary(f,
                            family(f, &fams[nf++], IO__PROMETHEUS__CLIENT__METRIC_TYPE__SUMMARY, nm,
                                   ts),
                            f->h);
                if (histograms) {
                    size_t nb;
                    const double *bounds = sharp_stats_config_buckets(cfg, name, &nb);
                    if (!bounds) {
                        bounds = sharp_stats_default_buckets;
                        nb = SHARP_STATS_DEFAULT_NBUCKETS;
                    }
                    histogram(f,
                              family(f, &fams[nf++], IO__PROMETHEUS__CLIENT__METRIC_TYPE__HISTOGRAM,
                                     nm, ts),
                              f->h, bounds, nb);
                }
            }
        }
    }
    msg->envoy_metrics = fams;
    msg->n_envoy_metrics = nf;
    return nf;
}

/* ---- the sink ---- */

struct sharp_metrics_sink {
    char *cluster;
    char *authority;
    sharp_headers_t metadata;
    sharp_ms_flusher_t *flusher;
    sharp_grpc_client_t *client;
    sharp_grpc_stream_t *stream;
    bool stopped;
    bool client_failed; /* logged once */
    uint64_t sent, dropped;
};

sharp_metrics_sink_t *sharp_metrics_sink_create(const char *cluster, const char *authority,
                                                const sharp_headers_t *metadata,
                                                const sharp_ms_options_t *o)
{
    sharp_metrics_sink_t *k = sharp_calloc(1, sizeof *k);
    k->cluster = sharp_strdup(cluster ? cluster : "");
    k->authority = sharp_strdup(authority ? authority : "");
    sharp_headers_init(&k->metadata);
    if (metadata) sharp_headers_copy(&k->metadata, metadata);
    k->flusher = sharp_ms_flusher_create(o);
    return k;
}

void sharp_metrics_sink_stop(sharp_metrics_sink_t *k)
{
    if (!k) return;
    k->stopped = true;
    if (k->stream) sharp_grpc_stream_cancel(k->stream);
    k->stream = NULL;
    sharp_grpc_client_destroy(k->client);
    k->client = NULL;
}

void sharp_metrics_sink_free(sharp_metrics_sink_t *k)
{
    if (!k) return;
    sharp_metrics_sink_stop(k);
    sharp_ms_flusher_free(k->flusher);
    sharp_headers_free(&k->metadata);
    free(k->cluster);
    free(k->authority);
    free(k);
}

uint64_t sharp_metrics_sink_sent(const sharp_metrics_sink_t *k)
{
    return k->sent;
}

uint64_t sharp_metrics_sink_dropped(const sharp_metrics_sink_t *k)
{
    return k->dropped;
}

int sharp_metrics_sink_check(const sharp_metrics_sink_t *k, sharp_snapshot_t *snap, char *err,
                             size_t errlen)
{
    const sharp_cluster_t *c = sharp_snapshot_cluster(snap, k->cluster);
    if (!c) {
        snprintf(err, errlen, "Unknown gRPC client cluster '%s'", k->cluster);
        return -1;
    }
    if (c->aggregate) {
        snprintf(err, errlen, "gRPC client cluster '%s' is an aggregate cluster (envoy.clusters.aggregate), which "
                 "is not supported by SHARP's metrics service sink", k->cluster);
        return -1;
    }
    if (!c->http2) {
        /* Envoy would send gRPC over HTTP/1.1 and fail every stream */
        snprintf(
            err, errlen,
            "gRPC client cluster '%s' does not use HTTP/2 (set typed_extension_protocol_options "
            "with explicit_http_config.http2_protocol_options, or the deprecated "
            "http2_protocol_options)",
            k->cluster);
        return -1;
    }
    return 0;
}

static void on_message(void *arg, const ProtobufCMessage *m)
{
    (void)arg;
    (void)m; /* Envoy ignores StreamMetricsResponse */
}

static void on_close(void *arg, int status, const char *message, const sharp_headers_t *trailers)
{
    (void)trailers;
    sharp_metrics_sink_t *k = arg;
    k->stream = NULL;
    sharp_debug(
        stats,
        "metrics service stream to cluster '%s' closed (%d, %s); the next flush opens another",
        k->cluster, status, message);
}

static const sharp_grpc_stream_callbacks_t ms_callbacks = {
    .on_message = on_message,
    .on_close = on_close,
};

void sharp_metrics_sink_flush(sharp_metrics_sink_t *k, sharp_stats_t *s,
                              const sharp_upstream_env_t *env, sharp_snapshot_t *snap,
                              const ProtobufCMessage *node)
{
    if (k->stopped) return;
    if (!k->client) {
        char err[512];
        sharp_grpc_client_config_t cfg = {.cluster_name = k->cluster,
                                          .authority = k->authority,
                                          .initial_metadata = &k->metadata};
        k->client = sharp_grpc_client_create(env, snap, &cfg, err, sizeof err);
        if (!k->client) {
            /* checked at load: only a cluster gone from the snapshot */
            if (!k->client_failed) sharp_log_error("metrics service: %s", err);
            k->client_failed = true;
            return;
        }
    }
    Envoy__Service__Metrics__V3__StreamMetricsMessage msg =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT;
    Envoy__Service__Metrics__V3__StreamMetricsMessage__Identifier id =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__IDENTIFIER__INIT;
    sharp_ms_flusher_build(k->flusher, s, (int64_t)(sharp_wall_us() / 1000), &msg);
    if (!k->stream) {
        k->stream = sharp_grpc_stream_start(
            k->client, MS_PATH, &envoy__service__metrics__v3__stream_metrics_response__descriptor,
            0, NULL, &ms_callbacks, k);
        /* the identifier only opens a stream, as Envoy */
        id.node = (Envoy__Config__Core__V3__Node *)node;
        msg.identifier = &id;
    }
    if (sharp_grpc_stream_send(k->stream, &msg.base) == SHARP_GRPC_SEND_REFUSED) {
        k->dropped++;
        sharp_debug(stats,
                    "metrics service: the stream to cluster '%s' cannot take this flush (%zu bytes "
                    "queued): "
                    "dropped (%llu so far)",
                    k->cluster, sharp_grpc_stream_queued(k->stream),
                    (unsigned long long)k->dropped);
    } else {
        k->sent++;
    }
}

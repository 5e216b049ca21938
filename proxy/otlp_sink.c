/* otlp_sink.c: the OpenTelemetry stats sink (otlp_sink.h). */
#include "otlp_sink.h"
#include "arena.h"
#include "grpc/client.h"
#include "log.h"
#include "stats_config.h"

#include <stdio.h>

#define OTLP_PATH "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
#define OTLP_MAX_TAGS 32

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue anyvalue_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint number_point_t;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint hist_point_t;


/* ---- the flusher ---- */

/* What the flusher derives from a stat's name once: the metric name and,
 * with emit_tags_as_attributes, the attributes (which never change). */
typedef struct {
    char *name;
    size_t nattrs;
    kv_t *attrs;
    anyvalue_t *values;
    kv_t **attr_ptrs;
} otlp_names_t;

struct sharp_otlp_flusher {
    sharp_otlp_options_t o;
    char *prefix;        /* prefix + "." or "" */
    uint64_t start_ns;   /* the cumulative points' start */
    uint64_t last_ns;    /* the previous flush (the delta points' start) */
    uint64_t *last;      /* counters: value at the previous flush, by id */
    otlp_names_t *names; /* by id */
    uint32_t cap;
    sharp_arena_t arena;
    sharp_hist_merged_t *h;
    /* the resource, built once */
    Opentelemetry__Proto__Resource__V1__Resource resource;
    kv_t *res_kv;
    anyvalue_t *res_val;
    kv_t **res_ptrs;
};

/* Envoy's Resource merge: a key already there takes the new value. */
static void resource_set(sharp_otlp_flusher_t *f, const char *key, const char *value)
{
    size_t n = f->resource.n_attributes;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(f->res_kv[i].key, key) == 0) {
            free(f->res_val[i].string_value);
            f->res_val[i].string_value = sharp_strdup(value);
            return;
        }
    }
    opentelemetry__proto__common__v1__key_value__init(&f->res_kv[n]);
    opentelemetry__proto__common__v1__any_value__init(&f->res_val[n]);
    f->res_val[n].value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    f->res_val[n].string_value = sharp_strdup(value);
    f->res_kv[n].key = sharp_strdup(key);
    f->resource.n_attributes = n + 1;
}

sharp_otlp_flusher_t *sharp_otlp_flusher_create(const sharp_otlp_options_t *o, uint64_t start_ns)
{
    sharp_otlp_flusher_t *f = sharp_calloc(1, sizeof *f);
    f->o = *o;
    f->o.prefix = NULL;
    if (o->prefix && o->prefix[0]) {
        size_t n = strlen(o->prefix);
        f->prefix = sharp_realloc(NULL, n + 2);
        memcpy(f->prefix, o->prefix, n);
        f->prefix[n] = '.';
        f->prefix[n + 1] = '\0';
    } else {
        f->prefix = sharp_strdup("");
    }
    f->start_ns = f->last_ns = start_ns;
    /* Envoy's ResourceProviderImpl with no detectors and no service name */
    opentelemetry__proto__resource__v1__resource__init(&f->resource);
    size_t max = 3 + o->nresource;
    f->res_kv = sharp_calloc(max, sizeof *f->res_kv);
    f->res_val = sharp_calloc(max, sizeof *f->res_val);
    f->res_ptrs = sharp_calloc(max, sizeof *f->res_ptrs);
    resource_set(f, "telemetry.sdk.language", "cpp");
    resource_set(f, "telemetry.sdk.name", "envoy");
    resource_set(f, "telemetry.sdk.version", SHARP_VERSION);
    for (size_t i = 0; i < o->nresource; i++)
        resource_set(f, o->resource_keys[i], o->resource_values[i]);
    for (size_t i = 0; i < f->resource.n_attributes; i++) {
        f->res_kv[i].value = &f->res_val[i];
        f->res_ptrs[i] = &f->res_kv[i];
    }
    f->resource.attributes = f->res_ptrs;
    f->o.resource_keys = f->o.resource_values = NULL;
    f->o.nresource = 0;
    return f;
}

void sharp_otlp_flusher_free(sharp_otlp_flusher_t *f)
{
    if (!f) return;
    for (uint32_t i = 0; i < f->cap; i++) {
        otlp_names_t *nm = &f->names[i];
        free(nm->name);
        for (size_t l = 0; l < nm->nattrs; l++) {
            free(nm->attrs[l].key);
            free(nm->values[l].string_value);
        }
        free(nm->attrs);
        free(nm->values);
        free(nm->attr_ptrs);
    }
    for (size_t i = 0; i < f->resource.n_attributes; i++) {
        free(f->res_kv[i].key);
        free(f->res_val[i].string_value);
    }
    free(f->res_kv);
    free(f->res_val);
    free(f->res_ptrs);
    free(f->names);
    free(f->last);
    free(f->h);
    free(f->prefix);
    sharp_arena_free(&f->arena);
    free(f);
}

static void grow(sharp_otlp_flusher_t *f, uint32_t n)
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

static const otlp_names_t *names_of(sharp_otlp_flusher_t *f, sharp_stats_t *s, sharp_stat_id_t id,
                                    const char *name)
{
    otlp_names_t *nm = &f->names[id];
    if (nm->name) return nm;
    sharp_sbuf_t b = {0};
    sharp_stat_tag_t tags[OTLP_MAX_TAGS];
    size_t nt = 0;
    if (f->o.tag_extracted_name || f->o.tags_as_attributes)
        nt = sharp_stats_config_extract_tags(sharp_stats_get_config(s), name, &b, tags,
                                             OTLP_MAX_TAGS);
    const char *base = f->o.tag_extracted_name ? sharp_sbuf_cstr(&b) : name;
    size_t pl = strlen(f->prefix), bl = strlen(base);
    nm->name = sharp_realloc(NULL, pl + bl + 1);
    memcpy(nm->name, f->prefix, pl);
    memcpy(nm->name + pl, base, bl + 1);
    sharp_sbuf_free(&b);
    if (f->o.tags_as_attributes && nt) {
        nm->attrs = sharp_calloc(nt, sizeof *nm->attrs);
        nm->values = sharp_calloc(nt, sizeof *nm->values);
        nm->attr_ptrs = sharp_calloc(nt, sizeof *nm->attr_ptrs);
        for (size_t i = 0; i < nt; i++) {
            opentelemetry__proto__common__v1__key_value__init(&nm->attrs[i]);
            opentelemetry__proto__common__v1__any_value__init(&nm->values[i]);
            nm->attrs[i].key = sharp_strdup(tags[i].tag);
            nm->values[i].value_case =
                OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
            nm->values[i].string_value = sharp_strndup(tags[i].value, tags[i].len);
            nm->attrs[i].value = &nm->values[i];
            nm->attr_ptrs[i] = &nm->attrs[i];
        }
        nm->nattrs = nt;
    }
    return nm;
}

static metric_t *new_metric(sharp_otlp_flusher_t *f, const otlp_names_t *nm)
{
    metric_t *m = sharp_arena_alloc(&f->arena, sizeof *m);
    opentelemetry__proto__metrics__v1__metric__init(m);
    m->name = nm->name;
    return m;
}

static number_point_t *number_point(sharp_otlp_flusher_t *f, const otlp_names_t *nm,
                                    uint64_t start_ns, uint64_t now_ns, int64_t value)
{
    number_point_t *p = sharp_arena_alloc(&f->arena, sizeof *p);
    opentelemetry__proto__metrics__v1__number_data_point__init(p);
    p->attributes = nm->attr_ptrs;
    p->n_attributes = nm->nattrs;
    p->start_time_unix_nano = start_ns;
    p->time_unix_nano = now_ns;
    p->value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
    p->as_int = value;
    return p;
}

size_t sharp_otlp_flusher_build(
    sharp_otlp_flusher_t *f, sharp_stats_t *s, uint64_t now_ns,
    Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest *req)
{
    sharp_arena_reset(&f->arena);
    uint32_t n = sharp_stats_size(s);
    grow(f, n);
    metric_t **metrics = sharp_arena_alloc(&f->arena, ((size_t)n + 1) * sizeof *metrics);
    size_t nm_out = 0;
    const sharp_stats_config_t *cfg = sharp_stats_get_config(s);
    uint64_t delta_start = f->last_ns;
    /* Envoy's flusher order: gauges, counters, histograms */
    static const sharp_stat_kind_t order[] = {SHARP_STAT_GAUGE, SHARP_STAT_COUNTER,
                                              SHARP_STAT_HISTOGRAM};
    for (int pass = 0; pass < 3; pass++) {
        for (sharp_stat_id_t id = 0; id < n; id++) {
            sharp_stat_kind_t kind;
            const char *name = sharp_stats_name(s, id, &kind);
            if (!name || kind != order[pass]) continue;
            if (kind == SHARP_STAT_COUNTER) {
                uint64_t cur = sharp_stats_counter_value(s, id);
                /* after /reset_counters the value starts again from 0 */
                uint64_t delta = cur >= f->last[id] ? cur - f->last[id] : cur;
                f->last[id] = cur;
                if (!sharp_stats_used(s, id)) continue;
                const otlp_names_t *nm = names_of(f, s, id, name);
                metric_t *m = new_metric(f, nm);
                Opentelemetry__Proto__Metrics__V1__Sum *sum = sharp_arena_alloc(&f->arena, sizeof *sum);
                opentelemetry__proto__metrics__v1__sum__init(sum);
                sum->is_monotonic = true;
                sum->aggregation_temporality =
                    f->o.counters_as_deltas
                        ? OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_DELTA
                        : OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
                sum->data_points = sharp_arena_alloc(&f->arena, sizeof *sum->data_points);
                sum->data_points[0] =
                    number_point(f, nm, f->o.counters_as_deltas ? delta_start : f->start_ns, now_ns,
                                 (int64_t)(f->o.counters_as_deltas ? delta : cur));
                sum->n_data_points = 1;
                m->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM;
                m->sum = sum;
                metrics[nm_out++] = m;
            } else if (kind == SHARP_STAT_GAUGE) {
                if (!sharp_stats_used(s, id)) continue;
                const otlp_names_t *nm = names_of(f, s, id, name);
                metric_t *m = new_metric(f, nm);
                Opentelemetry__Proto__Metrics__V1__Gauge *g = sharp_arena_alloc(&f->arena, sizeof *g);
                opentelemetry__proto__metrics__v1__gauge__init(g);
                g->data_points = sharp_arena_alloc(&f->arena, sizeof *g->data_points);
                g->data_points[0] = number_point(f, nm, 0, now_ns, sharp_stats_gauge_value(s, id));
                g->n_data_points = 1;
                m->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
                m->gauge = g;
                metrics[nm_out++] = m;
            } else {
                if (!sharp_stats_used(s, id)) continue;
                if (!f->h) f->h = sharp_calloc(1, sizeof *f->h);
                bool delta = f->o.histograms_as_deltas;
                /* Envoy's intervalStatistics or cumulativeStatistics */
                if (sharp_stats_histogram_merge(s, id, delta ? NULL : f->h, delta ? f->h : NULL) <
                    0)
                    continue;
                const otlp_names_t *nm = names_of(f, s, id, name);
                size_t nb;
                const double *bounds = sharp_stats_config_buckets(cfg, name, &nb);
                if (!bounds) {
                    bounds = sharp_stats_default_buckets;
                    nb = SHARP_STATS_DEFAULT_NBUCKETS;
                }
                hist_point_t *p = sharp_arena_alloc(&f->arena, sizeof *p);
                opentelemetry__proto__metrics__v1__histogram_data_point__init(p);
                p->attributes = nm->attr_ptrs;
                p->n_attributes = nm->nattrs;
                p->start_time_unix_nano = delta ? delta_start : f->start_ns;
                p->time_unix_nano = now_ns;
                p->count = f->h->count;
                p->_sum_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM;
                p->sum = (double)f->h->sum;
                p->explicit_bounds = (double *)bounds;
                p->n_explicit_bounds = nb;
                p->bucket_counts = sharp_arena_alloc(&f->arena, (nb + 1) * sizeof *p->bucket_counts);
                p->n_bucket_counts = nb + 1;
                /* disjoint counts: (bound[i-1], bound[i]], then above the last */
                uint64_t below = 0;
                for (size_t i = 0; i < nb; i++) {
                    uint64_t le = sharp_hist_merged_count_le(f->h, bounds[i]);
                    p->bucket_counts[i] = le >= below ? le - below : 0;
                    if (le > below) below = le;
                }
                p->bucket_counts[nb] = f->h->count >= below ? f->h->count - below : 0;
                Opentelemetry__Proto__Metrics__V1__Histogram *hg =
                    sharp_arena_alloc(&f->arena, sizeof *hg);
                opentelemetry__proto__metrics__v1__histogram__init(hg);
                hg->aggregation_temporality =
                    delta
                        ? OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_DELTA
                        : OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
                hg->data_points = sharp_arena_alloc(&f->arena, sizeof *hg->data_points);
                hg->data_points[0] = p;
                hg->n_data_points = 1;
                metric_t *m = new_metric(f, nm);
                m->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM;
                m->histogram = hg;
                metrics[nm_out++] = m;
            }
        }
    }
    f->last_ns = now_ns;
    req->n_resource_metrics = 0;
    req->resource_metrics = NULL;
    if (!nm_out) return 0;
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = sharp_arena_alloc(&f->arena, sizeof *sm);
    opentelemetry__proto__metrics__v1__scope_metrics__init(sm);
    sm->metrics = metrics;
    sm->n_metrics = nm_out;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = sharp_arena_alloc(&f->arena, sizeof *rm);
    opentelemetry__proto__metrics__v1__resource_metrics__init(rm);
    rm->resource = &f->resource;
    rm->scope_metrics = sharp_arena_alloc(&f->arena, sizeof *rm->scope_metrics);
    rm->scope_metrics[0] = sm;
    rm->n_scope_metrics = 1;
    req->resource_metrics = sharp_arena_alloc(&f->arena, sizeof *req->resource_metrics);
    req->resource_metrics[0] = rm;
    req->n_resource_metrics = 1;
    return nm_out;
}

/* ---- the sink ---- */

typedef struct {
    struct sharp_otlp_sink *k;
    sharp_grpc_stream_t *call; /* NULL: free */
} otlp_slot_t;

struct sharp_otlp_sink {
    char *cluster;
    char *authority;
    sharp_headers_t metadata;
    uint64_t timeout_ms;
    sharp_otlp_flusher_t *flusher;
    sharp_grpc_client_t *client;
    otlp_slot_t slots[SHARP_OTLP_MAX_INFLIGHT];
    bool stopped;
    bool client_failed; /* logged once */
    uint64_t sent, dropped, failed;
};

sharp_otlp_sink_t *sharp_otlp_sink_create(const char *cluster, const char *authority,
                                          const sharp_headers_t *metadata, uint64_t timeout_ms,
                                          const sharp_otlp_options_t *o)
{
    sharp_otlp_sink_t *k = sharp_calloc(1, sizeof *k);
    k->cluster = sharp_strdup(cluster ? cluster : "");
    k->authority = sharp_strdup(authority ? authority : "");
    sharp_headers_init(&k->metadata);
    if (metadata) sharp_headers_copy(&k->metadata, metadata);
    k->timeout_ms = timeout_ms;
    k->flusher = sharp_otlp_flusher_create(o, sharp_wall_us() * 1000);
    for (int i = 0; i < SHARP_OTLP_MAX_INFLIGHT; i++)
        k->slots[i].k = k;
    return k;
}

void sharp_otlp_sink_stop(sharp_otlp_sink_t *k)
{
    if (!k) return;
    k->stopped = true;
    for (int i = 0; i < SHARP_OTLP_MAX_INFLIGHT; i++) {
        if (k->slots[i].call) sharp_grpc_stream_cancel(k->slots[i].call);
        k->slots[i].call = NULL;
    }
    sharp_grpc_client_destroy(k->client);
    k->client = NULL;
}

void sharp_otlp_sink_free(sharp_otlp_sink_t *k)
{
    if (!k) return;
    sharp_otlp_sink_stop(k);
    sharp_otlp_flusher_free(k->flusher);
    sharp_headers_free(&k->metadata);
    free(k->cluster);
    free(k->authority);
    free(k);
}

int sharp_otlp_sink_check(const sharp_otlp_sink_t *k, sharp_snapshot_t *snap, char *err,
                          size_t errlen)
{
    const sharp_cluster_t *c = sharp_snapshot_cluster(snap, k->cluster);
    if (!c) {
        snprintf(err, errlen, "Unknown gRPC client cluster '%s'", k->cluster);
        return -1;
    }
    if (c->aggregate) {
        snprintf(err, errlen, "gRPC client cluster '%s' is an aggregate cluster (envoy.clusters.aggregate), which "
                 "is not supported by SHARP's OpenTelemetry stats sink", k->cluster);
        return -1;
    }
    if (!c->http2) {
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

static void on_export(void *arg, int status, const char *message, const ProtobufCMessage *response,
                      const sharp_headers_t *trailers)
{
    (void)trailers;
    otlp_slot_t *slot = arg;
    sharp_otlp_sink_t *k = slot->k;
    slot->call = NULL;
    if (status != 0) {
        k->failed++;
        sharp_debug(stats, "open telemetry stats sink: export failure; status: %d, message: %s",
                    status, message);
        return;
    }
    const Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceResponse *r =
        (const void *)response;
    if (r && r->partial_success)
        sharp_debug(
            stats,
            "open telemetry stats sink: export response with partial success; %lld rejected, "
            "collector message: %s",
            (long long)r->partial_success->rejected_data_points,
            r->partial_success->error_message ? r->partial_success->error_message : "");
}

void sharp_otlp_sink_flush(sharp_otlp_sink_t *k, sharp_stats_t *s, const sharp_upstream_env_t *env,
                           sharp_snapshot_t *snap)
{
    if (k->stopped) return;
    if (!k->client) {
        char err[512];
        sharp_grpc_client_config_t cfg = {.cluster_name = k->cluster,
                                          .authority = k->authority,
                                          .initial_metadata = &k->metadata,
                                          .timeout_ms = k->timeout_ms};
        k->client = sharp_grpc_client_create(env, snap, &cfg, err, sizeof err);
        if (!k->client) {
            if (!k->client_failed) sharp_log_error("open telemetry stats sink: %s", err);
            k->client_failed = true;
            return;
        }
    }
    Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest req =
        OPENTELEMETRY__PROTO__COLLECTOR__METRICS__V1__EXPORT_METRICS_SERVICE_REQUEST__INIT;
    /* built even when dropped: the deltas stay those of one interval */
    sharp_otlp_flusher_build(k->flusher, s, sharp_wall_us() * 1000, &req);
    otlp_slot_t *slot = NULL;
    for (int i = 0; i < SHARP_OTLP_MAX_INFLIGHT && !slot; i++)
        if (!k->slots[i].call) slot = &k->slots[i];
    if (!slot) {
        k->dropped++;
        sharp_debug(
            stats,
            "open telemetry stats sink: %d exports to cluster '%s' still pending: flush dropped "
            "(%llu so far)",
            SHARP_OTLP_MAX_INFLIGHT, k->cluster, (unsigned long long)k->dropped);
        return;
    }
    slot->call = sharp_grpc_unary(
        k->client, OTLP_PATH, &req.base,
        &opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__descriptor,
        0, NULL, on_export, slot);
    if (slot->call) k->sent++;
}

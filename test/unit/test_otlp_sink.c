/* test_otlp_sink.c: the OpenTelemetry stats sink's request encoding
 * (otlp_sink.h) from a real store: counters as cumulative or delta Sums,
 * gauges, histograms (cumulative or of the flush interval) with disjoint
 * bucket counts, names (tag-extracted or full, prefixed), tags as
 * attributes, the resource, timestamps, and the wire round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "otlp_sink.h"
#include "stats.h"
#include "stats_config.h"

typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest req_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;

#define REQ_INIT OPENTELEMETRY__PROTO__COLLECTOR__METRICS__V1__EXPORT_METRICS_SERVICE_REQUEST__INIT
#define T_DELTA                                                                                    \
    OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_DELTA
#define T_CUMULATIVE                                                                               \
    OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE

static const metric_t *find(const req_t *r, const char *name)
{
    if (r->n_resource_metrics != 1) return NULL;
    const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm =
        r->resource_metrics[0]->scope_metrics[0];
    for (size_t i = 0; i < sm->n_metrics; i++)
        if (strcmp(sm->metrics[i]->name, name) == 0) return sm->metrics[i];
    return NULL;
}

static const char *attr(Opentelemetry__Proto__Common__V1__KeyValue *const *kv, size_t n,
                        const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i]->key, key) == 0) return kv[i]->value->string_value;
    return NULL;
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t c = sharp_stats_counter(st, "cluster.a.upstream_rq_total");
    sharp_stats_counter(st, "cluster.a.never_used");
    sharp_stat_id_t g = sharp_stats_gauge(st, "cluster.a.membership_total");
    sharp_counter_add(sh, c, 5);
    sharp_gauge_set(st, g, 3);
    sharp_otlp_flusher_t *cum = sharp_otlp_flusher_create(
        &(sharp_otlp_options_t){.tags_as_attributes = false, .tag_extracted_name = false}, 1000);
    sharp_otlp_flusher_t *del = sharp_otlp_flusher_create(
        &(sharp_otlp_options_t){.counters_as_deltas = true, .tag_extracted_name = false}, 1000);
    req_t a = REQ_INIT, d = REQ_INIT;
    sharp_stats_flush(st);
    assert_int_equal(sharp_otlp_flusher_build(cum, st, 2000, &a), 2);
    sharp_otlp_flusher_build(del, st, 2000, &d);
    /* gauges first, then counters */
    const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm =
        a.resource_metrics[0]->scope_metrics[0];
    assert_null(sm->scope);
    assert_string_equal(sm->metrics[0]->name, "cluster.a.membership_total");
    assert_string_equal(sm->metrics[1]->name, "cluster.a.upstream_rq_total");
    const metric_t *m = find(&a, "cluster.a.upstream_rq_total");
    assert_int_equal(m->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM);
    assert_true(m->sum->is_monotonic);
    assert_int_equal(m->sum->aggregation_temporality, T_CUMULATIVE);
    assert_int_equal(m->sum->n_data_points, 1);
    assert_int_equal(m->sum->data_points[0]->as_int, 5);
    assert_int_equal(m->sum->data_points[0]->start_time_unix_nano, 1000);
    assert_int_equal(m->sum->data_points[0]->time_unix_nano, 2000);
    assert_int_equal(m->sum->data_points[0]->n_attributes, 0);
    assert_null(find(&a, "cluster.a.never_used"));
    m = find(&a, "cluster.a.membership_total");
    assert_int_equal(m->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE);
    assert_int_equal(m->gauge->data_points[0]->as_int, 3);
    assert_int_equal(m->gauge->data_points[0]->start_time_unix_nano, 0);
    m = find(&d, "cluster.a.upstream_rq_total");
    assert_int_equal(m->sum->aggregation_temporality, T_DELTA);
    assert_int_equal(m->sum->data_points[0]->as_int, 5);
    /* the resource: Envoy's telemetry.sdk.* */
    const Opentelemetry__Proto__Resource__V1__Resource *res = a.resource_metrics[0]->resource;
    assert_string_equal(attr(res->attributes, res->n_attributes, "telemetry.sdk.language"), "cpp");
    assert_string_equal(attr(res->attributes, res->n_attributes, "telemetry.sdk.name"), "envoy");
    assert_non_null(attr(res->attributes, res->n_attributes, "telemetry.sdk.version"));

    sharp_counter_add(sh, c, 3);
    sharp_stats_flush(st);
    sharp_otlp_flusher_build(cum, st, 3000, &a);
    sharp_otlp_flusher_build(del, st, 3000, &d);
    m = find(&a, "cluster.a.upstream_rq_total");
    assert_int_equal(m->sum->data_points[0]->as_int, 8);
    assert_int_equal(m->sum->data_points[0]->start_time_unix_nano, 1000);
    m = find(&d, "cluster.a.upstream_rq_total");
    assert_int_equal(m->sum->data_points[0]->as_int, 3);
    assert_int_equal(m->sum->data_points[0]->start_time_unix_nano, 2000);
    assert_int_equal(m->sum->data_points[0]->time_unix_nano, 3000);
    sharp_otlp_flusher_free(cum);
    sharp_otlp_flusher_free(del);
    sharp_stats_destroy(st);
}

static void test_histograms(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t h =
        sharp_stats_histogram(st, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    for (int i = 0; i < 4; i++)
        sharp_histogram_record(sh, h, 3);   /* (1, 5] */
    sharp_histogram_record(sh, h, 20);      /* (10, 25] */
    sharp_histogram_record(sh, h, 5000000); /* above the last bound */
    sharp_otlp_flusher_t *cum = sharp_otlp_flusher_create(&(sharp_otlp_options_t){0}, 1);
    sharp_otlp_flusher_t *del =
        sharp_otlp_flusher_create(&(sharp_otlp_options_t){.histograms_as_deltas = true}, 1);
    req_t a = REQ_INIT, d = REQ_INIT;
    sharp_stats_flush(st);
    sharp_otlp_flusher_build(cum, st, 2, &a);
    sharp_otlp_flusher_build(del, st, 2, &d);
    const metric_t *m = find(&a, "cluster.a.upstream_rq_time");
    assert_non_null(m);
    assert_int_equal(m->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM);
    assert_int_equal(m->histogram->aggregation_temporality, T_CUMULATIVE);
    const Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *p = m->histogram->data_points[0];
    assert_int_equal(p->count, 6);
    assert_int_equal(p->_sum_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM);
    assert_true(p->sum == 4 * 3 + 20 + 5000000);
    assert_int_equal(p->n_explicit_bounds, 19);
    assert_true(p->explicit_bounds[0] == 0.5 && p->explicit_bounds[18] == 3600000);
    assert_int_equal(p->n_bucket_counts, 20);
    assert_int_equal(p->bucket_counts[2], 4); /* (1, 5] */
    assert_int_equal(p->bucket_counts[4], 1); /* (10, 25] */
    assert_int_equal(p->bucket_counts[19], 1);
    uint64_t total = 0;
    for (size_t i = 0; i < p->n_bucket_counts; i++)
        total += p->bucket_counts[i];
    assert_int_equal(total, 6);
    m = find(&d, "cluster.a.upstream_rq_time");
    assert_int_equal(m->histogram->aggregation_temporality, T_DELTA);
    assert_int_equal(m->histogram->data_points[0]->count, 6);

    /* the next interval: one more value */
    sharp_histogram_record(sh, h, 700); /* (500, 1000] */
    sharp_stats_flush(st);
    sharp_otlp_flusher_build(cum, st, 3, &a);
    sharp_otlp_flusher_build(del, st, 3, &d);
    assert_int_equal(find(&a, "cluster.a.upstream_rq_time")->histogram->data_points[0]->count, 7);
    p = find(&d, "cluster.a.upstream_rq_time")->histogram->data_points[0];
    assert_int_equal(p->count, 1);
    assert_int_equal(p->bucket_counts[9], 1);
    assert_int_equal(p->start_time_unix_nano, 2);
    sharp_otlp_flusher_free(cum);
    sharp_otlp_flusher_free(del);
    sharp_stats_destroy(st);
}

static void test_names_attributes_prefix_resource(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_config_t *cfg = sharp_stats_config_create(true);
    sharp_stats_config_add_fixed_tag(cfg, "mesh", "m1");
    sharp_stats_set_config(st, cfg);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t c = sharp_stats_counter(st, "cluster.backend.upstream_rq_total");
    sharp_counter_add(sh, c, 2);
    static const char *const keys[] = {"service.name", "telemetry.sdk.name"};
    static const char *const vals[] = {"edge", "custom"};
    sharp_otlp_flusher_t *ext =
        sharp_otlp_flusher_create(&(sharp_otlp_options_t){.tags_as_attributes = true,
                                                          .tag_extracted_name = true,
                                                          .prefix = "pre",
                                                          .resource_keys = keys,
                                                          .resource_values = vals,
                                                          .nresource = 2},
                                  1);
    sharp_otlp_flusher_t *full = sharp_otlp_flusher_create(
        &(sharp_otlp_options_t){.tags_as_attributes = true, .tag_extracted_name = false}, 1);
    req_t a = REQ_INIT, b = REQ_INIT;
    sharp_stats_flush(st);
    sharp_otlp_flusher_build(ext, st, 2, &a);
    sharp_otlp_flusher_build(full, st, 2, &b);
    const metric_t *m = find(&a, "pre.cluster.upstream_rq_total");
    assert_non_null(m);
    const Opentelemetry__Proto__Metrics__V1__NumberDataPoint *p = m->sum->data_points[0];
    assert_int_equal(p->n_attributes, 2);
    assert_string_equal(attr(p->attributes, p->n_attributes, "envoy.cluster_name"), "backend");
    assert_string_equal(attr(p->attributes, p->n_attributes, "mesh"), "m1");
    /* the full name, still with the tags as attributes */
    m = find(&b, "cluster.backend.upstream_rq_total");
    assert_non_null(m);
    assert_int_equal(m->sum->data_points[0]->n_attributes, 2);
    const Opentelemetry__Proto__Resource__V1__Resource *res = a.resource_metrics[0]->resource;
    assert_int_equal(res->n_attributes, 4);
    assert_string_equal(attr(res->attributes, res->n_attributes, "telemetry.sdk.name"), "custom");
    assert_string_equal(attr(res->attributes, res->n_attributes, "service.name"), "edge");
    sharp_otlp_flusher_free(ext);
    sharp_otlp_flusher_free(full);
    sharp_stats_destroy(st);
}

static void test_empty_flush_and_wire(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_counter(st, "cluster.a.unused");
    sharp_otlp_flusher_t *f = sharp_otlp_flusher_create(
        &(sharp_otlp_options_t){.tags_as_attributes = true, .tag_extracted_name = true}, 1);
    req_t r = REQ_INIT;
    sharp_stats_flush(st);
    /* nothing used: an empty request, as Envoy's */
    assert_int_equal(sharp_otlp_flusher_build(f, st, 2, &r), 0);
    assert_int_equal(r.n_resource_metrics, 0);
    sharp_stat_id_t c = sharp_stats_counter(st, "cluster.a.upstream_rq_total");
    sharp_counter_add(sharp_stats_shard(st, 1), c, 9);
    sharp_stats_flush(st);
    sharp_otlp_flusher_build(f, st, 3, &r);
    size_t len =
        opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__get_packed_size(
            &r);
    uint8_t *buf = malloc(len);
    opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__pack(&r, buf);
    req_t *u = opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__unpack(
        NULL, len, buf);
    assert_non_null(u);
    const metric_t *m = find(u, "cluster.upstream_rq_total");
    assert_non_null(m);
    assert_int_equal(m->sum->data_points[0]->as_int, 9);
    assert_int_equal(m->sum->data_points[0]->time_unix_nano, 3);
    assert_string_equal(attr(m->sum->data_points[0]->attributes,
                             m->sum->data_points[0]->n_attributes, "envoy.cluster_name"),
                        "a");
    opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__free_unpacked(
        u, NULL);
    free(buf);
    sharp_otlp_flusher_free(f);
    sharp_stats_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_names_attributes_prefix_resource),
        cmocka_unit_test(test_empty_flush_and_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

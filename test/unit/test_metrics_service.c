/* test_metrics_service.c: the metrics service sink's MetricFamily encoding
 * (metrics_service.h) from a real store: counters (cumulative and delta),
 * gauges, histograms as summaries and/or histograms of the flush interval,
 * tags as labels, and the wire round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <math.h>

#include "metrics_service.h"
#include "stats.h"
#include "stats_config.h"

typedef Io__Prometheus__Client__MetricFamily fam_t;

static const fam_t *find(const Envoy__Service__Metrics__V3__StreamMetricsMessage *m,
                         const char *name, Io__Prometheus__Client__MetricType type)
{
    for (size_t i = 0; i < m->n_envoy_metrics; i++)
        if (strcmp(m->envoy_metrics[i]->name, name) == 0 && m->envoy_metrics[i]->type == type)
            return m->envoy_metrics[i];
    return NULL;
}

static size_t count_named(const Envoy__Service__Metrics__V3__StreamMetricsMessage *m,
                          const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_envoy_metrics; i++)
        n += strcmp(m->envoy_metrics[i]->name, name) == 0;
    return n;
}

static void test_counters_cumulative_and_delta(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t c = sharp_stats_counter(st, "cluster.a.upstream_rq_total");
    sharp_stat_id_t z = sharp_stats_counter(st, "cluster.a.upstream_rq_zero");
    sharp_stats_counter(st, "cluster.a.never_used");
    sharp_counter_add(sh, c, 5);
    sharp_counter_add(sh, z, 0); /* used, value 0 */
    sharp_ms_flusher_t *cum = sharp_ms_flusher_create(&(sharp_ms_options_t){0});
    sharp_ms_flusher_t *del =
        sharp_ms_flusher_create(&(sharp_ms_options_t){.counters_as_deltas = true});
    Envoy__Service__Metrics__V3__StreamMetricsMessage
        a = ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT,
        d = ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT;
    sharp_stats_flush(st);
    sharp_ms_flusher_build(cum, st, 1234, &a);
    sharp_ms_flusher_build(del, st, 1234, &d);
    const fam_t *f =
        find(&a, "cluster.a.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_non_null(f);
    assert_true(f->has_type);
    assert_int_equal(f->n_metric, 1);
    assert_true(f->metric[0]->has_timestamp_ms);
    assert_int_equal(f->metric[0]->timestamp_ms, 1234);
    assert_int_equal(f->metric[0]->n_label, 0);
    assert_non_null(f->metric[0]->counter);
    assert_true(f->metric[0]->counter->value == 5.0);
    assert_null(f->metric[0]->gauge);
    f = find(&a, "cluster.a.upstream_rq_zero", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_non_null(f);
    assert_true(f->metric[0]->counter->has_value);
    /* only used stats, as Envoy's predicate */
    assert_int_equal(count_named(&a, "cluster.a.never_used"), 0);
    f = find(&d, "cluster.a.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_true(f->metric[0]->counter->value == 5.0); /* the first delta is since start */

    sharp_counter_add(sh, c, 3);
    sharp_stats_flush(st);
    sharp_ms_flusher_build(cum, st, 2000, &a);
    sharp_ms_flusher_build(del, st, 2000, &d);
    f = find(&a, "cluster.a.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_true(f->metric[0]->counter->value == 8.0);
    assert_int_equal(f->metric[0]->timestamp_ms, 2000);
    f = find(&d, "cluster.a.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_true(f->metric[0]->counter->value == 3.0);
    /* nothing new: a used counter is still sent, with a delta of 0 */
    sharp_stats_flush(st);
    sharp_ms_flusher_build(del, st, 3000, &d);
    f = find(&d, "cluster.a.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_non_null(f);
    assert_true(f->metric[0]->counter->value == 0.0);
    sharp_ms_flusher_free(cum);
    sharp_ms_flusher_free(del);
    sharp_stats_destroy(st);
}

static void test_gauges(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t g = sharp_stats_gauge(st, "server.live");
    sharp_stat_id_t a = sharp_stats_gauge(st, "cluster.a.upstream_cx_active");
    sharp_stats_gauge(st, "cluster.a.unused_gauge");
    sharp_gauge_set(st, g, 1);
    sharp_gauge_add(sh, a, 4);
    sharp_gauge_add(sh, a, -1);
    sharp_ms_flusher_t *fl = sharp_ms_flusher_create(&(sharp_ms_options_t){0});
    Envoy__Service__Metrics__V3__StreamMetricsMessage m =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT;
    sharp_stats_flush(st);
    sharp_ms_flusher_build(fl, st, 1, &m);
    const fam_t *f = find(&m, "server.live", IO__PROMETHEUS__CLIENT__METRIC_TYPE__GAUGE);
    assert_non_null(f);
    assert_non_null(f->metric[0]->gauge);
    assert_true(f->metric[0]->gauge->value == 1.0);
    f = find(&m, "cluster.a.upstream_cx_active", IO__PROMETHEUS__CLIENT__METRIC_TYPE__GAUGE);
    assert_true(f->metric[0]->gauge->value == 3.0);
    assert_int_equal(count_named(&m, "cluster.a.unused_gauge"), 0);
    /* Envoy's order: every counter, then every gauge, then histograms */
    int last = -1;
    for (size_t i = 0; i < m.n_envoy_metrics; i++) {
        int t = m.envoy_metrics[i]->type == IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER ? 0
                : m.envoy_metrics[i]->type == IO__PROMETHEUS__CLIENT__METRIC_TYPE__GAUGE ? 1
                                                                                         : 2;
        assert_true(t >= last);
        last = t;
    }
    sharp_ms_flusher_free(fl);
    sharp_stats_destroy(st);
}

static void test_histograms(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t h =
        sharp_stats_histogram(st, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_stats_histogram(st, "cluster.a.unused_time", SHARP_HIST_MILLISECONDS);
    for (int i = 0; i < 10; i++)
        sharp_histogram_record(sh, h, 3); /* <= 5 */
    for (int i = 0; i < 10; i++)
        sharp_histogram_record(sh, h, 20); /* <= 25 */
    sharp_ms_flusher_t *both = sharp_ms_flusher_create(&(sharp_ms_options_t){0});
    sharp_ms_flusher_t *sum =
        sharp_ms_flusher_create(&(sharp_ms_options_t){.histogram_mode = SHARP_MS_SUMMARY});
    sharp_ms_flusher_t *hist =
        sharp_ms_flusher_create(&(sharp_ms_options_t){.histogram_mode = SHARP_MS_HISTOGRAM});
    Envoy__Service__Metrics__V3__StreamMetricsMessage m =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT;
    sharp_stats_flush(st);
    sharp_ms_flusher_build(both, st, 7, &m);
    assert_int_equal(count_named(&m, "cluster.a.upstream_rq_time"), 2);
    assert_int_equal(count_named(&m, "cluster.a.unused_time"), 0);
    const fam_t *f =
        find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__SUMMARY);
    assert_non_null(f);
    const Io__Prometheus__Client__Summary *s = f->metric[0]->summary;
    assert_non_null(s);
    assert_int_equal(s->sample_count, 20);
    assert_true(s->sample_sum == 230.0);
    assert_int_equal(s->n_quantile, 10);
    assert_true(s->quantile[0]->quantile == 0.0);
    assert_true(s->quantile[2]->quantile == 0.5);
    assert_true(s->quantile[7]->quantile == 0.995);
    assert_true(s->quantile[9]->quantile == 1.0);
    assert_true(s->quantile[0]->value >= 3.0 && s->quantile[0]->value < 4.0);
    assert_true(s->quantile[9]->value >= 20.0 && s->quantile[9]->value < 21.0);
    f = find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__HISTOGRAM);
    assert_non_null(f);
    const Io__Prometheus__Client__Histogram *hg = f->metric[0]->histogram;
    assert_non_null(hg);
    assert_int_equal(hg->sample_count, 20);
    assert_true(hg->sample_sum == 230.0);
    /* Envoy's default bounds, cumulative counts, no +Inf bucket */
    assert_int_equal(hg->n_bucket, 19);
    assert_true(hg->bucket[0]->upper_bound == 0.5);
    assert_int_equal(hg->bucket[0]->cumulative_count, 0);
    assert_true(hg->bucket[2]->upper_bound == 5);
    assert_int_equal(hg->bucket[2]->cumulative_count, 10);
    assert_true(hg->bucket[3]->upper_bound == 10);
    assert_int_equal(hg->bucket[3]->cumulative_count, 10);
    assert_true(hg->bucket[4]->upper_bound == 25);
    assert_int_equal(hg->bucket[4]->cumulative_count, 20);
    assert_true(hg->bucket[18]->upper_bound == 3600000);
    assert_int_equal(hg->bucket[18]->cumulative_count, 20);

    sharp_ms_flusher_build(sum, st, 7, &m);
    assert_int_equal(count_named(&m, "cluster.a.upstream_rq_time"), 1);
    assert_non_null(
        find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__SUMMARY));
    sharp_ms_flusher_build(hist, st, 7, &m);
    assert_int_equal(count_named(&m, "cluster.a.upstream_rq_time"), 1);
    assert_non_null(
        find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__HISTOGRAM));

    /* the next interval: one value; then an empty one, still sent (the
     * histogram is used) with NaN quantiles, as Envoy's interval stats */
    sharp_histogram_record(sh, h, 100);
    sharp_stats_flush(st);
    sharp_ms_flusher_build(both, st, 8, &m);
    f = find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__SUMMARY);
    assert_int_equal(f->metric[0]->summary->sample_count, 1);
    assert_true(f->metric[0]->summary->sample_sum == 100.0);
    sharp_stats_flush(st);
    sharp_ms_flusher_build(both, st, 9, &m);
    f = find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__SUMMARY);
    assert_non_null(f);
    assert_int_equal(f->metric[0]->summary->sample_count, 0);
    assert_true(isnan(f->metric[0]->summary->quantile[5]->value));
    f = find(&m, "cluster.a.upstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__HISTOGRAM);
    assert_int_equal(f->metric[0]->histogram->bucket[18]->cumulative_count, 0);
    sharp_ms_flusher_free(both);
    sharp_ms_flusher_free(sum);
    sharp_ms_flusher_free(hist);
    sharp_stats_destroy(st);
}

static void test_tags_as_labels(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_config_t *cfg = sharp_stats_config_create(true);
    sharp_stats_config_add_fixed_tag(cfg, "mesh", "m1");
    sharp_stats_set_config(st, cfg);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t c = sharp_stats_counter(st, "cluster.backend.upstream_rq_total");
    sharp_counter_add(sh, c, 2);
    sharp_ms_flusher_t *lab =
        sharp_ms_flusher_create(&(sharp_ms_options_t){.tags_as_labels = true});
    sharp_ms_flusher_t *plain = sharp_ms_flusher_create(&(sharp_ms_options_t){0});
    Envoy__Service__Metrics__V3__StreamMetricsMessage m =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT;
    sharp_stats_flush(st);
    sharp_ms_flusher_build(plain, st, 1, &m);
    const fam_t *f =
        find(&m, "cluster.backend.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_non_null(f);
    assert_int_equal(f->metric[0]->n_label, 0);
    sharp_ms_flusher_build(lab, st, 1, &m);
    f = find(&m, "cluster.upstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_non_null(f);
    assert_true(f->metric[0]->counter->value == 2.0);
    size_t nl = f->metric[0]->n_label;
    assert_true(nl == 2);
    bool cluster = false, mesh = false;
    for (size_t i = 0; i < nl; i++) {
        const Io__Prometheus__Client__LabelPair *l = f->metric[0]->label[i];
        if (strcmp(l->name, "envoy.cluster_name") == 0 && strcmp(l->value, "backend") == 0)
            cluster = true;
        if (strcmp(l->name, "mesh") == 0 && strcmp(l->value, "m1") == 0) mesh = true;
    }
    assert_true(cluster);
    assert_true(mesh);
    sharp_ms_flusher_free(lab);
    sharp_ms_flusher_free(plain);
    sharp_stats_destroy(st);
}

/* What a collector decodes is what was built. */
static void test_wire_round_trip(void **state)
{
    (void)state;
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_counter_add(sh, sharp_stats_counter(st, "http.ingress.downstream_rq_total"), 9);
    sharp_histogram_record(
        sh, sharp_stats_histogram(st, "http.ingress.downstream_rq_time", SHARP_HIST_MILLISECONDS),
        4);
    sharp_ms_flusher_t *fl = sharp_ms_flusher_create(&(sharp_ms_options_t){.tags_as_labels = true});
    Envoy__Service__Metrics__V3__StreamMetricsMessage m =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = "n1";
    node.cluster = "c1";
    Envoy__Service__Metrics__V3__StreamMetricsMessage__Identifier id =
        ENVOY__SERVICE__METRICS__V3__STREAM_METRICS_MESSAGE__IDENTIFIER__INIT;
    id.node = &node;
    m.identifier = &id;
    sharp_stats_flush(st);
    size_t nf = sharp_ms_flusher_build(fl, st, 42, &m);
    assert_int_equal(nf, 3);
    size_t len = protobuf_c_message_get_packed_size(&m.base);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(&m.base, buf);
    Envoy__Service__Metrics__V3__StreamMetricsMessage *u =
        envoy__service__metrics__v3__stream_metrics_message__unpack(NULL, len, buf);
    assert_non_null(u);
    assert_string_equal(u->identifier->node->id, "n1");
    assert_int_equal(u->n_envoy_metrics, 3);
    const fam_t *f =
        find(u, "http.downstream_rq_total", IO__PROMETHEUS__CLIENT__METRIC_TYPE__COUNTER);
    assert_non_null(f);
    assert_true(f->metric[0]->counter->value == 9.0);
    assert_int_equal(f->metric[0]->timestamp_ms, 42);
    assert_string_equal(f->metric[0]->label[0]->name, "envoy.http_conn_manager_prefix");
    assert_string_equal(f->metric[0]->label[0]->value, "ingress");
    f = find(u, "http.downstream_rq_time", IO__PROMETHEUS__CLIENT__METRIC_TYPE__HISTOGRAM);
    assert_non_null(f);
    assert_int_equal(f->metric[0]->histogram->sample_count, 1);
    envoy__service__metrics__v3__stream_metrics_message__free_unpacked(u, NULL);
    free(buf);
    sharp_ms_flusher_free(fl);
    sharp_stats_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_cumulative_and_delta),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_tags_as_labels),
        cmocka_unit_test(test_wire_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_stats.c: the stat store (registration, shards, gauges, histograms),
 * Envoy's tag extraction and the three admin renderers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

#include "log.h"
#include "stats.h"
#include "stats_config.h"

static char *render(int (*fn)(sharp_stats_t *, const char *, bool, sharp_sbuf_t *, char *, size_t),
                    sharp_stats_t *s, const char *filter, bool used_only)
{
    sharp_sbuf_t b = {0};
    char err[256] = "";
    assert_int_equal(fn(s, filter, used_only, &b, err, sizeof err), 0);
    sharp_sbuf_cstr(&b);
    return b.data;
}

#define contains(hay, needle)                                                                      \
    do {                                                                                           \
        if (!strstr((hay), (needle))) fail_msg("missing:\n%s\n--- in ---\n%s", (needle), (hay));   \
    } while (0)
#define lacks(hay, needle)                                                                         \
    do {                                                                                           \
        if (strstr((hay), (needle))) fail_msg("unexpected:\n%s\n--- in ---\n%s", (needle), (hay)); \
    } while (0)

/* ---- registration ------------------------------------------------------ */

static void test_registration(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(3);
    assert_int_equal(sharp_stats_nshards(s), 3);
    sharp_stat_id_t a = sharp_stats_counter(s, "cluster.a.upstream_rq_total");
    assert_int_equal(sharp_stats_counter(s, "cluster.a.upstream_rq_total"), a);
    assert_int_equal(sharp_stats_counterf(s, "cluster.%s.upstream_rq_total", "a"), a);
    sharp_stat_id_t g = sharp_stats_gauge(s, "cluster.a.upstream_rq_active");
    assert_int_not_equal(g, a);
    assert_int_equal(sharp_stats_gaugef(s, "cluster.%s.upstream_rq_%s", "a", "active"), g);
    sharp_stat_id_t h =
        sharp_stats_histogram(s, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    assert_int_equal(
        sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "cluster.%s.upstream_rq_time", "a"), h);

    /* A long name goes through the heap path of the printf helper. */
    char longname[600];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    sharp_stat_id_t l = sharp_stats_counterf(s, "%s", longname);
    assert_int_equal(sharp_stats_counter(s, longname), l);

    /* Kind conflicts return harmless placeholders of the requested kind (and
     * log an error, muted here). */
    sharp_log_set_all(SHARP_LOG_OFF);
    sharp_stat_id_t bad_g = sharp_stats_gauge(s, "cluster.a.upstream_rq_total");
    sharp_stat_id_t bad_h =
        sharp_stats_histogram(s, "cluster.a.upstream_rq_total", SHARP_HIST_UNSPECIFIED);
    sharp_stat_id_t bad_c = sharp_stats_counter(s, "cluster.a.upstream_rq_time");
    sharp_log_set_all(SHARP_LOG_INFO);
    assert_int_not_equal(bad_g, a);
    assert_int_not_equal(bad_h, a);
    assert_int_not_equal(bad_c, h);
    sharp_stats_shard_t *sh = sharp_stats_shard(s, 1);
    sharp_gauge_add(sh, bad_g, 5);
    sharp_gauge_set(s, bad_g, 7);
    sharp_histogram_record(sh, bad_h, 12);
    sharp_counter_add(sh, bad_c, 3);
    sharp_histogram_record(sh, 0, 12); /* a zero-initialized id */
    assert_null(sharp_stats_name(s, bad_g, NULL));
    assert_int_equal(sharp_stats_counter_value(s, a), 0);
    assert_int_equal(sharp_stats_histogram_count(s, h), 0);

    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    assert_int_equal(sharp_stats_find(s, "cluster.a.upstream_rq_time", &id, &kind), 0);
    assert_int_equal(id, h);
    assert_int_equal(kind, SHARP_STAT_HISTOGRAM);
    assert_int_equal(sharp_stats_find(s, "cluster.a.upstream_rq_active", &id, &kind), 0);
    assert_int_equal(id, g);
    assert_int_equal(kind, SHARP_STAT_GAUGE);
    assert_int_equal(sharp_stats_find(s, "nope", &id, &kind), -1);
    assert_string_equal(sharp_stats_name(s, a, &kind), "cluster.a.upstream_rq_total");
    assert_int_equal(kind, SHARP_STAT_COUNTER);

    /* Placeholders never show up in the views. */
    char *t = render(sharp_stats_render_text, s, NULL, false);
    assert_int_equal(strlen(t), strlen("cluster.a.upstream_rq_active: 0\n"
                                       "cluster.a.upstream_rq_total: 0\n"
                                       "cluster.a.upstream_rq_time: No recorded values\n") +
                                    strlen(longname) + 4);
    free(t);
    assert_null(sharp_stats_shard(s, 3));
    sharp_stats_destroy(s);
}

/* Ids stay valid and values survive when registration crosses page
 * boundaries. */
static void test_many_stats(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(2);
    enum { N = 5000 };
    static sharp_stat_id_t ids[N];
    for (int i = 0; i < N; i++) {
        ids[i] = sharp_stats_counterf(s, "c.%d", i);
        sharp_counter_add(sharp_stats_shard(s, i % 2), ids[i], (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(sharp_stats_counterf(s, "c.%d", i), ids[i]);
        assert_int_equal(sharp_stats_counter_value(s, ids[i]), (uint64_t)i);
    }
    sharp_stats_destroy(s);
}

/* ---- values ------------------------------------------------------------ */

static void test_counters_and_gauges(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(4);
    sharp_stat_id_t c = sharp_stats_counter(s, "c");
    sharp_stat_id_t g = sharp_stats_gauge(s, "g");
    sharp_stat_id_t set = sharp_stats_gauge(s, "set");
    for (unsigned i = 0; i < 4; i++) {
        sharp_stats_shard_t *sh = sharp_stats_shard(s, i);
        sharp_counter_add(sh, c, i + 1);
        sharp_counter_inc(sh, c);
        sharp_gauge_add(sh, g, 10);
    }
    assert_int_equal(sharp_stats_counter_value(s, c), 1 + 2 + 3 + 4 + 4);
    /* A gauge may go negative on one shard when another shard holds the
     * matching increments; only the sum means anything. */
    sharp_gauge_add(sharp_stats_shard(s, 0), g, -25);
    assert_int_equal(sharp_stats_gauge_value(s, g), 15);
    sharp_gauge_add(sharp_stats_shard(s, 2), g, -15);
    assert_int_equal(sharp_stats_gauge_value(s, g), 0);
    assert_true(sharp_stats_used(s, g));

    assert_false(sharp_stats_used(s, set));
    sharp_gauge_set(s, set, 42);
    assert_int_equal(sharp_stats_gauge_value(s, set), 42);
    sharp_gauge_set(s, set, -3);
    assert_int_equal(sharp_stats_gauge_value(s, set), -3);
    sharp_gauge_add(sharp_stats_shard(s, 1), set, 5);
    assert_int_equal(sharp_stats_gauge_value(s, set), 2);
    assert_true(sharp_stats_used(s, set));

    /* Envoy counts an add of zero as a use. */
    sharp_stat_id_t z = sharp_stats_counter(s, "zero");
    assert_false(sharp_stats_used(s, z));
    sharp_counter_add(sharp_stats_shard(s, 3), z, 0);
    assert_true(sharp_stats_used(s, z));
    assert_int_equal(sharp_stats_counter_value(s, z), 0);

    /* Reads of the wrong kind are harmless. */
    sharp_stat_id_t h = sharp_stats_histogram(s, "h", SHARP_HIST_UNSPECIFIED);
    assert_int_equal(sharp_stats_counter_value(s, h), 0);
    assert_int_equal(sharp_stats_gauge_value(s, c), 0);
    assert_true(isnan(sharp_stats_histogram_quantile(s, c, 0.5)));
    assert_int_equal(sharp_stats_counter_value(s, 999999), 0);
    sharp_stats_destroy(s);
}

/* ---- histograms -------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t xorshift(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

/* The exact q-quantile: the value of rank ceil(q*n) (the smallest for q=0). */
static uint64_t exact_quantile(const uint64_t *sorted, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);
    return sorted[rank ? rank - 1 : 0];
}

static void check_quantiles(sharp_stats_t *s, sharp_stat_id_t h, uint64_t *vals, size_t n)
{
    static const double qs[] = {0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};
    qsort(vals, n, sizeof *vals, cmp_u64);
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(qs); i++) {
        double want = (double)exact_quantile(vals, n, qs[i]);
        double got = sharp_stats_histogram_quantile(s, h, qs[i]);
        double tol = want < 64 ? 1e-9 : want / 32.0;
        if (fabs(got - want) > tol)
            fail_msg("q=%g: got %.17g want %.17g (tolerance %g)", qs[i], got, want, tol);
    }
}

static void test_histogram_quantiles(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint64_t *vals = malloc(N * sizeof *vals);
    sharp_stats_t *s = sharp_stats_create(5);
    sharp_stat_id_t h = sharp_stats_histogram(s, "lognormal", SHARP_HIST_MILLISECONDS);
    assert_true(isnan(sharp_stats_histogram_quantile(s, h, 0.5)));

    /* A wide, skewed distribution: 2^(uniform in [0, 30)) scaled, spread
     * over all shards. */
    uint64_t st = 88172645463325252ull;
    for (size_t i = 0; i < N; i++) {
        double e = (double)(xorshift(&st) % 30000) / 1000.0;
        vals[i] = (uint64_t)pow(2.0, e) + xorshift(&st) % 7;
        sharp_histogram_record(sharp_stats_shard(s, (unsigned)(i % 5)), h, vals[i]);
    }
    assert_int_equal(sharp_stats_histogram_count(s, h), N);
    check_quantiles(s, h, vals, N);

    /* Small latencies (0..63 ms) are exact. */
    sharp_stat_id_t small = sharp_stats_histogram(s, "small", SHARP_HIST_MILLISECONDS);
    for (size_t i = 0; i < 1000; i++) {
        vals[i] = xorshift(&st) % 64;
        sharp_histogram_record(sharp_stats_shard(s, (unsigned)(i % 3)), small, vals[i]);
    }
    check_quantiles(s, small, vals, 1000);

    /* The extremes of the range. */
    sharp_stat_id_t big = sharp_stats_histogram(s, "big", SHARP_HIST_UNSPECIFIED);
    sharp_histogram_record(sharp_stats_shard(s, 0), big, 0);
    sharp_histogram_record(sharp_stats_shard(s, 0), big, UINT64_MAX);
    assert_true(sharp_stats_histogram_quantile(s, big, 0) == 0);
    assert_true(sharp_stats_histogram_quantile(s, big, 1) >= 1.8e19);

    /* Merged sums and Prometheus-style counts. */
    sharp_hist_merged_t *m = calloc(1, sizeof *m);
    assert_int_equal(sharp_stats_histogram_merge(s, small, m, NULL), 0);
    uint64_t sum = 0, le10 = 0;
    for (size_t i = 0; i < 1000; i++) {
        sum += vals[i];
        le10 += vals[i] <= 10;
    }
    assert_int_equal(m->count, 1000);
    assert_int_equal(m->sum, sum);
    assert_int_equal(sharp_hist_merged_count_le(m, 10), le10);
    assert_int_equal(sharp_hist_merged_count_le(m, 10.5), le10);
    assert_int_equal(sharp_hist_merged_count_le(m, 0.5), sharp_hist_merged_count_le(m, 0));
    assert_int_equal(sharp_hist_merged_count_le(m, 1e30), 1000);
    assert_int_equal(sharp_hist_merged_count_le(m, -1), 0);
    assert_int_equal(sharp_stats_histogram_merge(s, sharp_stats_counter(s, "c"), m, NULL), -1);
    free(m);
    free(vals);
    sharp_stats_destroy(s);
}

/* ---- text -------------------------------------------------------------- */

static void test_text_format(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(2);
    sharp_stats_shard_t *w = sharp_stats_shard(s, 1);
    sharp_stat_id_t total = sharp_stats_counter(s, "cluster.local_service.upstream_rq_total");
    sharp_stat_id_t xx = sharp_stats_counter(s, "cluster.local_service.upstream_rq_2xx");
    sharp_stat_id_t active = sharp_stats_gauge(s, "cluster.local_service.upstream_rq_active");
    sharp_stats_gauge(s, "server.live");
    sharp_stat_id_t t =
        sharp_stats_histogram(s, "cluster.local_service.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_stats_histogram(s, "cluster.local_service.upstream_cx_length_ms",
                          SHARP_HIST_MILLISECONDS);
    sharp_stat_id_t wide =
        sharp_stats_histogram(s, "http.ingress_http.downstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_counter_add(w, total, 7);
    sharp_counter_add(w, xx, 6);
    sharp_gauge_add(w, active, 1);
    sharp_histogram_record(w, t, 1);
    sharp_histogram_record(sharp_stats_shard(s, 0), t, 3);
    sharp_histogram_record(w, wide, 100);

    char *out = render(sharp_stats_render_text, s, NULL, false);
    assert_string_equal(
        out,
        "cluster.local_service.upstream_rq_2xx: 6\n"
        "cluster.local_service.upstream_rq_active: 1\n"
        "cluster.local_service.upstream_rq_total: 7\n"
        "server.live: 0\n"
        "cluster.local_service.upstream_cx_length_ms: No recorded values\n"
        "cluster.local_service.upstream_rq_time: P0(1,1) P25(1,1) P50(1,1) P75(3,3) P90(3,3) "
        "P95(3,3) P99(3,3) P99.5(3,3) P99.9(3,3) P100(3,3)\n"
        "http.ingress_http.downstream_rq_time: P0(100,100) P25(100.25,100.25) P50(100.5,100.5) "
        "P75(100.75,100.75) P90(100.9,100.9) P95(100.95,100.95) P99(100.99,100.99) "
        "P99.5(100.995,100.995) P99.9(100.999,100.999) P100(101,101)\n");
    free(out);

    /* used_only drops never-written stats, whatever their kind. */
    out = render(sharp_stats_render_text, s, NULL, true);
    lacks(out, "server.live");
    lacks(out, "upstream_cx_length_ms");
    contains(out, "cluster.local_service.upstream_rq_active: 1\n");
    contains(out, "cluster.local_service.upstream_rq_time: P0(1,1)");
    free(out);

    /* After flushes, the first column holds the last closed interval. */
    sharp_stats_flush(s);
    sharp_histogram_record(w, t, 5);
    sharp_stats_flush(s);
    out = render(sharp_stats_render_text, s, "upstream_rq_time", false);
    assert_string_equal(out, "cluster.local_service.upstream_rq_time: P0(5,1) P25(5,1) P50(5,3) "
                             "P75(5,5) P90(5,5) P95(5,5) P99(5,5) P99.5(5,5) P99.9(5,5) "
                             "P100(5,5)\n");
    free(out);
    sharp_stats_flush(s);
    out = render(sharp_stats_render_text, s, "upstream_rq_time", false);
    contains(out, "P0(nan,1) P25(nan,1) P50(nan,3)");
    free(out);
    sharp_stats_destroy(s);
}

/* ---- filters ----------------------------------------------------------- */

static void test_filter(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(1);
    sharp_stats_counter(s, "cluster.a.upstream_rq_total");
    sharp_stats_counter(s, "cluster.b.upstream_rq_total");
    sharp_stats_gauge(s, "server.live");
    char *out = render(sharp_stats_render_text, s, "cluster\\.a\\.", false);
    assert_string_equal(out, "cluster.a.upstream_rq_total: 0\n");
    free(out);
    out = render(sharp_stats_render_text, s, "rq_(total|active)$", false);
    assert_string_equal(out, "cluster.a.upstream_rq_total: 0\ncluster.b.upstream_rq_total: 0\n");
    free(out);
    out = render(sharp_stats_render_text, s, "^live", false);
    assert_string_equal(out, "");
    free(out);
    out = render(sharp_stats_render_json, s, "live", false);
    assert_string_equal(out, "{\"stats\":[{\"name\":\"server.live\",\"value\":0}]}");
    free(out);
    /* a filter naming one stat exactly is answered from the name table:
     * the same output as the regex would give */
    out = render(sharp_stats_render_text, s, "^cluster\\.b\\.upstream_rq_total$", false);
    assert_string_equal(out, "cluster.b.upstream_rq_total: 0\n");
    free(out);
    out = render(sharp_stats_render_text, s, "^cluster\\.b\\.upstream_rq_tota$", false);
    assert_string_equal(out, "");
    free(out);
    out = render(sharp_stats_render_text, s, "^cluster\\.b\\.upstream_rq_total$", true);
    assert_string_equal(out, "");
    free(out);
    /* an unescaped dot, a class: regexes, matching both clusters */
    out = render(sharp_stats_render_text, s, "^cluster.\\w.upstream_rq_total$", false);
    assert_string_equal(out, "cluster.a.upstream_rq_total: 0\ncluster.b.upstream_rq_total: 0\n");
    free(out);
    out = render(sharp_stats_render_prometheus, s, "b\\.upstream", false);
    assert_string_equal(out, "# TYPE envoy_cluster_upstream_rq_total counter\n"
                             "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"b\"} 0\n\n");
    free(out);

    int (*fns[])(sharp_stats_t *, const char *, bool, sharp_sbuf_t *, char *, size_t) = {
        sharp_stats_render_text, sharp_stats_render_json, sharp_stats_render_prometheus};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(fns); i++) {
        sharp_sbuf_t b = {0};
        char err[256] = "";
        assert_int_equal(fns[i](s, "cluster(", false, &b, err, sizeof err), -1);
        contains(err, "cluster(");
        assert_int_equal(b.len, 0);
        assert_int_equal(fns[i](s, "[z-a]", false, &b, NULL, 0), -1);
        sharp_sbuf_free(&b);
    }
    sharp_stats_destroy(s);
}

/* ---- JSON -------------------------------------------------------------- */

/* A strict recursive-descent JSON checker, enough to know the output parses. */
static const char *json_value(const char *p);

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"') return NULL;
    while (*p && *p != '"') {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') p++;
        if (*p) p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *json_value(const char *p)
{
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = json_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = json_string(json_ws(p));
                if (!p) return NULL;
                p = json_ws(p);
                if (*p++ != ':') return NULL;
            }
            p = json_value(p);
            if (!p) return NULL;
            p = json_ws(p);
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "null", 4) || !strncmp(p, "true", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    char *end;
    strtod(p, &end);
    return end == p ? NULL : end;
}

static void assert_json(const char *s)
{
    const char *end = json_value(s);
    if (!end || *json_ws(end)) fail_msg("not JSON: %s", s);
}

static void test_json_format(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(2);
    sharp_stats_shard_t *w = sharp_stats_shard(s, 1);
    sharp_counter_add(w, sharp_stats_counter(s, "cluster.a.upstream_rq_total"), 3);
    sharp_gauge_set(s, sharp_stats_gauge(s, "server.live"), 1);
    sharp_stats_counter(s, "weird.\"quoted\"\\name");
    sharp_stat_id_t h =
        sharp_stats_histogram(s, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_stats_histogram(s, "cluster.a.upstream_cx_length_ms", SHARP_HIST_MILLISECONDS);
    sharp_histogram_record(w, h, 10);

    char *out = render(sharp_stats_render_json, s, NULL, false);
    assert_json(out);
    contains(out, "{\"stats\":[{\"name\":\"cluster.a.upstream_rq_total\",\"value\":3},"
                  "{\"name\":\"server.live\",\"value\":1},"
                  "{\"name\":\"weird.\\\"quoted\\\"\\\\name\",\"value\":0},"
                  "{\"histograms\":{\"supported_quantiles\":[0,25,50,75,90,95,99,99.5,99.9,100],"
                  "\"computed_quantiles\":[{\"name\":\"cluster.a.upstream_cx_length_ms\","
                  "\"values\":[{\"cumulative\":null,\"interval\":null},");
    contains(out, "{\"name\":\"cluster.a.upstream_rq_time\",\"values\":[{\"cumulative\":10,"
                  "\"interval\":10},");
    contains(out, "{\"cumulative\":10,\"interval\":10}]}]}}]}");
    free(out);

    /* used_only drops the unrecorded histogram; no histogram -> no element. */
    out = render(sharp_stats_render_json, s, NULL, true);
    assert_json(out);
    lacks(out, "upstream_cx_length_ms");
    free(out);
    out = render(sharp_stats_render_json, s, "server", false);
    assert_string_equal(out, "{\"stats\":[{\"name\":\"server.live\",\"value\":1}]}");
    free(out);
    out = render(sharp_stats_render_json, s, "rq_time", false);
    assert_json(out);
    contains(out, "{\"stats\":[{\"histograms\":");
    free(out);
    out = render(sharp_stats_render_json, s, "nothing", false);
    assert_string_equal(out, "{\"stats\":[]}");
    free(out);
    sharp_stats_destroy(s);
}

/* ---- tag extraction ----------------------------------------------------- */

typedef struct {
    const char *name, *family, *tags; /* tags as "k=v,k=v" */
} tag_case_t;

static void test_tag_extraction(void **state)
{
    (void)state;
    static const tag_case_t cases[] = {
        {"cluster.local_service.upstream_rq_2xx", "cluster.upstream_rq_xx",
         "envoy.response_code_class=2,envoy.cluster_name=local_service"},
        {"cluster.local_service.upstream_rq_503", "cluster.upstream_rq",
         "envoy.response_code=503,envoy.cluster_name=local_service"},
        {"cluster.local_service.upstream_rq_total", "cluster.upstream_rq_total",
         "envoy.cluster_name=local_service"},
        {"http.ingress_http.downstream_rq_total", "http.downstream_rq_total",
         "envoy.http_conn_manager_prefix=ingress_http"},
        {"http.ingress_http.downstream_rq_5xx", "http.downstream_rq_xx",
         "envoy.response_code_class=5,envoy.http_conn_manager_prefix=ingress_http"},
        {"listener.0.0.0.0_10000.downstream_cx_total", "listener.downstream_cx_total",
         "envoy.listener_address=0.0.0.0_10000"},
        {"listener.[__1]_8080.downstream_cx_active", "listener.downstream_cx_active",
         "envoy.listener_address=[__1]_8080"},
        {"listener.0.0.0.0_10000.http.ingress_http.downstream_rq_2xx",
         "listener.http.downstream_rq_xx",
         "envoy.response_code_class=2,envoy.http_conn_manager_prefix=ingress_http,"
         "envoy.listener_address=0.0.0.0_10000"},
        {"listener.admin.downstream_cx_total", "listener.admin.downstream_cx_total", ""},
        {"listener.my_listener.downstream_cx_total", "listener.downstream_cx_total",
         "envoy.listener_address=my_listener"},
        {"listener_manager.worker_3.dispatcher.loop_duration_us",
         "listener_manager.worker_dispatcher.loop_duration_us", "envoy.worker_id=3"},
        {"listener.0.0.0.0_80.worker_1.downstream_cx_active",
         "listener.worker_downstream_cx_active",
         "envoy.worker_id=1,envoy.listener_address=0.0.0.0_80"},
        {"server.live", "server.live", ""},
        {"proxy_proto.not_found_disallowed", "proxy_proto.not_found_disallowed", ""},
        {"proxy_proto.edge.not_found_disallowed", "proxy_proto.not_found_disallowed",
         "envoy.proxy_protocol_prefix=edge"},
        {"proxy_proto.versions.v2.error", "proxy_proto.error", "envoy.proxy_protocol_version=2"},
        {"proxy_proto.edge.versions.v1.found", "proxy_proto.found",
         "envoy.proxy_protocol_prefix=edge,envoy.proxy_protocol_version=1"},
        {"http.ingress_http.adaptive_concurrency.gradient_controller.rq_blocked",
         "http.adaptive_concurrency.gradient_controller.rq_blocked",
         "envoy.http_conn_manager_prefix=ingress_http"},
        {"http.ingress_http.rds.local.route.config_reload", "http.rds.config_reload",
         "envoy.rds_route_config=local.route,envoy.http_conn_manager_prefix=ingress_http"},
        {"http.ingress_http.user_agent.ios.downstream_cx_total",
         "http.user_agent.downstream_cx_total",
         "envoy.http_user_agent=ios,envoy.http_conn_manager_prefix=ingress_http"},
        {"vhost.vh1.vcluster.other.upstream_rq_retry", "vhost.vcluster.upstream_rq_retry",
         "envoy.virtual_cluster=other,envoy.virtual_host=vh1"},
        {"cluster.c1.ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256", "cluster.ssl.ciphers",
         "cipher_suite=ECDHE-RSA-AES128-GCM-SHA256,envoy.cluster_name=c1"},
        {"listener.0.0.0.0_443.ssl.versions.TLSv1.3", "listener.ssl.versions",
         "envoy.ssl_version=TLSv1.3,envoy.listener_address=0.0.0.0_443"},
        {"tcp.ingress_tcp.downstream_cx_total", "tcp.downstream_cx_total",
         "envoy.tcp_prefix=ingress_tcp"},
        {"cluster.c1.grpc.svc.method.success", "cluster.grpc.success",
         "envoy.grpc_bridge_method=method,envoy.grpc_bridge_service=svc,envoy.cluster_name=c1"},
        {"cluster.only", "cluster.only", ""},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(cases); i++) {
        sharp_sbuf_t fam = {0}, got = {0};
        sharp_stat_tag_t tags[8];
        size_t n = sharp_stats_extract_tags(cases[i].name, &fam, tags, 8);
        for (size_t k = 0; k < n; k++)
            sharp_sbuf_printf(&got, "%s%s=%.*s", k ? "," : "", tags[k].tag, (int)tags[k].len,
                              tags[k].value);
        sharp_sbuf_cstr(&got);
        sharp_sbuf_cstr(&fam);
        if (strcmp(fam.data, cases[i].family) != 0 || strcmp(got.data, cases[i].tags) != 0)
            fail_msg("%s: got %s {%s}, want %s {%s}", cases[i].name, fam.data, got.data,
                     cases[i].family, cases[i].tags);
        sharp_sbuf_free(&fam);
        sharp_sbuf_free(&got);
    }
}

/* Tags of `name` with config `c` as "family {k=v,k=v}". */
static char *tagged(const sharp_stats_config_t *c, const char *name)
{
    sharp_sbuf_t fam = {0}, got = {0};
    sharp_stat_tag_t tags[16];
    size_t n = sharp_stats_config_extract_tags(c, name, &fam, tags, 16);
    sharp_sbuf_printf(&got, "%s {", sharp_sbuf_cstr(&fam));
    for (size_t k = 0; k < n; k++)
        sharp_sbuf_printf(&got, "%s%s=%.*s", k ? "," : "", tags[k].tag, (int)tags[k].len,
                          tags[k].value);
    sharp_sbuf_puts(&got, "}");
    sharp_sbuf_free(&fam);
    sharp_sbuf_cstr(&got);
    return got.data;
}

#define assert_tagged(c, name, want)                                                               \
    do {                                                                                           \
        char *got_ = tagged((c), (name));                                                          \
        if (strcmp(got_, (want)) != 0) fail_msg("%s: got %s, want %s", (name), got_, (want));      \
        free(got_);                                                                                \
    } while (0)

static void add_regex(sharp_stats_config_t *c, const char *tag, const char *re)
{
    char err[256] = "";
    if (sharp_stats_config_add_regex_tag(c, tag, re, err, sizeof err) != 0)
        fail_msg("%s: %s", re, err);
}

static void test_custom_tags(void **state)
{
    (void)state;
    /* Istio's legacy tags without Envoy's defaults */
    sharp_stats_config_t *c = sharp_stats_config_create(false);
    add_regex(c, "cluster_name", "^cluster\\.((.+?(\\..+?\\.svc\\.cluster\\.local)?)\\.)");
    add_regex(c, "response_code", "_rq(_(\\d{3}))$");
    add_regex(c, "response_code_class", "_rq(_(\\dxx))$");
    add_regex(c, "http_conn_manager_listener_prefix",
              "^listener(?=\\.).*?\\.http\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)");
    add_regex(c, "listener_address",
              "^listener\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)");
    assert_tagged(c, "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200",
                  "cluster.upstream_rq {response_code=200,"
                  "cluster_name=outbound|9080||reviews.default.svc.cluster.local}");
    assert_tagged(c, "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_5xx",
                  "cluster.upstream_rq {response_code_class=5xx,"
                  "cluster_name=outbound|9080||reviews.default.svc.cluster.local}");
    /* a cluster name without the svc suffix: the lazy group stops at the
     * first dot */
    assert_tagged(c, "cluster.xds-grpc.upstream_cx_total",
                  "cluster.upstream_cx_total {cluster_name=xds-grpc}");
    /* both listener regexes see the original name; their removals add up */
    assert_tagged(c, "listener.10.0.0.1_15006.http.10.0.0.1_8080.downstream_rq_2xx",
                  "listener.http.downstream_rq {response_code_class=2xx,"
                  "http_conn_manager_listener_prefix=10.0.0.1_8080,listener_address=10.0.0.1_15006}");
    /* no default tags */
    assert_tagged(c, "http.ingress_http.downstream_rq_total", "http.ingress_http.downstream_rq_total {}");
    sharp_stats_config_free(c);

    /* one group: it is both removed and the value; no group: never tags */
    c = sharp_stats_config_create(false);
    add_regex(c, "first", "^([a-z]+)\\.");
    add_regex(c, "none", "upstream");
    add_regex(c, "unmatched", "\\.(x)?(y)?total$");
    /* groups that took no part: an empty value, nothing removed */
    assert_tagged(c, "abc.upstream.total", ".upstream.total {first=abc,unmatched=}");
    sharp_stats_config_free(c);

    /* defaults on: a custom tag named like a default is skipped where the
     * default tagged, used where it did not; fixed tags tag every stat; a
     * bare default name adds that default a second time, harmlessly */
    c = sharp_stats_config_create(true);
    add_regex(c, "envoy.cluster_name", "^cluster\\.((a)[^.]*\\.)");
    sharp_stats_config_add_fixed_tag(c, "mesh", "prod");
    assert_int_equal(sharp_stats_config_add_default_tag(c, "envoy.http_conn_manager_prefix"), 2);
    assert_int_equal(sharp_stats_config_add_default_tag(c, "no.such.tag"), 0);
    assert_tagged(c, "cluster.abc.upstream_rq_total",
                  "cluster.upstream_rq_total {mesh=prod,envoy.cluster_name=abc}");
    assert_tagged(c, "server.live", "server.live {mesh=prod}");
    assert_tagged(c, "http.ingress.downstream_rq_2xx",
                  "http.downstream_rq_xx {envoy.response_code_class=2,mesh=prod,"
                  "envoy.http_conn_manager_prefix=ingress}");
    sharp_stats_config_free(c);

    /* a custom extractor keyed by its regex's first token runs only for
     * stats with that token; a regex without one runs for all */
    c = sharp_stats_config_create(false);
    add_regex(c, "keyed", "^http(?=\\.)\\.(([^.]+)\\.)");
    add_regex(c, "anywhere", "(_rq)_");
    assert_tagged(c, "http.a.downstream_rq_total", "http.downstream_total {anywhere=_rq,keyed=a}");
    assert_tagged(c, "httpx.a.up_rq_total", "httpx.a.up_total {anywhere=_rq}");
    sharp_stats_config_free(c);

    /* names up to the search limit are searched; longer ones (a config-given
     * part of kilobytes) are not, rather than overflowing the stack */
    c = sharp_stats_config_create(false);
    add_regex(c, "cluster_name", "^cluster\\.((.+?(\\..+?\\.svc\\.cluster\\.local)?)\\.)");
    for (size_t len = 4000; len <= 200000; len *= 50) {
        char *name = malloc(len + 64);
        memcpy(name, "cluster.", 8);
        memset(name + 8, 'a', len);
        strcpy(name + 8 + len, ".upstream_rq_total");
        sharp_stat_tag_t tg[2];
        size_t n = sharp_stats_config_extract_tags(c, name, NULL, tg, 2);
        assert_int_equal(n, len < 4096 ? 1 : 0);
        if (n) assert_int_equal(tg[0].len, len);
        free(name);
    }
    sharp_stats_config_free(c);

    /* bad regexes are refused with std::regex's message */
    c = sharp_stats_config_create(true);
    char err[256] = "";
    assert_int_equal(sharp_stats_config_add_regex_tag(c, "bad", "((", err, sizeof err), -1);
    assert_true(err[0] != '\0');
    sharp_stats_config_free(c);
}

static void matcher_add(sharp_stats_config_t *c, sharp_string_match_kind_t kind, const char *v,
                        bool ignore_case)
{
    sharp_string_matcher_t m;
    if (kind == SHARP_SM_REGEX)
        assert_int_equal(sharp_string_matcher_init_regex(&m, v, NULL, NULL, 0), 0);
    else
        assert_int_equal(sharp_string_matcher_init(&m, kind, v, strlen(v), ignore_case, NULL, 0), 0);
    sharp_stats_config_add_pattern(c, &m);
}

static void test_stats_matcher(void **state)
{
    (void)state;
    sharp_stats_config_t *c = sharp_stats_config_create(true);
    sharp_stats_config_set_matcher(c, SHARP_STATS_INCLUSION_LIST);
    matcher_add(c, SHARP_SM_PREFIX, "server.", false);
    matcher_add(c, SHARP_SM_SUFFIX, "UPSTREAM_RQ_TOTAL", true);
    matcher_add(c, SHARP_SM_REGEX, "http\\.[a-z]+\\.downstream_rq_[0-9]xx", false);
    matcher_add(c, SHARP_SM_CONTAINS, "health_check", false);
    assert_false(sharp_stats_config_rejects(c, "server.live"));
    assert_false(sharp_stats_config_rejects(c, "cluster.a.upstream_rq_total"));
    assert_false(sharp_stats_config_rejects(c, "http.ingress.downstream_rq_2xx"));
    assert_true(sharp_stats_config_rejects(c, "http.ingress.downstream_rq_2xx.extra")); /* full match */
    assert_false(sharp_stats_config_rejects(c, "cluster.a.health_check.success"));
    assert_true(sharp_stats_config_rejects(c, "cluster.a.upstream_rq_200"));
    assert_true(sharp_stats_config_rejects(c, "Server.live"));

    /* in the store: rejected stats are never created, their writes go
     * nowhere visible, accepted ones work as before */
    sharp_stats_t *s = sharp_stats_create(2);
    sharp_stats_set_config(s, c);
    sharp_stats_shard_t *w = sharp_stats_shard(s, 1);
    sharp_stat_id_t ok = sharp_stats_counter(s, "cluster.a.upstream_rq_total");
    sharp_stat_id_t no = sharp_stats_counter(s, "cluster.a.upstream_rq_200");
    sharp_stat_id_t no2 = sharp_stats_counter(s, "cluster.b.upstream_rq_200");
    sharp_stat_id_t hno = sharp_stats_histogram(s, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_stat_id_t gno = sharp_stats_gauge(s, "cluster.a.upstream_cx_active");
    assert_int_not_equal(ok, no);
    sharp_counter_add(w, ok, 3);
    sharp_counter_add(w, no, 5);
    sharp_counter_add(w, no2, 5);
    sharp_histogram_record(w, hno, 10);
    sharp_gauge_add(w, gno, 2);
    sharp_gauge_set(s, gno, 7);
    assert_int_equal(sharp_stats_counter_value(s, ok), 3);
    sharp_stat_id_t id;
    assert_int_equal(sharp_stats_find(s, "cluster.a.upstream_rq_200", &id, NULL), -1);
    assert_int_equal(sharp_stats_find(s, "cluster.a.upstream_rq_time", &id, NULL), -1);
    assert_int_equal(sharp_stats_find(s, "cluster.a.upstream_rq_total", &id, NULL), 0);
    char *t = render(sharp_stats_render_text, s, NULL, false);
    assert_string_equal(t, "cluster.a.upstream_rq_total: 3\n");
    free(t);
    t = render(sharp_stats_render_prometheus, s, NULL, false);
    lacks(t, "rq_200");
    lacks(t, "upstream_rq_time");
    lacks(t, "cx_active");
    contains(t, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 3\n");
    free(t);
    sharp_stats_destroy(s);

    /* exclusion list and reject_all */
    c = sharp_stats_config_create(true);
    sharp_stats_config_set_matcher(c, SHARP_STATS_EXCLUSION_LIST);
    matcher_add(c, SHARP_SM_PREFIX, "cluster.", false);
    assert_true(sharp_stats_config_rejects(c, "cluster.a.upstream_rq_total"));
    assert_false(sharp_stats_config_rejects(c, "cluster_manager.active_clusters"));
    sharp_stats_config_set_matcher(c, SHARP_STATS_REJECT_ALL);
    assert_true(sharp_stats_config_rejects(c, "server.live"));
    sharp_stats_config_set_matcher(c, SHARP_STATS_ACCEPT_ALL);
    assert_false(sharp_stats_config_rejects(c, "cluster.a.upstream_rq_total"));
    sharp_stats_config_free(c);
    assert_false(sharp_stats_config_rejects(NULL, "anything"));
}

static void test_custom_tags_and_buckets_in_prometheus(void **state)
{
    (void)state;
    sharp_stats_config_t *c = sharp_stats_config_create(false);
    add_regex(c, "cluster_name", "^cluster\\.((.+?(\\..+?\\.svc\\.cluster\\.local)?)\\.)");
    sharp_stats_config_add_fixed_tag(c, "zone", "z\"1");
    sharp_string_matcher_t m;
    assert_int_equal(sharp_string_matcher_init(&m, SHARP_SM_SUFFIX, "_time", 5, false, NULL, 0), 0);
    const double b[] = {100, 1, 10};
    char err[128];
    assert_int_equal(sharp_stats_config_add_buckets(c, &m, b, 3, err, sizeof err), 0);
    assert_int_equal(sharp_string_matcher_init(&m, SHARP_SM_PREFIX, "x", 1, false, NULL, 0), 0);
    const double bad[] = {1, 0};
    assert_int_equal(sharp_stats_config_add_buckets(c, &m, bad, 2, err, sizeof err), -1);
    const double dup[] = {2, 1, 2};
    assert_int_equal(sharp_stats_config_add_buckets(c, &m, dup, 3, err, sizeof err), -1);
    sharp_string_matcher_free(&m);

    sharp_stats_t *s = sharp_stats_create(2);
    sharp_stats_set_config(s, c);
    sharp_stats_shard_t *w = sharp_stats_shard(s, 1);
    const char *cl = "cluster.outbound|9080||reviews.default.svc.cluster.local.";
    char name[256];
    snprintf(name, sizeof name, "%supstream_rq_total", cl);
    sharp_counter_add(w, sharp_stats_counter(s, name), 2);
    snprintf(name, sizeof name, "%supstream_rq_time", cl);
    sharp_stat_id_t h = sharp_stats_histogram(s, name, SHARP_HIST_MILLISECONDS);
    sharp_histogram_record(w, h, 5);
    sharp_histogram_record(w, h, 50);
    sharp_stat_id_t h2 = sharp_stats_histogram(s, "listener.x.downstream_cx_length_ms", SHARP_HIST_MILLISECONDS);
    sharp_histogram_record(w, h2, 5);
    for (int round = 0; round < 2; round++) { /* the second one reads the cache */
        char *t = render(sharp_stats_render_prometheus, s, NULL, false);
        contains(t, "# TYPE envoy_cluster_upstream_rq_total counter\n"
                    "envoy_cluster_upstream_rq_total{zone=\"z\\\"1\",cluster_name="
                    "\"outbound|9080||reviews.default.svc.cluster.local\"} 2\n");
        contains(t, "envoy_cluster_upstream_rq_time_bucket{zone=\"z\\\"1\",cluster_name="
                    "\"outbound|9080||reviews.default.svc.cluster.local\",le=\"1\"} 0\n"
                    "envoy_cluster_upstream_rq_time_bucket{zone=\"z\\\"1\",cluster_name="
                    "\"outbound|9080||reviews.default.svc.cluster.local\",le=\"10\"} 1\n"
                    "envoy_cluster_upstream_rq_time_bucket{zone=\"z\\\"1\",cluster_name="
                    "\"outbound|9080||reviews.default.svc.cluster.local\",le=\"100\"} 2\n"
                    "envoy_cluster_upstream_rq_time_bucket{zone=\"z\\\"1\",cluster_name="
                    "\"outbound|9080||reviews.default.svc.cluster.local\",le=\"+Inf\"} 2\n");
        /* not matched by the rule: Envoy's default bounds */
        contains(t, "envoy_listener_x_downstream_cx_length_ms_bucket{zone=\"z\\\"1\",le=\"3600000\"} 1\n");
        free(t);
    }
    sharp_stats_destroy(s);
}

static void test_deferred_groups(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(2);
    assert_false(sharp_stats_deferred_creation(s));
    sharp_stats_config_t *c = sharp_stats_config_create(true);
    sharp_stats_config_set_deferred(c, true);
    sharp_stats_set_config(s, c);
    assert_true(sharp_stats_deferred_creation(s));
    sharp_stats_shard_t *w = sharp_stats_shard(s, 1);
    sharp_stat_id_t rq = sharp_stats_counter(s, "cluster.a.upstream_rq_total");
    sharp_stat_id_t act = sharp_stats_gauge(s, "cluster.a.upstream_rq_active");
    sharp_stat_id_t len = sharp_stats_histogram(s, "cluster.a.upstream_cx_length_ms", SHARP_HIST_MILLISECONDS);
    sharp_stat_id_t other = sharp_stats_counter(s, "cluster.b.upstream_rq_total");
    sharp_stat_id_t m = sharp_stats_gauge(s, "cluster.a.membership_total");
    uint32_t ga = sharp_stats_new_group(s), gb = sharp_stats_new_group(s);
    assert_true(ga != 0 && gb != 0 && ga != gb);
    sharp_stats_defer(s, rq, ga);
    sharp_stats_defer(s, act, ga);
    sharp_stats_defer(s, len, ga);
    sharp_stats_defer(s, other, gb);
    sharp_stats_defer(s, 0, ga); /* a placeholder: ignored */
    assert_int_equal(sharp_stats_group_of(s, 0), 0);
    sharp_gauge_set(s, m, 2);
    char *t = render(sharp_stats_render_text, s, NULL, false);
    assert_string_equal(t, "cluster.a.membership_total: 2\n");
    free(t);
    /* the first use of any stat of a group shows the whole group */
    sharp_gauge_add(w, act, 1);
    t = render(sharp_stats_render_text, s, NULL, false);
    assert_string_equal(t, "cluster.a.membership_total: 2\ncluster.a.upstream_rq_active: 1\n"
                           "cluster.a.upstream_rq_total: 0\n"
                           "cluster.a.upstream_cx_length_ms: No recorded values\n");
    free(t);
    t = render(sharp_stats_render_prometheus, s, NULL, false);
    lacks(t, "envoy_cluster_name=\"b\"");
    contains(t, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\"} 0\n");
    free(t);
    sharp_stats_destroy(s);
}

/* ---- Prometheus -------------------------------------------------------- */

static void test_prometheus_format(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(2);
    sharp_stats_shard_t *w = sharp_stats_shard(s, 1);
    sharp_counter_add(w, sharp_stats_counter(s, "cluster.local_service.upstream_rq_2xx"), 5);
    sharp_counter_add(w, sharp_stats_counter(s, "cluster.local_service.upstream_rq_5xx"), 1);
    sharp_counter_add(w, sharp_stats_counter(s, "cluster.another.upstream_rq_2xx"), 2);
    sharp_counter_add(w, sharp_stats_counter(s, "http.ingress_http.downstream_rq_total"), 9);
    sharp_counter_add(w, sharp_stats_counter(s, "listener.0.0.0.0_10000.downstream_cx_total"), 4);
    sharp_gauge_set(s, sharp_stats_gauge(s, "server.live"), 1);
    sharp_stat_id_t h =
        sharp_stats_histogram(s, "cluster.local_service.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    const uint64_t vals[] = {0, 1, 3, 7, 20, 40, 2000};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(vals); i++)
        sharp_histogram_record(w, h, vals[i]);

    char *out = render(sharp_stats_render_prometheus, s, NULL, false);
    assert_string_equal(
        out,
        "# TYPE envoy_cluster_upstream_rq_xx counter\n"
        "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name="
        "\"another\"} 2\n"
        "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"local_"
        "service\"} 5\n"
        "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"local_"
        "service\"} 1\n"
        "\n"
        "# TYPE envoy_http_downstream_rq_total counter\n"
        "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"ingress_http\"} 9\n"
        "\n"
        "# TYPE envoy_listener_downstream_cx_total counter\n"
        "envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_10000\"} 4\n"
        "\n"
        "# TYPE envoy_server_live gauge\n"
        "envoy_server_live{} 1\n"
        "\n"
        "# TYPE envoy_cluster_upstream_rq_time histogram\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"0.5\"} 1\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"1\"} 2\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"5\"} 3\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"10\"} 4\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"25\"} 5\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"50\"} 6\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"100\"} 6\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"250\"} 6\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"500\"} 6\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"1000\"} "
        "6\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"2500\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"5000\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"10000\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"30000\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"60000\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"300000\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"600000\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"1800000\"}"
        " 7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"3600000\"}"
        " 7\n"
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_service\",le=\"+Inf\"} "
        "7\n"
        "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"local_service\"} 2071\n"
        "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"local_service\"} 7\n"
        "\n");
    free(out);

    /* A histogram without tags, and label values that need escaping. */
    sharp_histogram_record(w, sharp_stats_histogram(s, "plain_hist", SHARP_HIST_UNSPECIFIED), 2);
    sharp_counter_inc(w, sharp_stats_counter(s, "cluster.we\"ird.upstream_rq_total"));
    out = render(sharp_stats_render_prometheus, s, "plain_hist|we", true);
    contains(out, "# TYPE envoy_cluster_upstream_rq_total counter\n"
                  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"we\\\"ird\"} 1\n\n");
    contains(out, "# TYPE envoy_plain_hist histogram\nenvoy_plain_hist_bucket{le=\"0.5\"} 0\n");
    contains(out, "envoy_plain_hist_bucket{le=\"+Inf\"} 1\nenvoy_plain_hist_sum{} 2\n"
                  "envoy_plain_hist_count{} 1\n\n");
    free(out);

    out = render(sharp_stats_render_prometheus, s, "nothing", false);
    assert_string_equal(out, "");
    free(out);
    sharp_stats_destroy(s);
}

/* ---- concurrency ------------------------------------------------------- */

enum { WRITERS = 4, MIN_ITERS = 100000 };

typedef struct {
    sharp_stats_shard_t *sh;
    sharp_stat_id_t c, g, h;
    _Atomic int *go, *stop;
    uint64_t iters, sum;
} writer_t;

/* Writes until told to stop (and at least MIN_ITERS times), so the writes
 * overlap everything the main thread does meanwhile. */
static void *writer(void *arg)
{
    writer_t *w = arg;
    while (!atomic_load(w->go)) {
    }
    uint64_t i = 0;
    for (; i < MIN_ITERS || !atomic_load_explicit(w->stop, memory_order_relaxed); i++) {
        sharp_counter_inc(w->sh, w->c);
        sharp_gauge_add(w->sh, w->g, 1);
        sharp_histogram_record(w->sh, w->h, i % 5000);
        w->sum += i % 5000;
        if (i % 2) sharp_gauge_add(w->sh, w->g, -1);
    }
    w->iters = i;
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(WRITERS + 1);
    sharp_stat_id_t c = sharp_stats_counter(s, "cluster.x.upstream_rq_total");
    sharp_stat_id_t g = sharp_stats_gauge(s, "cluster.x.upstream_rq_active");
    sharp_stat_id_t h =
        sharp_stats_histogram(s, "cluster.x.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    _Atomic int go = 0, stop = 0;
    pthread_t th[WRITERS];
    writer_t w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){sharp_stats_shard(s, (unsigned)i + 1), c, g, h, &go, &stop, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, writer, &w[i]), 0);
    }
    atomic_store(&go, 1);
    /* Meanwhile: render every view, flush, and register enough new stats to
     * allocate fresh pages under the writers' feet. */
    uint64_t last = 0;
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 200; k++)
            sharp_stats_counterf(s, "extra.%d.%d", round, k);
        sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "extra.%d.time", round);
        char *out = render(sharp_stats_render_text, s, "cluster", false);
        free(out);
        out = render(sharp_stats_render_json, s, "cluster", true);
        free(out);
        out = render(sharp_stats_render_prometheus, s, "cluster", false);
        free(out);
        sharp_stats_flush(s);
        uint64_t v = sharp_stats_counter_value(s, c);
        assert_true(v >= last); /* each shard only grows */
        last = v;
        (void)sharp_stats_histogram_quantile(s, h, 0.99);
    }
    atomic_store(&stop, 1);
    uint64_t iters = 0, sum = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        iters += w[i].iters;
        sum += w[i].sum;
    }
    int64_t active = 0;
    for (int i = 0; i < WRITERS; i++)
        active += (int64_t)(w[i].iters - w[i].iters / 2);
    assert_int_equal(sharp_stats_counter_value(s, c), iters);
    assert_int_equal(sharp_stats_gauge_value(s, g), active);
    assert_int_equal(sharp_stats_histogram_count(s, h), iters);
    sharp_hist_merged_t *m = calloc(1, sizeof *m);
    sharp_stats_histogram_merge(s, h, m, NULL);
    assert_int_equal(m->count, iters);
    assert_int_equal(m->sum, sum);
    free(m);
    char want[128];
    snprintf(want, sizeof want, "cluster.x.upstream_rq_total: %" PRIu64 "\n", iters);
    char *out = render(sharp_stats_render_text, s, "^cluster", false);
    contains(out, want);
    free(out);
    sharp_stats_destroy(s);
}

/* ---- flush intervals ---------------------------------------------------- */

static void merged(sharp_stats_t *s, sharp_stat_id_t id, sharp_hist_merged_t *cum,
                   sharp_hist_merged_t *iv)
{
    assert_int_equal(sharp_stats_histogram_merge(s, id, cum, iv), 0);
}

static void assert_same_hist(const sharp_hist_merged_t *a, const sharp_hist_merged_t *b)
{
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->sum, b->sum);
    assert_memory_equal(a->buckets, b->buckets, sizeof a->buckets);
}

/* A histogram recorded in one interval and idle in the next: the idle
 * interval is empty, the cumulative values stay, and a later interval holds
 * only what it recorded. */
static void test_flush_idle_interval(void **state)
{
    (void)state;
    sharp_stats_t *s = sharp_stats_create(3);
    sharp_stats_shard_t *w1 = sharp_stats_shard(s, 1), *w2 = sharp_stats_shard(s, 2);
    sharp_stat_id_t h = sharp_stats_histogram(s, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_stat_id_t never = sharp_stats_histogram(s, "cluster.a.upstream_cx_length_ms", SHARP_HIST_MILLISECONDS);
    sharp_hist_merged_t *cum = calloc(1, sizeof *cum), *iv = calloc(1, sizeof *iv);

    sharp_histogram_record(w1, h, 3);
    sharp_histogram_record(w2, h, 5000);
    sharp_stats_flush(s);
    merged(s, h, cum, iv);
    assert_int_equal(iv->count, 2);
    assert_int_equal(iv->sum, 5003);
    assert_int_equal(cum->count, 2);
    assert_true(sharp_hist_merged_quantile(iv, 0) == 3);

    /* idle: an empty interval, twice (the second flush has nothing to clear) */
    for (int k = 0; k < 2; k++) {
        sharp_stats_flush(s);
        merged(s, h, cum, iv);
        assert_int_equal(iv->count, 0);
        assert_int_equal(iv->sum, 0);
        for (unsigned i = 0; i < SHARP_HIST_NBUCKETS; i++)
            assert_int_equal(iv->buckets[i], 0);
        assert_true(isnan(sharp_hist_merged_quantile(iv, 0.5)));
        assert_int_equal(cum->count, 2);
        assert_int_equal(cum->sum, 5003);
    }
    char *out = render(sharp_stats_render_text, s, "upstream_rq_time", false);
    assert_string_equal(out, "cluster.a.upstream_rq_time: P0(nan,3) P25(nan,3) P50(nan,3) "
                             "P75(nan,5055.5) P90(nan,5093.6) P95(nan,5106.3) "
                             "P99(nan,5116.46) P99.5(nan,5117.73) P99.9(nan,5118.746) "
                             "P100(nan,5119)\n");
    free(out);

    /* recorded again, in another row and a row seen before */
    sharp_histogram_record(w1, h, 7);
    sharp_histogram_record(w1, h, 3);
    sharp_stats_flush(s);
    merged(s, h, cum, iv);
    assert_int_equal(iv->count, 2);
    assert_int_equal(iv->sum, 10);
    assert_int_equal(iv->buckets[3], 1);
    assert_int_equal(iv->buckets[7], 1);
    assert_int_equal(cum->count, 4);
    assert_int_equal(cum->buckets[3], 2);

    /* a value of 0 moves the count, not the sum */
    sharp_histogram_record(w2, h, 0);
    sharp_stats_flush(s);
    merged(s, h, cum, iv);
    assert_int_equal(iv->count, 1);
    assert_int_equal(iv->buckets[0], 1);
    assert_int_equal(iv->sum, 0);

    /* never recorded: empty in both views, before and after flushes */
    merged(s, never, cum, iv);
    assert_int_equal(cum->count, 0);
    assert_int_equal(iv->count, 0);
    assert_false(sharp_stats_used(s, never));
    free(cum);
    free(iv);
    sharp_stats_destroy(s);
}

/* Random intervals over several shards and histograms: after every flush,
 * each interval equals a store that saw only that interval's values, and
 * each cumulative view one that saw them all. */
static void test_flush_matches_oracle(void **state)
{
    (void)state;
    enum { NH = 6, SHARDS = 3, ROUNDS = 60 };
    sharp_stats_t *s = sharp_stats_create(SHARDS), *all = sharp_stats_create(1);
    sharp_stat_id_t h[NH], ha[NH];
    for (int i = 0; i < NH; i++) {
        h[i] = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "h%d", i);
        ha[i] = sharp_stats_histogramf(all, SHARP_HIST_MILLISECONDS, "h%d", i);
    }
    sharp_hist_merged_t *cum = calloc(1, sizeof *cum), *iv = calloc(1, sizeof *iv);
    sharp_hist_merged_t *want = calloc(1, sizeof *want);
    uint64_t seed = 88172645463325252ull;
    for (int round = 0; round < ROUNDS; round++) {
        sharp_stats_t *one = sharp_stats_create(1); /* never flushed: interval = all */
        sharp_stat_id_t ho[NH];
        for (int i = 0; i < NH; i++)
            ho[i] = sharp_stats_histogramf(one, SHARP_HIST_MILLISECONDS, "h%d", i);
        for (int i = 0; i < NH; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            if (seed % 3 == 0) continue; /* idle this interval */
            int n = (int)(seed >> 8) % 20;
            for (int k = 0; k < n; k++) {
                seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
                uint64_t v = (seed >> 20) % ((uint64_t)1 << ((seed >> 4) % 40));
                sharp_histogram_record(sharp_stats_shard(s, (unsigned)(seed % SHARDS)), h[i], v);
                sharp_histogram_record(sharp_stats_shard(one, 0), ho[i], v);
                sharp_histogram_record(sharp_stats_shard(all, 0), ha[i], v);
            }
        }
        sharp_stats_flush(s);
        for (int i = 0; i < NH; i++) {
            merged(s, h[i], cum, iv);
            merged(one, ho[i], want, NULL);
            assert_same_hist(iv, want);
            merged(all, ha[i], want, NULL);
            assert_same_hist(cum, want);
        }
        sharp_stats_destroy(one);
    }
    free(cum);
    free(iv);
    free(want);
    sharp_stats_destroy(s);
    sharp_stats_destroy(all);
}

/* Counters read in a batch (a sink's list, across pages of ids, other
 * kinds and unknown ids among them) read as one at a time: value, used,
 * and after /reset_counters. */
static void test_counters_read_batch(void **state)
{
    (void)state;
    enum { N = 1500 };
    sharp_stats_t *st = sharp_stats_create(3);
    sharp_stats_shard_t *a = sharp_stats_shard(st, 1), *b = sharp_stats_shard(st, 2);
    sharp_stat_id_t ids[N + 2];
    char name[64];
    uint32_t n = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "c.%d", i);
        sharp_stat_id_t id = sharp_stats_counter(st, name);
        snprintf(name, sizeof name, "g.%d", i);
        sharp_stat_id_t g = sharp_stats_gauge(st, name);
        if (i % 3 == 0) sharp_counter_add(a, id, (uint64_t)i);
        if (i % 5 == 0) sharp_counter_add(b, id, 7);
        if (i == 11) sharp_counter_add(a, id, 0); /* used, still 0 */
        ids[n++] = id;
        if (i == 700) ids[n++] = g; /* not a counter: 0, unused */
    }
    ids[n++] = sharp_stats_size(st) + 5; /* not registered */
    uint64_t values[N + 2];
    bool used[N + 2];
    for (int round = 0; round < 2; round++) {
        sharp_stats_counters_read(st, ids, n, values, used);
        for (uint32_t i = 0; i < n; i++) {
            bool u;
            uint64_t v = sharp_stats_counter_read(st, ids[i], &u);
            assert_int_equal(values[i], v);
            assert_int_equal(used[i], u);
            assert_int_equal(used[i], sharp_stats_used(st, ids[i]) && i != 701);
            if (i < n - 1 && i != 701) assert_int_equal(v, sharp_stats_counter_value(st, ids[i]));
        }
        assert_true(used[0] && used[3] && used[5] && used[11]);
        assert_int_equal(values[15], round ? 0 : 15 + 7);
        assert_int_equal(used[1], round == 1);
        sharp_stats_reset_counters(st);
        sharp_counter_add(b, ids[1], 2);
    }
    assert_int_equal(values[1], 2);
    sharp_stats_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registration),        cmocka_unit_test(test_many_stats),
        cmocka_unit_test(test_counters_and_gauges), cmocka_unit_test(test_histogram_quantiles),
        cmocka_unit_test(test_text_format),         cmocka_unit_test(test_filter),
        cmocka_unit_test(test_json_format),         cmocka_unit_test(test_tag_extraction),
        cmocka_unit_test(test_prometheus_format),   cmocka_unit_test(test_threads),
        cmocka_unit_test(test_custom_tags),         cmocka_unit_test(test_stats_matcher),
        cmocka_unit_test(test_custom_tags_and_buckets_in_prometheus),
        cmocka_unit_test(test_deferred_groups),
        cmocka_unit_test(test_flush_idle_interval),
        cmocka_unit_test(test_flush_matches_oracle),
        cmocka_unit_test(test_counters_read_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

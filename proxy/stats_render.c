/* stats_render.c: the admin views of the stat store (/stats as text and JSON,
 * /stats/prometheus). The Prometheus view names stats with Envoy's tag
 * extraction (stats_tags.c, with the bootstrap's stats_config), turning
 * "cluster.local_service.upstream_rq_2xx" into
 * envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",
 * envoy_cluster_name="local_service"}; text and JSON show full names, as
 * Envoy's do.
 *
 * Interval versus cumulative: Envoy's text and JSON views show two quantiles
 * per histogram, one over the last stats flush interval and one since start.
 * SHARP keeps the same pair: "interval" is what was recorded between the last
 * two sharp_stats_flush() calls, and when the store is never flushed it is the
 * cumulative value, so a deployment without a flush timer still sees numbers
 * in both columns rather than "nan".
 */
#include "stats.h"
#include "re2_shim.h"
#include "stats_config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

/* Envoy's supported quantiles, in the order every view prints them. */
static const double quantiles[] = {0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};
static const char *const quantile_labels[] = {"P0",  "P25", "P50",   "P75",   "P90",
                                              "P95", "P99", "P99.5", "P99.9", "P100"};
#define NQUANTILES SHARP_ARRAY_SIZE(quantiles)


/* ---- selection ---------------------------------------------------------- */

typedef struct {
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    const char *name;
    /* Prometheus only: from the stat's prom_names_t */
    const void *prom;
    const char *family, *metric, *labels;
} entry_t;

typedef struct {
    entry_t *v;
    size_t n, cap;
} entries_t;

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen) snprintf(err, errlen, fmt, a, b);
}

/* A filter that names one stat exactly, "^cluster_manager\.cds\.update_success$"
 * (what a monitor polling one stat, or Python's re.escape, writes): its
 * name, unescaped, into lit; false for any other regex. Such a filter is
 * answered by the name table, not by a match against every name: with
 * 10,000 clusters (a million stats) a poll cost the main thread 30 ms. */
bool sharp_stats_filter_exact(const char *filter, char *lit, size_t cap)
{
    size_t n = strlen(filter), k = 0;
    if (n < 3 || filter[0] != '^' || filter[n - 1] != '$' || filter[n - 2] == '\\') return false;
    for (size_t i = 1; i < n - 1; i++) {
        char c = filter[i];
        if (c == '\\') {
            c = filter[++i];
            /* an escaped punctuation character is itself; \d, \w... are classes */
            if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '\0')
                return false;
        } else if (strchr(".[](){}*+?|^$", c)) {
            return false;
        }
        if (k + 1 >= cap) return false;
        lit[k++] = c;
    }
    lit[k] = '\0';
    return k > 0;
}

/* Selects the stats a view shows: registered (placeholders excluded), used
 * when used_only, and whose full name the filter regex matches anywhere. */
static int collect(sharp_stats_t *s, const char *filter, bool used_only, entries_t *out, char *err,
                   size_t errlen)
{
    char lit[512];
    if (filter && sharp_stats_filter_exact(filter, lit, sizeof lit)) {
        sharp_stat_id_t id;
        sharp_stat_kind_t kind;
        if (sharp_stats_find(s, lit, &id, &kind) < 0) return 0;
        const char *name = sharp_stats_name(s, id, &kind);
        if (!name || (used_only && !sharp_stats_used(s, id))) return 0;
        /* a deferred group is shown once one of its stats has been used */
        uint32_t g = sharp_stats_group_of(s, id);
        if (g) {
            bool shown = false;
            for (uint32_t i = 0, n = sharp_stats_size(s); i < n && !shown; i++)
                shown = sharp_stats_group_of(s, i) == g && sharp_stats_used(s, i);
            if (!shown) return 0;
        }
        out->cap = 1;
        out->v = sharp_realloc(out->v, sizeof *out->v);
        out->v[out->n++] = (entry_t){.id = id, .kind = kind, .name = name};
        return 0;
    }
    /* Envoy's admin compiles the filter with RE2 (no program size limit)
     * and keeps the stats it matches anywhere in the name. */
    sharp_re2_t *re = NULL;
    if (filter && *filter) {
        char msg[256];
        re = sharp_re2_compile(filter, strlen(filter), msg, sizeof msg);
        if (!re) {
            set_err(err, errlen, "'%s': %s", filter, msg);
            return -1;
        }
    }
    uint32_t n = sharp_stats_size(s);
    /* Deferred groups (deferred_stat_options): a group is shown once one of
     * its stats has been used, as Envoy creates the block on first use. */
    uint32_t ngroups = sharp_stats_ngroups(s);
    bool *shown = NULL;
    if (ngroups) {
        shown = sharp_calloc(ngroups + 1, sizeof *shown);
        for (uint32_t id = 0; id < n; id++) {
            uint32_t g = sharp_stats_group_of(s, id);
            if (g && g <= ngroups && !shown[g]) shown[g] = sharp_stats_used(s, id);
        }
    }
    for (uint32_t id = 0; id < n; id++) {
        sharp_stat_kind_t kind;
        const char *name = sharp_stats_name(s, id, &kind);
        if (!name) continue;
        uint32_t g = shown ? sharp_stats_group_of(s, id) : 0;
        if (g && (g > ngroups || !shown[g])) continue;
        if (used_only && !sharp_stats_used(s, id)) continue;
        if (re && !sharp_re2_partial_match(re, name, strlen(name))) continue;
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 256;
            out->v = sharp_realloc(out->v, out->cap * sizeof *out->v);
        }
        out->v[out->n++] = (entry_t){.id = id, .kind = kind, .name = name};
    }
    free(shown);
    sharp_re2_free(re);
    return 0;
}

static void entries_free(entries_t *e)
{
    free(e->v);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->name, ((const entry_t *)b)->name);
}

/* ---- numbers ------------------------------------------------------------ */

/* A double the way Envoy's text view prints it (fmt's "{}"): the shortest
 * digits that read back to the same double, in fixed notation when the
 * decimal exponent is in [-4, 16) and as 1.5e+16 otherwise. */
static void put_shortest(sharp_sbuf_t *b, double v)
{
    if (isnan(v)) {
        sharp_sbuf_puts(b, "nan");
        return;
    }
    if (isinf(v)) {
        sharp_sbuf_puts(b, v < 0 ? "-inf" : "inf");
        return;
    }
    if (v == 0) {
        sharp_sbuf_puts(b, signbit(v) ? "-0" : "0");
        return;
    }
    char e[48];
    int p;
    for (p = 1; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    if (p == 17) snprintf(e, sizeof e, "%.16e", v);
    int exp10 = atoi(strchr(e, 'e') + 1);
    if (exp10 < -4 || exp10 >= 16) {
        sharp_sbuf_puts(b, e);
        return;
    }
    int decimals = p - 1 - exp10;
    sharp_sbuf_printf(b, "%.*f", decimals > 0 ? decimals : 0, v);
}

/* A double the way Envoy's JSON view prints it: six significant digits, null
 * for NaN. */
static void put_json_number(sharp_sbuf_t *b, double v)
{
    if (isnan(v) || isinf(v))
        sharp_sbuf_puts(b, "null");
    else
        sharp_sbuf_printf(b, "%.6g", v);
}

/* ---- text --------------------------------------------------------------- */

typedef struct {
    sharp_hist_merged_t *cum, *iv;
} hist_pair_t;

static void pair_init(hist_pair_t *h)
{
    h->cum = sharp_calloc(1, sizeof *h->cum);
    h->iv = sharp_calloc(1, sizeof *h->iv);
}

static void pair_free(hist_pair_t *h)
{
    free(h->cum);
    free(h->iv);
}

int sharp_stats_render_text(sharp_stats_t *s, const char *filter, bool used_only, sharp_sbuf_t *out,
                            char *err, size_t errlen)
{
    entries_t e = {0};
    if (collect(s, filter, used_only, &e, err, errlen) < 0) return -1;
    if (e.n) qsort(e.v, e.n, sizeof *e.v, by_name);

    /* Counters and gauges interleaved by name, then histograms. */
    for (size_t i = 0; i < e.n; i++) {
        const entry_t *x = &e.v[i];
        if (x->kind == SHARP_STAT_COUNTER)
            sharp_sbuf_printf(out, "%s: %" PRIu64 "\n", x->name,
                              sharp_stats_counter_value(s, x->id));
        else if (x->kind == SHARP_STAT_GAUGE)
            sharp_sbuf_printf(out, "%s: %" PRId64 "\n", x->name, sharp_stats_gauge_value(s, x->id));
    }
    hist_pair_t h = {0};
    for (size_t i = 0; i < e.n; i++) {
        const entry_t *x = &e.v[i];
        if (x->kind != SHARP_STAT_HISTOGRAM) continue;
        if (!h.cum) pair_init(&h);
        sharp_stats_histogram_merge(s, x->id, h.cum, h.iv);
        sharp_sbuf_puts(out, x->name);
        if (h.cum->count == 0) {
            sharp_sbuf_puts(out, ": No recorded values\n");
            continue;
        }
        sharp_sbuf_puts(out, ":");
        for (size_t q = 0; q < NQUANTILES; q++) {
            sharp_sbuf_printf(out, " %s(", quantile_labels[q]);
            put_shortest(out, sharp_hist_merged_quantile(h.iv, quantiles[q]));
            sharp_sbuf_puts(out, ",");
            put_shortest(out, sharp_hist_merged_quantile(h.cum, quantiles[q]));
            sharp_sbuf_puts(out, ")");
        }
        sharp_sbuf_puts(out, "\n");
    }
    pair_free(&h);
    entries_free(&e);
    return 0;
}

/* ---- JSON --------------------------------------------------------------- */

int sharp_stats_render_json(sharp_stats_t *s, const char *filter, bool used_only, sharp_sbuf_t *out,
                            char *err, size_t errlen)
{
    entries_t e = {0};
    if (collect(s, filter, used_only, &e, err, errlen) < 0) return -1;
    if (e.n) qsort(e.v, e.n, sizeof *e.v, by_name);

    sharp_sbuf_puts(out, "{\"stats\":[");
    bool first = true;
    for (size_t i = 0; i < e.n; i++) {
        const entry_t *x = &e.v[i];
        if (x->kind == SHARP_STAT_HISTOGRAM) continue;
        sharp_sbuf_puts(out, first ? "{\"name\":\"" : ",{\"name\":\"");
        first = false;
        sharp_sbuf_json_escape(out, x->name, strlen(x->name));
        if (x->kind == SHARP_STAT_COUNTER)
            sharp_sbuf_printf(out, "\",\"value\":%" PRIu64 "}",
                              sharp_stats_counter_value(s, x->id));
        else
            sharp_sbuf_printf(out, "\",\"value\":%" PRId64 "}", sharp_stats_gauge_value(s, x->id));
    }
    /* All histograms share one trailing element, present only when at least
     * one histogram is shown; never-recorded ones carry nulls. */
    hist_pair_t h = {0};
    bool first_hist = true;
    for (size_t i = 0; i < e.n; i++) {
        const entry_t *x = &e.v[i];
        if (x->kind != SHARP_STAT_HISTOGRAM) continue;
        if (first_hist) {
            pair_init(&h);
            sharp_sbuf_puts(out, first ? "" : ",");
            sharp_sbuf_puts(out, "{\"histograms\":{\"supported_quantiles\":"
                                 "[0,25,50,75,90,95,99,99.5,99.9,100],\"computed_quantiles\":[");
        } else {
            sharp_sbuf_puts(out, ",");
        }
        first_hist = false;
        sharp_stats_histogram_merge(s, x->id, h.cum, h.iv);
        sharp_sbuf_puts(out, "{\"name\":\"");
        sharp_sbuf_json_escape(out, x->name, strlen(x->name));
        sharp_sbuf_puts(out, "\",\"values\":[");
        for (size_t q = 0; q < NQUANTILES; q++) {
            sharp_sbuf_puts(out, q ? ",{\"cumulative\":" : "{\"cumulative\":");
            put_json_number(out, sharp_hist_merged_quantile(h.cum, quantiles[q]));
            sharp_sbuf_puts(out, ",\"interval\":");
            put_json_number(out, sharp_hist_merged_quantile(h.iv, quantiles[q]));
            sharp_sbuf_puts(out, "}");
        }
        sharp_sbuf_puts(out, "]}");
    }
    if (!first_hist) sharp_sbuf_puts(out, "]}}");
    sharp_sbuf_puts(out, "]}");
    pair_free(&h);
    entries_free(&e);
    return 0;
}

/* ---- Prometheus --------------------------------------------------------- */

static bool is_word(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static void put_sanitized(sharp_sbuf_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        sharp_sbuf_append(b, is_word(c) ? &c : "_", 1);
    }
}

static void put_label_value(sharp_sbuf_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            sharp_sbuf_puts(b, "\\\\");
        else if (s[i] == '\n')
            sharp_sbuf_puts(b, "\\n");
        else if (s[i] == '"')
            sharp_sbuf_puts(b, "\\\"");
        else
            sharp_sbuf_append(b, s + i, 1);
    }
}

/* What the Prometheus view derives from a stat's name with the store's
 * stats_config, computed on the first scrape that shows the stat and kept in
 * the store's per-stat cache: one allocation, strings inline. */
typedef struct {
    const double *buckets; /* NULL: Envoy's default bounds */
    size_t nbuckets;
    const char *family; /* tag-extracted name */
    const char *metric; /* "envoy_" + sanitized family */
    const char *labels; /* k="v",k2="v2" */
    char text[];
} prom_names_t;

static const prom_names_t *prom_names(sharp_stats_t *s, const entry_t *x)
{
    const prom_names_t *p = sharp_stats_render_cache(s, x->id);
    if (p) return p;
    const sharp_stats_config_t *cfg = sharp_stats_get_config(s);
    sharp_stat_tag_t tags[64];
    sharp_sbuf_t fam = {0}, metric = {0}, labels = {0};
    size_t n = sharp_stats_config_extract_tags(cfg, x->name, &fam, tags, SHARP_ARRAY_SIZE(tags));
    sharp_sbuf_puts(&metric, "envoy_");
    put_sanitized(&metric, fam.data, fam.len);
    for (size_t i = 0; i < n; i++) {
        if (i) sharp_sbuf_puts(&labels, ",");
        put_sanitized(&labels, tags[i].tag, strlen(tags[i].tag));
        sharp_sbuf_puts(&labels, "=\"");
        put_label_value(&labels, tags[i].value, tags[i].len);
        sharp_sbuf_puts(&labels, "\"");
    }
    size_t total = fam.len + metric.len + labels.len + 3;
    prom_names_t *q = sharp_calloc(1, sizeof *q + total);
    char *t = q->text;
    q->family = t;
    if (fam.len) memcpy(t, fam.data, fam.len);
    t += fam.len + 1;
    q->metric = t;
    memcpy(t, metric.data, metric.len);
    t += metric.len + 1;
    q->labels = t;
    if (labels.len) memcpy(t, labels.data, labels.len);
    if (x->kind == SHARP_STAT_HISTOGRAM)
        q->buckets = sharp_stats_config_buckets(cfg, x->name, &q->nbuckets);
    sharp_sbuf_free(&fam);
    sharp_sbuf_free(&metric);
    sharp_sbuf_free(&labels);
    if (!sharp_stats_set_render_cache(s, x->id, q)) {
        free(q);
        q = sharp_stats_render_cache(s, x->id);
    }
    return q;
}

/* Stat names compared token by token, the order Envoy's symbol table gives:
 * the same as a byte comparison in which '.' sorts before every other byte. */
static int token_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        int ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca == cb) {
            if (!ca) return 0;
            continue;
        }
        ca = ca == 0 ? 0 : ca == '.' ? 1 : ca + 1;
        cb = cb == 0 ? 0 : cb == '.' ? 1 : cb + 1;
        return ca - cb;
    }
}

/* Counters, then gauges, then histograms; families by tag-extracted name,
 * the stats of a family by full name. */
static int by_family(const void *pa, const void *pb)
{
    const entry_t *a = pa, *b = pb;
    if (a->kind != b->kind) return (int)a->kind - (int)b->kind;
    int c = token_cmp(a->family, b->family);
    return c ? c : token_cmp(a->name, b->name);
}

int sharp_stats_render_prometheus(sharp_stats_t *s, const char *filter, bool used_only,
                                  sharp_sbuf_t *out, char *err, size_t errlen)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    entries_t e = {0};
    if (collect(s, filter, used_only, &e, err, errlen) < 0) return -1;
    for (size_t i = 0; i < e.n; i++) {
        const prom_names_t *p = prom_names(s, &e.v[i]);
        e.v[i].prom = p;
        e.v[i].family = p->family;
        e.v[i].metric = p->metric;
        e.v[i].labels = p->labels;
    }
    if (e.n) qsort(e.v, e.n, sizeof *e.v, by_family);

    sharp_hist_merged_t *cum = NULL;
    for (size_t i = 0; i < e.n; i++) {
        const entry_t *x = &e.v[i];
        bool new_family =
            i == 0 || x->kind != e.v[i - 1].kind || strcmp(x->family, e.v[i - 1].family) != 0;
        if (new_family) {
            if (i) sharp_sbuf_puts(out, "\n");
            sharp_sbuf_printf(out, "# TYPE %s %s\n", x->metric, types[x->kind]);
        }
        switch (x->kind) {
        case SHARP_STAT_COUNTER:
            sharp_sbuf_printf(out, "%s{%s} %" PRIu64 "\n", x->metric, x->labels,
                              sharp_stats_counter_value(s, x->id));
            break;
        case SHARP_STAT_GAUGE:
            sharp_sbuf_printf(out, "%s{%s} %" PRId64 "\n", x->metric, x->labels,
                              sharp_stats_gauge_value(s, x->id));
            break;
        case SHARP_STAT_HISTOGRAM: {
            if (!cum) cum = sharp_calloc(1, sizeof *cum);
            sharp_stats_histogram_merge(s, x->id, cum, NULL);
            const char *sep = *x->labels ? "," : "";
            const prom_names_t *p = x->prom;
            const double *bounds = p->buckets ? p->buckets : sharp_stats_default_buckets;
            size_t nb = p->buckets ? p->nbuckets : SHARP_STATS_DEFAULT_NBUCKETS;
            for (size_t k = 0; k < nb; k++)
                sharp_sbuf_printf(out, "%s_bucket{%s%sle=\"%.32g\"} %" PRIu64 "\n", x->metric,
                                  x->labels, sep, bounds[k],
                                  sharp_hist_merged_count_le(cum, bounds[k]));
            sharp_sbuf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", x->metric, x->labels,
                              sep, cum->count);
            sharp_sbuf_printf(out, "%s_sum{%s} %.32g\n", x->metric, x->labels, (double)cum->sum);
            sharp_sbuf_printf(out, "%s_count{%s} %" PRIu64 "\n", x->metric, x->labels, cum->count);
            break;
        }
        }
    }
    if (e.n) sharp_sbuf_puts(out, "\n");
    free(cum);
    entries_free(&e);
    return 0;
}

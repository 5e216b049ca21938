/* stats_render.c: the admin views of the stat store (/stats as text and JSON,
 * /stats/prometheus) and Envoy's default tag extraction, which the Prometheus
 * view needs to turn "cluster.local_service.upstream_rq_2xx" into
 * envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",
 * envoy_cluster_name="local_service"}.
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

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

/* Envoy's supported quantiles, in the order every view prints them. */
static const double quantiles[] = {0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};
static const char *const quantile_labels[] = {"P0",  "P25", "P50",   "P75",   "P90",
                                              "P95", "P99", "P99.5", "P99.9", "P100"};
#define NQUANTILES SHARP_ARRAY_SIZE(quantiles)

/* Envoy's default Prometheus bucket bounds (milliseconds for time). */
static const double prom_buckets[] = {0.5,   1,      5,      10,      25,     50,    100,
                                      250,   500,    1000,   2500,    5000,   10000, 30000,
                                      60000, 300000, 600000, 1800000, 3600000};

/* ---- selection ---------------------------------------------------------- */

typedef struct {
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    const char *name;
    /* Prometheus only */
    char *family; /* tag-extracted name */
    char *metric; /* "envoy_" + sanitized family */
    char *labels; /* k="v",k2="v2" */
} entry_t;

typedef struct {
    entry_t *v;
    size_t n, cap;
} entries_t;

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen) snprintf(err, errlen, fmt, a, b);
}

/* Selects the stats a view shows: registered (placeholders excluded), used
 * when used_only, and whose full name the filter regex matches anywhere. */
static int collect(sharp_stats_t *s, const char *filter, bool used_only, entries_t *out, char *err,
                   size_t errlen)
{
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
    for (uint32_t id = 0; id < n; id++) {
        sharp_stat_kind_t kind;
        const char *name = sharp_stats_name(s, id, &kind);
        if (!name) continue;
        if (used_only && !sharp_stats_used(s, id)) continue;
        if (re && !sharp_re2_partial_match(re, name, strlen(name))) continue;
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 256;
            out->v = sharp_realloc(out->v, out->cap * sizeof *out->v);
        }
        out->v[out->n++] = (entry_t){.id = id, .kind = kind, .name = name};
    }
    sharp_re2_free(re);
    return 0;
}

static void entries_free(entries_t *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].family);
        free(e->v[i].metric);
        free(e->v[i].labels);
    }
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

/* ---- tag extraction ----------------------------------------------------- */

/* A rule either is a hand-written matcher for one of Envoy's regular
 * expressions (reporting the span to remove from the name and the span of the
 * tag value), or a token pattern in Envoy's tokenized form: "*" is any one
 * token, "**" any run of tokens, "$" the token that becomes the value. */
typedef bool (*match_fn)(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve);

typedef struct {
    const char *tag;
    const char *prefix; /* first token that enables the rule; NULL: every name */
    match_fn fn;
    const char *const *pattern;
} extractor_t;

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_word(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool has_prefix(const char *n, size_t len, const char *p)
{
    size_t l = strlen(p);
    return len >= l && memcmp(n, p, l) == 0;
}

#define SPAN(a, b, c, d) (*rs = (a), *re = (b), *vs = (c), *ve = (d), true)

/* *_rq(_<3 digits>) at the end */
static bool m_response_code(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs,
                            size_t *ve)
{
    if (len < 7) return false;
    const char *t = n + len - 7;
    if (memcmp(t, "_rq_", 4) != 0 || !is_digit(t[4]) || !is_digit(t[5]) || !is_digit(t[6]))
        return false;
    return SPAN(len - 4, len, len - 3, len);
}

/* *_rq_(<digit>)xx at the end */
static bool m_response_code_class(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs,
                                  size_t *ve)
{
    if (len < 7) return false;
    const char *t = n + len - 7;
    if (memcmp(t, "_rq_", 4) != 0 || !is_digit(t[4]) || t[5] != 'x' || t[6] != 'x') return false;
    return SPAN(len - 3, len - 2, len - 3, len - 2);
}

/* ^(listener|cluster)\..*?<kw>(\.(<value>))$ where the value is [\w-]+, or
 * TLSv<d>.<d> for versions. */
static bool ssl_tail(const char *n, size_t len, bool cluster_ok, const char *kw, bool version,
                     size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    size_t plen;
    if (has_prefix(n, len, "listener."))
        plen = 9;
    else if (cluster_ok && has_prefix(n, len, "cluster."))
        plen = 8;
    else
        return false;
    size_t dot;
    if (version) {
        if (len < 8) return false;
        dot = len - 8;
        const char *t = n + dot + 1;
        if (n[dot] != '.' || memcmp(t, "TLSv", 4) != 0 || !is_digit(t[4]) || t[5] != '.' ||
            !is_digit(t[6]))
            return false;
    } else {
        const char *d = memrchr(n, '.', len);
        if (!d || (size_t)(d - n) + 1 == len) return false;
        dot = (size_t)(d - n);
        for (size_t i = dot + 1; i < len; i++)
            if (!is_word(n[i]) && n[i] != '-') return false;
    }
    size_t kwl = strlen(kw);
    if (dot < plen + kwl || memcmp(n + dot - kwl, kw, kwl) != 0) return false;
    return SPAN(dot, len, dot + 1, len);
}

static bool m_ssl_cipher(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    return ssl_tail(n, len, false, ".ssl.ciphers", false, rs, re, vs, ve);
}

static bool m_ssl_curve(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    return ssl_tail(n, len, true, ".ssl.curves", false, rs, re, vs, ve);
}

static bool m_ssl_sigalg(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    return ssl_tail(n, len, true, ".ssl.sigalgs", false, rs, re, vs, ve);
}

static bool m_ssl_version(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    return ssl_tail(n, len, true, ".ssl.versions", true, rs, re, vs, ve);
}

/* ^cluster\.[^.]+\.ssl\.ciphers(\.([\w-]+))$ */
static bool m_ssl_cipher_suite(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs,
                               size_t *ve)
{
    if (!has_prefix(n, len, "cluster.")) return false;
    const char *d = memchr(n + 8, '.', len - 8);
    if (!d || d == n + 8) return false;
    size_t p = (size_t)(d - n);
    if (!has_prefix(n + p, len - p, ".ssl.ciphers.") || p + 13 >= len) return false;
    for (size_t i = p + 13; i < len; i++)
        if (!is_word(n[i]) && n[i] != '-') return false;
    return SPAN(p + 12, len, p + 13, len);
}

/* ^listener\..*?\.http\.(([^.]+)\.) */
static bool m_hcm_listener(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs,
                           size_t *ve)
{
    if (!has_prefix(n, len, "listener.")) return false;
    for (size_t p = 9; p + 6 < len; p++) {
        if (memcmp(n + p, ".http.", 6) != 0) continue;
        size_t v = p + 6;
        const char *d = memchr(n + v, '.', len - v);
        if (!d || d == n + v) continue;
        return SPAN(v, (size_t)(d - n) + 1, v, (size_t)(d - n));
    }
    return false;
}

/* An IPv4 or bracketed IPv6 address with its port, as Envoy writes listener
 * stat prefixes ("0.0.0.0_10000", "[__1]_8080"). Returns the end offset, or 0
 * when there is none at p. */
static size_t parse_address(const char *n, size_t len, size_t p)
{
    size_t i = p;
    if (i < len && n[i] == '[') {
        size_t s = ++i;
        while (i < len && (is_digit(n[i]) || n[i] == '_' || (n[i] >= 'a' && n[i] <= 'f') ||
                           (n[i] >= 'A' && n[i] <= 'F')))
            i++;
        if (i == s || i >= len || n[i] != ']') return 0;
        i++;
    } else {
        for (int oct = 0; oct < 4; oct++) {
            size_t s = i;
            while (i < len && i - s < 3 && is_digit(n[i]))
                i++;
            if (i == s) return 0;
            if (oct < 3) {
                if (i >= len || n[i] != '.') return 0;
                i++;
            }
        }
    }
    if (i >= len || n[i] != '_') return 0;
    size_t s = ++i;
    while (i < len && is_digit(n[i]))
        i++;
    return i == s ? 0 : i;
}

/* worker_((\d+)\.) at p */
static bool worker_at(const char *n, size_t len, size_t p, size_t *rs, size_t *re, size_t *vs,
                      size_t *ve)
{
    if (p > len || !has_prefix(n + p, len - p, "worker_")) return false;
    size_t d = p + 7, e = d;
    while (e < len && is_digit(n[e]))
        e++;
    if (e == d || e >= len || n[e] != '.') return false;
    return SPAN(d, e + 1, d, e);
}

/* ^(?:listener\.(?:<address>|[^.]+)\.|server\.|listener_manager\.)worker_((\d+)\.) */
static bool m_worker_id(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    if (has_prefix(n, len, "server.")) return worker_at(n, len, 7, rs, re, vs, ve);
    if (has_prefix(n, len, "listener_manager.")) return worker_at(n, len, 17, rs, re, vs, ve);
    if (!has_prefix(n, len, "listener.")) return false;
    size_t e = parse_address(n, len, 9);
    if (e && e < len && n[e] == '.' && worker_at(n, len, e + 1, rs, re, vs, ve)) return true;
    const char *d = memchr(n + 9, '.', len - 9);
    if (!d || d == n + 9) return false;
    return worker_at(n, len, (size_t)(d - n) + 1, rs, re, vs, ve);
}

/* ^listener\.((<address>|[^.]+)\.), except the admin listener */
static bool m_listener_address(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs,
                               size_t *ve)
{
    if (!has_prefix(n, len, "listener.")) return false;
    size_t e = parse_address(n, len, 9);
    if (!(e && e < len && n[e] == '.')) {
        const char *d = memchr(n + 9, '.', len - 9);
        if (!d || d == n + 9) return false;
        e = (size_t)(d - n);
    }
    if (e - 9 == 5 && memcmp(n + 9, "admin", 5) == 0) return false;
    return SPAN(9, e + 1, 9, e);
}

/* ^http\.[^.]+\.rds\.(([\w.-]+)\.)\w+$ (route config names may hold dots) */
static bool m_rds(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    if (!has_prefix(n, len, "http.")) return false;
    const char *d = memchr(n + 5, '.', len - 5);
    if (!d || d == n + 5) return false;
    size_t p = (size_t)(d - n);
    if (!has_prefix(n + p, len - p, ".rds.")) return false;
    size_t r = p + 5, last = (size_t)((const char *)memrchr(n, '.', len) - n);
    if (last <= r || last + 1 == len) return false;
    for (size_t i = last + 1; i < len; i++)
        if (!is_word(n[i])) return false;
    for (size_t i = r; i < last; i++)
        if (!is_word(n[i]) && n[i] != '-' && n[i] != '.') return false;
    return SPAN(r, last + 1, r, last);
}

#define PAT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Envoy's default rules in Envoy's order: its regular-expression rules first,
 * then its token rules. The DynamoDB rules and the ext_authz, dns_filter and
 * listener_local_ratelimit prefixes are left out: SHARP emits no such stats. */
static const extractor_t extractors[] = {
    {"envoy.response_code", NULL, m_response_code, NULL},
    {"envoy.response_code_class", NULL, m_response_code_class, NULL},
    {"envoy.ssl_cipher", "listener", m_ssl_cipher, NULL},
    {"envoy.ssl_curve", NULL, m_ssl_curve, NULL},
    {"envoy.ssl_sigalg", NULL, m_ssl_sigalg, NULL},
    {"envoy.ssl_version", NULL, m_ssl_version, NULL},
    {"cipher_suite", "cluster", m_ssl_cipher_suite, NULL},
    {"envoy.http_conn_manager_prefix", "listener", m_hcm_listener, NULL},
    {"envoy.worker_id", NULL, m_worker_id, NULL},
    {"envoy.listener_address", "listener", m_listener_address, NULL},
    {"envoy.rds_route_config", "http", m_rds, NULL},
    {"envoy.mongo_callsite", "mongo", NULL,
     PAT("mongo", "*", "collection", "*", "callsite", "$", "query", "**")},
    {"envoy.mongo_collection", "mongo", NULL,
     PAT("mongo", "*", "collection", "$", "**", "query", "*")},
    {"envoy.mongo_cmd", "mongo", NULL, PAT("mongo", "*", "cmd", "$", "**")},
    {"envoy.grpc_bridge_method", "cluster", NULL, PAT("cluster", "*", "grpc", "*", "$", "**")},
    {"envoy.http_user_agent", "http", NULL, PAT("http", "*", "user_agent", "$", "**")},
    {"envoy.virtual_cluster", "vhost", NULL, PAT("vhost", "*", "vcluster", "$", "**")},
    {"envoy.fault_downstream_cluster", "http", NULL, PAT("http", "*", "fault", "$", "**")},
    {"envoy.grpc_bridge_service", "cluster", NULL, PAT("cluster", "*", "grpc", "$", "**")},
    {"envoy.tcp_prefix", "tcp", NULL, PAT("tcp", "$", "**")},
    {"envoy.udp_prefix", "udp", NULL, PAT("udp", "$", "**")},
    {"envoy.clientssl_prefix", "auth", NULL, PAT("auth", "clientssl", "$", "**")},
    {"envoy.ratelimit_prefix", "ratelimit", NULL, PAT("ratelimit", "$", "**")},
    {"envoy.cluster_name", "cluster", NULL, PAT("cluster", "$", "**")},
    {"envoy.http_conn_manager_prefix", "http", NULL, PAT("http", "$", "**")},
    {"envoy.virtual_host", "vhost", NULL, PAT("vhost", "$", "**")},
    {"envoy.mongo_prefix", "mongo", NULL, PAT("mongo", "$", "**")},
    {"envoy.route", "vhost", NULL, PAT("vhost", "*", "route", "$", "**")},
    {"envoy.thrift_prefix", "thrift", NULL, PAT("thrift", "$", "**")},
    {"envoy.redis_prefix", "redis", NULL, PAT("redis", "$", "**")},
    {"envoy.local_http_ratelimit_prefix", NULL, NULL, PAT("$", "http_local_rate_limit", "**")},
    {"envoy.local_network_ratelimit_prefix", "local_rate_limit", NULL,
     PAT("local_rate_limit", "$", "**")},
};

typedef struct {
    size_t start, len;
} tok_t;

typedef struct {
    const char *name;
    size_t len;
    tok_t *tok;
    size_t ntok;
    uint8_t *removed; /* one flag per character of name */
} xctx_t;

static bool tok_is(const xctx_t *x, size_t i, const char *s)
{
    size_t l = strlen(s);
    return x->tok[i].len == l && memcmp(x->name + x->tok[i].start, s, l) == 0;
}

/* Matches pattern tokens from `pi` against name tokens from `in`; `ci` is the
 * character offset of token `in`. Records the offset and index of the "$"
 * token. A "**" that is not last tries every split of the remaining input. */
static bool tok_search(const xctx_t *x, const char *const *pat, size_t npat, size_t match,
                       size_t in, size_t pi, size_t ci, size_t *start, size_t *mi)
{
    for (; in < x->ntok && pi < npat; ++in, ++pi) {
        if (pi == match) {
            *start = ci;
            *mi = in;
            ci += x->tok[in].len + 1;
            continue;
        }
        if (strcmp(pat[pi], "**") == 0) {
            if (pi == npat - 1) return true;
            ++pi;
            for (; in < x->ntok; ++in) {
                if (tok_search(x, pat, npat, match, in, pi, ci, start, mi)) return true;
                ci += x->tok[in].len + 1;
            }
            return false;
        }
        if (strcmp(pat[pi], "*") != 0 && !tok_is(x, in, pat[pi])) return false;
        ci += x->tok[in].len + 1;
    }
    return pi == npat && in == x->ntok;
}

/* A token rule removes the value token with the dot after it, or the dot
 * before it when it is the last token. */
static bool tok_match(const xctx_t *x, const char *const *pat, size_t *rs, size_t *re, size_t *vs,
                      size_t *ve)
{
    size_t npat = 0, match = 0;
    for (; pat[npat]; npat++)
        if (strcmp(pat[npat], "$") == 0) match = npat;
    size_t start = 0, mi = x->ntok;
    if (!tok_search(x, pat, npat, match, 0, 0, 0, &start, &mi) || mi >= x->ntok) return false;
    *vs = start;
    *ve = start + x->tok[mi].len;
    *rs = start;
    *re = *ve;
    if (mi + 1 < x->ntok)
        ++*re;
    else if (start > 0)
        --*rs;
    return true;
}

size_t sharp_stats_extract_tags(const char *name, sharp_sbuf_t *out, sharp_stat_tag_t *tags,
                                size_t max)
{
    xctx_t x = {.name = name, .len = strlen(name)};
    x.ntok = 1;
    for (size_t i = 0; i < x.len; i++)
        x.ntok += name[i] == '.';
    x.tok = sharp_calloc(x.ntok, sizeof *x.tok);
    x.removed = sharp_calloc(x.len + 1, 1);
    for (size_t i = 0, t = 0, st = 0; i <= x.len; i++) {
        if (i == x.len || name[i] == '.') {
            x.tok[t++] = (tok_t){st, i - st};
            st = i + 1;
        }
    }
    const char *dot = strchr(name, '.');
    size_t first_len = dot ? (size_t)(dot - name) : 0;

    /* Rules without a prefix token run first, then those keyed by the first
     * token, each group in table order; a tag name is extracted once. */
    size_t ntags = 0;
    const char *seen[SHARP_ARRAY_SIZE(extractors)];
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !dot) break;
        for (size_t i = 0; i < SHARP_ARRAY_SIZE(extractors); i++) {
            const extractor_t *e = &extractors[i];
            if (pass == 0 ? e->prefix != NULL
                          : !e->prefix || strlen(e->prefix) != first_len ||
                                memcmp(e->prefix, name, first_len) != 0)
                continue;
            bool dup = false;
            for (size_t k = 0; k < ntags && !dup; k++)
                dup = strcmp(seen[k], e->tag) == 0;
            if (dup) continue;
            size_t rs, re, vs, ve;
            bool ok = e->fn ? e->fn(name, x.len, &rs, &re, &vs, &ve)
                            : tok_match(&x, e->pattern, &rs, &re, &vs, &ve);
            if (!ok) continue;
            if (tags && ntags < max) tags[ntags] = (sharp_stat_tag_t){e->tag, name + vs, ve - vs};
            seen[ntags++] = e->tag;
            memset(x.removed + rs, 1, re - rs);
        }
    }
    if (out) {
        for (size_t i = 0; i < x.len; i++)
            if (!x.removed[i]) sharp_sbuf_append(out, name + i, 1);
        sharp_sbuf_cstr(out);
    }
    free(x.tok);
    free(x.removed);
    return ntags < max ? ntags : max;
}

/* ---- Prometheus --------------------------------------------------------- */

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

static char *take(sharp_sbuf_t *b)
{
    sharp_sbuf_cstr(b);
    char *p = b->data;
    memset(b, 0, sizeof *b);
    return p;
}

static void prepare_prometheus(entry_t *x)
{
    sharp_stat_tag_t tags[16];
    sharp_sbuf_t fam = {0}, metric = {0}, labels = {0};
    size_t n = sharp_stats_extract_tags(x->name, &fam, tags, SHARP_ARRAY_SIZE(tags));
    sharp_sbuf_puts(&metric, "envoy_");
    put_sanitized(&metric, fam.data, fam.len);
    for (size_t i = 0; i < n; i++) {
        if (i) sharp_sbuf_puts(&labels, ",");
        put_sanitized(&labels, tags[i].tag, strlen(tags[i].tag));
        sharp_sbuf_puts(&labels, "=\"");
        put_label_value(&labels, tags[i].value, tags[i].len);
        sharp_sbuf_puts(&labels, "\"");
    }
    x->family = take(&fam);
    x->metric = take(&metric);
    x->labels = take(&labels);
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
    for (size_t i = 0; i < e.n; i++)
        prepare_prometheus(&e.v[i]);
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
            for (size_t k = 0; k < SHARP_ARRAY_SIZE(prom_buckets); k++)
                sharp_sbuf_printf(out, "%s_bucket{%s%sle=\"%.32g\"} %" PRIu64 "\n", x->metric,
                                  x->labels, sep, prom_buckets[k],
                                  sharp_hist_merged_count_le(cum, prom_buckets[k]));
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

/* route.c: matching requests against a route table (see route.h), with
 * Envoy's semantics: virtual hosts by authority, then the first route whose
 * path, headers, query parameters and the rest all accept the request.
 * Building helpers, header mutations and freeing are in route_build.c. */
#include "http/route.h"
#include "http/ratelimit_policy.h"
#include "runtime.h"

#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include "sbuf.h"

/* ---- virtual hosts ---- */

typedef struct {
    const char *key; /* lower-case, without the '*' for wildcards */
    size_t len;
    const sharp_vhost_t *vh;
    uint32_t vi, di; /* where it was configured, for error messages */
} dom_entry_t;

/* Exact domains sorted by (length, bytes) for binary search; wildcards
 * sorted longest first so the first hit is the longest match. */
typedef struct {
    dom_entry_t *exact, *suffix, *prefix;
    uint32_t nexact, nsuffix, nprefix;
    const sharp_vhost_t *catch_all;
    char *keys; /* one block holding every key */
} dom_index_t;

/* Where the port starts in an authority (the ':'), or len when there is
 * none; "[::1]" has no port, "[::1]:80" does. */
static size_t port_start(sharp_str_t a)
{
    const char *colon = memrchr(a.p, ':', a.len);
    if (!colon) return a.len;
    const char *v6_end = memrchr(a.p, ']', a.len);
    if (v6_end && v6_end > colon) return a.len;
    return (size_t)(colon - a.p);
}

/* Equal keys stay in configuration order, so a duplicate is reported at
 * its second occurrence. */
static int dom_cmp_pos(const dom_entry_t *x, const dom_entry_t *y)
{
    if (x->vi != y->vi) return x->vi < y->vi ? -1 : 1;
    return x->di < y->di ? -1 : x->di > y->di;
}

static int dom_cmp_exact(const void *a, const void *b)
{
    const dom_entry_t *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    int c = memcmp(x->key, y->key, x->len);
    return c ? c : dom_cmp_pos(x, y);
}

static int dom_cmp_wild(const void *a, const void *b)
{
    const dom_entry_t *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    int c = memcmp(x->key, y->key, x->len);
    return c ? c : dom_cmp_pos(x, y);
}

/* Host against a key that is already lower-case. */
static bool ieq(const char *host, const char *key, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)host[i]) != (unsigned char)key[i]) return false;
    return true;
}

static const sharp_vhost_t *find_indexed(const dom_index_t *ix, sharp_str_t host)
{
    uint32_t lo = 0, hi = ix->nexact;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        const dom_entry_t *e = &ix->exact[mid];
        int c = 0;
        if (e->len != host.len) c = e->len < host.len ? -1 : 1;
        for (size_t i = 0; !c && i < host.len; i++) {
            int hc = tolower((unsigned char)host.p[i]);
            c = (unsigned char)e->key[i] - hc;
        }
        if (!c) return e->vh;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (uint32_t i = 0; i < ix->nsuffix; i++) {
        const dom_entry_t *e = &ix->suffix[i];
        if (e->len < host.len && ieq(host.p + host.len - e->len, e->key, e->len)) return e->vh;
    }
    for (uint32_t i = 0; i < ix->nprefix; i++) {
        const dom_entry_t *e = &ix->prefix[i];
        if (e->len < host.len && ieq(host.p, e->key, e->len)) return e->vh;
    }
    return ix->catch_all;
}

/* The same order without an index: one pass keeping the best candidate of
 * each kind. */
static const sharp_vhost_t *find_scan(const sharp_route_table_t *t, sharp_str_t host)
{
    const sharp_vhost_t *suffix = NULL, *prefix = NULL, *any = NULL;
    size_t suffix_len = 0, prefix_len = 0;
    for (uint32_t v = 0; v < t->nvhosts; v++) {
        const sharp_vhost_t *vh = &t->vhosts[v];
        for (uint32_t d = 0; d < vh->ndomains; d++) {
            const char *dom = vh->domains[d];
            size_t n = strlen(dom);
            if (n == 1 && dom[0] == '*') {
                if (!any) any = vh;
            } else if (n && dom[0] == '*') {
                if (n - 1 < host.len && n - 1 > suffix_len &&
                    strncasecmp(host.p + host.len - (n - 1), dom + 1, n - 1) == 0) {
                    suffix = vh;
                    suffix_len = n - 1;
                }
            } else if (n && dom[n - 1] == '*') {
                if (n - 1 < host.len && n - 1 > prefix_len &&
                    strncasecmp(host.p, dom, n - 1) == 0) {
                    prefix = vh;
                    prefix_len = n - 1;
                }
            } else if (n == host.len && strncasecmp(host.p, dom, n) == 0) {
                return vh;
            }
        }
    }
    return suffix ? suffix : prefix ? prefix : any;
}

const sharp_vhost_t *sharp_route_table_find_vhost(const sharp_route_table_t *t,
                                                  sharp_str_t authority)
{
    if (!t) return NULL;
    if (t->ignore_port_in_host_matching) authority.len = port_start(authority);
    return t->domain_index ? find_indexed(t->domain_index, authority) : find_scan(t, authority);
}

/* Envoy's checks, plus the index. Keys are lower-cased copies owned by the
 * index (one allocation holds all of them). */
int sharp_route_table_build_index(sharp_route_table_t *t, char *err, size_t errlen)
{
    uint32_t total = 0;
    size_t bytes = 0;
    for (uint32_t v = 0; v < t->nvhosts; v++)
        for (uint32_t d = 0; d < t->vhosts[v].ndomains; d++) {
            total++;
            bytes += strlen(t->vhosts[v].domains[d]) + 1;
        }
    dom_index_t *ix = sharp_calloc(1, sizeof *ix);
    ix->exact = sharp_calloc(total ? total : 1, sizeof *ix->exact);
    ix->suffix = sharp_calloc(total ? total : 1, sizeof *ix->suffix);
    ix->prefix = sharp_calloc(total ? total : 1, sizeof *ix->prefix);
    char *keys = sharp_calloc(bytes ? bytes : 1, 1), *kp = keys;
    ix->keys = keys;
    for (uint32_t v = 0; v < t->nvhosts; v++) {
        const sharp_vhost_t *vh = &t->vhosts[v];
        for (uint32_t d = 0; d < vh->ndomains; d++) {
            const char *dom = vh->domains[d];
            size_t n = strlen(dom);
            for (size_t i = 0; i <= n; i++)
                kp[i] = (char)tolower((unsigned char)dom[i]);
            if (n == 1 && dom[0] == '*') {
                if (ix->catch_all) {
                    if (err && errlen)
                        snprintf(err, errlen,
                                 "virtual_hosts[%u].domains[%u]: Only a single wildcard domain is "
                                 "permitted in route %s",
                                 v, d, t->name ? t->name : "");
                    goto bad;
                }
                ix->catch_all = vh;
            } else if (n && dom[0] == '*') {
                ix->suffix[ix->nsuffix++] = (dom_entry_t){kp + 1, n - 1, vh, v, d};
            } else if (n && dom[n - 1] == '*') {
                ix->prefix[ix->nprefix++] = (dom_entry_t){kp, n - 1, vh, v, d};
            } else {
                ix->exact[ix->nexact++] = (dom_entry_t){kp, n, vh, v, d};
            }
            kp += n + 1;
        }
    }
    qsort(ix->exact, ix->nexact, sizeof *ix->exact, dom_cmp_exact);
    qsort(ix->suffix, ix->nsuffix, sizeof *ix->suffix, dom_cmp_wild);
    qsort(ix->prefix, ix->nprefix, sizeof *ix->prefix, dom_cmp_wild);
    struct {
        dom_entry_t *v;
        uint32_t n;
        const char *fmt;
    } kinds[] = {{ix->exact, ix->nexact, "%.*s"},
                 {ix->suffix, ix->nsuffix, "*%.*s"},
                 {ix->prefix, ix->nprefix, "%.*s*"}};
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(kinds); k++)
        for (uint32_t i = 1; i < kinds[k].n; i++) {
            const dom_entry_t *a = &kinds[k].v[i - 1], *b = &kinds[k].v[i];
            if (a->len == b->len && memcmp(a->key, b->key, a->len) == 0) {
                char dom[300];
                snprintf(dom, sizeof dom, kinds[k].fmt, (int)a->len, a->key);
                if (err && errlen)
                    snprintf(err, errlen,
                             "virtual_hosts[%u].domains[%u]: Only unique values for domains are "
                             "permitted. Duplicate entry of domain %s in route %s",
                             b->vi, b->di, dom, t->name ? t->name : "");
                goto bad;
            }
        }
    t->domain_index = ix;
    return 0;
bad:
    free(ix->exact);
    free(ix->suffix);
    free(ix->prefix);
    free(keys);
    free(ix);
    return -1;
}

/* Frees the index built above (called by sharp_route_table_free). */
void sharp__route_index_free(void *p)
{
    dom_index_t *ix = p;
    if (!ix) return;
    free(ix->keys);
    free(ix->exact);
    free(ix->suffix);
    free(ix->prefix);
    free(ix);
}

/* ---- string and header matchers ---- */

char *sharp_regex_rewrite_path(const sharp_re2_t *re, const char *sub, sharp_str_t path,
                               size_t *pathlen, size_t *outlen)
{
    size_t n = 0;
    while (n < path.len && path.p[n] != '?' && path.p[n] != '#')
        n++;
    *pathlen = n;
    char *out = NULL;
    if (sharp_re2_replace_all(re, path.p, n, sub, &out, outlen) < 0) return NULL;
    return out;
}

static bool contains(sharp_str_t v, const char *pat, size_t n, bool icase)
{
    if (n > v.len) return false;
    for (size_t i = 0; i + n <= v.len; i++)
        if (icase ? strncasecmp(v.p + i, pat, n) == 0 : memcmp(v.p + i, pat, n) == 0) return true;
    return false;
}

bool sharp_string_matcher_match(const sharp_string_matcher_t *m, sharp_str_t v)
{
    size_t n = m->len;
    bool ic = m->ignore_case;
    switch (m->kind) {
    case SHARP_SM_EXACT:
        return v.len == n &&
               (ic ? strncasecmp(v.p, m->value, n) == 0 : memcmp(v.p, m->value, n) == 0);
    case SHARP_SM_PREFIX:
        return v.len >= n &&
               (ic ? strncasecmp(v.p, m->value, n) == 0 : memcmp(v.p, m->value, n) == 0);
    case SHARP_SM_SUFFIX: {
        const char *tail = v.p + v.len - n;
        return v.len >= n &&
               (ic ? strncasecmp(tail, m->value, n) == 0 : memcmp(tail, m->value, n) == 0);
    }
    case SHARP_SM_CONTAINS:
        return contains(v, m->value, n, ic);
    case SHARP_SM_REGEX:
        return m->re && sharp_re2_full_match(m->re, v.p, v.len);
    }
    return false;
}

/* absl::SimpleAtoi: optional surrounding ASCII whitespace, optional sign,
 * decimal digits, no overflow. */
static bool parse_i64(sharp_str_t v, int64_t *out)
{
    size_t i = 0, e = v.len;
    while (i < e && isspace((unsigned char)v.p[i]))
        i++;
    while (e > i && isspace((unsigned char)v.p[e - 1]))
        e--;
    bool neg = false;
    if (i < e && (v.p[i] == '+' || v.p[i] == '-')) neg = v.p[i++] == '-';
    if (i == e) return false;
    uint64_t x = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < e; i++) {
        if (!isdigit((unsigned char)v.p[i])) return false;
        uint64_t d = (uint64_t)(v.p[i] - '0');
        if (x > (limit - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return true;
}

/* Envoy's HeaderUtility::matchHeaders: a missing header matches only a
 * present_match: false (or, inverted, present_match: true), unless
 * treat_missing_header_as_empty makes it the empty string. Repeated
 * headers are joined with ",". (Envoy's legacy exact_match "" accepts any
 * value: the config translation turns it into present_match: true, which
 * behaves identically.) */
bool sharp_header_matcher_match(const sharp_header_matcher_t *m, const sharp_headers_t *h)
{
    sharp_sbuf_t joined = {0};
    sharp_str_t v = SHARP_STR("");
    if (!sharp_headers_get_all(h, m->name, m->name_len, &joined, &v) && !m->treat_missing_as_empty) {
        bool present_kind = m->kind == SHARP_HM_PRESENT;
        return m->invert ? present_kind && m->present : present_kind && !m->present;
    }
    bool match = false;
    switch (m->kind) {
    case SHARP_HM_STRING:
        match = sharp_string_matcher_match(&m->sm, v);
        break;
    case SHARP_HM_PRESENT:
        match = m->present;
        break;
    case SHARP_HM_RANGE: {
        int64_t x;
        match = parse_i64(v, &x) && x >= m->range_start && x < m->range_end;
        break;
    }
    }
    sharp_sbuf_free(&joined);
    return match != m->invert;
}

/* First value of query parameter `name` in the raw (not percent-decoded)
 * query string, as Envoy's route matching sees it; "?flag" has value "". */
static bool query_param(sharp_str_t q, const char *name, sharp_str_t *val)
{
    size_t nlen = strlen(name), i = 0;
    while (i < q.len) {
        const char *amp = memchr(q.p + i, '&', q.len - i);
        size_t end = amp ? (size_t)(amp - q.p) : q.len;
        const char *eq = memchr(q.p + i, '=', end - i);
        size_t kend = eq ? (size_t)(eq - q.p) : end;
        if (kend - i == nlen && memcmp(q.p + i, name, nlen) == 0) {
            *val = eq ? (sharp_str_t){eq + 1, end - kend - 1} : SHARP_STR("");
            return true;
        }
        i = end + 1;
    }
    return false;
}

/* ---- routes ---- */

static bool is_grpc(const sharp_headers_t *req)
{
    sharp_str_t ct;
    if (!sharp_headers_get_cstr(req, "content-type", &ct)) return false;
    static const char g[] = "application/grpc";
    size_t n = sizeof g - 1;
    return ct.len >= n && memcmp(ct.p, g, n) == 0 &&
           (ct.len == n || ct.p[n] == '+' || ct.p[n] == ';');
}

static bool path_prefix(const sharp_route_t *r, sharp_str_t path)
{
    if (path.len < r->path_len) return false;
    return r->case_sensitive ? memcmp(path.p, r->path, r->path_len) == 0
                             : strncasecmp(path.p, r->path, r->path_len) == 0;
}

/* Path matching sees :path without its query and fragment, as Envoy's
 * PathMatcher does. */
static bool path_matches(const sharp_route_t *r, sharp_str_t full)
{
    size_t n = 0;
    while (n < full.len && full.p[n] != '?' && full.p[n] != '#')
        n++;
    sharp_str_t path = {full.p, n};
    switch (r->match_kind) {
    case SHARP_ROUTE_MATCH_PREFIX:
        return path_prefix(r, path);
    case SHARP_ROUTE_MATCH_PATH:
        return path.len == r->path_len && path_prefix(r, path);
    case SHARP_ROUTE_MATCH_REGEX:
        return r->path_re && sharp_re2_full_match(r->path_re, path.p, path.len);
    case SHARP_ROUTE_MATCH_PATH_SEPARATED_PREFIX:
        return path_prefix(r, path) && (path.len == r->path_len || path.p[r->path_len] == '/');
    case SHARP_ROUTE_MATCH_CONNECT:
        return true; /* the method was checked first */
    }
    return false;
}

bool sharp_fraction_enabled(const sharp_runtime_fraction_t *f, uint64_t random)
{
    return sharp_runtime_fraction_enabled(f->key, f->numerator, f->denominator, random);
}

static bool route_matches(const sharp_route_t *r, const sharp_headers_t *req, uint64_t random)
{
    if (r->has_runtime_fraction && !sharp_fraction_enabled(&r->runtime_fraction, random)) return false;
    if (r->match_grpc && !is_grpc(req)) return false;
    for (uint32_t i = 0; i < r->nheaders; i++)
        if (!sharp_header_matcher_match(&r->headers[i], req)) return false;
    if (r->match_kind == SHARP_ROUTE_MATCH_CONNECT) {
        sharp_str_t m;
        if (!sharp_headers_get_cstr(req, ":method", &m) || !sharp_str_eq(m, "CONNECT", 7)) return false;
    }
    /* Envoy matches the path of a request that has none (a CONNECT) as
     * the empty string: only a prefix "" takes it besides connect_matcher */
    sharp_str_t path = SHARP_STR("");
    sharp_headers_get_cstr(req, ":path", &path);
    if (r->nquery && !sharp_query_matchers_match(r->query, r->nquery, path)) return false;
    return path_matches(r, path);
}

bool sharp_query_matchers_match(const sharp_query_matcher_t *qm, uint32_t n, sharp_str_t path)
{
    const char *mark = memchr(path.p, '?', path.len);
    sharp_str_t q =
        mark ? (sharp_str_t){mark + 1, path.len - (size_t)(mark + 1 - path.p)} : SHARP_STR("");
    for (uint32_t i = 0; i < n; i++) {
        sharp_str_t val;
        if (!query_param(q, qm[i].name, &val)) return false;
        if (!qm[i].present_match && !sharp_string_matcher_match(&qm[i].sm, val)) return false;
    }
    return true;
}

const sharp_route_t *sharp_vhost_match_random(const sharp_vhost_t *vh, const sharp_headers_t *req,
                                              uint64_t random)
{
    if (!vh) return NULL;
    if (vh->require_tls != SHARP_TLS_REQUIRE_NONE) {
        /* Envoy decides on x-forwarded-proto, which the connection manager
         * has set from the connection (or kept from a trusted hop) */
        sharp_str_t v;
        bool https = sharp_headers_get_cstr(req, "x-forwarded-proto", &v) && sharp_str_eq(v, "https", 5);
        bool internal = sharp_headers_get_cstr(req, "x-envoy-internal", &v) && sharp_str_eq(v, "true", 4);
        if (!https && (vh->require_tls == SHARP_TLS_REQUIRE_ALL || !internal)) return &vh->tls_redirect;
    }
    for (uint32_t i = 0; i < vh->nroutes; i++)
        if (route_matches(&vh->routes[i], req, random)) return &vh->routes[i];
    return NULL;
}

const sharp_route_t *sharp_vhost_match(const sharp_vhost_t *vh, const sharp_headers_t *req)
{
    return sharp_vhost_match_random(vh, req, 0);
}

/* Envoy's weighted pick: random % total, then the cluster whose cumulative
 * weight range holds it. */
const char *sharp_route_pick_cluster(const sharp_route_t *r, uint64_t random,
                                     const sharp_weighted_cluster_t **picked)
{
    if (picked) *picked = NULL;
    if (!r->nweighted) return r->cluster;
    uint64_t total = r->total_weight;
    if (r->weighted_runtime) {
        /* Envoy's pickWeightedCluster: the runtime's weights, summed per
         * request; no cluster when they add up to 0 or overflow 32 bits */
        total = 0;
        for (uint32_t i = 0; i < r->nweighted; i++) {
            uint64_t wt = sharp_runtime_get_u64(r->weighted[i].runtime_key, r->weighted[i].weight);
            if (wt > UINT32_MAX - total) return NULL;
            total += wt;
        }
    }
    if (!total) return NULL;
    uint64_t sel = random % total, end = 0;
    for (uint32_t i = 0; i < r->nweighted; i++) {
        end += r->weighted_runtime
                   ? sharp_runtime_get_u64(r->weighted[i].runtime_key, r->weighted[i].weight)
                   : r->weighted[i].weight;
        if (sel < end) {
            if (picked) *picked = &r->weighted[i];
            return r->weighted[i].name;
        }
    }
    return NULL;
}

static const sharp_upgrade_t *upgrade_find(const sharp_upgrade_t *u, uint32_t n, sharp_str_t type)
{
    for (uint32_t i = 0; i < n; i++)
        if (strlen(u[i].type) == type.len && strncasecmp(u[i].type, type.p, type.len) == 0) return &u[i];
    return NULL;
}

bool sharp_upgrade_allowed(const sharp_upgrade_t *hcm, uint32_t nhcm, const sharp_route_t *r, sharp_str_t type)
{
    const sharp_upgrade_t *ru = r ? upgrade_find(r->upgrades, r->nupgrades, type) : NULL;
    if (ru) return ru->enabled;
    const sharp_upgrade_t *hu = upgrade_find(hcm, nhcm, type);
    return hu && hu->enabled;
}

/* ---- timeouts ---- */

uint64_t sharp_route_timeout_ms(const sharp_route_t *r, bool grpc, bool has_grpc, uint64_t grpc_ms,
                                bool *grpc_rewrite)
{
    *grpc_rewrite = false;
    if (r->has_msd) return 0;
    if (!grpc || !r->has_max_grpc_timeout) return r->timeout_ms;
    uint64_t t = has_grpc ? grpc_ms : 0;
    /* the offset only while it leaves time: 0 would mean no timeout */
    if (r->has_grpc_timeout_offset && r->grpc_timeout_offset_ms < t) t -= r->grpc_timeout_offset_ms;
    if (r->max_grpc_timeout_ms && (t == 0 || t > r->max_grpc_timeout_ms)) t = r->max_grpc_timeout_ms;
    *grpc_rewrite = true;
    return t;
}

sharp_msd_t sharp_route_stream_duration(const sharp_route_t *r, bool has_grpc, uint64_t grpc_ms, uint64_t *ms)
{
    if (!has_grpc || !r->has_grpc_header_max) {
        if (!r->has_msd_max) return SHARP_MSD_HCM;
        if (r->msd_max_ms == 0) return SHARP_MSD_NONE; /* an explicit 0s: no limit */
        *ms = r->msd_max_ms;
        return SHARP_MSD_SET;
    }
    uint64_t t = grpc_ms;
    if (r->grpc_header_max_ms && t > r->grpc_header_max_ms) t = r->grpc_header_max_ms;
    if (t && r->has_grpc_header_offset) t = r->grpc_header_offset_ms < t ? t - r->grpc_header_offset_ms : 0;
    *ms = t;
    return SHARP_MSD_SET;
}

/* ---- per-route filter configs ---- */

/* The levels from the most specific: weighted cluster, route, virtual
 * host, route table; n of them hold entries. */
static int per_filter_levels(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                             const sharp_weighted_cluster_t *wc, const sharp_per_filter_configs_t *out[4])
{
    const sharp_per_filter_configs_t *all[4] = {wc ? &wc->per_filter : NULL, r ? &r->per_filter : NULL,
                                                vh ? &vh->per_filter : NULL, t ? &t->per_filter : NULL};
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (all[i] && all[i]->n) out[n++] = all[i];
    return n;
}

static const sharp_per_filter_t *per_filter_find(const sharp_per_filter_configs_t *c, const char *name)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i].name, name) == 0) return &c->v[i];
    return NULL;
}

bool sharp_route_has_filter_configs(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                    const sharp_weighted_cluster_t *wc)
{
    const sharp_per_filter_configs_t *levels[4];
    return per_filter_levels(t, vh, r, wc, levels) > 0;
}

const void *sharp_route_filter_config(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                      const sharp_weighted_cluster_t *wc, const char *name,
                                      const struct sharp_filter_factory *factory)
{
    const void *most_specific;
    return sharp_route_filter_configs(t, vh, r, wc, name, factory, &most_specific, 1) ? most_specific : NULL;
}

uint32_t sharp_route_filter_configs(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                    const sharp_weighted_cluster_t *wc, const char *name,
                                    const struct sharp_filter_factory *factory, const void **out, uint32_t cap)
{
    const sharp_per_filter_configs_t *levels[4];
    int n = name ? per_filter_levels(t, vh, r, wc, levels) : 0;
    uint32_t k = 0;
    for (int i = 0; i < n && k < cap; i++) {
        const sharp_per_filter_t *e = per_filter_find(levels[i], name);
        if (e && e->config && e->factory == factory) out[k++] = e->config;
    }
    return k;
}

int sharp_route_filter_disabled(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                const sharp_weighted_cluster_t *wc, const char *name)
{
    const sharp_per_filter_configs_t *levels[4];
    int n = name ? per_filter_levels(t, vh, r, wc, levels) : 0;
    for (int i = 0; i < n; i++) {
        const sharp_per_filter_t *e = per_filter_find(levels[i], name);
        if (e) return e->disabled ? 1 : 0;
    }
    return -1;
}

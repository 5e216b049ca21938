/* stats_tags.c: Envoy's tag extraction and the rest of the bootstrap's
 * stats_config (see stats_config.h).
 *
 * Tag extraction follows Envoy's TagProducerImpl: every extractor looks at
 * the full stat name; an extractor whose name begins with a fixed first token
 * (its "prefix": "cluster" for "^cluster\\.((.+?)\\.)") runs only for stats
 * with that first token. Extractors without a prefix run first, then those of
 * the stat's first token, each group in the order they were added: Envoy's
 * defaults (use_all_default_tags), then stats_tags in config order. A tag
 * name is extracted at most once: when several extractors share a name (a
 * custom one named like a default, or two defaults), the first that matches
 * wins and the others are skipped. The tag-extracted name is the stat name
 * without the characters every matching extractor removed.
 *
 * Regex tags: the first capture group is removed from the name, the second
 * (or the first when there is only one) is the tag value, as in Envoy's
 * TagExtractorStdRegexImpl; a pattern without capture groups never tags.
 * Fixed tags add their value to every stat and remove nothing.
 */
#include "stats_config.h"
#include "std_regex_shim.h"

#include <pthread.h>
#include <stdio.h>

/* ---- Envoy's default extractors ----------------------------------------- */

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

/* Whether n[at..len) is one or more \w characters. */
static bool all_word(const char *n, size_t len, size_t at)
{
    if (at >= len) return false;
    for (size_t i = at; i < len; i++)
        if (!is_word(n[i])) return false;
    return true;
}

/* "versions.v<digit>.<\w+>" at n[at..len). */
static bool pp_versioned(const char *n, size_t len, size_t at)
{
    return has_prefix(n + at, len - at, "versions.v") && at + 11 < len && is_digit(n[at + 10]) &&
           n[at + 11] == '.' && all_word(n, len, at + 12);
}

/* The PROXY protocol listener filter's stats,
 * proxy_proto.[<stat_prefix>.][versions.v<N>.]<stat>: the version tag takes
 * "versions.v<N>." out (value N), the prefix tag "<stat_prefix>." (Envoy's
 * tag extractor tests: proxy_proto.p.versions.v2.error is proxy_proto.error
 * with both tags). */
static bool m_pp_version(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    if (!has_prefix(n, len, "proxy_proto.")) return false;
    size_t at = 12;
    if (!pp_versioned(n, len, at)) {
        const char *d = memchr(n + at, '.', len - at);
        if (!d || d == n + at) return false;
        at = (size_t)(d - n) + 1;
        if (!pp_versioned(n, len, at)) return false;
    }
    return SPAN(at, at + 12, at + 10, at + 11);
}

static bool m_pp_prefix(const char *n, size_t len, size_t *rs, size_t *re, size_t *vs, size_t *ve)
{
    if (!has_prefix(n, len, "proxy_proto.") || pp_versioned(n, len, 12)) return false;
    const char *d = memchr(n + 12, '.', len - 12);
    if (!d || d == n + 12) return false;
    size_t e = (size_t)(d - n);
    if (!all_word(n, len, e + 1) && !pp_versioned(n, len, e + 1)) return false;
    return SPAN(12, e + 1, 12, e);
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
    {"envoy.proxy_protocol_prefix", "proxy_proto", m_pp_prefix, NULL},
    {"envoy.proxy_protocol_version", "proxy_proto", m_pp_version, NULL},
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


/* ---- the configured tag producer ---------------------------------------- */

typedef enum { X_DEFAULT, X_REGEX, X_FIXED } xkind_t;

typedef struct {
    xkind_t kind;
    const char *tag;          /* the tag name */
    char *owned_tag;          /* X_REGEX, X_FIXED: the copy `tag` points to */
    char *prefix;             /* first token that enables it; NULL: every stat */
    const extractor_t *def;   /* X_DEFAULT */
    sharp_std_regex_t *re;    /* X_REGEX */
    unsigned groups;          /* X_REGEX: capture groups of the pattern */
    char *value;              /* X_FIXED */
} xtor_t;

typedef struct {
    sharp_string_matcher_t match;
    double *buckets;
    size_t n;
} bucket_rule_t;

struct sharp_stats_config {
    xtor_t *x;
    size_t nx, capx;
    sharp_stats_matcher_mode_t mode;
    sharp_string_matcher_t *pat;
    size_t npat;
    bucket_rule_t *rules;
    size_t nrules;
    bool deferred;
};

static xtor_t *push_xtor(sharp_stats_config_t *c)
{
    if (c->nx == c->capx) {
        c->capx = c->capx ? c->capx * 2 : 64;
        c->x = sharp_realloc(c->x, c->capx * sizeof *c->x);
    }
    xtor_t *x = &c->x[c->nx++];
    memset(x, 0, sizeof *x);
    return x;
}

static void add_default(sharp_stats_config_t *c, const extractor_t *e)
{
    xtor_t *x = push_xtor(c);
    x->kind = X_DEFAULT;
    x->tag = e->tag;
    x->def = e;
    x->prefix = e->prefix ? sharp_strdup(e->prefix) : NULL;
}

/* Envoy's TagExtractorImplBase::extractRegexPrefix: a regex that starts with
 * "^" and a run of [A-Za-z0-9_] followed by "\." or "(?=\." (or by a final
 * "$") only matches stats whose first token is that run. */
static char *regex_prefix(const char *regex)
{
    if (regex[0] != '^') return NULL;
    size_t len = strlen(regex);
    for (size_t i = 1; i < len; i++) {
        char ch = regex[i];
        if (is_word(ch)) continue;
        if (i == 1) return NULL;
        bool last = i == len - 1;
        bool ok = last ? ch == '$'
                       : strncmp(regex + i, "\\.", 2) == 0 || strncmp(regex + i, "(?=\\.)", 6) == 0;
        if (!ok) return NULL;
        char *p = sharp_calloc(i, 1);
        memcpy(p, regex + 1, i - 1);
        return p;
    }
    return NULL;
}

sharp_stats_config_t *sharp_stats_config_create(bool use_all_default_tags)
{
    sharp_stats_config_t *c = sharp_calloc(1, sizeof *c);
    if (use_all_default_tags)
        for (size_t i = 0; i < SHARP_ARRAY_SIZE(extractors); i++)
            add_default(c, &extractors[i]);
    return c;
}

void sharp_stats_config_free(sharp_stats_config_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nx; i++) {
        free(c->x[i].owned_tag);
        free(c->x[i].prefix);
        sharp_std_regex_free(c->x[i].re);
        free(c->x[i].value);
    }
    free(c->x);
    for (size_t i = 0; i < c->npat; i++)
        sharp_string_matcher_free(&c->pat[i]);
    free(c->pat);
    for (size_t i = 0; i < c->nrules; i++) {
        sharp_string_matcher_free(&c->rules[i].match);
        free(c->rules[i].buckets);
    }
    free(c->rules);
    free(c);
}

int sharp_stats_config_add_regex_tag(sharp_stats_config_t *c, const char *name,
                                     const char *regex, char *err, size_t errlen)
{
    sharp_std_regex_t *re = sharp_std_regex_compile(regex, err, errlen);
    if (!re) return -1;
    xtor_t *x = push_xtor(c);
    x->kind = X_REGEX;
    x->owned_tag = sharp_strdup(name);
    x->tag = x->owned_tag;
    x->prefix = regex_prefix(regex);
    x->re = re;
    x->groups = sharp_std_regex_groups(re);
    return 0;
}

size_t sharp_stats_config_add_default_tag(sharp_stats_config_t *c, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(extractors); i++) {
        if (strcmp(extractors[i].tag, name) != 0) continue;
        add_default(c, &extractors[i]);
        n++;
    }
    return n;
}

void sharp_stats_config_add_fixed_tag(sharp_stats_config_t *c, const char *name,
                                      const char *value)
{
    xtor_t *x = push_xtor(c);
    x->kind = X_FIXED;
    x->owned_tag = sharp_strdup(name);
    x->tag = x->owned_tag;
    x->value = sharp_strdup(value);
    /* Envoy builds a fixed extractor on the same base as a regex one, with
     * the value in the regex's place, so a value shaped like "^word\." gets
     * a prefix too. */
    x->prefix = regex_prefix(value);
}

/* ---- extraction --------------------------------------------------------- */

/* The producer of a store without stats_config: all of Envoy's defaults. */
static sharp_stats_config_t *defaults;

static void init_defaults(void)
{
    defaults = sharp_stats_config_create(true);
}

static bool run_xtor(const xtor_t *e, const xctx_t *x, size_t *rs, size_t *re, size_t *vs,
                     size_t *ve, const char **value)
{
    *value = x->name;
    switch (e->kind) {
    case X_DEFAULT:
        return e->def->fn ? e->def->fn(x->name, x->len, rs, re, vs, ve)
                          : tok_match(x, e->def->pattern, rs, re, vs, ve);
    case X_REGEX: {
        if (e->groups == 0) return false;
        sharp_std_regex_group_t g[2];
        if (!sharp_std_regex_search(e->re, x->name, x->len, g, 2)) return false;
        /* group 1 is removed; group 2 (when the pattern has one) is the
         * value, else group 1. A group that took no part reads as empty. */
        const sharp_std_regex_group_t *v = e->groups > 1 ? &g[1] : &g[0];
        *rs = g[0].start;
        *re = g[0].end;
        *vs = v->start;
        *ve = v->end;
        return true;
    }
    case X_FIXED:
        *value = e->value;
        *rs = *re = 0;
        *vs = 0;
        *ve = strlen(e->value);
        return true;
    }
    return false;
}

static bool prefix_is(const char *prefix, const char *name, size_t first_len)
{
    return strlen(prefix) == first_len && memcmp(prefix, name, first_len) == 0;
}

size_t sharp_stats_config_extract_tags(const sharp_stats_config_t *c, const char *name,
                                       sharp_sbuf_t *out, sharp_stat_tag_t *tags, size_t max)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (!c) {
        pthread_once(&once, init_defaults);
        c = defaults;
    }
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

    size_t ntags = 0;
    const char **seen = sharp_calloc(c->nx + 1, sizeof *seen);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !dot) break;
        for (size_t i = 0; i < c->nx; i++) {
            const xtor_t *e = &c->x[i];
            if (pass == 0 ? e->prefix != NULL : !e->prefix || !prefix_is(e->prefix, name, first_len))
                continue;
            bool dup = false;
            for (size_t k = 0; k < ntags && !dup; k++)
                dup = strcmp(seen[k], e->tag) == 0;
            if (dup) continue;
            size_t rs, re, vs, ve;
            const char *value;
            if (!run_xtor(e, &x, &rs, &re, &vs, &ve, &value)) continue;
            if (tags && ntags < max) tags[ntags] = (sharp_stat_tag_t){e->tag, value + vs, ve - vs};
            seen[ntags++] = e->tag;
            if (re > rs) memset(x.removed + rs, 1, re - rs);
        }
    }
    if (out) {
        for (size_t i = 0; i < x.len; i++)
            if (!x.removed[i]) sharp_sbuf_append(out, name + i, 1);
        sharp_sbuf_cstr(out);
    }
    free(seen);
    free(x.tok);
    free(x.removed);
    return ntags < max ? ntags : max;
}

size_t sharp_stats_extract_tags(const char *name, sharp_sbuf_t *out, sharp_stat_tag_t *tags,
                                size_t max)
{
    return sharp_stats_config_extract_tags(NULL, name, out, tags, max);
}

/* ---- stats matcher ------------------------------------------------------ */

void sharp_stats_config_set_matcher(sharp_stats_config_t *c, sharp_stats_matcher_mode_t mode)
{
    c->mode = mode;
}

void sharp_stats_config_add_pattern(sharp_stats_config_t *c, sharp_string_matcher_t *m)
{
    c->pat = sharp_realloc(c->pat, (c->npat + 1) * sizeof *c->pat);
    c->pat[c->npat++] = *m;
    memset(m, 0, sizeof *m);
}

static bool any_pattern(const sharp_stats_config_t *c, const char *name)
{
    sharp_str_t v = {name, strlen(name)};
    for (size_t i = 0; i < c->npat; i++)
        if (sharp_string_matcher_match(&c->pat[i], v)) return true;
    return false;
}

/* Envoy's StatsMatcherImpl: an exclusion list rejects what any pattern
 * matches, an inclusion list rejects what no pattern matches. */
bool sharp_stats_config_rejects(const sharp_stats_config_t *c, const char *name)
{
    if (!c) return false;
    switch (c->mode) {
    case SHARP_STATS_ACCEPT_ALL: return false;
    case SHARP_STATS_REJECT_ALL: return true;
    case SHARP_STATS_EXCLUSION_LIST: return any_pattern(c, name);
    case SHARP_STATS_INCLUSION_LIST: return !any_pattern(c, name);
    }
    return false;
}

/* ---- histogram buckets -------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int sharp_stats_config_add_buckets(sharp_stats_config_t *c, sharp_string_matcher_t *m,
                                   const double *buckets, size_t n, char *err, size_t errlen)
{
    double *b = sharp_calloc(n ? n : 1, sizeof *b);
    memcpy(b, buckets, n * sizeof *b);
    qsort(b, n, sizeof *b, cmp_double);
    for (size_t i = 0; i < n; i++) {
        const char *why = !(b[i] > 0) ? "must be greater than 0"
                          : i && b[i] == b[i - 1] ? "appears twice (bounds must be unique)"
                                                  : NULL;
        if (why) {
            if (err && errlen) snprintf(err, errlen, "bucket bound %g %s", b[i], why);
            free(b);
            return -1;
        }
    }
    c->rules = sharp_realloc(c->rules, (c->nrules + 1) * sizeof *c->rules);
    c->rules[c->nrules++] = (bucket_rule_t){*m, b, n};
    memset(m, 0, sizeof *m);
    return 0;
}

const double *sharp_stats_config_buckets(const sharp_stats_config_t *c, const char *name,
                                         size_t *n)
{
    if (!c) return NULL;
    sharp_str_t v = {name, strlen(name)};
    for (size_t i = 0; i < c->nrules; i++) {
        if (sharp_string_matcher_match(&c->rules[i].match, v)) {
            *n = c->rules[i].n;
            return c->rules[i].buckets;
        }
    }
    return NULL;
}

/* ---- deferred creation -------------------------------------------------- */

void sharp_stats_config_set_deferred(sharp_stats_config_t *c, bool deferred)
{
    c->deferred = deferred;
}

bool sharp_stats_config_deferred(const sharp_stats_config_t *c)
{
    return c && c->deferred;
}

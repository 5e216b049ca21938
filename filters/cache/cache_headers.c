/* cache_headers.c: see cache_headers.h. */
#include "filters/cache/cache_headers.h"
#include "sbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static sharp_str_t trim(sharp_str_t s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.len--;
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

static bool is(sharp_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

/* RFC 7234 1.2.1: a delta-seconds larger than a cache can represent, or
 * whose calculations would overflow, counts as 2^31. */
#define DELTA_SECONDS_MAX 2147483648ll

/* Envoy's parseDuration: delta-seconds, optionally quoted; anything else
 * (or a negative number) is SHARP_CACHE_NONE. Clamped to 2^31, so every
 * product with 1000 and every sum of two stays far from overflow. */
static int64_t parse_seconds(sharp_str_t s)
{
    if (s.len > 1 && s.p[0] == '"' && s.p[s.len - 1] == '"') s.p++, s.len -= 2;
    s = trim(s);
    if (s.len && s.p[0] == '+') s.p++, s.len--;
    if (!s.len) return SHARP_CACHE_NONE;
    for (size_t i = 0; i < s.len; i++)
        if (s.p[i] < '0' || s.p[i] > '9') return SHARP_CACHE_NONE;
    /* digits only: a value over the bound (or past 64 bits) is the bound */
    uint64_t v;
    return sharp_parse_dec(s.p, s.len, DELTA_SECONDS_MAX, &v) ? (int64_t)v : DELTA_SECONDS_MAX;
}

/* Calls fn for each directive of a Cache-Control value: its name and
 * argument (empty when none), both trimmed. */
static void each_directive(sharp_str_t value, void (*fn)(sharp_str_t d, sharp_str_t arg, void *out),
                           void *out)
{
    const char *p = value.p, *end = value.p + value.len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        if (!comma) comma = end;
        sharp_str_t full = trim((sharp_str_t){p, (size_t)(comma - p)});
        const char *eq = memchr(full.p, '=', full.len);
        sharp_str_t d = full, arg = {"", 0};
        if (eq) {
            d = trim((sharp_str_t){full.p, (size_t)(eq - full.p)});
            arg = trim((sharp_str_t){eq + 1, (size_t)(full.p + full.len - eq - 1)});
        }
        if (d.len) fn(d, arg, out);
        p = comma + 1;
    }
}

static void req_directive(sharp_str_t d, sharp_str_t arg, void *out)
{
    sharp_cache_req_cc_t *cc = out;
    if (is(d, "no-cache"))
        cc->must_validate = true;
    else if (is(d, "no-store"))
        cc->no_store = true;
    else if (is(d, "no-transform"))
        cc->no_transform = true;
    else if (is(d, "only-if-cached"))
        cc->only_if_cached = true;
    else if (is(d, "max-age"))
        cc->max_age = parse_seconds(arg);
    else if (is(d, "min-fresh"))
        cc->min_fresh = parse_seconds(arg);
    else if (is(d, "max-stale"))
        cc->max_stale = arg.len ? parse_seconds(arg) : SHARP_CACHE_ANY;
}

static void resp_directive(sharp_str_t d, sharp_str_t arg, void *out)
{
    sharp_cache_resp_cc_t *cc = out;
    if (is(d, "no-cache"))
        cc->must_validate = true;
    else if (is(d, "must-revalidate") || is(d, "proxy-revalidate"))
        cc->no_stale = true;
    else if (is(d, "no-store") || is(d, "private"))
        cc->no_store = true;
    else if (is(d, "no-transform"))
        cc->no_transform = true;
    else if (is(d, "public"))
        cc->is_public = true;
    else if (is(d, "s-maxage"))
        cc->max_age = parse_seconds(arg);
    else if (cc->max_age == SHARP_CACHE_NONE && is(d, "max-age"))
        cc->max_age = parse_seconds(arg);
}

void sharp_cache_parse_request_cc(sharp_str_t value, sharp_cache_req_cc_t *out)
{
    each_directive(value, req_directive, out);
}

void sharp_cache_parse_response_cc(sharp_str_t value, sharp_cache_resp_cc_t *out)
{
    each_directive(value, resp_directive, out);
}

static void req_cc_init(sharp_cache_req_cc_t *cc)
{
    *cc = (sharp_cache_req_cc_t){
        .max_age = SHARP_CACHE_NONE, .min_fresh = SHARP_CACHE_NONE, .max_stale = SHARP_CACHE_NONE};
}

void sharp_cache_request_cc(const sharp_headers_t *h, sharp_cache_req_cc_t *out)
{
    req_cc_init(out);
    bool any = false;
    for (int i = sharp_headers_find(h, "cache-control", 13, 0); i >= 0;
         i = sharp_headers_find(h, "cache-control", 13, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(h, (uint32_t)i);
        if (v.len) any = true;
        sharp_cache_parse_request_cc(v, out);
    }
    if (any) return;
    /* RFC 7234 5.4: without cache-control, pragma: no-cache is no-cache;
     * its other directives are ignored */
    sharp_cache_req_cc_t pragma;
    req_cc_init(&pragma);
    for (int i = sharp_headers_find(h, "pragma", 6, 0); i >= 0;
         i = sharp_headers_find(h, "pragma", 6, (uint32_t)i + 1))
        sharp_cache_parse_request_cc(sharp_headers_value(h, (uint32_t)i), &pragma);
    out->must_validate = pragma.must_validate;
}

void sharp_cache_response_cc(const sharp_headers_t *h, sharp_cache_resp_cc_t *out)
{
    *out = (sharp_cache_resp_cc_t){.max_age = SHARP_CACHE_NONE};
    for (int i = sharp_headers_find(h, "cache-control", 13, 0); i >= 0;
         i = sharp_headers_find(h, "cache-control", 13, (uint32_t)i + 1))
        sharp_cache_parse_response_cc(sharp_headers_value(h, (uint32_t)i), out);
}

bool sharp_cache_http_date(sharp_str_t value, int64_t *secs)
{
    /* RFC 7231 7.1.1.1: IMF-fixdate, the obsolete RFC 850 form, asctime */
    static const char *const formats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                          "%a %b %e %H:%M:%S %Y"};
    char buf[64];
    if (value.len == 0 || value.len >= sizeof buf) return false;
    memcpy(buf, value.p, value.len);
    buf[value.len] = 0;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(buf, formats[i], &tm);
        if (!end || *end) continue;
        *secs = (int64_t)timegm(&tm);
        return true;
    }
    return false;
}

bool sharp_cache_header_date(const sharp_headers_t *h, const char *name, int64_t *secs)
{
    sharp_str_t v;
    return sharp_headers_get_cstr(h, name, &v) && sharp_cache_http_date(v, secs);
}

int64_t sharp_cache_age(const sharp_headers_t *resp, int64_t response_time_ms, int64_t now_ms)
{
    int64_t date_ms = response_time_ms, date;
    if (sharp_cache_header_date(resp, "date", &date)) date_ms = date * 1000;
    int64_t age_value = 0;
    sharp_str_t v;
    if (sharp_headers_get_cstr(resp, "age", &v)) {
        age_value = parse_seconds(v);
        if (age_value < 0) age_value = 0;
    }
    int64_t apparent_ms = response_time_ms - date_ms;
    if (apparent_ms < 0) apparent_ms = 0;
    /* the response delay is taken as negligible: corrected_age_value = age_value */
    int64_t initial_ms = apparent_ms > age_value * 1000 ? apparent_ms : age_value * 1000;
    int64_t age_ms = initial_ms + (now_ms - response_time_ms);
    return age_ms / 1000;
}

bool sharp_cache_requires_validation(const sharp_cache_req_cc_t *req, const sharp_headers_t *resp,
                                     int64_t age)
{
    sharp_cache_resp_cc_t cc;
    sharp_cache_response_cc(resp, &cc);
    bool request_max_age_exceeded = req->max_age != SHARP_CACHE_NONE && req->max_age < age;
    if (cc.must_validate || req->must_validate || request_max_age_exceeded) return true;
    int64_t lifetime;
    if (cc.max_age != SHARP_CACHE_NONE) {
        lifetime = cc.max_age;
    } else {
        /* stored responses have Date and Expires when they lack max-age */
        int64_t expires = 0, date = 0;
        sharp_cache_header_date(resp, "expires", &expires);
        sharp_cache_header_date(resp, "date", &date);
        lifetime = expires - date;
    }
    if (age > lifetime) {
        /* stale: served only when the response allows it and max-stale covers it */
        bool allowed_by_max_stale =
            req->max_stale != SHARP_CACHE_NONE && req->max_stale > age - lifetime;
        return cc.no_stale || !allowed_by_max_stale;
    }
    /* fresh: validated only for an unsatisfied min-fresh */
    return req->min_fresh != SHARP_CACHE_NONE && req->min_fresh > lifetime - age;
}

const char *sharp_cache_request_uncacheable(const sharp_headers_t *req)
{
    /* conditional requests pass the cache (if-match and if-unmodified-since
     * may be ignored by caches, RFC 7232) */
    static const char *const conditional[] = {"if-none-match", "if-modified-since", "if-range"};
    for (size_t i = 0; i < 3; i++)
        if (sharp_headers_get_cstr(req, conditional[i], NULL)) return conditional[i];
    sharp_str_t v;
    if (!sharp_headers_get_cstr(req, ":path", &v)) return "no path";
    if (!sharp_headers_get_cstr(req, ":authority", &v)) return "no host";
    if (sharp_headers_get_cstr(req, "authorization", NULL)) return "authorization";
    if (!sharp_headers_get_cstr(req, ":method", &v) || !v.len) return "no method";
    if (!is(v, "GET") && !is(v, "HEAD")) return "method";
    if (!sharp_headers_get_cstr(req, ":scheme", &v)) return "scheme";
    bool http = v.len == 4 && !strncasecmp(v.p, "http", 4),
         https = v.len == 5 && !strncasecmp(v.p, "https", 5);
    if (!http && !https) return "scheme";
    return NULL;
}

static bool status_cacheable(uint32_t s)
{
    /* RFC 7231 6.1, RFC 7538 3, RFC 7725 3 */
    switch (s) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 451:
    case 501:
        return true;
    default:
        return false;
    }
}

bool sharp_cache_has_vary(const sharp_headers_t *resp)
{
    sharp_str_t v;
    return sharp_headers_get_cstr(resp, "vary", &v) && v.len;
}

/* Every value of every vary header, the tokens of each comma-separated. */
static bool vary_allowed(const sharp_headers_t *resp, const sharp_cache_vary_allow_t *allow)
{
    for (int i = sharp_headers_find(resp, "vary", 4, 0); i >= 0;
         i = sharp_headers_find(resp, "vary", 4, (uint32_t)i + 1)) {
        sharp_str_t rest = sharp_headers_value(resp, (uint32_t)i), tok;
        while (sharp_list_next(&rest, &tok)) {
            /* Vary: * is never cached (RFC 7231 7.1.4) */
            if (is(tok, "*")) return false;
            if (!allow || !allow->match || !allow->match(allow->ctx, tok)) return false;
        }
    }
    return true;
}

bool sharp_cache_response_cacheable(const sharp_headers_t *resp,
                                    const sharp_cache_vary_allow_t *allow)
{
    sharp_cache_resp_cc_t cc;
    sharp_cache_response_cc(resp, &cc);
    bool has_validation_data = cc.must_validate || cc.max_age != SHARP_CACHE_NONE ||
                               (sharp_headers_get_cstr(resp, "date", NULL) &&
                                sharp_headers_get_cstr(resp, "expires", NULL));
    if (cc.no_store || !status_cacheable(sharp_headers_status(resp)) || !has_validation_data)
        return false;
    return !sharp_cache_has_vary(resp) || vary_allowed(resp, allow);
}

static int str_cmp(const void *a, const void *b)
{
    const sharp_str_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

bool sharp_cache_vary_identifier(const sharp_headers_t *resp, const sharp_cache_vary_allow_t *allow,
                                 const sharp_headers_t *req, sharp_sbuf_t *out)
{
    sharp_sbuf_puts(out, "vary-id\n");
    sharp_str_t names[64];
    size_t n = 0;
    for (int i = sharp_headers_find(resp, "vary", 4, 0); i >= 0;
         i = sharp_headers_find(resp, "vary", 4, (uint32_t)i + 1)) {
        sharp_str_t rest = sharp_headers_value(resp, (uint32_t)i), tok;
        while (sharp_list_next(&rest, &tok)) {
            if (n == sizeof names / sizeof names[0])
                return false; /* more than a cache key should hold */
            names[n++] = tok;
        }
    }
    qsort(names, n, sizeof names[0], str_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i && !str_cmp(&names[i], &names[i - 1])) continue;
        if (!allow || !allow->match || !allow->match(allow->ctx, names[i])) return false;
        sharp_sbuf_append(out, names[i].p, names[i].len);
        sharp_sbuf_append(out, "\r", 1);
        bool first = true;
        for (int j = sharp_headers_find(req, names[i].p, names[i].len, 0); j >= 0;
             j = sharp_headers_find(req, names[i].p, names[i].len, (uint32_t)j + 1)) {
            if (!first) sharp_sbuf_append(out, "\r", 1);
            sharp_str_t v = sharp_headers_value(req, (uint32_t)j);
            sharp_sbuf_append(out, v.p, v.len);
            first = false;
        }
        sharp_sbuf_append(out, "\n", 1);
    }
    return true;
}

static bool kept_on_update(sharp_str_t n)
{
    return (n.len && n.p[0] == ':') || is(n, "etag") || is(n, "content-length") ||
           is(n, "content-range") || is(n, "vary");
}

void sharp_cache_apply_header_update(const sharp_headers_t *update, sharp_headers_t *stored)
{
    /* first every name the update carries is removed from the stored
     * headers, then all its values are added */
    for (uint32_t i = 0; i < update->n; i++) {
        sharp_str_t n = sharp_headers_name(update, i);
        if (!kept_on_update(n)) sharp_headers_remove(stored, n.p, n.len);
    }
    for (uint32_t i = 0; i < update->n; i++) {
        sharp_str_t n = sharp_headers_name(update, i), v = sharp_headers_value(update, i);
        if (!kept_on_update(n)) sharp_headers_add(stored, n.p, n.len, v.p, v.len);
    }
}

/* test_cache.c: the cache filter's decisions (filters/cache/cache_headers.c,
 * Envoy's cache_headers_utils, cacheability_utils and LookupRequest) on a
 * fake clock, and the bounded in-memory store (filters/cache/store.c):
 * Cache-Control parsing of requests and responses, HTTP dates, the age of a
 * stored response, freshness and validation with the request's directives,
 * which requests and responses are cacheable, the Vary identifier, the 304
 * header update, and the store's vary variants (their marker's life, the
 * identifier made outside the lock), replacement, LRU bound, freshening
 * and seeded key hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/cache/cache_headers.h"
#include "filters/cache/store.h"
#include "sbuf.h"

/* The fake clock: Sun, 06 Nov 1994 08:49:37 GMT, in milliseconds. */
#define T0_S 784111777LL
#define T0 (T0_S * 1000)

static sharp_str_t S(const char *s)
{
    return (sharp_str_t){s, strlen(s)};
}

/* A header map from "name", "value", ..., NULL. */
static void hdrs(sharp_headers_t *h, ...)
{
    sharp_headers_init(h);
    va_list ap;
    va_start(ap, h);
    for (const char *n; (n = va_arg(ap, const char *));)
        sharp_headers_add_cstr(h, n, va_arg(ap, const char *));
    va_end(ap);
}

static void request_cache_control(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_cache_req_cc_t cc;
    hdrs(&h, "cache-control",
         "no-cache, max-age=\"10\", min-fresh=5, max-stale, only-if-cached, no-transform", NULL);
    sharp_cache_request_cc(&h, &cc);
    assert_true(cc.must_validate && cc.only_if_cached && cc.no_transform && !cc.no_store);
    assert_int_equal(cc.max_age, 10);
    assert_int_equal(cc.min_fresh, 5);
    assert_true(cc.max_stale == SHARP_CACHE_ANY);
    sharp_headers_free(&h);
    /* an invalid or negative delta-seconds is no directive; names are exact */
    hdrs(&h, "cache-control", "max-age=-1, min-fresh=abc, max-stale=7, No-Store", NULL);
    sharp_cache_request_cc(&h, &cc);
    assert_int_equal(cc.max_age, SHARP_CACHE_NONE);
    assert_int_equal(cc.min_fresh, SHARP_CACHE_NONE);
    assert_int_equal(cc.max_stale, 7);
    assert_false(cc.no_store);
    sharp_headers_free(&h);
    /* pragma: no-cache counts only without cache-control */
    hdrs(&h, "pragma", "no-cache", NULL);
    sharp_cache_request_cc(&h, &cc);
    assert_true(cc.must_validate);
    sharp_headers_free(&h);
    hdrs(&h, "pragma", "no-cache", "cache-control", "max-age=3", NULL);
    sharp_cache_request_cc(&h, &cc);
    assert_false(cc.must_validate);
    assert_int_equal(cc.max_age, 3);
    sharp_headers_free(&h);
    /* every cache-control header counts */
    hdrs(&h, "cache-control", "no-store", "cache-control", "max-age=4", NULL);
    sharp_cache_request_cc(&h, &cc);
    assert_true(cc.no_store);
    assert_int_equal(cc.max_age, 4);
    sharp_headers_free(&h);
}

static void response_cache_control(void **state)
{
    (void)state;
    sharp_cache_resp_cc_t cc;
    memset(&cc, 0, sizeof cc);
    cc.max_age = SHARP_CACHE_NONE;
    sharp_cache_parse_response_cc(S("public, max-age=60, s-maxage=30, must-revalidate"), &cc);
    assert_true(cc.is_public && cc.no_stale && !cc.no_store && !cc.must_validate);
    assert_int_equal(cc.max_age, 30); /* s-maxage wins whatever the order */
    cc = (sharp_cache_resp_cc_t){.max_age = SHARP_CACHE_NONE};
    sharp_cache_parse_response_cc(S("s-maxage=30,max-age=60"), &cc);
    assert_int_equal(cc.max_age, 30);
    cc = (sharp_cache_resp_cc_t){.max_age = SHARP_CACHE_NONE};
    sharp_cache_parse_response_cc(S("private=\"set-cookie\", no-cache, proxy-revalidate"), &cc);
    assert_true(cc.no_store && cc.must_validate &&
                cc.no_stale); /* private: a shared cache stores nothing */
    cc = (sharp_cache_resp_cc_t){.max_age = SHARP_CACHE_NONE};
    sharp_cache_parse_response_cc(S(" ,  no-store ,"), &cc);
    assert_true(cc.no_store);
    assert_int_equal(cc.max_age, SHARP_CACHE_NONE);
}

static void http_dates(void **state)
{
    (void)state;
    int64_t t = 0;
    assert_true(sharp_cache_http_date(S("Sun, 06 Nov 1994 08:49:37 GMT"), &t));
    assert_int_equal(t, T0_S);
    assert_true(sharp_cache_http_date(S("Sunday, 06-Nov-94 08:49:37 GMT"), &t));
    assert_int_equal(t, T0_S);
    assert_true(sharp_cache_http_date(S("Sun Nov  6 08:49:37 1994"), &t));
    assert_int_equal(t, T0_S);
    assert_false(sharp_cache_http_date(S("Sun, 06 Nov 1994 08:49:37 GMT trailing"), &t));
    assert_false(sharp_cache_http_date(S("yesterday"), &t));
    assert_false(sharp_cache_http_date(S(""), &t));
}

static void age_calculation(void **state)
{
    (void)state;
    sharp_headers_t h;
    /* stored at T0 with Date T0: the age is the time since */
    hdrs(&h, "date", "Sun, 06 Nov 1994 08:49:37 GMT", NULL);
    assert_int_equal(sharp_cache_age(&h, T0, T0), 0);
    assert_int_equal(sharp_cache_age(&h, T0, T0 + 999), 0);
    assert_int_equal(sharp_cache_age(&h, T0, T0 + 10000), 10);
    /* received 5 s after its date: the apparent age counts */
    assert_int_equal(sharp_cache_age(&h, T0 + 5000, T0 + 7000), 7);
    sharp_headers_free(&h);
    /* an age header larger than the apparent age is the initial age */
    hdrs(&h, "date", "Sun, 06 Nov 1994 08:49:37 GMT", "age", "100", NULL);
    assert_int_equal(sharp_cache_age(&h, T0 + 5000, T0 + 7000), 102);
    sharp_headers_free(&h);
    /* no Date: dated when received (not the epoch) */
    hdrs(&h, "age", "bogus", NULL);
    assert_int_equal(sharp_cache_age(&h, T0, T0 + 3000), 3);
    sharp_headers_free(&h);
}

static sharp_cache_req_cc_t req_cc(const char *cache_control)
{
    sharp_headers_t h;
    sharp_cache_req_cc_t cc;
    if (cache_control)
        hdrs(&h, "cache-control", cache_control, NULL);
    else
        hdrs(&h, NULL);
    sharp_cache_request_cc(&h, &cc);
    sharp_headers_free(&h);
    return cc;
}

/* RFC 7234 1.2.1: a delta-seconds too large to represent counts as 2^31,
 * never wrapping around (an Age of 10^18 once made a stale entry fresh). */
static void delta_seconds_clamped(void **state)
{
    (void)state;
    sharp_headers_t h;
    hdrs(&h, "date", "Sun, 06 Nov 1994 08:49:37 GMT", "age", "999999999999999999",
         "cache-control", "max-age=60", NULL);
    assert_int_equal(sharp_cache_age(&h, T0, T0), 2147483648ll);
    sharp_cache_req_cc_t none = req_cc(NULL);
    assert_true(sharp_cache_requires_validation(&none, &h, sharp_cache_age(&h, T0, T0)));
    sharp_headers_free(&h);
    hdrs(&h, "age", "99999999999999999999999999", NULL);
    assert_int_equal(sharp_cache_age(&h, T0, T0 + 1000), 2147483649ll);
    sharp_headers_free(&h);
    sharp_cache_req_cc_t cc = req_cc("max-age=99999999999999999999, min-fresh=\"18446744073709551616\", "
                                     "max-stale=3000000000");
    assert_int_equal(cc.max_age, 2147483648ll);
    assert_int_equal(cc.min_fresh, 2147483648ll);
    assert_int_equal(cc.max_stale, 2147483648ll);
    sharp_cache_resp_cc_t rc = {.max_age = SHARP_CACHE_NONE};
    sharp_cache_parse_response_cc(S("s-maxage=123456789012345678901234567890"), &rc);
    assert_int_equal(rc.max_age, 2147483648ll);
    /* a huge max-age keeps a response fresh, a huge age makes it stale */
    hdrs(&h, "cache-control", "max-age=99999999999999999999", NULL);
    assert_false(sharp_cache_requires_validation(&none, &h, 1000000));
    sharp_headers_free(&h);
    /* still refused: signs inside, letters, empty */
    cc = req_cc("max-age=-5, min-fresh=1e9, max-stale=x");
    assert_int_equal(cc.max_age, SHARP_CACHE_NONE);
    assert_int_equal(cc.min_fresh, SHARP_CACHE_NONE);
    assert_int_equal(cc.max_stale, SHARP_CACHE_NONE);
}

static void freshness(void **state)
{
    (void)state;
    sharp_headers_t r;
    sharp_cache_req_cc_t none = req_cc(NULL);
    hdrs(&r, "cache-control", "max-age=60", NULL);
    assert_false(sharp_cache_requires_validation(&none, &r, 0));
    assert_false(sharp_cache_requires_validation(&none, &r, 60)); /* stale only past the lifetime */
    assert_true(sharp_cache_requires_validation(&none, &r, 61));
    /* the request's max-age, min-fresh and max-stale */
    sharp_cache_req_cc_t c = req_cc("max-age=10");
    assert_false(sharp_cache_requires_validation(&c, &r, 10));
    assert_true(sharp_cache_requires_validation(&c, &r, 11));
    c = req_cc("min-fresh=20");
    assert_false(sharp_cache_requires_validation(&c, &r, 39));
    assert_true(sharp_cache_requires_validation(&c, &r, 41));
    c = req_cc("max-stale=10");
    assert_false(sharp_cache_requires_validation(&c, &r, 69));
    assert_true(sharp_cache_requires_validation(&c, &r, 70));
    c = req_cc("max-stale");
    assert_false(sharp_cache_requires_validation(&c, &r, 100000));
    c = req_cc("no-cache");
    assert_true(sharp_cache_requires_validation(&c, &r, 0));
    sharp_headers_free(&r);
    /* must-revalidate: never served stale, even with max-stale */
    hdrs(&r, "cache-control", "max-age=60, must-revalidate", NULL);
    c = req_cc("max-stale");
    assert_true(sharp_cache_requires_validation(&c, &r, 61));
    sharp_headers_free(&r);
    /* no-cache responses always validate */
    hdrs(&r, "cache-control", "no-cache, max-age=60", NULL);
    assert_true(sharp_cache_requires_validation(&none, &r, 0));
    sharp_headers_free(&r);
    /* Expires - Date is the lifetime without max-age */
    hdrs(&r, "date", "Sun, 06 Nov 1994 08:49:37 GMT", "expires", "Sun, 06 Nov 1994 08:50:37 GMT",
         NULL);
    int64_t age = sharp_cache_age(&r, T0, T0 + 30000);
    assert_false(sharp_cache_requires_validation(&none, &r, age));
    age = sharp_cache_age(&r, T0, T0 + 61000);
    assert_true(sharp_cache_requires_validation(&none, &r, age));
    sharp_headers_free(&r);
}

static void request_cacheability(void **state)
{
    (void)state;
    sharp_headers_t h;
    hdrs(&h, ":method", "GET", ":path", "/a", ":authority", "x", ":scheme", "http", NULL);
    assert_null(sharp_cache_request_uncacheable(&h));
    sharp_headers_set_cstr(&h, ":method", "HEAD");
    assert_null(sharp_cache_request_uncacheable(&h));
    sharp_headers_set_cstr(&h, ":method", "POST");
    assert_string_equal(sharp_cache_request_uncacheable(&h), "method");
    sharp_headers_set_cstr(&h, ":method", "GET");
    sharp_headers_add_cstr(&h, "authorization", "Basic eA==");
    assert_string_equal(sharp_cache_request_uncacheable(&h), "authorization");
    sharp_headers_remove_cstr(&h, "authorization");
    sharp_headers_add_cstr(&h, "if-none-match", "\"v\"");
    assert_string_equal(sharp_cache_request_uncacheable(&h), "if-none-match");
    sharp_headers_remove_cstr(&h, "if-none-match");
    sharp_headers_add_cstr(&h, "if-match", "\"v\""); /* may be ignored by a cache */
    assert_null(sharp_cache_request_uncacheable(&h));
    sharp_headers_set_cstr(&h, ":scheme", "ftp");
    assert_string_equal(sharp_cache_request_uncacheable(&h), "scheme");
    sharp_headers_free(&h);
}

static bool allow_accept_language(const void *ctx, sharp_str_t name)
{
    (void)ctx;
    return name.len == 15 && !memcmp(name.p, "accept-language", 15);
}

static const sharp_cache_vary_allow_t ALLOW = {allow_accept_language, NULL};

static void response_cacheability(void **state)
{
    (void)state;
    sharp_headers_t h;
    hdrs(&h, ":status", "200", "cache-control", "max-age=60", NULL);
    assert_true(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, ":status", "500");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, ":status", "404");
    assert_true(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, "cache-control", "private, max-age=60");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, "cache-control", "no-store");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    /* freshness needs max-age, no-cache, or both Date and Expires */
    sharp_headers_set_cstr(&h, "cache-control", "public");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_add_cstr(&h, "expires", "Sun, 06 Nov 1994 08:50:37 GMT");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_add_cstr(&h, "date", "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_true(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, "cache-control", "no-cache");
    assert_true(sharp_cache_response_cacheable(&h, &ALLOW));
    /* vary: only allowed headers, never "*" */
    sharp_headers_set_cstr(&h, "vary", "accept-language");
    assert_true(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, "vary", "accept-language, user-agent");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_set_cstr(&h, "vary", "*");
    assert_false(sharp_cache_response_cacheable(&h, &ALLOW));
    sharp_headers_free(&h);
}

static void vary_identifier(void **state)
{
    (void)state;
    sharp_headers_t resp, req;
    hdrs(&resp, "vary", "accept-language", NULL);
    hdrs(&req, "accept-language", "en", "accept-language", "fr", NULL);
    sharp_sbuf_t id = {0};
    assert_true(sharp_cache_vary_identifier(&resp, &ALLOW, &req, &id));
    assert_int_equal(id.len, strlen("vary-id\naccept-language\ren\rfr\n"));
    assert_memory_equal(id.data, "vary-id\naccept-language\ren\rfr\n", id.len);
    sharp_sbuf_free(&id);
    sharp_headers_set_cstr(&resp, "vary", "user-agent");
    assert_false(sharp_cache_vary_identifier(&resp, &ALLOW, &req, &id));
    sharp_sbuf_free(&id);
    sharp_headers_free(&resp);
    sharp_headers_free(&req);
}

static void header_update(void **state)
{
    (void)state;
    sharp_headers_t stored, upd;
    hdrs(&stored, ":status", "200", "etag", "\"a\"", "content-length", "5", "x-a", "1", "x-a", "2",
         "x-b", "keep", NULL);
    hdrs(&upd, ":status", "304", "etag", "\"b\"", "content-length", "0", "x-a", "3", "x-c", "new",
         NULL);
    sharp_cache_apply_header_update(&upd, &stored);
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(&stored, ":status", &v) && sharp_str_eq(v, "200", 3));
    assert_true(sharp_headers_get_cstr(&stored, "etag", &v) && sharp_str_eq(v, "\"a\"", 3));
    assert_true(sharp_headers_get_cstr(&stored, "content-length", &v) && sharp_str_eq(v, "5", 1));
    assert_true(sharp_headers_get_cstr(&stored, "x-a", &v) && sharp_str_eq(v, "3", 1));
    assert_int_equal(sharp_headers_find(&stored, "x-a", 3,
                                        (uint32_t)sharp_headers_find(&stored, "x-a", 3, 0) + 1),
                     -1);
    assert_true(sharp_headers_get_cstr(&stored, "x-b", &v) && sharp_str_eq(v, "keep", 4));
    assert_true(sharp_headers_get_cstr(&stored, "x-c", &v) && sharp_str_eq(v, "new", 3));
    sharp_headers_free(&stored);
    sharp_headers_free(&upd);
}

static sharp_cache_body_t *body_of(const char *s)
{
    size_t n = strlen(s);
    sharp_cache_body_t *b = malloc(sizeof *b + n);
    atomic_init(&b->refs, 1);
    b->len = n;
    memcpy(b->data, s, n);
    return b;
}

static bool insert(sharp_cache_store_t *st, const char *key, const sharp_headers_t *req,
                   const sharp_headers_t *resp, const char *body, int64_t t)
{
    sharp_cache_body_t *b = body_of(body);
    bool ok = sharp_cache_store_insert(st, S(key), &ALLOW, req, resp, b, t);
    sharp_cache_body_release(b);
    return ok;
}

/* The body stored at key for req, or NULL ("" for none); into buf. */
static const char *lookup(sharp_cache_store_t *st, const char *key, const sharp_headers_t *req,
                          char *buf, size_t cap)
{
    sharp_cache_hit_t hit;
    bool found = sharp_cache_store_lookup(st, S(key), &ALLOW, req, &hit);
    const char *r = NULL;
    if (found) {
        snprintf(buf, cap, "%.*s", (int)hit.body->len, hit.body->data);
        r = buf;
    }
    sharp_cache_hit_free(&hit);
    return r;
}

static void store_variants_and_replacement(void **state)
{
    (void)state;
    sharp_cache_store_t *st = sharp_cache_store_new(1 << 20, 100);
    sharp_headers_t en, fr, none, resp, vresp;
    hdrs(&en, "accept-language", "en", NULL);
    hdrs(&fr, "accept-language", "fr", NULL);
    hdrs(&none, NULL);
    hdrs(&resp, ":status", "200", "cache-control", "max-age=60", NULL);
    hdrs(&vresp, ":status", "200", "cache-control", "max-age=60", "vary", "accept-language", NULL);
    char buf[64];
    assert_null(lookup(st, "k", &none, buf, sizeof buf));
    assert_true(insert(st, "k", &none, &resp, "plain", T0));
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "plain");
    /* a varied response: one variant per identifier, the marker at the key */
    assert_true(insert(st, "k", &en, &vresp, "english", T0));
    assert_true(insert(st, "k", &fr, &vresp, "french", T0));
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "english");
    assert_string_equal(lookup(st, "k", &fr, buf, sizeof buf), "french");
    assert_null(lookup(st, "k", &none, buf, sizeof buf));
    assert_int_equal(sharp_cache_store_entries(st), 3);
    /* a vary header not allowed is not stored */
    sharp_headers_set_cstr(&vresp, "vary", "user-agent");
    assert_false(insert(st, "u", &en, &vresp, "x", T0));
    /* a body taken by a lookup outlives its entry's replacement */
    sharp_cache_hit_t hit;
    assert_true(sharp_cache_store_lookup(st, S("k"), &ALLOW, &en, &hit));
    sharp_headers_set_cstr(&vresp, "vary", "accept-language");
    assert_true(insert(st, "k", &en, &vresp, "anglais", T0));
    assert_memory_equal(hit.body->data, "english", 7);
    sharp_cache_hit_free(&hit);
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "anglais");
    sharp_cache_store_free(st);
    sharp_headers_free(&en);
    sharp_headers_free(&fr);
    sharp_headers_free(&none);
    sharp_headers_free(&resp);
    sharp_headers_free(&vresp);
}

/* A vary marker lives as long as its variants: a variant hit makes the
 * marker recently used too, and a marker replaced by a response without
 * Vary (or by other vary values) takes its variants along. */
static void store_marker_follows_variants(void **state)
{
    (void)state;
    sharp_cache_store_t *st = sharp_cache_store_new(1 << 20, 3);
    sharp_headers_t en, fr, none, resp, vresp;
    hdrs(&en, "accept-language", "en", NULL);
    hdrs(&fr, "accept-language", "fr", NULL);
    hdrs(&none, NULL);
    hdrs(&resp, ":status", "200", "cache-control", "max-age=60", NULL);
    hdrs(&vresp, ":status", "200", "cache-control", "max-age=60", "vary", "accept-language", NULL);
    char buf[64];
    /* LRU: marker k, its variant, then x; the hit on k's variant makes both
     * newer than x, which the next insert evicts */
    assert_true(insert(st, "k", &en, &vresp, "english", T0));
    assert_true(insert(st, "x", &none, &resp, "x", T0));
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "english");
    assert_true(insert(st, "y", &none, &resp, "y", T0));
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "english");
    assert_null(lookup(st, "x", &none, buf, sizeof buf));
    assert_int_equal(sharp_cache_store_entries(st), 3);
    sharp_cache_store_free(st);

    st = sharp_cache_store_new(1 << 20, 100);
    assert_true(insert(st, "k", &en, &vresp, "english", T0));
    assert_true(insert(st, "k", &fr, &vresp, "french", T0));
    assert_int_equal(sharp_cache_store_entries(st), 3);
    /* a response without Vary replaces the marker and both variants */
    assert_true(insert(st, "k", &none, &resp, "plain", T0));
    assert_int_equal(sharp_cache_store_entries(st), 1);
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "plain");
    /* vary again, then with another vary value: the old variants go */
    assert_true(insert(st, "k", &en, &vresp, "english", T0));
    assert_true(insert(st, "k", &fr, &vresp, "french", T0));
    sharp_headers_set_cstr(&vresp, "vary", "accept-language, accept-language");
    assert_true(insert(st, "k", &en, &vresp, "english2", T0));
    assert_int_equal(sharp_cache_store_entries(st), 2);
    assert_null(lookup(st, "k", &fr, buf, sizeof buf));
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "english2");
    sharp_cache_store_free(st);

    /* a marker evicted takes its variants: only room for two entries */
    st = sharp_cache_store_new(1 << 20, 2);
    sharp_headers_set_cstr(&vresp, "vary", "accept-language");
    assert_true(insert(st, "k", &en, &vresp, "english", T0));
    assert_true(insert(st, "x", &none, &resp, "x", T0));
    assert_int_equal(sharp_cache_store_entries(st), 1);
    assert_null(lookup(st, "k", &en, buf, sizeof buf));
    assert_string_equal(lookup(st, "x", &none, buf, sizeof buf), "x");
    sharp_cache_store_free(st);
    sharp_headers_free(&en);
    sharp_headers_free(&fr);
    sharp_headers_free(&none);
    sharp_headers_free(&resp);
    sharp_headers_free(&vresp);
}

/* The vary identifier is made without the store's lock: the matcher of
 * allowed_vary_headers runs while another thread uses the store, or
 * while the entry is replaced under the lookup. */
typedef struct {
    sharp_cache_store_t *st;
    int action; /* 0: a thread reads the store, 1: replace without Vary, 2: new variant */
    bool store_was_locked;
    sharp_headers_t *req, *resp;
} race_t;

static void *read_store(void *arg)
{
    sharp_cache_store_entries(arg);
    return NULL;
}

static bool racing_match(const void *ctx, sharp_str_t name)
{
    race_t *r = (race_t *)ctx;
    if (r->action == 0) {
        pthread_t t;
        pthread_create(&t, NULL, read_store, r->st);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        if (pthread_timedjoin_np(t, NULL, &until)) {
            r->store_was_locked = true;
            pthread_detach(t);
        }
    } else if (r->action == 1 || r->action == 2) {
        int a = r->action;
        r->action = -1; /* once: the insert runs the matcher too */
        if (a == 1) assert_true(insert(r->st, "k", r->req, r->resp, "plain", T0));
        if (a == 2) assert_true(insert(r->st, "k", r->req, r->resp, "newer", T0));
    }
    return allow_accept_language(NULL, name);
}

static void store_vary_outside_lock(void **state)
{
    (void)state;
    sharp_cache_store_t *st = sharp_cache_store_new(1 << 20, 100);
    sharp_headers_t en, none, resp, vresp;
    hdrs(&en, "accept-language", "en", NULL);
    hdrs(&none, NULL);
    hdrs(&resp, ":status", "200", "cache-control", "max-age=60", NULL);
    hdrs(&vresp, ":status", "200", "cache-control", "max-age=60", "vary", "accept-language", NULL);
    char buf[64];
    race_t r = {.st = st, .action = -1};
    sharp_cache_vary_allow_t allow = {racing_match, &r};
    sharp_cache_body_t *b = body_of("english");
    assert_true(sharp_cache_store_insert(st, S("k"), &allow, &en, &vresp, b, T0));
    sharp_cache_body_release(b);
    sharp_cache_hit_t hit;
    r.action = 0;
    assert_true(sharp_cache_store_lookup(st, S("k"), &allow, &en, &hit));
    assert_false(r.store_was_locked);
    assert_memory_equal(hit.body->data, "english", 7);
    sharp_cache_hit_free(&hit);
    /* the marker replaced by a response without Vary while the identifier
     * is made: its variants are gone, a miss */
    r = (race_t){.st = st, .action = 1, .req = &none, .resp = &resp};
    assert_false(sharp_cache_store_lookup(st, S("k"), &allow, &en, &hit));
    sharp_cache_hit_free(&hit);
    assert_string_equal(lookup(st, "k", &en, buf, sizeof buf), "plain");
    /* a new variant of the same vary values meanwhile: that one serves */
    r.action = -1;
    b = body_of("english");
    assert_true(sharp_cache_store_insert(st, S("k"), &allow, &en, &vresp, b, T0));
    sharp_cache_body_release(b);
    r = (race_t){.st = st, .action = 2, .req = &en, .resp = &vresp};
    assert_true(sharp_cache_store_lookup(st, S("k"), &allow, &en, &hit));
    assert_memory_equal(hit.body->data, "newer", 5);
    sharp_cache_hit_free(&hit);
    sharp_cache_store_free(st);
    sharp_headers_free(&en);
    sharp_headers_free(&none);
    sharp_headers_free(&resp);
    sharp_headers_free(&vresp);
}

static void store_is_bounded(void **state)
{
    (void)state;
    sharp_headers_t none, resp;
    hdrs(&none, NULL);
    hdrs(&resp, ":status", "200", "cache-control", "max-age=60", NULL);
    char big[1001], buf[1100];
    memset(big, 'b', 1000);
    big[1000] = 0;
    /* room for two such entries by bytes */
    sharp_cache_store_t *st = sharp_cache_store_new(2600, 100);
    assert_true(insert(st, "a", &none, &resp, big, T0));
    assert_true(insert(st, "b", &none, &resp, big, T0));
    assert_non_null(lookup(st, "a", &none, buf, sizeof buf)); /* a is now the most recently used */
    assert_true(insert(st, "c", &none, &resp, big, T0));
    assert_non_null(lookup(st, "a", &none, buf, sizeof buf));
    assert_null(lookup(st, "b", &none, buf, sizeof buf)); /* the least recently used went */
    assert_non_null(lookup(st, "c", &none, buf, sizeof buf));
    assert_true(sharp_cache_store_bytes(st) <= 2600);
    /* larger than the whole store: not stored, nothing evicted */
    char huge[3001];
    memset(huge, 'h', 3000);
    huge[3000] = 0;
    assert_false(insert(st, "d", &none, &resp, huge, T0));
    assert_int_equal(sharp_cache_store_entries(st), 2);
    sharp_cache_store_free(st);
    /* bounded by entries too */
    st = sharp_cache_store_new(1 << 20, 2);
    assert_true(insert(st, "a", &none, &resp, "1", T0));
    assert_true(insert(st, "b", &none, &resp, "2", T0));
    assert_true(insert(st, "c", &none, &resp, "3", T0));
    assert_int_equal(sharp_cache_store_entries(st), 2);
    assert_null(lookup(st, "a", &none, buf, sizeof buf));
    sharp_cache_store_free(st);
    sharp_headers_free(&none);
    sharp_headers_free(&resp);
}

static void store_update_freshens(void **state)
{
    (void)state;
    sharp_cache_store_t *st = sharp_cache_store_new(1 << 20, 100);
    sharp_headers_t none, resp, upd;
    hdrs(&none, NULL);
    hdrs(&resp, ":status", "200", "cache-control", "max-age=60", "etag", "\"1\"", NULL);
    hdrs(&upd, ":status", "304", "cache-control", "max-age=120", NULL);
    assert_true(insert(st, "k", &none, &resp, "body", T0));
    sharp_cache_hit_t hit;
    assert_true(sharp_cache_store_lookup(st, S("k"), &ALLOW, &none, &hit));
    assert_int_equal(hit.response_time_ms, T0);
    /* stale at T0 + 61 s; the 304 makes it fresh for 120 s from then */
    sharp_cache_req_cc_t cc = req_cc(NULL);
    assert_true(sharp_cache_requires_validation(&cc, &hit.headers,
                                                sharp_cache_age(&hit.headers, T0, T0 + 61000)));
    sharp_cache_store_update(st, (sharp_str_t){hit.entry_key.data, hit.entry_key.len}, &upd,
                             T0 + 61000);
    sharp_cache_hit_free(&hit);
    assert_true(sharp_cache_store_lookup(st, S("k"), &ALLOW, &none, &hit));
    assert_int_equal(hit.response_time_ms, T0 + 61000);
    int64_t age = sharp_cache_age(&hit.headers, hit.response_time_ms, T0 + 100000);
    assert_int_equal(age, 39);
    assert_false(sharp_cache_requires_validation(&cc, &hit.headers, age));
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(&hit.headers, "etag", &v) && sharp_str_eq(v, "\"1\"", 3));
    sharp_cache_hit_free(&hit);
    sharp_cache_store_free(st);
    sharp_headers_free(&none);
    sharp_headers_free(&resp);
    sharp_headers_free(&upd);
}

/* The store's keys hash with the process's random seed: a seed changes
 * every hash, the same seed gives the same one, the length counts. */
static void key_hash_seeded(void **state)
{
    (void)state;
    uint64_t seed = sharp_hash_seed();
    assert_int_equal(seed, sharp_hash_seed());
    assert_true(seed & 1);
    const char *k = "example.com/a/path?q=1";
    assert_int_equal(sharp_hash_bytes(seed, k, strlen(k)), sharp_hash_bytes(seed, k, strlen(k)));
    assert_int_not_equal(sharp_hash_bytes(seed, k, strlen(k)), sharp_hash_bytes(seed ^ 2, k, strlen(k)));
    assert_int_not_equal(sharp_hash_bytes(seed, "a\0", 2), sharp_hash_bytes(seed, "a", 1));
    /* the low bits (the bucket) of 4096 keys spread over 64 buckets */
    uint32_t counts[64] = {0}, most = 0;
    char key[32];
    for (int i = 0; i < 4096; i++) {
        int n = snprintf(key, sizeof key, "h/p?%d", i);
        uint32_t b = (uint32_t)sharp_hash_bytes(seed, key, (size_t)n) & 63;
        if (++counts[b] > most) most = counts[b];
    }
    assert_true(most < 128);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_cache_control),
        cmocka_unit_test(response_cache_control),
        cmocka_unit_test(http_dates),
        cmocka_unit_test(age_calculation),
        cmocka_unit_test(delta_seconds_clamped),
        cmocka_unit_test(freshness),
        cmocka_unit_test(request_cacheability),
        cmocka_unit_test(response_cacheability),
        cmocka_unit_test(vary_identifier),
        cmocka_unit_test(header_update),
        cmocka_unit_test(store_variants_and_replacement),
        cmocka_unit_test(store_marker_follows_variants),
        cmocka_unit_test(store_vary_outside_lock),
        cmocka_unit_test(store_is_bounded),
        cmocka_unit_test(store_update_freshens),
        cmocka_unit_test(key_hash_seeded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

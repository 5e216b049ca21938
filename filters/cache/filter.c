/* filter.c: envoy.filters.http.cache, Envoy's HTTP cache filter, with the
 * in-memory SimpleHttpCache storage (store.c).
 *
 * decode_headers: a request with a body, one Envoy's
 * canServeRequestFromCache refuses (cache_headers.c), or a range request
 * (SHARP serves no ranges from the cache), passes untouched.
 * Otherwise its key (scheme, host, path, shaped by key_creator_params) is
 * looked up at once: the store is in memory, so nothing waits.
 * - A fresh entry (Envoy's requiresValidation, from its age and the
 *   request's cache-control unless ignore_request_cache_control_header) is
 *   the response: its headers with `age`, its body (none for HEAD), sent
 *   through every filter's encode side as Envoy's decoder-filter
 *   encodeHeaders/encodeData (sharp_stream_respond), with the RFCF response
 *   flag and details cache.response_from_cache_filter.
 * - A stale one is validated: the request goes upstream with If-None-Match
 *   (its etag) and If-Modified-Since (its last-modified, else its date).
 *   A 304 becomes the cached response: the cached status and length, the
 *   304's headers with the cached ones it lacks (no age unless the 304 has
 *   one: it is as fresh as the origin's answer), the stored headers
 *   freshened by the 304 unless
 *   its etag differs, and the cached body, added after the headers from the
 *   loop's next turn (sharp_stream_continue_encoding_body). Any other answer
 *   goes on as a miss's.
 * - A miss goes upstream. Its response is stored when the request allowed
 *   it (no no-store, not HEAD) and Envoy's isCacheableResponse agrees; the
 *   body is copied as it streams through, never held back, up to
 *   max_body_bytes (when set) and the stream's buffer limit: a longer body
 *   drops the copy and passes uncached, as does one with trailers.
 * Counters are Envoy's cache filter events,
 * cache.event.cache_label.<storage>.event_type.<event>. */
#include "filters/cache/filter.h"
#include "config/mapper.h"
#include "config/route_config.h"
#include "filters/cache/cache_headers.h"
#include "filters/cache/store.h"
#include "http/route.h"
#include "log.h"
#include "sbuf.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/cache/simple_http_cache/v3/config.pb-c.h"
#include "envoy/extensions/filters/http/cache/v3/cache.pb-c.h"
#include "envoy/extensions/http/cache/simple_http_cache/v3/config.pb-c.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef Envoy__Extensions__Filters__Http__Cache__V3__CacheConfig cache_pb_t;

#define DETAILS "cache.response_from_cache_filter"
/* Envoy's SimpleHttpCache cacheInfo().name_, dots made underscores */
#define STAT_LABEL "envoy_extensions_http_cache_simple"

enum {
    EV_HIT,
    EV_MISS,
    EV_VALIDATE,
    EV_FAILED_VALIDATION,
    EV_UNCACHEABLE,
    EV_UPSTREAM_RESET,
    EV_LOOKUP_ERROR,
    EV_N
};
static const char *const event_names[EV_N] = {
    "hit",         "miss",           "validate",    "failed_validation",
    "uncacheable", "upstream_reset", "lookup_error"};

typedef struct cache_config {
    bool disabled; /* `disabled`: the filter does nothing */
    sharp_cache_store_t *store;
    sharp_string_matcher_t *vary;
    size_t nvary;
    bool exclude_scheme, exclude_host;
    sharp_query_matcher_t *qin, *qex;
    size_t nqin, nqex;
    uint32_t max_body_bytes; /* 0: only the stream's buffer limit */
    bool ignore_request_cc;
    sharp_stat_id_t ev[EV_N];
} cache_config_t;

typedef enum {
    PH_NONE,           /* not looked at (disabled) or passed untouched */
    PH_MISS,           /* looked up, not found: the response may be stored */
    PH_VALIDATING,     /* a stale entry: the request went upstream with validators */
    PH_SERVED,         /* the response is the cached one, sent from decode_headers */
    PH_ENCODE_SERVING, /* a 304 is becoming the cached response */
} phase_t;

typedef struct cache_state {
    sharp_filter_t *f;
    phase_t phase;
    bool is_head, allows_insert;
    sharp_sbuf_t key;
    sharp_headers_t req; /* the request as looked up, for the vary identifier */
    bool have_req;
    sharp_cache_hit_t hit; /* the stale entry being validated */
    bool have_hit;
    /* the response being copied for the store */
    bool inserting;
    sharp_headers_t resp;
    sharp_sbuf_t body;
    int64_t response_time_ms;
    uint64_t body_limit;
    sharp_deadline_t resume;
} cache_state_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool vary_match(const void *ctx, sharp_str_t name)
{
    const cache_config_t *c = ctx;
    for (size_t i = 0; i < c->nvary; i++)
        if (sharp_string_matcher_match(&c->vary[i], name)) return true;
    return false;
}

static sharp_cache_vary_allow_t allow_of(const cache_config_t *c)
{
    return (sharp_cache_vary_allow_t){vary_match, c};
}

static void config_free(cache_config_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nvary; i++)
        sharp_string_matcher_free(&c->vary[i]);
    free(c->vary);
    for (size_t i = 0; i < c->nqin; i++) {
        free(c->qin[i].name);
        sharp_string_matcher_free(&c->qin[i].sm);
    }
    for (size_t i = 0; i < c->nqex; i++) {
        free(c->qex[i].name);
        sharp_string_matcher_free(&c->qex[i].sm);
    }
    free(c->qin);
    free(c->qex);
    if (c->store) sharp_cache_store_release();
    free(c);
}

static int query_matchers(Envoy__Config__Route__V3__QueryParameterMatcher *const *pb, size_t n,
                          const char *field, sharp_query_matcher_t **out, size_t *nout, char *err,
                          size_t errlen)
{
    *out = sharp_calloc(n ? n : 1, sizeof **out);
    for (size_t i = 0; i < n; i++, (*nout)++) {
        sharp_query_matcher_t *q = &(*out)[i];
        char path[128];
        if (!pb[i]->name || !pb[i]->name[0]) {
            snprintf(err, errlen,
                     "key_creator_params.%s[%zu].name: a query parameter name is required", field,
                     i);
            return -1;
        }
        q->name = sharp_strdup(pb[i]->name);
        if (pb[i]->query_parameter_match_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH) {
            snprintf(path, sizeof path, "key_creator_params.%s[%zu].string_match", field, i);
            if (sharp_config_string_matcher(pb[i]->string_match, path, &q->sm, err, errlen) < 0) {
                (*nout)++;
                return -1;
            }
        } else {
            q->present_match = true;
        }
    }
    return 0;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    const cache_pb_t *pb = (const cache_pb_t *)msg;
    static const cache_pb_t none = ENVOY__EXTENSIONS__FILTERS__HTTP__CACHE__V3__CACHE_CONFIG__INIT;
    if (!pb) pb = &none;
    cache_config_t *c = sharp_calloc(1, sizeof *c);
    /* none is what SHARP does: every request of a resource not yet cached
     * goes upstream; block_until_completion is refused by the support table */
    if (pb->thundering_herd_handler &&
        pb->thundering_herd_handler->handler_case ==
            ENVOY__EXTENSIONS__FILTERS__HTTP__CACHE__V3__CACHE_CONFIG__THUNDERING_HERD_HANDLER__HANDLER_BLOCK_UNTIL_COMPLETION) {
        snprintf(err, errlen, "thundering_herd_handler.block_until_completion: not supported by SHARP");
        goto fail;
    }
    c->disabled = pb->disabled && pb->disabled->value;
    if (!c->disabled) {
        /* Envoy's CacheFilterFactory: the storage is required unless disabled */
        if (!pb->typed_config || !pb->typed_config->type_url || !pb->typed_config->type_url[0]) {
            snprintf(err, errlen, "at least one of typed_config or disabled must be set");
            goto fail;
        }
        const char *url = pb->typed_config->type_url;
        const char *slash = strrchr(url, '/');
        const char *type = slash ? slash + 1 : url;
        const ProtobufCMessageDescriptor *desc = NULL;
        if (!strcmp(
                type,
                envoy__extensions__http__cache__simple_http_cache__v3__simple_http_cache_config__descriptor
                    .name))
            desc =
                &envoy__extensions__http__cache__simple_http_cache__v3__simple_http_cache_config__descriptor;
        else if (
            !strcmp(
                type,
                envoy__extensions__cache__simple_http_cache__v3__simple_http_cache_config__descriptor
                    .name))
            desc =
                &envoy__extensions__cache__simple_http_cache__v3__simple_http_cache_config__descriptor;
        if (!desc) {
            snprintf(err, errlen,
                     "typed_config: Didn't find a registered implementation for type: '%s'", type);
            goto fail;
        }
        sharp_config_error_t e = {{0}};
        ProtobufCMessage *m = sharp_any_unpack(&pb->typed_config->base, desc, &e);
        if (!m) {
            snprintf(err, errlen, "typed_config: %s", e.msg);
            goto fail;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        c->store = sharp_cache_store_acquire();
    }
    c->vary =
        sharp_calloc(pb->n_allowed_vary_headers ? pb->n_allowed_vary_headers : 1, sizeof *c->vary);
    for (size_t i = 0; i < pb->n_allowed_vary_headers; i++, c->nvary++) {
        char path[64];
        snprintf(path, sizeof path, "allowed_vary_headers[%zu]", i);
        if (sharp_config_string_matcher(pb->allowed_vary_headers[i], path, &c->vary[i], err,
                                        errlen) < 0) {
            c->nvary++;
            goto fail;
        }
    }
    if (pb->key_creator_params) {
        const Envoy__Extensions__Filters__Http__Cache__V3__CacheConfig__KeyCreatorParams *k =
            pb->key_creator_params;
        c->exclude_scheme = k->exclude_scheme;
        c->exclude_host = k->exclude_host;
        if (query_matchers(k->query_parameters_included, k->n_query_parameters_included,
                           "query_parameters_included", &c->qin, &c->nqin, err, errlen) < 0 ||
            query_matchers(k->query_parameters_excluded, k->n_query_parameters_excluded,
                           "query_parameters_excluded", &c->qex, &c->nqex, err, errlen) < 0)
            goto fail;
    }
    c->max_body_bytes = pb->max_body_bytes;
    c->ignore_request_cc = pb->ignore_request_cache_control_header;
    if (c->store) {
        for (int i = 0; i < EV_N; i++)
            c->ev[i] = sharp_stats_counterf(ctx->server->stats,
                                            "cache.event.cache_label." STAT_LABEL ".event_type.%s",
                                            event_names[i]);
    }
    return c;
fail:
    config_free(c);
    return NULL;
}

static void destroy_config(void *p)
{
    config_free(p);
}

static void count(sharp_filter_t *f, int ev)
{
    const cache_config_t *c = f->config;
    sharp_counter_inc(sharp_stream_worker(f->stream)->stats, c->ev[ev]);
}

static bool query_param_matches(const sharp_query_matcher_t *m, sharp_str_t name, sharp_str_t value)
{
    if (strlen(m->name) != name.len || memcmp(m->name, name.p, name.len)) return false;
    return m->present_match || sharp_string_matcher_match(&m->sm, value);
}

static bool query_param_in_key(const cache_config_t *c, sharp_str_t name, sharp_str_t value)
{
    for (size_t i = 0; i < c->nqex; i++)
        if (query_param_matches(&c->qex[i], name, value)) return false;
    if (!c->nqin) return true;
    for (size_t i = 0; i < c->nqin; i++)
        if (query_param_matches(&c->qin[i], name, value)) return true;
    return false;
}

/* Envoy's cache key: scheme, host and path, with what key_creator_params
 * leaves out of them (query parameters compared as they are sent). */
static void make_key(const cache_config_t *c, const sharp_headers_t *h, sharp_sbuf_t *key)
{
    sharp_str_t scheme = {"", 0}, host = {"", 0}, path = {"", 0};
    sharp_headers_get_cstr(h, ":scheme", &scheme);
    sharp_headers_get_cstr(h, ":authority", &host);
    sharp_headers_get_cstr(h, ":path", &path);
    if (!c->exclude_scheme) {
        for (size_t i = 0; i < scheme.len; i++) {
            char ch = scheme.p[i];
            sharp_sbuf_append(key, &(char){ch >= 'A' && ch <= 'Z' ? ch + 32 : ch}, 1);
        }
    }
    sharp_sbuf_append(key, "\n", 1);
    if (!c->exclude_host) sharp_sbuf_append(key, host.p, host.len);
    sharp_sbuf_append(key, "\n", 1);
    const char *q = memchr(path.p, '?', path.len);
    if (!q || (!c->nqin && !c->nqex)) {
        sharp_sbuf_append(key, path.p, path.len);
        return;
    }
    sharp_sbuf_append(key, path.p, (size_t)(q - path.p));
    const char *p = q + 1, *end = path.p + path.len;
    bool first = true;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp) amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        sharp_str_t name = {p, (size_t)((eq ? eq : amp) - p)};
        sharp_str_t value =
            eq ? (sharp_str_t){eq + 1, (size_t)(amp - eq - 1)} : (sharp_str_t){"", 0};
        if (name.len && query_param_in_key(c, name, value)) {
            sharp_sbuf_append(key, first ? "?" : "&", 1);
            sharp_sbuf_append(key, p, (size_t)(amp - p));
            first = false;
        }
        p = amp + 1;
    }
}

/* The length of the body sent with stored headers (the stored framing may
 * have been chunked). */
static void set_length(sharp_headers_t *h, size_t n)
{
    /* no length on a response that never has a body */
    uint32_t status = sharp_headers_status(h);
    if (status == 204 || status == 304 || status < 200) return;
    char len[24];
    snprintf(len, sizeof len, "%zu", n);
    sharp_headers_remove_cstr(h, "transfer-encoding");
    sharp_headers_set_cstr(h, "content-length", len);
}

/* Envoy's injectValidationHeaders. */
static void inject_validators(const sharp_headers_t *cached, sharp_headers_t *req)
{
    sharp_str_t v;
    int64_t t;
    if (sharp_headers_get_cstr(cached, "etag", &v))
        sharp_headers_set(req, "if-none-match", 13, v.p, v.len);
    if (sharp_cache_header_date(cached, "last-modified", &t)) {
        sharp_headers_get_cstr(cached, "last-modified", &v);
        sharp_headers_set(req, "if-modified-since", 17, v.p, v.len);
    } else if (sharp_cache_header_date(cached, "date", &t)) {
        /* without a valid Last-Modified the Date stands in (RFC 7232 3.3) */
        sharp_headers_get_cstr(cached, "date", &v);
        sharp_headers_set(req, "if-modified-since", 17, v.p, v.len);
    }
}

static sharp_filter_status_t cache_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                  bool end_stream)
{
    const cache_config_t *c = f->config;
    cache_state_t *st = f->state;
    st->f = f;
    if (c->disabled) return SHARP_FILTER_CONTINUE;
    const char *why = end_stream ? sharp_cache_request_uncacheable(h) : "the request has a body";
    /* SHARP serves no ranges from the cache, and a 206 must not become the
     * entry of the whole resource: range requests pass it */
    if (!why && sharp_headers_get_cstr(h, "range", NULL)) why = "range";
    if (why) {
        sharp_debug(http, "cache: request not cacheable (%s)", why);
        count(f, EV_UNCACHEABLE);
        return SHARP_FILTER_CONTINUE;
    }
    sharp_cache_req_cc_t cc;
    sharp_headers_t none;
    sharp_headers_init(&none);
    sharp_cache_request_cc(c->ignore_request_cc ? &none : h, &cc);
    sharp_headers_free(&none);
    st->allows_insert = !cc.no_store;
    st->is_head = sharp_stream_is_head(f->stream);
    make_key(c, h, &st->key);
    sharp_headers_init(&st->req);
    sharp_headers_copy(&st->req, h);
    st->have_req = true;
    sharp_cache_vary_allow_t allow = allow_of(c);
    sharp_cache_hit_t hit;
    if (!sharp_cache_store_lookup(c->store, (sharp_str_t){st->key.data, st->key.len}, &allow, h,
                                  &hit)) {
        sharp_cache_hit_free(&hit);
        st->phase = PH_MISS;
        count(f, EV_MISS);
        return SHARP_FILTER_CONTINUE;
    }
    int64_t age = sharp_cache_age(&hit.headers, hit.response_time_ms, now_ms());
    char agebuf[24];
    snprintf(agebuf, sizeof agebuf, "%lld", (long long)age);
    sharp_headers_set_cstr(&hit.headers, "age", agebuf);
    if (sharp_cache_requires_validation(&cc, &hit.headers, age)) {
        sharp_debug(http, "cache: stale entry (age %llds), validating", (long long)age);
        inject_validators(&hit.headers, h);
        st->hit = hit;
        st->have_hit = true;
        st->phase = PH_VALIDATING;
        return SHARP_FILTER_CONTINUE;
    }
    st->phase = PH_SERVED;
    count(f, EV_HIT);
    sharp_stream_info(f->stream)->response_flags |= SHARP_RF_RESPONSE_FROM_CACHE_FILTER;
    set_length(&hit.headers, hit.body->len);
    sharp_stream_respond(f, &hit.headers, hit.body->data, hit.body->len, DETAILS);
    sharp_cache_hit_free(&hit);
    return SHARP_FILTER_STOP;
}

static void insert_abort(cache_state_t *st, const char *why)
{
    if (!st->inserting) return;
    sharp_debug(http, "cache: response not stored (%s)", why);
    st->inserting = false;
    sharp_headers_free(&st->resp);
    sharp_sbuf_free(&st->body);
}

static void insert_finish(sharp_filter_t *f)
{
    const cache_config_t *c = f->config;
    cache_state_t *st = f->state;
    if (sharp_stream_has_response_trailers(f->stream)) {
        insert_abort(st, "a response with trailers");
        return;
    }
    sharp_cache_body_t *b = malloc(sizeof *b + st->body.len);
    if (!b) abort();
    atomic_init(&b->refs, 1);
    b->len = st->body.len;
    if (st->body.len) memcpy(b->data, st->body.data, st->body.len);
    sharp_cache_vary_allow_t allow = allow_of(c);
    bool ok = sharp_cache_store_insert(c->store, (sharp_str_t){st->key.data, st->key.len}, &allow,
                                       &st->req, &st->resp, b, st->response_time_ms);
    sharp_debug(http, "cache: %s a response of %zu bytes", ok ? "stored" : "could not store",
                b->len);
    sharp_cache_body_release(b);
    st->inserting = false;
    sharp_headers_free(&st->resp);
    sharp_sbuf_free(&st->body);
}

static void on_resume(sharp_deadline_t *d)
{
    cache_state_t *st = (cache_state_t *)((char *)d - offsetof(cache_state_t, resume));
    sharp_stream_continue_encoding_body(st->f, st->hit.body->data, st->hit.body->len);
}

/* Envoy's processSuccessfulValidation, on a 304 for the stale entry. */
static sharp_filter_status_t serve_validated(sharp_filter_t *f, sharp_headers_t *h)
{
    const cache_config_t *c = f->config;
    cache_state_t *st = f->state;
    sharp_headers_t *cached = &st->hit.headers;
    /* a 304 with a strong validator that is not the cached one does not
     * freshen the entry (RFC 7234 4.3.4) */
    sharp_str_t etag, cached_etag;
    bool has_etag = sharp_headers_get_cstr(h, "etag", &etag);
    bool should_update =
        !has_etag || (sharp_headers_get_cstr(cached, "etag", &cached_etag) &&
                      etag.len == cached_etag.len && !memcmp(etag.p, cached_etag.p, etag.len));
    char status[8];
    snprintf(status, sizeof status, "%u", sharp_headers_status(cached));
    sharp_headers_set_cstr(h, ":status", status);
    set_length(h, st->hit.body->len);
    /* validated, it is as fresh as an answer from the origin: no age,
     * unless the 304 came from a cache upstream with one */
    sharp_headers_remove_cstr(cached, "age");
    /* the cached headers the 304 lacks, every value of each (what is
     * appended goes after the 304's own, so a name found before `own` is
     * one the 304 carries) */
    uint32_t own = h->n;
    for (uint32_t i = 0; i < cached->n; i++) {
        sharp_str_t n = sharp_headers_name(cached, i), v = sharp_headers_value(cached, i);
        if (n.len && n.p[0] == ':') continue;
        int at = sharp_headers_find(h, n.p, n.len, 0);
        if (at >= 0 && (uint32_t)at < own) continue;
        sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
    if (should_update)
        sharp_cache_store_update(
            c->store, (sharp_str_t){st->hit.entry_key.data, st->hit.entry_key.len}, h, now_ms());
    count(f, EV_VALIDATE);
    sharp_stream_info_t *si = sharp_stream_info(f->stream);
    si->response_flags |= SHARP_RF_RESPONSE_FROM_CACHE_FILTER;
    si->response_code_details = DETAILS;
    if (st->is_head || st->hit.body->len == 0) {
        st->phase = PH_SERVED;
        return SHARP_FILTER_CONTINUE;
    }
    st->phase = PH_ENCODE_SERVING;
    sharp_deadline_start(sharp_stream_worker(f->stream), &st->resume, on_resume, 0);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t cache_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                  bool end_stream)
{
    const cache_config_t *c = f->config;
    cache_state_t *st = f->state;
    if (st->phase != PH_MISS && st->phase != PH_VALIDATING) return SHARP_FILTER_CONTINUE;
    if (st->phase == PH_VALIDATING) {
        if (sharp_headers_status(h) == 304) return serve_validated(f, h);
        count(f, EV_FAILED_VALIDATION);
    }
    st->phase = PH_NONE;
    sharp_cache_vary_allow_t allow = allow_of(c);
    if (!st->allows_insert || st->is_head || !sharp_cache_response_cacheable(h, &allow))
        return SHARP_FILTER_CONTINUE;
    st->inserting = true;
    sharp_headers_init(&st->resp);
    sharp_headers_copy(&st->resp, h);
    st->response_time_ms = now_ms();
    st->body_limit = sharp_stream_buffer_limit(f->stream);
    if (c->max_body_bytes && c->max_body_bytes < st->body_limit) st->body_limit = c->max_body_bytes;
    if (end_stream) insert_finish(f);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t cache_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                               bool end_stream)
{
    cache_state_t *st = f->state;
    /* what the upstream sends after a validated 304 is replaced by the
     * cached body */
    if (st->phase == PH_ENCODE_SERVING) return SHARP_FILTER_CONSUMED;
    if (!st->inserting) return SHARP_FILTER_CONTINUE;
    if (st->body.len + n > st->body_limit) {
        insert_abort(st, "the body is larger than the limit");
        return SHARP_FILTER_CONTINUE;
    }
    if (n) sharp_sbuf_append(&st->body, p, n);
    if (end_stream) insert_finish(f);
    return SHARP_FILTER_CONTINUE;
}

static void cache_on_destroy(sharp_filter_t *f)
{
    cache_state_t *st = f->state;
    sharp_deadline_stop(&st->resume);
    if (st->inserting) {
        /* the response ended before its body did */
        count(f, EV_UPSTREAM_RESET);
        insert_abort(st, "the stream ended before the response");
    }
    if (st->have_hit) sharp_cache_hit_free(&st->hit);
    if (st->have_req) sharp_headers_free(&st->req);
    sharp_sbuf_free(&st->key);
}

static uint64_t cache_buffered_bytes(sharp_filter_t *f)
{
    cache_state_t *st = f->state;
    return st->body.len;
}

const sharp_filter_factory_t sharp_cache_filter = {
    .name = "envoy.filters.http.cache",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig",
    .config_desc = &envoy__extensions__filters__http__cache__v3__cache_config__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(cache_state_t),
    .decode_headers = cache_decode_headers,
    .encode_headers = cache_encode_headers,
    .encode_data = cache_encode_data,
    .on_destroy = cache_on_destroy,
    .buffered_bytes = cache_buffered_bytes,
};

/* cache_headers.h: the HTTP caching decisions of Envoy's cache filter,
 * without I/O (Envoy's cache_headers_utils, cacheability_utils and
 * LookupRequest): Cache-Control parsing, HTTP dates, the age of a stored
 * response, whether it needs validation, which requests may be served from
 * a cache and which responses may be stored, the Vary identifier, and the
 * header update after a 304. Times are Unix times: seconds for header
 * values, milliseconds for the clock, so callers pass the time in. */
#ifndef SHARP_FILTERS_CACHE_HEADERS_H
#define SHARP_FILTERS_CACHE_HEADERS_H

#include "common.h"
#include "http/headers.h"

#include <stdint.h>

/* A directive that is absent (or has an invalid delta-seconds). */
#define SHARP_CACHE_NONE (-1)
/* max-stale without an argument: any staleness. */
#define SHARP_CACHE_ANY INT64_MAX

/* Envoy's RequestCacheControl. Durations in seconds, SHARP_CACHE_NONE when absent. */
typedef struct {
    bool must_validate; /* no-cache (or pragma: no-cache without cache-control) */
    bool no_store;
    bool no_transform;
    bool only_if_cached;
    int64_t max_age, min_fresh, max_stale;
} sharp_cache_req_cc_t;

/* Envoy's ResponseCacheControl: private counts as no-store (a shared cache),
 * s-maxage replaces max-age. */
typedef struct {
    bool must_validate; /* no-cache */
    bool no_stale;      /* must-revalidate, proxy-revalidate */
    bool no_store;      /* no-store, private */
    bool no_transform;
    bool is_public;
    int64_t max_age;
} sharp_cache_resp_cc_t;

/* Parses one Cache-Control value (directives compared exactly, as Envoy). */
void sharp_cache_parse_request_cc(sharp_str_t value, sharp_cache_req_cc_t *out);
void sharp_cache_parse_response_cc(sharp_str_t value, sharp_cache_resp_cc_t *out);
/* A request's Cache-Control (every cache-control header in order), or,
 * without one, pragma: no-cache as no-cache (Envoy's
 * initializeRequestCacheControl). */
void sharp_cache_request_cc(const sharp_headers_t *h, sharp_cache_req_cc_t *out);
/* A response's Cache-Control (every cache-control header in order). */
void sharp_cache_response_cc(const sharp_headers_t *h, sharp_cache_resp_cc_t *out);

/* An HTTP date in one of RFC 7231's three formats (IMF-fixdate, RFC 850,
 * asctime): Unix seconds, false when the value is none of them. */
bool sharp_cache_http_date(sharp_str_t value, int64_t *secs);
/* The first value of header `name` as an HTTP date; false when absent or invalid. */
bool sharp_cache_header_date(const sharp_headers_t *h, const char *name, int64_t *secs);

/* RFC 7234 4.2.3's current_age in whole seconds (Envoy's calculateAge):
 * response_time is when the response was stored or last validated, now the
 * lookup's time (both Unix milliseconds). A response without a valid Date
 * counts as dated at response_time (RFC 9110 6.6.1; Envoy takes the epoch
 * and finds every such response stale). */
int64_t sharp_cache_age(const sharp_headers_t *resp, int64_t response_time_ms, int64_t now_ms);

/* Envoy's LookupRequest::requiresValidation: whether a stored response of
 * `age` seconds must be validated before it serves this request. */
bool sharp_cache_requires_validation(const sharp_cache_req_cc_t *req, const sharp_headers_t *resp,
                                     int64_t age);

/* Envoy's canServeRequestFromCache: NULL when the request may be looked up
 * (GET or HEAD, a path, a host, a valid scheme, no authorization, none of
 * if-none-match, if-modified-since, if-range), else the reason. */
const char *sharp_cache_request_uncacheable(const sharp_headers_t *req);

/* The allowed_vary_headers rules: `match` tells whether a header name is allowed. */
typedef struct {
    bool (*match)(const void *ctx, sharp_str_t name);
    const void *ctx;
} sharp_cache_vary_allow_t;

/* Envoy's isCacheableResponse: a cacheable status (200, 203, 204, 206, 300,
 * 301, 308, 404, 405, 410, 414, 451, 501), no no-store or private, enough to
 * compute freshness (no-cache, max-age or s-maxage, or both Date and
 * Expires), and a Vary naming only allowed headers (never "*"). */
bool sharp_cache_response_cacheable(const sharp_headers_t *resp,
                                    const sharp_cache_vary_allow_t *allow);

/* Whether the response has a non-empty vary header. */
bool sharp_cache_has_vary(const sharp_headers_t *resp);
/* Envoy's createVaryIdentifier: "vary-id\n", then for each header the
 * response's Vary names (sorted, repeats once, empty ones skipped) its name,
 * '\r', the request's values of it joined with '\r', and '\n'. False (and
 * nothing usable in out) when a named header is not allowed. */
bool sharp_cache_vary_identifier(const sharp_headers_t *resp, const sharp_cache_vary_allow_t *allow,
                                 const sharp_headers_t *req, sharp_sbuf_t *out);

/* Envoy's applyHeaderUpdate (a 304 freshening a stored response): each
 * header name of `update` replaces all of its values in `stored`, except
 * etag, content-length, content-range and vary, which stay; pseudo-headers
 * are left alone. */
void sharp_cache_apply_header_update(const sharp_headers_t *update, sharp_headers_t *stored);

#endif

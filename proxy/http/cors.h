/* cors.h: a CORS policy and the decisions Envoy's CORS filter
 * (envoy.filters.http.cors) makes with it, without I/O.
 *
 * A policy is Envoy's Router::CorsPolicy, built from either message that
 * carries one: the filter's per-route CorsPolicy (typed_per_filter_config,
 * extensions.filters.http.cors.v3) or the deprecated `cors` field of a route
 * or virtual host (config.route.v3.CorsPolicy); both have the same fields.
 * A request sees a list of policies, the most specific first (the picked
 * weighted cluster's, the route's, the virtual host's, the route table's
 * typed_per_filter_config entries; only when there is none, the route's and
 * the virtual host's `cors` field). Each attribute comes from the first
 * policy of the list that sets it; filter_enabled and shadow_enabled only
 * from the first policy (Envoy's CorsFilter accessors). */
#ifndef SHARP_HTTP_CORS_H
#define SHARP_HTTP_CORS_H

#include "common.h"
#include "http/headers.h"
#include "http/route.h"

/* An optional BoolValue: unset, false or true. */
typedef enum {
    SHARP_CORS_UNSET = 0,
    SHARP_CORS_FALSE,
    SHARP_CORS_TRUE,
} sharp_cors_bool_t;

typedef struct sharp_cors_policy {
    sharp_string_matcher_t *origins; /* allow_origin_string_match */
    uint32_t norigins;
    /* NULL when empty (Envoy: an empty string is "not set") */
    char *allow_methods, *allow_headers, *expose_headers, *max_age;
    sharp_cors_bool_t allow_credentials, allow_private_network_access,
        forward_not_matching_preflights;
    bool has_filter_enabled, has_shadow_enabled;
    sharp_runtime_fraction_t filter_enabled, shadow_enabled;
} sharp_cors_policy_t;

void sharp_cors_policy_free(sharp_cors_policy_t *p);

/* The policies of one request, the most specific first. */
#define SHARP_CORS_MAX_POLICIES 4
typedef struct {
    const sharp_cors_policy_t *v[SHARP_CORS_MAX_POLICIES];
    uint32_t n;
} sharp_cors_policies_t;

/* Envoy's isOriginAllowed: the matchers of the first policy that has any;
 * a matcher that matches "*" allows every origin. */
bool sharp_cors_origin_allowed(const sharp_cors_policies_t *ps, sharp_str_t origin);
/* The first policy's value of each attribute that sets it (NULL, or false,
 * when none: forward_not_matching_preflights defaults to true). */
const char *sharp_cors_allow_methods(const sharp_cors_policies_t *ps);
const char *sharp_cors_allow_headers(const sharp_cors_policies_t *ps);
const char *sharp_cors_expose_headers(const sharp_cors_policies_t *ps);
const char *sharp_cors_max_age(const sharp_cors_policies_t *ps);
bool sharp_cors_allow_credentials(const sharp_cors_policies_t *ps);
bool sharp_cors_allow_private_network_access(const sharp_cors_policies_t *ps);
bool sharp_cors_forward_not_matching_preflights(const sharp_cors_policies_t *ps);

/* What the filter does with a request's headers. */
typedef enum {
    SHARP_CORS_PASS,      /* not a CORS request here (or shadow only): nothing to do */
    SHARP_CORS_REQUEST,   /* a CORS request that goes on; the response gets headers */
    SHARP_CORS_PREFLIGHT, /* a preflight answered here with `resp` */
} sharp_cors_action_t;

typedef struct {
    sharp_cors_action_t action;
    /* the request had an Origin and the filter evaluated it (enabled or
     * shadow): count origin_valid or origin_invalid */
    bool counted;
    bool origin_allowed;
} sharp_cors_decision_t;

/* Envoy's CorsFilter::decodeHeaders for a request with a route entry,
 * `enabled` and `shadow` being the first policy's filter_enabled and
 * shadow_enabled as drawn for this request. For a preflight answered here,
 * `resp` (cleared first) gets its headers: :status 200, then
 * access-control-allow-origin (an allowed origin), -allow-credentials,
 * -allow-methods and -allow-headers ("*" echoes the request's
 * access-control-request-method/-headers), -max-age, and
 * -allow-private-network when allowed and the request asks for it. */
sharp_cors_decision_t sharp_cors_decide(const sharp_cors_policies_t *ps, const sharp_headers_t *req,
                                        bool enabled, bool shadow, sharp_headers_t *resp);

/* Envoy's CorsFilter::encodeHeaders for a CORS request whose origin was
 * allowed: access-control-allow-origin (the request's origin),
 * -allow-credentials and -expose-headers set on the response. */
void sharp_cors_response_headers(const sharp_cors_policies_t *ps, sharp_str_t origin,
                                 sharp_headers_t *h);

#endif

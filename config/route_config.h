/* route_config.h: translation of an Envoy RouteConfiguration (protobuf-c)
 * into the runtime route table of http/route.h, with the checks Envoy makes
 * when it loads one. */
#ifndef SHARP_CONFIG_ROUTE_CONFIG_H
#define SHARP_CONFIG_ROUTE_CONFIG_H

#include "http/ratelimit_policy.h"
#include "http/route.h"

#include "envoy/config/route/v3/route.pb-c.h"

/* Builds a route table from `rc`. On error returns NULL and writes to `err`
 * a message that starts with the field path inside the RouteConfiguration,
 * then ": ", then what is wrong, e.g.
 *   "virtual_hosts[0].routes[2].match.safe_regex.regex: invalid regex ..."
 * Defaults are Envoy's: a route timeout of 15 s when unset (0 disables it),
 * one retry when a retry policy leaves num_retries unset, 301 for redirects.
 * Cluster names are not checked here (the caller knows the clusters). */
sharp_route_table_t *
sharp_route_table_create(const Envoy__Config__Route__V3__RouteConfiguration *rc, char *err,
                         size_t errlen);

/* One HeaderMatcher, for translators outside route tables (the health
 * check filter). Returns 0, or -1 with "path[.field]: message" in err; on
 * error `m` may hold allocations (free its name and string matcher). */
int sharp_config_header_matcher(const Envoy__Config__Route__V3__HeaderMatcher *pb, const char *path,
                                sharp_header_matcher_t *m, char *err, size_t errlen);
/* The rate limit filter's per-route rate_limits (RateLimitPerRoute), with
 * Envoy's checks for that place: no stage, no disable_key; hits_addend
 * read. Returns 0 with *out set (NULL for none), or -1 with
 * "path.rate_limits[i].field: message" in err; free *out in either case
 * (sharp_rate_limits_free, then free). */
int sharp_config_rate_limits(Envoy__Config__Route__V3__RateLimit *const *pbs, size_t n, const char *path,
                             sharp_rate_limits_t **out, char *err, size_t errlen);
/* A RuntimeFractionalPercent at `path` (its default_value required, the
 * denominator known), as the route table reads one. Returns 0, or -1 with
 * "path.field: message" in err. */
int sharp_config_runtime_fraction(const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf, const char *path,
                                  sharp_runtime_fraction_t *out, char *err, size_t errlen);
/* One StringMatcher (exact, prefix, suffix, contains, safe_regex as RE2,
 * ignore_case), for translators outside route tables (the stats matcher).
 * Returns 0, or -1 with "path[.field]: message" in err. */
int sharp_config_string_matcher(const Envoy__Type__Matcher__V3__StringMatcher *pb, const char *path,
                                sharp_string_matcher_t *out, char *err, size_t errlen);
/* *_headers_to_add / *_headers_to_remove lists as header operations, with the
 * route table's checks; `path` prefixes the field names in errors. On error
 * free `ops` with sharp_header_ops_free. */
int sharp_config_header_ops(const char *path, const char *add_field,
                            Envoy__Config__Core__V3__HeaderValueOption *const *add, size_t nadd,
                            const char *remove_field, char *const *remove, size_t nremove,
                            sharp_header_ops_t *ops, char *err, size_t errlen);
/* A CustomTag list (a connection manager's tracing.custom_tags). Returns 0,
 * or -1 with "path[i].field: message" in err; on error free `out`. */
int sharp_config_custom_tags(Envoy__Type__Tracing__V3__CustomTag *const *pb, size_t n, const char *path,
                             sharp_custom_tags_t *out, char *err, size_t errlen);

#endif

/* route_config.h: translation of an Envoy RouteConfiguration (protobuf-c)
 * into the runtime route table of http/route.h, with the checks Envoy makes
 * when it loads one. */
#ifndef SHARP_CONFIG_ROUTE_CONFIG_H
#define SHARP_CONFIG_ROUTE_CONFIG_H

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

#endif

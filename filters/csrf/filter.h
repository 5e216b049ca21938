/* filter.h: envoy.filters.http.csrf. */
#ifndef SHARP_FILTERS_CSRF_H
#define SHARP_FILTERS_CSRF_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_csrf_filter;

/* Envoy's hostAndPort: the host and port of an absolute URL
 * ("scheme://[userinfo@]host[:port][/...]", as http_parser_parse_url takes
 * one: host with any port, an IPv6 host with its brackets), or the whole
 * value when it is not one ("null", a bare host). */
sharp_str_t sharp_csrf_host_and_port(sharp_str_t url);

/* Envoy's isModifyMethod: POST, PUT, DELETE or PATCH. */
bool sharp_csrf_mutating(sharp_str_t method);

#endif

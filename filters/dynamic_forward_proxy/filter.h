/* filter.h: envoy.filters.http.dynamic_forward_proxy. */
#ifndef SHARP_FILTERS_DYNAMIC_FORWARD_PROXY_H
#define SHARP_FILTERS_DYNAMIC_FORWARD_PROXY_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_dynamic_forward_proxy_filter;

#endif

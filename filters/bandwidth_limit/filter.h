/* filter.h: envoy.filters.http.bandwidth_limit. */
#ifndef SHARP_FILTERS_BANDWIDTH_LIMIT_H
#define SHARP_FILTERS_BANDWIDTH_LIMIT_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_bandwidth_limit_filter;

#endif

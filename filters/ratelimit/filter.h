/* filter.h: envoy.filters.http.ratelimit. */
#ifndef SHARP_FILTERS_RATELIMIT_H
#define SHARP_FILTERS_RATELIMIT_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_ratelimit_filter;

#endif

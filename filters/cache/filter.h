/* filter.h: envoy.filters.http.cache. */
#ifndef SHARP_FILTERS_CACHE_H
#define SHARP_FILTERS_CACHE_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_cache_filter;

#endif

/* filter.h: envoy.filters.http.local_ratelimit. */
#ifndef SHARP_FILTERS_LOCAL_RATELIMIT_H
#define SHARP_FILTERS_LOCAL_RATELIMIT_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_local_ratelimit_filter;

#endif

/* filter.h: envoy.filters.http.cors. */
#ifndef SHARP_FILTERS_CORS_H
#define SHARP_FILTERS_CORS_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_cors_filter;

#endif

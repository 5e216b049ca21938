/* filter.h: envoy.filters.http.health_check. */
#ifndef SHARP_FILTERS_HEALTH_CHECK_H
#define SHARP_FILTERS_HEALTH_CHECK_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_health_check_filter;

#endif

/* filter.h: envoy.filters.http.fault. */
#ifndef SHARP_FILTERS_FAULT_H
#define SHARP_FILTERS_FAULT_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_fault_filter;

#endif

/* filter.h: envoy.filters.http.compressor. */
#ifndef SHARP_FILTERS_COMPRESSOR_H
#define SHARP_FILTERS_COMPRESSOR_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_compressor_filter;

#endif

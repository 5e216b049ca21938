/* filter.h: envoy.filters.http.header_to_metadata. */
#ifndef SHARP_FILTERS_HEADER_TO_METADATA_H
#define SHARP_FILTERS_HEADER_TO_METADATA_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_header_to_metadata_filter;

#endif

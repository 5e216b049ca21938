/* filter.h: envoy.extensions.common.matching.v3.ExtensionWithMatcher (the
 * match delegate filter) and envoy.filters.http.composite. */
#ifndef SHARP_FILTERS_MATCHING_H
#define SHARP_FILTERS_MATCHING_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_match_delegate_filter;
extern const sharp_filter_factory_t sharp_composite_filter;

#endif

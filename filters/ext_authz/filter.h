/* filter.h: envoy.filters.http.ext_authz. */
#ifndef SHARP_FILTERS_EXT_AUTHZ_H
#define SHARP_FILTERS_EXT_AUTHZ_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_ext_authz_filter;

#endif

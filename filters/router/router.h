/* router.h: the terminal HTTP filter (envoy.filters.http.router). */
#ifndef SHARP_FILTERS_ROUTER_H
#define SHARP_FILTERS_ROUTER_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_router_filter;

#endif

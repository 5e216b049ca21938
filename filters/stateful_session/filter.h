/* filter.h: envoy.filters.http.stateful_session. */
#ifndef SHARP_FILTERS_STATEFUL_SESSION_H
#define SHARP_FILTERS_STATEFUL_SESSION_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_stateful_session_filter;

#endif

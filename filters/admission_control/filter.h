/* filter.h: the admission control HTTP filter
 * (envoy.filters.http.admission_control). */
#ifndef SHARP_FILTERS_ADMISSION_CONTROL_H
#define SHARP_FILTERS_ADMISSION_CONTROL_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_admission_control_filter;

#endif

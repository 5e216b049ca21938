/* filter.h: the adaptive concurrency HTTP filters (gradient and AIMD). */
#ifndef SHARP_FILTERS_ADAPTIVE_CONCURRENCY_H
#define SHARP_FILTERS_ADAPTIVE_CONCURRENCY_H

#include "http/filter.h"

extern const sharp_filter_factory_t sharp_adaptive_concurrency_filter;
extern const sharp_filter_factory_t sharp_aimd_concurrency_filter;

#endif

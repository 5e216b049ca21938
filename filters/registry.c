/* registry.c: the HTTP filters built into SHARP. */
#include "filters/router/router.h"
#include "http/filter.h"

void sharp_filters_register_builtin(void)
{
    sharp_filter_register(&sharp_router_filter);
}

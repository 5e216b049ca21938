/* access_log_filter_config.h: translation of an Envoy AccessLogFilter
 * (envoy.config.accesslog.v3) into the runtime predicate of
 * http/access_log_filter.h, shared by access logs and local reply mappers. */
#ifndef SHARP_CONFIG_ACCESS_LOG_FILTER_CONFIG_H
#define SHARP_CONFIG_ACCESS_LOG_FILTER_CONFIG_H

#include "http/access_log_filter.h"

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"

/* NULL on error, with "path[.field]: message" in err. The support table has
 * already refused the filter kinds SHARP does not implement (traceable,
 * gRPC status, extension); this checks what the table cannot: a filter
 * must name one kind, response flags must be Envoy's codes. */
sharp_alf_t *sharp_config_access_log_filter(const Envoy__Config__Accesslog__V3__AccessLogFilter *pb,
                                            const char *path, char *err, size_t errlen);

#endif

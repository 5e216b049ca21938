/* cors_config.h: a CORS policy (http/cors.h) from either message that
 * carries one, the CORS filter's per-route CorsPolicy or a route's or
 * virtual host's deprecated `cors` field. */
#ifndef SHARP_CONFIG_CORS_CONFIG_H
#define SHARP_CONFIG_CORS_CONFIG_H

#include "http/cors.h"

#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"

/* Returns the policy, or NULL with "path.field: message" in err. */
sharp_cors_policy_t *
sharp_config_cors_policy(const Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy *pb,
                         const char *path, char *err, size_t errlen);
sharp_cors_policy_t *sharp_config_route_cors_policy(const Envoy__Config__Route__V3__CorsPolicy *pb,
                                                    const char *path, char *err, size_t errlen);

#endif

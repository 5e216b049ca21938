/* health_check_config.h: a cluster's health_checks (envoy.config.core.v3.
 * HealthCheck) -> sharp_hc_config_t (upstream/health_check.h), with the
 * checks Envoy makes when it loads one. */
#ifndef SHARP_CONFIG_HEALTH_CHECK_CONFIG_H
#define SHARP_CONFIG_HEALTH_CHECK_CONFIG_H

#include "upstream/cluster.h"

#include "envoy/config/core/v3/health_check.pb-c.h"

/* Translates `n` health checks of cluster `c` (whose field path is
 * `path`, e.g. "static_resources.clusters[0]") into c->health_check,
 * registers cluster.<name>.health_check.* in `stats` and marks every host
 * FAILED_ACTIVE_HC until its first check (Envoy). Returns 0, or -1 with the
 * offending field's full path in `epath` ("...health_checks[0].timeout")
 * and what is wrong in `emsg` ("is required"). */
int sharp_config_health_checks(sharp_cluster_t *c, Envoy__Config__Core__V3__HealthCheck *const *hcs,
                               size_t n, const char *path, sharp_stats_t *stats, char *epath,
                               size_t epathlen, char *emsg, size_t emsglen);

#endif

/* metrics_config.h: the bootstrap's stats_config (envoy.config.
 * metrics.v3.StatsConfig) -> the stat store's configuration
 * (proxy/stats_config.h). */
#ifndef SHARP_CONFIG_METRICS_CONFIG_H
#define SHARP_CONFIG_METRICS_CONFIG_H

#include "stats.h"

#include "envoy/config/metrics/v3/stats.pb-c.h"

/* Builds the tag producer, stats matcher and histogram bucket rules of `pb`
 * (NULL: Envoy's defaults), with the bootstrap's
 * deferred_stat_options.enable_deferred_creation_stats (`deferred`), and
 * installs them in `stats` (NULL: only validate), which must not have
 * registered any stat yet. Returns 0, or -1 with the offending field's path
 * (below "stats_config") in `epath` and what is wrong in `emsg`; the store
 * is left unchanged then. */
int sharp_config_stats(const Envoy__Config__Metrics__V3__StatsConfig *pb, bool deferred,
                       sharp_stats_t *stats, char *epath, size_t epathlen, char *emsg,
                       size_t emsglen);

#endif

/* overload_config.h: Bootstrap.overload_manager -> sharp_overload_config_t
 * (proxy/overload.h), with Envoy's checks (OverloadManagerImpl): resource
 * monitor names unique, action names known and unique, each trigger naming
 * a configured monitor at most once per action, scaled triggers with
 * scaling_threshold below saturation_threshold. */
#ifndef SHARP_CONFIG_OVERLOAD_CONFIG_H
#define SHARP_CONFIG_OVERLOAD_CONFIG_H

#include "overload.h"

#include "envoy/config/overload/v3/overload.pb-c.h"

/* Translates `pb` (field path "overload_manager") and registers its stats in
 * `stats`. Returns the config (NULL pb: NULL, nothing to do), or NULL with
 * `*failed` set, the offending field's path in `epath` and what is wrong in
 * `emsg`. */
sharp_overload_config_t *sharp_config_overload(const Envoy__Config__Overload__V3__OverloadManager *pb,
                                               sharp_stats_t *stats, bool *failed, char *epath,
                                               size_t epathlen, char *emsg, size_t emsglen);

#endif

/* filter.h: envoy.filters.http.rbac and envoy.filters.network.rbac, Envoy's
 * RBAC filters over the policy engine of engine.h. */
#ifndef SHARP_FILTERS_RBAC_H
#define SHARP_FILTERS_RBAC_H

#include "filters/rbac/engine.h"
#include "http/filter.h"
#include "stats.h"

extern const sharp_filter_factory_t sharp_rbac_filter;

/* The network filter (network.c): one per envoy.filters.network.rbac of a
 * filter chain, before its HTTP connection manager or TCP proxy. */
typedef struct sharp_net_rbac sharp_net_rbac_t;
struct Envoy__Extensions__Filters__Network__Rbac__V3__RBAC;
/* Builds it from its typed_config (`path` names it in errors), its
 * counters in `stats`. NULL and err on a bad config. */
sharp_net_rbac_t *sharp_net_rbac_create(const struct Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *pb,
                                        sharp_stats_t *stats, const char *path, char *err, size_t errlen);
void sharp_net_rbac_free(sharp_net_rbac_t *r);
/* Envoy's onData for data that arrived on the connection (`first`: the
 * first data of the connection): false when the connection is denied and
 * must be closed. ONE_TIME_ON_FIRST_BYTE checks only the first data (a
 * connection still open was allowed), CONTINUOUS checks every data. `md`:
 * the connection's dynamic metadata, which gets the shadow result (NULL:
 * the connection has none); in->metadata then points at it for the rules,
 * as Envoy's rules see the shadow result there. */
struct sharp_dynamic_metadata;
/* Whether the filter checks every data (CONTINUOUS), not only the first. */
bool sharp_net_rbac_continuous(const sharp_net_rbac_t *r);
bool sharp_net_rbac_on_data(const sharp_net_rbac_t *r, sharp_stats_shard_t *sh, sharp_rbac_input_t *in,
                            struct sharp_dynamic_metadata **md, bool first);

#endif

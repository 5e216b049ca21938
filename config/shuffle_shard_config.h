/* shuffle_shard_config.h: a cluster's load_balancing_policy (envoy.config.
 * cluster.v3.LoadBalancingPolicy) -> the cluster's shuffle-shard balancer
 * (upstream/shard_lb.h). The one policy SHARP implements is
 * sharp.extensions.load_balancing_policies.shuffle_shard.v1.ShuffleShard. */
#ifndef SHARP_CONFIG_SHUFFLE_SHARD_CONFIG_H
#define SHARP_CONFIG_SHUFFLE_SHARD_CONFIG_H

#include "upstream/cluster.h"

#include "envoy/config/cluster/v3/cluster.pb-c.h"

/* Translates pb->load_balancing_policy of cluster `c`, whose hosts are
 * built (field path `path`, e.g. "static_resources.clusters[0]"), into
 * c->shuffle_shard and registers its stats in `stats`. Nothing to do when
 * the field is unset. Cell identities are the endpoints' hostnames when set,
 * else "ip:port"; they must be unique. Every listed policy must be
 * ShuffleShard (anything else is "not supported"); the first one is used.
 * Returns 0, or -1 with the offending field's full path in `epath` and what
 * is wrong in `emsg`. */
int sharp_config_load_balancing_policy(sharp_cluster_t *c,
                                       const Envoy__Config__Cluster__V3__Cluster *pb,
                                       const char *path, sharp_stats_t *stats, char *epath,
                                       size_t epathlen, char *emsg, size_t emsglen);

#endif

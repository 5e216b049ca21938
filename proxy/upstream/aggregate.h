/* aggregate.h: aggregate clusters (cluster_type envoy.clusters.aggregate,
 * Envoy's extensions/clusters/aggregate). An aggregate cluster has no
 * hosts of its own: it names member clusters in failover order. Its
 * priority levels are the members' levels one after the other (member 0's
 * levels, then member 1's, ...: Envoy's linearized priority set); a try
 * chooses one of these levels by Envoy's priority load (health with the
 * 1.4 overprovisioning factor, upstream/lb.h), then a host of that member
 * at that level with the member's own balancer, and goes to it with the
 * member's settings: its pools, circuit breakers, TLS, outlier detection
 * and health checks. Members are looked up by name in the request's view
 * at every try, so a member that CDS adds later takes part from the next
 * request on, and one that is missing (not yet added, or removed) is
 * skipped. */
#ifndef SHARP_UPSTREAM_AGGREGATE_H
#define SHARP_UPSTREAM_AGGREGATE_H

#include "common.h"

struct sharp_cluster;
struct sharp_cluster_local;
struct sharp_host;
struct sharp_worker_view;

typedef struct sharp_aggregate {
    char **members; /* ClusterConfig.clusters, in order */
    uint32_t n;
} sharp_aggregate_t;

/* The linearized levels an aggregate sees are bounded: a member's levels
 * beyond this many in all are not considered. */
#define SHARP_AGGREGATE_MAX_LEVELS 256

void sharp_aggregate_free(sharp_aggregate_t *a);

/* The member and the member's level a try of `agg` goes to (*cl its state
 * in the view, *level the level of its balancer), or NULL when no member
 * of the view has a host. panic_threshold is the aggregate's (percent);
 * rnd a random number. A member that is itself an aggregate cluster has no
 * level (its priority set is empty, as in Envoy). */
struct sharp_cluster *sharp_aggregate_choose(const struct sharp_worker_view *v, const struct sharp_cluster *agg,
                                             double panic_threshold, uint64_t rnd,
                                             struct sharp_cluster_local **cl, uint32_t *level);

/* A host for a request that is no router's try (an async post or stream of
 * a tracer, an ext_authz or rate limit call): of the cluster *c (its state
 * *cl) itself, or, when *c is an aggregate, of the member and level that
 * sharp_aggregate_choose gives, *c and *cl then the member's (its pools,
 * breakers and stats take the request, as a router's try). NULL when there
 * is no host; *c and *cl stay the aggregate's when no member has a level.
 * A shuffle-shard cluster gives none (no customer key). */
struct sharp_host *sharp_aggregate_host(const struct sharp_worker_view *v, struct sharp_cluster **c,
                                        struct sharp_cluster_local **cl, uint64_t rnd);

#endif

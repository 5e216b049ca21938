/* zone_lb.h: Envoy's zone-aware routing (ZoneAwareLoadBalancerBase). With
 * cluster_manager.local_cluster_name set, a round robin, least request or
 * random balancer sends as much traffic as it can to the upstream hosts in
 * this proxy's own locality (node.locality) while keeping the requests per
 * upstream host even: the local cluster (the proxies themselves) says how
 * many proxies share each locality, the upstream cluster how many of its
 * hosts are there. The plan is computed from the healthy hosts per
 * locality of priority 0 of both clusters and recomputed when they change;
 * each pick then samples a locality from it.
 *
 * Localities are interned: equal (region, zone, sub_zone) triples get the
 * same id, and ids order like Envoy's LocalityLess (region, then zone,
 * then sub_zone). */
#ifndef SHARP_UPSTREAM_ZONE_LB_H
#define SHARP_UPSTREAM_ZONE_LB_H

#include <stdbool.h>
#include <stdint.h>

/* The id of a locality (0 for the empty one); any thread. */
uint32_t sharp_locality_intern(const char *region, const char *zone, const char *sub_zone);
/* Envoy's LocalityLess order of two interned localities (<0, 0, >0). */
int sharp_locality_cmp(uint32_t a, uint32_t b);
/* The three names of an id ("" for the empty locality); the strings live
as long as the process. */
void sharp_locality_get(uint32_t id, const char **region, const char **zone, const char **sub_zone);

/* Zone-aware settings (LocalityLbConfig.ZoneAwareLbConfig, or the
 * cluster's common_lb_config.zone_aware_lb_config; Envoy's defaults when
 * neither is set). */
typedef struct sharp_zone_config {
    uint32_t routing_enabled;   /* percent of picks considered, default 100 */
    uint64_t min_cluster_size;  /* healthy upstream hosts at priority 0, default 6 */
    bool fail_traffic_on_panic; /* panic fails the pick instead of using all hosts */
    bool force_direct;          /* force_locality_direct_routing */
} sharp_zone_config_t;

typedef enum {
    SHARP_ZONE_NONE,     /* no locality routing: all healthy hosts */
    SHARP_ZONE_DIRECT,   /* everything to the local locality */
    SHARP_ZONE_RESIDUAL, /* a share to the local locality, the rest by residual capacity */
} sharp_zone_state_t;

/* Why a plan has no locality routing (the stat it counts, if any). */
typedef enum {
    SHARP_ZONE_EXIT_NONE,
    SHARP_ZONE_EXIT_FEW_LOCALITIES,  /* fewer than 2 upstream or local localities */
    SHARP_ZONE_EXIT_LOCAL_NOT_OK,    /* lb_local_cluster_not_ok */
    SHARP_ZONE_EXIT_TOO_SMALL,       /* lb_zone_cluster_too_small */
} sharp_zone_exit_t;

/* The inputs of a plan. Upstream localities are the distinct localities of
 * all priority-0 hosts, the node's own first when any host is there
 * (up_has_local), then in locality order; a locality whose hosts are all
 * unhealthy stays, with 0 healthy. */
typedef struct sharp_zone_input {
    uint32_t nloc;
    bool up_has_local;
    const uint32_t *up_healthy;     /* [nloc] healthy hosts per upstream locality */
    const uint32_t *local_healthy;  /* [nloc] healthy local-cluster hosts in that locality */
    uint64_t local_healthy_total;   /* healthy local-cluster hosts in all localities */
    uint32_t local_nloc;            /* distinct localities of all local-cluster hosts */
    bool local_has_local;           /* a local-cluster host is in the node's locality */
    uint64_t min_cluster_size;
    bool force_direct;
} sharp_zone_input_t;

#define SHARP_ZONE_MAX_LOCALITIES 64

typedef struct sharp_zone_plan {
    sharp_zone_state_t state;
    uint32_t nloc;
    uint64_t local_percent_to_route;  /* of 10000 */
    uint64_t residual[SHARP_ZONE_MAX_LOCALITIES]; /* accumulated residual capacity */
} sharp_zone_plan_t;

/* Locality-weighted balancing (common_lb_config.locality_weighted_lb_config):
 * Envoy's effectiveLocalityWeight, a locality's load_balancing_weight
 * scaled by its availability: weight * min(1, 1.4 * healthy / total), 0
 * for a locality without hosts or weight. */
double sharp_locality_effective_weight(uint32_t weight, uint32_t healthy, uint32_t total);
/* Envoy's EDF scheduler over n entries of weights w[] (those of weight 0
 * never picked): each entry's next deadline is the time of its last pick
 * plus 1 / weight; a pick takes the earliest deadline (ties: the lowest
 * index, the order Envoy added them) and moves *now there. reset starts a
 * schedule (deadline[i] = 1 / w[i], *now = 0); pick returns -1 when every
 * weight is 0. */
void sharp_edf_reset(uint32_t n, const double *w, double *deadline, double *now);
int sharp_edf_pick(uint32_t n, const double *w, double *deadline, double *now);

/* Envoy's calculateLocalityPercentages for one locality: its share of the
 * healthy hosts, in 1/10000. */
uint64_t sharp_zone_percentage(uint64_t count, uint64_t total);
/* Envoy's regenerateLocalityRoutingStructures (with earlyExitNonLocalityRouting). */
void sharp_zone_plan(const sharp_zone_input_t *in, sharp_zone_plan_t *out, sharp_zone_exit_t *why);

/* What a pick did (the stat it counts). */
typedef enum {
    SHARP_ZONE_PICK_DIRECT,      /* lb_zone_routing_all_directly */
    SHARP_ZONE_PICK_SAMPLED,     /* lb_zone_routing_sampled */
    SHARP_ZONE_PICK_CROSS,       /* lb_zone_routing_cross_zone */
    SHARP_ZONE_PICK_NO_CAPACITY, /* lb_zone_routing_cross_zone and lb_zone_no_capacity_left */
} sharp_zone_pick_t;

/* Envoy's tryChooseLocalLocalityHosts: the upstream locality index of a
 * pick under a DIRECT or RESIDUAL plan; rnd gives random numbers. */
uint32_t sharp_zone_pick(const sharp_zone_plan_t *p, uint64_t (*rnd)(void *), void *arg, sharp_zone_pick_t *what);

#endif

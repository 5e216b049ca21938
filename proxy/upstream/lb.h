/* lb.h: load balancers over a cluster's hosts (Envoy's ROUND_ROBIN with
 * weights, LEAST_REQUEST with power-of-two choices, RANDOM). One sharp_lb_t
 * lives per worker and cluster, so choosing a host takes no lock. Unhealthy
 * hosts are skipped unless fewer than healthy_panic_threshold percent of the
 * hosts are healthy, in which case all hosts are used (Envoy's panic mode). */
#ifndef SHARP_UPSTREAM_LB_H
#define SHARP_UPSTREAM_LB_H

#include "upstream/host.h"
#include "upstream/zone_lb.h"

struct sharp_hostset;
struct sharp_cluster_stats;

typedef enum {
    SHARP_LB_ROUND_ROBIN,
    SHARP_LB_LEAST_REQUEST,
    SHARP_LB_RANDOM,
} sharp_lb_policy_t;

/* What a balancer derives from its hosts alone (priority levels, whether
 * the weights are equal): immutable, so the main thread makes it once per
 * host set (sharp_hostset_t.lb_shape) and every worker's balancer over the
 * set reads it, instead of each worker going over the hosts again when it
 * adopts the set. */
typedef struct sharp_lb_shape {
    uint32_t nhosts;
    uint32_t nlevels;        /* distinct priorities, ascending */
    bool all_equal_weights;
    uint32_t *level_of;      /* host index -> level */
    uint32_t *level_total;   /* hosts per level */
} sharp_lb_shape_t;

/* hosts[i]->priority and ->weight, read now. */
sharp_lb_shape_t *sharp_lb_shape_new(sharp_host_t *const *hosts, uint32_t nhosts);
void sharp_lb_shape_free(sharp_lb_shape_t *sh);

typedef struct sharp_lb {
    sharp_lb_policy_t policy;
    sharp_host_t *const *hosts; /* not owned */
    uint32_t nhosts;
    uint32_t choice_count;      /* least request: hosts sampled, default 2 */
    double panic_threshold;     /* percent, default 50 */
    double active_request_bias; /* least request with unequal weights, default 1.0 */
    uint64_t rng;               /* per-worker xorshift state */
    bool in_panic;              /* the last choice was made in panic mode (for lb_healthy_panic) */
    /* Private state. Weighted round robin is smooth weighted round robin:
     * `current` holds each host's running credit. */
    int64_t *current;           /* NULL with equal weights (not used then) */
    uint64_t rr_index;
    bool all_equal_weights;
    uint32_t *scratch;          /* candidate host indices, at least nhosts long */
    int64_t *wscratch;          /* candidate weights, as long; NULL with equal weights */
    uint32_t scratch_cap, wscratch_cap;
    uint32_t nlevels;           /* distinct priorities, ascending */
    const uint32_t *level_of;   /* host index -> level (the shape's) */
    const uint32_t *level_total;
    uint32_t *level_healthy;
    sharp_lb_shape_t *own_shape; /* made by sharp_lb_init; NULL when borrowed */
    /* Zone-aware routing (upstream/zone_lb.h), on when zone is set: the
     * owner sets zone, local_locality (the node's), local_set (the address
     * of the worker's reference to the local cluster's host set, which the
     * worker moves between events) and stats before the first choice. */
    const sharp_zone_config_t *zone;
    uint32_t local_locality;
    struct sharp_hostset *const *local_set;
    sharp_stats_shard_t *stats;               /* NULL: no stats counted */
    const struct sharp_cluster_stats *st;
    /* Private: priority-0 hosts by upstream locality (loc_of[i] is host
     * i's, UINT32_MAX at other priorities), and the plan with the healthy
     * counts it was made from. */
    uint32_t nloc;
    bool up_has_local;
    uint32_t *loc_of;
    uint32_t loc_id[SHARP_ZONE_MAX_LOCALITIES];
    uint32_t up_healthy[SHARP_ZONE_MAX_LOCALITIES], local_healthy[SHARP_ZONE_MAX_LOCALITIES];
    uint64_t local_healthy_total, min_cluster_size;
    uint32_t local_nloc, local_total;
    bool local_has_local, planned;
    const struct sharp_hostset *planned_local_set;
    /* Locality-weighted balancing (sharp_lb_set_locality_weighted): each
     * level's localities are slots lw_first[l] .. + lw_n[l]; lw_slot[i] is
     * host i's; per slot its load_balancing_weight, host counts, effective
     * weight and EDF deadline, per level the EDF's time. Remade from the
     * health of the hosts when a host's health changed (lw_epoch). */
    bool lw_on, lw_ready;
    uint32_t *lw_slot, *lw_first, *lw_n, *lw_weight, *lw_total, *lw_healthy;
    double *lw_eff, *lw_deadline, *lw_now;
    uint64_t lw_epoch;
    uint64_t planned_local_gen, planned_epoch; /* what the plan was made from */
    sharp_zone_plan_t plan;
    /* The pick cache: while no host's health or breaker changed (the
     * health epoch is pc_epoch), level_healthy holds and each level's
     * usable hosts are pc_usable[pc_ustart[l] .. pc_ustart[l + 1]), its
     * hosts pc_all[pc_astart[l] ..), both in host order, so a pick takes
     * them instead of going over every host twice. Not kept (pc_ok
     * false) while a host is half-open: its probe budget, which decides
     * whether it may be picked, changes without the epoch. Allocated at
     * the first pick. */
    bool pc_built, pc_ok;
    uint64_t pc_epoch;
    uint32_t *pc_usable, *pc_ustart, *pc_all, *pc_astart;
} sharp_lb_t;

void sharp_lb_init(sharp_lb_t *lb, sharp_lb_policy_t policy, sharp_host_t *const *hosts,
                   uint32_t nhosts, uint64_t seed);
/* The same over a shape made for these hosts (sharp_lb_shape_new), which
 * the balancer reads and does not own: it must outlive the balancer. NULL:
 * as sharp_lb_init. With `reuse` (a balancer being replaced, already
 * destroyed with sharp_lb_destroy_keep), its scratch memory is taken over,
 * so a new set of as many hosts allocates nothing per host. */
void sharp_lb_init_shaped(sharp_lb_t *lb, sharp_lb_policy_t policy, sharp_host_t *const *hosts, uint32_t nhosts,
                          uint64_t seed, const sharp_lb_shape_t *shape, sharp_lb_t *reuse);
void sharp_lb_destroy(sharp_lb_t *lb);
/* sharp_lb_destroy, except for the scratch arrays, which stay in lb for
 * sharp_lb_init_shaped's `reuse` (that frees what it does not take). */
void sharp_lb_destroy_keep(sharp_lb_t *lb);
/* Turns zone-aware routing on (see the fields above); call after
 * sharp_lb_init. */
void sharp_lb_set_zone(sharp_lb_t *lb, const sharp_zone_config_t *zone, uint32_t local_locality,
                       struct sharp_hostset *const *local_set);
/* Turns locality-weighted balancing on: within the chosen level (out of
 * panic) a locality is picked by Envoy's EDF over the localities'
 * effective weights (sharp_locality_effective_weight), then a host of it
 * by the policy; when no locality has weight, all healthy hosts of the
 * level. Call after sharp_lb_init; zone-aware routing is not used with it. */
void sharp_lb_set_locality_weighted(sharp_lb_t *lb);
/* Picks a host: first a priority level (Envoy's priority load with the
 * 1.4 overprovisioning factor), then a host of that level by the policy,
 * among its healthy hosts or, in panic, all of them. A host whose outlier
 * breaker is open counts as unhealthy, and a half-open one as healthy only
 * while it has probes left; choosing it takes one (host.h). NULL when there
 * are no hosts at all, or none is healthy and the panic threshold is 0. */
sharp_host_t *sharp_lb_choose(sharp_lb_t *lb);
/* The same, at one level of the balancer's (levels are its hosts'
 * distinct priorities, ascending): an aggregate cluster chose it
 * (upstream/aggregate.h). The level is in panic by its own health. */
sharp_host_t *sharp_lb_choose_level(sharp_lb_t *lb, uint32_t level);
/* Each level's hosts (total[l]) and usable hosts (healthy[l]), nlevels
 * entries each, as a choice would count them now. */
void sharp_lb_level_counts(const sharp_lb_t *lb, uint32_t *total, uint32_t *healthy);
/* Envoy's priority load over nl levels (LoadBalancerBase's
 * recalculatePerPriorityState and recalculatePerPriorityPanic,
 * overprovisioning factor 1.4): level l's health is
 * min(100, 140 * healthy[l] / total[l]) percent; load goes to the levels in
 * order, each taking health * 100 / min(100, sum of health), up to what is
 * left, and the rounding remainder to the first level with health. When
 * every level is in panic (its healthy percentage under panic_threshold, or
 * nothing is available at all) the load follows the host counts instead
 * and the function returns 1 (total panic); with nothing available and
 * panic_threshold 0 it returns -1 (load[0] = 100, no host can be chosen);
 * else 0. load[] sums to 100. */
int sharp_lb_priority_load(uint32_t nl, const uint32_t *total, const uint32_t *healthy, double panic_threshold,
                           uint32_t *load);
/* The level a random number falls in under load[0..nl). */
uint32_t sharp_lb_pick_level(const uint32_t *load, uint32_t nl, uint64_t rnd);
/* The health notion sharp_lb_choose uses, for balancers built on it
 * (upstream/shard_lb.h): a host is usable when no health flag is set and its
 * outlier breaker is closed, or half-open with probes left. Choosing a
 * usable host must take a probe; false means a half-open host's last probe
 * went to another request, and the host is not to be used. */
bool sharp_lb_host_usable(const sharp_host_t *h);
bool sharp_lb_take_probe(sharp_host_t *h);
/* Next value of the per-worker PRNG (also used for weighted clusters). */
uint64_t sharp_lb_random(sharp_lb_t *lb);

#endif

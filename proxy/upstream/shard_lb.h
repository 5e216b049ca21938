/* shard_lb.h: the shuffle-shard load balancer of a cluster configured with
 * sharp.extensions.load_balancing_policies.shuffle_shard.v1.ShuffleShard.
 *
 * The cluster's hosts are the cells. A request's customer key (computed by
 * the router from the route's hash_policy, http/hash_policy.h) gives the
 * customer's own order of the cells (upstream/shuffle_shard.h); its first
 * shard_size cells are the customer's shard. A choice is made among the
 * usable cells of the shard only, so a customer that breaks the cells it
 * reaches (a poison request) can break at most its shard, and any other
 * customer loses at most the cells it shares with that shard.
 *
 * "Usable" is sharp_lb_choose's notion (upstream/lb.h): no health flag
 * (active health check, outlier ejection, EDS health) and an outlier
 * breaker that is closed, or half-open with a probe left, which the choice
 * takes. There is no panic mode: a shard without a usable cell fails the
 * request (FAIL) or spills to the next usable cells of the customer's order
 * (SPILL); panic routing would send the customer back to the cells that are
 * failing. */
#ifndef SHARP_UPSTREAM_SHARD_LB_H
#define SHARP_UPSTREAM_SHARD_LB_H

#include "stats.h"
#include "upstream/host.h"
#include "upstream/lb.h"
#include "upstream/shuffle_shard.h"

/* ShuffleShard.OnShardUnhealthy */
typedef enum {
    SHARP_SHARD_FAIL,  /* 503 UH, shuffle_shard.no_healthy_in_shard */
    SHARP_SHARD_SPILL, /* next usable cells of the customer's order, shuffle_shard.spill */
} sharp_shard_on_unhealthy_t;

/* ShuffleShard.Pick */
typedef enum {
    SHARP_SHARD_PICK_LEAST_REQUEST, /* power of two choices by active requests */
    SHARP_SHARD_PICK_FIRST_HEALTHY, /* first usable cell in the customer's order */
} sharp_shard_pick_t;

/* ShuffleShard.NoKey */
typedef enum {
    SHARP_SHARD_NO_KEY_SOURCE_IP, /* the downstream address (without port) is the key */
    SHARP_SHARD_NO_KEY_REJECT,    /* 400 */
} sharp_shard_no_key_t;

/* Immutable once built (main thread, config translation); shared by all
 * workers. Cell i of `ss` is the cluster's hosts[i]. */
typedef struct sharp_shard_policy {
    sharp_shuffle_shard_t *ss; /* owned */
    uint32_t shard_size;       /* as clamped to [1, hosts] */
    uint64_t seed;
    sharp_shard_on_unhealthy_t on_unhealthy;
    sharp_shard_pick_t pick;
    sharp_shard_no_key_t no_key;
    /* cluster.<name>.shuffle_shard.* counters (written to the worker's shard) */
    sharp_stat_id_t st_failover, st_spill, st_no_healthy;
} sharp_shard_policy_t;

/* Registers cluster.<cluster>.shuffle_shard.{failover,spill,no_healthy_in_shard}. */
void sharp_shard_policy_stats_init(sharp_shard_policy_t *p, sharp_stats_t *stats,
                                   const char *cluster);
void sharp_shard_policy_free(sharp_shard_policy_t *p);

/* Chooses the cell for one try of a request with customer key `key`, on a
 * worker: `lb` is the worker's balancer of the cluster (its hosts, PRNG and
 * scratch array are used; it is not otherwise changed). Hosts in `avoid`
 * (the previous_hosts predicate: cells earlier tries used) are skipped while
 * another usable cell of the shard is left; when every usable shard cell
 * was tried, one of them is taken again (as Envoy takes its last pick), so
 * retries never leave the shard while any of its cells is usable.
 *
 * Counts, in `sh`: failover when the customer's first-choice cell is not
 * usable for this try (unhealthy, ejected, out of probes or already tried)
 * and another shard cell serves it; spill when the shard had no usable cell
 * and a cell beyond it serves the try (SPILL); no_healthy_in_shard when
 * nothing may serve it, and then returns NULL (the router answers 503 UH). */
sharp_host_t *sharp_shard_lb_choose(const sharp_shard_policy_t *p, sharp_lb_t *lb, const void *key,
                                    size_t keylen, sharp_host_t *const *avoid, uint32_t navoid,
                                    sharp_stats_shard_t *sh);

/* What sharp_shard_lb_choose would pick now for a first try, without taking
 * a probe or counting anything: FIRST_HEALTHY the first usable shard cell,
 * LEAST_REQUEST the usable shard cell with the fewest active requests
 * (earliest in order on a tie), else (SPILL) the first usable cell beyond
 * the shard. `order` is the customer's whole order (nhosts cells). For the
 * admin page; any thread. */
const sharp_host_t *sharp_shard_lb_peek(const sharp_shard_policy_t *p, sharp_host_t *const *hosts,
                                        const uint32_t *order, uint32_t nhosts);

#endif

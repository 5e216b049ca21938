/* aggregate.c: see aggregate.h. The linearized priority set is rebuilt
 * at every choice from the members' balancers in the request's view: a
 * handful of levels, one relaxed load per host, as a member's own choice
 * costs anyway. */
#include "upstream/aggregate.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"
#include "runtime.h"
#include "worker.h"

void sharp_aggregate_free(sharp_aggregate_t *a)
{
    if (!a) return;
    for (uint32_t i = 0; i < a->n; i++) free(a->members[i]);
    free(a->members);
    free(a);
}

sharp_cluster_t *sharp_aggregate_choose(const sharp_worker_view_t *v, const sharp_cluster_t *agg,
                                        double panic_threshold, uint64_t rnd, sharp_cluster_local_t **cl,
                                        uint32_t *level)
{
    enum { MAX = SHARP_AGGREGATE_MAX_LEVELS };
    uint32_t total[MAX], healthy[MAX], load[MAX], nl = 0;
    struct {
        sharp_cluster_t *c;
        sharp_cluster_local_t *cl;
        uint32_t level;
    } at[MAX];
    for (uint32_t m = 0; m < agg->aggregate->n && nl < MAX; m++) {
        sharp_cluster_local_t *mcl = NULL;
        sharp_cluster_t *mc = sharp_view_cluster(v, agg->aggregate->members[m], &mcl);
        /* missing, an aggregate, with hosts made on demand or balanced by
         * customer shards (whose key the aggregate's route does not
         * compute): no level */
        if (!mc || !mcl || mc->aggregate || mc->odst || mc->shuffle_shard) continue;
        uint32_t mn = mcl->lb.nlevels;
        if (!mn) continue;
        uint32_t t[mn], h[mn];
        sharp_lb_level_counts(&mcl->lb, t, h);
        for (uint32_t l = 0; l < mn && nl < MAX; l++, nl++) {
            total[nl] = t[l];
            healthy[nl] = h[l];
            at[nl].c = mc;
            at[nl].cl = mcl;
            at[nl].level = l;
        }
    }
    if (!nl) return NULL;
    /* Envoy's aggregate balancer picks by the healthy priority load alone,
     * also in total panic (the load follows the host counts then) and with
     * nothing available and panic off (all of it on level 0, whose member
     * finds no host) */
    /* the runtime's upstream.healthy_panic_threshold wins, as in lb.c */
    const sharp_runtime_entry_t *e = sharp_runtime_get("upstream.healthy_panic_threshold");
    if (e && e->has_uint) panic_threshold = e->uint_value > 100 ? 100.0 : (double)e->uint_value;
    (void)sharp_lb_priority_load(nl, total, healthy, panic_threshold, load);
    uint32_t k = sharp_lb_pick_level(load, nl, rnd);
    *cl = at[k].cl;
    *level = at[k].level;
    return at[k].c;
}

sharp_host_t *sharp_aggregate_host(const sharp_worker_view_t *v, sharp_cluster_t **c, sharp_cluster_local_t **cl,
                                   uint64_t rnd)
{
    if (!*c || !*cl || (*c)->shuffle_shard) return NULL;
    if (!(*c)->aggregate) return sharp_cluster_choose(*cl, false, NULL, 0);
    sharp_cluster_local_t *mcl = NULL;
    uint32_t level = 0;
    sharp_cluster_t *m = sharp_aggregate_choose(v, *c, (*c)->panic_threshold, rnd, &mcl, &level);
    if (!m) return NULL;
    *c = m;
    *cl = mcl;
    /* a member that balances by subsets: its subset balancer chooses the
     * level (as the router's try) */
    if (mcl->subsets.plan) return sharp_cluster_choose(mcl, false, NULL, 0);
    return sharp_lb_choose_level(&mcl->lb, level);
}

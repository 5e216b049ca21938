/* lb.c: see lb.h. A choice is two steps, as in Envoy: pick a priority level
 * from the levels' health, then a host inside that level by the policy.
 * Health bits are atomics other threads flip at any time, so every choice
 * re-reads them (one relaxed load per host); per-worker scratch arrays keep
 * the choice free of allocation. */
#include "upstream/lb.h"
#include "upstream/cluster.h"
#include "runtime.h"

#include <math.h>

/* Envoy's default overprovisioning factor, in percent. */
#define OVERPROVISIONING 140

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sharp_lb_random(sharp_lb_t *lb)
{
    return sharp_xorshift64s(&lb->rng);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Maps each host's priority to a dense level index (levels ascending by
 * priority, so level 0 is the most preferred). */
sharp_lb_shape_t *sharp_lb_shape_new(sharp_host_t *const *hosts, uint32_t n)
{
    sharp_lb_shape_t *sh = sharp_calloc(1, sizeof *sh);
    sh->nhosts = n;
    sh->all_equal_weights = true;
    for (uint32_t i = 1; i < n; i++)
        if (hosts[i]->weight != hosts[0]->weight) sh->all_equal_weights = false;
    uint32_t *prio = sharp_calloc(n ? n : 1, sizeof *prio);
    for (uint32_t i = 0; i < n; i++)
        prio[i] = hosts[i]->priority;
    /* most sets list their levels in order (one level, usually): no sort */
    uint32_t sorted = 1;
    while (sorted < n && prio[sorted - 1] <= prio[sorted]) sorted++;
    if (sorted < n) qsort(prio, n, sizeof *prio, cmp_u32);
    uint32_t nl = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || prio[i] != prio[i - 1]) prio[nl++] = prio[i];
    sh->nlevels = nl;
    sh->level_of = sharp_calloc(n ? n : 1, sizeof *sh->level_of);
    sh->level_total = sharp_calloc(nl ? nl : 1, sizeof *sh->level_total);
    for (uint32_t i = 0; i < n; i++) {
        /* one level: no search */
        uint32_t *at = nl == 1 ? prio : bsearch(&hosts[i]->priority, prio, nl, sizeof *prio, cmp_u32);
        sh->level_of[i] = (uint32_t)(at - prio);
        sh->level_total[sh->level_of[i]]++;
    }
    free(prio);
    return sh;
}

void sharp_lb_shape_free(sharp_lb_shape_t *sh)
{
    if (!sh) return;
    free(sh->level_of);
    free(sh->level_total);
    free(sh);
}

/* At least n entries; the contents are scratch, never read before written. */
static void *scratch_at_least(void *p, uint32_t *cap, uint32_t n, size_t size)
{
    if (p && *cap >= n) return p;
    free(p);
    *cap = n ? n : 1;
    return sharp_realloc(NULL, *cap * size);
}

void sharp_lb_init_shaped(sharp_lb_t *lb, sharp_lb_policy_t policy, sharp_host_t *const *hosts, uint32_t nhosts,
                          uint64_t seed, const sharp_lb_shape_t *shape, sharp_lb_t *reuse)
{
    uint32_t *scratch = reuse ? reuse->scratch : NULL, scap = reuse ? reuse->scratch_cap : 0;
    int64_t *wscratch = reuse ? reuse->wscratch : NULL;
    uint32_t wcap = reuse ? reuse->wscratch_cap : 0;
    if (reuse && reuse != lb) memset(reuse, 0, sizeof *reuse);
    memset(lb, 0, sizeof *lb);
    if (!shape || shape->nhosts != nhosts) shape = lb->own_shape = sharp_lb_shape_new(hosts, nhosts);
    lb->policy = policy;
    lb->hosts = hosts;
    lb->nhosts = nhosts;
    lb->choice_count = 2;
    lb->panic_threshold = 50;
    lb->active_request_bias = 1.0;
    uint64_t s = seed;
    lb->rng = splitmix64(&s);
    if (!lb->rng) lb->rng = 0x9E3779B97F4A7C15ull;
    lb->all_equal_weights = shape->all_equal_weights;
    lb->nlevels = shape->nlevels;
    lb->level_of = shape->level_of;
    lb->level_total = shape->level_total;
    lb->level_healthy = sharp_calloc(lb->nlevels ? lb->nlevels : 1, sizeof *lb->level_healthy);
    lb->scratch = scratch_at_least(scratch, &scap, nhosts, sizeof *lb->scratch);
    lb->scratch_cap = scap;
    if (!lb->all_equal_weights) {
        /* smooth weighted round robin's credits start at 0 */
        lb->current = sharp_calloc(nhosts ? nhosts : 1, sizeof *lb->current);
        lb->wscratch = scratch_at_least(wscratch, &wcap, nhosts, sizeof *lb->wscratch);
        lb->wscratch_cap = wcap;
    } else {
        free(wscratch);
    }
    /* Each worker starts its rotation at a different host, so a fleet of
     * freshly started workers does not send its first requests to one host. */
    lb->rr_index = nhosts ? sharp_lb_random(lb) % nhosts : 0;
}

void sharp_lb_init(sharp_lb_t *lb, sharp_lb_policy_t policy, sharp_host_t *const *hosts,
                   uint32_t nhosts, uint64_t seed)
{
    sharp_lb_init_shaped(lb, policy, hosts, nhosts, seed, NULL, NULL);
}

void sharp_lb_destroy_keep(sharp_lb_t *lb)
{
    uint32_t *scratch = lb->scratch, scap = lb->scratch_cap, wcap = lb->wscratch_cap;
    int64_t *wscratch = lb->wscratch;
    lb->scratch = NULL;
    lb->wscratch = NULL;
    sharp_lb_destroy(lb);
    lb->scratch = scratch;
    lb->scratch_cap = scap;
    lb->wscratch = wscratch;
    lb->wscratch_cap = wcap;
}

void sharp_lb_destroy(sharp_lb_t *lb)
{
    free(lb->current);
    free(lb->scratch);
    free(lb->wscratch);
    sharp_lb_shape_free(lb->own_shape);
    free(lb->level_healthy);
    free(lb->loc_of);
    free(lb->lw_slot);
    free(lb->lw_first);
    free(lb->lw_n);
    free(lb->lw_weight);
    free(lb->lw_total);
    free(lb->lw_healthy);
    free(lb->lw_eff);
    free(lb->lw_deadline);
    free(lb->lw_now);
    free(lb->pc_usable);
    free(lb->pc_ustart);
    free(lb->pc_all);
    free(lb->pc_astart);
    memset(lb, 0, sizeof *lb);
}

static double panic_threshold(const sharp_lb_t *lb);
static bool host_usable(const sharp_host_t *h);

static void count(sharp_lb_t *lb, sharp_stat_id_t id)
{
    if (lb->stats && lb->st) sharp_counter_inc(lb->stats, id);
}

/* Groups the priority-0 hosts by locality as Envoy's HostsPerLocality
 * does: the node's own locality first when any host is there, then the
 * others in locality order. */
void sharp_lb_set_zone(sharp_lb_t *lb, const sharp_zone_config_t *zone, uint32_t local_locality,
                       struct sharp_hostset *const *local_set)
{
    lb->zone = zone;
    lb->local_locality = local_locality;
    lb->local_set = local_set;
    lb->planned = false;
    free(lb->loc_of);
    lb->loc_of = sharp_calloc(lb->nhosts ? lb->nhosts : 1, sizeof *lb->loc_of);
    uint32_t n = 0;
    for (uint32_t i = 0; i < lb->nhosts; i++) {
        lb->loc_of[i] = UINT32_MAX;
        if (lb->hosts[i]->priority != 0) continue;
        uint32_t id = lb->hosts[i]->locality, k = 0;
        while (k < n && lb->loc_id[k] != id) k++;
        if (k == n) {
            if (n == SHARP_ZONE_MAX_LOCALITIES) {
                /* more localities than a plan holds: no zone routing for
                 * this host set (its hosts beyond the plan would never be
                 * picked), the policy's own choice among all hosts */
                n = 0;
                break;
            }
            lb->loc_id[n++] = id;
        }
    }
    lb->nloc = n;
    lb->up_has_local = false;
    for (uint32_t k = 0; k < n; k++)
        if (lb->loc_id[k] == local_locality) {
            lb->loc_id[k] = lb->loc_id[0];
            lb->loc_id[0] = local_locality;
            lb->up_has_local = true;
            break;
        }
    /* insertion sort of the others, by Envoy's LocalityLess */
    for (uint32_t a = lb->up_has_local ? 2 : 1; a < n; a++) {
        uint32_t v = lb->loc_id[a], b = a;
        while (b > (lb->up_has_local ? 1u : 0u) && sharp_locality_cmp(lb->loc_id[b - 1], v) > 0) {
            lb->loc_id[b] = lb->loc_id[b - 1];
            b--;
        }
        lb->loc_id[b] = v;
    }
    for (uint32_t i = 0; i < lb->nhosts; i++) {
        if (lb->hosts[i]->priority != 0) continue;
        for (uint32_t k = 0; k < n; k++)
            if (lb->loc_id[k] == lb->hosts[i]->locality) lb->loc_of[i] = k;
    }
}

/* A level's localities in the order Envoy's HostsPerLocality has them
 * (locality order; a level has at most as many localities as hosts), the
 * weight of each its hosts' LocalityLbEndpoints gave (the first host's:
 * one locality of one priority is one LocalityLbEndpoints). */
void sharp_lb_set_locality_weighted(sharp_lb_t *lb)
{
    uint32_t n = lb->nhosts ? lb->nhosts : 1, nl = lb->nlevels ? lb->nlevels : 1;
    lb->lw_on = true;
    lb->lw_ready = false;
    lb->lw_slot = sharp_calloc(n, sizeof *lb->lw_slot);
    lb->lw_first = sharp_calloc(nl, sizeof *lb->lw_first);
    lb->lw_n = sharp_calloc(nl, sizeof *lb->lw_n);
    lb->lw_weight = sharp_calloc(n, sizeof *lb->lw_weight);
    lb->lw_total = sharp_calloc(n, sizeof *lb->lw_total);
    lb->lw_healthy = sharp_calloc(n, sizeof *lb->lw_healthy);
    lb->lw_eff = sharp_calloc(n, sizeof *lb->lw_eff);
    lb->lw_deadline = sharp_calloc(n, sizeof *lb->lw_deadline);
    lb->lw_now = sharp_calloc(nl, sizeof *lb->lw_now);
    uint32_t *ids = sharp_calloc(n, sizeof *ids), next = 0;
    for (uint32_t l = 0; l < lb->nlevels; l++) {
        lb->lw_first[l] = next;
        uint32_t k = 0;
        for (uint32_t i = 0; i < lb->nhosts; i++) {
            if (lb->level_of[i] != l) continue;
            uint32_t id = lb->hosts[i]->locality, j = 0;
            while (j < k && ids[next + j] != id) j++;
            if (j < k) continue;
            /* insertion in locality order */
            j = k;
            while (j > 0 && sharp_locality_cmp(ids[next + j - 1], id) > 0) {
                ids[next + j] = ids[next + j - 1];
                lb->lw_weight[next + j] = lb->lw_weight[next + j - 1];
                j--;
            }
            ids[next + j] = id;
            lb->lw_weight[next + j] = lb->hosts[i]->locality_weight;
            k++;
        }
        lb->lw_n[l] = k;
        for (uint32_t i = 0; i < lb->nhosts; i++) {
            if (lb->level_of[i] != l) continue;
            for (uint32_t j = 0; j < k; j++)
                if (ids[next + j] == lb->hosts[i]->locality) lb->lw_slot[i] = next + j;
        }
        next += k;
    }
    free(ids);
}

/* The effective locality weights from the hosts' health now, and a new
 * EDF schedule for each level whose weights changed (Envoy rebuilds its
 * locality scheduler when the host set or its health changes). */
static void lw_refresh(sharp_lb_t *lb)
{
    uint64_t epoch = sharp_host_health_epoch_get();
    if (lb->lw_ready && epoch == lb->lw_epoch) return;
    lb->lw_epoch = epoch;
    uint32_t nslots = lb->nlevels ? lb->lw_first[lb->nlevels - 1] + lb->lw_n[lb->nlevels - 1] : 0;
    memset(lb->lw_total, 0, nslots * sizeof *lb->lw_total);
    memset(lb->lw_healthy, 0, nslots * sizeof *lb->lw_healthy);
    for (uint32_t i = 0; i < lb->nhosts; i++) {
        lb->lw_total[lb->lw_slot[i]]++;
        if (host_usable(lb->hosts[i])) lb->lw_healthy[lb->lw_slot[i]]++;
    }
    for (uint32_t l = 0; l < lb->nlevels; l++) {
        bool changed = !lb->lw_ready;
        for (uint32_t s = lb->lw_first[l]; s < lb->lw_first[l] + lb->lw_n[l]; s++) {
            double e = sharp_locality_effective_weight(lb->lw_weight[s], lb->lw_healthy[s], lb->lw_total[s]);
            if (e != lb->lw_eff[s]) changed = true;
            lb->lw_eff[s] = e;
        }
        if (changed)
            sharp_edf_reset(lb->lw_n[l], lb->lw_eff + lb->lw_first[l], lb->lw_deadline + lb->lw_first[l],
                            &lb->lw_now[l]);
    }
    lb->lw_ready = true;
}

/* Envoy regenerates the locality routing plan whenever priority 0 of the
 * upstream or local cluster changes (membership or health). Here a pick
 * looks at the host sets and the health epoch; after a change the healthy
 * counts are taken and the plan is remade when they differ from the ones
 * it was made from; the early-exit stats are counted once per plan, as in
 * Envoy. */
_Atomic uint64_t sharp_host_health_epoch;

static void zone_refresh(sharp_lb_t *lb)
{
    const sharp_hostset_t *ls = lb->local_set ? *lb->local_set : NULL;
    /* nothing changed since the plan was made (the same host sets, no
     * host's health changed): no count, as Envoy remakes its plan only on
     * a change; the runtime's min_cluster_size is read then too */
    uint64_t epoch = sharp_host_health_epoch_get();
    if (lb->planned && lb->planned_local_set == ls && (!ls || ls->generation == lb->planned_local_gen) &&
        epoch == lb->planned_epoch)
        return;
    lb->planned_epoch = epoch;
    lb->planned_local_gen = ls ? ls->generation : 0;
    uint32_t up[SHARP_ZONE_MAX_LOCALITIES] = {0}, loc[SHARP_ZONE_MAX_LOCALITIES] = {0};
    for (uint32_t i = 0; i < lb->nhosts; i++)
        if (lb->loc_of[i] != UINT32_MAX && sharp_host_healthy(lb->hosts[i])) up[lb->loc_of[i]]++;
    uint64_t lh_total = 0;
    uint32_t ids[SHARP_ZONE_MAX_LOCALITIES], nids = 0, total = 0;
    bool has_local = false;
    for (uint32_t j = 0; ls && j < ls->nhosts; j++) {
        const sharp_host_t *h = ls->hosts[j];
        if (h->priority != 0) continue;
        total++;
        uint32_t k = 0;
        while (k < nids && ids[k] != h->locality) k++;
        if (k == nids && nids < SHARP_ZONE_MAX_LOCALITIES) ids[nids++] = h->locality;
        if (h->locality == lb->local_locality) has_local = true;
        if (!sharp_host_healthy(h)) continue;
        lh_total++;
        for (uint32_t g = 0; g < lb->nloc; g++)
            if (lb->loc_id[g] == h->locality) {
                loc[g]++;
                break;
            }
    }
    lb->local_total = total;
    uint64_t mcs = sharp_runtime_get_u64("upstream.zone_routing.min_cluster_size", lb->zone->min_cluster_size);
    if (lb->planned && lb->planned_local_set == ls && lh_total == lb->local_healthy_total && nids == lb->local_nloc &&
        has_local == lb->local_has_local && mcs == lb->min_cluster_size &&
        !memcmp(up, lb->up_healthy, lb->nloc * sizeof *up) && !memcmp(loc, lb->local_healthy, lb->nloc * sizeof *loc))
        return;
    memcpy(lb->up_healthy, up, sizeof up);
    memcpy(lb->local_healthy, loc, sizeof loc);
    lb->local_healthy_total = lh_total;
    lb->local_nloc = nids;
    lb->local_has_local = has_local;
    lb->min_cluster_size = mcs;
    lb->planned_local_set = ls;
    lb->planned = true;
    if (!ls) {
        /* no local cluster: Envoy has no local priority set, no plan */
        lb->plan.state = SHARP_ZONE_NONE;
        return;
    }
    count(lb, lb->st ? lb->st->lb_recalculate_zone_structures : 0);
    sharp_zone_input_t in = {.nloc = lb->nloc,
                             .up_has_local = lb->up_has_local,
                             .up_healthy = up,
                             .local_healthy = loc,
                             .local_healthy_total = lh_total,
                             .local_nloc = nids,
                             .local_has_local = has_local,
                             .min_cluster_size = mcs,
                             .force_direct = sharp_runtime_get_bool("upstream.zone_routing.force_locality_direct_routing",
                                                                    lb->zone->force_direct)};
    sharp_zone_exit_t why;
    sharp_zone_plan(&in, &lb->plan, &why);
    if (why == SHARP_ZONE_EXIT_LOCAL_NOT_OK) count(lb, lb->st ? lb->st->lb_local_cluster_not_ok : 0);
    if (why == SHARP_ZONE_EXIT_TOO_SMALL) count(lb, lb->st ? lb->st->lb_zone_cluster_too_small : 0);
}

static uint64_t zone_rnd(void *arg)
{
    return sharp_lb_random(arg);
}

/* Envoy's hostSourceToUse past the panic check, for a pick at priority 0:
 * the upstream locality whose healthy hosts are the candidates, -1 for all
 * healthy hosts, -2 when the pick fails (the local cluster is in panic and
 * fail_traffic_on_panic is set). */
static int zone_locality(sharp_lb_t *lb)
{
    if (lb->plan.state == SHARP_ZONE_NONE) return -1;
    if (!sharp_runtime_percent_enabled("upstream.zone_routing.enabled", lb->zone->routing_enabled,
                                       sharp_lb_random(lb)))
        return -1;
    double healthy_pct = lb->local_total ? 100.0 * (double)lb->local_healthy_total / lb->local_total : 0.0;
    if (healthy_pct < panic_threshold(lb)) {
        count(lb, lb->st ? lb->st->lb_local_cluster_not_ok : 0);
        return lb->zone->fail_traffic_on_panic ? -2 : -1;
    }
    sharp_zone_pick_t what;
    uint32_t k = sharp_zone_pick(&lb->plan, zone_rnd, lb, &what);
    if (lb->st) switch (what) {
        case SHARP_ZONE_PICK_DIRECT: count(lb, lb->st->lb_zone_routing_all_directly); break;
        case SHARP_ZONE_PICK_SAMPLED: count(lb, lb->st->lb_zone_routing_sampled); break;
        case SHARP_ZONE_PICK_CROSS: count(lb, lb->st->lb_zone_routing_cross_zone); break;
        case SHARP_ZONE_PICK_NO_CAPACITY:
            count(lb, lb->st->lb_zone_routing_cross_zone);
            count(lb, lb->st->lb_zone_no_capacity_left);
            break;
        }
    return (int)k;
}

/* The runtime key upstream.healthy_panic_threshold (a whole percentage,
 * at most 100) wins over the cluster's healthy_panic_threshold, as in
 * Envoy's load balancers. */
static double panic_threshold(const sharp_lb_t *lb)
{
    const sharp_runtime_entry_t *e = sharp_runtime_get("upstream.healthy_panic_threshold");
    if (!e || !e->has_uint) return lb->panic_threshold;
    return e->uint_value > 100 ? 100.0 : (double)e->uint_value;
}

static bool level_in_panic(const sharp_lb_t *lb, uint32_t l, double threshold)
{
    uint32_t total = lb->level_total[l];
    double healthy_pct = total ? 100.0 * lb->level_healthy[l] / total : 0.0;
    return healthy_pct < threshold;
}

int sharp_lb_priority_load(uint32_t nl, const uint32_t *total, const uint32_t *healthy, double panic_threshold,
                           uint32_t *load)
{
    uint32_t health[nl ? nl : 1], sum = 0;
    for (uint32_t l = 0; l < nl; l++) {
        uint64_t h = total[l] ? (uint64_t)OVERPROVISIONING * healthy[l] / total[l] : 0;
        health[l] = (uint32_t)SHARP_MIN(h, 100);
        sum += health[l];
    }
    uint32_t norm = SHARP_MIN(sum, 100);
    if (nl == 0) return -1;
    if (norm == 0 && panic_threshold <= 0) {
        /* nothing available and panic off: Envoy puts the load on level
         * 0, where no host can be chosen */
        memset(load, 0, nl * sizeof *load);
        load[0] = 100;
        return -1;
    }
    uint32_t remaining = 100;
    int first = -1;
    for (uint32_t l = 0; l < nl; l++) {
        if (first < 0 && health[l] > 0) first = (int)l;
        load[l] = norm ? SHARP_MIN(remaining, health[l] * 100 / norm) : 0;
        remaining -= load[l];
    }
    if (first >= 0) load[first] += remaining;
    /* recalculatePerPriorityPanic: with no availability every level is in
     * panic, else each by its healthy share */
    bool all_panic = true;
    for (uint32_t l = 0; l < nl && all_panic; l++)
        all_panic = norm == 0 || (total[l] ? 100.0 * healthy[l] / total[l] : 0.0) < panic_threshold;
    if (!all_panic) return 0;
    /* recalculateLoadInTotalPanic: by host counts, the rounding remainder
     * to the first level (levels are never empty) */
    uint64_t all = 0;
    for (uint32_t l = 0; l < nl; l++) all += total[l];
    remaining = 100;
    for (uint32_t l = 0; l < nl; l++) {
        load[l] = all ? (uint32_t)(100 * (uint64_t)total[l] / all) : 0;
        remaining -= load[l];
    }
    load[0] += remaining;
    return 1;
}

uint32_t sharp_lb_pick_level(const uint32_t *load, uint32_t nl, uint64_t rnd)
{
    uint32_t r = (uint32_t)(rnd % 100);
    for (uint32_t l = 0; l < nl; l++) {
        if (r < load[l]) return l;
        r -= load[l];
    }
    return 0;
}

/* Envoy's priority load (sharp_lb_priority_load), then a level by it; the
 * chosen level is in panic when its healthy share is under the panic
 * threshold (every level in total panic). Returns the chosen level, or -1
 * when nothing may be chosen (no health and panic disabled). */
static int choose_level(sharp_lb_t *lb, bool *panic)
{
    uint32_t nl = lb->nlevels;
    if (nl == 0) return -1;
    double threshold = panic_threshold(lb); /* a runtime lookup: once a pick */
    if (nl == 1) {
        /* the usual cluster: one level takes all the load; nothing to
         * choose when it has no healthy host and panic is off */
        uint32_t total = lb->level_total[0];
        bool none = !total || (uint64_t)OVERPROVISIONING * lb->level_healthy[0] / total == 0;
        if (none && threshold <= 0) return -1;
        *panic = none || level_in_panic(lb, 0, threshold);
        return 0;
    }
    uint32_t load[nl];
    int total_panic = sharp_lb_priority_load(nl, lb->level_total, lb->level_healthy, threshold, load);
    if (total_panic < 0) return -1;
    if (total_panic) {
        /* by host counts, exactly (the percentages round) */
        *panic = true;
        uint64_t r = sharp_lb_random(lb) % lb->nhosts;
        for (uint32_t l = 0; l < nl; l++) {
            if (r < lb->level_total[l]) return (int)l;
            r -= lb->level_total[l];
        }
        return 0;
    }
    uint32_t chosen = sharp_lb_pick_level(load, nl, sharp_lb_random(lb));
    *panic = level_in_panic(lb, chosen, threshold);
    return (int)chosen;
}

/* Smooth weighted round robin over the candidates: each gains its weight in
 * credit, the richest is chosen and pays the total. Over any window of
 * sum(weights) picks each host is chosen exactly weight times, and picks are
 * spread out (5:1:1 gives a a b a c a a), like Envoy's EDF scheduler. */
static uint32_t pick_swrr(sharp_lb_t *lb, const uint32_t *cand, uint32_t n, const int64_t *w)
{
    int64_t total = 0;
    uint32_t best = cand[0];
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = cand[k];
        lb->current[i] += w[k];
        total += w[k];
        if (lb->current[i] > lb->current[best]) best = i;
    }
    lb->current[best] -= total;
    return best;
}

static uint32_t pick_round_robin(sharp_lb_t *lb, const uint32_t *cand, uint32_t n)
{
    if (lb->all_equal_weights) return cand[lb->rr_index++ % n];
    int64_t *w = lb->wscratch;
    for (uint32_t k = 0; k < n; k++)
        w[k] = lb->hosts[cand[k]]->weight ? lb->hosts[cand[k]]->weight : 1;
    return pick_swrr(lb, cand, n, w);
}

/* Equal weights: power of `choice_count` choices (sampling with
 * replacement), keeping the sample with the fewest active requests; ties
 * keep the earlier sample. Unequal weights: smooth weighted round robin on
 * weight / (active + 1)^bias, so a loaded host's share shrinks with its
 * load. */
static uint32_t pick_least_request(sharp_lb_t *lb, const uint32_t *cand, uint32_t n)
{
    if (lb->all_equal_weights) {
        uint32_t choices = lb->choice_count ? lb->choice_count : 2;
        uint32_t best = cand[sharp_lb_random(lb) % n];
        int64_t best_rq = atomic_load_explicit(&lb->hosts[best]->active_rq, memory_order_relaxed);
        for (uint32_t c = 1; c < choices; c++) {
            uint32_t i = cand[sharp_lb_random(lb) % n];
            int64_t rq = atomic_load_explicit(&lb->hosts[i]->active_rq, memory_order_relaxed);
            if (rq < best_rq) {
                best = i;
                best_rq = rq;
            }
        }
        return best;
    }
    int64_t *w = lb->wscratch;
    double bias = lb->active_request_bias;
    for (uint32_t k = 0; k < n; k++) {
        const sharp_host_t *h = lb->hosts[cand[k]];
        int64_t rq = atomic_load_explicit(&h->active_rq, memory_order_relaxed);
        double denom =
            rq > 0 ? (bias == 1.0 ? (double)(rq + 1) : pow((double)(rq + 1), bias)) : 1.0;
        double eff = (h->weight ? h->weight : 1) * 1000.0 / denom;
        w[k] = eff < 1.0 ? 1 : (int64_t)eff;
    }
    return pick_swrr(lb, cand, n, w);
}

/* A host the balancer may pick: no health flag, and an outlier breaker
 * that is closed, or half-open with probes left. */
static bool host_usable(const sharp_host_t *h)
{
    if (!sharp_host_healthy(h)) return false;
    uint32_t b = atomic_load_explicit(&h->breaker, memory_order_acquire);
    return b == SHARP_HOST_BREAKER_CLOSED ||
           (b == SHARP_HOST_BREAKER_HALF_OPEN &&
            atomic_load_explicit(&h->probe_budget, memory_order_relaxed) > 0);
}

/* Takes one probe of a half-open host; true for any other host. */
static bool take_probe(sharp_host_t *h)
{
    if (atomic_load_explicit(&h->breaker, memory_order_acquire) != SHARP_HOST_BREAKER_HALF_OPEN)
        return true;
    int32_t left = atomic_load_explicit(&h->probe_budget, memory_order_relaxed);
    while (left > 0)
        if (atomic_compare_exchange_weak_explicit(&h->probe_budget, &left, left - 1,
                                                  memory_order_relaxed, memory_order_relaxed))
            return true;
    return false;
}

/* Whether the pick cache (see sharp_lb_t) holds for the health epoch now,
 * remade first when the epoch moved. When it holds, level_healthy is
 * current too. */
static bool pick_cache_fresh(sharp_lb_t *lb)
{
    uint64_t epoch = sharp_host_health_epoch_get();
    if (lb->pc_built && lb->pc_epoch == epoch) return lb->pc_ok;
    uint32_t nl = lb->nlevels ? lb->nlevels : 1;
    if (!lb->pc_usable) {
        lb->pc_usable = sharp_calloc(lb->nhosts, sizeof *lb->pc_usable);
        lb->pc_ustart = sharp_calloc(nl + 1, sizeof *lb->pc_ustart);
        lb->pc_all = sharp_calloc(lb->nhosts, sizeof *lb->pc_all);
        lb->pc_astart = sharp_calloc(nl + 1, sizeof *lb->pc_astart);
        /* every host of a level, for panic: fixed with the hosts */
        for (uint32_t l = 0; l < lb->nlevels; l++) lb->pc_astart[l + 1] = lb->pc_astart[l] + lb->level_total[l];
        uint32_t *at = lb->pc_ustart; /* scratch: each level's next slot */
        memcpy(at, lb->pc_astart, nl * sizeof *at);
        for (uint32_t i = 0; i < lb->nhosts; i++) lb->pc_all[at[lb->level_of[i]]++] = i;
    }
    lb->pc_epoch = epoch;
    lb->pc_built = true;
    lb->pc_ok = true;
    memset(lb->level_healthy, 0, lb->nlevels * sizeof *lb->level_healthy);
    for (uint32_t i = 0; i < lb->nhosts; i++) {
        const sharp_host_t *h = lb->hosts[i];
        if (atomic_load_explicit(&h->breaker, memory_order_acquire) == SHARP_HOST_BREAKER_HALF_OPEN)
            lb->pc_ok = false;
        if (host_usable(h)) lb->level_healthy[lb->level_of[i]]++;
    }
    if (!lb->pc_ok) return false;
    lb->pc_ustart[0] = 0;
    for (uint32_t l = 0; l < lb->nlevels; l++) lb->pc_ustart[l + 1] = lb->pc_ustart[l] + lb->level_healthy[l];
    uint32_t *at = lb->scratch; /* each level's next slot; scratch is at least nhosts long */
    memcpy(at, lb->pc_ustart, lb->nlevels * sizeof *at);
    uint32_t total = lb->pc_ustart[lb->nlevels];
    for (uint32_t i = 0; i < lb->nhosts; i++) {
        if (!host_usable(lb->hosts[i])) continue;
        uint32_t l = lb->level_of[i];
        /* a host that turned usable between the two passes: remade at the
         * next pick, as the epoch moved */
        if (at[l] >= lb->pc_ustart[l + 1] || at[l] >= total) continue;
        lb->pc_usable[at[l]++] = i;
    }
    for (uint32_t l = 0; l < lb->nlevels; l++)
        if (at[l] != lb->pc_ustart[l + 1]) {
            /* one turned unusable between the passes: no cache this epoch */
            lb->pc_ok = false;
            return false;
        }
    return true;
}

/* forced >= 0: that level, as an aggregate cluster chose it (no zone
 * routing then: Envoy's aggregate context replaces the priority load, and
 * the member's locality routing still applies only at its priority 0) */
static sharp_host_t *choose_once(sharp_lb_t *lb, int forced)
{
    lb->in_panic = false;
    if (!lb->nhosts) return NULL;
    bool cached = pick_cache_fresh(lb);
    if (!cached) {
        memset(lb->level_healthy, 0, lb->nlevels * sizeof *lb->level_healthy);
        for (uint32_t i = 0; i < lb->nhosts; i++)
            if (host_usable(lb->hosts[i])) lb->level_healthy[lb->level_of[i]]++;
    }
    bool panic = false;
    if (lb->zone) zone_refresh(lb);
    int level;
    if (forced >= 0) {
        if ((uint32_t)forced >= lb->nlevels) return NULL;
        level = forced;
        panic = level_in_panic(lb, (uint32_t)level, panic_threshold(lb));
    } else {
        level = choose_level(lb, &panic);
    }
    if (level < 0) return NULL;
    if (panic && lb->st) count(lb, lb->st->lb_healthy_panic);
    if (panic && lb->zone && lb->zone->fail_traffic_on_panic) return NULL;
    /* locality routing is for priority 0 only, as in Envoy */
    int loc = -1;
    if (lb->zone && !panic && level == 0 && lb->nloc) { /* any priority-0 host makes level 0 priority 0 */
        loc = zone_locality(lb);
        if (loc == -2) return NULL;
    }
    /* locality-weighted: a locality of the level by EDF (Envoy's
     * chooseHealthyLocality), out of panic only */
    int slot = -1;
    if (lb->lw_on && !panic) {
        lw_refresh(lb);
        uint32_t f = lb->lw_first[level];
        int k = sharp_edf_pick(lb->lw_n[level], lb->lw_eff + f, lb->lw_deadline + f, &lb->lw_now[level]);
        if (k >= 0) slot = (int)(f + (uint32_t)k);
    }
    uint32_t n = 0;
    const uint32_t *cand = lb->scratch;
    if (cached && loc < 0 && slot < 0) {
        /* the level's candidates as the loop below would list them */
        const uint32_t *start = panic ? lb->pc_astart : lb->pc_ustart;
        cand = (panic ? lb->pc_all : lb->pc_usable) + start[level];
        n = start[level + 1] - start[level];
    } else {
        for (uint32_t i = 0; i < lb->nhosts; i++) {
            if (lb->level_of[i] != (uint32_t)level) continue;
            if (loc >= 0 && lb->loc_of[i] != (uint32_t)loc) continue;
            if (slot >= 0 && lb->lw_slot[i] != (uint32_t)slot) continue;
            if (panic || host_usable(lb->hosts[i])) lb->scratch[n++] = i;
        }
    }
    if (!n) return NULL; /* a host turned unhealthy between the two scans */
    lb->in_panic = panic;
    uint32_t pick;
    switch (lb->policy) {
    case SHARP_LB_LEAST_REQUEST:
        pick = pick_least_request(lb, cand, n);
        break;
    case SHARP_LB_RANDOM:
        pick = cand[sharp_lb_random(lb) % n];
        break;
    case SHARP_LB_ROUND_ROBIN:
    default:
        pick = pick_round_robin(lb, cand, n);
        break;
    }
    return lb->hosts[pick];
}

bool sharp_lb_host_usable(const sharp_host_t *h)
{
    return host_usable(h);
}

bool sharp_lb_take_probe(sharp_host_t *h)
{
    return take_probe(h);
}

/* A half-open host admits only its probe budget: a pick that loses the race
 * for the last probe chooses again, and the host is no longer a candidate.
 * In panic every host is used, probes or not. */
static sharp_host_t *choose(sharp_lb_t *lb, int forced)
{
    for (uint32_t attempt = 0; attempt <= lb->nhosts; attempt++) {
        sharp_host_t *h = choose_once(lb, forced);
        if (!h || take_probe(h) || lb->in_panic) return h;
    }
    return NULL;
}

sharp_host_t *sharp_lb_choose(sharp_lb_t *lb)
{
    return choose(lb, -1);
}

sharp_host_t *sharp_lb_choose_level(sharp_lb_t *lb, uint32_t level)
{
    return choose(lb, (int)level);
}

void sharp_lb_level_counts(const sharp_lb_t *lb, uint32_t *total, uint32_t *healthy)
{
    for (uint32_t l = 0; l < lb->nlevels; l++) {
        total[l] = lb->level_total[l];
        healthy[l] = 0;
    }
    for (uint32_t i = 0; i < lb->nhosts; i++)
        if (host_usable(lb->hosts[i])) healthy[lb->level_of[i]]++;
}

/* shard_lb.c: see shard_lb.h. A choice reads every shard cell's health once
 * (atomics other threads flip at any time), needs no allocation (the
 * customer's order goes into the worker balancer's scratch array, nhosts
 * long) and asks for the customer's whole order only when it spills. */
#include "upstream/shard_lb.h"

/* Half-open cells whose last probe another request took, retried at most
 * this many times per choice (the race is rare; each loss removes a cell). */
#define MAX_LOST_PROBES 8

void sharp_shard_policy_stats_init(sharp_shard_policy_t *p, sharp_stats_t *stats,
                                   const char *cluster)
{
    p->st_failover = sharp_stats_counterf(stats, "cluster.%s.shuffle_shard.failover", cluster);
    p->st_spill = sharp_stats_counterf(stats, "cluster.%s.shuffle_shard.spill", cluster);
    p->st_no_healthy =
        sharp_stats_counterf(stats, "cluster.%s.shuffle_shard.no_healthy_in_shard", cluster);
}

void sharp_shard_policy_free(sharp_shard_policy_t *p)
{
    if (!p) return;
    sharp_shuffle_shard_free(p->ss);
    free(p);
}

/* The cells a try may use among order[from, to): usable, not lost in a
 * probe race, and (strict) not used by an earlier try. */
typedef struct {
    sharp_host_t *const *hosts;
    const uint32_t *order;
    sharp_host_t *const *avoid;
    uint32_t navoid;
    sharp_host_t *lost[MAX_LOST_PROBES];
    uint32_t nlost;
} pick_ctx_t;

static bool eligible(const pick_ctx_t *x, const sharp_host_t *h, bool strict)
{
    if (!sharp_lb_host_usable(h) || sharp_host_listed(h, x->lost, x->nlost)) return false;
    return !strict || !sharp_host_listed(h, x->avoid, x->navoid);
}

/* The k-th (from 0) eligible cell of order[from, to). */
static sharp_host_t *nth_eligible(const pick_ctx_t *x, uint32_t from, uint32_t to, bool strict,
                                  uint32_t k)
{
    for (uint32_t i = from; i < to; i++) {
        sharp_host_t *h = x->hosts[x->order[i]];
        if (eligible(x, h, strict) && k-- == 0) return h;
    }
    return NULL;
}

/* One cell of order[from, to) by the policy's pick, or NULL when none is
 * eligible. Least request samples two eligible cells with replacement and
 * keeps the one with fewer active requests (the first on a tie), as
 * lb.c's power of two choices does. */
static sharp_host_t *pick_range(const sharp_shard_policy_t *p, sharp_lb_t *lb, const pick_ctx_t *x,
                                uint32_t from, uint32_t to, bool strict, bool first_healthy)
{
    if (first_healthy || p->pick == SHARP_SHARD_PICK_FIRST_HEALTHY)
        return nth_eligible(x, from, to, strict, 0);
    uint32_t n = 0;
    for (uint32_t i = from; i < to; i++)
        n += eligible(x, x->hosts[x->order[i]], strict);
    if (n <= 1) return n ? nth_eligible(x, from, to, strict, 0) : NULL;
    sharp_host_t *a = nth_eligible(x, from, to, strict, (uint32_t)(sharp_lb_random(lb) % n));
    sharp_host_t *b = nth_eligible(x, from, to, strict, (uint32_t)(sharp_lb_random(lb) % n));
    if (!a || !b) return a ? a : b; /* health changed between the scans */
    int64_t ra = atomic_load_explicit(&a->active_rq, memory_order_relaxed);
    int64_t rb = atomic_load_explicit(&b->active_rq, memory_order_relaxed);
    return rb < ra ? b : a;
}

sharp_host_t *sharp_shard_lb_choose(const sharp_shard_policy_t *p, sharp_lb_t *lb, const void *key,
                                    size_t keylen, sharp_host_t *const *avoid, uint32_t navoid,
                                    sharp_stats_shard_t *sh)
{
    uint32_t n = lb->nhosts;
    if (!p || !p->ss || !n) return NULL;
    uint32_t *order = lb->scratch;
    uint32_t k = SHARP_MIN(p->shard_size, n);
    uint32_t got = sharp_shuffle_shard_order(p->ss, key, keylen, order, k);
    k = SHARP_MIN(k, got);
    pick_ctx_t x = {.hosts = lb->hosts, .order = order, .avoid = avoid, .navoid = navoid};
    for (uint32_t attempt = 0; attempt <= MAX_LOST_PROBES; attempt++) {
        bool spilled = false;
        sharp_host_t *h = pick_range(p, lb, &x, 0, k, true, false);
        if (!h && navoid) h = pick_range(p, lb, &x, 0, k, false, false);
        if (!h && p->on_unhealthy == SHARP_SHARD_SPILL && k < n) {
            /* beyond the shard, in the customer's own order */
            if (got < n) got = sharp_shuffle_shard_order(p->ss, key, keylen, order, n);
            h = pick_range(p, lb, &x, k, got, true, true);
            if (!h && navoid) h = pick_range(p, lb, &x, k, got, false, true);
            spilled = h != NULL;
        }
        if (!h) break;
        if (!sharp_lb_take_probe(h)) {
            if (x.nlost < MAX_LOST_PROBES) x.lost[x.nlost++] = h;
            continue;
        }
        sharp_host_t *first = lb->hosts[order[0]];
        if (spilled)
            sharp_counter_inc(sh, p->st_spill);
        else if (h != first && !eligible(&x, first, true))
            sharp_counter_inc(sh, p->st_failover);
        return h;
    }
    sharp_counter_inc(sh, p->st_no_healthy);
    return NULL;
}

const sharp_host_t *sharp_shard_lb_peek(const sharp_shard_policy_t *p, sharp_host_t *const *hosts,
                                        const uint32_t *order, uint32_t nhosts)
{
    uint32_t k = SHARP_MIN(p->shard_size, nhosts);
    const sharp_host_t *best = NULL;
    int64_t best_rq = 0;
    for (uint32_t i = 0; i < k; i++) {
        const sharp_host_t *h = hosts[order[i]];
        if (!sharp_lb_host_usable(h)) continue;
        if (p->pick == SHARP_SHARD_PICK_FIRST_HEALTHY) return h;
        int64_t rq = atomic_load_explicit(&h->active_rq, memory_order_relaxed);
        if (!best || rq < best_rq) {
            best = h;
            best_rq = rq;
        }
    }
    if (best || p->on_unhealthy != SHARP_SHARD_SPILL) return best;
    for (uint32_t i = k; i < nhosts; i++)
        if (sharp_lb_host_usable(hosts[order[i]])) return hosts[order[i]];
    return NULL;
}

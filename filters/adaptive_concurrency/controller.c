/* controller.c: the core shared by the concurrency controllers: admission
 * against the shared limit, per-worker latency histograms, lazy limit
 * updates and the snapshot. The algorithms live in gradient.c and aimd.c.
 *
 * Request path cost: try_acquire is one clock read, a relaxed load of the
 * next update time and of the limit, and a compare-and-swap on the in-flight
 * count; release is a fetch_sub, a few stores into the caller's own shard and
 * the same due check. Updates run every update interval on whichever thread
 * notices first; they scan the touched part of every shard's histogram (a
 * few hundred buckets per shard for typical latencies).
 */
#include "filters/adaptive_concurrency/controller_internal.h"

#include <stdio.h>

void *sharp__ac_alloc(size_t size)
{
    size = (size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, size ? size : 64);
    if (!p) {
        fputs("sharp: out of memory\n", stderr);
        abort();
    }
    memset(p, 0, size);
    return p;
}

static uint64_t default_clock(void *arg)
{
    (void)arg;
    return sharp_now_ns();
}

void sharp__ac_init(sharp_ac_controller_t *c, sharp_ac_kind_t kind, sharp__ac_update_fn update,
                    unsigned nshards, sharp_ac_clock_fn clock, void *clock_arg, uint64_t seed,
                    uint32_t hist_outcomes, uint32_t limit)
{
    c->kind = kind;
    c->update = update;
    c->clock = clock ? clock : default_clock;
    c->clock_arg = clock_arg;
    c->nshards = nshards;
    c->shards = sharp__ac_alloc(nshards * sizeof(sharp__ac_shard_t));
    for (unsigned i = 0; i < nshards; i++) {
        atomic_init(&c->shards[i].lo, SHARP__AC_NBUCKETS);
        atomic_init(&c->shards[i].hi, 0);
    }
    c->hist_outcomes = hist_outcomes;
    c->track_max_in_flight = kind == SHARP_AC_AIMD;
    c->rng = seed;
    c->prev_buckets = sharp_calloc(SHARP__AC_NBUCKETS, sizeof(uint64_t));
    c->win_buckets = sharp_calloc(SHARP__AC_NBUCKETS, sizeof(uint64_t));
    c->win_lo = SHARP__AC_NBUCKETS;
    c->win_hi = 0;
    atomic_init(&c->limit, limit);
    atomic_init(&c->next_update_ns, UINT64_MAX);
}

void sharp__ac_fini(sharp_ac_controller_t *c)
{
    free(c->shards);
    free(c->prev_buckets);
    free(c->win_buckets);
}

/* splitmix64: small, fast and good enough for jitter. */
uint64_t sharp__ac_rand(sharp_ac_controller_t *c)
{
    uint64_t z = (c->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- Config helpers ---- */

int sharp__ac_duration_ns(const Google__Protobuf__Duration *d, const char *path, uint64_t *out,
                          char *err, size_t errlen)
{
    if (d->seconds < 0 || d->nanos < 0 || d->nanos >= 1000000000) {
        snprintf(err, errlen, "%s: must be a non-negative duration", path);
        return -1;
    }
    if (d->seconds > 10000000000ll) {
        snprintf(err, errlen, "%s: duration too large", path);
        return -1;
    }
    *out = (uint64_t)d->seconds * 1000000000ull + (uint64_t)d->nanos;
    return 0;
}

int sharp__ac_percent(const Envoy__Type__V3__Percent *p, double def, const char *path, double *out,
                      char *err, size_t errlen)
{
    double v = p ? p->value : def;
    if (!(v >= 0.0 && v <= 100.0)) {
        snprintf(err, errlen, "%s: value must be in [0, 100]", path);
        return -1;
    }
    *out = v / 100.0;
    return 0;
}

/* ---- Update scheduling ---- */

/* Runs the algorithm's update unless another thread is running one. A
 * request that arrives while an update runs sets `pending`, and the running
 * thread looks again after dropping the flag, so no trigger is lost: with
 * sequentially consistent ordering either the requester wins the flag or the
 * holder sees the request. */
static void run_update(sharp_ac_controller_t *c)
{
    atomic_store(&c->pending, 1);
    while (atomic_load(&c->pending)) {
        if (atomic_exchange(&c->updating, 1)) return;
        atomic_store(&c->pending, 0);
        c->update(c, c->clock(c->clock_arg));
        atomic_store(&c->updating, 0);
    }
}

static inline void update_if_due(sharp_ac_controller_t *c, uint64_t now)
{
    if (sharp_unlikely(now >= atomic_load_explicit(&c->next_update_ns, memory_order_relaxed)))
        run_update(c);
}

void sharp_ac_tick(sharp_ac_controller_t *c)
{
    update_if_due(c, c->clock(c->clock_arg));
}

/* ---- Admission ---- */

/* The limit is read once; the compare-and-swap only raises in-flight while
 * it is below that limit, so concurrent callers never admit beyond it (see
 * the admission bound in controller.h). A weak CAS that fails reloads the
 * current count and tries again while there is room. */
bool sharp_ac_try_acquire(sharp_ac_controller_t *c, unsigned shard, uint64_t *start_ns)
{
    uint64_t now = c->clock(c->clock_arg);
    update_if_due(c, now);
    uint32_t limit = atomic_load_explicit(&c->limit, memory_order_relaxed);
    uint32_t cur = atomic_load_explicit(&c->in_flight, memory_order_relaxed);
    while (cur < limit) {
        if (atomic_compare_exchange_weak_explicit(&c->in_flight, &cur, cur + 1,
                                                  memory_order_acq_rel, memory_order_relaxed)) {
            if (c->track_max_in_flight) {
                uint32_t m = atomic_load_explicit(&c->window_max_in_flight, memory_order_relaxed);
                while (cur + 1 > m && !atomic_compare_exchange_weak_explicit(
                                          &c->window_max_in_flight, &m, cur + 1,
                                          memory_order_relaxed, memory_order_relaxed)) {
                }
            }
            *start_ns = now;
            return true;
        }
    }
    sharp__ac_shard_t *sh = &c->shards[shard];
    atomic_store_explicit(&sh->rejected,
                          atomic_load_explicit(&sh->rejected, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return false;
}

/* Owner-only increment: no other thread writes the shard. */
static inline void shard_inc(_Atomic uint64_t *v)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void shard_record(sharp__ac_shard_t *sh, uint64_t latency_ns)
{
    uint32_t b = sharp__ac_bucket(latency_ns);
    shard_inc(&sh->buckets[b]);
    if (b < atomic_load_explicit(&sh->lo, memory_order_relaxed))
        atomic_store_explicit(&sh->lo, b, memory_order_release);
    if (b + 1 > atomic_load_explicit(&sh->hi, memory_order_relaxed))
        atomic_store_explicit(&sh->hi, b + 1, memory_order_release);
    atomic_store_explicit(&sh->samples,
                          atomic_load_explicit(&sh->samples, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* The count target is read before the floor (acquire pairs with the
 * updater's release in sharp__ac_count_start), so a sample counted for a
 * measurement was checked against that measurement's floor. One shortcut,
 * admitted: a sample that read the old floor just before a measurement
 * started may land in the histogram after the updater's baseline scan and
 * so join the measurement's percentile (without counting toward its
 * request_count); at most one per shard, as only its owner records. */
void sharp_ac_release(sharp_ac_controller_t *c, unsigned shard, uint64_t start_ns,
                      uint64_t latency_ns, sharp_ac_outcome_t outcome, bool sample)
{
    atomic_fetch_sub_explicit(&c->in_flight, 1, memory_order_release);
    if (sample && (unsigned)outcome < SHARP__AC_NOUTCOMES) {
        uint32_t target = atomic_load_explicit(&c->count_target, memory_order_acquire);
        if (start_ns >= atomic_load_explicit(&c->sample_floor_ns, memory_order_relaxed)) {
            sharp__ac_shard_t *sh = &c->shards[shard];
            shard_inc(&sh->outcomes[outcome]);
            if (c->hist_outcomes & (1u << outcome)) {
                shard_record(sh, latency_ns);
                if (target &&
                    atomic_fetch_add_explicit(&c->counted, 1, memory_order_acq_rel) + 1 >= target) {
                    run_update(c);
                    return;
                }
            }
        }
    }
    update_if_due(c, c->clock(c->clock_arg));
}

/* ---- Windows ---- */

void sharp__ac_window_peek(sharp_ac_controller_t *c, sharp__ac_window_t *w)
{
    memset(w, 0, sizeof *w);
    for (unsigned s = 0; s < c->nshards; s++) {
        sharp__ac_shard_t *sh = &c->shards[s];
        w->samples += atomic_load_explicit(&sh->samples, memory_order_acquire);
        for (unsigned o = 0; o < SHARP__AC_NOUTCOMES; o++)
            w->outcomes[o] += atomic_load_explicit(&sh->outcomes[o], memory_order_relaxed);
        w->rejected += atomic_load_explicit(&sh->rejected, memory_order_relaxed);
    }
    w->samples -= c->prev_samples;
    for (unsigned o = 0; o < SHARP__AC_NOUTCOMES; o++)
        w->outcomes[o] -= c->prev_outcomes[o];
    w->rejected -= c->prev_rejected;
    w->max_in_flight = atomic_load_explicit(&c->window_max_in_flight, memory_order_relaxed);
}

/* Each shard's counters only grow, and every updater reads them after the
 * previous one (through the updating flag), so per-bucket differences
 * against the previous commit are never negative. A bucket whose range
 * extension was not yet visible is simply counted in a later window. */
uint64_t sharp__ac_window_commit(sharp_ac_controller_t *c, sharp__ac_window_t *w)
{
    sharp__ac_window_t tmp;
    sharp__ac_window_peek(c, &tmp);
    c->prev_samples += tmp.samples;
    for (unsigned o = 0; o < SHARP__AC_NOUTCOMES; o++)
        c->prev_outcomes[o] += tmp.outcomes[o];
    c->prev_rejected += tmp.rejected;
    atomic_store_explicit(&c->window_max_in_flight,
                          atomic_load_explicit(&c->in_flight, memory_order_relaxed),
                          memory_order_relaxed);

    uint32_t glo = c->win_lo, ghi = c->win_hi;
    for (unsigned s = 0; s < c->nshards; s++) {
        uint32_t lo = atomic_load_explicit(&c->shards[s].lo, memory_order_acquire);
        uint32_t hi = atomic_load_explicit(&c->shards[s].hi, memory_order_acquire);
        if (lo < hi) {
            glo = SHARP_MIN(glo, lo);
            ghi = SHARP_MAX(ghi, hi);
        }
    }
    uint64_t *cur = c->win_buckets;
    if (glo < ghi) memset(cur + glo, 0, (ghi - glo) * sizeof *cur);
    for (unsigned s = 0; s < c->nshards; s++) {
        sharp__ac_shard_t *sh = &c->shards[s];
        /* Clamped to the union read above: a range that grew since is
         * scanned in full next time. */
        uint32_t lo = SHARP_MAX(glo, atomic_load_explicit(&sh->lo, memory_order_acquire));
        uint32_t hi = SHARP_MIN(ghi, atomic_load_explicit(&sh->hi, memory_order_acquire));
        for (uint32_t b = lo; b < hi; b++)
            cur[b] += atomic_load_explicit(&sh->buckets[b], memory_order_relaxed);
    }
    uint64_t n = 0;
    for (uint32_t b = glo; b < ghi; b++) {
        uint64_t d = cur[b] - c->prev_buckets[b];
        c->prev_buckets[b] = cur[b];
        cur[b] = d;
        n += d;
    }
    c->win_lo = glo;
    c->win_hi = ghi;
    if (w) {
        *w = tmp;
        w->samples = n;
    }
    return n;
}

uint64_t sharp__ac_window_quantile(const sharp_ac_controller_t *c, double q)
{
    uint64_t n = 0;
    for (uint32_t b = c->win_lo; b < c->win_hi; b++)
        n += c->win_buckets[b];
    if (n == 0) return 0;
    q = q < 0 ? 0 : q > 1 ? 1 : q;
    double target = q * (double)n, cum = 0;
    uint32_t last = c->win_lo;
    for (uint32_t b = c->win_lo; b < c->win_hi; b++) {
        uint64_t k = c->win_buckets[b];
        if (!k) continue;
        last = b;
        if (cum + (double)k >= target) {
            uint64_t lo, width;
            sharp__ac_bucket_range(b, &lo, &width);
            double frac = (target - cum) / (double)k;
            return lo + (uint64_t)(frac * (double)width);
        }
        cum += (double)k;
    }
    uint64_t lo, width;
    sharp__ac_bucket_range(last, &lo, &width);
    return lo + width;
}

void sharp__ac_count_start(sharp_ac_controller_t *c, uint64_t floor_ns, uint32_t target)
{
    atomic_store_explicit(&c->counted, 0, memory_order_relaxed);
    atomic_store_explicit(&c->sample_floor_ns, floor_ns, memory_order_relaxed);
    atomic_store_explicit(&c->count_target, target, memory_order_release);
}

void sharp__ac_count_stop(sharp_ac_controller_t *c)
{
    atomic_store_explicit(&c->count_target, 0, memory_order_relaxed);
}

uint32_t sharp__ac_counted(sharp_ac_controller_t *c)
{
    return atomic_load_explicit(&c->counted, memory_order_acquire);
}

/* ---- Snapshot and teardown ---- */

void sharp_ac_snapshot(const sharp_ac_controller_t *c, sharp_ac_snapshot_t *out)
{
    sharp_ac_controller_t *m = (sharp_ac_controller_t *)c; /* atomics are read only */
    memset(out, 0, sizeof *out);
    out->kind = c->kind;
    out->concurrency_limit = atomic_load_explicit(&m->limit, memory_order_relaxed);
    out->in_flight = atomic_load_explicit(&m->in_flight, memory_order_relaxed);
    out->gradient = atomic_load_explicit(&m->pub_gradient, memory_order_relaxed);
    out->burst_queue_size = atomic_load_explicit(&m->pub_burst, memory_order_relaxed);
    out->min_rtt_ns = atomic_load_explicit(&m->pub_min_rtt_ns, memory_order_relaxed);
    out->sample_rtt_ns = atomic_load_explicit(&m->pub_sample_rtt_ns, memory_order_relaxed);
    out->min_rtt_msecs = out->min_rtt_ns / 1000000;
    out->sample_rtt_msecs = out->sample_rtt_ns / 1000000;
    out->min_rtt_calculation_active = atomic_load_explicit(&m->pub_measuring, memory_order_relaxed);
    out->windows = atomic_load_explicit(&m->pub_windows, memory_order_relaxed);
}

void sharp_ac_destroy(sharp_ac_controller_t *c)
{
    if (!c) return;
    sharp__ac_fini(c);
    free(c); /* c is the first member of the algorithm's struct */
}

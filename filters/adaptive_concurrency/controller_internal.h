/* controller_internal.h: the shared core of the concurrency controllers, for
 * controller.c (admission, samples, update scheduling) and the algorithms
 * (gradient.c, aimd.c). Not part of the public API.
 *
 * An algorithm's struct embeds sharp_ac_controller_t as its first member
 * (`super`) and supplies an update function. Everything an update touches
 * that is not an atomic below is owned by whichever thread holds the
 * `updating` flag; the flag's acquire/release ordering hands that state from
 * one updater to the next.
 */
#ifndef SHARP_FILTERS_ADAPTIVE_CONCURRENCY_CONTROLLER_INTERNAL_H
#define SHARP_FILTERS_ADAPTIVE_CONCURRENCY_CONTROLLER_INTERNAL_H

#include "filters/adaptive_concurrency/controller.h"

#include <stdalign.h>
#include <stdatomic.h>

/* Latency histogram, in nanoseconds, log-linear: values below 64 get one
 * bucket each; above, every power of two is split into 64 equal buckets, so a
 * bucket is at most 1/64 (1.6%) of its lower bound wide. Values from 2^42 ns
 * (about 73 minutes) up share the last bucket. */
#define SHARP__AC_SUB_BITS 6
#define SHARP__AC_SUB (1u << SHARP__AC_SUB_BITS)
#define SHARP__AC_MAX_MSB 41
#define SHARP__AC_NBUCKETS ((SHARP__AC_MAX_MSB - SHARP__AC_SUB_BITS + 2) * SHARP__AC_SUB)
#define SHARP__AC_NOUTCOMES 4

/* One worker's samples. Written only by its owner (plain load + store on
 * atomics, no read-modify-write), read by the updater; all counts are
 * cumulative and never reset, so no other thread ever writes here. */
typedef struct {
    alignas(64) _Atomic uint64_t samples;           /* histogram entries */
    _Atomic uint64_t outcomes[SHARP__AC_NOUTCOMES]; /* sampled outcomes */
    _Atomic uint64_t rejected;                      /* try_acquire refusals */
    _Atomic uint32_t lo, hi;                        /* touched buckets [lo, hi) */
    _Atomic uint64_t buckets[SHARP__AC_NBUCKETS];
} sharp__ac_shard_t;

/* What happened since the previous committed window (updater only). */
typedef struct {
    uint64_t samples;
    uint64_t outcomes[SHARP__AC_NOUTCOMES];
    uint64_t rejected;
    uint32_t max_in_flight; /* highest in-flight count seen (tracked for AIMD only) */
} sharp__ac_window_t;

/* Runs with the updating flag held, at time now. Must leave next_update_ns
 * at the time of its next scheduled event (UINT64_MAX for none). */
typedef void (*sharp__ac_update_fn)(sharp_ac_controller_t *c, uint64_t now);

struct sharp_ac_controller {
    sharp_ac_kind_t kind;
    sharp__ac_update_fn update;
    sharp_ac_clock_fn clock;
    void *clock_arg;
    unsigned nshards;
    sharp__ac_shard_t *shards;
    uint32_t hist_outcomes;   /* bit per outcome whose latency enters the histogram */
    bool track_max_in_flight; /* maintain window_max_in_flight on admission */

    /* Read by every call; written by the updater only. */
    alignas(64) _Atomic uint32_t limit;
    _Atomic uint64_t next_update_ns;
    _Atomic uint64_t sample_floor_ns; /* samples of requests started earlier are ignored */
    _Atomic uint32_t count_target;    /* > 0: count samples, update when reached */

    /* Read-modify-written by every admission and release. */
    alignas(64) _Atomic uint32_t in_flight;
    alignas(64) _Atomic uint32_t window_max_in_flight;
    _Atomic uint32_t counted;
    alignas(64) _Atomic int updating; /* 1 while a thread runs an update */
    _Atomic int pending;              /* an update was asked for */

    /* Published for sharp_ac_snapshot (written by the updater). */
    alignas(64) _Atomic uint64_t pub_gradient, pub_burst, pub_min_rtt_ns, pub_sample_rtt_ns;
    _Atomic uint64_t pub_windows;
    _Atomic bool pub_measuring;

    /* Updater-only state. */
    uint64_t rng;
    uint64_t prev_samples, prev_outcomes[SHARP__AC_NOUTCOMES], prev_rejected;
    uint64_t *prev_buckets; /* all shards' cumulative counts at the last commit */
    uint64_t *win_buckets;  /* counts of the last committed window */
    uint32_t win_lo, win_hi;
};

/* Zeroed memory aligned for the structs above (aborts when out of memory,
 * like sharp_calloc). Freed with free(). */
void *sharp__ac_alloc(size_t size);

/* Sets up the core embedded in an algorithm's struct (allocated with
 * sharp__ac_alloc). The limit starts at `limit`; no update is scheduled. */
void sharp__ac_init(sharp_ac_controller_t *c, sharp_ac_kind_t kind, sharp__ac_update_fn update,
                    unsigned nshards, sharp_ac_clock_fn clock, void *clock_arg, uint64_t seed,
                    uint32_t hist_outcomes, uint32_t limit);
/* Frees what sharp__ac_init allocated (not c itself). */
void sharp__ac_fini(sharp_ac_controller_t *c);

/* Config helpers: a Duration in ns (>= 0, nanos in range, below ~300
 * years) and a Percent (in [0, 100], def when p is NULL) as a fraction.
 * Return 0, or -1 with "<path>: <what>" in err. */
int sharp__ac_duration_ns(const Google__Protobuf__Duration *d, const char *path, uint64_t *out,
                          char *err, size_t errlen);
int sharp__ac_percent(const Envoy__Type__V3__Percent *p, double def, const char *path, double *out,
                      char *err, size_t errlen);

/* ---- For update functions (updating flag held) ---- */

/* Uniform pseudo-random 64-bit value. */
uint64_t sharp__ac_rand(sharp_ac_controller_t *c);
/* Totals since the last commit, without closing the window (histogram not
 * scanned; samples counts entries the owners have published so far). */
void sharp__ac_window_peek(sharp_ac_controller_t *c, sharp__ac_window_t *w);
/* Closes the window: scans every shard's histogram into the window's counts,
 * fills w (may be NULL) and returns the number of samples in the window. */
uint64_t sharp__ac_window_commit(sharp_ac_controller_t *c, sharp__ac_window_t *w);
/* Quantile q in [0,1] of the last committed window in ns (interpolated inside
 * a bucket); 0 when the window was empty. */
uint64_t sharp__ac_window_quantile(const sharp_ac_controller_t *c, double q);
/* Starts counting samples of requests admitted at or after floor_ns; an
 * update is triggered once `target` have been recorded. */
void sharp__ac_count_start(sharp_ac_controller_t *c, uint64_t floor_ns, uint32_t target);
void sharp__ac_count_stop(sharp_ac_controller_t *c);
uint32_t sharp__ac_counted(sharp_ac_controller_t *c);

static inline void sharp__ac_set_limit(sharp_ac_controller_t *c, uint32_t limit)
{
    atomic_store_explicit(&c->limit, limit, memory_order_relaxed);
}

static inline uint32_t sharp__ac_get_limit(const sharp_ac_controller_t *c)
{
    return atomic_load_explicit(&c->limit, memory_order_relaxed);
}

static inline void sharp__ac_set_next_update(sharp_ac_controller_t *c, uint64_t t)
{
    atomic_store_explicit(&c->next_update_ns, t, memory_order_relaxed);
}

static inline void sharp__ac_publish(_Atomic uint64_t *field, uint64_t v)
{
    atomic_store_explicit(field, v, memory_order_relaxed);
}

/* Bucket of a latency, and a bucket's lower bound and width. */
static inline uint32_t sharp__ac_bucket(uint64_t v)
{
    if (v < SHARP__AC_SUB) return (uint32_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb > SHARP__AC_MAX_MSB) return SHARP__AC_NBUCKETS - 1;
    unsigned shift = msb - SHARP__AC_SUB_BITS;
    return (shift + 1) * SHARP__AC_SUB + (uint32_t)((v >> shift) - SHARP__AC_SUB);
}

static inline void sharp__ac_bucket_range(uint32_t b, uint64_t *lo, uint64_t *width)
{
    uint32_t row = b >> SHARP__AC_SUB_BITS, sub = b & (SHARP__AC_SUB - 1);
    if (row == 0) {
        *lo = sub;
        *width = 1;
    } else {
        *lo = (uint64_t)(SHARP__AC_SUB + sub) << (row - 1);
        *width = (uint64_t)1 << (row - 1);
    }
}

#endif

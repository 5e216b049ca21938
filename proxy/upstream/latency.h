/* latency.h: a host's request latencies over one interval, as a histogram
 * that workers add to without locks and the main thread reads and resets.
 *
 * Buckets are log-linear over microseconds: 0..15 us exactly, then eight
 * buckets per power of two up to 2^32 us (71 minutes; longer values land in
 * the last bucket), so a percentile read from them is within 6.25% of the
 * true value (the middle of a bucket 12.5% wide). 240 buckets of 32 bits:
 * 960 bytes per host, allocated only for clusters with the latency monitor
 * (upstream/outlier.h). Recording is one relaxed atomic add. */
#ifndef SHARP_UPSTREAM_LATENCY_H
#define SHARP_UPSTREAM_LATENCY_H

#include "common.h"

#include <stdatomic.h>

#define SHARP_LATENCY_EXACT 16   /* values below are their own bucket */
#define SHARP_LATENCY_SUB 8      /* buckets per power of two above */
#define SHARP_LATENCY_BUCKETS (SHARP_LATENCY_EXACT + (32 - 4) * SHARP_LATENCY_SUB)

typedef struct sharp_latency_hist {
    _Atomic uint32_t b[SHARP_LATENCY_BUCKETS];
} sharp_latency_hist_t;

/* The bucket of a latency of `us` microseconds. */
static inline uint32_t sharp_latency_bucket(uint64_t us)
{
    if (us < SHARP_LATENCY_EXACT) return (uint32_t)us;
    if (us > UINT32_MAX) us = UINT32_MAX;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(us); /* 4..31 */
    uint32_t sub = (uint32_t)(us >> (e - 3)) & (SHARP_LATENCY_SUB - 1);
    return SHARP_LATENCY_EXACT + (e - 4) * SHARP_LATENCY_SUB + sub;
}

/* Any thread: one latency. */
static inline void sharp_latency_record(sharp_latency_hist_t *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->b[sharp_latency_bucket(us)], 1, memory_order_relaxed);
}

/* The bucket's range [low, high) in microseconds. */
void sharp_latency_bucket_range(uint32_t bucket, uint64_t *low, uint64_t *high);

/* Main thread: moves the histogram's counts to out[] (zeroing it: a value
 * a worker adds meanwhile counts in the next interval) and returns their
 * total. */
uint64_t sharp_latency_take(sharp_latency_hist_t *h, uint32_t out[SHARP_LATENCY_BUCKETS]);

/* The pct-th percentile (0 < pct <= 100) of the n values counted in
 * counts[], in microseconds: the middle of the bucket holding the value of
 * rank ceil(pct / 100 * n) (the value itself below 16 us); -1 when n is 0. */
double sharp_latency_percentile(const uint32_t counts[SHARP_LATENCY_BUCKETS], uint64_t n, double pct);

#endif

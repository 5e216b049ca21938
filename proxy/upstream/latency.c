/* latency.c: see latency.h. */
#include "upstream/latency.h"

#include <math.h>

void sharp_latency_bucket_range(uint32_t b, uint64_t *low, uint64_t *high)
{
    if (b < SHARP_LATENCY_EXACT) {
        *low = b;
        *high = (uint64_t)b + 1;
        return;
    }
    uint32_t e = (b - SHARP_LATENCY_EXACT) / SHARP_LATENCY_SUB + 4;
    uint64_t sub = (b - SHARP_LATENCY_EXACT) % SHARP_LATENCY_SUB;
    *low = (SHARP_LATENCY_SUB + sub) << (e - 3);
    *high = (SHARP_LATENCY_SUB + sub + 1) << (e - 3);
}

uint64_t sharp_latency_take(sharp_latency_hist_t *h, uint32_t out[SHARP_LATENCY_BUCKETS])
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < SHARP_LATENCY_BUCKETS; i++) {
        /* most buckets are empty: a load spares them the exclusive access */
        out[i] = atomic_load_explicit(&h->b[i], memory_order_relaxed)
                     ? atomic_exchange_explicit(&h->b[i], 0, memory_order_relaxed)
                     : 0;
        n += out[i];
    }
    return n;
}

double sharp_latency_percentile(const uint32_t counts[SHARP_LATENCY_BUCKETS], uint64_t n, double pct)
{
    if (!n) return -1;
    double r = ceil(pct / 100.0 * (double)n);
    uint64_t rank = r < 1 ? 1 : r > (double)n ? n : (uint64_t)r;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < SHARP_LATENCY_BUCKETS; i++) {
        seen += counts[i];
        if (seen < rank) continue;
        if (i < SHARP_LATENCY_EXACT) return i;
        uint64_t lo, hi;
        sharp_latency_bucket_range(i, &lo, &hi);
        return ((double)lo + (double)hi) / 2;
    }
    return -1; /* counts[] holds fewer than n values */
}

/* bucket.c: see bucket.h. */
#include "filters/bandwidth_limit/bucket.h"

#include <math.h>

void sharp_bw_bucket_init(sharp_bw_bucket_t *b, uint64_t limit_kbps, uint64_t now_ns)
{
    pthread_mutex_init(&b->mu, NULL);
    b->max = (double)limit_kbps * 1024.0;
    b->rate = b->max;
    b->tokens = b->max;
    b->last_ns = now_ns;
}

void sharp_bw_bucket_destroy(sharp_bw_bucket_t *b)
{
    pthread_mutex_destroy(&b->mu);
}

uint64_t sharp_bw_bucket_take(sharp_bw_bucket_t *b, uint64_t want, uint64_t now_ns)
{
    pthread_mutex_lock(&b->mu);
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) / 1e9 * b->rate;
        if (b->tokens > b->max) b->tokens = b->max;
        b->last_ns = now_ns;
    }
    double have = floor(b->tokens);
    uint64_t take = (double)want < have ? want : (uint64_t)have;
    b->tokens -= (double)take;
    pthread_mutex_unlock(&b->mu);
    return take;
}

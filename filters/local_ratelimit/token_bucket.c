/* token_bucket.c: see token_bucket.h. */
#include "filters/local_ratelimit/token_bucket.h"

#include <math.h>

void sharp_token_bucket_init(sharp_token_bucket_t *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                             uint64_t fill_interval_ns, uint64_t now_ns)
{
    b->max_tokens = max_tokens;
    b->rate = (double)tokens_per_fill / (double)(fill_interval_ns ? fill_interval_ns : 1);
    /* full at start: empty max_tokens' worth of filling ago */
    atomic_init(&b->empty_at, (int64_t)now_ns - (int64_t)ceil(b->max_tokens / b->rate));
}

static double tokens_at(const sharp_token_bucket_t *b, int64_t empty_at, uint64_t now_ns)
{
    double t = ((double)((int64_t)now_ns - empty_at)) * b->rate;
    if (t < 0) return 0;
    return t < b->max_tokens ? t : b->max_tokens;
}

bool sharp_token_bucket_consume(sharp_token_bucket_t *b, uint64_t now_ns)
{
    int64_t old = atomic_load_explicit(&b->empty_at, memory_order_relaxed);
    int64_t next;
    do {
        double total = tokens_at(b, old, now_ns);
        if (total < 1.0) return false;
        /* what is left after this token, expressed again as an empty time;
         * rounded down so that rounding never takes a fraction of a token */
        next = (int64_t)now_ns - (int64_t)floor((total - 1.0) / b->rate);
    } while (!atomic_compare_exchange_weak_explicit(&b->empty_at, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

uint64_t sharp_token_bucket_remaining(const sharp_token_bucket_t *b, uint64_t now_ns)
{
    sharp_token_bucket_t *m = (sharp_token_bucket_t *)b;
    return (uint64_t)tokens_at(b, atomic_load_explicit(&m->empty_at, memory_order_relaxed), now_ns);
}

uint64_t sharp_token_bucket_next_token_ns(const sharp_token_bucket_t *b, uint64_t now_ns)
{
    sharp_token_bucket_t *m = (sharp_token_bucket_t *)b;
    double t = tokens_at(b, atomic_load_explicit(&m->empty_at, memory_order_relaxed), now_ns);
    if (t >= 1.0) return 0;
    return (uint64_t)ceil((1.0 - t) / b->rate);
}

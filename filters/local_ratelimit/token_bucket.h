/* token_bucket.h: the token bucket of envoy.filters.http.local_ratelimit,
 * Envoy's AtomicTokenBucketImpl. The bucket fills continuously at
 * tokens_per_fill per fill_interval up to max_tokens, and starts full. Its
 * whole state is one atomic word, the time at which it was (or would have
 * been) empty: the tokens at `now` are min(max, (now - t) * rate). Taking a
 * token moves t forward with a compare-and-swap, so workers on different
 * threads share one bucket without a lock and no token is taken twice.
 * Times are monotonic nanoseconds passed in by the caller (tests use a fake
 * clock). */
#ifndef SHARP_FILTERS_LOCAL_RATELIMIT_TOKEN_BUCKET_H
#define SHARP_FILTERS_LOCAL_RATELIMIT_TOKEN_BUCKET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct sharp_token_bucket {
    _Atomic int64_t empty_at; /* ns: when the bucket was empty */
    double max_tokens;
    double rate; /* tokens per ns */
} sharp_token_bucket_t;

void sharp_token_bucket_init(sharp_token_bucket_t *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                             uint64_t fill_interval_ns, uint64_t now_ns);
/* Takes one token; false when fewer than one is there. */
bool sharp_token_bucket_consume(sharp_token_bucket_t *b, uint64_t now_ns);
/* The whole tokens there now (x-ratelimit-remaining). */
uint64_t sharp_token_bucket_remaining(const sharp_token_bucket_t *b, uint64_t now_ns);
/* Nanoseconds until a token is there (0 when one is), Envoy's nextTokenAvailable. */
uint64_t sharp_token_bucket_next_token_ns(const sharp_token_bucket_t *b, uint64_t now_ns);

#endif

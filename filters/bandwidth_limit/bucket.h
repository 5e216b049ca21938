/* bucket.h: the token bucket of envoy.filters.http.bandwidth_limit,
 * Envoy's SharedTokenBucketImpl over TokenBucketImpl. It holds up to
 * `max` tokens (bytes), starts full and refills continuously at `rate`
 * tokens per second; a take asks for some bytes and gets as many whole
 * tokens as are there (Envoy's consume with allow_partial). One bucket
 * serves every stream of its filter config on every worker, behind a
 * mutex, as Envoy's shared bucket does. Times are monotonic nanoseconds
 * passed in by the caller (tests use a fake clock). */
#ifndef SHARP_FILTERS_BANDWIDTH_LIMIT_BUCKET_H
#define SHARP_FILTERS_BANDWIDTH_LIMIT_BUCKET_H

#include <pthread.h>
#include <stdint.h>

typedef struct sharp_bw_bucket {
    pthread_mutex_t mu;
    double max;    /* bytes */
    double rate;   /* bytes per second */
    double tokens; /* there at last_ns */
    uint64_t last_ns;
} sharp_bw_bucket_t;

/* A bucket of limit_kbps KiB: max and rate limit_kbps * 1024 bytes. */
void sharp_bw_bucket_init(sharp_bw_bucket_t *b, uint64_t limit_kbps, uint64_t now_ns);
void sharp_bw_bucket_destroy(sharp_bw_bucket_t *b);
/* Takes at most `want` bytes' tokens: the number taken (0 when less than
 * one whole token is there). */
uint64_t sharp_bw_bucket_take(sharp_bw_bucket_t *b, uint64_t want, uint64_t now_ns);

#endif

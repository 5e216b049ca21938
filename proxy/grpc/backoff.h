/* backoff.h: Envoy's JitteredExponentialBackOffStrategy
 * (source/common/common/backoff_strategy.cc), used by the gRPC client's
 * retrying stream (grpc/client.h) to space reconnections.
 *
 * The interval starts at base_ms and doubles after each back-off until
 * doubling would pass max_ms / 2, from where it is max_ms; each back-off is
 * "full jitter": random() % interval, i.e. uniform in [0, interval). A
 * success resets the interval to base_ms. The random source is the
 * caller's, so that tests are deterministic. */
#ifndef SHARP_GRPC_BACKOFF_H
#define SHARP_GRPC_BACKOFF_H

#include <stdint.h>

typedef struct sharp_backoff {
    uint64_t base_ms, max_ms, next_ms;
    uint64_t (*random)(void *arg);
    void *random_arg;
} sharp_backoff_t;

/* base_ms > 0 and base_ms <= max_ms (Envoy asserts both; values that break
 * them are corrected: base 0 becomes 1, a max below base becomes base). */
void sharp_backoff_init(sharp_backoff_t *b, uint64_t base_ms, uint64_t max_ms, uint64_t (*random)(void *arg),
                        void *random_arg);
/* The next back-off in ms, in [0, current interval); advances the interval. */
uint64_t sharp_backoff_next(sharp_backoff_t *b);
/* The interval the next call draws from (its exclusive upper bound). */
static inline uint64_t sharp_backoff_interval(const sharp_backoff_t *b)
{
    return b->next_ms;
}
void sharp_backoff_reset(sharp_backoff_t *b);

#endif

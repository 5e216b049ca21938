/* backoff.c: jittered exponential back-off (see backoff.h). */
#include "grpc/backoff.h"

void sharp_backoff_init(sharp_backoff_t *b, uint64_t base_ms, uint64_t max_ms, uint64_t (*random)(void *arg),
                        void *random_arg)
{
    b->base_ms = base_ms ? base_ms : 1;
    b->max_ms = max_ms < b->base_ms ? b->base_ms : max_ms;
    b->next_ms = b->base_ms;
    b->random = random;
    b->random_arg = random_arg;
}

uint64_t sharp_backoff_next(sharp_backoff_t *b)
{
    uint64_t interval = b->next_ms;
    /* doubled while that stays within max / 2 (no overflow either), else
     * the maximum from then on */
    b->next_ms = b->next_ms < b->max_ms / 2 ? b->next_ms * 2 : b->max_ms;
    return b->random(b->random_arg) % interval;
}

void sharp_backoff_reset(sharp_backoff_t *b)
{
    b->next_ms = b->base_ms;
}

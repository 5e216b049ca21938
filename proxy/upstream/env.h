/* env.h: what the upstream connection pools (pool.h) need from the thread
 * that owns them: its loop, its stats shard, its random state and whether
 * it drains or stops. A worker embeds one pointing at its own fields; the
 * main thread has one too (sharp_server_t), for the pools of SHARP's own
 * clients there (the gRPC client, grpc/client.h). The flags are pointers so
 * that the owner keeps setting its own fields as before. */
#ifndef SHARP_UPSTREAM_ENV_H
#define SHARP_UPSTREAM_ENV_H

#include "common.h"
#include "stats.h"

#include <uv.h>

typedef struct sharp_upstream_env {
    uv_loop_t *loop;
    sharp_stats_shard_t *stats;
    uint64_t *rng;          /* xorshift64* state (sharp_xorshift64s) */
    const bool *draining;   /* reusable connections close once idle */
    const bool *stopping;   /* idle connections close at once */
} sharp_upstream_env_t;

static inline uint64_t sharp_upstream_env_random(const sharp_upstream_env_t *e)
{
    return sharp_xorshift64s(e->rng);
}

#endif

/* dispatcher_stats.h: Envoy's event loop statistics (the bootstrap's
 * enable_dispatcher_stats), for the main thread (server.dispatcher.*) and
 * each worker (listener_manager.worker_<i>.dispatcher.*):
 *
 *   loop_duration_us  a loop turn's work: from the end of one poll to the
 *                     start of the next (callbacks, timers, deferred work)
 *   poll_delay_us     how much longer a poll took than its timeout, when
 *                     it had one and was late (a late timer: the thread
 *                     was not scheduled)
 *
 * A libuv prepare handle (just before each poll) and check handle (just
 * after it) on the thread's loop, as Envoy's libevent prepare and check
 * watchers; both unreferenced, so they never keep a loop running. */
#ifndef SHARP_DISPATCHER_STATS_H
#define SHARP_DISPATCHER_STATS_H

#include "stats.h"

#include <uv.h>

typedef struct sharp_dispatcher_stats {
    uv_prepare_t prepare;
    uv_check_t check;
    sharp_stats_shard_t *shard;
    sharp_stat_id_t loop_duration, poll_delay;
    uint64_t prepare_ns, check_ns; /* 0: none yet */
    int timeout_ms;                /* the poll's timeout, -1: none */
    bool on;
} sharp_dispatcher_stats_t;

/* Starts recording into `shard` under `prefix` ("server.dispatcher.",
 * "listener_manager.worker_0.dispatcher."); registers the histograms. */
void sharp_dispatcher_stats_start(sharp_dispatcher_stats_t *d, uv_loop_t *loop, sharp_stats_t *stats,
                                  sharp_stats_shard_t *shard, const char *prefix);
/* Closes both handles (their memory is d's: the loop must run their close
 * before d goes); nothing when it was not started. */
void sharp_dispatcher_stats_stop(sharp_dispatcher_stats_t *d);

/* The values one turn records, from its timestamps (exposed for tests):
 * loop duration prepare - previous check (when there was one), poll delay
 * (check - prepare) - timeout when the poll had a timeout and overran it;
 * microseconds, false when there is none. */
bool sharp_dispatcher_loop_duration_us(uint64_t prev_check_ns, uint64_t prepare_ns, uint64_t *us);
bool sharp_dispatcher_poll_delay_us(uint64_t prepare_ns, uint64_t check_ns, int timeout_ms, uint64_t *us);

#endif

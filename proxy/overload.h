/* overload.h: Envoy's overload manager (Bootstrap.overload_manager).
 *
 * Resource monitors measure a pressure (fixed_heap: the allocator's measure,
 * sharp_heap_pressure_bytes in heap.h, / limit);
 * triggers turn a pressure into an action state in [0, 1] (threshold: 0 or
 * saturated; scaled: a ramp between two thresholds); an action's state is
 * the largest of its triggers'. The main thread refreshes pressures every
 * refresh_interval and publishes each action's state as one atomic; the
 * workers read it on their data path (a relaxed load and, for a scaled
 * state, one random draw, as Envoy's bernoulli). The global downstream
 * connection limit (global_downstream_max_connections) is Envoy's proactive
 * resource: one counter all workers take from with a compare-and-swap at
 * accept, so the limit holds exactly across workers.
 *
 * The state is process-wide, as the overload manager is bootstrap-only. */
#ifndef SHARP_OVERLOAD_H
#define SHARP_OVERLOAD_H

#include "common.h"
#include "heap.h"
#include "stats.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum {
    SHARP_OL_STOP_ACCEPTING_REQUESTS,
    SHARP_OL_DISABLE_HTTP_KEEPALIVE,
    SHARP_OL_REJECT_INCOMING_CONNECTIONS,
    SHARP_OL_SHRINK_HEAP,
    SHARP_OL_REDUCE_TIMEOUTS,
    SHARP_OL_RESET_HIGH_MEMORY_STREAM,
    SHARP_OL_STOP_ACCEPTING_CONNECTIONS,
    SHARP_OL_NACTIONS
} sharp_ol_action_kind_t;

typedef enum {
    SHARP_OL_MONITOR_FIXED_HEAP,
    SHARP_OL_MONITOR_DOWNSTREAM_CONNECTIONS, /* proactive: no pressure, not a trigger */
} sharp_ol_monitor_kind_t;

typedef struct sharp_ol_trigger {
    uint32_t monitor; /* index into the config's monitors */
    bool scaled;
    double threshold;            /* ThresholdTrigger.value */
    double scaling, saturation;  /* ScaledTrigger */
} sharp_ol_trigger_t;

typedef struct sharp_ol_monitor {
    char *name;
    sharp_ol_monitor_kind_t kind;
    uint64_t max; /* max_heap_size_bytes / max_active_downstream_connections */
    sharp_stat_id_t pressure, failed_updates, skipped_updates;
} sharp_ol_monitor_t;

/* The downstream timers reduce_timeouts scales (Envoy's TimerType). */
typedef enum {
    SHARP_OL_TIMER_CONNECTION_IDLE, /* HTTP_DOWNSTREAM_CONNECTION_IDLE: idle_timeout */
    SHARP_OL_TIMER_STREAM_IDLE,     /* HTTP_DOWNSTREAM_STREAM_IDLE: stream_idle_timeout, route idle_timeout */
    SHARP_OL_TIMER_CONNECTION_MAX,  /* HTTP_DOWNSTREAM_CONNECTION_MAX: max_connection_duration */
    SHARP_OL_NTIMERS
} sharp_ol_timer_t;

/* A ScaleTimer: the minimum a timer shrinks to when the action saturates,
 * absolute (min_timeout) or a share of the timer (min_scale). */
typedef struct {
    bool set;
    bool is_scale;
    uint64_t min_ms;
    double min_scale;
} sharp_ol_timer_scale_t;

typedef struct sharp_ol_action {
    char *name;
    sharp_ol_action_kind_t kind;
    sharp_ol_trigger_t *triggers;
    uint32_t ntriggers;
    sharp_stat_id_t active, scale_percent;
} sharp_ol_action_t;

typedef struct sharp_overload_config {
    uint64_t refresh_ms; /* default 1 s */
    sharp_ol_monitor_t *monitors;
    uint32_t nmonitors;
    sharp_ol_action_t *actions;
    uint32_t nactions;
    uint64_t shrink_interval_ms;   /* ShrinkHeapConfig.timer_interval, default 10 s */
    uint64_t shrink_max_unfreed;   /* ShrinkHeapConfig.max_unfreed_memory_bytes, default 100 MiB */
    sharp_stat_id_t refresh_interval_delay, shrink_count;
    /* reduce_timeouts: per timer, the minimum it shrinks to */
    sharp_ol_timer_scale_t timers[SHARP_OL_NTIMERS];
    /* buffer_factory_config.minimum_account_to_track_power_of_two (0: unset) */
    uint32_t min_account_pow2;
    sharp_stat_id_t reset_streams_count; /* overload.<reset_high_memory_stream>.count */
} sharp_overload_config_t;

/* Action names (Envoy's) -> kind; -1 for a name SHARP does not implement. */
int sharp_overload_action_kind(const char *name);

/* A trigger's state for a pressure: 0 (inactive), a value in (0, 1) while
 * scaling, 1 saturated (Envoy's ThresholdTriggerImpl/ScaledTriggerImpl). */
double sharp_overload_trigger_state(const sharp_ol_trigger_t *t, double pressure);

/* An action's state: the largest state of its triggers; `pressures` is
 * indexed by monitor. */
double sharp_overload_action_state(const sharp_ol_action_t *a, const double *pressures);

/* The state as published (millionths, 1000000 = saturated), and Envoy's
 * bernoulli draw on it with a 64-bit random value. */
bool sharp_overload_bernoulli(uint32_t ppm, uint64_t random);

void sharp_overload_config_free(sharp_overload_config_t *c);

/* ---- the running manager (main thread) ---- */

/* Starts refreshing on `loop` (the main loop); `cfg` may be NULL (no
 * overload manager: every action stays inactive, no connection limit). */
void sharp_overload_start(uv_loop_t *loop, const sharp_overload_config_t *cfg, sharp_stats_t *stats);
/* Stops the timers (shutdown); their handles close on the loop. */
void sharp_overload_stop(void);
/* One refresh now (tests, and the admin before it renders stats). */
void sharp_overload_refresh(void);

/* ---- data path (any worker) ---- */

/* The published state of an action, in millionths. */
uint32_t sharp_overload_state(sharp_ol_action_kind_t a);

/* Should this draw take the action? (false when inactive) */
bool sharp_overload_take(sharp_ol_action_kind_t a, uint64_t random);

typedef enum {
    SHARP_OL_ADMIT,
    SHARP_OL_REJECT_GLOBAL_LIMIT,    /* downstream_global_cx_overflow */
    SHARP_OL_REJECT_OVERLOAD_ACTION, /* downstream_cx_overload_reject */
} sharp_ol_admit_t;

/* At accept: the global connection limit (unless `ignore_global_limit`:
 * counted, never refused), then reject_incoming_connections (unless
 * `bypass`). An admitted connection must be released with
 * sharp_overload_connection_closed() when it closes. */
sharp_ol_admit_t sharp_overload_admit_connection(bool ignore_global_limit, bool bypass, uint64_t random);
void sharp_overload_connection_closed(void);
/* reduce_timeouts (Envoy's scaled range timers): a timer of type `t` and
 * `max_ms` armed `elapsed_ms` ago is due after min + (max - min) *
 * (1 - state); returns the time left (0: due now), or max_ms - elapsed_ms
 * when that timer is not scaled. */
uint64_t sharp_overload_timer_remaining_ms(sharp_ol_timer_t t, uint64_t max_ms, uint64_t elapsed_ms);
/* The minimum of a configured scale, as Envoy's ScaledTimerMinimum. */
uint64_t sharp_overload_scaled_timeout_ms(uint64_t max_ms, uint64_t min_ms, uint32_t state_ppm);
/* Bumped whenever reduce_timeouts, reset_high_memory_stream or
 * stop_accepting_connections changes state: workers then re-arm their
 * scaled timers, reset their largest streams, resume accepting. `wake`
 * (main thread) tells them. */
uint32_t sharp_overload_generation(void);
void sharp_overload_set_waker(void (*wake)(void *), void *arg);

/* reset_high_memory_stream (Envoy's WatermarkBufferFactory accounts): a
 * stream holding `bytes` of buffers is in memory class 0..7 (class k from
 * 2^(min_account_pow2 + k) bytes), or -1 when it holds less than
 * 2^min_account_pow2 or buffer accounting is not configured. */
int sharp_overload_memory_class(uint64_t bytes);
/* How many of the classes, from the top one down, a reset at `state_ppm`
 * clears (Envoy's resetAccountsGivenPressure: floor(state * 8) + 1, at
 * most 8); 0 while the action is inactive. */
uint32_t sharp_overload_classes_to_reset(uint32_t state_ppm);
/* Envoy resets at most this many streams per worker for one state change. */
#define SHARP_OL_MAX_RESETS_PER_UPDATE 50
/* Counts streams a worker reset (overload.<action>.count). */
void sharp_overload_count_resets(sharp_stats_shard_t *shard, uint64_t n);

/* Open downstream connections as the global limit counts them. */
int64_t sharp_overload_connections(void);

#endif

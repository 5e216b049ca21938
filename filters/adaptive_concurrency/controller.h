/* controller.h: adaptive concurrency controllers (the whole public face).
 *
 * A controller decides whether a request may go upstream now: it keeps a
 * concurrency limit and the number of admitted requests in flight, and moves
 * the limit from the latencies and outcomes of completed requests. Two
 * algorithms share this interface:
 * - gradient (gradient.c): Envoy's gradient controller, configured from
 *   envoy.extensions.filters.http.adaptive_concurrency.v3.GradientControllerConfig;
 * - AIMD (aimd.c): SHARP's additive increase / multiplicative decrease
 *   against a long-term latency baseline, configured from
 *   sharp.extensions.filters.http.adaptive_concurrency.v1.AimdControllerConfig.
 *
 * Threading. One controller is shared by all workers and is created and
 * destroyed on the main thread. try_acquire/release/tick/snapshot may be
 * called from any thread at the same time; none takes a lock. The limit and
 * the in-flight count are shared atomics. Latency samples go to per-shard
 * histograms: a shard is written by one thread at a time (its worker), so the
 * caller passes its worker's shard index, which must be < nshards. Limit
 * updates run lazily on whichever thread first sees an update fall due (one
 * at a time, guarded by an atomic flag, never waited for); sharp_ac_tick lets
 * an idle thread (a timer) drive them when no requests arrive.
 *
 * Admission bound. try_acquire admits with a compare-and-swap on the
 * in-flight count against the limit it has just read, so with a constant
 * limit L the number of admitted requests in flight never exceeds L, across
 * any number of workers. When an update lowers the limit, calls that read
 * the old limit before the store may still admit up to the old limit (at
 * most one request per concurrent call); requests already in flight are never
 * revoked, so in-flight may stay above a lowered limit until they finish.
 * A fetch_add-then-undo would be wait-free, but could refuse a request below
 * the limit while another caller's undo is pending; the CAS never does.
 *
 * Memory: about 19 KB per shard (a latency histogram), plus 38 KB.
 */
#ifndef SHARP_FILTERS_ADAPTIVE_CONCURRENCY_CONTROLLER_H
#define SHARP_FILTERS_ADAPTIVE_CONCURRENCY_CONTROLLER_H

#include "common.h"

#include "envoy/extensions/filters/http/adaptive_concurrency/v3/adaptive_concurrency.pb-c.h"
#include "sharp/extensions/filters/http/adaptive_concurrency/v1/aimd.pb-c.h"

typedef struct sharp_ac_controller sharp_ac_controller_t;

/* What became of an admitted request, as the filter saw it. */
typedef enum {
    SHARP_AC_OK,       /* a response from upstream (any status not below) */
    SHARP_AC_TIMEOUT,  /* upstream request timeout */
    SHARP_AC_OVERLOAD, /* upstream answered 503 */
    SHARP_AC_ERROR,    /* another upstream failure (5xx, reset) */
} sharp_ac_outcome_t;

/* Monotonic time in nanoseconds. NULL in the create functions means
 * sharp_now_ns. */
typedef uint64_t (*sharp_ac_clock_fn)(void *arg);

/* ---- Gradient controller (Envoy's) ---- */

typedef struct {
    double sample_aggregate_percentile;      /* quantile in [0,1]; default 0.5 */
    uint64_t concurrency_update_interval_ns; /* sample window; required, > 0 */
    uint32_t max_concurrency_limit;          /* default 1000 */
    /* Lower bound of the calculated limit; 0 (the default) means
     * min_concurrency. When set, minRTT measurements do not pin the limit to
     * min_concurrency: they sample live traffic at the current limit. */
    uint32_t min_concurrency_limit;
    uint64_t min_rtt_calc_interval_ns; /* 0: never measured (fixed_value) */
    uint32_t request_count;            /* samples per minRTT measurement; default 50 */
    double jitter;                     /* fraction of the interval; default 0.15 */
    uint32_t min_concurrency;          /* limit while measuring; default 3 */
    double buffer;                     /* fraction added to minRTT; default 0.25 */
    uint64_t fixed_value_ns;           /* > 0: minRTT is this value, never measured */
} sharp_gradient_config_t;

/* Envoy's defaults; concurrency_update_interval_ns and min_rtt_calc_interval_ns
 * (or fixed_value_ns) are left 0 for the caller to set. */
void sharp_gradient_config_default(sharp_gradient_config_t *cfg);

/* Translates and validates the proto with Envoy's defaults and rules
 * (required messages and update interval, positive counts, percents in
 * [0,100], interval >= 1ms or fixed_value set). Returns 0, or -1 with a
 * message naming the field in err. */
int sharp_gradient_config_from_proto(
    const Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig *pb,
    sharp_gradient_config_t *out, char *err, size_t errlen);

/* ---- AIMD controller (SHARP's) ---- */

typedef struct {
    uint32_t initial_limit;             /* default 20, clamped to [min_limit, max_limit] */
    uint32_t min_limit;                 /* default 3 */
    uint32_t max_limit;                 /* default 1000 */
    uint64_t update_interval_ns;        /* default 100 ms */
    double sample_aggregate_percentile; /* quantile in [0,1]; default 0.5 */
    double latency_tolerance;           /* breach above tolerance * baseline; default 1.5 */
    double decrease_ratio;              /* default 0.9 */
    uint32_t increase_step;             /* default 1 */
    uint64_t baseline_half_life_ns;     /* default 30 s */
    uint32_t min_samples;               /* per judged window; default 10 */
    bool timeout_is_drop;               /* default true */
    bool overload_is_drop;              /* 503; default true */
    bool error_is_drop;                 /* other 5xx; default false */
    bool slow_start;                    /* default true */
} sharp_aimd_config_t;

void sharp_aimd_config_default(sharp_aimd_config_t *cfg);

/* Translates and validates; pb NULL gives the defaults. Returns 0, or -1
 * with a message naming the field in err. */
int sharp_aimd_config_from_proto(
    const Sharp__Extensions__Filters__Http__AdaptiveConcurrency__V1__AimdControllerConfig *pb,
    sharp_aimd_config_t *out, char *err, size_t errlen);

/* ---- Common interface ---- */

/* Creates a controller with `nshards` sample shards (one per thread that
 * calls try_acquire/release), time from clock(clock_arg), and a private
 * pseudo-random generator seeded with `seed` (the gradient's jitter). The
 * config is copied. Returns NULL when the config is invalid (the
 * *_from_proto functions never produce such a config) or nshards is 0. */
sharp_ac_controller_t *sharp_ac_gradient_create(const sharp_gradient_config_t *cfg,
                                                unsigned nshards, sharp_ac_clock_fn clock,
                                                void *clock_arg, uint64_t seed);
sharp_ac_controller_t *sharp_ac_aimd_create(const sharp_aimd_config_t *cfg, unsigned nshards,
                                            sharp_ac_clock_fn clock, void *clock_arg,
                                            uint64_t seed);

/* Asks for a slot. True: admitted, *start_ns is the admission time to hand
 * back to release. False: over the limit; the caller rejects the request
 * (local reply 503) and must not call release. May run a due limit update. */
bool sharp_ac_try_acquire(sharp_ac_controller_t *c, unsigned shard, uint64_t *start_ns);

/* Gives back the slot of an admitted request, exactly once. With sample
 * true, latency_ns and outcome are learned from (the gradient uses every
 * outcome's latency, as Envoy does; AIMD takes latencies of SHARP_AC_OK only
 * and counts the others as configured); sample false (a reset without a
 * response) only frees the slot. start_ns is what try_acquire returned:
 * samples of requests admitted before the current minRTT measurement began
 * are ignored. May run a due limit update. */
void sharp_ac_release(sharp_ac_controller_t *c, unsigned shard, uint64_t start_ns,
                      uint64_t latency_ns, sharp_ac_outcome_t outcome, bool sample);

/* Runs a limit update if one is due. For a timer while no requests arrive;
 * never needed for correctness under traffic. */
void sharp_ac_tick(sharp_ac_controller_t *c);

typedef enum {
    SHARP_AC_GRADIENT,
    SHARP_AC_AIMD,
} sharp_ac_kind_t;

/* Current values for the filter's gauges, in Envoy's units. Each field is
 * read atomically on its own; the set is not one consistent cut. */
typedef struct {
    sharp_ac_kind_t kind;
    uint32_t concurrency_limit;
    uint32_t in_flight;
    /* Gradient: Envoy's gauge, the last gradient * 1000 (500..2000). AIMD:
     * 1000 * tolerance * baseline / sample latency (below 1000 is a breach). */
    uint64_t gradient;
    uint64_t burst_queue_size; /* gradient: the last sqrt headroom; AIMD: 0 */
    uint64_t min_rtt_msecs;    /* gradient: minRTT; AIMD: the baseline */
    uint64_t sample_rtt_msecs; /* the last window's latency percentile */
    uint64_t min_rtt_ns, sample_rtt_ns;
    bool min_rtt_calculation_active; /* always false for AIMD */
    uint64_t windows;                /* windows that produced a latency */
} sharp_ac_snapshot_t;

void sharp_ac_snapshot(const sharp_ac_controller_t *c, sharp_ac_snapshot_t *out);

/* Frees the controller. No other thread may use it any more. */
void sharp_ac_destroy(sharp_ac_controller_t *c);

#endif

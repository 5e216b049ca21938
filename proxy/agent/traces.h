/* traces.h: offered load for the scaling simulator, one value per second.
 *
 * Four shapes of traffic a service sees, each a deterministic function of
 * a seed:
 *
 *   flash    a flash crowd: a steady base, a ramp to a multiple of it
 *            within a minute or two, a plateau, a decay back to the base;
 *   diurnal  the daily cycle (a 24 h sine, trough around 03:00 and peak
 *            around 15:00) seen through an episode-long window of it;
 *   step     the load jumps to a multiple of its base within a second
 *            (a failover, a batch job starting) and later drops back;
 *   noisy    a level base with heavy correlated noise and short spikes;
 *   walk     a walk between levels: every few minutes a new level (a
 *            factor of the last, within bounds of the base), reached by a
 *            ramp of a second to ten minutes: steps, ramps up and down and
 *            plateaus of every height, in no set order.
 *
 * `mixed` draws one of the five for each episode. Every trace carries
 * multiplicative noise: an AR(1) process on the log of the rate (per
 * second, correlation 0.98 so that it wanders over tens of seconds) on top
 * of the shape.
 *
 * A trace is either the reference scenario of its kind (fixed shape
 * parameters; the seed only moves the noise) or randomized (the shape's
 * parameters drawn from ranges around the reference too), which is what
 * training uses so that a policy does not learn one timeline by heart. The
 * reference flash crowd is the product's scenario: 1,000 requests/s rising
 * to 10,000 within 60 s. */
#ifndef SHARP_AGENT_TRACES_H
#define SHARP_AGENT_TRACES_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    SHARP_TRACE_FLASH,
    SHARP_TRACE_DIURNAL,
    SHARP_TRACE_STEP,
    SHARP_TRACE_NOISY,
    SHARP_TRACE_WALK,
    SHARP_TRACE_MIXED, /* a choice among the five above, per episode */
} sharp_trace_kind_t;

#define SHARP_TRACE_KINDS 6
#define SHARP_TRACE_DAY_S 86400.0

typedef struct {
    sharp_trace_kind_t kind; /* the shape generated (never MIXED) */
    bool reference;
    int seconds;
    double start_tod; /* time of day at t = 0, seconds after midnight */
    double *rate;     /* offered requests per second for second t in [0, seconds) */
    /* The shape's parameters, for reports: the base level, the level the
     * event reaches (flash, step; the daily peak for diurnal), when the
     * event starts and how long its ramp lasts (s). */
    double base, peak, event_at, ramp_s;
} sharp_trace_t;

/* "flash", "diurnal", "step", "noisy", "walk", "mixed": 0, or -1 if unknown. */
int sharp_trace_parse(const char *name, sharp_trace_kind_t *out);
const char *sharp_trace_name(sharp_trace_kind_t k);

/* Generates `seconds` seconds (>= 1) of the trace. The rate is always
 * finite and at least 1 request/s. */
void sharp_trace_generate(sharp_trace_t *tr, sharp_trace_kind_t kind, uint64_t seed, bool reference, int seconds);
void sharp_trace_free(sharp_trace_t *tr);
/* The rate at second t, t clamped into the trace. */
double sharp_trace_rate(const sharp_trace_t *tr, int t);

#endif

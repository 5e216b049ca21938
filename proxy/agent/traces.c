/* traces.c: see traces.h. */
#include "traces.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"
#include "rng.h"

/* Streams of a trace's seed: the shape's parameters and the noise are
 * drawn apart, so a reference trace and a randomized one of the same seed
 * share their noise. */
enum { STREAM_KIND = 1, STREAM_SHAPE = 2, STREAM_NOISE = 3, STREAM_SPIKES = 4 };

/* Multiplicative noise of every trace: AR(1) on log(rate), per second. */
#define NOISE_PHI 0.98
#define NOISE_SIGMA 0.05

static const char *const names[SHARP_TRACE_KINDS] = {"flash", "diurnal", "step", "noisy", "walk", "mixed"};

int sharp_trace_parse(const char *name, sharp_trace_kind_t *out)
{
    for (int i = 0; i < SHARP_TRACE_KINDS; i++)
        if (name && !strcmp(name, names[i])) {
            *out = (sharp_trace_kind_t)i;
            return 0;
        }
    return -1;
}

const char *sharp_trace_name(sharp_trace_kind_t k)
{
    return (int)k >= 0 && (int)k < SHARP_TRACE_KINDS ? names[k] : "?";
}

/* Linear from a to b as x goes from 0 to 1 (clamped). */
static double lerp01(double a, double b, double x)
{
    x = x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
    return a + (b - a) * x;
}

static void gen_flash(sharp_trace_t *tr, sharp_rng_t *shape)
{
    double base = 1000.0, mult = 10.0, at = 600.0, ramp = 60.0, hold = 1200.0, decay = 600.0;
    tr->start_tod = 12 * 3600.0;
    if (!tr->reference) {
        base = sharp_rng_range(shape, 500.0, 2000.0);
        mult = sharp_rng_range(shape, 4.0, 12.0);
        at = sharp_rng_range(shape, 120.0, 1500.0);
        ramp = sharp_rng_range(shape, 30.0, 180.0);
        hold = sharp_rng_range(shape, 300.0, 1500.0);
        decay = sharp_rng_range(shape, 120.0, 900.0);
        tr->start_tod = sharp_rng_range(shape, 0.0, SHARP_TRACE_DAY_S);
    }
    double peak = base * mult;
    for (int t = 0; t < tr->seconds; t++) {
        double x = t, r;
        if (x < at)
            r = base;
        else if (x < at + ramp)
            r = lerp01(base, peak, (x - at) / ramp);
        else if (x < at + ramp + hold)
            r = peak;
        else
            r = lerp01(peak, base, (x - at - ramp - hold) / decay);
        tr->rate[t] = r;
    }
    tr->base = base;
    tr->peak = peak;
    tr->event_at = at;
    tr->ramp_s = ramp;
}

static void gen_diurnal(sharp_trace_t *tr, sharp_rng_t *shape)
{
    /* Trough at 03:00, peak at 15:00. The reference starts at 06:30, on
     * the morning ramp. */
    double mean = 4000.0, amp = 0.75;
    tr->start_tod = 6.5 * 3600.0;
    if (!tr->reference) {
        mean = sharp_rng_range(shape, 1500.0, 6000.0);
        amp = sharp_rng_range(shape, 0.4, 0.85);
        tr->start_tod = sharp_rng_range(shape, 0.0, SHARP_TRACE_DAY_S);
    }
    for (int t = 0; t < tr->seconds; t++) {
        double tod = tr->start_tod + t;
        tr->rate[t] = mean * (1.0 + amp * sin(2.0 * M_PI * (tod - 9 * 3600.0) / SHARP_TRACE_DAY_S));
    }
    tr->base = mean * (1.0 - amp);
    tr->peak = mean * (1.0 + amp);
    tr->event_at = 0.0;
    tr->ramp_s = SHARP_TRACE_DAY_S / 2;
}

static void gen_step(sharp_trace_t *tr, sharp_rng_t *shape)
{
    double base = 2000.0, mult = 3.0, at = 900.0, dur = 1800.0;
    tr->start_tod = 10 * 3600.0;
    if (!tr->reference) {
        base = sharp_rng_range(shape, 800.0, 3000.0);
        mult = sharp_rng_range(shape, 1.5, 5.0);
        at = sharp_rng_range(shape, 120.0, 2400.0);
        dur = sharp_rng_range(shape, 300.0, 1800.0);
        tr->start_tod = sharp_rng_range(shape, 0.0, SHARP_TRACE_DAY_S);
    }
    for (int t = 0; t < tr->seconds; t++)
        tr->rate[t] = t >= at && t < at + dur ? base * mult : base;
    tr->base = base;
    tr->peak = base * mult;
    tr->event_at = at;
    tr->ramp_s = 1.0;
}

static void gen_noisy(sharp_trace_t *tr, sharp_rng_t *shape, sharp_rng_t *spikes)
{
    double base = 3000.0, sigma = 0.15;
    tr->start_tod = 20 * 3600.0;
    if (!tr->reference) {
        base = sharp_rng_range(shape, 1000.0, 5000.0);
        sigma = sharp_rng_range(shape, 0.05, 0.25);
        tr->start_tod = sharp_rng_range(shape, 0.0, SHARP_TRACE_DAY_S);
    }
    /* Its own, heavier and faster noise (on top of every trace's), and
     * spikes: on average one per 10 minutes, x1.5 to x3 for 15 to 90 s. */
    const double phi = 0.95;
    double x = sigma * sharp_rng_normal(spikes);
    double peak = base;
    int spike_end = -1;
    double spike_mult = 1.0;
    for (int t = 0; t < tr->seconds; t++) {
        x = phi * x + sigma * sqrt(1.0 - phi * phi) * sharp_rng_normal(spikes);
        if (t >= spike_end && sharp_rng_uniform(spikes) < 1.0 / 600.0) {
            spike_mult = sharp_rng_range(spikes, 1.5, 3.0);
            spike_end = t + (int)sharp_rng_range(spikes, 15.0, 90.0);
        }
        double r = base * exp(x) * (t < spike_end ? spike_mult : 1.0);
        tr->rate[t] = r;
        if (r > peak)
            peak = r;
    }
    tr->base = base;
    tr->peak = peak;
    tr->event_at = 0.0;
    tr->ramp_s = 0.0;
}

/* From level to level: each segment holds its level for a while after a
 * linear ramp from the one before. The reference scenario's segments are
 * fixed; randomized ones draw each level as a factor of the last (log-normal,
 * sd 0.6) kept within [base / 3, 8 x base], each segment 2 to 12 minutes
 * long and each ramp 1 s to 10 minutes (half of them within 30 s). */
static void gen_walk(sharp_trace_t *tr, sharp_rng_t *shape)
{
    static const double ref_at[] = {600, 1200, 1800, 2400, 3000}, ref_ramp[] = {300, 1, 120, 30, 600},
                        ref_level[] = {2.5, 1.2, 4.0, 0.6, 2.0};
    double base = 2000.0;
    tr->start_tod = 16 * 3600.0;
    if (!tr->reference) {
        base = sharp_rng_range(shape, 300.0, 3000.0);
        tr->start_tod = sharp_rng_range(shape, 0.0, SHARP_TRACE_DAY_S);
    }
    double from = base, to = base, seg_at = 0.0, ramp = 1.0, next_at, peak = base;
    int ref = 0;
    next_at = tr->reference ? ref_at[0] : sharp_rng_range(shape, 120.0, 720.0);
    for (int t = 0; t < tr->seconds; t++) {
        if (t >= next_at) {
            from = to;
            seg_at = next_at;
            if (tr->reference) {
                int i = ref < 5 ? ref : 4;
                to = base * ref_level[i];
                ramp = ref_ramp[i];
                ref++;
                next_at = ref < 5 ? ref_at[ref] : 1e18;
            } else {
                double f = exp(0.6 * sharp_rng_normal(shape));
                to = from * f;
                to = to < base / 3.0 ? base / 3.0 : (to > 8.0 * base ? 8.0 * base : to);
                ramp = sharp_rng_uniform(shape) < 0.5 ? sharp_rng_range(shape, 1.0, 30.0)
                                                      : sharp_rng_range(shape, 30.0, 600.0);
                next_at = seg_at + sharp_rng_range(shape, 120.0, 720.0);
                if (ramp > next_at - seg_at)
                    ramp = next_at - seg_at;
            }
        }
        double r = lerp01(from, to, (t - seg_at) / ramp);
        tr->rate[t] = r;
        if (r > peak)
            peak = r;
    }
    tr->base = base;
    tr->peak = peak;
    tr->event_at = tr->reference ? ref_at[0] : 0.0;
    tr->ramp_s = tr->reference ? ref_ramp[0] : 0.0;
}

void sharp_trace_generate(sharp_trace_t *tr, sharp_trace_kind_t kind, uint64_t seed, bool reference, int seconds)
{
    memset(tr, 0, sizeof *tr);
    if (seconds < 1)
        seconds = 1;
    if (kind == SHARP_TRACE_MIXED) {
        sharp_rng_t k;
        sharp_rng_seed(&k, sharp_rng_derive(seed, STREAM_KIND));
        kind = (sharp_trace_kind_t)sharp_rng_below(&k, SHARP_TRACE_MIXED);
    }
    tr->kind = kind;
    tr->reference = reference;
    tr->seconds = seconds;
    tr->rate = agent_calloc((size_t)seconds, sizeof *tr->rate);
    sharp_rng_t shape, noise, spikes;
    sharp_rng_seed(&shape, sharp_rng_derive(seed, STREAM_SHAPE));
    sharp_rng_seed(&noise, sharp_rng_derive(seed, STREAM_NOISE));
    sharp_rng_seed(&spikes, sharp_rng_derive(seed, STREAM_SPIKES));
    switch (kind) {
    case SHARP_TRACE_FLASH:
        gen_flash(tr, &shape);
        break;
    case SHARP_TRACE_DIURNAL:
        gen_diurnal(tr, &shape);
        break;
    case SHARP_TRACE_STEP:
        gen_step(tr, &shape);
        break;
    case SHARP_TRACE_WALK:
        gen_walk(tr, &shape);
        break;
    default:
        gen_noisy(tr, &shape, &spikes);
        break;
    }
    /* The noise every trace carries, started from its stationary
     * distribution. */
    double x = NOISE_SIGMA * sharp_rng_normal(&noise);
    for (int t = 0; t < seconds; t++) {
        x = NOISE_PHI * x + NOISE_SIGMA * sqrt(1.0 - NOISE_PHI * NOISE_PHI) * sharp_rng_normal(&noise);
        double r = tr->rate[t] * exp(x);
        tr->rate[t] = isfinite(r) && r >= 1.0 ? r : 1.0;
    }
}

void sharp_trace_free(sharp_trace_t *tr)
{
    free(tr->rate);
    tr->rate = NULL;
}

double sharp_trace_rate(const sharp_trace_t *tr, int t)
{
    if (t < 0)
        t = 0;
    if (t >= tr->seconds)
        t = tr->seconds - 1;
    return tr->rate[t];
}

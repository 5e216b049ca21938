/* aimd.c: SHARP's AIMD concurrency controller
 * (sharp.extensions.filters.http.adaptive_concurrency.v1.AimdControllerConfig).
 *
 * Additive increase while the limit is in use and latency is within a
 * tolerance of a long-term baseline; multiplicative decrease on a latency
 * breach, a timeout or an upstream 503. Unlike the gradient controller it
 * never pins the limit to measure an ideal latency: the baseline is learned
 * from live traffic (see the comment before close_window), so admitted
 * traffic sees no periodic dips, and the baseline does not creep up under
 * sustained load.
 */
#include "filters/adaptive_concurrency/controller_internal.h"

#include <math.h>
#include <stdio.h>

/* Decreases remembered for the rebase test of close_window. */
#define RUN_MAX 8
/* Rebase when in-flight fell to this share of an earlier breach... */
#define REBASE_IN_FLIGHT 0.85
/* ...while latency stayed above this share of that breach's latency. */
#define REBASE_LATENCY 0.95
/* After a rebase, a window this far below the baseline is taken as the
 * service recovering (see lower_baseline). */
#define RECOVERY_DROP 0.85
/* Weight of a new window in the loaded-latency average kept after a rebase. */
#define SLOW_LAT_WEIGHT 0.2

typedef struct {
    uint64_t t;         /* when the decrease was made */
    uint32_t in_flight; /* highest in-flight of the breaching window */
    uint64_t latency;   /* its latency */
} breach_t;

typedef struct {
    sharp_ac_controller_t super; /* first: the core frees it as a whole */
    sharp_aimd_config_t cfg;
    uint64_t window_start_ns, next_window_ns;
    double baseline_ns; /* 0 until the first judged window */
    double prior_ns;    /* lowest baseline a rebase replaced; 0: none */
    double slow_lat_ns; /* average latency of in-use windows since that rebase */
    bool slow_start;
    uint64_t hold_until_ns; /* no latency decrease before (one per latency) */
    breach_t run[RUN_MAX];  /* decreases of the current run of breaches */
    unsigned run_len;
    unsigned evidence;      /* consecutive windows for which rebase_evidence held */
} aimd_t;

void sharp_aimd_config_default(sharp_aimd_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->initial_limit = 20;
    cfg->min_limit = 3;
    cfg->max_limit = 1000;
    cfg->update_interval_ns = 100000000ull;
    cfg->sample_aggregate_percentile = 0.5;
    cfg->latency_tolerance = 1.5;
    cfg->decrease_ratio = 0.9;
    cfg->increase_step = 1;
    cfg->baseline_half_life_ns = 30000000000ull;
    cfg->min_samples = 10;
    cfg->timeout_is_drop = true;
    cfg->overload_is_drop = true;
    cfg->error_is_drop = false;
    cfg->slow_start = true;
}

static bool config_valid(const sharp_aimd_config_t *cfg, char *err, size_t errlen)
{
    const char *what = NULL;
    double q = cfg->sample_aggregate_percentile;
    if (cfg->min_limit == 0)
        what = "min_limit: must be greater than 0";
    else if (cfg->max_limit < cfg->min_limit)
        what = "max_limit: must be at least min_limit";
    else if (cfg->update_interval_ns == 0)
        what = "update_interval: must be greater than 0";
    else if (!(q >= 0 && q <= 1))
        what = "sample_aggregate_percentile: value must be in [0, 100]";
    else if (!(cfg->latency_tolerance > 1.0) || isinf(cfg->latency_tolerance))
        what = "latency_tolerance: must be a finite number greater than 1";
    else if (!(cfg->decrease_ratio > 0.0 && cfg->decrease_ratio < 1.0))
        what = "decrease_ratio: must be in (0, 1)";
    else if (cfg->increase_step == 0)
        what = "increase_step: must be greater than 0";
    else if (cfg->baseline_half_life_ns == 0)
        what = "baseline_half_life: must be greater than 0";
    else if (cfg->min_samples == 0)
        what = "min_samples: must be greater than 0";
    if (what && err) snprintf(err, errlen, "aimd_controller_config.%s", what);
    return what == NULL;
}

#define AIMD_PATH "aimd_controller_config."

/* Defaults for absent fields, then the rules of config_valid. initial_limit
 * is clamped into [min_limit, max_limit] rather than refused. */
int sharp_aimd_config_from_proto(
    const Sharp__Extensions__Filters__Http__AdaptiveConcurrency__V1__AimdControllerConfig *pb,
    sharp_aimd_config_t *out, char *err, size_t errlen)
{
    sharp_aimd_config_default(out);
    if (!pb) return 0;
    if (pb->initial_limit) out->initial_limit = pb->initial_limit->value;
    if (pb->min_limit) out->min_limit = pb->min_limit->value;
    if (pb->max_limit) out->max_limit = pb->max_limit->value;
    if (pb->update_interval &&
        sharp__ac_duration_ns(pb->update_interval, AIMD_PATH "update_interval",
                              &out->update_interval_ns, err, errlen) < 0)
        return -1;
    if (sharp__ac_percent(pb->sample_aggregate_percentile, 50,
                          AIMD_PATH "sample_aggregate_percentile",
                          &out->sample_aggregate_percentile, err, errlen) < 0)
        return -1;
    if (pb->latency_tolerance) out->latency_tolerance = pb->latency_tolerance->value;
    if (pb->decrease_ratio) out->decrease_ratio = pb->decrease_ratio->value;
    if (pb->increase_step) out->increase_step = pb->increase_step->value;
    if (pb->baseline_half_life &&
        sharp__ac_duration_ns(pb->baseline_half_life, AIMD_PATH "baseline_half_life",
                              &out->baseline_half_life_ns, err, errlen) < 0)
        return -1;
    if (pb->min_samples) out->min_samples = pb->min_samples->value;
    if (pb->timeout_is_drop) out->timeout_is_drop = pb->timeout_is_drop->value;
    if (pb->overload_is_drop) out->overload_is_drop = pb->overload_is_drop->value;
    if (pb->error_is_drop) out->error_is_drop = pb->error_is_drop->value;
    if (pb->slow_start) out->slow_start = pb->slow_start->value;
    if (!config_valid(out, err, errlen)) return -1;
    out->initial_limit = SHARP_MAX(out->min_limit, SHARP_MIN(out->max_limit, out->initial_limit));
    return 0;
}

static uint64_t drops_of(const aimd_t *a, const sharp__ac_window_t *w)
{
    return (a->cfg.timeout_is_drop ? w->outcomes[SHARP_AC_TIMEOUT] : 0) +
           (a->cfg.overload_is_drop ? w->outcomes[SHARP_AC_OVERLOAD] : 0) +
           (a->cfg.error_is_drop ? w->outcomes[SHARP_AC_ERROR] : 0);
}

static void increase(aimd_t *a)
{
    uint64_t l = sharp__ac_get_limit(&a->super);
    uint64_t n = l + a->cfg.increase_step;
    if (a->slow_start && 2 * l > n) n = 2 * l;
    sharp__ac_set_limit(&a->super, (uint32_t)SHARP_MIN(n, (uint64_t)a->cfg.max_limit));
}

static void decrease(aimd_t *a)
{
    uint32_t l = sharp__ac_get_limit(&a->super);
    uint32_t n = (uint32_t)floor((double)l * a->cfg.decrease_ratio);
    if (n >= l && l > 0) n = l - 1;
    sharp__ac_set_limit(&a->super, SHARP_MAX(n, a->cfg.min_limit));
    a->slow_start = false;
}

/* Moves the baseline toward `latency` by the share a half-life decay gives
 * to dt: after one half-life of steady latency, half of the gap is closed. */
static void drift(aimd_t *a, uint64_t latency, uint64_t dt)
{
    double keep = exp2(-(double)dt / (double)a->cfg.baseline_half_life_ns);
    a->baseline_ns += ((double)latency - a->baseline_ns) * (1.0 - keep);
}

/* True when an earlier decrease of this run of breaches shows that latency
 * does not follow concurrency: in-flight fell clearly below that window's,
 * long enough ago for requests admitted since to have finished, and latency
 * did not fall with it. The run's first breach is not a reference: its
 * window straddles the change and understates the latency that followed. */
static bool rebase_evidence(const aimd_t *a, uint64_t now, uint32_t in_flight, uint64_t latency)
{
    for (unsigned i = 1; i < a->run_len; i++) {
        const breach_t *e = &a->run[i];
        if (now - e->t >= 2 * e->latency &&
            (double)in_flight <= REBASE_IN_FLIGHT * (double)e->in_flight &&
            (double)latency >= REBASE_LATENCY * (double)e->latency)
            return true;
    }
    return false;
}

/* A window with lat below the baseline: the service is faster than
 * believed. Normally lat becomes the baseline. After a rebase, the baseline
 * came from loaded windows and the latency seen under the same load now
 * includes the same queueing: a clear drop (below RECOVERY_DROP of the
 * baseline) means the service sped up by about lat / slow_lat, so the
 * baseline is scaled by that ratio instead of taking lat itself, which would
 * keep the queueing in it. If the result is within tolerance of the baseline
 * the rebase replaced, the slowdown is over and that baseline returns. */
static void lower_baseline(aimd_t *a, uint64_t lat)
{
    double l = (double)lat;
    if (a->prior_ns > 0 && a->slow_lat_ns > a->baseline_ns && l <= RECOVERY_DROP * a->baseline_ns)
        l = a->baseline_ns * l / a->slow_lat_ns;
    a->baseline_ns = l;
    if (a->prior_ns > 0 && l <= a->cfg.latency_tolerance * a->prior_ns) {
        a->baseline_ns = a->prior_ns; /* never below it: the scaled estimate is rough */
        a->prior_ns = 0;
    }
    if (a->baseline_ns <= a->prior_ns) a->prior_ns = 0;
    if (a->prior_ns == 0) a->slow_lat_ns = 0;
}

static void remember_breach(aimd_t *a, uint64_t now, uint32_t in_flight, uint64_t latency)
{
    if (a->run_len == RUN_MAX) {
        memmove(a->run, a->run + 1, (RUN_MAX - 1) * sizeof a->run[0]);
        a->run_len--;
    }
    a->run[a->run_len++] = (breach_t){now, in_flight, latency};
}

/* Folds an in-use window into the loaded-latency average kept while a
 * rebase is in force (after lower_baseline has judged it). */
static void update_slow_lat(aimd_t *a, uint64_t lat, bool used)
{
    if (a->prior_ns == 0 || !used) return;
    a->slow_lat_ns = a->slow_lat_ns > 0 ? a->slow_lat_ns + SLOW_LAT_WEIGHT * ((double)lat - a->slow_lat_ns)
                                        : (double)lat;
}

/* Judges one window with a latency (lat, the window's percentile of OK
 * responses). `used`: the window saw the limit in use. */
static void judge(aimd_t *a, uint64_t now, uint64_t dt, uint64_t lat, bool used, uint32_t in_flight)
{
    if (a->baseline_ns == 0) {
        a->baseline_ns = (double)lat;
        if (used) increase(a);
        return;
    }
    if ((double)lat <= a->cfg.latency_tolerance * a->baseline_ns) {
        a->run_len = 0;
        a->evidence = 0;
        if ((double)lat < a->baseline_ns)
            lower_baseline(a, lat);
        else if (!used)
            drift(a, lat, dt);
        update_slow_lat(a, lat, used);
        if (used) increase(a);
        return;
    }
    update_slow_lat(a, lat, used);
    if (!used) {
        drift(a, lat, dt);
        return;
    }
    if (now < a->hold_until_ns) return;
    if (rebase_evidence(a, now, in_flight, lat)) {
        /* One window of evidence holds the limit; a second in a row
         * rebases (a single window's percentile is noisy). */
        if (++a->evidence < 2) return;
        a->prior_ns = a->prior_ns > 0 ? SHARP_MIN(a->prior_ns, a->baseline_ns) : a->baseline_ns;
        a->baseline_ns = (double)lat;
        a->slow_lat_ns = (double)lat;
        a->run_len = 0;
        a->evidence = 0;
        return;
    }
    a->evidence = 0;
    decrease(a);
    remember_breach(a, now, in_flight, lat);
    a->hold_until_ns = now + lat;
}

/* Closes the current window when it is due and judges it.
 *
 * A window lasts update_interval, and longer while it has fewer than
 * min_samples latencies and no drop (a percentile of a handful of samples
 * says little). Its latency `lat` is the sample_aggregate_percentile of the
 * OK responses; drops are the timeouts / 503s / other errors the config
 * counts. The limit was "in use" when a request was rejected or in-flight
 * reached at least half the limit: below that the limit is not what shapes
 * the traffic, and growing it further only makes a later surge hit a stale,
 * too high limit; half rather than all of it leaves room for bursts, so
 * moderate load is not shed.
 *
 * The baseline B is a slowly rising minimum of window latencies:
 * - the first judged window sets B = lat; a window with lat < B sets B = lat
 *   (a faster service is believed at once), or, when lat is within
 *   tolerance of the lowest baseline a rebase replaced, B = that baseline
 *   (see lower_baseline);
 * - when the limit is not in use, our own concurrency is not what queues
 *   requests, so a higher lat is the service's own latency: B drifts toward
 *   it, B += (lat - B) * (1 - 2^(-dt / baseline_half_life)). A permanent
 *   increase is followed within a few half-lives, a short spike moves B by a
 *   few percent and the next normal window takes it back;
 * - while the limit is in use B never rises by drift, so queueing under
 *   sustained load cannot pull the baseline up (no skew);
 * - rebase: if, during a run of breaching windows, in-flight has fallen to
 *   85% of an earlier decrease's window (not the run's first, at least two
 *   of that window's latencies ago) and latency is still >= 95% of that
 *   window's, latency does not follow concurrency: the service itself got
 *   slower. The first such window holds the limit, the second in a row sets
 *   B = lat.
 *   This takes the place of the gradient controller's minRTT re-measurement
 *   without pinning the limit.
 *
 * Limit steps (at most one per window):
 * - any drop: limit = max(min_limit, floor(limit * decrease_ratio));
 * - lat <= latency_tolerance * B: if in use, limit += increase_step
 *   (doubled instead while slow_start is on, until the first decrease),
 *   capped at max_limit;
 * - lat > latency_tolerance * B and in use: the same decrease, unless a
 *   decrease was made less than one latency ago (those samples predate its
 *   effect), or the rebase test holds (no step; B = lat on its second
 *   window). Not in use: no
 *   decrease, B drifts as above.
 */
static void close_window(aimd_t *a, uint64_t now)
{
    sharp_ac_controller_t *c = &a->super;
    a->next_window_ns = now + a->cfg.update_interval_ns;
    sharp__ac_window_t w;
    sharp__ac_window_peek(c, &w);
    if (drops_of(a, &w) == 0 && w.samples < a->cfg.min_samples) return;

    uint64_t n = sharp__ac_window_commit(c, &w);
    uint64_t dt = now - a->window_start_ns;
    a->window_start_ns = now;
    uint32_t limit = sharp__ac_get_limit(c);
    bool used = w.rejected > 0 || 2ull * w.max_in_flight >= limit;
    uint64_t lat = 0;
    if (n >= a->cfg.min_samples) {
        lat = sharp__ac_window_quantile(c, a->cfg.sample_aggregate_percentile);
        if (lat == 0) lat = 1;
        sharp__ac_publish(&c->pub_sample_rtt_ns, lat);
        sharp__ac_publish(&c->pub_windows, atomic_load(&c->pub_windows) + 1);
    }
    if (drops_of(a, &w) > 0) {
        if (lat && a->baseline_ns == 0) a->baseline_ns = (double)lat;
        if (lat && (double)lat < a->baseline_ns) lower_baseline(a, lat);
        decrease(a);
    } else if (lat) {
        judge(a, now, dt, lat, used, w.max_in_flight);
    }
    sharp__ac_publish(&c->pub_min_rtt_ns, (uint64_t)a->baseline_ns);
    if (lat && a->baseline_ns > 0)
        sharp__ac_publish(&c->pub_gradient, (uint64_t)(1000.0 * a->cfg.latency_tolerance *
                                                       a->baseline_ns / (double)lat));
}

static void aimd_update(sharp_ac_controller_t *c, uint64_t now)
{
    aimd_t *a = sharp_container_of(c, aimd_t, super);
    if (now >= a->next_window_ns) close_window(a, now);
    sharp__ac_set_next_update(c, a->next_window_ns);
}

sharp_ac_controller_t *sharp_ac_aimd_create(const sharp_aimd_config_t *cfg, unsigned nshards,
                                            sharp_ac_clock_fn clock, void *clock_arg, uint64_t seed)
{
    if (!cfg || !config_valid(cfg, NULL, 0) || nshards == 0) return NULL;
    aimd_t *a = sharp__ac_alloc(sizeof *a);
    sharp_ac_controller_t *c = &a->super;
    uint32_t initial = SHARP_MAX(cfg->min_limit, SHARP_MIN(cfg->max_limit, cfg->initial_limit));
    sharp__ac_init(c, SHARP_AC_AIMD, aimd_update, nshards, clock, clock_arg, seed,
                   1u << SHARP_AC_OK, initial);
    a->cfg = *cfg;
    a->slow_start = cfg->slow_start;
    uint64_t now = c->clock(c->clock_arg);
    a->window_start_ns = now;
    a->next_window_ns = now + cfg->update_interval_ns;
    sharp__ac_set_next_update(c, a->next_window_ns);
    return c;
}

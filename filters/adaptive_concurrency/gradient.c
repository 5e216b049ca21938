/* gradient.c: Envoy's gradient concurrency controller
 * (envoy.extensions.filters.http.adaptive_concurrency.v3.GradientControllerConfig).
 *
 * Two kinds of sampling windows alternate, never overlapping:
 * - a minRTT measurement: the limit is pinned to min_concurrency (unless
 *   min_concurrency_limit is configured apart, which measures from live
 *   traffic without touching the limit) until request_count samples of
 *   requests admitted after the measurement began have arrived; minRTT is
 *   their sample_aggregate_percentile and the limit returns to its value
 *   from before the measurement. The controller starts in one; the next
 *   starts interval + jitter after it ends (jitter uniform in
 *   [0, ceil(interval * jitter))), or right away when the limit has been set
 *   to its minimum in 5 consecutive sample windows.
 * - a sample window of concurrency_update_interval: sampleRTT is the
 *   percentile of the window's samples and
 *       gradient  = clamp(minRTT * (1 + buffer) / sampleRTT, 0.5, 2.0)
 *       limit'    = limit * gradient
 *       new limit = clamp(trunc(limit' + sqrt(limit')), min, max_concurrency_limit)
 *   where min is min_concurrency_limit (default min_concurrency). A window
 *   without samples keeps the limit.
 * With fixed_value there are no measurements: minRTT is that value.
 *
 * Windows are closed lazily by the core (controller.c) on the request path
 * or by sharp_ac_tick, on the first call at or after their end.
 */
#include "filters/adaptive_concurrency/controller_internal.h"

#include <math.h>
#include <stdio.h>

/* Consecutive windows at the minimum limit that trigger a measurement. */
#define MIN_LIMIT_WINDOWS 5

typedef struct {
    sharp_ac_controller_t super; /* first: the core frees it as a whole */
    sharp_gradient_config_t cfg;
    uint32_t lower;    /* lower bound of calculated limits */
    bool pin;          /* measurements pin the limit to min_concurrency */
    bool sampling;     /* minRTT is measured (no fixed_value) */
    bool measuring;    /* a minRTT measurement is running */
    uint32_t deferred; /* limit to restore after a pinned measurement */
    uint32_t at_min;   /* consecutive windows that set the limit to `lower` */
    uint64_t next_sample_ns, next_min_rtt_ns;
    uint64_t min_rtt_ns;
} gradient_t;

void sharp_gradient_config_default(sharp_gradient_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->sample_aggregate_percentile = 0.5;
    cfg->max_concurrency_limit = 1000;
    cfg->request_count = 50;
    cfg->jitter = 0.15;
    cfg->min_concurrency = 3;
    cfg->buffer = 0.25;
}

static int positive_u32(const Google__Protobuf__UInt32Value *v, uint32_t def, const char *path,
                        uint32_t *out, char *err, size_t errlen)
{
    *out = v ? v->value : def;
    if (*out == 0) {
        snprintf(err, errlen, "%s: must be greater than 0", path);
        return -1;
    }
    return 0;
}

#define GCC_PATH "gradient_controller_config."
#define CLP_PATH GCC_PATH "concurrency_limit_params."
#define MRP_PATH GCC_PATH "min_rtt_calc_params."

/* Envoy's defaults and the rules of its proto validation: both parameter
 * messages and concurrency_update_interval (> 0) are required; counts are
 * > 0; interval, when set, is >= 1 ms; fixed_value, when set, is > 0 and
 * wins over interval; one of the two must be set. */
int sharp_gradient_config_from_proto(
    const Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig *pb,
    sharp_gradient_config_t *out, char *err, size_t errlen)
{
    sharp_gradient_config_default(out);
    if (!pb) {
        snprintf(err, errlen, "gradient_controller_config: is required");
        return -1;
    }
    if (sharp__ac_percent(pb->sample_aggregate_percentile, 50,
                          GCC_PATH "sample_aggregate_percentile", &out->sample_aggregate_percentile,
                          err, errlen) < 0)
        return -1;

    const Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig__ConcurrencyLimitCalculationParams
        *clp = pb->concurrency_limit_params;
    if (!clp) {
        snprintf(err, errlen, GCC_PATH "concurrency_limit_params: is required");
        return -1;
    }
    if (!clp->concurrency_update_interval) {
        snprintf(err, errlen, CLP_PATH "concurrency_update_interval: is required");
        return -1;
    }
    if (sharp__ac_duration_ns(clp->concurrency_update_interval,
                              CLP_PATH "concurrency_update_interval",
                              &out->concurrency_update_interval_ns, err, errlen) < 0)
        return -1;
    if (out->concurrency_update_interval_ns == 0) {
        snprintf(err, errlen, CLP_PATH "concurrency_update_interval: must be greater than 0");
        return -1;
    }
    if (positive_u32(clp->max_concurrency_limit, 1000, CLP_PATH "max_concurrency_limit",
                     &out->max_concurrency_limit, err, errlen) < 0)
        return -1;

    const Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__GradientControllerConfig__MinimumRTTCalculationParams
        *mrp = pb->min_rtt_calc_params;
    if (!mrp) {
        snprintf(err, errlen, GCC_PATH "min_rtt_calc_params: is required");
        return -1;
    }
    if (mrp->interval) {
        if (sharp__ac_duration_ns(mrp->interval, MRP_PATH "interval",
                                  &out->min_rtt_calc_interval_ns, err, errlen) < 0)
            return -1;
        if (out->min_rtt_calc_interval_ns < 1000000) {
            snprintf(err, errlen, MRP_PATH "interval: must be at least 1ms");
            return -1;
        }
    }
    if (mrp->fixed_value) {
        if (sharp__ac_duration_ns(mrp->fixed_value, MRP_PATH "fixed_value", &out->fixed_value_ns,
                                  err, errlen) < 0)
            return -1;
        if (out->fixed_value_ns == 0) {
            snprintf(err, errlen, MRP_PATH "fixed_value: must be greater than 0");
            return -1;
        }
    }
    if (out->min_rtt_calc_interval_ns == 0 && out->fixed_value_ns == 0) {
        snprintf(err, errlen, MRP_PATH "interval: neither interval nor fixed_value is set");
        return -1;
    }
    if (positive_u32(mrp->request_count, 50, MRP_PATH "request_count", &out->request_count, err,
                     errlen) < 0 ||
        positive_u32(mrp->min_concurrency, 3, MRP_PATH "min_concurrency", &out->min_concurrency,
                     err, errlen) < 0)
        return -1;
    if (sharp__ac_percent(mrp->jitter, 15, MRP_PATH "jitter", &out->jitter, err, errlen) < 0 ||
        sharp__ac_percent(mrp->buffer, 25, MRP_PATH "buffer", &out->buffer, err, errlen) < 0)
        return -1;
    if (clp->min_concurrency_limit &&
        positive_u32(clp->min_concurrency_limit, 0, CLP_PATH "min_concurrency_limit",
                     &out->min_concurrency_limit, err, errlen) < 0)
        return -1;
    return 0;
}

static bool config_valid(const sharp_gradient_config_t *cfg)
{
    double q = cfg->sample_aggregate_percentile;
    return cfg->concurrency_update_interval_ns > 0 && cfg->max_concurrency_limit > 0 &&
           cfg->min_concurrency > 0 && cfg->request_count > 0 &&
           (cfg->fixed_value_ns > 0 || cfg->min_rtt_calc_interval_ns > 0) && q >= 0 && q <= 1 &&
           cfg->jitter >= 0 && cfg->jitter <= 1 && cfg->buffer >= 0 && cfg->buffer <= 1;
}

/* Sets the limit and keeps the count of consecutive windows that set it to
 * the minimum; outside a measurement only, as a measurement's own pinning
 * must not count. */
static void set_limit(gradient_t *g, uint32_t limit)
{
    uint32_t old = sharp__ac_get_limit(&g->super);
    sharp__ac_set_limit(&g->super, limit);
    if (!g->measuring && old == g->lower && limit == g->lower)
        g->at_min++;
    else
        g->at_min = 0;
}

static void start_min_rtt(gradient_t *g, uint64_t now)
{
    sharp_ac_controller_t *c = &g->super;
    g->measuring = true;
    atomic_store_explicit(&c->pub_measuring, true, memory_order_relaxed);
    if (g->pin) {
        g->deferred = sharp__ac_get_limit(c);
        set_limit(g, g->cfg.min_concurrency);
    }
    g->at_min = 0;
    sharp__ac_count_start(c, now, g->cfg.request_count);
    sharp__ac_window_commit(c, NULL); /* drop what came before */
}

/* Jitter in [0, ceil(interval * jitter)) on top of the interval. */
static uint64_t next_min_rtt_delay(gradient_t *g)
{
    uint64_t interval = g->cfg.min_rtt_calc_interval_ns;
    uint64_t range = (uint64_t)ceil((double)interval * g->cfg.jitter);
    if (range == 0) return interval;
    return interval + sharp__ac_rand(&g->super) % range;
}

static void finish_min_rtt(gradient_t *g, uint64_t now)
{
    sharp_ac_controller_t *c = &g->super;
    if (sharp__ac_window_commit(c, NULL) > 0) {
        g->min_rtt_ns = sharp__ac_window_quantile(c, g->cfg.sample_aggregate_percentile);
        sharp__ac_publish(&c->pub_min_rtt_ns, g->min_rtt_ns);
    }
    sharp__ac_count_stop(c);
    if (g->pin) set_limit(g, g->deferred);
    g->measuring = false;
    atomic_store_explicit(&c->pub_measuring, false, memory_order_relaxed);
    g->at_min = 0;
    g->next_min_rtt_ns = now + next_min_rtt_delay(g);
    g->next_sample_ns = now + g->cfg.concurrency_update_interval_ns;
}

/* The limit formula of the file comment. The gradient and headroom gauges
 * are published as Envoy does: gradient * 1000 and sqrt headroom, both
 * truncated. A zero sampleRTT (sub-nanosecond) counts as the largest
 * gradient. */
static uint32_t calculate_limit(gradient_t *g, uint64_t sample_rtt_ns)
{
    sharp_ac_controller_t *c = &g->super;
    double buffered = (double)g->min_rtt_ns * (1.0 + g->cfg.buffer);
    double gradient = sample_rtt_ns ? buffered / (double)sample_rtt_ns : 2.0;
    gradient = gradient < 0.5 ? 0.5 : gradient > 2.0 ? 2.0 : gradient;
    double limit = (double)sharp__ac_get_limit(c) * gradient;
    double headroom = sqrt(limit);
    sharp__ac_publish(&c->pub_gradient, (uint64_t)(gradient * 1000));
    sharp__ac_publish(&c->pub_burst, (uint64_t)headroom);
    double v = limit + headroom;
    if (v >= (double)g->cfg.max_concurrency_limit) v = g->cfg.max_concurrency_limit;
    uint32_t n = (uint32_t)v;
    return n < g->lower ? g->lower : n;
}

static void sample_window(gradient_t *g, uint64_t now)
{
    sharp_ac_controller_t *c = &g->super;
    g->next_sample_ns = now + g->cfg.concurrency_update_interval_ns;
    if (sharp__ac_window_commit(c, NULL) == 0) return;
    uint64_t sample_rtt = sharp__ac_window_quantile(c, g->cfg.sample_aggregate_percentile);
    sharp__ac_publish(&c->pub_sample_rtt_ns, sample_rtt);
    sharp__ac_publish(&c->pub_windows, atomic_load(&c->pub_windows) + 1);
    set_limit(g, calculate_limit(g, sample_rtt));
    if (g->at_min >= MIN_LIMIT_WINDOWS && g->sampling) start_min_rtt(g, now);
}

/* One step of the window state machine (updating flag held): finish a
 * measurement that has its samples, else start a due measurement, else
 * close a due sample window; then schedule the next event. */
static void gradient_update(sharp_ac_controller_t *c, uint64_t now)
{
    gradient_t *g = sharp_container_of(c, gradient_t, super);
    if (g->measuring) {
        if (sharp__ac_counted(c) >= g->cfg.request_count) finish_min_rtt(g, now);
    } else if (g->sampling && now >= g->next_min_rtt_ns) {
        start_min_rtt(g, now);
    } else if (now >= g->next_sample_ns) {
        sample_window(g, now);
    }
    uint64_t next = UINT64_MAX;
    if (!g->measuring) {
        next = g->next_sample_ns;
        if (g->sampling && g->next_min_rtt_ns < next) next = g->next_min_rtt_ns;
    }
    sharp__ac_set_next_update(c, next);
}

/* The limit starts at min_concurrency, as in Envoy (raised to
 * min_concurrency_limit when that is higher), and the first minRTT
 * measurement starts at once (unless fixed_value is set). */
sharp_ac_controller_t *sharp_ac_gradient_create(const sharp_gradient_config_t *cfg,
                                                unsigned nshards, sharp_ac_clock_fn clock,
                                                void *clock_arg, uint64_t seed)
{
    if (!cfg || !config_valid(cfg) || nshards == 0) return NULL;
    gradient_t *g = sharp__ac_alloc(sizeof *g);
    sharp_ac_controller_t *c = &g->super;
    uint32_t lower = cfg->min_concurrency_limit ? cfg->min_concurrency_limit : cfg->min_concurrency;
    sharp__ac_init(c, SHARP_AC_GRADIENT, gradient_update, nshards, clock, clock_arg, seed,
                   (1u << SHARP__AC_NOUTCOMES) - 1, SHARP_MAX(cfg->min_concurrency, lower));
    g->cfg = *cfg;
    g->lower = lower;
    g->pin = cfg->min_concurrency_limit == 0;
    g->sampling = cfg->fixed_value_ns == 0;
    uint64_t now = c->clock(c->clock_arg);
    g->next_sample_ns = now + cfg->concurrency_update_interval_ns;
    if (g->sampling) {
        g->next_min_rtt_ns = now;
        start_min_rtt(g, now);
        sharp__ac_set_next_update(c, UINT64_MAX);
    } else {
        g->min_rtt_ns = cfg->fixed_value_ns;
        sharp__ac_publish(&c->pub_min_rtt_ns, g->min_rtt_ns);
        sharp__ac_set_next_update(c, g->next_sample_ns);
    }
    return c;
}

/* guardian.c: see guardian.h. */
#include "guardian.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

typedef struct {
    double t;
    int lo;    /* the lowest count in force just before t and from t on */
    int after; /* the count applied at t */
    double busy; /* the load measured for the decision at t (-1: none), at most the count found */
} entry_t;

struct sharp_guardian {
    sharp_guardian_config_t cfg;
    entry_t hist[SHARP_GUARDIAN_HISTORY]; /* oldest first */
    int n;
    /* the last rise and the last fall of the count applied */
    bool rose, fell;
    double last_rise, last_fall;
    void (*log)(void *arg, const sharp_guardian_decision_t *d);
    void *log_arg;
};

void sharp_guardian_config_default(sharp_guardian_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->min_replicas = 2;
    c->max_replicas = 100;
    c->max_step_up = 32;
    c->max_step_down = 16;
    c->max_growth = 2.0;
    c->growth_window_s = 60.0;
    c->growth_min_pods = 4;
    c->scale_down_cooldown_s = 120.0;
    c->scale_down_interval_s = 30.0;
    c->stale_after_s = 30.0;
    c->scale_down_max_utilization = 0.7;
    c->scale_up_min_utilization = 0.77;
    c->scale_down_window_s = 60.0;
    c->hpa_ceiling = true;
}

const char *sharp_guardian_config_check(const sharp_guardian_config_t *c)
{
    if (c->min_replicas < 1)
        return "min_replicas must be at least 1";
    if (c->max_replicas < c->min_replicas)
        return "max_replicas must be at least min_replicas";
    if (c->max_step_up < 1 || c->max_step_down < 1)
        return "max_step_up and max_step_down must be at least 1";
    if (!(c->max_growth >= 1.0) || !isfinite(c->max_growth))
        return "max_growth must be a finite factor of at least 1";
    if (!(c->growth_window_s >= 0.0) || !isfinite(c->growth_window_s))
        return "growth_window_s must be finite and not negative";
    if (c->growth_min_pods < 0)
        return "growth_min_pods must not be negative";
    if (!(c->scale_down_cooldown_s >= 0.0) || !isfinite(c->scale_down_cooldown_s))
        return "scale_down_cooldown_s must be finite and not negative";
    if (!(c->scale_down_interval_s >= 0.0) || !isfinite(c->scale_down_interval_s))
        return "scale_down_interval_s must be finite and not negative";
    if (!(c->stale_after_s > 0.0))
        return "stale_after_s must be positive";
    if (!(c->scale_down_max_utilization >= 0.0 && c->scale_down_max_utilization <= 1.0) ||
        !(c->scale_up_min_utilization >= 0.0 && c->scale_up_min_utilization <= 1.0))
        return "scale_down_max_utilization and scale_up_min_utilization must be within [0, 1]";
    if (!(c->scale_down_window_s >= 0.0) || !isfinite(c->scale_down_window_s))
        return "scale_down_window_s must be finite and not negative";
    if (c->n_obs < 0 || c->n_obs > SHARP_GUARDIAN_MAX_OBS)
        return "n_obs must be in [0, 32]";
    if (c->has_range)
        for (int i = 0; i < c->n_obs; i++)
            if (!(c->lo[i] <= c->hi[i]))
                return "every trained range needs lo <= hi";
    return NULL;
}

sharp_guardian_t *sharp_guardian_new(const sharp_guardian_config_t *c)
{
    if (sharp_guardian_config_check(c))
        return NULL;
    sharp_guardian_t *g = agent_calloc(1, sizeof *g);
    g->cfg = *c;
    return g;
}

void sharp_guardian_free(sharp_guardian_t *g)
{
    free(g);
}

const sharp_guardian_config_t *sharp_guardian_config(const sharp_guardian_t *g)
{
    return &g->cfg;
}

void sharp_guardian_set_log(sharp_guardian_t *g, void (*fn)(void *arg, const sharp_guardian_decision_t *d),
                            void *arg)
{
    g->log = fn;
    g->log_arg = arg;
}

void sharp_guardian_reset(sharp_guardian_t *g)
{
    g->n = 0;
    g->rose = g->fell = false;
    g->last_rise = g->last_fall = 0.0;
}

const char *sharp_guardian_verdict_name(sharp_guardian_verdict_t v)
{
    switch (v) {
    case SHARP_GUARD_ACCEPT:
        return "accept";
    case SHARP_GUARD_CLAMP:
        return "clamp";
    case SHARP_GUARD_FALLBACK:
        return "fallback";
    case SHARP_GUARD_SHADOW:
        return "shadow";
    }
    return "?";
}

static void say(sharp_guardian_decision_t *d, const char *fmt, ...)
{
    size_t used = strlen(d->reason);
    if (used + 3 >= sizeof d->reason)
        return;
    if (used) {
        memcpy(d->reason + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason + used, sizeof d->reason - used, fmt, ap);
    va_end(ap);
}

/* The lowest count in force at any time in (now - window, now]: those in
 * force around each decision within the window (the count found and the
 * count applied), the one in force when the window began, and the current
 * one. */
static int growth_base(const sharp_guardian_t *g, double now, int current)
{
    double start = now - g->cfg.growth_window_s;
    int base = current;
    int before = -1; /* the newest decision at or before the window's start */
    for (int i = 0; i < g->n; i++) {
        if (g->hist[i].t > start) {
            if (g->hist[i].lo < base)
                base = g->hist[i].lo;
        } else {
            before = i;
        }
    }
    if (before >= 0 && g->hist[before].after < base)
        base = g->hist[before].after;
    return base;
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

static void remember(sharp_guardian_t *g, double now, int current, int applied, double busy)
{
    if (g->n == SHARP_GUARDIAN_HISTORY) {
        /* Full: fold the oldest into the next. Keeping the lower counts
         * and the higher load for longer can only make the growth rule and
         * the utilization floor stricter, never looser. */
        g->hist[1].lo = min_int(g->hist[1].lo, min_int(g->hist[0].lo, g->hist[0].after));
        if (g->hist[0].busy > g->hist[1].busy)
            g->hist[1].busy = g->hist[0].busy;
        memmove(g->hist, g->hist + 1, (SHARP_GUARDIAN_HISTORY - 1) * sizeof g->hist[0]);
        g->n--;
    }
    g->hist[g->n++] = (entry_t){now, min_int(current, applied), applied, busy};
}

/* The first failing observation (its index), with a bit for each kind of
 * failure found; 0 when all pass. */
static unsigned check_obs(const sharp_guardian_t *g, const sharp_guardian_obs_t *obs, sharp_guardian_decision_t *d)
{
    const sharp_guardian_config_t *c = &g->cfg;
    unsigned bits = 0;
    if (!obs)
        return 0;
    for (int i = 0; i < c->n_obs; i++) {
        unsigned bit = 0;
        if (!obs->present || !obs->present[i]) {
            bit = SHARP_GUARD_RULE_OBS_MISSING;
            if (d->obs_index < 0)
                say(d, "observation %d missing", i);
        } else if (!obs->value || !isfinite(obs->value[i])) {
            bit = SHARP_GUARD_RULE_OBS_NAN;
            if (d->obs_index < 0)
                say(d, "observation %d is not a number", i);
        } else if (!obs->age_s || !(obs->age_s[i] <= c->stale_after_s)) {
            bit = SHARP_GUARD_RULE_OBS_STALE;
            if (d->obs_index < 0)
                say(d, "observation %d stale (%.0f s old, limit %.0f s)", i, obs->age_s ? obs->age_s[i] : NAN,
                    c->stale_after_s);
        } else if (c->has_range && (obs->value[i] < c->lo[i] || obs->value[i] > c->hi[i])) {
            bit = SHARP_GUARD_RULE_OBS_RANGE;
            if (d->obs_index < 0)
                say(d, "observation %d = %g outside the trained range [%g, %g]", i, obs->value[i], c->lo[i],
                    c->hi[i]);
        }
        if (bit && d->obs_index < 0)
            d->obs_index = i;
        bits |= bit;
    }
    return bits;
}

/* The agent's proposal through the rules; the bits of those that bound. */
static int guard(const sharp_guardian_t *g, double now, int current, int p, int hpa,
                 const sharp_guardian_obs_t *obs, unsigned *bits, sharp_guardian_decision_t *d, bool explain)
{
    const sharp_guardian_config_t *c = &g->cfg;
    bool load = obs && obs->has_load && isfinite(obs->busy) && obs->busy >= 0.0;
    /* the load if it grew again as it just did (a falling one as it is) */
    double growth = load && isfinite(obs->growth) && obs->growth > 1.0 ? obs->growth : 1.0;
    double next_busy = load ? obs->busy * (growth < 1e6 ? growth : 1e6) : 0.0;
    if (c->hpa_ceiling && load && !obs->violated && hpa < current && p > hpa) {
        if (explain)
            say(d, "hpa_ceiling: %d lowered to the HPA's %d", p, hpa);
        p = hpa;
        *bits |= SHARP_GUARD_RULE_HPA_CEILING;
    }
    if (p > current && load && c->scale_up_min_utilization > 0.0 && !obs->violated &&
        next_busy < c->scale_up_min_utilization * current) {
        if (explain)
            say(d, "idle_scale_up: %d replicas would run at %.0f%% (< %.0f%%) and met the objective", current,
                100.0 * next_busy / (current > 0 ? current : 1), 100.0 * c->scale_up_min_utilization);
        p = current;
        *bits |= SHARP_GUARD_RULE_IDLE_UP;
    }
    if (p > current) {
        if (p - current > c->max_step_up) {
            if (explain)
                say(d, "max_step_up: +%d limited to +%d", p - current, c->max_step_up);
            p = current + c->max_step_up;
            *bits |= SHARP_GUARD_RULE_STEP_UP;
        }
        int base = growth_base(g, now, current);
        double capd = floor(c->max_growth * base + 1e-9);
        if (capd < (double)base + c->growth_min_pods)
            capd = (double)base + c->growth_min_pods;
        if (capd < current)
            capd = current; /* never a forced scale-down */
        bool by_hpa = false;
        if (c->growth_to_hpa && hpa > current && (double)hpa > capd) {
            capd = hpa; /* as fast as the HPA rule grows */
            by_hpa = true;
        }
        if ((double)p > capd) {
            int cap = (int)capd; /* below p, an int */
            if (explain && by_hpa)
                say(d, "growth: %d > the HPA's %d", p, cap);
            else if (explain)
                say(d, "growth: %d > %g x %d (or + %d), the lowest count of the last %g s", p, c->max_growth, base,
                    c->growth_min_pods, c->growth_window_s);
            p = cap;
            *bits |= SHARP_GUARD_RULE_GROWTH;
        }
    } else if (p < current) {
        /* A rise followed soon by a fall is flapping: the long cooldown.
         * Successive falls only wait for the last one to be measured. */
        if (g->rose && now - g->last_rise < c->scale_down_cooldown_s) {
            if (explain)
                say(d, "scale_down_cooldown: the count rose %g s ago (< %g s)", now - g->last_rise,
                    c->scale_down_cooldown_s);
            p = current;
            *bits |= SHARP_GUARD_RULE_COOLDOWN;
        } else if (g->fell && now - g->last_fall < c->scale_down_interval_s) {
            if (explain)
                say(d, "scale_down_interval: the count fell %g s ago (< %g s)", now - g->last_fall,
                    c->scale_down_interval_s);
            p = current;
            *bits |= SHARP_GUARD_RULE_INTERVAL;
        } else if (current - p > c->max_step_down) {
            if (explain)
                say(d, "max_step_down: -%d limited to -%d", current - p, c->max_step_down);
            p = current - c->max_step_down;
            *bits |= SHARP_GUARD_RULE_STEP_DOWN;
        }
        if (p < current && load && c->scale_down_max_utilization > 0.0) {
            /* the fewest replicas that carry the load at the ceiling: the
             * highest of the window's and of the period's as it would be
             * if it grew again as it just did (as idle_scale_up judges
             * it): no cut on a rising load to what only its last period
             * fitted */
            double busy = next_busy;
            bool rising = next_busy > obs->busy;
            for (int i = 0; i < g->n && c->scale_down_window_s > 0.0; i++)
                if (g->hist[i].t > now - c->scale_down_window_s && g->hist[i].busy > busy) {
                    busy = g->hist[i].busy;
                    rising = false;
                }
            double need = ceil(busy / c->scale_down_max_utilization - 1e-9);
            if (need > (double)current)
                need = current;
            if ((double)p < need) {
                if (explain)
                    say(d, "utilization_floor: %d would run %.0f busy replicas' worth%s above %.0f%%; %d kept", p,
                        busy, rising ? " (the load rising as in the period)" : "",
                        100.0 * c->scale_down_max_utilization, (int)need);
                p = (int)need;
                *bits |= SHARP_GUARD_RULE_UTIL_FLOOR;
            }
        }
    }
    if (p < c->min_replicas) {
        if (explain)
            say(d, "min_replicas: %d raised to %d", p, c->min_replicas);
        p = c->min_replicas;
        *bits |= SHARP_GUARD_RULE_MIN;
    }
    if (p > c->max_replicas) {
        if (explain)
            say(d, "max_replicas: %d lowered to %d", p, c->max_replicas);
        p = c->max_replicas;
        *bits |= SHARP_GUARD_RULE_MAX;
    }
    return p;
}

static int bound(const sharp_guardian_config_t *c, int v, unsigned *bits)
{
    if (v < c->min_replicas) {
        *bits |= SHARP_GUARD_RULE_MIN;
        return c->min_replicas;
    }
    if (v > c->max_replicas) {
        *bits |= SHARP_GUARD_RULE_MAX;
        return c->max_replicas;
    }
    return v;
}

/* Counts beyond any cluster are taken as this many, so that no sum or
 * difference of them can overflow. */
#define COUNT_CAP (1 << 24)

static int sane_count(int v)
{
    return v < 0 ? 0 : (v > COUNT_CAP ? COUNT_CAP : v);
}

int sharp_guardian_decide(sharp_guardian_t *g, double now, int current, int agent, int hpa,
                          const sharp_guardian_obs_t *obs, sharp_guardian_decision_t *d)
{
    current = sane_count(current);
    agent = sane_count(agent);
    hpa = sane_count(hpa);
    memset(d, 0, sizeof *d);
    d->now = now;
    d->current = current;
    d->agent = agent;
    d->hpa = hpa;
    d->obs_index = -1;

    unsigned obs_bits = check_obs(g, obs, d);
    bool trust = obs_bits == 0;
    unsigned agent_bits = 0;
    /* Explained only when it is what happens; in shadow mode it is
     * reported too. */
    d->agent_guarded = guard(g, now, current, agent, hpa, obs, &agent_bits, d, trust);

    if (!trust) {
        unsigned b = 0;
        d->applied = bound(&g->cfg, hpa, &b);
        d->verdict = SHARP_GUARD_FALLBACK;
        d->rules = obs_bits | b;
        say(d, "acting on the HPA's %d%s", d->applied, b ? " (bounded by min/max replicas)" : "");
    } else if (g->cfg.shadow) {
        unsigned b = 0;
        d->applied = bound(&g->cfg, hpa, &b);
        d->verdict = SHARP_GUARD_SHADOW;
        d->rules = SHARP_GUARD_RULE_SHADOW | agent_bits | b;
        say(d, "shadow: acting on the HPA's %d; the agent proposed %d, %d after the rules", d->applied, agent,
            d->agent_guarded);
    } else {
        d->applied = d->agent_guarded;
        d->rules = agent_bits;
        d->verdict = agent_bits ? SHARP_GUARD_CLAMP : SHARP_GUARD_ACCEPT;
        if (!agent_bits)
            say(d, "accepted");
    }
    if (d->applied > current) {
        g->rose = true;
        g->last_rise = now;
    } else if (d->applied < current) {
        g->fell = true;
        g->last_fall = now;
    }
    double busy = -1.0;
    if (obs && obs->has_load && isfinite(obs->busy) && obs->busy >= 0.0)
        busy = obs->busy < current ? obs->busy : current;
    remember(g, now, current, d->applied, busy);
    if (g->log)
        g->log(g->log_arg, d);
    return d->applied;
}

void sharp_guardian_format(const sharp_guardian_decision_t *d, char *buf, size_t len)
{
    snprintf(buf, len, "t=%.0f current=%d agent=%d guarded=%d hpa=%d applied=%d verdict=%s reason=%s", d->now,
             d->current, d->agent, d->agent_guarded, d->hpa, d->applied, sharp_guardian_verdict_name(d->verdict),
             d->reason);
}

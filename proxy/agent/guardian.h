/* guardian.h: the deterministic rules between the scaling agent's proposal
 * and the cluster.
 *
 * Every decision goes through sharp_guardian_decide, which returns the
 * replica count to apply with a verdict and the reasons for it:
 *
 *   - fallback: when an observation the agent saw is missing, stale (older
 *     than stale_after_s), not a number, or outside the range the policy was
 *     trained on, the agent's proposal is not trusted and the HPA's
 *     recommendation (computed by the caller, see hpa.h) is applied instead,
 *     bounded by min/max replicas;
 *   - shadow mode: the agent's proposal is computed, put through the rules
 *     below and reported next to the HPA's, and the HPA's is applied;
 *   - otherwise the agent's proposal, limited by these rules in this order:
 *       hpa_ceiling                   when the HPA's recommendation is a
 *                                     scale-down and the period met the
 *                                     objective, no more replicas than the
 *                                     HPA's (the scale-down rules below
 *                                     still hold the cut): the agent may
 *                                     run leaner than the HPA rule, never
 *                                     keep what the HPA rule, after its
 *                                     5-minute stabilization, sheds;
 *       max_step_up / max_step_down   replicas added or removed per decision;
 *       growth                        the count stays within max_growth (2)
 *                                     times the lowest count in force during
 *                                     the last growth_window_s (60 s), or
 *                                     growth_min_pods (4) above it, the
 *                                     larger: no more than doubling within a
 *                                     minute, and small clusters may grow by
 *                                     the 4 pods the HPA's default scale-up
 *                                     policy allows any cluster;
 *                                     with growth_to_hpa (off by
 *                                     default, on live), never below the
 *                                     HPA's recommendation when that is a
 *                                     scale-up: the agent may grow as
 *                                     fast as the HPA rule does on the
 *                                     same signals (in overload SHARP's
 *                                     rule live doubles every sync), and
 *                                     is not made to;
 *       scale_down_cooldown           no scale-down within
 *                                     scale_down_cooldown_s (120 s) of the
 *                                     last rise of the count: no flapping;
 *       scale_down_interval           no scale-down within
 *                                     scale_down_interval_s (30 s) of the
 *                                     last fall: every cut is measured for
 *                                     a whole sync period before the next;
 *       utilization_floor             no scale-down to fewer replicas than
 *                                     the highest load of the last
 *                                     scale_down_window_s (60 s; each
 *                                     period's taken as at most the count
 *                                     then in force, the last one's as it
 *                                     would be if it grew again as it just
 *                                     did, as idle_scale_up takes it)
 *                                     needs at
 *                                     scale_down_max_utilization (70%: the
 *                                     HPA's target) of their concurrency:
 *                                     near saturation a queue's wait grows
 *                                     as 1 / (1 - rho), and a cut to the
 *                                     edge buys violations at the next
 *                                     swell of the load;
 *       idle_scale_up                 no scale-up while the replicas asked
 *                                     for would run below
 *                                     scale_up_min_utilization (77%: the
 *                                     HPA's target and its 10% tolerance,
 *                                     where the HPA rule scales up) even
 *                                     if the load grew again as much as in
 *                                     the period, and the period met the
 *                                     objective: replicas added with nothing
 *                                     to show for them are cost only;
 *       min_replicas / max_replicas   last, so they hold whatever came before.
 *
 * The verdict is ACCEPT (the proposal as is), CLAMP (changed by a rule),
 * FALLBACK or SHADOW; `rules` has a bit for every rule that changed or
 * overrode the proposal, `reason` says it in words. The guardian remembers
 * the counts it applied (whoever proposed them) to judge growth and
 * cooldown, so it needs every decision in time order. No allocation after
 * creation, no I/O: the log callback, when set, receives every decision. */
#ifndef SHARP_AGENT_GUARDIAN_H
#define SHARP_AGENT_GUARDIAN_H

#include <stdbool.h>
#include <stddef.h>

#define SHARP_GUARDIAN_MAX_OBS 32
#define SHARP_GUARDIAN_HISTORY 64

typedef struct {
    int min_replicas;  /* >= 1 */
    int max_replicas;  /* >= min_replicas */
    int max_step_up;   /* >= 1 */
    int max_step_down; /* >= 1 */
    double max_growth;        /* >= 1 */
    double growth_window_s;   /* >= 0 */
    int growth_min_pods;      /* >= 0: growth always allows this many above the lowest count */
    double scale_down_cooldown_s; /* >= 0: after a rise */
    double scale_down_interval_s; /* >= 0: after a fall */
    double stale_after_s;     /* > 0 */
    /* The capacity rules, applied when the caller gives the load
     * (sharp_guardian_obs_t.has_load); 0 turns each off. */
    double scale_down_max_utilization; /* [0, 1]: the most a scale-down may leave */
    double scale_up_min_utilization;   /* [0, 1]: below it, no scale-up while the objective is met */
    /* utilization_floor judges the highest load of the decisions within
     * this window (>= 0; 0: the last period's only), each taken as at most
     * the count then in force, the last period's grown by its growth */
    double scale_down_window_s;
    /* hpa_ceiling: when the HPA's recommendation (given with each
     * decision) is a scale-down and the period met the objective, no more
     * replicas than it */
    bool hpa_ceiling;
    /* growth_to_hpa: when the HPA's recommendation is a scale-up, the
     * growth rule allows at least it: the agent may grow as fast as the
     * HPA rule on the same signals (its own scale-up limit, 100% or 4 pods
     * a sync), never faster than both */
    bool growth_to_hpa;
    int n_obs;                /* observations checked, <= SHARP_GUARDIAN_MAX_OBS */
    bool has_range;           /* lo/hi hold the trained range of each observation */
    double lo[SHARP_GUARDIAN_MAX_OBS], hi[SHARP_GUARDIAN_MAX_OBS];
    bool shadow;
} sharp_guardian_config_t;

/* min 2, max 100, steps +32/-16, doubling within 60 s (not growth_to_hpa),
 * no scale-down
 * within 120 s of a rise or 30 s of a fall, none to above 70% utilization
 * of the last 60 s' highest load, no scale-up below 77% while the
 * objective is met, no more than the HPA's scale-down over a period that
 * met it, observations stale after 30 s (two sync periods), no range, not
 * in shadow mode. */
void sharp_guardian_config_default(sharp_guardian_config_t *c);
/* NULL, or what is wrong. */
const char *sharp_guardian_config_check(const sharp_guardian_config_t *c);

typedef enum {
    SHARP_GUARD_ACCEPT,
    SHARP_GUARD_CLAMP,
    SHARP_GUARD_FALLBACK,
    SHARP_GUARD_SHADOW,
} sharp_guardian_verdict_t;

enum {
    SHARP_GUARD_RULE_MIN = 1u << 0,
    SHARP_GUARD_RULE_MAX = 1u << 1,
    SHARP_GUARD_RULE_STEP_UP = 1u << 2,
    SHARP_GUARD_RULE_STEP_DOWN = 1u << 3,
    SHARP_GUARD_RULE_GROWTH = 1u << 4,
    SHARP_GUARD_RULE_COOLDOWN = 1u << 5,
    SHARP_GUARD_RULE_OBS_MISSING = 1u << 6,
    SHARP_GUARD_RULE_OBS_STALE = 1u << 7,
    SHARP_GUARD_RULE_OBS_NAN = 1u << 8,
    SHARP_GUARD_RULE_OBS_RANGE = 1u << 9,
    SHARP_GUARD_RULE_SHADOW = 1u << 10,
    SHARP_GUARD_RULE_INTERVAL = 1u << 11,
    SHARP_GUARD_RULE_UTIL_FLOOR = 1u << 12,
    SHARP_GUARD_RULE_IDLE_UP = 1u << 13,
    SHARP_GUARD_RULE_HPA_CEILING = 1u << 14,
};

/* The observations behind a proposal: n_obs values, each with its age (s)
 * and whether it was measured at all. */
typedef struct {
    const double *value;
    const double *age_s;
    const bool *present;
    /* The load for the capacity rules (has_load false: they do not
     * apply): `busy` the requests in flight over one replica's concurrency
     * (mean over the period: busy replicas' worth), `violated` the period
     * missed the objective. */
    bool has_load;
    double busy;
    bool violated;
    double growth; /* the offered rate over the period before's (1 when not known) */
} sharp_guardian_obs_t;

typedef struct {
    double now;
    sharp_guardian_verdict_t verdict;
    unsigned rules;
    int current;       /* the count in force */
    int agent;         /* the agent's proposal */
    int agent_guarded; /* what the rules make of it (reported in shadow mode too) */
    int hpa;           /* the HPA's recommendation */
    int applied;       /* the count to set */
    int obs_index;     /* the first observation that failed a check, or -1 */
    char reason[240];
} sharp_guardian_decision_t;

typedef struct sharp_guardian sharp_guardian_t;

/* NULL if the config fails sharp_guardian_config_check. */
sharp_guardian_t *sharp_guardian_new(const sharp_guardian_config_t *c);
void sharp_guardian_free(sharp_guardian_t *g);
const sharp_guardian_config_t *sharp_guardian_config(const sharp_guardian_t *g);
void sharp_guardian_set_log(sharp_guardian_t *g, void (*fn)(void *arg, const sharp_guardian_decision_t *d),
                            void *arg);
/* Forgets the applied counts (a new episode, a restarted controller). */
void sharp_guardian_reset(sharp_guardian_t *g);

/* One decision at time `now` (seconds, not decreasing between calls).
 * obs may be NULL when the caller has no observations to check. Counts are
 * taken within [0, 2^24]. Returns d->applied. */
int sharp_guardian_decide(sharp_guardian_t *g, double now, int current, int agent, int hpa,
                          const sharp_guardian_obs_t *obs, sharp_guardian_decision_t *d);

const char *sharp_guardian_verdict_name(sharp_guardian_verdict_t v);
/* One line: time, counts, verdict, reason. */
void sharp_guardian_format(const sharp_guardian_decision_t *d, char *buf, size_t len);

#endif

/* scaling_env.h: the scaling simulator as an environment PPO trains on,
 * and the episodes `sharp-train eval-scaling` compares controllers on.
 *
 * A decision every 15 s (the simulator's step, the HPA's sync period): the
 * agent picks one of SHARP_SCALE_ACTIONS relative changes of the replica
 * count (-50%, -25%, -10%, -1, hold, +1, +10%, +25%, +50%, +100%; a
 * relative change moves at least one replica), the guardian (guardian.h)
 * bounds it as it would in production, and the simulator runs the next
 * 15 s with the result.
 *
 * What the agent observes is what SHARP measures live for the cluster over
 * the last step, as shares and ratios free of the cluster's scale (see the
 * SHARP_SCALE_OBS_* names): requests in flight per ready replica and per
 * replica asked for, over one replica's concurrency (a utilization), the
 * offered rate's relative change, the p99 over the objective's, the error
 * and shed shares, the share of replicas still booting, 1 / the replicas
 * asked for, and the offered rate against its peak of the last 5 minutes
 * (in a lull after a burst, or at the top).
 *
 * Reward per step: -(w_violation x the share of the step's seconds that
 * violated the objective + w_drop x the share of its offered requests shed
 * or failed + w_cost x mean replicas / cost_ref + w_excess x mean replicas
 * above the load's need / cost_ref + w_change when the count changed), the
 * need being the offered rate over one replica's full capacity. With the defaults (w_excess 0) a violating second weighs as
 * much as 100 replicas running for it, and a step's reward stays small
 * (within [-0.201, 0] for up to 100 replicas), which keeps the critic's
 * loss from swamping the policy's gradient under the global norm
 * clipping. The excess term charges only what a controller could have
 * saved: the replicas the load needs cost every controller that serves
 * it the same, so charging them too makes serving a crowd look like a
 * cost to weigh against its violations (with the binary violation term, a
 * large enough w_cost makes never scaling up the better policy), where the
 * excess term leaves nothing to gain from under-provisioning.
 *
 * An episode is episode_s seconds of a trace (3600: 239 decisions after a
 * first step that produces the first observation); it ends truncated, never
 * terminated. Each reset draws a fresh trace from the environment's seed:
 * the configured kind (mixed draws a kind per episode), randomized unless
 * `reference` is set. The first replica count serves the trace's first
 * second at initial_utilization of the replicas' capacity. */
#ifndef SHARP_AGENT_SCALING_ENV_H
#define SHARP_AGENT_SCALING_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"
#include "guardian.h"
#include "hpa.h"
#include "policy.h"
#include "rng.h"
#include "scaling_sim.h"
#include "traces.h"

/* Every observation is free of the cluster's scale (requests/s, replica
 * counts, latencies in seconds): a policy trained on one service applies to
 * a service ten times smaller or larger, with other replicas and another
 * objective, as long as these shares and ratios are in the range it met.
 * The utilizations and the p99 are capped at SHARP_SCALE_OBS_CAP (deeper
 * overload calls for the same answer; the shed and error shares say how
 * deep), the rate change at +-SHARP_SCALE_OBS_CHANGE_CAP. */
enum {
    SHARP_SCALE_OBS_UTIL,         /* requests in flight / (ready replicas x concurrency each), mean */
    SHARP_SCALE_OBS_UTIL_ASKED,   /* in flight / (replicas asked for x concurrency each), mean */
    SHARP_SCALE_OBS_RATE_CHANGE,  /* ln(offered rate / the step before's) */
    SHARP_SCALE_OBS_P99,          /* the worst second's p99 / the objective's p99 */
    SHARP_SCALE_OBS_ERROR_RATE,   /* failed / offered */
    SHARP_SCALE_OBS_SHED_RATE,    /* shed / offered */
    SHARP_SCALE_OBS_BOOTING,      /* share of the replicas asked for not ready yet */
    SHARP_SCALE_OBS_INV_REPLICAS, /* 1 / replicas asked for: what one replica is of the count */
    SHARP_SCALE_OBS_FROM_PEAK,    /* ln(offered rate / the highest of the last 5 minutes' periods) */
    SHARP_SCALE_OBS_N
};

/* The periods the recent peak covers: 5 minutes of them (the HPA's
 * scale-down stabilization window), at most SHARP_SCALE_PEAK_SLOTS. */
#define SHARP_SCALE_PEAK_WINDOW_S 300.0
#define SHARP_SCALE_PEAK_SLOTS 64

typedef struct {
    double v[SHARP_SCALE_PEAK_SLOTS];
    int n, next;
} sharp_scale_peak_t;

void sharp_scale_peak_reset(sharp_scale_peak_t *w);
/* Adds a period's offered rate and returns the highest of the last `keep`
 * (1 to SHARP_SCALE_PEAK_SLOTS), this one included. */
double sharp_scale_peak_push(sharp_scale_peak_t *w, double rate, int keep);
/* The periods of period_s seconds the window holds. */
int sharp_scale_peak_keep(double period_s);

#define SHARP_SCALE_OBS_CAP 4.0
#define SHARP_SCALE_OBS_CHANGE_CAP 2.0

/* The scale-free observation from what was measured over a period, in the
 * same way in the simulator and live: `inflight` the mean requests in
 * flight, `concurrency` what one replica serves at once, `ready` and
 * `replicas` (asked for) the counts, `rate` and `prev_rate` the offered
 * requests/s of the period and of the one before (has_prev false: no
 * change), `peak_rate` the highest period's rate of the last 5 minutes
 * (sharp_scale_peak_push), `p99_s` the worst second's, `slo_p99_s` the objective's,
 * `offered`, `errors`, `shed` the period's requests. */
typedef struct {
    double inflight, concurrency;
    int ready, replicas;
    double rate, prev_rate;
    bool has_prev;
    double peak_rate; /* the highest offered rate of the last 5 minutes' periods, this one's included */
    double p99_s, slo_p99_s;
    double offered, errors, shed;
} sharp_scale_measure_t;

void sharp_scale_obs_from(const sharp_scale_measure_t *m, double *obs);

#define SHARP_SCALE_ACTIONS 10
#define SHARP_SCALE_ACTION_HOLD 4

/* The count action `a` asks for from `current` (not yet bounded). */
int sharp_scale_action_target(int a, int current);
/* "-50%", "+1", "hold", ... */
const char *sharp_scale_action_name(int a);
const char *sharp_scale_obs_name(int i);

typedef struct {
    sharp_sim_config_t sim;
    sharp_guardian_config_t guardian;
    sharp_hpa_config_t hpa;
    sharp_trace_kind_t trace;
    /* Training only: when any is not 0, each episode draws its kind with
     * these weights (indexed by kind; flash 2, step 1: two flash crowds
     * for a step) instead of `trace`. */
    int kinds[SHARP_TRACE_MIXED];
    bool reference;
    int episode_s;
    double initial_utilization;
    double w_violation, w_drop, w_cost, w_excess, cost_ref, w_change;
    /* Training only: when slo_p99_hi > 0, each episode's objective p99 is
     * drawn uniformly from [slo_p99_lo, slo_p99_hi] s instead of the
     * simulator's, so that the policy meets p99 / objective ratios of
     * services whose requests are fast or slow against their objective. */
    double slo_p99_lo, slo_p99_hi;
    /* Training only: the share of episodes run without the adaptive
     * concurrency filter in front (overload then queues up to the circuit
     * breaker and times out, as in front of replicas that queue), drawn
     * per episode after the objective. */
    double no_adaptive_share;
    /* Training only: when boot_hi > 0, each episode's boot delay is drawn
     * uniformly from [boot_lo, boot_hi] s (after the draws above), so that
     * the policy meets clusters whose replicas take longer to serve than
     * the simulator's 30 s: a slower node, or an actuator that applies the
     * count a poll later (KEDA polls the external scaler every 15 s), which
     * keeps more of the count in boot; when timeout_hi > 0, the route's
     * timeout from [timeout_lo, timeout_hi] s (a queue that times out after
     * 5 s fails a larger share of a saturated period than after 1 s); when
     * init_util_hi > 0, the first count's utilization from [init_util_lo,
     * init_util_hi] (a cluster that starts at its floor, far below 70%);
     * when max_requests_hi > 0, the circuit breaker's max_requests from
     * [max_requests_lo, max_requests_hi] (a loose breaker in front of few
     * replicas lets their queues grow past the timeout: failures rather
     * than shedding). */
    double boot_lo, boot_hi;
    int max_requests_lo, max_requests_hi;
    double timeout_lo, timeout_hi;
    double init_util_lo, init_util_hi;
    /* the replicas above the need as a share of it (the need taken as at
     * least min_replicas): the excess weighed the same at every scale */
    double w_headroom;
    /* Training only: the guardian judges each proposal against the HPA
     * rule's recommendation for the same cluster (its hpa_ceiling rule),
     * as in evaluation and live; without it the training environment
     * gives the guardian the current count as the HPA's, and the rule
     * never binds. */
    bool train_hpa;
} sharp_scaling_config_t;

/* The simulator's defaults; guardian and HPA between 2 and 100 replicas,
 * the HPA on a 70% CPU target; mixed randomized traces of an hour;
 * initial utilization 0.7; w_violation 0.1, w_cost 0.1 per cost_ref 100
 * replicas, w_drop 0, w_excess 0, w_change 0.001. */
void sharp_scaling_config_default(sharp_scaling_config_t *c);
const char *sharp_scaling_config_check(const sharp_scaling_config_t *c);

#define SHARP_SCALING_MAX_KINDS 16 /* names in a list */

/* "flash,flash,step" (up to SHARP_SCALING_MAX_KINDS names of the four
 * shapes, each adding 1 to its weight; "mixed" is one of each) into the
 * weights of sharp_scaling_config_t.kinds. 0, or -1 (out untouched) if a
 * name is unknown, empty, or there are too many. */
int sharp_scaling_parse_kinds(const char *list, int out[SHARP_TRACE_MIXED]);
/* True when the weights name at least one kind. */
bool sharp_scaling_has_kinds(const int kinds[SHARP_TRACE_MIXED]);
/* A training episode's kind, drawn with the weights (not all 0). */
sharp_trace_kind_t sharp_scaling_draw_kind(const int kinds[SHARP_TRACE_MIXED], sharp_rng_t *rng);
/* "2 flash + step" into buf. */
const char *sharp_scaling_kinds_name(const int kinds[SHARP_TRACE_MIXED], char *buf, size_t len);

/* A training episode's draws into c, from the episodes' stream before the
 * trace's seed, in this order: the kind (when `kinds`: c->kinds names
 * kinds), the objective's p99, whether the adaptive concurrency filter is
 * in front, the boot delay, the timeout, the first count's utilization and
 * max_requests, each only when its range (or share) is set. */
void sharp_scaling_draw_episode(sharp_scaling_config_t *c, bool kinds, sharp_rng_t *rng);

/* The observation after a step (st: its stats; prev_rate: the offered rate
 * of the step before, has_prev false for the first step; peak_rate: the
 * highest step's of the last 5 minutes, this one's included). */
void sharp_scaling_observe(const sharp_sim_t *s, const sharp_sim_stats_t *st, double prev_rate, bool has_prev,
                           double peak_rate, double *obs);
/* The reward of a step that ended with these stats; `changed`: the
 * decision before it changed the count. */
double sharp_scaling_reward(const sharp_scaling_config_t *c, const sharp_sim_stats_t *st, bool changed);
/* The replica count an episode starts with for this trace. */
int sharp_scaling_initial_replicas(const sharp_scaling_config_t *c, const sharp_trace_t *tr);

/* The lowest and highest value of each observation the environments made
 * by sharp_scaling_factory have produced (the trained range). */
typedef struct {
    sharp_scaling_config_t cfg;
    bool seen;
    double lo[SHARP_SCALE_OBS_N], hi[SHARP_SCALE_OBS_N];
} sharp_scaling_factory_t;

void sharp_scaling_factory_init(sharp_scaling_factory_t *f, const sharp_scaling_config_t *cfg);
/* A sharp_env_factory_t; arg is a sharp_scaling_factory_t. */
sharp_env_t *sharp_scaling_factory(void *arg, int index, uint64_t seed);
/* Copies the range seen so far into the policy (has_range). */
void sharp_scaling_factory_range(const sharp_scaling_factory_t *f, sharp_policy_t *p);

/* ---- Episodes with a controller, for comparisons ---- */

typedef enum {
    SHARP_CTL_AGENT, /* a policy's most probable action, through the guardian */
    SHARP_CTL_HPA,   /* the HPA alone */
    SHARP_CTL_FIXED, /* a fixed count from the start */
} sharp_controller_kind_t;

typedef struct {
    sharp_controller_kind_t kind;
    sharp_policy_t *policy; /* AGENT */
    bool shadow;            /* AGENT: the guardian in shadow mode */
    int fixed;              /* FIXED */
    /* AGENT: every guardian decision, when set */
    void (*log)(void *arg, const sharp_guardian_decision_t *d);
    void *log_arg;
    /* every controller: each decision step's stats once simulated, when set */
    void (*on_step)(void *arg, const sharp_sim_t *s, const sharp_sim_stats_t *st);
    void *step_arg;
} sharp_controller_t;

typedef struct {
    int violation_s;
    double replica_s;
    double offered, served, errors, shed;
    double p99_max;
    int actions;   /* decisions that changed the count */
    int decisions;
    int fallbacks; /* AGENT: decisions the guardian took from the HPA for bad observations */
    int clamps;    /* AGENT: decisions a rule changed */
    int peak_replicas;
    double reward; /* the environment's reward, summed */
} sharp_episode_result_t;

/* One episode of the trace `kind` (reference or randomized per cfg) from
 * trace_seed under the controller. 0, or -1 with a message in err (a
 * policy of another shape, a bad config). */
int sharp_scaling_episode(const sharp_scaling_config_t *cfg, uint64_t trace_seed, const sharp_controller_t *ctl,
                          sharp_episode_result_t *res, char *err, size_t errlen);

#endif

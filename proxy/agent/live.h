/* live.h: the scaling agent on live measurements rather than the simulator.
 *
 * Two parts, both free of I/O so that tests drive them with recorded
 * values:
 *
 *   - sharp_scaling_live_observe turns the raw signals SHARP measured for a
 *     cluster over one sync period (sharp_scaling_signals_t, counted by the
 *     proxy's stats; proxy/scaling.c gathers them) into the scaling
 *     environment's observation vector: the same layout (SHARP_SCALE_OBS_*)
 *     and the same function (sharp_scale_obs_from) as sharp_scaling_observe
 *     in the simulator, which is what the policy was trained on: shares
 *     and ratios, free of the cluster's scale;
 *
 *   - a controller (sharp_scaling_live_t) that, once per sync period, runs
 *     the policy's most probable action, the Kubernetes HPA rule on the same
 *     signals and the guardian between them, as sharp_scaling_episode does
 *     in simulation, and keeps the replica count it recommends as the count
 *     in force for the next decision (what KEDA reports back is not
 *     available to SHARP).
 *
 * The HPA rule reads a utilization built from the same signals: requests
 * in flight to the cluster (mean over the period) / (ready replicas x
 * per_replica_concurrency), given to the HPA as each ready pod's CPU usage
 * of a 1000m request; replicas asked for but not ready are unready pods.
 * In the simulator a pod's CPU is the busy share of its workers, which is
 * this ratio with workers = per_replica_concurrency below saturation only:
 * in overload the requests queued in the replicas (or in front of them)
 * are in flight too, so this utilization passes 100% and the rule doubles
 * the count every sync (its own scale-up limit), where the CPU stops at
 * 100% and the simulator's HPA grows by at most 100/70 a sync. The
 * simulator runs this rule with sharp_sim_config_t.hpa_inflight
 * (`sharp-train eval-scaling --hpa-inflight`). */
#ifndef SHARP_AGENT_LIVE_H
#define SHARP_AGENT_LIVE_H

#include <stdbool.h>
#include <stddef.h>

#include "guardian.h"
#include "hpa.h"
#include "policy.h"
#include "scaling_env.h"

/* What SHARP counted for one cluster over one sync period. */
typedef struct {
    bool cluster_present; /* the cluster exists in the configuration now */
    double seconds;       /* the period's length (> 0) */
    double offered;       /* requests offered: sent upstream plus shed */
    double errors;        /* answered 5xx by the upstream (or failed there) */
    double shed;          /* refused by the circuit breakers (overflow) */
    bool has_p99;         /* at least one second of the period had requests */
    double p99_s;         /* the p99 latency of its worst second, s */
    double inflight_mean; /* requests in flight, mean of the period's samples */
    int ready;            /* healthy hosts */
    int replicas;         /* replicas asked for: the count in force */
    bool has_prev;        /* a period before this one was measured */
    double prev_rate;     /* its offered rate, requests/s */
    /* the highest offered rate of the periods of the last 5 minutes, this
     * one's included (sharp_scaling_live_step fills it in from its own
     * window) */
    double peak_rate;
} sharp_scaling_signals_t;

typedef enum {
    SHARP_SCALING_SHADOW, /* the proto's enum values */
    SHARP_SCALING_ACTIVE,
    SHARP_SCALING_OFF,
} sharp_scaling_mode_t;

const char *sharp_scaling_mode_name(sharp_scaling_mode_t m);

typedef struct {
    sharp_scaling_mode_t mode;
    int min_replicas, max_replicas; /* 1 <= min <= max */
    int initial_replicas;           /* within [min, max] */
    double sync_period_s;           /* > 0 */
    int target_utilization;         /* percent, > 0 */
    int per_replica_concurrency;    /* > 0 */
    double slo_p99_s;               /* > 0 */
    double slo_error_rate;          /* [0, 1] */
} sharp_scaling_live_config_t;

/* NULL, or what is wrong. */
const char *sharp_scaling_live_config_check(const sharp_scaling_live_config_t *c);

/* The observation (SHARP_SCALE_OBS_N values) and which values were
 * measured: without the cluster nothing is; p99 is missing when no second
 * of the period had a request. A missing value is 0 in obs. The scale
 * comes from the config: per_replica_concurrency is one replica's
 * concurrency (the simulator's workers), slo_p99_s the objective's p99. */
void sharp_scaling_live_observe(const sharp_scaling_live_config_t *c, const sharp_scaling_signals_t *s, double *obs,
                                bool *present);

/* NULL, or why the policy cannot be used for the scaling environment (its
 * observation and action counts). */
const char *sharp_scaling_policy_check(const sharp_policy_t *p, char *buf, size_t len);

/* One decision. */
typedef struct {
    double now;
    double obs[SHARP_SCALE_OBS_N];
    bool present[SHARP_SCALE_OBS_N];
    bool ran_policy; /* the policy ran (a policy, not OFF, every value present) */
    int action;      /* its most probable action, -1 when it did not run */
    double probs[SHARP_SCALE_ACTIONS];
    double utilization; /* the HPA's metric, percent of per-replica concurrency */
    sharp_hpa_decision_t hpa;
    bool guarded; /* the guardian judged a proposal (else the HPA rule decided: OFF, no policy) */
    sharp_guardian_decision_t guard;
    int current;        /* the count in force before */
    int recommendation; /* the count to apply */
    bool violated;      /* the period missed the objective */
} sharp_scaling_step_t;

typedef struct sharp_scaling_live sharp_scaling_live_t;

/* A controller; takes `policy` (may be NULL: no policy, and then
 * policy_error says why, e.g. the file's load error). The guardian holds
 * the policy to its trained range when the file has one. NULL with a
 * message in err for a bad config. */
sharp_scaling_live_t *sharp_scaling_live_new(const sharp_scaling_live_config_t *c, sharp_policy_t *policy,
                                             const char *policy_error, char *err, size_t errlen);
void sharp_scaling_live_free(sharp_scaling_live_t *l);
const sharp_scaling_live_config_t *sharp_scaling_live_config(const sharp_scaling_live_t *l);
const sharp_policy_t *sharp_scaling_live_policy(const sharp_scaling_live_t *l);
/* "" when there is a policy. */
const char *sharp_scaling_live_policy_error(const sharp_scaling_live_t *l);
/* The count in force: initial_replicas, then each step's recommendation. */
int sharp_scaling_live_current(const sharp_scaling_live_t *l);

/* One sync at `now` (seconds, not decreasing) on the period's signals
 * (their `replicas` is replaced by the count in force). Returns
 * out->recommendation. */
int sharp_scaling_live_step(sharp_scaling_live_t *l, double now, const sharp_scaling_signals_t *sig,
                            sharp_scaling_step_t *out);

#endif

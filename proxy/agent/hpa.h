/* hpa.h: the Kubernetes Horizontal Pod Autoscaler, exactly, for a CPU
 * utilization target: the baseline the scaling agent is measured against.
 *
 * What it computes is what kube-controller-manager's podautoscaler computes
 * on each sync (pkg/controller/podautoscaler: replica_calculator.go's
 * GetResourceReplicas and groupPods, horizontal.go's reconcileAutoscaler,
 * normalizeDesiredReplicasWithBehaviors, stabilizeRecommendationWithBehaviors,
 * convertDesiredReplicasWithBehaviorRate, the scale-up/scale-down limits
 * and the scale-event bookkeeping), with the autoscaling/v2 defaults:
 *
 *   - desired = ceil(ready pods x utilization / target), utilization the
 *     integer percentage sum(usage) * 100 / sum(requests) over the ready
 *     pods with metrics; no change while the ratio is within the tolerance
 *     (0.1 each way: 1 - 0.1 <= ratio <= 1 + 0.1, the form of Kubernetes
 *     1.33's Tolerances.isWithin);
 *   - pods being deleted or failed are ignored; pending pods, and for CPU
 *     pods not ready (or, within --horizontal-pod-autoscaler-cpu-
 *     initialization-period of their start, whose metric sample began
 *     before they turned ready) are set aside as unready; pods without a
 *     metric are missing. On a scale-up unready pods count as using 0%; on
 *     a scale-up missing pods count as 0%, on a scale-down as 100% of their
 *     request (or the target if above 100%); the ratio is then recomputed
 *     and a result within the tolerance or reversing the direction keeps
 *     the current count;
 *   - behavior: scale-up stabilization 0 s and policies "4 pods" and
 *     "100%" per 15 s, the larger change selected; scale-down stabilization
 *     300 s (--horizontal-pod-autoscaler-downscale-stabilization; the
 *     highest recommendation of the window wins) and policy "100%" per
 *     15 s; the policies measure change against the replica count at the
 *     start of their period (scale events of both directions within it);
 *   - minReplicas (default 1) and maxReplicas bound the result; a current
 *     count outside them is brought back without consulting the metrics.
 *
 * Times are seconds on the caller's clock. As in the controller, a record
 * counts within a window when it is strictly after now - window, so with a
 * 15 s sync period a scale event made one sync ago has left a 15 s policy
 * period. Only the path of an HPA whose spec has a behavior is modelled:
 * autoscaling/v2 objects created without one take the older
 * normalizeDesiredReplicas path (max(2 x current, 4) per sync), which
 * differs for small counts. */
#ifndef SHARP_AGENT_HPA_H
#define SHARP_AGENT_HPA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SHARP_HPA_POLICY_PODS,    /* add or remove at most `value` pods per period */
    SHARP_HPA_POLICY_PERCENT, /* at most `value` percent of the count at the period's start */
} sharp_hpa_policy_type_t;

typedef struct {
    sharp_hpa_policy_type_t type;
    int32_t value;    /* > 0 */
    int32_t period_s; /* in (0, 1800] */
} sharp_hpa_policy_t;

typedef enum {
    SHARP_HPA_SELECT_MAX,      /* the policy allowing the largest change (default) */
    SHARP_HPA_SELECT_MIN,      /* the smallest change */
    SHARP_HPA_SELECT_DISABLED, /* no scaling in this direction */
} sharp_hpa_select_t;

#define SHARP_HPA_MAX_POLICIES 8

typedef struct {
    int32_t stabilization_window_s; /* [0, 3600] */
    sharp_hpa_select_t select;
    int n_policies; /* >= 1 */
    sharp_hpa_policy_t policies[SHARP_HPA_MAX_POLICIES];
    double tolerance; /* >= 0; the default 0.1 */
} sharp_hpa_rules_t;

typedef struct {
    int32_t min_replicas; /* >= 1 */
    int32_t max_replicas; /* >= min_replicas */
    int32_t target_utilization; /* percent of the CPU request, > 0 */
    double cpu_initialization_period_s; /* 300 */
    double initial_readiness_delay_s;   /* 30 */
    sharp_hpa_rules_t scale_up, scale_down;
} sharp_hpa_config_t;

/* The defaults above; min 1, max 10 and target 80% as `kubectl autoscale`
 * leaves them, for the caller to set. */
void sharp_hpa_config_default(sharp_hpa_config_t *c);
/* NULL, or what is wrong (Kubernetes' validation of the same fields). */
const char *sharp_hpa_config_check(const sharp_hpa_config_t *c);

typedef enum {
    SHARP_HPA_POD_PENDING,
    SHARP_HPA_POD_RUNNING,
    SHARP_HPA_POD_SUCCEEDED,
    SHARP_HPA_POD_FAILED,
} sharp_hpa_pod_phase_t;

/* What the controller knows of one pod of the target. */
typedef struct {
    sharp_hpa_pod_phase_t phase;
    bool deleting; /* has a deletion timestamp */
    bool has_start_time;
    double start_s;
    bool has_ready_condition;
    bool ready;                /* the Ready condition's status */
    double ready_transition_s; /* its last transition */
    bool has_metric;           /* the resource metrics API returned one */
    int64_t usage_m;           /* CPU usage, millicores */
    double metric_ts;          /* end of the metric's sample window */
    double metric_window_s;    /* its length */
    int64_t request_m;         /* CPU request, millicores; <= 0 means none */
} sharp_hpa_pod_t;

/* The replica calculator's answer for one sync. */
typedef struct {
    int32_t replicas;
    int32_t utilization;    /* percent, over the ready pods with metrics (the status value) */
    double usage_ratio;     /* utilization / target */
    double new_usage_ratio; /* after counting unready and missing pods, when that was needed */
    bool rebalanced;        /* unready or missing pods entered the computation */
    int ready, unready, missing, ignored;
} sharp_hpa_calc_t;

/* GetResourceReplicas for a CPU utilization target. 0, or -1 with the
 * controller's error in err (no pods, no metrics for ready pods, a pod
 * without a CPU request, metrics matching no request). */
int sharp_hpa_replica_calc(const sharp_hpa_config_t *c, double now, int32_t current, const sharp_hpa_pod_t *pods,
                           int n, sharp_hpa_calc_t *out, char *err, size_t errlen);

/* Scale-rate limits of the current behavior history (exposed for tests):
 * the most replicas a scale-up may reach, the fewest a scale-down may. */
typedef struct sharp_hpa sharp_hpa_t;
int32_t sharp_hpa_scale_up_limit(const sharp_hpa_t *h, double now, int32_t current);
int32_t sharp_hpa_scale_down_limit(const sharp_hpa_t *h, double now, int32_t current);

typedef struct {
    int32_t current;
    int32_t desired;        /* what the controller sets the target's replicas to */
    bool metrics_ok;        /* false: the metric failed, nothing changed */
    int32_t metric_desired; /* the metric's proposal, -1 when it failed */
    int32_t stabilized;     /* after the stabilization windows */
    sharp_hpa_calc_t calc;
    /* The conditions the controller would set: AbleToScale's reason
     * (ReadyForNewScale, ScaleUpStabilized, ScaleDownStabilized) and
     * ScalingLimited's (DesiredWithinRange, ScaleUpLimit, TooManyReplicas,
     * ScaleDownLimit, TooFewReplicas); or the out-of-range or disabled
     * reasons. */
    const char *able_reason;
    const char *limit_reason;
    char error[160];
} sharp_hpa_decision_t;

/* NULL if the config fails sharp_hpa_config_check. */
sharp_hpa_t *sharp_hpa_new(const sharp_hpa_config_t *c);
void sharp_hpa_free(sharp_hpa_t *h);
const sharp_hpa_config_t *sharp_hpa_config(const sharp_hpa_t *h);
/* One sync at `now`: the target has `current` replicas (its spec) and the
 * pods listed. Records the recommendation and, when the count changes,
 * the scale event, as the controller does. Returns d->desired. */
int32_t sharp_hpa_sync(sharp_hpa_t *h, double now, int32_t current, const sharp_hpa_pod_t *pods, int n,
                       sharp_hpa_decision_t *d);
/* The same computation for an HPA that advises (the guardian's fallback,
 * shadow mode): the recommendation is recorded, but a scale event only
 * when the caller applies the advice, through sharp_hpa_record_scale. */
int32_t sharp_hpa_advise(sharp_hpa_t *h, double now, int32_t current, const sharp_hpa_pod_t *pods, int n,
                         sharp_hpa_decision_t *d);
void sharp_hpa_record_scale(sharp_hpa_t *h, double now, int32_t prev, int32_t next);

#endif

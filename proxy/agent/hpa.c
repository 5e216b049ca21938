/* hpa.c: see hpa.h. Each function follows the controller function it is
 * named after in the comment above it, in the same order of tests, so the
 * two can be read side by side. */
#include "hpa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

void sharp_hpa_config_default(sharp_hpa_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->min_replicas = 1;
    c->max_replicas = 10;
    c->target_utilization = 80;
    c->cpu_initialization_period_s = 300.0;
    c->initial_readiness_delay_s = 30.0;
    /* GenerateHPAScaleUpRules */
    c->scale_up.stabilization_window_s = 0;
    c->scale_up.select = SHARP_HPA_SELECT_MAX;
    c->scale_up.n_policies = 2;
    c->scale_up.policies[0] = (sharp_hpa_policy_t){SHARP_HPA_POLICY_PODS, 4, 15};
    c->scale_up.policies[1] = (sharp_hpa_policy_t){SHARP_HPA_POLICY_PERCENT, 100, 15};
    c->scale_up.tolerance = 0.1;
    /* GenerateHPAScaleDownRules, with the controller's default downscale
     * stabilization window filled in (maybeInitScaleDownStabilizationWindow) */
    c->scale_down.stabilization_window_s = 300;
    c->scale_down.select = SHARP_HPA_SELECT_MAX;
    c->scale_down.n_policies = 1;
    c->scale_down.policies[0] = (sharp_hpa_policy_t){SHARP_HPA_POLICY_PERCENT, 100, 15};
    c->scale_down.tolerance = 0.1;
}

static const char *rules_check(const sharp_hpa_rules_t *r)
{
    if (r->stabilization_window_s < 0 || r->stabilization_window_s > 3600)
        return "stabilizationWindowSeconds must be in [0, 3600]";
    if ((int)r->select < 0 || r->select > SHARP_HPA_SELECT_DISABLED)
        return "selectPolicy must be Max, Min or Disabled";
    if (r->n_policies < 1 || r->n_policies > SHARP_HPA_MAX_POLICIES)
        return "policies: must specify at least one policy (at most 8 here)";
    for (int i = 0; i < r->n_policies; i++) {
        const sharp_hpa_policy_t *p = &r->policies[i];
        if (p->type != SHARP_HPA_POLICY_PODS && p->type != SHARP_HPA_POLICY_PERCENT)
            return "policy type must be Pods or Percent";
        if (p->value <= 0)
            return "policy value must be greater than zero";
        if (p->period_s <= 0 || p->period_s > 1800)
            return "policy periodSeconds must be in (0, 1800]";
    }
    if (!(r->tolerance >= 0.0) || !isfinite(r->tolerance))
        return "tolerance must not be negative";
    return NULL;
}

const char *sharp_hpa_config_check(const sharp_hpa_config_t *c)
{
    if (c->min_replicas < 1)
        return "minReplicas must be at least 1";
    if (c->max_replicas < c->min_replicas)
        return "maxReplicas must be at least minReplicas";
    if (c->target_utilization <= 0)
        return "averageUtilization must be greater than zero";
    if (!(c->cpu_initialization_period_s >= 0.0) || !(c->initial_readiness_delay_s >= 0.0))
        return "the readiness periods must not be negative";
    const char *bad = rules_check(&c->scale_up);
    if (bad)
        return bad;
    return rules_check(&c->scale_down);
}

/* ---------------- the replica calculator ---------------- */

/* Millicores beyond any machine (2^40, a billion cores). */
#define MILLI_MAX ((int64_t)1 << 40)

/* ceil(x), as a replica count (at most INT32_MAX). */
static int32_t ceil_count(double x)
{
    double c = ceil(x);
    return c >= (double)INT32_MAX ? INT32_MAX : (int32_t)c;
}

enum { POD_READY, POD_UNREADY, POD_MISSING, POD_IGNORED };

/* groupPods, for the CPU resource. */
static int group_pod(const sharp_hpa_config_t *c, double now, const sharp_hpa_pod_t *p)
{
    if (p->deleting || p->phase == SHARP_HPA_POD_FAILED)
        return POD_IGNORED;
    if (p->phase == SHARP_HPA_POD_PENDING)
        return POD_UNREADY;
    if (!p->has_metric)
        return POD_MISSING;
    bool unready;
    if (!p->has_ready_condition || !p->has_start_time) {
        unready = true;
    } else if (p->start_s + c->cpu_initialization_period_s > now) {
        /* Within the initialization period: unready, or a metric whose
         * window began before the pod turned ready. */
        unready = !p->ready || p->metric_ts < p->ready_transition_s + p->metric_window_s;
    } else {
        /* Unready and never ready since it started. */
        unready = !p->ready && p->start_s + c->initial_readiness_delay_s > p->ready_transition_s;
    }
    return unready ? POD_UNREADY : POD_READY;
}

/* GetResourceUtilizationRatio over the pods whose value is in use. */
static int utilization_ratio(const sharp_hpa_config_t *c, const sharp_hpa_pod_t *pods, const int64_t *value,
                             const bool *in_use, int n, double *ratio, int32_t *util)
{
    int64_t metrics_total = 0, requests_total = 0;
    for (int i = 0; i < n; i++) {
        if (!in_use[i])
            continue;
        metrics_total += value[i];
        requests_total += pods[i].request_m;
    }
    if (requests_total == 0)
        return -1;
    /* Go truncates to int32 (wrapping beyond it); past any real
     * utilization it is held at the largest instead. */
    int64_t u64 = (metrics_total * 100) / requests_total;
    int32_t u = u64 > INT32_MAX ? INT32_MAX : (int32_t)u64;
    *util = u;
    *ratio = (double)u / (double)c->target_utilization;
    return 0;
}

/* Tolerances.isWithin */
static bool within(const sharp_hpa_config_t *c, double ratio)
{
    return 1.0 - c->scale_down.tolerance <= ratio && ratio <= 1.0 + c->scale_up.tolerance;
}

int sharp_hpa_replica_calc(const sharp_hpa_config_t *c, double now, int32_t current, const sharp_hpa_pod_t *pods,
                           int n, sharp_hpa_calc_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (n <= 0) {
        snprintf(err, errlen, "no pods returned by selector while calculating replica count");
        return -1;
    }
    int *cls = agent_calloc((size_t)n, sizeof *cls);
    int64_t *value = agent_calloc((size_t)n, sizeof *value);
    bool *in_use = agent_calloc((size_t)n, sizeof *in_use);
    int rc = -1;
    int n_metrics = 0;
    for (int i = 0; i < n; i++) {
        cls[i] = group_pod(c, now, &pods[i]);
        switch (cls[i]) {
        case POD_READY:
            out->ready++;
            break;
        case POD_UNREADY:
            out->unready++;
            break;
        case POD_MISSING:
            out->missing++;
            break;
        default:
            out->ignored++;
            break;
        }
        /* the metrics left once ignored and unready pods are removed */
        if (cls[i] == POD_READY) {
            in_use[i] = true;
            value[i] = pods[i].usage_m;
            n_metrics++;
        }
    }
    if (n_metrics == 0) {
        snprintf(err, errlen, "did not receive metrics for targeted pods (pods might be unready)");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (pods[i].request_m <= 0) {
            snprintf(err, errlen, "missing request for cpu in pod %d", i);
            goto out;
        }
        /* Sums of n such values times 100 stay far from overflowing. */
        bool bad_usage = pods[i].has_metric && (pods[i].usage_m < 0 || pods[i].usage_m > MILLI_MAX);
        if (pods[i].request_m > MILLI_MAX || bad_usage) {
            snprintf(err, errlen, "cpu request or usage of pod %d out of range", i);
            goto out;
        }
    }
    double ratio;
    int32_t util;
    if (utilization_ratio(c, pods, value, in_use, n, &ratio, &util) != 0) {
        snprintf(err, errlen, "no metrics returned matched known pods");
        goto out;
    }
    out->utilization = util;
    out->usage_ratio = ratio;
    out->new_usage_ratio = ratio;

    bool scale_up_with_unready = out->unready > 0 && ratio > 1.0;
    if (!scale_up_with_unready && out->missing == 0) {
        if (within(c, ratio))
            out->replicas = current;
        else
            out->replicas = ceil_count(ratio * (double)out->ready);
        rc = 0;
        goto out;
    }
    out->rebalanced = true;
    if (out->missing > 0) {
        if (ratio < 1.0) {
            /* on a scale-down, missing pods use 100% of their request, or
             * the target when it is above 100% */
            int64_t fallback = c->target_utilization > 100 ? c->target_utilization : 100;
            for (int i = 0; i < n; i++)
                if (cls[i] == POD_MISSING) {
                    value[i] = pods[i].request_m * fallback / 100;
                    in_use[i] = true;
                    n_metrics++;
                }
        } else if (ratio > 1.0) {
            for (int i = 0; i < n; i++)
                if (cls[i] == POD_MISSING) {
                    value[i] = 0;
                    in_use[i] = true;
                    n_metrics++;
                }
        }
    }
    if (scale_up_with_unready)
        for (int i = 0; i < n; i++)
            if (cls[i] == POD_UNREADY) {
                value[i] = 0;
                in_use[i] = true;
                n_metrics++;
            }
    double new_ratio;
    int32_t unused;
    if (utilization_ratio(c, pods, value, in_use, n, &new_ratio, &unused) != 0) {
        snprintf(err, errlen, "no metrics returned matched known pods");
        goto out;
    }
    out->new_usage_ratio = new_ratio;
    if (within(c, new_ratio) || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0)) {
        /* too small a change, or the direction would reverse */
        out->replicas = current;
        rc = 0;
        goto out;
    }
    int32_t new_replicas = ceil_count(new_ratio * (double)n_metrics);
    if ((new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current))
        out->replicas = current;
    else
        out->replicas = new_replicas;
    rc = 0;
out:
    free(cls);
    free(value);
    free(in_use);
    return rc;
}

/* ---------------- behavior ---------------- */

typedef struct {
    double t;
    int32_t v; /* a recommendation, or a replica change */
    bool outdated;
} rec_t;

typedef struct {
    rec_t *a;
    int n, cap;
} recs_t;

struct sharp_hpa {
    sharp_hpa_config_t cfg;
    recs_t recommendations, up_events, down_events;
};

/* Keeps one entry: either in the slot `idx` (>= 0) or appended. The
 * controller reuses a stale slot instead of growing, which bounds the
 * history by what its windows can hold. */
static void recs_put(recs_t *r, int idx, double t, int32_t v)
{
    if (idx >= 0) {
        r->a[idx] = (rec_t){t, v, false};
        return;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        rec_t *a = realloc(r->a, (size_t)r->cap * sizeof *a);
        if (!a) {
            fputs("sharp agent: out of memory\n", stderr);
            abort();
        }
        r->a = a;
    }
    r->a[r->n++] = (rec_t){t, v, false};
}

sharp_hpa_t *sharp_hpa_new(const sharp_hpa_config_t *c)
{
    if (sharp_hpa_config_check(c))
        return NULL;
    sharp_hpa_t *h = agent_calloc(1, sizeof *h);
    h->cfg = *c;
    return h;
}

void sharp_hpa_free(sharp_hpa_t *h)
{
    if (!h)
        return;
    free(h->recommendations.a);
    free(h->up_events.a);
    free(h->down_events.a);
    free(h);
}

const sharp_hpa_config_t *sharp_hpa_config(const sharp_hpa_t *h)
{
    return &h->cfg;
}

/* getReplicasChangePerPeriod */
static int32_t change_per_period(int32_t period_s, const recs_t *events, double now)
{
    double cutoff = now - period_s;
    int32_t replicas = 0;
    for (int i = 0; i < events->n; i++)
        if (events->a[i].t > cutoff)
            replicas += events->a[i].v;
    return replicas;
}

static int32_t max32(int32_t a, int32_t b)
{
    return a >= b ? a : b;
}

static int32_t min32(int32_t a, int32_t b)
{
    return a <= b ? a : b;
}

/* calculateScaleUpLimitWithScalingRules */
int32_t sharp_hpa_scale_up_limit(const sharp_hpa_t *h, double now, int32_t current)
{
    const sharp_hpa_rules_t *r = &h->cfg.scale_up;
    if (r->select == SHARP_HPA_SELECT_DISABLED)
        return current;
    bool pick_min = r->select == SHARP_HPA_SELECT_MIN;
    int32_t result = pick_min ? INT32_MAX : INT32_MIN;
    for (int i = 0; i < r->n_policies; i++) {
        const sharp_hpa_policy_t *p = &r->policies[i];
        int32_t added = change_per_period(p->period_s, &h->up_events, now);
        int32_t deleted = change_per_period(p->period_s, &h->down_events, now);
        int32_t start = current - added + deleted;
        int32_t proposed;
        if (p->type == SHARP_HPA_POLICY_PODS)
            proposed = start + p->value;
        else /* rounded up, or a small count could never grow */
            proposed = (int32_t)ceil((double)start * (1.0 + (double)p->value / 100.0));
        result = pick_min ? min32(result, proposed) : max32(result, proposed);
    }
    return result;
}

/* calculateScaleDownLimitWithBehaviors */
int32_t sharp_hpa_scale_down_limit(const sharp_hpa_t *h, double now, int32_t current)
{
    const sharp_hpa_rules_t *r = &h->cfg.scale_down;
    if (r->select == SHARP_HPA_SELECT_DISABLED)
        return current;
    bool pick_min_change = r->select == SHARP_HPA_SELECT_MIN;
    int32_t result = pick_min_change ? INT32_MIN : INT32_MAX;
    for (int i = 0; i < r->n_policies; i++) {
        const sharp_hpa_policy_t *p = &r->policies[i];
        int32_t added = change_per_period(p->period_s, &h->up_events, now);
        int32_t deleted = change_per_period(p->period_s, &h->down_events, now);
        int32_t start = current - added + deleted;
        int32_t proposed;
        if (p->type == SHARP_HPA_POLICY_PODS)
            proposed = start - p->value;
        else /* truncated: the fewest replicas the percentage leaves */
            proposed = (int32_t)((double)start * (1.0 - (double)p->value / 100.0));
        result = pick_min_change ? max32(result, proposed) : min32(result, proposed);
    }
    return result;
}

/* stabilizeRecommendationWithBehaviors */
static int32_t stabilize(sharp_hpa_t *h, double now, int32_t current, int32_t desired, const char **reason)
{
    double up_cutoff = now - h->cfg.scale_up.stabilization_window_s;
    double down_cutoff = now - h->cfg.scale_down.stabilization_window_s;
    int32_t up_rec = desired, down_rec = desired;
    int old = -1;
    recs_t *r = &h->recommendations;
    for (int i = 0; i < r->n; i++) {
        if (r->a[i].t > up_cutoff)
            up_rec = min32(r->a[i].v, up_rec);
        if (r->a[i].t > down_cutoff)
            down_rec = max32(r->a[i].v, down_rec);
        if (r->a[i].t < up_cutoff && r->a[i].t < down_cutoff)
            old = i;
    }
    /* the recommendation, brought within the two limits */
    int32_t rec = current;
    if (rec < up_rec)
        rec = up_rec;
    if (rec > down_rec)
        rec = down_rec;
    /* the unstabilized recommendation is what is remembered */
    recs_put(r, old, now, desired);
    *reason = desired >= current ? "ScaleUpStabilized" : "ScaleDownStabilized";
    return rec;
}

/* convertDesiredReplicasWithBehaviorRate */
static int32_t apply_rate(const sharp_hpa_t *h, double now, int32_t current, int32_t desired, const char **reason)
{
    const sharp_hpa_config_t *c = &h->cfg;
    if (desired > current) {
        int32_t limit = sharp_hpa_scale_up_limit(h, now, current);
        if (limit < current)
            limit = current; /* no further scale-up until the events age out */
        int32_t maximum = c->max_replicas;
        const char *why;
        if (maximum > limit) {
            maximum = limit;
            why = "ScaleUpLimit";
        } else {
            why = "TooManyReplicas";
        }
        if (desired > maximum) {
            *reason = why;
            return maximum;
        }
    } else if (desired < current) {
        int32_t limit = sharp_hpa_scale_down_limit(h, now, current);
        if (limit > current)
            limit = current;
        int32_t minimum = c->min_replicas;
        const char *why;
        if (minimum < limit) {
            minimum = limit;
            why = "ScaleDownLimit";
        } else {
            why = "TooFewReplicas";
        }
        if (desired < minimum) {
            *reason = why;
            return minimum;
        }
    }
    *reason = "DesiredWithinRange";
    return desired;
}

/* storeScaleEvent */
static void store_scale_event(sharp_hpa_t *h, double now, int32_t prev, int32_t next)
{
    const sharp_hpa_rules_t *r = next > prev ? &h->cfg.scale_up : &h->cfg.scale_down;
    recs_t *ev = next > prev ? &h->up_events : &h->down_events;
    int32_t longest = 0;
    for (int i = 0; i < r->n_policies; i++)
        if (r->policies[i].period_s > longest)
            longest = r->policies[i].period_s;
    /* markScaleEventsOutdated, then reuse the last outdated slot */
    double cutoff = now - longest;
    int old = -1;
    for (int i = 0; i < ev->n; i++) {
        if (ev->a[i].t < cutoff)
            ev->a[i].outdated = true;
        if (ev->a[i].outdated)
            old = i;
    }
    recs_put(ev, old, now, next > prev ? next - prev : prev - next);
}

/* reconcileAutoscaler, for one CPU utilization metric. */
static int32_t reconcile(sharp_hpa_t *h, double now, int32_t current, const sharp_hpa_pod_t *pods, int n,
                         sharp_hpa_decision_t *d, bool store)
{
    const sharp_hpa_config_t *c = &h->cfg;
    memset(d, 0, sizeof *d);
    d->current = current;
    d->metric_desired = -1;
    d->metrics_ok = true;
    int32_t desired = 0;
    bool rescale = true;
    if (current == 0 && c->min_replicas != 0) {
        /* scaling is disabled while the target has no replicas */
        desired = 0;
        rescale = false;
        d->able_reason = "ScalingDisabled";
        d->limit_reason = "ScalingDisabled";
    } else if (current > c->max_replicas) {
        desired = c->max_replicas;
        d->able_reason = "ReadyForNewScale";
        d->limit_reason = "TooManyReplicas";
    } else if (current < c->min_replicas) {
        desired = c->min_replicas;
        d->able_reason = "ReadyForNewScale";
        d->limit_reason = "TooFewReplicas";
    } else {
        if (sharp_hpa_replica_calc(c, now, current, pods, n, &d->calc, d->error, sizeof d->error) != 0) {
            /* FailedComputeMetricsReplicas: no scaling this sync */
            d->metrics_ok = false;
            d->desired = current;
            d->stabilized = current;
            d->able_reason = "FailedGetResourceMetric";
            d->limit_reason = "FailedGetResourceMetric";
            return current;
        }
        d->metric_desired = d->calc.replicas;
        if (d->metric_desired > desired)
            desired = d->metric_desired;
        const char *why;
        int32_t stabilized = stabilize(h, now, current, desired, &why);
        d->stabilized = stabilized;
        d->able_reason = stabilized != desired ? why : "ReadyForNewScale";
        desired = apply_rate(h, now, current, stabilized, &d->limit_reason);
        rescale = desired != current;
    }
    d->desired = rescale ? desired : current;
    if (store && rescale && desired != current)
        store_scale_event(h, now, current, desired);
    return d->desired;
}

int32_t sharp_hpa_sync(sharp_hpa_t *h, double now, int32_t current, const sharp_hpa_pod_t *pods, int n,
                       sharp_hpa_decision_t *d)
{
    return reconcile(h, now, current, pods, n, d, true);
}

int32_t sharp_hpa_advise(sharp_hpa_t *h, double now, int32_t current, const sharp_hpa_pod_t *pods, int n,
                         sharp_hpa_decision_t *d)
{
    return reconcile(h, now, current, pods, n, d, false);
}

void sharp_hpa_record_scale(sharp_hpa_t *h, double now, int32_t prev, int32_t next)
{
    if (next != prev)
        store_scale_event(h, now, prev, next);
}

/* live.c: see live.h. */
#include "live.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agent_util.h"

void sharp_scaling_live_observe(const sharp_scaling_live_config_t *c, const sharp_scaling_signals_t *s, double *obs,
                                bool *present)
{
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++) {
        obs[i] = 0.0;
        present[i] = s->cluster_present;
    }
    if (!s->cluster_present)
        return;
    /* The simulator's function on the simulator's quantities: in flight
     * against the replicas' concurrency (its workers), the p99 against
     * the objective's, shares of the offered requests, counts. */
    double secs = s->seconds > 0.0 ? s->seconds : 1.0;
    sharp_scale_measure_t m = {
        .inflight = s->inflight_mean,
        .concurrency = c->per_replica_concurrency,
        .ready = s->ready,
        .replicas = s->replicas,
        .rate = s->offered / secs,
        /* as in the simulator's first step: no period before, no change */
        .prev_rate = s->prev_rate,
        .has_prev = s->has_prev,
        .peak_rate = s->peak_rate,
        .p99_s = s->has_p99 ? s->p99_s : 0.0,
        .slo_p99_s = c->slo_p99_s,
        .offered = s->offered,
        .errors = s->errors,
        .shed = s->shed,
    };
    sharp_scale_obs_from(&m, obs);
    present[SHARP_SCALE_OBS_P99] = s->has_p99;
    if (!s->has_p99)
        obs[SHARP_SCALE_OBS_P99] = 0.0;
}

const char *sharp_scaling_mode_name(sharp_scaling_mode_t m)
{
    switch (m) {
    case SHARP_SCALING_SHADOW: return "SHADOW";
    case SHARP_SCALING_ACTIVE: return "ACTIVE";
    case SHARP_SCALING_OFF: return "OFF";
    }
    return "?";
}

/* The guardian's and the HPA's limit on counts. */
#define LIVE_MAX_REPLICAS (1 << 24)
/* Pods handed to the HPA: a cluster with more healthy hosts than this is
 * judged on this many. */
#define LIVE_MAX_PODS 65536

const char *sharp_scaling_live_config_check(const sharp_scaling_live_config_t *c)
{
    if (c->mode != SHARP_SCALING_SHADOW && c->mode != SHARP_SCALING_ACTIVE && c->mode != SHARP_SCALING_OFF)
        return "mode must be SHADOW, ACTIVE or OFF";
    if (c->min_replicas < 1)
        return "min_replicas must be at least 1";
    if (c->max_replicas > LIVE_MAX_REPLICAS)
        return "max_replicas must be at most 16777216";
    if (c->max_replicas < c->min_replicas)
        return "max_replicas must not be less than min_replicas";
    if (c->initial_replicas < c->min_replicas || c->initial_replicas > c->max_replicas)
        return "initial_replicas must be within [min_replicas, max_replicas]";
    if (!(c->sync_period_s > 0.0))
        return "sync_period must be positive";
    if (c->target_utilization < 1)
        return "the HPA's target_utilization must be positive";
    if (c->per_replica_concurrency < 1)
        return "the HPA's per_replica_concurrency must be positive";
    if (!(c->slo_p99_s > 0.0))
        return "the objective's p99_latency must be positive";
    if (!(c->slo_error_rate >= 0.0 && c->slo_error_rate <= 1.0))
        return "the objective's error_rate must be within [0, 1]";
    return NULL;
}

const char *sharp_scaling_policy_check(const sharp_policy_t *p, char *buf, size_t len)
{
    if (p->obs_dim == SHARP_SCALE_OBS_N && p->n_actions == SHARP_SCALE_ACTIONS)
        return NULL;
    snprintf(buf, len,
             "the policy has %d observations and %d actions; the scaling environment's have %d and %d "
             "(a policy trained for another environment)",
             p->obs_dim, p->n_actions, SHARP_SCALE_OBS_N, SHARP_SCALE_ACTIONS);
    return buf;
}

struct sharp_scaling_live {
    sharp_scaling_live_config_t cfg;
    sharp_policy_t *policy;
    char policy_error[512];
    sharp_guardian_t *guardian;
    sharp_hpa_t *hpa;
    sharp_hpa_pod_t *pods;
    int pods_cap;
    int current;
    sharp_scale_peak_t peak; /* the periods' offered rates */
};

sharp_scaling_live_t *sharp_scaling_live_new(const sharp_scaling_live_config_t *c, sharp_policy_t *policy,
                                             const char *policy_error, char *err, size_t errlen)
{
    const char *bad = sharp_scaling_live_config_check(c);
    char buf[256];
    if (!bad && policy)
        bad = sharp_scaling_policy_check(policy, buf, sizeof buf);
    if (bad) {
        snprintf(err, errlen, "%s", bad);
        return NULL;
    }
    sharp_guardian_config_t gc;
    sharp_guardian_config_default(&gc);
    gc.min_replicas = c->min_replicas;
    gc.max_replicas = c->max_replicas;
    /* every observation is measured at the decision: two periods of age
     * would be a sampler that stopped */
    gc.stale_after_s = 2.0 * c->sync_period_s;
    gc.n_obs = SHARP_SCALE_OBS_N;
    gc.shadow = c->mode == SHARP_SCALING_SHADOW;
    /* no scale-up of a cluster below the HPA rule's own scale-up
     * threshold, its target and 10% tolerance (the simulator's 77%), while
     * it meets the objective */
    gc.scale_up_min_utilization = c->target_utilization >= 90 ? 1.0 : c->target_utilization * 1.1 / 100.0;
    /* and no cut that leaves it above the target (the simulator's 70%) at
     * the highest load of the last four periods (60 s at 15 s) */
    gc.scale_down_max_utilization = c->target_utilization >= 100 ? 1.0 : c->target_utilization / 100.0;
    gc.scale_down_window_s = 4.0 * c->sync_period_s;
    /* the agent may grow as fast as the HPA rule on the same signals: its
     * utilization counts queued requests, so in an overload whose requests
     * queue it doubles the count every sync, where the minute's doubling
     * alone held the agent at half its count (see guardian.h) */
    gc.growth_to_hpa = true;
    gc.has_range = policy && policy->has_range;
    for (int i = 0; gc.has_range && i < SHARP_SCALE_OBS_N; i++) {
        gc.lo[i] = policy->range_lo[i];
        gc.hi[i] = policy->range_hi[i];
    }
    sharp_hpa_config_t hc;
    sharp_hpa_config_default(&hc);
    hc.min_replicas = c->min_replicas;
    hc.max_replicas = c->max_replicas;
    hc.target_utilization = c->target_utilization;
    const char *gbad = sharp_guardian_config_check(&gc), *hbad = sharp_hpa_config_check(&hc);
    if (gbad || hbad) {
        snprintf(err, errlen, "%s", gbad ? gbad : hbad);
        return NULL;
    }
    sharp_scaling_live_t *l = agent_calloc(1, sizeof *l);
    l->cfg = *c;
    l->policy = policy;
    snprintf(l->policy_error, sizeof l->policy_error, "%s",
             policy ? "" : (policy_error && *policy_error ? policy_error : "no policy"));
    l->guardian = sharp_guardian_new(&gc);
    l->hpa = sharp_hpa_new(&hc);
    l->current = c->initial_replicas;
    return l;
}

void sharp_scaling_live_free(sharp_scaling_live_t *l)
{
    if (!l)
        return;
    sharp_policy_free(l->policy);
    sharp_guardian_free(l->guardian);
    sharp_hpa_free(l->hpa);
    free(l->pods);
    free(l);
}

const sharp_scaling_live_config_t *sharp_scaling_live_config(const sharp_scaling_live_t *l)
{
    return &l->cfg;
}

const sharp_policy_t *sharp_scaling_live_policy(const sharp_scaling_live_t *l)
{
    return l->policy;
}

const char *sharp_scaling_live_policy_error(const sharp_scaling_live_t *l)
{
    return l->policy_error;
}

int sharp_scaling_live_current(const sharp_scaling_live_t *l)
{
    return l->current;
}

/* The pods the HPA sees: the ready replicas with the utilization as their
 * CPU, then the replicas asked for and not ready. */
static int hpa_pods(sharp_scaling_live_t *l, double now, const sharp_scaling_signals_t *s, double util)
{
    int ready = s->ready < 0 ? 0 : (s->ready > LIVE_MAX_PODS ? LIVE_MAX_PODS : s->ready);
    int n = l->current > ready ? l->current : ready;
    if (n > l->pods_cap) {
        free(l->pods);
        l->pods_cap = n;
        l->pods = agent_calloc((size_t)n, sizeof *l->pods);
    }
    /* a ceiling far below the HPA's bound on millicores (2^40) */
    double usage = util * 1000.0;
    if (!(usage >= 0.0))
        usage = 0.0;
    if (usage > 1e12)
        usage = 1e12;
    for (int i = 0; i < n; i++) {
        sharp_hpa_pod_t *p = &l->pods[i];
        memset(p, 0, sizeof *p);
        bool r = i < ready;
        p->phase = SHARP_HPA_POD_RUNNING;
        /* started and ready long ago: SHARP does not know when, and a
         * recent start would have the HPA set a ready pod's CPU aside */
        p->has_start_time = true;
        p->start_s = now - 3600.0;
        p->has_ready_condition = true;
        p->ready = r;
        p->ready_transition_s = now - 3600.0;
        p->has_metric = r;
        p->usage_m = r ? llround(usage) : 0;
        p->metric_ts = now;
        p->metric_window_s = l->cfg.sync_period_s;
        p->request_m = 1000;
    }
    return n;
}

int sharp_scaling_live_step(sharp_scaling_live_t *l, double now, const sharp_scaling_signals_t *sig,
                            sharp_scaling_step_t *out)
{
    memset(out, 0, sizeof *out);
    out->now = now;
    out->action = -1;
    out->current = l->current;
    sharp_scaling_signals_t s = *sig;
    s.replicas = l->current;
    /* the recent peak over the periods measured in a row */
    if (s.cluster_present)
        s.peak_rate = sharp_scale_peak_push(&l->peak, s.offered / (s.seconds > 0.0 ? s.seconds : 1.0),
                                            sharp_scale_peak_keep(l->cfg.sync_period_s));
    else
        sharp_scale_peak_reset(&l->peak);
    sharp_scaling_live_observe(&l->cfg, &s, out->obs, out->present);

    out->utilization = s.cluster_present && s.ready > 0
                           ? 100.0 * s.inflight_mean / ((double)s.ready * l->cfg.per_replica_concurrency)
                           : 0.0;
    int n = s.cluster_present ? hpa_pods(l, now, &s, out->utilization / 100.0) : 0;
    int advice = sharp_hpa_advise(l->hpa, now, l->current, l->pods, n, &out->hpa);

    double bad = s.offered > 0.0 ? (s.errors + s.shed) / s.offered : 0.0;
    bool violated =
        s.cluster_present && ((s.has_p99 && s.p99_s > l->cfg.slo_p99_s) || bad > l->cfg.slo_error_rate);
    bool all_present = true;
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++)
        all_present = all_present && out->present[i];
    int proposal = l->current;
    if (l->policy && l->cfg.mode != SHARP_SCALING_OFF && all_present) {
        out->action = sharp_policy_act(l->policy, out->obs, NULL);
        /* the probabilities of the same forward pass, for the report */
        sharp_policy_prepare_obs(l->policy, out->obs, l->policy->obs1);
        const double *logits = sharp_mlp_forward(&l->policy->actor, &l->policy->actor1, l->policy->obs1, 1);
        sharp_softmax(logits, SHARP_SCALE_ACTIONS, out->probs, NULL);
        out->ran_policy = true;
        proposal = sharp_scale_action_target(out->action, l->current);
    }

    sharp_guardian_decision_t *d = &out->guard;
    if (l->cfg.mode == SHARP_SCALING_OFF || !l->policy) {
        /* Nothing for the guardian to judge: the HPA rule decides (it
         * keeps its own bounds). */
        memset(d, 0, sizeof *d);
        d->now = now;
        d->verdict = l->cfg.mode == SHARP_SCALING_OFF ? SHARP_GUARD_SHADOW : SHARP_GUARD_FALLBACK;
        d->current = l->current;
        d->agent = d->agent_guarded = l->current;
        d->hpa = d->applied = advice;
        d->obs_index = -1;
        if (l->cfg.mode == SHARP_SCALING_OFF)
            snprintf(d->reason, sizeof d->reason, "mode OFF: the HPA rule's count");
        else
            snprintf(d->reason, sizeof d->reason, "no policy (%.200s): the HPA rule's count", l->policy_error);
    } else {
        double age[SHARP_SCALE_OBS_N] = {0};
        /* the load for the capacity rules: in flight in replicas' worth of
         * concurrency, and the period against the objective */
        double rate = s.offered / (s.seconds > 0.0 ? s.seconds : 1.0);
        sharp_guardian_obs_t go = {out->obs,
                                   age,
                                   out->present,
                                   .has_load = s.cluster_present,
                                   .busy = s.inflight_mean / l->cfg.per_replica_concurrency,
                                   .violated = violated,
                                   .growth = s.has_prev && s.prev_rate > 0.0 ? rate / s.prev_rate : 1.0};
        sharp_guardian_decide(l->guardian, now, l->current, proposal, advice, &go, d);
        out->guarded = true;
    }
    int next = d->applied;
    /* the HPA's own rate limits count the changes it made (as in
     * sharp_scaling_episode) */
    if (d->verdict != SHARP_GUARD_ACCEPT && d->verdict != SHARP_GUARD_CLAMP && next == advice)
        sharp_hpa_record_scale(l->hpa, now, l->current, next);

    out->violated = violated;
    out->recommendation = next;
    l->current = next;
    return next;
}

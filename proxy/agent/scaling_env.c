/* scaling_env.c: see scaling_env.h. */
#include "scaling_env.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

/* Relative changes; 0 marks the absolute steps and hold. */
static const struct {
    double frac;
    int abs;
    const char *name;
} actions[SHARP_SCALE_ACTIONS] = {
    {-0.50, 0, "-50%"}, {-0.25, 0, "-25%"}, {-0.10, 0, "-10%"}, {0.0, -1, "-1"}, {0.0, 0, "hold"},
    {0.0, 1, "+1"},     {0.10, 0, "+10%"},  {0.25, 0, "+25%"},  {0.50, 0, "+50%"}, {1.00, 0, "+100%"},
};

static const char *const obs_names[SHARP_SCALE_OBS_N] = {
    "rate", "rate_delta", "p99", "error_rate", "shed_rate", "inflight", "ready", "replicas", "rate_per_replica",
    "tod_sin", "tod_cos",
};

int sharp_scale_action_target(int a, int current)
{
    if (a < 0 || a >= SHARP_SCALE_ACTIONS)
        return current;
    if (actions[a].abs)
        return current + actions[a].abs;
    double f = actions[a].frac;
    if (f == 0.0)
        return current;
    int step = (int)ceil(fabs(f) * current);
    if (step < 1)
        step = 1;
    return f > 0 ? current + step : current - step;
}

const char *sharp_scale_action_name(int a)
{
    return a >= 0 && a < SHARP_SCALE_ACTIONS ? actions[a].name : "?";
}

const char *sharp_scale_obs_name(int i)
{
    return i >= 0 && i < SHARP_SCALE_OBS_N ? obs_names[i] : "?";
}

void sharp_scaling_config_default(sharp_scaling_config_t *c)
{
    memset(c, 0, sizeof *c);
    sharp_sim_config_default(&c->sim);
    sharp_guardian_config_default(&c->guardian);
    c->guardian.min_replicas = 2;
    c->guardian.max_replicas = 100;
    sharp_hpa_config_default(&c->hpa);
    c->hpa.min_replicas = 2;
    c->hpa.max_replicas = 100;
    c->hpa.target_utilization = 70;
    c->trace = SHARP_TRACE_MIXED;
    c->reference = false;
    c->episode_s = 3600;
    c->initial_utilization = 0.7;
    c->w_violation = 0.1;
    c->w_cost = 0.1;
    c->w_excess = 0.0;
    c->w_drop = 0.0;
    c->cost_ref = 100.0;
    c->w_change = 0.001;
}

const char *sharp_scaling_config_check(const sharp_scaling_config_t *c)
{
    const char *bad = sharp_sim_config_check(&c->sim);
    if (bad)
        return bad;
    if ((bad = sharp_guardian_config_check(&c->guardian)))
        return bad;
    if ((bad = sharp_hpa_config_check(&c->hpa)))
        return bad;
    if (c->guardian.max_replicas > c->sim.max_replicas || c->hpa.max_replicas > c->sim.max_replicas)
        return "the guardian's and the HPA's max_replicas must fit the simulated cluster";
    if (c->episode_s < 2 * c->sim.step_s)
        return "episode_s must hold at least two steps";
    if (!(c->initial_utilization > 0.0 && c->initial_utilization <= 1.0))
        return "initial_utilization must be in (0, 1]";
    for (int k = 0; k < SHARP_TRACE_MIXED; k++)
        if (c->kinds[k] < 0 || c->kinds[k] > SHARP_SCALING_MAX_KINDS)
            return "a trace kind's weight must be in [0, 16]";
    if (!(c->w_violation >= 0.0) || !(c->w_drop >= 0.0) || !(c->w_cost >= 0.0) || !(c->w_excess >= 0.0) || !(c->cost_ref > 0.0) ||
        !(c->w_change >= 0.0))
        return "reward weights must not be negative (cost_ref positive)";
    return NULL;
}

void sharp_scaling_observe(const sharp_sim_t *s, const sharp_sim_stats_t *st, double prev_rate, double *obs)
{
    double rate = st->rate;
    obs[SHARP_SCALE_OBS_RATE] = rate;
    obs[SHARP_SCALE_OBS_RATE_DELTA] = st->seconds > 0 ? (rate - prev_rate) / st->seconds : 0.0;
    obs[SHARP_SCALE_OBS_P99] = st->p99;
    obs[SHARP_SCALE_OBS_ERROR_RATE] = st->offered > 0.0 ? st->errors / st->offered : 0.0;
    obs[SHARP_SCALE_OBS_SHED_RATE] = st->offered > 0.0 ? st->shed / st->offered : 0.0;
    obs[SHARP_SCALE_OBS_INFLIGHT] = st->limit > 0.0 ? st->inflight / st->limit : 0.0;
    obs[SHARP_SCALE_OBS_READY] = sharp_sim_ready(s);
    obs[SHARP_SCALE_OBS_REPLICAS] = s->n;
    obs[SHARP_SCALE_OBS_RATE_PER_REPLICA] = rate / (s->n > 0 ? s->n : 1);
    double tod = fmod(s->trace->start_tod + s->t, SHARP_TRACE_DAY_S);
    obs[SHARP_SCALE_OBS_TOD_SIN] = sin(2.0 * M_PI * tod / SHARP_TRACE_DAY_S);
    obs[SHARP_SCALE_OBS_TOD_COS] = cos(2.0 * M_PI * tod / SHARP_TRACE_DAY_S);
}

double sharp_scaling_reward(const sharp_scaling_config_t *c, const sharp_sim_stats_t *st, bool changed)
{
    if (st->seconds <= 0)
        return 0.0;
    double viol = (double)st->violation_s / st->seconds;
    double replicas = st->replica_s / st->seconds;
    double need = st->rate / sharp_sim_capacity(&c->sim);
    double excess = replicas > need ? replicas - need : 0.0;
    double drop = st->offered > 0.0 ? (st->shed + st->errors) / st->offered : 0.0;
    return -(c->w_violation * viol + c->w_drop * drop + c->w_cost * replicas / c->cost_ref + c->w_excess * excess / c->cost_ref +
             (changed ? c->w_change : 0.0));
}

int sharp_scaling_parse_kinds(const char *list, int out[SHARP_TRACE_MIXED])
{
    if (!list || !*list)
        return -1;
    int kinds[SHARP_TRACE_MIXED] = {0}, names = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[16];
        sharp_trace_kind_t k;
        if (len == 0 || len >= sizeof name || ++names > SHARP_SCALING_MAX_KINDS)
            return -1;
        memcpy(name, p, len);
        name[len] = '\0';
        if (sharp_trace_parse(name, &k) != 0)
            return -1;
        for (int i = 0; i < SHARP_TRACE_MIXED; i++)
            kinds[i] += k == SHARP_TRACE_MIXED || (int)k == i;
        if (!comma)
            break;
        p = comma + 1;
    }
    memcpy(out, kinds, sizeof kinds);
    return 0;
}

bool sharp_scaling_has_kinds(const int kinds[SHARP_TRACE_MIXED])
{
    for (int k = 0; k < SHARP_TRACE_MIXED; k++)
        if (kinds[k] > 0)
            return true;
    return false;
}

sharp_trace_kind_t sharp_scaling_draw_kind(const int kinds[SHARP_TRACE_MIXED], sharp_rng_t *rng)
{
    int total = 0;
    for (int k = 0; k < SHARP_TRACE_MIXED; k++)
        total += kinds[k] > 0 ? kinds[k] : 0;
    if (total == 0)
        return SHARP_TRACE_MIXED;
    int pick = (int)sharp_rng_below(rng, (uint32_t)total);
    for (int k = 0; k < SHARP_TRACE_MIXED; k++) {
        if (kinds[k] <= 0)
            continue;
        if (pick < kinds[k])
            return (sharp_trace_kind_t)k;
        pick -= kinds[k];
    }
    return SHARP_TRACE_MIXED; /* not reached */
}

const char *sharp_scaling_kinds_name(const int kinds[SHARP_TRACE_MIXED], char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (int k = 0; k < SHARP_TRACE_MIXED; k++) {
        if (kinds[k] <= 0)
            continue;
        char w[16] = "";
        if (kinds[k] > 1)
            snprintf(w, sizeof w, "%d ", kinds[k]);
        int n = snprintf(buf + used, used < len ? len - used : 0, "%s%s%s", used ? " + " : "", w,
                         sharp_trace_name((sharp_trace_kind_t)k));
        if (n > 0)
            used += (size_t)n;
    }
    return buf;
}

int sharp_scaling_initial_replicas(const sharp_scaling_config_t *c, const sharp_trace_t *tr)
{
    double need = sharp_trace_rate(tr, 0) / (sharp_sim_capacity(&c->sim) * c->initial_utilization);
    int n = (int)ceil(need);
    int lo = c->guardian.min_replicas > c->hpa.min_replicas ? c->guardian.min_replicas : c->hpa.min_replicas;
    int hi = c->guardian.max_replicas < c->hpa.max_replicas ? c->guardian.max_replicas : c->hpa.max_replicas;
    return n < lo ? lo : (n > hi ? hi : n);
}

/* ---------------- the environment ---------------- */

typedef struct {
    sharp_env_t env;
    sharp_scaling_factory_t *factory; /* range bookkeeping, may be NULL */
    sharp_scaling_config_t cfg;
    sharp_rng_t rng; /* the episodes' trace seeds */
    sharp_trace_t trace;
    sharp_sim_t sim;
    bool live; /* trace and sim allocated */
    sharp_guardian_t *guardian;
    double prev_rate;
    bool kinds; /* cfg.kinds names kinds: cfg.trace is set per episode */
} scaling_env_t;

static void track(scaling_env_t *e, const double *obs)
{
    sharp_scaling_factory_t *f = e->factory;
    if (!f)
        return;
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++) {
        if (!f->seen || obs[i] < f->lo[i])
            f->lo[i] = obs[i];
        if (!f->seen || obs[i] > f->hi[i])
            f->hi[i] = obs[i];
    }
    f->seen = true;
}

static void release(scaling_env_t *e)
{
    if (!e->live)
        return;
    sharp_sim_free(&e->sim);
    sharp_trace_free(&e->trace);
    e->live = false;
}

/* A new trace and cluster, and the first step without a decision. */
static void start_episode(const sharp_scaling_config_t *cfg, uint64_t trace_seed, int replicas, sharp_trace_t *tr,
                          sharp_sim_t *sim, double *obs, double *rate)
{
    sharp_trace_generate(tr, cfg->trace, trace_seed, cfg->reference, cfg->episode_s);
    sharp_sim_init(sim, &cfg->sim, tr, replicas > 0 ? replicas : sharp_scaling_initial_replicas(cfg, tr));
    sharp_sim_stats_t st;
    sharp_sim_step(sim, &st);
    /* no step before the first: no change to report */
    sharp_scaling_observe(sim, &st, st.rate, obs);
    *rate = st.rate;
}

static void env_reset(sharp_env_t *env, double *obs)
{
    scaling_env_t *e = (scaling_env_t *)env;
    release(e);
    sharp_scaling_config_t *c = &e->cfg;
    /* one of the kinds trained on, drawn from the episodes' stream before
     * the trace's seed */
    if (e->kinds)
        c->trace = sharp_scaling_draw_kind(c->kinds, &e->rng);
    start_episode(c, sharp_rng_next(&e->rng), 0, &e->trace, &e->sim, obs, &e->prev_rate);
    e->live = true;
    sharp_guardian_reset(e->guardian);
    track(e, obs);
}

static void env_step(sharp_env_t *env, int action, double *obs, double *reward, bool *terminated, bool *truncated)
{
    scaling_env_t *e = (scaling_env_t *)env;
    int current = e->sim.n;
    int target = sharp_scale_action_target(action, current);
    sharp_guardian_decision_t d;
    /* In simulation every observation is fresh and present: only the
     * guardian's limits apply (the fallback's HPA is never consulted). */
    int applied = sharp_guardian_decide(e->guardian, e->sim.t, current, target, current, NULL, &d);
    sharp_sim_set_replicas(&e->sim, applied);
    sharp_sim_stats_t st;
    sharp_sim_step(&e->sim, &st);
    sharp_scaling_observe(&e->sim, &st, e->prev_rate, obs);
    e->prev_rate = st.rate;
    *reward = sharp_scaling_reward(&e->cfg, &st, applied != current);
    *terminated = false;
    *truncated = sharp_sim_done(&e->sim);
    track(e, obs);
}

static void env_destroy(sharp_env_t *env)
{
    scaling_env_t *e = (scaling_env_t *)env;
    release(e);
    sharp_guardian_free(e->guardian);
    free(e);
}

static const sharp_env_ops_t scaling_ops = {
    .reset = env_reset,
    .step = env_step,
    .destroy = env_destroy,
};

void sharp_scaling_factory_init(sharp_scaling_factory_t *f, const sharp_scaling_config_t *cfg)
{
    memset(f, 0, sizeof *f);
    f->cfg = *cfg;
}

sharp_env_t *sharp_scaling_factory(void *arg, int index, uint64_t seed)
{
    sharp_scaling_factory_t *f = arg;
    if (!f || sharp_scaling_config_check(&f->cfg))
        return NULL;
    scaling_env_t *e = agent_calloc(1, sizeof *e);
    e->env.ops = &scaling_ops;
    e->env.name = "scaling";
    e->env.obs_dim = SHARP_SCALE_OBS_N;
    e->env.n_actions = SHARP_SCALE_ACTIONS;
    e->cfg = f->cfg;
    e->kinds = sharp_scaling_has_kinds(f->cfg.kinds);
    /* Evaluation environments (index < 0) do not widen the trained range. */
    e->factory = index >= 0 ? f : NULL;
    sharp_rng_seed(&e->rng, seed);
    e->guardian = sharp_guardian_new(&e->cfg.guardian);
    return &e->env;
}

void sharp_scaling_factory_range(const sharp_scaling_factory_t *f, sharp_policy_t *p)
{
    if (!f->seen || p->obs_dim != SHARP_SCALE_OBS_N)
        return;
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++) {
        p->range_lo[i] = f->lo[i];
        p->range_hi[i] = f->hi[i];
    }
    p->has_range = true;
}

/* ---------------- episodes under a controller ---------------- */

int sharp_scaling_episode(const sharp_scaling_config_t *cfg, uint64_t trace_seed, const sharp_controller_t *ctl,
                          sharp_episode_result_t *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    const char *bad = sharp_scaling_config_check(cfg);
    if (bad) {
        snprintf(err, errlen, "%s", bad);
        return -1;
    }
    if (ctl->kind == SHARP_CTL_AGENT &&
        (!ctl->policy || ctl->policy->obs_dim != SHARP_SCALE_OBS_N || ctl->policy->n_actions != SHARP_SCALE_ACTIONS)) {
        snprintf(err, errlen, "the policy is not one for the scaling simulator (%d observations and %d actions)",
                 SHARP_SCALE_OBS_N, SHARP_SCALE_ACTIONS);
        return -1;
    }
    sharp_trace_t tr;
    sharp_sim_t sim;
    double obs[SHARP_SCALE_OBS_N], prev_rate;
    /* A fixed count is there from the start. */
    start_episode(cfg, trace_seed, ctl->kind == SHARP_CTL_FIXED ? ctl->fixed : 0, &tr, &sim, obs, &prev_rate);

    sharp_hpa_t *hpa = NULL;
    sharp_guardian_t *guardian = NULL;
    sharp_hpa_pod_t *pods = agent_calloc((size_t)cfg->sim.max_replicas, sizeof *pods);
    if (ctl->kind != SHARP_CTL_FIXED)
        hpa = sharp_hpa_new(&cfg->hpa);
    if (ctl->kind == SHARP_CTL_AGENT) {
        sharp_guardian_config_t gc = cfg->guardian;
        gc.shadow = ctl->shadow;
        gc.n_obs = SHARP_SCALE_OBS_N;
        gc.has_range = ctl->policy->has_range;
        for (int i = 0; i < SHARP_SCALE_OBS_N && gc.has_range; i++) {
            gc.lo[i] = ctl->policy->range_lo[i];
            gc.hi[i] = ctl->policy->range_hi[i];
        }
        guardian = sharp_guardian_new(&gc);
        if (guardian && ctl->log)
            sharp_guardian_set_log(guardian, ctl->log, ctl->log_arg);
    }
    double age[SHARP_SCALE_OBS_N] = {0};
    bool present[SHARP_SCALE_OBS_N];
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++)
        present[i] = true;
    int peak = sim.n;

    while (!sharp_sim_done(&sim)) {
        int current = sim.n, next = current;
        double now = sim.t;
        if (ctl->kind == SHARP_CTL_HPA) {
            sharp_hpa_decision_t hd;
            int n = sharp_sim_hpa_pods(&sim, pods, cfg->sim.max_replicas);
            next = sharp_hpa_sync(hpa, now, current, pods, n, &hd);
        } else if (ctl->kind == SHARP_CTL_AGENT) {
            sharp_hpa_decision_t hd;
            int n = sharp_sim_hpa_pods(&sim, pods, cfg->sim.max_replicas);
            int advice = sharp_hpa_advise(hpa, now, current, pods, n, &hd);
            int a = sharp_policy_act(ctl->policy, obs, NULL);
            sharp_guardian_obs_t go = {obs, age, present};
            sharp_guardian_decision_t gd;
            next = sharp_guardian_decide(guardian, now, current, sharp_scale_action_target(a, current), advice, &go,
                                         &gd);
            if (gd.verdict == SHARP_GUARD_FALLBACK)
                res->fallbacks++;
            if (gd.verdict == SHARP_GUARD_CLAMP)
                res->clamps++;
            /* the HPA's own rate limits count the changes it made */
            if ((gd.verdict == SHARP_GUARD_FALLBACK || gd.verdict == SHARP_GUARD_SHADOW) && next == advice)
                sharp_hpa_record_scale(hpa, now, current, next);
        }
        sharp_sim_set_replicas(&sim, next);
        if (sim.n > peak)
            peak = sim.n;
        sharp_sim_stats_t st;
        sharp_sim_step(&sim, &st);
        res->reward += sharp_scaling_reward(cfg, &st, sim.n != current);
        if (ctl->on_step)
            ctl->on_step(ctl->step_arg, &sim, &st);
        sharp_scaling_observe(&sim, &st, prev_rate, obs);
        prev_rate = st.rate;
        res->decisions++;
    }
    res->violation_s = sim.total.violation_s;
    res->replica_s = sim.total.replica_s;
    res->offered = sim.total.offered;
    res->served = sim.total.served;
    res->errors = sim.total.errors;
    res->shed = sim.total.shed;
    res->p99_max = sim.total.p99;
    res->actions = sim.changes;
    res->peak_replicas = peak;
    free(pods);
    sharp_guardian_free(guardian);
    sharp_hpa_free(hpa);
    sharp_sim_free(&sim);
    sharp_trace_free(&tr);
    return 0;
}

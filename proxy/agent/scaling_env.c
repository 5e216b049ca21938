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
    "util", "util_asked", "rate_change", "p99_slo", "error_rate", "shed_rate", "booting", "inv_replicas",
    "from_peak",
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
    if (c->slo_p99_hi > 0.0 && !(c->slo_p99_lo > 0.0 && c->slo_p99_lo <= c->slo_p99_hi && isfinite(c->slo_p99_hi)))
        return "the objective's p99 range needs 0 < lo <= hi";
    if (!(c->no_adaptive_share >= 0.0 && c->no_adaptive_share <= 1.0))
        return "no_adaptive_share must be within [0, 1]";
    if (c->boot_hi > 0.0 && !(c->boot_lo >= 0.0 && c->boot_lo <= c->boot_hi && c->boot_hi <= 3600.0))
        return "the boot delay's range needs 0 <= lo <= hi <= 3600";
    if (c->timeout_hi > 0.0 && !(c->timeout_lo > 0.0 && c->timeout_lo <= c->timeout_hi && c->timeout_hi <= 3600.0))
        return "the timeout's range needs 0 < lo <= hi <= 3600";
    if (c->init_util_hi > 0.0 &&
        !(c->init_util_lo > 0.0 && c->init_util_lo <= c->init_util_hi && c->init_util_hi <= 1.0))
        return "the initial utilization's range needs 0 < lo <= hi <= 1";
    if (c->max_requests_hi > 0 && !(c->max_requests_lo >= 1 && c->max_requests_lo <= c->max_requests_hi))
        return "max_requests' range needs 1 <= lo <= hi";
    for (int k = 0; k < SHARP_TRACE_MIXED; k++)
        if (c->kinds[k] < 0 || c->kinds[k] > SHARP_SCALING_MAX_KINDS)
            return "a trace kind's weight must be in [0, 16]";
    if (!(c->w_violation >= 0.0) || !(c->w_drop >= 0.0) || !(c->w_cost >= 0.0) || !(c->w_excess >= 0.0) || !(c->w_headroom >= 0.0) || !(c->cost_ref > 0.0) ||
        !(c->w_change >= 0.0))
        return "reward weights must not be negative (cost_ref positive)";
    return NULL;
}

static double cap(double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

void sharp_scale_obs_from(const sharp_scale_measure_t *m, double *obs)
{
    double conc = m->concurrency > 0.0 ? m->concurrency : 1.0;
    double inflight = m->inflight > 0.0 ? m->inflight : 0.0;
    /* no replica ready: the in flight of one (all of it waits) */
    obs[SHARP_SCALE_OBS_UTIL] = cap(inflight / ((m->ready > 0 ? m->ready : 1) * conc), 0.0, SHARP_SCALE_OBS_CAP);
    obs[SHARP_SCALE_OBS_UTIL_ASKED] =
        cap(inflight / ((m->replicas > 0 ? m->replicas : 1) * conc), 0.0, SHARP_SCALE_OBS_CAP);
    double change = 0.0;
    if (m->has_prev && m->rate > 0.0 && m->prev_rate > 0.0)
        change = log(m->rate / m->prev_rate);
    else if (m->has_prev && m->rate > 0.0)
        change = SHARP_SCALE_OBS_CHANGE_CAP; /* from nothing */
    else if (m->has_prev && m->prev_rate > 0.0)
        change = -SHARP_SCALE_OBS_CHANGE_CAP; /* to nothing */
    obs[SHARP_SCALE_OBS_RATE_CHANGE] = cap(change, -SHARP_SCALE_OBS_CHANGE_CAP, SHARP_SCALE_OBS_CHANGE_CAP);
    obs[SHARP_SCALE_OBS_P99] =
        m->slo_p99_s > 0.0 ? cap(m->p99_s / m->slo_p99_s, 0.0, SHARP_SCALE_OBS_CAP) : 0.0;
    obs[SHARP_SCALE_OBS_ERROR_RATE] = m->offered > 0.0 ? cap(m->errors / m->offered, 0.0, 1.0) : 0.0;
    obs[SHARP_SCALE_OBS_SHED_RATE] = m->offered > 0.0 ? cap(m->shed / m->offered, 0.0, 1.0) : 0.0;
    int asked = m->replicas > 0 ? m->replicas : 1;
    int ready = m->ready < 0 ? 0 : (m->ready > asked ? asked : m->ready);
    obs[SHARP_SCALE_OBS_BOOTING] = m->replicas > 0 ? (double)(asked - ready) / asked : 0.0;
    obs[SHARP_SCALE_OBS_INV_REPLICAS] = 1.0 / asked;
    /* at the peak (or no peak known): 0 */
    obs[SHARP_SCALE_OBS_FROM_PEAK] =
        m->rate > 0.0 && m->peak_rate > m->rate ? cap(log(m->rate / m->peak_rate), -SHARP_SCALE_OBS_CHANGE_CAP, 0.0)
        : m->peak_rate > 0.0 && !(m->rate > 0.0) ? -SHARP_SCALE_OBS_CHANGE_CAP
                                                 : 0.0;
}

void sharp_scale_peak_reset(sharp_scale_peak_t *w)
{
    w->n = w->next = 0;
}

double sharp_scale_peak_push(sharp_scale_peak_t *w, double rate, int keep)
{
    if (keep < 1)
        keep = 1;
    if (keep > SHARP_SCALE_PEAK_SLOTS)
        keep = SHARP_SCALE_PEAK_SLOTS;
    w->v[w->next] = isfinite(rate) && rate > 0.0 ? rate : 0.0;
    w->next = (w->next + 1) % SHARP_SCALE_PEAK_SLOTS;
    if (w->n < SHARP_SCALE_PEAK_SLOTS)
        w->n++;
    int have = w->n < keep ? w->n : keep;
    double peak = 0.0;
    for (int i = 1; i <= have; i++) {
        double v = w->v[(w->next - i + SHARP_SCALE_PEAK_SLOTS) % SHARP_SCALE_PEAK_SLOTS];
        if (v > peak)
            peak = v;
    }
    return peak;
}

int sharp_scale_peak_keep(double period_s)
{
    if (!(period_s > 0.0))
        return 1;
    double k = ceil(SHARP_SCALE_PEAK_WINDOW_S / period_s - 1e-9);
    return k < 1 ? 1 : (k > SHARP_SCALE_PEAK_SLOTS ? SHARP_SCALE_PEAK_SLOTS : (int)k);
}

void sharp_scaling_observe(const sharp_sim_t *s, const sharp_sim_stats_t *st, double prev_rate, bool has_prev,
                           double peak_rate, double *obs)
{
    sharp_scale_measure_t m = {
        .inflight = st->inflight,
        .concurrency = s->cfg.workers,
        .ready = sharp_sim_ready(s),
        .replicas = s->n,
        .rate = st->rate,
        .prev_rate = prev_rate,
        .has_prev = has_prev,
        .peak_rate = peak_rate,
        .p99_s = st->p99,
        .slo_p99_s = s->cfg.slo_p99_s,
        .offered = st->offered,
        .errors = st->errors,
        .shed = st->shed,
    };
    sharp_scale_obs_from(&m, obs);
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
    double floor_need = need > c->guardian.min_replicas ? need : c->guardian.min_replicas;
    double headroom = replicas > floor_need ? (replicas - floor_need) / floor_need : 0.0;
    return -(c->w_violation * viol + c->w_drop * drop + c->w_cost * replicas / c->cost_ref + c->w_excess * excess / c->cost_ref +
             c->w_headroom * headroom + (changed ? c->w_change : 0.0));
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
    sharp_hpa_t *hpa; /* cfg.train_hpa: the HPA rule advising */
    sharp_hpa_pod_t *pods; /* its view of the cluster */
    double prev_rate;
    sharp_scale_peak_t peak; /* the steps' rates of the last 5 minutes */
    double busy;   /* the last step's in flight over one replica's workers */
    bool violated; /* the last step missed the objective */
    double growth; /* the last step's offered rate over the one before's */
    bool kinds;    /* cfg.kinds names kinds: cfg.trace is set per episode */
} scaling_env_t;

/* The guardian's load from a step's stats. */
static double step_busy(const sharp_sim_t *s, const sharp_sim_stats_t *st)
{
    return st->inflight / s->cfg.workers;
}

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
                          sharp_sim_t *sim, double *obs, double *rate, sharp_scale_peak_t *peak, double *busy,
                          bool *violated, double *growth)
{
    sharp_trace_generate(tr, cfg->trace, trace_seed, cfg->reference, cfg->episode_s);
    sharp_sim_init(sim, &cfg->sim, tr, replicas > 0 ? replicas : sharp_scaling_initial_replicas(cfg, tr));
    sharp_sim_stats_t st;
    sharp_sim_step(sim, &st);
    /* no step before the first: no change to report */
    sharp_scale_peak_reset(peak);
    double top = sharp_scale_peak_push(peak, st.rate, sharp_scale_peak_keep(cfg->sim.step_s));
    sharp_scaling_observe(sim, &st, st.rate, false, top, obs);
    *rate = st.rate;
    *busy = step_busy(sim, &st);
    *violated = st.violation_s > 0;
    *growth = 1.0; /* no step before the first */
}

void sharp_scaling_draw_episode(sharp_scaling_config_t *c, bool kinds, sharp_rng_t *rng)
{
    /* one of the kinds trained on, drawn from the episodes' stream before
     * the trace's seed */
    if (kinds)
        c->trace = sharp_scaling_draw_kind(c->kinds, rng);
    /* then the objective, when it is drawn */
    if (c->slo_p99_hi > 0.0)
        c->sim.slo_p99_s = sharp_rng_range(rng, c->slo_p99_lo, c->slo_p99_hi);
    /* then whether SHARP's adaptive concurrency filter is in front */
    if (c->no_adaptive_share > 0.0)
        c->sim.adaptive_concurrency = !(sharp_rng_uniform(rng) < c->no_adaptive_share);
    /* then the boot delay, the timeout and the first count's utilization,
     * when drawn (after the others: a command without them draws as
     * before) */
    if (c->boot_hi > 0.0)
        c->sim.boot_s = sharp_rng_range(rng, c->boot_lo, c->boot_hi);
    if (c->timeout_hi > 0.0)
        c->sim.timeout_s = sharp_rng_range(rng, c->timeout_lo, c->timeout_hi);
    if (c->init_util_hi > 0.0)
        c->initial_utilization = sharp_rng_range(rng, c->init_util_lo, c->init_util_hi);
    if (c->max_requests_hi > 0)
        c->sim.max_requests =
            c->max_requests_lo + (int)sharp_rng_below(rng, (uint32_t)(c->max_requests_hi - c->max_requests_lo + 1));
}

static void env_reset(sharp_env_t *env, double *obs)
{
    scaling_env_t *e = (scaling_env_t *)env;
    release(e);
    sharp_scaling_config_t *c = &e->cfg;
    sharp_scaling_draw_episode(c, e->kinds, &e->rng);
    start_episode(c, sharp_rng_next(&e->rng), 0, &e->trace, &e->sim, obs, &e->prev_rate, &e->peak, &e->busy,
                  &e->violated, &e->growth);
    e->live = true;
    sharp_guardian_reset(e->guardian);
    if (e->hpa) {
        sharp_hpa_free(e->hpa);
        e->hpa = sharp_hpa_new(&c->hpa);
    }
    track(e, obs);
}

static void env_step(sharp_env_t *env, int action, double *obs, double *reward, bool *terminated, bool *truncated)
{
    scaling_env_t *e = (scaling_env_t *)env;
    int current = e->sim.n;
    int target = sharp_scale_action_target(action, current);
    sharp_guardian_decision_t d;
    /* In simulation every observation is fresh and present: only the
     * guardian's limits apply (the fallback never happens), with the load
     * for its capacity rules and, with train_hpa, the HPA's advice for
     * its hpa_ceiling. */
    int advice = current;
    if (e->hpa) {
        sharp_hpa_decision_t hd;
        int n = sharp_sim_hpa_pods(&e->sim, e->pods, e->cfg.sim.max_replicas);
        advice = sharp_hpa_advise(e->hpa, e->sim.t, current, e->pods, n, &hd);
    }
    sharp_guardian_obs_t go = {.has_load = true, .busy = e->busy, .violated = e->violated, .growth = e->growth};
    int applied = sharp_guardian_decide(e->guardian, e->sim.t, current, target, advice, &go, &d);
    sharp_sim_set_replicas(&e->sim, applied);
    sharp_sim_stats_t st;
    sharp_sim_step(&e->sim, &st);
    double top = sharp_scale_peak_push(&e->peak, st.rate, sharp_scale_peak_keep(e->cfg.sim.step_s));
    sharp_scaling_observe(&e->sim, &st, e->prev_rate, true, top, obs);
    e->growth = e->prev_rate > 0.0 ? st.rate / e->prev_rate : 1.0;
    e->prev_rate = st.rate;
    e->busy = step_busy(&e->sim, &st);
    e->violated = st.violation_s > 0;
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
    sharp_hpa_free(e->hpa);
    free(e->pods);
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
    if (e->cfg.train_hpa) {
        e->hpa = sharp_hpa_new(&e->cfg.hpa);
        e->pods = agent_calloc((size_t)e->cfg.sim.max_replicas, sizeof *e->pods);
    }
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
    double obs[SHARP_SCALE_OBS_N], prev_rate, busy, growth;
    bool violated;
    sharp_scale_peak_t peak_win;
    /* A fixed count is there from the start. */
    start_episode(cfg, trace_seed, ctl->kind == SHARP_CTL_FIXED ? ctl->fixed : 0, &tr, &sim, obs, &prev_rate, &peak_win,
                  &busy, &violated, &growth);

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
            sharp_guardian_obs_t go = {obs,        age,       present, .has_load = true, .busy = busy, .violated = violated,
                                       .growth = growth};
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
        double top = sharp_scale_peak_push(&peak_win, st.rate, sharp_scale_peak_keep(cfg->sim.step_s));
        sharp_scaling_observe(&sim, &st, prev_rate, true, top, obs);
        growth = prev_rate > 0.0 ? st.rate / prev_rate : 1.0;
        prev_rate = st.rate;
        busy = step_busy(&sim, &st);
        violated = st.violation_s > 0;
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

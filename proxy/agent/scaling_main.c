/* scaling_main.c: see scaling_main.h.
 *
 *   sharp-train scaling [--trace T] [--seed N] [--steps N] [--out FILE]
 *       PPO on the scaling simulator with randomized traces of kind T
 *       (default mixed), for the whole --steps budget of decisions; the
 *       policy file carries the range of every observation met in
 *       training, which the guardian holds a deployed policy to.
 *
 *   sharp-train eval-scaling --policy FILE [--trace T] [--seed N]
 *       The policy through the guardian, the HPA alone and a fixed maximum,
 *       each on the same traces (the reference scenario of T, default
 *       flash, or randomized ones with --randomized), with the SLO
 *       violation seconds, replica-seconds, scaling actions, failed and
 *       shed requests of each. */
#include "scaling_main.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy_file.h"
#include "ppo.h"
#include "scaling_env.h"
#include "train.h"

int sharp_train_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

double sharp_train_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------- training ---------------- */

/* "LO,HI" with min <= LO <= HI <= max (LO > min when open_lo). */
static int parse_range(const char *v, double min, double max, bool open_lo, double *lo, double *hi)
{
    char *end = NULL, *end2 = NULL;
    double a = v ? strtod(v, &end) : NAN, b = NAN;
    if (v && end != v && *end == ',')
        b = strtod(end + 1, &end2);
    if (!v || !end2 || end2 == end + 1 || *end2 != '\0' || !(a >= min && a <= b && b <= max) ||
        (open_lo && !(a > min)))
        return -1;
    *lo = a;
    *hi = b;
    return 0;
}

/* One number in [min, max] (> min when open_lo). */
static int parse_num(const char *v, double min, double max, bool open_lo, double *out)
{
    char *end = NULL;
    double w = v ? strtod(v, &end) : NAN;
    if (!v || end == v || *end != '\0' || !(w >= min && w <= max) || (open_lo && !(w > min)))
        return -1;
    *out = w;
    return 0;
}

/* The guardian's scale_down_window_s: seconds in [0, 3600]. */
static int parse_window(const char *v, double *out)
{
    char *end = NULL;
    double w = v ? strtod(v, &end) : NAN;
    if (!v || end == v || *end != '\0' || !(w >= 0.0 && w <= 3600.0))
        return -1;
    *out = w;
    return 0;
}

static void train_usage(FILE *f)
{
    fputs("usage: sharp-train scaling [--trace T] [--seed N] [--steps N] [--out FILE] [options]\n"
          "  --trace T    flash, diurnal, step, noisy or mixed (default mixed): the traces trained on,\n"
          "               randomized around each kind's reference scenario; a list (flash,flash,step)\n"
          "               draws one of its names per episode, so the kinds it does not name stay\n"
          "               held out\n"
          "  --seed N     training seed (default 1): the same seed gives the same weights\n"
          "  --steps N    decisions (15 s each) to train on, all environments (default 1000000)\n"
          "  --envs N     environments stepped in lockstep (default 8)\n"
          "  --cost-weight W  reward weight of 100 replicas for a step (default 0.1, as much as a step\n"
          "               that violates the objective throughout)\n"
          "  --excess-weight W  reward weight of 100 replicas above the load's need (its rate over one\n"
          "               replica's capacity) for a step (default 0)\n"
          "  --drop-weight W  reward weight of a step whose requests were all shed or failed, in\n"
          "               proportion to the share that was (default 0)\n"
          "  --headroom-weight W  reward weight of the replicas above the load's need as a share of it\n"
          "               (the need taken as at least min_replicas) for a step (default 0): the excess\n"
          "               weighed the same at every scale\n"
          "  --change-weight W  reward weight of a decision that changed the count (default 0.001)\n"
          "  --idle-up-utilization U  the guardian's idle_scale_up threshold in training (default 0.77)\n"
          "  --down-max-utilization U  the guardian's utilization_floor in training (default 0.7)\n"
          "  --down-window S  the window of the load utilization_floor judges, seconds (default 60)\n"
          "  --train-with-hpa  the HPA rule advises in training, for the guardian's hpa_ceiling (without\n"
          "               it the rule never binds in training)\n"
          "  --slo-p99-range LO,HI  each episode's objective p99 drawn from [LO, HI] s (default: the\n"
          "               simulator's 250 ms): the policy meets services fast and slow against their objective\n"
          "  --no-adaptive-share P  the share of episodes without SHARP's adaptive concurrency filter in\n"
          "               front (default 0): overload queues up to the circuit breaker and times out\n"
          "  --boot-range LO,HI  each episode's boot delay drawn from [LO, HI] s (default: the\n"
          "               simulator's 30 s): replicas that take longer, or a count applied a poll later\n"
          "  --timeout-range LO,HI  each episode's route timeout drawn from [LO, HI] s (default 1 s)\n"
          "  --initial-utilization-range LO,HI  each episode's first count at a utilization drawn from\n"
          "               [LO, HI] (default 0.7)\n"
          "  --max-requests-range LO,HI  each episode's circuit breaker max_requests drawn from [LO, HI]\n"
          "               (default 1024)\n"
          "  --growth-window S  the guardian's growth window in training, seconds (default 60)\n"
          "  --ent-coef C entropy bonus (default 0.01)\n"
          "  --out FILE   where the policy goes (default: not written)\n"
          "  --quiet      print the result only\n",
          f);
}

typedef struct {
    bool quiet;
    double start;
} progress_t;

static void on_update(void *arg, const sharp_ppo_stats_t *st)
{
    progress_t *pr = arg;
    if (pr->quiet || st->updates % 10 != 0)
        return;
    printf("steps %8lld  updates %5lld  episodes %6lld  return(last %d) %8.3f  entropy %.3f  kl %.4f  "
           "clipfrac %.3f  vloss %.4f  %.1fs\n",
           st->steps, st->updates, st->episodes, st->window, st->mean_return, st->losses.entropy,
           st->losses.approx_kl, st->losses.clipfrac, st->losses.v_loss, sharp_train_now() - pr->start);
    fflush(stdout);
}

int sharp_scaling_train_main(int argc, char **argv)
{
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    sharp_ppo_config_t pc;
    sharp_ppo_config_default(&pc);
    /* CleanRL's defaults but for more environments (8 x 256 decisions per
     * rollout, about 8.5 episodes) and a 4x learning rate: on the
     * simulator's small rewards 2.5e-4 needs about three times as many
     * episodes to get as far. */
    pc.n_envs = 8;
    pc.n_steps = 256;
    pc.lr = 1e-3;
    pc.total_steps = 1000000;
    const char *out = NULL;
    progress_t pr = {.quiet = false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--trace")) {
            /* one kind as before; a list picks among its kinds per episode */
            if (v && strchr(v, ',')) {
                if (sharp_scaling_parse_kinds(v, cfg.kinds) != 0)
                    goto bad_value;
            } else {
                if (sharp_trace_parse(v, &cfg.trace) != 0)
                    goto bad_value;
                memset(cfg.kinds, 0, sizeof cfg.kinds);
            }
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (sharp_train_parse_u64(v, UINT64_MAX, &n) != 0)
                goto bad_value;
            pc.seed = n;
            i++;
        } else if (!strcmp(a, "--steps")) {
            if (sharp_train_parse_u64(v, 1000000000000ULL, &n) != 0 || n == 0)
                goto bad_value;
            pc.total_steps = (long long)n;
            i++;
        } else if (!strcmp(a, "--envs")) {
            if (sharp_train_parse_u64(v, 256, &n) != 0 || n == 0)
                goto bad_value;
            pc.n_envs = (int)n;
            i++;
        } else if (!strcmp(a, "--cost-weight")) {
            char *end = NULL;
            double w = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end != '\0' || !(w >= 0.0 && w <= 100.0))
                goto bad_value;
            cfg.w_cost = w;
            i++;
        } else if (!strcmp(a, "--excess-weight") || !strcmp(a, "--drop-weight") || !strcmp(a, "--ent-coef") ||
                   !strcmp(a, "--headroom-weight") || !strcmp(a, "--change-weight") ||
                   !strcmp(a, "--no-adaptive-share")) {
            char *end = NULL;
            double w = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end != '\0' || !(w >= 0.0 && w <= 100.0))
                goto bad_value;
            if (!strcmp(a, "--excess-weight"))
                cfg.w_excess = w;
            else if (!strcmp(a, "--drop-weight"))
                cfg.w_drop = w;
            else if (!strcmp(a, "--headroom-weight"))
                cfg.w_headroom = w;
            else if (!strcmp(a, "--change-weight"))
                cfg.w_change = w;
            else if (!strcmp(a, "--no-adaptive-share")) {
                if (w > 1.0)
                    goto bad_value;
                cfg.no_adaptive_share = w;
            }
            else
                pc.ent_coef = w;
            i++;
        } else if (!strcmp(a, "--idle-up-utilization") || !strcmp(a, "--down-max-utilization")) {
            char *end = NULL;
            double w = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end != '\0' || !(w >= 0.0 && w <= 1.0))
                goto bad_value;
            if (!strcmp(a, "--idle-up-utilization"))
                cfg.guardian.scale_up_min_utilization = w;
            else
                cfg.guardian.scale_down_max_utilization = w;
            i++;
        } else if (!strcmp(a, "--down-window")) {
            if (parse_window(v, &cfg.guardian.scale_down_window_s) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--train-with-hpa")) {
            cfg.train_hpa = true;
        } else if (!strcmp(a, "--slo-p99-range")) {
            char *end = NULL, *end2 = NULL;
            double lo = v ? strtod(v, &end) : NAN, hi = NAN;
            if (v && end != v && *end == ',')
                hi = strtod(end + 1, &end2);
            if (!v || !end2 || end2 == end + 1 || *end2 != '\0' || !(lo > 0.0 && lo <= hi && hi <= 60.0))
                goto bad_value;
            cfg.slo_p99_lo = lo;
            cfg.slo_p99_hi = hi;
            i++;
        } else if (!strcmp(a, "--boot-range")) {
            if (parse_range(v, 0.0, 3600.0, false, &cfg.boot_lo, &cfg.boot_hi) != 0 || !(cfg.boot_hi > 0.0))
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--timeout-range")) {
            if (parse_range(v, 0.0, 3600.0, true, &cfg.timeout_lo, &cfg.timeout_hi) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--initial-utilization-range")) {
            if (parse_range(v, 0.0, 1.0, true, &cfg.init_util_lo, &cfg.init_util_hi) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--max-requests-range")) {
            double lo, hi;
            if (parse_range(v, 1.0, 1e6, false, &lo, &hi) != 0 || lo != floor(lo) || hi != floor(hi))
                goto bad_value;
            cfg.max_requests_lo = (int)lo;
            cfg.max_requests_hi = (int)hi;
            i++;
        } else if (!strcmp(a, "--growth-window")) {
            if (parse_window(v, &cfg.guardian.growth_window_s) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--out")) {
            if (!v)
                goto bad_value;
            out = v;
            i++;
        } else if (!strcmp(a, "--quiet")) {
            pr.quiet = true;
        } else {
            fprintf(stderr, "sharp-train: unknown option '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
        continue;
    bad_value:
        fprintf(stderr, "sharp-train: %s needs a valid value\n", a);
        train_usage(stderr);
        return 2;
    }
    long long rollout = (long long)pc.n_envs * pc.n_steps;
    if (pc.total_steps < rollout) {
        fprintf(stderr, "sharp-train: --steps must be at least one rollout (%lld = %d environments x %d steps)\n",
                rollout, pc.n_envs, pc.n_steps);
        return 2;
    }

    char err[512];
    sharp_scaling_factory_t f;
    sharp_scaling_factory_init(&f, &cfg);
    sharp_ppo_t *ppo = sharp_ppo_new(&pc, sharp_scaling_factory, &f, err, sizeof err);
    if (!ppo) {
        fprintf(stderr, "sharp-train: %s\n", err);
        return 1;
    }
    sharp_train_opts_t opts;
    sharp_train_opts_default(&opts);
    opts.max_steps = pc.total_steps;
    opts.eval_episodes = 0; /* no target: the whole budget */
    opts.on_update = on_update;
    opts.arg = &pr;
    pr.start = sharp_train_now();
    sharp_train_result_t res;
    sharp_train_run(ppo, sharp_scaling_factory, &f, &opts, &res);
    double secs = sharp_train_now() - pr.start;
    sharp_policy_t *p = sharp_ppo_policy(ppo);
    sharp_scaling_factory_range(&f, p);
    char kinds[64];
    printf("trained on %s traces: %lld decisions, %lld episodes, %.1fs (seed %" PRIu64
           ", cost weight %g); mean return of the last %d episodes %.3f\n",
           sharp_scaling_has_kinds(cfg.kinds) ? sharp_scaling_kinds_name(cfg.kinds, kinds, sizeof kinds) : sharp_trace_name(cfg.trace),
           res.steps, res.last.episodes, secs, pc.seed, cfg.w_cost, res.last.window, res.last.mean_return);
    if (cfg.w_excess > 0.0 || cfg.w_drop > 0.0 || pc.ent_coef != 0.01)
        printf("  excess weight %g, drop weight %g, entropy coefficient %g\n", cfg.w_excess, cfg.w_drop, pc.ent_coef);
    if (cfg.w_headroom > 0.0 || cfg.w_change != 0.001)
        printf("  headroom weight %g, change weight %g\n", cfg.w_headroom, cfg.w_change);
    if (cfg.slo_p99_hi > 0.0)
        printf("  objective p99 drawn from [%g, %g] s per episode\n", cfg.slo_p99_lo, cfg.slo_p99_hi);
    if (cfg.no_adaptive_share > 0.0)
        printf("  %g of the episodes without the adaptive concurrency filter\n", cfg.no_adaptive_share);
    if (cfg.boot_hi > 0.0)
        printf("  boot delay drawn from [%g, %g] s per episode\n", cfg.boot_lo, cfg.boot_hi);
    if (cfg.timeout_hi > 0.0)
        printf("  route timeout drawn from [%g, %g] s per episode\n", cfg.timeout_lo, cfg.timeout_hi);
    if (cfg.init_util_hi > 0.0)
        printf("  first count's utilization drawn from [%g, %g] per episode\n", cfg.init_util_lo, cfg.init_util_hi);
    if (cfg.max_requests_hi > 0)
        printf("  max_requests drawn from [%d, %d] per episode\n", cfg.max_requests_lo, cfg.max_requests_hi);
    if (cfg.guardian.growth_window_s != 60.0)
        printf("  guardian: growth window %g s\n", cfg.guardian.growth_window_s);
    printf("  guardian: idle_scale_up below %g, utilization_floor at %g over %g s%s\n",
           cfg.guardian.scale_up_min_utilization, cfg.guardian.scale_down_max_utilization,
           cfg.guardian.scale_down_window_s, cfg.train_hpa ? ", the HPA rule advising (hpa_ceiling)" : "");
    if (!pr.quiet)
        for (int i = 0; i < SHARP_SCALE_OBS_N; i++)
            printf("  trained range of %-16s [%g, %g]\n", sharp_scale_obs_name(i), p->range_lo[i],
                   p->range_hi[i]);
    int rc = 0;
    if (out) {
        if (sharp_policy_save(p, out, err, sizeof err) != 0) {
            fprintf(stderr, "sharp-train: %s\n", err);
            rc = 1;
        } else {
            printf("policy written to %s\n", out);
        }
    }
    sharp_ppo_free(ppo);
    return rc;
}

/* ---------------- evaluation ---------------- */

static void eval_usage(FILE *f)
{
    fputs("usage: sharp-train eval-scaling --policy FILE [--trace T] [--seed N] [options]\n"
          "  --policy FILE   a policy trained by sharp-train scaling\n"
          "  --trace T       flash, diurnal, step, noisy or mixed (default flash)\n"
          "  --seed N        seed of the traces (default 1)\n"
          "  --episodes N    traces to run, each from its own seed (default 1)\n"
          "  --randomized    randomized traces of the kind instead of its reference scenario\n"
          "  --fixed N       replicas of the fixed baseline (default: the maximum, 100)\n"
          "  --idle-up-utilization U  the guardian's idle_scale_up threshold (default 0.77)\n"
          "  --down-max-utilization U  the guardian's utilization_floor (default 0.7)\n"
          "  --down-window S  the window of the load utilization_floor judges, seconds (default 60)\n"
          "  --no-capacity-rules  the guardian without its utilization_floor and idle_scale_up rules\n"
          "  --no-hpa-ceiling  the guardian without its hpa_ceiling rule\n"
          "  --growth-window S  the guardian's growth window, seconds (default 60)\n"
          "  --growth-to-hpa the guardian's growth rule allows at least the HPA rule's scale-up\n"
          "  --boot-s S      the replicas' boot delay, seconds (default 30)\n"
          "  --timeout-s S   the route's timeout, seconds (default 1)\n"
          "  --initial-utilization U  the first count's utilization of the trace's first second (default 0.7)\n"
          "  --max-requests N  the circuit breaker's max_requests (default 1024)\n"
          "  --no-adaptive   no adaptive concurrency filter in front: overload queues and times out\n"
          "  --hpa-inflight  the HPA rule on requests in flight over the ready replicas' concurrency,\n"
          "                  queued ones included (SHARP's rule live) instead of CPU\n"
          "  --shadow        also run the policy with the guardian in shadow mode (acting on the HPA)\n"
          "  --log           print every guardian decision of the policy's runs\n"
          "  --timeline FILE write the first episode's steps for each controller: controller, end of the\n"
          "                  step (s), offered requests/s, replicas, ready replicas, worst p99 (ms),\n"
          "                  SLO-violation seconds of the step, shed or failed requests/s\n"
          "  --per-episode   also print each episode's figures, one line per controller:\n"
          "                  episode,<i>,<controller>,<SLO-viol-s>,<replica-s>,<actions>,<errors>,<shed>,<peak>\n",
          f);
}

typedef struct {
    const char *name;
    sharp_episode_result_t sum;
} row_t;

static void add_result(sharp_episode_result_t *a, const sharp_episode_result_t *b)
{
    a->violation_s += b->violation_s;
    a->replica_s += b->replica_s;
    a->offered += b->offered;
    a->served += b->served;
    a->errors += b->errors;
    a->shed += b->shed;
    if (b->p99_max > a->p99_max)
        a->p99_max = b->p99_max;
    a->actions += b->actions;
    a->decisions += b->decisions;
    a->fallbacks += b->fallbacks;
    a->clamps += b->clamps;
    if (b->peak_replicas > a->peak_replicas)
        a->peak_replicas = b->peak_replicas;
    a->reward += b->reward;
}

typedef struct {
    FILE *f;
    const char *name;
} timeline_t;

static void write_step(void *arg, const sharp_sim_t *s, const sharp_sim_stats_t *st)
{
    timeline_t *tl = arg;
    if (!tl->f)
        return;
    fprintf(tl->f, "\"%s\" %d %.1f %d %d %.1f %d %.1f\n", tl->name, s->t, st->rate, st->replicas, st->ready,
            st->p99 * 1000, st->violation_s, st->seconds > 0 ? (st->shed + st->errors) / st->seconds : 0.0);
}

static void log_decision(void *arg, const sharp_guardian_decision_t *d)
{
    const char *who = arg;
    char line[512];
    sharp_guardian_format(d, line, sizeof line);
    printf("  [%s] %s\n", who, line);
}

int sharp_scaling_eval_main(int argc, char **argv)
{
    sharp_scaling_config_t cfg;
    sharp_scaling_config_default(&cfg);
    cfg.trace = SHARP_TRACE_FLASH;
    cfg.reference = true;
    const char *path = NULL, *timeline = NULL;
    uint64_t seed = 1, episodes = 1;
    int fixed = cfg.guardian.max_replicas;
    bool shadow = false, log = false, per_episode = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            eval_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--policy")) {
            if (!v)
                goto bad_value;
            path = v;
            i++;
        } else if (!strcmp(a, "--trace")) {
            if (sharp_trace_parse(v, &cfg.trace) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (sharp_train_parse_u64(v, UINT64_MAX, &seed) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--episodes")) {
            if (sharp_train_parse_u64(v, 100000, &episodes) != 0 || episodes == 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--fixed")) {
            if (sharp_train_parse_u64(v, (uint64_t)cfg.sim.max_replicas, &n) != 0 || n == 0)
                goto bad_value;
            fixed = (int)n;
            i++;
        } else if (!strcmp(a, "--randomized")) {
            cfg.reference = false;
        } else if (!strcmp(a, "--idle-up-utilization") || !strcmp(a, "--down-max-utilization")) {
            char *end = NULL;
            double w = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end != '\0' || !(w >= 0.0 && w <= 1.0))
                goto bad_value;
            if (!strcmp(a, "--idle-up-utilization"))
                cfg.guardian.scale_up_min_utilization = w;
            else
                cfg.guardian.scale_down_max_utilization = w;
            i++;
        } else if (!strcmp(a, "--down-window")) {
            if (parse_window(v, &cfg.guardian.scale_down_window_s) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--no-capacity-rules")) {
            cfg.guardian.scale_down_max_utilization = 0.0;
            cfg.guardian.scale_up_min_utilization = 0.0;
        } else if (!strcmp(a, "--no-hpa-ceiling")) {
            cfg.guardian.hpa_ceiling = false;
        } else if (!strcmp(a, "--growth-window")) {
            if (parse_window(v, &cfg.guardian.growth_window_s) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--growth-to-hpa")) {
            cfg.guardian.growth_to_hpa = true;
        } else if (!strcmp(a, "--boot-s")) {
            if (parse_num(v, 0.0, 3600.0, false, &cfg.sim.boot_s) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--timeout-s")) {
            if (parse_num(v, 0.0, 3600.0, true, &cfg.sim.timeout_s) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--initial-utilization")) {
            if (parse_num(v, 0.0, 1.0, true, &cfg.initial_utilization) != 0)
                goto bad_value;
            i++;
        } else if (!strcmp(a, "--max-requests")) {
            if (sharp_train_parse_u64(v, 1000000, &n) != 0 || n == 0)
                goto bad_value;
            cfg.sim.max_requests = (int)n;
            i++;
        } else if (!strcmp(a, "--no-adaptive")) {
            cfg.sim.adaptive_concurrency = false;
        } else if (!strcmp(a, "--hpa-inflight")) {
            cfg.sim.hpa_inflight = true;
        } else if (!strcmp(a, "--shadow")) {
            shadow = true;
        } else if (!strcmp(a, "--log")) {
            log = true;
        } else if (!strcmp(a, "--timeline")) {
            if (!v)
                goto bad_value;
            timeline = v;
            i++;
        } else if (!strcmp(a, "--per-episode")) {
            per_episode = true;
        } else {
            fprintf(stderr, "sharp-train: unknown option '%s'\n", a);
            eval_usage(stderr);
            return 2;
        }
        continue;
    bad_value:
        fprintf(stderr, "sharp-train: %s needs a valid value\n", a);
        eval_usage(stderr);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "sharp-train: eval-scaling needs --policy FILE\n");
        eval_usage(stderr);
        return 2;
    }
    char err[512];
    sharp_policy_t *p = sharp_policy_load(path, err, sizeof err);
    if (!p) {
        fprintf(stderr, "sharp-train: %s\n", err);
        return 1;
    }
    if (p->obs_dim != SHARP_SCALE_OBS_N || p->n_actions != SHARP_SCALE_ACTIONS) {
        fprintf(stderr,
                "sharp-train: %s is a policy for %d observations and %d actions, the scaling simulator has %d and "
                "%d\n",
                path, p->obs_dim, p->n_actions, SHARP_SCALE_OBS_N, SHARP_SCALE_ACTIONS);
        sharp_policy_free(p);
        return 1;
    }
    if (!p->has_range)
        printf("note: %s carries no trained range: the guardian checks observations for presence, age and "
               "numbers only\n",
               path);

    sharp_controller_t ctl[4] = {
        {.kind = SHARP_CTL_AGENT, .policy = p, .log = log ? log_decision : NULL, .log_arg = "ppo+guardian"},
        {.kind = SHARP_CTL_HPA},
        {.kind = SHARP_CTL_FIXED, .fixed = fixed},
        {.kind = SHARP_CTL_AGENT,
         .policy = p,
         .shadow = true,
         .log = log ? log_decision : NULL,
         .log_arg = "shadow"},
    };
    char fixed_name[32];
    snprintf(fixed_name, sizeof fixed_name, "fixed %d", fixed);
    row_t rows[4] = {{"ppo+guardian", {0}}, {"hpa", {0}}, {fixed_name, {0}}, {"ppo shadow (hpa acts)", {0}}};
    int n_rows = shadow ? 4 : 3;
    timeline_t tl[4];
    FILE *tf = NULL;
    if (timeline) {
        tf = fopen(timeline, "w");
        if (!tf) {
            fprintf(stderr, "sharp-train: cannot create %s: %s\n", timeline, strerror(errno));
            sharp_policy_free(p);
            return 1;
        }
        fprintf(tf, "# controller t_s rate replicas ready p99_ms violation_s dropped_per_s\n");
    }
    for (int r = 0; r < n_rows; r++) {
        tl[r] = (timeline_t){tf, rows[r].name};
        ctl[r].on_step = write_step;
        ctl[r].step_arg = &tl[r];
    }

    const sharp_sim_config_t *sc = &cfg.sim;
    printf("%s traces (%s), seed %" PRIu64 ", %" PRIu64 " episode(s) of %d s; replicas of %.0f requests/s boot in "
           "%.0f s; objective p99 <= %.0f ms and <= %.1f%% shed or failed\n",
           sharp_trace_name(cfg.trace), cfg.reference ? "reference scenario" : "randomized", seed, episodes,
           cfg.episode_s, sharp_sim_capacity(sc), sc->boot_s, sc->slo_p99_s * 1000, sc->slo_error_rate * 100);
    for (uint64_t e = 0; e < episodes; e++) {
        uint64_t ts = sharp_rng_derive(seed, e);
        if (cfg.reference && cfg.trace != SHARP_TRACE_MIXED && e == 0) {
            sharp_trace_t tr;
            sharp_trace_generate(&tr, cfg.trace, ts, true, cfg.episode_s);
            printf("reference %s: base %.0f requests/s, peak %.0f, event at %.0f s, ramp %.0f s\n",
                   sharp_trace_name(tr.kind), tr.base, tr.peak, tr.event_at, tr.ramp_s);
            sharp_trace_free(&tr);
        }
        for (int r = 0; r < n_rows; r++) {
            sharp_episode_result_t one;
            if (sharp_scaling_episode(&cfg, ts, &ctl[r], &one, err, sizeof err) != 0) {
                fprintf(stderr, "sharp-train: %s\n", err);
                if (tf)
                    fclose(tf);
                sharp_policy_free(p);
                return 1;
            }
            add_result(&rows[r].sum, &one);
            tl[r].f = NULL; /* the first episode only */
            if (per_episode)
                printf("episode,%" PRIu64 ",%s,%d,%.0f,%d,%.0f,%.0f,%d\n", e, rows[r].name, one.violation_s,
                       one.replica_s, one.actions, one.errors, one.shed, one.peak_replicas);
        }
    }
    printf("%-22s %12s %12s %8s %10s %12s %9s %5s %9s %6s\n", "controller", "SLO-viol-s", "replica-s", "actions",
           "errors", "shed", "p99-max", "peak", "fallbacks", "clamps");
    for (int r = 0; r < n_rows; r++) {
        const sharp_episode_result_t *s = &rows[r].sum;
        printf("%-22s %12d %12.0f %8d %10.0f %12.0f %8.0fms %5d %9d %6d\n", rows[r].name, s->violation_s,
               s->replica_s, s->actions, s->errors, s->shed, s->p99_max * 1000, s->peak_replicas, s->fallbacks,
               s->clamps);
    }
    const sharp_episode_result_t *a = &rows[0].sum, *h = &rows[1].sum;
    printf("ppo+guardian against the hpa: SLO-violation seconds %+.1f%%, replica-seconds %+.1f%%\n",
           h->violation_s ? 100.0 * (a->violation_s - h->violation_s) / h->violation_s : 0.0,
           100.0 * (a->replica_s - h->replica_s) / h->replica_s);
    int rc = 0;
    if (tf && (ferror(tf) | fclose(tf))) {
        fprintf(stderr, "sharp-train: cannot write %s\n", timeline);
        rc = 1;
    }
    sharp_policy_free(p);
    return rc;
}

/* sharp-train: trains the scaling agent's policy with PPO and writes it as
 * a policy file; or evaluates a policy file.
 *
 *   sharp-train cartpole [--seed N] [--steps N] [--out FILE] [options]
 *   sharp-train cartpole --eval FILE [--seed N] [options]
 *   sharp-train scaling [--trace T] [--seed N] [--steps N] [--out FILE]
 *   sharp-train eval-scaling --policy FILE [--trace T] [--seed N] [options]
 *
 * CartPole: training stops when an evaluation of --eval-episodes fresh
 * episodes reaches a mean return of --target, or when the --steps budget
 * of training environment steps is spent. Exit status: 0 solved (or, with
 * --eval, the target met), 3 not solved, 1 error, 2 usage.
 *
 * Scaling (scaling_main.c): trains on the scaling simulator for the whole
 * --steps budget, and compares a policy with the HPA and a fixed maximum
 * on the same seeded traces. Exit status 0, 1 error, 2 usage. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cartpole.h"
#include "policy_file.h"
#include "scaling_main.h"
#include "ppo.h"
#include "train.h"

static void usage(FILE *f)
{
    fputs("usage: sharp-train cartpole [--seed N] [--steps N] [--out FILE] [options]\n"
          "       sharp-train cartpole --eval FILE [--seed N] [options]\n"
          "       sharp-train scaling [--trace T] [--seed N] [--steps N] [--out FILE] [options]\n"
          "       sharp-train eval-scaling --policy FILE [--trace T] [--seed N] [options]\n"
          "       (sharp-train scaling --help, sharp-train eval-scaling --help: their options)\n"
          "cartpole options:\n"
          "  --seed N           training seed (default 1): the same seed gives the same weights\n"
          "  --steps N          training environment steps at most (default 500000)\n"
          "  --out FILE         where the trained policy goes (default: not written)\n"
          "  --eval FILE        evaluate the policy in FILE instead of training\n"
          "  --eval-episodes N  episodes per evaluation (default 100)\n"
          "  --target R         mean evaluation return that counts as solved (default 475)\n"
          "  --greedy-eval      evaluate the most probable actions instead of sampling\n"
          "  --keep-going       train the whole budget even once solved\n"
          "  --quiet            print the result only\n",
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
    printf("steps %7lld  updates %5lld  episodes %6lld  return(last %d) %6.1f  entropy %.3f  kl %.4f  "
           "clipfrac %.3f  vloss %.3f  lr %.2e  %.1fs\n",
           st->steps, st->updates, st->episodes, st->window, st->mean_return, st->losses.entropy,
           st->losses.approx_kl, st->losses.clipfrac, st->losses.v_loss, st->lr, sharp_train_now() - pr->start);
    fflush(stdout);
}

static void on_eval(void *arg, long long steps, double mean, double min, bool solved)
{
    progress_t *pr = arg;
    if (pr->quiet)
        return;
    printf("evaluation at %lld steps: mean return %.2f, min %.0f%s\n", steps, mean, min, solved ? " (solved)" : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "scaling"))
        return sharp_scaling_train_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval-scaling"))
        return sharp_scaling_eval_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "cartpole") != 0) {
        fprintf(stderr, "sharp-train: unknown environment '%s' (known: cartpole, scaling, eval-scaling)\n",
                argv[1]);
        return 2;
    }
    sharp_ppo_config_t cfg;
    sharp_ppo_config_default(&cfg);
    sharp_train_opts_t opts;
    sharp_train_opts_default(&opts);
    opts.target = SHARP_CARTPOLE_SOLVED_RETURN;
    const char *out = NULL, *eval = NULL;
    progress_t pr = {.quiet = false};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (!strcmp(a, "--seed")) {
            if (sharp_train_parse_u64(v, UINT64_MAX, &n) != 0)
                goto bad_value;
            cfg.seed = n;
            i++;
        } else if (!strcmp(a, "--steps")) {
            if (sharp_train_parse_u64(v, 1000000000000ULL, &n) != 0 || n == 0)
                goto bad_value;
            opts.max_steps = (long long)n;
            cfg.total_steps = (long long)n;
            i++;
        } else if (!strcmp(a, "--eval-episodes")) {
            if (sharp_train_parse_u64(v, 1000000, &n) != 0 || n == 0)
                goto bad_value;
            opts.eval_episodes = (int)n;
            i++;
        } else if (!strcmp(a, "--target")) {
            char *end = NULL;
            double t = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end != '\0' || !isfinite(t))
                goto bad_value;
            opts.target = t;
            i++;
        } else if (!strcmp(a, "--out")) {
            if (!v)
                goto bad_value;
            out = v;
            i++;
        } else if (!strcmp(a, "--eval")) {
            if (!v)
                goto bad_value;
            eval = v;
            i++;
        } else if (!strcmp(a, "--greedy-eval")) {
            opts.greedy_eval = true;
        } else if (!strcmp(a, "--keep-going")) {
            opts.stop_when_solved = false;
        } else if (!strcmp(a, "--quiet")) {
            pr.quiet = true;
        } else {
            fprintf(stderr, "sharp-train: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        continue;
    bad_value:
        fprintf(stderr, "sharp-train: %s needs a valid value\n", a);
        usage(stderr);
        return 2;
    }

    char err[512];
    if (eval) {
        sharp_policy_t *p = sharp_policy_load(eval, err, sizeof err);
        if (!p) {
            fprintf(stderr, "sharp-train: %s\n", err);
            return 1;
        }
        sharp_env_t *env = sharp_cartpole_new(sharp_rng_derive(cfg.seed, 1000));
        if (p->obs_dim != env->obs_dim || p->n_actions != env->n_actions) {
            fprintf(stderr, "sharp-train: %s is a policy for %d observations and %d actions, cartpole has %d and %d\n",
                    eval, p->obs_dim, p->n_actions, env->obs_dim, env->n_actions);
            sharp_env_destroy(env);
            sharp_policy_free(p);
            return 1;
        }
        sharp_rng_t rng;
        sharp_rng_seed(&rng, sharp_rng_derive(cfg.seed, 1001));
        double *ret = calloc((size_t)opts.eval_episodes, sizeof *ret);
        double mean = sharp_ppo_evaluate(p, env, opts.eval_episodes, opts.greedy_eval ? NULL : &rng,
                                         opts.eval_max_len, ret, NULL);
        double mn = ret[0];
        for (int i = 1; i < opts.eval_episodes; i++)
            mn = ret[i] < mn ? ret[i] : mn;
        printf("%s: %d episodes, mean return %.2f, min %.0f: %s\n", eval, opts.eval_episodes, mean, mn,
               mean >= opts.target ? "solved" : "not solved");
        free(ret);
        sharp_env_destroy(env);
        sharp_policy_free(p);
        return mean >= opts.target ? 0 : 3;
    }

    sharp_ppo_t *ppo = sharp_ppo_new(&cfg, sharp_cartpole_factory, NULL, err, sizeof err);
    if (!ppo) {
        fprintf(stderr, "sharp-train: %s\n", err);
        return 1;
    }
    pr.start = sharp_train_now();
    opts.on_update = on_update;
    opts.on_eval = on_eval;
    opts.arg = &pr;
    sharp_train_result_t res;
    sharp_train_run(ppo, sharp_cartpole_factory, NULL, &opts, &res);
    double secs = sharp_train_now() - pr.start;
    if (res.solved)
        printf("solved: %d evaluation episodes averaged %.2f >= %.0f at %lld training steps (%.1fs, seed %" PRIu64
               ")\n",
               opts.eval_episodes, res.eval_mean, opts.target, res.solved_at, secs, cfg.seed);
    else
        printf("not solved within %lld training steps (%.1fs, seed %" PRIu64
               "): last training return %.1f, last evaluation %.2f\n",
               res.steps, secs, cfg.seed, res.last.mean_return, res.evaluations ? res.eval_mean : 0.0);
    int rc = res.solved ? 0 : 3;
    if (out) {
        if (sharp_policy_save(sharp_ppo_policy(ppo), out, err, sizeof err) != 0) {
            fprintf(stderr, "sharp-train: %s\n", err);
            rc = 1;
        } else {
            printf("policy written to %s\n", out);
        }
    }
    sharp_ppo_free(ppo);
    return rc;
}

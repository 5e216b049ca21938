/* train.h: a training run to a target: PPO iterations within a budget of
 * environment steps, with evaluations of the current policy on fresh
 * episodes to decide when the task is solved. The `sharp-train` command and
 * the tests drive training through it. */
#ifndef SHARP_AGENT_TRAIN_H
#define SHARP_AGENT_TRAIN_H

#include <stdbool.h>

#include "env.h"
#include "ppo.h"

typedef struct {
    long long max_steps;  /* training environment steps at most */
    int eval_episodes;    /* consecutive episodes an evaluation runs */
    double target;        /* their mean return that counts as solved */
    bool greedy_eval;     /* evaluate the most probable actions, not samples */
    long eval_max_len;    /* an evaluation episode is cut after this many steps */
    /* An evaluation runs once the mean return of the last trigger_window
     * training episodes reaches the target, and at most every eval_gap
     * updates (evaluations are cheap but not free). */
    int trigger_window;
    int eval_gap;
    bool stop_when_solved;
    void (*on_update)(void *arg, const sharp_ppo_stats_t *st);
    void (*on_eval)(void *arg, long long steps, double mean, double min, bool solved);
    void *arg;
} sharp_train_opts_t;

typedef struct {
    bool solved;
    long long solved_at;  /* training steps when an evaluation first met the target */
    long long steps;      /* training steps taken */
    int evaluations;
    long long eval_steps; /* environment steps the evaluations took (not training) */
    double eval_mean, eval_min; /* of the last evaluation */
    sharp_ppo_stats_t last;
} sharp_train_result_t;

/* 100 sampled episodes against 475 within 500k steps, stopping when solved. */
void sharp_train_opts_default(sharp_train_opts_t *o);
/* Evaluation environments come from make_env (index -1) with seeds of their
 * own, so evaluations never change the course of training. */
void sharp_train_run(sharp_ppo_t *ppo, sharp_env_factory_t make_env, void *env_arg, const sharp_train_opts_t *o,
                     sharp_train_result_t *res);

#endif

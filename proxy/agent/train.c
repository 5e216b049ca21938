/* train.c: see train.h. */
#include "train.h"

#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

#define STREAM_EVAL_ENV 4
#define STREAM_EVAL_ACTIONS 5

void sharp_train_opts_default(sharp_train_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_steps = 500000;
    o->eval_episodes = 100;
    o->target = 475.0;
    o->greedy_eval = false;
    o->eval_max_len = 100000;
    o->trigger_window = 20;
    o->eval_gap = 5;
    o->stop_when_solved = true;
}

void sharp_train_run(sharp_ppo_t *ppo, sharp_env_factory_t make_env, void *env_arg, const sharp_train_opts_t *o,
                     sharp_train_result_t *res)
{
    memset(res, 0, sizeof *res);
    double *returns = agent_calloc((size_t)(o->eval_episodes > 0 ? o->eval_episodes : 1), sizeof *returns);
    long long last_eval = -1000000;
    sharp_ppo_stats_t st;
    memset(&st, 0, sizeof st);
    const sharp_ppo_config_t *cfg = sharp_ppo_config(ppo);
    long long rollout = (long long)cfg->n_envs * cfg->n_steps;
    /* The budget counts whole rollouts: one that would pass it is not
     * started. */
    while (st.steps + rollout <= o->max_steps) {
        sharp_ppo_iterate(ppo, &st);
        res->steps = st.steps;
        res->last = st;
        if (o->on_update)
            o->on_update(o->arg, &st);
        if (o->eval_episodes <= 0 || st.updates - last_eval < o->eval_gap ||
            st.episodes < o->trigger_window || sharp_ppo_recent_return(ppo, o->trigger_window) < o->target)
            continue;
        last_eval = st.updates;
        /* The same fresh episodes for every evaluation: results compare. */
        sharp_env_t *env = make_env(env_arg, -1, sharp_rng_derive(cfg->seed, STREAM_EVAL_ENV));
        if (!env)
            break;
        sharp_rng_t rng;
        sharp_rng_seed(&rng, sharp_rng_derive(cfg->seed, STREAM_EVAL_ACTIONS));
        double mean = sharp_ppo_evaluate(sharp_ppo_policy(ppo), env, o->eval_episodes,
                                         o->greedy_eval ? NULL : &rng, o->eval_max_len, returns, &res->eval_steps);
        sharp_env_destroy(env);
        double mn = returns[0];
        for (int i = 1; i < o->eval_episodes; i++)
            if (returns[i] < mn)
                mn = returns[i];
        res->evaluations++;
        res->eval_mean = mean;
        res->eval_min = mn;
        bool solved = mean >= o->target;
        if (o->on_eval)
            o->on_eval(o->arg, st.steps, mean, mn, solved);
        if (solved && !res->solved) {
            res->solved = true;
            res->solved_at = st.steps;
        }
        if (solved && o->stop_when_solved)
            break;
    }
    free(returns);
}

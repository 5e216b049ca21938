/* ppo.h: Proximal Policy Optimization (Schulman et al. 2017) for discrete
 * actions, in the form of the reference implementations (OpenAI baselines'
 * ppo2, CleanRL's ppo.py):
 *
 *   - n_envs environments stepped in lockstep for n_steps each: a rollout of
 *     n_envs * n_steps transitions with the actions' log-probabilities and
 *     the critic's values at collection time;
 *   - advantages by GAE(gamma, lambda); a time-limit truncation is
 *     bootstrapped with the value of the state it cut off;
 *   - n_epochs passes over the rollout in n_minibatches shuffled
 *     minibatches, each one Adam step on
 *       L = mean(max(-A r, -A clip(r, 1-eps, 1+eps)))       clipped surrogate
 *           + vf_coef * mean(0.5 max((V-R)^2, (Vclip-R)^2))  (clipped) value loss
 *           - ent_coef * mean(H(pi))                          entropy bonus
 *     with r = pi(a|s) / pi_old(a|s), advantages normalized per minibatch and
 *     the gradient's global norm clipped to max_grad_norm;
 *   - the learning rate annealed linearly to 0 over total_steps.
 *
 * Single-threaded and deterministic: the same config (seed included) and
 * environments give bit-identical weights. */
#ifndef SHARP_AGENT_PPO_H
#define SHARP_AGENT_PPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"
#include "policy.h"

typedef struct {
    uint64_t seed;
    int n_envs;        /* environments stepped in lockstep */
    int n_steps;       /* steps per environment per rollout */
    int n_minibatches; /* per epoch; must divide n_envs * n_steps */
    int n_epochs;
    int n_hidden;
    int hidden[SHARP_POLICY_MAX_HIDDEN];
    double lr;
    double adam_eps;
    double gamma, gae_lambda;
    double clip_coef;
    double ent_coef, vf_coef;
    double max_grad_norm; /* <= 0: no clipping */
    bool anneal_lr;
    bool norm_adv;
    bool clip_vloss;
    bool norm_obs;
    double obs_clip;
    long long total_steps; /* horizon of the learning-rate schedule */
} sharp_ppo_config_t;

/* CleanRL's ppo.py defaults (4 envs x 128 steps, 4 minibatches, 4 epochs,
 * lr 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2, ent 0.01, vf 0.5,
 * max grad norm 0.5, two hidden layers of 64) plus observation
 * normalization, over 500k steps. */
void sharp_ppo_config_default(sharp_ppo_config_t *c);
/* NULL if the config is usable, else what is wrong with it. */
const char *sharp_ppo_config_check(const sharp_ppo_config_t *c);

typedef struct {
    double loss;
    double pg_loss, v_loss, entropy;
    double approx_kl; /* mean of (r - 1) - log r */
    double clipfrac;  /* share of rows with |r - 1| > clip */
} sharp_ppo_losses_t;

#define SHARP_PPO_RETURN_WINDOW 100

typedef struct {
    long long steps; /* environment steps so far, all environments */
    long long updates;
    long long episodes; /* finished training episodes */
    double mean_return; /* over the last `window` finished episodes */
    int window;         /* <= SHARP_PPO_RETURN_WINDOW */
    double lr;          /* of the last update */
    sharp_ppo_losses_t losses; /* means over the last update's minibatches */
} sharp_ppo_stats_t;

typedef struct sharp_ppo sharp_ppo_t;

/* Makes cfg->n_envs environments with make_env and a freshly initialized
 * policy. NULL with a message in err if the config or the environments do
 * not fit. */
sharp_ppo_t *sharp_ppo_new(const sharp_ppo_config_t *cfg, sharp_env_factory_t make_env, void *env_arg, char *err,
                           size_t errlen);
void sharp_ppo_free(sharp_ppo_t *ppo);
/* One rollout and the update on it. */
void sharp_ppo_iterate(sharp_ppo_t *ppo, sharp_ppo_stats_t *stats);
/* The policy being trained (owned by ppo). */
sharp_policy_t *sharp_ppo_policy(sharp_ppo_t *ppo);
const sharp_ppo_config_t *sharp_ppo_config(const sharp_ppo_t *ppo);
/* Mean of the last `n` finished training episodes' returns (n clamped to
 * what is known); 0 when none finished. */
double sharp_ppo_recent_return(const sharp_ppo_t *ppo, int n);

/* ---- Building blocks, public for the tests. ---- */

/* GAE over a rollout of T steps of N environments (row t*N + i). dones[k]:
 * the episode ended with transition k (the next value is not used);
 * last_values[i]: the value of environment i's observation after the
 * rollout. Writes advantages and returns (advantage + value). */
void sharp_gae(int T, int N, const double *rewards, const double *values, const unsigned char *dones,
               const double *last_values, double gamma, double lambda, double *adv, double *returns);

/* Scratch for losses over up to `cap` rows. */
typedef struct {
    int cap;
    sharp_mlp_cache_t actor, critic;
    double *dlogits, *dvalues, *probs, *logp;
} sharp_ppo_work_t;

void sharp_ppo_work_init(sharp_ppo_work_t *w, const sharp_policy_t *p, int cap);
void sharp_ppo_work_free(sharp_ppo_work_t *w);

typedef struct {
    int rows;
    const double *obs; /* rows x obs_dim, as the networks see them */
    const int *actions;
    const double *old_logp;
    const double *adv; /* normalized already if that is wanted */
    const double *returns;
    const double *old_values;
} sharp_ppo_batch_t;

/* The PPO loss on a minibatch (clip_coef, ent_coef, vf_coef, clip_vloss
 * from cfg). With `grad`, p->grads is overwritten with its gradient. */
double sharp_ppo_loss(sharp_policy_t *p, sharp_ppo_work_t *w, const sharp_ppo_config_t *cfg,
                      const sharp_ppo_batch_t *b, bool grad, sharp_ppo_losses_t *out);

/* Runs `episodes` episodes of p on env, actions drawn with rng (or the most
 * probable ones when rng is NULL), each cut after max_len steps if it has
 * not ended by then. Returns the mean return; each episode's return goes to
 * returns[] when not NULL; the steps taken are added to *steps when not
 * NULL. */
double sharp_ppo_evaluate(sharp_policy_t *p, sharp_env_t *env, int episodes, sharp_rng_t *rng, long max_len,
                          double *returns, long long *steps);

#endif

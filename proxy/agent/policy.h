/* policy.h: the actor-critic the scaling agent trains and deploys.
 *
 * Two MLPs of the same hidden shape over the (normalized) observation: the
 * actor's outputs are the logits of a categorical distribution over the
 * discrete actions, the critic's single output estimates the state's value.
 * Separate networks rather than a shared trunk: the value loss then cannot
 * pull the policy's features around, which on small control tasks is what
 * makes PPO robust without tuning the loss weights. Their parameters are one
 * flat vector (actor first), and the observation normalizer's statistics
 * belong to the policy: weights without them would see different inputs. */
#ifndef SHARP_AGENT_POLICY_H
#define SHARP_AGENT_POLICY_H

#include <stdbool.h>

#include "mlp.h"
#include "normalizer.h"
#include "rng.h"

#define SHARP_POLICY_MAX_HIDDEN (SHARP_MLP_MAX_LAYERS - 1)
#define SHARP_POLICY_MAX_ACTIONS 1024
#define SHARP_POLICY_MAX_OBS 1024

typedef struct {
    int obs_dim, n_actions, n_hidden;
    int hidden[SHARP_POLICY_MAX_HIDDEN];
    sharp_mlp_t actor, critic;
    size_t n_params;
    double *params, *grads; /* actor's then critic's */
    bool norm_obs;          /* observations go through `norm` */
    sharp_normalizer_t norm;
    /* The range of each raw observation met in training (lo <= hi), when
     * has_range: outside it the policy's answer is extrapolation, which
     * the scaling guardian does not act on (guardian.h). */
    bool has_range;
    double *range_lo, *range_hi;
    /* one-observation scratch for act / value */
    sharp_mlp_cache_t actor1, critic1;
    double *obs1, *probs1;
} sharp_policy_t;

/* A policy with zero weights (see sharp_policy_init_weights); NULL if a
 * dimension is out of bounds. */
sharp_policy_t *sharp_policy_new(int obs_dim, int n_actions, const int *hidden, int n_hidden, bool norm_obs,
                                 double obs_clip);
void sharp_policy_free(sharp_policy_t *p);
/* Orthogonal initialization: gain sqrt(2) for hidden layers, 0.01 for the
 * actor's output (near-uniform initial policy), 1 for the critic's. */
void sharp_policy_init_weights(sharp_policy_t *p, sharp_rng_t *rng);

/* What the networks see: the normalized (and clipped) observation, or the
 * observation itself without normalization. */
void sharp_policy_prepare_obs(const sharp_policy_t *p, const double *obs, double *out);
/* An action for a raw observation: drawn from the policy with `rng`, or the
 * most probable one when rng is NULL. */
int sharp_policy_act(sharp_policy_t *p, const double *obs, sharp_rng_t *rng);
/* The critic's value of a raw observation. */
double sharp_policy_value(sharp_policy_t *p, const double *obs);

/* Softmax of n logits, as probabilities and log-probabilities (either may
 * be NULL), computed stably. */
void sharp_softmax(const double *logits, int n, double *probs, double *logp);

#endif

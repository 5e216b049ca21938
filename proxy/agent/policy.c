/* policy.c: see policy.h. */
#include "policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

sharp_policy_t *sharp_policy_new(int obs_dim, int n_actions, const int *hidden, int n_hidden, bool norm_obs,
                                 double obs_clip)
{
    if (obs_dim < 1 || obs_dim > SHARP_POLICY_MAX_OBS || n_actions < 2 || n_actions > SHARP_POLICY_MAX_ACTIONS ||
        n_hidden < 1 || n_hidden > SHARP_POLICY_MAX_HIDDEN || !(obs_clip > 0.0))
        return NULL;
    int sizes[SHARP_MLP_MAX_LAYERS + 1];
    sizes[0] = obs_dim;
    for (int i = 0; i < n_hidden; i++)
        sizes[i + 1] = hidden[i];
    sharp_policy_t *p = agent_calloc(1, sizeof *p);
    sizes[n_hidden + 1] = n_actions;
    if (sharp_mlp_shape(&p->actor, sizes, n_hidden + 1) != 0) {
        free(p);
        return NULL;
    }
    sizes[n_hidden + 1] = 1;
    if (sharp_mlp_shape(&p->critic, sizes, n_hidden + 1) != 0) {
        free(p);
        return NULL;
    }
    p->obs_dim = obs_dim;
    p->n_actions = n_actions;
    p->n_hidden = n_hidden;
    memcpy(p->hidden, hidden, (size_t)n_hidden * sizeof *hidden);
    p->n_params = p->actor.n_params + p->critic.n_params;
    p->params = agent_calloc(p->n_params, sizeof *p->params);
    p->grads = agent_calloc(p->n_params, sizeof *p->grads);
    sharp_mlp_bind(&p->actor, p->params, p->grads);
    sharp_mlp_bind(&p->critic, p->params + p->actor.n_params, p->grads + p->actor.n_params);
    p->norm_obs = norm_obs;
    sharp_normalizer_init(&p->norm, obs_dim, obs_clip);
    sharp_mlp_cache_init(&p->actor1, &p->actor, 1);
    sharp_mlp_cache_init(&p->critic1, &p->critic, 1);
    p->range_lo = agent_calloc((size_t)obs_dim, sizeof *p->range_lo);
    p->range_hi = agent_calloc((size_t)obs_dim, sizeof *p->range_hi);
    p->obs1 = agent_calloc((size_t)obs_dim, sizeof *p->obs1);
    p->probs1 = agent_calloc((size_t)n_actions, sizeof *p->probs1);
    return p;
}

void sharp_policy_free(sharp_policy_t *p)
{
    if (!p)
        return;
    free(p->params);
    free(p->grads);
    sharp_normalizer_free(&p->norm);
    sharp_mlp_cache_free(&p->actor1);
    sharp_mlp_cache_free(&p->critic1);
    free(p->range_lo);
    free(p->range_hi);
    free(p->obs1);
    free(p->probs1);
    free(p);
}

void sharp_policy_init_weights(sharp_policy_t *p, sharp_rng_t *rng)
{
    sharp_mlp_init_orthogonal(&p->actor, rng, sqrt(2.0), 0.01);
    sharp_mlp_init_orthogonal(&p->critic, rng, sqrt(2.0), 1.0);
}

void sharp_policy_prepare_obs(const sharp_policy_t *p, const double *obs, double *out)
{
    if (p->norm_obs)
        sharp_normalizer_apply(&p->norm, obs, out);
    else if (out != obs)
        memcpy(out, obs, (size_t)p->obs_dim * sizeof *out);
}

void sharp_softmax(const double *logits, int n, double *probs, double *logp)
{
    double mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp(logits[i] - mx);
    double lse = mx + log(sum);
    for (int i = 0; i < n; i++) {
        double lp = logits[i] - lse;
        if (logp)
            logp[i] = lp;
        if (probs)
            probs[i] = exp(lp);
    }
}

int sharp_policy_act(sharp_policy_t *p, const double *obs, sharp_rng_t *rng)
{
    sharp_policy_prepare_obs(p, obs, p->obs1);
    const double *logits = sharp_mlp_forward(&p->actor, &p->actor1, p->obs1, 1);
    if (!rng) {
        int best = 0;
        for (int a = 1; a < p->n_actions; a++)
            if (logits[a] > logits[best])
                best = a;
        return best;
    }
    sharp_softmax(logits, p->n_actions, p->probs1, NULL);
    return sharp_rng_categorical(rng, p->probs1, p->n_actions);
}

double sharp_policy_value(sharp_policy_t *p, const double *obs)
{
    sharp_policy_prepare_obs(p, obs, p->obs1);
    return sharp_mlp_forward(&p->critic, &p->critic1, p->obs1, 1)[0];
}

/* ppo.c: see ppo.h. */
#include "ppo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adam.h"
#include "agent_util.h"

/* Independent random streams of one training seed. */
enum {
    STREAM_INIT = 1,    /* weight initialization */
    STREAM_ACTIONS = 2, /* action sampling during rollouts */
    STREAM_SHUFFLE = 3, /* minibatch order */
    STREAM_ENVS = 16,   /* + environment index */
};

struct sharp_ppo {
    sharp_ppo_config_t cfg;
    sharp_policy_t *policy;
    sharp_adam_t adam;
    sharp_rng_t rng_actions, rng_shuffle;
    int N, T, D, A, batch, mb;
    long long num_updates; /* of the learning-rate schedule */

    sharp_env_t **envs;
    double *raw;      /* N x D, the environments' current observations */
    double *cur;      /* N x D, the same as the networks see them */
    double *ep_ret;   /* N, return so far of each running episode */

    /* the rollout, row t*N + i */
    double *obs;
    int *actions;
    double *logp, *values, *rewards, *adv, *returns;
    unsigned char *dones;
    double *last_values;

    /* forward passes over the N environments during the rollout */
    sharp_mlp_cache_t actorN, criticN;
    double *probsN, *logpN;

    /* one minibatch, gathered */
    int *perm;
    double *mb_obs, *mb_logp, *mb_adv, *mb_ret, *mb_val;
    int *mb_act;
    sharp_ppo_work_t work;

    double recent[SHARP_PPO_RETURN_WINDOW];
    long long episodes;
    long long steps, updates;
};

void sharp_ppo_config_default(sharp_ppo_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->seed = 1;
    c->n_envs = 4;
    c->n_steps = 128;
    c->n_minibatches = 4;
    c->n_epochs = 4;
    c->n_hidden = 2;
    c->hidden[0] = 64;
    c->hidden[1] = 64;
    c->lr = 2.5e-4;
    c->adam_eps = 1e-5;
    c->gamma = 0.99;
    c->gae_lambda = 0.95;
    c->clip_coef = 0.2;
    c->ent_coef = 0.01;
    c->vf_coef = 0.5;
    c->max_grad_norm = 0.5;
    c->anneal_lr = true;
    c->norm_adv = true;
    c->clip_vloss = true;
    c->norm_obs = true;
    c->obs_clip = 10.0;
    c->total_steps = 500000;
}

const char *sharp_ppo_config_check(const sharp_ppo_config_t *c)
{
    if (c->n_envs < 1 || c->n_envs > 4096)
        return "n_envs must be in [1, 4096]";
    if (c->n_steps < 1 || c->n_steps > 1 << 20)
        return "n_steps must be in [1, 2^20]";
    if ((long long)c->n_envs * c->n_steps > 1 << 24)
        return "n_envs * n_steps must be at most 2^24";
    if (c->n_minibatches < 1 || (c->n_envs * c->n_steps) % c->n_minibatches != 0)
        return "n_minibatches must divide n_envs * n_steps";
    if (c->n_epochs < 1)
        return "n_epochs must be positive";
    if (c->n_hidden < 1 || c->n_hidden > SHARP_POLICY_MAX_HIDDEN)
        return "n_hidden must be in [1, 3]";
    for (int i = 0; i < c->n_hidden; i++)
        if (c->hidden[i] < 1 || c->hidden[i] > SHARP_MLP_MAX_WIDTH)
            return "hidden layer widths must be in [1, 4096]";
    if (!(c->lr > 0.0) || !(c->adam_eps > 0.0))
        return "lr and adam_eps must be positive";
    if (!(c->gamma >= 0.0 && c->gamma <= 1.0) || !(c->gae_lambda >= 0.0 && c->gae_lambda <= 1.0))
        return "gamma and gae_lambda must be in [0, 1]";
    if (!(c->clip_coef > 0.0))
        return "clip_coef must be positive";
    if (!(c->ent_coef >= 0.0) || !(c->vf_coef >= 0.0))
        return "ent_coef and vf_coef must not be negative";
    if (!(c->obs_clip > 0.0))
        return "obs_clip must be positive";
    if (c->total_steps < 1)
        return "total_steps must be positive";
    return NULL;
}

void sharp_gae(int T, int N, const double *rewards, const double *values, const unsigned char *dones,
               const double *last_values, double gamma, double lambda, double *adv, double *returns)
{
    for (int i = 0; i < N; i++) {
        double next_adv = 0.0;
        double next_value = last_values[i];
        for (int t = T - 1; t >= 0; t--) {
            int k = t * N + i;
            double live = dones[k] ? 0.0 : 1.0;
            double delta = rewards[k] + gamma * next_value * live - values[k];
            next_adv = delta + gamma * lambda * live * next_adv;
            adv[k] = next_adv;
            returns[k] = next_adv + values[k];
            next_value = values[k];
        }
    }
}

void sharp_ppo_work_init(sharp_ppo_work_t *w, const sharp_policy_t *p, int cap)
{
    w->cap = cap;
    sharp_mlp_cache_init(&w->actor, &p->actor, cap);
    sharp_mlp_cache_init(&w->critic, &p->critic, cap);
    w->dlogits = agent_calloc((size_t)cap * p->n_actions, sizeof(double));
    w->dvalues = agent_calloc((size_t)cap, sizeof(double));
    w->probs = agent_calloc((size_t)cap * p->n_actions, sizeof(double));
    w->logp = agent_calloc((size_t)cap * p->n_actions, sizeof(double));
}

void sharp_ppo_work_free(sharp_ppo_work_t *w)
{
    sharp_mlp_cache_free(&w->actor);
    sharp_mlp_cache_free(&w->critic);
    free(w->dlogits);
    free(w->dvalues);
    free(w->probs);
    free(w->logp);
    memset(w, 0, sizeof *w);
}

double sharp_ppo_loss(sharp_policy_t *p, sharp_ppo_work_t *w, const sharp_ppo_config_t *cfg,
                      const sharp_ppo_batch_t *b, bool grad, sharp_ppo_losses_t *out)
{
    const int B = b->rows, A = p->n_actions;
    const double eps = cfg->clip_coef, inv_b = 1.0 / B;
    const double *logits = sharp_mlp_forward(&p->actor, &w->actor, b->obs, B);
    const double *v = sharp_mlp_forward(&p->critic, &w->critic, b->obs, B);
    double pg_sum = 0.0, ent_sum = 0.0, v_sum = 0.0, kl_sum = 0.0, clipped = 0.0;

    for (int r = 0; r < B; r++) {
        double *pr = w->probs + (size_t)r * A, *lp = w->logp + (size_t)r * A;
        sharp_softmax(logits + (size_t)r * A, A, pr, lp);
        int a = b->actions[r];
        double logratio = lp[a] - b->old_logp[r];
        double ratio = exp(logratio);
        kl_sum += (ratio - 1.0) - logratio;
        if (fabs(ratio - 1.0) > eps)
            clipped += 1.0;
        double adv = b->adv[r];
        double rc = ratio < 1.0 - eps ? 1.0 - eps : (ratio > 1.0 + eps ? 1.0 + eps : ratio);
        double u1 = -adv * ratio, u2 = -adv * rc;
        pg_sum += u1 >= u2 ? u1 : u2;
        /* d(pg)/d(log pi(a)): through the unclipped branch when it is the
         * larger one; the clipped branch is constant in the parameters. */
        double g_lp = u1 >= u2 ? -adv * ratio : 0.0;
        double h = 0.0;
        for (int j = 0; j < A; j++)
            h -= pr[j] * lp[j];
        ent_sum += h;
        if (grad) {
            /* d log pi(a)/dz_j = [j == a] - p_j; dH/dz_j = -p_j (log p_j + H) */
            double *dz = w->dlogits + (size_t)r * A;
            for (int j = 0; j < A; j++) {
                double dlp = (j == a ? 1.0 : 0.0) - pr[j];
                dz[j] = inv_b * (g_lp * dlp + cfg->ent_coef * pr[j] * (lp[j] + h));
            }
        }

        double ret = b->returns[r];
        double d1 = v[r] - ret, dv;
        if (cfg->clip_vloss) {
            double ov = b->old_values[r];
            double dclip = v[r] - ov;
            dclip = dclip < -eps ? -eps : (dclip > eps ? eps : dclip);
            double d2 = ov + dclip - ret;
            if (d1 * d1 >= d2 * d2) {
                v_sum += 0.5 * d1 * d1;
                dv = d1;
            } else {
                v_sum += 0.5 * d2 * d2;
                dv = 0.0; /* the clipped value does not move with v here */
            }
        } else {
            v_sum += 0.5 * d1 * d1;
            dv = d1;
        }
        if (grad)
            w->dvalues[r] = inv_b * cfg->vf_coef * dv;
    }

    double pg = pg_sum * inv_b, ent = ent_sum * inv_b, vl = v_sum * inv_b;
    double loss = pg - cfg->ent_coef * ent + cfg->vf_coef * vl;
    if (out) {
        out->loss = loss;
        out->pg_loss = pg;
        out->v_loss = vl;
        out->entropy = ent;
        out->approx_kl = kl_sum * inv_b;
        out->clipfrac = clipped * inv_b;
    }
    if (grad) {
        memset(p->grads, 0, p->n_params * sizeof *p->grads);
        sharp_mlp_backward(&p->actor, &w->actor, w->dlogits, B);
        sharp_mlp_backward(&p->critic, &w->critic, w->dvalues, B);
    }
    return loss;
}

double sharp_ppo_evaluate(sharp_policy_t *p, sharp_env_t *env, int episodes, sharp_rng_t *rng, long max_len,
                          double *returns, long long *steps)
{
    double *obs = agent_calloc((size_t)env->obs_dim, sizeof *obs);
    double sum = 0.0;
    for (int e = 0; e < episodes; e++) {
        sharp_env_reset(env, obs);
        double ret = 0.0;
        for (long n = 0; n < max_len; n++) {
            double r;
            bool term, trunc;
            sharp_env_step(env, sharp_policy_act(p, obs, rng), obs, &r, &term, &trunc);
            ret += r;
            if (steps)
                (*steps)++;
            if (term || trunc)
                break;
        }
        if (returns)
            returns[e] = ret;
        sum += ret;
    }
    free(obs);
    return episodes > 0 ? sum / episodes : 0.0;
}

sharp_policy_t *sharp_ppo_policy(sharp_ppo_t *ppo)
{
    return ppo->policy;
}

const sharp_ppo_config_t *sharp_ppo_config(const sharp_ppo_t *ppo)
{
    return &ppo->cfg;
}

double sharp_ppo_recent_return(const sharp_ppo_t *ppo, int n)
{
    long long have = ppo->episodes < SHARP_PPO_RETURN_WINDOW ? ppo->episodes : SHARP_PPO_RETURN_WINDOW;
    if (n > have)
        n = (int)have;
    if (n <= 0)
        return 0.0;
    double s = 0.0;
    for (int k = 0; k < n; k++)
        s += ppo->recent[(ppo->episodes - 1 - k) % SHARP_PPO_RETURN_WINDOW];
    return s / n;
}

void sharp_ppo_free(sharp_ppo_t *ppo)
{
    if (!ppo)
        return;
    if (ppo->envs)
        for (int i = 0; i < ppo->N; i++)
            sharp_env_destroy(ppo->envs[i]);
    free(ppo->envs);
    sharp_policy_free(ppo->policy);
    sharp_adam_free(&ppo->adam);
    free(ppo->raw);
    free(ppo->cur);
    free(ppo->ep_ret);
    free(ppo->obs);
    free(ppo->actions);
    free(ppo->logp);
    free(ppo->values);
    free(ppo->rewards);
    free(ppo->adv);
    free(ppo->returns);
    free(ppo->dones);
    free(ppo->last_values);
    sharp_mlp_cache_free(&ppo->actorN);
    sharp_mlp_cache_free(&ppo->criticN);
    free(ppo->probsN);
    free(ppo->logpN);
    free(ppo->perm);
    free(ppo->mb_obs);
    free(ppo->mb_logp);
    free(ppo->mb_adv);
    free(ppo->mb_ret);
    free(ppo->mb_val);
    free(ppo->mb_act);
    sharp_ppo_work_free(&ppo->work);
    free(ppo);
}

/* The environments' current observations as the networks see them. */
static void observe_all(sharp_ppo_t *ppo)
{
    sharp_policy_t *p = ppo->policy;
    if (p->norm_obs)
        sharp_normalizer_update(&p->norm, ppo->raw, ppo->N);
    for (int i = 0; i < ppo->N; i++)
        sharp_policy_prepare_obs(p, ppo->raw + (size_t)i * ppo->D, ppo->cur + (size_t)i * ppo->D);
}

sharp_ppo_t *sharp_ppo_new(const sharp_ppo_config_t *cfg, sharp_env_factory_t make_env, void *env_arg, char *err,
                           size_t errlen)
{
    const char *bad = sharp_ppo_config_check(cfg);
    if (bad) {
        snprintf(err, errlen, "%s", bad);
        return NULL;
    }
    sharp_ppo_t *ppo = agent_calloc(1, sizeof *ppo);
    ppo->cfg = *cfg;
    ppo->N = cfg->n_envs;
    ppo->T = cfg->n_steps;
    ppo->batch = ppo->N * ppo->T;
    ppo->mb = ppo->batch / cfg->n_minibatches;
    ppo->num_updates = cfg->total_steps / ppo->batch;
    if (ppo->num_updates < 1)
        ppo->num_updates = 1;
    ppo->envs = agent_calloc((size_t)ppo->N, sizeof *ppo->envs);
    for (int i = 0; i < ppo->N; i++) {
        ppo->envs[i] = make_env(env_arg, i, sharp_rng_derive(cfg->seed, STREAM_ENVS + (uint64_t)i));
        if (!ppo->envs[i]) {
            snprintf(err, errlen, "cannot create environment %d", i);
            sharp_ppo_free(ppo);
            return NULL;
        }
        if (ppo->envs[i]->obs_dim != ppo->envs[0]->obs_dim || ppo->envs[i]->n_actions != ppo->envs[0]->n_actions) {
            snprintf(err, errlen, "environment %d has a different shape than environment 0", i);
            sharp_ppo_free(ppo);
            return NULL;
        }
    }
    ppo->D = ppo->envs[0]->obs_dim;
    ppo->A = ppo->envs[0]->n_actions;
    ppo->policy = sharp_policy_new(ppo->D, ppo->A, cfg->hidden, cfg->n_hidden, cfg->norm_obs, cfg->obs_clip);
    if (!ppo->policy) {
        snprintf(err, errlen, "environment shape (%d observations, %d actions) out of bounds", ppo->D, ppo->A);
        sharp_ppo_free(ppo);
        return NULL;
    }
    sharp_rng_t init;
    sharp_rng_seed(&init, sharp_rng_derive(cfg->seed, STREAM_INIT));
    sharp_policy_init_weights(ppo->policy, &init);
    sharp_rng_seed(&ppo->rng_actions, sharp_rng_derive(cfg->seed, STREAM_ACTIONS));
    sharp_rng_seed(&ppo->rng_shuffle, sharp_rng_derive(cfg->seed, STREAM_SHUFFLE));
    sharp_adam_init(&ppo->adam, ppo->policy->n_params, 0.9, 0.999, cfg->adam_eps);

    size_t B = (size_t)ppo->batch, D = (size_t)ppo->D, N = (size_t)ppo->N;
    ppo->raw = agent_calloc(N * D, sizeof(double));
    ppo->cur = agent_calloc(N * D, sizeof(double));
    ppo->ep_ret = agent_calloc(N, sizeof(double));
    ppo->obs = agent_calloc(B * D, sizeof(double));
    ppo->actions = agent_calloc(B, sizeof(int));
    ppo->logp = agent_calloc(B, sizeof(double));
    ppo->values = agent_calloc(B, sizeof(double));
    ppo->rewards = agent_calloc(B, sizeof(double));
    ppo->adv = agent_calloc(B, sizeof(double));
    ppo->returns = agent_calloc(B, sizeof(double));
    ppo->dones = agent_calloc(B, 1);
    ppo->last_values = agent_calloc(N, sizeof(double));
    sharp_mlp_cache_init(&ppo->actorN, &ppo->policy->actor, ppo->N);
    sharp_mlp_cache_init(&ppo->criticN, &ppo->policy->critic, ppo->N);
    ppo->probsN = agent_calloc(N * ppo->A, sizeof(double));
    ppo->logpN = agent_calloc(N * ppo->A, sizeof(double));
    ppo->perm = agent_calloc(B, sizeof(int));
    size_t mb = (size_t)ppo->mb;
    ppo->mb_obs = agent_calloc(mb * D, sizeof(double));
    ppo->mb_logp = agent_calloc(mb, sizeof(double));
    ppo->mb_adv = agent_calloc(mb, sizeof(double));
    ppo->mb_ret = agent_calloc(mb, sizeof(double));
    ppo->mb_val = agent_calloc(mb, sizeof(double));
    ppo->mb_act = agent_calloc(mb, sizeof(int));
    sharp_ppo_work_init(&ppo->work, ppo->policy, ppo->mb);

    for (int i = 0; i < ppo->N; i++)
        sharp_env_reset(ppo->envs[i], ppo->raw + (size_t)i * D);
    observe_all(ppo);
    return ppo;
}

static void rollout(sharp_ppo_t *ppo)
{
    sharp_policy_t *p = ppo->policy;
    const int N = ppo->N, D = ppo->D, A = ppo->A;
    for (int t = 0; t < ppo->T; t++) {
        memcpy(ppo->obs + (size_t)t * N * D, ppo->cur, (size_t)N * D * sizeof(double));
        const double *logits = sharp_mlp_forward(&p->actor, &ppo->actorN, ppo->cur, N);
        const double *v = sharp_mlp_forward(&p->critic, &ppo->criticN, ppo->cur, N);
        for (int i = 0; i < N; i++) {
            int k = t * N + i;
            double *pr = ppo->probsN + (size_t)i * A, *lp = ppo->logpN + (size_t)i * A;
            sharp_softmax(logits + (size_t)i * A, A, pr, lp);
            int a = sharp_rng_categorical(&ppo->rng_actions, pr, A);
            ppo->actions[k] = a;
            ppo->logp[k] = lp[a];
            ppo->values[k] = v[i];
        }
        for (int i = 0; i < N; i++) {
            int k = t * N + i;
            double *o = ppo->raw + (size_t)i * D;
            double r;
            bool term, trunc;
            sharp_env_step(ppo->envs[i], ppo->actions[k], o, &r, &term, &trunc);
            ppo->ep_ret[i] += r;
            /* A time limit is not a terminal state: the return goes on past
             * it, so the cut transition gets the discounted value of where
             * it stopped (with the statistics the networks use right now). */
            if (trunc && !term)
                r += ppo->cfg.gamma * sharp_policy_value(p, o);
            ppo->rewards[k] = r;
            ppo->dones[k] = term || trunc;
            if (term || trunc) {
                ppo->recent[ppo->episodes % SHARP_PPO_RETURN_WINDOW] = ppo->ep_ret[i];
                ppo->episodes++;
                ppo->ep_ret[i] = 0.0;
                sharp_env_reset(ppo->envs[i], o);
            }
        }
        observe_all(ppo);
        ppo->steps += N;
    }
    const double *v = sharp_mlp_forward(&p->critic, &ppo->criticN, ppo->cur, N);
    memcpy(ppo->last_values, v, (size_t)N * sizeof(double));
    sharp_gae(ppo->T, N, ppo->rewards, ppo->values, ppo->dones, ppo->last_values, ppo->cfg.gamma,
              ppo->cfg.gae_lambda, ppo->adv, ppo->returns);
}

static void normalize_advantages(double *a, int n)
{
    if (n < 2)
        return;
    double mean = 0.0;
    for (int i = 0; i < n; i++)
        mean += a[i];
    mean /= n;
    double var = 0.0;
    for (int i = 0; i < n; i++)
        var += (a[i] - mean) * (a[i] - mean);
    double sd = sqrt(var / (n - 1)); /* unbiased, as torch.std */
    for (int i = 0; i < n; i++)
        a[i] = (a[i] - mean) / (sd + 1e-8);
}

static void clip_grad_norm(double *g, size_t n, double max_norm)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += g[i] * g[i];
    double coef = max_norm / (sqrt(s) + 1e-6);
    if (coef < 1.0)
        for (size_t i = 0; i < n; i++)
            g[i] *= coef;
}

static void update(sharp_ppo_t *ppo, sharp_ppo_stats_t *st)
{
    sharp_policy_t *p = ppo->policy;
    const sharp_ppo_config_t *cfg = &ppo->cfg;
    const int D = ppo->D, mb = ppo->mb;
    double lr = cfg->lr;
    if (cfg->anneal_lr) {
        double frac = 1.0 - (double)ppo->updates / (double)ppo->num_updates;
        /* Past the planned horizon the rate stays at a small floor rather
         * than 0 or below. */
        if (frac < 1.0 / (double)ppo->num_updates)
            frac = 1.0 / (double)ppo->num_updates;
        lr *= frac;
    }
    sharp_ppo_losses_t sum = {0}, one;
    int n = 0;
    for (int i = 0; i < ppo->batch; i++)
        ppo->perm[i] = i;
    for (int epoch = 0; epoch < cfg->n_epochs; epoch++) {
        sharp_rng_shuffle(&ppo->rng_shuffle, ppo->perm, ppo->batch);
        for (int start = 0; start < ppo->batch; start += mb) {
            for (int j = 0; j < mb; j++) {
                int k = ppo->perm[start + j];
                memcpy(ppo->mb_obs + (size_t)j * D, ppo->obs + (size_t)k * D, (size_t)D * sizeof(double));
                ppo->mb_act[j] = ppo->actions[k];
                ppo->mb_logp[j] = ppo->logp[k];
                ppo->mb_adv[j] = ppo->adv[k];
                ppo->mb_ret[j] = ppo->returns[k];
                ppo->mb_val[j] = ppo->values[k];
            }
            if (cfg->norm_adv)
                normalize_advantages(ppo->mb_adv, mb);
            sharp_ppo_batch_t b = {
                .rows = mb,
                .obs = ppo->mb_obs,
                .actions = ppo->mb_act,
                .old_logp = ppo->mb_logp,
                .adv = ppo->mb_adv,
                .returns = ppo->mb_ret,
                .old_values = ppo->mb_val,
            };
            sharp_ppo_loss(p, &ppo->work, cfg, &b, true, &one);
            if (cfg->max_grad_norm > 0.0)
                clip_grad_norm(p->grads, p->n_params, cfg->max_grad_norm);
            sharp_adam_step(&ppo->adam, p->params, p->grads, lr);
            sum.loss += one.loss;
            sum.pg_loss += one.pg_loss;
            sum.v_loss += one.v_loss;
            sum.entropy += one.entropy;
            sum.approx_kl += one.approx_kl;
            sum.clipfrac += one.clipfrac;
            n++;
        }
    }
    ppo->updates++;
    st->lr = lr;
    st->losses.loss = sum.loss / n;
    st->losses.pg_loss = sum.pg_loss / n;
    st->losses.v_loss = sum.v_loss / n;
    st->losses.entropy = sum.entropy / n;
    st->losses.approx_kl = sum.approx_kl / n;
    st->losses.clipfrac = sum.clipfrac / n;
}

void sharp_ppo_iterate(sharp_ppo_t *ppo, sharp_ppo_stats_t *st)
{
    sharp_ppo_stats_t local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    rollout(ppo);
    update(ppo, st);
    st->steps = ppo->steps;
    st->updates = ppo->updates;
    st->episodes = ppo->episodes;
    st->window = ppo->episodes < SHARP_PPO_RETURN_WINDOW ? (int)ppo->episodes : SHARP_PPO_RETURN_WINDOW;
    st->mean_return = sharp_ppo_recent_return(ppo, st->window);
}

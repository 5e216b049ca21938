/* The scaling agent's building blocks (proxy/agent/): the MLP's and the PPO
 * losses' gradients against finite differences, GAE and Adam against
 * hand-computed values, the CartPole dynamics against gym's equations,
 * the observation normalizer, the random streams, determinism of training,
 * and the policy file with every way it can be damaged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/adam.h"
#include "agent/cartpole.h"
#include "agent/mlp.h"
#include "agent/normalizer.h"
#include "agent/policy.h"
#include "agent/policy_file.h"
#include "agent/ppo.h"
#include "agent/rng.h"

/* |a - b| within a tolerance relative to their size (absolute below 1). */
static int close_enough(double a, double b, double tol)
{
    double scale = fabs(a) + fabs(b);
    return fabs(a - b) <= tol * (scale > 1.0 ? scale : 1.0);
}

#define assert_close(a, b, tol)                                                                              \
    do {                                                                                                     \
        double a_ = (a), b_ = (b);                                                                           \
        if (!close_enough(a_, b_, tol))                                                                      \
            fail_msg("%s = %.17g, expected %.17g (tolerance %g)", #a, a_, b_, (double)(tol));                \
    } while (0)

/* ---------------- MLP ---------------- */

static void random_params(double *p, size_t n, sharp_rng_t *rng, double scale)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * sharp_rng_normal(rng);
}

/* loss = sum c .* out: dLoss/dout = c. */
static double mlp_probe_loss(const sharp_mlp_t *m, sharp_mlp_cache_t *c, const double *x, int rows,
                             const double *coef)
{
    const double *y = sharp_mlp_forward(m, c, x, rows);
    double s = 0.0;
    for (int i = 0; i < rows * m->sizes[m->n_layers]; i++)
        s += coef[i] * y[i];
    return s;
}

static void mlp_gradient_matches_finite_differences(void **state)
{
    (void)state;
    const int shapes[][5] = {{3, 5, 4, 2, 0}, {4, 7, 1, 0, 0}, {2, 6, 6, 6, 3}};
    const int layers[] = {3, 2, 4};
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 11);
    for (int s = 0; s < 3; s++) {
        sharp_mlp_t m;
        assert_int_equal(sharp_mlp_shape(&m, shapes[s], layers[s]), 0);
        double *params = calloc(m.n_params, sizeof *params), *grads = calloc(m.n_params, sizeof *grads);
        sharp_mlp_bind(&m, params, grads);
        random_params(params, m.n_params, &rng, 0.7);
        const int rows = 5;
        int in = m.sizes[0], out = m.sizes[m.n_layers];
        double x[5 * 8], coef[5 * 8];
        for (int i = 0; i < rows * in; i++)
            x[i] = sharp_rng_range(&rng, -2.0, 2.0);
        for (int i = 0; i < rows * out; i++)
            coef[i] = sharp_rng_normal(&rng);
        sharp_mlp_cache_t c;
        sharp_mlp_cache_init(&c, &m, rows);
        mlp_probe_loss(&m, &c, x, rows, coef);
        sharp_mlp_backward(&m, &c, coef, rows);
        for (size_t i = 0; i < m.n_params; i++) {
            double save = params[i], h = 1e-6;
            params[i] = save + h;
            double lp = mlp_probe_loss(&m, &c, x, rows, coef);
            params[i] = save - h;
            double lm = mlp_probe_loss(&m, &c, x, rows, coef);
            params[i] = save;
            assert_close(grads[i], (lp - lm) / (2 * h), 1e-6);
        }
        /* backward accumulates: a second pass doubles the gradient */
        double g0 = grads[0];
        mlp_probe_loss(&m, &c, x, rows, coef);
        sharp_mlp_backward(&m, &c, coef, rows);
        assert_close(grads[0], 2 * g0, 1e-12);
        sharp_mlp_cache_free(&c);
        free(params);
        free(grads);
    }
}

/* A batch forward equals row-by-row forwards, and the output layer is
 * linear while hidden layers are tanh. */
static void mlp_forward_by_hand(void **state)
{
    (void)state;
    const int sizes[] = {2, 2, 1};
    sharp_mlp_t m;
    assert_int_equal(sharp_mlp_shape(&m, sizes, 2), 0);
    assert_int_equal(m.n_params, 2 * 2 + 2 + 2 * 1 + 1);
    /* W0 input-major: W0[i][o]; b0; W1; b1 */
    double p[] = {0.5, -1.0, 2.0, 0.25, 0.1, -0.2, 1.5, -3.0, 0.7};
    sharp_mlp_bind(&m, p, NULL);
    sharp_mlp_cache_t c;
    sharp_mlp_cache_init(&c, &m, 2);
    double x[] = {1.0, -2.0, 0.3, 0.4};
    const double *y = sharp_mlp_forward(&m, &c, x, 2);
    for (int r = 0; r < 2; r++) {
        double h0 = tanh(x[2 * r] * 0.5 + x[2 * r + 1] * 2.0 + 0.1);
        double h1 = tanh(x[2 * r] * -1.0 + x[2 * r + 1] * 0.25 - 0.2);
        assert_close(y[r], 1.5 * h0 - 3.0 * h1 + 0.7, 1e-14);
    }
    for (double v = -25; v <= 25; v += 0.37)
        assert_close(sharp_mlp_tanh(v), tanh(v), 1e-15);
    assert_close(sharp_mlp_tanh(1e-12), 1e-12, 1e-15);
    sharp_mlp_cache_free(&c);
    /* shapes out of bounds are refused */
    const int bad[] = {2, 0, 1};
    assert_int_equal(sharp_mlp_shape(&m, bad, 2), -1);
    assert_int_equal(sharp_mlp_shape(&m, sizes, 0), -1);
    assert_int_equal(sharp_mlp_shape(&m, sizes, SHARP_MLP_MAX_LAYERS + 1), -1);
}

/* Orthogonal init: the (out x in) weight matrix W has W W^T = g^2 I when
 * out <= in, W^T W = g^2 I when out >= in; biases are 0. */
static void mlp_orthogonal_init(void **state)
{
    (void)state;
    const int sizes[] = {4, 9, 3};
    sharp_mlp_t m;
    assert_int_equal(sharp_mlp_shape(&m, sizes, 2), 0);
    double *p = calloc(m.n_params, sizeof *p);
    sharp_mlp_bind(&m, p, NULL);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 3);
    sharp_mlp_init_orthogonal(&m, &rng, 2.0, 0.5);
    for (int l = 0; l < 2; l++) {
        int in = sizes[l], out = sizes[l + 1];
        double g = l == 0 ? 2.0 : 0.5;
        const double *w = p + m.offset[l]; /* w[i * out + o] = W(o, i) */
        int small = in < out ? in : out;
        for (int a = 0; a < small; a++) {
            for (int b = 0; b < small; b++) {
                double dot = 0.0;
                if (out >= in) /* columns of W (one per input) */
                    for (int o = 0; o < out; o++)
                        dot += w[a * out + o] * w[b * out + o];
                else /* rows of W (one per output) */
                    for (int i = 0; i < in; i++)
                        dot += w[i * out + a] * w[i * out + b];
                assert_close(dot, a == b ? g * g : 0.0, 1e-12);
            }
        }
        for (int o = 0; o < out; o++)
            assert_true(w[in * out + o] == 0.0);
    }
    free(p);
}

/* ---------------- PPO losses ---------------- */

typedef struct {
    sharp_policy_t *p;
    sharp_ppo_work_t w;
    sharp_ppo_config_t cfg;
    int rows;
    double obs[8 * 3], old_logp[8], adv[8], ret[8], oldv[8];
    int act[8];
    sharp_ppo_batch_t b;
} loss_fixture_t;

/* A random policy and minibatch whose old log-probabilities and values
 * are the current ones moved by up to +-0.6, so that some ratios and
 * values fall inside the clip range and some outside. */
static void loss_fixture(loss_fixture_t *f, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    const int hidden[] = {6, 5};
    f->p = sharp_policy_new(3, 3, hidden, 2, false, 10.0);
    assert_non_null(f->p);
    f->rows = 8;
    sharp_rng_t rng;
    sharp_rng_seed(&rng, seed);
    random_params(f->p->params, f->p->n_params, &rng, 0.8);
    sharp_ppo_config_default(&f->cfg);
    sharp_ppo_work_init(&f->w, f->p, f->rows);
    for (int i = 0; i < f->rows * 3; i++)
        f->obs[i] = sharp_rng_range(&rng, -1.5, 1.5);
    for (int r = 0; r < f->rows; r++) {
        f->act[r] = (int)sharp_rng_below(&rng, 3);
        f->adv[r] = sharp_rng_normal(&rng);
        f->ret[r] = sharp_rng_normal(&rng);
    }
    const double *logits = sharp_mlp_forward(&f->p->actor, &f->w.actor, f->obs, f->rows);
    const double *v = sharp_mlp_forward(&f->p->critic, &f->w.critic, f->obs, f->rows);
    for (int r = 0; r < f->rows; r++) {
        double lp[3];
        sharp_softmax(logits + 3 * r, 3, NULL, lp);
        f->old_logp[r] = lp[f->act[r]] + sharp_rng_range(&rng, -0.6, 0.6);
        f->oldv[r] = v[r] + sharp_rng_range(&rng, -0.6, 0.6);
        /* away from the kinks, where finite differences would straddle them */
        double ratio = exp(lp[f->act[r]] - f->old_logp[r]);
        assert_true(fabs(ratio - 0.8) > 1e-3 && fabs(ratio - 1.2) > 1e-3);
        assert_true(fabs(fabs(v[r] - f->oldv[r]) - 0.2) > 1e-3);
        double vc = f->oldv[r] + (v[r] > f->oldv[r] ? 0.2 : -0.2);
        if (fabs(v[r] - f->oldv[r]) > 0.2) /* where max() switches branch */
            assert_true(fabs(fabs(v[r] - f->ret[r]) - fabs(vc - f->ret[r])) > 1e-3);
    }
    f->b = (sharp_ppo_batch_t){
        .rows = f->rows,
        .obs = f->obs,
        .actions = f->act,
        .old_logp = f->old_logp,
        .adv = f->adv,
        .returns = f->ret,
        .old_values = f->oldv,
    };
}

static void loss_fixture_free(loss_fixture_t *f)
{
    sharp_ppo_work_free(&f->w);
    sharp_policy_free(f->p);
}

/* Every parameter's gradient (actor and critic) against central
 * differences of the loss. */
static void check_loss_gradient(loss_fixture_t *f)
{
    sharp_policy_t *p = f->p;
    sharp_ppo_losses_t out;
    sharp_ppo_loss(p, &f->w, &f->cfg, &f->b, true, &out);
    double *g = calloc(p->n_params, sizeof *g);
    memcpy(g, p->grads, p->n_params * sizeof *g);
    double norm = 0.0;
    for (size_t i = 0; i < p->n_params; i++) {
        double save = p->params[i], h = 1e-6;
        p->params[i] = save + h;
        double lp = sharp_ppo_loss(p, &f->w, &f->cfg, &f->b, false, NULL);
        p->params[i] = save - h;
        double lm = sharp_ppo_loss(p, &f->w, &f->cfg, &f->b, false, NULL);
        p->params[i] = save;
        assert_close(g[i], (lp - lm) / (2 * h), 1e-6);
        norm += g[i] * g[i];
    }
    assert_true(norm > 1e-6); /* a zero gradient would pass trivially */
    free(g);
}

/* The clipped surrogate alone (no value loss, no entropy): the critic gets
 * no gradient, some rows are clipped and some are not. */
static void policy_loss_gradient(void **state)
{
    (void)state;
    loss_fixture_t f;
    loss_fixture(&f, 21);
    f.cfg.vf_coef = 0.0;
    f.cfg.ent_coef = 0.0;
    sharp_ppo_losses_t out;
    sharp_ppo_loss(f.p, &f.w, &f.cfg, &f.b, true, &out);
    assert_true(out.clipfrac > 0.0 && out.clipfrac < 1.0);
    for (size_t i = f.p->actor.n_params; i < f.p->n_params; i++)
        assert_true(f.p->grads[i] == 0.0);
    check_loss_gradient(&f);
    loss_fixture_free(&f);
}

/* Surrogate plus entropy bonus. */
static void policy_entropy_loss_gradient(void **state)
{
    (void)state;
    loss_fixture_t f;
    loss_fixture(&f, 22);
    f.cfg.vf_coef = 0.0;
    f.cfg.ent_coef = 0.3;
    check_loss_gradient(&f);
    /* the entropy alone (advantages 0): its gradient is nonzero too */
    memset(f.adv, 0, sizeof f.adv);
    check_loss_gradient(&f);
    loss_fixture_free(&f);
}

/* Value loss alone, clipped and unclipped: the actor gets no gradient. */
static void value_loss_gradient(void **state)
{
    (void)state;
    for (int clip = 0; clip < 2; clip++) {
        loss_fixture_t f;
        loss_fixture(&f, 23);
        memset(f.adv, 0, sizeof f.adv);
        f.cfg.ent_coef = 0.0;
        f.cfg.vf_coef = 0.7;
        f.cfg.clip_vloss = clip;
        sharp_ppo_loss(f.p, &f.w, &f.cfg, &f.b, true, NULL);
        for (size_t i = 0; i < f.p->actor.n_params; i++)
            assert_true(f.p->grads[i] == 0.0);
        check_loss_gradient(&f);
        loss_fixture_free(&f);
    }
}

/* The whole loss with the default coefficients. */
static void full_loss_gradient(void **state)
{
    (void)state;
    loss_fixture_t f;
    loss_fixture(&f, 24);
    check_loss_gradient(&f);
    loss_fixture_free(&f);
}

/* Values by hand: all weights 0 give uniform logits (p = 1/2 each, entropy
 * log 2) and V = the critic's output bias. */
static void loss_values_by_hand(void **state)
{
    (void)state;
    const int hidden[] = {4};
    sharp_policy_t *p = sharp_policy_new(2, 2, hidden, 1, false, 10.0);
    sharp_ppo_work_t w;
    sharp_ppo_work_init(&w, p, 1);
    sharp_ppo_config_t cfg;
    sharp_ppo_config_default(&cfg);
    cfg.ent_coef = 0.01;
    cfg.vf_coef = 0.5;
    p->params[p->n_params - 1] = 0.3; /* V = 0.3 */
    double obs[2] = {0.4, -0.1}, old_logp = log(0.5) - log(1.5); /* ratio 1.5 */
    double adv = 1.0, ret = 1.0, oldv = 0.0;
    int act = 1;
    sharp_ppo_batch_t b = {1, obs, &act, &old_logp, &adv, &ret, &oldv};
    sharp_ppo_losses_t out;

    /* A > 0, ratio 1.5: the clipped term -1.2 A wins, no policy gradient.
     * Value clipped to 0 + 0.2: 0.5 max(0.7^2, 0.8^2) = 0.32, no gradient. */
    double loss = sharp_ppo_loss(p, &w, &cfg, &b, true, &out);
    assert_close(out.pg_loss, -1.2, 1e-12);
    assert_close(out.entropy, log(2.0), 1e-12);
    assert_close(out.v_loss, 0.32, 1e-12);
    assert_close(loss, -1.2 - 0.01 * log(2.0) + 0.5 * 0.32, 1e-12);
    assert_close(out.clipfrac, 1.0, 0);
    assert_close(out.approx_kl, 0.5 - log(1.5), 1e-12);
    for (size_t i = 0; i < p->n_params; i++)
        assert_true(p->grads[i] == 0.0); /* uniform policy: entropy is at its maximum too */

    /* A < 0: the unclipped -A r = 1.5 wins; unclipped value loss 0.245 with
     * gradient vf_coef (V - R) = -0.35 on the output bias. */
    adv = -1.0;
    cfg.clip_vloss = false;
    sharp_ppo_loss(p, &w, &cfg, &b, true, &out);
    assert_close(out.pg_loss, 1.5, 1e-12);
    assert_close(out.v_loss, 0.245, 1e-12);
    assert_close(p->grads[p->n_params - 1], -0.35, 1e-12);
    /* output bias of action 1: -A r (1 - p1) * (-1)... d(-A r)/dz1 = -A r (1 - 1/2) = 0.75 */
    size_t bias1 = p->actor.n_params - 1;
    assert_close(p->grads[bias1], 0.75, 1e-12);
    assert_close(p->grads[bias1 - 1], -0.75, 1e-12);
    sharp_ppo_work_free(&w);
    sharp_policy_free(p);
}

/* ---------------- GAE ---------------- */

static void gae_by_hand(void **state)
{
    (void)state;
    /* Two environments, three steps, row t*2 + i, gamma 0.9, lambda 0.8.
     * Env 0: rewards 1,1,1, values .5,.6,.7, episode ends at t=1, then
     *   bootstraps from 2.0:
     *   A2 = 1 + .9*2 - .7 = 2.1
     *   A1 = 1 - .6 = .4 (its episode ended: nothing after it counts)
     *   A0 = (1 + .9*.6 - .5) + .72*.4 = 1.04 + .288 = 1.328
     * Env 1: rewards 0,0,1, values 0, ends at t=2 (last value 5 unused):
     *   A2 = 1, A1 = .72, A0 = .5184 */
    double rewards[] = {1, 0, 1, 0, 1, 1};
    double values[] = {0.5, 0, 0.6, 0, 0.7, 0};
    unsigned char dones[] = {0, 0, 1, 0, 0, 1};
    double last[] = {2.0, 5.0};
    double adv[6], ret[6];
    sharp_gae(3, 2, rewards, values, dones, last, 0.9, 0.8, adv, ret);
    const double want_adv[] = {1.328, 0.5184, 0.4, 0.72, 2.1, 1.0};
    for (int k = 0; k < 6; k++) {
        assert_close(adv[k], want_adv[k], 1e-12);
        assert_close(ret[k], want_adv[k] + values[k], 1e-12);
    }
    /* lambda 1 gives discounted returns minus values; lambda 0 one-step TD */
    sharp_gae(3, 2, rewards, values, dones, last, 0.9, 1.0, adv, ret);
    assert_close(ret[0], 1 + 0.9 * 1, 1e-12);
    assert_close(ret[4], 1 + 0.9 * 2.0, 1e-12);
    assert_close(ret[1], 0.81, 1e-12);
    sharp_gae(3, 2, rewards, values, dones, last, 0.9, 0.0, adv, ret);
    assert_close(adv[0], 1.04, 1e-12);
}

/* ---------------- Adam ---------------- */

static void adam_by_hand(void **state)
{
    (void)state;
    /* lr 0.1, betas .9/.999, eps 1e-8.
     * Step 1, g = (.5, -.1): m = (.05, -.01), v = (2.5e-4, 1e-5); bias
     *   corrected m/sqrt(v) = (1, -1): p = (1 - .1*.5/(.5+1e-8), -2 + .1*.1/(.1+1e-8))
     *   = (0.900000002, -1.90000001).
     * Step 2, g = (.5, .3): parameter 0 sees the same gradient: the same
     *   step again, 0.800000004. Parameter 1: m = -.009 + .03 = .021,
     *   v = 9.99e-6 + 9e-5 = 9.999e-5, bias corrections .19 and .001999:
     *   step .1 * (.021/.19) / (sqrt(9.999e-5/.001999) + 1e-8) = .0494189811...,
     *   so -1.9494189911... */
    double p[2] = {1.0, -2.0};
    sharp_adam_t a;
    sharp_adam_init(&a, 2, 0.9, 0.999, 1e-8);
    sharp_adam_step(&a, p, (double[]){0.5, -0.1}, 0.1);
    assert_close(p[0], 0.900000002, 1e-15);
    assert_close(p[1], -1.90000001, 1e-15);
    sharp_adam_step(&a, p, (double[]){0.5, 0.3}, 0.1);
    assert_close(p[0], 0.800000004, 1e-15);
    double step = 0.1 * (0.021 / 0.19) / (sqrt(9.999e-5 / 0.001999) + 1e-8);
    assert_close(step, 0.0494189811200654, 1e-12);
    assert_close(p[1], -1.9494189911200654, 1e-14);
    assert_close(p[1], -1.90000001 - step, 1e-14);
    assert_int_equal(a.t, 2);
    sharp_adam_free(&a);
}

/* ---------------- CartPole ---------------- */

static void cartpole_dynamics(void **state)
{
    (void)state;
    sharp_env_t *e = sharp_cartpole_new(1);
    sharp_cartpole_t *c = (sharp_cartpole_t *)e;
    double obs[4], r;
    bool term, trunc;

    /* From rest, pushing right: temp = 10/1.1, thetaacc = -(100/11) /
     * (0.5 (4/3 - 0.1/1.1)) = -600/41, xacc = 400/41; Euler moves only
     * the velocities: x_dot = 0.02 * 400/41 = 8/41, theta_dot = -12/41. */
    c->x = c->x_dot = c->theta = c->theta_dot = 0.0;
    c->steps = 0;
    sharp_env_step(e, 1, obs, &r, &term, &trunc);
    assert_close(obs[0], 0.0, 0);
    assert_close(obs[1], 8.0 / 41.0, 1e-15);
    assert_close(obs[2], 0.0, 0);
    assert_close(obs[3], -12.0 / 41.0, 1e-15);
    assert_close(r, 1.0, 0);
    assert_false(term);
    assert_false(trunc);

    /* Six steps from (0.01, -0.02, 0.03, 0.04), actions 1 1 0 1 0 0, values
     * of gym's cartpole.py equations computed independently. */
    const double want[6][4] = {
        {0.009600000000000001, 0.17467919574755525, 0.030799999999999998, -0.2430687179600081},
        {0.013093583914951107, 0.3693479760579556, 0.025938625640799837, -0.5258796280501483},
        {0.02048054343611022, 0.17387081260481596, 0.01542103307979687, -0.22513741609237464},
        {0.02395795968820654, 0.3687690101747617, 0.010918284757949377, -0.5129163478026587},
        {0.03133333989170178, 0.17349499275068458, 0.0006599578018962032, -0.21681286835696195},
        {0.03480323974671547, -0.021636386741578473, -0.0036762995652430356, 0.07607816471983775},
    };
    const int actions[] = {1, 1, 0, 1, 0, 0};
    c->x = 0.01;
    c->x_dot = -0.02;
    c->theta = 0.03;
    c->theta_dot = 0.04;
    c->steps = 0;
    for (int s = 0; s < 6; s++) {
        sharp_env_step(e, actions[s], obs, &r, &term, &trunc);
        for (int k = 0; k < 4; k++)
            assert_close(obs[k], want[s][k], 1e-13);
        assert_false(term);
    }

    /* The pole passing 12 degrees terminates (reward 1 still); so does
     * the cart passing 2.4. */
    c->x = 0.0;
    c->x_dot = 0.0;
    c->theta = 0.2094;
    c->theta_dot = 0.1; /* theta becomes 0.2114 > 0.20944 */
    sharp_env_step(e, 1, obs, &r, &term, &trunc);
    assert_true(term);
    assert_false(trunc);
    assert_close(r, 1.0, 0);
    c->x = -2.399;
    c->x_dot = -0.1;
    c->theta = c->theta_dot = 0.0;
    sharp_env_step(e, 0, obs, &r, &term, &trunc);
    assert_true(term);

    /* The 500th step truncates an episode still standing. */
    c->x = c->x_dot = c->theta = c->theta_dot = 0.0;
    c->steps = 498;
    sharp_env_step(e, 1, obs, &r, &term, &trunc);
    assert_false(trunc);
    sharp_env_step(e, 0, obs, &r, &term, &trunc);
    assert_true(trunc);
    assert_false(term);

    /* Resets start each variable uniformly in [-0.05, 0.05). */
    double lo = 1, hi = -1;
    for (int i = 0; i < 2000; i++) {
        sharp_env_reset(e, obs);
        assert_int_equal(c->steps, 0);
        for (int k = 0; k < 4; k++) {
            assert_true(obs[k] >= -0.05 && obs[k] < 0.05);
            lo = fmin(lo, obs[k]);
            hi = fmax(hi, obs[k]);
        }
    }
    assert_true(lo < -0.049 && hi > 0.049);
    sharp_env_destroy(e);
}

/* A random policy lasts about 22 steps on average; always pushing one way
 * about 9-10. A sanity check of the whole environment loop. */
static void cartpole_baselines(void **state)
{
    (void)state;
    sharp_env_t *e = sharp_cartpole_new(5);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 6);
    double obs[4], r;
    bool term = false, trunc = false;
    long total = 0, right = 0;
    for (int ep = 0; ep < 1000; ep++) {
        sharp_env_reset(e, obs);
        do {
            sharp_env_step(e, (int)sharp_rng_below(&rng, 2), obs, &r, &term, &trunc);
            total++;
        } while (!term && !trunc);
        sharp_env_reset(e, obs);
        do {
            sharp_env_step(e, 1, obs, &r, &term, &trunc);
            right++;
        } while (!term && !trunc);
    }
    assert_true(total / 1000.0 > 18 && total / 1000.0 < 26);
    assert_true(right / 1000.0 > 8 && right / 1000.0 < 11);
    sharp_env_destroy(e);
}

/* ---------------- normalizer, random numbers ---------------- */

static void normalizer_matches_batch_statistics(void **state)
{
    (void)state;
    sharp_normalizer_t n;
    sharp_normalizer_init(&n, 2, 5.0);
    /* before any update: the identity */
    double id[2] = {0.25, -3.0}, id_out[2];
    sharp_normalizer_apply(&n, id, id_out);
    assert_close(id_out[0], 0.25, 1e-8);
    assert_close(id_out[1], -3.0, 1e-8);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 9);
    double all[2 * 300];
    for (int i = 0; i < 300; i++) {
        all[2 * i] = 3.0 + 2.0 * sharp_rng_normal(&rng);
        all[2 * i + 1] = -100.0 + 0.01 * sharp_rng_normal(&rng);
    }
    /* merged in uneven batches */
    int sizes[] = {1, 7, 92, 200};
    for (int b = 0, at = 0; b < 4; at += sizes[b], b++)
        sharp_normalizer_update(&n, all + 2 * at, sizes[b]);
    for (int j = 0; j < 2; j++) {
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < 300; i++)
            mean += all[2 * i + j];
        mean /= 300;
        for (int i = 0; i < 300; i++)
            var += (all[2 * i + j] - mean) * (all[2 * i + j] - mean);
        var /= 300;
        assert_close(n.mean[j], mean, 1e-12);
        assert_close(n.var[j] / var, 1.0, 1e-9);
    }
    assert_close(n.count, 300, 0);
    double x[2] = {3.0 + 2.0 * 10, -100.0}, out[2];
    sharp_normalizer_apply(&n, x, out);
    assert_close(out[0], 5.0, 0); /* 10 sigma clipped to 5 */
    assert_true(fabs(out[1]) < 0.5);
    sharp_normalizer_free(&n);
}

static void rng_streams(void **state)
{
    (void)state;
    sharp_rng_t a, b;
    sharp_rng_seed(&a, 42);
    sharp_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        assert_true(sharp_rng_next(&a) == sharp_rng_next(&b));
    sharp_rng_seed(&b, 43);
    assert_true(sharp_rng_next(&a) != sharp_rng_next(&b));
    assert_true(sharp_rng_derive(1, 1) != sharp_rng_derive(1, 2));
    assert_true(sharp_rng_derive(1, 1) != sharp_rng_derive(2, 1));
    int hist[3] = {0};
    double p[3] = {0.2, 0.0, 0.8}, mean = 0.0, sq = 0.0;
    for (int i = 0; i < 20000; i++) {
        double u = sharp_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        hist[sharp_rng_categorical(&a, p, 3)]++;
        assert_true(sharp_rng_below(&a, 7) < 7);
        double z = sharp_rng_normal(&a);
        mean += z;
        sq += z * z;
    }
    assert_int_equal(hist[1], 0);
    assert_true(hist[0] > 3600 && hist[0] < 4400);
    assert_true(fabs(mean / 20000) < 0.03 && fabs(sq / 20000 - 1.0) < 0.05);
    int perm[50], seen[50] = {0};
    for (int i = 0; i < 50; i++)
        perm[i] = i;
    sharp_rng_shuffle(&a, perm, 50);
    for (int i = 0; i < 50; i++)
        seen[perm[i]]++;
    for (int i = 0; i < 50; i++)
        assert_int_equal(seen[i], 1);
}

/* ---------------- determinism ---------------- */

static sharp_ppo_t *short_run(uint64_t seed, int updates)
{
    sharp_ppo_config_t cfg;
    sharp_ppo_config_default(&cfg);
    cfg.seed = seed;
    char err[256];
    sharp_ppo_t *ppo = sharp_ppo_new(&cfg, sharp_cartpole_factory, NULL, err, sizeof err);
    assert_non_null(ppo);
    for (int i = 0; i < updates; i++)
        sharp_ppo_iterate(ppo, NULL);
    return ppo;
}

static void training_is_deterministic(void **state)
{
    (void)state;
    sharp_ppo_t *a = short_run(7, 3), *b = short_run(7, 3), *c = short_run(8, 3);
    sharp_policy_t *pa = sharp_ppo_policy(a), *pb = sharp_ppo_policy(b), *pc = sharp_ppo_policy(c);
    assert_memory_equal(pa->params, pb->params, pa->n_params * sizeof(double));
    assert_memory_equal(pa->norm.mean, pb->norm.mean, 4 * sizeof(double));
    assert_memory_equal(pa->norm.var, pb->norm.var, 4 * sizeof(double));
    assert_memory_not_equal(pa->params, pc->params, pa->n_params * sizeof(double));
    /* and training moved the weights away from their initialization */
    sharp_ppo_t *fresh = short_run(7, 0);
    assert_memory_not_equal(pa->params, sharp_ppo_policy(fresh)->params, pa->n_params * sizeof(double));
    sharp_ppo_free(a);
    sharp_ppo_free(b);
    sharp_ppo_free(c);
    sharp_ppo_free(fresh);
}

static void config_is_checked(void **state)
{
    (void)state;
    sharp_ppo_config_t cfg;
    sharp_ppo_config_default(&cfg);
    assert_null(sharp_ppo_config_check(&cfg));
    char err[256];
    cfg.n_minibatches = 3; /* does not divide 512 */
    assert_null(sharp_ppo_new(&cfg, sharp_cartpole_factory, NULL, err, sizeof err));
    assert_non_null(strstr(err, "n_minibatches"));
    sharp_ppo_config_default(&cfg);
    cfg.gamma = 1.5;
    assert_non_null(sharp_ppo_config_check(&cfg));
    sharp_ppo_config_default(&cfg);
    cfg.hidden[1] = 0;
    assert_non_null(sharp_ppo_config_check(&cfg));
}

/* ---------------- the policy file ---------------- */

static char tmpdir[256];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sharp-agent-test-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static sharp_policy_t *small_trained_looking_policy(void)
{
    const int hidden[] = {5, 3};
    sharp_policy_t *p = sharp_policy_new(4, 3, hidden, 2, true, 7.5);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 77);
    sharp_policy_init_weights(p, &rng);
    random_params(p->params, p->n_params, &rng, 0.3);
    double obs[4 * 10];
    for (int i = 0; i < 40; i++)
        obs[i] = sharp_rng_normal(&rng) * (i % 4 + 1);
    sharp_normalizer_update(&p->norm, obs, 10);
    return p;
}

static void write_bytes(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void expect_load_error(const char *path, const char *what)
{
    char err[512] = "";
    sharp_policy_t *p = sharp_policy_load(path, err, sizeof err);
    if (p) {
        sharp_policy_free(p);
        fail_msg("%s loaded, expected an error with '%s'", path, what);
    }
    if (!strstr(err, what))
        fail_msg("error '%s' does not say '%s'", err, what);
}

static void policy_file_round_trip(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/p.pol", tmpdir);
    sharp_policy_t *p = small_trained_looking_policy();
    char err[512];
    assert_int_equal(sharp_policy_save(p, path, err, sizeof err), 0);
    sharp_policy_t *q = sharp_policy_load(path, err, sizeof err);
    if (!q)
        fail_msg("%s", err);
    assert_int_equal(q->obs_dim, 4);
    assert_int_equal(q->n_actions, 3);
    assert_int_equal(q->n_hidden, 2);
    assert_int_equal(q->hidden[0], 5);
    assert_int_equal(q->hidden[1], 3);
    assert_true(q->norm_obs);
    assert_int_equal(q->n_params, p->n_params);
    assert_memory_equal(q->params, p->params, p->n_params * sizeof(double));
    assert_memory_equal(q->norm.mean, p->norm.mean, 4 * sizeof(double));
    assert_memory_equal(q->norm.var, p->norm.var, 4 * sizeof(double));
    assert_true(q->norm.count == p->norm.count && q->norm.clip == 7.5);
    /* the loaded policy acts and values as the saved one */
    double obs[4] = {0.3, -2.0, 1.0, 4.0};
    assert_true(sharp_policy_value(p, obs) == sharp_policy_value(q, obs));
    assert_int_equal(sharp_policy_act(p, obs, NULL), sharp_policy_act(q, obs, NULL));
    /* the file is exactly header + statistics + parameters + CRC */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal((size_t)sb.st_size, 64 + 16 * 4 + 8 * p->n_params + 4);
    /* no temporary file left behind */
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
    sharp_policy_free(p);
    sharp_policy_free(q);
    /* the CRC is zlib's: "123456789" -> cbf43926 */
    assert_int_equal(sharp_crc32(0, "123456789", 9), 0xcbf43926u);
}

static void policy_file_errors(void **state)
{
    (void)state;
    char path[300], bad[300], err[512];
    snprintf(path, sizeof path, "%s/good.pol", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.pol", tmpdir);
    sharp_policy_t *p = small_trained_looking_policy();
    assert_int_equal(sharp_policy_save(p, path, err, sizeof err), 0);
    size_t n;
    unsigned char *good = read_bytes(path, &n);
    unsigned char *b = malloc(n + 8);

    expect_load_error("/nonexistent/dir/none.pol", "cannot open");
    expect_load_error(tmpdir, "not a regular file");

    /* every truncation, the empty file included */
    for (size_t len = 0; len < n; len++) {
        write_bytes(bad, good, len);
        expect_load_error(bad, "truncated");
    }
    /* trailing bytes */
    memcpy(b, good, n);
    memset(b + n, 0, 8);
    write_bytes(bad, b, n + 8);
    expect_load_error(bad, "unexpected bytes");

    /* not ours */
    memcpy(b, good, n);
    b[0] = 'X';
    write_bytes(bad, b, n);
    expect_load_error(bad, "bad magic");
    write_bytes(bad, (const unsigned char *)"hello", 5);
    expect_load_error(bad, "bad magic");

    /* a later version, even with a valid checksum */
    memcpy(b, good, n);
    b[8] = 2;
    uint32_t crc = sharp_crc32(0, b, n - 4);
    for (int i = 0; i < 4; i++)
        b[n - 4 + i] = (unsigned char)(crc >> (8 * i));
    write_bytes(bad, b, n);
    expect_load_error(bad, "unsupported policy file version 2");

    /* one flipped bit anywhere is caught (checksum or header checks) */
    for (size_t i = 0; i < n; i++) {
        memcpy(b, good, n);
        b[i] ^= (unsigned char)(1u << (i % 8));
        write_bytes(bad, b, n);
        char e[512] = "";
        sharp_policy_t *q = sharp_policy_load(bad, e, sizeof e);
        if (q)
            fail_msg("byte %zu flipped: loaded anyway", i);
        assert_true(e[0] != '\0');
    }
    /* a payload bit names the checksum */
    memcpy(b, good, n);
    b[n / 2] ^= 0x10;
    write_bytes(bad, b, n);
    expect_load_error(bad, "checksum mismatch");
    /* a dimension out of bounds names the header */
    memcpy(b, good, n);
    b[15] = 0x7f; /* obs_dim huge */
    write_bytes(bad, b, n);
    expect_load_error(bad, "corrupt header");

    /* the largest dimensions the bounds allow, in a header-only file: the
     * size check refuses it before anything that big is allocated */
    memcpy(b, good, 64);
    const uint32_t big[] = {SHARP_POLICY_MAX_OBS, SHARP_POLICY_MAX_ACTIONS, 3, 4096, 4096, 4096};
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 4; j++)
            b[12 + 4 * k + j] = (unsigned char)(big[k] >> (8 * j));
    sharp_mlp_t ma, mc;
    int sz[] = {SHARP_POLICY_MAX_OBS, 4096, 4096, 4096, SHARP_POLICY_MAX_ACTIONS};
    assert_int_equal(sharp_mlp_shape(&ma, sz, 4), 0);
    sz[4] = 1;
    assert_int_equal(sharp_mlp_shape(&mc, sz, 4), 0);
    uint64_t np = ma.n_params + mc.n_params;
    for (int j = 0; j < 8; j++)
        b[40 + j] = (unsigned char)(np >> (8 * j));
    write_bytes(bad, b, 64);
    expect_load_error(bad, "truncated");

    /* a well-formed file with a NaN weight (checksum recomputed) */
    memcpy(b, good, n);
    memset(b + n - 12, 0xff, 8); /* the last parameter: a NaN pattern */
    crc = sharp_crc32(0, b, n - 4);
    for (int i = 0; i < 4; i++)
        b[n - 4 + i] = (unsigned char)(crc >> (8 * i));
    write_bytes(bad, b, n);
    expect_load_error(bad, "not a finite number");

    /* saving where it cannot be written says so */
    assert_int_equal(sharp_policy_save(p, "/nonexistent/dir/p.pol", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));

    free(b);
    free(good);
    sharp_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mlp_gradient_matches_finite_differences),
        cmocka_unit_test(mlp_forward_by_hand),
        cmocka_unit_test(mlp_orthogonal_init),
        cmocka_unit_test(policy_loss_gradient),
        cmocka_unit_test(policy_entropy_loss_gradient),
        cmocka_unit_test(value_loss_gradient),
        cmocka_unit_test(full_loss_gradient),
        cmocka_unit_test(loss_values_by_hand),
        cmocka_unit_test(gae_by_hand),
        cmocka_unit_test(adam_by_hand),
        cmocka_unit_test(cartpole_dynamics),
        cmocka_unit_test(cartpole_baselines),
        cmocka_unit_test(normalizer_matches_batch_statistics),
        cmocka_unit_test(rng_streams),
        cmocka_unit_test(training_is_deterministic),
        cmocka_unit_test(config_is_checked),
        cmocka_unit_test(policy_file_round_trip),
        cmocka_unit_test(policy_file_errors),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}

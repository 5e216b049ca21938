/* cartpole.c: see cartpole.h. The dynamics follow gym's cartpole.py line
 * by line (which follows Florian's corrected equations for the cart-pole
 * system); the state stays in double precision, as numpy keeps it there. */
#include "cartpole.h"

#include <math.h>
#include <stdlib.h>

#include "agent_util.h"

static void cartpole_observe(const sharp_cartpole_t *c, double *obs)
{
    obs[0] = c->x;
    obs[1] = c->x_dot;
    obs[2] = c->theta;
    obs[3] = c->theta_dot;
}

static void cartpole_reset(sharp_env_t *e, double *obs)
{
    sharp_cartpole_t *c = (sharp_cartpole_t *)e;
    c->x = sharp_rng_range(&c->rng, -0.05, 0.05);
    c->x_dot = sharp_rng_range(&c->rng, -0.05, 0.05);
    c->theta = sharp_rng_range(&c->rng, -0.05, 0.05);
    c->theta_dot = sharp_rng_range(&c->rng, -0.05, 0.05);
    c->steps = 0;
    cartpole_observe(c, obs);
}

static void cartpole_step(sharp_env_t *e, int action, double *obs, double *reward, bool *terminated,
                          bool *truncated)
{
    sharp_cartpole_t *c = (sharp_cartpole_t *)e;
    const double total_mass = SHARP_CARTPOLE_MASSPOLE + SHARP_CARTPOLE_MASSCART;
    const double polemass_length = SHARP_CARTPOLE_MASSPOLE * SHARP_CARTPOLE_LENGTH;
    double force = action == 1 ? SHARP_CARTPOLE_FORCE_MAG : -SHARP_CARTPOLE_FORCE_MAG;
    double costheta = cos(c->theta), sintheta = sin(c->theta);
    double temp = (force + polemass_length * c->theta_dot * c->theta_dot * sintheta) / total_mass;
    double thetaacc = (SHARP_CARTPOLE_GRAVITY * sintheta - costheta * temp) /
                      (SHARP_CARTPOLE_LENGTH * (4.0 / 3.0 - SHARP_CARTPOLE_MASSPOLE * costheta * costheta / total_mass));
    double xacc = temp - polemass_length * thetaacc * costheta / total_mass;

    /* Explicit Euler: positions move with the old velocities. */
    c->x = c->x + SHARP_CARTPOLE_TAU * c->x_dot;
    c->x_dot = c->x_dot + SHARP_CARTPOLE_TAU * xacc;
    c->theta = c->theta + SHARP_CARTPOLE_TAU * c->theta_dot;
    c->theta_dot = c->theta_dot + SHARP_CARTPOLE_TAU * thetaacc;
    c->steps++;

    *terminated = c->x < -SHARP_CARTPOLE_X_THRESHOLD || c->x > SHARP_CARTPOLE_X_THRESHOLD ||
                  c->theta < -SHARP_CARTPOLE_THETA_THRESHOLD || c->theta > SHARP_CARTPOLE_THETA_THRESHOLD;
    /* The time limit cuts an episode that did not end on its own (gym's
     * TimeLimit reports both when they coincide; a terminal state has no
     * future to bootstrap, so termination wins here). */
    *truncated = !*terminated && c->steps >= SHARP_CARTPOLE_MAX_STEPS;
    *reward = 1.0;
    cartpole_observe(c, obs);
}

static void cartpole_destroy(sharp_env_t *e)
{
    free(e);
}

static const sharp_env_ops_t cartpole_ops = {
    .reset = cartpole_reset,
    .step = cartpole_step,
    .destroy = cartpole_destroy,
};

sharp_env_t *sharp_cartpole_new(uint64_t seed)
{
    sharp_cartpole_t *c = agent_calloc(1, sizeof *c);
    c->env.ops = &cartpole_ops;
    c->env.name = "cartpole";
    c->env.obs_dim = 4;
    c->env.n_actions = 2;
    sharp_rng_seed(&c->rng, seed);
    return &c->env;
}

sharp_env_t *sharp_cartpole_factory(void *arg, int index, uint64_t seed)
{
    (void)arg;
    (void)index;
    return sharp_cartpole_new(seed);
}

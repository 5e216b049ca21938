/* cartpole.h: the classic cart-pole balancing task (Barto, Sutton &
 * Anderson 1983) as gym/gymnasium's CartPole-v1 defines it: the same
 * constants, equations of motion, explicit Euler integration, termination
 * thresholds, reward of 1 per step (the terminating step included) and
 * truncation after 500 steps. Observation: cart position, cart velocity,
 * pole angle, pole angular velocity. Actions: 0 pushes left, 1 right.
 *
 * The trainer's benchmark: PPO that works solves it (a mean return of 475
 * over 100 consecutive episodes) well within 500k steps. */
#ifndef SHARP_AGENT_CARTPOLE_H
#define SHARP_AGENT_CARTPOLE_H

#include <math.h>

#include "env.h"
#include "rng.h"

#define SHARP_CARTPOLE_GRAVITY 9.8
#define SHARP_CARTPOLE_MASSCART 1.0
#define SHARP_CARTPOLE_MASSPOLE 0.1
#define SHARP_CARTPOLE_LENGTH 0.5 /* half the pole's length */
#define SHARP_CARTPOLE_FORCE_MAG 10.0
#define SHARP_CARTPOLE_TAU 0.02 /* seconds per step */
#define SHARP_CARTPOLE_THETA_THRESHOLD (12.0 * 2.0 * M_PI / 360.0)
#define SHARP_CARTPOLE_X_THRESHOLD 2.4
#define SHARP_CARTPOLE_MAX_STEPS 500
#define SHARP_CARTPOLE_SOLVED_RETURN 475.0

typedef struct {
    sharp_env_t env;
    double x, x_dot, theta, theta_dot;
    int steps; /* in this episode */
    sharp_rng_t rng;
} sharp_cartpole_t;

sharp_env_t *sharp_cartpole_new(uint64_t seed);
/* A sharp_env_factory_t making cart-poles. */
sharp_env_t *sharp_cartpole_factory(void *arg, int index, uint64_t seed);

#endif

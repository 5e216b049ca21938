/* env.h: what the trainer needs from an environment.
 *
 * An episodic task with a fixed-size observation vector and a discrete set
 * of actions. CartPole implements it today; a simulator of the proxy's
 * scaling decisions plugs in the same way. An environment owns its own
 * random generator (seeded at creation), so a training run is reproducible
 * from its seed. */
#ifndef SHARP_AGENT_ENV_H
#define SHARP_AGENT_ENV_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sharp_env sharp_env_t;

typedef struct {
    /* Starts an episode; writes the first observation (obs_dim values). */
    void (*reset)(sharp_env_t *env, double *obs);
    /* Applies `action` (0 <= action < n_actions) and writes the next
     * observation and reward. `terminated`: the task reached a terminal
     * state (nothing follows it). `truncated`: the episode was cut off
     * (time limit) in a state that has a future, which the trainer
     * bootstraps from its value estimate. After either, the caller resets
     * before stepping again. */
    void (*step)(sharp_env_t *env, int action, double *obs, double *reward, bool *terminated,
                 bool *truncated);
    void (*destroy)(sharp_env_t *env);
} sharp_env_ops_t;

struct sharp_env {
    const sharp_env_ops_t *ops;
    const char *name;
    int obs_dim;
    int n_actions;
};

/* Makes the environment number `index` of a training run, seeded with
 * `seed` (already distinct per index). */
typedef sharp_env_t *(*sharp_env_factory_t)(void *arg, int index, uint64_t seed);

static inline void sharp_env_reset(sharp_env_t *e, double *obs)
{
    e->ops->reset(e, obs);
}

static inline void sharp_env_step(sharp_env_t *e, int action, double *obs, double *reward, bool *terminated,
                                  bool *truncated)
{
    e->ops->step(e, action, obs, reward, terminated, truncated);
}

static inline void sharp_env_destroy(sharp_env_t *e)
{
    if (e)
        e->ops->destroy(e);
}

#endif

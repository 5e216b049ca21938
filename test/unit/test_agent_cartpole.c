/* PPO solves CartPole-v1: from a fresh seed, within 500k training
 * environment steps, the policy reaches a mean return of at least 475
 * over 100 consecutive evaluation episodes (fresh episodes, actions drawn
 * from the policy as it trains, not its most probable ones). Then the
 * trained policy goes through the policy file and evaluates the same
 * after loading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/cartpole.h"
#include "agent/policy_file.h"
#include "agent/ppo.h"
#include "agent/train.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void evaluate_with(sharp_policy_t *p, uint64_t seed, double *returns)
{
    sharp_env_t *env = sharp_cartpole_new(seed);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, seed + 1);
    sharp_ppo_evaluate(p, env, 100, &rng, 100000, returns, NULL);
    sharp_env_destroy(env);
}

static void solve(uint64_t seed)
{
    sharp_ppo_config_t cfg;
    sharp_ppo_config_default(&cfg);
    cfg.seed = seed;
    char err[512];
    sharp_ppo_t *ppo = sharp_ppo_new(&cfg, sharp_cartpole_factory, NULL, err, sizeof err);
    assert_non_null(ppo);
    sharp_train_opts_t opts;
    sharp_train_opts_default(&opts);
    assert_int_equal(opts.max_steps, 500000);
    assert_int_equal(opts.eval_episodes, 100);
    assert_true(opts.target == SHARP_CARTPOLE_SOLVED_RETURN && opts.target == 475.0);
    assert_false(opts.greedy_eval);
    sharp_train_result_t res;
    double t0 = now();
    sharp_train_run(ppo, sharp_cartpole_factory, NULL, &opts, &res);
    printf("# seed %llu: %s at %lld training steps, evaluation mean %.2f (min %.0f) after %d evaluations, "
           "%.1fs\n",
           (unsigned long long)seed, res.solved ? "solved" : "NOT solved", res.solved ? res.solved_at : res.steps,
           res.eval_mean, res.eval_min, res.evaluations, now() - t0);
    assert_true(res.solved);
    assert_true(res.solved_at <= 500000);
    assert_true(res.eval_mean >= 475.0);

    /* Through the policy file: the loaded policy plays the same episodes
     * exactly as the trained one. */
    char path[] = "/tmp/sharp-agent-cartpole-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    sharp_policy_t *trained = sharp_ppo_policy(ppo);
    assert_int_equal(sharp_policy_save(trained, path, err, sizeof err), 0);
    sharp_policy_t *loaded = sharp_policy_load(path, err, sizeof err);
    unlink(path);
    if (!loaded)
        fail_msg("%s", err);
    double a[100], b[100];
    evaluate_with(trained, seed + 1000, a);
    evaluate_with(loaded, seed + 1000, b);
    assert_memory_equal(a, b, sizeof a);
    sharp_policy_free(loaded);
    sharp_ppo_free(ppo);
}

static void cartpole_solved_seed_1(void **state)
{
    (void)state;
    solve(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cartpole_solved_seed_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

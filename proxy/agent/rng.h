/* rng.h: the scaling agent's seeded random numbers.
 *
 * xoshiro256** seeded through splitmix64: fast, good enough for sampling
 * actions and shuffling minibatches, and above all reproducible. Every
 * consumer (each environment, the action sampler, the minibatch shuffler,
 * the weight initializer) owns its own generator derived from the one
 * training seed, so adding draws in one place never shifts another's
 * stream, and a run is bit-identical given its seed. */
#ifndef SHARP_AGENT_RNG_H
#define SHARP_AGENT_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} sharp_rng_t;

/* Expands `seed` with splitmix64; any seed (0 included) gives a valid state. */
void sharp_rng_seed(sharp_rng_t *r, uint64_t seed);
uint64_t sharp_rng_next(sharp_rng_t *r);
/* The seed of an independent child stream number `stream` of `seed`. */
uint64_t sharp_rng_derive(uint64_t seed, uint64_t stream);
/* Uniform in [0, 1) with 53 random bits. */
double sharp_rng_uniform(sharp_rng_t *r);
/* Uniform in [lo, hi). */
double sharp_rng_range(sharp_rng_t *r, double lo, double hi);
/* Standard normal (Box-Muller; two uniforms per draw, no cached spare so the
 * stream position depends only on the number of calls). */
double sharp_rng_normal(sharp_rng_t *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint32_t sharp_rng_below(sharp_rng_t *r, uint32_t n);
/* Fisher-Yates shuffle. */
void sharp_rng_shuffle(sharp_rng_t *r, int *a, int n);
/* An index drawn with probabilities p[0..n-1] (which sum to 1; rounding is
 * absorbed by the last index with non-zero probability). */
int sharp_rng_categorical(sharp_rng_t *r, const double *p, int n);

#endif

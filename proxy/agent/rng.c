/* rng.c: see rng.h. */
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sharp_rng_seed(sharp_rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t sharp_rng_next(sharp_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t sharp_rng_derive(uint64_t seed, uint64_t stream)
{
    /* Two splitmix rounds over (seed, stream) so that nearby seeds and
     * nearby streams land far apart. */
    uint64_t x = seed;
    uint64_t a = splitmix64(&x);
    x = a ^ (stream * 0xd1b54a32d192ed03ULL);
    return splitmix64(&x);
}

double sharp_rng_uniform(sharp_rng_t *r)
{
    return (double)(sharp_rng_next(r) >> 11) * 0x1.0p-53;
}

double sharp_rng_range(sharp_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * sharp_rng_uniform(r);
}

double sharp_rng_normal(sharp_rng_t *r)
{
    /* 1 - u is in (0, 1]: log never sees 0. */
    double u1 = 1.0 - sharp_rng_uniform(r);
    double u2 = sharp_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint32_t sharp_rng_below(sharp_rng_t *r, uint32_t n)
{
    /* Lemire's multiply-and-reject. */
    uint64_t m = (uint64_t)(uint32_t)(sharp_rng_next(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)-n % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(sharp_rng_next(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void sharp_rng_shuffle(sharp_rng_t *r, int *a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)sharp_rng_below(r, (uint32_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

int sharp_rng_categorical(sharp_rng_t *r, const double *p, int n)
{
    double u = sharp_rng_uniform(r);
    double acc = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0.0)
            continue;
        last = i;
        acc += p[i];
        if (u < acc)
            return i;
    }
    return last;
}

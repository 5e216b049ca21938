/* adam.c: see adam.h. */
#include "adam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

void sharp_adam_init(sharp_adam_t *a, size_t n, double beta1, double beta2, double eps)
{
    memset(a, 0, sizeof *a);
    a->n = n;
    a->beta1 = beta1;
    a->beta2 = beta2;
    a->eps = eps;
    a->m = agent_calloc(n, sizeof *a->m);
    a->v = agent_calloc(n, sizeof *a->v);
}

void sharp_adam_free(sharp_adam_t *a)
{
    free(a->m);
    free(a->v);
    memset(a, 0, sizeof *a);
}

void sharp_adam_step(sharp_adam_t *a, double *params, const double *grads, double lr)
{
    a->t++;
    double bc1 = 1.0 - pow(a->beta1, (double)a->t);
    double bc2 = 1.0 - pow(a->beta2, (double)a->t);
    double step = lr / bc1;
    double sqrt_bc2 = sqrt(bc2);
    for (size_t i = 0; i < a->n; i++) {
        double g = grads[i];
        a->m[i] = a->beta1 * a->m[i] + (1.0 - a->beta1) * g;
        a->v[i] = a->beta2 * a->v[i] + (1.0 - a->beta2) * g * g;
        double denom = sqrt(a->v[i]) / sqrt_bc2 + a->eps;
        params[i] -= step * a->m[i] / denom;
    }
}

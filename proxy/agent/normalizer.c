/* normalizer.c: see normalizer.h. */
#include "normalizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

void sharp_normalizer_init(sharp_normalizer_t *n, int dim, double clip)
{
    n->dim = dim;
    n->count = 0.0;
    n->clip = clip;
    n->mean = agent_calloc((size_t)dim, sizeof *n->mean);
    n->var = agent_calloc((size_t)dim, sizeof *n->var);
    for (int i = 0; i < dim; i++)
        n->var[i] = 1.0;
}

void sharp_normalizer_free(sharp_normalizer_t *n)
{
    free(n->mean);
    free(n->var);
    n->mean = n->var = NULL;
}

void sharp_normalizer_update(sharp_normalizer_t *n, const double *x, int rows)
{
    if (rows <= 0)
        return;
    double nb = (double)rows;
    double tot = n->count + nb;
    for (int j = 0; j < n->dim; j++) {
        double bm = 0.0;
        for (int r = 0; r < rows; r++)
            bm += x[r * n->dim + j];
        bm /= nb;
        double bv = 0.0;
        for (int r = 0; r < rows; r++) {
            double d = x[r * n->dim + j] - bm;
            bv += d * d;
        }
        bv /= nb;
        double delta = bm - n->mean[j];
        double m2 = n->var[j] * n->count + bv * nb + delta * delta * n->count * nb / tot;
        n->mean[j] += delta * nb / tot;
        n->var[j] = m2 / tot;
    }
    n->count = tot;
}

void sharp_normalizer_apply(const sharp_normalizer_t *n, const double *x, double *out)
{
    for (int j = 0; j < n->dim; j++) {
        double v = (x[j] - n->mean[j]) / sqrt(n->var[j] + SHARP_NORMALIZER_EPS_VAR);
        if (v > n->clip)
            v = n->clip;
        else if (v < -n->clip)
            v = -n->clip;
        out[j] = v;
    }
}

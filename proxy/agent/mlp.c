/* mlp.c: see mlp.h. */
#include "mlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

int sharp_mlp_shape(sharp_mlp_t *m, const int *sizes, int n_layers)
{
    memset(m, 0, sizeof *m);
    if (n_layers < 1 || n_layers > SHARP_MLP_MAX_LAYERS)
        return -1;
    for (int l = 0; l <= n_layers; l++) {
        if (sizes[l] < 1 || sizes[l] > SHARP_MLP_MAX_WIDTH)
            return -1;
        m->sizes[l] = sizes[l];
    }
    m->n_layers = n_layers;
    size_t n = 0;
    for (int l = 0; l < n_layers; l++) {
        m->offset[l] = n;
        n += (size_t)sizes[l] * (size_t)sizes[l + 1] + (size_t)sizes[l + 1];
    }
    m->n_params = n;
    return 0;
}

void sharp_mlp_bind(sharp_mlp_t *m, double *params, double *grads)
{
    m->params = params;
    m->grads = grads;
}

/* Fills the rows x cols matrix a (row-major, rows >= cols) with orthonormal
 * columns: Gram-Schmidt (twice, for accuracy) on Gaussian columns, which is
 * QR of a Gaussian matrix with R's diagonal made positive, the usual
 * orthogonal initialization. */
static void orthonormal_columns(double *a, int rows, int cols, sharp_rng_t *rng)
{
    for (int i = 0; i < rows * cols; i++)
        a[i] = sharp_rng_normal(rng);
    for (int j = 0; j < cols; j++) {
        for (int pass = 0; pass < 2; pass++) {
            for (int k = 0; k < j; k++) {
                double dot = 0.0;
                for (int i = 0; i < rows; i++)
                    dot += a[i * cols + j] * a[i * cols + k];
                for (int i = 0; i < rows; i++)
                    a[i * cols + j] -= dot * a[i * cols + k];
            }
        }
        double norm = 0.0;
        for (int i = 0; i < rows; i++)
            norm += a[i * cols + j] * a[i * cols + j];
        norm = sqrt(norm);
        if (norm < 1e-12) {
            /* A degenerate draw (probability zero): take a unit vector. */
            for (int i = 0; i < rows; i++)
                a[i * cols + j] = (i == j) ? 1.0 : 0.0;
            continue;
        }
        for (int i = 0; i < rows; i++)
            a[i * cols + j] /= norm;
    }
}

void sharp_mlp_init_orthogonal(sharp_mlp_t *m, sharp_rng_t *rng, double hidden_gain, double out_gain)
{
    for (int l = 0; l < m->n_layers; l++) {
        int in = m->sizes[l], out = m->sizes[l + 1];
        double gain = (l == m->n_layers - 1) ? out_gain : hidden_gain;
        int rows = in > out ? in : out, cols = in > out ? out : in;
        double *a = agent_calloc((size_t)rows * cols, sizeof *a);
        orthonormal_columns(a, rows, cols, rng);
        double *w = m->params + m->offset[l];
        /* The (out x in) weight matrix is a when out >= in, a's transpose
         * otherwise; w stores it input-major. */
        for (int i = 0; i < in; i++)
            for (int o = 0; o < out; o++)
                w[i * out + o] = gain * (out >= in ? a[o * cols + i] : a[i * cols + o]);
        memset(w + (size_t)in * out, 0, (size_t)out * sizeof *w);
        free(a);
    }
}

void sharp_mlp_cache_init(sharp_mlp_cache_t *c, const sharp_mlp_t *m, int cap)
{
    memset(c, 0, sizeof *c);
    c->cap = cap;
    int w = 0;
    for (int l = 0; l <= m->n_layers; l++) {
        c->act[l] = agent_calloc((size_t)cap * m->sizes[l], sizeof(double));
        if (m->sizes[l] > w)
            w = m->sizes[l];
    }
    c->max_width = w;
    size_t wt = 0;
    for (int l = 0; l < m->n_layers; l++)
        if ((size_t)m->sizes[l] * m->sizes[l + 1] > wt)
            wt = (size_t)m->sizes[l] * m->sizes[l + 1];
    c->wt = agent_calloc(wt, sizeof(double));
    c->delta = agent_calloc((size_t)cap * w, sizeof(double));
    c->delta_prev = agent_calloc((size_t)cap * w, sizeof(double));
}

void sharp_mlp_cache_free(sharp_mlp_cache_t *c)
{
    for (int l = 0; l <= SHARP_MLP_MAX_LAYERS; l++)
        free(c->act[l]);
    free(c->delta);
    free(c->delta_prev);
    free(c->wt);
    memset(c, 0, sizeof *c);
}

double sharp_mlp_tanh(double x)
{
    /* expm1 keeps full precision near 0 and is cheaper than libm's tanh;
     * past |x| = 20, tanh is 1 to double precision. */
    if (x > 20.0)
        return 1.0;
    if (x < -20.0)
        return -1.0;
    double e = expm1(2.0 * x);
    return e / (e + 2.0);
}

/* The three products of a layer, blocked so that a 2 x 8 tile of results
 * accumulates in registers (the compiler turns the fixed eight-lane loops
 * into vector code) while the inner loop streams one operand: each loaded
 * weight serves two rows. Every result's terms are summed in the same
 * order whatever the blocking (bias first, then input by input; row by
 * row for gradients), so a row's output does not depend on the batch it
 * came in, and results do not depend on the build. */
#define BLOCK 8
#define UNROLL _Pragma("GCC unroll 8")

/* Y[r][o] = bias[o] (or 0) + sum_i X[r][i] M[i][o]; M is in x out,
 * row-major. */
static void gemm_rows(double *restrict y, const double *restrict x, const double *restrict m,
                      const double *restrict bias, int rows, int in, int out)
{
    int r = 0;
    for (; r + 2 <= rows; r += 2) {
        const double *x0 = x + (size_t)r * in, *x1 = x0 + in;
        double *y0 = y + (size_t)r * out, *y1 = y0 + out;
        int o = 0;
        for (; o + BLOCK <= out; o += BLOCK) {
            double a0[BLOCK], a1[BLOCK];
            UNROLL for (int k = 0; k < BLOCK; k++)
                a0[k] = a1[k] = bias ? bias[o + k] : 0.0;
            for (int i = 0; i < in; i++) {
                double v0 = x0[i], v1 = x1[i];
                const double *mi = m + (size_t)i * out + o;
                UNROLL for (int k = 0; k < BLOCK; k++) {
                    a0[k] += v0 * mi[k];
                    a1[k] += v1 * mi[k];
                }
            }
            UNROLL for (int k = 0; k < BLOCK; k++) {
                y0[o + k] = a0[k];
                y1[o + k] = a1[k];
            }
        }
        for (; o < out; o++) {
            double a0 = bias ? bias[o] : 0.0, a1 = a0;
            for (int i = 0; i < in; i++) {
                a0 += x0[i] * m[(size_t)i * out + o];
                a1 += x1[i] * m[(size_t)i * out + o];
            }
            y0[o] = a0;
            y1[o] = a1;
        }
    }
    for (; r < rows; r++) {
        const double *xr = x + (size_t)r * in;
        double *yr = y + (size_t)r * out;
        int o = 0;
        for (; o + BLOCK <= out; o += BLOCK) {
            double acc[BLOCK];
            UNROLL for (int k = 0; k < BLOCK; k++)
                acc[k] = bias ? bias[o + k] : 0.0;
            for (int i = 0; i < in; i++) {
                double xi = xr[i];
                const double *mi = m + (size_t)i * out + o;
                UNROLL for (int k = 0; k < BLOCK; k++)
                    acc[k] += xi * mi[k];
            }
            UNROLL for (int k = 0; k < BLOCK; k++)
                yr[o + k] = acc[k];
        }
        for (; o < out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < in; i++)
                acc += xr[i] * m[(size_t)i * out + o];
            yr[o] = acc;
        }
    }
}

/* G[i][o] += sum_r X[r][i] D[r][o] and gb[o] += sum_r D[r][o]: the weight
 * and bias gradients of a batch, each summed over the rows first. Two
 * inputs at a time share the loads of D. */
static void grad_weights(double *restrict g, double *restrict gb, const double *restrict x,
                         const double *restrict d, int rows, int in, int out)
{
    int i = 0;
    for (; i + 2 <= in; i += 2) {
        double *g0 = g + (size_t)i * out, *g1 = g0 + out;
        int o = 0;
        for (; o + BLOCK <= out; o += BLOCK) {
            double a0[BLOCK] = {0}, a1[BLOCK] = {0};
            for (int r = 0; r < rows; r++) {
                double v0 = x[(size_t)r * in + i], v1 = x[(size_t)r * in + i + 1];
                const double *dr = d + (size_t)r * out + o;
                UNROLL for (int k = 0; k < BLOCK; k++) {
                    a0[k] += v0 * dr[k];
                    a1[k] += v1 * dr[k];
                }
            }
            UNROLL for (int k = 0; k < BLOCK; k++) {
                g0[o + k] += a0[k];
                g1[o + k] += a1[k];
            }
        }
        for (; o < out; o++) {
            double a0 = 0.0, a1 = 0.0;
            for (int r = 0; r < rows; r++) {
                a0 += x[(size_t)r * in + i] * d[(size_t)r * out + o];
                a1 += x[(size_t)r * in + i + 1] * d[(size_t)r * out + o];
            }
            g0[o] += a0;
            g1[o] += a1;
        }
    }
    for (; i < in; i++) {
        double *gi = g + (size_t)i * out;
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int r = 0; r < rows; r++)
                acc += x[(size_t)r * in + i] * d[(size_t)r * out + o];
            gi[o] += acc;
        }
    }
    for (int o = 0; o < out; o++) {
        double acc = 0.0;
        for (int r = 0; r < rows; r++)
            acc += d[(size_t)r * out + o];
        gb[o] += acc;
    }
}

const double *sharp_mlp_forward(const sharp_mlp_t *m, sharp_mlp_cache_t *c, const double *x, int rows)
{
    memcpy(c->act[0], x, (size_t)rows * m->sizes[0] * sizeof *x);
    for (int l = 0; l < m->n_layers; l++) {
        int in = m->sizes[l], out = m->sizes[l + 1];
        const double *w = m->params + m->offset[l];
        double *y = c->act[l + 1];
        gemm_rows(y, c->act[l], w, w + (size_t)in * out, rows, in, out);
        if (l < m->n_layers - 1)
            for (int k = 0; k < rows * out; k++)
                y[k] = sharp_mlp_tanh(y[k]);
    }
    return c->act[m->n_layers];
}

void sharp_mlp_backward(const sharp_mlp_t *m, sharp_mlp_cache_t *c, const double *dout, int rows)
{
    int L = m->n_layers;
    memcpy(c->delta, dout, (size_t)rows * m->sizes[L] * sizeof *dout);
    for (int l = L - 1; l >= 0; l--) {
        int in = m->sizes[l], out = m->sizes[l + 1];
        const double *w = m->params + m->offset[l];
        double *gw = m->grads + m->offset[l];
        grad_weights(gw, gw + (size_t)in * out, c->act[l], c->delta, rows, in, out);
        if (l == 0)
            break; /* nobody needs the gradient of the input */
        /* Back through W (a product with its transpose, which gemm_rows
         * wants laid out out x in), then through the tanh that produced
         * act[l]: tanh' = 1 - tanh^2. */
        for (int i = 0; i < in; i++)
            for (int o = 0; o < out; o++)
                c->wt[(size_t)o * in + i] = w[(size_t)i * out + o];
        gemm_rows(c->delta_prev, c->delta, c->wt, NULL, rows, out, in);
        const double *a = c->act[l];
        for (int k = 0; k < rows * in; k++)
            c->delta_prev[k] *= 1.0 - a[k] * a[k];
        double *t = c->delta;
        c->delta = c->delta_prev;
        c->delta_prev = t;
    }
}

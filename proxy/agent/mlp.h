/* mlp.h: a small fully connected network with tanh hidden layers and a
 * linear output layer, its forward pass over a batch and the backward pass
 * that accumulates parameter gradients.
 *
 * The network does not own its parameters: it is a view into a flat array
 * (and a gradient array of the same layout), so the actor and the critic of
 * a policy live in one vector that Adam, gradient clipping and the weight
 * file treat as a whole. Layer l stores its weights input-major,
 * W_l[i * out + o], then its biases b_l[o]: the forward pass and the weight
 * gradient then run contiguous multiply-add loops over the outputs (the
 * backward pass through W uses a transposed copy for the same reason).
 *
 * Everything is double: finite-difference gradient checks stay meaningful,
 * and the networks are small enough that the cost does not matter. */
#ifndef SHARP_AGENT_MLP_H
#define SHARP_AGENT_MLP_H

#include <stddef.h>

#include "rng.h"

/* Weight layers (hidden layers + the output layer). */
#define SHARP_MLP_MAX_LAYERS 4
/* Widest layer accepted (also bounds what a weight file may ask for). */
#define SHARP_MLP_MAX_WIDTH 4096

typedef struct {
    int n_layers;                        /* weight layers */
    int sizes[SHARP_MLP_MAX_LAYERS + 1]; /* sizes[0] input .. sizes[n_layers] output */
    size_t offset[SHARP_MLP_MAX_LAYERS]; /* where layer l's weights start */
    size_t n_params;
    double *params; /* not owned */
    double *grads;  /* not owned; may be NULL when only forward runs */
} sharp_mlp_t;

/* Activations of one forward pass, kept for the backward pass. */
typedef struct {
    int cap; /* rows */
    int max_width;
    double *act[SHARP_MLP_MAX_LAYERS + 1]; /* act[0] input copy, act[l] layer l's output */
    double *delta, *delta_prev;            /* backward scratch, cap x max_width */
    double *wt;                            /* a layer's weights transposed */
} sharp_mlp_cache_t;

/* Sets the shape (sizes[0..n_layers]); 0, or -1 if the shape is out of
 * bounds. Binds nothing yet. */
int sharp_mlp_shape(sharp_mlp_t *m, const int *sizes, int n_layers);
void sharp_mlp_bind(sharp_mlp_t *m, double *params, double *grads);
/* Orthogonal weights scaled by `hidden_gain` (hidden layers) and
 * `out_gain` (output layer), zero biases. */
void sharp_mlp_init_orthogonal(sharp_mlp_t *m, sharp_rng_t *rng, double hidden_gain, double out_gain);

void sharp_mlp_cache_init(sharp_mlp_cache_t *c, const sharp_mlp_t *m, int cap);
void sharp_mlp_cache_free(sharp_mlp_cache_t *c);

/* x is rows x sizes[0]; returns the rows x sizes[n_layers] output, which
 * lives in the cache until the next forward. rows <= cache cap. */
const double *sharp_mlp_forward(const sharp_mlp_t *m, sharp_mlp_cache_t *c, const double *x, int rows);
/* Adds the gradient of a loss to m->grads, given dout = dLoss/dOutput
 * (rows x sizes[n_layers]) for the batch of the last forward. */
void sharp_mlp_backward(const sharp_mlp_t *m, sharp_mlp_cache_t *c, const double *dout, int rows);

/* tanh as the network computes it (shared with the tests). */
double sharp_mlp_tanh(double x);

#endif

/* adam.h: the Adam optimizer (Kingma & Ba) over one flat parameter vector,
 * computed as PyTorch's torch.optim.Adam does (bias corrections applied to
 * the step size and to sqrt(v) separately, eps added after the square
 * root), so hyper-parameters tuned there carry over. */
#ifndef SHARP_AGENT_ADAM_H
#define SHARP_AGENT_ADAM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t n;
    double beta1, beta2, eps;
    uint64_t t; /* steps taken */
    double *m, *v;
} sharp_adam_t;

void sharp_adam_init(sharp_adam_t *a, size_t n, double beta1, double beta2, double eps);
void sharp_adam_free(sharp_adam_t *a);
/* One step: params -= lr * mhat / (sqrt(vhat) + eps). */
void sharp_adam_step(sharp_adam_t *a, double *params, const double *grads, double lr);

#endif

/* normalizer.h: observation normalization with running statistics.
 *
 * The mean and (population) variance of every observation component over
 * everything seen so far, merged batch by batch (Chan et al.'s parallel
 * algorithm, as gym's RunningMeanStd). Unlike RunningMeanStd there is no
 * pseudo-observation at mean 0, variance 1 to start from: it would stay in
 * the variance of a feature with a large mean and a small spread (a request
 * rate around 1000) for a long time; before the first update the
 * normalizer is the identity (mean 0, variance 1). Observations are then centred, scaled and clipped, so that
 * features of very different scales (a cart position in metres, a request
 * rate in thousands) reach the network in the same range. Training updates
 * the statistics; a deployed policy uses the frozen ones saved with its
 * weights. */
#ifndef SHARP_AGENT_NORMALIZER_H
#define SHARP_AGENT_NORMALIZER_H

typedef struct {
    int dim;
    double count;
    double clip; /* normalized values are clipped to [-clip, clip] */
    double *mean, *var;
} sharp_normalizer_t;

#define SHARP_NORMALIZER_EPS_VAR 1e-8

void sharp_normalizer_init(sharp_normalizer_t *n, int dim, double clip);
void sharp_normalizer_free(sharp_normalizer_t *n);
/* Merges `rows` observations (rows x dim) into the statistics. */
void sharp_normalizer_update(sharp_normalizer_t *n, const double *x, int rows);
/* out = clip((x - mean) / sqrt(var + eps)); out may be x. */
void sharp_normalizer_apply(const sharp_normalizer_t *n, const double *x, double *out);

#endif

/* scaling_config.h: the scaling agent's bootstrap extension
 * (sharp.extensions.scaling.v1.ScalingAgent) translated into the plain
 * configuration proxy/scaling.c runs.
 *
 * The weights files are loaded here, so that `--mode validate` reports a
 * missing or corrupt file, or a policy trained for another environment, as
 * the error of its field. A running server does not refuse to start for
 * them: traffic does not depend on the agent, so the cluster's agent starts
 * without a policy, logs the error, reports it on /scaling and recommends
 * the HPA rule's count (the guardian's fallback) until a valid file is
 * configured. Everything else that is wrong (an unknown cluster, max below
 * min, a cluster named twice) is a config error either way. */
#ifndef SHARP_CONFIG_SCALING_CONFIG_H
#define SHARP_CONFIG_SCALING_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "agent/live.h"

#define SHARP_SCALING_TYPE "sharp.extensions.scaling.v1.ScalingAgent"

typedef struct {
    char *cluster;
    char *weights_path;
    sharp_scaling_live_config_t live;
    sharp_policy_t *policy; /* NULL: policy_error says why */
    char policy_error[600];
} sharp_scaling_cluster_config_t;

typedef struct sharp_scaling_agent_config {
    sharp_scaling_cluster_config_t *clusters;
    size_t n;
} sharp_scaling_agent_config_t;

/* Translates a ScalingAgent message. With strict_weights a weights file
 * that does not load is an error; without, it is kept in policy_error.
 * Returns the config, or NULL with the field path and message. */
sharp_scaling_agent_config_t *sharp_config_scaling(const ProtobufCMessage *msg, const char *path, bool strict_weights,
                                                   char *epath, size_t epathlen, char *emsg, size_t emsglen);
void sharp_scaling_agent_config_free(sharp_scaling_agent_config_t *c);

#endif

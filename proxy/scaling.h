/* scaling.h: the scaling agent, live (the bootstrap extension
 * sharp.extensions.scaling.v1.ScalingAgent, config/scaling_config.h).
 *
 * Main thread only. A one-second timer samples each scaled cluster (its
 * requests in flight, and the p99 of the second's upstream_rq_time
 * values); every sync period the period's counters (upstream_rq_total,
 * upstream_rq_5xx, upstream_rq_pending_overflow) and samples become the
 * signals of agent/live.h, whose controller runs the policy, the HPA rule
 * and the guardian. The workers are not involved: they only count, as they
 * do anyway.
 *
 * Outputs: /scaling on the admin listener (sharp_scaling_render_json); the
 * stats scaling.<cluster>.{desired_replicas, hpa_desired_replicas,
 * agent_desired_replicas, policy_loaded} (gauges) and {decisions,
 * fallbacks, clamps, objective_violations} (counters); and KEDA's external
 * scaler service (externalscaler.ExternalScaler) on SHARP's gRPC server. */
#ifndef SHARP_SCALING_H
#define SHARP_SCALING_H

#include "grpc/server.h"
#include "sbuf.h"
#include "server.h"

struct sharp_scaling_agent_config;
typedef struct sharp_scaling sharp_scaling_t;

/* Starts the agents of `cfg` (their policies are taken from it) and
 * registers the KEDA service in `grpc` when not NULL. */
sharp_scaling_t *sharp_scaling_start(sharp_server_t *srv, struct sharp_scaling_agent_config *cfg,
                                     sharp_grpc_registry_t *grpc);
/* Stops the timer (the loop closes it). */
void sharp_scaling_stop(sharp_scaling_t *sc);
/* After the loop ran the close and the gRPC registry is freed. */
void sharp_scaling_free(sharp_scaling_t *sc);
/* /scaling: every cluster's last decision. */
void sharp_scaling_render_json(const sharp_scaling_t *sc, sharp_sbuf_t *out);

#endif

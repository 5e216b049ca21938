/* hds.h: Envoy's health discovery service client (HdsDelegate): the
 * bootstrap's hds_config, a gRPC ApiConfigSource whose one envoy_grpc
 * service names a static, non-EDS, HTTP/2 cluster.
 *
 * On the main thread, through SHARP's gRPC client (grpc/client.h), a
 * bidirectional /envoy.service.health.v3.HealthDiscoveryService/
 * StreamHealthCheck stream, as Envoy's:
 * - the stream's first message is a HealthCheckRequest with the node (the
 *   one xDS requests name) and the capability Envoy announces (HTTP and
 *   TCP: the Capability enum has no gRPC value; gRPC checks a specifier
 *   asks for run all the same, as in Envoy);
 * - each HealthCheckSpecifier replaces the set of HDS clusters: one per
 *   ClusterHealthCheck (a later one of a name already seen is skipped), with
 *   Envoy's HdsCluster settings (STATIC, connect_timeout 1 s, 32 KiB
 *   buffer limit, HTTP/2 when a check is gRPC, its checks connecting from
 *   upstream_bind_config's source_address), its endpoints grouped by the
 *   specifier's localities, checked by the cluster's health_checks through
 *   SHARP's active health checker (upstream/health_check.h), in a checker of
 *   the delegate's own. A cluster whose ClusterHealthCheck is unchanged
 *   keeps its hosts and sessions; a changed one is built again, its hosts
 *   of an earlier locality and address keeping their health (and, when its
 *   health checks are unchanged, their sessions' counts), as Envoy's
 *   HdsCluster::update keeps them (Envoy keeps their check schedule too;
 *   SHARP checks them once at once). A specifier equal to the
 *   last one is ignored; one that breaks a validation rule, uses something
 *   SHARP does not implement, or names a cluster that cannot be built
 *   counts an error and changes nothing;
 * - every `interval` of the specifier (default 1 s; the timer is re-armed
 *   only when the interval changes) an EndpointHealthResponse: per cluster
 *   and locality each endpoint's address and health (HEALTHY, TIMEOUT when
 *   it failed and its last failure was a timeout, else UNHEALTHY; a host is
 *   UNHEALTHY until its first check passes), also in the deprecated flat
 *   endpoints_health list, as Envoy fills both;
 * - when the stream ends (whatever its status) it is opened again after
 *   Envoy's jittered exponential back-off (1 s base, 30 s at most, reset
 *   when a stream opens); the HDS clusters keep being checked meanwhile,
 *   and reports resume with the next specifier.
 * Stats (Envoy's hds_delegate.*): requests (specifiers received),
 * responses (messages sent: the request and each report), errors (streams
 * that ended or could not open, and refused specifiers), updates
 * (specifiers applied). HDS clusters are not routable: they are in no
 * snapshot and no worker sees them; their health checks keep Envoy's
 * cluster.<name>.health_check.* stats. */
#ifndef SHARP_HDS_H
#define SHARP_HDS_H

#include "common.h"
#include "snapshot.h"

#include <protobuf-c/protobuf-c.h>

struct sharp_server;
typedef struct sharp_hds sharp_hds_t;

/* The bootstrap's hds_config (an ApiConfigSource) with Envoy's checks, its
 * cluster looked up in `snap` (the bootstrap's). NULL with the reason,
 * naming the field, in err. */
sharp_hds_t *sharp_hds_create(struct sharp_server *srv, const ProtobufCMessage *api_config_source,
                              const sharp_snapshot_t *snap, char *err, size_t errlen);
/* Opens the stream (main loop running). */
void sharp_hds_start(sharp_hds_t *h);
/* Cancels the stream, stops the health checks and closes the timers
 * (shutdown, loop running). */
void sharp_hds_stop(sharp_hds_t *h);
/* After the loop has run the close callbacks. */
void sharp_hds_free(sharp_hds_t *h);

#endif

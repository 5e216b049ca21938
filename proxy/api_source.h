/* api_source.h: the gRPC service of an ApiConfigSource that SHARP's own
 * streams to a management server read (the load reporting and health
 * discovery services), checked as Envoy checks one: its transport version
 * (checkTransportVersion), one envoy_grpc service of a gRPC type
 * (factoryForGrpcApiConfigSource), and its cluster statically defined, not
 * EDS, and HTTP/2 (checkApiConfigSourceSubscriptionBackingCluster). The
 * errors are Envoy's, under `field`, the config source's path. And the
 * pieces of protobuf messages these services build from hosts. */
#ifndef SHARP_GRPC_API_SOURCE_H
#define SHARP_GRPC_API_SOURCE_H

#include <stddef.h>

#include "arena.h"
#include "http/headers.h"

#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/core/v3/grpc_service.pb-c.h"

struct sharp_snapshot;
struct sharp_server;
struct sharp_grpc_client;
struct sharp_host;

typedef struct {
    char *cluster, *authority;
    sharp_headers_t metadata; /* the service's initial_metadata */
} sharp_grpc_target_t;

/* Fills *t from `a`, checked against the clusters of `snap`: 0, or -1 with
 * err (*t then holds nothing). Free with sharp_grpc_target_free. */
int sharp_grpc_api_source_target(const Envoy__Config__Core__V3__ApiConfigSource *a, const char *field,
                                 const struct sharp_snapshot *snap, sharp_grpc_target_t *t, char *err, size_t errlen);
void sharp_grpc_target_free(sharp_grpc_target_t *t);
/* The main loop's client for the target's cluster (in the server's base
 * snapshot, where a static cluster is); NULL with err when it cannot be
 * made. */
struct sharp_grpc_client *sharp_grpc_target_client(const sharp_grpc_target_t *t, struct sharp_server *s, char *err,
                                                   size_t errlen);
/* Adds a GrpcService's initial_metadata to `out`: each entry's value, or
 * its raw_value when the value is empty. */
void sharp_grpc_initial_metadata(sharp_headers_t *out, const Envoy__Config__Core__V3__GrpcService *gs);

/* The host's address as Envoy's Address: a socket address with its IP and
 * port, or a pipe; allocated in `a`, the pipe's path borrowed from the
 * host. */
Envoy__Config__Core__V3__Address *sharp_pb_host_address(sharp_arena_t *a, const struct sharp_host *h);

#endif

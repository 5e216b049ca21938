/* health.h: grpc.health.v1.Health on SHARP's gRPC server: the server itself
 * (service "") and "sharp" are SERVING while the server is live and its
 * health check has not been failed (/healthcheck/fail), NOT_SERVING while
 * initializing, draining or failed; any other service name is NOT_FOUND
 * (Check) or SERVICE_UNKNOWN (Watch), as gRPC's health checking protocol
 * says. */
#ifndef SHARP_GRPC_HEALTH_H
#define SHARP_GRPC_HEALTH_H

#include "grpc/server.h"

typedef struct sharp_grpc_health sharp_grpc_health_t;

/* Tells whether the server is serving (the server's state, main thread). */
typedef bool (*sharp_grpc_serving_fn)(void *arg);

/* Registers the service; the registry owns (and frees) the result. */
sharp_grpc_health_t *sharp_grpc_health_register(sharp_grpc_registry_t *r, sharp_grpc_serving_fn serving, void *arg);
/* The server's state or health check flag may have changed: Watch calls
 * whose status changed get a new message. Main thread. */
void sharp_grpc_health_changed(sharp_grpc_health_t *h);

#endif

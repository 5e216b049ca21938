/* call.h: the authorization request of the ext_authz filter, a side request
 * from a worker to the authorization cluster (Envoy's async client); the
 * rate limit filter's ShouldRateLimit calls go the same way.
 *
 * A call picks a host of the cluster with the worker's balancer, takes a
 * DEFAULT-priority circuit breaker slot, uses the worker's pools for that
 * cluster and counts in its upstream_rq_* stats, as request mirroring does
 * (upstream/shadow.c). Unlike a shadow it belongs to one downstream stream
 * and its whole response is collected (headers, body up to a bound,
 * trailers) and handed to the stream's filter in one callback, always from
 * the loop (never from inside sharp_ext_authz_call_start). The filter
 * cancels a call that is still running when its stream goes away. */
#ifndef SHARP_FILTERS_EXT_AUTHZ_CALL_H
#define SHARP_FILTERS_EXT_AUTHZ_CALL_H

#include "common.h"
#include "http/headers.h"
#include "sbuf.h"
#include "upstream/cluster.h"
#include "worker.h"

typedef struct sharp_ext_authz_call sharp_ext_authz_call_t;

/* What a call ended with. `failed`: no response (no healthy host, circuit
 * breaker full, connect failure, reset, timeout, a response body over the
 * bound); `reason` says which for the log. Otherwise the response's
 * headers (with :status), body and trailers (HTTP/2, else empty). */
typedef struct {
    bool failed;
    const char *reason;
    sharp_headers_t *headers;
    sharp_sbuf_t *body;
    sharp_headers_t *trailers;
} sharp_ext_authz_result_t;

typedef void (*sharp_ext_authz_done_fn)(void *ctx, const sharp_ext_authz_result_t *r);

typedef struct {
    sharp_worker_t *worker;
    sharp_cluster_t *cluster; /* NULL: no such cluster, the call fails */
    sharp_cluster_local_t *cl;
    const struct sharp_worker_view *view; /* cluster's and cl's: an aggregate's members are looked up there */
    const sharp_headers_t *headers; /* the request head (copied) */
    const char *body;               /* the request body (copied), NULL for none */
    size_t body_len;
    bool http2;                /* gRPC: over the cluster's HTTP/2 pool */
    uint64_t timeout_ms;       /* from the start, connecting included; 0: none */
    size_t max_response_bytes; /* a longer response body fails the call */
    unsigned long long conn_id, stream_id;
    sharp_ext_authz_done_fn done;
    void *ctx;
    const char *what; /* names the call in the log; NULL: "ext_authz" */
} sharp_ext_authz_call_args_t;

/* Starts a call; its end comes through args->done, later, from the loop.
 * Returns the call, for sharp_ext_authz_call_cancel until done has run. */
sharp_ext_authz_call_t *sharp_ext_authz_call_start(const sharp_ext_authz_call_args_t *a);
/* The stream went away: the request is reset, done is not called. */
void sharp_ext_authz_call_cancel(sharp_ext_authz_call_t *c);

/* Adds the head of a unary gRPC call to `path` (":method" POST, ":path",
 * ":authority", ":scheme" http, content-type application/grpc, te:
 * trailers, grpc-timeout when timeout_ms, then the service's
 * initial_metadata) to h. */
void sharp_ext_authz_grpc_head(sharp_headers_t *h, const char *path, const char *authority, uint64_t timeout_ms,
                               const sharp_headers_t *initial_metadata);

#endif

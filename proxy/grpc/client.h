/* client.h: SHARP's own gRPC client (Envoy's GrpcService.envoy_grpc), for
 * the calls SHARP itself makes to a control plane (xDS). It runs on the
 * thread whose upstream env it is given (the main thread's, see
 * sharp_server_t.upstream_env) and speaks through the HTTP/2 client codec of
 * the upstream pools (upstream/pool.h), so the cluster's circuit breakers,
 * connect timeout, HTTP/2 options, keepalive PINGs and GOAWAY handling apply
 * as they do to proxied requests.
 *
 * A client belongs to one cluster of a snapshot. Each call picks a host of
 * the cluster (healthy hosts first, round robin) and gets a stream from the
 * client's own pool for that host.
 *
 * Calls:
 * - unary: one request message, one response message, a completion
 *   callback;
 * - streams: bidirectional (which covers client and server streaming):
 *   messages go out with sharp_grpc_stream_send (flow-controlled, queued in
 *   the client up to a bound, back-pressure reported to the caller) and come
 *   in through on_message; the end comes through on_close exactly once,
 *   unless the caller cancelled first (no callback after cancel).
 * - retrying streams: a bidirectional stream re-opened after it ends, after
 *   a jittered exponential back-off (grpc/backoff.h) that resets whenever a
 *   message arrives, as Envoy's GrpcStream under its xDS subscriptions.
 *
 * Statuses are grpc-go's where the server gave none: a non-200 :status is
 * mapped with Envoy's HTTP-to-gRPC table (http/grpc.h); no grpc-status,
 * a malformed or compressed message, or a response that does not decode is
 * INTERNAL; a message above the maximum receive size is RESOURCE_EXHAUSTED;
 * no connection, a lost connection, a peer reset or a GOAWAY is
 * UNAVAILABLE; the deadline is DEADLINE_EXCEEDED (the stream is reset).
 *
 * Callbacks never run inside the call that starts a call or a stream; they
 * may start, cancel or send on other calls, and cancel their own. The
 * client must not be destroyed from inside one of its callbacks. */
#ifndef SHARP_GRPC_CLIENT_H
#define SHARP_GRPC_CLIENT_H

#include "http/headers.h"
#include "snapshot.h"
#include "upstream/env.h"

#include <protobuf-c/protobuf-c.h>

typedef struct sharp_grpc_client sharp_grpc_client_t;
typedef struct sharp_grpc_stream sharp_grpc_stream_t;
typedef struct sharp_grpc_retrying_stream sharp_grpc_retrying_stream_t;

typedef struct sharp_grpc_client_config {
    const char *cluster_name;           /* envoy_grpc.cluster_name */
    const char *authority;              /* envoy_grpc.authority; NULL or "": the cluster name */
    const sharp_headers_t *initial_metadata; /* GrpcService.initial_metadata, on every call; may be NULL */
    uint64_t timeout_ms;                /* GrpcService.timeout, the default per call; 0: none */
    uint32_t max_recv_bytes;            /* 0: 4 MiB, gRPC's default */
    size_t send_buffer_limit;           /* bytes a stream queues before send reports back-pressure; 0: 1 MiB */
} sharp_grpc_client_config_t;

/* Makes a client for a cluster of `snap` (held until destroy). NULL with
 * the reason in err when the cluster does not exist ("Unknown gRPC client
 * cluster 'x'", Envoy's message) or does not speak HTTP/2. */
sharp_grpc_client_t *sharp_grpc_client_create(const sharp_upstream_env_t *env, sharp_snapshot_t *snap,
                                              const sharp_grpc_client_config_t *cfg, char *err, size_t errlen);
/* Cancels every call and retrying stream of the client without their
 * callbacks, and frees it; its connections close, and their memory goes
 * once the loop has run their close callbacks. */
void sharp_grpc_client_destroy(sharp_grpc_client_t *c);

/* ---- unary ---- */

/* `response` is NULL unless status is OK; it and `trailers` belong to the
 * client and are freed when the callback returns. `message` is the
 * percent-decoded grpc-message ("" when none). */
typedef void (*sharp_grpc_unary_cb)(void *arg, int status, const char *message, const ProtobufCMessage *response,
                                    const sharp_headers_t *trailers);

/* Starts a unary call to `path` ("/pkg.Service/Method"). timeout_ms 0
 * takes the client's default; `metadata` (may be NULL) is added to the
 * client's initial metadata. The returned handle may be cancelled (no
 * callback then) until the callback has run. */
sharp_grpc_stream_t *sharp_grpc_unary(sharp_grpc_client_t *c, const char *path, const ProtobufCMessage *request,
                                      const ProtobufCMessageDescriptor *response_desc, uint64_t timeout_ms,
                                      const sharp_headers_t *metadata, sharp_grpc_unary_cb cb, void *arg);

/* ---- streams ---- */

typedef struct sharp_grpc_stream_callbacks {
    /* The response headers (may be NULL). */
    void (*on_initial_metadata)(void *arg, const sharp_headers_t *h);
    /* One response message, freed when the callback returns. */
    void (*on_message)(void *arg, const ProtobufCMessage *m);
    /* The end, exactly once; the handle is gone after it returns. */
    void (*on_close)(void *arg, int status, const char *message, const sharp_headers_t *trailers);
    /* The send queue went below the limit after a send returned
     * SHARP_GRPC_SEND_FULL (may be NULL). */
    void (*on_writable)(void *arg);
} sharp_grpc_stream_callbacks_t;

sharp_grpc_stream_t *sharp_grpc_stream_start(sharp_grpc_client_t *c, const char *path,
                                             const ProtobufCMessageDescriptor *response_desc, uint64_t timeout_ms,
                                             const sharp_headers_t *metadata,
                                             const sharp_grpc_stream_callbacks_t *cb, void *arg);

typedef enum {
    SHARP_GRPC_SEND_OK = 0,     /* queued; more may follow */
    SHARP_GRPC_SEND_FULL = 1,   /* queued, but the queue is at its limit: wait for on_writable */
    SHARP_GRPC_SEND_REFUSED = -1, /* not queued: the stream ended or half-closed, or the queue was full */
} sharp_grpc_send_result_t;

sharp_grpc_send_result_t sharp_grpc_stream_send(sharp_grpc_stream_t *s, const ProtobufCMessage *m);
/* Ends the sending side (the request's END_STREAM after what is queued). */
void sharp_grpc_stream_close_send(sharp_grpc_stream_t *s);
/* Resets the stream (RST_STREAM CANCEL) and frees the handle; no callback
 * follows. */
void sharp_grpc_stream_cancel(sharp_grpc_stream_t *s);
/* Bytes queued and not yet taken by the connection. */
size_t sharp_grpc_stream_queued(const sharp_grpc_stream_t *s);

/* ---- retrying streams ---- */

typedef struct sharp_grpc_retry_callbacks {
    /* A new stream is open (the first and every re-opened one): the place
     * to send what the peer must hear first. */
    void (*on_open)(void *arg, sharp_grpc_retrying_stream_t *rs);
    void (*on_message)(void *arg, const ProtobufCMessage *m);
    /* The current stream ended; the next one opens in retry_in_ms. */
    void (*on_close)(void *arg, int status, const char *message, uint64_t retry_in_ms);
} sharp_grpc_retry_callbacks_t;

/* Opens a bidirectional stream to `path` now and again after each end
 * (whatever its status, as Envoy's GrpcStream), waiting
 * sharp_backoff_next() of a back-off of base_ms..max_ms (Envoy's xDS uses
 * 500 ms and 30 s) that is reset whenever a message arrives. No deadline. */
sharp_grpc_retrying_stream_t *sharp_grpc_retrying_stream_start(sharp_grpc_client_t *c, const char *path,
                                                               const ProtobufCMessageDescriptor *response_desc,
                                                               const sharp_headers_t *metadata, uint64_t base_ms,
                                                               uint64_t max_ms,
                                                               const sharp_grpc_retry_callbacks_t *cb, void *arg);
/* Sends on the current stream; REFUSED while none is open (between a
 * close and the next open). */
sharp_grpc_send_result_t sharp_grpc_retrying_stream_send(sharp_grpc_retrying_stream_t *rs, const ProtobufCMessage *m);
/* Cancels the current stream or the pending re-open and frees it; no
 * callback follows. */
void sharp_grpc_retrying_stream_stop(sharp_grpc_retrying_stream_t *rs);

#endif

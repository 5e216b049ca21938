/* server.h: SHARP's own gRPC server, for the services SHARP itself offers
 * (grpc.health.v1.Health, later a KEDA external scaler). It runs on the main
 * thread's loop; the admin listener hands it the HTTP/2 (h2c, prior
 * knowledge) connections it sees.
 *
 * A registry holds services described by protoc-c's ProtobufCServiceDescriptor
 * (full name, methods with their input and output message descriptors) and a
 * handler per method. A connection (sharp_grpc_conn_t) is an nghttp2 server
 * session that does not own its socket: the owner feeds it the bytes it reads
 * and writes what it is given (sharp_grpc_conn_io_t).
 *
 * Calls of all four kinds. Unary and server-streaming: the request message
 * is read whole (up to the maximum receive size), unpacked and given to the
 * handler with a call handle. Client-streaming and bidirectional: the
 * handler runs once the request headers are in (request NULL) and registers
 * sharp_grpc_call_on_message; each request message is unpacked and handed
 * over as soon as it is complete, and the end of the client's side is
 * reported. The handler answers at once or later (from a timer, or when
 * what it watches changes): sharp_grpc_call_send for each response message,
 * then sharp_grpc_call_finish with a status. A call that ends before the
 * handler finished it (the client reset the stream or went away, its
 * grpc-timeout passed, the connection closed) runs the handler's cancel
 * callback, after which the handle must not be used. */
#ifndef SHARP_GRPC_SERVER_H
#define SHARP_GRPC_SERVER_H

#include "sbuf.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* gRPC status codes (grpc/status.h). */
enum {
    SHARP_GRPC_OK = 0,
    SHARP_GRPC_CANCELLED = 1,
    SHARP_GRPC_UNKNOWN = 2,
    SHARP_GRPC_INVALID_ARGUMENT = 3,
    SHARP_GRPC_DEADLINE_EXCEEDED = 4,
    SHARP_GRPC_NOT_FOUND = 5,
    SHARP_GRPC_PERMISSION_DENIED = 7,
    SHARP_GRPC_RESOURCE_EXHAUSTED = 8,
    SHARP_GRPC_UNIMPLEMENTED = 12,
    SHARP_GRPC_INTERNAL = 13,
    SHARP_GRPC_UNAVAILABLE = 14,
};

/* gRPC's default maximum receive message size. */
#define SHARP_GRPC_MAX_RECV_DEFAULT (4u * 1024 * 1024)

struct sharp_headers;
typedef struct sharp_grpc_registry sharp_grpc_registry_t;
typedef struct sharp_grpc_call sharp_grpc_call_t;
typedef struct sharp_grpc_conn sharp_grpc_conn_t;

/* `request` belongs to the server and is freed when the handler returns:
 * a handler that answers later copies what it needs. */
typedef void (*sharp_grpc_handler_fn)(sharp_grpc_call_t *call, const ProtobufCMessage *request,
                                      void *service_data);
typedef void (*sharp_grpc_cancel_fn)(sharp_grpc_call_t *call, void *arg);

/* A request message of a client-streaming or bidirectional call; `msg`
 * is freed when the callback returns. */
typedef void (*sharp_grpc_message_fn)(sharp_grpc_call_t *call, const ProtobufCMessage *msg, void *arg);
/* The client ended its side (half-close) after its last message. */
typedef void (*sharp_grpc_half_close_fn)(sharp_grpc_call_t *call, void *arg);

typedef struct {
    sharp_grpc_handler_fn handler;
    bool server_streaming; /* else exactly one response message with OK */
    /* the client sends a stream of messages: `handler` runs at the request
     * headers with request NULL and registers sharp_grpc_call_on_message */
    bool client_streaming;
} sharp_grpc_method_impl_t;

/* ---- registry ---- */

sharp_grpc_registry_t *sharp_grpc_registry_new(void);
/* Frees the registry and every service's data (with its free_data). Calls
 * still running must have been cancelled first (their connections freed). */
void sharp_grpc_registry_free(sharp_grpc_registry_t *r);
/* Adds a service: `impls` has desc->n_methods entries in desc->methods'
 * order (every method implemented). Returns -1 when a service of that name
 * is already registered. */
int sharp_grpc_registry_add(sharp_grpc_registry_t *r, const ProtobufCServiceDescriptor *desc,
                            const sharp_grpc_method_impl_t *impls, void *data, void (*free_data)(void *));
/* The method a request path "/package.Service/Method" names, NULL if none;
 * *service_known tells whether the service exists. */
const ProtobufCMethodDescriptor *sharp_grpc_registry_find(const sharp_grpc_registry_t *r, const char *path,
                                                          size_t len, bool *service_known);

/* ---- calls (handlers' side) ---- */

/* Initial metadata, sent with the response headers (before the first
 * message or with a trailers-only response). Names must be lower case. */
void sharp_grpc_call_add_metadata(sharp_grpc_call_t *call, const char *name, const char *value);
/* A request header (metadata), false if absent. */
bool sharp_grpc_call_metadata(const sharp_grpc_call_t *call, const char *name, const char **value, size_t *len);
/* Queues one response message. Returns -1 without queuing when the call is
 * finished, when a unary call already has its message, or when more than
 * SHARP_GRPC_CALL_OUT_MAX bytes wait for a client that does not read (the
 * handler then finishes the call, e.g. with RESOURCE_EXHAUSTED). */
#define SHARP_GRPC_CALL_OUT_MAX (256u * 1024)
int sharp_grpc_call_send(sharp_grpc_call_t *call, const ProtobufCMessage *msg);
/* Ends the call with a status and message (grpc-message, percent-encoded on
 * the wire; NULL for none), after the messages already queued. The handle
 * must not be used afterwards. A unary call finished OK without a message
 * ends with INTERNAL instead. */
void sharp_grpc_call_finish(sharp_grpc_call_t *call, uint32_t status, const char *message);
/* Called once if the call ends before the handler finished it. */
void sharp_grpc_call_on_cancel(sharp_grpc_call_t *call, sharp_grpc_cancel_fn fn, void *arg);
/* Client-streaming and bidirectional calls: each request message as it
 * completes, then the client's half-close (either may be NULL). A call
 * whose handler registered no message callback ends with UNIMPLEMENTED at
 * its first message. Messages are not delivered once the call finished. */
void sharp_grpc_call_on_message(sharp_grpc_call_t *call, sharp_grpc_message_fn on_message,
                                sharp_grpc_half_close_fn on_half_close, void *arg);

/* ---- connections (the socket owner's side) ---- */

/* A request that is not a gRPC call, answered by the owner (the admin
 * pages over HTTP/2). */
typedef struct {
    unsigned status;
    const char *content_type; /* static */
    sharp_sbuf_t body;        /* taken */
    /* Runs once the stream is over: after its last bytes went to the
     * owner's `write`, or when the stream or connection is gone
     * (/quitquitquit's shutdown). */
    void (*after)(void *arg);
    void *after_arg;
} sharp_grpc_plain_response_t;

typedef struct {
    /* Writes `bytes` to the socket and takes the buffer (leaves it empty). */
    void (*write)(void *ctx, sharp_sbuf_t *bytes);
    /* Bytes written and not yet on the wire: above a high-water mark
     * nothing more is serialized until sharp_grpc_conn_flush. */
    size_t (*write_queued)(void *ctx);
    /* The session is over (GOAWAY exchanged, protocol error): the owner
     * stops reading and closes once the queued bytes are written. */
    void (*done)(void *ctx);
    /* Optional: answers a request whose content-type is not gRPC's, given
     * its headers (with the pseudo-headers) and body (at most
     * SHARP_GRPC_PLAIN_BODY_MAX bytes; more is a 413). Without it such a
     * request gets a 404. */
    void (*plain)(void *ctx, const struct sharp_headers *req, const char *body, size_t len,
                  sharp_grpc_plain_response_t *rsp);
    /* Optional: whether a gRPC call to `path` (its :path) may be served;
     * one that may not ends with PERMISSION_DENIED (the admin port's
     * allow_paths). NULL: every call. */
    bool (*allowed)(void *ctx, sharp_str_t path);
} sharp_grpc_conn_io_t;

#define SHARP_GRPC_PLAIN_BODY_MAX (64u * 1024)

/* Output above this stays unserialized until the socket drains. */
#define SHARP_GRPC_CONN_WRITE_HIGH (256u * 1024)

sharp_grpc_conn_t *sharp_grpc_conn_new(sharp_grpc_registry_t *r, uv_loop_t *loop, const sharp_grpc_conn_io_t *io,
                                       void *ctx);
/* Feeds bytes read from the socket (the first ones are the client
 * preface). Returns -1 on a protocol error: a GOAWAY is queued and `done`
 * follows; the owner feeds no more. */
int sharp_grpc_conn_recv(sharp_grpc_conn_t *c, const uint8_t *p, size_t n);
/* Serializes what is pending (call after a write completed). */
void sharp_grpc_conn_flush(sharp_grpc_conn_t *c);
/* Calls are in their handler's hands (an idle timeout should wait: a
 * Watch may be quiet for long). */
bool sharp_grpc_conn_busy(const sharp_grpc_conn_t *c);
/* Cancels every call and detaches from the owner, which must not call the
 * connection again; the memory goes once the calls' timers are closed. */
void sharp_grpc_conn_free(sharp_grpc_conn_t *c);

#endif

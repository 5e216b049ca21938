/* pool.h: per-worker connection pool for one upstream host, and the
 * upstream stream a request gets from it.
 *
 * The pool speaks the cluster's protocol through a client codec (codec.h):
 * HTTP/1.1 (http1_client.c, one request at a time per connection) or HTTP/2
 * (http2_client.c, requests multiplexed as streams up to the effective
 * max_concurrent_streams). A cluster with use_downstream_protocol_config
 * has one pool of each protocol per host (worker.h).
 *
 * Lifetimes: a pool belongs to its worker and lives as long as the worker's
 * view of the cluster, or, once its host has left a DNS cluster's host set
 * (sharp_pool_retire), until its last connection and waiter are gone. A connection belongs to its pool; a request bound to
 * it holds a stream handle (sharp_upstream_cx_t) whose callbacks get the
 * response. Memory of a connection is released only in its close callback.
 * Circuit breaker counters (connections, pending, requests) are
 * cluster-wide atomics, as in Envoy. */
#ifndef SHARP_UPSTREAM_POOL_H
#define SHARP_UPSTREAM_POOL_H

#include "common.h"
#include "http/headers.h"
#include "upstream/cluster.h"
#include "upstream/env.h"
#include "worker.h"

typedef enum {
    SHARP_POOL_FAIL_CONNECT,   /* connection refused or other connect error (UF) */
    SHARP_POOL_FAIL_TIMEOUT,   /* connect_timeout elapsed (UF) */
} sharp_pool_failure_t;

typedef enum {
    SHARP_RESET_CONNECTION_TERMINATION, /* peer closed (UC) */
    SHARP_RESET_REMOTE,                 /* peer reset the connection (UR) */
    SHARP_RESET_PROTOCOL_ERROR,         /* malformed response (UPE) */
    SHARP_RESET_LOCAL,
    /* HTTP/2: the upstream refused the stream (RST_STREAM REFUSED_STREAM,
     * or a GOAWAY whose last stream id is below it): it did not process
     * the request, which is safe to retry (UR) */
    SHARP_RESET_REFUSED_STREAM,
} sharp_reset_reason_t;

/* The stream handle of a request bound to a connection: on HTTP/1 the
 * connection's one stream, on HTTP/2 one of its streams. */

typedef struct sharp_upstream_cx sharp_upstream_cx_t;
typedef struct sharp_pool sharp_pool_t;

typedef struct sharp_upstream_callbacks {
    void (*on_ready)(void *ctx, sharp_upstream_cx_t *cx);
    void (*on_pool_failure)(void *ctx, sharp_pool_failure_t why, const char *detail);
    void (*on_headers)(void *ctx, sharp_headers_t *h, bool end_stream); /* includes :status */
    void (*on_data)(void *ctx, const char *p, size_t n, bool end_stream);
    /* Response trailers (HTTP/2): the end of the response. */
    void (*on_trailers)(void *ctx, sharp_headers_t *t);
    void (*on_reset)(void *ctx, sharp_reset_reason_t why, const char *detail);
    /* Upstream write buffer above/below its watermark: pause/resume the downstream. */
    void (*on_write_watermark)(void *ctx, bool above);
} sharp_upstream_callbacks_t;

/* A request waiting for, or bound to, an upstream connection. Embedded in
 * the router's per-stream state. */
typedef struct sharp_upstream_request {
    const sharp_upstream_callbacks_t *cb;
    void *ctx;
    sharp_dlist_t link; /* in the pool's pending list */
    sharp_pool_t *pool;
    sharp_upstream_cx_t *cx;
    bool pending;
    /* set by the HTTP/2 codec before an on_reset(SHARP_RESET_REFUSED_STREAM)
     * of a stream submitted before the peer's first SETTINGS came: it
     * exceeded a SETTINGS_MAX_CONCURRENT_STREAMS not yet known */
    bool refused_unknown_limit;
} sharp_upstream_request_t;

/* A pool of one priority: its connections and waiting requests count in
 * that priority's circuit breakers (Envoy keys its pools by priority). */
/* `env` (a worker's, or the main thread's) outlives the pool. */
sharp_pool_t *sharp_pool_create(const sharp_upstream_env_t *env, sharp_cluster_t *c, sharp_host_t *h, sharp_priority_t prio);
/* A new pool of a downstream_protocol cluster becomes the host's HTTP/2
 * pool (before its first request; the pool is HTTP/1.1 otherwise). */
void sharp_pool_use_http2(sharp_pool_t *p);
/* A pool of the TCP proxy (http/tcp_proxy.c): its connections carry raw
 * bytes (tcp_client.c), one downstream connection each, never reused.
 * Before its first request. */
void sharp_pool_use_tcp(sharp_pool_t *p);
/* Closes every connection; pending requests fail with SHARP_POOL_FAIL_CONNECT.
 * The pool frees itself once its last connection has closed. */
void sharp_pool_destroy(sharp_pool_t *p);
/* The pool's host left the cluster's host set (a DNS cluster's new
 * answer): the worker forgets the pool, so no new request comes. Requests
 * waiting for a connection still get one; idle connections close now and
 * busy ones once their streams are done; the pool frees itself when it has
 * neither connections nor waiting requests (possibly before this returns). */
void sharp_pool_retire(sharp_pool_t *p);
/* The TCP_INFO fallback's periodic samples of the pool's connections
 * (kernel/tcpinfo.h); the worker calls it on its tick. */
void sharp_pool_tcpinfo_tick(sharp_pool_t *p);
/* Closes idle connections (drain). */
void sharp_pool_close_idle(sharp_pool_t *p);
/* Drains the pool's connections if its host asked for it
 * (sharp_host_drain_connections) since the last call. */
void sharp_pool_check_drain(sharp_pool_t *p);

/* Asks for a connection. The answer comes through the callbacks: on_ready
 * (possibly before this returns, when an idle connection exists) or
 * on_pool_failure (never before this returns). Returns false, and keeps
 * nothing, when the request would have to wait and the cluster's
 * max_pending_requests breaker is full (the caller answers overflow). */
bool sharp_pool_acquire(sharp_pool_t *p, sharp_upstream_request_t *req, const sharp_upstream_callbacks_t *cb,
                        void *ctx);
/* Withdraws a pending request, or unbinds a bound one; a connection whose
 * response was not complete is closed (it cannot be reused). */
void sharp_pool_cancel(sharp_upstream_request_t *req);

/* Sends the request head. `h` has :method, :path, :authority; body framing
 * is chosen here (content-length if present, else chunked unless end_stream). */
void sharp_upstream_cx_send_headers(sharp_upstream_cx_t *cx, const sharp_headers_t *h, bool end_stream);
void sharp_upstream_cx_send_data(sharp_upstream_cx_t *cx, const char *p, size_t n, bool end_stream);
/* Ends the request with trailers. HTTP/2 sends them; HTTP/1 drops them and
 * ends the body, as Envoy's HTTP/1 codec does without enable_trailers. */
void sharp_upstream_cx_send_trailers(sharp_upstream_cx_t *cx, const sharp_headers_t *t);
/* Stops/resumes reading the response (downstream backpressure; HTTP/2:
 * the stream's flow-control window stops reopening). */
void sharp_upstream_cx_read_disable(sharp_upstream_cx_t *cx, bool disable);
const char *sharp_upstream_cx_local_address(sharp_upstream_cx_t *cx);
/* The connection's protocol: "HTTP/1.1" or "HTTP/2". */
const char *sharp_upstream_cx_protocol(const sharp_upstream_cx_t *cx);
/* The connection's TLS engine (tls/conn.h) once its handshake is done;
 * NULL for plaintext. A caller keeping it past the stream takes a
 * reference (sharp_tls_conn_ref). */
struct sharp_tls_conn;
struct sharp_tls_conn *sharp_upstream_cx_tls(sharp_upstream_cx_t *cx);
/* Bytes of this stream's request not yet taken by the kernel (HTTP/1:
 * the connection's write queue; HTTP/2: the stream's unsent body). */
size_t sharp_upstream_cx_queued(const sharp_upstream_cx_t *cx);

#endif

/* async_post.h: one request with a body from a worker to a cluster, as
 * Envoy's async client sends a tracer's report (Zipkin, OpenTelemetry):
 * the cluster's balancer, breakers, pools and stats, an internal request
 * of this proxy (x-envoy-internal, x-forwarded-for), a timeout, and an
 * outcome reported as the async client reports it to its caller:
 *
 * - a complete response is a success with its status, the router's own
 *   answers included: 503 when there is no healthy host, the breaker is
 *   full, the connection fails or the stream is reset before the
 *   response; 504 for the timeout before it;
 * - a reset or timeout once the response began is a failure. */
#ifndef SHARP_UPSTREAM_ASYNC_POST_H
#define SHARP_UPSTREAM_ASYNC_POST_H

#include "common.h"
#include "sbuf.h"
#include "stats.h"
#include "http/headers.h"

struct sharp_worker;

/* What the outcome counts (none unless `count`): a success with
 * `ok_status` (0: any status) counts `ok`, another success `other`, a
 * failure `failed`. */
typedef struct sharp_async_post_counts {
    bool count;
    uint32_t ok_status;
    sharp_stat_id_t ok, other, failed;
    /* when set, called with a complete response from the cluster (not the
     * router's own answers): its status and the first
     * SHARP_ASYNC_POST_MAX_RESPONSE bytes of its body (the rest is not
     * kept). Not called once the worker stops. */
    void (*response)(void *arg, uint32_t status, const char *body, size_t len);
    void *arg;
} sharp_async_post_counts_t;

#define SHARP_ASYNC_POST_MAX_RESPONSE (64u * 1024)

/* The request's usual head: POST to `path` at `authority` (http), of
 * `content_type`. */
void sharp_async_post_head(sharp_headers_t *h, const char *path, const char *authority, const char *content_type);

/* Sends `h` and `body` (both taken over) to cluster `cluster` of the
 * worker's configuration over `protocol` ("HTTP/1.1" or "HTTP/2"), adding
 * content-length and the internal request's headers; `what` names it in
 * debug logs. False when the configuration has no such cluster: nothing
 * is sent or counted. */
bool sharp_async_post(struct sharp_worker *w, const char *cluster, const char *protocol, sharp_headers_t *h,
                      sharp_sbuf_t *body, uint64_t timeout_ms, const sharp_async_post_counts_t *counts,
                      const char *what);

/* ---- streams ----
 *
 * A long-lived request on the same path (Envoy's async client stream, as a
 * tracer's gRPC client stream): the head goes out once the pool has a
 * connection, then whatever is sent, with no end and no timeout. The
 * stream closes once (`closed`, from the loop, never inside a call to
 * this API) when the response ends (its trailers or end of stream), a
 * reset, or a failure to connect. Memory is bounded: bytes waiting for
 * the connection or for its write buffer to drain are at most
 * `buffer_limit`. */
typedef struct sharp_async_stream sharp_async_stream_t;
typedef void (*sharp_async_stream_closed_cb)(void *arg, const char *why);

/* Opens the stream: NULL (nothing sent, nothing to close) when the
 * configuration has no such cluster, it has no healthy host or its
 * breakers are full; *why says which. `h` is taken over. */
sharp_async_stream_t *sharp_async_stream_open(struct sharp_worker *w, const char *cluster, const char *protocol,
                                              sharp_headers_t *h, size_t buffer_limit,
                                              sharp_async_stream_closed_cb closed, void *arg, const char *what,
                                              const char **why);
/* Queues or sends bytes; false when they would pass the buffer limit
 * (nothing queued). */
bool sharp_async_stream_send(sharp_async_stream_t *st, const char *p, size_t n);
/* Resets the stream; `closed` is not called. */
void sharp_async_stream_cancel(sharp_async_stream_t *st);

/* The worker stops: its requests and streams in flight end, uncounted and
 * without callbacks. */
void sharp_async_post_cancel_all(struct sharp_worker *w);

#endif

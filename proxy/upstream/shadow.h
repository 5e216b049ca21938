/* shadow.h: request mirroring (Envoy's shadow writer and the async client
 * under it): a fire-and-forget copy of a request to a shadow cluster.
 *
 * The router starts a shadow from decode_headers with the request headers
 * as they go to the primary upstream, and streams the body to it as it
 * arrives (Envoy's streaming shadows, the default since 1.33). A shadow is a
 * request of its own on the worker: it picks a host of the shadow cluster,
 * takes that cluster's DEFAULT-priority circuit breakers, uses its pools and
 * counts in its upstream_rq_* stats and outlier detection, and its response
 * is read and discarded. Nothing it does reaches the primary request: its
 * failures, slowness or death only show in the shadow cluster's stats.
 *
 * Ownership: while the request is still streaming, the router holds the
 * shadow through a handle slot; the shadow clears the slot when it ends on
 * its own (connect failure, early response). Passing end_stream detaches
 * it: it then lives on the worker alone until its response ends, its
 * timeout fires, or the worker stops. If the downstream goes away first,
 * the router cancels it, as Envoy's router does in onDestroy.
 *
 * Memory is bounded: body waiting for the shadow's connection is kept up to
 * twice the stream's buffer limit (the primary itself pauses the client at
 * one while its own connection is not ready), and the shadow's connection
 * write queue up to the cluster's per_connection_buffer_limit_bytes. A body
 * larger than these still reaches a shadow that keeps up with the primary,
 * as in Envoy since 1.33 (streaming shadows). Envoy applies these
 * watermarks to the downstream (a shadow that cannot keep up pauses the
 * client's upload); SHARP instead gives up that shadow (the request to the
 * shadow is reset and cluster.<primary>.retry_or_shadow_abandoned counts), so
 * a shadow never delays the primary request. */
#ifndef SHARP_UPSTREAM_SHADOW_H
#define SHARP_UPSTREAM_SHADOW_H

#include "common.h"
#include "http/headers.h"
#include "upstream/cluster.h"
#include "worker.h"

typedef struct sharp_shadow sharp_shadow_t;

typedef struct {
    sharp_worker_t *worker;
    sharp_cluster_t *cluster;        /* the shadow cluster */
    sharp_cluster_local_t *cl;       /* the worker's balancer and pools for it (the stream's view) */
    /* the shadow cluster is a member an aggregate chose (upstream/
     * aggregate.h): its host comes from this level of it */
    bool agg;
    uint32_t agg_level;
    const sharp_headers_t *headers;  /* the request as sent to the primary (copied) */
    bool end_stream;                 /* the request has no body */
    bool host_suffix;                /* append "-shadow" to the host (not disable_shadow_host_suffix_append) */
    uint64_t timeout_ms;             /* the primary's route timeout (0: none), from the end of the request */
    uint32_t buffer_limit;           /* the stream's buffer limit (see above) */
    const char *shard_key;           /* customer key, for a shuffle-shard shadow cluster */
    size_t shard_key_len;
    unsigned long long conn_id, stream_id; /* "[C..][S..]" of the primary in log lines */
} sharp_shadow_args_t;

/* Starts a shadow. Returns NULL when it is already over (no healthy host,
 * circuit breaker full: the shadow cluster's stats say so) or, with
 * end_stream, detached at once. Otherwise the shadow is stored in *handle,
 * which the shadow sets to NULL if it ends on its own. */
sharp_shadow_t *sharp_shadow_start(const sharp_shadow_args_t *a, sharp_shadow_t **handle);
/* Streams request body (end_stream ends the request and detaches the
 * shadow: *handle becomes NULL). Returns false when the shadow could not
 * take the data within its buffer limits and was given up (the caller
 * counts retry_or_shadow_abandoned); *handle is then NULL too. */
bool sharp_shadow_send_data(sharp_shadow_t *sh, const char *p, size_t n, bool end_stream);
/* The downstream request went away before its end: the shadow is reset. */
void sharp_shadow_cancel(sharp_shadow_t *sh);
/* Worker shutdown: ends every shadow still in flight on it. */
void sharp_shadow_abort_all(sharp_worker_t *w);
/* Envoy's shadow host: "-shadow" appended to the host part of an
 * authority, before its port ("foo:8080" -> "foo-shadow:8080", "[::1]:80"
 * -> "[::1]-shadow:80"). Writes to out (cap bytes), returns the length. */
size_t sharp_shadow_host(sharp_str_t authority, char *out, size_t cap);

/* The local node's address as Envoy's LocalInfo has it: the first
 * non-loopback IPv4 address of the machine's interfaces, else 127.0.0.1
 * (the async client's x-forwarded-for, Zipkin's local endpoint). */
const char *sharp_local_address(void);

#endif

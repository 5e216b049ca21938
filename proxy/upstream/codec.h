/* codec.h: the interface between the upstream connection pool (pool.c) and
 * its client codecs (http1_client.c, http2_client.c). Internal to
 * proxy/upstream.
 *
 * The pool owns the connection (socket, connect/idle/duration timers, the
 * writer, the circuit breaker slots and the pool lists); a codec owns the
 * protocol state and the streams. A request bound to a connection gets a
 * stream handle (sharp_upstream_cx_t, see pool.h): on HTTP/1 the
 * connection's one stream, on HTTP/2 one of its multiplexed streams.
 *
 * A connection is in one of the pool's lists: connecting, ready (it can take
 * another stream now) or busy (it cannot: its streams are at the limit, or
 * it drains). The pool asks the codec how many more streams it can take
 * (capacity) whenever a stream ends or the peer's settings change. */
#ifndef SHARP_UPSTREAM_CODEC_H
#define SHARP_UPSTREAM_CODEC_H

#include "upstream/pool.h"
#include "kernel/tcpinfo.h"
#include "net.h"

typedef enum { CX_CONNECTING, CX_READY, CX_BUSY, CX_CLOSING } cx_state_t;

typedef struct sharp_client_codec sharp_client_codec_t;

typedef struct sharp_upstream_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t timer; /* connect timeout, then idle timeout */
    uv_timer_t duration_timer; /* max_connection_duration, initialized only when configured */
    sharp_pool_t *pool;
    sharp_dlist_t link;
    cx_state_t state;
    sharp_writer_t writer;
    const sharp_client_codec_t *codec;
    void *codec_state;  /* the codec's, freed by its destroy */
    uint32_t nactive;   /* streams bound to requests */
    uint32_t requests;  /* streams started on this connection */
    bool draining;      /* takes no new stream; closes once its streams are done */
    bool connected;
    bool connect_error; /* uv_tcp_connect failed at once: the timer reports it */
    bool connected_at_once; /* a Unix socket connected in new_connection: the timer reports it */
    bool reading;
    int handles_open;
    unsigned long long id;       /* "[C<id>]" in log lines */
    uint64_t start_ns, connected_ns;
    /* loop time (ms) the connection last became idle: the idle timer is
     * not stopped when a request takes the connection, it re-arms itself
     * from this when it comes due (see on_idle_timeout) */
    uint64_t idle_since_ms;
    char local_addr[SHARP_ADDR_STRLEN];
    /* TLS (the cluster's UpstreamTlsContext): the engine between the
     * socket and the codec, NULL for plaintext (tls/upstream.h) */
    struct sharp_upstream_tls *tls;
    /* the TCP_INFO fallback's last sample of the socket (kernel/tcpinfo.h) */
    sharp_tcpinfo_cursor_t tcpi;
} sharp_upstream_conn_t;

struct sharp_pool {
    const sharp_upstream_env_t *env; /* the owning thread's loop, stats shard, rng and flags */
    sharp_cluster_t *cluster;
    sharp_host_t *host;
    sharp_priority_t priority; /* whose circuit breaker counts its connections and waiters */
    sharp_cb_counts_t *open;   /* cluster->open[priority] */
    const sharp_client_codec_t *codec;
    sharp_dlist_t connecting, ready, busy, pending;
    uint32_t nconnecting, npending, ncx;
    uint32_t drain_gen; /* the host's drain_gen this pool last acted on */
    bool destroying;
    bool retired; /* sharp_pool_retire: frees itself once it has no connection and no waiter */
};

/* The handle a bound request holds. Codecs embed it in their stream. */
struct sharp_upstream_cx {
    sharp_upstream_conn_t *conn;
    sharp_upstream_request_t *req; /* NULL once the request let go */
};

struct sharp_client_codec {
    const char *name;
    /* The connection is up: set up the protocol state (codec_state). */
    void (*init)(sharp_upstream_conn_t *c);
    /* Frees codec_state; called once the connection's handles are closed. */
    void (*destroy)(sharp_upstream_conn_t *c);
    /* The pool is closing the connection (its handles close next). Streams
     * still bound learn of it through on_reset, except on a pool-initiated
     * close of an idle connection, which has none. */
    void (*on_close)(sharp_upstream_conn_t *c);
    /* How many more streams the connection can take now. */
    uint32_t (*capacity)(const sharp_upstream_conn_t *c);
    /* Starts a stream for `r` and returns its handle (the pool then calls
     * r's on_ready with it). */
    sharp_upstream_cx_t *(*new_stream)(sharp_upstream_conn_t *c, sharp_upstream_request_t *r);
    /* The request lets go of its stream (sharp_pool_cancel). */
    void (*cancel)(sharp_upstream_cx_t *s);
    /* Bytes from the socket (nread > 0) or the end of it (nread < 0). */
    void (*on_read)(sharp_upstream_conn_t *c, ssize_t nread, const uv_buf_t *buf);
    /* The writer's queue emptied after having been above zero. */
    void (*on_write_drain)(sharp_upstream_conn_t *c);
    void (*send_headers)(sharp_upstream_cx_t *s, const sharp_headers_t *h, bool end_stream);
    void (*send_data)(sharp_upstream_cx_t *s, const char *p, size_t n, bool end_stream);
    void (*send_trailers)(sharp_upstream_cx_t *s, const sharp_headers_t *t);
    void (*read_disable)(sharp_upstream_cx_t *s, bool disable);
    size_t (*queued)(const sharp_upstream_cx_t *s);
};

extern const sharp_client_codec_t sharp_http1_client_codec;
extern const sharp_client_codec_t sharp_http2_client_codec;
extern const sharp_client_codec_t sharp_tcp_client_codec;

/* ---- what pool.c offers its codecs ---- */

static inline sharp_stats_shard_t *sharp_upstream_conn_shard(const sharp_upstream_conn_t *c)
{
    return c->pool->env->stats;
}
/* Closes the connection (idempotent). Streams still bound are told by the
 * codec's on_close; a codec resetting its streams itself detaches them
 * first. */
void sharp_upstream_conn_close(sharp_upstream_conn_t *c);
/* A stream of the connection ended (its response done and its request let
 * go, or reset): the connection closes if it cannot be reused (reusable
 * false, or it drains and has no stream left), else it takes the next
 * waiting request or goes idle. */
void sharp_upstream_conn_stream_done(sharp_upstream_conn_t *c, bool reusable);
/* The connection's capacity may have grown (peer SETTINGS): waiting
 * requests get it. */
void sharp_upstream_conn_capacity_changed(sharp_upstream_conn_t *c);
/* Close callback of the connection's handles (h->data is the connection):
 * a codec's own handles count in handles_open. */
void sharp_upstream_conn_handle_closed(uv_handle_t *h);
/* The transport is up (TCP connected, and a TLS handshake done): the
 * connection is connected for the codec (its init) and serves the waiting
 * requests. Called by pool.c itself for plaintext, by tls/upstream.c once
 * its handshake completes. */
void sharp_upstream_conn_established(sharp_upstream_conn_t *c);
/* The connection could not be set up (TCP connect, or the TLS handshake):
 * upstream_cx_connect_fail, the connection closes and a waiting request
 * fails with `detail` (Envoy's transport failure reason for TLS). */
void sharp_upstream_conn_connect_failed(sharp_upstream_conn_t *c, const char *detail);
/* Starts or stops reading from the socket. */
void sharp_upstream_conn_read_start(sharp_upstream_conn_t *c);
void sharp_upstream_conn_read_stop(sharp_upstream_conn_t *c);

#endif

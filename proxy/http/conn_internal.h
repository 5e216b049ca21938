/* conn_internal.h: a downstream connection, shared by the connection
 * manager (conn_manager.c: the socket, its timers and drains, the streams'
 * lifecycle and timers) and the server codec that carries its streams on
 * the wire (http1_server.c; an HTTP/2 codec plugs in the same way). The
 * connection manager never parses or writes a protocol byte itself: bytes
 * read go to the codec's dispatch, which creates streams and hands their
 * request heads, bodies and ends to the filter chain; the filter chain's
 * response goes back through the codec. Private to proxy/http. */
#ifndef SHARP_HTTP_CONN_INTERNAL_H
#define SHARP_HTTP_CONN_INTERNAL_H

#include "http/hcm_internal.h"
#include "http/stream.h"
#include "listener_inspect.h"
#include "net.h"
#include "worker.h"

#include <llhttp.h>
#include <uv.h>

typedef struct sharp_conn sharp_conn_t;

/* What a protocol implements for the connection manager. */
typedef struct sharp_server_codec {
    const char *name; /* for logs */
    /* Bytes read from the client. */
    void (*dispatch)(sharp_conn_t *c, const char *p, size_t n);
    /* The client's side ended (`err`: UV_EOF or an error) while the
     * connection is open: true when the codec keeps the connection (a
     * tunnel's half-close), false to close it. */
    bool (*peer_closed)(sharp_conn_t *c, ssize_t err);
    /* Response side of a stream (hcm_internal.h's sharp_codec_*). */
    void (*encode_headers)(sharp_stream_t *s, sharp_headers_t *h, bool end_stream);
    void (*encode_data)(sharp_stream_t *s, const char *p, size_t n, bool end_stream);
    void (*encode_trailers)(sharp_stream_t *s, sharp_headers_t *t);
    void (*send_continue)(sharp_stream_t *s);
    /* Request body backpressure for one stream (the stream's sources of
     * it counted: disable when the first holds it, enable when the last
     * lets go). */
    void (*read_disable)(sharp_stream_t *s, bool disable);
    /* The stream's finish is due (its response complete), or its reset
     * (`reset`: sharp_codec_reset, deferred to a loop turn of its own): the
     * codec ends it on the wire, destroys it (sharp_conn_stream_destroy)
     * and decides what the connection does next. */
    void (*stream_done)(sharp_conn_t *c, sharp_stream_t *s, bool reset);
    /* A request is being parsed or in flight: idle and drain closes wait. */
    bool (*busy)(const sharp_conn_t *c);
    /* Reading must stop for the codec's own reasons (bytes waiting). */
    bool (*read_blocked)(const sharp_conn_t *c);
    /* Writes what was held back to share a write (end of a loop turn). */
    void (*flush)(sharp_conn_t *c);
    /* Bytes the codec holds for a stream (reset_high_memory_stream). */
    uint64_t (*buffered)(const sharp_conn_t *c, const sharp_stream_t *s);
    /* The connection closed: release the codec's memory. */
    void (*release)(sharp_conn_t *c);
    /* Optional. A stream is being destroyed: drop the codec's state of it. */
    void (*stream_released)(sharp_stream_t *s);
    /* Optional. A drain began: tell the client (HTTP/2's shutdown notice). */
    void (*drain)(sharp_conn_t *c);
    /* Optional. The connection is about to close gracefully: the last word
     * (HTTP/2's final GOAWAY), written before the close. */
    void (*goaway)(sharp_conn_t *c);
} sharp_server_codec_t;

/* HTTP/1 codec state (http1_server.c). One stream at a time; pipelined
 * requests are parsed only after the current stream ends. */
typedef struct {
    llhttp_t parser;
    sharp_stream_t *stream; /* the request being parsed or answered */
    sharp_sbuf_t url;
    sharp_sbuf_t pipeline; /* unparsed bytes after a paused message */
    sharp_sbuf_t head;     /* a response head waiting to go out with the first body bytes */
    size_t header_bytes;
    bool in_value;
    bool preserve_case;     /* header_key_format preserve_case: names' spellings kept (read per name) */
    bool parsing;           /* inside llhttp_execute */
    bool paused;            /* parser paused at a message end */
    bool rejected;          /* a parser callback answered and stopped the parser */
    bool underscore_rejected; /* headers_with_underscores_action REJECT_REQUEST hit */
    /* A parser callback refused the request head: the answer (code and
     * Envoy's response code details) is sent once llhttp_execute returns. */
    uint32_t reject_code;
    const char *reject_details;
    /* Header value bookkeeping for the checks llhttp 8.1 does not make:
     * a value that arrives without a name (": x") and obs-fold. */
    bool value_done;        /* the last header's value is complete */
    bool value_spans;       /* the current value has had a span */
    bool value_at_buf_end;  /* ...which ended where its read buffer ended */
    unsigned value_gen;     /* exec_gen of that span */
    const char *value_end;  /* where that span ended */
    unsigned exec_gen;      /* one per llhttp_execute call */
    const char *exec_begin, *exec_end;
    bool tail_lf_ws;        /* the bytes fed so far end in LF and SP/HTAB only */
    /* A request line that ends without a version: llhttp waits for one
     * more byte before it reports it (HTTP/0.9), so the codec looks for
     * the line end itself. */
    bool version_done;      /* on_version_complete was called */
    bool head_done;         /* the head went to the filter chain: fields now are trailers */
    const char *url_end;    /* where the last URL span ended */
    unsigned url_gen;       /* exec_gen of that span */
    bool tunnel;            /* upgraded: bytes after the request go to the stream unparsed */
    bool errored;           /* a protocol error was answered: nothing more is parsed */
} sharp_h1_conn_t;

struct sharp_conn {
    uv_tcp_t tcp;
    uv_timer_t idle_timer;     /* idle timeout, drain timeout, delayed close */
    uv_timer_t duration_timer; /* max_connection_duration */
    /* stream_idle_timeout of all its streams: due at or before the earliest
     * stream's deadline, it scans the streams when it fires (one timer per
     * connection instead of a timer heap insert and removal per stream) */
    uv_timer_t stream_idle_timer;
    /* listener filters (TLS/HTTP inspectors): the first bytes, kept until
     * the chain is chosen and then replayed to it; the timer bounds the
     * wait (listener_filters_timeout) */
    uv_timer_t inspect_timer;
    uint8_t *inspect_buf;
    size_t inspect_len, inspect_cap;
    sharp_tls_inspector_t tls_inspect; /* the TLS inspector's progress over inspect_buf */
    bool inspecting;
    bool pp_done; /* the PROXY protocol filter has its verdict */
    uint64_t stream_idle_due; /* loop time (ms) stream_idle_timer is due */
    sharp_worker_t *worker;
    const sharp_listener_config_t *listener;
    const sharp_hcm_config_t *hcm; /* of the filter chain the connection took */
    const sharp_filter_chain_config_t *chain; /* that chain (its drain state: xds/lds.h) */
    sharp_snapshot_t *snap;
    sharp_dlist_t link;       /* in worker->connections */
    sharp_writer_t writer;
    const sharp_server_codec_t *codec;
    sharp_dlist_t streams;    /* live streams (stream->conn_link) */
    uint32_t nstreams;
    sharp_dlist_t flush_link; /* in worker->flush_list while the codec holds bytes back */
    bool closing;
    bool close_after_response; /* draining: the next response closes the connection */
    bool read_stopped;
    bool read_disabled_by_stream;
    bool above_watermark;
    bool shutdown;          /* closing once written data has left */
    bool delayed_close;     /* after the flush, wait for the peer's FIN (delayed_close_timeout) */
    bool flushed;           /* the shutdown completed: everything written has left */
    bool peer_closed;       /* FIN seen while the flush was still pending */
    bool duration_draining; /* max_connection_duration reached (or another drain of this connection
                             * alone): drain like a server drain */
    bool peer_eof;          /* the peer half-closed a tunnel: nothing more to read */
    int handles_open;
    unsigned long long id; /* "[C<id>]" in log lines */
    uint64_t start_ns;
    uint64_t idle_since_ns; /* the idle timeout was armed (reduce_timeouts re-arms from it) */
    char remote[SHARP_ADDR_STRLEN], local[SHARP_ADDR_STRLEN];
    struct sockaddr_storage remote_ss; /* the peer, or the source a PROXY protocol header gave */
    struct sockaddr_storage local_ss; /* the accepted socket's own address, or its original destination */
    /* the socket's peer (Envoy's directRemoteAddress): remote_ss unless a
     * PROXY protocol header gave another source (`proxied`) */
    struct sockaddr_storage direct_remote_ss;
    char direct_remote[SHARP_ADDR_STRLEN];
    bool proxied;
    /* the PROXY protocol filter's rules: TLVs as the connection's dynamic
     * metadata (a TCP proxy's access log and network RBAC read it) */
    struct sharp_dynamic_metadata *conn_metadata;
    bool have_local;
    /* local_ss is the original destination the original_dst listener
     * filter restored (Envoy's localAddressRestored), which ORIGINAL_DST
     * clusters connect to */
    bool local_restored;
    sharp_h1_conn_t h1;
    struct sharp_h2_conn *h2; /* HTTP/2 codec state (http2_server.c) */
    /* codec_type AUTO: the first bytes, until they are or are not the
     * HTTP/2 connection preface */
    char sniff[24];
    uint8_t nsniff;
    /* TLS transport (proxy/tls/downstream.h): NULL for plaintext */
    struct sharp_conn_tls *tls;
    /* the TCP proxy relaying this connection (http/tcp_proxy.c), NULL on
     * an HTTP connection manager's */
    struct sharp_tcp_session *tcp_session;
    char *inspected_sni;   /* the TLS inspector's server name, for a TCP proxy passing TLS through */
    bool half_closed;      /* our FIN is sent, reading goes on (sharp_conn_half_close) */
    bool half_closed_done; /* ...and has left */
    /* filters' connection-lifetime data (sharp_stream_connection_data) */
    struct sharp_conn_data *filter_data;
    bool net_rbac_checked; /* the network RBAC filters saw the first data */
};

#define SHARP_CONN_STATS(c) ((c)->worker->stats)
#define SHARP_CONN_HCM(c) ((c)->hcm)

extern const sharp_server_codec_t sharp_http1_server_codec;
extern const sharp_server_codec_t sharp_http2_server_codec;
/* Set up a codec on a new connection. */
void sharp_http1_server_init(sharp_conn_t *c);
void sharp_http2_server_init(sharp_conn_t *c);

/* ---- what codecs call on the connection manager ---- */

/* A new stream on the connection (its timers started, counted). */
sharp_stream_t *sharp_conn_stream_create(sharp_conn_t *c);
/* Final accounting, access logs, filter completion and release; once. */
void sharp_conn_stream_destroy(sharp_stream_t *s);
/* The response is complete: the stream finishes on the next loop turn. */
void sharp_conn_stream_maybe_finish(sharp_stream_t *s);
/* Restarts the stream idle timer. */
void sharp_conn_stream_touch(sharp_stream_t *s);
void sharp_conn_write(sharp_conn_t *c, const uv_buf_t *b, unsigned n);
void sharp_conn_close(sharp_conn_t *c);
/* Frees the filters' connection-lifetime data (at the connection's end). */
void sharp_conn_data_free(sharp_conn_t *c);
/* Closes once everything written has left; `delay`: Envoy's
 * FlushWriteAndDelay (wait for the peer's FIN up to delayed_close_timeout). */
void sharp_conn_close_after_write(sharp_conn_t *c, bool delay);
/* Sends our FIN once everything written has left and keeps reading (the
 * TCP proxy passing on its upstream's half-close); once it has left, a
 * connection whose peer has ended too (peer_eof) closes. */
void sharp_conn_half_close(sharp_conn_t *c);
/* Re-evaluates whether to read (stream backpressure, codec, tunnel EOF). */
void sharp_conn_update_reading(sharp_conn_t *c);
/* The connection has no stream: idle timeout, or the drain's close. */
void sharp_conn_arm_idle(sharp_conn_t *c);
/* Starts this connection's drain (Envoy's startDrainSequence). */
void sharp_conn_start_drain(sharp_conn_t *c);
/* Holds the connection in the worker's flush list until the end of this
 * loop turn (codec->flush runs then). */
void sharp_conn_defer_flush(sharp_conn_t *c);
void sharp_conn_cancel_flush(sharp_conn_t *c);
/* A flush is due this loop turn. */
static inline bool sharp_conn_flush_deferred(const sharp_conn_t *c)
{
    return c->flush_link.next != &c->flush_link;
}

/* ---- what the TLS transport (proxy/tls/downstream.c) calls ---- */

/* Data arrived for the codec: the chain's network RBAC filters check the
 * connection first (filters/rbac/network.c). False when one denied it: the
 * connection is closed and the data dropped. */
bool sharp_conn_net_rbac_allows(sharp_conn_t *c);

/* Installs the codec of the HCM's codec_type; AUTO takes HTTP/2 for an
 * ALPN of "h2", HTTP/1 for any other ALPN, and sniffs the first bytes
 * without one (`alpn` NULL), as Envoy. */
void sharp_conn_select_codec(sharp_conn_t *c, const char *alpn);
/* The client's side ended (a socket EOF or error, or TLS close_notify). */
void sharp_conn_remote_closed(sharp_conn_t *c, ssize_t err);

#endif
